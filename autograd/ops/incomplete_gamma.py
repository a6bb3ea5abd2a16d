"""The regularised incomplete gamma functions: ``igamma`` (P, ``special.gammainc``) and
``igammac`` (Q = 1 - P, ``special.gammaincc``).

    P(a, x) = 1/Γ(a) ∫_0^x t^(a-1) e^(-t) dt,     Q(a, x) = 1/Γ(a) ∫_x^∞ t^(a-1) e^(-t) dt

    ∂P/∂x = -∂Q/∂x = x^(a-1) e^(-x) / Γ(a)

The derivative in a has no closed form; PyTorch does not implement it, and neither do we
(the same NotImplementedError, raised when that gradient is asked for).

Both are computed in float64 as Cephes does, by whichever expansion converges and loses
nothing to cancellation where the point lies:

- the series  P = x^a e^(-x) / Γ(a+1) · Σ_n x^n / ((a+1)(a+2)···(a+n)), positive terms, for
  x below a (or x ≤ 1);
- Legendre's continued fraction  Q = x^a e^(-x) / Γ(a) · 1/(x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ···)))
  for x above a and 1.1;
- for x ≤ 1.1 with a small, where Q is tiny beside P, Q's own series
  Q = 1 - x^a / Γ(a+1) - x^a/Γ(a) · Σ_{n≥1} (-x)^n / (n! (a+n)).
- for a ≥ 10^6 with |x - a| < 0.3 a, where the two above would need about 9√a terms (a = 10^38 never
  ended), Temme's uniform expansion to its second term, with λ = x/a, μ = λ - 1 and η = sign(μ) √(2(μ - ln λ)):
  Q = ½ erfc(η √(a/2)) + e^(-aη²/2) / √(2πa) · (c₀(η) + c₁(η)/a),  P = ½ erfc(-η √(a/2)) - (the same),
  c₀ = 1/μ - 1/η,  c₁ = 1/η³ - 1/μ³ - 1/μ² - 1/(12μ)  (their Taylor series near η = 0, where those cancel);
  the next term, c₂/a², is below 10^-15 of the first there. (Cephes uses it, to 25 terms, from a = 20.)

The other function is 1 minus the one computed (at most 1/2 or so there: nothing lost).
The factor x^a e^(-x)/Γ(a) is taken as a logarithm; for a ≥ 10 it is written through
t = (x-a)/a as -a (t - ln(1+t)) + ½ ln(a/2π) - (Stirling's series of ln Γ), so that no two
large logarithms are subtracted.
"""

import functools
import math

from ..backend import errstate, xp
from ..primitive import Primitive
from .broadcasting import unbroadcast
from .conversion import tensors_only
from .elementwise import promote
from .error_function import erfc
from .gamma import _BERNOULLI, _lgamma, lgamma
from .names import names
from .outputs import write_out
from .promotion import promoted_dtype
from .zeta import hurwitz_zeta

_EPS = 2.0**-53  # the relative precision the sums stop at
_BIG, _BIG_INVERSE = 2.0**52, 2.0**-52  # the continued fraction's numerators are rescaled past _BIG
_EULER = 0.57721566490153286061


def _log1p_minus(t):
    """t - ln(1+t), without cancellation for small t (its series Σ_{k≥2} (-1)^k t^k / k)."""
    series = xp.zeros_like(t)
    power = t * t
    for k in range(2, 20):  # |t| < 0.1: the 19th term is below 1e-19 of the first
        series = series + (power / k if k % 2 == 0 else -power / k)
        power = power * t
    with errstate(divide="ignore", invalid="ignore"):
        direct = t - xp.log1p(t)
    return xp.where(xp.abs(t) < 0.1, series, direct)


def _log_prefactor(a, x):
    """ln(x^a e^(-x) / Γ(a)) for a, x > 0."""
    with errstate(divide="ignore", invalid="ignore", over="ignore"):
        direct = a * xp.log(x) - x - _lgamma(a)
        large = xp.maximum(a, 10.0)
        stirling = xp.zeros_like(a)  # ln Γ(a) - (a-½) ln a + a - ½ ln 2π = Σ_k B_2k / (2k (2k-1) a^(2k-1))
        for k, b in enumerate(_BERNOULLI, start=1):
            stirling = stirling + b / (2 * k * (2 * k - 1) * large ** (2 * k - 1))
        uniform = -large * _log1p_minus((x - large) / large) + 0.5 * xp.log(large / (2 * math.pi)) - stirling
    return xp.where(a >= 10.0, uniform, direct)


def _lower_series(a, x):
    """P(a, x) by its series of positive terms."""
    total, term, denominator = xp.ones_like(a), xp.ones_like(a), a.copy()
    active = xp.arange(a.size)
    while active.size:  # only the elements still changing are carried on
        denominator[active] += 1.0
        term[active] *= x[active] / denominator[active]
        total[active] += term[active]
        active = active[term[active] > _EPS * total[active]]
    return total * xp.exp(_log_prefactor(a, x)) / a


@functools.cache
def _zeta_of_integers(count=60):
    """ζ(2), ζ(3), ..., for the Taylor series of ln Γ(1+z)."""
    return hurwitz_zeta(xp.arange(2.0, count + 2.0), xp.ones(count)).tolist()


def _lgamma_1p(z):
    """ln Γ(1+z), exact in relative terms near z = 0 (and z = 1, where it is ln z + ln Γ(z)):
    its Taylor series -γ z + Σ_{k≥2} (-1)^k ζ(k) z^k / k for |z| ≤ ½."""

    def taylor(z):
        total, power = -_EULER * z, z * z
        for k, zeta in enumerate(_zeta_of_integers(), start=2):
            total = total + (zeta / k if k % 2 == 0 else -zeta / k) * power
            power = power * z
        return total

    with errstate(divide="ignore", invalid="ignore"):
        near_one = xp.log(z) + taylor(z - 1.0)
    return xp.where(xp.abs(z) <= 0.5, taylor(z), xp.where(xp.abs(z - 1.0) < 0.5, near_one, _lgamma(z + 1.0)))


def _upper_series(a, x):
    """Q(a, x) for x ≤ 1.1: 1 - x^a/Γ(a+1) - x^a/Γ(a) Σ_{n≥1} (-x)^n / (n! (a+n))."""
    total, factor = xp.zeros_like(a), xp.ones_like(a)
    active = xp.arange(a.size)
    n = 0
    while active.size:
        n += 1
        factor[active] *= -x[active] / n
        term = factor[active] / (a[active] + n)
        total[active] += term
        active = active[xp.abs(term) > _EPS * xp.abs(total[active])]
    log_x = xp.log(x)
    return -xp.expm1(a * log_x - _lgamma_1p(a)) - xp.exp(a * log_x - _lgamma(a)) * total


def _upper_fraction(a, x):
    """Q(a, x) by Legendre's continued fraction, its convergents p_k / q_k by the three-term
    recurrence (rescaled when they grow past 2^52). Where the factor x^a e^(-x)/Γ(a) underflows Q is 0 and
    the fraction is not summed, as Cephes and PyTorch return early: for x past about 1e50 its convergents
    change by a rounding each step, and q_k, which grows by x, overflows before they settle (it gave NaN)."""
    prefactor = xp.exp(_log_prefactor(a, x))
    y, z, c = 1.0 - a, x + 2.0 - a, xp.zeros_like(a)
    with errstate(over="ignore", invalid="ignore"):
        p_before, q_before, p_last, q_last = xp.ones_like(a), x.copy(), x + 1.0, z * x
        answer = p_last / q_last
    active = xp.nonzero(prefactor > 0)[0]
    while active.size:
        i = active
        c[i] += 1.0
        y[i] += 1.0
        z[i] += 2.0
        yc = y[i] * c[i]
        p = p_last[i] * z[i] - p_before[i] * yc
        q = q_last[i] * z[i] - q_before[i] * yc
        with errstate(divide="ignore", invalid="ignore"):
            ratio = xp.where(q != 0, p / q, answer[i])
            change = xp.where(q != 0, xp.abs((answer[i] - ratio) / ratio), 1.0)
        answer[i] = ratio
        p_before[i], q_before[i], p_last[i], q_last[i] = p_last[i], q_last[i], p, q
        scale = xp.where(xp.abs(p) > _BIG, _BIG_INVERSE, 1.0)
        for array in (p_before, q_before, p_last, q_last):
            array[i] *= scale
        active = i[change > _EPS]
    return xp.where(prefactor > 0, answer * prefactor, 0.0)


_TEMME_FROM = 1e6  # a from which the uniform expansion replaces the series near x = a


def _uniform_expansion(a, x):
    """P(a, x) where x < a, Q(a, x) elsewhere, by Temme's uniform expansion (a ≥ 10^6, |x - a| < 0.3 a)."""
    mu = (x - a) / a
    eta = xp.sign(mu) * xp.sqrt(2 * _log1p_minus(mu))
    near = xp.abs(eta) < 1e-2
    with errstate(divide="ignore", invalid="ignore"):
        c0 = xp.where(near, -1 / 3 + eta / 12 - 2 * eta**2 / 135 + eta**3 / 864 + eta**4 / 2835, 1 / mu - 1 / eta)
        c1 = xp.where(near, -1 / 540 - eta / 288 + eta**2 / 378,
                      1 / eta**3 - 1 / mu**3 - 1 / mu**2 - 1 / (12 * mu))
    with errstate(under="ignore"):
        remainder = xp.exp(-0.5 * a * eta * eta) / xp.sqrt(2 * math.pi * a) * (c0 + c1 / a)
    lower = x < a
    return xp.where(lower, 0.5 * erfc(-eta * xp.sqrt(a / 2)) - remainder, 0.5 * erfc(eta * xp.sqrt(a / 2)) + remainder)


def regularized_gamma(a, x, upper):
    """P(a, x) (or Q(a, x) when ``upper``) of two arrays of one floating dtype, with Cephes's
    values at the edges: NaN for a < 0 or x < 0, P(0, x > 0) = 1, P(a, 0) = 0, P(∞, x) = 0,
    P(a, ∞) = 1."""
    dtype, shape = a.dtype, xp.broadcast_shapes(a.shape, x.shape)
    a, x = (xp.broadcast_to(array.astype(xp.float64), shape).ravel() for array in (a, x))
    p = xp.full(a.shape, xp.nan)
    p[(a == 0) & (x > 0)] = 1.0
    p[(x == 0) & (a > 0)] = 0.0
    p[xp.isposinf(a) & (x > 0) & xp.isfinite(x)] = 0.0  # (-∞ is below 0: NaN, as Cephes's)
    p[xp.isposinf(x) & (a > 0) & xp.isfinite(a)] = 1.0
    result = 1.0 - p if upper else p  # (NaN stays NaN)
    inside = (a > 0) & (x > 0) & xp.isfinite(a) & xp.isfinite(x)
    a, x = a[inside], x[inside]
    if upper:  # which of the three to compute, as Cephes chooses for P and for Q
        fraction = (x > 1.1) & (x >= a)
        small_a = xp.where(x <= 0.5, -0.4 / xp.log(xp.minimum(x, 0.5)) < a, 1.1 * x < a)
        lower = ((x > 1.1) & (x < a)) | ((x <= 1.1) & small_a)
    else:
        lower = ~((x > 1.0) & (x > a))
        fraction = ~lower & (x > 1.1)
    uniform = (a >= _TEMME_FROM) & (xp.abs(x - a) < 0.3 * a)
    lower = xp.where(uniform, x < a, lower)
    fraction &= ~uniform
    series = ~lower & ~fraction & ~uniform
    computed = xp.empty(a.shape)  # P where ``lower``, Q elsewhere
    computed[uniform] = _uniform_expansion(a[uniform], x[uniform])
    by_series = lower & ~uniform
    computed[by_series] = _lower_series(a[by_series], x[by_series])
    computed[fraction] = _upper_fraction(a[fraction], x[fraction])
    computed[series] = _upper_series(a[series], x[series])
    result[inside] = xp.where(lower == upper, 1.0 - computed, computed)
    return result.reshape(shape).astype(dtype)


class Igamma(Primitive):
    """z = P(a, x);   dL/dx = dL/dz · x^(a-1) e^(-x) / Γ(a);   dL/da is not implemented (as PyTorch)"""

    upper = False  # Igammac: Q = 1 - P, whose slope in x is the negative

    def forward(self, a, x):
        return regularized_gamma(a, x, self.upper)

    def backward(self, grad, z, a, x):
        if a.requires_grad:
            name = "igammac" if self.upper else "igamma"
            raise NotImplementedError(f"the derivative for '{name}: input' is not implemented.")
        density = ((a - 1.0) * x.log() - x - lgamma(a)).exp()  # (PyTorch's formula: NaN at x = 0, a = 1 too)
        return None, unbroadcast(grad * (-density if self.upper else density), x)


class Igammac(Igamma):
    """z = Q(a, x) = 1 - P(a, x);   dL/dx = -dL/dz · x^(a-1) e^(-x) / Γ(a)"""

    upper = True


def _regularized(primitive, name, input, other, out):
    tensors_only(name, input, other)
    dtype = promoted_dtype(input, other)
    if dtype.kind != "f":
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{dtype}'")
    return write_out(primitive.apply(*promote(input, other)), out)


@names("igamma", inplace="igamma_")
def igamma(input, other, *, out=None):
    """The regularised lower incomplete gamma function P(input, other) (``special.gammainc``)."""
    return _regularized(Igamma, "igamma", input, other, out)


@names("igammac", inplace="igammac_")
def igammac(input, other, *, out=None):
    """The regularised upper incomplete gamma function Q(input, other) = 1 - P
    (``special.gammaincc``)."""
    return _regularized(Igammac, "igammac", input, other, out)
