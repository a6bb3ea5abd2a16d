"""Gradients at the points where PyTorch has a convention of its own (ties, NaNs, crossed bounds, zeros),
found by comparing edge points with PyTorch (tests/test_programs_probe13_edgegrad.py holds the programs). Each
test asserts the values on its own; the ``torch`` ones also compare with PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from tests.ops_reference import compare
from tests.test_ops import _run, broadcast_pair, leaf

nan = float("nan")

CASES = {
    "ClampByTensors": (broadcast_pair(distinct=True),
                       lambda x, y: autograd.clamp(x, min=y) * 2 + autograd.clamp(x, max=y) + x.clamp(y, y + 0.05)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


# -- clamp with tensor bounds: PyTorch's clamp_backward and clamp_backward_min_max --

X = np.array([1.0, 2.0, 3.0, nan, 0.0, 5.0, -1.0, 2.0])
LOW = np.array([1.0, 0.0, 4.0, 1.0, nan, 6.0, 0.0, 2.0])
HIGH = np.array([1.0, 2.0, 4.0, 3.0, 1.0, 5.0, -2.0, 2.0])


def test_a_clamp_by_tensors_gives_nan_and_meeting_bounds_no_gradient():
    x, low, high = leaf(X), leaf(LOW), leaf(HIGH)
    y = autograd.clamp(x, low, high)
    np.testing.assert_array_equal(y.numpy(), [1, 2, 4, nan, nan, 5, -2, 2])
    y.backward(autograd.tensor(np.arange(1.0, 9.0)))
    # x on both bounds keeps it (1, 8); x below bounds that meet (3) gives it to nobody; NaN to nobody (4, 5);
    # crossed bounds (6, 7: low > high) give it all to high
    np.testing.assert_array_equal(x.grad.numpy(), [1, 2, 0, 0, 0, 0, 0, 8])
    np.testing.assert_array_equal(low.grad.numpy(), [0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(high.grad.numpy(), [0, 0, 0, 0, 0, 6, 7, 0])


def test_a_one_sided_clamp_by_a_tensor_gives_a_nan_input_no_gradient():
    x, low = leaf([nan, 1.0, 0.0]), leaf([0.0, 1.0, nan])
    y = x.clamp_min(low)
    assert np.isnan(y.numpy()[[0, 2]]).all() and y.grad_fn.name() == "ClampMinBackward1"
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 0])
    np.testing.assert_array_equal(low.grad.numpy(), [0, 0, 0])


CLAMP_CASES = {
    "both": lambda m, x, lo, hi: m.clamp(x, lo, hi),
    "min": lambda m, x, lo, hi: m.clamp(x, min=lo),
    "max": lambda m, x, lo, hi: x.clamp(max=hi),
    "clamp_min": lambda m, x, lo, hi: x.clamp_min(lo),
    "clamp_max": lambda m, x, lo, hi: m.clamp_max(x, hi),
    "clip_meeting": lambda m, x, lo, hi: x.clip(lo, lo),
    "broadcast": lambda m, x, lo, hi: m.clamp(x.reshape(2, 4), lo[:4], hi[None, 4:]),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CLAMP_CASES))
def test_clamp_by_tensors_matches_torch(name):
    compare(CLAMP_CASES[name], X, LOW, HIGH)


# -- maximum / minimum: each input loses only what it lost --

def test_maximum_and_minimum_give_both_inputs_the_gradient_where_either_is_nan():
    for op, y_grad in ((autograd.maximum, [0.5, 0, 3, 4]), (autograd.minimum, [0.5, 2, 0, 4])):
        x, y = leaf([1.0, 2.0, 0.0, nan]), leaf([1.0, 0.0, 2.0, 1.0])
        op(x, y).backward(autograd.tensor([1.0, 2.0, 3.0, 4.0]))
        np.testing.assert_array_equal(y.grad.numpy(), y_grad)
        np.testing.assert_array_equal(x.grad.numpy() + y.grad.numpy(), [1, 2, 3, 8])


@pytest.mark.torch
@pytest.mark.parametrize("op", ["maximum", "minimum", "max", "min"])
def test_maximum_and_minimum_at_ties_and_nans_match_torch(op):
    compare(lambda m, x, y: getattr(m, op)(x, y), np.array([1.0, 2.0, 3.0, nan, 0.0, nan]),
            np.array([1.0, 2.0, 4.0, 1.0, -0.0, nan]))
