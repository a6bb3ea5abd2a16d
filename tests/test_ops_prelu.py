"""PReLU as one node (``Prelu``, autograd/ops/activations.py): first and second derivatives against finite
differences, to the input and to the weight (one slope or one per channel), over hypothesis-drawn shapes and values
(its values against the composite it replaced and against PyTorch: tests/test_perf37_prelu_norms.py)."""

import hypothesis.extra.numpy as hnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nn
from tests.test_ops import arrays, assert_first_and_second_derivatives, away_from, leaf


@st.composite
def input_and_weight(draw):
    """x of 0 to 4 dims kept off the kink at 0, and a weight of one slope, or of one per channel (dim 1)."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3))
    x = away_from(draw(arrays(shape)), (0.0,))
    channels = draw(st.sampled_from([1, shape[1]] if len(shape) >= 2 else [1]))
    weight = draw(arrays((channels,), -1.0, 1.0))
    return [leaf(x), leaf(weight)]


CASES = {
    "Prelu": (input_and_weight(), lambda x, weight: nn.functional.prelu(x, weight) * x.cos()),
}


@pytest.mark.parametrize("name", list(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)
