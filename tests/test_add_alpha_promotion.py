"""add / sub with alpha scale the other operand in the result's dtype, as PyTorch: a float32 other beside a
float64 input is cast up before the multiplication by alpha (ODIN's torch.add(x, -eps, gradient.float()))."""

import warnings

import numpy as np
import pytest

EXACT = 0.3 - 0.01 * float(np.float32(4.047619))  # alpha · other in float64


@pytest.mark.parametrize("spelling", ["add", "add_alpha_first", "sub", "add_", "sub_", "recorded_add_"])
def test_alpha_scales_in_the_result_dtype(T, spelling):
    x = T.tensor([0.3], dtype=T.float64)
    g = T.tensor([4.047619], dtype=T.float32)
    if spelling == "add":
        y = T.add(x, g, alpha=-0.01)
    elif spelling == "add_alpha_first":
        with warnings.catch_warnings():  # (PyTorch warns of this overload once a process)
            warnings.simplefilter("ignore")
            y = T.add(x, -0.01, g)
    elif spelling == "sub":
        y = x.sub(g, alpha=0.01)
    elif spelling == "add_":
        y = x.add_(g, alpha=-0.01)
    elif spelling == "sub_":
        y = x.sub_(g, alpha=0.01)
    else:
        leaf = T.tensor([0.3], dtype=T.float64, requires_grad=True)
        y = (leaf * 1).add_(g, alpha=-0.01)
    assert y.dtype == T.float64 and y.item() == EXACT


def test_the_cast_other_gets_its_gradient_in_its_own_dtype(T):
    x = T.tensor([0.3, 0.1], dtype=T.float64, requires_grad=True)
    g = T.tensor([4.0, 2.0], dtype=T.float32, requires_grad=True)
    (T.add(x, g, alpha=-0.25) * T.tensor([1.0, 3.0], dtype=T.float64)).sum().backward()
    assert g.grad.dtype == T.float32 and x.grad.dtype == T.float64
    np.testing.assert_array_equal(g.grad.numpy(), [-0.25, -0.75])


def test_a_zero_dim_wider_other_still_computes_in_the_input_dtype(T):
    x = T.tensor([1.0], dtype=T.float32)
    y = T.add(x, T.tensor(1e-8, dtype=T.float64), alpha=3)
    assert y.dtype == T.float32 and y.item() == 1.0
