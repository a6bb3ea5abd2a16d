"""nn.functional.softplus as one primitive (``ScaledSoftplus``, ``ScaledSoftplusGrad`` of autograd/ops/activations.py),
as PyTorch's kernel computes it, log1p(exp(βx)) / β below the threshold and x above: first and second derivatives
against finite differences over hypothesis-drawn shapes, the threshold's two sides, β negative and 0, float16 computed
in float32 and rounded once, and values and derivatives against PyTorch's."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from tests.test_ops import assert_first_and_second_derivatives, unary


def _softplus_gradient(x):
    (grad,) = autograd.grad((F.softplus(x, 2.0, 3.0) * x.cos()).sum(), x, create_graph=True)
    return grad


CASES = {  # (tests/test_ops.py checks that every primitive has one)
    "ScaledSoftplus": (unary(-3.0, 3.0, kinks=(1.5,)), lambda x: F.softplus(x, 2.0, 3.0) + F.softplus(x) * x.sin()),
    "ScaledSoftplusGrad": (unary(-3.0, 3.0, kinks=(1.5,)), _softplus_gradient),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)


def test_both_sides_of_the_threshold_and_special_values():
    below = np.array([-np.inf, -30.0, -1.0, 0.0, 2.0, 2.5])  # 2x <= 5: the smooth branch (2.5 too: > is strict)
    x = autograd.tensor([*below, 2.6, 3.0, np.inf, np.nan], dtype=autograd.float64, requires_grad=True)
    y = F.softplus(x, 2.0, 5.0)  # linear where 2x > 5
    np.testing.assert_allclose(y.detach().numpy(), [*(np.log1p(np.exp(2 * below)) / 2), 2.6, 3.0, np.inf, np.nan],
                               rtol=1e-15)
    (g,) = autograd.grad(y.sum(), x, create_graph=True)
    sigmoid = 1 / (1 + np.exp(-2 * below))
    np.testing.assert_allclose(g.detach().numpy(), [*sigmoid, 1, 1, 1, np.nan], rtol=1e-15)
    (h,) = autograd.grad(g[:8].sum(), x)  # 2 σ'(2x) below the threshold, 0 from it on (PyTorch's x < threshold)
    curvature = 2 * sigmoid * (1 - sigmoid)
    curvature[-1] = 0  # (at the threshold itself: 2x < 5 is false)
    np.testing.assert_allclose(h.numpy(), [*curvature, 0, 0, 0, np.nan], rtol=1e-12)  # (NaN's σ: NaN, as PyTorch's)
    assert y.grad_fn.name() == "SoftplusBackward0"
    assert F.softplus(autograd.tensor([1.0]), 0.0).item() == np.inf  # (ln 2 / 0, as PyTorch's)
    np.testing.assert_allclose(F.softplus(autograd.tensor([1.0, -1.0], dtype=autograd.float64), -1.5).numpy(),
                               np.log1p(np.exp(-1.5 * np.array([1.0, -1.0]))) / -1.5)


def test_float16_is_computed_in_float32_and_rounded_once_and_out_and_refusals():
    values = np.linspace(-8, 8, 1001).astype(np.float16)
    y = F.softplus(autograd.tensor(values), 0.5)
    wide = values.astype(np.float32)
    assert np.array_equal(y.numpy(), (np.log1p(np.exp(wide * np.float32(0.5))) / np.float32(0.5)).astype(np.float16))
    out = autograd.empty(3)
    assert F.softplus(autograd.tensor([0.0, 1.0, 30.0]), out=out) is out and out[2].item() == 30.0
    assert nn.Softplus(beta=2.0)(autograd.tensor([0.0])).item() == pytest.approx(np.log(2) / 2)
    with pytest.raises(NotImplementedError, match="softplus"):
        F.softplus(autograd.tensor([1, 2]))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("beta, threshold", [(1.0, 20.0), (2.0, 5.0), (-1.5, 3.0)])
def test_values_and_derivatives_against_pytorchs(beta, threshold, dtype):
    """Within a unit or two of PyTorch's (its exp and log1p are not NumPy's); the former composite's stable
    formula and σ(x) gradient were as close in value but another arithmetic."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    values = np.concatenate([[0.0, -0.0, np.inf, -np.inf], rng.standard_normal(4000) * 6]).astype(dtype)
    g, u = (rng.standard_normal(values.size).astype(dtype) for _ in range(2))
    ours, theirs = {}, {}
    for lib, functional, out in ((autograd, F, ours), (torch, torch.nn.functional, theirs)):
        x = lib.tensor(values, requires_grad=True)
        y = functional.softplus(x, beta, threshold)
        (grad,) = lib.autograd.grad(y, x, lib.tensor(g), create_graph=True)
        (second,) = lib.autograd.grad(grad, x, lib.tensor(u))
        out.update(y=y.detach().numpy(), grad=grad.detach().numpy(), second=second.numpy())
    tolerance = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-14}[dtype]
    for key in ours:  # (the second derivative's (1 - σ) σ loses digits where σ is near 1: a few units more)
        np.testing.assert_allclose(ours[key], theirs[key], rtol=tolerance * (10 if key == "second" else 1), atol=1e-30,
                                   err_msg=key)


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_float32_values_are_the_stable_formula(beta):
    """float32's ln(1 + e^(βx)) / β is max(βx, 0) + log1p(e^-|βx|), divided by β (x.softplus()'s formula: NumPy's
    float32 exp then log1p was a unit off more often, softplus(2) a unit below PyTorch's), and it does not overflow
    where a threshold above 88 lets large βx through (PyTorch's log1p(exp(βx)) is inf there)."""
    x = np.random.default_rng(0).uniform(-30, 15, 20000).astype(np.float32)
    x[:3] = [2.0, -10.0, 0.0]
    scaled = x * np.float32(beta)
    stable = (np.log1p(np.exp(-np.abs(scaled))) + np.maximum(scaled, np.float32(0))) / np.float32(beta)
    expected = np.where(scaled > 20, x, stable)
    got = F.softplus(autograd.tensor(x), beta=beta).numpy()
    np.testing.assert_array_equal(got, expected)
    assert beta != 1 or got[0] == np.float32(2.1269280910491943)  # (PyTorch's softplus(2) in float32)
    assert F.softplus(autograd.tensor([100.0]), beta=beta, threshold=1000.0).item() == 100.0
