"""nn.grad (torch.nn.grad): conv{1,2,3}d_input and conv{1,2,3}d_weight give the convolution's own
backward, differentiate again, and match PyTorch."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd import gradcheck

# (dims, input shape, weight shape, stride, padding, dilation, groups): strides that leave a
# remainder (the input gradient must be cut to the input's size), dilation and groups
CASES = [
    (1, (2, 4, 11), (6, 2, 3), 2, 1, 1, 2),
    (1, (1, 3, 7), (2, 3, 2), 1, 0, 2, 1),
    (2, (2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    (2, (1, 2, 5, 6), (3, 2, 2, 2), 3, 0, 1, 1),
    (3, (1, 2, 5, 6, 4), (4, 1, 2, 3, 2), (1, 2, 1), (0, 1, 1), 1, 2),
]
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def draw(case, seed=0):
    dims, x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y_shape = CONVS[dims](autograd.tensor(x), autograd.tensor(w), **kwargs).shape
    return dims, x, w, rng.standard_normal(y_shape), kwargs


@pytest.mark.parametrize("case", CASES)
def test_the_gradients_are_the_convolutions_backward(case):
    dims, x, w, g, kwargs = draw(case)
    xt, wt = autograd.tensor(x, requires_grad=True), autograd.tensor(w, requires_grad=True)
    CONVS[dims](xt, wt, **kwargs).backward(autograd.tensor(g))
    grad_input = getattr(nn.grad, f"conv{dims}d_input")(x.shape, autograd.tensor(w), autograd.tensor(g), **kwargs)
    grad_weight = getattr(nn.grad, f"conv{dims}d_weight")(autograd.tensor(x), w.shape, autograd.tensor(g), **kwargs)
    np.testing.assert_allclose(grad_input.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_weight.numpy(), wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert grad_input.dtype == autograd.float64 and not grad_input.requires_grad


def test_two_dimensional_values_by_hand():
    """A 1x1 kernel of weight 3: ∂L/∂x = 3 g, ∂L/∂w = Σ x g."""
    x = autograd.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    g = autograd.tensor([[[[1.0, 0.0], [0.5, 2.0]]]])
    np.testing.assert_allclose(nn.grad.conv2d_input((1, 1, 2, 2), autograd.full((1, 1, 1, 1), 3.0), g).numpy(),
                               3 * g.numpy())
    np.testing.assert_allclose(nn.grad.conv2d_weight(x, (1, 1, 1, 1), g).numpy(), [[[[1 + 0 + 1.5 + 8]]]])


@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_the_gradients_differentiate_again(case):
    dims, x, w, g, kwargs = draw(case, seed=1)
    to_input, to_weight = getattr(nn.grad, f"conv{dims}d_input"), getattr(nn.grad, f"conv{dims}d_weight")
    leaf = lambda a: autograd.tensor(a, requires_grad=True)  # noqa: E731
    assert gradcheck(lambda w_, g_: to_input(x.shape, w_, g_, **kwargs), (leaf(w), leaf(g)))
    assert gradcheck(lambda x_, g_: to_weight(x_, w.shape, g_, **kwargs), (leaf(x), leaf(g)))
    with autograd.no_grad():
        assert not to_input(x.shape, leaf(w), leaf(g), **kwargs).requires_grad


def test_functional_grad_and_errors():
    assert F.grad is nn.grad
    w = autograd.ones(2, 1, 3)
    with pytest.raises(RuntimeError, match=r"grad_output has shape \(1, 2, 4\).*gives shape \(1, 2, 3\)"):
        nn.grad.conv1d_input((1, 1, 5), w, autograd.ones(1, 2, 4))
    with pytest.raises(RuntimeError, match="grad_output is float32 but the input is float64"):
        nn.grad.conv1d_weight(autograd.ones(1, 1, 5, dtype=autograd.float64), (2, 1, 3), autograd.ones(1, 2, 3))
    with pytest.raises(RuntimeError, match="grad_output is float64 but the weight is float32"):
        nn.grad.conv1d_input((1, 1, 5), w, autograd.ones(1, 2, 3, dtype=autograd.float64))


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES)
def test_against_torch(case):
    torch = pytest.importorskip("torch")
    dims, x, w, g, kwargs = draw(case, seed=2)
    name = f"conv{dims}d"
    wt, gt = torch.tensor(w, requires_grad=True), torch.tensor(g, requires_grad=True)
    wo, go = autograd.tensor(w, requires_grad=True), autograd.tensor(g, requires_grad=True)
    theirs = getattr(torch.nn.grad, f"{name}_input")(x.shape, wt, gt, **kwargs)
    ours = getattr(nn.grad, f"{name}_input")(x.shape, wo, go, **kwargs)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert ours.requires_grad and theirs.requires_grad
    (theirs ** 2).sum().backward()
    (ours ** 2).sum().backward()
    np.testing.assert_allclose(wo.grad.numpy(), wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(go.grad.numpy(), gt.grad.numpy(), rtol=1e-10, atol=1e-10)
    theirs = getattr(torch.nn.grad, f"{name}_weight")(torch.tensor(x), w.shape, torch.tensor(g), **kwargs)
    ours = getattr(nn.grad, f"{name}_weight")(autograd.tensor(x), w.shape, autograd.tensor(g), **kwargs)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    theirs = getattr(torch.nn.grad, f"{name}_weight")(torch.tensor(x32), w.shape, torch.tensor(g32), **kwargs)
    ours = getattr(nn.grad, f"{name}_weight")(autograd.tensor(x32), w.shape, autograd.tensor(g32), **kwargs)
    assert ours.dtype == autograd.float32 and theirs.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-4)
