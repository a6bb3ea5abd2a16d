"""The elementwise functions of one tensor the lecture's networks are made of, each forward beside its local
derivative: exp, log, sqrt, sin, cos, tanh, sigmoid, relu and abs, with the nodes of the derivatives that a
second derivative differentiates again (TanhGrad, SigmoidGrad, ReluGrad). The names they go by are declared in
operators.py (relu and abs here)."""

from .. import backend
from ..backend import xp
from ..errors import DtypeError
from ..primitive import Primitive
from ..tensor import Tensor
from .conjugation import conj, refuse_unordered, sgn_of_complex
from .elementwise import Mul, half_as_float32
from .names import names
from .selection import isfinite, vdot


class Exp(Primitive):
    """y = e^x;   dL/dx = dL/dy · y   (complex: · ȳ)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        if x.dtype is backend.float16:  # in float32, rounded once, as PyTorch's kernel: NumPy's float16 exp is
            # off by a unit at a few near-ties (e^-0.04724, a retention decay, was 0.954, not 0.9536)
            return xp.exp(x.astype(backend.float32)).astype(x.dtype)
        return xp.exp(x)  # (the hot path: one identity test before it)

    def backward(self, grad, y, x):
        return (Mul.apply_in_backward(grad, conj(y)),)  # (one dtype: Mul itself, not the * operator)


class Log(Primitive):
    """y = ln x;   dL/dx = dL/dy / x   (complex: / x̄)"""

    handles_complex = True

    def forward(self, x):
        return xp.log(x)

    def backward(self, grad, y, x):
        return (grad / conj(x),)


class Sqrt(Primitive):
    """y = √x;   dL/dx = dL/dy / (2y)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return xp.sqrt(x)

    def backward(self, grad, y, x):
        return (grad / (conj(y) * 2.0),)


class Sin(Primitive):
    """y = sin x;   dL/dx = dL/dy · cos x   (complex: · conj(cos x))"""

    handles_complex = True

    def forward(self, x):
        return xp.sin(x)

    def backward(self, grad, y, x):
        return (grad * conj(x.cos()),)


class Cos(Primitive):
    """y = cos x;   dL/dx = -dL/dy · sin x   (complex: · conj(sin x))"""

    handles_complex = True

    def forward(self, x):
        if x.dtype is backend.float16:  # (float16 rounded once, as exp's)
            return xp.cos(x.astype(backend.float32)).astype(x.dtype)
        return xp.cos(x)

    def backward(self, grad, y, x):
        return (-grad * conj(x.sin()),)


class Tanh(Primitive):
    """y = tanh x;   dL/dx = dL/dy · (1 - y²)   (complex: · conj(1 - y²))"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return xp.tanh(x)

    def backward(self, grad, y, x):
        if y._data.dtype.kind == "c":  # (TanhGrad's fused map is written for real numbers)
            return (grad * conj(1.0 - y * y),)
        return (TanhGrad.apply_in_backward(grad, y),)


class TanhGrad(Primitive):
    """Tanh's backward as one node: z = g ⊙ (1 - y²)  (g = dL/dy, y = tanh x);
    dL/dg = u ⊙ (1 - y²) (the same map, u = dL/dz),   dL/dy = -2 u ⊙ g ⊙ y.
    One node instead of three ops; still differentiable."""

    def forward(self, g, y):
        if y.dtype is backend.float16:  # in float32, rounded once, as PyTorch's kernel (1 - y² rounded in float16
            return TanhGrad.forward(self, half_as_float32(g), half_as_float32(y)).astype(y.dtype)  # lost 16 units)
        z = backend.constant(1, y.dtype) - y * y
        z *= g
        return z

    def backward(self, u, z, g, y):
        grad_g = TanhGrad.apply_in_backward(u, y) if g.requires_grad else None
        grad_y = u * g * y * -2.0 if y.requires_grad else None
        return grad_g, grad_y


class Sigmoid(Primitive):
    """y = σ(x) = 1 / (1 + e^-x);   dL/dx = dL/dy · y(1 - y)   (complex: · conj(y(1 - y)))"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return sigmoid_of(x)

    def backward(self, grad, y, x):
        if y._data.dtype.kind == "c":  # (SigmoidGrad's fused map is written for real numbers)
            return (grad * conj(y * (1.0 - y)),)
        return (SigmoidGrad.apply(grad, y),)


def sigmoid_of(x):
    """σ(x) = 1 / (1 + e^-x) of an array, as PyTorch's kernel computes it: e^-x overflows to inf below
    x ≈ -88.7 in float32, where σ is then exactly 0 (a stable e^x / (1 + e^x) there gave denormals down to
    -103, which PyTorch's log(σ(x)) reads as -inf and BCELoss as its floor of -100; it also rounded more often
    unlike PyTorch's elsewhere). float16 is computed in float32 and rounded once, as PyTorch's (e^-x rounded
    to float16 first puts σ(-3.584) 2 units off)."""
    if x.dtype.kind == "c":
        return 1 / (1 + xp.exp(-x))
    wide = half_as_float32(x)
    with backend.errstate(over="ignore"):  # (the overflow is the saturation)
        if not wide.ndim:  # (NumPy's arithmetic on a 0-d array gives scalars, which no ufunc writes into)
            return (1 / (1 + xp.exp(-wide))).astype(x.dtype, copy=False)
        e = xp.negative(wide)  # the same operations, written into one array: a third quicker than four new ones
        xp.exp(e, out=e)
        e += 1
        return xp.divide(1, e, out=e).astype(x.dtype, copy=False)


class SigmoidGrad(Primitive):
    """Sigmoid's backward as one node: z = g ⊙ y(1 - y)  (g = dL/dy, y = σ(x));
    dL/dg = u ⊙ y(1 - y) (the same map, u = dL/dz),   dL/dy = u ⊙ g ⊙ (1 - 2y).
    One node instead of three ops; still differentiable."""

    def forward(self, g, y):
        z = backend.constant(1, y.dtype) - y  # g (1 - y) y in this order, as PyTorch's kernel: float16 rounds at
        z *= g  # each step there, and g y (1 - y) came out a unit or two off in a third of the values
        z *= y
        return z

    def backward(self, u, z, g, y):
        grad_g = SigmoidGrad.apply(u, y) if g.requires_grad else None
        grad_y = u * g * (1.0 - y * 2.0) if y.requires_grad else None
        return grad_g, grad_y


@names("relu", function=False, inplace="relu_")  # autograd.relu: ops/functions.py
class Relu(Primitive):
    """y = max(0, x);   dL/dx = dL/dy · [x > 0] = dL/dy · [y > 0]"""

    saves_inputs = False
    saves_output = True

    def forward(self, x):
        if x.dtype.kind in "cb":  # (checked here, not in a call: this is a hot path)
            if x.dtype.kind == "b":
                raise DtypeError("Boolean inputs not supported for relu")
            refuse_unordered(x, "relu")
        # relu(-0) is -0, as PyTorch's (max(x, 0) keeps x at a tie): NumPy's maximum gives its second operand at a tie
        # of zeros, but its float16 loop the first
        zero = backend.constant(0, x.dtype)
        return xp.maximum(x, zero) if x.dtype.itemsize == 2 else xp.maximum(zero, x)

    def backward(self, grad, y, x):
        return (ReluGrad.apply_in_backward(grad, y),)


_SMALL = 1024  # elements: up to here NumPy's where beats a product and its check; past 2048 a random mask's branches
# make it several times slower (16x16: 1.5 against 2.7 us; 32x256: 16.6 against 6.8 us; 128x256: 126 against 19)


class ReluGrad(Primitive):
    """ReLU's backward as one node: z = g ⊙ [y > 0]  (g = dL/dy, y = relu x);
    dL/dg = u ⊙ [y > 0] (the same map, u = dL/dz),   dL/dy = 0 (the mask is flat almost everywhere:
    a zero gradient, not none, so x is still used by a second derivative, as in PyTorch)."""

    def forward(self, g, y):
        if y.size > _SMALL:  # (on a small array the select below, one pass, is quicker than these two)
            product = g * (y > 0)  # (g times 1 or 0, as PyTorch's select gives where both are finite)
            # One check for both cases the product gets wrong, Σ product · y: an inf or NaN in g where relu was off
            # makes the product NaN there (∞ · 0), and a NaN y (relu of NaN) is NaN times whatever the product
            # holds, so the sum is not finite (nor where it overflowed: then the select below, right anyway). NaN
            # spreads whichever elements the two flat orders pair, so each is read in its own layout, in place.
            if isfinite(vdot(product.ravel("K"), y.ravel("K"))):
                return product
        # PyTorch's backward selects, where(y <= 0, 0, g): 0 where relu was off even for an infinite g, and g itself
        # at a NaN y (the product above gave 0 there)
        return xp.where(y <= 0, xp.zeros((), g.dtype), g)

    def backward(self, u, z, g, y):
        return (ReluGrad.apply_in_backward(u, y) if g.requires_grad else None,
                Tensor._make(xp.zeros_like(y._data)) if y.requires_grad else None)  # (zeros, as PyTorch's)


@names("abs", function=False)  # autograd.abs: ops/functions.py; abs_: ops/in_place_arithmetic.py
class Abs(Primitive):
    """y = |x|;   dL/dx = dL/dy · sign(x)  (0 at x = 0, as PyTorch; for complex x, sign x = x / |x|)"""

    handles_complex = True

    def forward(self, x):
        if x.dtype.kind == "b":  # (NumPy's |True| is True)
            raise NotImplementedError("\"abs_cpu\" not implemented for 'Bool'")
        return xp.abs(x)

    def backward(self, grad, y, x):
        return (grad * (sgn_of_complex(x) if x._data.dtype.kind == "c" else x.sign()),)
