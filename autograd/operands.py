"""What a Python number (or a list, or an array) beside a tensor becomes: PyTorch's rule that a number never raises
the dtype of a tensor of its own category or above (float32 + 0.5 stays float32, int32 + 1 stays int32), and
takes its category's default dtype otherwise (an integer tensor times 0.5 is float). Every binary op and in-place
write reads its other operand through ``_operand`` or, on the fast paths, ``_operand_array``."""

import numbers

import numpy

from . import backend
from .backend import xp
from .sparse_layout import is_sparse
from .tensor import Tensor, as_array


def _is_bool(value):
    """A bool tensor, or Python's True or False (what PyTorch will not subtract)."""
    return type(value) is bool or (isinstance(value, Tensor) and value._data.dtype.kind == "b")


def _operand(value, like):
    """A Tensor for the other operand of ``like`` op ``value``. A Python number never raises
    the dtype of a tensor of its own category or above (PyTorch's rule): float32 stays
    float32, an int32 tensor plus 1 stays int32; a number of a higher category takes that
    category's default (an integer tensor times 0.5 gives the default float dtype)."""
    if isinstance(value, Tensor):
        return value
    if is_sparse(value):  # dense op sparse: the sparse operand as the dense tensor it is, of the dense one's size
        refuse_broadcast_with_sparse(like, value)
        return value.to_dense()
    return Tensor._make(_operand_array(value, like))


def refuse_broadcast_with_sparse(dense, sparse):
    """PyTorch's dense-sparse arithmetic does not broadcast: the dense operand (or a number, size []) must have the
    sparse one's size."""
    size = list(getattr(dense, "shape", ()))
    if size != list(sparse.shape):
        raise RuntimeError(f"add: expected 'self' and 'other' to have same size, but self has size {size} while other "
                           f"has size {list(sparse.shape)} (FYI: dense-sparse addition does not currently support "
                           "broadcasting)")


def _operand_array(value, like):
    """The array of ``_operand(value, like)``: the in-place fast paths need no Tensor around a number."""
    if isinstance(value, Tensor):
        return value._data
    if not isinstance(like, Tensor):  # (PyTorch's functions of two numbers take no other pair than add's and mul's)
        raise TypeError(f"expected a Tensor among the arguments, got {type(value).__name__} and "
                        f"{type(like).__name__}")
    array = _number_array(value, like._data.dtype)
    return as_array(value) if array is None else array


# what PyTorch's Python operators take from no side: Python answers x + None, x + [1, 2] and [pad] * n itself
# (unsupported operand type(s), or a sequence's repetition by a 0-d tensor's __index__)
_NOT_OPERANDS = (type(None), str, bytes, list, tuple, range, dict, set, frozenset)


def left_to_python(value):
    """Whether an arithmetic operator (x + value, value ** x) returns NotImplemented for ``value``, as PyTorch's
    do: None, a string or a Python container is no operand of them (the functions, autograd.add(x, [1, 2]), read a
    list as a tensor), nor an object of a type that is no number and no array, so that its own reflected
    operator (a unit's __radd__, a symbol's __rmul__) answers, or Python's TypeError."""
    if isinstance(value, (Tensor, numbers.Number, numpy.ndarray, numpy.generic)):
        return False
    return isinstance(value, _NOT_OPERANDS) or not (is_sparse(value) or hasattr(value, "__array__")
                                                    or hasattr(value, "__array_interface__"))


def is_no_number(value):
    """Whether a value given where PyTorch takes a number (a fill value, x[i] = value) is plainly none: None, a string,
    a dict or a set. PyTorch refuses these with a TypeError; NumPy would write None as NaN, and a string of digits as
    its number."""
    return value is None or isinstance(value, (str, bytes, dict, set, frozenset))


def real_part(number, type_name):
    """A complex ``number`` where PyTorch converts it to a real C type (``type_name``: its kernel's scalar, "float",
    "double"): its real part where it has no imaginary one (2+0j is 2), else PyTorch's refusal. (NumPy would drop
    the imaginary part silently, or make the result complex.)"""
    if number.imag:
        raise RuntimeError(f"value cannot be converted to type {type_name} without overflow")
    return number.real


def python_number(value):
    """A NumPy scalar (``numpy.float64(0.5)``, ``numpy.int64(3)``) as the Python number it holds; anything else as
    it is. PyTorch reads a NumPy scalar as a Python number, which never raises a tensor's dtype; NumPy 2 keeps the
    scalar's own dtype in arithmetic (float32 ** numpy.float64(0.5) would be float64). ``numpy.bool_`` is no Python
    bool to PyTorch's reading of a number: it is read as a float (``full((2,), numpy.bool_(True))`` is float32 1.0,
    an int tensor times ``numpy.bool_(True)`` is float)."""
    if type(value) is numpy.bool_:
        return float(value)
    return value.item() if isinstance(value, numpy.generic) else value


def _number_array(value, dtype):
    """A Python number as a 0-d array by ``_operand``'s rule, beside a tensor of ``dtype``;
    None for anything else (lists, arrays). (Plain ints and floats are tested
    by type first: the ABC checks cost more than the conversion.)"""
    kind = dtype.kind
    if isinstance(value, bool):
        pass  # a bool keeps the tensor's dtype
    elif type(value) is int or type(value) is not float and isinstance(value, numbers.Integral):
        dtype = dtype if kind in "iufc" else backend.int64  # (beside complex64 a complex64 2, not NumPy's int64,
        # which would widen complex64 to complex128 in lerp's kernel and the like)
    elif type(value) is float or isinstance(value, numbers.Real) or type(value) is numpy.bool_:  # (python_number's)
        dtype = dtype if kind == "f" or kind == "c" else backend.get_default_dtype()  # (complex: its precision)
    elif isinstance(value, numbers.Complex):  # the tensor's precision, made complex (PyTorch's rule)
        dtype = dtype if kind == "c" else backend.complex_counterpart(dtype) if kind == "f" else \
            backend.get_default_complex_dtype()
    else:
        return None
    try:
        return xp.asarray(value, dtype=dtype)
    except OverflowError:  # an integer out of an integer dtype's range (uint8 and -3): cast as PyTorch casts it
        return xp.asarray(value, dtype=backend.int64).astype(dtype)
