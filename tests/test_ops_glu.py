"""The gated linear unit's primitive (autograd/ops/activations.py, ``Glu``) against finite differences, first
and second derivatives, over hypothesis-drawn shapes and split dims. Its values against PyTorch's, float16
included, are in tests/test_probe16_ssm_fixes.py."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
import nn
from tests.test_ops import _run, arrays, leaf


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


CASES = {"Glu": (even_along_a_dim(), lambda x, dim: nn.functional.glu(x, dim))}


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
