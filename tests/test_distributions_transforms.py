"""distributions.transforms, biject_to/transform_to and TransformedDistribution; the relaxed
(Concrete) distributions, MixtureSameFamily and VonMises: inverses, log-determinants by finite
differences of the map, changes of variables that integrate to one, samples; against torch where
installed."""

import math

import numpy as np
import pytest

import autograd
from autograd import distributions as D
from autograd.distributions import constraints
from autograd.distributions import transforms as T

R = np.random.default_rng(11)


def f64(values, requires_grad=False):
    return autograd.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def close(a, b, rtol=1e-11, atol=1e-12):
    a = a.detach().numpy() if hasattr(a, "detach") else a
    b = b.detach().numpy() if hasattr(b, "detach") else b
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


SCALAR_TRANSFORMS = {
    "exp": (T.ExpTransform(), R.standard_normal(5)),
    "sigmoid": (T.SigmoidTransform(), R.standard_normal(5) * 3),
    "tanh": (T.TanhTransform(), R.standard_normal(5)),
    "affine": (T.AffineTransform(1.5, -2.0), R.standard_normal(5)),
    "power": (T.PowerTransform(2.5), R.uniform(0.2, 3, 5)),
    "compose": (T.ComposeTransform([T.ExpTransform(), T.AffineTransform(-1.0, 3.0)]), R.standard_normal(5)),
    "inverse": (T.ExpTransform().inv, R.uniform(0.2, 3, 5)),
    "softplus": (T.SoftplusTransform(), R.standard_normal(5) * 3),
    "cdf": (T.CumulativeDistributionTransform(D.Laplace(f64(0.5), f64(2.0))), R.standard_normal(5)),
}


@pytest.mark.parametrize("name", list(SCALAR_TRANSFORMS))
def test_scalar_transforms_invert_and_their_log_det_is_the_log_derivative(name):
    t, x = SCALAR_TRANSFORMS[name]
    xt = f64(x)
    y = t(xt)
    close(t.inv(y), x, rtol=1e-10)
    h = 1e-6
    derivative = (t(f64(x + h)).numpy() - t(f64(x - h)).numpy()) / (2 * h)
    close(t.log_abs_det_jacobian(xt, y), np.log(np.abs(derivative)), rtol=1e-7, atol=1e-8)
    assert int(np.sign(derivative[0])) == int(t.sign if isinstance(t.sign, int) else t.sign.item())
    assert t.bijective


def test_vector_transforms():
    x = f64(R.standard_normal((4, 3)))
    stick = T.StickBreakingTransform()
    y = stick(x)
    assert y.shape == (4, 4) and stick.forward_shape((4, 3)) == (4, 4) and stick.inverse_shape((4, 4)) == (4, 3)
    close(y.sum(-1), np.ones(4))
    close(stick.inv(y), x, rtol=1e-10)
    # log |det J| of x ↦ y[:-1] (the free coordinates of the simplex) by finite differences
    h = 1e-6
    for row in range(2):
        jac = np.stack([(stick(f64(x.numpy()[row] + h * e)).numpy()[:-1] - stick(f64(x.numpy()[row] - h * e)).numpy()
                         [:-1]) / (2 * h) for e in np.eye(3)], -1)
        assert stick.log_abs_det_jacobian(x, y).numpy()[row] == pytest.approx(np.linalg.slogdet(jac)[1], rel=1e-6)
    soft = T.SoftmaxTransform()
    close(soft(x), x.softmax(-1))
    close(soft(soft.inv(soft(x))), soft(x))
    assert not soft.bijective and soft.codomain is constraints.simplex
    affine = T.AffineTransform(f64([1.0, 2.0, 3.0]), f64([2.0, -1.0, 0.5]), event_dim=1)
    close(affine.log_abs_det_jacobian(x, affine(x)), np.full(4, math.log(1.0)))
    lower = T.LowerCholeskyTransform()
    square = f64(R.standard_normal((2, 3, 3)))
    assert bool(constraints.lower_cholesky.check(lower(square)).all())
    close(lower.inv(lower(square)), np.tril(square.numpy()))
    ind = T.IndependentTransform(T.ExpTransform(), 1)
    close(ind.log_abs_det_jacobian(x, ind(x)), x.sum(-1))
    reshape = T.ReshapeTransform((6,), (2, 3))
    assert reshape(f64(np.arange(12.0).reshape(2, 6))).shape == (2, 2, 3)


def test_caching_and_equality():
    t = T.ExpTransform(cache_size=1)
    x = f64([0.5])
    y = t(x)
    assert t.inv(y) is x and t(x) is y
    assert T.ExpTransform() == T.ExpTransform() and T.ExpTransform().inv == T.ExpTransform().inv
    assert T.AffineTransform(1.0, 2.0) == T.AffineTransform(1.0, 2.0) and T.AffineTransform(1.0, 2.0) != \
        T.AffineTransform(1.0, 3.0)
    with pytest.raises(ValueError, match="cache_size must be 0 or 1"):
        T.ExpTransform(cache_size=2)
    compose = T.ComposeTransform([T.ExpTransform(), T.AffineTransform(0.0, -1.0)])
    assert compose.inv.inv is compose and compose.sign == -1
    assert repr(T.identity_transform.codomain) == "Real()"


def test_biject_to_and_transform_to():
    x = f64(R.standard_normal((5, 3)))
    for constraint in [constraints.real, constraints.positive, constraints.greater_than(2.0),
                       constraints.less_than(-1.0), constraints.unit_interval, constraints.interval(-2.0, 5.0),
                       constraints.real_vector, constraints.independent(constraints.positive, 1)]:
        for registry in (D.biject_to, D.transform_to):
            t = registry(constraint)
            y = t(x)
            assert bool(constraint.check(y).all()), constraint
            close(t.inv(y), x, rtol=1e-8, atol=1e-10)
    simplex = D.biject_to(constraints.simplex)(x)
    assert simplex.shape == (5, 4) and bool(constraints.simplex.check(simplex).all())
    assert D.transform_to(constraints.simplex)(x).shape == (5, 3)
    with pytest.raises(NotImplementedError, match="Cannot transform _Boolean constraints"):
        D.biject_to(constraints.boolean)
    raw = f64([0.3], requires_grad=True)  # optimise a positive scale through an unconstrained value
    D.transform_to(constraints.positive)(raw).sum().backward()
    close(raw.grad, np.exp([0.3]))


def test_transformed_distribution_changes_variables():
    base = D.Normal(f64(0.3), f64(0.7))
    log_normal = D.TransformedDistribution(base, [T.ExpTransform()])
    x = f64(R.uniform(0.1, 4, 6))
    close(log_normal.log_prob(x), D.LogNormal(f64(0.3), f64(0.7)).log_prob(x))
    close(log_normal.cdf(x), D.LogNormal(f64(0.3), f64(0.7)).cdf(x))
    decreasing = D.TransformedDistribution(base, [T.AffineTransform(1.0, -2.0)])
    close(decreasing.cdf(f64(0.5)), 1 - base.cdf(f64(0.25)))
    close(decreasing.icdf(decreasing.cdf(f64([0.5, -1.0]))), [0.5, -1.0], rtol=1e-10)
    # a Normal pushed onto the simplex by stick-breaking: event (3,) from a batch of 2 normals
    logistic_normal = D.TransformedDistribution(D.Normal(f64(np.zeros(2)), f64(np.ones(2))), T.StickBreakingTransform())
    assert logistic_normal.batch_shape == () and logistic_normal.event_shape == (3,)
    assert logistic_normal.sample((7,)).shape == (7, 3) and repr(logistic_normal.support) == "Simplex()"
    named = D.LogisticNormal(f64(np.zeros(2)), f64(np.ones(2)))
    probe = f64([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    close(named.log_prob(probe), logistic_normal.log_prob(probe))
    assert named.rsample((4,)).shape == (4, 3) and named.loc.shape == (2,)
    # its density integrates to one over the simplex (2 free coordinates), by a midpoint rule
    grid = (np.arange(400) + 0.5) / 400
    a, b = np.meshgrid(grid, grid)
    inside = a + b < 1
    points = np.stack([a[inside], b[inside], 1 - a[inside] - b[inside]], -1)
    density = logistic_normal.log_prob(f64(points)).exp().numpy()
    assert density.sum() / 400**2 == pytest.approx(1.0, abs=2e-3)
    scale = f64(2.0, requires_grad=True)
    drawn = D.TransformedDistribution(D.Normal(f64(0.0), scale), [T.ExpTransform()]).rsample((3,))
    drawn.sum().backward()
    close(scale.grad, (drawn.detach().numpy() * np.log(drawn.detach().numpy()) / 2.0).sum())  # d e^(σε)/dσ = ε y
    with pytest.raises(ValueError, match="transforms must be a Transform or list"):
        D.TransformedDistribution(base, "exp")
    expanded = log_normal.expand((4,))
    assert expanded.batch_shape == (4,) and expanded.sample().shape == (4,)


def test_relaxed_distributions():
    autograd.manual_seed(0)
    temperature = f64(0.5)
    logits = f64([[-1.0, 0.5, 2.0]], requires_grad=True)
    relaxed = D.RelaxedBernoulli(temperature, logits=logits)
    y = relaxed.rsample((20000,))
    assert y.shape == (20000, 1, 3) and bool(((y > 0) & (y < 1)).all())
    # P(y > ½) = P(logistic noise > -l) = σ(l): the relaxation keeps the Bernoulli's probabilities
    above = (y.detach().numpy() > 0.5).mean(0)[0]
    p = 1 / (1 + np.exp(-logits.detach().numpy()[0]))
    assert (np.abs(above - p) < 5 * np.sqrt(p * (1 - p) / 20000)).all()
    y.sum().backward()
    assert logits.grad is not None and np.isfinite(logits.grad.numpy()).all()
    # the density integrates to one on (0, 1)
    grid = np.linspace(1e-7, 1 - 1e-7, 200001)
    single = D.RelaxedBernoulli(f64(0.8), probs=f64(0.3))
    mass = np.trapezoid(single.log_prob(f64(grid)).exp().numpy(), grid) if hasattr(np, "trapezoid") else \
        np.trapz(single.log_prob(f64(grid)).exp().numpy(), grid)  # noqa: NPY201
    assert mass == pytest.approx(1.0, abs=1e-3)
    one_hot = D.RelaxedOneHotCategorical(f64(0.7), logits=f64([0.0, 1.0, -1.0]))
    draws = one_hot.rsample((20000,))
    assert draws.shape == (20000, 3) and np.allclose(draws.numpy().sum(-1), 1.0)
    winners = np.bincount(draws.numpy().argmax(-1), minlength=3) / 20000  # argmax of a Concrete draw ~ Categorical
    probs = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
    assert (np.abs(winners - probs) < 5 * np.sqrt(probs * (1 - probs) / 20000)).all()
    assert repr(one_hot.support) == "Simplex()" and one_hot.temperature.item() == 0.7


def test_mixture_same_family():
    weights = f64([0.2, 0.5, 0.3])
    locs, scales = f64([-2.0, 0.0, 3.0]), f64([0.5, 1.0, 0.7])
    mix = D.MixtureSameFamily(D.Categorical(probs=weights), D.Normal(locs, scales))
    x = f64([-2.5, 0.1, 2.0])
    expected = np.log(sum(w * np.exp(D.Normal(locs[k], scales[k]).log_prob(x).numpy())
                          for k, w in enumerate(weights.numpy())))
    close(mix.log_prob(x), expected)
    close(mix.mean, (weights * locs).sum())
    autograd.manual_seed(1)
    draws = mix.sample((40000,)).numpy()
    variance = mix.variance.item()
    assert abs(draws.mean() - mix.mean.item()) < 5 * math.sqrt(variance / 40000)
    close(mix.cdf(f64(0.0)), (weights.numpy() * D.Normal(locs, scales).cdf(f64(0.0)).numpy()).sum())
    with pytest.raises(ValueError, match="does not equal `component_distribution.batch_shape\\[-1\\]`"):
        D.MixtureSameFamily(D.Categorical(probs=f64([0.5, 0.5])), D.Normal(locs, scales))
    with pytest.raises(ValueError, match="Categorical"):
        D.MixtureSameFamily(D.Normal(locs, scales), D.Normal(locs, scales))
    vectors = D.MixtureSameFamily(D.Categorical(logits=f64(np.zeros(3))),
                                  D.Independent(D.Normal(f64(np.zeros((3, 2))), f64(np.ones((3, 2)))), 1))
    assert vectors.event_shape == (2,) and vectors.sample((5,)).shape == (5, 2)
    assert vectors.expand((4,)).sample().shape == (4, 2)


def test_von_mises():
    loc, kappa = f64([0.5, -2.0, 3.0]), f64([0.3, 2.0, 40.0])
    m = D.VonMises(loc, kappa)
    grid = np.linspace(-math.pi, math.pi, 200001)
    density = m.log_prob(f64(grid[:, None])).exp().numpy()
    integral = np.trapezoid if hasattr(np, "trapezoid") else np.trapz  # noqa: NPY201
    close(integral(density, grid, axis=0), np.ones(3), rtol=1e-7)
    autograd.manual_seed(2)
    draws = m.sample((20000,)).numpy()
    assert draws.shape == (20000, 3) and (np.abs(draws) <= math.pi).all()
    # the mean resultant E[cos(x - μ)] = I1(κ)/I0(κ) = 1 - variance, within 5 standard errors
    resultant = np.cos(draws - loc.numpy())
    error = resultant.std(0) / math.sqrt(20000)
    assert (np.abs(resultant.mean(0) - (1 - m.variance.numpy())) < 5 * error).all()
    mean_angle = np.arctan2(np.sin(draws).mean(0), np.cos(draws).mean(0))
    assert np.allclose(mean_angle, loc.numpy(), atol=0.1)
    concentration = f64([1.5], requires_grad=True)  # d/dκ log p = cos(x - μ) - I1(κ)/I0(κ)
    D.VonMises(f64([0.0]), concentration).log_prob(f64([0.4])).sum().backward()
    close(concentration.grad, math.cos(0.4) - (1 - D.VonMises(f64(0.0), f64(1.5)).variance.item()))
    assert D.VonMises(f64(0.0), f64(2000.0)).sample((100,)).std().item() < 0.1
    with pytest.raises(ValueError, match="concentration"):
        D.VonMises(f64(0.0), f64(-1.0))


@pytest.mark.torch
def test_against_torch():
    torch = pytest.importorskip("torch")
    x = R.standard_normal((2, 3))
    simplex = R.dirichlet(np.ones(3), 2)
    unit = R.uniform(0.05, 0.95, (2, 3))
    mixture_points = R.standard_normal((4, 2))

    def cases(m, d, t):
        return [
            t.StickBreakingTransform().log_abs_det_jacobian(m.tensor(x), t.StickBreakingTransform()(m.tensor(x))),
            t.TanhTransform().log_abs_det_jacobian(m.tensor(x), t.TanhTransform()(m.tensor(x))),
            d.TransformedDistribution(d.Normal(m.tensor(np.zeros(3)), m.tensor(np.ones(3))),
                                      [t.ExpTransform(), t.AffineTransform(1.0, -2.0)]).log_prob(
                m.tensor(1 - 2 * np.exp(x))),
            d.RelaxedBernoulli(m.tensor(0.7, dtype=m.float64), logits=m.tensor(x)).log_prob(m.tensor(unit)),
            d.RelaxedOneHotCategorical(m.tensor(0.6, dtype=m.float64), logits=m.tensor(x)).log_prob(m.tensor(simplex)),
            d.MixtureSameFamily(d.Categorical(logits=m.tensor(x)),
                                d.Normal(m.tensor(x * 2), m.tensor(unit + 0.5))).log_prob(m.tensor(mixture_points)),
            d.kl_divergence(d.LogNormal(m.tensor(x), m.tensor(unit + 1)),
                            d.LogNormal(m.tensor(x * 0), m.tensor(unit + 2))),
        ]

    for ours, theirs in zip(cases(autograd, D, T), cases(torch, torch.distributions, torch.distributions.transforms)):
        close(ours, theirs.numpy(), rtol=1e-10)
    # VonMises: PyTorch's ln I0 is a seven-digit polynomial fit; ours exact
    kappa = np.array([0.2, 1.0, 3.0, 10.0])
    ours = D.VonMises(f64(np.zeros(4)), f64(kappa)).log_prob(f64(x[0, :1].repeat(4)))
    theirs = torch.distributions.VonMises(torch.tensor(np.zeros(4)), torch.tensor(kappa)).log_prob(
        torch.tensor(x[0, :1].repeat(4)))
    close(ours, theirs.numpy(), rtol=1e-6, atol=1e-6)


def test_copula_straight_through_and_semidefinite():
    """A law pushed through its own CDF is uniform: log-density 0 on (0, 1)."""
    normal = D.Normal(f64(0.3), f64(1.7))
    copula = D.TransformedDistribution(normal, [T.CumulativeDistributionTransform(normal)])
    close(copula.log_prob(f64([0.1, 0.5, 0.93])), np.zeros(3), atol=1e-12)
    assert repr(copula.support) == "Interval(lower_bound=0.0, upper_bound=1.0)"
    logits = f64([0.2, -1.0, 0.5], requires_grad=True)
    weights = f64([1.0, 2.0, -3.0])
    m = D.OneHotCategoricalStraightThrough(logits=logits)
    draw = m.rsample((5,))
    assert ((draw == 0) | (draw == 1)).all().item() and np.allclose(draw.detach().numpy().sum(-1), 1.0)
    (grad,) = autograd.grad((draw * weights).sum(), logits)
    (expected,) = autograd.grad((D.OneHotCategorical(logits=logits).probs * weights).sum() * 5, logits)
    close(grad, expected)
    assert bool(constraints.positive_semidefinite.check(f64(np.diag([1.0, 0.0]))).item())
    assert not bool(constraints.positive_semidefinite.check(f64(np.diag([1.0, -1e-3]))).item())
    assert not bool(constraints.positive_definite.check(f64(np.diag([1.0, 0.0]))).item())


def test_stack_and_cat_transforms():
    x = f64(R.standard_normal((4, 3)))
    stack = T.StackTransform([T.ExpTransform(), T.SigmoidTransform(), T.AffineTransform(1.0, 2.0)], dim=1)
    y = stack(x)
    close(y[:, 0], x[:, 0].exp())
    close(stack.inv(y), x)
    close(stack.log_abs_det_jacobian(x, y)[:, 2], np.full(4, math.log(2.0)))
    assert bool(stack.codomain.check(y).all())
    joined = T.CatTransform([T.ExpTransform(), T.AffineTransform(1.0, -2.0)], dim=1, lengths=[2, 1])
    z = joined(x)
    close(z[:, :2], x[:, :2].exp())
    close(joined.inv(z), x)
    close(joined.log_abs_det_jacobian(x, z), np.concatenate([x.numpy()[:, :2], np.full((4, 1), math.log(2.0))], 1))
    assert bool(joined.codomain.check(z).all())
    with pytest.raises(ValueError, match="must equal len\\(transforms\\) 3"):
        stack(f64(np.zeros((4, 2))))


@pytest.mark.torch
def test_every_name_of_torch_distributions_is_here():
    torch = pytest.importorskip("torch")
    assert not set(torch.distributions.__all__) - set(D.__all__)
    assert not set(torch.distributions.transforms.__all__) - set(T.__all__)
    assert not set(torch.distributions.constraints.__all__) - set(constraints.__all__)
