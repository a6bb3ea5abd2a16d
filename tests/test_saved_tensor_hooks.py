"""Hooks on the tensors nodes save for backward (PyTorch's torch.autograd.graph.saved_tensors_hooks)."""

import numpy as np
import pytest

import autograd
from autograd.autograd.graph import disable_saved_tensors_hooks, save_on_cpu, saved_tensors_hooks


def _logged_hooks(log, transform=lambda t: t):
    def pack(tensor):
        log.append(("pack", tuple(tensor.shape)))
        return transform(tensor)

    def unpack(packed):
        log.append(("unpack", tuple(packed.shape)))
        return packed

    return pack, unpack


def test_every_saved_tensor_is_packed_when_saved_and_unpacked_in_backward():
    log = []
    a = autograd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = autograd.tensor([2.0, 2.0, 2.0], requires_grad=True)
    with saved_tensors_hooks(*_logged_hooks(log, lambda t: t.detach().clone())):
        z = (a * b).exp()  # mul saves a and b, exp its output
    assert log == [("pack", (3,))] * 3
    z.sum().backward()
    assert log == [("pack", (3,))] * 3 + [("unpack", (3,))] * 3
    e = np.exp(np.array([2.0, 4.0, 6.0]))
    np.testing.assert_allclose(a.grad.numpy(), 2 * e, rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), [1 * e[0], 2 * e[1], 3 * e[2]], rtol=1e-6)


def test_outside_the_block_nothing_is_packed_and_ops_that_save_nothing_pack_nothing():
    log = []
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with saved_tensors_hooks(*_logged_hooks(log)):
        y = (x + 1).sum()  # add and sum keep shapes only
    z = x * x
    (y + z.sum()).backward()
    assert log == []


def test_the_unpacked_values_are_what_backward_uses():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with saved_tensors_hooks(lambda t: t.detach() * 10, lambda p: p):  # a lossy pack: backward sees 10 x
        y = (x * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [20.0, 40.0])  # x·(10x)' = 2 · 10x


def test_second_derivatives_through_copies_of_a_leaf():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with saved_tensors_hooks(lambda t: t.detach().clone(), lambda p: p):
        y = x**3
    (g,) = autograd.autograd.grad(y.sum(), x, create_graph=True)
    (g2,) = autograd.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), [3.0, 12.0])
    np.testing.assert_allclose(g2.numpy(), [6.0, 12.0])


def test_custom_function_saved_tensors_go_through_the_hooks():
    class Square(autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    log = []
    x = autograd.tensor([1.0, 3.0], requires_grad=True)
    with saved_tensors_hooks(*_logged_hooks(log)):
        y = Square.apply(x)
    y.sum().backward()
    assert log == [("pack", (2,)), ("unpack", (2,))]
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 6.0])


def test_a_saved_tensor_changed_in_place_is_still_refused():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with saved_tensors_hooks(lambda t: t, lambda p: p):
        h = x * 1
        y = (h * h).sum()
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_innermost_block_wins_and_disable_refuses_new_blocks():
    outer, inner = [], []
    x = autograd.tensor([1.0], requires_grad=True)
    with saved_tensors_hooks(*_logged_hooks(outer)):
        with saved_tensors_hooks(*_logged_hooks(inner)):
            x.exp()
        x.exp()
    assert len(inner) == 1 and len(outer) == 1
    with disable_saved_tensors_hooks("not here"):
        with pytest.raises(RuntimeError, match="not here"):
            with saved_tensors_hooks(lambda t: t, lambda p: p):
                pass


def test_save_on_cpu_is_a_pair_of_hooks_that_keeps_values():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with save_on_cpu(pin_memory=True):
        assert autograd.graph.modes.saved_tensor_hooks is not None
        y = (x.exp() * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])), rtol=1e-6)


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    results = []
    for library in (torch, autograd):
        log = []
        x = library.tensor([0.5, -1.0, 2.0], requires_grad=True)
        w = library.tensor([1.5, 0.5, -0.5], requires_grad=True)
        with library.autograd.graph.saved_tensors_hooks(*_logged_hooks(log, lambda t: t.detach().clone())):
            loss = ((x * w).tanh() * x).sum()
        loss.backward()
        results.append((x.grad.numpy().copy(), w.grad.numpy().copy(), [kind for kind, _ in log]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6)
    assert results[1][2].count("pack") == results[0][2].count("pack")
