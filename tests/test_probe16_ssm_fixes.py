"""The library fixes the probe16 sequence-model programs (tests/test_programs_probe16_ssm.py) led to, each
checked on chainrule and, where installed, on PyTorch (the ``T`` fixture) against the formula of PyTorch's
CPU kernel written out in NumPy."""

import numpy as np


def _half_gradient(T, op, x, g):
    t = T.tensor(x, requires_grad=True)
    y = op(t)
    (grad,) = T.autograd.grad(y, t, T.tensor(g))
    assert grad.dtype == T.float16
    return y.detach().numpy(), grad.numpy()


def _data(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(4000) * 3).astype(np.float16), rng.standard_normal(4000).astype(np.float16)


def test_float16_tanh_gradient_is_rounded_once(T):
    """tanh's backward g (1 - y²) in float16: PyTorch computes it in float32 and rounds once; 1 - y² rounded
    in float16 loses its low bits where y is near ±1 (16 units off at x = 2.4)."""
    x, g = _data(0)
    y, grad = _half_gradient(T, T.tanh, x, g)
    wide = y.astype(np.float32)
    np.testing.assert_array_equal(grad, (g.astype(np.float32) * (1 - wide * wide)).astype(np.float16))


def test_float16_sigmoid_gradient_in_the_order_of_pytorchs_kernel(T):
    """sigmoid's backward in float16 is PyTorch's g · (1 - y) · y, rounded to float16 after each step, in this
    order: g · y · (1 - y) came out a unit or two off in a third of the values."""
    x, g = _data(1)
    y, grad = _half_gradient(T, T.sigmoid, x, g)
    np.testing.assert_array_equal(grad, (g * (np.float16(1) - y)) * y)


def test_float32_sigmoid_gradient_in_the_order_of_pytorchs_kernel(T):
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 1, 4000).astype(np.float32)
    g = rng.standard_normal(4000).astype(np.float32)
    t = T.tensor(y, requires_grad=True)
    out = T.sigmoid(t)
    # sigmoid's backward reads its output: feed chosen outputs through sigmoid's derivative at them
    (grad,) = T.autograd.grad(out, t, T.tensor(g))
    s = out.detach().numpy()
    np.testing.assert_array_equal(grad.numpy(), (g * (np.float32(1) - s)) * s)
