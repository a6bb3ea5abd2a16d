"""``add``/``sub`` with ``alpha`` (and ``add_``/``sub_``, SGD's ``p.add_(grad, alpha=-lr)``) on float32 and float16
tensors as PyTorch's CPU kernels compute them: one fused multiply-add, alpha rounded to the tensors' dtype, the
product exact and the sum rounded once. Expectations are that rule written in NumPy a precision up; the tests
run on PyTorch too where it is installed."""

import numpy as np
import pytest


def fused(a, b, alpha):
    wide = np.float32 if a.dtype == np.float16 else np.float64
    return (a.astype(wide) + b.astype(wide) * wide(a.dtype.type(alpha))).astype(a.dtype)


@pytest.mark.parametrize("dtype, n", [(np.float32, 1), (np.float32, 7), (np.float32, 1003), (np.float16, 1024)])
def test_add_and_sub_with_alpha_round_once(T, dtype, n):
    """(float16's last elements past a whole number of PyTorch's vector blocks go through its scalar loop, which
    rounds otherwise, and the block depends on the processor: float16 is checked on whole blocks.)"""
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    for alpha in (0.7, -0.013, 3):
        np.testing.assert_array_equal(T.add(T.tensor(a), T.tensor(b), alpha=alpha).numpy(), fused(a, b, alpha))
        np.testing.assert_array_equal(T.sub(T.tensor(a), T.tensor(b), alpha=alpha).numpy(), fused(a, b, -alpha))
        x = T.tensor(a)
        x.add_(T.tensor(b), alpha=alpha)
        np.testing.assert_array_equal(x.numpy(), fused(a, b, alpha))
        x = T.tensor(a)
        x.sub_(T.tensor(b), alpha=alpha)
        np.testing.assert_array_equal(x.numpy(), fused(a, b, -alpha))


def test_a_broadcast_other_and_the_gradient(T):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((17, 59)).astype(np.float32), rng.standard_normal(59).astype(np.float32)
    x = T.tensor(a)
    x.add_(T.tensor(b), alpha=0.7)
    np.testing.assert_array_equal(x.numpy(), fused(a, np.broadcast_to(b, a.shape), 0.7))
    leaf, other = T.tensor(a, requires_grad=True), T.tensor(b, requires_grad=True)
    y = T.add(leaf, other, alpha=0.7)
    np.testing.assert_array_equal(y.detach().numpy(), fused(a, np.broadcast_to(b, a.shape), 0.7))
    y.sum().backward()
    assert leaf.grad.dtype == T.float32 and np.all(leaf.grad.numpy() == 1)
    np.testing.assert_allclose(other.grad.numpy(), np.full(59, 17 * np.float32(0.7)), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_addcdiv_scales_the_numerator_before_dividing(T, dtype):
    """PyTorch's addcdiv computes input + (value · tensor1) / tensor2 in that order (Adam's and Adagrad's update
    ``p.addcdiv_(m, denominator, value=-step)``); scaling the quotient instead put a few hundredths a unit off."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(2000).astype(dtype), rng.standard_normal(2000).astype(dtype)
    c = np.abs(rng.standard_normal(2000)).astype(dtype) + dtype(0.1)
    expected = a + (dtype(-0.013) * b) / c
    np.testing.assert_array_equal(T.addcdiv(T.tensor(a), T.tensor(b), T.tensor(c), value=-0.013).numpy(), expected)
    x = T.tensor(a)
    x.addcdiv_(T.tensor(b), T.tensor(c), value=-0.013)
    np.testing.assert_array_equal(x.numpy(), expected)
