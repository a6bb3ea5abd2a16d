"""The primitives of autograd/ops/dirichlet_draw.py: Dirichlet (and Beta) draws whose gradient in the
concentration is PyTorch's (torch._dirichlet_grad, its branches ported), checked against PyTorch's values,
against the implicit-reparameterisation identity it approximates (the Beta marginal's CDF held fixed, by
mpmath), and through Beta / Dirichlet rsample in a program's gradient."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd import distributions as D
from tests.test_ops import leaf


@st.composite
def beta_draws(draw):
    """(x, alpha, total) with x in (0, 1) and 0 < alpha < total, over the four branches' regions."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    unit = hnp.arrays(np.float64, shape, elements=st.floats(0.001, 0.999))
    log_scale = hnp.arrays(np.float64, shape, elements=st.floats(-3.0, 4.0))
    x, alpha, beta = draw(unit), np.exp(draw(log_scale)), np.exp(draw(log_scale))
    return [leaf(x), leaf(alpha), leaf(alpha + beta)]


@st.composite
def concentrations(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=2, max_side=3))
    return [leaf(draw(hnp.arrays(np.float64, shape, elements=st.floats(0.1, 8.0))))]


CASES = {  # (tests/test_ops.py checks that every primitive has one; the tests below say how each is checked)
    "DirichletGrad": (beta_draws(), lambda x, alpha, total: autograd._dirichlet_grad(x, alpha, total)),
    "DirichletDraw": (concentrations(), lambda alpha: D.Dirichlet(alpha).rsample()),
}

# points in each branch: x near 0, x near 1, both parameters above 6 (near the mean and not), elsewhere
POINTS = np.array([
    [0.02, 0.5, 1.5], [0.3, 0.2, 1.0], [0.97, 3.0, 3.1], [0.9999, 1.0, 1.05],
    [0.5, 10.0, 20.0], [0.51, 10.0, 20.0], [0.3, 8.0, 30.0], [0.8, 40.0, 47.0],
    [0.4, 2.0, 5.0], [0.6, 3.0, 4.5], [0.35, 0.7, 1.9], [0.5, 5.0, 12.0],
])


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dirichlet_grad_is_pytorchs(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    alpha, beta = np.exp(rng.uniform(-4, 5, 4000)), np.exp(rng.uniform(-4, 5, 4000))
    x = np.clip(rng.beta(alpha, beta), 1e-30, 1 - 1e-7)
    x, alpha, total = (np.concatenate([POINTS[:, i], v]).astype(dtype) for i, v in enumerate([x, alpha, alpha + beta]))
    ours = autograd._dirichlet_grad(autograd.tensor(x), autograd.tensor(alpha), autograd.tensor(total))
    theirs = torch._dirichlet_grad(torch.tensor(x), torch.tensor(alpha), torch.tensor(total)).numpy()
    assert ours.dtype == getattr(autograd, dtype)
    if dtype == "float64":
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-11)
    else:  # (ψ(α + β) - ψ(β) cancels in float32 near x = 1: the rounding of a libm differs there)
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=5e-3)
        assert np.mean(np.isclose(ours.numpy(), theirs, rtol=1e-5)) > 0.97


def test_dirichlet_grad_holds_the_beta_cdf_fixed():
    """g (1 - x) = -(∂F/∂a)/f for Beta(a, b) at x, b held fixed; PyTorch's approximations to about 1e-3."""
    mpmath = pytest.importorskip("mpmath")
    x, alpha, total = (autograd.tensor(POINTS[:, i]) for i in range(3))
    g = autograd._dirichlet_grad(x, alpha, total).numpy()
    for (xi, a, t), gi in zip(POINTS, g):
        b = t - a
        dF = mpmath.diff(lambda s, xi=xi, b=b: mpmath.betainc(s, b, 0, xi, regularized=True), a)
        density = xi ** (a - 1) * (1 - xi) ** (b - 1) / mpmath.beta(a, b)
        assert gi * (1 - xi) == pytest.approx(float(-dF / density), rel=5e-3), (xi, a, t)


def test_beta_rsample_gradient_is_dirichlet_grad(T):
    """x ~ Beta(a, b): dx/da = g(x, a, a + b)(1 - x), dx/db = -g(1 - x, b, a + b) x (PyTorch's rule)."""
    T.manual_seed(0)
    a = T.tensor([0.5, 2.0, 9.0], dtype=T.float64, requires_grad=True)
    b = T.tensor([1.5, 3.0, 12.0], dtype=T.float64, requires_grad=True)
    x = T.distributions.Beta(a, b).rsample()
    grad_a, grad_b = T.autograd.grad(x.sum(), (a, b))
    x, a, b = x.detach(), a.detach(), b.detach()
    np.testing.assert_allclose(grad_a.numpy(), (T._dirichlet_grad(x, a, a + b) * (1 - x)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad_b.numpy(), (-T._dirichlet_grad(1 - x, b, a + b) * x).numpy(), rtol=1e-12)


def test_dirichlet_rsample_gradient_keeps_the_simplex(T):
    """dL/dα_j = g_j (dL/dx_j - Σ_i x_i dL/dx_i): the gradient of Σ x_i (always 1) is 0."""
    T.manual_seed(1)
    alpha = T.tensor([[0.8, 2.0, 4.0], [5.0, 0.3, 1.0]], dtype=T.float64, requires_grad=True)
    y = T.distributions.Dirichlet(alpha).rsample()
    (grad,) = T.autograd.grad(y.sum(), alpha, retain_graph=True)
    np.testing.assert_allclose(grad.numpy(), 0.0, atol=1e-15)
    weights = T.tensor([1.0, -2.0, 0.5], dtype=T.float64)
    (grad,) = T.autograd.grad((y * weights).sum(), alpha)
    y = y.detach()
    g = T._dirichlet_grad(y, alpha.detach(), alpha.detach().sum(-1, keepdim=True).expand(2, 3))
    np.testing.assert_allclose(grad.numpy(), (g * (weights - (y * weights).sum(-1, keepdim=True))).numpy(),
                               rtol=1e-12)


@pytest.mark.torch
def test_beta_and_dirichlet_rsample_match_pytorch():
    torch = pytest.importorskip("torch")
    results = []
    for lib in (autograd, torch):
        lib.manual_seed(3)
        a = lib.tensor([0.4, 3.0, 20.0], dtype=lib.float32, requires_grad=True)
        conc = lib.tensor([0.7, 1.5, 6.0, 9.0], dtype=lib.float64, requires_grad=True)
        x = lib.distributions.Beta(a, a.flip(0)).rsample((5,))
        y = lib.distributions.Dirichlet(conc).rsample((4,))
        loss = (x.log() * lib.arange(3)).sum() + (y.pow(2) * lib.arange(4)).sum()
        loss.backward()
        results.append([t.detach().numpy() for t in (x, y, a.grad, conc.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5 if ours.dtype == np.float32 else 1e-12)


def test_sample_dirichlet_draws_as_rsample(T):
    """torch._sample_dirichlet: the draws Dirichlet.rsample makes after the same seed (or from a generator)."""
    alpha = T.tensor([[0.5, 1.0, 2.0], [3.0, 3.0, 3.0]], dtype=T.float64)
    T.manual_seed(0)
    drawn = T._sample_dirichlet(alpha)
    T.manual_seed(0)
    assert T.equal(drawn, T.distributions.Dirichlet(alpha).rsample())
    first = T._sample_dirichlet(alpha, generator=T.Generator().manual_seed(3))
    assert T.equal(first, T._sample_dirichlet(alpha, generator=T.Generator().manual_seed(3)))
    np.testing.assert_allclose(first.sum(-1).numpy(), 1.0, rtol=1e-12)


def test_second_derivative_is_refused_as_pytorch():
    alpha = autograd.tensor([1.5, 2.5], dtype=autograd.float64, requires_grad=True)
    (first,) = autograd.grad((D.Dirichlet(alpha).rsample() * autograd.tensor([1.0, 2.0])).sum(), alpha,
                             create_graph=True)
    with pytest.raises(NotImplementedError, match="the derivative for '_dirichlet_grad' is not implemented"):
        first.sum().backward()


@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_draws_lie_on_the_simplex(data):
    (alpha,) = data.draw(concentrations())
    y = D.Dirichlet(alpha).rsample().detach().numpy()
    assert ((y > 0) & (y < 1)).all()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
