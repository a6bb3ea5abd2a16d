"""Folding an eval-mode BatchNorm into the convolution or linear layer before it (``torch.nn.utils.fusion``).

In eval mode BatchNorm is an affine map per channel c with fixed statistics:

    BN(y)_c = γ_c (y_c - μ_c) / √(σ²_c + ε) + β_c = s_c y_c + (β_c - s_c μ_c),   s_c = γ_c / √(σ²_c + ε)

so after y = W x + b it is one layer with W'_c = s_c W_c and b'_c = s_c (b_c - μ_c) + β_c:
the same outputs for one layer's cost at inference.
"""

import copy

import autograd

from ..parameter import Parameter


def _check_eval(layer, bn):
    if layer.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")


def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A copy of ``conv`` (eval mode) with ``bn`` (eval mode, with running statistics) folded in.
    ``transpose``: the convolution is a transposed one (output channels on axis 1 of its weight)."""
    _check_eval(conv, bn)
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(fused.weight, fused.bias, bn.running_mean, bn.running_var,
                                                    bn.eps, bn.weight, bn.bias, transpose)
    return fused


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """(W', b') as Parameters, from the convolution's weight and bias (None: zeros) and BatchNorm's
    running mean and variance, eps, and γ, β (None: ones, zeros); each keeps its tensor's dtype."""
    weight_dtype = conv_w.dtype
    bias_dtype = weight_dtype if conv_b is None else conv_b.dtype
    conv_b = autograd.zeros_like(bn_rm) if conv_b is None else conv_b
    bn_w = autograd.ones_like(bn_rm) if bn_w is None else bn_w
    bn_b = autograd.zeros_like(bn_rm) if bn_b is None else bn_b
    inverse_std = (bn_rv + bn_eps).rsqrt()
    shape = [1, -1] if transpose else [-1, 1]
    shape += [1] * (conv_w.ndim - 2)
    fused_w = (conv_w * (bn_w * inverse_std).reshape(shape)).to(dtype=weight_dtype)
    fused_b = ((conv_b - bn_rm) * inverse_std * bn_w + bn_b).to(dtype=bias_dtype)
    return Parameter(fused_w, conv_w.requires_grad), Parameter(fused_b, conv_b.requires_grad)


def fuse_linear_bn_eval(linear, bn):
    """A copy of ``linear`` (eval mode) with ``bn`` (eval mode, over linear's outputs, or 1 feature) folded in."""
    _check_eval(linear, bn)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise AssertionError("To fuse, linear.out_features == bn.num_features or bn.num_features == 1, got "
                             f"linear.out_features={linear.out_features} and bn.num_features={bn.num_features}")
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(fused.weight, fused.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
    return fused


def fuse_linear_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    """(W', b') as Parameters for a linear layer followed by BatchNorm (see the module's docstring)."""
    weight_dtype = linear_w.dtype
    bias_dtype = weight_dtype if linear_b is None else linear_b.dtype
    linear_b = autograd.zeros_like(bn_rm) if linear_b is None else linear_b
    scale = bn_w * (bn_rv + bn_eps).rsqrt()
    fused_w = linear_w * scale.unsqueeze(-1).to(dtype=weight_dtype)
    fused_b = ((linear_b - bn_rm) * scale + bn_b).to(dtype=bias_dtype)
    return Parameter(fused_w, linear_w.requires_grad), Parameter(fused_b, linear_b.requires_grad)
