"""kl_divergence for the pairs PyTorch registers, against torch (values and gradients, float64),
and by Monte Carlo without torch: KL(p ‖ q) = E_p[ln p(x) - ln q(x)]."""

import numpy as np
import pytest

import autograd
from autograd import distributions as D

R = np.random.default_rng(1)

# name: keyword parameters (batch of 3)
LAWS = {
    "Normal": {"loc": R.standard_normal(3), "scale": R.uniform(0.5, 2, 3)},
    "Laplace": {"loc": R.standard_normal(3), "scale": R.uniform(0.5, 2, 3)},
    "Gumbel": {"loc": R.standard_normal(3), "scale": R.uniform(0.5, 2, 3)},
    "Cauchy": {"loc": R.standard_normal(3), "scale": R.uniform(0.5, 2, 3)},
    "Exponential": {"rate": R.uniform(0.5, 2, 3)},
    "Gamma": {"concentration": R.uniform(0.5, 3, 3), "rate": R.uniform(0.5, 2, 3)},
    "Beta": {"concentration1": R.uniform(0.5, 3, 3), "concentration0": R.uniform(0.5, 3, 3)},
    "Dirichlet": {"concentration": R.uniform(0.5, 3, (3, 4))},
    "HalfNormal": {"scale": R.uniform(0.5, 2, 3)},
    "Poisson": {"rate": R.uniform(0.5, 4, 3)},
    "Geometric": {"probs": R.uniform(0.1, 0.9, 3)},
    "Binomial": {"total_count": np.array([6.0, 6.0, 6.0]), "probs": R.uniform(0.1, 0.9, 3)},
    "Bernoulli": {"probs": R.uniform(0.1, 0.9, 3)},
    "OneHotCategorical": {"logits": R.standard_normal((3, 4))},
    "Uniform": {"low": R.uniform(0.05, 0.3, 3), "high": R.uniform(0.5, 0.95, 3)},
    "Uniform-far": {"low": R.uniform(3.0, 4.0, 3), "high": R.uniform(5.0, 6.0, 3)},
    "ContinuousBernoulli": {"probs": np.array([0.2, 0.4995, 0.7])},
    "Uniform-outside": {"low": R.uniform(-2, -1, 3), "high": R.uniform(2, 3, 3)},
    "Pareto": {"scale": R.uniform(0.5, 2, 3), "alpha": R.uniform(2.5, 4, 3)},
    "Uniform-wide": {"low": R.uniform(-2, -1, 3), "high": R.uniform(1, 2, 3)},
}
SAME = ["Pareto", "Normal", "Laplace", "Gumbel", "Cauchy", "Exponential", "Gamma", "Beta", "Dirichlet", "HalfNormal",
        "Poisson", "ContinuousBernoulli",
        "Geometric", "Binomial", "Bernoulli", "OneHotCategorical", "Uniform"]
ACROSS = [("Bernoulli", "Poisson"), ("Beta", "Exponential"), ("Beta", "Gamma"), ("Beta", "Normal"),
          ("Beta", "Uniform"), ("Beta", "Uniform-wide"), ("Exponential", "Beta"), ("Exponential", "Gamma"),
          ("Exponential", "Gumbel"), ("Exponential", "Normal"), ("Exponential", "Uniform"), ("Gamma", "Beta"),
          ("Gamma", "Exponential"), ("Gamma", "Gumbel"), ("Gamma", "Normal"), ("Gamma", "Uniform"),
          ("Gumbel", "Beta"), ("Gumbel", "Normal"), ("Gumbel", "Uniform"), ("Laplace", "Normal"),
          ("Laplace", "Gamma"), ("Normal", "Beta"), ("Normal", "Gumbel"), ("Normal", "Laplace"),
          ("Normal", "Exponential"), ("Poisson", "Bernoulli"), ("Poisson", "Binomial"), ("Uniform", "Beta"),
          ("Uniform", "Exponential"), ("Uniform", "Gamma"), ("Uniform", "Gumbel"), ("Uniform", "Normal"),
          ("Uniform-wide", "Beta"), ("Uniform-wide", "Gamma"), ("Uniform-wide", "Exponential"),
          ("Pareto", "Exponential"), ("Pareto", "Gamma"), ("Pareto", "Normal"), ("Pareto", "Beta"),
          ("Pareto", "Uniform"), ("Beta", "Pareto"), ("Exponential", "Pareto"), ("Gamma", "Pareto"),
          ("Gumbel", "Pareto"), ("Laplace", "Pareto"), ("Normal", "Pareto"), ("Uniform", "Pareto"),
          ("Uniform-far", "Pareto"), ("ContinuousBernoulli", "Exponential"), ("ContinuousBernoulli", "Normal"),
          ("ContinuousBernoulli", "Uniform-outside"), ("ContinuousBernoulli", "Pareto"),
          ("Beta", "ContinuousBernoulli"),
          ("Uniform", "ContinuousBernoulli"), ("Exponential", "ContinuousBernoulli"), ("Gamma", "ContinuousBernoulli"),
          ("Gumbel", "ContinuousBernoulli"), ("Laplace", "ContinuousBernoulli"), ("Normal", "ContinuousBernoulli"),
          ("Pareto", "ContinuousBernoulli")]
PAIRS = [(name, name) for name in SAME] + ACROSS


def build(module, tensor, name, offset=0.0, requires_grad=False):
    def moved(key, value):
        if key in ("total_count", "low", "high"):
            return value
        return value * (1 - offset) if key == "probs" else value * (1 + offset)  # (probabilities stay below 1)

    params = {key: tensor(moved(key, value), requires_grad=requires_grad and key != "total_count")
              for key, value in LAWS[name].items()}
    return getattr(module, name.split("-")[0])(**params), params


@pytest.mark.torch
@pytest.mark.parametrize("p_name,q_name", PAIRS)
def test_kl_matches_torch(p_name, q_name):
    torch = pytest.importorskip("torch")
    offset = 0.3 if p_name == q_name else 0.0
    p, p_params = build(D, autograd.tensor, p_name, requires_grad=True)
    q, q_params = build(D, autograd.tensor, q_name, offset, requires_grad=True)
    tp, tp_params = build(torch.distributions, torch.tensor, p_name, requires_grad=True)
    tq, tq_params = build(torch.distributions, torch.tensor, q_name, offset, requires_grad=True)
    ours, theirs = D.kl_divergence(p, q), torch.distributions.kl_divergence(tp, tq)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    if not np.isfinite(theirs.detach().numpy()).all():
        return
    ours.sum().backward()
    theirs.sum().backward()
    for mine, its in [(p_params, tp_params), (q_params, tq_params)]:
        for key, value in mine.items():
            if value.requires_grad:  # (trigamma, in some, is good to 5e-10 in PyTorch)
                np.testing.assert_allclose(value.grad.numpy(), its[key].grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("p_name,q_name", [("Gamma", "Gamma"), ("Beta", "Beta"), ("Laplace", "Normal"),
                                           ("Gumbel", "Gumbel"), ("Exponential", "Gamma"), ("Poisson", "Poisson")])
def test_kl_is_the_expected_log_ratio(p_name, q_name):
    """Monte Carlo: the mean of ln p(x) - ln q(x) over 40000 draws of p is within 5 standard
    errors of the closed form."""
    autograd.manual_seed(0)
    p, _ = build(D, lambda v, requires_grad: autograd.tensor(v), p_name)
    q, _ = build(D, lambda v, requires_grad: autograd.tensor(v), q_name, 0.3 if p_name == q_name else 0.0)
    x = p.sample((40000,))
    ratio = (p.log_prob(x) - q.log_prob(x)).numpy()
    error = ratio.std(0) / np.sqrt(len(ratio))
    assert (np.abs(ratio.mean(0) - D.kl_divergence(p, q).numpy()) < 5 * error + 1e-12).all()


def test_kl_dispatch_and_errors():
    with pytest.raises(NotImplementedError, match="No KL\\(p \\|\\| q\\) is implemented for p type Cauchy and q type "
                                                  "Normal"):
        D.kl_divergence(D.Cauchy(0.0, 1.0), D.Normal(0.0, 1.0))

    class Wider(D.Normal):
        pass

    assert D.kl_divergence(Wider(0.0, 1.0), D.Normal(0.0, 1.0)).item() == 0.0  # the parent's formula

    @D.register_kl(Wider, Wider)
    def _kl_wider(p, q):
        return autograd.tensor(7.0)

    assert D.kl_divergence(Wider(0.0, 1.0), Wider(0.0, 1.0)).item() == 7.0
    with pytest.raises(TypeError):
        D.register_kl(Wider, "Normal")
    ind = D.kl_divergence(D.Independent(D.Normal(autograd.zeros(2, 3), 1.0), 1),
                          D.Independent(D.Normal(autograd.ones(2, 3), 1.0), 1))
    assert ind.shape == (2,) and np.allclose(ind.numpy(), 1.5)
    with pytest.raises(NotImplementedError, match="total_count"):
        D.kl_divergence(D.Binomial(2, probs=autograd.tensor(0.5)), D.Binomial(3, probs=autograd.tensor(0.5)))


def test_continuous_bernoulli_and_a_uniform_on_the_same_interval():
    """KL(CB(λ) ‖ U(0, 1)) = -H(CB(λ)) and KL(U(0, ½) ‖ CB(λ)) are finite: q's density is positive
    on all of p's support. (PyTorch returns ∞ for both, testing low ≥ 0 rather than low > 0.)"""
    p = D.ContinuousBernoulli(probs=autograd.tensor([0.2, 0.7]))
    unit = D.Uniform(autograd.tensor(0.0), autograd.tensor(1.0))
    np.testing.assert_allclose(D.kl_divergence(p, unit).numpy(), -p.entropy().numpy(), rtol=1e-6)
    half = D.Uniform(autograd.tensor(0.0), autograd.tensor(0.5))
    x = (np.arange(200000) + 0.5) / 400000  # the midpoint rule on [0, ½]
    ratio = half.log_prob(autograd.tensor(x)).numpy()[:, None] - p.log_prob(autograd.tensor(x[:, None])).numpy()
    np.testing.assert_allclose(D.kl_divergence(half, p).numpy(), ratio.mean(0), rtol=1e-6)
