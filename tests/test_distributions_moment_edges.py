"""Distributions at the edges of their definitions, as PyTorch gives them: moments where they are
undefined and their gradients there (Bernoulli's mode at p = 1/2, StudentT's variance at ν = 2,
FisherSnedecor's mean and variance at d2 = 2 and 4, where a formula evaluated anyway divides 0 by 0 in
its gradient), LogNormal as a TransformedDistribution (its cdf at 0), and the KL of folded laws."""

import math

import numpy as np
import pytest

nan, inf = math.nan, math.inf


def f64(T, values):
    return T.tensor(values, dtype=T.float64, requires_grad=True)


def grads(T, value, inputs):
    """The gradients of value's sum (zeros for an input it does not use)."""
    found = T.autograd.grad(value.sum(), inputs, allow_unused=True)
    return [np.zeros(x.shape) if g is None else g.numpy() for g, x in zip(found, inputs)]


def test_bernoulli_mode_has_none_at_one_half(T):
    mode = T.distributions.Bernoulli(probs=T.tensor([0.2, 0.5, 0.7, 0.0, 1.0])).mode
    np.testing.assert_array_equal(mode.numpy(), [0.0, nan, 1.0, 0.0, 1.0])
    logits = T.distributions.Bernoulli(logits=T.tensor([-1.0, 0.0, 2.0], dtype=T.float64)).mode
    np.testing.assert_array_equal(logits.numpy(), [0.0, nan, 1.0])


def test_student_t_variance_takes_no_gradient_where_infinite_or_undefined(T):
    df, scale = f64(T, [0.5, 1.0, 1.5, 2.0, 3.0, 6.0]), f64(T, [1.0, 2.0, 0.5, 1.5, 2.0, 0.5])
    variance = T.distributions.StudentT(df, 0.0, scale).variance
    np.testing.assert_allclose(variance.detach().numpy(), [nan, nan, inf, inf, 12.0, 0.375])
    d_df, d_scale = grads(T, variance, [df, scale])
    # σ² ν/(ν - 2): ∂/∂ν = -2σ²/(ν - 2)², ∂/∂σ = 2σν/(ν - 2)
    np.testing.assert_allclose(d_df, [0, 0, 0, 0, -8.0, -0.03125])
    np.testing.assert_allclose(d_scale, [0, 0, 0, 0, 12.0, 1.5])
    np.testing.assert_allclose(grads(T, T.distributions.StudentT(df, 0.0, scale).stddev, [df])[0][:4], 0)


def test_fisher_snedecor_mean_and_variance_gradients_where_undefined(T):
    df1, df2 = f64(T, [4.0, 3.0, 5.0, 2.0, 6.0]), f64(T, [6.0, 2.0, 4.0, 3.0, 1.0])
    d = T.distributions.FisherSnedecor(df1, df2)
    np.testing.assert_allclose(d.mean.detach().numpy(), [1.5, nan, 2.0, 3.0, nan])
    # d2/(d2 - 2): ∂/∂d2 = -2/(d2 - 2)²; nothing reaches d2 where the mean is undefined
    np.testing.assert_allclose(T.autograd.grad(d.mean.sum(), df2)[0].numpy(), [-0.125, 0, -0.5, -2.0, 0])
    variance = d.variance
    np.testing.assert_allclose(variance.detach().numpy(), [4.5, nan, nan, nan, nan])
    d_df1, d_df2 = grads(T, variance, [df1, df2])
    # PyTorch reads d2 as NaN where the variance is undefined: d1's gradient is NaN there, d2's is 0
    np.testing.assert_allclose(d_df1, [-0.5625, nan, nan, nan, nan])
    np.testing.assert_allclose(d_df2, [-2.4375, 0, 0, 0, 0])


@pytest.mark.parametrize("name", ["mean", "mode", "variance"])
def test_moments_inside_their_domain_keep_their_gradients(T, name):
    df1, df2 = f64(T, [5.0, 8.0]), f64(T, [7.0, 12.0])
    value = getattr(T.distributions.FisherSnedecor(df1, df2), name)
    assert np.isfinite(np.concatenate(grads(T, value, [df1, df2]))).all()


def test_log_normal_is_a_transformed_normal(T):
    """PyTorch's LogNormal is a TransformedDistribution: its cdf checks ln x against the Normal's
    support (so F(0) = 0 where log_prob(0) is refused), and it has the transforms and KL that go with it."""
    D = T.distributions
    loc, scale = f64(T, [0.5, -1.0]), f64(T, [1.0, 0.5])
    d = D.LogNormal(loc, scale, validate_args=True)
    assert isinstance(d, D.TransformedDistribution) and isinstance(d.transforms[0], D.transforms.ExpTransform)
    x = T.tensor([0.0, 2.0], dtype=T.float64)
    cdf = d.cdf(x)
    expected = [0.0, 0.5 * (1 + math.erf((math.log(2.0) + 1.0) / 0.5 / math.sqrt(2)))]
    np.testing.assert_allclose(cdf.detach().numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError):
        d.log_prob(x)
    with pytest.raises(ValueError):  # ln(-1) is NaN: outside the Normal's support
        d.cdf(T.tensor([-1.0, 1.0], dtype=T.float64))
    standard = D.Normal(T.zeros(2, dtype=T.float64), 1.0)
    kl = D.kl_divergence(d, D.TransformedDistribution(standard, [D.transforms.ExpTransform()]))
    np.testing.assert_allclose(kl.detach().numpy(), D.kl_divergence(D.Normal(loc, scale), standard).detach().numpy())
    expanded = d.expand((3, 2))
    assert expanded.batch_shape == (3, 2) and expanded.loc.shape == (3, 2)
    np.testing.assert_allclose(expanded.mean.detach().numpy()[0], np.exp([1.0, -0.875]))


def test_half_cauchy_divergence_is_the_cauchy_bases(T):
    """PyTorch's HalfNormal and HalfCauchy are transformed by the same |x|: their KL is the bases' KL."""
    D = T.distributions
    p, q = D.HalfCauchy(T.tensor([1.0, 3.0], dtype=T.float64)), D.HalfCauchy(T.tensor([2.0], dtype=T.float64))
    # ln((γp + γq)² / (4 γp γq))
    np.testing.assert_allclose(D.kl_divergence(p, q).numpy(), np.log(np.array([9.0, 25.0]) / np.array([8.0, 24.0])))
    with pytest.raises(NotImplementedError):
        D.kl_divergence(D.HalfNormal(T.tensor([1.0])), D.HalfCauchy(T.tensor([1.0])))


@pytest.mark.parametrize("name", ["HalfNormal", "HalfCauchy"])
def test_half_laws_are_transformed_by_abs(T, name):
    """PyTorch's HalfNormal and HalfCauchy are TransformedDistributions of their base by |x|: the transform is
    there, expand goes through it, and the KL against the same transform of a Normal is the bases' KL."""
    D = T.distributions
    scale = T.tensor([1.0, 2.0], dtype=T.float64)
    d = getattr(D, name)(scale)
    assert isinstance(d, D.TransformedDistribution) and isinstance(d.transforms[0], D.transforms.AbsTransform)
    assert d.base_dist.scale.tolist() == [1.0, 2.0] and d.scale.tolist() == [1.0, 2.0]
    expanded = d.expand((3, 2))
    assert tuple(expanded.batch_shape) == (3, 2) and tuple(expanded.sample().shape) == (3, 2)
    if name == "HalfNormal":
        other = D.TransformedDistribution(D.Normal(T.zeros(2, dtype=T.float64), T.tensor([1.5, 1.0], dtype=T.float64)),
                                          D.AbsTransform())
        # KL(N(0, a) || N(0, b)) = ln(b/a) + a²/(2b²) - 1/2
        a, b = np.array([1.0, 2.0]), np.array([1.5, 1.0])
        np.testing.assert_allclose(D.kl_divergence(d, other).numpy(), np.log(b / a) + a**2 / (2 * b**2) - 0.5)
