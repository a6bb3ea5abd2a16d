"""Gamma draws differentiable in their shape (torch._standard_gamma), for the Gamma, Beta, Dirichlet
and StudentT distributions. P is the regularised incomplete gamma function (its values:
ops/incomplete_gamma.py; here its derivative in a, which autograd.igamma does not give, as PyTorch's does not):

    P(a, x) = γ(a, x) / Γ(a) = 1/Γ(a) ∫_0^x t^(a-1) e^(-t) dt,     Q(a, x) = 1 - P(a, x)

P is the CDF of a standard gamma variable of shape (concentration) a, so a draw x ~ Gamma(a, 1)
is x = P⁻¹(a, u) for a uniform u. Holding u fixed, the implicit function theorem gives the
gradient of the draw with respect to a (implicit reparameterisation, Figurnov et al. 2018):

    dx/da = -(∂P/∂a) / (∂P/∂x) = -(∂P/∂a) / p(x),     p(x) = x^(a-1) e^(-x) / Γ(a)

∂P/∂a comes from differentiating the two classical expansions of P term by term (Numerical
Recipes §6.2), each used where it converges fast and sums without cancellation:

* x < a + 1, the series P = x^a e^(-x) / Γ(a+1) · S,  S = Σ_n r_n,  r_0 = 1,  r_n = r_(n-1) x / (a+n):

      dx/da = -(x/a) (S (ln x - ψ(a+1)) + S'),     S' = Σ_n r_n',  r_n' = r_(n-1)' x/(a+n) - r_n/(a+n)

* x ≥ a + 1, the continued fraction Q = x^a e^(-x) / Γ(a) · h,  h = 1/(x+1-a- 1(1-a)/(x+3-a- ...)),
  evaluated by Lentz's method with its derivative h' = dh/da carried along (forward mode):

      dx/da = +x (h (ln x - ψ(a)) + h')

The derivative of a draw is exact to the precision of these sums (about 1e-14 relative), not a
fitted approximation. PyTorch computes the same quantity from rational approximations; its
values agree to about 1e-4 relative.
"""

import math

from .. import random
from ..backend import errstate, to_numpy, xp
from ..primitive import Primitive
from .elementwise import floating
from .gamma import _polygamma
from .names import names

_EPS = 1e-16
_TINY = 1e-300
_MAX_TERMS = 1_000_000


def _series(a, x):
    """S and S' = dS/da of the series, for arrays a, x of one shape (x < a + 1)."""
    total, dtotal = xp.ones_like(x), xp.zeros_like(x)
    term, dterm = xp.ones_like(x), xp.zeros_like(x)
    active = xp.arange(x.size)
    a, x = a.ravel(), x.ravel()
    total, dtotal, term, dterm = total.ravel(), dtotal.ravel(), term.ravel(), dterm.ravel()
    n = 0
    while active.size and n < _MAX_TERMS:  # work on the elements not yet converged only
        n += 1
        ratio = x[active] / (a[active] + n)
        new = term[active] * ratio
        dterm[active] = dterm[active] * ratio - new / (a[active] + n)
        term[active] = new
        total[active] += new
        dtotal[active] += dterm[active]
        done = (xp.abs(new) <= _EPS * xp.abs(total[active])) & (xp.abs(dterm[active]) <= _EPS * xp.abs(dtotal[active]))
        done |= ~xp.isfinite(total[active])  # (an overflow will not converge: it stays inf)
        active = active[~done]
    return total, dtotal


def _continued_fraction(a, x):
    """h and h' = dh/da of the continued fraction for Q, for arrays a, x of one shape (x ≥ a + 1)."""
    a, x = a.ravel(), x.ravel()
    b = x + 1 - a  # db/da = -1 at every depth
    c, dc = xp.full_like(x, 1 / _TINY), xp.zeros_like(x)
    d = 1 / b
    dd = d * d  # d = 1/b: dd/da = -(db/da) / b²
    h, dh = d.copy(), dd.copy()
    active = xp.arange(x.size)
    i = 0
    while active.size and i < _MAX_TERMS:
        i += 1
        k = active
        an, dan = -i * (i - a[k]), float(i)
        b[k] += 2
        denominator = an * d[k] + b[k]
        ddenominator = dan * d[k] + an * dd[k] - 1
        denominator = xp.where(xp.abs(denominator) < _TINY, _TINY, denominator)
        numerator = b[k] + an / c[k]
        dnumerator = -1 + (dan - an * dc[k] / c[k]) / c[k]  # (c² would overflow at the start, c = 1/tiny)
        numerator = xp.where(xp.abs(numerator) < _TINY, _TINY, numerator)
        d[k] = 1 / denominator
        dd[k] = -ddenominator * d[k] ** 2
        c[k], dc[k] = numerator, dnumerator
        delta = d[k] * c[k]
        ddelta = dd[k] * c[k] + d[k] * dc[k]
        dh[k] = dh[k] * delta + h[k] * ddelta
        h[k] = h[k] * delta
        done = (xp.abs(delta - 1) <= _EPS) & (xp.abs(ddelta) <= _EPS * xp.abs(dh[k]) + _TINY)
        done |= ~xp.isfinite(h[k])
        active = active[~done]
    return h, dh


def _split(a, x):
    """Broadcast a and x in float64; the masks of where the series serves and where the continued
    fraction does (neither at x = ∞, a ≤ 0, x < 0 or NaN: those are set by rule, not summed)."""
    a, x = xp.broadcast_arrays(xp.asarray(a, dtype=xp.float64), xp.asarray(x, dtype=xp.float64))
    a, x = xp.atleast_1d(a.copy()), xp.atleast_1d(x.copy())  # (0-d arrays take no masked assignment)
    summable = (a > 0) & (x >= 0) & xp.isfinite(a) & xp.isfinite(x)
    return a, x, summable & (x < a + 1), summable & (x >= a + 1)


def _standard_gamma_derivative(x, a):
    """dx/da of standard gamma draws x of shape a (arrays): see the module docstring."""
    shape = xp.broadcast_shapes(xp.shape(a), xp.shape(x))
    a, x, lower, fraction = _split(a, x)
    lower = lower & (x > 0)
    result = xp.where(x == 0, 0.0, xp.nan)  # a draw that underflowed to 0 stays there
    with errstate(divide="ignore", invalid="ignore"):
        if lower.any():
            al, xl = a[lower], x[lower]
            total, dtotal = _series(al, xl)
            result[lower] = -(xl / al) * (total * (xp.log(xl) - _polygamma(0, al + 1)) + dtotal)
        if fraction.any():
            au, xu = a[fraction], x[fraction]
            h, dh = _continued_fraction(au, xu)
            result[fraction] = xu * (h * (xp.log(xu) - _polygamma(0, au)) + dh)
    return result.reshape(shape)


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

