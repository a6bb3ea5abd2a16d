"""PyTorch's ``native_*`` functions: a normalisation or a dropout that also returns what its backward
keeps, ``autograd.native_layer_norm``, ``native_batch_norm``, ``native_group_norm`` and
``native_dropout``, with PyTorch's signatures (every argument required) and tuples:

- ``native_layer_norm(input, normalized_shape, weight, bias, eps)`` → (y, mean, rstd), the statistics of
  each sample with the normalised dims kept as 1s;
- ``native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)`` →
  (y, mean, invstd) per channel when training (empty tensors in evaluation, which reads the running
  statistics);
- ``native_group_norm(input, weight, bias, N, C, HxW, group, eps)`` → (y, mean, rstd) of shape (N, group);
- ``native_dropout(input, p, train)`` → (y, mask), the mask a bool tensor of the kept elements.

rstd = invstd = 1 / √(var + eps) with the biased variance. y is the normalisation of
``autograd.ops.normalization`` (its gradient theirs); as PyTorch's, the statistics of layer and batch
norm carry no gradient, and group norm's do (they are differentiable compositions of the input).
"""

from .. import random
from ..backend import xp
from ..errors import check_same_dtype
from ..graph import no_grad
from ..tensor import tensor_from
from .conversion import refuse_kinds
from .dropout import check_dropout_probability
from .names import names
from .normalization import batch_norm, channel_shape, normalize, refuse_empty_normalized_shape, scale_and_shift


def _reciprocal_deviation(variance, eps):
    """1 / √(var + eps)."""
    return (variance + eps).rsqrt()


@names("native_layer_norm", method=False)
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    """y = γ (x - mean) · rstd + β over the last len(normalized_shape) dims, with that mean and rstd."""
    normalized_shape = tuple(int(s) for s in normalized_shape)
    refuse_empty_normalized_shape(normalized_shape)
    refuse_kinds(input, "LayerNormKernelImpl", "c")  # (PyTorch's kernel has real loops only: layer_norm's has more)
    if input.shape[input.ndim - len(normalized_shape):] != normalized_shape:
        shown = ", ".join(map(str, normalized_shape))
        raise RuntimeError(f"Given normalized_shape=[{shown}], expected input with shape [*, {shown}], but got "
                           f"input of size{list(input.shape)}")
    check_same_dtype("native_layer_norm", input, weight=weight, bias=bias)
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    normalized, mean, variance = normalize(input, axes, eps)
    y = scale_and_shift(normalized, weight, bias, dtype=input.dtype)
    return y, mean.detach(), _reciprocal_deviation(variance, eps).detach()


@names("native_batch_norm", method=False)
def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """``batch_norm`` with the batch's per-channel mean and invstd (training; running statistics, when
    given, move towards the batch's as ``batch_norm`` moves them); in evaluation the running statistics
    normalise and the mean and invstd returned are empty, as PyTorch's."""
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("native_batch_norm: running_mean and running_var must be given in evaluation mode "
                           "(training=False)")
    y = batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    if not training:
        empty = tensor_from(xp.empty(0, dtype=input._data.dtype))
        return y, empty, empty.clone()
    with no_grad():  # the batch's statistics, as batch_norm normalised by them (outside the graph, and without a
        _, mean, variance = normalize(input.detach(), (0,) + tuple(range(2, input.ndim)), eps)  # tangent: PyTorch's)
        return y, mean.reshape(-1), _reciprocal_deviation(variance, eps).reshape(-1)


@names("native_group_norm", method=False)
def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    """``group_norm`` of input read as (N, C, HxW), with the mean and rstd of each (sample, group)."""
    refuse_kinds(input, "GroupNormKernelImpl", "c")  # (PyTorch's kernel has real loops only)
    if input._data.size != N * C * HxW or input.ndim < 2 or input.shape[:2] != (N, C):
        raise RuntimeError(f"native_group_norm: expected an input of N={N} samples of C={C} channels of HxW={HxW} "
                           f"elements, got input of size {list(input.shape)}")
    if C % group:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input "
                           f"of shape {list(input.shape)} and num_groups={group}")
    check_same_dtype("native_group_norm", input, weight=weight, bias=bias)
    normalized, mean, variance = normalize(input.reshape(N, group, C // group * HxW), (2,), eps)  # (not -1: N may be 0)
    y = scale_and_shift(normalized.reshape(input.shape), weight, bias, channel_shape(input), input.dtype)
    return y, mean.reshape(N, group), _reciprocal_deviation(variance, eps).reshape(N, group)


@names("native_dropout", method=False)
def native_dropout(input, p, train):
    """Inverted dropout, y = x · mask / (1 - p) with mask ~ Bernoulli(1 - p), and the mask (bool).
    ``train`` None counts as True, as PyTorch's; not training, y is a copy of x and the mask all True."""
    if input._data.dtype.kind not in "fc":
        raise RuntimeError(f"native_dropout: expected a floating point input, got {input.dtype}")
    if train is not None and not train:
        return input.clone(), tensor_from(xp.ones(input.shape, dtype=bool))
    check_dropout_probability(p, RuntimeError)
    keep = random.generator().bernoulli(input.shape, 1 - p)  # (PyTorch's mask.bernoulli_(1 - p))
    if p == 1:
        return input * 0.0, tensor_from(keep)
    return input * tensor_from((keep / (1 - p)).astype(input._data.dtype)), tensor_from(keep)
