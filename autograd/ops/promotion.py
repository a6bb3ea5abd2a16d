"""PyTorch's type promotion, asked directly: ``result_type(a, b)`` (the dtype ``a + b`` would
have), ``promote_types(dtype1, dtype2)`` and ``can_cast(from_, to)``.

They answer with the rules the arithmetic itself uses (``promoted_dtype``, ``common_dtype``, here): the
categories bool < integer < floating, the widest dtype within the winning category, and a
Python number or a 0-d tensor never widening a tensor of its own category.
"""

import numbers

import numpy

from .. import backend
from ..dtype_objects import torch_dtype
from ..operands import _operand
from ..tensor import Tensor, tensor_from
from .names import names

CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def promoted_dtype(x, y):
    """PyTorch's type promotion of two tensors: the higher category (bool < integer < floating)
    wins; within a category the wider dtype, except that a 0-d tensor does not widen a tensor
    with dimensions (float32 with a 0-d float64 stays float32; with a 0-d int64, float32), and
    a 0-d complex tensor makes floats with dimensions complex of their own precision (float64
    with a 0-d complex64 is complex128)."""
    if x.dtype == y.dtype:
        return x.dtype
    cx, cy = CATEGORY[x.dtype.kind], CATEGORY[y.dtype.kind]
    if (x.ndim == 0) != (y.ndim == 0):
        dimensioned, zero_dim = (y, x) if x.ndim == 0 else (x, y)
        cd, cz = (cy, cx) if x.ndim == 0 else (cx, cy)
        if cz <= cd:
            return dimensioned.dtype
        return backend.complex_counterpart(dimensioned.dtype) if cz == 3 and cd == 2 else zero_dim.dtype
    return common_dtype((x.dtype, y.dtype))


def common_dtype(dtypes):
    """PyTorch's promotion of tensors that all have dimensions: the highest category wins, and
    the widest dtype within it (int64 with float32 is float32, where NumPy says float64). A complex result
    keeps the floating dtypes' precision too (complex64 with float64 is complex128)."""
    highest = max(CATEGORY[dtype.kind] for dtype in dtypes)
    lowest_kept = 2 if highest == 3 else highest
    return numpy.result_type(*(dtype for dtype in dtypes if CATEGORY[dtype.kind] >= lowest_kept))


def _as_tensor(value, other):
    if isinstance(value, Tensor):
        return value
    if not isinstance(value, numbers.Number):
        raise TypeError(f"result_type() expects tensors or numbers, got {type(value).__name__}")
    zero = type(value)(0)  # (its dtype is all that matters: 1000 beside an int8 tensor is int8 too)
    return _operand(zero, other) if isinstance(other, Tensor) else tensor_from(zero)


@names("result_type", method=False)
def result_type(tensor1, tensor2):
    """The dtype of an arithmetic result of tensor1 and tensor2 (tensors or Python numbers)."""
    return torch_dtype(promoted_dtype(_as_tensor(tensor1, tensor2), _as_tensor(tensor2, tensor1)))


@names("promote_types", method=False)
def promote_types(type1, type2):
    """The smallest dtype both type1 and type2 convert to without leaving their highest category
    (int32 with float16 is float16, where NumPy says float32)."""
    return torch_dtype(common_dtype((numpy.dtype(type1), numpy.dtype(type2))))


@names("can_cast", method=False)
def can_cast(from_, to):
    """Whether PyTorch's in-place ops may write a from_ value into a to tensor: never into a lower
    category (a float into an integer, an integer into a bool); narrowing within one is allowed."""
    return CATEGORY[numpy.dtype(from_).kind] <= CATEGORY[numpy.dtype(to).kind]
