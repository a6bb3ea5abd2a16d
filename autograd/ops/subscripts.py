"""Subscripts: ``x[index]``, ``x[index] = value`` and ``del x[index]``, with the index read as PyTorch
reads it before NumPy sees it (a short list of sequences is a tuple, a 0-d integer tensor an integer,
integers beside index arrays applied first), and NumPy's refusals said in PyTorch's words. The
primitives they record are shape.py's: GetItem, and IndexPut through the write door."""

import builtins
import warnings

import numpy

from ..backend import xp
from ..errors import DtypeError
from ..graph import program_stacklevel
from ..index_watching import watch_index_tensors
from ..operands import is_no_number
from ..tensor import Tensor
from ..write_door import _refuse_overflow
from .conversion import type_name
from .index_errors import (
    _covered,
    index_error_in_pytorch_words,
    is_integer_index,
    refuse_uint8_mask_fill,
    warn_uint8_mask,
)
from .names import names
from .shape import GetItem, reshape


def _ndim(index):
    """The number of dims of an index array or (nested) list: an array's own (CuPy's cannot be read by NumPy)."""
    return index.ndim if isinstance(index, xp.ndarray) else numpy.ndim(index)


def _is_mask(index):
    """True for a bool index array or a (nested) list of bools."""
    return (index.dtype if isinstance(index, xp.ndarray) else numpy.asarray(index).dtype).kind == "b"


def _sequence_as_tuple(index):
    """Whether PyTorch reads a list index as a tuple of indices (x[[0, slice(None)]] is x[0, :], and
    x[[[0, 1], [1, 0]]] is x[[0, 1], [1, 0]]), as NumPy did before 1.23: a short list holding a tensor,
    a sequence (a range too), a slice, None or Ellipsis. PyTorch warns that this is deprecated."""
    if not isinstance(index, list) or len(index) >= 32:
        return False
    return builtins.any(isinstance(i, (Tensor, list, tuple, range, xp.ndarray, slice)) or i is None or i is Ellipsis
                        for i in index)


def _array_index(i):
    """One index with a tensor's array for the tensor. A uint8 tensor is read as a mask (PyTorch's
    deprecated rule, with its warning: NumPy would read it as integer positions); a negative step
    is refused (NumPy would reverse: PyTorch has no such view)."""
    if type(i) is int:  # (the common x[t]: none of the checks below)
        return i
    if isinstance(i, (Tensor, numpy.ndarray)):  # (a NumPy array is read as PyTorch reads it: as a tensor)
        is_tensor = isinstance(i, Tensor)
        i = i._data if is_tensor else i
        if i.ndim == 0 and i.dtype.kind in "iu" and i.dtype != xp.uint8:
            return int(i)  # a 0-d integer tensor is an integer (x[t] is a view), not an index array (a copy)
        if is_tensor and (i.dtype.kind in "fc" or i.dtype.kind in "iu" and i.dtype not in (xp.int64, xp.int32,
                                                                                           xp.uint8)):
            # PyTorch indexes by int64, int32, uint8 (a mask) and bool tensors only; NumPy would take int8 positions
            # (a NumPy array of them is converted first, as PyTorch converts it)
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        if i.dtype == xp.uint8:
            warn_uint8_mask()
            return i.astype(bool)
        if not is_tensor and i.dtype.kind == "f":  # (PyTorch reads a NumPy array index as a sequence of numbers)
            return i.astype(numpy.int64)
    elif isinstance(i, list) and _holds_floats(i):
        return numpy.asarray(i).astype(numpy.int64)
    elif isinstance(i, (float, numpy.floating, numpy.bool_)):  # (NumPy's refusal has other words; a NumPy bool
        # is no Python bool, which adds a dim)
        kind = type(i).__name__ if type(i) is float else f"numpy.{type(i).__name__}"
        raise IndexError("only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid "
                         f"indices (got {kind})")
    elif isinstance(i, slice) and i.step is not None and i.step < 0:
        raise ValueError("step must be greater than zero")
    return i


def _holds_floats(sequence):
    """Whether a (nested) list index holds a float: PyTorch makes an index tensor of a sequence of numbers, and an
    int64 one of floats (the positions toward zero: [1.7, -1.5] is [1, -1]), where NumPy refuses them."""
    return builtins.any(isinstance(e, float) or isinstance(e, list) and _holds_floats(e) for e in sequence)


@names("__getitem__")
def _getitem(x, index):
    if type(index) is int:  # (the common x[t]: an index to read as it is, and no index tensor to watch)
        return GetItem.apply(x, index=index)
    if _sequence_as_tuple(index):
        warnings.warn("Using a non-tuple sequence for multidimensional indexing is deprecated and will be changed "
                      "in pytorch 2.9; use x[tuple(seq)] instead of x[seq]. In pytorch 2.9 this will be interpreted "
                      "as tensor index, x[torch.tensor(seq)], which will result either in an error or a different "
                      "result", UserWarning, stacklevel=program_stacklevel())
    given = index
    x, index = _as_pytorch_reads_it(x, index)
    y = GetItem.apply(x, index=index)
    if y.grad_fn is not None and type(given) is not int:  # (the common x[t] of no graph: nothing to watch)
        watch_index_tensors(y, given)
    return y


@names("__setitem__", function=False)
def _setitem(x, index, value):
    """x[index] = value, the index read as ``x[index]`` reads it: where an integer stands beside index
    arrays it selects first (x[0, :, [1, 2]] is a (3, 2) region, as PyTorch's, not NumPy's (2, 3)), so the
    write goes through that view of x, and the value broadcasts against the region PyTorch's does."""
    if isinstance(value, Tensor):
        count = value.numel()
    else:
        _refuse_non_number(x, value)
        count = numpy.size(value)
    refuse_uint8_mask_fill(_index_arrays(tuple(index) if _sequence_as_tuple(index) else index), count)
    given = index
    x, index = _as_pytorch_reads_it(x, index)
    mask = index[0] if isinstance(index, tuple) and len(index) == 1 else index
    if isinstance(value, Tensor) and value._data.size == 1 and value._data.dtype != x._data.dtype \
            and isinstance(mask, xp.ndarray) and mask.ndim and mask.dtype == bool:
        # x[mask] = one number of another dtype is PyTorch's masked_fill_ of it, which refuses a number x's dtype
        # cannot hold, as fill_ does (a 0-d int64 300 into uint8, NaN into integers; -1 into uint8 is 255)
        _refuse_overflow(value.item(), x._data.dtype)
    if isinstance(value, Tensor) and value.ndim and value.shape[0] == 1:
        value = _without_leading_ones(value)
    if type(value) is Tensor and value._data.dtype != x._data.dtype:
        _refuse_index_put_of_another_dtype(x, index, value)
    node_before = x.grad_fn
    try:
        x._write_at(index, value)
    except IndexError as error:
        raise index_error_in_pytorch_words(error, x.shape, index) from None
    if x.grad_fn is not node_before:  # (a recorded write: under no_grad x keeps the node that made it)
        watch_index_tensors(x, given)


def _refuse_non_number(x, value):
    """PyTorch's refusal of a value that is no number (x[i] = None, x[i] = "a"): NumPy would write None as NaN
    into a floating x, a silent wrong answer."""
    if is_no_number(value):
        raise TypeError(f"can't assign a {type(value).__name__} to a torch.{type_name(x.dtype)}Tensor")


def _index_arrays(index):
    """The tensors (arrays, lists, bools) of an index as PyTorch's index_put_ receives them: a 0-d integer tensor
    is an integer, which selects first (and a 0-d uint8 one a bool, as PyTorch's subscripts read it)."""
    parts = index if isinstance(index, tuple) else (index,)
    arrays = [i._data if isinstance(i, Tensor) else i for i in parts
              if isinstance(i, (Tensor, xp.ndarray, list)) or type(i) is bool]
    return [i for i in arrays if not (isinstance(i, xp.ndarray) and i.ndim == 0 and i.dtype.kind in "iu")]


def _without_leading_ones(value):
    """value without its leading dims of size 1: PyTorch drops them before it broadcasts a written value
    to the region (x[True] = v of shape (1, 1, 2, 3), x of shape (2, 3)), where NumPy may refuse them."""
    shape = value.shape
    while shape and shape[0] == 1:
        shape = shape[1:]
    return reshape(value, shape)


@names("__delitem__", function=False)
def _delitem(x, index):
    """``del x[i]``: a tensor's size is fixed, so PyTorch refuses it (a TypeError, not the AttributeError a
    class with only ``__setitem__`` gives)."""
    raise TypeError("Tensor does not support deleting items")


def _refuse_index_put_of_another_dtype(x, index, value):
    """PyTorch casts a value of another dtype into a region that ints, slices, None and ... select (a copy_),
    and into the elements one mask selects when the value has one element (a masked_fill_), but refuses it
    where an index tensor or list selects (index_put_ takes the destination's dtype only): x[[0, 1]] =
    a float64 tensor, x of float32. A bool among several indices, or a 0-d bool tensor, is such an index."""
    parts = index if isinstance(index, tuple) else (index,)
    selecting = [i for i in parts if isinstance(i, list) or isinstance(i, xp.ndarray) and (i.ndim or i.dtype == bool)
                 or type(i) is bool and len(parts) > 1]
    if not selecting or value._data.size == 1 and len(selecting) == 1 and _ndim(selecting[0]) \
            and _is_mask(selecting[0]):
        return
    # PyTorch's order of checks: the index's structure (a mask that does not fit, too many indices), the value's
    # shape, its dtype, and last the positions' range
    try:
        region = x._data[index].shape
    except IndexError as error:
        if "out of bounds" not in str(error):
            raise
    else:
        shape = value.shape
        while shape and shape[0] == 1 and len(shape) > len(region):  # (leading 1s are dropped, as PyTorch's)
            shape = shape[1:]
        try:
            if xp.broadcast_shapes(shape, region) != region:
                return  # (x._write_at reports the shape)
        except ValueError:
            return
    raise DtypeError(f"Index put requires the source and destination dtypes match, got {type_name(x.dtype)} for "
                     f"the destination and {type_name(value.dtype)} for the source.")


def _as_pytorch_reads_it(x, index):
    """(x, index) for NumPy to index as PyTorch indexes x[index]: a sequence read as a tuple, tensors as
    their arrays, and integers beside index arrays applied first (a view of x)."""
    if _sequence_as_tuple(index):
        index = tuple(index)
    if not isinstance(index, tuple):
        return x, _array_index(index)
    indices, ellipses = [], 0
    for i in index:  # (a loop, not a comprehension: its warnings name the caller's line)
        indices.append(_array_index(i))
        if i is Ellipsis:
            ellipses += 1
    index = tuple(indices) if ellipses < 2 else _ellipses_as_slices(indices, x.ndim)
    return _integers_first(x, index) if _ints_beside_arrays(index) else (x, index)


def _ellipses_as_slices(index, ndim):
    """An index of several ellipses as PyTorch reads it, where NumPy allows one: each ellipsis stands for as many
    whole dims as the other parts leave, so x[..., 0, ...] of a 3-d x is x[:, :, 0], x[..., None, ...] appends a
    dim and x[..., ...] is x. The dims an ellipsis passes are counted even beyond x's last (PyTorch's dim counter
    runs on): a part after that point indexes no dim, and is refused."""
    width = ndim - builtins.sum(map(_covered, index))
    parts, passed = [], 0
    for i in index:
        if i is Ellipsis:
            parts.extend([slice(None)] * min(width, ndim - passed))
            passed += width
        elif passed > ndim:
            raise IndexError(f"too many indices for tensor of dimension {ndim}")
        else:
            parts.append(i)
            passed += _covered(i)
    return tuple(parts)


def _ints_beside_arrays(index):
    return builtins.any(is_integer_index(i) for i in index) and \
        builtins.any(isinstance(i, (list, xp.ndarray)) and numpy.ndim(i) > 0 for i in index)


def _integers_first(x, index):
    """x with the integer indices applied, and what is left of ``index``. PyTorch selects with an
    integer before it indexes with arrays, so x[0, :, [1, 2]] has shape (3, 2) for x of shape
    (2, 3, 4): NumPy counts the 0 among the advanced indices, and so moves their dim first, (2, 3)."""
    first, rest = [], []
    for i in index:
        if is_integer_index(i):
            first.append(i)
        elif isinstance(i, (list, xp.ndarray)) and _ndim(i) > 0:
            dims = _ndim(i) if _is_mask(i) else 1  # (a mask takes its ndim dims)
            first.extend([slice(None)] * dims)
            rest.append(i)
        else:
            first.append(i)  # (a slice, None or Ellipsis: applied now, kept whole afterwards)
            rest.append(Ellipsis if i is Ellipsis else slice(None))
    return GetItem.apply(x, index=tuple(first)), tuple(rest)
