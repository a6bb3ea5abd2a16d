"""The piecewise-linear primitive (autograd/ops/piecewise_linear.py) against finite differences, with
hypothesis-drawn shapes and values kept off the kinks. The activations built on it are tested against
PyTorch in tests/test_activation_second_derivatives.py."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from autograd.ops import piecewise_linear as P
from tests.test_ops import _run, unary

KINKS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)


def _all_of_them(x):
    """Each activation of the family once (kinks at -1, -0.5, 0, 0.5, 1, 1.5), weighted by smooth factors
    so that their sum has a first derivative that varies."""
    return (P.leaky_relu(x, 0.2) * x.sin() + P.hardtanh(x, -0.5, 1.5) * x.cos() + P.threshold(x, 0.5, -2.0) * x
            + P.hardshrink(x, 0.5) * x.exp() + P.softshrink(x, 1.0) * x + P.leaky_relu(x, -0.5) * x)


def _first_derivative(x):
    return autograd.grad(_all_of_them(x).sum(), x, create_graph=True)[0]


CASES = {  # the primitives of the family (tests/test_ops.py checks the list)
    "PiecewiseLinear": (unary(-2.0, 2.0, kinks=KINKS), _all_of_them),
    "PiecewiseLinearGrad": (unary(-2.0, 2.0, kinks=KINKS), _first_derivative),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


@given(data=st.data())
def test_second_derivative_matches_finite_differences(data):
    tensors, fn = _run(CASES["PiecewiseLinear"], data)
    assert autograd.gradgradcheck(fn, tensors)
