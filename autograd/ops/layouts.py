"""The memory layouts PyTorch's kernels give their results, where NumPy's would differ: a result laid out otherwise
is a different tensor to a program that views it (``y.view(-1)`` shares PyTorch's memory, where here it would have
to copy, and a write through the view would not reach y)."""

import numpy

from .. import channels_last_layout, constants
from ..backend import dense_order, dense_strides, is_dense
from ..memory_order import fills_in_memory_order
from .axes import inverse_permutation

_CHANNELS_LAST = {4: constants.channels_last, 5: constants.channels_last_3d}


def stored_channels_last(array):
    """Whether ``array`` is a 4-d map (a 5-d volume) whose strides are ordered N, H, W, C (N, D, H, W, C): PyTorch's
    suggested memory format for it is channels-last (its is_channels_last_strides_2d/3d). The strides need not be
    dense: a crop or a strided slice of a channels-last image is channels-last still. Walking from C outwards, each
    dim's stride must be at least the span of the dims inside it; where size-1 dims leave it ambiguous (N×1×1×1, a
    zero channel stride) the answer is row-major."""
    if array.ndim not in _CHANNELS_LAST or array.strides[1] == 0:
        return False
    sizes, strides = array.shape, [step // array.itemsize for step in array.strides]
    span = 0
    for dim in reversed(channels_last_layout.ORDERS[array.ndim]):  # C, then W, H[, D], then N
        if sizes[dim] == 0 or strides[dim] < span or dim == 0 and span == strides[1]:
            return False
        span = strides[dim] * max(sizes[dim], 1)
    return True


def suggested_format(array):
    """PyTorch's suggest_memory_format of ``array``: channels_last (channels_last_3d) where it is stored so
    (``stored_channels_last``), else None (row-major)."""
    return _CHANNELS_LAST[array.ndim] if stored_channels_last(array) else None


def in_batch_norm_layout(y, like):
    """y laid out as PyTorch's batch norm writes its output: channels-last where ``like`` is channels-last
    contiguous (its channels-last kernels' test, which size-1 dims do not confuse: a (1, C, H, 1) permutation) or
    suggests channels-last (a crop of a channels-last image), row-major otherwise."""
    if channels_last_layout.is_contiguous(like._data):
        return y.contiguous(memory_format=_CHANNELS_LAST[like.ndim])
    return in_suggested_layout(y, like)


def in_suggested_layout(y, like):
    """y laid out in ``like``'s suggested memory format, PyTorch's rule for the kernels that follow their input's
    layout (batch norm, the reflect and replicate pads, interpolation): channels-last where ``like`` is stored so
    (``stored_channels_last``), row-major otherwise (a transposed (N, L, C) sequence)."""
    if stored_channels_last(like._data):
        return y.contiguous(memory_format=_CHANNELS_LAST[like.ndim])
    return y.contiguous()


def preserved_copy(x, values=None):
    """A new array of ``values`` (x's own by default; x's shape), laid out as PyTorch's preserve_format lays out a
    result made like x: x's own layout where x fills its memory densely (a transpose, channels_last), and
    otherwise dense strides in the order of x's (infer_dense_strides: row-major for a slice of a row-major
    tensor). A flip's result is its input's reversed values in its input's layout."""
    values = x if values is None else values
    if x.flags.c_contiguous and 1 not in x.shape:  # (NumPy's flag overlooks size-1 dims: a channels_last
        return values.copy()  # (C, 1, kh, kw) kernel's is set, and a plain copy would lose its steps)
    order = dense_order(x.shape, x.strides)
    return values.transpose(order).copy().transpose(inverse_permutation(order))


def laid_out(values, x, fresh=False):
    """Draws of x's shape, made one after another (``values`` holds them in row-major order), put where
    PyTorch's serial kernels write them: one after another through x's memory, which for a transpose or a
    permutation (``w.t().uniform_()``) is not the row-major order (memory_order.py says which tensors).
    ``fresh``: into a new tensor made like x (PyTorch's ``empty_like``: dropout's mask, multinomial's race), which
    has x's strides where x fills its memory without gaps (a transpose, a permutation), and otherwise (a slice of
    a transpose, ``probs.T[1:3]``) dense strides in the order of x's: row-major only where x's order is; the
    draws come laid out so too."""
    data = x._data
    if not fills_in_memory_order(x):
        return values
    strides = data.strides if not fresh or is_dense(data) else dense_strides(data.shape, data.strides)
    offsets = numpy.zeros(data.shape, numpy.int64)
    for axis, (size, stride) in enumerate(zip(data.shape, strides)):
        offsets += (numpy.arange(size) * stride).reshape((size,) + (1,) * (data.ndim - axis - 1))
    order = numpy.argsort(offsets, axis=None, kind="stable")
    placed = numpy.empty(values.size, values.dtype)
    placed[order] = values.ravel()
    placed = placed.reshape(values.shape)
    return preserved_copy(data, placed) if fresh else placed  # (a new tensor's layout: what x * mask keeps)
