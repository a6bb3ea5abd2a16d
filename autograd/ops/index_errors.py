"""NumPy's IndexError for a subscript (``array[index]``), said as PyTorch says it: dims, not axes, a mask that
does not fit named with its shape and the tensor's, and a 0-d tensor's own refusals. Shared by x[i], x[i] = v
and index_put."""

import builtins
import re

import numpy

from ..backend import xp


def is_integer_index(i):
    """Whether ``i`` is an integer subscript (a Python or NumPy integer, not a bool, which adds a dim)."""
    return isinstance(i, (int, numpy.integer)) and not isinstance(i, (bool, numpy.bool_))


def _mask_at(parts, axis, ndim):
    """(the mask of an index's ``parts`` that covers dim ``axis`` of a tensor of ``ndim`` dims, the dim it
    starts at), or (None, 0): each part covers as many dims as it indexes (a mask its ndim, None and a bool
    none, Ellipsis the rest)."""
    def covered(i):
        if i is None or i is Ellipsis or isinstance(i, (bool, numpy.bool_)):
            return 0
        return i.ndim if isinstance(i, xp.ndarray) and i.dtype == bool else 1
    start = 0
    for i in parts:
        width = ndim - builtins.sum(map(covered, parts)) if i is Ellipsis else covered(i)
        if isinstance(i, xp.ndarray) and i.dtype == bool and i.ndim and start <= axis < start + width:
            return i, start
        start += width
    return None, 0


def index_error_in_pytorch_words(error, shape, index):
    """NumPy's IndexError for ``array[index]`` (array of ``shape``) said as PyTorch says it: dims, not axes,
    and a mask that does not fit named with its shape and the tensor's."""
    message = str(error)
    found = re.fullmatch(r"index (-?\d+) is out of bounds for axis (\d+) with size (\d+)", message)
    if found:
        position, dim, size = found.groups()
        if size == "0":
            return IndexError("index is out of bounds for dimension with size 0")
        return IndexError(f"index {position} is out of bounds for dimension {dim} with size {size}")
    found = re.match(r"boolean index did not match indexed array along axis (\d+); size of axis is (\d+) but "
                     r"size of corresponding boolean axis is (\d+)", message)
    if found:
        axis = int(found.group(1))
        parts = index if isinstance(index, tuple) else (index,)
        mask, start = _mask_at(parts, axis, len(shape))
        what = f" {list(mask.shape)} at index {axis - start}" if mask is not None else ""
        return IndexError(f"The shape of the mask{what} does not match the shape of the indexed tensor "
                          f"{list(shape)} at index {axis}")
    found = re.match(r"too many indices for array: array is (\d+)-dimensional", message)
    if found and is_integer_index(index) and not shape:
        return IndexError("invalid index of a 0-dim tensor. Use `tensor.item()` in Python or `tensor.item<T>()` in "
                          "C++ to convert a 0-dim tensor to a number")
    if found and isinstance(index, slice) and not shape:
        return IndexError("slice() cannot be applied to a 0-dim tensor.")
    if found:
        return IndexError(f"too many indices for tensor of dimension {found.group(1)}")
    return error
