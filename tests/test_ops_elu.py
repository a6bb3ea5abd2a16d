"""elu, selu and celu as one primitive (``Elu``, ``EluGrad`` of autograd/ops/activations.py), as PyTorch's one elu
kernel with its scale and input scale: first and second derivatives against finite differences over hypothesis-drawn
shapes, the conventions at 0, ±inf and NaN, celu of a negative α (which the former composite clamped to 0), float16
computed in float32 and rounded once, and values, gradients and second derivatives against PyTorch's."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from autograd.ops.activations import SELU_ALPHA, SELU_SCALE
from tests.test_ops import assert_first_and_second_derivatives, unary


def _elu_gradient(x):
    (grad,) = autograd.grad((F.celu(x, 0.7) * x.cos()).sum(), x, create_graph=True)
    return grad


CASES = {  # (tests/test_ops.py checks that every primitive has one)
    "Elu": (unary(-3.0, 3.0, kinks=(0.0,)), lambda x: F.selu(x) + F.celu(x, -1.3) * x.sin()),
    "EluGrad": (unary(-3.0, 3.0, kinks=(0.0,)), _elu_gradient),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)


POINTS = [-np.inf, -20.0, -1.0, -1e-8, -0.0, 0.0, 1e-8, 2.0, np.inf, np.nan]


@pytest.mark.parametrize("dtype", [autograd.float32, autograd.float64])
def test_values_slopes_and_curvatures_at_zero_infinities_and_nan(dtype):
    x = autograd.tensor(POINTS, dtype=dtype, requires_grad=True)
    y = F.elu(x, 0.5)
    (g,) = autograd.grad(y.sum(), x, create_graph=True)
    (h,) = autograd.grad(g.sum(), x)
    e = np.exp(np.array(POINTS[:4]))
    np.testing.assert_allclose(y.detach().numpy(), [-0.5, *(0.5 * np.expm1(POINTS[1:4])), -0.0, 0.0, 1e-8, 2.0, np.inf,
                                                    np.nan], rtol=1e-6)
    assert y[3].item() == pytest.approx(-0.5e-8, rel=1e-6)  # (expm1: e^x - 1 would give 0 in float32)
    assert np.signbit(y[4].item()) and not np.signbit(y[5].item())  # -0.0 stays -0.0, as PyTorch's x · s
    # the slope at 0 is α, as PyTorch's x <= 0 branch; NaN takes the positive slope (its scalar kernel)
    np.testing.assert_allclose(g.detach().numpy(), [*(0.5 * e), 0.5, 0.5, 1, 1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(h.numpy(), [*(0.5 * e), 0, 0, 0, 0, 0, 0], rtol=1e-6)  # (0 at x = 0, PyTorch's)
    assert y.grad_fn.name() == "EluBackward0" and y.dtype == g.dtype == dtype


def test_selu_and_celu_are_one_node_each_named_as_pytorchs():
    x = autograd.tensor([-1.0, 2.0], requires_grad=True)
    assert F.selu(x).grad_fn.name() == "EluBackward0" and autograd.selu(x).grad_fn.name() == "EluBackward0"
    assert F.celu(x).grad_fn.name() == "CeluBackward0" and autograd.celu(x, 2.0).grad_fn.name() == "CeluBackward0"
    assert F.elu(x).grad_fn.next_functions[0][0].name() == "torch::autograd::AccumulateGrad"  # (one node, no more)
    np.testing.assert_allclose(F.selu(x).detach().numpy(), [SELU_SCALE * SELU_ALPHA * np.expm1(-1.0), SELU_SCALE * 2],
                               rtol=1e-6)


def test_celu_of_a_negative_alpha_takes_its_curve():
    """celu(x, α) = α (e^(x/α) - 1) for x < 0 whatever α's sign (PyTorch's kernel): the former composite clamped x/α
    at 0, which for α < 0 is every negative x, and gave 0 there."""
    x = autograd.tensor([-1.0, -0.1, 1.0], dtype=autograd.float64, requires_grad=True)
    y = F.celu(x, -1.3)
    np.testing.assert_allclose(y.detach().numpy(), [-1.3 * np.expm1(1 / 1.3), -1.3 * np.expm1(0.1 / 1.3), 1.0])
    (g,) = autograd.grad(y.sum(), x)
    np.testing.assert_allclose(g.numpy(), [np.exp(1 / 1.3), np.exp(0.1 / 1.3), 1.0])


def test_float16_is_computed_in_float32_and_rounded_once():
    values = np.linspace(-6, 3, 2001).astype(np.float16)
    x = autograd.tensor(values, requires_grad=True)
    y = F.selu(x)
    wide = values.astype(np.float32)
    expected = np.where(wide < 0, np.expm1(wide) * (np.float32(SELU_ALPHA) * np.float32(SELU_SCALE)),
                        wide * np.float32(SELU_SCALE)).astype(np.float16)
    assert y.dtype == autograd.float16 and np.array_equal(y.detach().numpy(), expected)
    (g,) = autograd.grad(y.sum(), x)
    slope = np.where(wide <= 0, np.float32(SELU_ALPHA) * np.float32(SELU_SCALE) * np.exp(wide),
                     np.float32(SELU_SCALE)).astype(np.float16)
    assert g.dtype == autograd.float16 and np.array_equal(g.numpy(), slope)


def test_in_place_forms_modules_and_refusals():
    x = autograd.tensor([-1.0, 1.0])
    assert F.elu(x, inplace=True) is x and x.tolist() == pytest.approx([np.expm1(-1.0), 1.0])
    x = autograd.tensor([-1.0, 1.0])
    assert autograd.celu_(x, 2.0) is x and x.tolist() == pytest.approx([2 * np.expm1(-0.5), 1.0])
    assert nn.SELU()(autograd.tensor([1.0])).item() == pytest.approx(SELU_SCALE)
    with pytest.raises(NotImplementedError, match="elu"):
        F.elu(autograd.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="alpha cannot be 0"):
        F.celu(autograd.tensor([1.0]), 0.0)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("name, alpha", [("elu", 1.0), ("elu", 0.3), ("elu", -0.5), ("selu", None), ("celu", 1.0),
                                         ("celu", 0.7), ("celu", -1.3)])
def test_values_and_derivatives_against_pytorchs(name, alpha, dtype):
    """Against PyTorch's kernels: equal where the arithmetic is the same (its exp and expm1 are not NumPy's: a unit in
    the last place apart in some float32 and float64 values), within a unit or two everywhere; ±0, ±inf and NaN
    included. The former composite differed in every negative value's gradient (e^x as expm1(x) + 1)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    values = np.concatenate([[0.0, -0.0, np.inf, -np.inf, np.nan, -1e-8, 1e-8], rng.standard_normal(4000) * 4])
    values = values.astype(dtype)
    g, u = (rng.standard_normal(values.size).astype(dtype) for _ in range(2))
    ours, theirs = {}, {}
    for lib, functional, out in ((autograd, F, ours), (torch, torch.nn.functional, theirs)):
        x = lib.tensor(values, requires_grad=True)
        y = getattr(functional, name)(x) if alpha is None else getattr(functional, name)(x, alpha)
        (grad,) = lib.autograd.grad(y, x, lib.tensor(g), create_graph=True)
        (second,) = lib.autograd.grad(grad, x, lib.tensor(u))
        out.update(y=y.detach().numpy(), grad=grad.detach().numpy(), second=second.numpy(), node=y.grad_fn.name())
    assert ours.pop("node") == theirs.pop("node")
    tolerance = {"float16": 1e-3, "float32": 4e-7, "float64": 1e-15}[dtype]
    number = ~np.isnan(values)  # (a NaN's gradient: PyTorch's vectorised kernel gives NaN, its scalar one and ours the
    for key in ours:  # positive slope, as autograd/ops/activations.py says)
        np.testing.assert_allclose(ours[key][number], theirs[key][number], rtol=tolerance, atol=0, err_msg=key)
    assert np.isnan(ours["y"][~number]).all() and np.isnan(theirs["y"][~number]).all()
    if dtype == "float16":  # (float32 arithmetic rounded once: the same float16 values but for a few ties)
        assert np.mean(ours["y"] == theirs["y"]) > 0.999 and np.mean(ours["grad"] == theirs["grad"]) > 0.99
