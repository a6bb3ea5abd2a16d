"""The exact GELU as one node (``Gelu``, ``GeluGrad`` of autograd/ops/activations.py) and the error function it
rests on (autograd/ops/error_function.py, Cody's rational approximations): gradients and second derivatives
against finite differences over hypothesis-drawn shapes, values against math.erf and math.erfc and against
PyTorch (float16, float32, float64), the node PyTorch names, and the kept Φ(x) staying out of saved-tensor hooks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
from autograd.backend import to_numpy, xp
from autograd.ops import error_function
from tests.test_ops import assert_first_and_second_derivatives, unary


def _on_the_array_module(function):
    """``function`` of a NumPy array computed on the array module's (CuPy's too), its result read back."""
    return lambda values: to_numpy(function(xp.asarray(values)))


erf, erfc = _on_the_array_module(error_function.erf), _on_the_array_module(error_function.erfc)
erfcx_nonnegative = _on_the_array_module(error_function.erfcx_nonnegative)


def _gelu_gradient(x):
    (grad,) = autograd.grad((nn.functional.gelu(x) * x.cos()).sum(), x, create_graph=True)
    return grad


CASES = {
    "Gelu": (unary(-5.0, 5.0), nn.functional.gelu),
    "GeluGrad": (unary(-4.0, 4.0), _gelu_gradient),
}


@pytest.mark.parametrize("name", list(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)


POINTS = np.concatenate([np.linspace(-8, 8, 161), [0.0, -0.0, 0.46875, -0.46875, 0.4687501, 4.0, 4.0000001, 5.9,
                                                   26.0, 27.0, 1e-300, -1e-8, 40.0, -40.0]])


def test_erf_and_erfc_agree_with_pythons_to_a_few_units_in_the_last_place():
    expected_erf = np.array([math.erf(v) for v in POINTS])
    expected_erfc = np.array([math.erfc(v) for v in POINTS])
    np.testing.assert_allclose(erf(POINTS), expected_erf, rtol=4e-16, atol=0)
    tiny = expected_erfc < 1e-300  # (subnormal results: their relative precision is gone anyway)
    np.testing.assert_allclose(erfc(POINTS)[~tiny], expected_erfc[~tiny], rtol=1e-15, atol=0)
    assert np.all(np.abs(erfc(POINTS)[tiny] - expected_erfc[tiny]) < 1e-310)
    assert np.signbit(erf(np.array([-0.0]))[0]) and erf(np.array([0.0]))[0] == 0.0


def test_erf_and_erfc_of_a_large_shuffled_array_agree_with_pythons():
    """Past select's size (8,192 elements) the intervals' results are merged by their bits: every interval, the
    far tail past 4, NaN, ±inf and ±0 shuffled together, as a GELU's normal data meets them."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.standard_normal(12000) * 2, rng.uniform(4, 30, 3000) * rng.choice([-1, 1], 3000),
                             POINTS, [np.nan, np.inf, -np.inf] * 5])
    values = values[rng.permutation(values.size)]
    expected_erf = np.array([math.erf(v) for v in values])
    expected_erfc = np.array([math.erfc(v) for v in values])
    np.testing.assert_allclose(erf(values), expected_erf, rtol=1e-15, atol=0)  # (a few units of the last place)
    tiny = expected_erfc < 1e-300
    np.testing.assert_allclose(erfc(values)[~tiny], expected_erfc[~tiny], rtol=1e-15, atol=0)
    assert np.array_equal(np.signbit(erf(values)), np.signbit(expected_erf))  # (-0.0 kept)
    float32 = values.astype(np.float32)
    assert np.array_equal(erf(float32), erf(float32.astype(np.float64)).astype(np.float32), equal_nan=True)


def test_erfcx_agrees_with_a_product_taken_exactly():
    from decimal import Decimal, localcontext

    points = np.abs(POINTS[np.abs(POINTS) < 26])
    with localcontext() as context:
        context.prec = 40
        expected = [float(Decimal(math.erfc(v)) * (Decimal(v) ** 2).exp()) for v in points]
    np.testing.assert_allclose(erfcx_nonnegative(points), expected, rtol=1e-15)
    assert erfcx_nonnegative(np.array([1e10]))[0] == pytest.approx(1 / (1e10 * math.sqrt(math.pi)), rel=1e-15)


def test_special_values():
    values = np.array([np.nan, np.inf, -np.inf])
    assert np.array_equal(erf(values), [np.nan, 1.0, -1.0], equal_nan=True)
    assert np.array_equal(erfc(values), [np.nan, 0.0, 2.0], equal_nan=True)
    assert np.array_equal(erfcx_nonnegative(np.array([np.inf, np.nan])), [0.0, np.nan], equal_nan=True)
    assert erf(np.float32(0.5) * np.ones((), np.float32)).dtype == np.float32  # (0-d, its dtype kept)
    big = np.linspace(-6, 6, 7 * 14287).reshape(14287, 7).T  # (several blocks, a ragged last one, transposed)
    assert np.array_equal(erf(big), np.stack([erf(row.copy()) for row in big]))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_gelu_values_and_gradients_are_pytorchs(T, dtype):
    F = T.nn.functional
    x = T.tensor(np.linspace(-6, 6, 97), dtype=getattr(T, dtype), requires_grad=True)
    y = F.gelu(x)
    (grad,) = T.autograd.grad((y * y).sum(), x, create_graph=True)
    (second,) = T.autograd.grad(grad.sum(), x)
    exact = np.array([v * (1 + math.erf(v / math.sqrt(2))) / 2 for v in np.linspace(-6, 6, 97)])
    # (absolute tolerances too: Φ(x) = (1 + erf(x/√2))/2 cancels for negative x, in PyTorch's formula as here)
    tolerance = {"float16": 1e-3, "float32": 2e-6, "float64": 1e-14}[dtype]
    np.testing.assert_allclose(y.detach().double().numpy(), exact, rtol=tolerance, atol=tolerance)
    density = np.exp(-np.linspace(-6, 6, 97) ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([(1 + math.erf(v / math.sqrt(2))) / 2 for v in np.linspace(-6, 6, 97)])
    slope = cdf + np.linspace(-6, 6, 97) * density
    np.testing.assert_allclose(grad.detach().double().numpy(), 2 * exact * slope, rtol=max(tolerance, 1e-13) * 4,
                               atol=tolerance)
    assert y.dtype == getattr(T, dtype) and grad.dtype == getattr(T, dtype) and second.dtype == getattr(T, dtype)
    assert y.grad_fn.name() == "GeluBackward0"


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_gelu_matches_pytorch_to_its_rounding(dtype):
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(0).standard_normal(4096) * 3
    results = []
    for T in (autograd, torch):
        x = T.tensor(values, dtype=getattr(T, dtype), requires_grad=True)
        y = T.nn.functional.gelu(x)
        (grad,) = T.autograd.grad(y.sum() * 0.5, x, create_graph=True)
        (second,) = T.autograd.grad((grad * x).sum(), x)
        results.append([t.detach().double().numpy() for t in (y, grad, second)])
    rtol, atol = {"float16": (1e-3, 1e-3), "float32": (3e-6, 1e-6), "float64": (1e-14, 1e-15)}[dtype]
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


def test_the_kept_cdf_leaves_saved_tensor_hooks_in_charge():
    # under saved-tensor hooks (checkpointing, offloading) the node keeps nothing of its own: the backward computes
    # Φ(x) again, and gives the same gradient
    packed = []
    x = autograd.linspace(-3, 3, 11, dtype=autograd.float64, requires_grad=True)
    with autograd.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y = nn.functional.gelu(x)
    assert y.grad_fn.cdf is None and len(packed) == 1
    (hooked,) = autograd.autograd.grad(y.sum(), x)
    plain = nn.functional.gelu(x)
    assert plain.grad_fn.cdf is not None
    (kept,) = autograd.autograd.grad(plain.sum(), x)
    assert autograd.equal(hooked, kept)
    assert plain.grad_fn.cdf is None  # freed with the rest of what the node saved
