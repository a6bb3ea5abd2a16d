"""``F.linear_cross_entropy`` and ``nn.LinearCrossEntropyLoss`` (PyTorch 2.13): cross-entropy of logits that a
linear map makes from the input, in one call,

    logits = input · Wᵀ + b   (W of shape (C, d₁, ..., d_K, in_features): K-dimensional logits (N, C, d₁, ..., d_K)),
    loss   = cross_entropy(logits, target, weight, reduction, ignore_index, label_smoothing).

A composition of ``F.linear`` and ``F.cross_entropy``, so its gradients (all orders) are theirs. This is
PyTorch's reference path (``options=None``); PyTorch's chunked path (``options=LinearCrossEntropyOptions(...)``)
computes the same numbers in batch chunks to spare memory, and is not built here.
"""

import math

from .functional import cross_entropy, linear
from .linear import Linear
from .loss import _WeightedLoss


def _refuse_options(options):
    if options is not None:
        raise NotImplementedError("linear_cross_entropy: the chunked path (options=LinearCrossEntropyOptions(...)) "
                                  "is not built here; options=None computes the same values")


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                         ignore_index=None, label_smoothing=0.0, options=None):
    """cross_entropy(linear(input, W, b) shaped (*batch, C, d₁, ..., d_K), target, ...): input (in_features,)
    or (N, in_features), linear_weight (C, in_features) or (C, d₁, ..., d_K, in_features) (K > 0 needs a
    batch), linear_bias of shape (C, d₁, ..., d_K). ignore_index=None is -100 for class indices and must
    stay None for class probabilities (a target of the logits' shape)."""
    _refuse_options(options)
    if not 1 <= input.ndim <= 2:
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.ndim}")
    batch, in_features = input.shape[:-1], input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError(f"expected equal input and linear_weight last dimensions (in_features), got "
                           f"{in_features} and {linear_weight.shape[-1]}, respectively")
    classes, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (classes, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(classes, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and not batch:
        raise RuntimeError(f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} "
                           f"requires batched input, (N, {in_features}), got unbatched input with shape "
                           f"{tuple(input.shape)}")
    logits_shape = (*batch, classes, *out_features)
    if tuple(target.shape) == logits_shape and ignore_index is not None:  # (a target of probabilities)
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    outputs = math.prod(out_features, start=classes)
    logits = linear(input, linear_weight.reshape(outputs, in_features),
                    None if linear_bias is None else linear_bias.reshape(outputs))
    # (the linear map's outputs are (C, d₁, ..., d_K) flattened, class first: the class dim follows the batch)
    return cross_entropy(logits.reshape(logits_shape), target, weight=weight, reduction=reduction,
                         ignore_index=-100 if ignore_index is None else ignore_index, label_smoothing=label_smoothing)


class LinearCrossEntropyLoss(_WeightedLoss):
    """LinearCrossEntropyLoss(in_features, num_classes, *, out_features=(), bias=False, device=None, dtype=None,
    reduction='mean', weight=None, ignore_index=None, label_smoothing=0.0, options=None): a ``Linear`` layer
    (``self.linear``, weight stored flat as (C·d₁···d_K, in_features)) and cross-entropy in one module; the class
    ``weight`` is a buffer, as in every weighted loss."""

    def __init__(self, in_features, num_classes, *, out_features=(), bias=False, device=None, dtype=None,
                 reduction="mean", weight=None, ignore_index=None, label_smoothing=0.0, options=None):
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise RuntimeError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        _refuse_options(options)
        super().__init__(weight, reduction=reduction)
        self.num_classes, self.out_features = num_classes, out_features
        self.ignore_index, self.label_smoothing, self.options = ignore_index, label_smoothing, options
        self.linear = Linear(in_features, math.prod(out_features, start=num_classes), bias=bias, device=device,
                             dtype=dtype)

    def forward(self, input, target):
        shape = (self.num_classes, *self.out_features)
        bias = None if self.linear.bias is None else self.linear.bias.reshape(shape)
        return linear_cross_entropy(input, self.linear.weight.reshape(*shape, self.linear.in_features), target,
                                    linear_bias=bias, weight=self.weight, reduction=self.reduction,
                                    ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
                                    options=self.options)

    def extra_repr(self):
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, options={self.options}")
