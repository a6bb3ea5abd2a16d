"""Fixes found by tests/test_programs_probe16_explain.py, each checked on chainrule and on PyTorch (``T``)."""

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
