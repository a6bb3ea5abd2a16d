"""KL divergences, entropies and numerical stability ported from PyTorch's
test/distributions/test_distributions.py: TestKL (test_kl_infinite, test_kl_edgecases, test_kl_shape,
test_kl_transformed, test_kl_multivariate_normal_batched*, test_kl_lowrank_multivariate_normal*,
test_kl_exponential_family, test_entropy_monte_carlo, test_entropy_exponential_family) and
TestNumericalStability. (The Monte Carlo check of each KL pair is tests/test_distributions_kl.py's.)

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import close, values
from tests.test_ported_distributions_generic import each


@pytest.fixture(autouse=True)
def validation_on(T):
    T.distributions.Distribution.set_default_validate_args(True)
    T.manual_seed(0)
    yield


def pairwise(T, Dist, *params):
    """PyTorch's pairwise: two laws of 4 x 4 parameters, the first varying along columns, the second
    along rows, so that KL(first, second) covers every pair."""
    first = [T.tensor([p] * len(p)) for p in params]
    return Dist(*first), Dist(*[p.transpose(0, 1) for p in first])


def test_kl_infinite(T):
    D = T.distributions
    cases = [(D.Bernoulli(0), D.Bernoulli(1)), (D.Bernoulli(1), D.Bernoulli(0)),
             (D.Categorical(T.tensor([0.9, 0.1])), D.Categorical(T.tensor([1.0, 0.0]))),
             (D.Categorical(T.tensor([[0.9, 0.1], [0.9, 0.1]])), D.Categorical(T.tensor([1.0, 0.0]))),
             (D.Beta(1, 2), D.Uniform(0.25, 1)), (D.Beta(1, 2), D.Uniform(0, 0.75)),
             (D.Beta(1, 2), D.Uniform(0.25, 0.75)), (D.Beta(1, 2), D.Pareto(1, 2)),
             (D.Binomial(31, 0.7), D.Binomial(30, 0.3)),
             (D.Binomial(T.tensor([3, 4]), T.tensor([0.4, 0.6])), D.Binomial(T.tensor([2, 3]), T.tensor([0.5, 0.8]))),
             (D.Poisson(2), D.Bernoulli(0.5)), (D.Poisson(2.3), D.Binomial(10, 0.2)),
             (D.Uniform(-1, 1), D.Beta(2, 2)), (D.Uniform(0, 2), D.Beta(3, 4)), (D.Uniform(-1, 2), D.Beta(3, 4)),
             (D.Pareto(1, 2), D.Normal(-3, 4)), (D.Pareto(1, 2), D.Pareto(3, 4)),
             (D.ContinuousBernoulli(0.25), D.Uniform(0.25, 1)), (D.ContinuousBernoulli(0.25), D.Pareto(1, 2)),
             (D.Exponential(1), D.ContinuousBernoulli(0.75)), (D.Normal(-1, 2), D.ContinuousBernoulli(0.75))]
    for p in (D.Chi2(1), D.Exponential(1), D.Gamma(1, 2), D.Gumbel(-1, 2), D.Laplace(-1, 2), D.Normal(-1, 2),
              D.Uniform(-1, 2)):
        cases += [(p, D.Beta(3, 4)), (p, D.Pareto(3, 4))]
        if not isinstance(p, D.Uniform):
            cases.append((p, D.Uniform(-3, 4)))
    for p in (D.Gumbel(-1, 2), D.Laplace(-1, 2), D.Normal(-1, 2), D.Pareto(2, 1), D.Uniform(-1, 2)):
        cases += [(p, D.Chi2(3)), (p, D.Exponential(3)), (p, D.Gamma(3, 4))]
    for p, q in cases:
        assert (values(D.kl_divergence(p, q)) == np.inf).all(), f"KL({type(p).__name__}, {type(q).__name__})"


def test_kl_edgecases(T):
    D = T.distributions
    close(D.kl_divergence(D.Bernoulli(0), D.Bernoulli(0)), 0)
    close(D.kl_divergence(D.Bernoulli(1), D.Bernoulli(1)), 0)
    close(D.kl_divergence(D.Categorical(T.tensor([0.0, 1.0])), D.Categorical(T.tensor([0.0, 1.0]))), 0)
    close(D.kl_divergence(D.Uniform(0, 1), D.Beta(1, 1)), 0)


def test_kl_shape(T):
    for Dist, i, param in each(T):
        d = Dist(**param)
        try:
            kl = T.distributions.kl_divergence(d, d)
        except NotImplementedError:
            continue
        assert tuple(kl.shape) == tuple(d.batch_shape), f"{Dist.__name__} example {i}"


def test_kl_transformed(T):
    """gh-34859: the KL of two transformed laws keeps the base's batch shape."""
    D = T.distributions
    diag_normal = D.Independent(D.Normal(T.zeros(2, 3), T.ones(2, 3)), reinterpreted_batch_ndims=1)
    trans = D.TransformedDistribution(diag_normal, D.AffineTransform(loc=0.0, scale=2.0))
    assert tuple(D.kl_divergence(diag_normal, diag_normal).shape) == (2,)
    assert tuple(D.kl_divergence(trans, trans).shape) == (2,)


def lower_cholesky(T, *shape, seed):
    return T.distributions.transform_to(T.distributions.constraints.lower_cholesky)(
        T.tensor(np.random.default_rng(seed).standard_normal(shape)))


@pytest.mark.parametrize("broadcast", [False, True])
def test_kl_multivariate_normal_batched(T, broadcast):
    D, b = T.distributions, 7
    rng = np.random.default_rng(4)
    loc = [T.tensor(rng.standard_normal((b, 3))) for _ in range(2)]
    tril = [lower_cholesky(T, b, 3, 3, seed=5), lower_cholesky(T, *((3, 3) if broadcast else (b, 3, 3)), seed=6)]
    q_tril = [tril[1] if broadcast else tril[1][i] for i in range(b)]
    expected = T.stack([D.kl_divergence(D.MultivariateNormal(loc[0][i], scale_tril=tril[0][i]),
                                        D.MultivariateNormal(loc[1][i], scale_tril=q_tril[i])) for i in range(b)])
    actual = D.kl_divergence(D.MultivariateNormal(loc[0], scale_tril=tril[0]),
                             D.MultivariateNormal(loc[1], scale_tril=tril[1]))
    close(actual, values(expected), rtol=1e-10, atol=1e-10)


def test_kl_multivariate_normal_closed_form(T):
    """KL(p || q) = ½ (tr(Σq⁻¹Σp) + (μq - μp)ᵀ Σq⁻¹ (μq - μp) - k + ln det Σq - ln det Σp)."""
    D = T.distributions
    rng = np.random.default_rng(7)
    for _ in range(3):
        mp, mq = rng.standard_normal(4), rng.standard_normal(4)
        a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
        sp, sq = a @ a.T + 0.5 * np.eye(4), b @ b.T + 0.5 * np.eye(4)
        inv = np.linalg.inv(sq)
        expected = 0.5 * (np.trace(inv @ sp) + (mq - mp) @ inv @ (mq - mp) - 4 + np.linalg.slogdet(sq)[1]
                          - np.linalg.slogdet(sp)[1])
        p = D.MultivariateNormal(T.tensor(mp), covariance_matrix=T.tensor(sp))
        q = D.MultivariateNormal(T.tensor(mq), covariance_matrix=T.tensor(sq))
        close(D.kl_divergence(p, q), expected, rtol=1e-9)


def test_kl_lowrank_multivariate_normal(T):
    """KL between low-rank-plus-diagonal laws, and between one and a full one, is the full laws' KL."""
    D = T.distributions
    rng = np.random.default_rng(8)
    positive = D.transform_to(D.constraints.positive)
    for _ in range(3):
        loc = [T.tensor(rng.standard_normal(4)) for _ in range(2)]
        factor = [T.tensor(rng.standard_normal((4, 3))) for _ in range(2)]
        diag = [positive(T.tensor(rng.standard_normal(4))) for _ in range(2)]
        cov = [factor[i] @ factor[i].T + T.diag(diag[i]) for i in range(2)]
        p, q = (D.LowRankMultivariateNormal(loc[i], factor[i], diag[i]) for i in range(2))
        p_full, q_full = (D.MultivariateNormal(loc[i], cov[i]) for i in range(2))
        expected = values(D.kl_divergence(p_full, q_full))
        for actual in (D.kl_divergence(p, q), D.kl_divergence(p, q_full), D.kl_divergence(p_full, q)):
            close(actual, expected, rtol=1e-8, atol=1e-8)
    b = 7
    loc = [T.tensor(rng.standard_normal((b, 3))) for _ in range(2)]
    factor = [T.tensor(rng.standard_normal((b, 3, 2))) for _ in range(2)]
    diag = [positive(T.tensor(rng.standard_normal((b, 3)))) for _ in range(2)]
    expected = T.stack([D.kl_divergence(D.LowRankMultivariateNormal(loc[0][i], factor[0][i], diag[0][i]),
                                        D.LowRankMultivariateNormal(loc[1][i], factor[1][i], diag[1][i]))
                        for i in range(b)])
    actual = D.kl_divergence(D.LowRankMultivariateNormal(loc[0], factor[0], diag[0]),
                             D.LowRankMultivariateNormal(loc[1], factor[1], diag[1]))
    close(actual, values(expected), rtol=1e-10, atol=1e-10)


def exp_family_pairs(T):
    D = T.distributions
    return [pairwise(T, D.Bernoulli, [0.1, 0.2, 0.6, 0.9]),
            pairwise(T, D.Beta, [1.0, 2.5, 1.0, 2.5], [1.5, 1.5, 3.5, 3.5]),
            pairwise(T, D.Categorical, [[0.4, 0.3, 0.3], [0.2, 0.7, 0.1], [0.33, 0.33, 0.34], [0.2, 0.2, 0.6]]),
            pairwise(T, D.Dirichlet, [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.33, 0.33, 0.34], [0.2, 0.2, 0.4]]),
            pairwise(T, D.Exponential, [1.0, 2.5, 5.0, 10.0]),
            pairwise(T, D.Gamma, [1.0, 2.5, 1.0, 2.5], [1.5, 1.5, 3.5, 3.5]),
            pairwise(T, D.Normal, [-2.0, 2.0, -3.0, 3.0], [1.0, 2.0, 1.0, 2.0]),
            pairwise(T, D.Poisson, [0.3, 1.0, 5.0, 10.0]),
            pairwise(T, D.ContinuousBernoulli, [0.1, 0.2, 0.5, 0.9])]


def test_kl_exponential_family(T):
    """The closed-form KL of two laws of one exponential family is their Bregman divergence."""
    name = "kl" if T.__name__ == "torch" else "kl_pairs"
    bregman = __import__(f"{T.__name__}.distributions.{name}", fromlist=["x"])._kl_expfamily_expfamily
    for (p, _), (_, q) in zip(exp_family_pairs(T), exp_family_pairs(T)):
        if isinstance(p, T.distributions.ExponentialFamily):  # (not Categorical, in PyTorch)
            close(T.distributions.kl_divergence(p, q), values(bregman(p, q)), rtol=1e-4, atol=1e-5)


def double(param):
    return {k: v.double() if hasattr(v, "double") else v for k, v in param.items()}


def test_entropy_monte_carlo(T):
    """entropy() is -E[log p(x)] over many draws (float64, as PyTorch's test). Beta and Dirichlet laws with
    a concentration below 1/4 are left out: their draws pile up at the clamped ends of (0, 1), which
    biases the mean of log p (PyTorch's own examples avoid them by their seed)."""
    D = T.distributions
    for Dist, i, param in each(T):
        param = double(param)
        if Dist in (D.Beta, D.Dirichlet) and min(float(v.detach().min()) for v in param.values()) < 0.25:
            continue
        try:
            d = Dist(**param)
            actual = values(d.entropy())
        except (NotImplementedError, TypeError):
            continue
        expected = values(-d.log_prob(d.sample((20000,))).mean(0))
        ignore = np.isinf(expected)
        expected[ignore] = actual[ignore]
        np.testing.assert_allclose(actual, expected, atol=0.2, err_msg=f"{Dist.__name__} example {i}")


def test_entropy_exponential_family(T):
    """A family's closed-form entropy is the one from its log-normaliser."""
    D = T.distributions
    for Dist, _, param in each(T):
        if not issubclass(Dist, D.ExponentialFamily):
            continue
        d = Dist(**double(param))  # (float64, as PyTorch's test: Normal(1, 1e-5)'s is ln 1e-5 + 1.42)
        try:
            actual, expected = d.entropy(), D.ExponentialFamily.entropy(d)
        except NotImplementedError:
            continue
        close(actual, values(expected), rtol=1e-4, atol=1e-5)


def pdf_score(T, Dist, x, expected_value, probs=None, logits=None, expected_gradient=None, atol=1e-5):
    """PyTorch's _test_pdf_score: log_prob(x) and its gradient in the parameter."""
    p = (probs if probs is not None else logits).detach().requires_grad_()
    d = Dist(p) if probs is not None else Dist(logits=p)
    log_pdf = d.log_prob(x)
    log_pdf.sum().backward()
    close(log_pdf, expected_value, atol=atol, rtol=0)
    if expected_gradient is not None:
        close(p.grad, expected_gradient, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bernoulli_gradient(T, dtype):
    B, t = T.distributions.Bernoulli, (lambda v: T.tensor(v, dtype=getattr(T, dtype)))
    eps = float(np.finfo(dtype).eps)
    pdf_score(T, B, t([0.0]), [0.0], probs=t([0.0]), expected_gradient=[0.0])
    pdf_score(T, B, t([1.0]), [math.log(eps)], probs=t([0.0]), expected_gradient=[0.0])
    pdf_score(T, B, t([1.0]), [math.log(1e-4)], probs=t([1e-4]), expected_gradient=[10000.0])
    pdf_score(T, B, t([0.0]), [math.log(1e-4)], probs=t([1 - 1e-4]), expected_gradient=[-10000.0], atol=2)
    pdf_score(T, B, t([0.0]), [math.log(1e-4)], logits=t([math.log(9999)]), expected_gradient=[-1.0], atol=1e-3)


@pytest.mark.parametrize("dtype, lim", [("float32", 1e38), ("float64", 1e308)])
def test_bernoulli_with_logits_under_and_overflow(T, dtype, lim):
    t = lambda v: T.tensor(v, dtype=getattr(T, dtype))  # noqa: E731
    pdf_score(T, T.distributions.Bernoulli, t([0.0]), [0.0], logits=t([-lim]), expected_gradient=[0.0])
    pdf_score(T, T.distributions.Bernoulli, t([1.0]), [0.0], logits=t([lim]), expected_gradient=[0.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_categorical_and_multinomial_log_prob_at_the_edges(T, dtype):
    D, t = T.distributions, (lambda v: T.tensor(v, dtype=getattr(T, dtype)))
    p = t([0.0, 1.0]).requires_grad_()
    close(D.OneHotCategorical(p).log_prob(t([0.0, 1.0])), 0.0, atol=1e-5)  # (ln(1 - eps): assertEqual's tolerance)
    logits = t([-math.inf, 0.0]).requires_grad_()
    assert D.OneHotCategorical(logits=logits).log_prob(t([0.0, 1.0])).item() == 0
    assert D.OneHotCategorical(logits=logits).log_prob(t([1.0, 0.0])).item() == -math.inf
    close(D.Multinomial(10, p).log_prob(t([0.0, 10.0])), 0.0, atol=1e-5)
    assert D.Multinomial(10, logits=logits).log_prob(t([0.0, 10.0])).item() == 0
    assert D.Multinomial(10, logits=logits).log_prob(t([10.0, 0.0])).item() == -math.inf


def cb_value(x, probs=None, logits=None):
    """The continuous Bernoulli's log density, with its Taylor form of log C near p = 1/2."""
    if logits is not None:
        probs = 1.0 / (1.0 + math.exp(-logits))
    bern = x * math.log(probs) + (1.0 - x) * math.log1p(-probs)
    if probs < 0.499 or probs > 0.501:
        log_c = math.log(abs(math.atanh(1.0 - 2.0 * probs))) - math.log(abs(1.0 - 2.0 * probs)) + math.log(2.0)
    else:
        aux = (probs - 0.5) ** 2
        log_c = math.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * aux) * aux
    return bern + log_c


def cb_grad(x, probs=None, logits=None):
    if logits is not None:
        probs = 1.0 / (1.0 + math.exp(-logits))
    g = x / probs - (1.0 - x) / (1.0 - probs)
    if probs < 0.499 or probs > 0.501:
        a = math.atanh(1.0 - 2.0 * probs)
        g += (2.0 * probs - 4.0 * (probs - 1.0) * probs * a - 1.0) / (2.0 * (probs - 1.0) * probs * (2.0 * probs - 1.0)
                                                                       * a)
    else:
        g += 8.0 / 3.0 * (probs - 0.5) + 416.0 / 45.0 * (probs - 0.5) ** 3
    if logits is not None:
        g *= 1.0 / (1.0 + math.exp(logits)) - 1.0 / (1.0 + math.exp(logits)) ** 2
    return g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_continuous_bernoulli_gradient(T, dtype):
    CB, t = T.distributions.ContinuousBernoulli, (lambda v: T.tensor(v, dtype=getattr(T, dtype)))
    for x, p, atol in [(0.1, 0.1, 1e-5), (1.0, 0.1, 1e-5), (0.9, 0.4999, 1e-5), (1.0, 1e-4, 1e-3),
                       (0.1, 1 - 1e-4, 2)]:
        pdf_score(T, CB, t([x]), [cb_value(x, probs=p)], probs=t([p]), expected_gradient=[cb_grad(x, probs=p)],
                  atol=atol)
    for x, lg, atol in [(0.0, math.log(9999), 1e-3), (0.5, 0.001, 1e-5)]:
        pdf_score(T, CB, t([x]), [cb_value(x, logits=lg)], logits=t([lg]), expected_gradient=[cb_grad(x, logits=lg)],
                  atol=atol)


@pytest.mark.parametrize("dtype, lim, expected", [("float32", 1e38, 2.76898), ("float64", 1e308, 3.58473)])
def test_continuous_bernoulli_with_logits_under_and_overflow(T, dtype, lim, expected):
    CB, t = T.distributions.ContinuousBernoulli, (lambda v: T.tensor(v, dtype=getattr(T, dtype)))
    pdf_score(T, CB, t([0.0]), [expected], logits=t([-lim]), expected_gradient=[0.0])
    pdf_score(T, CB, t([1.0]), [expected], logits=t([lim]), expected_gradient=[0.0])
