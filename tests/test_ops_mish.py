"""Mish as one node (``Mish``, autograd/ops/mish.py): first and second derivatives against finite differences over
hypothesis-drawn shapes and values (its values against the composite it replaced and against PyTorch:
tests/test_perf37_prelu_norms.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nn
from tests.test_ops import assert_first_and_second_derivatives, unary

CASES = {
    "Mish": (unary(-6.0, 6.0), lambda x: nn.functional.mish(x) * x.cos()),
}


@pytest.mark.parametrize("name", list(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)
