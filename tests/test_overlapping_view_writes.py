"""A recorded in-place op through a view whose windows share elements (``x.unfold(0, 3, 2)``: a window of 3 every
2 steps shows each window's ends twice): the op's gradient for the old value is copied into the base's gradient,
each shared element taking one window's, as PyTorch's CopySlices copies it, not the sum over the windows that show
it (ops/overlapping_view_read.py). The op reads the old values and the results are stored, so the derivative
of a shown element is the op's once: finite differences agree (float64 gradcheck and gradgradcheck), and PyTorch
where it is installed and its kernel's values are the same (ops whose value at a shared element does not depend on
how often the kernel visits it)."""

import numpy as np
import pytest

import autograd
from autograd.autograd import gradcheck, gradgradcheck

WRITES = {
    "mul_ by a number": lambda w: w.mul_(2.5),
    "clamp_": lambda w: w.clamp_(-1.5, 2.5),
    "relu_": lambda w: w.relu_(),
    "masked_fill_": lambda w: w.masked_fill_(w > 3, 0.0),
    "tanh_": lambda w: w.tanh_(),
    "setitem of a column": lambda w: w.__setitem__((slice(None), 0), w[:, -1] * 3),
}


def _through_windows(write, size=3, step=2):
    def f(a):
        b = a.clone()
        write(b.unfold(0, size, step))
        return b * autograd.arange(1.0, a.numel() + 1, dtype=a.dtype)
    return f


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
@pytest.mark.parametrize("size, step", [(3, 2), (3, 1), (2, 2)])
def test_the_gradient_is_the_derivative_of_the_stored_values(write, size, step):
    a = autograd.tensor(np.linspace(-3.1, 3.7, 7), requires_grad=True)
    assert gradcheck(_through_windows(write, size, step), (a,))
    assert gradgradcheck(_through_windows(write, size, step), (a,))


def test_a_write_reading_the_view_itself_is_refused_as_pytorchs():
    """w.mul_(w): Mul saved w, which the write changes (PyTorch refuses it too)."""
    a = autograd.tensor(np.arange(1.0, 6.0), requires_grad=True)
    b = a * 1
    w = b.unfold(0, 3, 2)
    w.mul_(w)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


def test_each_shared_element_takes_one_windows_gradient():
    a = autograd.tensor(np.arange(1.0, 8.0) - 3, requires_grad=True)
    b = a.clone()
    b.unfold(0, 3, 2).mul_(2)
    (b * autograd.arange(1.0, 8.0, dtype=autograd.float64)).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2, 4, 6, 8, 10, 12, 14])  # (the sum would give 12 and 20 at 2, 4)


def test_two_dimensional_windows():
    a = autograd.arange(1.0, 17.0, dtype=autograd.float64).reshape(4, 4).requires_grad_()
    b = a.clone()
    b.unfold(0, 2, 1).unfold(1, 2, 1).mul_(3)
    (b * autograd.arange(1.0, 17.0, dtype=autograd.float64).reshape(4, 4)).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), 3 * np.arange(1.0, 17.0).reshape(4, 4))


@pytest.mark.parametrize("name", ["mul_ by a number", "clamp_", "relu_", "masked_fill_"])
def test_as_pytorch(name):
    torch = pytest.importorskip("torch")
    grads = []
    for T in (autograd, torch):
        a = T.tensor(np.arange(1.0, 8.0) - 3, requires_grad=True)
        b = a.clone()
        WRITES[name](b.unfold(0, 3, 2))
        (b * T.arange(1.0, 8.0, dtype=T.float64)).sum().backward()
        grads.append(a.grad.numpy())
    np.testing.assert_array_equal(*grads)
