"""GELU's tanh approximation as one node (``GeluTanh``, autograd/ops/gelu_tanh.py): first and second derivatives
against finite differences over hypothesis-drawn shapes and values (its values against the composite it replaced
and against PyTorch: tests/test_perf36_gpt_gelu_tanh.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nn
from tests.test_ops import assert_first_and_second_derivatives, unary

CASES = {
    "GeluTanh": (unary(-5.0, 5.0), lambda x: nn.functional.gelu(x, approximate="tanh")),
}


@pytest.mark.parametrize("name", list(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)
