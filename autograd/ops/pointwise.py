"""The rest of PyTorch's elementwise functions of one tensor, each forward beside its local derivative:
logarithms and exponentials in other bases, hyperbolic and inverse trigonometric functions, erfinv,
nan_to_num, logit, entr, sinc (rounding and remainders: rounding.py; of two tensors: pointwise_pairs.py).

Integer and bool inputs of the floating functions become the default dtype first (log2 of
an int64 tensor is float32, as in PyTorch).
"""

import math

from ..backend import errstate, float16, xp
from ..primitive import Primitive, named_node, node_named
from ..tensor import Tensor
from .conjugation import conj
from .conversion import refuse_kinds, type_name
from .elementwise import Where, floating, half_as_float32, promote, where
from .names import names
from .outputs import write_out
from .special import erf


def _floating_pair(input, other):
    """Two Tensors of one floating dtype, by PyTorch's type promotion (float16 with an int64
    tensor is float16, not NumPy's float64), integers and bools then the default dtype: each
    converted from its own dtype (a 0-d int64 -4 beside uint8 is -4.0, not 252.0)."""
    if not _floating_value(input) and not _floating_value(other):
        input, other = (floating(v) if isinstance(v, Tensor) else v for v in (input, other))
    input, other = promote(input, other)
    return floating(input), floating(other)


def _floating_value(value):
    """A floating or complex tensor, or a Python float or complex number."""
    return value.dtype.kind in "fc" if isinstance(value, Tensor) else isinstance(value, (float, complex))


def _floating_only_pair(input, other, kernel):
    """Two Tensors of their promoted dtype, which must be floating: PyTorch's ``kernel`` has no integer or bool
    version (where NumPy's would compute in floats)."""
    input, other = promote(input, other)
    refuse_kinds(input, kernel, "biuc" if kernel in ("hypot_cpu", "logaddexp2_cpu") else "biu")
    return input, other


def _unary(primitive, name, inplace=True, doc=""):
    """Register ``primitive`` under ``name`` as function and method (and the in-place name_)."""

    def op(input, *, out=None):
        return write_out(primitive.apply(floating(input)), out)

    op.__name__ = name
    op.__doc__ = doc or primitive.__doc__
    names(name, inplace=f"{name}_" if inplace else None)(op)
    return op



class Log2(Primitive):
    """y = log₂ x;   dL/dx = dL/dy / (x ln 2)   (complex: / (x̄ ln 2))"""

    handles_complex = True

    def forward(self, x):
        return xp.log2(x)

    def backward(self, grad, y, x):
        return (grad / (conj(x) * math.log(2)),)


class Log10(Primitive):
    """y = log₁₀ x;   dL/dx = dL/dy / (x ln 10)   (complex: / (x̄ ln 10))"""

    handles_complex = True

    def forward(self, x):
        return xp.log10(x)

    def backward(self, grad, y, x):
        # PyTorch's constant 2.3025850929940456, a unit below ln 10's nearest double (math.log(10)): the
        # gradients were a unit off in nine tenths of the values
        return (grad / (conj(x) * 2.3025850929940456),)


class Log1p(Primitive):
    """y = ln(1 + x), exact for tiny x;   dL/dx = dL/dy / (1 + x)   (complex: / (1 + x̄))"""

    pytorch_name = "Log1PBackward0"
    handles_complex = True

    def forward(self, x):
        return xp.log1p(x) if x.dtype.kind != "c" else _log1p_of_complex(x)

    def backward(self, grad, y, x):
        return (grad / (conj(x) + 1.0),)


def _log1p_of_complex(z):
    """ln(1 + z) of a complex array. NumPy's log1p forms 1 + z, which drops a small z's real part (log1p of
    1e-19 + 1e-18j has real part 0, not 1e-19); within |z| < 1/2 the real part is ln |1 + z| = ½ ln(1 + 2x + x² +
    y²), taken as ½ log1p(x (2 + x) + y²), and the imaginary part atan2(y, 1 + x). Farther out 1 + z loses
    nothing and x² could overflow, so ln(1 + z) is used there."""
    x, y = z.real, z.imag
    shifted = z.copy()
    shifted.real += 1  # (1 + z would add +0 to the imaginary part: -0.0 must stay, for the side of the branch cut)
    near = xp.empty_like(z)
    with errstate(over="ignore", invalid="ignore", divide="ignore"):
        near.real = 0.5 * xp.log1p(x * (2 + x) + y * y)
        near.imag = xp.arctan2(y, 1 + x)
        far = xp.log(shifted)
    return xp.where(xp.abs(z) < 0.5, near, far)


class Exp2(Primitive):
    """y = 2^x;   dL/dx = dL/dy · y ln 2   (complex: · ȳ ln 2)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return xp.exp2(x)

    def backward(self, grad, y, x):
        return (grad * conj(y) * math.log(2),)


class Expm1(Primitive):
    """y = e^x - 1, exact for tiny x;   dL/dx = dL/dy · (y + 1)   (complex: · (ȳ + 1))"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return xp.expm1(x)

    def backward(self, grad, y, x):
        return (grad * (conj(y) + 1.0),)


class Sinh(Primitive):
    """y = sinh x;   dL/dx = dL/dy · cosh x   (complex: · conj(cosh x))"""

    handles_complex = True

    def forward(self, x):
        return xp.sinh(x)

    def backward(self, grad, y, x):
        return (grad * conj(Cosh.apply(x)),)


class Cosh(Primitive):
    """y = cosh x;   dL/dx = dL/dy · sinh x   (complex: · conj(sinh x))"""

    handles_complex = True

    def forward(self, x):
        return xp.cosh(x)

    def backward(self, grad, y, x):
        return (grad * conj(Sinh.apply(x)),)


class Tan(Primitive):
    """y = tan x;   dL/dx = dL/dy · (1 + y²)   (complex: · conj(1 + y²))"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return xp.tan(x)

    def backward(self, grad, y, x):
        return (grad * conj(y * y + 1.0),)


class Asin(Primitive):
    """y = arcsin x;   dL/dx = dL/dy / √(1 - x²)   (complex: / conj(√(1 - x²)))"""

    handles_complex = True

    def forward(self, x):
        return xp.arcsin(x)

    def backward(self, grad, y, x):
        return (grad * conj((1.0 - x * x).rsqrt()),)  # (times the reciprocal root, as PyTorch: bit for bit)


class Acos(Primitive):
    """y = arccos x;   dL/dx = -dL/dy / √(1 - x²)   (complex: / conj(√(1 - x²)))"""

    handles_complex = True

    def forward(self, x):
        return xp.arccos(x)

    def backward(self, grad, y, x):
        return (grad * -conj((1.0 - x * x).rsqrt()),)  # (as asin's)


class Atan(Primitive):
    """y = arctan x;   dL/dx = dL/dy / (1 + x²)   (complex: / conj(1 + x²))"""

    handles_complex = True

    def forward(self, x):
        return xp.arctan(x)

    def backward(self, grad, y, x):
        return (grad / conj(x * x + 1.0),)


class Asinh(Primitive):
    """y = arsinh x;   dL/dx = dL/dy / √(x² + 1)   (complex: / conj(√(x² + 1)))"""

    handles_complex = True

    def forward(self, x):
        return xp.arcsinh(x)

    def backward(self, grad, y, x):
        return (grad * conj((x * x + 1.0).rsqrt()),)  # (as asin's)


class Acosh(Primitive):
    """y = arcosh x;   dL/dx = dL/dy / (√(x - 1) √(x + 1))   (complex: / its conjugate; not √(x² - 1), whose
    branch differs from arcosh's off the real line)"""

    handles_complex = True

    def forward(self, x):
        return xp.arccosh(x)

    def backward(self, grad, y, x):
        if x._data.dtype.kind != "c":
            return (grad * (x * x - 1.0).rsqrt(),)  # (as asin's)
        return (grad / conj((x - 1.0).sqrt() * (x + 1.0).sqrt()),)


class Atanh(Primitive):
    """y = artanh x;   dL/dx = dL/dy / (1 - x²)   (complex: / conj(1 - x²))"""

    handles_complex = True

    def forward(self, x):
        return xp.arctanh(x)

    def backward(self, grad, y, x):
        return (grad / conj(1.0 - x * x),)


def _erfinv(y):
    """erf⁻¹ on an array: for |y| < ½ Giles's single-precision approximation, then Newton's steps on erf
    (to about 2e-16). Nearer ±1 Newton's step on erf cancels (erf x - y loses digits where erf' is small: 1e-7 of
    erf⁻¹(1 - 2e-10), 1e-2 at 1 - 2e-15), so there erf⁻¹(y) = -Φ⁻¹((1 - |y|)/2)/√2 with the sign of y, through
    the normal quantile that is written for its tails (ops/normal_tails.py; 1 - |y| is exact), to about 7e-16
    as PyTorch's."""
    from .normal_tails import ndtri  # (deferred: ops/deferred.py)

    wide = y.astype(xp.float64)
    w = -xp.log((1.0 - wide) * (1.0 + wide))
    central = w < 5.0
    w_central, w_tail = w - 2.5, xp.sqrt(xp.where(central, 5.0, w)) - 3.0
    p_central = xp.full(w.shape, 2.81022636e-08)
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164,
              0.246640727, 1.50140941):
        p_central = c + p_central * w_central
    p_tail = xp.full(w.shape, -0.000200214257)
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
              1.00167406, 2.83297682):
        p_tail = c + p_tail * w_tail
    x = xp.where(central, p_central, p_tail) * wide
    finite = xp.abs(wide) < 1
    for _ in range(3):  # Newton: x ← x - (erf x - y) / erf'(x)
        step = (erf(x) - wide) / (2 / math.sqrt(math.pi) * xp.exp(-x * x))
        x = xp.where(finite, x - step, x)
    x = xp.where(xp.abs(wide) >= 0.5, xp.copysign(ndtri((1.0 - xp.abs(wide)) / 2) / -math.sqrt(2), wide), x)
    x = xp.where(wide == 1, xp.inf, xp.where(wide == -1, -xp.inf, x))
    return xp.where(xp.abs(wide) > 1, xp.nan, x).astype(y.dtype)


class Erfinv(Primitive):
    """y = erf⁻¹(x);   dL/dx = dL/dy · √π/2 · e^(y²)

    Backward takes y again from x rather than keeping it: y may be changed in place later, as
    PyTorch allows (its erfinv keeps only x)."""

    def forward(self, x):
        refuse_kinds(x, "erfinv_vml_cpu", "c")
        with errstate(divide="ignore", invalid="ignore"):
            return _erfinv(x)

    def backward(self, grad, y, x):
        y = Erfinv.apply(x)
        return ((y * y).exp() * (math.sqrt(math.pi) / 2) * grad,)  # (in PyTorch's order, as erf's)


class Rsqrt(Primitive):
    """y = 1/√x;   dL/dx = -dL/dy · y³ / 2   (complex: · conj(y³))"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return (1 / xp.sqrt(half_as_float32(x))).astype(x.dtype, copy=False)  # (float16: rounded once)

    def backward(self, grad, y, x):
        # -1/2 · dL/dy · y³ in PyTorch's order, y³ one op (float16 rounds it once there, not twice; and halves
        # dL/dy before the product, which a subnormal product rounded twice would not give)
        wide = y.float() if y._data.dtype == float16 else y
        return (grad * -0.5 * conj((wide * wide * wide).to(y.dtype)),)


class Reciprocal(Primitive):
    """y = 1/x;   dL/dx = -dL/dy · y²   (complex: ȳ²)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True

    def forward(self, x):
        return 1 / x

    def backward(self, grad, y, x):
        y = conj(y)  # (complex: dL/dx = -dL/dy · conj(y²))
        return (-grad * (y * y),)  # (y² first, as PyTorch's formula rounds it)


for _primitive, _name in ((Log2, "log2"), (Log10, "log10"), (Log1p, "log1p"), (Exp2, "exp2"), (Expm1, "expm1"),
                          (Sinh, "sinh"), (Cosh, "cosh"), (Tan, "tan"), (Asin, "asin"), (Acos, "acos"),
                          (Atan, "atan"), (Asinh, "asinh"), (Acosh, "acosh"), (Atanh, "atanh"), (Erfinv, "erfinv"),
                          (Rsqrt, "rsqrt"), (Reciprocal, "reciprocal")):
    _unary(_primitive, _name)
for _primitive, _name in ((Asin, "arcsin"), (Acos, "arccos"), (Atan, "arctan"), (Asinh, "arcsinh"),
                          (Acosh, "arccosh"), (Atanh, "arctanh")):
    _unary(_primitive, _name)


class NanToNum(Primitive):
    """y = x with NaN, +inf and -inf replaced by numbers;   dL/dx = dL/dy where x is finite, 0 elsewhere"""

    def forward(self, x):
        with errstate(over="ignore"):  # a replacement beyond the dtype's range rounds to ±inf silently, as in
            return xp.nan_to_num(x, nan=self.nan, posinf=self.posinf, neginf=self.neginf)  # PyTorch's kernel

    def backward(self, grad, y, x):
        return (grad * Tensor._make(xp.isfinite(x._data).astype(grad.dtype)),)


@names("nan_to_num", inplace="nan_to_num_")
def nan_to_num(input, nan=None, posinf=None, neginf=None, *, out=None):
    """NaN → nan (0 by default), +inf → posinf, -inf → neginf (by default the dtype's largest and
    smallest numbers)."""
    if out is not None and out.dtype != input.dtype:  # (it casts into no other dtype, as PyTorch's)
        raise RuntimeError(f"nan_to_num: dtype of out: {type_name(out.dtype)} should be same as input: "
                           f"{type_name(input.dtype)}")
    if input.dtype.kind not in "fc":
        return write_out(input.clone(), out)
    return write_out(NanToNum.apply(input, nan=0.0 if nan is None else nan, posinf=posinf, neginf=neginf), out)


@names("logit", inplace="logit_")
def logit(input, eps=None, *, out=None):
    """ln(x / (1 - x)), with x clamped to [eps, 1 - eps] first when eps is given."""
    x = floating(input)
    refuse_kinds(x, "logit_cpu", "c")
    return write_out(Logit.apply(x, eps=None if eps is None else float(eps)), out)


class Logit(Primitive):
    """y = ln(z / (1 - z)), z = x clamped to [eps, 1 - eps] when eps is given (PyTorch's clamp: below eps
    gives eps, else above 1 - eps gives 1 - eps, so an eps over 1/2 maps x < eps to eps and the rest to 1 - eps);
    dL/dx = dL/dy / (x (1 - x)), 0 below eps or above 1 - eps (NaN outside [0, 1] without eps, or with a negative
    eps, which PyTorch's backward takes as none) as PyTorch's: its slope at 0 and 1 is infinite, where the
    composite ln(x / (1 - x)) gave ∞ · 0 = NaN. A NaN x has a NaN slope either way."""

    def forward(self, x):
        z = x
        if self.eps is not None:
            low, high = self.eps, 1 - self.eps
            z = xp.where(x < low, low, xp.where(x > high, high, x)).astype(x.dtype, copy=False)
        with errstate(divide="ignore", invalid="ignore"):  # (float16: the ratio in float16, its log in float32
            return xp.log(half_as_float32(z / (1 - z))).astype(x.dtype, copy=False)  # rounded once, as PyTorch's)

    def backward(self, grad, y, x):
        slope = grad / (x * (1.0 - x))
        if self.eps is None or self.eps < 0:  # NaN outside [0, 1], as PyTorch's
            low, high, outside = 0, 1, xp.nan
        else:
            low, high, outside = self.eps, 1 - self.eps, 0
        clamped = (x._data < low) | (x._data > high)  # (NaN is neither: its slope stays NaN)
        return (Where.apply(Tensor._make(xp.full((), outside, dtype=slope.dtype)), slope, condition=clamped),)


@names("deg2rad", inplace="deg2rad_")
def deg2rad(input, *, out=None):
    return write_out(named_node(_real_angle(input, "deg2rad") * (math.pi / 180), None, "Deg2RadBackward0", (input,)),
                     out)


@names("rad2deg", inplace="rad2deg_")
def rad2deg(input, *, out=None):
    return write_out(named_node(_real_angle(input, "rad2deg") * (180 / math.pi), None, "Rad2DegBackward0", (input,)),
                     out)


def _real_angle(input, name):
    """input as a floating tensor, refusing complex numbers (an angle in degrees or radians is real, as PyTorch
    says)."""
    x = floating(input)
    if x.dtype.kind == "c":
        raise RuntimeError(f"{name} is not supported for complex tensors.")
    return x


class Entr(Primitive):
    """y = -x ln x (0 at x = 0, -inf for x < 0);   dL/dx = -dL/dy · (ln x + 1)"""

    pytorch_name = "SpecialEntrBackward0"  # (PyTorch's node for it)

    def forward(self, x):
        refuse_kinds(x, "entr_cpu", "c")
        with errstate(divide="ignore", invalid="ignore"):
            y = -x * xp.log(x)
        return xp.where(x == 0, 0.0, xp.where(x < 0, -xp.inf, y)).astype(x.dtype)

    def backward(self, grad, y, x):
        with errstate(divide="ignore", invalid="ignore"):
            return (-grad * (x.log() + 1.0),)


@names("sinc", inplace="sinc_")
@node_named("SincBackward0")
def sinc(input, *, out=None):
    """y = sin(πx) / (πx), and 1 at x = 0;   dL/dx = dL/dy (cos(πx) - y) / x, and 0 at x = 0.
    The quotient is taken of a safe input (1 where x = 0), so the branch where() discards
    never holds 0/0: its NaN would reach the gradient. At x = 0 the value comes from the series
    Σ_k (-1)^k (πx)^2k / (2k+1)!, so the derivatives there are the limits (-π²/3 the second, for
    a PINN's u_xx) through the eleventh (PyTorch's are NaN from the second on). A float16 input is
    computed in float32 and rounded once, as PyTorch's: π·x rounded to float16 would put sinc(1) at 3e-4."""
    half = isinstance(input, Tensor) and input.dtype == xp.float16
    if half:
        input = input.float()
    zero = input == 0
    safe = where(zero, 1.0, input) * math.pi
    at_zero = where(zero, input, 0.0) * math.pi
    series = sum((-1) ** k * at_zero ** (2 * k) / math.factorial(2 * k + 1) for k in range(6))
    result = where(zero, series, safe.sin() / safe)
    return write_out(result.half() if half else result, out)
