"""float16 reductions and normalisations accumulate in float32 and round once, as PyTorch's CPU kernels do, and a
float32 cumsum accumulates in float64: a float16 running sum stops growing once its terms fall below half its
spacing (cumsum of 300 values was 0.94 off here, 0.06 in PyTorch), and a variance, a norm or a softmax rounds
at every step. The result keeps the input's dtype. Each test runs on chainrule and, where installed, on
PyTorch, against float64."""

import numpy as np
import pytest

import nn


def _functional(T):
    return nn.functional if T.__name__ == "autograd" else T.nn.functional


CASES = {
    "cumsum": (lambda T, x: x.cumsum(1), 0.07),
    "softmax": (lambda T, x: x.softmax(1), 3e-4),
    "log_softmax": (lambda T, x: x.log_softmax(1), 1e-2),
    "var": (lambda T, x: x.var(1), 5e-3),
    "std": (lambda T, x: x.std(1), 2e-3),
    "norm": (lambda T, x: x.norm(dim=1), 2e-2),
    "layer_norm": (lambda T, x: _functional(T).layer_norm(x, (300,)), 1.5e-3),
    "group_norm": (lambda T, x: _functional(T).group_norm(x.reshape(64, 4, 75), 2), 1.5e-3),
    "batch_norm": (lambda T, x: _functional(T).batch_norm(x, None, None, training=True), 2.5e-3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float16_is_computed_in_float32_and_rounded_once(T, name):
    op, tolerance = CASES[name]
    data = (np.random.default_rng(0).standard_normal((64, 300)) * 3).astype(np.float16)
    result = op(T, T.tensor(data))
    expected = op(T, T.tensor(data.astype(np.float64))).numpy()
    assert result.dtype == T.float16
    assert np.abs(result.float().numpy() - expected).max() <= tolerance


def test_float16_softmax_gradient_in_float32(T):
    data = (np.random.default_rng(1).standard_normal((8, 300)) * 3).astype(np.float16)
    x = T.tensor(data, requires_grad=True)
    (x.softmax(1) * T.tensor(np.linspace(-1, 1, 300), dtype=T.float16)).float().sum().backward()
    x64 = T.tensor(data.astype(np.float64), requires_grad=True)
    (x64.softmax(1) * T.tensor(np.linspace(-1, 1, 300), dtype=T.float16).double()).sum().backward()
    assert x.grad.dtype == T.float16
    np.testing.assert_allclose(x.grad.float().numpy(), x64.grad.numpy(), atol=2e-4)


def test_a_long_float32_cumsum_accumulates_in_float64(T):
    """PyTorch's CPU cumsum keeps a float32 running sum in float64: over 10⁵ terms near 1000, a float32 one
    drifts 3e-6 (relative) from the exact sums; this one stays within 1e-7."""
    data = (np.random.default_rng(2).standard_normal((2, 100_000)) + 1000).astype(np.float32)
    result = T.tensor(data).cumsum(1)
    exact = np.cumsum(data.astype(np.float64), axis=1)
    assert result.dtype == T.float32
    assert np.abs((result.numpy() - exact) / exact).max() < 1e-7


ACTIVATIONS = {
    "silu": lambda F, x: F.silu(x), "mish": lambda F, x: F.mish(x), "softplus": lambda F, x: F.softplus(x),
    "softplus beta 2": lambda F, x: F.softplus(x, beta=2.0), "elu": lambda F, x: F.elu(x),
    "selu": lambda F, x: F.selu(x), "celu": lambda F, x: F.celu(x, 0.5), "logsigmoid": lambda F, x: F.logsigmoid(x),
    "hardswish": lambda F, x: F.hardswish(x),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_a_float16_activation_is_its_float32_value_rounded_once(T, name):
    """PyTorch's kernels compute a float16 activation in float32; composed of float16 ops, x · σ(x) came out a
    unit off in a fifth of the values."""
    F = _functional(T)
    data = (np.random.default_rng(3).standard_normal(2000) * 4).astype(np.float16)
    half = ACTIVATIONS[name](F, T.tensor(data))
    rounded_once = ACTIVATIONS[name](F, T.tensor(data.astype(np.float32))).half()
    assert half.dtype == T.float16
    np.testing.assert_array_equal(half.float().numpy(), rounded_once.float().numpy())
