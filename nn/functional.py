"""``nn.functional``: the stateless functions behind the layers, with PyTorch's names.

Activations, ``linear``, ``dropout`` and the normalisations live here; the
loss functions live in ``nn/losses.py`` and are re-exported below, so
``F.cross_entropy`` works as in PyTorch.
"""

import math
import sys
import warnings

import autograd
from autograd import Tensor, _lazy
from autograd.backend import xp
from autograd.errors import not_a_tensor
from autograd.graph import program_stacklevel
from autograd.ops.axes import dim_index as _dim_index
from autograd.ops.conversion import refuse_kinds
from autograd.ops.dropout import alpha_drop, check_dropout_probability, drop, feature_shape
from autograd.ops.losses import read_reduction
from autograd.ops.outputs import write_out
from autograd.random import generator
from autograd.sparse_layout import is_sparse
from nn.affine import AffineMap, linear  # noqa: F401  (F.linear; AffineMap: Linear's node)

# -- activations ------------------------------------------------------------------------------
#
# Each is composed from primitives, so its gradient comes for free. Where a branch
# of ``where`` could overflow (e^x for large x), its input is clamped first: the
# unused branch must stay finite, or 0 · inf poisons the gradient. Derivatives at
# the kinks are PyTorch's (stated per function).


def _inplace(input, function, inplace):
    """y = function(input); with ``inplace=True``, as PyTorch, y is written into ``input``, which
    is returned. The write is recorded as every in-place write is (``input``'s history becomes
    y's; a leaf that requires grad refuses it), so code that keeps using ``input`` sees y. A
    tracked y is computed from a copy of ``input``: what its backward saves is not overwritten.
    An input that is no tensor (an LSTM's (output, state) tuple) is PyTorch's TypeError."""
    if not isinstance(input, Tensor):
        if is_sparse(input) and not inplace:  # (F.relu(S): the sparse tensor's own relu)
            return function(input)
        raise not_a_tensor(f"F.{sys._getframe(1).f_code.co_name}", 0, input)  # (the F function called)
    if not inplace:
        return function(input)
    if input.requires_grad and autograd.is_grad_enabled():
        return input.copy_(function(input.clone()))
    with autograd.no_grad():
        return input.copy_(function(input))


def relu(input, inplace=False):
    if inplace and isinstance(input, Tensor):  # the tensor's own relu_, one ReluBackward0 node, as PyTorch's
        return input.relu_()  # (a deprecated module hook on an in-place ReLU hooks that node)
    return _inplace(input, lambda input: input.relu(), inplace)


def relu6(input, inplace=False):
    """min(max(0, x), 6) = hardtanh(x, 0, 6): gradient 0 at 0 and 6, as PyTorch."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """clamp(x, min_val, max_val); dy/dx = 1 strictly inside (min_val, max_val), 0 elsewhere
    (PyTorch's hardtanh_backward: 0 at the bounds, unlike clamp). Piecewise linear: its second
    derivative is 0 (autograd/ops/piecewise_linear.py)."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    from autograd.ops.piecewise_linear import hardtanh as _hardtanh  # (deferred: ops/deferred.py)

    return _inplace(input, lambda input: _hardtanh(input, min_val, max_val), inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """y = x for x > 0, a·x otherwise; dy/dx = 1 for x > 0, a otherwise; d²y/dx² = 0."""
    from autograd.ops.piecewise_linear import leaky_relu as _leaky_relu  # (deferred: ops/deferred.py)

    return _inplace(input, lambda input: _leaky_relu(input, negative_slope), inplace)


def elu(input, alpha=1.0, inplace=False):
    """y = x for x > 0, α (e^x - 1) otherwise (Clevert et al., 2015); dy/dx at 0 is α."""
    from autograd.ops.activations import elu as _elu  # (deferred: ops/deferred.py)

    return _inplace(input, lambda input: _elu(input, alpha), inplace)  # (one node, float16 in float32)


def relu_(input):
    return relu(input, inplace=True)


def elu_(input, alpha=1.0):
    return elu(input, alpha, inplace=True)


def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    return hardtanh(input, min_val, max_val, inplace=True)


def selu(input, inplace=False):
    """y = λ · elu(x, α) with λ ≈ 1.0507 and α ≈ 1.6733 (Klambauer et al., 2017): the
    constants that keep activations at zero mean and unit variance."""
    from autograd.ops.activations import selu as _selu  # (deferred: ops/deferred.py)

    return _inplace(input, _selu, inplace)  # (one EluBackward0 node, as PyTorch's)


def selu_(input):
    return selu(input, inplace=True)


def celu(input, alpha=1.0, inplace=False):
    """y = max(0, x) + min(0, α (e^(x/α) - 1)) (Barron, 2017)."""
    from autograd.ops.activations import celu as _celu  # (deferred: ops/deferred.py)

    return _inplace(input, lambda x: _celu(x, alpha), inplace)


def celu_(input, alpha=1.0):
    return celu(input, alpha, inplace=True)


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def silu(input, inplace=False):
    """y = x σ(x) (swish)."""
    refuse_kinds(input, "silu_cpu", "biu")  # (no integer kernel in PyTorch: no silent float result here)
    from autograd.ops.activations import Silu  # (deferred: ops/deferred.py)

    return _inplace(input, Silu.apply, inplace)  # (one node; float16 in float32, rounded once)


def mish(input, inplace=False):
    """y = x tanh(softplus(x)) (Misra, 2019)."""
    refuse_kinds(input, "mish_cpu", "biuc")
    from autograd.ops.mish import Mish  # (loaded on first use, as the other activations beyond ReLU)

    return _inplace(input, Mish.apply, inplace)  # (one node; float16 in float32, rounded once)


def softplus(input, beta=1.0, threshold=20.0, *, out=None):
    """y = ln(1 + e^(βx)) / β, and y = x where βx > threshold (PyTorch's linear regime)."""
    refuse_kinds(input, "softplus_cpu", "biuc")
    from autograd.ops.activations import ScaledSoftplus  # (deferred: ops/deferred.py)

    return write_out(ScaledSoftplus.apply(input, beta=beta, threshold=threshold), out)


def logsigmoid(input, *, out=None):
    """y = ln σ(x) = -softplus(-x), stable for large |x|."""
    refuse_kinds(input, "log_sigmoid_cpu", "biuc")
    from autograd.ops.activations import LogSigmoid  # (deferred: ops/deferred.py)

    return write_out(LogSigmoid.apply(input), out, warn_resize=False)  # (PyTorch's kernel resizes out itself)


def softsign(input):
    """y = x / (1 + |x|) (two ops, as PyTorch's Python function: float16 rounds after each, there as here)."""
    return input / (input.abs() + 1.0)


def hardsigmoid(input, inplace=False):
    """y = relu6(x + 3) / 6; dy/dx = 1/6 strictly inside (-3, 3), 0 elsewhere (PyTorch's)."""
    from autograd.ops.piecewise_linear import hardsigmoid as _hardsigmoid  # (deferred: ops/deferred.py)

    return _inplace(input, _hardsigmoid, inplace)


def hardswish(input, inplace=False):
    """y = x · relu6(x + 3) / 6 (Howard et al., 2019): 0 up to -3, x from 3, x (x + 3) / 6
    between; dy/dx = x/3 + 1/2 strictly inside (-3, 3), 0 at -3 and 1 at 3 (PyTorch's; one primitive,
    autograd/ops/hardswish.py, so ±inf have PyTorch's gradients 0 and 1, not NaN)."""
    from autograd.ops.hardswish import Hardswish  # (a deferred op module: ops/deferred.py)

    return _inplace(input, Hardswish.apply, inplace)


def threshold(input, threshold, value, inplace=False):
    """y = x where x > threshold, else value."""
    if inplace and isinstance(input, Tensor):  # (autograd's threshold_: it writes expanded inputs too)
        return autograd.threshold_(input, threshold, value)
    from autograd.ops.activations import threshold as _threshold  # (deferred: ops/deferred.py)

    return _inplace(input, lambda input: _threshold(input, threshold, value), inplace)


def threshold_(input, threshold_value, value):
    return threshold(input, threshold_value, value, inplace=True)


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    """Randomized leaky ReLU (``autograd.rrelu``): a random slope per element in training, the mean
    slope (lower + upper) / 2 in eval."""
    from autograd.ops.activations import rrelu as _rrelu  # (deferred: ops/deferred.py)

    return _inplace(input, lambda input: _rrelu(input, lower, upper, training), inplace)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    return rrelu(input, lower, upper, training, inplace=True)


def tanhshrink(input):
    """y = x - tanh x (two ops, as PyTorch's Python function)."""
    return input - input.tanh()


def hardshrink(input, lambd=0.5, *, out=None):
    """y = x where |x| > λ, else 0 (autograd.hardshrink)."""
    from autograd.ops.activations import hardshrink as _hardshrink  # (deferred: ops/deferred.py)

    return _hardshrink(input, lambd, out=out)


def softshrink(input, lambd=0.5, *, out=None):
    """y = x - λ above λ, x + λ below -λ, 0 between; dy/dx = 1 where |x| > λ, else 0."""
    from autograd.ops.piecewise_linear import softshrink as _softshrink  # (deferred: ops/deferred.py)

    return write_out(_softshrink(input, lambd), out)


def glu(input, dim=-1):
    """Gated linear unit (Dauphin et al., 2017): split x in halves a, b along dim; y = a σ(b)."""
    refuse_kinds(input, "glu_cpu", "biuc")
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    axis = _dim_index(dim, input.ndim)  # (PyTorch's IndexError for a dim out of range)
    size = input.shape[axis]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {axis} is size {size}")
    from autograd.ops.activations import Glu  # (deferred: ops/deferred.py)

    return Glu.apply(input, dim=axis)


def gelu(input, *, approximate="none", out=None):
    """GELU(x) = x Φ(x) = x (1 + erf(x/√2)) / 2  (Hendrycks & Gimpel, 2016);
    approximate='tanh': x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2. float16 is computed in float32 and
    rounded once, as PyTorch's kernel does (in float16, gelu(-3.672) would be -0.0, not -4.4e-4)."""
    refuse_kinds(input, "GeluKernelImpl", "biuc")
    if approximate == "none":
        from autograd.ops.activations import Gelu  # (deferred: ops/deferred.py)

        return write_out(Gelu.apply(input), out)
    if approximate != "tanh":
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}.")
    from autograd.ops.gelu_tanh import GeluTanh  # (deferred: ops/deferred.py)

    return write_out(GeluTanh.apply(input), out)


def _softmax_dim(name, ndim, dim):
    """PyTorch's implicit dim when none is given (deprecated there, with a warning)."""
    if dim is not None:
        return dim
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=program_stacklevel())
    return 0 if ndim in (0, 1, 3) else 1


def _as_dtype(input, dtype):
    return input if dtype is None else input.to(dtype)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """e^x_i / Σ_j e^x_j along dim; ``dtype`` casts the input first (as PyTorch)."""
    return _as_dtype(input, dtype).softmax(_softmax_dim("softmax", input.ndim, dim))


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return _as_dtype(input, dtype).log_softmax(_softmax_dim("log_softmax", input.ndim, dim))


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmax(-x) along dim. x is negated before the cast to ``dtype``, as PyTorch's: in uint8 -x wraps
    around (-3 is 253, -0 is 0), and a bool x is refused."""
    return _as_dtype(-input, dtype).softmax(_softmax_dim("softmin", input.ndim, dim))


def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
    """A differentiable sample from the categorical distribution softmax(logits) (Jang et al., 2016;
    Maddison et al., 2016): y = softmax((logits + g) / τ), g = −ln E, E ~ Exp(1) per element (Gumbel(0, 1)
    noise, from autograd's generator). As τ → 0 the samples approach one-hot vectors. hard=True returns the
    one-hot vector of argmax y, with y's gradient (straight-through: y_hard − y.detach() + y).
    (eps is unused, as in PyTorch.)"""
    noise = -xp.log(xp.asarray(generator().exponential(size=logits.shape), dtype=logits._data.dtype))
    y = ((logits + Tensor._make(noise)) / tau).softmax(dim)
    if not hard:
        return y
    one_hot = xp.zeros(y.shape, dtype=y._data.dtype)
    xp.put_along_axis(one_hot, xp.expand_dims(y._data.argmax(dim), dim), 1.0, dim)
    return Tensor._make(one_hot) - y.detach() + y


# -- regularisers -------------------------------------------------------------------------------


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    check_dropout_probability(p)
    if not training or p == 0:
        return input
    return _inplace(input, lambda input: drop(input, p, input.shape), inplace)


def _feature_dropout(input, p, training, inplace, shape):
    """Dropout of whole channels: one Bernoulli draw per element of ``shape`` (one per (sample,
    channel)), shared across the spatial dims (adjacent pixels are correlated, so dropping single
    ones regularises little; Tompson et al., 2015)."""
    if not training or p == 0:
        return input
    return _inplace(input, lambda input: drop(input, p, shape), inplace)


def _warn_deprecated_channel_dims(name, input, batched):
    """PyTorch's dropout2d / dropout3d still accept inputs of other ranks, with this warning."""
    if input.ndim not in (batched - 1, batched):
        spatial = batched - 2
        warnings.warn(f"{name}: Received a {input.ndim}-D input to {name}, which is deprecated and will result in "
                      "an error in a future release. To retain the behavior and silence this warning, please use "
                      f"dropout instead. Note that {name} exists to provide channel-wise dropout on inputs with "
                      f"{spatial} spatial dimensions, a channel dimension, and an optional batch dimension (i.e. "
                      f"{batched - 1}D or {batched}D inputs).", stacklevel=program_stacklevel())


def _unbatched_channel_shape(input):
    """One draw per channel of an input without a batch dim, (C, *) -> (C, 1, ...) (PyTorch unsqueezes a
    batch dim of 1 and drops per (sample, channel))."""
    return input.shape[:1] + (1,) * (input.ndim - 1)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of an (N, C, L) or (C, L) input with probability p."""
    check_dropout_probability(p)
    if input.ndim not in (2, 3):
        raise RuntimeError(f"dropout1d: Expected 2D or 3D input, but received a {input.ndim}D input. Note that "
                           "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial dimension, a "
                           "channel dimension, and an optional batch dimension (i.e. 2D or 3D inputs).")
    shape = feature_shape(input) if input.ndim == 3 else _unbatched_channel_shape(input)
    return _feature_dropout(input, p, training, inplace, shape)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of an (N, C, H, W) input with probability p. As in PyTorch, a 3-D input
    is read as (N, C, L) (with a warning): channel-wise 1-d dropout; other ranks (deprecated, with a
    warning) drop per (sample, channel) of their first two dims."""
    check_dropout_probability(p)
    _warn_deprecated_channel_dims("dropout2d", input, 4)
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel "
                      "dim. This behavior will change in a future release to interpret the input as one without "
                      "a batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout "
                      "behavior, please switch to using dropout1d instead.", stacklevel=program_stacklevel())
    return _feature_dropout(input, p, training, inplace, feature_shape(input))


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of an (N, C, D, H, W) or (C, D, H, W) input with probability p. Other ranks
    (deprecated, with a warning) are read as PyTorch reads them, as unbatched: one draw per entry of
    their first dim."""
    check_dropout_probability(p)
    _warn_deprecated_channel_dims("dropout3d", input, 5)
    if input.ndim < 2:  # (PyTorch drops each element of a 1-D input; kept an error here, as it was)
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    shape = feature_shape(input) if input.ndim == 5 else _unbatched_channel_shape(input)
    return _feature_dropout(input, p, training, inplace, shape)


def _alpha_dropout(input, p, training, inplace, shape):
    """Alpha dropout (``autograd.ops.dropout.alpha_drop``), one draw per element of ``shape``."""
    check_dropout_probability(p)
    if not training or p == 0:
        return input
    return _inplace(input, lambda input: alpha_drop(input, p, shape), inplace)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Alpha dropout of each element (see _alpha_dropout)."""
    return _alpha_dropout(input, p, training, inplace, input.shape)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Alpha dropout of whole channels: one draw per (sample, channel) of an (N, C, *) input, the value
    α' filling the whole channel when dropped."""
    return _alpha_dropout(input, p, training, inplace, feature_shape(input))


def dropconnect(weight, p=0.5, training=True):
    """DropConnect (Wan et al., 2013): zero each *weight* with probability p (and scale by
    1/(1-p)) for one forward pass, instead of zeroing activations."""
    return dropout(weight, p, training)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise groups of channels of each sample (Wu & He, 2018), after PyTorch's check of the batch: an input
    of one sample whose every group holds one value (C == num_groups, each spatial size 1) would be normalised
    to 0 throughout, and is refused. As PyTorch's, the check multiplies the batch into the count (two such
    samples pass), and the top-level ``group_norm`` does not make it."""
    from autograd.ops.normalization import group_norm as _group_norm  # (deferred: ops/deferred.py)
    from autograd.ops.normalization import one_value_per_channel

    if input.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.ndim}")
    size = [input.shape[0] * input.shape[1] // num_groups, num_groups, *input.shape[2:]]
    if math.prod(size[:1] + size[2:]) == 1:
        raise one_value_per_channel(size)
    return _group_norm(input, num_groups, weight, bias, eps)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels (Krizhevsky et al., 2012), input (N, C, *):
        y[n, c] = x[n, c] / (k + α/size · Σ_{c'} x[n, c']²)^β,   c' from c − ⌊size/2⌋ to c + ⌊(size−1)/2⌋
    (channels outside 0..C−1 count as zeros, the sum still divided by size, as PyTorch)."""
    if input.ndim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {input.ndim} dimensions)")
    if size <= 0:  # (a window of no channels: PyTorch's RuntimeError, not a division by zero)
        raise RuntimeError(f"kernel size should be greater than zero, but got size: {size}")
    # (PyTorch sums the window by average pooling: its kernels' dtypes, int64 the only integer one; the pooling
    # layers load on first use)
    from autograd.ops.pooling_layers import refuse_narrow_kinds

    refuse_narrow_kinds(input, "avg_pool2d" if input.ndim == 3 else "avg_pool3d_out_frame")
    if input._data.size == 0:
        return input
    from .padding import pad  # nn.padding is built after this module

    channels = input.shape[1]
    squares = pad(input * input, (0, 0) * (input.ndim - 2) + (size // 2, (size - 1) // 2))
    total = squares[:, 0:channels]
    for offset in range(1, size):
        total = total + squares[:, offset:offset + channels]
    return input / (total * (alpha / size) + k) ** beta


# -- distances ------------------------------------------------------------------------------------


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """x / max(‖x‖_p, eps) along dim (unit vectors; eps keeps a zero vector finite).
    With ``out`` the result is written there as PyTorch's torch.div(..., out=out) writes it: resized to the
    result's shape, refused for a dtype the result can't be cast to or where grad would be needed."""
    from autograd.ops.distances import vector_norm  # (deferred: ops/deferred.py)

    return write_out(input / vector_norm(input, p, dim, keepdim=True).clamp(min=eps), out)


class _Reduction:
    """PyTorch's ``F._Reduction`` (torch.nn._reduction), which hand-written losses copied from PyTorch's call:
    a reduction's number (0 'none', 1 'mean', 2 'sum') and the deprecated size_average/reduce flags read as
    a reduction."""

    @staticmethod
    def get_enum(reduction):
        return ("none", "mean", "sum").index(read_reduction(reduction))

    @staticmethod
    def legacy_get_string(size_average, reduce, emit_warning=True):
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "none" if not reduce else "mean" if size_average else "sum"
        if emit_warning:
            warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' "
                          "instead.", stacklevel=program_stacklevel())
        return reduction

    @staticmethod
    def legacy_get_enum(size_average, reduce, emit_warning=True):
        return _Reduction.get_enum(_Reduction.legacy_get_string(size_average, reduce, emit_warning))


# The loss functions live in nn/losses.py, re-exported so that F.cross_entropy works as in
# PyTorch (imported last: they use the functions above).
from .losses import (  # noqa: E402, F401
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    contrastive_loss,
    cosine_embedding_loss,
    cross_entropy,
    gaussian_nll_loss,
    hinge_embedding_loss,
    hinge_loss,
    huber_loss,
    kl_div,
    l1_loss,
    margin_ranking_loss,
    mse_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    nll_loss,
    poisson_nll_loss,
    smooth_l1_loss,
    soft_margin_loss,
    triplet_margin_loss,
    triplet_margin_with_distance_loss,
)

# The functions that have a file of their own (convolution, pooling, fold/unfold, padding,
# attention, CTC, interpolation, embeddings) load on first use (PEP 562), as their layers do:
# F.conv2d and F.pad work as in PyTorch.
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {
    # the op modules autograd.ops leaves out (ops/deferred.py): the activations' constants and prelu, the bilinear
    # map, embeddings, pixel shuffling, the distances and the normalizations
    **_lazy.from_module("autograd.ops.activations", "SELU_ALPHA", "SELU_SCALE", "prelu"),
    "bilinear": "autograd.ops.bilinear:bilinear",
    "embedding": "autograd.ops.embedding:embedding",
    **_lazy.from_module("autograd.ops.pixel_shuffle", "channel_shuffle", "native_channel_shuffle", "pixel_shuffle",
                        "pixel_unshuffle"),
    **_lazy.from_module("autograd.ops.distances", "clamped_below_in_value", "cosine_similarity", "pairwise_distance",
                        "pdist", "vector_norm"),
    **_lazy.from_module("autograd.ops.normalization", "batch_norm", "instance_norm", "layer_norm",
                        "one_value_per_channel", "rms_norm"),
    **_lazy.from_module(".attention", "multi_head_attention_forward", "scaled_dot_product_attention",
                        "_canonical_mask", "_none_or_dtype", "_in_projection_packed", "_in_projection",
                        "_mha_shape_check"),
    **_lazy.from_module(".ctc", "ctc_loss"),
    **_lazy.from_module(".functional_conv", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d",
                        "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
                        "avg_pool1d", "avg_pool2d", "conv1d", "conv2d", "conv_tbc", "conv_transpose1d",
                        "conv_transpose2d", "fold", "max_pool1d", "max_pool1d_with_indices", "max_pool2d",
                        "max_pool2d_with_indices", "unfold", "upsample"),
    **_lazy.from_module(".functional_3d", "adaptive_avg_pool3d", "adaptive_max_pool3d",
                        "adaptive_max_pool3d_with_indices", "avg_pool3d", "conv3d", "conv_transpose3d", "max_pool3d",
                        "max_pool3d_with_indices"),
    **_lazy.from_module(".fractional_max_pool", "fractional_max_pool2d", "fractional_max_pool2d_with_indices",
                        "fractional_max_pool3d", "fractional_max_pool3d_with_indices"),
    "grad": ".grad",  # F.grad is torch.nn.grad
    **_lazy.from_module(".grid_sample", "affine_grid", "grid_sample"),
    **_lazy.from_module(".interpolation", "interpolate", "upsample_bilinear", "upsample_nearest"),
    **_lazy.from_module(".linear_cross_entropy", "linear_cross_entropy"),
    **_lazy.from_module(".lp_pool", "lp_pool1d", "lp_pool2d", "lp_pool3d"),
    **_lazy.from_module(".padding", "pad"),
    **_lazy.from_module(".sparse", "embedding_bag", "one_hot"),
    **_lazy.from_module(".unpool", "max_unpool1d", "max_unpool2d", "max_unpool3d"),
})

_lazy.dispatch_namespace(sys.modules[__name__])  # F.relu(x) asks a subclass of Tensor x, as PyTorch's
