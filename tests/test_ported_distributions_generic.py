"""The generic distribution checks ported from PyTorch's test/distributions/test_distributions.py
(TestDistributions: test_repr, test_sample_detached, test_rsample_requires_grad,
test_enumerate_support_type, test_lazy_property_grad, test_support_attributes, test_distribution_expand,
test_distribution_subclass_expand), run over a list of examples of every family as PyTorch's `_get_examples`.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, values


@pytest.fixture(autouse=True)
def validation_on(T):
    """PyTorch's DistributionsTestCase sets the default validation flag for every test."""
    T.distributions.Distribution.set_default_validate_args(True)
    yield


def positive(T, *shape, seed=0):
    return T.tensor(np.exp(np.random.default_rng(seed).standard_normal(shape))).float().requires_grad_()


def normal(T, *shape, seed=1):
    return T.tensor(np.random.default_rng(seed).standard_normal(shape)).float().requires_grad_()


def grad(T, values_):
    return T.tensor(values_, requires_grad=True)


def examples(T):
    """(Dist, [keyword arguments...]) for the families RL, VAE and Bayesian programs use, as PyTorch's
    _get_examples (random parameters drawn from NumPy with a fixed seed instead of torch.randn)."""
    D = T.distributions
    return [
        (D.Bernoulli, [{"probs": grad(T, [0.7, 0.2, 0.4])}, {"probs": grad(T, [0.3])}, {"probs": 0.3},
                       {"logits": grad(T, [0.0])}]),
        (D.Geometric, [{"probs": grad(T, [0.7, 0.2, 0.4])}, {"probs": grad(T, [0.3])}, {"probs": 0.3}]),
        (D.Beta, [{"concentration1": positive(T, 2, 3), "concentration0": positive(T, 2, 3, seed=1)},
                  {"concentration1": positive(T, 4), "concentration0": positive(T, 4, seed=2)}]),
        (D.Categorical, [{"probs": grad(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]])},
                         {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]])},
                         {"logits": grad(T, [[0.0, 0.0], [0.0, 0.0]])}]),
        (D.Binomial, [{"probs": grad(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]]), "total_count": 10},
                      {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]]), "total_count": 10},
                      {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]]), "total_count": T.tensor([10])},
                      {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]]), "total_count": T.tensor([10, 8])},
                      {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]]),
                       "total_count": T.tensor([[10.0, 8.0], [5.0, 3.0]])},
                      {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]]), "total_count": T.tensor(0.0)}]),
        (D.Multinomial, [{"probs": grad(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]]), "total_count": 10},
                         {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]]), "total_count": 10}]),
        (D.Cauchy, [{"loc": 0.0, "scale": 1.0}, {"loc": T.tensor([0.0]), "scale": 1.0},
                    {"loc": T.tensor([[0.0], [0.0]]), "scale": T.tensor([[1.0], [1.0]])}]),
        (D.StudentT, [{"df": positive(T, 2, 3)}, {"df": positive(T, 1)}]),
        (D.Dirichlet, [{"concentration": positive(T, 2, 3)}, {"concentration": positive(T, 4)}]),
        (D.Exponential, [{"rate": positive(T, 5, 5)}, {"rate": positive(T, 1)}]),
        (D.Gamma, [{"concentration": positive(T, 2, 3), "rate": positive(T, 2, 3, seed=3)},
                   {"concentration": positive(T, 1), "rate": positive(T, 1, seed=3)}]),
        (D.Gumbel, [{"loc": normal(T, 5, 5), "scale": positive(T, 5, 5)},
                    {"loc": normal(T, 1), "scale": positive(T, 1)}]),
        (D.HalfNormal, [{"scale": positive(T, 5, 5)}, {"scale": positive(T, 1)},
                        {"scale": grad(T, [1e-5, 1e-5])}]),
        (D.Independent, [{"base_distribution": D.Normal(normal(T, 2, 3), positive(T, 2, 3)),
                          "reinterpreted_batch_ndims": n} for n in (0, 1, 2)]
         + [{"base_distribution": D.Normal(normal(T, 2, 3, 5), positive(T, 2, 3, 5)),
             "reinterpreted_batch_ndims": n} for n in (2, 3)]),
        (D.Laplace, [{"loc": normal(T, 5, 5), "scale": positive(T, 5, 5)},
                     {"loc": normal(T, 1), "scale": positive(T, 1)},
                     {"loc": grad(T, [1.0, 0.0]), "scale": grad(T, [1e-5, 1e-5])}]),
        (D.LogNormal, [{"loc": normal(T, 5, 5), "scale": positive(T, 5, 5)},
                       {"loc": normal(T, 1), "scale": positive(T, 1)},
                       {"loc": grad(T, [1.0, 0.0]), "scale": grad(T, [1e-5, 1e-5])}]),
        (D.LowRankMultivariateNormal, [
            {"loc": normal(T, 5, 2), "cov_factor": normal(T, 5, 2, 1, seed=4), "cov_diag": grad(T, [2.0, 0.25])},
            {"loc": normal(T, 4, 3), "cov_factor": normal(T, 3, 2, seed=5), "cov_diag": positive(T, 3)}]),
        (D.MultivariateNormal, [
            {"loc": normal(T, 5, 2), "covariance_matrix": grad(T, [[2.0, 0.3], [0.3, 0.25]])},
            {"loc": normal(T, 2), "scale_tril": grad(T, [[2.0, 0.0], [-0.5, 0.25]])},
            {"loc": normal(T, 2, 3), "precision_matrix": grad(T, [[2.0, 0.1, 0.0], [0.1, 0.25, 0.0],
                                                                   [0.0, 0.0, 0.3]])}]),
        (D.Normal, [{"loc": normal(T, 5, 5), "scale": positive(T, 5, 5)},
                    {"loc": normal(T, 1), "scale": positive(T, 1)},
                    {"loc": grad(T, [1.0, 0.0]), "scale": grad(T, [1e-5, 1e-5])}]),
        (D.OneHotCategorical, [{"probs": grad(T, [[0.1, 0.2, 0.3], [0.5, 0.3, 0.2]])},
                               {"probs": grad(T, [[1.0, 0.0], [0.0, 1.0]])},
                               {"logits": grad(T, [[0.0, 0.0], [0.0, 0.0]])}]),
        (D.Poisson, [{"rate": positive(T, 5, 5)}, {"rate": positive(T, 1)}, {"rate": 0.2},
                     {"rate": T.tensor([0.0], requires_grad=True)}, {"rate": 0.0}]),
        (D.RelaxedBernoulli, [{"temperature": grad(T, [0.5]), "probs": grad(T, [0.7, 0.2, 0.4])},
                              {"temperature": grad(T, [0.5]), "probs": grad(T, [0.3])},
                              {"temperature": grad(T, 0.5), "probs": 0.3},
                              {"temperature": grad(T, [0.5]), "logits": grad(T, [0.0])}]),
        (D.RelaxedOneHotCategorical, [
            {"temperature": grad(T, [0.5]), "probs": grad(T, [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])},
            {"temperature": grad(T, [2.0]), "probs": grad(T, [[1.0, 0.0]])},
            {"temperature": grad(T, [7.0]), "logits": grad(T, [[0.0, 0.0], [0.0, 0.0]])}]),
        (D.TransformedDistribution, [
            {"base_distribution": D.Normal(normal(T, 2, 3), positive(T, 2, 3)), "transforms": []},
            {"base_distribution": D.Normal(normal(T, 2, 3), positive(T, 2, 3)),
             "transforms": D.ExpTransform()},
            {"base_distribution": D.Normal(normal(T, 2, 3, 5), positive(T, 2, 3, 5)),
             "transforms": [D.AffineTransform(normal(T, 3, 5), positive(T, 3, 5)), D.ExpTransform()]},
            {"base_distribution": D.Normal(normal(T, 2, 3, 5), positive(T, 2, 3, 5)),
             "transforms": D.AffineTransform(1, 2)}]),
        (D.Uniform, [{"low": T.zeros(5, 5, requires_grad=True), "high": T.ones(5, 5, requires_grad=True)},
                     {"low": T.zeros(1, requires_grad=True), "high": T.ones(1, requires_grad=True)},
                     {"low": grad(T, [1.0, 1.0]), "high": grad(T, [2.0, 3.0])}]),
        (D.VonMises, [{"loc": T.tensor(1.0), "concentration": T.tensor(10.0)},
                      {"loc": T.tensor([0.0, 0.0]), "concentration": T.tensor([1.0, 10.0])}]),
        (D.MixtureSameFamily, [
            {"mixture_distribution": D.Categorical(T.rand(5)),
             "component_distribution": D.Normal(T.randn(5), T.rand(5))},
            {"mixture_distribution": D.Categorical(T.rand(5)),
             "component_distribution": D.MultivariateNormal(loc=T.randn(5, 2), covariance_matrix=T.eye(2))}]),
    ]


def each(T):
    for Dist, params in examples(T):
        for i, param in enumerate(params):
            yield Dist, i, param


def test_repr(T):
    for Dist, _, param in each(T):
        d = Dist(**param)
        assert repr(d).startswith(d.__class__.__name__)


def test_sample_detached(T):
    for Dist, i, param in each(T):
        if not any(getattr(p, "requires_grad", False) for p in param.values()):
            continue
        assert not Dist(**param).sample().requires_grad, f"{Dist.__name__} example {i}: .sample() is not detached"


def test_rsample_requires_grad(T):
    for Dist, i, param in each(T):
        if not any(getattr(p, "requires_grad", False) for p in param.values()):
            continue
        d = Dist(**param)
        if d.has_rsample:
            assert d.rsample().requires_grad, f"{Dist.__name__} example {i}: .rsample() does not require grad"


def test_enumerate_support_type(T):
    for Dist, _, param in each(T):
        d = Dist(**param)
        try:
            assert type(d.sample()) is type(d.enumerate_support())
        except NotImplementedError:
            pass


def test_lazy_property_grad(T):
    from importlib import import_module
    lazy_property = import_module(T.__name__ + ".distributions.utils").lazy_property
    x = T.randn(1, requires_grad=True)

    class Dummy:
        @lazy_property
        def y(self):
            return x + 1

    def check():
        x.grad = None
        Dummy().y.backward()
        close(x.grad, [1.0])

    check()
    with T.no_grad():
        check()
    cov = T.eye(2, requires_grad=True)
    distn = T.distributions.MultivariateNormal(T.randn(2), cov)
    with T.no_grad():
        distn.scale_tril  # noqa: B018  (the first use, under no_grad)
    distn.scale_tril.sum().backward()
    assert cov.grad is not None


def test_support_attributes(T):
    for Dist, _, param in each(T):
        d = Dist(**param)
        event_dim = len(d.event_shape)
        assert d.support.event_dim == event_dim
        try:
            assert Dist.support.event_dim == event_dim
        except NotImplementedError:
            pass
        try:
            assert Dist.support.is_discrete == d.support.is_discrete
        except NotImplementedError:
            pass


def check_expand(d, expand_by, as_list):
    expanded_shape = tuple(expand_by) + tuple(d.batch_shape)
    original_shape = tuple(d.batch_shape) + tuple(d.event_shape)
    expanded = d.expand(batch_shape=list(expanded_shape) if as_list else expanded_shape)
    sample = expanded.sample()
    assert expanded.__class__ is d.__class__
    assert tuple(d.sample().shape) == original_shape
    np.testing.assert_allclose(values(expanded.log_prob(sample)), values(d.log_prob(sample)), rtol=1e-6)
    assert tuple(expanded.sample().shape) == tuple(expand_by) + original_shape
    assert tuple(expanded.batch_shape) == expanded_shape
    return expanded, expanded_shape


def test_distribution_expand(T):
    for Dist, _, param in each(T):
        for shape in [(), (2,), (2, 1)]:
            d = Dist(**param)
            expanded, expanded_shape = check_expand(d, shape, as_list=True)
            try:
                mean, variance = d.mean, d.variance
            except NotImplementedError:
                continue
            full = expanded_shape + tuple(d.event_shape)
            np.testing.assert_array_equal(values(expanded.mean), values(mean.expand(full)))
            np.testing.assert_array_equal(values(expanded.variance), values(variance.expand(full)))


def test_distribution_subclass_expand(T):
    for Dist, params in examples(T):

        class SubClass(Dist):
            pass

        for param in params:
            check_expand(SubClass(**param), (2,), as_list=False)


def test_independent_shape(T):
    D = T.distributions
    for Dist, _, param in each(T):
        base = Dist(**param)
        x = base.sample()
        base_shape = tuple(base.log_prob(x).shape)
        for n in range(len(base.batch_shape) + 1):
            indep = D.Independent(base, n)
            shape = base_shape[:len(base_shape) - n]
            assert tuple(indep.log_prob(x).shape) == shape
            assert tuple(indep.sample().shape) == tuple(base.sample().shape)
            assert indep.has_rsample == base.has_rsample
            if indep.has_rsample:
                assert tuple(indep.rsample().shape) == tuple(base.sample().shape)
            try:
                assert tuple(indep.enumerate_support().shape) == tuple(base.enumerate_support().shape)
                assert tuple(indep.mean.shape) == tuple(base.mean.shape)
            except NotImplementedError:
                pass
            try:
                assert tuple(indep.variance.shape) == tuple(base.variance.shape)
            except NotImplementedError:
                pass
            try:
                assert tuple(indep.entropy().shape) == shape
            except NotImplementedError:
                pass


def test_independent_expand(T):
    D = T.distributions
    for Dist, _, param in each(T):
        base = Dist(**param)
        for n in range(len(base.batch_shape) + 1):
            for s in [(), (2,), (2, 3)]:
                indep = D.Independent(base, n)
                expanded_shape = s + tuple(indep.batch_shape)
                expanded = indep.expand(expanded_shape)
                x = expanded.sample()
                assert tuple(x.shape) == expanded_shape + tuple(indep.event_shape)
                np.testing.assert_allclose(values(expanded.log_prob(x)), values(indep.log_prob(x)), rtol=1e-6)
                assert tuple(expanded.event_shape) == tuple(indep.event_shape)
                assert tuple(expanded.batch_shape) == expanded_shape


def test_cdf_icdf_inverse(T):
    T.manual_seed(0)  # (PyTorch's TestCase seeds each test: a draw 5σ out leaves float32's cdf no digits to invert)
    for Dist, i, param in each(T):
        d = Dist(**param)
        x = d.sample(sample_shape=(20,))
        try:
            actual = d.icdf(d.cdf(x))
        except NotImplementedError:
            continue
        error = np.abs(values(actual) - values(x)) / (1e-10 + np.abs(values(x)))
        assert error.max() < 1e-3, f"{Dist.__name__} example {i}: icdf(cdf(x)) != x"


def test_cdf_log_prob(T):
    """d cdf(x) / dx is the density."""
    for Dist, i, param in each(T):
        param = {k: v.detach() if hasattr(v, "detach") else v for k, v in param.items()}
        d = Dist(**param)
        x = d.sample()
        if not d.support.is_discrete:
            x.requires_grad_()
        try:
            cdfs = d.cdf(x)
            pdfs = d.log_prob(x).exp()
        except NotImplementedError:
            continue
        derivative = T.autograd.grad(cdfs.sum(), [x])[0]
        np.testing.assert_allclose(values(derivative), values(pdfs), rtol=2e-3, atol=1e-5,
                                   err_msg=f"{Dist.__name__} example {i}: d(cdf)/dx != pdf(x)")


def test_mode(T):
    """The mode is finite for a whole event or not at all, and no nearby point (a step away for the
    discrete laws, a small perturbation in the unconstrained space otherwise) is more probable."""
    D = T.distributions
    discrete = (D.Bernoulli, D.Binomial, D.Categorical, D.Geometric, D.OneHotCategorical, D.Poisson)
    no_mode = (D.MixtureSameFamily, D.Multinomial, D.RelaxedBernoulli, D.RelaxedOneHotCategorical)
    T.manual_seed(0)  # (PyTorch's TestCase seeds each test)
    for Dist, i, param in each(T):
        d = Dist(**param)
        if isinstance(d, no_mode) or type(d) is D.TransformedDistribution:
            with pytest.raises(NotImplementedError):
                d.mode  # noqa: B018
            continue
        mode = d.mode
        finite = values(mode.isfinite()).reshape(tuple(d.batch_shape) + (-1,))
        batch_finite = finite.all(-1)
        assert (batch_finite | ~finite.any(-1)).all()
        sane = T.where(~mode.isnan(), mode, d.sample())
        log_prob_mode = values(d.log_prob(sane))
        assert not np.isnan(log_prob_mode).any(), f"{Dist.__name__} example {i}"
        if isinstance(d, discrete):
            for step in (-1, 1):
                if isinstance(d, D.OneHotCategorical):
                    other = values(sane).copy()
                    other = np.roll(other, step, axis=-1)
                else:
                    other = values(sane) + step
                other_t = T.tensor(other, dtype=sane.dtype)
                mask = batch_finite & values(d.support.check(other_t)).astype(bool)
                if not mask.any():
                    continue
                other_t = T.where(T.tensor(mask if mask.ndim == other.ndim else mask[..., None]), other_t, sane)
                delta = log_prob_mode - values(d.log_prob(other_t))
                assert (delta[mask] > -1e-12).all(), f"{Dist.__name__} example {i}"
        else:
            transform = T.distributions.transform_to(d.support)
            unconstrained = transform.inv(sane)
            perturbation = 1e-5 * (T.rand((10,) + tuple(unconstrained.shape)) - 0.5)
            other = values(d.log_prob(transform(perturbation + unconstrained)))
            delta = log_prob_mode - other
            delta[(log_prob_mode == other) & np.isinf(other)] = 0.0
            assert (delta > -1e-6).all(axis=0)[batch_finite].all(), f"{Dist.__name__} example {i}"
