"""Hardswish as one primitive (autograd/ops/hardswish.py): finite differences of its first and second
derivatives (hypothesis-drawn values off the kinks at ±3), PyTorch's values and gradients at the kinks,
at ±inf and NaN, and its in-place form."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from autograd.ops.hardswish import Hardswish
from tests.test_ops import _run, unary


def _first_derivative(x):
    return autograd.grad((Hardswish.apply(x) * x.sin()).sum(), x, create_graph=True)[0]


CASES = {  # tests/test_ops.py checks that every primitive has one
    "Hardswish": (unary(-5.0, 5.0, kinks=(-3.0, 3.0)), lambda x: Hardswish.apply(x) * x.cos()),
    "HardswishGrad": (unary(-5.0, 5.0, kinks=(-3.0, 3.0)), _first_derivative),
}

POINTS = [-np.inf, -4.0, -3.0, -1.0, 0.0, 2.5, 3.0, 5.0, np.inf, np.nan]
VALUES = [np.nan, -0.0, -0.0, -1 / 3, 0.0, 2.5 * 5.5 / 6, 3.0, 5.0, np.inf, np.nan]  # -inf · 0 is NaN, as PyTorch's
SLOPES = [0.0, 0.0, 0.0, 1 / 6, 0.5, 2.5 / 3 + 0.5, 1.0, 1.0, 1.0, 1.0]  # NaN passes no test: slope 1


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


@given(data=st.data())
def test_second_derivative_matches_finite_differences(data):
    tensors, fn = _run(CASES["Hardswish"], data)
    assert autograd.gradgradcheck(fn, tensors)


def test_values_and_slopes_at_the_kinks_infinities_and_nan():
    x = autograd.tensor(POINTS, requires_grad=True)
    y = F.hardswish(x)
    (g,) = autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(y.detach().numpy(), VALUES, rtol=1e-6)
    np.testing.assert_allclose(g.detach().numpy(), SLOPES, rtol=1e-6)
    assert y.dtype == g.dtype == autograd.float32 and y.grad_fn.name() == "HardswishBackward0"
    (gg,) = autograd.grad(g[1:-2].sum(), x)  # 1/3 strictly inside (-3, 3), 0 elsewhere
    np.testing.assert_allclose(gg.numpy(), [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0], rtol=1e-6)


def test_in_place_forms_and_refusals():
    x = autograd.tensor([-4.0, 1.0, 4.0])
    assert F.hardswish(x, inplace=True) is x and x.tolist() == pytest.approx([0.0, 4 / 6, 4.0])
    assert nn.Hardswish()(autograd.tensor([1.0])).item() == pytest.approx(4 / 6)
    with pytest.raises(NotImplementedError, match="hardswish"):
        F.hardswish(autograd.tensor([1, 2]))
    with pytest.raises(NotImplementedError, match="complex"):
        F.hardswish(autograd.tensor([1 + 1j]))


@pytest.mark.torch
def test_matches_torch_at_the_edges_and_to_second_order():
    import torch

    ours, theirs = autograd.tensor(POINTS, requires_grad=True), torch.tensor(POINTS, requires_grad=True)
    y, t = F.hardswish(ours), torch.nn.functional.hardswish(theirs)
    np.testing.assert_allclose(y.detach().numpy(), t.detach().numpy(), rtol=1e-6)
    (g,) = autograd.grad(y.sum(), ours, create_graph=True)
    (h,) = torch.autograd.grad(t.sum(), theirs, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), h.detach().numpy(), rtol=1e-6)
    weights = np.linspace(-1.0, 2.0, len(POINTS))
    (gg,) = autograd.grad((g * autograd.tensor(weights, dtype=autograd.float32))[1:-2].sum(), ours)
    (hh,) = torch.autograd.grad((h * torch.tensor(weights, dtype=torch.float32))[1:-2].sum(), theirs)
    np.testing.assert_allclose(gg.numpy(), hh.numpy(), rtol=1e-6)
