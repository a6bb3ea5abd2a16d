"""Normalisation: the maths behind ``nn.functional``'s ``batch_norm``, ``layer_norm``, ``rms_norm``,
``group_norm`` and ``instance_norm``, and PyTorch's top-level spellings of them
(``autograd.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
cudnn_enabled)`` and ``autograd.instance_norm`` take every argument, in that order, as PyTorch's;
``layer_norm``, ``group_norm`` and ``rms_norm`` have nn.functional's arguments, and PyTorch's
trailing ``cudnn_enable(d)``, which changes nothing here).

Each normalises x over some axes with the biased variance, x̂ = (x - mean) / √(var + eps), then
scales and shifts it per channel (or per element of the normalised shape): y = γ x̂ + β.
Composed of differentiable ops (``normalize``, ``scale_and_shift``); layer, group, instance and training batch
norm of float32 and float64 arrays run as one node with the same values (normalization_node.py).
"""

import math

from .. import dual
from ..backend import float16, float32, xp
from ..errors import ShapeError, check_same_dtype
from ..graph import is_grad_enabled, no_grad, unbatched_under_vmap
from ..primitive import named_node
from ..tensor import Tensor
from .conversion import refuse_kinds
from .layouts import in_batch_norm_layout, in_suggested_layout, stored_channels_last
from .names import names
from .normalization_node import AffineNormalization, RunningNormalization, fits


def normalize(input, axes, eps):
    """(x - mean) / √(var + eps) over ``axes``, with the biased variance. float16 is computed in float32, as
    PyTorch's kernels compute it: the statistics rounded to float16, the normalized values left in float32 for
    ``scale_and_shift`` to round once, after the affine step (rounded here too, γ x̂ + β was a unit off in a
    quarter of the values)."""
    if input._data.dtype == float16:
        normalized, mean, variance = normalize(input.float(), axes, eps)
        return normalized, mean.half(), variance.half()
    mean = input.mean(axes, keepdim=True)
    centred = input - mean
    variance = (centred * centred).mean(axes, keepdim=True)
    return standardize(centred, variance, eps), mean, variance


def half_batch_statistics(input, axes, eps):
    """batch_norm's normalisation of float16 (with float16 parameters), as PyTorch's CPU kernel computes it: the
    batch mean and 1/√(var + eps) computed in float32 and kept as float16 (its saved statistics), the input
    normalised with them in float32, for ``scale_and_shift`` to round once (normalising with float32 statistics,
    as ``normalize`` does for the other norms, put a quarter of the values a unit or more off)."""
    x = input.float()
    mean = x.mean(axes, keepdim=True)
    centred = x - mean
    variance = (centred * centred).mean(axes, keepdim=True)
    normalized = (x - mean.half().float()) * (variance + eps).rsqrt().half().float()
    return normalized, mean.half(), variance.half()


def standardize(centred, variance, eps):
    """(x - mean) · (var + eps)^(-1/2), multiplied by the reciprocal as PyTorch's normalisation kernels
    do. The product's backward keeps its factors, not its result, so the normalised tensor may be
    changed in place afterwards (InstanceNorm2d then ReLU(True), as CycleGAN's generator does)."""
    return centred * (variance + eps).rsqrt()


def channel_shape(input):
    """Broadcast shape for per-channel tensors: (1, C, 1, ...) for input (N, C, ...)."""
    return (1, input.shape[1]) + (1,) * (input.ndim - 2)


def one_value_per_channel(size, where=""):
    """PyTorch's refusal of a batch that gives each channel (each group) one value to normalise: its statistics
    would make every output 0. ``size`` as the caller's check counts it; ``where`` adds what else it counted."""
    return ValueError(f"Expected more than 1 value per channel when training, got input size {size}{where}")


def refuse_differentiable_running_stats(input, running_mean, running_var, use_running_stats):
    """PyTorch's batch norm (its instance norm too) is not differentiable with respect to the running statistics:
    with grad mode on, one that requires grad is refused; and when they normalise (eval), a tangent on one beside
    the input's (forward mode)."""
    for name, running in (("running_mean", running_mean), ("running_var", running_var)):
        if running is not None and running.requires_grad and is_grad_enabled():
            raise RuntimeError(f"The function 'native_batch_norm' is not differentiable with respect to argument "
                               f"'{name}'. This input cannot have requires_grad True.")
    if use_running_stats and dual.LEVEL is not None and dual.tangent_of(input) is not None and (
            dual.tangent_of(running_mean) is not None or dual.tangent_of(running_var) is not None):
        raise RuntimeError("batch_norm is not differentiable wrt running_mean and running_var, they cannot have "
                           "forward grad defined")


def check_per_channel(channels, repeats=1, **vectors):
    """PyTorch's check of batch norm's per-channel tensors (weight, bias, running statistics; None passes): one value
    per channel each. Instance norm runs batch norm on the batch's channels side by side, its vectors ``repeats``
    times over, and PyTorch's message counts them so."""
    for name, vector in vectors.items():
        if vector is not None and vector.numel() != channels:
            raise ShapeError(f"{name} should contain {channels * repeats} elements not {vector.numel() * repeats}")


def count_batch(num_batches_tracked, momentum):
    """A training batch counted, as PyTorch's BatchNorm modules count it before any check of the batch (a batch
    refused still counts), and the factor its running statistics move by: ``momentum``, or with momentum=None the
    cumulative average's 1 / batches seen (None: no count is kept)."""
    if num_batches_tracked is None:
        return momentum
    with no_grad():
        num_batches_tracked.add_(1)
    return momentum if momentum is not None else 1.0 / num_batches_tracked.item()


def update_running_stats(running_mean, running_var, factor, mean, variance, count):
    """Move the running statistics towards a batch's (arrays of per-channel mean and biased
    variance over ``count`` values): running = (1 - factor) · running + factor · batch,
    with the unbiased variance (``count_batch`` gives the factor; SyncBatchNorm shares this)."""
    with no_grad():  # the running statistics are buffers, outside the graph
        unbiased = Tensor._make(variance * (count / (count - 1)))
        running_mean.mul_(1 - factor).add_(Tensor._make(mean), alpha=factor)
        running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def check_running_stats_paired(running_mean, running_var):
    """PyTorch's kernel takes both running statistics or neither (one alone was moved while the other was not)."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """Normalise each channel (dim 1) over the batch (and spatial dims).

    Training: batch statistics, with the biased variance for normalising; the
    running statistics move towards the batch's, with the unbiased variance:
        running = (1 - momentum) · running + momentum · batch
    (momentum=None: a cumulative average, factor 1 / batches seen). Eval: the
    running statistics. Exactly PyTorch's rules, and its checks: eps > 0 in training (≥ 0 in eval), more
    than one value per channel in training; an empty batch gives an empty output and leaves the running
    statistics alone (the batch count still moves on). ``num_batches_tracked``, a module's count, is counted first.
    """
    if training:
        momentum = count_batch(num_batches_tracked, momentum)
    if input.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, ...), got {tuple(input.shape)}")
    refuse_kinds(input, "batch_norm", "biuc")
    check_per_channel(input.shape[1], weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError(f"running_{'mean' if running_mean is None else 'var'} must be defined in evaluation mode")
    check_running_stats_paired(running_mean, running_var)
    refuse_differentiable_running_stats(input, running_mean, running_var, not training)
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if training and (running_mean is not None or running_var is not None):
        # (vmap runs one example at a time: each would move running statistics not batched with it)
        if unbatched_under_vmap(running_mean if running_mean is not None else running_var):
            raise RuntimeError(
                "Batch norm got a batched tensor as input while the running_mean or running_var, which will be "
                "updated in place, were not batched.\nIf you are using a module and do not need eval mode, please "
                "set `track_running_stats` to be False.If you are using a prebuilt module and do not need eval "
                "mode, please see the functorch website for resources on how to patch your module to work with vmap")
    if in_float32(input, "batch_norm", weight=weight, bias=bias, running_mean=running_mean, running_var=running_var) \
            and any(t is not None and t._data.dtype == float32 for t in (weight, bias, running_mean, running_var)):
        # "mixed dtype" (a half model whose norms stay float32): PyTorch's kernel computes in float32, its batch
        # statistics and running statistics float32 too, and rounds the output to float16 once
        output = batch_norm(input.float(), running_mean, running_var, weight, bias, training, momentum, eps).half()
        return named_node(output, None, "NativeBatchNormBackward0", (input,))
    axes = (0,) + tuple(range(2, input.ndim))
    shape = channel_shape(input)
    given = input  # (the user's tensor, the one PyTorch saves: named_node's saves)
    input = in_batch_norm_layout(input, input)  # (PyTorch's kernel writes its output so: a view of it shares it)
    if input._data.size == 0:
        output = scale_and_shift(input, weight, bias, shape)
        return input.clone() if output is input else output  # (a new tensor, as PyTorch's: CloneBackward0)
    if training:
        count = input._data.size // input.shape[1]
        if count == 1:
            raise one_value_per_channel(tuple(input.shape))
        if input is given and input._data.flags.c_contiguous and fits(input, weight, bias):
            # one node, the composite's values below (x laid out row-major: the same sums in the same order)
            moved = None if running_mean is None else lambda mean, variance: update_running_stats(
                running_mean, running_var, momentum, mean.reshape(-1), variance.reshape(-1), count)
            return AffineNormalization.apply(*affine_inputs(input, weight, bias), axes=axes, grouped=None,
                                             count=count, eps=eps, affine_shape=shape, weighted=weight is not None,
                                             shifted=bias is not None, on_statistics=moved,
                                             pytorch_name="NativeBatchNormBackward0")
        normalized, mean, variance = (half_batch_statistics if input._data.dtype == float16 else normalize)(
            input, axes, eps)
        if running_mean is not None:
            update_running_stats(running_mean, running_var, momentum, mean._data.reshape(-1),
                                 variance._data.reshape(-1), count)
        return named_node(scale_and_shift(normalized, weight, bias, shape, input.dtype), None,
                          "NativeBatchNormBackward0", saves=(given,))
    if (input is given and input._data.flags.c_contiguous and dual.LEVEL is None
            and fits(input, weight, bias, running_mean, running_var)):  # (one node, the composite's values below)
        mean = running_mean._data.reshape(shape).copy()  # (the statistics as they are now: the buffers move on)
        rstd = 1 / xp.sqrt(running_var._data.reshape(shape) + running_var._data.dtype.type(eps))
        return RunningNormalization.apply(*affine_inputs(input, weight, bias), mean=mean, rstd=rstd,
                                          affine_shape=shape, weighted=weight is not None, shifted=bias is not None,
                                          pytorch_name="NativeBatchNormBackward0")
    normalized = standardize_by_running_stats(input, running_mean, running_var, eps, shape)
    return named_node(scale_and_shift(normalized, weight, bias, shape, input.dtype), None,
                      "NativeBatchNormBackward0", (input,), saves=(given,))


def scale_and_shift(normalized, weight, bias, shape=None, dtype=None):
    """γ · x̂ + β, the normalisation layers' affine step (γ, β reshaped to ``shape`` when given; either
    may be None), rounded to the input's ``dtype`` (float16's x̂ comes from ``normalize`` in float32)."""
    if weight is not None:
        normalized = normalized * (weight if shape is None else weight.reshape(shape))
    if bias is not None:
        normalized = normalized + (bias if shape is None else bias.reshape(shape))
    return normalized if dtype is None or normalized.dtype == dtype else normalized.to(dtype)


def standardize_by_running_stats(input, running_mean, running_var, eps, shape):
    """(x - running mean) / √(running var + eps), evaluation's normalisation (float16 in float32, as
    ``normalize``, for ``scale_and_shift`` to round)."""
    if input._data.dtype == float16:
        input, running_mean, running_var = input.float(), running_mean.float(), running_var.float()
    return standardize(input - running_mean.reshape(shape), running_var.reshape(shape), eps)


def in_float32(input, op, **parameters):
    """Whether a float16 input is normalised in float32 (the output rounded to float16 once, as PyTorch's kernels
    compute it): its parameters are all float16 or, "mixed dtype" (norms kept in float32 in a half model), all
    float32; any other mix is refused, as it is for other dtypes."""
    if input._data.dtype != float16:
        check_same_dtype(op, input, (mixed_dtype_words, input), **parameters)
        return False
    given = [t for t in parameters.values() if t is not None]
    if not (given and all(t._data.dtype == float32 for t in given)):
        check_same_dtype(op, input, (mixed_dtype_words, input), **parameters)
    return True


def mixed_dtype_words(input):
    """PyTorch's words for a norm's parameters of a dtype other than its input's: its CPU kernels' check of a
    "mixed dtype" (float16 input, float32 parameters) names float32 parameters for a float32 input."""
    if input._data.dtype == float32:
        return "mixed dtype (CPU): expect parameter to have scalar type of Float"
    return "mixed dtype (CPU): all inputs must share same datatype."


def affine_inputs(input, weight, bias):
    """The inputs of an ``AffineNormalization``: x, then γ and β where given."""
    return (input,) + tuple(p for p in (weight, bias) if p is not None)


def as_float32(parameter):
    return None if parameter is None else parameter.float()


def refuse_empty_normalized_shape(normalized_shape):
    if not normalized_shape:
        raise RuntimeError(f"Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one "
                           f"element, but got normalized_shape = {list(normalized_shape)}")


def _normalized_shape(op, input, normalized_shape, **parameters):
    """normalized_shape as a tuple: at least one dim, the ones the input ends in, and the shape of each of the
    ``parameters`` given (weight, bias)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    refuse_empty_normalized_shape(normalized_shape)
    if input.shape[input.ndim - len(normalized_shape):] != normalized_shape:
        shown = ", ".join(map(str, normalized_shape))
        raise ShapeError(f"Given normalized_shape=[{shown}], expected input with shape [*, {shown}], but got input of "
                         f"size{list(input.shape)} ({op}: input of shape {tuple(input.shape)} does not end in "
                         f"{normalized_shape})")
    for name, parameter in parameters.items():
        if parameter is not None and tuple(parameter.shape) != normalized_shape:
            raise ShapeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                             f"{list(parameter.shape)} and normalized_shape = {list(normalized_shape)}")
    return normalized_shape


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) dims of each sample (Ba et al., 2016)."""
    refuse_kinds(input, "LayerNormKernelImpl", "biuc")
    normalized_shape = _normalized_shape("layer_norm", input, normalized_shape, weight=weight, bias=bias)
    if in_float32(input, "layer_norm", weight=weight, bias=bias):
        output = layer_norm(input.float(), normalized_shape, as_float32(weight), as_float32(bias), eps).half()
        return named_node(output, None, "NativeLayerNormBackward0", (input,))
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    if fits(input, weight, bias):  # (one node: its values are the composite's below, bit for bit)
        return AffineNormalization.apply(*affine_inputs(input, weight, bias), axes=axes, grouped=None,
                                         count=math.prod(normalized_shape), eps=eps, affine_shape=normalized_shape,
                                         weighted=weight is not None, shifted=bias is not None, bias_saved=True,
                                         pytorch_name="NativeLayerNormBackward0")  # (its node keeps β: SavesNoShift)
    # PyTorch's kernel normalises a contiguous input (expect_contiguous): its output is row-major whatever the
    # input's layout (ConvNeXt's permuted feature maps), so a view of it shares its memory
    normalized, _, _ = normalize(input.contiguous(), axes, eps)
    return named_node(scale_and_shift(normalized, weight, bias, dtype=input.dtype), None,
                      "NativeLayerNormBackward0", (input,), saves=(input,))


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """y = x / sqrt(mean(x²) + eps) · γ over the last len(normalized_shape) dims (Zhang & Sennrich,
    2019): LayerNorm without the centring (eps None: the machine epsilon of the dtype it is computed in, as
    PyTorch's)."""
    refuse_kinds(input, "rms_norm", "biu")
    normalized_shape = _normalized_shape("rms_norm", input, normalized_shape, weight=weight)
    # any weight's dtype is taken, the output has the input's; float16 is computed in float32 and rounded once
    computed = input.float() if input._data.dtype == float16 else input
    if eps is None:  # the machine epsilon of the dtype computed in (float32's for float16, as PyTorch's opmath)
        from ..tensor_info import finfo  # (tensor_info binds the ops: imported at call time)

        eps = finfo(computed.dtype).eps
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    normalized = computed * ((computed * computed).mean(axes, keepdim=True) + eps).rsqrt()
    output = scale_and_shift(normalized, weight, None)
    return output if output.dtype == input.dtype else output.to(input.dtype)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise groups of channels of each sample (Wu & He, 2018)."""
    if input.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.ndim}")
    refuse_kinds(input, "GroupNormKernelImpl", "biuc")
    batch, channels = input.shape[0], input.shape[1]
    if channels % num_groups:
        raise ShapeError(f"Expected number of channels in input to be divisible by num_groups, but got input of shape "
                         f"{list(input.shape)} and num_groups={num_groups} (group_norm: {channels} channels cannot be "
                         f"split into {num_groups} groups)")
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and (parameter.ndim != 1 or parameter.numel() != channels):
            raise ShapeError(f"Expected {name} to be a vector of size equal to the number of channels in input, but "
                             f"got {name} of shape {list(parameter.shape)} and input of shape {list(input.shape)}")
    if in_float32(input, "group_norm", weight=weight, bias=bias):
        output = group_norm(input.float(), num_groups, as_float32(weight), as_float32(bias), eps).half()
        return named_node(output, None, "NativeGroupNormBackward0", (input,))
    # the group size spelt out, not -1: an empty batch leaves nothing to divide
    grouped_shape = (batch, num_groups, channels // num_groups * math.prod(input.shape[2:]))
    if fits(input, weight, bias) and not stored_channels_last(input._data):  # (one node, the composite's values)
        return AffineNormalization.apply(*affine_inputs(input, weight, bias), axes=(2,), grouped=grouped_shape,
                                         count=grouped_shape[2], eps=eps, affine_shape=channel_shape(input),
                                         weighted=weight is not None, shifted=bias is not None,
                                         pytorch_name="NativeGroupNormBackward0")
    grouped = input.reshape(grouped_shape)
    normalized, _, _ = normalize(grouped, (2,), eps)
    normalized = normalized.reshape(input.shape)
    shape = channel_shape(input)
    # PyTorch's kernel writes its output in the input's suggested memory format: channels-last stays channels-last
    output = in_suggested_layout(scale_and_shift(normalized, weight, bias, shape, input.dtype), input)
    return named_node(output, None, "NativeGroupNormBackward0", (input,), saves=(input,))


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Normalise x[n, c] over its spatial dims, input (N, C, *spatial); with use_input_stats=False the running
    statistics are used instead (and left alone)."""
    if input.ndim < 2:
        raise ValueError(f"instance_norm expects input of shape (N, C, ...), got {tuple(input.shape)}")
    refuse_kinds(input, "batch_norm", "biuc")  # (PyTorch's instance norm is its batch norm's kernel)
    check_per_channel(input.shape[1], input.shape[0], weight=weight, bias=bias, running_mean=running_mean,
                      running_var=running_var)
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
    check_running_stats_paired(running_mean, running_var)
    # (PyTorch's takes any running stats')
    check_same_dtype("instance_norm", input, (mixed_dtype_words, input), weight=weight, bias=bias)
    refuse_differentiable_running_stats(input, running_mean, running_var, not use_input_stats)
    shape = channel_shape(input)
    if not use_input_stats:
        normalized = standardize_by_running_stats(input, running_mean, running_var, eps, shape)
        return named_node(scale_and_shift(normalized, weight, bias, shape, input.dtype), None, "ViewBackward0",
                          (input,), saves=(input,))
    count = input._data.size // max(input.shape[0] * input.shape[1], 1)
    if count == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"torch.Size({list(input.shape)})")
    axes = tuple(range(2, input.ndim))
    if running_mean is None and running_var is None and fits(input, weight, bias):  # (one node, the same values)
        return AffineNormalization.apply(*affine_inputs(input, weight, bias), axes=axes, grouped=None, count=count,
                                         eps=eps, affine_shape=shape, weighted=weight is not None,
                                         shifted=bias is not None, pytorch_name="ViewBackward0")
    # (PyTorch's normalises input.contiguous(), whatever its layout, channels-last too: its output is row-major)
    normalized, mean, variance = normalize(input.contiguous(), axes, eps)
    if running_mean is not None or running_var is not None:
        with no_grad():  # each instance's step, averaged over the batch (PyTorch's order)
            factor = count / (count - 1)
            for running, statistic in ((running_mean, mean), (running_var, variance * factor)):
                if running is not None:
                    step = statistic.detach().reshape(input.shape[:2]).mean(0)
                    running.mul_(1 - momentum).add_(step.to(running.dtype), alpha=momentum)
    # (PyTorch's runs batch norm on the input viewed as (1, N·C, ...), and views the result back)
    return named_node(scale_and_shift(normalized, weight, bias, shape, input.dtype), None, "ViewBackward0",
                      (input,), saves=(input,))


@names("batch_norm", method=False)
def batch_norm_by_position(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    """PyTorch's top-level ``batch_norm``: every argument required, weight and bias before the
    running statistics (``nn.functional.batch_norm`` takes the statistics first)."""
    return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


@names("batch_norm_update_stats", method=False)
def batch_norm_update_stats(input, running_mean, running_var, momentum):
    """PyTorch's ``batch_norm_update_stats``: the batch's per-channel mean and biased variance (over every dim but
    dim 1), with the running statistics moved towards them as a training batch norm moves them (the unbiased
    variance, ``update_running_stats``). Statistics only: no gradient flows through them."""
    if input._data.size == 0:
        raise RuntimeError(f"input tensor must have at least one element, but got input_sizes = {list(input.shape)}")
    axes = (0,) + tuple(range(2, input.ndim))
    with no_grad():
        mean = input.mean(axes, keepdim=True)
        centred = input - mean
        variance = (centred * centred).mean(axes)
        mean = mean.reshape(-1)
    if running_mean is not None and running_var is not None:
        update_running_stats(running_mean, running_var, momentum, mean._data, variance._data,
                             input._data.size // input.shape[1])
    return mean, variance


@names("instance_norm", method=False)
def instance_norm_by_position(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                              cudnn_enabled):
    """PyTorch's top-level ``instance_norm``: every argument required, in this order."""
    return instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


@names("layer_norm", method=False)
def layer_norm_with_cudnn_flag(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """PyTorch's top-level ``layer_norm`` (``cudnn_enable`` changes nothing here)."""
    return layer_norm(input, normalized_shape, weight, bias, eps)


@names("group_norm", method=False)
def group_norm_with_cudnn_flag(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    """PyTorch's top-level ``group_norm`` (``cudnn_enabled`` changes nothing here)."""
    return group_norm(input, num_groups, weight, bias, eps)


names("rms_norm", method=False)(rms_norm)
