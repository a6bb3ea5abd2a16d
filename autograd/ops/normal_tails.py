"""The Gaussian's tails without underflow: ``special.erfcx``, ``special.log_ndtr`` and
``special.ndtri``.

    erfcx(x) = e^(x²) erfc(x),    erfcx'(x) = 2x erfcx(x) - 2/√π    (computed without the cancellation)
    Φ(x) = erfc(-x/√2) / 2 = erfcx(-x/√2) e^(-x²/2) / 2,    (ln Φ)'(x) = φ(x)/Φ(x) = √(2/π) / erfcx(-x/√2)
    Φ⁻¹(p) = ndtri(p),    d Φ⁻¹/dp = 1/φ(Φ⁻¹(p)) = √(2π) e^(y²/2)

erfc(x) underflows past x ≈ 26.5 while erfcx(x) ≈ 1/(x√π) goes on, so every formula here is
written through erfcx, never through a product of a huge and a tiny number. erfcx is computed
in float64 for x ≥ 0 by Cody's rational approximations (``error_function``); negative x use
erfcx(x) = 2 e^(x²) - erfcx(-x), with x² taken exactly as a sum of two floats (so e^(x²) keeps
its digits at x = -26, where PyTorch's loses about 1e-13). Its slope past x = 2 is written
through Laplace's continued fraction

    erfcx(x) = 1/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))),

which has no cancellation there.

ndtri starts from Acklam's rational approximation (relative error below 1.2e-9) and takes two
Halley steps on Φ(y) = p. In the tails (p < 0.02425) the step is written with
Φ(y)/φ(y) = erfcx(-y/√2) √(π/2) and p/φ(y) = √(2π) e^(y²/2 + ln p), so it loses nothing down
to the smallest subnormal p; for p > ¼ as Φ(y) - p = erf(y/√2)/2 - (p - ½), exact near ½.
"""

import math

from ..backend import errstate, xp
from ..primitive import Primitive
from .elementwise import floating
from .error_function import erfcx_nonnegative
from .outputs import write_out
from .special import erf

_LEVELS = 60


def erfcx(x):
    """e^(x²) erfc(x) of an array (float64 out)."""
    x = xp.asarray(x, dtype=xp.float64)
    positive = erfcx_nonnegative(xp.abs(x))
    with errstate(over="ignore", invalid="ignore"):
        hi, lo = _square(x)
        # (past e^709.8 the exponential overflows, and its error term 1 + lo, from x² past float64, is no number)
        grown = xp.where(hi > 709.8, xp.inf, 2 * xp.exp(hi) * (1 + lo) - positive)
        return xp.where(x < 0, grown, positive)


def _laplace_tail(x, levels):
    """T = x + 1/(x + (3/2)/(x + 2/(x + ...))): Laplace's fraction below its first level, so
    that erfcx(x) = 1/(√π (x + ½/T)); summed from ``levels`` down (x > 0)."""
    fraction = x
    for n in range(levels, 1, -1):
        fraction = x + (n / 2) / fraction
    return fraction


def erfcx_slope(x):
    """erfcx'(x) = 2x erfcx(x) - 2/√π of an array (float64 out). For x ≥ 2 the two terms
    nearly cancel (the slope is about -1/(√π x²)), so there it is written through the fraction:
    with c = ½/T, x√π erfcx(x) = x/(x + c), and the slope is -2/√π · c/(x + c). (PyTorch
    takes the difference, whose digits are gone past x ≈ 1e8, and is NaN at ∞; this is 0 there.)"""
    x = xp.asarray(x, dtype=xp.float64)
    with errstate(divide="ignore", invalid="ignore", over="ignore"):
        direct = 2 * x * erfcx(x) - 2 / math.sqrt(math.pi)
        far = xp.maximum(x, 2.0)
        c = 0.5 / _laplace_tail(far, 2 * _LEVELS)  # (at x = 2 the fraction needs about 100 levels)
        fraction = xp.where(xp.isinf(x), 0.0, -2 / math.sqrt(math.pi) * c / (far + c))
    return xp.where(x >= 2.0, fraction, direct)


class Erfcx(Primitive):
    """y = e^(x²) erfc(x);   dL/dx = dL/dy · erfcx'(x),   erfcx'(x) = 2x y - 2/√π"""

    pytorch_name = "SpecialErfcxBackward0"  # (PyTorch's node for it)
    saves_output = True  # (PyTorch's node keeps the result too: writing it in place refuses the backward)

    def forward(self, x):
        return erfcx(x).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * ErfcxSlope.apply(x),)


class ErfcxSlope(Primitive):
    """y = erfcx'(x) = 2x erfcx(x) - 2/√π;   dL/dx = dL/dy · (2 erfcx(x) + 2x y)"""

    saves_output = True

    def forward(self, x):
        return erfcx_slope(x).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * (Erfcx.apply(x) * 2.0 + x * y * 2.0),)


def _square(x):
    """x² as hi + lo exactly (Dekker's product: x split into halves of 26 bits), so that e^(±x²/2)
    keeps its digits where x²/2 is hundreds (its rounding would cost x²/2 · 2^-53, relative)."""
    with errstate(over="ignore", invalid="ignore"):
        hi = x * x
        split = x * 134217729.0  # 2^27 + 1
        top = split - (split - x)
        bottom = x - top
        lo = ((top * top - hi) + 2 * top * bottom) + bottom * bottom
    return hi, xp.where(xp.isfinite(lo), lo, 0.0)


class LogNdtr(Primitive):
    """y = ln Φ(x);   dL/dx = dL/dy · √(2/π) / erfcx(-x/√2)   (∞ at x = -∞, the limit of -x;
    PyTorch's is NaN there)"""

    pytorch_name = "SpecialLogNdtrBackward0"  # (PyTorch's node for it)
    saves_output = True  # (PyTorch's node keeps the result too: writing it in place refuses the backward)

    def forward(self, x):
        dtype, x = x.dtype, x.astype(xp.float64)
        t = x / math.sqrt(2)
        hi, lo = _square(x)
        with errstate(divide="ignore", invalid="ignore", over="ignore"):
            left = xp.log(erfcx(-t) / 2) - (hi + lo) / 2  # Φ(x) = erfcx(-t) e^(-x²/2) / 2: its log, for x < 0
            # Φ(x) = 1 - erfc(t)/2 = 1 - erfcx(t) e^(-x²/2) / 2, for x ≥ 0
            right = xp.log1p(-erfcx(t) * xp.exp(-hi / 2) * (1 - lo / 2) / 2)
        return xp.where(x < 0, left, right).astype(dtype)

    def backward(self, grad, y, x):
        return (grad * math.sqrt(2 / math.pi) / Erfcx.apply(x * (-1 / math.sqrt(2))),)


# Acklam's coefficients: the centre (|p - ½| ≤ 0.475) and the tails
_CENTRE_TOP = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
               -3.066479806614716e+01, 2.506628277459239e+00]
_CENTRE_BOTTOM = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
                  -1.328068155288572e+01, 1.0]
_TAIL_TOP = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
             4.374664141464968e+00, 2.938163982698783e+00]
_TAIL_BOTTOM = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00, 1.0]


def _polynomial(coefficients, t):
    total = xp.zeros_like(t)
    for c in coefficients:  # Horner, highest power first
        total = total * t + c
    return total


def ndtri(p):
    """Φ⁻¹(p) of an array (float64 out): -∞ at 0, ∞ at 1, NaN outside [0, 1]."""
    p = xp.asarray(p, dtype=xp.float64)
    # the lower half only: Φ⁻¹(p) = -Φ⁻¹(1 - p), and 1 - p is exact for p ≥ ½
    upper = p > 0.5
    q = xp.where(upper, 1.0 - p, p)
    inside = (q > 0) & (q <= 0.5)
    q = xp.where(inside, q, 0.25)
    with errstate(divide="ignore", invalid="ignore", over="ignore"):
        centre = q - 0.5
        square = centre * centre
        log_q = xp.log(q)
        root = xp.sqrt(-2 * log_q)
        y = xp.where(q > 0.02425, centre * _polynomial(_CENTRE_TOP, square) / _polynomial(_CENTRE_BOTTOM, square),
                     _polynomial(_TAIL_TOP, root) / _polynomial(_TAIL_BOTTOM, root))
        for _ in range(2):  # Halley: u = (Φ(y) - q)/φ(y),  y ← y - u / (1 + y u / 2)
            hi, lo = _square(y)
            tail = (erfcx(-y / math.sqrt(2)) * math.sqrt(math.pi / 2)
                    - math.sqrt(2 * math.pi) * xp.exp(hi / 2 + log_q) * (1 + lo / 2))
            middle = (erf(y / math.sqrt(2)) / 2 - centre) * math.sqrt(2 * math.pi) * xp.exp(y * y / 2)
            u = xp.where(q > 0.25, middle, tail)
            y = y - u / (1 + y * u / 2)
    y = xp.where(upper, -y, y)
    y = xp.where(inside, y, xp.nan)
    y = xp.where(p == 0, -xp.inf, xp.where(p == 1, xp.inf, y))
    return y


class Ndtri(Primitive):
    """y = Φ⁻¹(x);   dL/dx = dL/dy · √(2π) e^(y²/2)"""

    pytorch_name = "SpecialNdtriBackward0"  # (PyTorch's node for it)
    saves_output = True
    saves_inputs = False  # (dL/dx reads y alone: PyTorch's node saves y, and x may be written after the forward)

    def forward(self, x):
        return ndtri(x).astype(x.dtype)

    def backward(self, grad, y, x):
        return (grad * (y * y * 0.5).exp() * math.sqrt(2 * math.pi),)


def erfcx_of(input, *, out=None):
    """The scaled complementary error function e^(x²) erfc(x) (``special.erfcx``)."""
    return write_out(Erfcx.apply(floating(input)), out)


def log_ndtr(input, *, out=None):
    """ln Φ(x), the log of the standard normal CDF, accurate far into both tails (``special.log_ndtr``)."""
    return write_out(LogNdtr.apply(floating(input)), out)


def ndtri_of(input, *, out=None):
    """Φ⁻¹(p), the standard normal quantile (``special.ndtri``)."""
    return write_out(Ndtri.apply(floating(input)), out)
