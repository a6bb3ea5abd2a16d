"""A float16 tensor times or over a number, as PyTorch computes it: in float32, rounded to float16 once, with the
number itself not rounded to float16 (1e5 would be inf, 0.1 lose digits). ``elementwise.binary`` sends such
products and quotients here."""

from .. import backend
from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .broadcasting import unbroadcast


def half_with_number(x, y):
    """x a float16 tensor and y a number: a Python one, or a 0-d real tensor as the second operand (PyTorch's
    kernels read a 0-d second operand beside a tensor with dims by its value, not rounded to float16; a 0-d
    first operand is rounded)."""
    if type(x) is not Tensor or x._data.dtype != backend.float16:
        return False
    if type(y) is Tensor:
        return y.ndim == 0 and x.ndim > 0 and y._data.dtype.kind in "fiub"
    return isinstance(y, (int, float)) and not isinstance(y, bool)


def number_beside_half(number):
    """The number beside a float16 tensor as HalfMul and HalfDiv take it: a 0-d tensor as it is, a Python number as
    a 0-d float32 tensor (PyTorch's kernels compute in float32)."""
    return number if type(number) is Tensor else Tensor._make(xp.asarray(number, dtype=backend.float32))


class HalfMul(Primitive):
    """z = x · y for a float16 x and a number y (a 0-d tensor: a Python number's is float32), computed in float32
    and rounded to float16 once, as PyTorch's kernels do (y itself is not rounded to float16: 1e5 would be inf,
    0.1 lose digits);   dL/dx = dL/dz · y (rounded alike),   dL/dy = Σ dL/dz · x (each product in float16, as
    PyTorch's; then in y's dtype)

    One node, MulBackward0 as PyTorch's, where casts around a float32 product showed ToCopyBackward0 in the graph
    and in the tensor's repr."""

    op_name = "Mul"  # as the graph and PyTorch (MulBackward0) call it
    saved_input_readers = ((1,), (0,))  # x is read only for dL/dy, y only for dL/dx

    def forward(self, x, y):
        return (x.astype(backend.float32) * y.astype(backend.float32)).astype(backend.float16)

    def backward(self, grad, z, x, y):
        return (HalfMul.apply_in_backward(grad, y) if x.requires_grad else None,
                unbroadcast(grad * x, y).to(y.dtype) if y.requires_grad else None)


class HalfDiv(Primitive):
    """z = x / y for a float16 x and a number y, computed in float32 and rounded to float16 once (HalfMul's rule);
    dL/dx = dL/dz / y (rounded alike),   dL/dy = -Σ dL/dz · (x / y) / y (each step rounded to float16, as PyTorch's;
    then in y's dtype). One node, DivBackward0."""

    op_name = "Div"  # as the graph and PyTorch (DivBackward0) call it
    saved_input_readers = ((1,), (0, 1))  # x is read only for dL/dy; y for both

    def forward(self, x, y):
        return (x.astype(backend.float32) / y.astype(backend.float32)).astype(backend.float16)

    def backward(self, grad, z, x, y):
        quotient = HalfDiv.apply_in_backward(HalfDiv.apply_in_backward(x, y), y) if y.requires_grad else None
        return (HalfDiv.apply_in_backward(grad, y) if x.requires_grad else None,
                unbroadcast(-grad * quotient, y).to(y.dtype) if y.requires_grad else None)
