"""``F.interpolate`` and ``Upsample``: resizing the spatial dims of (N, C, *spatial) inputs.

Each output position o along a dim of input size n and output size m reads the
input at a source coordinate s(o), computed with PyTorch's conventions:
    nearest:        s = min(floor(o · r), n - 1)
    nearest-exact:  s = min(floor((o + ½) · r), n - 1)
    linear:         s = max(r (o + ½) - ½, 0)       (align_corners=False)
                    s = o (n - 1) / (m - 1)          (align_corners=True)
with r = 1 / scale_factor when a scale factor is given, n / m otherwise. Linear
modes blend the two neighbours: y = (1 - λ) x[⌊s⌋] + λ x[⌊s⌋ + 1], λ = s - ⌊s⌋.
Bilinear and trilinear are the same 1-d rule applied along each dim in turn
(the weights of a separable interpolation are products). Everything is
indexing and weighted sums, so gradients come from those ops.
"""

import math

import numpy

from autograd import Tensor
from autograd.backend import xp

from .functional_conv import adaptive_avg_pool1d, adaptive_avg_pool2d
from .module import Module

_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _output_sizes(input, size, scale_factor, spatial):
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("either size or scale_factor should be defined")
    if size is not None:
        sizes = [size] * spatial if isinstance(size, int) else list(size)
        if len(sizes) != spatial:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, but got input "
                             f"with spatial dimensions of {list(input.shape[2:])} and output size of {size}. "
                             "Please provide input tensor in (N, C, d1, d2, ...,dK) format and output size in "
                             "(o1, o2, ...,oK) format.")
        return [int(s) for s in sizes], None
    factors = [scale_factor] * spatial if isinstance(scale_factor, (int, float)) else list(scale_factor)
    if len(factors) != spatial:
        raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but got input "
                         f"with spatial dimensions of {list(input.shape[2:])} and scale_factor of shape "
                         f"{scale_factor}.")
    sizes = [int(math.floor(n * f)) for n, f in zip(input.shape[2:], factors)]
    return sizes, factors


def _ratio(size, out, factor, align_corners=False):
    if align_corners:
        return (size - 1) / (out - 1) if out > 1 else 0.0
    return 1.0 / factor if factor is not None else size / out


def _nearest_index(size, out, factor, exact):
    if out == size:
        return xp.arange(size)
    ratio = numpy.float32(_ratio(size, out, factor))  # PyTorch computes the source index in float
    positions = xp.arange(out, dtype=numpy.float32) + (numpy.float32(0.5) if exact else 0)
    return xp.minimum(xp.floor(positions * ratio).astype(xp.int64), size - 1)


def _linear_along(input, dim, out, factor, align_corners):
    size = input.shape[dim]
    ratio = _ratio(size, out, factor, align_corners)
    positions = xp.arange(out, dtype=input.dtype)
    source = positions * ratio if align_corners else xp.maximum(ratio * (positions + 0.5) - 0.5, 0)
    low = xp.minimum(xp.floor(source).astype(xp.int64), size - 1)
    high = xp.minimum(low + 1, size - 1)
    weight = (source - low).astype(input.dtype)
    shape = (out,) + (1,) * (input.ndim - 1 - dim)
    before = (slice(None),) * dim
    return (input[before + (low,)] * Tensor._make((1 - weight).reshape(shape))
            + input[before + (high,)] * Tensor._make(weight.reshape(shape)))


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of an (N, C, *spatial) input to ``size`` or by ``scale_factor``.

    mode: 'nearest', 'nearest-exact', 'linear' (3-D input), 'bilinear' (4-D),
    'trilinear' (5-D), 'area' (3-D or 4-D: adaptive average pooling to the size).
    ``recompute_scale_factor=True`` maps coordinates with n / m instead of 1 / scale_factor.
    """
    if input.ndim < 3:
        raise ValueError(f"interpolate expects an input of shape (N, C, *spatial), got {input.shape}")
    spatial = input.ndim - 2
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    sizes, factors = _output_sizes(input, size, scale_factor, spatial)
    if recompute_scale_factor:
        factors = None
    factors = factors or [None] * spatial
    if mode in ("nearest", "nearest-exact"):
        for k, (out, factor) in enumerate(zip(sizes, factors)):
            dim = 2 + k
            index = _nearest_index(input.shape[dim], out, factor, mode == "nearest-exact")
            input = input[(slice(None),) * dim + (index,)]
        return input
    if mode == "area" and spatial in (1, 2):  # each output the mean of its input window: adaptive average pooling
        return (adaptive_avg_pool1d if spatial == 1 else adaptive_avg_pool2d)(input, tuple(sizes))
    if mode in _LINEAR_MODES:
        if _LINEAR_MODES[mode] != spatial:
            raise NotImplementedError(f"Got {input.ndim}D input, but {mode} mode needs "
                                      f"{_LINEAR_MODES[mode] + 2}D input")
        for k, (out, factor) in enumerate(zip(sizes, factors)):
            input = _linear_along(input, 2 + k, out, factor, bool(align_corners))
        return input
    raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.ndim}D) "
                              f"for the modes: nearest | nearest-exact | linear | bilinear | trilinear "
                              f"(got {mode})")


class Upsample(Module):
    """``interpolate`` as a layer."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, input):
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           self.recompute_scale_factor)

    def extra_repr(self):
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}")
        return info + f", mode={self.mode!r}"
