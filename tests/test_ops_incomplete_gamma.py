"""The primitives of autograd/ops/incomplete_gamma.py by finite differences (hypothesis-drawn
shapes and values): P(a, x) and Q(a, x) in both arguments, where ∂P/∂a is -p(x) times the gamma
draw derivative (so the check of a covers StandardGammaGrad's values), and the draw itself by the
identity that defines implicit reparameterisation: u = P(a, x(a)) does not move with a."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from tests.test_ops import _run, broadcast_pair, unary

POSITIVE_PAIR = broadcast_pair(0.2, 6.0)

CASES = {
    "Igamma": (POSITIVE_PAIR, lambda a, x: autograd.igamma(a, x) + 2 * autograd.igammac(a, x)),
    "StandardGammaGrad": (POSITIVE_PAIR, lambda a, x: autograd.special.gammainc(a, x)),  # ∂P/∂a = -p · dx/da
    "StandardGamma": (unary(0.1, 8.0), lambda a: autograd.igamma(a, autograd._standard_gamma(a))),
}


@pytest.mark.parametrize("name", ["Igamma", "StandardGammaGrad"])
@settings(deadline=None)
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors, atol=1e-7, rtol=1e-5)


@settings(deadline=None)
@given(data=st.data())
def test_draw_gradient_holds_the_uniform_fixed(data):
    """d/da P(a, x(a)) = ∂P/∂a + p(x) dx/da = 0 for the implicit gradient dx/da = -(∂P/∂a)/p(x)."""
    (a,), fn, *_ = _run(CASES["StandardGamma"], data)
    autograd.manual_seed(0)
    (grad,) = autograd.grad(fn(a).sum(), a)
    autograd.manual_seed(0)
    x = autograd._standard_gamma(a.detach())
    partial = autograd.grad(autograd.igamma(a, x).sum(), a)[0]  # ∂P/∂a alone, for the scale
    assert np.all(np.abs(grad.numpy()) <= 1e-9 * np.abs(partial.numpy()) + 1e-12)


def test_second_derivative_is_refused_as_pytorch():
    a = autograd.tensor([1.5], dtype=np.float64, requires_grad=True)
    (first,) = autograd.grad(autograd._standard_gamma(a).sum(), a, create_graph=True)
    with pytest.raises(NotImplementedError, match="the derivative for '_standard_gamma_grad' is not implemented"):
        first.sum().backward()
