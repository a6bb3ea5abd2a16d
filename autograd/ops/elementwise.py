"""Elementwise primitives: each forward beside its local derivative.

Binary ops broadcast as NumPy does; ``unbroadcast`` sums a gradient back to
the shape of the input it belongs to (the gradient of broadcasting is a sum).
A gradient is computed only for inputs that require one.
"""

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor, _operand


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

    def forward(self, x, y):
        return x + y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(grad, y) if y.requires_grad else None)


class Sub(Primitive):
    """z = x - y;   dL/dx = dL/dz,   dL/dy = -dL/dz"""

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
    """z = x^y;   dL/dx = dL/dz · y · x^(y-1),   dL/dy = dL/dz · z · ln x"""

    saves_output = True

    def forward(self, x, y):
        return x**y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad * y * x ** (y - 1), x) if x.requires_grad else None,
                unbroadcast(grad * z * x.log(), y) if y.requires_grad else None)


class PowConstant(Primitive):
    """y = x^c for a number c;   dL/dx = dL/dy · c · x^(c-1)"""

    def forward(self, x):
        return x**self.exponent

    def backward(self, grad, y, x):
        c = self.exponent
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


def where(condition, input=None, other=None):
    """Elementwise choice: input where ``condition`` holds, other elsewhere (either may be a number).
    With the condition alone, as PyTorch: the indices where it holds, one int64 vector per dim."""
    condition = condition._data if isinstance(condition, Tensor) else xp.asarray(condition)
    if input is None and other is None:
        return tuple(Tensor._make(i.astype(xp.int64)) for i in xp.nonzero(xp.atleast_1d(condition)))
    if condition.dtype != bool:
        raise TypeError(f"where: condition must be a bool tensor, got {condition.dtype}")
    x, y = input, other
    if not isinstance(x, Tensor):
        x = _operand(x, y) if isinstance(y, Tensor) else Tensor(x)
    if not isinstance(y, Tensor):
        y = _operand(y, x)
    return Where.apply(x, y, condition=condition)


class Neg(Primitive):
    """y = -x;   dL/dx = -dL/dy"""

    def forward(self, x):
        return -x

    def backward(self, grad, y, x):
        return (-grad,)


class Exp(Primitive):
    """y = e^x;   dL/dx = dL/dy · y"""

    saves_output = True

    def forward(self, x):
        return xp.exp(x)

    def backward(self, grad, y, x):
        return (grad * y,)


class Log(Primitive):
    """y = ln x;   dL/dx = dL/dy / x"""

    def forward(self, x):
        return xp.log(x)

    def backward(self, grad, y, x):
        return (grad / x,)


class Sqrt(Primitive):
    """y = √x;   dL/dx = dL/dy / (2y)"""

    saves_output = True

    def forward(self, x):
        return xp.sqrt(x)

    def backward(self, grad, y, x):
        return (grad / (y * 2.0),)


class Sin(Primitive):
    """y = sin x;   dL/dx = dL/dy · cos x"""

    def forward(self, x):
        return xp.sin(x)

    def backward(self, grad, y, x):
        return (grad * x.cos(),)


class Cos(Primitive):
    """y = cos x;   dL/dx = -dL/dy · sin x"""

    def forward(self, x):
        return xp.cos(x)

    def backward(self, grad, y, x):
        return (-grad * x.sin(),)


class Tanh(Primitive):
    """y = tanh x;   dL/dx = dL/dy · (1 - y²)"""

    saves_output = True

    def forward(self, x):
        return xp.tanh(x)

    def backward(self, grad, y, x):
        return (grad * (1.0 - y * y),)


class Sigmoid(Primitive):
    """y = σ(x) = 1 / (1 + e^-x);   dL/dx = dL/dy · y(1 - y)"""

    saves_output = True

    def forward(self, x):
        # e^-|x| never overflows; both branches equal 1 / (1 + e^-x) and keep
        # full relative precision where σ(x) is tiny
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def backward(self, grad, y, x):
        return (grad * y * (1.0 - y),)


class Relu(Primitive):
    """y = max(0, x);   dL/dx = dL/dy · [x > 0]"""

    def forward(self, x):
        return xp.maximum(x, 0)

    def backward(self, grad, y, x):
        return (grad * Tensor._make(x._data > 0),)


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
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        if min is not None:
            x = x.maximum(min)
        return x if max is None else x.minimum(max)
    return Clamp.apply(x, low=min, high=max)


class Cast(Primitive):
    """y = x as another dtype;   dL/dx = dL/dy as x's dtype"""

    def forward(self, x):
        return x.astype(self.dtype, copy=False)

    def backward(self, grad, y, x):
        return (grad.to(x.dtype),)


class Clone(Primitive):
    """y = a copy of x;   dL/dx = dL/dy"""

    def forward(self, x):
        return x.copy()

    def backward(self, grad, y, x):
        return (grad,)
