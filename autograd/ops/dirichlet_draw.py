"""Dirichlet draws differentiable in their concentration, with PyTorch's gradient (its _Dirichlet function
and torch._dirichlet_grad), for the Dirichlet and Beta distributions' rsample.

A draw x ~ Dirichlet(α) is x = G / Σ_j G_j with G_i ~ Gamma(α_i, 1) (ops/standard_gamma.py draws them, in
float64 as PyTorch's kernel). Many reparameterisations carry the same expectation's gradient; PyTorch's
holds each coordinate's marginal CDF fixed: x_j ~ Beta(α_j, β_j), β_j = α₀ - α_j, α₀ = Σ_i α_i, so

    dx_j/dα_j = -(∂F/∂a)(x_j; α_j, β_j) / f(x_j; α_j, β_j) = g_j (1 - x_j)    (β_j held fixed)
    dx_i/dα_j = -g_j x_i  (i ≠ j: the other coordinates shrink in proportion, the draw stays on the simplex)

with F, f the Beta CDF and density, so that dL/dα_j = g_j (dL/dx_j - Σ_i x_i dL/dx_i). PyTorch computes
g = torch._dirichlet_grad(x, α, α₀) from approximations, ported here branch for branch (ATen's
Distributions.h, dirichlet_grad_one) so that a program's gradients are PyTorch's numbers: Taylor series in x
near 0 and near 1, a Rice saddle-point expansion when α and β both exceed 6, and elsewhere a fitted rational
correction to x (ψ(α₀) - ψ(α)) / β. (Differentiating the gammas instead, G_i's own implicit gradient, is
unbiased too, but differs from PyTorch's draw by draw, by tens of percent.)
"""

from ..backend import errstate, xp
from ..primitive import Primitive
from .names import names
from .predicates import WithoutDerivative
from .standard_gamma import digamma_one as _digamma
from .standard_gamma import gamma_draws


def _beta_grad_alpha_small(x, alpha, beta):
    """g for x near 0: a Taylor series in x (computed in x's dtype, as PyTorch's)."""
    dtype = x.dtype.type
    factor = _digamma(alpha) - _digamma(alpha + beta) - xp.log(x)
    numer = xp.ones_like(x)
    series = numer / alpha * (factor + 1 / alpha)
    for i in range(1, 11):
        numer = numer * ((dtype(i) - beta) * x / dtype(i))
        denom = alpha + dtype(i)
        series = series + numer / denom * (factor + 1 / denom)
    result = x * xp.power(1 - x, -beta) * series
    return xp.where(xp.isnan(result), dtype(0), result)


def _beta_grad_beta_small(x, alpha, beta):
    """The derivative in β for x near 0, a Taylor series (g near x = 1 is minus this at 1 - x, α and β swapped)."""
    dtype = x.dtype.type
    factor = _digamma(alpha + beta) - _digamma(beta)
    numer, betas, dbetas = xp.ones_like(x), xp.ones_like(x), xp.zeros_like(x)
    series = factor / alpha
    for i in range(1, 9):
        numer = numer * (-x / dtype(i))
        dbetas = dbetas * (beta - dtype(i)) + betas
        betas = betas * (beta - dtype(i))
        series = series + numer / (alpha + dtype(i)) * (dbetas + factor * betas)
    result = -xp.power(1 - x, 1 - beta) * series
    return xp.where(xp.isnan(result), dtype(0), result)


def _beta_grad_alpha_mid(x, alpha, beta):
    """g when α and β both exceed 6: Rice's saddle-point expansion (float64), a polynomial near the mean."""
    total = alpha + beta
    mean = alpha / total
    std = xp.sqrt(alpha * beta / (total + 1)) / total
    poly = 47 * x * (beta * beta) * (beta * beta) + alpha * (
        (43 + 20 * (16 + 27 * beta) * x) * (beta * beta) * beta + alpha * (
            3 * (59 + 180 * beta - 90 * x) * (beta * beta) + alpha * (
                (453 + 1620 * beta * (1 - x) - 455 * x) * beta + alpha * (
                    8 * (1 - x) * (135 * beta - 11)))))
    prefactor_num = (1 + 12 * alpha) * (1 + 12 * beta) / (total * total)
    prefactor_den = 12960 * alpha * alpha * alpha * beta * beta * (1 + 12 * total)
    near_mean = prefactor_num / (1 - x) * poly / prefactor_den

    prefactor = -x / xp.sqrt(2 * alpha * beta / total)
    stirling = ((1 + 1 / (12 * alpha) + 1 / (288 * alpha * alpha)) * (1 + 1 / (12 * beta) + 1 / (288 * beta * beta))
                / (1 + 1 / (12 * total) + 1 / (288 * total * total)))
    term1_num = 2 * (alpha * alpha) * (x - 1) + alpha * beta * (x - 1) - x * (beta * beta)
    axbx = alpha * (x - 1) + beta * x
    term1 = term1_num / (xp.sqrt(2 * alpha / beta) * xp.power(total, 1.5) * axbx * axbx)
    term2 = 0.5 * xp.log(alpha / (total * x))
    term3 = xp.sqrt(8 * alpha * beta / total) / (beta * x + alpha * (x - 1))
    term4 = xp.power(beta * xp.log(beta / (total * (1 - x))) + alpha * xp.log(alpha / (total * x)), -1.5)
    saddle = stirling * prefactor * (term1 + term2 * (term3 + xp.where(x < mean, term4, -term4)))
    return xp.where((mean - 0.1 * std <= x) & (x <= mean + 0.1 * std), near_mean, saddle)


# PyTorch's fitted coefficients: [numerator, denominator][power of u][power of a][power of b]
_RATIONAL = xp.asarray([
    [[[1.003668233, -0.01061107488, -0.0657888334, 0.01201642863],
      [0.6336835991, -0.3557432599, 0.05486251648, -0.001465281033],
      [-0.03276231906, 0.004474107445, 0.002429354597, -0.0001557569013]],
     [[0.221950385, -0.3187676331, 0.01799915743, 0.01074823814],
      [-0.2951249643, 0.06219954479, 0.01535556598, 0.001550077057],
      [0.02155310298, 0.004170831599, 0.001292462449, 6.976601077e-05]],
     [[-0.05980841433, 0.008441916499, 0.01085618172, 0.002319392565],
      [0.02911413504, 0.01400243777, -0.002721828457, 0.000751041181],
      [0.005900514878, -0.001936558688, -9.495446725e-06, 5.385558597e-05]]],
    [[[1, -0.02924021934, -0.04438342661, 0.007285809825],
      [0.6357567472, -0.3473456711, 0.05454656494, -0.002407477521],
      [-0.03301322327, 0.004845219414, 0.00231480583, -0.0002307248149]],
     [[0.5925320577, -0.1757678135, 0.01505928619, 0.000564515273],
      [0.1014815858, -0.06589186703, 0.01272886114, -0.0007316646956],
      [-0.007258481865, 0.001096195486, 0.0003934994223, -4.12701925e-05]],
     [[0.06469649321, -0.0236701437, 0.002902096474, -5.896963079e-05],
      [0.001925008108, -0.002869809258, 0.0008000589141, -6.063713228e-05],
      [-0.0003477407336, 6.959756487e-05, 1.097287507e-05, -1.650964693e-06]]],
], dtype=xp.float64)


def _rational(x, alpha, total, dtype):
    """g elsewhere: PyTorch's rational correction p/q to x (ψ(α₀) - ψ(α)) / β, in float64 (the ψ in ``dtype``)."""
    u = xp.log(x)
    a = xp.log(alpha) - u
    b = xp.log(total) - a
    p, q = xp.zeros_like(x), xp.zeros_like(x)
    for i in range(3):
        for j in range(3):
            ua = u ** i * a ** j
            num, den = _RATIONAL[0, i, j], _RATIONAL[1, i, j]
            p = p + ua * (num[0] + b * (num[1] + b * (num[2] + b * num[3])))
            q = q + ua * (den[0] + b * (den[1] + b * (den[2] + b * den[3])))
    approx = x * (_digamma(total.astype(dtype)).astype(xp.float64) - _digamma(alpha.astype(dtype))) / (total - alpha)
    return p / q * approx


def dirichlet_grad(x, alpha, total):
    """g = -(∂F/∂α)/f/(1-x) for draws x of Beta(α, total - α), arrays of one shape and dtype, as PyTorch's
    dirichlet_grad_one: each element by the first branch whose condition holds (module docstring)."""
    shape = xp.broadcast_shapes(x.shape, alpha.shape, total.shape)
    dtype = xp.result_type(x, alpha, total)
    # (1-d: a 0-d array takes no masked assignment)
    x, alpha, total = (xp.broadcast_to(v, shape).astype(dtype).reshape(-1) for v in (x, alpha, total))
    beta = total - alpha
    boundary = total * x * (1 - x)
    near_zero = (x <= 0.5) & (boundary < 2.5)
    near_one = ~near_zero & (x >= 0.5) & (boundary < 0.75)
    large = ~near_zero & ~near_one & (alpha > 6) & (beta > 6)
    rest = ~(near_zero | near_one | large)
    result = xp.zeros(x.shape, dtype=dtype)
    x64, alpha64, total64 = (v.astype(xp.float64) for v in (x, alpha, total))
    with errstate(divide="ignore", invalid="ignore", over="ignore"):
        if near_zero.any():
            result[near_zero] = _beta_grad_alpha_small(x[near_zero], alpha[near_zero], beta[near_zero])
        if near_one.any():
            result[near_one] = -_beta_grad_beta_small(1 - x[near_one], beta[near_one], alpha[near_one])
        if large.any():
            result[large] = _beta_grad_alpha_mid(x64[large], alpha64[large], total64[large] - alpha64[large])
        if rest.any():
            result[rest] = _rational(x64[rest], alpha64[rest], total64[rest], dtype)
    return result.reshape(shape)


class DirichletDraw(Primitive):
    """x ~ Dirichlet(α) along the last dim, drawn as PyTorch's _sample_dirichlet (gammas in float64, at least
    the smallest normal; normalised, cast, and kept inside (0, 1)); dL/dα_j = g_j (dL/dx_j - Σ_i x_i dL/dx_i)
    with g = DirichletGrad (module docstring)."""

    saves_output = True
    pytorch_name = "_DirichletBackward"  # (PyTorch's is the Python Function torch.distributions.dirichlet._Dirichlet)

    def forward(self, alpha):
        gammas = gamma_draws(alpha.astype(xp.float64), self.generator)
        draws = (gammas / gammas.sum(-1, keepdims=True)).astype(alpha.dtype)
        info = xp.finfo(alpha.dtype)
        return xp.clip(draws, info.tiny, xp.nextafter(alpha.dtype.type(1), alpha.dtype.type(0)))

    def backward(self, grad, x, alpha):
        total = alpha.sum(-1, keepdim=True).expand(alpha.shape)
        return (DirichletGrad.apply(x, alpha, total) * (grad - (x * grad).sum(-1, keepdim=True)),)


class DirichletGrad(Primitive):
    """torch._dirichlet_grad(x, alpha, total): g for Beta(alpha, total - alpha) draws x. Its own derivative is
    not implemented (nor is PyTorch's), so a second backward through a Dirichlet draw says so."""

    def forward(self, x, alpha, total):
        return dirichlet_grad(x, alpha, total)

    def backward(self, grad, y, x, alpha, total):
        raise NotImplementedError("the derivative for '_dirichlet_grad' is not implemented.")


def dirichlet_draw(concentration, generator=None):
    """Draws of Dirichlet(concentration) along its last dim, differentiable with PyTorch's gradient."""
    return DirichletDraw.apply(concentration, generator=generator)


@names("_sample_dirichlet", method=False, functions=("_sample_dirichlet",))
def _sample_dirichlet(input, generator=None):  # noqa: A002  (torch's argument name)
    """torch._sample_dirichlet: draws of Dirichlet(input) along its last dim, as Dirichlet.rsample's (PyTorch's
    has no derivative, so a backward pass through it raises: differentiable draws are Dirichlet.rsample's)."""
    draws = DirichletDraw.apply(input.detach(), generator=generator)
    return WithoutDerivative.apply(input, values=draws._data, kernel="_sample_dirichlet")


@names("_dirichlet_grad", functions=("_dirichlet_grad",))
def _dirichlet_grad(x, alpha, total):
    """torch._dirichlet_grad: the scaled reparameterised gradient of Beta(alpha, total - alpha) draws x."""
    return DirichletGrad.apply(x, alpha, total)
