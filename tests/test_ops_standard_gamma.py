"""The primitives of autograd/ops/standard_gamma.py: a gamma draw's derivative in its shape a is
dx/da = -(∂P/∂a)/p(x), checked against central differences of P's values (ops/incomplete_gamma.py)
over hypothesis-drawn shapes and points, and the draw's gradient by the identity that defines
implicit reparameterisation: u = P(a, x(a)) does not move with a. The derivative is PyTorch's
approximation, good to a few parts in 10^4: the tolerance (tests/test_distributions_gamma.py compares it
with PyTorch's to the last bits)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd.ops.incomplete_gamma import regularized_gamma
from tests.test_ops import _run, broadcast_pair, unary

CASES = {  # (tests/test_ops.py checks that every primitive has one; the tests below say how each is checked)
    "StandardGammaGrad": (broadcast_pair(0.2, 6.0), lambda a, x: autograd._standard_gamma_grad(a, x)),
    "StandardGamma": (unary(0.1, 8.0), lambda a: autograd._standard_gamma(a)),
}


def _minus_dP_da_over_density(a, x, h=1e-6):
    """-(∂P/∂a)/p(x), with ∂P/∂a by central differences of P's values."""
    a, x = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(x, np.float64))
    step = h * np.maximum(a, 1e-2)
    dP = (regularized_gamma(a + step, x, False) - regularized_gamma(a - step, x, False)) / (2 * step)
    density = np.exp((a - 1) * np.log(x) - x - np.vectorize(math.lgamma)(a))
    return -dP / density


@settings(deadline=None)
@given(data=st.data())
def test_draw_derivative_matches_finite_differences_of_P(data):
    (a, x), fn, *_ = _run(CASES["StandardGammaGrad"], data)
    expected = _minus_dP_da_over_density(a.numpy(), x.numpy())
    np.testing.assert_allclose(fn(a.detach(), x.detach()).numpy(), expected, rtol=1e-3, atol=1e-9)


@settings(deadline=None)
@given(data=st.data())
def test_draw_gradient_holds_the_uniform_fixed(data):
    """d/da P(a, x(a)) = ∂P/∂a + p(x) dx/da = 0: the draw's gradient is -(∂P/∂a)/p(x) at the drawn x."""
    (a,), fn, *_ = _run(CASES["StandardGamma"], data)
    autograd.manual_seed(0)
    x = fn(a)
    (grad,) = autograd.grad(x.sum(), a)
    drawn = x.detach().numpy()
    usable = drawn > 1e-300  # (a draw that underflowed to 0 has gradient 0)
    expected = np.where(usable, _minus_dP_da_over_density(a.detach().numpy(), np.where(usable, drawn, 1.0)), 0.0)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-3, atol=1e-9)


def test_second_derivative_is_refused_as_pytorch():
    a = autograd.tensor([1.5], dtype=np.float64, requires_grad=True)
    (first,) = autograd.grad(autograd._standard_gamma(a).sum(), a, create_graph=True)
    with pytest.raises(NotImplementedError, match="the derivative for '_standard_gamma_grad' is not implemented"):
        first.sum().backward()
