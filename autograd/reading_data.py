"""How ``tensor(data)``, ``as_tensor`` and ``from_numpy`` read the user's data into an array: the dtype PyTorch
infers for a list holding tensors, arrays or Python numbers; its refusals of what NumPy would read (strings, objects,
integers past int64, a foreign byte order, negative strides); its casts of integers out of a dtype's range.
"""

import itertools
import math
import warnings

import numpy

from . import backend
from .backend import to_numpy, xp
from .graph import program_stacklevel
from .tensor import Tensor, as_array
from .warn_once import warn_once


def refuse_foreign_byte_order():
    raise ValueError("given numpy array has byte order different from the native byte order. Conversion between "
                     "byte orders is currently not supported.")


def shareable(ndarray):
    """``ndarray`` as a tensor's memory, with PyTorch's checks (from_numpy's and asarray's): a dtype it has, native
    byte order, strides of whole elements and none negative (a PyTorch tensor has no such strides), and a warning
    for a read-only array."""
    refuse_array_of_no_tensor_dtype(ndarray)
    if not ndarray.dtype.isnative:
        refuse_foreign_byte_order()
    if any(stride % ndarray.itemsize for stride in ndarray.strides):
        raise ValueError("given numpy array strides not a multiple of the element byte size. Copy the numpy array "
                         "to reallocate the memory.")
    if ndarray.size and any(stride < 0 for stride in ndarray.strides):
        raise ValueError("At least one stride in the given numpy array is negative, and tensors with negative "
                         "strides are not currently supported. (You can probably work around this by making a copy "
                         "of your array  with array.copy().) ")
    if not getattr(ndarray.flags, "writeable", True):
        warn_once("not writable", "The given NumPy array is not writable, and PyTorch does not support "
                  "non-writable tensors. This means writing to this tensor will result in undefined behavior. You may "
                  "want to copy the array to protect its data or make it writable before converting it to a tensor.")
    return xp.asarray(ndarray)


_NUMBER_DTYPES = ("float64", "float32", "float16", "complex64", "complex128", "int64", "int32", "int16", "int8",
                  "uint64", "uint32", "uint16", "uint8", "bool")


def refuse_array_of_no_tensor_dtype(ndarray):
    """PyTorch's TypeError for an array of objects, strings, dates or long doubles (no tensor dtype holds them: a
    pandas column of mixed values comes as objects), from ``tensor``, ``as_tensor`` and ``from_numpy`` alike."""
    if ndarray.dtype.name not in _NUMBER_DTYPES:
        raise TypeError(f"can't convert np.ndarray of type numpy.{ndarray.dtype.type.__name__}. The only supported "
                        f"types are: {', '.join(_NUMBER_DTYPES[:-1])}, and {_NUMBER_DTYPES[-1]}. (This project "
                        f"cannot make a tensor of {ndarray.dtype} values: convert the array to numbers first, "
                        "e.g. array.astype(numpy.float32).)")


def read_array(data, dtype, copy):
    """``data`` as an array (of ``dtype``, or as_array's inference), with PyTorch's refusals of what
    NumPy would read: a string, whatever the dtype (NumPy reads 'abc' as True in a bool tensor), and
    a Python integer past int64's range (NumPy makes uint64) unless a floating or bool dtype is asked
    for. An integer out of an integer dtype's range is cast as PyTorch casts it (``integers_cast``)."""
    if isinstance(data, (str, bytes)) or dtype is not None and xp.dtype(dtype).kind == "b" and _holds_strings(data):
        as_array(data)  # (raises its TypeError: strings are no numbers)
    if isinstance(data, (bytearray, memoryview)):  # a sequence of Python numbers to PyTorch (bytearray(b"ab") is
        data = data.tolist() if isinstance(data, memoryview) else list(data)  # int64 [97, 98]), not NumPy's uint8
    if isinstance(data, numpy.ndarray):
        refuse_array_of_no_tensor_dtype(data)
    if _is_sequence(data) and not isinstance(data, (list, tuple, range)):
        try:  # a sequence NumPy cannot read as one (its __getitem__ fails): PyTorch's ValueError
            len(data) and data[0]
        except Exception:
            raise ValueError(f"could not determine the shape of object type '{type(data).__name__}'") from None
    listed = _listed_dtype(data) if isinstance(data, (list, tuple)) else None
    if listed is not None:  # (a list holding tensors, arrays or NumPy scalars: read as PyTorch reads them)
        data = _arrays_for_tensors(data, _listed_sizes(data), xp.dtype(listed if dtype is None else dtype))
        if dtype is None:
            try:
                return xp.asarray(data, dtype=listed)
            except ValueError:  # a ragged list: as_array's error names it
                as_array(data)
                raise
    if dtype is None:
        try:
            array = as_array(_copy(data) if copy else data)
        except TypeError:
            if isinstance(data, (list, tuple)) and _holds_strings(data):
                raise _string_in_list(data) from None
            if _python_numbers(data) and _holds(data, int):  # an int past int64's range (NumPy's object array)
                if not _holds(data, float):
                    raise ValueError("Overflow when unpacking long long") from None
                return as_array(_as_floats(data))  # (among floats it is read as one, as PyTorch reads it)
            raise
        if array.dtype == numpy.uint64 and isinstance(data, (int, list, tuple)):
            raise ValueError("Overflow when unpacking long long")
        return array
    try:
        array = xp.array(data, dtype=dtype, copy=True) if copy else as_array(data, dtype)
    except OverflowError:  # (NumPy's: an integer out of dtype's range)
        return integers_cast(data, dtype)
    except ValueError:  # (NumPy's, for strings into numbers: as_array's TypeError)
        values = as_array(data)
        if xp.dtype(dtype).kind in "iu" and values.dtype.kind == "f":  # a NaN into integers: PyTorch's overflow
            raise RuntimeError(f"value cannot be converted to type {xp.dtype(dtype)} without overflow") from None
        raise
    if array.dtype.kind in "fc" and _holds_none(data, array):
        raise TypeError("must be real number, not NoneType")  # (NumPy reads None as NaN into a floating dtype)
    return array


def _holds_none(data, array):
    """Whether ``data``, read into the floating ``array``, held None (NumPy's NaN for it): PyTorch refuses it as no
    number. (The list is walked only where the array holds a NaN.)"""
    if data is None:
        return True
    return isinstance(data, (list, tuple)) and bool(xp.isnan(array).any()) and _holds(data, type(None))


_PYTHON_NUMBERS = {int, float, bool, complex}
_HOLDERS = (Tensor, xp.ndarray, numpy.ndarray, numpy.generic)  # what carries a dtype of its own


def _listed_dtype(data):
    """PyTorch's dtype for a (nested) list that holds tensors, arrays or NumPy scalars: the promotion of
    its items' dtypes, a Python bool counting as bool, an int as int64, a float as the default dtype and
    a complex as the default complex dtype (``tensor([R])`` with R a float64 0-d tensor is float64,
    ``tensor([1, h])`` with h float16 is float16). NumPy reads a 0-d tensor through ``float()`` and
    promotes otherwise (a Python float is float64 to it), so it is asked for the values only. None for
    a list of Python numbers alone, which NumPy reads as PyTorch does once as_array has cast its float64
    to the default dtype, and for a list holding anything else (as_array's errors then speak)."""
    python = {bool: numpy.dtype(bool), int: numpy.dtype(numpy.int64), float: backend.get_default_dtype(),
              complex: backend.get_default_complex_dtype()}
    dtypes, found, path = set(), [], set()

    def visit(items):
        if not items:  # (an empty list is of the default dtype to PyTorch's inference)
            dtypes.add(numpy.dtype(python[float]))
        kinds = set(map(type, items))
        dtypes.update(numpy.dtype(python[kind]) for kind in kinds & _PYTHON_NUMBERS)
        if kinds <= _PYTHON_NUMBERS:
            return True
        path.add(id(items))  # (the lists being visited: one holding itself would be visited forever)
        for item in items:
            if isinstance(item, (list, tuple)):
                if id(item) in path:
                    raise TypeError("self-referential lists are incompatible")
                if not visit(item):
                    return False
            elif isinstance(item, _HOLDERS):
                dtypes.add(numpy.dtype(item.dtype))
                found.append(True)
            elif type(item) not in _PYTHON_NUMBERS:
                return False
        path.discard(id(items))
        return True

    level = data
    while True:  # level by level, at C speed, while the lists hold lists or Python numbers only
        kinds = set(map(type, level))
        if kinds <= _PYTHON_NUMBERS:
            return None
        if not kinds <= {list, tuple}:
            break
        level = list(itertools.chain.from_iterable(level))
    if not visit(data) or not found:
        return None
    from .ops.promotion import common_dtype  # (here: importing the ops while this module loads is circular)

    return common_dtype(dtypes)


def _listed_sizes(data):
    """The shape PyTorch finds for a nested list: it walks down the first items while they are sequences, and a
    tensor is none (an array is, of its shape). So ``tensor([[1, 2], t])`` is 2×2 with t of two elements, where
    ``tensor([t, [1, 2]])`` reads t as one number and fails."""
    sizes = []
    while isinstance(data, (list, tuple)) and data:
        sizes.append(len(data))
        data = data[0]
    if isinstance(data, (list, tuple)):
        return (*sizes, 0)
    if not isinstance(data, (numpy.ndarray, xp.ndarray)):
        return tuple(sizes)
    if data.ndim == 0:  # (an array is a sequence to PyTorch's walk, and a 0-d one has no length)
        raise TypeError("len() of unsized object (a 0-d array first in a list: give its number, array.item())")
    return (*sizes, *data.shape)


def _arrays_for_tensors(data, sizes, dtype, dim=0):
    """A nested list with each tensor in it replaced by its array, in host memory (the array module reads the list
    through NumPy, and CuPy refuses to convert its own arrays implicitly there). ``sizes``: the list's shape, as
    _listed_sizes finds it; ``dim``: the one ``data`` stands at; ``dtype``: the one the list is read into."""
    if isinstance(data, Tensor):
        return _tensor_in_list(data, sizes, dim, dtype)
    if isinstance(data, (list, tuple)):
        return [_arrays_for_tensors(item, sizes, dtype, dim + 1) for item in data]
    if type(data) is numpy.ndarray:  # (PyTorch's advice, once, where it says it)
        warn_once("list of ndarrays", "Creating a tensor from a list of numpy.ndarrays is extremely slow. Please "
                  "consider converting the list to a single numpy.ndarray with numpy.array() before converting to a "
                  "tensor.")
    return to_numpy(data) if isinstance(data, xp.ndarray) else data


def _tensor_in_list(tensor, sizes, dim, dtype):
    """A tensor met in a list at ``dim``, as PyTorch reads it: where dims remain it is a sequence of its rows,
    whose lengths must be the list's (its ValueError otherwise), and each element left at the list's last dim is one
    number, so a tensor of several there is refused: its ValueError ("only one element tensors"), or its TypeError
    where the number is read as an index (an integer or bool dtype, which refuses a floating tensor's number too)."""
    array = to_numpy(tensor._data) if isinstance(tensor._data, xp.ndarray) else numpy.asarray(tensor._data)
    if dtype.kind in "biu" and array.dtype.kind in "fc":
        raise TypeError("only integer tensors of a single element can be converted to an index (a "
                        f"{array.dtype} tensor in a list read as {dtype})")
    depth = len(sizes) - dim  # (the dims still to come)
    if depth == 0 and tensor.requires_grad:
        warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
                      "Consider using tensor.detach() first.", UserWarning, stacklevel=program_stacklevel())
    if array.ndim <= depth:  # (fewer dims than the list's: the ragged list's error, from NumPy's reading)
        return array
    for i, (length, expected) in enumerate(zip(array.shape, sizes[dim:])):
        if length != expected:
            raise ValueError(f"expected sequence of length {expected} at dim {dim + i} (got {length})")
    if math.prod(array.shape[depth:]) != 1:
        read_as = "one number" if depth == 0 else f"a {depth}-d list of numbers"
        where = f" (a tensor of shape {array.shape} read as {read_as} in the list: join tensors with autograd.stack)"
        if dtype.kind in "biu":
            raise TypeError("only integer tensors of a single element can be converted to an index" + where)
        raise ValueError("only one element tensors can be converted to Python scalars" + where)
    return array.reshape(array.shape[:depth])


def _is_sequence(data):
    """A Python sequence (not an array, a tensor or a number): something with a length and items."""
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, _HOLDERS + (str, bytes,
                                                                                                          dict))


def _holds_strings(data):
    if isinstance(data, (list, tuple)):
        return any(_holds_strings(item) for item in data)
    return isinstance(data, (str, bytes))


def _string_in_list(data):
    """PyTorch's error for a string in a list (labels read from a CSV, say). It reads the shape down the first
    elements, where a str is one more sequence: "too many dimensions 'str'" (ValueError); a string met later,
    where a number belongs, is a type it cannot store (TypeError, naming str or bytes)."""
    first = data
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    if isinstance(first, str):
        return ValueError("too many dimensions 'str'")
    kind = next(type(item).__name__ for item in _leaves(data) if isinstance(item, (str, bytes)))
    return TypeError(f"new(): invalid data type '{kind}'")


def _leaves(data):
    if isinstance(data, (list, tuple)):
        for item in data:
            yield from _leaves(item)
    else:
        yield data


def _python_numbers(data):
    """Whether ``data`` is a Python number or a (nested) list or tuple of them only."""
    if isinstance(data, (list, tuple)):
        return all(_python_numbers(item) for item in data)
    return type(data) in _PYTHON_NUMBERS


def _holds(data, kind):
    """Whether a Python number of exactly type ``kind`` is in the (nested) list ``data``, or is ``data``."""
    if isinstance(data, (list, tuple)):
        return any(_holds(item, kind) for item in data)
    return type(data) is kind


def _as_floats(data):
    if isinstance(data, (list, tuple)):
        return [_as_floats(item) for item in data]
    return float(data) if type(data) is int else data


def integers_cast(data, dtype):
    """Python integers out of an integer ``dtype``'s range, as PyTorch casts them: an unsigned dtype
    takes negative values down to -max, wrapped (tensor([-1], dtype=uint8) is 255); others refuse,
    and an integer past int64's range is refused whatever the integer dtype."""
    dtype = xp.dtype(dtype)
    values = numpy.asarray(data)
    if values.dtype.kind in "uO":
        raise ValueError("Overflow when unpacking long long")
    if dtype.kind == "u" and values.dtype.kind == "i" and values.min() >= -numpy.iinfo(dtype).max \
            and values.max() <= numpy.iinfo(dtype).max:
        return xp.asarray(values.astype(dtype))
    raise RuntimeError(f"value cannot be converted to type {dtype} without overflow")


def _copy(data):
    return data.copy() if isinstance(data, xp.ndarray) else data
