"""Max pooling with its passes over cache-sized blocks of channels and the forward's maxima kept for backward
(session 36): values, winners (ties, NaN, −∞, padding) and gradients against a direct NumPy formula (and PyTorch
where installed), in every memory layout; an in-place write to the result after pooling leaves backward right."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.ops import depthwise_convolution


def max_pool_reference(x, kernel, stride, padding):
    """(y, dL/dx for dL/dy = g): each window's maximum, the first in scan order (padding never wins), and g added
    at its position; by the definition, one window at a time."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    padded = np.full((n, c, h + 2 * padding, w + 2 * padding), -np.inf)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    y = np.empty((n, c, oh, ow))
    winner = np.empty((n, c, oh, ow, 2), dtype=int)
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel].reshape(n, c, -1)
            k = window.argmax(-1)
            y[:, :, i, j] = np.take_along_axis(window, k[..., None], -1)[..., 0]
            winner[:, :, i, j] = np.stack([i * stride + k // kernel - padding, j * stride + k % kernel - padding], -1)
    return y, winner


def spread_reference(g, winner, shape):
    dx = np.zeros(shape)
    n, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            np.add.at(dx, (n, c, winner[:, :, i, j, 0], winner[:, :, i, j, 1]), g[:, :, i, j])
    return dx


LAYOUTS = {
    "nchw": lambda a: np.ascontiguousarray(a),
    "channels last": lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
    "batch innermost": lambda a: np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
def test_max_pool_values_and_gradient_with_ties_across_many_blocks(layout, kernel, stride, padding, monkeypatch):
    monkeypatch.setattr(depthwise_convolution, "BLOCK_BYTES", 64)  # one channel a block: many blocks
    rng = np.random.default_rng(0)
    xn = np.maximum(rng.integers(-2, 3, (3, 5, 7, 8)).astype(np.float64), 0)  # relu'd integers: ties everywhere
    x = autograd.from_numpy(LAYOUTS[layout](xn)).requires_grad_()
    y = F.max_pool2d(x, kernel, stride, padding)
    expected, winner = max_pool_reference(xn, kernel, stride, padding)
    np.testing.assert_array_equal(y.numpy(), expected)
    g = rng.standard_normal(y.shape)
    y.backward(autograd.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), spread_reference(g, winner, xn.shape), rtol=1e-14, atol=1e-14)
    _, indices = F.max_pool2d(autograd.from_numpy(LAYOUTS[layout](xn)), kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(indices.numpy(), winner[..., 0] * xn.shape[3] + winner[..., 1])


def test_an_in_place_write_after_max_pooling_leaves_its_gradient_right():
    """nn.MaxPool2d then nn.ReLU(inplace=True): backward finds the winners from its own copy of the maxima."""
    xn = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    x = autograd.tensor(xn, requires_grad=True)
    y = F.max_pool2d(x, 3, 2, 1)
    y.relu_()
    y.sum().backward()
    expected, winner = max_pool_reference(xn, 3, 2, 1)
    np.testing.assert_allclose(x.grad.numpy(), spread_reference((expected > 0) * 1.0, winner, xn.shape))


def test_max_pool_second_derivative_by_finite_differences():
    x = autograd.tensor(np.random.default_rng(2).standard_normal((2, 3, 5, 6)), requires_grad=True)

    def fn(x):
        return F.max_pool2d(x, 3, 2, 1) ** 2

    assert autograd.gradcheck(fn, (x,))
    assert autograd.gradgradcheck(fn, (x,))


def test_max_pool_without_grad_mode_keeps_no_copy_and_gives_the_same_values():
    xn = np.random.default_rng(3).standard_normal((2, 4, 8, 8))
    with autograd.no_grad():
        y = F.max_pool2d(autograd.tensor(xn), 2)
    np.testing.assert_array_equal(y.numpy(), max_pool_reference(xn, 2, 2, 0)[0])


@pytest.mark.parametrize("special", [np.nan, -np.inf, np.inf])
def test_max_pool_with_nan_and_infinities_against_torch(special):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    xn = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    xn[rng.random(xn.shape) < 0.15] = special
    g = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    results = []
    for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
        x = lib.tensor(xn, requires_grad=True)
        y = functional.max_pool2d(x, 3, 2, 1)
        y.backward(lib.tensor(g))
        results.append((y.detach().numpy(), x.grad.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    # (where windows overlap, the dL/dy of two windows add up at one position in another order than PyTorch's)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6, atol=1e-6)


def test_conv_relu_pool_chain_against_torch():
    """The layouts a network hands on (a convolution's batch-innermost result) through ReLU and max pooling."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    xn, wn = rng.standard_normal((4, 3, 12, 12)), rng.standard_normal((8, 3, 3, 3))
    dn = rng.standard_normal((8, 1, 3, 3))
    results = []
    for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
        x, w, d = (lib.tensor(a, requires_grad=True) for a in (xn, wn, dn))
        h = functional.max_pool2d(functional.relu(functional.conv2d(x, w, padding=1)), 3, 2, 1)
        y = functional.max_pool2d(functional.conv2d(h, d, padding=1, groups=8), 2)
        (y * y).sum().backward()
        results.append([a.detach().numpy() for a in (y, x.grad, w.grad, d.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_average_pooling_over_many_blocks_matches_the_definition(layout, kernel, stride, padding, monkeypatch):
    """y = the mean of each window, zeros of the padding counted (count_include_pad); dL/dx: g / k² spread over
    each window."""
    monkeypatch.setattr(depthwise_convolution, "BLOCK_BYTES", 64)
    rng = np.random.default_rng(6)
    xn = rng.standard_normal((3, 5, 7, 8))
    x = autograd.from_numpy(LAYOUTS[layout](xn)).requires_grad_()
    y = F.avg_pool2d(x, kernel, stride, padding)
    padded = np.pad(xn, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))
    g = rng.standard_normal(y.shape)
    expected, grad = np.empty(y.shape), np.zeros(padded.shape)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            rows, cols = slice(i * stride, i * stride + kernel), slice(j * stride, j * stride + kernel)
            expected[:, :, i, j] = padded[:, :, rows, cols].mean((2, 3))
            grad[:, :, rows, cols] += g[:, :, i, j, None, None] / kernel ** 2
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-14, atol=1e-14)
    y.backward(autograd.tensor(g))
    inside = grad[:, :, padding:padding + xn.shape[2], padding:padding + xn.shape[3]]
    np.testing.assert_allclose(x.grad.numpy(), inside, rtol=1e-14, atol=1e-14)
