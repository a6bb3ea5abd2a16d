"""``nn.functional``: the stateless functions behind the layers, with PyTorch's names.

Activations, ``linear``, ``dropout`` and the normalisations live here; the
loss functions live in ``nn/losses.py`` and are re-exported below, so
``F.cross_entropy`` works as in PyTorch.
"""

import math

import autograd
from autograd import Primitive, Tensor
from autograd.backend import xp
from autograd.random import generator

# -- the affine map of a layer ----------------------------------------------------------


class AffineMap(Primitive):
    """y = x Wᵀ + b  (W of shape (out, in), as PyTorch);
    dL/dx = dL/dy W,   dL/dW = (dL/dy)ᵀ x,   dL/db = Σ_batch dL/dy

    One fused node instead of transpose, matmul and add: fewer nodes to visit,
    and dL/dW comes out in W's own (out, in) layout.
    """

    def forward(self, x, weight, bias=None):
        y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def backward(self, grad, y, x, weight, bias=None):
        grad_x = grad @ weight if x.requires_grad else None
        grad_weight = None
        if weight.requires_grad:
            rows = grad.reshape(-1, grad.shape[-1]) if grad.ndim != 2 else grad
            inputs = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
            grad_weight = rows.mT @ inputs
        grad_bias = None
        if bias is not None and bias.requires_grad:
            grad_bias = grad.sum(tuple(range(grad.ndim - 1))) if grad.ndim > 1 else grad
        return grad_x, grad_weight, grad_bias


def linear(input, weight, bias=None):
    """y = x Wᵀ + b, with W of shape (out_features, in_features)."""
    if input.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input of shape {input.shape} has {input.shape[-1]} features but the "
                         f"weight of shape {weight.shape} expects {weight.shape[-1]}")
    if bias is None:
        return AffineMap.apply(input, weight)
    return AffineMap.apply(input, weight, bias)


# -- activations ------------------------------------------------------------------------------


def relu(input):
    return input.relu()


def leaky_relu(input, negative_slope=0.01):
    """y = x for x > 0, a·x otherwise."""
    return autograd.where(input > 0, input, input * negative_slope)


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def softplus(input):
    return input.softplus()


def gelu(input, approximate="none"):
    """GELU(x) = x Φ(x) = x (1 + erf(x/√2)) / 2  (Hendrycks & Gimpel, 2016);
    approximate='tanh': x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2."""
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2 / math.pi)
        return input * (inner.tanh() + 1.0) * 0.5
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return input * ((input * (1 / math.sqrt(2))).erf() + 1.0) * 0.5


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)


# -- regularisers -------------------------------------------------------------------------------


def _keep_mask(shape, p, dtype):
    """Bernoulli(1 - p) mask scaled by 1/(1 - p): inverted dropout keeps E[y] = x."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 1:
        return Tensor(xp.zeros(shape, dtype=dtype))
    keep = generator().random(shape) >= p
    return Tensor((keep / (1 - p)).astype(dtype))


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    if not training or p == 0:
        return input
    return input * _keep_mask(input.shape, p, input.dtype)


def dropconnect(weight, p=0.5, training=True):
    """DropConnect (Wan et al., 2013): zero each *weight* with probability p (and scale by
    1/(1-p)) for one forward pass, instead of zeroing activations."""
    return dropout(weight, p, training)


def _normalize(input, axes, eps):
    """(x - mean) / √(var + eps) over ``axes``, with the biased variance."""
    mean = input.mean(axes, keepdim=True)
    centred = input - mean
    variance = (centred * centred).mean(axes, keepdim=True)
    return centred / (variance + eps).sqrt(), mean, variance


def _channel_shape(input):
    """Broadcast shape for per-channel tensors: (1, C, 1, ...) for input (N, C, ...)."""
    return (1, input.shape[1]) + (1,) * (input.ndim - 2)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """Normalise each channel (dim 1) over the batch (and spatial dims).

    Training: batch statistics, with the biased variance for normalising; the
    running statistics move towards the batch's, with the unbiased variance:
        running = (1 - momentum) · running + momentum · batch
    (momentum=None: a cumulative average, factor 1 / batches seen). Eval: the
    running statistics. Exactly PyTorch's rules.
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, ...), got {input.shape}")
    axes = (0,) + tuple(range(2, input.ndim))
    shape = _channel_shape(input)
    if training:
        count = input._data.size // input.shape[1]
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        normalized, mean, variance = _normalize(input, axes, eps)
        if running_mean is not None:
            factor = momentum
            if num_batches_tracked is not None:
                num_batches_tracked._data += 1
                if momentum is None:
                    factor = 1.0 / float(num_batches_tracked._data)
            unbiased = variance._data.reshape(-1) * count / (count - 1)
            running_mean._data[...] = (1 - factor) * running_mean._data + factor * mean._data.reshape(-1)
            running_var._data[...] = (1 - factor) * running_var._data + factor * unbiased
    else:
        mean = running_mean.reshape(shape)
        normalized = (input - mean) / (running_var.reshape(shape) + eps).sqrt()
    if weight is not None:
        normalized = normalized * weight.reshape(shape)
    if bias is not None:
        normalized = normalized + bias.reshape(shape)
    return normalized


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) dims of each sample (Ba et al., 2016)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"layer_norm: input of shape {input.shape} does not end in {normalized_shape}")
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    normalized, _, _ = _normalize(input, axes, eps)
    if weight is not None:
        normalized = normalized * weight
    if bias is not None:
        normalized = normalized + bias
    return normalized


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise groups of channels of each sample (Wu & He, 2018)."""
    batch, channels = input.shape[0], input.shape[1]
    if channels % num_groups:
        raise ValueError(f"group_norm: {channels} channels cannot be split into {num_groups} groups")
    grouped = input.reshape(batch, num_groups, -1)
    normalized, _, _ = _normalize(grouped, (2,), eps)
    normalized = normalized.reshape(input.shape)
    shape = _channel_shape(input)
    if weight is not None:
        normalized = normalized * weight.reshape(shape)
    if bias is not None:
        normalized = normalized + bias.reshape(shape)
    return normalized


# -- distances ------------------------------------------------------------------------------------


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """‖x1 - x2 + eps‖_p over the last dim (eps keeps the gradient finite at 0)."""
    difference = (x1 - x2 + eps).abs()
    if p == math.inf:
        return difference.max(-1, keepdim=keepdim).values
    return (difference**p).sum(-1, keepdim=keepdim) ** (1.0 / p)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """x1 · x2 / max(‖x1‖ ‖x2‖, eps)."""
    dot = (x1 * x2).sum(dim)
    norms = ((x1 * x1).sum(dim) * (x2 * x2).sum(dim)).sqrt()
    return dot / norms.clamp(min=eps)




# The loss functions, and convolution, pooling, channel dropout, resizing and fold/unfold, re-exported so that
# F.cross_entropy and F.conv2d work as in PyTorch (imported last: those modules use the functions above).
from .functional_conv import *  # noqa: E402, F401, F403
from .losses import (  # noqa: E402, F401
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    contrastive_loss,
    cosine_embedding_loss,
    cross_entropy,
    hinge_loss,
    huber_loss,
    l1_loss,
    margin_ranking_loss,
    mse_loss,
    multi_margin_loss,
    nll_loss,
    triplet_margin_loss,
)
