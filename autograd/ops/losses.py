"""The losses PyTorch also spells at the top level, composed of differentiable ops: the maths
behind ``nn.functional``'s ``binary_cross_entropy_with_logits``, ``hinge_embedding_loss``,
``kl_div``, ``margin_ranking_loss``, ``poisson_nll_loss``, ``cosine_embedding_loss`` and
``triplet_margin_loss``, and ``autograd.<name>`` with PyTorch's top-level signatures, whose
``reduction`` is an int (0 'none', 1 'mean', 2 'sum') and which take no legacy arguments (the
``nn.functional`` forms take PyTorch's deprecated ``size_average``/``reduce``: ``legacy_reduction``).
Left out, the reduction is 0, none: PyTorch's schemas say 1 (mean), but its top-level functions
return the unreduced losses when it is not given, and these do what PyTorch does.
``nn.functional`` adds the string reductions, 'batchmean' and the warnings.
"""

import math
import warnings

from ..errors import ShapeError
from ..graph import modes, program_stacklevel
from ..primitive import named_node
from ..size import Size
from ..tensor import Tensor, tensor_from
from .conversion import refuse_kinds, type_name
from .elementwise import where
from .names import names
from .pointwise_pairs import xlogy
from .promotion import common_dtype


def refuse_gradient_to(argument, tensor, kernel):
    """PyTorch's refusal of an argument its kernel has no derivative for (the class weights of nll_loss, of
    binary_cross_entropy, ...) given as a tensor that requires grad with grad mode on: its gradient would be
    missing, with no word said. (Under no_grad, or detached, it is a constant, and taken.)"""
    if isinstance(tensor, Tensor) and tensor.requires_grad and modes.grad_enabled:
        raise RuntimeError(f"The function '{kernel}' is not differentiable with respect to argument '{argument}'. "
                           f"This input cannot have requires_grad True. (Its {argument} of shape "
                           f"{tuple(tensor.shape)} requires grad: pass {argument}.detach() to use it as a constant.)")


def legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated ``size_average``/``reduce`` flags, read as a reduction (with its warning):
    unset they leave ``reduction`` as it is; otherwise each defaults to True, and reduce=False is
    'none', size_average=False 'sum', both True 'mean'."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
                  stacklevel=program_stacklevel())
    return reduction


def check_reduction(reduction):
    """PyTorch's first check in a loss (before any argument is read)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")


def read_reduction(reduction):
    """PyTorch's _Reduction.get_enum, by name: the reduction checked, with the long-deprecated 'elementwise_mean'
    read as 'mean' (and its warning), as the losses PyTorch computes in C++ read it. (Those checking the name in
    Python, poisson_nll_loss, gaussian_nll_loss, multilabel_soft_margin_loss and
    triplet_margin_with_distance_loss, refuse it.)"""
    if reduction == "elementwise_mean":
        warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                      stacklevel=program_stacklevel())
        return "mean"
    check_reduction(reduction)
    return reduction


def checked_reduction(size_average, reduce, reduction):
    """The reduction a loss asked for (``legacy_reduction``, then ``read_reduction``), read before any other
    argument: the order of PyTorch's losses that read it at the call, so a bad reduction is named even where the
    inputs are wrong too. (l1, mse, smooth_l1 and huber broadcast their inputs first, then read it.)"""
    return read_reduction(legacy_reduction(size_average, reduce, reduction))


def reduced(loss, reduction):
    """The mean, sum or none of the elementwise losses."""
    check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def reduce_batchmean(loss, reduction, batch):
    """``reduce``, and 'batchmean': the sum divided by the batch size (divided, as PyTorch's: a product by
    1/batch rounds differently)."""
    if reduction == "batchmean":
        return loss.sum() / batch if loss.ndim else loss.sum()
    return reduced(loss, reduction)


def same_shape(name, input, target):
    """The target as a tensor of the input's shape (PyTorch refuses to broadcast here)."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if input.shape != target.shape:  # (PyTorch's RuntimeError where they cannot broadcast; a ValueError too)
        raise ShapeError(f"{name}: input of shape {tuple(input.shape)} and target of shape "
                         f"{tuple(target.shape)} differ; "
                         "they must have the same shape (reshape one, e.g. target.reshape(input.shape))")
    return target


def signs(name, target):
    """The target as a tensor, checked to hold only -1 and +1."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if not ((target._data == -1) | (target._data == 1)).all():
        raise ValueError(f"{name}: targets must be -1 or +1")
    return target


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """BCE of σ(x), computed from the logit x without forming σ(x):
        ℓ = (1 - y) x + (1 + (pos_weight - 1) y) · softplus(-x)
    which equals -[pos_weight · y ln σ(x) + (1 - y) ln(1 - σ(x))] and never overflows."""
    reduction = checked_reduction(size_average, reduce, reduction)
    refuse_gradient_to("weight", weight, "binary_cross_entropy_with_logits")
    refuse_gradient_to("pos_weight", pos_weight, "binary_cross_entropy_with_logits")
    given_target = target  # (the user's tensor, saved by PyTorch's node with the input and weights)
    target = same_shape("binary_cross_entropy_with_logits", input, target)
    refuse_kinds(input, "log_sigmoid_cpu", "biuc")  # (-log σ(x), PyTorch's first check: real floating loops only;
    # integer logits were computed as integers, a silent 0 for a float target)
    # PyTorch writes the loss into a tensor made from the target ((1 - target).mul_(input)...): it has
    # the target's dtype (a float64 input with a float32 target gives a float32 loss), and an integer
    # target is refused (a bool one too: 1 - target is a bool subtraction)
    if target.dtype.kind == "b":
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` "
                           "or `logical_xor()` operator instead.")
    if target.dtype.kind in "iu":
        raise RuntimeError(f"result type {type_name(input.dtype)} can't be cast to the desired output type "
                           f"{type_name(target.dtype)}")
    # (1 - y)·x is computed in the wider of the two dtypes, as PyTorch's in-place mul_ computes it: float64
    # targets beside float32 logits stay float64 (narrowing them to the input's dtype rounded the targets)
    loss_dtype = target.dtype
    target = target.to(common_dtype((input.dtype, target.dtype)))
    scale = 1.0 if pos_weight is None else (target * (pos_weight - 1.0) + 1.0)
    # -log σ(x) is the input's dtype (pos_weight's factor written back into it, as PyTorch's mul_)
    loss = (1.0 - target) * input + ((-input).softplus() * scale).to(input.dtype)
    loss = loss if weight is None else loss * weight
    return named_node(reduced(loss if loss.dtype == loss_dtype else loss.to(loss_dtype), reduction), None,
                      "BinaryCrossEntropyWithLogitsBackward0", saves=(input, given_target, weight, pos_weight))


def hinge_embedding(input, target, margin, reduction):
    """ℓ = x for y = 1,  max(0, margin − x) for y = −1 (x a distance: small for similar pairs, at least
    the margin apart for dissimilar ones). As PyTorch, the two terms are [y ≠ −1]·x + [y ≠ 1]·max(0, margin − x)."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    losses = (where(target != 1, (margin - input).clamp(min=0.0), 0.0) + where(target != -1, input, 0.0))
    return reduced(losses, reduction)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, size_average=None,
                        reduce=None, reduction="mean"):
    """ℓ = max(d(a, p) - d(a, n) + margin, 0): the anchor nearer its positive than its
    negative by a margin (Schroff et al., 2015). swap uses min(d(a, n), d(p, n)). nn.functional's
    form asks for margin > 0 (the top-level one takes any)."""
    reduction = checked_reduction(size_average, reduce, reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    return _triplet_margin(anchor, positive, negative, margin, p, eps, swap, reduction)


def same_dims_triplet(anchor, positive, negative):
    """PyTorch's check that a triplet's tensors have as many dims (it broadcasts none of them)."""
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise RuntimeError("The anchor, positive, and negative tensors are expected to have the same number of "
                           f"dimensions, but got: anchor {anchor.ndim}D, positive {positive.ndim}D, and negative "
                           f"{negative.ndim}D inputs")


def _triplet_margin(anchor, positive, negative, margin, p, eps, swap, reduction):
    from .distances import pairwise_distance  # (a deferred module, deferred.py: loaded by the first triplet loss)

    same_dims_triplet(anchor, positive, negative)
    to_positive = pairwise_distance(anchor, positive, p, eps)
    to_negative = pairwise_distance(anchor, negative, p, eps)
    if swap:
        to_negative = to_negative.minimum(pairwise_distance(positive, negative, p, eps))
    # clamp_min, not relu: at exactly 0 the gradient goes through, as PyTorch's
    return reduced((margin + to_positive - to_negative).clamp(min=0.0), reduction)


# PyTorch's EPSILON in cosine_embedding_loss and binary_cross_entropy's backward is a C++ float: 1e-12 rounded to
# float32 (9.99999996e-13), which float64 shows at the edges (a zero vector's gradient x2 / sqrt(EPSILON ‖x2‖²),
# BCE's (p - y) / EPSILON at p = 0 or 1)
FLOAT_EPSILON = 9.999999960041972e-13


def cosine_embedding_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None, reduction="mean"):
    """ℓ = 1 - cos(x1, x2) for y = 1;  max(0, cos(x1, x2) - margin) for y = -1; 0 for any other y, as PyTorch
    (which checks no target: 0/1 labels give the loss of the 1s alone)."""
    reduction = checked_reduction(size_average, reduce, reduction)
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if target.ndim > 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    for x in (input1, input2):  # PyTorch's rule: a batch of vectors for a 1-D target, one vector for a 0-D one
        if x.ndim != target.ndim + 1:
            raise RuntimeError(f"{target.ndim}D target tensor expects {target.ndim + 1}D input tensors, but found "
                               f"inputs with sizes {list(input1.shape)} and {list(input2.shape)}.")
    dim = input1.ndim - 1
    dot = (input1 * input2).sum(dim)
    norms = (((input1 * input1).sum(dim) + FLOAT_EPSILON) * ((input2 * input2).sum(dim) + FLOAT_EPSILON)).sqrt()
    cos = dot / norms
    # clamp_min, not relu: at cos = margin the gradient goes through, as PyTorch's
    losses = where(target == 1, 1.0 - cos, 0.0) + where(target == -1, (cos - margin).clamp(min=0.0), 0.0)
    return reduced(losses, reduction)


def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None, reduction="mean"):
    """ℓ = max(0, -y (x1 - x2) + margin): y = 1 wants x1 ranked above x2. Any real y is taken (a
    weighted ranking), as PyTorch takes it."""
    reduction = checked_reduction(size_average, reduce, reduction)
    target = _as_target(target, input1)
    if not input1.ndim == input2.ndim == target.ndim:  # a (15, 1) target would broadcast to (15, 15)
        raise RuntimeError(f"margin_ranking_loss : All input tensors should have same dimension but got sizes: "
                           f"input1: {Size(input1.shape)!r}, input2: {Size(input2.shape)!r}, "
                           f"target: {Size(target.shape)!r} ")
    return _margin_ranking(input1, input2, target, margin, reduction)


def _as_target(target, input1):
    return (target if isinstance(target, Tensor) else tensor_from(target)).to(input1.dtype)


def _margin_ranking(input1, input2, target, margin, reduction):
    """margin_ranking_loss without the check of dimensions: the three broadcast (PyTorch's torch.* form)."""
    # clamp_min, not relu: where the inputs tie (margin 0) the gradient goes through, as PyTorch's
    return reduced((-target * (input1 - input2) + margin).clamp_min(0.0), reduction)


def kl_divergence(input, target, reduction, log_target):
    """Kullback-Leibler divergence KL(y ‖ ŷ) pointwise, with ``input`` = ln ŷ (log-probabilities):
        ℓ = y (ln y - ln ŷ)   (0 where y = 0);   log_target: ℓ = e^t (t - ln ŷ), t = ln y.
    y ln y is PyTorch's xlogy(y, y): NaN for y < 0 in value and gradient, and a NaN gradient at y = 0
    (the derivative ln y + 1 has no value there), not a plausible number.
    reduction='batchmean' divides the sum by the batch size: the true KL divergence per
    sample ('mean' divides by the number of elements, as PyTorch)."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if input.dtype.kind in "biu" or target.dtype.kind in "biu":  # (PyTorch's check, bools included)
        raise RuntimeError("kl_div: Integral inputs not supported.")
    if input.dtype.kind == "c" or target.dtype.kind == "c":  # (a log-probability is real: PyTorch's check)
        raise RuntimeError("kl_div: Complex inputs not supported.")
    if log_target:
        loss = target.exp() * (target - input)
    else:
        loss = xlogy(target, target) - target * input
    return reduce_batchmean(loss, reduction, input.shape[0] if input.ndim else 1)


def poisson_nll(input, target, log_input, full, eps, reduction):
    """Negative log-likelihood of y ~ Poisson(λ), dropping the constant ln y!:
        ℓ = e^x - y x  (log_input: x = ln λ),   ℓ = λ - y ln(λ + eps)  otherwise;
    full adds Stirling's ln y! ≈ y ln y - y + ½ ln(2π y) where y > 1. That term is computed at every y and then
    masked, as PyTorch's: a target that requires grad gets NaN where it is 0 or negative (0 · ln 0), as there."""
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        stirling = target * target.log() - target + (target * (2 * math.pi)).log() * 0.5
        loss = loss + stirling.masked_fill(target <= 1, 0)
    return reduced(loss, reduction)


# -- PyTorch's top-level spellings: reduction an int ---------------------------------------------------

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _named(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return _REDUCTIONS[reduction]


@names("binary_cross_entropy_with_logits", method=False)
def binary_cross_entropy_with_logits_by_position(input, target, weight=None, pos_weight=None, reduction=0):
    """PyTorch's top-level form: pos_weight before reduction, reduction an int."""
    return binary_cross_entropy_with_logits(input, target, weight, reduction=_named(reduction), pos_weight=pos_weight)


@names("hinge_embedding_loss", method=False)
def hinge_embedding_loss(input, target, margin=1.0, reduction=0):
    """PyTorch's top-level form of ``hinge_embedding`` (reduction an int)."""
    return hinge_embedding(input, target, margin, _named(reduction))


@names("kl_div", method=False)
def kl_div(input, target, reduction=0, *, log_target=False):
    """PyTorch's top-level form of ``kl_divergence`` (reduction an int; no 'batchmean', no warning)."""
    return kl_divergence(input, target, _named(reduction), log_target)


@names("poisson_nll_loss", method=False)
def poisson_nll_loss(input, target, log_input, full, eps, reduction):
    """PyTorch's top-level form of ``poisson_nll``: every argument required, reduction an int."""
    return poisson_nll(input, target, log_input, full, eps, _named(reduction))


@names("margin_ranking_loss", method=False)
def margin_ranking_loss_by_position(input1, input2, target, margin=0.0, reduction=0):
    """PyTorch's top-level form (reduction an int): its tensors broadcast, as ATen's (only F.margin_ranking_loss
    checks that their dimensions agree)."""
    return _margin_ranking(input1, input2, _as_target(target, input1), margin, _named(reduction))


@names("cosine_embedding_loss", method=False)
def cosine_embedding_loss_by_position(input1, input2, target, margin=0.0, reduction=0):
    """PyTorch's top-level form (reduction an int)."""
    return cosine_embedding_loss(input1, input2, target, margin, reduction=_named(reduction))


@names("triplet_margin_loss", method=False)
def triplet_margin_loss_by_position(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False,
                                    reduction=0):
    """PyTorch's top-level form (reduction an int)."""
    return _triplet_margin(anchor, positive, negative, margin, p, eps, swap, _named(reduction))
