"""Fixes found by tests/test_programs_probe16_explain_*.py, each checked on chainrule and on PyTorch (``T``)."""

import warnings

import numpy as np
import pytest


def nn_of(T):
    return T.nn if T.__name__ == "torch" else __import__("nn")


def test_full_backward_hook_warns_when_no_input_requires_grad(T):
    nn = nn_of(T)
    layer = nn.Linear(2, 3)
    seen = []
    layer.register_full_backward_hook(lambda module, grad_input, grad_output: seen.append((grad_input, grad_output)))
    with pytest.warns(UserWarning, match="Full backward hook is firing when gradients are computed with respect to "
                                         "module outputs since no inputs require gradients"):
        layer(T.ones(1, 2)).sum().backward()
    (grad_input, grad_output), = seen
    assert grad_input == (None,)
    np.testing.assert_array_equal(grad_output[0].numpy(), np.ones((1, 3)))


def test_full_backward_hook_is_silent_when_an_input_requires_grad(T):
    nn = nn_of(T)
    layer = nn.Linear(2, 3)
    layer.register_full_backward_hook(lambda module, grad_input, grad_output: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(T.ones(1, 2, requires_grad=True)).sum().backward()


def test_full_backward_hooks_may_return_lists(T):
    nn = nn_of(T)
    T.manual_seed(0)
    layer = nn.Linear(3, 2)
    layer.register_full_backward_pre_hook(lambda module, grad_output: [grad_output[0] * 2])
    layer.register_full_backward_hook(lambda module, grad_input, grad_output: [grad_input[0] + 1])
    x = T.ones(1, 3, requires_grad=True)
    layer(x).sum().backward()
    expected = 2 * layer.weight.detach().numpy().sum(0, keepdims=True) + 1
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["full", "pre"])
def test_full_backward_hooks_may_not_change_a_gradients_size_or_type(T, kind):
    nn = nn_of(T)

    def register(layer, make):
        if kind == "full":
            layer.register_full_backward_hook(lambda module, grad_input, grad_output: make(grad_input[0]))
        else:
            layer.register_full_backward_pre_hook(lambda module, grad_output: make(grad_output[0]))

    for make, words in [(lambda g: (g.double(),), r"has changed the type of value \(was torch.FloatTensor got "
                                                   r"torch.DoubleTensor\)"),
                        (lambda g: (T.ones(4, 3),), "has changed the size of value"),
                        (lambda g: g * 2, "has changed the size of value")]:  # a bare tensor: its rows
        layer = nn.Linear(3, 3)
        register(layer, make)
        with pytest.raises(RuntimeError, match=words):
            layer(T.ones(1, 3, requires_grad=True)).sum().backward()


def test_a_backward_pre_hook_returning_none_stops_the_gradient_into_the_module(T):
    nn = nn_of(T)
    layer = nn.Linear(3, 2)
    seen = []
    layer.register_full_backward_pre_hook(lambda module, grad_output: (None,))
    layer.register_full_backward_hook(lambda module, grad_input, grad_output: seen.append((grad_input, grad_output)))
    x = T.ones(1, 3, requires_grad=True)
    y = T.ones(1, 2, requires_grad=True)
    (layer(x) + y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0)  # (it flowed through the module before the fix)
    np.testing.assert_array_equal(y.grad.numpy(), 1)
    (grad_input, grad_output), = seen
    np.testing.assert_array_equal(grad_input[0].numpy(), 0)
    assert grad_output == (None,)
    # PyTorch leaves the parameters' .grad None; chainrule gives them zeros
    assert layer.weight.grad is None or not layer.weight.grad.numpy().any()


def test_a_tensor_hook_that_changes_the_gradients_type_is_refused_in_pytorchs_words(T):
    x = T.ones(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda grad: grad.double())
    with pytest.raises(RuntimeError, match=r"has changed the type of value \(was torch.FloatTensor got "
                                           r"torch.DoubleTensor\)"):
        y.sum().backward()


def test_always_call_hooks_run_when_a_hook_or_pre_hook_raises(T):
    nn = nn_of(T)
    layer = nn.Linear(2, 2)
    calls = []

    def failing(module, args, output):
        calls.append("failing")
        raise ValueError("hook failed")

    layer.register_forward_hook(lambda module, args, output: calls.append(("first", output is not None)),
                                always_call=True)
    layer.register_forward_hook(failing)
    layer.register_forward_hook(lambda module, args, output: calls.append(("last", output is not None)),
                                always_call=True)
    with pytest.raises(ValueError, match="hook failed"):
        layer(T.ones(1, 2))
    # the first always_call hook ran in turn (once); the last runs after the failure, given forward's output
    assert calls == [("first", True), "failing", ("last", True)]

    calls.clear()
    pre = layer.register_forward_pre_hook(lambda module, args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        layer(T.ones(1, 2))
    pre.remove()
    assert calls == [("first", False), ("last", False)]  # no output yet: None
