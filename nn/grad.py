"""``nn.grad`` (also ``nn.functional.grad``), as ``torch.nn.grad``: the gradients of a convolution
with respect to its input and to its weight, for a given gradient of its output.

For y = conv(x, w) (no bias) and an incoming gradient g = ∂L/∂y:

    conv{1,2,3}d_input(x.shape, w, g)    ∂L/∂x = conv_transpose(g, w), cut to x's size
    conv{1,2,3}d_weight(x, w.shape, g)   ∂L/∂w[o, c] = Σ_n x[n, c] ⋆ g[n, o]  (a correlation)

Both are the backward pass of the convolution itself: each function convolves a stand-in for the
unknown argument and asks ``autograd.grad`` for the gradient, so they give what ``backward`` gives,
for every stride, padding, dilation and group count the convolution takes. A convolution is linear
in each argument, so the stand-in's values do not matter (zeros). When ``w``, ``x`` or ``g``
requires grad (and grad mode is on), the result is recorded as a function of them, so it can be
differentiated again, as PyTorch's.
"""

import autograd
from autograd.ops.convolution_layers import conv1d, conv2d, conv3d

__all__ = ["conv1d_input", "conv1d_weight", "conv2d_input", "conv2d_weight", "conv3d_input", "conv3d_weight"]


def _gradient(convolve, wrt, other, grad_output, name):
    """∂⟨convolve(wrt), grad_output⟩/∂wrt for a stand-in ``wrt`` (zeros that require grad)."""
    if grad_output.dtype != other.dtype:  # PyTorch refuses the mix too (no silent promotion)
        raise RuntimeError(f"nn.grad.{name}: grad_output is {grad_output.dtype} but the "
                           f"{'input' if name.endswith('weight') else 'weight'} is {other.dtype}; they must "
                           "have the same dtype")
    record = autograd.is_grad_enabled() and (other.requires_grad or grad_output.requires_grad)
    with autograd.enable_grad():
        output = convolve(wrt)
        if tuple(output.shape) != tuple(grad_output.shape):
            raise RuntimeError(f"nn.grad.{name}: grad_output has shape {tuple(grad_output.shape)}, but the "
                               f"convolution it is the gradient of gives shape {tuple(output.shape)}")
        (gradient,) = autograd.grad(output, wrt, grad_output, create_graph=record)
    return gradient if record else gradient.detach()


def _input_gradient(conv, name, input_size, weight, grad_output, stride, padding, dilation, groups):
    stand_in = autograd.zeros(tuple(input_size), dtype=grad_output.dtype, requires_grad=True)
    return _gradient(lambda x: conv(x, weight, None, stride, padding, dilation, groups), stand_in, weight,
                     grad_output, name)


def _weight_gradient(conv, name, input, weight_size, grad_output, stride, padding, dilation, groups):
    stand_in = autograd.zeros(tuple(weight_size), dtype=input.dtype, requires_grad=True)
    return _gradient(lambda w: conv(input, w, None, stride, padding, dilation, groups), stand_in, input,
                     grad_output, name)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """∂L/∂input of ``conv1d(input, weight, ...)`` for an input of shape ``input_size`` (N, C, L)
    and ``grad_output`` = ∂L/∂output."""
    return _input_gradient(conv1d, "conv1d_input", input_size, weight, grad_output, stride, padding, dilation,
                           groups)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """∂L/∂weight of ``conv1d(input, weight, ...)`` for a weight of shape ``weight_size``
    (O, C/groups, k) and ``grad_output`` = ∂L/∂output."""
    return _weight_gradient(conv1d, "conv1d_weight", input, weight_size, grad_output, stride, padding, dilation,
                            groups)


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """∂L/∂input of ``conv2d``: input_size (N, C, H, W)."""
    return _input_gradient(conv2d, "conv2d_input", input_size, weight, grad_output, stride, padding, dilation,
                           groups)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """∂L/∂weight of ``conv2d``: weight_size (O, C/groups, kh, kw)."""
    return _weight_gradient(conv2d, "conv2d_weight", input, weight_size, grad_output, stride, padding, dilation,
                            groups)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """∂L/∂input of ``conv3d``: input_size (N, C, D, H, W)."""
    return _input_gradient(conv3d, "conv3d_input", input_size, weight, grad_output, stride, padding, dilation,
                           groups)


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """∂L/∂weight of ``conv3d``: weight_size (O, C/groups, kd, kh, kw)."""
    return _weight_gradient(conv3d, "conv3d_weight", input, weight_size, grad_output, stride, padding, dilation,
                            groups)
