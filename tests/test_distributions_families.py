"""The families of autograd.distributions without torch: identities between them, densities that
integrate (sum) to 1 with the stated mean, variance and entropy, cdf/icdf inverse to each other,
sample moments within a few standard errors (fixed seeds), expand, and PyTorch's argument checks."""

import math
import re

import numpy as np
import pytest

import autograd
from autograd import distributions as D


def f64(values, requires_grad=False):
    return autograd.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def close(a, b, rtol=1e-12, atol=1e-14):
    a = a.detach().numpy() if hasattr(a, "detach") else a
    b = b.detach().numpy() if hasattr(b, "detach") else b
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_identities_between_families():
    x = f64([0.1, 0.7, 2.0, 5.5])
    close(D.Gamma(f64(1.0), f64(2.5)).log_prob(x), D.Exponential(f64(2.5)).log_prob(x))
    close(D.Gamma(f64(1.0), f64(2.5)).cdf(x), D.Exponential(f64(2.5)).cdf(x))
    close(D.Gamma(f64(1.0), f64(2.5)).entropy(), D.Exponential(f64(2.5)).entropy())
    close(D.Chi2(f64(3.0)).log_prob(x), D.Gamma(f64(1.5), f64(0.5)).log_prob(x))
    close(D.HalfNormal(f64(2.0)).log_prob(x), D.Normal(f64(0.0), f64(2.0)).log_prob(x) + math.log(2))
    close(D.HalfCauchy(f64(2.0)).log_prob(x), D.Cauchy(f64(0.0), f64(2.0)).log_prob(x) + math.log(2))
    close(D.LogNormal(f64(0.3), f64(0.8)).cdf(x), D.Normal(f64(0.3), f64(0.8)).cdf(x.log()))
    u = f64([0.2, 0.45, 0.9])
    close(D.Beta(f64(1.0), f64(1.0)).log_prob(u), np.zeros(3))
    close(D.Beta(f64(2.0), f64(3.0)).log_prob(u), np.log(12 * u.numpy() * (1 - u.numpy()) ** 2))
    close(D.Dirichlet(f64([2.0, 3.0])).log_prob(autograd.stack([u, 1 - u], -1)), D.Beta(f64(2.0), f64(3.0)).log_prob(u))
    # StudentT of 1 degree of freedom is the Cauchy
    close(D.StudentT(f64(1.0), f64(0.5), f64(2.0)).log_prob(x), D.Cauchy(f64(0.5), f64(2.0)).log_prob(x))
    close(D.StudentT(f64(1.0), f64(0.5), f64(2.0)).entropy(), D.Cauchy(f64(0.5), f64(2.0)).entropy())
    # a Multinomial over two classes is a Binomial in its first count
    counts = f64([[0.0, 5.0], [2.0, 3.0], [5.0, 0.0]])
    close(D.Multinomial(5, probs=f64([0.3, 0.7])).log_prob(counts),
          D.Binomial(5, probs=f64(0.3)).log_prob(counts[:, 0]))
    # a Binomial of one trial is a Bernoulli; OneHotCategorical is a Categorical
    b = f64([0.0, 1.0, 1.0])
    close(D.Binomial(1, logits=f64(0.4)).log_prob(b), D.Bernoulli(logits=f64(0.4)).log_prob(b))
    logits = f64([0.2, -1.0, 0.5])
    close(D.OneHotCategorical(logits=logits).log_prob(f64(np.eye(3))), D.Categorical(logits=logits).log_prob(
        autograd.tensor([0, 1, 2])))
    normals = D.Normal(f64(np.zeros((2, 3))), f64(np.ones((2, 3))))
    ind = D.Independent(normals, 1)
    assert ind.batch_shape == (2,) and ind.event_shape == (3,)
    value = f64(np.arange(6.0).reshape(2, 3))
    close(ind.log_prob(value), normals.log_prob(value).sum(-1))
    close(ind.entropy(), normals.entropy().sum(-1))
    assert repr(ind.support) == "IndependentConstraint(Real(), 1)"


# name: (the law, a grid covering its mass, whether discrete)
GRID = np.linspace(-60, 60, 240001)
POSITIVE = np.linspace(1e-9, 80, 400001)
CONTINUOUS = {
    "Exponential": (lambda: D.Exponential(f64(1.3)), POSITIVE),
    "Laplace": (lambda: D.Laplace(f64(0.4), f64(1.2)), GRID),
    "Gumbel": (lambda: D.Gumbel(f64(0.4), f64(1.2)), GRID),
    "LogNormal": (lambda: D.LogNormal(f64(0.2), f64(0.5)), POSITIVE),
    "HalfNormal": (lambda: D.HalfNormal(f64(1.7)), POSITIVE),
    "StudentT": (lambda: D.StudentT(f64(7.0), f64(0.3), f64(1.1)), GRID),
    "Gamma": (lambda: D.Gamma(f64(3.5), f64(1.5)), POSITIVE),
    "Chi2": (lambda: D.Chi2(f64(5.0)), POSITIVE),
    "Beta": (lambda: D.Beta(f64(2.5), f64(3.5)), np.linspace(1e-9, 1 - 1e-9, 200001)),
    "Weibull": (lambda: D.Weibull(f64(1.5), f64(2.2)), POSITIVE),
    "InverseGamma": (lambda: D.InverseGamma(f64(6.0), f64(2.0)), POSITIVE),
    "FisherSnedecor": (lambda: D.FisherSnedecor(f64(6.0), f64(14.0)), POSITIVE),
    "Pareto": (lambda: D.Pareto(f64(1.0), f64(7.0)), np.linspace(1.0, 200.0, 400001)),
    "Kumaraswamy": (lambda: D.Kumaraswamy(f64(2.5), f64(3.5)), np.linspace(1e-9, 1 - 1e-9, 200001)),
    "ContinuousBernoulli": (lambda: D.ContinuousBernoulli(probs=f64(0.8)), np.linspace(0.0, 1.0, 200001)),
    "GeneralizedPareto": (lambda: D.GeneralizedPareto(f64(0.0), f64(1.0), f64(0.1)), POSITIVE),
    "GeneralizedPareto-bounded": (lambda: D.GeneralizedPareto(f64(0.0), f64(1.0), f64(-0.3)),
                                  np.linspace(0.0, 1 / 0.3 - 1e-12, 400001)),
    "ContinuousBernoulli-near-half": (lambda: D.ContinuousBernoulli(probs=f64(0.5005)), np.linspace(0.0, 1.0, 200001)),
}


@pytest.mark.parametrize("name", list(CONTINUOUS))
def test_density_integrates_to_one_with_its_moments_and_entropy(name):
    make, grid = CONTINUOUS[name]
    m = make()
    density = m.log_prob(f64(grid)).exp().numpy()
    integral = np.trapezoid if hasattr(np, "trapezoid") else np.trapz  # noqa: NPY201
    assert integral(density, grid) == pytest.approx(1.0, abs=2e-5)
    mean = integral(grid * density, grid)
    assert mean == pytest.approx(m.mean.item(), rel=1e-4, abs=1e-5)
    assert integral((grid - mean) ** 2 * density, grid) == pytest.approx(m.variance.item(), rel=1e-3)
    log_density = m.log_prob(f64(grid)).numpy()
    entropy = -integral(np.where(density > 0, density * log_density, 0.0), grid)
    if name != "FisherSnedecor":  # (PyTorch gives it no entropy)
        assert entropy == pytest.approx(m.entropy().item(), rel=1e-4, abs=1e-5)
    assert m.stddev.item() == pytest.approx(math.sqrt(m.variance.item()), rel=1e-12)


@pytest.mark.parametrize("name,law,support", [
    ("Poisson", lambda: D.Poisson(f64(3.3)), np.arange(80.0)),
    ("Binomial", lambda: D.Binomial(f64(9.0), probs=f64(0.35)), np.arange(10.0)),
    ("Geometric", lambda: D.Geometric(probs=f64(0.3)), np.arange(200.0)),
    ("NegativeBinomial", lambda: D.NegativeBinomial(f64(2.5), probs=f64(0.4)), np.arange(200.0)),
])
def test_mass_sums_to_one_with_its_moments(name, law, support):
    m = law()
    mass = m.log_prob(f64(support)).exp().numpy()
    assert mass.sum() == pytest.approx(1.0, rel=1e-12)
    assert (mass * support).sum() == pytest.approx(m.mean.item(), rel=1e-12)
    assert (mass * (support - m.mean.item()) ** 2).sum() == pytest.approx(m.variance.item(), rel=1e-10)
    if name not in ("Poisson", "NegativeBinomial"):  # (PyTorch gives these no entropy)
        assert -(mass * np.log(mass)).sum() == pytest.approx(m.entropy().item(), rel=1e-10)


@pytest.mark.parametrize("law", [
    lambda: D.Exponential(f64([0.5, 2.0])), lambda: D.Laplace(f64([0.0, 1.0]), f64([1.0, 0.3])),
    lambda: D.Cauchy(f64([0.0, 1.0]), f64([1.0, 0.3])), lambda: D.Gumbel(f64([0.0, 1.0]), f64([1.0, 0.3])),
    lambda: D.LogNormal(f64([0.0, 1.0]), f64([1.0, 0.3])), lambda: D.HalfNormal(f64([1.0, 0.3])),
    lambda: D.HalfCauchy(f64([1.0, 0.3])), lambda: D.Uniform(f64([0.0, 1.0]), f64([1.0, 4.0])),
])
def test_icdf_inverts_cdf(law):
    m = law()
    p = f64([[0.01, 0.3], [0.5, 0.77], [0.93, 0.999]])
    close(m.cdf(m.icdf(p)), p, rtol=1e-11)


# name: (the law, its mean and variance, whether draws carry a gradient)
MOMENTS = {
    "Exponential": lambda: D.Exponential(f64([0.5, 3.0])),
    "Laplace": lambda: D.Laplace(f64([0.5, -1.0]), f64([1.0, 0.2])),
    "Gumbel": lambda: D.Gumbel(f64([0.5, -1.0]), f64([1.0, 0.2])),
    "LogNormal": lambda: D.LogNormal(f64([0.5, -1.0]), f64([0.4, 0.2])),
    "HalfNormal": lambda: D.HalfNormal(f64([1.0, 0.2])),
    "StudentT": lambda: D.StudentT(f64([9.0, 12.0]), f64([0.5, -1.0]), f64([1.0, 0.2])),
    "Gamma": lambda: D.Gamma(f64([0.2, 4.0]), f64([1.0, 0.5])),
    "Chi2": lambda: D.Chi2(f64([1.0, 6.0])),
    "Beta": lambda: D.Beta(f64([0.5, 4.0]), f64([2.0, 1.5])),
    "Dirichlet": lambda: D.Dirichlet(f64([[0.5, 1.0, 3.0], [2.0, 2.0, 2.0]])),
    "Poisson": lambda: D.Poisson(f64([0.5, 20.0])),
    "Binomial": lambda: D.Binomial(f64([3.0, 40.0]), probs=f64([0.5, 0.1])),
    "Geometric": lambda: D.Geometric(probs=f64([0.2, 0.9])),
    "Weibull": lambda: D.Weibull(f64([1.0, 2.0]), f64([0.8, 3.0])),
    "InverseGamma": lambda: D.InverseGamma(f64([5.0, 9.0]), f64([1.0, 2.0])),
    "Pareto": lambda: D.Pareto(f64([1.0, 0.5]), f64([5.0, 9.0])),
    "Kumaraswamy": lambda: D.Kumaraswamy(f64([0.5, 3.0]), f64([2.0, 0.7])),
    "ContinuousBernoulli": lambda: D.ContinuousBernoulli(logits=f64([-3.0, 0.001])),
    "GeneralizedPareto": lambda: D.GeneralizedPareto(f64([0.0, 1.0]), f64([1.0, 2.0]), f64([0.1, -0.4])),
    "FisherSnedecor": lambda: D.FisherSnedecor(f64([6.0, 20.0]), f64([14.0, 30.0])),
    "NegativeBinomial": lambda: D.NegativeBinomial(f64([2.5, 10.0]), probs=f64([0.4, 0.1])),
    "Multinomial": lambda: D.Multinomial(6, probs=f64([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])),
    "OneHotCategorical": lambda: D.OneHotCategorical(probs=f64([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])),
}


@pytest.mark.parametrize("name", list(MOMENTS))
def test_sample_moments(name):
    """The sample mean within 5 standard errors (σ/√n) of the mean; the sample variance within 5
    of its own standard errors (√((m4 - s⁴)/n), m4 the sample fourth central moment). Fixed seed."""
    autograd.manual_seed(7)
    m = MOMENTS[name]()
    n = 20000
    draws = m.sample((n,)).numpy()
    assert draws.shape == (n,) + tuple(m.batch_shape) + tuple(m.event_shape)
    assert bool(m.support.check(f64(draws)).all())
    mean, variance = m.mean.numpy(), m.variance.numpy()
    assert (np.abs(draws.mean(0) - mean) <= 5 * np.sqrt(variance / n) + 1e-12).all()
    centred = draws - draws.mean(0)
    fourth = (centred**4).mean(0)
    error = np.sqrt(np.maximum(fourth - draws.var(0) ** 2, 0) / n)
    assert (np.abs(draws.var(0) - variance) <= 5 * error + 1e-12).all()
    if m.has_rsample:
        autograd.manual_seed(7)
        again = m.rsample((n,)).detach().numpy()
        np.testing.assert_array_equal(again, draws)  # the same seed draws the same numbers


def test_heavy_tails_by_quantiles():
    """Cauchy and HalfCauchy have no moments: the fraction of draws below each quartile is within
    5 binomial standard errors of it."""
    autograd.manual_seed(8)
    n = 20000
    for m in [D.Cauchy(f64(1.0), f64(2.0)), D.HalfCauchy(f64(2.0))]:
        draws = m.sample((n,))
        for q in [0.25, 0.5, 0.75]:
            below = (draws < m.icdf(f64(q))).double().mean().item()
            assert abs(below - q) < 5 * math.sqrt(q * (1 - q) / n)


def test_expand_and_shapes():
    m = D.Gamma(f64([1.0, 2.0]), f64(1.5)).expand((4, 2))
    assert m.batch_shape == (4, 2) and m.sample((3,)).shape == (3, 4, 2)
    d = D.Dirichlet(f64([[1.0, 2.0, 3.0]])).expand((5,))
    assert d.batch_shape == (5,) and d.event_shape == (3,) and d.sample().shape == (5, 3)
    h = D.HalfNormal(f64([1.0, 2.0])).expand((3, 2))
    assert h.log_prob(f64(np.ones((3, 2)))).shape == (3, 2) and h.rsample().shape == (3, 2)
    o = D.OneHotCategorical(logits=f64([0.0, 1.0, 2.0])).expand((4,))
    assert o.sample().shape == (4, 3) and o.enumerate_support().shape == (3, 4, 3)
    assert D.Binomial(f64(3.0), probs=f64([0.2, 0.5])).enumerate_support().shape == (4, 2)
    assert D.Bernoulli(probs=f64([0.2, 0.5])).enumerate_support(expand=False).shape == (2, 1)


def test_reprs_and_supports():
    assert repr(D.Normal(f64([0.0, 1.0]), f64(1.0))) == "Normal(loc: Size([2]), scale: Size([2]))"
    assert repr(D.Exponential(f64(2.0))) == "Exponential(rate: 2.0)"  # (as PyTorch formats a one-element parameter)
    assert repr(D.Gamma(f64(1.0), f64(1.0)).support) == "GreaterThanEq(lower_bound=0.0)"
    assert repr(D.Binomial(5, probs=f64(0.5)).support).startswith("IntegerInterval(lower_bound=0, upper_bound=")
    assert repr(D.Dirichlet(f64([1.0, 1.0])).support) == "Simplex()"
    expected = "IndependentConstraint(GreaterThan(lower_bound=0.0), 1)"
    assert repr(D.Dirichlet.arg_constraints["concentration"]) == expected


def test_argument_checks_as_pytorch():
    cases = [
        (lambda: D.Exponential(f64([1.0, -1.0])), re.escape(
            "Expected parameter rate (Tensor of shape (2,)) of distribution Exponential(rate: Size([2])) to satisfy "
            "the constraint GreaterThan(lower_bound=0.0), but found invalid values:\ntensor([ 1., -1.]")),
        (lambda: D.Gamma(f64(0.0), f64(1.0)), "parameter concentration .* GreaterThan\\(lower_bound=0.0\\)"),
        (lambda: D.Beta(f64(1.0), f64(-2.0)), "concentration"),
        (lambda: D.Dirichlet(f64([1.0, 0.0])), "IndependentConstraint\\(GreaterThan\\(lower_bound=0.0\\), 1\\)"),
        (lambda: D.Chi2(f64(-1.0)), "parameter df"),
        (lambda: D.StudentT(f64(2.0), f64(0.0), f64(0.0)), "parameter scale"),
        (lambda: D.Poisson(f64(-0.5)), "GreaterThanEq\\(lower_bound=0.0\\)"),
        (lambda: D.Binomial(f64(2.5), probs=f64(0.5)),
         "parameter total_count .* IntegerGreaterThan\\(lower_bound=0\\)"),
        (lambda: D.Binomial(3, probs=f64(1.5)), "parameter probs .* Interval\\(lower_bound=0.0, upper_bound=1.0\\)"),
        (lambda: D.Geometric(probs=f64(0.0)), "parameter probs"),
        (lambda: D.Laplace(f64(0.0), f64(-1.0)), "parameter scale"),
        (lambda: D.Geometric(probs=f64(0.5), logits=f64(0.0)), "not both"),
        (lambda: D.Dirichlet(f64(1.0)), "`concentration` parameter must be at least one-dimensional."),
        (lambda: D.Independent(D.Normal(f64([0.0]), f64([1.0])), 2),
         "Expected reinterpreted_batch_ndims <= len\\(base_distribution.batch_shape\\), actual 2 vs 1"),
        (lambda: D.Exponential(f64(1.0)).log_prob(f64(-1.0)), "Expected value argument \\(Tensor of shape \\(\\)\\) to "
         "be within the support \\(GreaterThanEq\\(lower_bound=0.0\\)\\) of the distribution Exponential"),
        (lambda: D.Exponential(f64(1.0)).log_prob(1.0), "The value argument to log_prob must be a Tensor"),
        (lambda: D.Dirichlet(f64([1.0, 2.0])).log_prob(f64([0.5, 0.3, 0.2])),
         "The right-most size of value must match event_shape: Size\\(\\[3\\]\\) vs Size\\(\\[2\\]\\)."),
        (lambda: D.Gamma(f64([1.0, 2.0]), f64(1.0)).log_prob(f64([1.0, 2.0, 3.0])),
         "Value is not broadcastable with batch_shape\\+event_shape: Size\\(\\[3\\]\\) vs Size\\(\\[2\\]\\)."),
        (lambda: D.Poisson(f64(1.0)).log_prob(f64(1.5)), "IntegerGreaterThan\\(lower_bound=0\\)"),
        (lambda: D.Binomial(3, probs=f64(0.5)).log_prob(f64(4.0)), "within the support"),
        (lambda: D.Multinomial(3, probs=f64([0.5, 0.5])).log_prob(f64([3.0, 1.0])), "Multinomial"),
        (lambda: D.OneHotCategorical(probs=f64([0.5, 0.5])).log_prob(f64([1.0, 1.0])), "OneHot\\(\\)"),
        (lambda: D.Beta(f64(1.0), f64(1.0)).log_prob(f64(1.5)), "Interval\\(lower_bound=0.0, upper_bound=1.0\\)"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(NotImplementedError, match="inhomogeneous total_count"):
        D.Multinomial(f64(3.0), probs=f64([0.5, 0.5]))
    with pytest.raises(NotImplementedError, match="Inhomogeneous total count"):
        D.Binomial(f64([2.0, 3.0]), probs=f64(0.5)).entropy()
    # validate_args=False skips the checks: the formula is applied as it stands (as PyTorch's)
    assert D.Exponential(f64(1.0), validate_args=False).log_prob(f64(-1.0)).item() == 1.0
    D.Exponential(f64(-1.0), validate_args=False)


def test_default_validation_switch():
    D.Distribution.set_default_validate_args(False)
    try:
        assert D.Exponential(f64(-1.0)).rate.item() == -1.0  # no check
        with pytest.raises(ValueError, match="rate"):
            D.Exponential(f64(-1.0), validate_args=True)
    finally:
        D.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError, match="rate"):
        D.Exponential(f64(-1.0))
    with pytest.raises(ValueError):
        D.Distribution.set_default_validate_args("yes")


REPARAMETERISED = {
    "Normal": (D.Normal, [0.3, 1.4]),
    "Exponential": (D.Exponential, [1.7]),
    "Laplace": (D.Laplace, [0.3, 1.4]),
    "Cauchy": (D.Cauchy, [0.3, 1.4]),
    "Gumbel": (D.Gumbel, [0.3, 1.4]),
    "LogNormal": (D.LogNormal, [0.3, 0.6]),
    "HalfNormal": (D.HalfNormal, [1.4]),
    "HalfCauchy": (D.HalfCauchy, [1.4]),
    "Gamma": (D.Gamma, [0.7, 1.4]),
    "Gamma-large": (D.Gamma, [40.0, 0.5]),
    "Chi2": (D.Chi2, [3.0]),
    "Uniform": (D.Uniform, [-1.0, 2.5]),
    "Pareto": (D.Pareto, [1.5, 2.5]),
    "Weibull": (D.Weibull, [1.5, 2.5]),
    "InverseGamma": (D.InverseGamma, [3.0, 2.0]),
    "Kumaraswamy": (D.Kumaraswamy, [0.8, 2.5]),
    "ContinuousBernoulli": (lambda probs: D.ContinuousBernoulli(probs=probs), [0.3]),
    "GeneralizedPareto": (D.GeneralizedPareto, [0.5, 1.5, 0.2]),
}


@pytest.mark.parametrize("name", list(REPARAMETERISED))
def test_rsample_gradient_keeps_the_cdf_fixed(name):
    """Every reparameterised draw of a scalar law is x = F⁻¹(u; θ) for some u that does not depend
    on θ, so its gradient must be dx/dθ = -(∂F(x; θ)/∂θ) / p(x; θ) at the drawn x (PyTorch's
    draws share this property: with the same u they give the same gradient). One law per draw,
    so each parameter's gradient is its own draw's."""
    family, values = REPARAMETERISED[name]
    n = 64
    params = [f64(np.full(n, v), requires_grad=True) for v in values]
    autograd.manual_seed(5)
    m = family(*params)
    x = m.rsample()
    grads = autograd.grad(x.sum(), params, retain_graph=True)  # (Chi2 shares df / 2 between the two)
    at = x.detach()
    density = m.log_prob(at).exp().detach().numpy()
    for k, got in enumerate(grads):  # ∂F/∂θ_k by central differences of the cdf's values (igamma, which
        step = 1e-6 * abs(values[k])  # the gamma laws' cdf uses, gives no gradient in a, as PyTorch's)
        moved = [[f64(np.full(n, v + (sign * step if j == k else 0.0))) for j, v in enumerate(values)]
                 for sign in (1, -1)]
        dF = (family(*moved[0]).cdf(at).numpy() - family(*moved[1]).cdf(at).numpy()) / (2 * step)
        # (a draw far in a heavy tail, where F is near 0 or 1, leaves the central difference of F a few 1e-6 off;
        # a gamma draw's derivative is PyTorch's approximation, good to a few parts in 10^4: ops/standard_gamma.py)
        close(got, -dF / density, rtol=1e-3 if name in GAMMA_DRAWS else 3e-6, atol=1e-9)


GAMMA_DRAWS = {"Gamma", "Gamma-large", "Chi2", "InverseGamma"}


def test_uniform_support_is_closed_with_no_density_at_high():
    """PyTorch checks log_prob's value against [low, high] and gives density 0 at high."""
    u = D.Uniform(f64(0.0), f64(2.0))
    assert u.log_prob(f64(2.0)).item() == float("-inf")
    assert u.log_prob(f64(0.0)).item() == pytest.approx(-math.log(2.0))
    with pytest.raises(ValueError, match=re.escape("support (Interval(lower_bound=0.0, upper_bound=2.0))")):
        u.log_prob(f64(2.5))


EXPONENTIAL_FAMILIES = {
    "Normal": lambda s: D.Normal(f64([0.3, -1.0]) * s, f64([1.5, 0.4]) * s),
    "Exponential": lambda s: D.Exponential(f64([0.5, 2.0]) * s),
    "Gamma": lambda s: D.Gamma(f64([0.7, 3.0]) * s, f64([1.5, 0.4]) * s),
    "Bernoulli": lambda s: D.Bernoulli(probs=f64([0.2, 0.7]) * s),
    "Beta": lambda s: D.Beta(f64([0.7, 3.0]) * s, f64([1.5, 0.4]) * s),
    "Dirichlet": lambda s: D.Dirichlet(f64([[0.7, 3.0, 1.0], [2.0, 0.5, 0.5]]) * s),
    "ContinuousBernoulli": lambda s: D.ContinuousBernoulli(probs=f64([0.2, 0.4995]) * s),
    "Wishart": lambda s: D.Wishart(f64([4.0, 6.5]) * s, covariance_matrix=f64([[2.0, 0.3], [0.3, 1.0]]) * s),
}


@pytest.mark.parametrize("name", list(EXPONENTIAL_FAMILIES))
def test_exponential_family_bregman_forms_agree_with_the_closed_ones(name):
    """F(θ) - ⟨θ, ∇F(θ)⟩ - E[ln h] is the entropy, and the Bregman divergence of F is the KL."""
    from autograd.distributions.kl_pairs import _kl_expfamily_expfamily

    p, q = EXPONENTIAL_FAMILIES[name](1.0), EXPONENTIAL_FAMILIES[name](1.1 if name != "Bernoulli" else 1.2)
    assert isinstance(p, D.ExponentialFamily)
    close(D.ExponentialFamily.entropy(p), p.entropy(), rtol=1e-10, atol=1e-12)
    close(_kl_expfamily_expfamily(p, q), D.kl_divergence(p, q), rtol=1e-9, atol=1e-12)


def test_a_family_of_ones_own_gets_entropy_and_kl_from_its_log_normalizer():
    class Rayleighish(D.ExponentialFamily):  # an Exponential written only through its natural form
        def __init__(self, rate):
            self.rate = rate
            super().__init__(rate.shape)

        @property
        def _natural_params(self):
            return (-self.rate,)

        def _log_normalizer(self, x):
            return -(-x).log()

        _mean_carrier_measure = 0

    p, q = Rayleighish(f64([0.5, 2.0])), Rayleighish(f64([1.0, 1.0]))
    close(p.entropy(), D.Exponential(f64([0.5, 2.0])).entropy())
    close(D.kl_divergence(p, q), D.kl_divergence(D.Exponential(f64([0.5, 2.0])), D.Exponential(f64([1.0, 1.0]))))
    with pytest.raises(NotImplementedError, match="different exponential families"):
        D.kl_divergence(D.Poisson(f64(1.0)), D.Exponential(f64(1.0)))
