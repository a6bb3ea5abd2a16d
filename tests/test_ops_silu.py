"""nn.functional.silu as one primitive (``Silu``, ``SiluGrad`` of autograd/ops/activations.py), as PyTorch's kernels
compute it, x / (1 + e^-x) and g σ (1 + x (1 - σ)): first and second derivatives against finite differences over
hypothesis-drawn shapes, the tails and special values, float16 computed in float32 and rounded once, and values and
derivatives against PyTorch's."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from tests.test_ops import assert_first_and_second_derivatives, unary


def _silu_gradient(x):
    (grad,) = autograd.grad((F.silu(x) * x.cos()).sum(), x, create_graph=True)
    return grad


CASES = {  # (tests/test_ops.py checks that every primitive has one)
    "Silu": (unary(-4.0, 4.0), F.silu),
    "SiluGrad": (unary(-4.0, 4.0), _silu_gradient),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)


def test_values_and_slopes_at_the_tails_and_special_values():
    points = np.array([-np.inf, -1000.0, -20.0, -1.0, -0.0, 0.0, 1.0, 20.0, np.inf, np.nan])
    x = autograd.tensor(points, dtype=autograd.float64, requires_grad=True)
    y = F.silu(x)
    finite = points[1:-2]
    with np.errstate(over="ignore"):  # (e^1000: inf, the saturation)
        sigmoid = 1 / (1 + np.exp(-finite))
        np.testing.assert_allclose(y.detach().numpy(), [np.nan, *(finite / (1 + np.exp(-finite))), np.inf, np.nan],
                                   rtol=1e-15)
    assert np.signbit(y[1].item()) and y[1].item() == 0.0  # -1000 / inf: -0.0, as PyTorch's
    (g,) = autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy()[1:-2], sigmoid * (1 + finite * (1 - sigmoid)), rtol=1e-15)
    (h,) = autograd.grad(g[1:-2].sum(), x)
    np.testing.assert_allclose(h.numpy()[1:-2], sigmoid * (1 - sigmoid) * (2 + finite * (1 - 2 * sigmoid)),
                               rtol=1e-12, atol=1e-300)
    assert y.grad_fn.name() == "SiluBackward0"


def test_float16_is_computed_in_float32_and_rounded_once_in_place_and_refusals():
    values = np.linspace(-12, 12, 2001).astype(np.float16)
    x = autograd.tensor(values, requires_grad=True)
    wide = values.astype(np.float32)
    y = F.silu(x)
    assert y.dtype == autograd.float16 and np.array_equal(y.detach().numpy(),
                                                          (wide / (np.exp(-wide) + 1)).astype(np.float16))
    (g,) = autograd.grad(y.sum(), x)
    sigmoid = 1 / (np.exp(-wide) + 1)
    assert np.array_equal(g.numpy(), (sigmoid * (1 + wide * (1 - sigmoid))).astype(np.float16))
    x = autograd.tensor([-1.0, 2.0])
    assert F.silu(x, inplace=True) is x and x.tolist() == pytest.approx([-1 / (1 + np.e), 2 / (1 + np.exp(-2))])
    assert nn.SiLU()(autograd.tensor([0.0])).item() == 0.0
    with pytest.raises(NotImplementedError, match="silu"):
        F.silu(autograd.tensor([1, 2]))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_values_and_gradients_against_pytorchs(dtype):
    """Within a unit or two of PyTorch's kernels (its exp is not NumPy's); the former x · σ(x) rounded twice."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    values = np.concatenate([[0.0, -0.0, np.inf, -np.inf, -100.0], rng.standard_normal(4000) * 6]).astype(dtype)
    g = rng.standard_normal(values.size).astype(dtype)
    ours, theirs = {}, {}
    for lib, functional, out in ((autograd, F, ours), (torch, torch.nn.functional, theirs)):
        x = lib.tensor(values, requires_grad=True)
        y = functional.silu(x)
        (grad,) = lib.autograd.grad(y, x, lib.tensor(g))  # (PyTorch's silu_backward kernel: no graph kept)
        out.update(y=y.detach().numpy(), grad=grad.numpy())
    tolerance = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-14}[dtype]
    for key in ours:  # (atol: near the gradient's zero at x ≈ -1.28, 1 + x (1 - σ) cancels digits, there as here)
        np.testing.assert_allclose(ours[key], theirs[key], rtol=tolerance, atol=tolerance, err_msg=key)
