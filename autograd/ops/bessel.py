"""Modified Bessel functions of the first kind, orders 0 and 1: ``i0`` (a Tensor method and
``autograd.i0``, as PyTorch's), ``special.i1``, and the scaled ``special.i0e``, ``special.i1e``.

    I_ν(x) = Σ_k (x/2)^(2k+ν) / (k! (k+ν)!),   I0'(x) = I1(x),   I1'(x) = I0(x) - I1(x)/x (1/2 at 0)
    i0e(x) = e^-|x| I0(x),   i0e' = i1e - sign(x) i0e,   i1e(x) = e^-|x| I1(x),   i1e' = i0e - i1e (sign(x) + 1/x)

I0's values are NumPy's (``numpy.i0``). I1's are its power series up to |x| = 50: every term is
positive, so summing them loses nothing to cancellation; the terms grow up to k ≈ |x|/2 and
then shrink, and the sum stops once the last term no longer changes it. Past 50, and for the
scaled functions (which do not overflow), the asymptotic series
e^-x I_ν(x) ≈ Σ_k (-1)^k a_k(ν) / x^k / √(2πx), a_k(ν) = Π_{j≤k} (4ν² - (2j-1)²) / (k! 8^k).
"""

import functools
import math

from ..backend import errstate, xp
from ..primitive import Primitive
from ..tensor import Tensor
from .conversion import refuse_half_and_complex, refuse_kinds
from .elementwise import Where, floating
from .names import names
from .outputs import write_out

_FAR = 50.0  # past here the asymptotic series (its least term there is below 1e-30)


@functools.cache
def hankel_coefficients(order, count=32):
    """a_k(ν) = Π_{j≤k} (4ν² - (2j-1)²) / (k! 8^k), k < count: the coefficients of the large-x
    expansions of the Bessel functions (Hankel's for J and Y; e^-x I_ν(x) ≈ Σ (-1)^k a_k / x^k / √(2πx))."""
    coefficients, a = [], 1.0
    for k in range(count):
        coefficients.append(a)
        a *= (4 * order * order - (2 * k + 1) ** 2) / ((k + 1) * 8)
    return coefficients


def scaled_far(x, order):
    """e^-x I_ν(x) for x ≥ 50 (an array), by its asymptotic series."""
    total, power = xp.zeros_like(x), xp.ones_like(x)
    for k, a in enumerate(hankel_coefficients(order)):
        total = total + (-1) ** k * a * power
        power = power / x
    return total / (math.sqrt(2 * math.pi) * xp.sqrt(x))  # (√(2πx) whole overflows near float64's largest x)


def scaled_i(x, order):
    """e^-|x| I_ν(x) (ν = 0, 1) of an array, in float64."""
    x = x.astype(xp.float64)
    magnitude = xp.abs(x)
    with errstate(over="ignore", invalid="ignore", divide="ignore"):
        near = xp.where(magnitude <= _FAR, magnitude, 0.0)
        series = (xp.i0(near) if order == 0 else _i1_series(near)) * xp.exp(-near)
        scaled = xp.where(magnitude <= _FAR, series, scaled_far(xp.maximum(magnitude, _FAR), order))
    scaled = xp.where(xp.isinf(x), 0.0, scaled)
    return xp.where(x < 0, -scaled, scaled) if order == 1 else scaled


def bessel_i1(x):
    """I1 of an array (computed in float64, returned in x's dtype): its series up to |x| = 50, then
    e^|x| times the asymptotic series of e^-|x| I1 (∞ past |x| ≈ 713, where float64 ends)."""
    magnitude = xp.abs(x.astype(xp.float64))
    with errstate(over="ignore", invalid="ignore"):
        far = xp.exp(magnitude) * scaled_far(xp.maximum(magnitude, _FAR), 1)
        far = xp.where(x < 0, -far, far)
    near = xp.where(magnitude <= _FAR, x, 0.0)  # (the series only where it is used: it grows with |x|)
    i1 = xp.where(magnitude <= _FAR, _i1_series(near), far)
    return xp.where(x == 0, 0.0, i1).astype(x.dtype)  # (I1(-0.0) is +0.0, as PyTorch's)


def _i1_series(x):
    """I1 by its power series (float64)."""
    half = x.astype(xp.float64) / 2
    square = half * half
    term = half.copy()
    total = half.copy()
    k = 0
    with errstate(over="ignore", invalid="ignore"):
        while True:
            term = term * square / ((k + 1) * (k + 2))
            total = total + term
            k += 1
            if not xp.any(xp.abs(term) > xp.abs(total) * 1e-17):
                break
    return total


class I0(Primitive):
    """y = I0(x);   dL/dx = dL/dy · I1(x)"""

    def forward(self, x):
        # in float64 and rounded once: NumPy's i0 of a float16 array computes in float16 (i0(0.001) = 0.9985).
        # Its ∞ past |x| ≈ 713 and NaN at ±∞ are PyTorch's, given silently: NumPy's warnings come from NumPy's own
        # module, which the filter on ours (backend.py) does not reach
        with errstate(over="ignore", invalid="ignore"):
            return xp.i0(x.astype(xp.float64)).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * I1.apply(x),)


class I1(Primitive):
    """y = I1(x);   dL/dx = dL/dy · (I0(x) - I1(x)/x), and dL/dy / 2 near x = 0
    (the slope is 1/2 + 3x²/16 + ...: 1/2 to the last bit for |x| < 1e-8, where I1(x)/x
    would lose its digits, or underflow for subnormal x)"""

    pytorch_name = "SpecialI1Backward0"  # (PyTorch's node for it)
    saves_output = True  # (PyTorch's node keeps the result too: writing it in place refuses the backward)

    def forward(self, x):
        return bessel_i1(x)

    def backward(self, grad, y, x):
        at_zero = xp.abs(x._data) < 1e-8
        one = Tensor._make(xp.ones((), dtype=x.dtype))
        safe = Where.apply(one, x, condition=at_zero)  # x, with 1 near 0 (that branch is not taken)
        slope = I0.apply(x) - I1.apply(safe) / safe
        return (grad * Where.apply(one * 0.5, slope, condition=at_zero),)


@names("i0", inplace="i0_")
def i0(input, *, out=None):
    """The modified Bessel function of the first kind, order 0; integers become the default dtype."""
    x = floating(input)
    refuse_kinds(x, "i0_vml_cpu", "c")
    return write_out(I0.apply(x), out)


def i1(input, *, out=None):
    """The modified Bessel function of the first kind, order 1 (``autograd.special.i1``)."""
    x = floating(input)
    refuse_kinds(x, "i1_cpu", "c")
    return write_out(I1.apply(x), out)


def spherical_bessel_j0(x, *, out=None):
    """The spherical Bessel function of the first kind of order 0, j0(x) = sin(x) / x (1 at 0),
    as ``special.spherical_bessel_j0``. Like PyTorch's it has no gradient (its result never
    requires grad); near 0 it is its series 1 - x²/6 + x⁴/120 - ..., which keeps every digit.
    Its argument is ``x=``, PyTorch's keyword."""
    x = floating(x)
    refuse_half_and_complex(x, "spherical_bessel_j0_cpu")
    x = x._data
    square = x * x
    series = xp.ones_like(x)
    for k in range(8, 0, -1):  # Σ_k (-x²)^k / (2k+1)!, by Horner: 8 terms reach 1e-19 at |x| = 1/2
        series = 1 - series * square / ((2 * k) * (2 * k + 1))
    with errstate(divide="ignore", invalid="ignore"):
        direct = xp.where(xp.isinf(x), 0.0, xp.sin(x) / x)
    return write_out(Tensor._make(xp.where(xp.abs(x) < 0.5, series, direct).astype(x.dtype)), out)


class I0e(Primitive):
    """y = e^-|x| I0(x);   dL/dx = dL/dy · (i1e(x) - sign(x) y)"""

    pytorch_name = "SpecialI0EBackward0"  # (PyTorch's node for it)
    saves_output = True

    def forward(self, x):
        return scaled_i(x, 0).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * (I1e.apply(x) - x.sign() * y),)


class I1e(Primitive):
    """y = e^-|x| I1(x);   dL/dx = dL/dy · (i0e(x) - sign(x) y - y/x), and dL/dy / 2 near x = 0"""

    pytorch_name = "SpecialI1EBackward0"  # (PyTorch's node for it)
    saves_output = True  # (PyTorch's node keeps the result too: writing it in place refuses the backward)

    def forward(self, x):
        return scaled_i(x, 1).astype(x.dtype)

    def backward(self, grad, y, x):
        at_zero = xp.abs(x._data) < 1e-8  # (as I1's: y/x → 1/2 there, and would lose its digits)
        one = Tensor._make(xp.ones((), dtype=x.dtype))
        safe = Where.apply(one, x, condition=at_zero)
        slope = I0e.apply(x) - x.sign() * y - I1e.apply(safe) / safe
        return (grad * Where.apply(one * 0.5, slope, condition=at_zero),)


def i0e(input, *, out=None):
    """e^-|x| I0(x), the exponentially scaled I0 (``special.i0e``): finite where I0 overflows."""
    x = floating(input)
    refuse_kinds(x, "i0e_cpu", "c")
    return write_out(I0e.apply(x), out)


def i1e(input, *, out=None):
    """e^-|x| I1(x), the exponentially scaled I1 (``special.i1e``)."""
    x = floating(input)
    refuse_kinds(x, "i1e_cpu", "c")
    return write_out(I1e.apply(x), out)
