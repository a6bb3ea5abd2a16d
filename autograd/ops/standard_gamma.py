"""Gamma draws differentiable in their shape (torch._standard_gamma), for the Gamma, Chi2, StudentT,
InverseGamma, FisherSnedecor and Wishart distributions (Beta and Dirichlet: ops/dirichlet_draw.py). P is the
regularised incomplete gamma function, the CDF of a standard gamma variable of shape (concentration) a:

    P(a, x) = γ(a, x) / Γ(a) = 1/Γ(a) ∫_0^x t^(a-1) e^(-t) dt,     p(x) = x^(a-1) e^(-x) / Γ(a)

A draw x ~ Gamma(a, 1) is x = P⁻¹(a, u) for a uniform u. Holding u fixed, the implicit function theorem gives
the gradient of the draw with respect to a (implicit reparameterisation, Figurnov et al. 2018):

    dx/da = -(∂P/∂a) / p(x)

computed as PyTorch computes it (ATen's standard_gamma_grad_one, in float64, rounded to the draw's dtype once),
so that a program's gradients are PyTorch's numbers; it is accurate to about 1e-4 relative (the tests measure
it against central differences of P):

* x < 0.8: the first six terms of P's series in x, P = x^a Σ_n (-x)^n / (n! (a+n)), and of ∂P/∂a by
  differentiating it term by term (with ψ(a) for Γ's part);
* a > 8: Rice's saddle-point expansion (a polynomial within 10% of x = a, where the expansion is singular);
* elsewhere: exp(p/q) for a bivariate rational function p/q of log(x/a) and log(a), fitted to the exact values
  (Jankowiak and Obermeyer 2018).
"""

import math

from .. import random
from ..backend import errstate, to_numpy, xp
from ..primitive import Primitive
from .elementwise import floating
from .names import names

_PSI_10 = 2.25175258906672110764  # ψ(10)
_PSI_ASYMPTOTIC = (8.33333333333333333333e-2, -2.10927960927960927961e-2, 7.57575757575757575758e-3,
                   -4.16666666666666666667e-3, 3.96825396825396825397e-3, -8.33333333333333333333e-3,
                   8.33333333333333333333e-2)


def digamma_one(x):
    """ψ(x) for x > 0 as PyTorch's digamma_one, which its draws' gradients use (Cephes's: x pushed up to 10 or
    more by ψ(x) = ψ(x+1) - 1/x, then the asymptotic series), with its roundings: x and its steps in x's dtype,
    the sums in float64, the result in x's dtype. (In float32 the differences ψ(α + β) - ψ(β) the Dirichlet
    gradients take cancel to a few digits: ψ computed otherwise would move them by 1e-3.)"""
    dtype = x.dtype.type
    x = x.copy()
    result = xp.zeros(x.shape, dtype=xp.float64)
    below = x < 10
    while below.any():
        result[below] -= (1 / x[below]).astype(xp.float64)
        x[below] += dtype(1)
        below = x < 10
    z = 1.0 / (x * x).astype(xp.float64)
    series = xp.zeros_like(z)
    for coefficient in _PSI_ASYMPTOTIC:
        series = series * z + coefficient
    series = xp.where(x < 1e17, z * series, 0.0)
    asymptotic = result + xp.log(x) - dtype(0.5) / x - series
    return xp.where(x == 0, xp.inf, xp.where(x == 10, result + _PSI_10, asymptotic)).astype(dtype)


# (PyTorch's kernel compares with float literals, 0.8f and 0.9f: float32 roundings of the decimals)
_SMALL_X = float(xp.float32(0.8))
_NEAR_A = (float(xp.float32(0.9)), float(xp.float32(1.1)))

# p and q of the rational approximation, each a cubic in v = log(a) whose coefficients are quadratics in
# u = log(x/a): _RATIONAL[k][i] is the u^k coefficient of v^i in p (i < 4) or in q (i ≥ 4)
_RATIONAL = ((0.16009398, -0.094634809, 0.025146376, -0.0030648343, 1, 0.32668115, 0.10406089, 0.0014179084),
             (0.53487893, 0.1298071, 0.065735949, -0.0015649758, 0.16639465, 0.020070113, -0.0035938915,
              -0.00058392623),
             (0.040121004, -0.0065914022, -0.0026286047, -0.0013441777, 0.017050642, -0.0021309326, 0.00085092367,
              -1.5247877e-07))


def _by_series(a, x):
    """dx/da for x < 0.8: P and ∂P/∂a from six terms of P's series in x."""
    numer, denom = xp.ones_like(x), a.copy()
    series, dseries = numer / denom, numer / (denom * denom)
    for i in range(1, 6):
        numer = numer * (-x / i)
        denom = denom + 1
        series = series + numer / denom
        dseries = dseries + numer / (denom * denom)
    x_to_a = x ** a
    density = x ** (a - 1) * xp.exp(-x)  # (p(x) · Γ(a): Γ(a) cancels in the ratio)
    dP = (xp.log(x) - digamma_one(a)) * (x_to_a * series) - x_to_a * dseries
    result = -dP / density
    return xp.where(xp.isnan(result), 0.0, result)


def _by_saddle_point(a, x):
    """dx/da for a > 8: Rice's saddle-point expansion, and its polynomial limit within 10% of x = a."""
    near = (_NEAR_A[0] * a <= x) & (x <= _NEAR_A[1] * a)
    polynomial = ((1 + 24 * a * (1 + 12 * a)) * (1440 * a * a + 6 * x * (53 - 120 * x) - 65 * x * x / a
                                                 + a * (107 + 3600 * x)) / (1244160 * a * a * a * a))
    root = xp.sqrt(8 * a)
    log_ratio = xp.log(x / a)
    with errstate(all="ignore"):  # (the far branch is singular where the near one serves)
        pole = root / (a - x)
        tail = (x - a - a * log_ratio) ** -1.5
        both = xp.where(x < a, pole - tail, pole + tail)
        term = log_ratio * both - xp.sqrt(2 / a) * (a + x) / ((a - x) * (a - x))
        stirling = 1 + 1 / (12 * a) * (1 + 1 / (24 * a))
        far = -stirling * (x * term) / root
    return xp.where(near, polynomial, far)


def _by_rational_function(a, x):
    """dx/da elsewhere: exp(p/q), p/q fitted in log(x/a) and log(a)."""
    u, v = xp.log(x / a), xp.log(a)
    coefficients = [c0 + u * (c1 + u * c2) for c0, c1, c2 in zip(*_RATIONAL)]
    p = coefficients[0] + v * (coefficients[1] + v * (coefficients[2] + v * coefficients[3]))
    q = coefficients[4] + v * (coefficients[5] + v * (coefficients[6] + v * coefficients[7]))
    return xp.exp(p / q)


def _standard_gamma_derivative(x, a):
    """dx/da of standard gamma draws x of shape a (arrays), as PyTorch's: see the module docstring."""
    a, x = xp.broadcast_arrays(xp.asarray(a, dtype=xp.float64), xp.asarray(x, dtype=xp.float64))
    small = x < _SMALL_X
    large = ~small & (a > 8)
    with errstate(all="ignore"):
        result = xp.where(small, _by_series(a, x), xp.where(large, _by_saddle_point(a, x),
                                                             _by_rational_function(a, x)))
    return result


# PyTorch's sample_gamma writes these as float literals (1.0f / 3.0f, 0.0331f), rounded to float32 in every dtype
_THIRD = float(xp.float32(1.0) / xp.float32(3.0))
_SQUEEZE = float(xp.float32(0.0331))


def _marsaglia_tsang(alpha, stream, dtype):
    """One Gamma(alpha, 1) draw as PyTorch's sample_gamma makes it from float64 uniforms and its one-at-a-time
    normals: a shape below 1 boosted by u^(1/alpha), then Marsaglia and Tsang's squeeze and log tests. The
    shape's own arithmetic (the boost, d) is in its dtype, the rest in float64, as PyTorch's kernel."""
    uniform = stream.one_uniform

    alpha = dtype.type(alpha)
    scale = 1.0
    if alpha < 1.0:
        if alpha == 0.0:
            return 0.0
        scale *= (1.0 - uniform()) ** float(dtype.type(1.0) / alpha)
        alpha = alpha + dtype.type(1.0)
    d = float(alpha - dtype.type(_THIRD))
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        while True:
            x = stream.one_normal()
            y = 1.0 + c * x
            if y > 0:
                break
        v = y * y * y
        u = 1.0 - uniform()
        xx = x * x
        if u < 1.0 - _SQUEEZE * xx * xx:
            return scale * d * v
        if math.log(u) < 0.5 * xx + d * (1.0 - v + math.log(v)):
            return scale * d * v


def gamma_draws(a, generator=None):
    """Gamma(a, 1) draws for an array of shapes a, in its dtype (drawn on the host, one shape at a time, as
    PyTorch's kernel), each at or above the smallest normal number, as PyTorch's kernel keeps them."""
    stream = random.generator(generator)
    dtype = xp.dtype(a.dtype)
    draws = [_marsaglia_tsang(shape, stream, dtype) for shape in to_numpy(a).reshape(-1)]
    tiny = float(xp.finfo(a.dtype).tiny)
    return xp.asarray([max(tiny, draw) for draw in xp.asarray(draws, dtype=a.dtype).tolist()],
                      dtype=a.dtype).reshape(a.shape)


class StandardGamma(Primitive):
    """x ~ Gamma(a, 1), a draw (from ``generator``) for each shape a;
    dL/da = dL/dx · dx/da, the implicit reparameterisation gradient (module docstring)"""

    saves_output = True

    def forward(self, a):
        return gamma_draws(a, self.generator)

    def backward(self, grad, x, a):
        return (grad * StandardGammaGrad.apply(x, a),)


class StandardGammaGrad(Primitive):
    """dx/da for standard gamma draws x of shape a. Its own derivative is not implemented (nor
    is PyTorch's), so a second backward through a gamma draw says so."""

    def forward(self, x, a):
        return _standard_gamma_derivative(x, a).astype(xp.result_type(x, a))

    def backward(self, grad, y, x, a):
        raise NotImplementedError("the derivative for '_standard_gamma_grad' is not implemented.")


@names("_standard_gamma", functions=("_standard_gamma",))
def standard_gamma(input, generator=None):  # noqa: A002
    """Draws of Gamma(input, 1), differentiable in input (torch._standard_gamma)."""
    return StandardGamma.apply(floating(input), generator=generator)


@names("_standard_gamma_grad", functions=("_standard_gamma_grad",))
def standard_gamma_grad(input, output):  # noqa: A002
    """dx/da for draws ``output`` of standard gammas of shape ``input`` (torch._standard_gamma_grad)."""
    return StandardGammaGrad.apply(output, input)

