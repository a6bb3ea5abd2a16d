"""Shapes, argument validation and constraints ported from PyTorch's
test/distributions/test_distributions.py: TestDistributionShapes, test_valid/invalid_parameter_broadcasting,
TestValidation (test_valid, test_invalid, test_invalid_log_probs_arg,
test_warning_unimplemented_constraints), TestConstraints and TestLazyLogitsInitialization.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import raises
from tests.test_ported_distributions_generic import each, examples


@pytest.fixture(autouse=True)
def validation_on(T):
    T.distributions.Distribution.set_default_validate_args(True)
    T.manual_seed(0)
    yield


def shape(t):
    """A tensor's shape, or a Size, as a tuple."""
    return tuple(getattr(t, "shape", t))


# (constructor, batch shape, event shape, [(value, log_prob shape or ValueError)]): PyTorch's
# TestDistributionShapes; "1" is a Python number (refused: log_prob takes a Tensor), s1 = ones(3, 2),
# s2 = ones(3, 2, 3)
def shape_cases(T):
    D, t = T.distributions, T.tensor
    s1, s2 = T.ones(3, 2), T.ones(3, 2, 3)
    p32 = t([[0.6, 0.3], [0.6, 0.3], [0.6, 0.3]])
    scalar_checks = [(1, ValueError), (s1, (3, 2)), (s2, (3, 2, 3))]
    two = [(s1, (3, 2)), (s2, ValueError), (T.ones(2, 1), (2, 2))]
    return [
        (D.Bernoulli(0.3), (), (), scalar_checks),
        (D.Bernoulli(p32), (3, 2), (), [(s1, (3, 2)), (s2, ValueError), (T.ones(3, 1, 1), (3, 3, 2))]),
        (D.Geometric(0.3), (), (), scalar_checks),
        (D.Geometric(p32), (3, 2), (), [(s1, (3, 2)), (s2, ValueError), (T.ones(3, 1, 1), (3, 3, 2))]),
        (D.Beta(0.1, 0.1), (), (), scalar_checks),
        (D.Beta(t([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), t([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])), (3, 2), (),
         [(s1, (3, 2)), (s2, ValueError), (T.ones(3, 1, 1), (3, 3, 2))]),
        (D.Binomial(10, t([0.6, 0.3])), (2,), (), [(s1, (3, 2)), (s2, ValueError)]),
        (D.Binomial(t([[10, 3, 1], [4, 8, 4]]), t([0.6, 0.3, 0.1])), (2, 3), (), [(s2, (3, 2, 3)), (s1, ValueError)]),
        (D.Multinomial(10, p32), (3,), (2,), [(s1, (3,)), (s2, ValueError), (T.ones(3, 1, 2), (3, 3))]),
        (D.Categorical(t([0.6, 0.3, 0.1])), (), (), [(s1, (3, 2)), (s2, (3, 2, 3)), (T.ones(3, 1), (3, 1))]),
        (D.Categorical(p32), (3,), (), [(s1, ValueError), (s2, (3, 2, 3)), (T.ones(3, 1), (3, 3))]),
        (D.OneHotCategorical(t([0.6, 0.3, 0.1])), (), (3,),
         [(s1, ValueError), (t([0.0, 1.0, 0.0]).expand(3, 2, 3), (3, 2)), (T.eye(3), (3,))]),
        (D.OneHotCategorical(p32), (3,), (2,),
         [(t([0.0, 1.0]), (3,)), (s2, ValueError), (t([0.0, 1.0]).expand(3, 1, 2), (3, 3))]),
        (D.Cauchy(0, 1), (), (), scalar_checks),
        (D.Cauchy(t([0.0, 0.0]), t([1.0, 1.0])), (2,), (), two),
        (D.HalfCauchy(1), (), (), scalar_checks),
        (D.HalfCauchy(t([1.0, 1.0])), (2,), (), two),
        (D.Dirichlet(t([[0.6, 0.3], [1.6, 1.3], [2.6, 2.3]])), (3,), (2,),
         [(s1 / s1.sum(-1, keepdim=True), (3,)), (s2, ValueError), (T.full((3, 1, 2), 0.5), (3, 3))]),
        (D.MixtureSameFamily(D.Categorical(T.rand(5)), D.Normal(T.randn(5), T.rand(5))), (), (),
         [(s1, (3, 2)), (s2, (3, 2, 3))]),
        (D.Gamma(1, 1), (), (), [(1, ()), (s1, (3, 2)), (s2, (3, 2, 3))]),  # (Gamma alone takes a number)
        (D.Gamma(t([1.0, 1.0]), t([1.0, 1.0])), (2,), (), two),
        (D.Chi2(1), (), (), [(1, ()), (s1, (3, 2)), (s2, (3, 2, 3))]),
        (D.Chi2(t([1.0, 1.0])), (2,), (), two),
        (D.StudentT(1), (), (), scalar_checks),
        (D.StudentT(t([1.0, 1.0])), (2,), (), two),
        (D.Pareto(1, 1), (), (), [(s1 + 1, (3, 2)), (s2 + 1, (3, 2, 3))]),
        (D.Gumbel(1, 1), (), (), [(s1, (3, 2)), (s2, (3, 2, 3))]),
        (D.VonMises(t([0.0, 0.0]), t([1.0, 1.0])), (2,), (), [(s1, (3, 2)), (T.ones(2, 1), (2, 2))]),
        (D.VonMises(0.0, 1.0), (), (), [(s1, (3, 2)), (s2, (3, 2, 3))]),
        (D.Normal(0, 1), (), (), scalar_checks),
        (D.Normal(t([0.0, 0.0]), t([1.0, 1.0])), (2,), (), two),
        (D.Uniform(0, 1), (), (), [(1, ValueError), (s1 * 0.5, (3, 2)), (s2 * 0.5, (3, 2, 3))]),
        (D.Uniform(t([0.0, 0.0]), t([1.0, 1.0])), (2,), (),
         [(s1 * 0.5, (3, 2)), (s2 * 0.5, ValueError), (T.full((2, 1), 0.5), (2, 2))]),
        (D.Exponential(1.0), (), (), scalar_checks),
        (D.Exponential(t([1.0, 1.0])), (2,), (), [(s1, (3, 2)), (s2, ValueError), (T.ones(2, 2), (2, 2))]),
        (D.Laplace(0, 1), (), (), scalar_checks),
        (D.Laplace(t([0.0, 0.0]), t([1.0, 1.0])), (2,), (), two),
        (D.ContinuousBernoulli(0.3), (), (), scalar_checks),
        (D.ContinuousBernoulli(p32), (3, 2), (), [(s1, (3, 2)), (s2, ValueError), (T.ones(3, 1, 1), (3, 3, 2))]),
        (D.Wishart(t(1), t([[1.0]])), (), (1, 1), [(1, ValueError)]),
        (D.Wishart(t([1.0, 1.0]), t([[[1.0]], [[1.0]]])), (2,), (1, 1), [(s2, ValueError), (T.ones(2, 1, 1), (2,))]),
    ]


def test_distribution_shapes(T):
    for d, batch, event, checks in shape_cases(T):
        assert shape(d.batch_shape) == batch and shape(d.event_shape) == event, repr(d)
        assert shape(d.sample()) == batch + event
        assert shape(d.sample((3, 2))) == (3, 2) + batch + event
        for value, expected in checks:
            if expected is ValueError:
                with pytest.raises(ValueError):
                    d.log_prob(value)
            else:
                assert shape(d.log_prob(value)) == expected, repr(d)


def test_one_hot_categorical_log_prob_of_its_support(T):
    d = T.distributions.OneHotCategorical(T.tensor([0.6, 0.3, 0.1]))
    assert shape(d.log_prob(d.enumerate_support())) == (3,)
    d = T.distributions.OneHotCategorical(T.tensor([[0.6, 0.3], [0.6, 0.3], [0.6, 0.3]]))
    assert shape(d.log_prob(d.enumerate_support())) == (2, 3)


def test_mixture_same_family_mean_shape(T):
    D = T.distributions
    gmm = D.MixtureSameFamily(D.Categorical(T.ones(3, 1, 3)), D.Normal(T.zeros(3, 3, 3), T.ones(3, 3, 3)))
    assert len(gmm.mean.shape) == 2


def test_entropy_shape(T):
    for Dist, i, param in each(T):
        d = Dist(validate_args=False, **param)
        try:
            assert shape(d.entropy()) == shape(d.batch_shape), f"{Dist.__name__} example {i}"
        except NotImplementedError:
            continue


def test_valid_parameter_broadcasting(T):
    D, t = T.distributions, T.tensor
    cases = []
    for Dist, a, b in [(D.Normal, "loc", "scale"), (D.Gumbel, "loc", "scale"), (D.Laplace, "loc", "scale"),
                       (D.FisherSnedecor, "df1", "df2"), (D.Gamma, "concentration", "rate"),
                       (D.Kumaraswamy, "concentration1", "concentration0"), (D.Pareto, "scale", "alpha")]:
        cases += [(Dist(**{a: t([1.0, 1.0]), b: 1}), (2,)), (Dist(**{a: 1, b: t([1.0, 1.0])}), (2,)),
                  (Dist(**{a: t([1.0, 1.0]), b: t([1.0])}), (2,)),
                  (Dist(**{a: t([1.0, 1.0]), b: t([[1.0], [1.0]])}), (2, 2)),
                  (Dist(**{a: t([1.0, 1.0]), b: t([[1.0]])}), (1, 2)), (Dist(**{a: t([1.0]), b: t([[1.0]])}), (1, 1))]
    cases += [(D.Gamma(concentration=t([1.0, 1.0]), rate=t([[1.0], [1.0], [1.0]])), (3, 2)),
              (D.StudentT(df=t([1.0, 1.0]), loc=1), (2,)), (D.StudentT(df=1, scale=t([1.0, 1.0])), (2,)),
              (D.StudentT(df=t([1.0, 1.0]), loc=t([1.0])), (2,)),
              (D.StudentT(df=t([1.0, 1.0]), scale=t([[1.0], [1.0]])), (2, 2)),
              (D.StudentT(df=t([1.0, 1.0]), loc=t([[1.0]])), (1, 2)),
              (D.StudentT(df=t([1.0]), scale=t([[1.0]])), (1, 1)),
              (D.StudentT(df=1.0, loc=T.zeros(5, 1), scale=T.ones(3)), (5, 3))]
    for d, expected in cases:
        assert shape(d.sample()) == expected, repr(d)
        assert shape(d.sample((2,))) == (2,) + expected, repr(d)


def test_invalid_parameter_broadcasting(T):
    D, t = T.distributions, T.tensor
    for Dist, kwargs in [
            (D.Normal, {"loc": t([[0, 0]]), "scale": t([1, 1, 1, 1])}),
            (D.Normal, {"loc": t([[[0, 0, 0], [0, 0, 0]]]), "scale": t([1, 1])}),
            (D.FisherSnedecor, {"df1": t([1, 1]), "df2": t([1, 1, 1])}),
            (D.Gumbel, {"loc": t([[0, 0]]), "scale": t([1, 1, 1, 1])}),
            (D.Gumbel, {"loc": t([[[0, 0, 0], [0, 0, 0]]]), "scale": t([1, 1])}),
            (D.Gamma, {"concentration": t([0, 0]), "rate": t([1, 1, 1])}),
            (D.Kumaraswamy, {"concentration1": t([[1, 1]]), "concentration0": t([1, 1, 1, 1])}),
            (D.Kumaraswamy, {"concentration1": t([[[1, 1, 1], [1, 1, 1]]]), "concentration0": t([1, 1])}),
            (D.Laplace, {"loc": t([0, 0]), "scale": t([1, 1, 1])}),
            (D.Pareto, {"scale": t([1, 1]), "alpha": t([1, 1, 1])}),
            (D.StudentT, {"df": t([1.0, 1.0]), "scale": t([1.0, 1.0, 1.0])}),
            (D.StudentT, {"df": t([1.0, 1.0]), "loc": t([1.0, 1.0, 1.0])})]:
        with pytest.raises(RuntimeError):
            Dist(**kwargs)


def test_valid(T):
    for Dist, _, param in each(T):
        Dist(validate_args=True, **param)


def bad_examples(T):
    """PyTorch's _get_bad_examples, for the families in `examples`."""
    D, t = T.distributions, T.tensor
    return [
        (D.Bernoulli, [{"probs": t([1.1, 0.2, 0.4])}, {"probs": t([-0.5])}, {"probs": 1.00001}]),
        (D.Beta, [{"concentration1": t([0.0]), "concentration0": t([0.0])},
                  {"concentration1": t([-1.0]), "concentration0": t([-2.0])}]),
        (D.Geometric, [{"probs": t([1.1, 0.2, 0.4])}, {"probs": t([-0.3])},
                       {"probs": T.tensor(1.00000001, dtype=T.float64)}]),
        (D.Categorical, [{"probs": t([[-0.1, 0.2, 0.3], [0.5, 0.3, 0.2]])}, {"probs": t([[-1.0, 10.0], [0.0, -1.0]])}]),
        (D.Binomial, [{"probs": t([[-0.0000001, 0.2, 0.3], [0.5, 0.3, 0.2]]), "total_count": 10},
                      {"probs": t([[1.0, 0.0], [0.0, 2.0]]), "total_count": 10}]),
        (D.Cauchy, [{"loc": 0.0, "scale": -1.0}, {"loc": t([0.0]), "scale": 0.0},
                    {"loc": t([[0.0], [-2.0]]), "scale": t([[-0.000001], [1.0]])}]),
        (D.StudentT, [{"df": t([0.0])}, {"df": t([-2.0])}]),
        (D.Dirichlet, [{"concentration": t([0.0])}, {"concentration": t([-2.0])}]),
        (D.Exponential, [{"rate": t([0.0, 0.0])}, {"rate": t([-2.0])}]),
        (D.Gamma, [{"concentration": t([0.0, 0.0]), "rate": t([-1.0, -100.0])},
                   {"concentration": t([1.0, 1.0]), "rate": t([0.0, 0.0])}]),
        (D.Gumbel, [{"loc": t([1.0, 1.0]), "scale": t([0.0, 1.0])}, {"loc": t([1.0, 1.0]), "scale": t([1.0, -1.0])}]),
        (D.HalfNormal, [{"scale": t([0.0, 1.0])}, {"scale": t([1.0, -1.0])}]),
        (D.Laplace, [{"loc": t([1.0, 1.0]), "scale": t([0.0, 1.0])}, {"loc": t([1.0, 1.0]), "scale": t([1.0, -1.0])}]),
        (D.LogNormal, [{"loc": t([1.0, 1.0]), "scale": t([0.0, 1.0])},
                       {"loc": t([1.0, 1.0]), "scale": t([1.0, -1.0])}]),
        (D.MultivariateNormal, [{"loc": t([1.0, 1.0]), "covariance_matrix": t([[1.0, 0.0], [0.0, -2.0]])}]),
        (D.Normal, [{"loc": t([1.0, 1.0]), "scale": t([0.0, 1.0])}, {"loc": t([1.0, 1.0]), "scale": t([1.0, -1.0])},
                    {"loc": t([1.0, 0.0]), "scale": t([1e-5, -1e-5])}]),
        (D.OneHotCategorical, [{"probs": t([[0.1, 0.2, 0.3], [0.1, -10.0, 0.2]])},
                               {"probs": t([[0.0, 0.0], [0.0, 0.0]])}]),
        (D.Poisson, [{"rate": t([-0.1])}, {"rate": -1.0}]),
        (D.RelaxedBernoulli, [{"temperature": t([1.5]), "probs": t([1.7, 0.2, 0.4])},
                              {"temperature": t([2.0]), "probs": t([-1.0])}]),
        (D.RelaxedOneHotCategorical, [{"temperature": t([0.5]), "probs": t([[-0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])},
                                      {"temperature": t([2.0]), "probs": t([[-1.0, 0.0], [-1.0, 1.1]])}]),
        (D.TransformedDistribution, [{"base_distribution": D.Normal(0, 1), "transforms": lambda x: x},
                                     {"base_distribution": D.Normal(0, 1), "transforms": [lambda x: x]}]),
        (D.Uniform, [{"low": t([2.0]), "high": t([2.0])}, {"low": t([0.0]), "high": t([0.0])},
                     {"low": t([1.0]), "high": t([0.0])}]),
    ]


def test_invalid(T):
    for Dist, params in bad_examples(T):
        for i, param in enumerate(params):
            with pytest.raises(ValueError):
                Dist(validate_args=True, **param)
                pytest.fail(f"ValueError not raised for {Dist.__name__} example {i}")


def test_invalid_log_probs_arg(T):
    """A value outside the support is refused with PyTorch's words when validating; without
    validation, log_prob does not check (it may still fail otherwise)."""
    for Dist, _, param in each(T):
        if Dist is T.distributions.TransformedDistribution:
            continue
        d_nonval, d_val = Dist(validate_args=False, **param), Dist(validate_args=True, **param)
        for v in [-2.0, -1.0, 0.0, 1.0, 2.0]:
            try:
                d_val.log_prob(T.tensor(v))
            except ValueError:
                pass
            val = T.full(tuple(d_val.batch_shape) + tuple(d_val.event_shape), v)
            try:
                d_val.log_prob(val)
            except ValueError as e:
                if "must be within the support" in str(e):
                    try:
                        d_nonval.log_prob(val)
                    except RuntimeError:
                        pass
        valid = d_val.sample()
        d_val.log_prob(valid)
        if valid.dtype == T.int64:
            valid = valid.float()
        raises(ValueError, r"Expected value argument .* to be within the support .*",
               d_val.log_prob, T.full_like(valid, math.nan))


def test_warning_unimplemented_constraints(T):
    """A Distribution subclass without arg_constraints (or support) warns when validating."""

    class Delta(T.distributions.Distribution):
        def __init__(self, validate_args=True):
            super().__init__(validate_args=validate_args)

        def sample(self, sample_shape=()):
            return T.tensor(0.0).expand(sample_shape)

        def log_prob(self, value):
            if self._validate_args:
                self._validate_sample(value)
            value[value != 0.0] = -float("inf")
            value[value == 0.0] = 0.0
            return value

    with pytest.warns(UserWarning):
        d = Delta()
    sample = d.sample((2,))
    with pytest.warns(UserWarning):
        d.log_prob(sample)


def test_params_constraints(T):
    D = T.distributions
    normalised = (D.Categorical, D.Multinomial, D.OneHotCategorical, D.RelaxedOneHotCategorical)
    for Dist, i, param in each(T):
        d = Dist(**param)
        for name, value in param.items():
            if isinstance(value, (int, float)):
                value = T.tensor([value])
            if Dist in normalised and name == "probs":
                value = value / value.sum(-1, True)
            constraint = d.arg_constraints.get(name)
            if constraint is None or not hasattr(value, "dim"):
                continue
            assert value.dim() >= constraint.event_dim
            np.broadcast_shapes(shape(d.batch_shape), shape(value)[:value.dim() - constraint.event_dim])
            if D.constraints.is_dependent(constraint):
                continue
            assert bool(constraint.check(value).all()), f"{Dist.__name__} example {i} parameter {name}"


def test_support_constraints(T):
    D = T.distributions
    for Dist, params in examples(T):
        assert isinstance(Dist.support, D.constraints.Constraint)
        for i, param in enumerate(params):
            d = Dist(**param)
            ok = d.support.check(d.sample())
            assert d.support.event_dim == len(d.event_shape), f"{Dist.__name__} example {i}"
            assert shape(ok) == shape(d.batch_shape) and bool(ok.all()), f"{Dist.__name__} example {i}"


def touch(d):
    """Enumerate d's support (where it has one) and read its shapes."""
    try:
        d.enumerate_support()
    except NotImplementedError:
        pass
    return d.batch_shape, d.event_shape


def test_lazy_logits_and_probs_initialization(T):
    """A law given logits never computes probs to sample, score, enumerate or tell its shapes, and
    the other way round."""
    D = T.distributions
    probs_to_logits = __import__(T.__name__ + ".distributions.utils", fromlist=["x"]).probs_to_logits
    for Dist, params in examples(T):
        if Dist not in (D.Categorical, D.OneHotCategorical, D.Bernoulli, D.Binomial, D.Multinomial):
            continue
        param = dict(params[0])
        if "probs" not in param:
            continue
        d = Dist(**param)
        d.sample()
        touch(d)
        assert "logits" not in d.__dict__, Dist.__name__
        param["logits"] = probs_to_logits(param.pop("probs"))
        d = Dist(**param)
        d.log_prob(Dist(**param).sample())
        assert "probs" not in d.__dict__, Dist.__name__
        touch(d)
        assert "probs" not in d.__dict__, Dist.__name__
