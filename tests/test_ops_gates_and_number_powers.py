"""Gates and a number's powers (primitives the probe16 sequence-model programs added), against finite
differences (first and second derivatives) over hypothesis-drawn shapes: the gated linear unit (``Glu``) and
log σ (``LogSigmoid``, ``LogSigmoidGrad``) of autograd/ops/activations.py, and a number to a tensor's power
(``NumberPow``, autograd/ops/elementwise.py). Their values against PyTorch's, float16 included, are in
tests/test_probe16_ssm_fixes.py."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
import nn
from tests.test_ops import _run, arrays, leaf, unary


@st.composite
def even_along_a_dim(draw):
    shape = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    shape[dim] *= 2  # glu halves it
    return [leaf(draw(arrays(tuple(shape))))], dim


def _glu_and_its_gradient(x, dim):
    y = nn.functional.glu(x, dim)
    (grad,) = autograd.grad(y.sin().sum(), x, create_graph=True)
    return y.sum() + (grad * grad).sum()  # the first derivative's own graph: a second derivative


def _logsigmoid_gradient(x):
    (grad,) = autograd.grad((nn.functional.logsigmoid(x) * x.cos()).sum(), x, create_graph=True)
    return grad


CASES = {
    "Glu": (even_along_a_dim(), lambda x, dim: nn.functional.glu(x, dim)),
    "LogSigmoid": (unary(-30.0, 30.0), nn.functional.logsigmoid),
    "LogSigmoidGrad": (unary(-8.0, 8.0), _logsigmoid_gradient),
    "NumberPow": (unary(-2.0, 2.0), lambda x: 0.9 ** x + 2 ** (x * 1.5) + 10000.0 ** (x / 8)),
}


@given(data=st.data())
def test_number_pow_gradients_match_finite_differences(data):
    tensors, fn = _run(CASES["NumberPow"], data)
    assert autograd.gradcheck(fn, tensors)
    assert autograd.gradgradcheck(fn, tensors)


@given(data=st.data())
def test_glu_gradient_matches_finite_differences(data):
    tensors, fn = _run(CASES["Glu"], data)
    assert autograd.gradcheck(fn, tensors)


@given(data=st.data())
def test_glu_second_derivative_matches_finite_differences(data):
    tensors, fn = _run((even_along_a_dim(), _glu_and_its_gradient), data)
    assert autograd.gradcheck(fn, tensors)


def test_glu_refuses_an_odd_dimension():
    with pytest.raises(RuntimeError, match="Halving dimension must be even"):
        nn.functional.glu(autograd.ones(2, 3))


@pytest.mark.parametrize("name", ["LogSigmoid", "LogSigmoidGrad"])
@given(data=st.data())
def test_logsigmoid_gradients_match_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


def test_logsigmoid_second_derivative_is_smooth_through_zero():
    """d²/dx² ln σ(x) = -σ(x) σ(-x): -1/4 at 0 (PyTorch's double backward), whatever e^-|x|'s kink does."""
    x = autograd.tensor([0.0, -0.0, 1.0, -40.0], dtype=autograd.float64, requires_grad=True)
    (grad,) = autograd.grad(nn.functional.logsigmoid(x).sum(), x, create_graph=True)
    (second,) = autograd.grad(grad.sum(), x)
    s = 1 / (1 + np.exp(-x.detach().numpy()))
    np.testing.assert_allclose(grad.detach().numpy(), 1 - s, rtol=1e-15)
    np.testing.assert_allclose(second.numpy(), -s * (1 - s), rtol=1e-15)
