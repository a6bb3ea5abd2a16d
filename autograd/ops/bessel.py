"""Modified Bessel functions of the first kind, orders 0 and 1: ``i0`` (a Tensor method and
``autograd.i0``, as PyTorch's) and ``special.i1``.

    I_ν(x) = Σ_k (x/2)^(2k+ν) / (k! (k+ν)!),   I0'(x) = I1(x),   I1'(x) = I0(x) - I1(x)/x (1/2 at 0)

I0's values are NumPy's (``numpy.i0``). I1's are its power series: every term is positive, so
summing them loses nothing to cancellation; the terms grow up to k ≈ |x|/2 and then shrink,
and the sum stops once the last term no longer changes it (a few hundred terms at |x| = 700,
where I1 reaches the top of float64).
"""

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .elementwise import Where, floating
from .names import names
from .outputs import write_out


def bessel_i1(x):
    """I1 of an array (computed in float64, returned in x's dtype)."""
    half = x.astype(xp.float64) / 2
    square = half * half
    term = half.copy()
    total = half.copy()
    k = 0
    with xp.errstate(over="ignore", invalid="ignore"):
        while True:
            term = term * square / ((k + 1) * (k + 2))
            total = total + term
            k += 1
            if not xp.any(xp.abs(term) > xp.abs(total) * 1e-17):
                break
    return total.astype(x.dtype)


class I0(Primitive):
    """y = I0(x);   dL/dx = dL/dy · I1(x)"""

    def forward(self, x):
        return xp.i0(x).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * I1.apply(x),)


class I1(Primitive):
    """y = I1(x);   dL/dx = dL/dy · (I0(x) - I1(x)/x), and dL/dy / 2 near x = 0
    (the slope is 1/2 + 3x²/16 + ...: 1/2 to the last bit for |x| < 1e-8, where I1(x)/x
    would lose its digits, or underflow for subnormal x)"""

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
    return write_out(I0.apply(floating(input)), out)


def i1(input, *, out=None):
    """The modified Bessel function of the first kind, order 1 (``autograd.special.i1``)."""
    return write_out(I1.apply(floating(input)), out)


def spherical_bessel_j0(input, *, out=None):
    """The spherical Bessel function of the first kind of order 0, j0(x) = sin(x) / x (1 at 0),
    as ``special.spherical_bessel_j0``. Like PyTorch's it has no gradient (its result never
    requires grad); near 0 it is its series 1 - x²/6 + x⁴/120 - ..., which keeps every digit."""
    x = floating(input)._data
    square = x * x
    series = xp.ones_like(x)
    for k in range(8, 0, -1):  # Σ_k (-x²)^k / (2k+1)!, by Horner: 8 terms reach 1e-19 at |x| = 1/2
        series = 1 - series * square / ((2 * k) * (2 * k + 1))
    with xp.errstate(divide="ignore", invalid="ignore"):
        direct = xp.where(xp.isinf(x), 0.0, xp.sin(x) / x)
    return write_out(Tensor._make(xp.where(xp.abs(x) < 0.5, series, direct).astype(x.dtype)), out)
