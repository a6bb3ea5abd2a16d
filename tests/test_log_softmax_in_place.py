"""log_softmax's backward writes g - e^y·Σg in place (perf31); the shapes where NumPy hands back a
scalar instead of an array (0-d), or where nothing is summed (a dim of size 0), keep their values."""
import numpy as np

import autograd


def test_zero_dim_log_softmax_is_zero_and_its_gradient_zero():
    x = autograd.tensor(np.float32(1.5), requires_grad=True)
    y = x.log_softmax(0)
    y.backward(autograd.tensor(np.float32(3.0)))
    assert y.item() == 0.0 and y.dtype == autograd.float32
    assert x.grad.item() == 0.0 and x.grad.shape == ()  # g - e^0 · g


def test_log_softmax_values_and_gradient_by_hand():
    a = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1000.0]], np.float32)
    g = np.array([[1.0, -2.0, 0.5], [0.25, 1.0, -1.0]], np.float32)
    x = autograd.tensor(a, requires_grad=True)
    y = x.log_softmax(1)
    y.backward(autograd.tensor(g))
    shifted = a.astype(np.float64) - a.max(1, keepdims=True)
    expected = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), g - np.exp(expected) * g.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_empty_dim_log_softmax_is_empty():
    x = autograd.tensor(np.zeros((3, 0), np.float32), requires_grad=True)
    y = x.log_softmax(1)
    y.backward(autograd.tensor(np.zeros((3, 0), np.float32)))
    assert y.shape == (3, 0) and x.grad.shape == (3, 0)
