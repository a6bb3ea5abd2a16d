"""Max unpooling: ``F.max_unpool1d/2d/3d`` and ``MaxUnpool1d/2d/3d``, the partial inverse of max pooling.

Given the maxima y of a max pooling and their indices (``return_indices=True``: the flat position of each
maximum in its input plane), unpooling puts each y back where it came from and zeros everywhere else:

    out[n, c].flatten()[indices[n, c, i]] = y[n, c, i];      dL/dy[n, c, i] = dL/dout[n, c].flatten()[indices[n, c, i]]

a scatter whose gradient is the gather at the same indices (``ScatterFlat`` / ``GatherFlat``).
The output size is that of the pooled input, (in − 1)·stride − 2·padding + kernel_size per axis, unless
output_size picks one of the sizes that pool to the same (within a stride of it).
"""

import math

import autograd
from autograd.index_watching import watches_arguments
from autograd.ops import pooling
from autograd.ops.conversion import refuse_kinds, type_name
from autograd.ops.layouts import in_suggested_layout

from .functional_conv import _batched, _tuple
from .module import Module


def _unpool_size(input, kernel, stride, padding, output_size):
    """PyTorch's _unpool_output_size: the default size per axis, or output_size (with or without (N, C))
    checked to lie strictly within a stride of it."""
    spatial = len(kernel)
    default = [(input.shape[input.ndim - spatial + d] - 1) * stride[d] + kernel[d] - 2 * padding[d]
               for d in range(spatial)]
    if output_size is None:
        return tuple(default)
    if len(output_size) == spatial + 2:
        output_size = output_size[2:]
    if len(output_size) != spatial:
        raise ValueError(f"output_size should be a sequence containing {spatial} or {spatial + 2} elements, but "
                         f"it has a length of '{len(output_size)}'")
    for d in range(spatial):
        low, high = default[d] - stride[d], default[d] + stride[d]
        if not low < output_size[d] < high:
            raise ValueError(f'invalid output_size "{output_size}" (dim {d} must be between {low} and {high})')
    return tuple(int(size) for size in output_size)


def _max_unpool(input, indices, kernel_size, stride, padding, output_size, spatial):
    name = f"max_unpool{spatial}d"
    kernel = _tuple(kernel_size, spatial, "kernel_size")
    stride = kernel if stride is None else _tuple(stride, spatial, "stride")
    padding = _tuple(padding, spatial, "padding")
    sizes = _unpool_size(input, kernel, stride, padding, output_size)
    if tuple(indices.shape) != tuple(input.shape):
        raise RuntimeError(f"Expected shape of indices to be same as that of the input tensor ({list(input.shape)}) "
                           f"but got indices tensor with shape: {list(indices.shape)}")
    if indices.dtype != autograd.int64:
        raise RuntimeError(f"elements in indices should be type int64 but got: {type_name(indices.dtype)}")
    # PyTorch's kernels have floating loops only (the 1-d one is the 2-d one, and says so)
    refuse_kinds(input, name.replace("1d", "2d"), "biuc")
    input, unbatched = _batched(input, spatial, name)
    flat = indices._data.reshape(input.shape)
    plane = math.prod(sizes)
    bad = flat[(flat < 0) | (flat >= plane)]
    if bad.size:  # (the last in the input's order: PyTorch's one-thread loop's; its threads split the channels, so
        # with several bad channels PyTorch may name another. Its 1-d unpooling is its 2-d one's, of width 1)
        shown = sizes + (1,) if spatial == 1 else sizes
        raise RuntimeError(f"Found an invalid max index: {int(bad[-1])} (output volumes are of size "
                           f"{'x'.join(map(str, shown))})")
    y = pooling.ScatterFlat.apply(input, indices=flat, shape=input.shape[:2] + sizes, overlapping=False)
    y = in_suggested_layout(y, input)  # (a scatter's result is row-major; PyTorch's follows its input)
    return y.squeeze(0) if unbatched else y


@watches_arguments("indices")  # (MaxUnpool2DBackward0 saves them: writing them refuses)
def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Each value of (N, C, L) back at its index in an (N, C, L_out) of zeros."""
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 1)


@watches_arguments("indices")  # (MaxUnpool2DBackward0 saves them: writing them refuses)
def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Each value of (N, C, H, W) back at its flat index h·W_out + w in an (N, C, H_out, W_out) of zeros."""
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 2)


@watches_arguments("indices")  # (MaxUnpool3DBackward0 saves them: writing them refuses)
def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Each value of (N, C, D, H, W) back at its flat index in an (N, C, D_out, H_out, W_out) of zeros."""
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 3)


class _MaxUnpoolNd(Module):
    spatial = 0

    def __init__(self, kernel_size=None, stride=None, padding=0):
        """PyTorch's _MaxUnpoolNd takes no arguments (MaxUnpool1d/2d/3d set these): a layer subclassing it that
        calls ``super().__init__()`` sets its own after."""
        super().__init__()
        if kernel_size is None:
            self.kernel_size, self.stride, self.padding = None, stride, padding
            return
        self.kernel_size = _tuple(kernel_size, self.spatial, "kernel_size")
        self.stride = _tuple(stride if stride is not None else kernel_size, self.spatial, "stride")
        self.padding = _tuple(padding, self.spatial, "padding")

    def forward(self, input, indices, output_size=None):
        return _max_unpool(input, indices, self.kernel_size, self.stride, self.padding, output_size, self.spatial)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    spatial = 1


class MaxUnpool2d(_MaxUnpoolNd):
    spatial = 2


class MaxUnpool3d(_MaxUnpoolNd):
    spatial = 3

