"""Elementwise primitives: each forward beside its local derivative.

Binary ops broadcast as NumPy does; ``unbroadcast`` sums a gradient back to
the shape of the input it belongs to (the gradient of broadcasting is a sum).
A gradient is computed only for inputs that require one.
"""

import numpy

from .. import backend
from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor, _operand
from .names import names

_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def result_type(x, y):
    """PyTorch's type promotion of two tensors: the higher category (bool < integer < floating)
    wins; within a category the wider dtype, except that a 0-d tensor does not widen a tensor
    with dimensions (float32 with a 0-d float64 stays float32; with a 0-d int64, float32)."""
    if x.dtype == y.dtype:
        return x.dtype
    cx, cy = _CATEGORY[x.dtype.kind], _CATEGORY[y.dtype.kind]
    if (x.ndim == 0) != (y.ndim == 0):
        dimensioned, zero_dim = (y, x) if x.ndim == 0 else (x, y)
        cd, cz = (cy, cx) if x.ndim == 0 else (cx, cy)
        return zero_dim.dtype if cz > cd else dimensioned.dtype
    if cx != cy:
        return x.dtype if cx > cy else y.dtype
    return numpy.promote_types(x.dtype, y.dtype)


def promote(x, y):
    """Both operands as tensors of their common dtype (casts are recorded, so each gradient
    comes back in its own input's dtype)."""
    if not isinstance(x, Tensor):
        x = _operand(x, y)
    if not isinstance(y, Tensor):
        y = _operand(y, x)
    if x.dtype == y.dtype:
        return x, y
    dtype = result_type(x, y)
    return (x if x.dtype == dtype else Cast.apply(x, dtype=dtype),
            y if y.dtype == dtype else Cast.apply(y, dtype=dtype))


def binary(op, x, y):
    """op(x, y) for tensors or numbers on either side, with PyTorch's type promotion
    (true division of integers gives the default floating dtype)."""
    dtype = x._data.dtype if type(x) is Tensor else None
    if dtype is not None and dtype.kind == "f" and type(y) is Tensor and y._data.dtype is dtype:
        return op.apply(x, y)  # the common case: two floating tensors of one dtype
    x, y = promote(x, y)
    if op is Div and x.dtype.kind not in "fc":
        dtype = backend.get_default_dtype()
        x, y = Cast.apply(x, dtype=dtype), Cast.apply(y, dtype=dtype)
    return op.apply(x, y)


def unbroadcast(grad, like):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to ``like.shape``."""
    shape = like.shape
    if grad.shape == shape:
        return grad
    added = grad.ndim - len(shape)
    stretched = tuple(added + i for i, n in enumerate(shape) if n == 1 and grad.shape[added + i] != 1)
    if not stretched:  # only leading axes were added (a bias): summing them gives the shape
        return grad.sum(tuple(range(added)))
    return grad.sum(tuple(range(added)) + stretched, keepdim=True).reshape(shape)


class Add(Primitive):
    """z = x + y;   dL/dx = dL/dz,   dL/dy = dL/dz"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x, y):
        return x + y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(grad, y) if y.requires_grad else None)


class Sub(Primitive):
    """z = x - y;   dL/dx = dL/dz,   dL/dy = -dL/dz"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x, y):
        return x - y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(-grad, y) if y.requires_grad else None)


class Mul(Primitive):
    """z = x · y;   dL/dx = dL/dz · y,   dL/dy = dL/dz · x"""

    def forward(self, x, y):
        return x * y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad * y, x) if x.requires_grad else None,
                unbroadcast(grad * x, y) if y.requires_grad else None)


class Div(Primitive):
    """z = x / y;   dL/dx = dL/dz / y,   dL/dy = -dL/dz · x / y² = -dL/dz · z / y"""

    saves_output = True

    def forward(self, x, y):
        return x / y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad / y, x) if x.requires_grad else None,
                unbroadcast(-grad * z / y, y) if y.requires_grad else None)


class Pow(Primitive):
    """z = x^y;   dL/dx = dL/dz · y · x^(y-1),   dL/dy = dL/dz · z · ln x

    As PyTorch: dL/dx is 0 where y = 0 (x^0 is constant, even at x = 0), and dL/dy is 0
    where x = 0 and y >= 0 (z · ln x → 0 there), never NaN.
    """

    saves_output = True

    def forward(self, x, y):
        return x**y

    def backward(self, grad, z, x, y):
        grad_x = grad_y = None
        with xp.errstate(divide="ignore", invalid="ignore"):  # the masked-out branch may be inf or NaN
            if x.requires_grad:
                grad_x = unbroadcast(where(y == 0, 0.0, grad * y * x ** (y - 1)), x)
            if y.requires_grad:
                at_zero = (x == 0) & (y >= 0)
                grad_y = unbroadcast(where(at_zero, 0.0, grad * z * where(at_zero, 1.0, x).log()), y)
        return grad_x, grad_y


class PowConstant(Primitive):
    """y = x^c for a number c;   dL/dx = dL/dy · c · x^(c-1)  (0 for c = 0, as PyTorch)"""

    def forward(self, x):
        return x**self.exponent

    def backward(self, grad, y, x):
        c = self.exponent
        if c == 0:
            return (grad * 0.0,)
        if c == 2:
            return (grad * x * 2.0,)
        return (grad * c * x ** (c - 1),)


class Maximum(Primitive):
    """z = max(x, y);   dL/dz goes to the larger input, split in half on a tie"""

    def forward(self, x, y):
        return xp.maximum(x, y)

    def backward(self, grad, z, x, y):
        share = (x._data > y._data) + 0.5 * (x._data == y._data)
        return _split(grad, share, x, y)


class Minimum(Primitive):
    """z = min(x, y);   dL/dz goes to the smaller input, split in half on a tie"""

    def forward(self, x, y):
        return xp.minimum(x, y)

    def backward(self, grad, z, x, y):
        share = (x._data < y._data) + 0.5 * (x._data == y._data)
        return _split(grad, share, x, y)


def _split(grad, share_of_x, x, y):
    """Send ``share_of_x`` of grad to x and the rest to y (max, min, where)."""
    share = Tensor._make(share_of_x.astype(grad.dtype))
    return (unbroadcast(grad * share, x) if x.requires_grad else None,
            unbroadcast(grad * (1.0 - share), y) if y.requires_grad else None)


class Where(Primitive):
    """z = x where condition else y;   dL/dx = dL/dz · [condition],   dL/dy = dL/dz · [not condition]"""

    def forward(self, x, y):
        return xp.where(self.condition, x, y)

    def backward(self, grad, z, x, y):
        return _split(grad, xp.broadcast_to(self.condition, grad.shape), x, y)


def where(condition, x, y):
    """Elementwise choice: x where ``condition`` holds, y elsewhere (x, y may be numbers)."""
    condition = condition._data if isinstance(condition, Tensor) else xp.asarray(condition)
    if condition.dtype != bool:
        raise TypeError(f"where: condition must be a bool tensor, got {condition.dtype}")
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = Tensor(x)
    x, y = promote(x, y)
    return Where.apply(x, y, condition=condition)


class Neg(Primitive):
    """y = -x;   dL/dx = -dL/dy"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x):
        return -x

    def backward(self, grad, y, x):
        return (-grad,)


@names("exp", inplace="exp_")
class Exp(Primitive):
    """y = e^x;   dL/dx = dL/dy · y"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True

    def forward(self, x):
        return xp.exp(x)

    def backward(self, grad, y, x):
        return (grad * y,)


@names("log", inplace="log_")
class Log(Primitive):
    """y = ln x;   dL/dx = dL/dy / x"""

    def forward(self, x):
        return xp.log(x)

    def backward(self, grad, y, x):
        return (grad / x,)


@names("sqrt", inplace="sqrt_")
class Sqrt(Primitive):
    """y = √x;   dL/dx = dL/dy / (2y)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True

    def forward(self, x):
        return xp.sqrt(x)

    def backward(self, grad, y, x):
        return (grad / (y * 2.0),)


@names("sin", inplace="sin_")
class Sin(Primitive):
    """y = sin x;   dL/dx = dL/dy · cos x"""

    def forward(self, x):
        return xp.sin(x)

    def backward(self, grad, y, x):
        return (grad * x.cos(),)


@names("cos", inplace="cos_")
class Cos(Primitive):
    """y = cos x;   dL/dx = -dL/dy · sin x"""

    def forward(self, x):
        return xp.cos(x)

    def backward(self, grad, y, x):
        return (-grad * x.sin(),)


@names("tanh", inplace="tanh_")
class Tanh(Primitive):
    """y = tanh x;   dL/dx = dL/dy · (1 - y²)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True

    def forward(self, x):
        return xp.tanh(x)

    def backward(self, grad, y, x):
        return (grad * (1.0 - y * y),)


@names("sigmoid", inplace="sigmoid_")
class Sigmoid(Primitive):
    """y = σ(x) = 1 / (1 + e^-x);   dL/dx = dL/dy · y(1 - y)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True

    def forward(self, x):
        # e^-|x| never overflows; both branches equal 1 / (1 + e^-x) and keep
        # full relative precision where σ(x) is tiny
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def backward(self, grad, y, x):
        return (grad * y * (1.0 - y),)


@names("relu", inplace="relu_")
class Relu(Primitive):
    """y = max(0, x);   dL/dx = dL/dy · [x > 0] = dL/dy · [y > 0]"""

    saves_inputs = False
    saves_output = True

    def forward(self, x):
        return xp.maximum(x, 0)

    def backward(self, grad, y, x):
        return (Mul.apply(grad, Tensor._make(y._data > 0)),)  # a constant mask: no promotion needed


@names("abs", inplace="abs_")
class Abs(Primitive):
    """y = |x|;   dL/dx = dL/dy · sign(x)  (0 at x = 0, as PyTorch)"""

    def forward(self, x):
        return xp.abs(x)

    def backward(self, grad, y, x):
        return (grad * x.sign(),)


class Clamp(Primitive):
    """y = min(max(x, low), high);   dL/dx = dL/dy · [low <= x <= high]"""

    def forward(self, x):
        return xp.clip(x, self.low, self.high)

    def backward(self, grad, y, x):
        inside = xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x._data >= self.low
        if self.high is not None:
            inside &= x._data <= self.high
        return (grad * Tensor._make(inside),)


def clamp(x, min=None, max=None):
    """Clamp to [min, max]; each bound a number, a tensor or None."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):  # ties keep the input's gradient, as PyTorch
        if min is not None:
            x = where(x >= min, x, min)
        return x if max is None else where(x <= max, x, max)
    return Clamp.apply(x, low=min, high=max)


class Cast(Primitive):
    """y = x as another dtype;   dL/dx = dL/dy as x's dtype"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x):
        return x.astype(self.dtype, copy=False)

    def backward(self, grad, y, x):
        return (grad.to(x.dtype),)


class Fill(Primitive):
    """y = a constant c in x's shape (x.fill_(c) when recorded);   dL/dx = 0,   dL/dc = Σ dL/dy"""

    saves_inputs = False

    def forward(self, x, value):
        return xp.full(x.shape, value, dtype=x.dtype)

    def backward(self, grad, y, x, value):
        return (grad * 0.0 if x.requires_grad else None,
                unbroadcast(grad, value) if value.requires_grad else None)


class Clone(Primitive):
    """y = a copy of x;   dL/dx = dL/dy"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x):
        return x.copy()

    def backward(self, grad, y, x):
        return (grad,)


# -- the names these ops go by: Python's operators, PyTorch's methods and functions ------------


@names("add", "__add__")
def add(input, other, alpha=1):
    """input + alpha · other"""
    return binary(Add, input, other if alpha == 1 else other * alpha)


@names("sub", "subtract", "__sub__")
def sub(input, other, alpha=1):
    """input - alpha · other"""
    return binary(Sub, input, other if alpha == 1 else other * alpha)


@names("mul", "multiply", "__mul__")
def mul(input, other):
    return binary(Mul, input, other)


@names("div", "divide", "true_divide", "__truediv__")
def div(input, other, rounding_mode=None):
    """input / other; rounding_mode 'trunc' or 'floor' rounds the quotient (no gradient then)."""
    quotient = binary(Div, input, other)
    if rounding_mode is None:
        return quotient
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError("div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                         f"but found {rounding_mode!r}")
    rounded = (xp.trunc if rounding_mode == "trunc" else xp.floor)(quotient._data)
    dtype = promote(input, other)[0].dtype
    return Tensor._make(rounded.astype(dtype) if dtype.kind in "iub" else rounded)


@names("pow", "__pow__")
def pow(input, exponent):
    """input ** exponent; a number exponent is a constant of the op (y = x^c)."""
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool) and isinstance(input, Tensor):
        if isinstance(exponent, float) and input.dtype.kind != "f":  # int ** float: the default dtype
            input = Cast.apply(input, dtype=backend.get_default_dtype())
        return PowConstant.apply(input, exponent=exponent)
    return binary(Pow, input, exponent)


@names("__radd__")
def _reflected_add(x, other):
    return binary(Add, other, x)


@names("__rsub__")
def _reflected_sub(x, other):
    return binary(Sub, other, x)


@names("__rmul__")
def _reflected_mul(x, other):
    return binary(Mul, other, x)


@names("__rtruediv__")
def _reflected_div(x, other):
    return binary(Div, other, x)


@names("__rpow__")
def _reflected_pow(x, base):
    return binary(Pow, base, x)


@names("neg", "negative", "__neg__")
def neg(input):
    return Neg.apply(input)


@names("__pos__")
def _positive(x):
    return x


@names("__abs__")
def _absolute(x):
    return Abs.apply(x)


@names("square")
def square(input):
    return input * input


@names("maximum")
def maximum(input, other):
    return binary(Maximum, input, other)


@names("minimum")
def minimum(input, other):
    return binary(Minimum, input, other)


names("clamp", "clip")(clamp)


@names("where", function=False)
def _where_method(x, condition, other):
    """x.where(condition, other): x where condition holds, other elsewhere."""
    return where(condition, x, other)


@names("sign")
def sign(input):
    """-1, 0 or 1 (no gradient: it is flat almost everywhere)."""
    return Tensor._make(xp.sign(input._data))


@names("clone")
def clone(input):
    return Clone.apply(input)


@names("_filled_with")
def _filled_with(x, value):
    """x's shape filled with ``value`` (a recorded fill_)."""
    return Fill.apply(x, value)
