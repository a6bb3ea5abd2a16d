"""The regularised incomplete gamma function P(a, x) (igamma, special.gammainc) and the gamma
draws differentiable in their shape (implicit reparameterisation): values by closed forms and
against torch/mpmath where installed, gradients by finite differences, and the expectation
identities d/dα E[f(x)] = E[df(x)/dα] that a reparameterisation gradient must satisfy."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd import distributions as D
from autograd.backend import xp
from autograd.ops.incomplete_gamma import regularized_gamma
from autograd.ops.standard_gamma import _standard_gamma_derivative


def f64(values, requires_grad=False):
    return autograd.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def test_igamma_closed_forms():
    x = np.array([0.0, 1e-3, 0.4, 1.0, 2.5, 7.0, 30.0, np.inf])
    np.testing.assert_allclose(autograd.igamma(f64(np.ones(8)), f64(x)).numpy(), -np.expm1(-x), rtol=1e-14)
    erf = np.array([math.erf(math.sqrt(v)) if np.isfinite(v) else 1.0 for v in x])
    np.testing.assert_allclose(autograd.special.gammainc(f64(np.full(8, 0.5)), f64(x)).numpy(), erf, rtol=1e-13)
    np.testing.assert_allclose(autograd.special.gammaincc(f64(np.full(8, 1.0)), f64(x)).numpy(), np.exp(-x),
                               rtol=1e-13, atol=1e-300)
    # P(n, x) = 1 - e^(-x) Σ_{k<n} x^k / k!
    n, point = 5, 3.7
    expected = 1 - math.exp(-point) * sum(point**k / math.factorial(k) for k in range(n))
    assert autograd.igamma(f64(n), f64(point)).item() == pytest.approx(expected, rel=1e-14)
    assert np.isnan(autograd.igamma(f64(-1.0), f64(1.0)).item())


def _lower_gamma(a, x):
    return float(regularized_gamma(np.array([a]), np.array([x]), False)[0])


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 40.0), st.floats(0.01, 60.0))
def test_igamma_gradcheck(a, x):
    """∂P/∂x is the gamma density; ∂P/∂a is not given (PyTorch's neither): asking for it raises."""
    assert autograd.gradcheck(lambda t: autograd.igamma(f64([a]), t), (f64([x], True),), atol=1e-7, rtol=1e-5)
    assert autograd.gradcheck(lambda t: autograd.igammac(f64([a]), t), (f64([x], True),), atol=1e-7, rtol=1e-5)
    with pytest.raises(NotImplementedError, match="the derivative for 'igamma: input' is not implemented"):
        autograd.igamma(f64([a], True), f64([x])).sum().backward()


def test_draw_derivative_is_minus_dP_da_over_density():
    """dx/da = -(∂P/∂a)/p(x): the right side by central differences of P in a, in both tails and around the
    mode. The left is PyTorch's approximation, good to a few parts in 10^4 (ops/standard_gamma.py)."""
    for a in [0.02, 0.3, 1.0, 4.5, 60.0, 900.0]:
        for x in [a * 0.05 + 1e-4, a * 0.5 + 0.01, a + 1 - 1e-6, a + 1 + 1e-6, a + 3 * math.sqrt(a) + 2]:
            h = 1e-6 * max(a, 1e-2)
            dP = (_lower_gamma(a + h, x) - _lower_gamma(a - h, x)) / (2 * h)
            density = math.exp((a - 1) * math.log(x) - x - math.lgamma(a))
            if density < 1e-250:
                continue  # (P itself is 0 or 1 in float64 there)
            expected = -float(dP) / density
            got = float(_standard_gamma_derivative(xp.asarray(float(x)), xp.asarray(float(a))))
            assert got == pytest.approx(expected, rel=1e-3, abs=1e-12), (a, x)


def test_draw_derivative_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    rng = np.random.default_rng(3)
    for a in [0.01, 0.4, 2.0, 25.0, 3000.0]:
        for x in rng.standard_gamma(a, 4):
            A, X = mpmath.mpf(a), mpmath.mpf(float(x))
            dP = mpmath.diff(lambda s, X=X: mpmath.gammainc(s, 0, X, regularized=True), A)
            expected = float(-dP / (X ** (A - 1) * mpmath.exp(-X) / mpmath.gamma(A)))
            got = float(_standard_gamma_derivative(xp.asarray(float(x)), xp.asarray(float(a))))
            assert got == pytest.approx(expected, rel=1e-3), (a, x)  # (PyTorch's approximation: see above)


@pytest.mark.torch
def test_against_torch():
    torch = pytest.importorskip("torch")
    a = np.array([0.1, 0.7, 1.0, 3.3, 12.0, 150.0])
    x = np.array([0.05, 2.0, 0.5, 3.0, 11.0, 170.0])
    # (at a = 150 PyTorch's P is 5e-11 from mpmath's, ours 7e-15)
    np.testing.assert_allclose(autograd.igamma(f64(a), f64(x)).numpy(),
                               torch.special.gammainc(torch.tensor(a), torch.tensor(x)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(autograd.igammac(f64(a), f64(x)).numpy(),
                               torch.special.gammaincc(torch.tensor(a), torch.tensor(x)).numpy(), rtol=1e-9)
    edges = [(0.0, 1.0), (1.0, 0.0), (0.0, 0.0), (-1.0, 1.0), (1.0, -1.0), (2.0, np.inf), (np.inf, 2.0), (np.nan, 1.0)]
    for s, t in edges:
        for ours_fn, torch_fn in [(autograd.igamma, torch.special.gammainc),
                                  (autograd.igammac, torch.special.gammaincc)]:
            ours = ours_fn(f64(s), f64(t)).item()
            theirs = torch_fn(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)).item()
            assert ours == theirs or (math.isnan(ours) and math.isnan(theirs)), (s, t, ours, theirs)
    # the draw's derivative is PyTorch's approximation, computed as PyTorch's (each branch: x < 0.8, a > 8 near
    # and far from x = a, the rational function elsewhere), and in float32 rounded once as PyTorch's
    rng = np.random.default_rng(0)
    a = np.concatenate([a, rng.uniform(0.05, 30.0, 400), [9.0, 9.0, 9.0, 0.5]])
    x = np.concatenate([x, rng.standard_gamma(a[len(x):-4]), [8.5, 30.0, 2.0, 0.0]])
    ours = autograd._standard_gamma_grad(f64(a), f64(x)).numpy()
    theirs = torch._standard_gamma_grad(torch.tensor(a), torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    a32, x32 = a.astype(np.float32), x.astype(np.float32)
    np.testing.assert_array_equal(autograd._standard_gamma_grad(autograd.tensor(a32), autograd.tensor(x32)).numpy(),
                                  torch._standard_gamma_grad(torch.tensor(a32), torch.tensor(x32)).numpy())


def test_standard_gamma_draws_and_their_gradient():
    autograd.manual_seed(0)
    alpha = f64([0.5, 2.0, 9.0], requires_grad=True)
    draws = autograd._standard_gamma(alpha.expand(4000, 3))
    assert draws.shape == (4000, 3) and draws.dtype == autograd.float64
    np.testing.assert_allclose(draws.detach().numpy().mean(0), [0.5, 2.0, 9.0], rtol=0.1)
    draws.sum().backward()
    expected = autograd._standard_gamma_grad(alpha.detach().expand(4000, 3), draws.detach()).sum(0)
    np.testing.assert_allclose(alpha.grad.numpy(), expected.numpy())
    with pytest.raises(NotImplementedError, match="_standard_gamma_grad"):
        y = autograd._standard_gamma(alpha).sum()
        (g,) = autograd.grad(y, alpha, create_graph=True)
        g.sum().backward()


def _mean_and_error(samples):
    return samples.mean(0), samples.std(0) / math.sqrt(len(samples))


def test_gamma_rsample_gradient_is_unbiased():
    """E[x] = α/β: the mean of dx/dα over draws is 1/β, of dx/dβ is -α/β² (within 5 standard errors);
    and E[x²] = α(α+1)/β²: d/dα = (2α+1)/β²."""
    n = 20000
    autograd.manual_seed(1)
    alpha, beta = f64([0.3, 2.5], True), f64([1.5, 0.7], True)
    x = D.Gamma(alpha, beta).rsample((n,))
    per_draw_alpha = autograd.grad(x.sum(), alpha, retain_graph=True)[0]
    assert per_draw_alpha.shape == (2,)
    # per-draw gradients: differentiate each draw on its own (the sum's gradient is their sum)
    grads = autograd._standard_gamma_grad(alpha.detach().expand(n, 2), (x * beta).detach()).numpy() / beta.numpy()
    np.testing.assert_allclose(grads.sum(0), per_draw_alpha.numpy(), rtol=1e-12)
    mean, error = _mean_and_error(grads)
    assert (np.abs(mean - 1 / beta.detach().numpy()) < 5 * error).all()
    square_grads = 2 * x.detach().numpy() * grads
    mean, error = _mean_and_error(square_grads)
    a, b = alpha.detach().numpy(), beta.detach().numpy()
    assert (np.abs(mean - (2 * a + 1) / b**2) < 5 * error).all()
    (grad_beta,) = autograd.grad(x.sum(), beta)
    np.testing.assert_allclose(grad_beta.numpy(), -(x.detach().numpy() / b).sum(0), rtol=1e-12)


def test_beta_and_dirichlet_rsample_gradients_are_unbiased():
    """E[x] = a/(a + b) under Beta(a, b): d/da = b/(a + b)², d/db = -a/(a + b)²; under Dirichlet(α),
    E[x_0] = α_0/α₀: d/dα_0 = (α₀ - α_0)/α₀², d/dα_j = -α_0/α₀². One law per draw (a batch of n
    copies of the parameters), so the gradient holds each draw's derivative: their mean is within
    5 standard errors of the derivative of the expectation."""
    n = 20000
    autograd.manual_seed(2)
    for a_value, b_value in [(0.6, 2.0), (3.0, 1.2)]:
        a, b = f64(np.full(n, a_value), True), f64(np.full(n, b_value), True)
        x = D.Beta(a, b).rsample()
        assert x.shape == (n,) and ((x > 0) & (x < 1)).all().item()
        grad_a, grad_b = autograd.grad(x.sum(), (a, b))
        total = a_value + b_value
        for draws, expected in [(grad_a.numpy(), b_value / total**2), (grad_b.numpy(), -a_value / total**2)]:
            mean, error = _mean_and_error(draws)
            assert abs(mean - expected) < 5 * error, (a_value, b_value, mean, expected, error)
    alpha = np.array([0.8, 2.0, 4.0])
    concentration = f64(np.tile(alpha, (n, 1)), True)
    y = D.Dirichlet(concentration).rsample()
    np.testing.assert_allclose(y.detach().numpy().sum(-1), 1.0, rtol=1e-12)
    (grad,) = autograd.grad(y[:, 0].sum(), concentration)
    total = alpha.sum()
    expected = np.array([(total - alpha[0]) / total**2, -alpha[0] / total**2, -alpha[0] / total**2])
    mean, error = _mean_and_error(grad.numpy())
    assert (np.abs(mean - expected) < 5 * error).all(), (mean, expected, error)


def test_student_t_rsample_gradient_is_unbiased():
    """E[x²] = σ² ν/(ν - 2) under StudentT(ν, 0, σ): d/dν = -2σ²/(ν - 2)²."""
    n = 40000
    autograd.manual_seed(4)
    df = f64(np.full(n, 9.0), True)
    x = D.StudentT(df, 0.0, 1.5).rsample()
    (grad,) = autograd.grad((x * x).sum(), df)
    mean, error = _mean_and_error(grad.numpy())
    assert abs(mean - (-2 * 1.5**2 / 7**2)) < 5 * error
