"""The discrete families' tests ported from PyTorch's test/distributions/test_distributions.py
(TestDistributions: test_bernoulli*, test_geometric*, test_binomial*, test_multinomial*,
test_categorical*, test_one_hot_categorical*, test_poisson*): sample shapes, log_prob against the
closed form, the log_prob gradient by finite differences (float64), entropy, enumerate_support and the
extreme parameters. SciPy's references are replaced by the closed forms.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import close, values


@pytest.fixture(autouse=True)
def validation_on(T):
    T.distributions.Distribution.set_default_validate_args(True)
    T.manual_seed(0)
    yield


def f64(T, data, requires_grad=True):
    return T.tensor(data, dtype=T.float64, requires_grad=requires_grad)


def gradcheck_log_prob(T, ctor, params):
    """PyTorch's _gradcheck_log_prob: log_prob of a draw, as a function of the draw (when continuous)
    and of the parameters, passes gradcheck."""
    d = ctor(*params)
    s = d.sample()
    if not d.support.is_discrete:
        s = s.detach().requires_grad_()
    assert tuple(s.shape) == tuple(d.batch_shape) + tuple(d.event_shape)
    assert T.autograd.gradcheck(lambda s, *p: ctor(*p).log_prob(s), (s, *params), raise_exception=True)


def check_log_prob(d, reference):
    """PyTorch's _check_log_prob: each element of log_prob(draw) against reference(index, value)."""
    s = d.sample()
    log_probs = values(d.log_prob(s)).reshape(-1)
    s = values(s).reshape(len(log_probs), -1)
    for i, (v, lp) in enumerate(zip(s, log_probs)):
        np.testing.assert_allclose(lp, reference(i, v.squeeze()), rtol=1e-5, atol=1e-5)


def check_enumerate_support(T, Dist, examples):
    for params, expected in examples:
        d = Dist(**{k: T.tensor(v) for k, v in params.items()})
        actual = d.enumerate_support(expand=False)
        np.testing.assert_array_equal(values(actual), np.array(expected, dtype=values(actual).dtype))
        expanded = d.enumerate_support(expand=True)
        full = np.broadcast_to(np.array(expected), (len(expected),) + tuple(d.batch_shape) + tuple(d.event_shape))
        np.testing.assert_array_equal(values(expanded), full)


def binomial_log_pmf(n, p, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + \
        (n - k) * math.log1p(-p)


def test_bernoulli(T):
    D = T.distributions
    p, r, s = f64(T, [0.7, 0.2, 0.4]), f64(T, 0.3), 0.3
    assert tuple(D.Bernoulli(p).sample((8,)).shape) == (8, 3)
    assert not D.Bernoulli(p).sample().requires_grad
    assert tuple(D.Bernoulli(r).sample((8,)).shape) == (8,)
    assert tuple(D.Bernoulli(r).sample().shape) == ()
    assert tuple(D.Bernoulli(r).sample((3, 2)).shape) == (3, 2)
    assert tuple(D.Bernoulli(s).sample().shape) == ()
    gradcheck_log_prob(T, D.Bernoulli, (p,))
    pv = values(p)

    def reference(i, v):
        return math.log(pv[i] if v else 1 - pv[i])

    check_log_prob(D.Bernoulli(p), reference)
    check_log_prob(D.Bernoulli(logits=p.log() - (-p).log1p()), reference)
    with pytest.raises(NotImplementedError):
        D.Bernoulli(r).rsample()
    close(D.Bernoulli(p).entropy(), [0.6108, 0.5004, 0.6730], atol=1e-4, rtol=0)
    close(D.Bernoulli(T.tensor([0.0])).entropy(), [0.0])
    close(D.Bernoulli(s).entropy(), 0.6108, atol=1e-4, rtol=0)


def test_bernoulli_enumerate_support(T):
    check_enumerate_support(T, T.distributions.Bernoulli, [
        ({"probs": [0.1]}, [[0], [1]]),
        ({"probs": [0.1, 0.9]}, [[0], [1]]),
        ({"probs": [[0.1, 0.2], [0.3, 0.4]]}, [[[0]], [[1]]])])


def test_bernoulli_3d(T):
    p = T.full((2, 3, 5), 0.5).requires_grad_()
    d = T.distributions.Bernoulli(p)
    assert tuple(d.sample().shape) == (2, 3, 5)
    assert tuple(d.sample(sample_shape=(2, 5)).shape) == (2, 5, 2, 3, 5)
    assert tuple(d.sample((2,)).shape) == (2, 2, 3, 5)


def test_geometric(T):
    D = T.distributions
    p, r, s = f64(T, [0.7, 0.2, 0.4]), f64(T, 0.3), 0.3
    assert tuple(D.Geometric(p).sample((8,)).shape) == (8, 3)
    assert values(D.Geometric(1).sample()) == 0
    assert values(D.Geometric(1).log_prob(T.tensor(1.0))) == -np.inf
    assert values(D.Geometric(1).log_prob(T.tensor(0.0))) == 0
    assert not D.Geometric(p).sample().requires_grad
    assert tuple(D.Geometric(r).sample((8,)).shape) == (8,)
    assert tuple(D.Geometric(r).sample().shape) == ()
    assert tuple(D.Geometric(r).sample((3, 2)).shape) == (3, 2)
    assert tuple(D.Geometric(s).sample().shape) == ()
    gradcheck_log_prob(T, D.Geometric, (p,))
    with pytest.raises(ValueError):
        D.Geometric(0)
    with pytest.raises(NotImplementedError):
        D.Geometric(r).rsample()


def test_geometric_log_prob_and_entropy(T):
    """P(k) = (1 - p)^k p on k = 0, 1, ...; H = -((1 - p) ln(1 - p) + p ln p) / p."""
    D = T.distributions
    p = f64(T, [0.7, 0.2, 0.4])
    pv = values(p)

    def reference(i, k):
        return k * math.log1p(-pv[i]) + math.log(pv[i])

    check_log_prob(D.Geometric(p), reference)
    check_log_prob(D.Geometric(logits=p.log() - (-p).log1p()), reference)
    close(D.Geometric(p).entropy(), -((1 - pv) * np.log1p(-pv) + pv * np.log(pv)) / pv, atol=1e-3, rtol=0)
    close(D.Geometric(0.3).entropy(), -(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) / 0.3, atol=1e-3, rtol=0)


def test_geometric_sample_mean(T):
    """Mean (1 - p) / p of many draws (PyTorch's chi-squared check, as a moment)."""
    for prob in [0.18, 0.8]:
        draws = values(T.distributions.Geometric(prob).sample((20000,)))
        assert abs(draws.mean() - (1 - prob) / prob) < 6 * math.sqrt((1 - prob) / prob**2 / 20000)


def test_binomial(T):
    D = T.distributions
    p = T.arange(0.05, 1, 0.1, dtype=T.float64).requires_grad_()
    for total_count in [1, 2, 10]:
        gradcheck_log_prob(T, lambda p, n=total_count: D.Binomial(n, p), [p])
        gradcheck_log_prob(T, lambda p, n=total_count: D.Binomial(n, None, p.log()), [p])
    with pytest.raises(NotImplementedError):
        D.Binomial(10, p).rsample()


def test_binomial_log_prob_and_entropy(T):
    D = T.distributions
    probs = T.arange(0.05, 1, 0.1, dtype=T.float64)
    pv = values(probs)
    for n in [1, 2, 10]:
        def reference(i, k, n=n):
            return binomial_log_pmf(n, pv[i], k)

        check_log_prob(D.Binomial(n, probs), reference)
        logits = probs.log() - (-probs).log1p()
        check_log_prob(D.Binomial(n, logits=logits), reference)
        entropy = [-sum(math.exp(binomial_log_pmf(n, q, k)) * binomial_log_pmf(n, q, k) for k in range(n + 1))
                   for q in pv]
        close(D.Binomial(n, logits=logits).entropy(), entropy, atol=1e-3, rtol=0)


def test_binomial_stable(T):
    D = T.distributions
    log_prob = D.Binomial(1.0, logits=T.tensor([-100.0, 100.0])).log_prob(T.tensor([0.0, 0.0]))
    assert bool(T.isfinite(log_prob).all())
    x = T.tensor(0.0, requires_grad=True)
    y = D.Binomial(1.0, logits=x).log_prob(T.tensor(0.0))
    close(T.autograd.grad(y, x)[0], -0.5)


def test_binomial_log_prob_vectorized_count(T):
    probs = [0.2, 0.7, 0.9]
    for total_count, sample in [([10], [7.0, 3.0, 9.0]), ([1, 2, 10], [0.0, 1.0, 9.0])]:
        log_prob = T.distributions.Binomial(T.tensor(total_count), T.tensor(probs, dtype=T.float64)).log_prob(
            T.tensor(sample, dtype=T.float64))
        counts = np.broadcast_to(total_count, (3,))
        close(log_prob, [binomial_log_pmf(n, q, k) for n, q, k in zip(counts, probs, sample)], atol=1e-4, rtol=0)


def test_binomial_enumerate_support(T):
    check_enumerate_support(T, T.distributions.Binomial, [
        ({"probs": [0.1], "total_count": 2}, [[0], [1], [2]]),
        ({"probs": [0.1, 0.9], "total_count": 2}, [[0], [1], [2]]),
        ({"probs": [[0.1, 0.2], [0.3, 0.4]], "total_count": 3}, [[[0]], [[1]], [[2]], [[3]]])])


def test_binomial_extreme_vals(T):
    """(PyTorch's test runs with float64 as the default dtype: the clamped probabilities are float64's.)"""
    D = T.distributions
    bin0 = D.Binomial(100, T.tensor(0.0, dtype=T.float64))
    assert values(bin0.sample()) == 0
    close(bin0.log_prob(T.tensor([0.0]))[0], 0, atol=1e-3, rtol=0)
    close(bin0.log_prob(T.tensor([1.0], dtype=T.float64)).exp(), [0.0], atol=1e-7)  # (assertEqual's tolerance)
    bin1 = D.Binomial(100, T.tensor(1.0, dtype=T.float64))
    assert values(bin1.sample()) == 100
    close(bin1.log_prob(T.tensor([100.0]))[0], 0, atol=1e-3, rtol=0)
    close(bin1.log_prob(T.tensor([99.0], dtype=T.float64)).exp(), [0.0], atol=1e-7)
    zero_counts = T.zeros(2, 2)
    bin2 = D.Binomial(zero_counts, 1)
    close(bin2.sample(), np.zeros((2, 2)))
    close(bin2.log_prob(zero_counts), np.zeros((2, 2)))


def test_binomial_vectorized_count(T):
    D = T.distributions
    total_count = T.tensor([[4, 7], [3, 8]], dtype=T.float64)
    close(D.Binomial(total_count, T.tensor(1.0)).sample(), values(total_count))
    bin1 = D.Binomial(total_count, T.tensor(0.5))
    samples = bin1.sample((20000,))
    assert bool((samples <= total_count.type_as(samples)).all())
    close(samples.mean(dim=0), values(bin1.mean), atol=0.05, rtol=0)
    close(samples.var(dim=0), values(bin1.variance), atol=0.1, rtol=0)


def test_zero_excluded_binomial(T):
    D = T.distributions
    vals = D.Binomial(total_count=T.tensor(1.0), probs=T.tensor(0.9)).sample((100000,))
    assert bool((vals >= 0).all())
    vals = D.Binomial(total_count=T.tensor(1.0), probs=T.tensor(0.1)).sample((100000,))
    assert bool((vals < 2).all())
    vals = D.Binomial(total_count=T.tensor(1.0), probs=T.tensor(0.5)).sample((10000,))
    assert int((vals == 0.0).sum()) > 4000 and int((vals == 1.0).sum()) > 4000


def test_multinomial_1d(T):
    D = T.distributions
    p = f64(T, [0.1, 0.2, 0.3])
    assert tuple(D.Multinomial(10, p).sample().shape) == (3,)
    assert tuple(D.Multinomial(10, p).sample((2, 2)).shape) == (2, 2, 3)
    assert tuple(D.Multinomial(10, p).sample((1,)).shape) == (1, 3)
    gradcheck_log_prob(T, lambda p: D.Multinomial(10, p), [p])
    gradcheck_log_prob(T, lambda p: D.Multinomial(10, None, p.log()), [p])
    with pytest.raises(NotImplementedError):
        D.Multinomial(10, p).rsample()


def test_multinomial_1d_log_prob(T):
    """log P(x) = ln n! - Σ ln x_i! + Σ x_i ln p_i, p normalised."""
    D = T.distributions
    p = f64(T, [0.1, 0.2, 0.3])
    q = values(p) / values(p).sum()
    for d in (D.Multinomial(10, probs=p), D.Multinomial(10, logits=p.log())):
        x = values(d.sample())
        expected = math.lgamma(11) - sum(math.lgamma(k + 1) for k in x) + float((x * np.log(q)).sum())
        close(d.log_prob(T.tensor(x, dtype=T.float64)), expected)


def test_multinomial_2d(T):
    D = T.distributions
    p = f64(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]])
    s = f64(T, [[1.0, 0.0], [0.0, 1.0]])
    assert tuple(D.Multinomial(10, p).sample().shape) == (2, 3)
    assert tuple(D.Multinomial(10, p).sample(sample_shape=(3, 4)).shape) == (3, 4, 2, 3)
    assert tuple(D.Multinomial(10, p).sample((6,)).shape) == (6, 2, 3)
    gradcheck_log_prob(T, lambda p: D.Multinomial(10, p), [p])
    gradcheck_log_prob(T, lambda p: D.Multinomial(10, None, p.log()), [p])
    same = D.Multinomial(10, s).sample()
    np.testing.assert_array_equal(values(same), [[10, 0], [0, 10]])


def test_categorical_1d(T):
    D = T.distributions
    p = f64(T, [0.1, 0.2, 0.3])
    assert np.isnan(values(D.Categorical(p).mean)).all()
    assert np.isnan(values(D.Categorical(p).variance)).all()
    assert tuple(D.Categorical(p).sample().shape) == ()
    assert not D.Categorical(p).sample().requires_grad
    assert tuple(D.Categorical(p).sample((2, 2)).shape) == (2, 2)
    assert tuple(D.Categorical(p).sample((1,)).shape) == (1,)
    gradcheck_log_prob(T, D.Categorical, (p,))
    with pytest.raises(NotImplementedError):
        D.Categorical(p).rsample()


def test_categorical_2d(T):
    D = T.distributions
    p = f64(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]])
    s = f64(T, [[1.0, 0.0], [0.0, 1.0]])
    assert tuple(D.Categorical(p).mean.shape) == (2,)
    assert tuple(D.Categorical(p).variance.shape) == (2,)
    assert np.isnan(values(D.Categorical(p).mean)).all() and np.isnan(values(D.Categorical(p).variance)).all()
    assert tuple(D.Categorical(p).sample().shape) == (2,)
    assert tuple(D.Categorical(p).sample(sample_shape=(3, 4)).shape) == (3, 4, 2)
    assert tuple(D.Categorical(p).sample((6,)).shape) == (6, 2)
    gradcheck_log_prob(T, D.Categorical, (p,))
    np.testing.assert_array_equal(values(D.Categorical(s).sample(sample_shape=(2,))), [[0, 1], [0, 1]])
    pv = values(p)

    def reference(i, v):
        return math.log(pv[i][int(v)] / pv[i].sum())

    check_log_prob(D.Categorical(p), reference)
    check_log_prob(D.Categorical(logits=p.log()), reference)
    close(D.Categorical(p).entropy(), [1.0114, 1.0297], atol=1e-4, rtol=0)
    close(D.Categorical(s).entropy(), [0.0, 0.0])
    # gh-40553: -inf logits add nothing to the entropy
    logits = p.log()
    logits[1, 1] = logits[0, 2] = float("-inf")
    close(D.Categorical(logits=logits).entropy(), [0.6365, 0.5983], atol=1e-4, rtol=0)


def test_categorical_enumerate_support(T):
    check_enumerate_support(T, T.distributions.Categorical, [
        ({"probs": [0.1, 0.2, 0.7]}, [0, 1, 2]),
        ({"probs": [[0.1, 0.9], [0.3, 0.7]]}, [[0], [1]])])


def test_one_hot_categorical_1d(T):
    D = T.distributions
    p = f64(T, [0.1, 0.2, 0.3])
    assert tuple(D.OneHotCategorical(p).sample().shape) == (3,)
    assert not D.OneHotCategorical(p).sample().requires_grad
    assert tuple(D.OneHotCategorical(p).sample((2, 2)).shape) == (2, 2, 3)
    assert tuple(D.OneHotCategorical(p).sample((1,)).shape) == (1, 3)
    gradcheck_log_prob(T, D.OneHotCategorical, (p,))
    with pytest.raises(NotImplementedError):
        D.OneHotCategorical(p).rsample()


def test_one_hot_categorical_2d(T):
    D = T.distributions
    p = f64(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]])
    assert tuple(D.OneHotCategorical(p).sample().shape) == (2, 3)
    assert tuple(D.OneHotCategorical(p).sample(sample_shape=(3, 4)).shape) == (3, 4, 2, 3)
    assert tuple(D.OneHotCategorical(p).sample((6,)).shape) == (6, 2, 3)
    gradcheck_log_prob(T, D.OneHotCategorical, (p,))
    d = D.OneHotCategorical(p)
    x = d.sample()
    close(d.log_prob(x), values(D.Categorical(p).log_prob(x.max(-1)[1])))


def test_one_hot_categorical_enumerate_support(T):
    check_enumerate_support(T, T.distributions.OneHotCategorical, [
        ({"probs": [0.1, 0.2, 0.7]}, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        ({"probs": [[0.1, 0.9], [0.3, 0.7]]}, [[[1, 0]], [[0, 1]]])])


def test_poisson_shape(T):
    D = T.distributions
    rate = T.tensor(np.abs(np.random.default_rng(0).standard_normal((2, 3)))).float().requires_grad_()
    rate_1d = T.tensor([0.4], requires_grad=True)
    assert tuple(D.Poisson(rate).sample().shape) == (2, 3)
    assert tuple(D.Poisson(rate).sample((7,)).shape) == (7, 2, 3)
    assert tuple(D.Poisson(rate_1d).sample().shape) == (1,)
    assert tuple(D.Poisson(rate_1d).sample((1,)).shape) == (1, 1)
    assert tuple(D.Poisson(2.0).sample((2,)).shape) == (2,)


def test_poisson_log_prob(T):
    """log P(k) = k ln λ - λ - ln k!; at λ = 0 the derivative of log P(1) is 1/λ = inf."""
    D = T.distributions
    rate = T.tensor(np.abs(np.random.default_rng(0).standard_normal((2, 3)))).requires_grad_()
    rate_1d = T.tensor([0.7], dtype=T.float64, requires_grad=True)
    rate_zero = T.zeros((), dtype=T.float64, requires_grad=True)
    for r in (rate, rate_zero):
        lam = values(r).reshape(-1)

        def reference(i, k, lam=lam):
            return (k * math.log(lam[i]) if k else 0.0) - lam[i] - math.lgamma(k + 1)

        check_log_prob(D.Poisson(r), reference)
    gradcheck_log_prob(T, D.Poisson, (rate,))
    gradcheck_log_prob(T, D.Poisson, (rate_1d,))
    D.Poisson(rate_zero).log_prob(T.ones_like(rate_zero)).backward()
    assert values(rate_zero.grad) == np.inf


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_poisson_sample_moments(T, dtype):
    for rate in [0.1, 1.0, 5.0]:
        draws = values(T.distributions.Poisson(T.tensor([rate], dtype=getattr(T, dtype))).sample((20000,)))
        assert draws.dtype == np.dtype(dtype)
        assert abs(draws.mean() - rate) < 6 * math.sqrt(rate / 20000)
        assert abs(draws.var() - rate) < 0.1 * rate + 0.02
