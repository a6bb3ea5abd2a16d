"""PyTorch's type promotion, asked directly: ``result_type(a, b)`` (the dtype ``a + b`` would
have), ``promote_types(dtype1, dtype2)`` and ``can_cast(from_, to)``.

They answer with the rules the arithmetic itself uses (``elementwise.result_type``): the
categories bool < integer < floating, the widest dtype within the winning category, and a
Python number or a 0-d tensor never widening a tensor of its own category.
"""

import numbers

import numpy

from ..operands import _operand
from ..tensor import Tensor, tensor_from
from .elementwise import _CATEGORY, common_dtype
from .elementwise import result_type as _result_type
from .names import names


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
    return _result_type(_as_tensor(tensor1, tensor2), _as_tensor(tensor2, tensor1))


@names("promote_types", method=False)
def promote_types(type1, type2):
    """The smallest dtype both type1 and type2 convert to without leaving their highest category
    (int32 with float16 is float16, where NumPy says float32)."""
    return common_dtype((numpy.dtype(type1), numpy.dtype(type2)))


@names("can_cast", method=False)
def can_cast(from_, to):
    """Whether PyTorch's in-place ops may write a from_ value into a to tensor: never into a lower
    category (a float into an integer, an integer into a bool); narrowing within one is allowed."""
    return _CATEGORY[numpy.dtype(from_).kind] <= _CATEGORY[numpy.dtype(to).kind]
