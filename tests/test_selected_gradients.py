"""Where an op's derivative is 0 (relu off, clamp outside its bounds, a flat piece of hardtanh, the
smaller input of a maximum, rounding), its gradient is 0 even where the gradient arriving is inf or
NaN, as PyTorch's backward selects: a product would give 0 · ∞ = NaN, which a matmul then spreads over
every weight. ``d.clamp(min=0).sqrt()``, a distance, is the usual way to meet it. Each test runs on
chainrule and, where installed, on PyTorch."""

import math

import numpy as np
import pytest

import nn

INF = math.inf


def _functional(T):
    return nn.functional if T.__name__ == "autograd" else T.nn.functional


MASKED = {
    "relu": lambda T, F, x: F.relu(x),
    "relu_inplace": lambda T, F, x: F.relu(x.clone(), inplace=True),
    "tensor.relu": lambda T, F, x: x.relu(),
    "clamp_min": lambda T, F, x: x.clamp(min=0),
    "clamp_both": lambda T, F, x: x.clamp(0, 1),
    "clip": lambda T, F, x: T.clip(x, 0, 1),
    "clamp_max": lambda T, F, x: -x.clamp(max=0),
    "hardtanh": lambda T, F, x: F.hardtanh(x, 0.0, 1.0),
    "relu6": lambda T, F, x: F.relu6(x),
    "threshold": lambda T, F, x: F.threshold(x, 0.0, 0.0),
    "maximum": lambda T, F, x: T.maximum(x, T.zeros_like(x)),
    "max_dim": lambda T, F, x: T.stack([x, T.zeros_like(x)]).max(0).values,
    "hardshrink": lambda T, F, x: F.hardshrink(x, 0.5).abs(),
    "softshrink": lambda T, F, x: F.softshrink(x, 0.5).abs(),
}


@pytest.mark.parametrize("name", sorted(MASKED))
def test_an_infinite_gradient_does_not_pass_where_the_derivative_is_zero(T, name):
    """sqrt's derivative at 0 is ∞, on exactly the entries the op cut to 0: their gradient is 0, not NaN;
    elsewhere it is finite and not 0."""
    values = np.array([-1.0, -0.25, 0.0, 0.25, 0.75, 4.0])
    x = T.tensor(values, dtype=T.float64, requires_grad=True)
    y = MASKED[name](T, _functional(T), x)
    y.sqrt().sum().backward()
    grad, cut = x.grad.numpy(), (y.detach().numpy() == 0) & (values != 0)
    assert cut.any()
    np.testing.assert_array_equal(grad[cut], 0.0)
    assert np.isfinite(grad[~cut & (values != 0)]).all()


def test_lp_pool_of_a_window_of_zeros_has_a_zero_gradient(T):
    """PyTorch's lp_pool is sign(s) · relu(|s|) before the root, whose derivative at s = 0 is ∞: relu's select
    keeps it out (a window of zeros after a ReLU is common)."""
    x = T.tensor([[[0.0, 0.0, 3.0, 4.0]]], dtype=T.float64, requires_grad=True)
    _functional(T).lp_pool1d(x, 2, 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[[0.0, 0.0, 0.6, 0.8]]])


def test_relu_of_a_large_layer_with_an_infinite_gradient_selects(T):
    """The fast product is kept where all is finite; the select runs where it is not (here one element of a
    large tensor), with the same answer as PyTorch's."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((64, 256)).astype(np.float32)
    data[3, 7] = -1.0  # off
    x = T.tensor(data, requires_grad=True)
    upstream = np.ones_like(data)
    upstream[3, 7] = np.inf
    y = _functional(T).relu(x)
    y.backward(T.tensor(upstream))
    expected = np.where(data > 0, upstream, 0.0)
    np.testing.assert_array_equal(x.grad.numpy(), expected)


@pytest.mark.parametrize("name, op", [
    ("sign", lambda T, x: T.sign(x)), ("floor", lambda T, x: T.floor(x)), ("round", lambda T, x: T.round(x)),
    ("pow0", lambda T, x: x ** 0), ("floor_divide", lambda T, x: T.div(x, 2.0, rounding_mode="floor")),
    ("angle", lambda T, x: T.angle(x)), ("norm0", lambda T, x: T.linalg.vector_norm(x, ord=0)),
])
def test_a_flat_map_gives_zeros_under_an_infinite_gradient(T, name, op):
    x = T.tensor([-1.5, 0.0, 2.5], dtype=T.float64, requires_grad=True)
    y = op(T, x)
    (y * T.tensor(INF, dtype=T.float64)).sum().backward()
    if x.grad is None:  # (PyTorch leaves the gradient of ord=0 undefined)
        return
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])


def test_logdet_of_a_singular_matrix_has_an_infinite_gradient_not_an_error(T):
    a = T.tensor([[[1.0, 2.0], [2.0, 4.0]], [[2.0, 1.0], [1.0, 3.0]]], dtype=T.float64, requires_grad=True)
    for value in (T.logdet(a), T.linalg.slogdet(a)[1]):
        a.grad = None
        value.sum().backward()
        assert value[0].item() == -INF
        assert np.isinf(a.grad[0].numpy()).all()
        np.testing.assert_allclose(a.grad[1].numpy(), [[0.6, -0.2], [-0.2, 0.4]], rtol=1e-12)
