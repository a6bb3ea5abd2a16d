"""The deprecated ``Module.register_backward_hook`` leaves a module's outputs themselves in place, as
PyTorch's (which hooks their grad_fn and wraps nothing): an in-place op after the module, a
``ReLU(inplace=True)`` as in VGG, then changes what a forward hook kept of the output, as Grad-CAM code
relies on. (They were passed through a copying gate, so the kept activations missed the ReLU.)"""

import importlib
import warnings

import numpy as np
import pytest


@pytest.fixture(params=["nn", pytest.param("torch.nn", marks=pytest.mark.torch)])
def library(request):
    nn_ = importlib.import_module(request.param)
    return nn_, importlib.import_module("autograd" if request.param == "nn" else "torch")


def test_forward_hook_sees_the_in_place_relu_after_a_hooked_linear(library):
    nn, T = library
    W = np.arange(12.0).reshape(4, 3) / 6 - 1
    layer = nn.Linear(3, 4)
    with T.no_grad():
        layer.weight.copy_(T.tensor(W))
        layer.bias.fill_(0.1)
    kept, seen = {}, {}
    layer.register_forward_hook(lambda mod, inp, out: kept.__setitem__("out", out.detach()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer.register_backward_hook(lambda mod, gin, gout: seen.__setitem__("gout", gout[0].detach().clone()))
    x = T.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], requires_grad=True)
    y = nn.ReLU(inplace=True)(layer(x))
    (y * T.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    pre = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]]) @ W.T + 0.1
    np.testing.assert_allclose(kept["out"].numpy(), np.maximum(pre, 0), rtol=1e-6)  # the ReLU reached it
    np.testing.assert_allclose(seen["gout"].numpy(), (pre > 0) * np.array([1.0, 2.0, 3.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), ((pre > 0) * [1.0, 2.0, 3.0, 4.0]) @ W, rtol=1e-6)


def test_deprecated_hook_on_a_module_whose_input_needs_no_gradient_still_runs(library):
    nn, T = library
    layer = nn.Linear(2, 2)
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer.register_backward_hook(lambda mod, gin, gout: calls.append(tuple(gout[0].shape)))
    out = layer(T.ones(3, 2))
    out.relu_()
    out.sum().backward()
    assert calls == [(3, 2)]
    assert layer.weight.grad is not None


def test_a_linear_hook_sees_its_last_nodes_gradients_in_pytorchs_order_and_may_replace_them(library):
    """grad_input of a Linear's deprecated hook is its AddmmBackward0's: (dL/db, dL/dx, dL/dWᵀ); what the hook
    returns in that order is what flows on."""
    nn, T = library
    layer = nn.Linear(3, 2)
    with T.no_grad():
        layer.weight.copy_(T.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]]))
    x = T.tensor([[1.0, -1.0, 2.0]], requires_grad=True)
    seen = []

    def halve_everything(module, grad_input, grad_output):
        seen.append([tuple(g.shape) for g in grad_input])
        return tuple(g / 2 for g in grad_input)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer.register_backward_hook(halve_everything)
        (layer(x) * T.tensor([1.0, 3.0])).sum().backward()
    assert seen == [[(2,), (1, 3), (3, 2)]]
    np.testing.assert_allclose(layer.bias.grad.numpy(), [0.5, 1.5])
    np.testing.assert_allclose(x.grad.numpy(), [[-1.0, 1.75, 4.5]])
    np.testing.assert_allclose(layer.weight.grad.numpy(), [[0.5, -0.5, 1.0], [1.5, -1.5, 3.0]])


def test_a_hook_on_an_in_place_relu_replaces_its_gradient_as_guided_backprop_does(library):
    nn, T = library
    relu = nn.ReLU(inplace=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relu.register_backward_hook(lambda module, grad_in, grad_out: (grad_in[0].clamp(min=0),))
    x = T.tensor([1.0, -2.0, 3.0, 0.5], requires_grad=True)
    y = x * 1
    out = relu(y)
    assert out is y and out.grad_fn.name() == "ReluBackward0"
    (out * T.tensor([1.0, 1.0, -1.0, 2.0])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 0.0, 0.0, 2.0])
