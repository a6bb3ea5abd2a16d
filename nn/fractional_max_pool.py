"""Fractional max pooling (Graham, 2015): ``F.fractional_max_pool2d/3d`` and ``FractionalMaxPool2d/3d``.

The output size need not divide the input size: along an axis of input size n, output size m and window
k, window i starts at

    start_i = ⌊(i + u)·α⌋ − ⌊u·α⌋,   α = (n − k)/(m − 1)   (i < m − 1),     start_{m−1} = n − k,

with one u ~ U(0, 1) per (sample, channel, axis) (``_random_samples``, from autograd's generator when not
given), so the strides are a random mix of ⌊α⌋ and ⌈α⌉. Each output is the maximum of its k-window (the
first in scan order; NaN wins, the last one, as PyTorch's loop), read by ``GatherFlat``, whose gradient
scatters dL/dy back to it. PyTorch's arithmetic (in the input's dtype) gives its windows for the same u.
"""

import math

import autograd
from autograd.backend import xp
from autograd.index_watching import watch_returned_indices
from autograd.ops.conversion import refuse_kinds
from autograd.ops.pooling import GatherFlat, window_winner
from autograd.random import generator
from autograd.tensor import tensor_from

from .functional_conv import _batched, _tuple
from .module import Module


def _starts(samples, size, out, kernel):
    """Window starts (…, out) for the samples u (…) of one axis, computed in u's dtype."""
    starts = xp.full(samples.shape + (out,), size - kernel, dtype=xp.int64)
    if out > 1:
        dtype = samples.dtype.type
        alpha = dtype(size - kernel) / dtype(out - 1)
        steps = xp.arange(out - 1).astype(samples.dtype)
        starts[..., :-1] = (((steps + samples[..., None]) * alpha).astype(xp.int64)
                            - (samples * alpha).astype(xp.int64)[..., None])
    return starts


def _sizes(value, spatial, name, what):
    """An int, or a sequence of ``spatial`` ints (a shorter one stands for nothing here, as in PyTorch's kernel)."""
    if isinstance(value, (tuple, list)) and len(value) != spatial:
        raise RuntimeError(f"{name}: {what} must either be a single Int or tuple of "
                           f"{'Ints' if spatial == 2 else 'three Ints'}")
    return _tuple(value, spatial, what)


def _check_samples(samples, input, n, c, spatial):
    """PyTorch's checks of _random_samples: the input's dtype (the windows are computed in it), then (at least n,
    c, spatial)."""
    if samples.dtype != input.dtype:
        raise RuntimeError("Expect _random_samples to have the same dtype as input")
    if samples.ndim != 3:
        raise RuntimeError(f"Expect _random_samples to have 3 dimensions, got {samples.ndim}")
    if samples.shape[0] < n:
        raise RuntimeError("Expect _random_samples.size(0) no less then input batch size.")
    if samples.shape[1] != c:
        raise RuntimeError("Expect _random_samples.size(1) equals to input channel size.")
    if samples.shape[2] != spatial:
        raise RuntimeError(f"Expect _random_samples.size(2) equals to {spatial}; got {samples.shape[2]}.")


def _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, samples, spatial):
    name = f"fractional_max_pool{spatial}d"
    if output_size is None and output_ratio is None:
        raise ValueError(f"{name} requires specifying either an output_size or an output_ratio")
    kernel = _sizes(kernel_size, spatial, name, "kernel_size")
    if output_size is None:
        ratio = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * spatial
        if spatial == 2 and len(ratio) > 2:  # (PyTorch's 2-d form checks the ratio's length, in these words)
            raise ValueError(f"{name} requires output_ratio to either be a single Int or tuple of Ints.")
        output_size = [int(input.shape[input.ndim - spatial + a] * ratio[a]) for a in range(spatial)]
    out = _sizes(output_size, spatial, name, "output_size")
    if samples is not None and samples.requires_grad and autograd.is_grad_enabled():  # (PyTorch's autograd layer
        raise RuntimeError(f"The function '{name}' is not differentiable with respect to argument "  # refuses it
                           "'random_samples'. This input cannot have requires_grad True.")  # before the kernel)
    shape = list(input.shape)
    input, unbatched = _batched(input, spatial, name)
    n, c, sizes = input.shape[0], input.shape[1], input.shape[2:]
    kernel_name = name if spatial == 2 else f"{name}_out"
    if 0 in shape[1:]:  # (PyTorch's kernel takes the first dim for a batch even in an unbatched input)
        raise RuntimeError(f"{kernel_name}(): Expected input to have non-zero size for non-batch dimensions, but got"
                           f"{shape} with dimension {shape.index(0, 1)} being empty.")
    # output + pool − 1 must not exceed the input, in PyTorch's 2-d kernel; must be less than it, in its 3-d one,
    # which checks the time, then the width, then the height
    axes = [(0, "height"), (1, "width")] if spatial == 2 else [(0, "time"), (2, "width"), (1, "height")]
    for a, axis in axes:
        if out[a] + kernel[a] - 1 > sizes[a] - (spatial == 3):
            raise RuntimeError(f"{kernel_name}(): pool {axis} {kernel[a]} too large relative to input {axis} "
                               f"{sizes[a]}")
    if samples is None:  # (u is drawn in the input's dtype: PyTorch's uniform draw has no integer or bool loop)
        refuse_kinds(input, "check_uniform_bounds", "biu")
        samples = tensor_from(generator().random((n, c, spatial)).astype(input._data.dtype))
    _check_samples(samples, input, n, c, spatial)
    refuse_kinds(input, f"{name}_out_frame", "biu")
    samples = samples[:n]  # (a longer batch of samples: the first n, as PyTorch's)
    # the samples of a 2-d pool are (u_W, u_H), of a 3-d one (u_T, u_H, u_W), as PyTorch's
    order = (1, 0) if spatial == 2 else (0, 1, 2)
    # flat position in the input plane of every window element: (N, C, *out, *kernel)
    flat = xp.zeros((n, c) + (1,) * (2 * spatial), dtype=xp.int64)
    for a in range(spatial):
        starts = _starts(samples._data[..., order[a]], sizes[a], out[a], kernel[a])
        positions = starts[..., None] + xp.arange(kernel[a])  # (N, C, out, kernel)
        shape = [n, c] + [1] * (2 * spatial)
        shape[2 + a], shape[2 + spatial + a] = out[a], kernel[a]
        flat = flat * sizes[a] + positions.reshape(shape)
    flat = flat.reshape(n, c, *out, math.prod(kernel))
    # (planes and windows spelt out, not -1: ambiguous in an empty batch)
    planes = input._data.reshape(n, c, math.prod(input.shape[2:]))
    values = xp.take_along_axis(planes, flat.reshape(n, c, math.prod(flat.shape[2:])), 2).reshape(flat.shape)
    indices = xp.take_along_axis(flat, window_winner(values)[..., None], -1)[..., 0]
    y = GatherFlat.apply(input, indices=indices, overlapping=True)
    if unbatched:
        y, indices = y.squeeze(0), indices[0]
    return watch_returned_indices(y, tensor_from(indices)) if return_indices else y


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):
    """The maximum over k_h × k_w windows at pseudo-random fractional strides (see the module's docstring);
    output_size, or output_ratio times the input size."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, 2)


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=False, _random_samples=None):
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, True, _random_samples, 2)


def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                          _random_samples=None):
    """fractional_max_pool2d over volumes."""
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, return_indices, _random_samples, 3)


def fractional_max_pool3d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=False, _random_samples=None):
    return _fractional_max_pool(input, kernel_size, output_size, output_ratio, True, _random_samples, 3)


class _FractionalMaxPoolNd(Module):
    spatial = 0

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                 _random_samples=None):
        super().__init__()
        spatial, name = self.spatial, type(self).__name__
        self.kernel_size = _tuple(kernel_size, spatial, "kernel_size")
        self.return_indices = return_indices
        self.register_buffer("_random_samples", _random_samples)
        self.output_size = _tuple(output_size, spatial, "output_size") if output_size is not None else None
        self.output_ratio = (tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else
                             (output_ratio,) * spatial) if output_ratio is not None else None
        if output_size is None and output_ratio is None:
            raise ValueError(f"{name} requires specifying either an output size, or a pooling ratio")
        if output_size is not None and output_ratio is not None:
            raise ValueError("only one of output_size and output_ratio may be specified")
        if self.output_ratio is not None and not all(0 < r < 1 for r in self.output_ratio):
            raise ValueError(f"output_ratio must be between 0 and 1 (got {output_ratio})")

    def forward(self, input):
        return _fractional_max_pool(input, self.kernel_size, self.output_size, self.output_ratio,
                                    self.return_indices, self._random_samples, self.spatial)


class FractionalMaxPool2d(_FractionalMaxPoolNd):
    spatial = 2


class FractionalMaxPool3d(_FractionalMaxPoolNd):
    spatial = 3
