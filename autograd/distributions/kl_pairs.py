"""Closed-form KL(p ‖ q) = E_p[ln p(x) - ln q(x)] between the families of this package, the pairs
PyTorch registers. Each formula is E_p[ln p] = -H(p) minus E_p[ln q], with E_p of the sufficient
statistics of q in closed form (E[x], E[x²], E[ln x], E[e^(-x/β)], ...). Where q's support misses
part of p's, the divergence is +∞.
"""

import math

import numpy as np

from .. import factories
from ..differentiate import grad
from ..ops.elementwise import where
from ..ops.pointwise_pairs import xlogy
from .bernoulli import Bernoulli
from .beta import Beta
from .binomial import Binomial
from .cauchy import Cauchy
from .continuous_bernoulli import ContinuousBernoulli
from .dirichlet import Dirichlet
from .exp_family import ExponentialFamily, sum_beyond_batch
from .exponential import Exponential
from .folded import Folded
from .gamma import Gamma
from .geometric import Geometric
from .gumbel import EULER_GAMMA, Gumbel
from .independent import Independent, sum_rightmost
from .kl import _kl_categorical_categorical, kl_divergence, register_kl
from .laplace import Laplace
from .lowrank_multivariate_normal import LowRankMultivariateNormal, lowrank_logdet, lowrank_mahalanobis
from .multivariate_normal import MultivariateNormal, batch_mahalanobis, solve_lower
from .normal import Normal
from .one_hot_categorical import OneHotCategorical
from .pareto import Pareto
from .poisson import Poisson
from .transformed_distribution import TransformedDistribution
from .uniform import Uniform

INF = float("inf")


def _infinite_like(tensor):
    return factories.full(tensor.shape, INF, dtype=tensor.dtype)


# -- two of a kind --------------------------------------------------------------------------------

@register_kl(Beta, Beta)
def _kl_beta_beta(p, q):
    """ln B(a_q, b_q) - ln B(a_p, b_p) + (a_p - a_q) ψ(a_p) + (b_p - b_q) ψ(b_p) + (s_q - s_p) ψ(s_p)"""
    a_p, b_p, a_q, b_q = p.concentration1, p.concentration0, q.concentration1, q.concentration0
    s_p, s_q = a_p + b_p, a_q + b_q
    return (a_q.lgamma() + b_q.lgamma() + s_p.lgamma() - a_p.lgamma() - b_p.lgamma() - s_q.lgamma()
            + (a_p - a_q) * a_p.digamma() + (b_p - b_q) * b_p.digamma() + (s_q - s_p) * s_p.digamma())


@register_kl(Binomial, Binomial)
def _kl_binomial_binomial(p, q):
    """n (p (l_p - l_q) + ln(1 - p) - ln(1 - q)); infinite where n_p > n_q (q cannot reach n_p)."""
    if bool((p.total_count < q.total_count).any()):
        raise NotImplementedError("KL between Binomials where q.total_count > p.total_count is not implemented")
    kl = p.total_count * (p.probs * (p.logits - q.logits) + (-p.probs).log1p() - (-q.probs).log1p())
    return where(p.total_count > q.total_count, INF, kl)


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet_dirichlet(p, q):
    """ln Γ(α₀) - ln Γ(β₀) - Σ (ln Γ(α_i) - ln Γ(β_i)) + Σ (α_i - β_i)(ψ(α_i) - ψ(α₀))"""
    a, b = p.concentration, q.concentration
    a0, b0 = a.sum(-1), b.sum(-1)
    return (a0.lgamma() - b0.lgamma() - (a.lgamma() - b.lgamma()).sum(-1)
            + ((a - b) * (a.digamma() - a0.digamma().unsqueeze(-1))).sum(-1))


@register_kl(Exponential, Exponential)
def _kl_exponential_exponential(p, q):
    """λ_q/λ_p - ln(λ_q/λ_p) - 1"""
    ratio = q.rate / p.rate
    return ratio - ratio.log() - 1


@register_kl(Gamma, Gamma)
def _kl_gamma_gamma(p, q):
    """α_q ln(β_p/β_q) + ln Γ(α_q) - ln Γ(α_p) + (α_p - α_q) ψ(α_p) + (β_q - β_p) α_p/β_p"""
    return (q.concentration * (p.rate / q.rate).log() + q.concentration.lgamma() - p.concentration.lgamma()
            + (p.concentration - q.concentration) * p.concentration.digamma()
            + (q.rate - p.rate) * (p.concentration / p.rate))


@register_kl(Gumbel, Gumbel)
def _kl_gumbel_gumbel(p, q):
    """-ln(β_p/β_q) + (μ_p - μ_q)/β_q + γ β_p/β_q + e^((μ_q - μ_p)/β_q) Γ(1 + β_p/β_q) - 1 - γ"""
    ratio = p.scale / q.scale
    shift = (p.loc - q.loc) / q.scale
    return -ratio.log() + shift + ratio * EULER_GAMMA + ((1 + ratio).lgamma() - shift).exp() - (1 + EULER_GAMMA)


@register_kl(Geometric, Geometric)
def _kl_geometric_geometric(p, q):
    """-H(p) - E[k] ln(1 - q) - ln q, with E[k] + 1 = 1/p"""
    return -p.entropy() - (-q.probs).log1p() / p.probs - q.logits


@register_kl(Folded, Folded)
def _kl_folded_folded(p, q):
    """Both folded at 0 by |x| (PyTorch's AbsTransform): the divergence of the symmetric bases, as
    PyTorch's TransformedDistribution pair gives it (HalfNormal and HalfCauchy; none across the two)."""
    return kl_divergence(p.base_dist, q.base_dist)


@register_kl(Laplace, Laplace)
def _kl_laplace_laplace(p, q):
    """-ln(b_p/b_q) + |μ_p - μ_q|/b_q + (b_p/b_q) e^(-|μ_p - μ_q|/b_p) - 1"""
    ratio = p.scale / q.scale
    distance = (p.loc - q.loc).abs()
    return -ratio.log() + distance / q.scale + ratio * (-distance / p.scale).exp() - 1


@register_kl(OneHotCategorical, OneHotCategorical)
def _kl_onehotcategorical_onehotcategorical(p, q):
    return _kl_categorical_categorical(p._categorical, q._categorical)


@register_kl(Poisson, Poisson)
def _kl_poisson_poisson(p, q):
    """λ_p (ln λ_p - ln λ_q) - (λ_p - λ_q)"""
    return p.rate * (p.rate.log() - q.rate.log()) - (p.rate - q.rate)


@register_kl(Uniform, Uniform)
def _kl_uniform_uniform(p, q):
    """ln((h_q - l_q)/(h_p - l_p)), infinite unless [l_p, h_p] ⊂ [l_q, h_q]"""
    result = ((q.high - q.low) / (p.high - p.low)).log()
    return where((q.low > p.low) | (q.high < p.high), INF, result)


@register_kl(Cauchy, Cauchy)
def _kl_cauchy_cauchy(p, q):
    """ln(((γ_p + γ_q)² + (x_p - x_q)²) / (4 γ_p γ_q))   (Chyzak and Nielsen, 2019)"""
    return ((p.scale + q.scale).pow(2) + (p.loc - q.loc).pow(2)).log() - (4 * p.scale * q.scale).log()


@register_kl(ExponentialFamily, ExponentialFamily)
def _kl_expfamily_expfamily(p, q):
    """The Bregman divergence of the log-normaliser F between the natural parameters:
    F(θ_q) - F(θ_p) - ⟨θ_q - θ_p, ∇F(θ_p)⟩ (∇F by autograd; θ_p detached, as PyTorch's)."""
    if type(p) is not type(q):
        raise NotImplementedError("The cross KL-divergence between different exponential families cannot be "
                                  "computed using Bregman divergences")
    p_params = [param.detach().requires_grad_() for param in p._natural_params]
    q_params = q._natural_params
    log_normalizer = p._log_normalizer(*p_params)
    gradients = grad(log_normalizer.sum(), p_params, create_graph=True)
    result = q._log_normalizer(*q_params) - log_normalizer
    batch_ndim = len(np.broadcast_shapes(tuple(p.batch_shape), tuple(q.batch_shape)))
    for p_param, q_param, gradient in zip(p_params, q_params, gradients):
        result = result - sum_beyond_batch((q_param - p_param) * gradient, batch_ndim)
    return result


@register_kl(TransformedDistribution, TransformedDistribution)
def _kl_transformed_transformed(p, q):
    """The same bijection applied to both leaves the divergence unchanged: KL of the bases."""
    if p.transforms != q.transforms:
        raise NotImplementedError
    if p.event_shape != q.event_shape:
        raise NotImplementedError
    return kl_divergence(p.base_dist, q.base_dist)


@register_kl(Independent, Independent)
def _kl_independent_independent(p, q):
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError
    return sum_rightmost(kl_divergence(p.base_dist, q.base_dist), p.reinterpreted_batch_ndims)


# -- across families --------------------------------------------------------------------------------

@register_kl(Bernoulli, Poisson)
def _kl_bernoulli_poisson(p, q):
    return -p.entropy() - (p.probs * q.rate.log() - q.rate)


def _beta_mean(p):
    return p.concentration1 / (p.concentration1 + p.concentration0)


@register_kl(Beta, Exponential)
def _kl_beta_exponential(p, q):
    return -p.entropy() - q.rate.log() + q.rate * _beta_mean(p)


@register_kl(Beta, Gamma)
def _kl_beta_gamma(p, q):
    """E[ln x] = ψ(a) - ψ(a + b) under Beta(a, b)"""
    expected_log = p.concentration1.digamma() - (p.concentration1 + p.concentration0).digamma()
    return (-p.entropy() + q.concentration.lgamma() - q.concentration * q.rate.log()
            - (q.concentration - 1) * expected_log + q.rate * _beta_mean(p))


@register_kl(Beta, Normal)
def _kl_beta_normal(p, q):
    mean = _beta_mean(p)
    second_moment = mean * (1 - mean) / (p.concentration1 + p.concentration0 + 1) + mean.pow(2)
    variance = q.scale.pow(2)
    return (-p.entropy() + 0.5 * (variance * 2 * math.pi).log()
            + (0.5 * second_moment - q.loc * mean + 0.5 * q.loc.pow(2)) / variance)


@register_kl(Beta, Uniform)
def _kl_beta_uniform(p, q):
    result = -p.entropy() + (q.high - q.low).log()
    return where((q.low > 0) | (q.high < 1), INF, result)


@register_kl(Exponential, Beta)
@register_kl(Exponential, Uniform)
def _kl_exponential_infinity(p, q):
    return _infinite_like(p.rate)


@register_kl(Exponential, Gamma)
def _kl_exponential_gamma(p, q):
    ratio = q.rate / p.rate
    return (-q.concentration * ratio.log() + ratio + q.concentration.lgamma() + q.concentration * EULER_GAMMA
            - (1 + EULER_GAMMA))


@register_kl(Exponential, Gumbel)
def _kl_exponential_gumbel(p, q):
    product = p.rate * q.scale
    ratio = q.loc / q.scale
    return product.log() - 1 - ratio + ratio.exp() * product / (product + 1) + product.reciprocal()


@register_kl(Exponential, Normal)
def _kl_exponential_normal(p, q):
    variance = q.scale.pow(2)
    rate_squared = p.rate.pow(2)
    return (0.5 * (rate_squared * variance * 2 * math.pi).log() - 1
            + (rate_squared.reciprocal() - q.loc / p.rate + 0.5 * q.loc.pow(2)) / variance)


@register_kl(Gamma, Beta)
@register_kl(Gamma, Uniform)
def _kl_gamma_infinity(p, q):
    return _infinite_like(p.concentration)


@register_kl(Gamma, Exponential)
def _kl_gamma_exponential(p, q):
    return -p.entropy() - q.rate.log() + q.rate * p.concentration / p.rate


@register_kl(Gamma, Gumbel)
def _kl_gamma_gumbel(p, q):
    """E[e^(-x/β)] = (1 + 1/(rate β))^(-α) under Gamma(α, rate)"""
    product = p.rate * q.scale
    ratio = q.loc / q.scale
    a = p.concentration
    return ((a - 1) * a.digamma() - a.lgamma() - a + product.log() + a / product
            + ratio.exp() * (1 + product.reciprocal()).pow(-a) - ratio)


@register_kl(Gamma, Normal)
def _kl_gamma_normal(p, q):
    variance = q.scale.pow(2)
    rate_squared = p.rate.pow(2)
    a = p.concentration
    return (0.5 * (rate_squared * variance * 2 * math.pi).log() - a - a.lgamma() + (a - 1) * a.digamma()
            + (0.5 * (a.pow(2) + a) / rate_squared - q.loc * a / p.rate + 0.5 * q.loc.pow(2)) / variance)


@register_kl(Gumbel, Beta)
@register_kl(Gumbel, Exponential)
@register_kl(Gumbel, Gamma)
@register_kl(Gumbel, Uniform)
@register_kl(Laplace, Beta)
@register_kl(Laplace, Exponential)
@register_kl(Laplace, Gamma)
@register_kl(Laplace, Uniform)
@register_kl(Normal, Beta)
@register_kl(Normal, Exponential)
@register_kl(Normal, Gamma)
@register_kl(Normal, Uniform)
def _kl_unbounded_infinity(p, q):
    return _infinite_like(p.loc)


@register_kl(Gumbel, Normal)
def _kl_gumbel_normal(p, q):
    ratio = p.scale / q.scale
    return (-(ratio / math.sqrt(2 * math.pi)).log() + (math.pi * ratio * 0.5).pow(2) / 3
            + ((p.loc + p.scale * EULER_GAMMA - q.loc) / q.scale).pow(2) * 0.5 - (EULER_GAMMA + 1))


@register_kl(Laplace, Normal)
def _kl_laplace_normal(p, q):
    variance = q.scale.pow(2)
    ratio = p.scale.pow(2) / variance
    return (-0.5 * (2 * ratio / math.pi).log() + ratio
            + (0.5 * p.loc.pow(2) - p.loc * q.loc + 0.5 * q.loc.pow(2)) / variance - 1)


@register_kl(Normal, Gumbel)
def _kl_normal_gumbel(p, q):
    mean_ratio = p.loc / q.scale
    variance_ratio = (p.scale / q.scale).pow(2)
    loc_ratio = q.loc / q.scale
    return (-0.5 * variance_ratio.log() + mean_ratio - loc_ratio
            + (-mean_ratio + 0.5 * variance_ratio + loc_ratio).exp() - 0.5 * (1 + math.log(2 * math.pi)))


@register_kl(Normal, Laplace)
def _kl_normal_laplace(p, q):
    """E|x - μ_q| under N(μ_p, σ_p²) is σ_p √(2/π) e^(-d²/2σ_p²) + d erf(d/(σ_p √2)), d = μ_p - μ_q"""
    difference = p.loc - q.loc
    standardised = difference / p.scale
    mean_distance = (math.sqrt(2 / math.pi) * p.scale * (-0.5 * standardised.pow(2)).exp()
                     + difference * (math.sqrt(0.5) * standardised).erf())
    return -(p.scale / q.scale).log() + mean_distance / q.scale - 0.5 * (1 + math.log(0.5 * math.pi))


@register_kl(Poisson, Bernoulli)
@register_kl(Poisson, Binomial)
def _kl_poisson_infinity(p, q):
    return _infinite_like(p.rate)


def _x_log_x(x):
    return xlogy(x, x)


@register_kl(Uniform, Beta)
def _kl_uniform_beta(p, q):
    width = p.high - p.low
    result = ((q.concentration0 - 1) * (_x_log_x(1 - p.high) - _x_log_x(1 - p.low) + width) / width
              + q.concentration1.lgamma() + q.concentration0.lgamma()
              - (q.concentration1 + q.concentration0).lgamma() - width.log()
              - (q.concentration1 - 1) * (_x_log_x(p.high) - _x_log_x(p.low) - width) / width)
    return where((p.high > 1) | (p.low < 0), INF, result)


@register_kl(Uniform, Exponential)
def _kl_uniform_exponential(p, q):
    result = q.rate * (p.high + p.low) / 2 - ((p.high - p.low) * q.rate).log()
    return where(p.low < 0, INF, result)


@register_kl(Uniform, Gamma)
def _kl_uniform_gamma(p, q):
    width = p.high - p.low
    result = (-width.log() + q.concentration.lgamma() - q.concentration * q.rate.log()
              + (1 - q.concentration) * (_x_log_x(p.high) - _x_log_x(p.low) - width) / width
              + q.rate * (p.high + p.low) / 2)
    return where(p.low < 0, INF, result)


@register_kl(Uniform, Gumbel)
def _kl_uniform_gumbel(p, q):
    ratio = q.scale / (p.high - p.low)
    high = (p.high - q.loc) / q.scale
    low = (p.low - q.loc) / q.scale
    return ratio.log() + 0.5 * (high + low) - ratio * ((-high).exp() - (-low).exp())


@register_kl(Uniform, Normal)
def _kl_uniform_normal(p, q):
    width = p.high - p.low
    return ((math.sqrt(math.pi * 2) * q.scale / width).log()
            + 0.5 * (width.pow(2) / 12 + ((p.high + p.low - 2 * q.loc) / 2).pow(2)) / q.scale.pow(2))


# -- Gaussians over vectors ---------------------------------------------------------------------------
# KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q)) = ½ (ln det Σ_q - ln det Σ_p + tr(Σ_q⁻¹ Σ_p) + (μ_q - μ_p)ᵀ Σ_q⁻¹ (μ_q - μ_p) - n),
# with tr(Σ_q⁻¹ Σ_p) = ‖L_q⁻¹ F_p‖²_F for any factor F_p F_pᵀ = Σ_p (for a low-rank Σ_p = W Wᵀ + D,
# the columns of W and of √D together), and the Woodbury form of Σ_q⁻¹ for a low-rank q.

def _trace_xxt(x):
    """tr(X Xᵀ) = Σ x_ij², over the last two dims."""
    return x.pow(2).sum(-1).sum(-1)


def _same_events(p, q, what):
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL-divergence between two {what} with different event shapes cannot be computed")


def _broadcast_batch(*tensors_and_trailing):
    """Each (tensor, trailing dims) expanded to the batch shape all of them broadcast to."""
    shape = np.broadcast_shapes(*(tuple(t.shape[:t.ndim - k]) for t, k in tensors_and_trailing))
    return [t.expand(*shape, *t.shape[t.ndim - k:]) for t, k in tensors_and_trailing]


@register_kl(MultivariateNormal, MultivariateNormal)
def _kl_multivariatenormal_multivariatenormal(p, q):
    _same_events(p, q, "Multivariate Normals")
    Lq, Lp = _broadcast_batch((q._unbroadcasted_scale_tril, 2), (p._unbroadcasted_scale_tril, 2))
    half_log_det = (q._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                    - p._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    trace = _trace_xxt(solve_lower(Lq, Lp))
    mahalanobis = batch_mahalanobis(q._unbroadcasted_scale_tril, q.loc - p.loc)
    return half_log_det + 0.5 * (trace + mahalanobis - p.event_shape[0])


@register_kl(LowRankMultivariateNormal, LowRankMultivariateNormal)
def _kl_lowrank_lowrank(p, q):
    _same_events(p, q, "Low Rank Multivariate Normals")
    Wp, Dp, Wq, Dq = p._unbroadcasted_cov_factor, p._unbroadcasted_cov_diag, q._unbroadcasted_cov_factor, \
        q._unbroadcasted_cov_diag
    log_det = lowrank_logdet(Wq, Dq, q._capacitance_tril) - lowrank_logdet(Wp, Dp, p._capacitance_tril)
    mahalanobis = lowrank_mahalanobis(Wq, Dq, q.loc - p.loc, q._capacitance_tril)
    # tr(Σ_q⁻¹ Σ_p) with Σ_q⁻¹ = D_q⁻¹ - Aᵀ A, A = K_q⁻¹ W_qᵀ D_q⁻¹, Σ_p = W_p W_pᵀ + D_p
    A = solve_lower(q._capacitance_tril, Wq.mT / Dq.unsqueeze(-2))
    trace = ((Dp / Dq).sum(-1) + _trace_xxt(Wp * Dq.rsqrt().unsqueeze(-1))
             - _trace_xxt(A * Dp.sqrt().unsqueeze(-2)) - _trace_xxt(A @ Wp))
    return 0.5 * (log_det + trace + mahalanobis - p.event_shape[0])


@register_kl(MultivariateNormal, LowRankMultivariateNormal)
def _kl_multivariatenormal_lowrank(p, q):
    _same_events(p, q, "(Low Rank) Multivariate Normals")
    Wq, Dq, Lp = q._unbroadcasted_cov_factor, q._unbroadcasted_cov_diag, p._unbroadcasted_scale_tril
    log_det = lowrank_logdet(Wq, Dq, q._capacitance_tril) - 2 * Lp.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    mahalanobis = lowrank_mahalanobis(Wq, Dq, q.loc - p.loc, q._capacitance_tril)
    A = solve_lower(q._capacitance_tril, Wq.mT / Dq.unsqueeze(-2))
    trace = _trace_xxt(Lp * Dq.rsqrt().unsqueeze(-1)) - _trace_xxt(A @ Lp)
    return 0.5 * (log_det + trace + mahalanobis - p.event_shape[0])


@register_kl(LowRankMultivariateNormal, MultivariateNormal)
def _kl_lowrank_multivariatenormal(p, q):
    _same_events(p, q, "(Low Rank) Multivariate Normals")
    Wp, Dp, Lq = p._unbroadcasted_cov_factor, p._unbroadcasted_cov_diag, q._unbroadcasted_scale_tril
    log_det = 2 * Lq.diagonal(dim1=-2, dim2=-1).log().sum(-1) - lowrank_logdet(Wp, Dp, p._capacitance_tril)
    mahalanobis = batch_mahalanobis(Lq, q.loc - p.loc)
    Lq_for_W, Wp = _broadcast_batch((Lq, 2), (Wp, 2))
    Lq_for_D, root_Dp = _broadcast_batch((Lq, 2), (Dp.sqrt().diag_embed(), 2))
    trace = _trace_xxt(solve_lower(Lq_for_W, Wp)) + _trace_xxt(solve_lower(Lq_for_D, root_Dp))
    return 0.5 * (log_det + trace + mahalanobis - p.event_shape[0])



# -- Pareto ---------------------------------------------------------------------------------------------

@register_kl(Pareto, Pareto)
def _kl_pareto_pareto(p, q):
    """α_q ln(m_p/m_q) - ln(α_q/α_p) + α_q/α_p - 1; infinite where p reaches below q's minimum m_q"""
    ratio = q.alpha / p.alpha
    result = q.alpha * (p.scale / q.scale).log() - ratio.log() + ratio - 1
    return where(p.scale < q.scale, INF, result)


@register_kl(Pareto, Exponential)
def _kl_pareto_exponential(p, q):
    product = p.scale * q.rate
    result = (p.alpha / product).log() - p.alpha.reciprocal() + p.alpha * product / (p.alpha - 1) - 1
    return where(p.alpha <= 1, INF, result)


@register_kl(Pareto, Gamma)
def _kl_pareto_gamma(p, q):
    """E[ln x] = ln m + 1/α under Pareto(m, α)"""
    expected_log = p.scale.log() + p.alpha.reciprocal()
    result = (p.alpha.log() - expected_log + q.concentration.lgamma() - q.concentration * q.rate.log()
              + (1 - q.concentration) * expected_log + q.rate * p.alpha * p.scale / (p.alpha - 1) - 1)
    return where(p.alpha <= 1, INF, result)


@register_kl(Pareto, Normal)
def _kl_pareto_normal(p, q):
    twice_variance = 2 * q.scale.pow(2)
    common = p.scale / (p.alpha - 1)
    result = ((math.sqrt(2 * math.pi) * q.scale * p.alpha / p.scale).log() - p.alpha.reciprocal()
              + (p.alpha * common.pow(2) / (p.alpha - 2) + (p.alpha * common - q.loc).pow(2)) / twice_variance - 1)
    return where(p.alpha <= 2, INF, result)


@register_kl(Pareto, Beta)
@register_kl(Pareto, Uniform)
def _kl_pareto_infinity(p, q):
    return _infinite_like(p.scale)


@register_kl(Beta, Pareto)
@register_kl(Exponential, Pareto)
@register_kl(Gamma, Pareto)
@register_kl(Gumbel, Pareto)
@register_kl(Laplace, Pareto)
@register_kl(Normal, Pareto)
def _kl_into_pareto_infinity(p, q):  # q is 0 below its minimum, where p has mass
    return _infinite_like(p.mean)


@register_kl(Uniform, Pareto)
def _kl_uniform_pareto(p, q):
    width = p.high - p.low
    result = ((_x_log_x(p.high) - _x_log_x(p.low) - width) / width * (q.alpha + 1)
              - (q.alpha * q.scale.pow(q.alpha) * width).log())
    return where(p.low < q.scale, INF, result)



# -- ContinuousBernoulli: ln q(x) = x l_q - softplus(l_q) + ln C_q = x l_q + ln(1 - q) + ln C_q -------------

@register_kl(ContinuousBernoulli, ContinuousBernoulli)
def _kl_continuous_bernoulli_continuous_bernoulli(p, q):
    return (p.mean * (p.logits - q.logits) + p._cont_bern_log_norm() + (-p.probs).log1p()
            - q._cont_bern_log_norm() - (-q.probs).log1p())


def _cross_entropy_continuous_bernoulli(p, q):
    """-E_p[ln q(x)] for q continuous Bernoulli (only E_p[x] enters)."""
    return -p.mean * q.logits - (-q.probs).log1p() - q._cont_bern_log_norm()


@register_kl(Beta, ContinuousBernoulli)
def _kl_beta_continuous_bernoulli(p, q):
    return -p.entropy() + _cross_entropy_continuous_bernoulli(p, q)


@register_kl(Uniform, ContinuousBernoulli)
def _kl_uniform_continuous_bernoulli(p, q):
    """Infinite where [low, high] leaves [0, 1]. (PyTorch's also where it touches 0 or 1, where q's
    density is positive: a wart; this is finite there.)"""
    result = -p.entropy() + _cross_entropy_continuous_bernoulli(p, q)
    return where((p.high > 1) | (p.low < 0), INF, result)


@register_kl(ContinuousBernoulli, Exponential)
def _kl_continuous_bernoulli_exponential(p, q):
    return -p.entropy() - q.rate.log() + q.rate * p.mean


@register_kl(ContinuousBernoulli, Normal)
def _kl_continuous_bernoulli_normal(p, q):
    return (-p.entropy() + 0.5 * (math.log(2.0 * math.pi) + (q.loc / q.scale).pow(2)) + q.scale.log()
            + (p.variance + p.mean.pow(2) - 2.0 * q.loc * p.mean) / (2.0 * q.scale.pow(2)))


@register_kl(ContinuousBernoulli, Uniform)
def _kl_continuous_bernoulli_uniform(p, q):
    """Infinite unless [0, 1] ⊂ [low, high]. (PyTorch's is infinite also when low = 0 or high = 1,
    where q covers p: a wart; this is finite there.)"""
    result = -p.entropy() + (q.high - q.low).log()
    return where((q.low > 0) | (q.high < 1), INF, result)


@register_kl(ContinuousBernoulli, Pareto)
def _kl_continuous_bernoulli_infinity(p, q):
    return _infinite_like(p.probs)


@register_kl(Exponential, ContinuousBernoulli)
@register_kl(Gamma, ContinuousBernoulli)
@register_kl(Gumbel, ContinuousBernoulli)
@register_kl(Laplace, ContinuousBernoulli)
@register_kl(Normal, ContinuousBernoulli)
@register_kl(Pareto, ContinuousBernoulli)
def _kl_into_continuous_bernoulli_infinity(p, q):  # p has mass outside [0, 1]
    return _infinite_like(p.mean)
