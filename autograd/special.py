"""``autograd.special``: torch.special's names for the special functions the ops define."""

import math

from .ops import normal_tails, pointwise, reductions, rounding
from .ops.bessel import i0, i0e, i1, i1e, spherical_bessel_j0  # noqa: F401  (re-exported)
from .ops.bessel_integrals import (  # noqa: F401  (re-exported)
    airy_ai,
    bessel_j0,
    bessel_j1,
    bessel_y0,
    bessel_y1,
    modified_bessel_i0,
    modified_bessel_i1,
    modified_bessel_k0,
    modified_bessel_k1,
    scaled_modified_bessel_k0,
    scaled_modified_bessel_k1,
)
from .ops.conversion import refuse_half_and_complex
from .ops.gamma import digamma, lgamma, mvlgamma, polygamma  # noqa: F401  (re-exported)
from .ops.incomplete_gamma import igamma, igammac
from .ops.names import FUNCTIONS, taking_numpy_keywords
from .ops.numbers import erfc  # noqa: F401  (re-exported)
from .ops.outputs import write_out
from .ops.pointwise import Entr, floating, logit  # noqa: F401
from .ops.pointwise_pairs import xlog1py, xlogy  # noqa: F401
from .ops.polynomials import (  # noqa: F401  (re-exported)
    chebyshev_polynomial_t,
    chebyshev_polynomial_u,
    chebyshev_polynomial_v,
    chebyshev_polynomial_w,
    hermite_polynomial_h,
    hermite_polynomial_he,
    laguerre_polynomial_l,
    legendre_polynomial_p,
    shifted_chebyshev_polynomial_t,
    shifted_chebyshev_polynomial_u,
    shifted_chebyshev_polynomial_v,
    shifted_chebyshev_polynomial_w,
)
from .ops.special import erf_of
from .ops.zeta import zeta  # noqa: F401  (re-exported)

__all__ = ["airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "chebyshev_polynomial_t",
           "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w", "digamma", "entr", "erf",
           "erfc", "erfcx", "erfinv", "exp2", "expit", "expm1", "gammainc", "gammaincc", "gammaln",
           "hermite_polynomial_h", "hermite_polynomial_he", "i0", "i0e", "i1", "i1e", "laguerre_polynomial_l",
           "legendre_polynomial_p", "log1p", "log_ndtr", "log_softmax", "logit", "logsumexp", "modified_bessel_i0",
           "modified_bessel_i1", "modified_bessel_k0", "modified_bessel_k1", "multigammaln", "ndtr", "ndtri",
           "polygamma", "psi", "round", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
           "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
           "shifted_chebyshev_polynomial_w", "sinc", "softmax", "spherical_bessel_j0", "xlog1py", "xlogy", "zeta"]

erfinv, exp2, expm1, log1p = (FUNCTIONS[name] for name in ("erfinv", "exp2", "expm1", "log1p"))
gammaln = lgamma
psi = digamma
multigammaln = mvlgamma


def _real(input, kernel):
    """input as a floating tensor, refusing float16 and complex numbers, which PyTorch's kernel ``kernel`` has no
    loop for."""
    x = floating(input)
    refuse_half_and_complex(x, kernel)
    return x


def erfcx(input, *, out=None):
    """The scaled complementary error function e^(x²) erfc(x), of real numbers."""
    return normal_tails.erfcx_of(_real(input, "erfcx_cpu"), out=out)


def ndtri(input, *, out=None):
    """Φ⁻¹(p), the standard normal quantile, of real numbers."""
    return normal_tails.ndtri_of(_real(input, "ndtri_cpu"), out=out)


def log_ndtr(input, *, out=None):
    """ln Φ(x), the log of the standard normal CDF, of real numbers, accurate far into both tails."""
    return normal_tails.log_ndtr(_real(input, "log_ndtr_cpu"), out=out)


def round(input, *, decimals=0, out=None):
    """x rounded to ``decimals`` decimal places (halves to even). PyTorch's special.round is round's overload
    with decimals, whose default 0 still refuses integers, as round(x, decimals=0) does."""
    return rounding.round(input, decimals=decimals, out=out)


def gammainc(input, other, *, out=None):
    """The regularised lower incomplete gamma function P(input, other) (``autograd.igamma``)."""
    return igamma(input, other, out=out)


def gammaincc(input, other, *, out=None):
    """The regularised upper incomplete gamma function Q(input, other) (``autograd.igammac``)."""
    return igammac(input, other, out=out)


def erf(input, *, out=None):
    """erf(x) = 2/√π ∫_0^x e^(-t²) dt"""
    return write_out(erf_of(input), out)


def expit(input, *, out=None):
    """The logistic sigmoid 1 / (1 + e^-x)."""
    return write_out(input.sigmoid(), out)


def ndtr(input, *, out=None):
    """The standard normal CDF: (1 + erf(x / √2)) / 2."""
    return write_out((erf_of(input * (1 / math.sqrt(2))) + 1.0) * 0.5, out)


def entr(input, *, out=None):
    """-x ln x elementwise (0 at x = 0, -inf for x < 0)."""
    return write_out(Entr.apply(floating(input)), out)


def logsumexp(input, dim, keepdim=False, *, out=None):
    """log Σ e^x over dim, computed stably (``autograd.logsumexp`` under special's keywords)."""
    return write_out(reductions.logsumexp(input, dim, keepdim), out)


def sinc(input, *, out=None):
    """sin(πx) / (πx), and 1 at x = 0 (``autograd.sinc``, whose integers become the default dtype)."""
    return pointwise.sinc(input, out=out)


def softmax(input, dim, dtype=None):
    return (input if dtype is None else input.to(dtype)).softmax(dim)


def log_softmax(input, dim, *, dtype=None):
    return (input if dtype is None else input.to(dtype)).log_softmax(dim)


taking_numpy_keywords(globals(), __all__)  # (axis= for dim=, keepdims= for keepdim=)
