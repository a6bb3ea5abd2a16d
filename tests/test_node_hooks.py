"""Hooks on graph nodes (PyTorch's Node.register_prehook / register_hook) and Node.metadata."""

import numpy as np
import pytest

import autograd


def _product():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    w = autograd.tensor([3.0, 4.0], requires_grad=True)
    return x, w, x * w


def test_a_prehook_sees_and_may_replace_the_nodes_gradient():
    x, w, y = _product()
    seen = []
    y.grad_fn.register_prehook(lambda grad_outputs: seen.append(grad_outputs[0].tolist()) or (grad_outputs[0] * 2,))
    y.sum().backward()
    assert seen == [[1.0, 1.0]]
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 8.0])
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 4.0])


def test_a_hook_sees_what_the_node_sends_and_may_replace_it():
    x, w, y = _product()
    seen = []

    def hook(grad_inputs, grad_outputs):
        seen.append(([g.tolist() for g in grad_inputs], [g.tolist() for g in grad_outputs]))
        return grad_inputs[0] * 10, grad_inputs[1]

    handle = y.grad_fn.register_hook(hook)
    y.sum().backward(retain_graph=True)
    assert seen == [([[3.0, 4.0], [1.0, 2.0]], [[1.0, 1.0]])]
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 40.0])
    handle.remove()
    x.grad = w.grad = None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])
    assert len(seen) == 1


def test_a_hook_on_a_node_with_an_input_that_needs_no_gradient_sees_none_there():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = x * autograd.tensor([3.0, 4.0])
    seen = []
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: seen.append(grad_inputs[1]))
    y.sum().backward()
    assert seen == [None]


def test_a_hook_returning_the_wrong_count_is_refused():
    x, w, y = _product()
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0],))
    with pytest.raises(RuntimeError, match="returned 1 gradients, expected 2"):
        y.sum().backward()


class Double(autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


def test_hooks_on_a_custom_function_node_and_metadata():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = Double.apply(x)
    y.grad_fn.metadata["step"] = 7
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] + 1,))
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    assert y.grad_fn.metadata == {"step": 7}


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    results = []
    for library in (torch, autograd):
        x = library.tensor([1.0, -2.0, 0.5], requires_grad=True)
        y = x.exp()
        z = (y * y).sum()
        log = []
        y.grad_fn.register_prehook(lambda go, log=log: log.append(go[0].tolist()) or (go[0] + 1,))
        y.grad_fn.register_hook(lambda gi, go, log=log: log.append((gi[0].tolist(), go[0].tolist())) or (gi[0] * 3,))
        z.backward()
        results.append((x.grad.tolist(), log))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
    np.testing.assert_allclose(results[1][1][0], results[0][1][0], rtol=1e-6)
    for ours, theirs in zip(results[1][1][1], results[0][1][1]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_node_names_as_pytorch_calls_them():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    names = {op: fn(x).grad_fn.name() for op, fn in {
        "mul": lambda t: t * t, "add": lambda t: t + t, "sub": lambda t: t - 1.0, "scale": lambda t: t * 2.0,
        "exp": lambda t: t.exp(), "tanh": lambda t: t.tanh(), "sum": lambda t: t.sum(), "mean": lambda t: t.mean(),
    }.items()}
    assert names == {"mul": "MulBackward0", "add": "AddBackward0", "sub": "SubBackward0", "scale": "MulBackward0",
                     "exp": "ExpBackward0", "tanh": "TanhBackward0", "sum": "SumBackward0", "mean": "MeanBackward0"}
    assert repr((x * x).grad_fn) == "<MulBackward0>"
    assert Double.apply(x).grad_fn.name() == "DoubleBackward"  # a custom Function's, as PyTorch's
