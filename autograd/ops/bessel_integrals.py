"""The Bessel functions of ``special`` that PyTorch gives no gradient: J0, J1, Y0, Y1 (first
and second kind), K0, K1 (modified, second kind; also scaled by e^x), I0, I1 (modified, first
kind) and Airy's Ai. Each result never requires grad, as PyTorch's.

They are computed in float64 from integrals that the trapezoidal rule sums to full precision
(for a periodic or rapidly decaying analytic integrand its error falls exponentially with the
number of points), and from asymptotic series where the argument is large:

- Bessel's integral  J_m(x) = 1/2π ∫_0^2π cos(mτ - x sin τ) dτ: on M = 160 equally spaced τ the
  sum is exact up to the aliased J_{M-m}(x), below 1e-17 for |x| ≤ 25 and m ≤ 81; and one
  inverse FFT of e^(-ix sin τ_j) gives every order m at once.
- Neumann's series  Y0(x) = 2/π (ln(x/2) + γ) J0(x) - 4/π Σ_{k≥1} (-1)^k J_2k(x) / k, and Y1 = -Y0'
  (J_m' = (J_{m-1} - J_{m+1}) / 2), from those J_m.
- Hankel's expansions for x > 25: with χ = x - (ν/2 + ¼)π and a_k = Π_{j≤k} (4ν² - (2j-1)²) / (k! 8^k),
  J_ν = √(2/πx) (P cos χ - Q sin χ),  Y_ν = √(2/πx) (P sin χ + Q cos χ),
  P = Σ (-1)^k a_2k / x^2k,  Q = Σ (-1)^k a_(2k+1) / x^(2k+1)   (the least term there is e^(-2x)).
- e^x K_ν(x) = ∫_0^∞ e^(-2x sinh²(t/2)) cosh νt dt, trapezoidal with step min(0.2, 0.5/√x): the error
  is about e^(-π²/h) (e^(-49) at most).
- Ai(x) = √(x/3)/π · K_⅓(ζ), ζ = ⅔ x^(3/2), for x > 1; Maclaurin's series for |x| ≤ 1; for -10 < x < -1
  Ai(x) = √|x|/3 (J_⅓(ζ) + J_-⅓(ζ)) with J_ν(ζ) = 1/π ∫_0^π cos(νθ - ζ sin θ) dθ - sin(νπ)/π ∫_0^∞
  e^(-ζ sinh t - νt) dt (Gauss-Legendre, 96 nodes, and the trapezoidal rule in s = ln t); below -10 the
  asymptotic series Ai(-z) = z^(-¼)/√π (cos(ζ - π/4) Σ (-1)^k u_2k/ζ^2k + sin(ζ - π/4) Σ (-1)^k
  u_(2k+1)/ζ^(2k+1)), u_k = Γ(3k + ½) / (54^k k! Γ(k + ½)).

I0's values are NumPy's (Cephes), I1's the power series of ops/bessel.py. The edges are PyTorch's:
J(±∞) and Y(∞) are NaN (the asymptotic forms carry cos ∞), Y(0) = -∞, Y(x < 0) = NaN,
K(0) = ∞, K(x < 0) = NaN, Ai(±∞) = NaN.
"""

import functools
import math

from ..backend import errstate, xp
from ..tensor import Tensor
from .bessel import bessel_i1, hankel_coefficients
from .conversion import refuse_half_and_complex
from .elementwise import floating
from .outputs import write_out

_EULER = 0.57721566490153286061
_NODES, _ORDERS, _NEAR = 160, 40, 25.0  # points on the circle, Neumann terms, where Hankel takes over


def _result(input, function, out, kernel):
    """function of the input's array (as float64), as a tensor of its floating dtype without grad (float32
    or float64: PyTorch's ``kernel`` refuses float16 and complex numbers)."""
    x = floating(input)
    refuse_half_and_complex(x, kernel)
    x = x._data
    with errstate(all="ignore"):
        return write_out(Tensor._make(function(x.astype(xp.float64)).astype(x.dtype)), out)


def _orders(x):
    """J_0(x), ..., J_(2K+1)(x) for |x| ≤ 25, by Bessel's integral (one FFT per element)."""
    tau = 2 * math.pi * xp.arange(_NODES) / _NODES
    samples = xp.exp(-1j * x[:, None] * xp.sin(tau))
    return xp.fft.ifft(samples, axis=-1).real[:, : 2 * _ORDERS + 2]


def _hankel(x, order):
    """(J_ν(x), Y_ν(x)) for large x > 0 by Hankel's expansions."""
    a = hankel_coefficients(order)
    inverse = 1 / x
    p, q, power = xp.zeros_like(x), xp.zeros_like(x), xp.ones_like(x)
    for k, coefficient in enumerate(a):
        term = coefficient * power * (-1) ** (k // 2)
        if k % 2 == 0:
            p = p + term
        else:
            q = q + term
        power = power * inverse
    shift = (order / 2 + 0.25) * math.pi  # cos χ, sin χ from cos x, sin x (exactly reduced) and the shift's
    cos_chi = xp.cos(x) * math.cos(shift) + xp.sin(x) * math.sin(shift)
    sin_chi = xp.sin(x) * math.cos(shift) - xp.cos(x) * math.sin(shift)
    scale = xp.sqrt(2 / (math.pi * x))
    return scale * (p * cos_chi - q * sin_chi), scale * (p * sin_chi + q * cos_chi)


def _bessel_j(x, order):
    magnitude = xp.abs(x).ravel()
    result = xp.empty_like(magnitude)
    near = magnitude <= _NEAR
    result[near] = _orders(magnitude[near])[:, order]
    result[~near] = _hankel(magnitude[~near], order)[0]
    result = result.reshape(x.shape)
    return xp.where(x < 0, -result, result) if order == 1 else result


def _bessel_y(x, order):
    flat = x.ravel()
    result = xp.full(flat.shape, xp.nan)
    near = (flat > 0) & (flat <= _NEAR)
    z = flat[near]
    j = _orders(z)
    log_term = xp.log(z / 2) + _EULER
    k = xp.arange(1, _ORDERS + 1)
    signs = (-1.0) ** k
    if order == 0:
        result[near] = 2 / math.pi * log_term * j[:, 0] - 4 / math.pi * (j[:, 2 * k] * (signs / k)).sum(axis=1)
    else:
        result[near] = (2 / math.pi * (log_term * j[:, 1] - j[:, 0] / z)
                        + 2 / math.pi * ((j[:, 2 * k - 1] - j[:, 2 * k + 1]) * (signs / k)).sum(axis=1))
    far = flat > _NEAR
    result[far] = _hankel(flat[far], order)[1]
    result[flat == 0] = -xp.inf
    return result.reshape(x.shape)


def _scaled_k(x, order):
    """e^x K_ν(x) for x > 0 (an array), by the trapezoidal rule."""
    step = xp.minimum(0.2, 0.5 / xp.sqrt(x))
    total = xp.full(x.shape, 0.5)  # the t = 0 term, halved
    peak = xp.arcsinh(order / x)  # the integrand rises until here (order > 0, small x)
    active, k = xp.arange(x.size), 0
    while active.size:
        k += 1
        t = k * step[active]
        term = xp.exp(-2 * x[active] * xp.sinh(t / 2) ** 2 + order * t) * (1 + xp.exp(-2 * order * t)) / 2
        total[active] += term
        active = active[(term > 1e-17 * total[active]) | (t < peak[active])]
    return total * step


def _modified_k(x, order, scaled):
    flat = x.ravel()
    result = xp.full(flat.shape, xp.nan)
    inside = (flat > 0) & xp.isfinite(flat)
    # Below x = 1e-10 the leading terms, K0(x) = -ln(x/2) - γ and K1(x) = 1/x (times e^x = 1 + x if scaled), are
    # exact to the last bit (the next are O(x² ln x) and O(x ln x) beside them), where the rule fails: K1's integrand
    # peaks at t = arcsinh(1/x), never reached once 1/x overflows (a subnormal x: the loop did not end; K1 is ∞
    # there, as PyTorch's), and sinh(t/2)² overflows at t ≈ 710 before K0's integrand has decayed (x < 1e-308)
    tiny = inside & (flat < 1e-10)
    near = flat[tiny]
    with errstate(divide="ignore", over="ignore"):
        leading = 1 / near if order == 1 else -xp.log(near / 2) - _EULER
        result[tiny] = leading * (1 + near) if scaled else leading
    inside &= ~tiny
    values = _scaled_k(flat[inside], order)
    result[inside] = values if scaled else values * xp.exp(-flat[inside])
    result[flat == 0] = xp.inf
    result[flat == xp.inf] = 0.0
    return result.reshape(x.shape)


_AI_0, _AI_SLOPE_0 = 0.355028053887817239260, 0.258819403792806798405  # Ai(0), -Ai'(0)


def _airy_series(x):
    """Maclaurin's series: Ai(x) = Ai(0) f(x) - |Ai'(0)| g(x), f = Σ 3^k (⅓)_k x^3k / (3k)!,
    g = Σ 3^k (⅔)_k x^(3k+1) / (3k+1)!."""
    cube = x**3
    f_term, g_term = xp.ones_like(x), x.copy()
    f, g = f_term.copy(), g_term.copy()
    for k in range(30):  # |x| ≤ 1: the 30th terms are far below 1e-17
        f_term = f_term * cube / ((3 * k + 2) * (3 * k + 3))
        g_term = g_term * cube / ((3 * k + 3) * (3 * k + 4))
        f, g = f + f_term, g + g_term
    return _AI_0 * f - _AI_SLOPE_0 * g


@functools.cache
def _legendre_nodes(count=96):
    import numpy.polynomial.legendre

    nodes, weights = numpy.polynomial.legendre.leggauss(count)
    return xp.asarray((nodes + 1) * math.pi / 2), xp.asarray(weights * math.pi / 2)


def _fractional_j(z, order):
    """J_ν(z) for z > 0 and non-integer ν, by the integral with its correction term."""
    nodes, weights = _legendre_nodes()
    oscillating = (xp.cos(order * nodes - z[:, None] * xp.sin(nodes)) * weights).sum(axis=1) / math.pi
    # ∫_0^∞ e^(-z sinh t - νt) dt with t = e^s: the integrand of s decays at both ends (as e^s to the
    # left, doubly exponentially to the right), so the trapezoidal rule converges exponentially
    s = xp.arange(-40.0, 4.0, 0.05)
    t = xp.exp(s)
    tail = (xp.exp(-z[:, None] * xp.sinh(t) - order * t) * t).sum(axis=1) * 0.05
    return oscillating - math.sin(order * math.pi) / math.pi * tail


@functools.cache
def _airy_coefficients(count=44):
    """u_k = Γ(3k + ½) / (54^k k! Γ(k + ½))."""
    return [math.exp(math.lgamma(3 * k + 0.5) - k * math.log(54) - math.lgamma(k + 1) - math.lgamma(k + 0.5))
            for k in range(count)]


def _airy_far_left(z):
    """Ai(-z) for z ≥ 10 by its asymptotic series."""
    zeta = 2 / 3 * z**1.5
    even, odd, power = xp.zeros_like(z), xp.zeros_like(z), xp.ones_like(z)
    for k, u in enumerate(_airy_coefficients()):
        term = u * power * (-1) ** (k // 2)
        if k % 2 == 0:
            even = even + term
        else:
            odd = odd + term
        power = power / zeta
    angle = zeta - math.pi / 4
    return (xp.cos(angle) * even + xp.sin(angle) * odd) / (math.sqrt(math.pi) * z**0.25)


def _airy(x):
    flat = x.ravel()
    result = xp.full(flat.shape, xp.nan)
    series = xp.abs(flat) <= 1
    result[series] = _airy_series(flat[series])
    right = (flat > 1) & (flat < 1e205)  # (past it ζ = ⅔ x^(3/2) overflows, where Ai, below e^-ζ, is 0)
    result[(flat >= 1e205) & xp.isfinite(flat)] = 0.0
    z = flat[right]
    zeta = 2 / 3 * z**1.5
    result[right] = math.sqrt(1 / 3) / math.pi * xp.sqrt(z) * _scaled_k(zeta, 1 / 3) * xp.exp(-zeta)
    middle = (flat < -1) & (flat > -10)
    z = -flat[middle]
    zeta = 2 / 3 * z**1.5
    result[middle] = xp.sqrt(z) / 3 * (_fractional_j(zeta, 1 / 3) + _fractional_j(zeta, -1 / 3))
    left = (flat <= -10) & xp.isfinite(flat)
    result[left] = _airy_far_left(-flat[left])
    return result.reshape(x.shape)


def bessel_j0(input, *, out=None):
    """J0(x), the Bessel function of the first kind of order 0 (no gradient)."""
    return _result(input, lambda x: _bessel_j(x, 0), out, "bessel_j0_cpu")


def bessel_j1(input, *, out=None):
    """J1(x), the Bessel function of the first kind of order 1 (no gradient)."""
    return _result(input, lambda x: _bessel_j(x, 1), out, "bessel_j1_cpu")


def bessel_y0(input, *, out=None):
    """Y0(x), the Bessel function of the second kind of order 0 (no gradient)."""
    return _result(input, lambda x: _bessel_y(x, 0), out, "bessel_y0_cpu")


def bessel_y1(input, *, out=None):
    """Y1(x), the Bessel function of the second kind of order 1 (no gradient)."""
    return _result(input, lambda x: _bessel_y(x, 1), out, "bessel_y1_cpu")


def modified_bessel_i0(input, *, out=None):
    """I0(x), the modified Bessel function of the first kind of order 0 (no gradient; ``i0`` has one)."""
    return _result(input, xp.i0, out, "modified_bessel_i0_cpu")


def modified_bessel_i1(input, *, out=None):
    """I1(x), the modified Bessel function of the first kind of order 1 (no gradient; ``i1`` has one)."""
    return _result(input, bessel_i1, out, "modified_bessel_i1_cpu")


def modified_bessel_k0(input, *, out=None):
    """K0(x), the modified Bessel function of the second kind of order 0 (no gradient)."""
    return _result(input, lambda x: _modified_k(x, 0.0, scaled=False), out, "modified_bessel_k0_cpu")


def modified_bessel_k1(input, *, out=None):
    """K1(x), the modified Bessel function of the second kind of order 1 (no gradient)."""
    return _result(input, lambda x: _modified_k(x, 1.0, scaled=False), out, "modified_bessel_k1_cpu")


def scaled_modified_bessel_k0(x, *, out=None):
    """e^x K0(x) (no gradient)."""
    return _result(x, lambda x: _modified_k(x, 0.0, scaled=True), out, "scaled_modified_bessel_k0_cpu")


def scaled_modified_bessel_k1(x, *, out=None):
    """e^x K1(x) (no gradient)."""
    return _result(x, lambda x: _modified_k(x, 1.0, scaled=True), out, "scaled_modified_bessel_k1_cpu")


def airy_ai(x, *, out=None):
    """Airy's function Ai(x), the solution of y'' = x y that decays as x → ∞ (no gradient)."""
    return _result(x, _airy, out, "airy_ai_cpu")
