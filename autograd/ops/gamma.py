"""The log-gamma function and its derivatives: lgamma, digamma (ψ), polygamma (ψ⁽ⁿ⁾), mvlgamma.

    d/dx ln Γ(x) = ψ(x),   d/dx ψ⁽ⁿ⁾(x) = ψ⁽ⁿ⁺¹⁾(x)

NumPy has none of them vectorised. ln Γ uses Lanczos's approximation (g = 7, 9 terms; about
1e-15 relative) and, below 1/2, the reflection Γ(x)Γ(1-x) = π / sin(πx). ψ⁽ⁿ⁾ shifts x above
10 with the recurrence ψ⁽ⁿ⁾(x) = ψ⁽ⁿ⁾(x+1) - (-1)ⁿ n! / x^(n+1), then sums the asymptotic
(Bernoulli) series; ψ itself reflects negative x: ψ(x) = ψ(1-x) - π / tan(πx).
"""

import math

from ..backend import errstate, xp
from ..primitive import Primitive, node_named
from .conversion import refuse_kinds
from .elementwise import floating
from .names import names
from .outputs import write_out

_LANCZOS_G = 7
_LANCZOS = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
            1.5056327351493116e-7]
# B_2k / (2k)! ... enters through (2k + n - 1)! below; Bernoulli numbers B_2, B_4, ..., B_20
_BERNOULLI = [1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798, -174611 / 330]
_SHIFT = 10.0


def _sin_pi(x):
    """sin(πx), exact near the integers: x - round(x) is exact, π x is not."""
    nearest = xp.round(x)
    return xp.sin(math.pi * (x - nearest)) * xp.where(nearest % 2 == 0, 1.0, -1.0)


def _lgamma(x):
    """ln |Γ(x)| on an array."""
    x = x.astype(xp.float64)
    reflect = x < 0.5
    z = xp.where(reflect, 1.0 - x, x) - 1.0
    series = xp.full(x.shape, _LANCZOS[0])
    for k, c in enumerate(_LANCZOS[1:], start=1):
        series = series + c / (z + k)
    t = z + _LANCZOS_G + 0.5
    direct = 0.5 * math.log(2 * math.pi) + (z + 0.5) * xp.log(t) - t + xp.log(series)
    with errstate(divide="ignore", invalid="ignore"):
        reflected = math.log(math.pi) - xp.log(xp.abs(_sin_pi(x))) - direct
    y = xp.where(reflect, reflected, direct)
    # a subnormal x: sin(πx) keeps only its few digits (1e-4 of ln Γ(1e-320) lost), where ln |Γ(x)| = -ln |x| - γx
    # + O(x²) is -ln |x| to the last bit
    with errstate(divide="ignore"):
        y = xp.where(xp.abs(x) < xp.finfo(xp.float64).tiny, -xp.log(xp.abs(x)), y)
    y = xp.where((x <= 0) & (x == xp.floor(x)), xp.inf, y)  # poles at 0, -1, -2, ...
    y = xp.where((x == 1) | (x == 2), 0.0, y)  # Γ(1) = Γ(2) = 1 exactly (the series gives -8.9e-16)
    return xp.where(xp.isinf(x), xp.inf, y)


def _polygamma(n, x):
    """ψ⁽ⁿ⁾(x) on an array (ψ for n = 0)."""
    x = x.astype(xp.float64)
    reflect = (n == 0) & (x < 0.5)
    z = xp.where(reflect, 1.0 - x, x)
    sign = (-1) ** (n + 1)
    factorial = math.factorial(n)
    shifted = xp.zeros(x.shape)  # Σ over the shifts of sign · n! / z^(n+1)
    pole = (x <= 0) & (x == xp.floor(x))  # set at the end; ±inf and NaN too are no count of shifts
    regular = z[xp.isfinite(z) & ~pole]
    steps = int(max(0.0, math.ceil(_SHIFT - float(regular.min())))) if regular.size else 0
    for _ in range(steps):  # ψ⁽ⁿ⁾(z) = ψ⁽ⁿ⁾(z+1) + sign · n! / z^(n+1), for z still below the shift
        below = z < _SHIFT
        with errstate(divide="ignore", invalid="ignore"):
            shifted = shifted + xp.where(below, sign * factorial / z ** (n + 1), 0.0)
        z = xp.where(below, z + 1.0, z)
    if n == 0:
        tail = xp.log(z) - 0.5 / z
        for k, b in enumerate(_BERNOULLI, start=1):
            tail = tail - b / (2 * k * z ** (2 * k))
        y = tail + shifted
    else:
        tail = math.factorial(n - 1) / z**n + factorial / (2 * z ** (n + 1))
        for k, b in enumerate(_BERNOULLI, start=1):
            tail = tail + b * math.factorial(2 * k + n - 1) / (math.factorial(2 * k) * z ** (2 * k + n))
        y = sign * tail + shifted
    if n == 0:
        with errstate(divide="ignore", invalid="ignore"):
            y = xp.where(reflect, y - math.pi / xp.tan(math.pi * (x - xp.round(x))), y)
        # ψ(±0) = ∓inf: the sign of the zero picks the side of the pole, as PyTorch's
        pole = xp.where(xp.signbit(x), xp.inf, -xp.inf)
        y = xp.where(x == 0, pole, xp.where((x < 0) & (x == xp.floor(x)), xp.nan, y))
    elif n == 1:
        y = xp.where(pole, xp.inf, y)
        y = xp.where(xp.isneginf(x), xp.nan, y)  # no limit at -inf: it passes a pole at every integer
    else:  # PyTorch's ψ⁽ⁿ⁾ for n ≥ 2 is (-1)ⁿ⁺¹ n! ζ(n+1, x), and its Hurwitz ζ (Cephes') answers inf at
        # every integer q ≤ 0, -inf among them, and NaN at q = +inf (0/0 in its convergence test)
        y = xp.where(pole | xp.isneginf(x), xp.inf if n % 2 else -xp.inf, y)  # poles, signed as PyTorch
        y = xp.where(xp.isposinf(x), xp.nan, y)
    return y


class Lgamma(Primitive):
    """y = ln |Γ(x)|;   dL/dx = dL/dy · ψ(x)"""

    def forward(self, x):
        return _lgamma(x).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * Polygamma.apply(x, n=0),)


class Polygamma(Primitive):
    """y = ψ⁽ⁿ⁾(x), the (n+1)-th derivative of ln Γ;   dL/dx = dL/dy · ψ⁽ⁿ⁺¹⁾(x)"""

    def forward(self, x):
        return _polygamma(self.n, x).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * Polygamma.apply(x, n=self.n + 1),)


@names("lgamma", inplace="lgamma_")
def lgamma(input, *, out=None):
    """ln |Γ(x)| (of real numbers only, as PyTorch's)."""
    x = floating(input)
    refuse_kinds(x, "lgamma_vml_cpu", "c")
    return write_out(Lgamma.apply(x), out)


@names("digamma", inplace="digamma_")
@node_named("DigammaBackward0")
def digamma(input, *, out=None):
    """ψ(x) = d/dx ln Γ(x) (-inf at 0, +inf at -0, and NaN at the negative integers, as PyTorch)."""
    x = floating(input)
    refuse_kinds(x, "digamma", "c")
    return write_out(Polygamma.apply(x, n=0), out)


@names("polygamma", method=False)
def polygamma(n, input, *, out=None):
    """ψ⁽ⁿ⁾(x), the n-th derivative of ψ."""
    if n < 0:
        raise RuntimeError(f"polygamma(n, x) does not support negative n. Got n = {n}")
    x = floating(input)
    refuse_kinds(x, "polygamma", "c")
    return write_out(Polygamma.apply(x, n=int(n)), out)


@names("polygamma", function=False, inplace="polygamma_")
def polygamma_method(input, n):
    """x.polygamma(n): the method takes n second, as PyTorch's."""
    return polygamma(n, input)


@names("mvlgamma", inplace="mvlgamma_")
def mvlgamma(input, p, *, out=None):
    """The multivariate log-gamma: p(p-1)/4 · ln π + Σ_{j<p} ln Γ(x - j/2)."""
    if p < 1:
        raise RuntimeError("p has to be greater than or equal to 1")
    x = floating(input)
    refuse_kinds(x, "arange_cpu", "c")  # (PyTorch's kernel fails on the complex arange of its shifts j/2)
    total = Lgamma.apply(x)
    for j in range(1, p):
        total = total + Lgamma.apply(x - j / 2)
    return write_out(total + p * (p - 1) / 4 * math.log(math.pi), out)
