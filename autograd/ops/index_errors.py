"""NumPy's IndexError for a subscript (``array[index]``), said as PyTorch says it: dims, not axes, a mask that
does not fit named with its shape and the tensor's, and a 0-d tensor's own refusals; a uint8 index read as a mask
(PyTorch's deprecation warning, and its refusal to fill one number through it). Shared by x[i], x[i] = v and
index_put."""

import builtins
import re
import warnings

import numpy

from ..backend import xp
from ..graph import program_stacklevel


def is_integer_index(i):
    """Whether ``i`` is an integer subscript (a Python or NumPy integer, not a bool, which adds a dim)."""
    return isinstance(i, (int, numpy.integer)) and not isinstance(i, (bool, numpy.bool_))


def _covered(i):
    """How many dims of the tensor an index part indexes: a mask its ndim, None and a bool none (Ellipsis: the
    rest, counted by the caller), any other part one."""
    if i is None or i is Ellipsis or isinstance(i, (bool, numpy.bool_)):
        return 0
    return i.ndim if isinstance(i, xp.ndarray) and i.dtype == bool else 1


def _widths(parts, ndim):
    """(part, the dim it starts at, how many dims it covers) for each of an index's ``parts``."""
    start = 0
    for i in parts:
        width = ndim - builtins.sum(map(_covered, parts)) if i is Ellipsis else _covered(i)
        yield i, start, width
        start += width


def _mask_at(parts, axis, ndim):
    """(the mask of an index's ``parts`` that covers dim ``axis`` of a tensor of ``ndim`` dims, the dim it
    starts at), or (None, 0)."""
    for i, start, width in _widths(parts, ndim):
        if isinstance(i, xp.ndarray) and i.dtype == bool and i.ndim and start <= axis < start + width:
            return i, start
    return None, 0


def index_tensor_dim(parts, axis, ndim):
    """The dim PyTorch names where the index tensor among ``parts`` that indexes dim ``axis`` (of a tensor of
    ``ndim`` dims) is out of bounds: its indexing kernel numbers only the dims index tensors cover (a mask its
    ndim, an integer tensor one), not those of slices, None or Ellipsis, so x[:, t] names dimension 0 and
    x[m2, t] (m2 a 2-d mask) dimension 2. Where no index tensor indexes ``axis`` (an integer does), ``axis``."""
    tensor_dims = 0
    for i, start, width in _widths(parts, ndim):
        is_tensor = isinstance(i, (xp.ndarray, list)) and numpy.ndim(i) > 0  # (a list is a tensor to PyTorch)
        if is_tensor and start <= axis < start + width:
            return tensor_dims + axis - start
        tensor_dims += width if is_tensor else 0
    return axis


def index_error_in_pytorch_words(error, shape, index):
    """NumPy's IndexError for ``array[index]`` (array of ``shape``) said as PyTorch says it: dims, not axes,
    and a mask that does not fit named with its shape and the tensor's."""
    message = str(error)
    found = re.fullmatch(r"index (-?\d+) is out of bounds for axis (\d+) with size (\d+)", message)
    if found:
        position, axis, size = found.groups()
        if size == "0":
            return IndexError("index is out of bounds for dimension with size 0")
        dim = index_tensor_dim(index if isinstance(index, tuple) else (index,), int(axis), len(shape))
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


def warn_uint8_mask():
    """PyTorch reads a uint8 index tensor as a mask (where NumPy reads integer positions), and says so each time."""
    warnings.warn("indexing with dtype torch.uint8 is now deprecated, please use a dtype torch.bool instead.",
                  UserWarning, stacklevel=program_stacklevel())


def refuse_uint8_mask_fill(index_arrays, numel):
    """PyTorch writes one number (``numel`` 1) through an index of one mask tensor (beside slices and None) as
    masked_fill_ does, and masked_fill_ takes bool masks only: ``x[m] = 0`` with a uint8 ``m`` is its error, where
    ``x[m]`` reads m as a mask (with a warning) and ``x[m] = v`` writes several numbers. ``index_arrays`` are the
    index's tensors (and lists), integers beside them already applied."""
    if numel == 1 and len(index_arrays) == 1 and getattr(index_arrays[0], "dtype", None) == xp.uint8:
        raise RuntimeError("masked_fill_ only supports boolean masks, but got mask with dtype unsigned char")
