"""Loss functions (the functional forms; ``nn/loss.py`` wraps each as a Module).

Every loss takes ``reduction``: 'mean' (the default), 'sum' or 'none'. Losses
on probabilities and logits are computed stably: cross-entropy from the fused
``log_softmax``, BCE-with-logits from ``softplus``, BCE with PyTorch's log
floor of -100, so saturated inputs give finite losses and gradients.

Where PyTorch broadcasts an input against a target of another shape with only
a warning (a classic bug: (N, 1) against (N,)), these raise an error instead.
"""

import math
import warnings

import numpy

import autograd
from autograd import Primitive, Tensor
from autograd.backend import ufunc_at, xp
from autograd.errors import ShapeError
from autograd.graph import program_stacklevel
from autograd.index_watching import watches_arguments
from autograd.ops.conversion import c_name, refuse_kinds, require_scalar_type, type_name
from autograd.ops.losses import (  # noqa: F401  (F.binary_cross_entropy_with_logits, ... as before)
    FLOAT_EPSILON,
    binary_cross_entropy_with_logits,
    check_reduction,
    checked_reduction,
    cosine_embedding_loss,
    hinge_embedding,
    kl_divergence,
    legacy_reduction,
    margin_ranking_loss,
    poisson_nll,
    read_reduction,
    refuse_gradient_to,
    triplet_margin_loss,
)
from autograd.ops.losses import reduced as _reduce
from autograd.ops.losses import same_dims_triplet as _same_dims_triplet
from autograd.ops.losses import same_shape as _same_shape
from autograd.ops.losses import signs as _signs
from autograd.ops.reductions import Mean, Sum
from autograd.primitive import named_node, node_named
from autograd.tensor import tensor_from

from . import functional as F
from .cross_entropy import _check_class_indices, cross_entropy, nll_loss  # noqa: F401  (F's names, as before)


def _refuse_non_floating(kernel, input, target):
    """PyTorch's refusal where a loss kernel that squares or compares a difference meets a common dtype it has no
    loop for: complex numbers (d·d is not |d|²: write (ŷ - y).abs().pow(2).mean()), integers and bools (a float
    prediction against integer or bool targets promotes, and is computed)."""
    common = autograd.result_type(input, target) if isinstance(target, Tensor) else input.dtype
    if common.kind in "biuc":
        raise NotImplementedError(f"\"{kernel}_cpu\" not implemented for '{type_name(common)}'")


def _in_input_dtype(input, target):
    """target in input's dtype, for the losses PyTorch's kernels compute in it (huber, soft margin): refused where
    the two's common dtype cannot be cast to it, as PyTorch refuses it (a float target beside integer predictions
    was truncated, a complex one lost its imaginary part)."""
    common = autograd.result_type(input, target)
    if not autograd.can_cast(common, input.dtype):
        raise RuntimeError(f"result type {type_name(common)} can't be cast to the desired output type "
                           f"{type_name(input.dtype)}")
    return target.to(input.dtype)


def _weighted(loss, weight, reduction, mean_over_weights=True):
    """PyTorch's elementwise ``weight`` of mse_loss, l1_loss and huber_loss (its shape the input's):
    'mean' divides Σ w ℓ by Σ w (by the count for huber_loss, as PyTorch does)."""
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(weight.shape) != tuple(loss.shape):
        raise ValueError("Weights and input must have the same size.")
    weighted = loss * weight
    if reduction == "mean" and mean_over_weights:
        return weighted.sum() / weight.sum()
    return _reduce(weighted, reduction)


def _bools_promoted(input, target):
    """input and target in their common dtype where one is a bool tensor: PyTorch's mse and smooth_l1 kernels
    promote before they subtract (a float prediction against a bool mask), where the - operator refuses bools."""
    if isinstance(target, Tensor) and (input.dtype == xp.bool_) != (target.dtype == xp.bool_):
        common = autograd.result_type(input, target)
        return input.to(common), target.to(common)
    return input, target


class MseLoss(Primitive):
    """ℓ = (x - y)², its mean, sum or itself (``reduction``);   dℓ/dx = c (x - y),   dℓ/dy = c (y - x), with c = 2/n
    for the mean of n terms and 2 otherwise

    One node, as PyTorch's MseLossBackward0, whose next_functions are the input's and the target's nodes (the
    60-minute blitz prints loss.grad_fn.next_functions[0][0]: the last layer's AddmmBackward0). Computed as PyTorch's
    kernels compute it, each step in the tensors' dtype: the squares, then their mean or sum (a float16 sum
    accumulated in float32); the gradient c (x - y) · dL/dℓ, with c in that dtype. The backward is written with
    Tensor ops, so it has derivatives of its own."""

    def forward(self, x, y):
        difference = x - y
        squares = difference * difference
        if self.reduction == "none":
            return squares
        reducer = object.__new__(Mean if self.reduction == "mean" else Sum)  # (their forward: PyTorch's sum and mean)
        reducer.__dict__ = {"axes": tuple(range(squares.ndim)), "keepdim": False, "count": squares.size}
        return reducer.forward(squares)

    def backward(self, grad, loss, x, y):
        count = x._data.size if self.reduction == "mean" else 1
        factor = autograd.tensor(2.0 / count if count else math.nan, dtype=x.dtype)
        return (factor * (x - y) * grad if x.requires_grad else None,
                factor * (y - x) * grad if y.requires_grad else None)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """(ŷ - y)², the lecture's squared (L2) loss. Complex numbers are refused, as PyTorch refuses them."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _refuse_non_floating("mse", input, target)
    input, target = _bools_promoted(input, target)
    target = _same_shape("mse_loss", input, target)
    reduction = read_reduction(reduction)  # (after the shapes, as PyTorch's)
    if weight is None and input.dtype.kind == "f" and target.dtype == input.dtype:
        return MseLoss.apply(input, target, reduction=reduction)
    difference = input - target
    return named_node(_weighted(difference * difference, weight, reduction), None, "MseLossBackward0")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """|ŷ - y|, the lecture's mean absolute error: less swayed by outliers than MSE."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    target = _same_shape("l1_loss", input, target)
    return _weighted((input - target).abs(), weight, read_reduction(reduction))  # (read after the shapes: PyTorch's)


@watches_arguments("input", "target")  # (saved by PyTorch's node: writing one refuses the backward)
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """½ d² where |d| < delta, delta (|d| - ½ delta) elsewhere: MSE near 0, L1 far out."""
    if not delta > 0:  # (a NaN delta too, as PyTorch's check)
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    _refuse_non_floating("huber", input, target)
    target = _same_shape("huber_loss", input, target)
    reduction = read_reduction(reduction)  # (after the shapes, as PyTorch's)
    if input.dtype == autograd.float16 and weight is None:  # (each loss in float32, from the exact difference,
        pointwise = huber_loss(input.float(), target.float(), "none", delta).half()  # rounded once: PyTorch's
        return named_node(_weighted(pointwise, None, reduction), None, "HuberLossBackward0")  # kernel)
    # computed in the input's dtype, as PyTorch's kernel (mse_loss and smooth_l1_loss promote)
    signed = input - _in_input_dtype(input, target)
    difference = signed.abs()
    inside, near = _quadratic_piece(signed, difference, delta)
    loss = _weighted(autograd.where(inside, near * near * 0.5,
                                    (difference - 0.5 * delta) * delta), weight, reduction, mean_over_weights=False)
    return named_node(loss, None, "HuberLossBackward0")


class BinaryCrossEntropy(Primitive):
    """ℓ = -(y ln p + (1 - y) ln(1 - p)), each log floored at -100 as PyTorch does;
    dℓ/dp = (p - y) / max(p (1 - p), ε)  (ε PyTorch's float 1e-12),   dℓ/dy = -logit(p) = ln(1 - p) - ln p

    dℓ/dy takes the logs unfloored, as PyTorch's: ±inf at p = 0 or 1, not ±100 (a target that is learnt, as a
    soft label, sees the loss's true slope there).

    The backward is written with Tensor ops of p and y, so its own derivatives are exact too:
    d²ℓ/dp² = (p² - 2py + y) / (p (1 - p))²,  d²ℓ/dp dy = -1 / (p (1 - p))."""

    def forward(self, p, y):
        log_p = xp.maximum(xp.log(p), -100)
        log_q = xp.maximum(xp.log1p(-p), -100)
        return -(y * log_p + (1 - y) * log_q)

    def backward(self, grad, loss, p, y):
        grad_p = grad_y = None
        if p.requires_grad:
            grad_p = grad * (p - y) / (p * (1 - p)).clamp(min=FLOAT_EPSILON)
        if y.requires_grad:
            with numpy.errstate(divide="ignore"):  # (logit(0) = -inf)
                grad_y = grad * -p.logit()
        return grad_p, grad_y


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """BCE on probabilities: L = -(1/m) Σ [y ln ŷ + (1 - y) ln(1 - ŷ)] (the lecture's).
    Prefer binary_cross_entropy_with_logits on raw scores: it is stabler."""
    reduction = checked_reduction(size_average, reduce, reduction)
    refuse_gradient_to("weight", weight, "binary_cross_entropy")
    target = _same_shape("binary_cross_entropy", input, target)
    refuse_kinds(input, "binary_cross_entropy", "biuc")  # (PyTorch's kernel: floating loops only)
    if target.dtype != input.dtype:  # PyTorch does not cast it (an integer or float64 target is refused)
        raise RuntimeError(f"Found dtype {type_name(target.dtype)} but expected {type_name(input.dtype)}")
    # PyTorch's kernel checks 0 <= x <= 1 for both, which a NaN fails too (as a probability it is no answer)
    if not ((input._data >= 0) & (input._data <= 1)).all():
        raise RuntimeError("binary_cross_entropy: all elements of input should be between 0 and 1 "
                           "(pass logits to binary_cross_entropy_with_logits instead)")
    if not ((target._data >= 0) & (target._data <= 1)).all():
        raise RuntimeError("binary_cross_entropy: all elements of target should be between 0 and 1 "
                           "(a label, or a soft label, is a probability)")
    with numpy.errstate(divide="ignore"):
        loss = BinaryCrossEntropy.apply(input, target)
    # (the weight scales the loss in its dtype, as PyTorch's in-place product does)
    return named_node(_reduce(loss if weight is None else loss * weight.to(loss.dtype), reduction), None,
                      "BinaryCrossEntropyBackward0", (input,))


def hinge_loss(input, target, margin=1.0, reduction="mean"):
    """The lecture's hinge loss ℓ = max(0, margin - y f(x)) for labels y in {-1, +1}:
    zero once a prediction is on the right side by at least the margin."""
    target = _signs("hinge_loss", _same_shape("hinge_loss", input, target))
    return _reduce((margin - target.to(input.dtype) * input).relu(), reduction)


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    """ℓ = x for y = 1,  max(0, margin − x) for y = −1 (``autograd.ops.losses.hinge_embedding``)."""
    return hinge_embedding(input, target, margin, checked_reduction(size_average, reduce, reduction))


def _check_margin_scores(input, kernel):
    """The margin losses' scores: a vector or a batch of them, with classes (PyTorch's check, its words), of
    float32 or float64 (its kernel's only loops)."""
    if input.dtype.kind != "f" or input.dtype.itemsize == 2:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(input.dtype)}'")
    if input.ndim > 2 or input.shape[-1:] == (0,):
        raise RuntimeError(f"Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
                           f"{list(input.shape)}")


def _reduce_rows(losses, reduction):
    """The margin losses' reduction: as ``_reduce``, but an empty batch's mean is 0 (PyTorch's kernels divide
    only a batch that has rows), not 0/0."""
    if reduction == "mean" and losses.numel() == 0:
        return losses.sum()
    return _reduce(losses, reduction)


@node_named("MultiMarginLossBackward0")  # (PyTorch's one kernel and node, which saves these three:)
@watches_arguments("input", "target", "weight")
def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
    """Multi-class hinge: ℓ_n = Σ_{i ≠ y} max(0, margin - x_y + x_i)^p / C (times w_y)."""
    reduction = checked_reduction(size_average, reduce, reduction)
    refuse_gradient_to("weight", weight, "multi_margin_loss")
    if p not in (1, 2):
        raise ValueError(f"multi_margin_loss: only p = 1 and p = 2 are supported, got {p}")
    if weight is not None and weight.ndim != 1:
        raise ValueError("weight must be one-dimensional")
    if weight is not None:
        require_scalar_type((input, weight))  # (PyTorch's kernel takes the weight in the input's dtype only)
    _check_margin_scores(input, "multi_margin_loss_cpu_kernel")
    target = target if isinstance(target, Tensor) else tensor_from(target)
    scores = input if input.ndim == 2 else input.reshape(1, -1)
    if target.ndim > 1 or target.numel() != scores.shape[0]:  # (PyTorch's check: one label per row)
        raise ShapeError(f"multi_margin_loss: target tensor should be 1-D with size equal to the number of input "
                         f"samples (batch size). Expected target size [{scores.shape[0]}], but got "
                         f"{list(target.shape)}. Input has shape {list(input.shape)}.")
    if weight is not None and weight.shape[0] != scores.shape[1]:  # (one weight per class, as PyTorch's kernel)
        raise RuntimeError(f"inconsistent weight size, expected {scores.shape[1]} but got {list(weight.shape)}")
    if target.dtype != xp.int64:  # (PyTorch's kernel reads the labels as int64 only, after its shape checks)
        raise RuntimeError(f"expected scalar type Long but found {type_name(target.dtype)} (multi_margin_loss: the "
                           "target holds class indices: convert it with target.long())")
    labels = target._data.reshape(-1)
    if ((labels < 0) | (labels >= scores.shape[1])).any():
        raise RuntimeError("target out of range")  # (PyTorch's kernel's words: not nll_loss's IndexError)
    _check_class_indices("multi_margin_loss", scores, tensor_from(labels))
    rows = xp.arange(len(labels))
    correct = scores[rows, labels].unsqueeze(1)
    margins = scores - correct + margin
    # the classes other than y whose margin is violated: a NaN margin is not (PyTorch's kernel adds only z > 0),
    # so a NaN score leaves the loss and its gradient finite, as there
    counted = (margins._data > 0) & (xp.arange(scores.shape[1]) != labels[:, None])
    violations = autograd.where(Tensor._make(counted), margins, 0.0)
    if p == 2:
        violations = violations * violations
    losses = violations.sum(1) * (1.0 / scores.shape[1])
    if weight is not None:
        losses = losses * Tensor._make(weight._data[labels])
    # (one prediction's scores: its loss has the label's shape, () or (1,), as PyTorch's)
    return _reduce_rows(losses if input.ndim == 2 else losses.reshape(target.shape), reduction)


def contrastive_loss(input1, input2, target, margin=1.0, reduction="mean"):
    """Siamese contrastive loss (Hadsell, Chopra & LeCun, 2006, "Dimensionality Reduction
    by Learning an Invariant Mapping"):
        ℓ = y d² + (1 - y) max(0, margin - d)²,   d = ‖x1 - x2‖₂
    with y = 1 for a similar pair (pulled together) and y = 0 for a dissimilar one
    (pushed at least ``margin`` apart)."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if not ((target._data == 0) | (target._data == 1)).all():
        raise ValueError("contrastive_loss: targets must be 1 (similar) or 0 (dissimilar)")
    target = target.to(input1.dtype)
    distance = F.pairwise_distance(input1, input2)
    apart = (margin - distance).relu()
    return _reduce(target * distance * distance + (1.0 - target) * apart * apart, reduction)


@watches_arguments("input", "target")  # (saved by PyTorch's node: writing one refuses the backward)
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """½ d² / β where |d| < β, |d| - ½ β elsewhere (d = ŷ - y); β = 0 is the L1 loss.
    Huber's loss divided by β: its slope far out is 1, not β."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _refuse_non_floating("smooth_l1", input, target)
    if not beta >= 0:  # (a NaN beta too, as PyTorch's check)
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    input, target = _bools_promoted(input, target)
    signed = input - _same_shape("smooth_l1_loss", input, target)
    reduction = read_reduction(reduction)  # (after the shapes, as PyTorch's)
    difference = signed.abs()
    if beta == 0:
        return _reduce(difference, reduction)  # (PyTorch's too: the L1 loss's nodes)
    inside, near = _quadratic_piece(signed, difference, beta)
    return named_node(_reduce(autograd.where(inside, near * near * (0.5 / beta),
                                             difference - 0.5 * beta), reduction), None, "SmoothL1LossBackward0")


def _quadratic_piece(signed, difference, cutoff):
    """(where huber and smooth L1 are quadratic, d there and 0 elsewhere) for d = input - target, |d| = difference.

    The quadratic piece is |d| < cutoff, and NaN: a NaN difference gets a NaN gradient, as PyTorch's kernel gives
    (the linear piece's |d| would give it sign(NaN) = 0). Far out d is replaced by 0 before it is squared: an
    infinite d² would send the linear piece's gradient 0 · inf = NaN through the unused square (PyTorch's is ±1).
    And d, not |d|, is squared, so the second derivative at d = 0 is PyTorch's 1 / cutoff (|d|² has sign(0)² = 0)."""
    inside = ~(difference >= cutoff)
    return inside, autograd.where(inside, signed, 0.0)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Kullback-Leibler divergence KL(y ‖ ŷ) pointwise, with ``input`` = ln ŷ (``autograd.ops.losses.kl_divergence``).
    reduction='batchmean' divides the sum by the batch size: the true KL divergence per
    sample ('mean' divides by the number of elements, as PyTorch, with its warning)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      stacklevel=program_stacklevel())
    if reduction != "batchmean":
        reduction = read_reduction(reduction)
    return kl_divergence(input, target, reduction, log_target)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                     reduction="mean"):
    """Negative log-likelihood of y ~ Poisson(λ) (``autograd.ops.losses.poisson_nll``)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction)  # (first, in PyTorch's Python: 'elementwise_mean' refused)
    return poisson_nll(input, target, log_input, full, eps, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """Negative log-likelihood of y ~ N(μ, σ²) with predicted mean μ = ``input`` and variance
    σ² = ``var``:   ℓ = ½ (ln max(σ², eps) + (μ - y)² / max(σ², eps))  (+ ½ ln 2π if full).

    As PyTorch, the clamp to eps is not seen by the gradient (it is done in place
    under no_grad there). ``var`` is a number, or a tensor of the input's shape, of one dim fewer, or
    of the input's shape but for one dim of size 1 (a variance shared along that dim: (4, 1, 32, 32) for
    an input (4, 3, 32, 32)), as PyTorch's."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if isinstance(var, (int, float)):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = autograd.full_like(input, var)
    if var.shape != input.shape:
        if input.shape[:-1] == var.shape:
            var = var.unsqueeze(-1)
        elif not (input.ndim == var.ndim and sum(v for i, v in zip(input.shape, var.shape) if i != v) == 1):
            raise ValueError(f"var is of incorrect size: {tuple(var.shape)} for an input of shape "
                             f"{tuple(input.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(reduction + " is not valid")
    refuse_kinds(var, "lt_cpu", "c")  # (PyTorch's check var < 0: complex numbers have no order)
    if (var._data < 0).any():
        raise ValueError("var has negative entry/entries")
    if var.dtype.kind in "biu":  # (PyTorch clamps var to eps in place: a float eps into an integer var)
        raise RuntimeError(f"result type Float can't be cast to the desired output type {c_name(var.dtype)}")
    var = F.clamped_below_in_value(var, eps)
    difference = input - target
    loss = (var.log() + difference * difference / var) * 0.5
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


@node_named("SoftMarginLossBackward0")
@watches_arguments("input", "target")  # (saved by PyTorch's node: writing one refuses the backward)
def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """ℓ = ln(1 + e^(-y x)) for labels y in {-1, +1}: the logistic loss."""
    reduction = checked_reduction(size_average, reduce, reduction)
    if autograd.is_grad_enabled() and getattr(target, "requires_grad", False):  # (PyTorch has no derivative for it)
        raise RuntimeError("The function 'soft_margin_loss' is not differentiable with respect to argument 'target'. "
                           "This input cannot have requires_grad True.")
    target = _in_input_dtype(input, _same_shape("soft_margin_loss", input, target))
    return _reduce((-target * input).softplus(), reduction)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """One binary logistic loss per class, averaged over the C classes of each sample:
        ℓ_n = -(1/C) Σ_c w_c [y_nc ln σ(x_nc) + (1 - y_nc) ln σ(-x_nc)]"""
    reduction = legacy_reduction(size_average, reduce, reduction)
    target = target if isinstance(target, Tensor) else tensor_from(target)  # (promoted with the input, as PyTorch's:
    loss = -(target * F.logsigmoid(input) + (1.0 - target) * F.logsigmoid(-input))  # a float64 target, a float64 loss)
    if weight is not None:
        loss = loss * weight
    classes = input.shape[-1]
    loss = loss.sum(input.ndim - 1) / classes  # (divided, as PyTorch's: a product by 1/C rounds differently)
    if reduction not in ("mean", "sum", "none"):  # (checked last, in PyTorch's words for this loss)
        raise ValueError(reduction + " is not valid")
    return _reduce(loss, reduction)


@node_named("MultilabelMarginLossBackward0")
@watches_arguments("input", "target")  # (saved by PyTorch's node: writing one refuses the backward)
def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Multi-label hinge: for each sample, every target class j should score at least 1
    above every non-target class i:   ℓ_n = Σ_j Σ_{i ∉ targets} max(0, 1 - (x_j - x_i)) / C.
    ``target`` holds class indices, the list ending at the first -1 (the rest is ignored)."""
    reduction = checked_reduction(size_average, reduce, reduction)
    _check_margin_scores(input, "multilabel_margin_loss_forward_out_frame")
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if target.dtype != xp.int64:  # (class indices: int64 only, as PyTorch's kernel)
        raise RuntimeError(f"expected scalar type Long but found {type_name(target.dtype)}")
    if target._data.shape != input.shape:
        raise RuntimeError(f"multilabel_margin_loss: inconsistent target size: {list(target.shape)} for input of "
                           f"size: {list(input.shape)}")
    scores = input if input.ndim == 2 else input.reshape(1, -1)
    labels = target._data.reshape(scores.shape)
    classes = scores.shape[1]
    valid = xp.cumprod(labels >= 0, axis=1).astype(bool)  # up to the first -1
    if (labels[valid] >= classes).any():
        raise RuntimeError(f"multilabel_margin_loss: target index out of range for {classes} classes")
    counts = xp.zeros(scores.shape, dtype=input.dtype)  # how often each class is listed as a target
    rows = xp.broadcast_to(xp.arange(scores.shape[0])[:, None], labels.shape)
    ufunc_at("add", counts, (rows[valid], labels[valid]), 1)
    others = (counts == 0).astype(input.dtype)
    pairs = Tensor._make(counts[:, :, None] * others[:, None, :])  # (n, j, i): j a target, i not
    margins = 1.0 - scores.unsqueeze(2) + scores.unsqueeze(1)
    hinge = autograd.where(Tensor._make(margins._data > 0), margins, 0.0)  # (a NaN margin adds nothing, as there)
    loss = (hinge * pairs).sum((1, 2)) * (1.0 / classes)
    return _reduce_rows(loss if input.ndim == 2 else loss.reshape(()), reduction)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    """ℓ = max(d(a, p) - d(a, n) + margin, 0) with any distance d (pairwise_distance by
    default); swap uses min(d(a, n), d(p, n))."""
    check_reduction(reduction)  # (first, as PyTorch's)
    if margin <= 0:
        raise ValueError(f"TripletMarginWithDistanceLoss: expected margin to be greater than 0, got {margin} instead")
    _same_dims_triplet(anchor, positive, negative)
    distance = distance_function if distance_function is not None else F.pairwise_distance
    to_positive = distance(anchor, positive)
    to_negative = distance(anchor, negative)
    if swap:
        to_negative = to_negative.minimum(distance(positive, negative))
    return _reduce((margin + to_positive - to_negative).clamp(min=0.0), reduction)
