"""Loss modules: each holds its options and calls its function in ``nn/losses.py``."""


from autograd import _lazy
from autograd.ops.losses import legacy_reduction

from . import losses
from .module import Module


class _Loss(Module):
    function = None
    options = ()
    reductions = ("mean", "sum", "none")
    buffer_options = ("weight", "pos_weight")  # kept as buffers, in state_dict, as PyTorch
    repr_options = ()  # the options the repr shows: none for PyTorch's losses (``MSELoss()``)

    def __init__(self, reduction="mean", size_average=None, reduce=None, **options):
        super().__init__()
        reduction = legacy_reduction(size_average, reduce, reduction)
        # PyTorch's deprecated 'elementwise_mean' is left to the call, which reads it as 'mean' (or refuses it) as
        # PyTorch's function does
        if reduction not in self.reductions and reduction != "elementwise_mean":
            raise ValueError(f"{reduction} is not a valid value for reduction "
                             f"(expected one of {', '.join(map(repr, self.reductions))})")
        self.reduction = reduction
        for name, value in options.items():
            if name in self.buffer_options:
                self.register_buffer(name, value)
            else:
                setattr(self, name, value)

    def forward(self, input, target):
        return self._loss(input, target)

    def _loss(self, *inputs):
        """The functional form on ``inputs`` with this module's reduction and options. A loss whose
        inputs PyTorch names otherwise (``anchor, positive, negative``) has its own ``forward`` with
        those names, so that a call by keyword (``criterion(logits, target=y)``) binds as PyTorch's."""
        options = {name: getattr(self, name) for name in self.options}
        return type(self).function(*inputs, reduction=self.reduction, **options)

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.repr_options)


class _WeightedLoss(_Loss):
    """PyTorch's base of the losses that take a class ``weight`` (kept as a buffer), with its
    signature: what user-written losses (a focal loss, say) subclass, and what ``isinstance`` finds
    BCELoss, CrossEntropyLoss, NLLLoss and the margin losses with a weight to be. ``options`` are a
    subclass's own (``ignore_index``, ``margin``)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", **options):
        super().__init__(reduction, size_average, reduce, weight=weight, **options)


class MSELoss(_Loss):
    function = losses.mse_loss

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce)


class L1Loss(_Loss):
    function = losses.l1_loss

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce)


class HuberLoss(_Loss):
    function, options = losses.huber_loss, ("delta",)

    def __init__(self, reduction="mean", delta=1.0):
        if not isinstance(delta, (float, int)):  # (a complex or tensor delta: PyTorch's check, at construction)
            raise TypeError(f"delta must be a float or int, got: {type(delta)}")
        super().__init__(reduction, delta=delta)


class SmoothL1Loss(_Loss):
    function, options = losses.smooth_l1_loss, ("beta",)

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(reduction, size_average, reduce, beta=beta)


class BCELoss(_WeightedLoss):
    function, options = losses.binary_cross_entropy, ("weight",)

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)


class BCEWithLogitsLoss(_Loss):
    function, options = losses.binary_cross_entropy_with_logits, ("weight", "pos_weight")

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(reduction, size_average, reduce, weight=weight, pos_weight=pos_weight)


class CrossEntropyLoss(_WeightedLoss):
    function, options = losses.cross_entropy, ("weight", "ignore_index", "label_smoothing")

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction, ignore_index=ignore_index,
                         label_smoothing=label_smoothing)


class NLLLoss(_WeightedLoss):
    function, options = losses.nll_loss, ("weight", "ignore_index")

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction, ignore_index=ignore_index)


class NLLLoss2d(NLLLoss):
    """NLLLoss under its older name (for (N, C, H, W) inputs, which NLLLoss takes)."""


class KLDivLoss(_Loss):
    """KL(target ‖ input) with ``input`` log-probabilities; use reduction='batchmean' for the
    divergence per sample."""

    function, options = losses.kl_div, ("log_target",)
    reductions = ("mean", "sum", "none", "batchmean")

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(reduction, size_average, reduce, log_target=log_target)


class PoissonNLLLoss(_Loss):
    function, options = losses.poisson_nll_loss, ("log_input", "full", "eps")

    def __init__(self, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce, log_input=log_input, full=full, eps=eps)

    def forward(self, log_input, target):
        return self._loss(log_input, target)


class GaussianNLLLoss(_Loss):
    """forward(input, target, var): the Gaussian negative log-likelihood of target."""

    function, options = losses.gaussian_nll_loss, ("full", "eps")

    def __init__(self, *, full=False, eps=1e-6, reduction="mean"):
        super().__init__(reduction, full=full, eps=eps)

    def forward(self, input, target, var):
        return self._loss(input, target, var)


class HingeLoss(_Loss):
    """The lecture's max(0, 1 - y f(x)) for labels in {-1, +1}."""

    function, options = losses.hinge_loss, ("margin",)
    repr_options = ("margin",)

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction, margin=margin)


class HingeEmbeddingLoss(_Loss):
    """x for y = 1, max(0, margin − x) for y = −1: x a distance between a pair, y whether it is similar."""

    function, options = losses.hinge_embedding_loss, ("margin",)

    def __init__(self, margin=1.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce, margin=margin)


class SoftMarginLoss(_Loss):
    function = losses.soft_margin_loss

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce)


class MultiLabelSoftMarginLoss(_WeightedLoss):
    function, options = losses.multilabel_soft_margin_loss, ("weight",)

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)


class MultiLabelMarginLoss(_Loss):
    function = losses.multilabel_margin_loss

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce)


class MultiMarginLoss(_WeightedLoss):
    function, options = losses.multi_margin_loss, ("p", "margin", "weight")

    def __init__(self, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction, p=p, margin=margin)


class TripletMarginLoss(_Loss):
    function, options = losses.triplet_margin_loss, ("margin", "p", "eps", "swap")

    def __init__(self, margin=1.0, p=2.0, eps=1e-6, swap=False, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce, margin=margin, p=p, eps=eps, swap=swap)

    def forward(self, anchor, positive, negative):
        return self._loss(anchor, positive, negative)


class TripletMarginWithDistanceLoss(_Loss):
    function, options = losses.triplet_margin_with_distance_loss, ("distance_function", "margin", "swap")

    def __init__(self, *, distance_function=None, margin=1.0, swap=False, reduction="mean"):
        from .distance import PairwiseDistance  # (nn.distance loads on first use)

        # the default distance is a PairwiseDistance child, as PyTorch's (it shows in the repr)
        super().__init__(reduction, distance_function=distance_function if distance_function is not None else
                         PairwiseDistance(), margin=margin, swap=swap)
        if margin <= 0:
            raise ValueError(f"TripletMarginWithDistanceLoss: expected margin to be greater than 0, got {margin} "
                             "instead")

    def forward(self, anchor, positive, negative):
        return self._loss(anchor, positive, negative)


class CosineEmbeddingLoss(_Loss):
    function, options = losses.cosine_embedding_loss, ("margin",)

    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce, margin=margin)

    def forward(self, input1, input2, target):
        return self._loss(input1, input2, target)


class MarginRankingLoss(_Loss):
    function, options = losses.margin_ranking_loss, ("margin",)

    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(reduction, size_average, reduce, margin=margin)

    def forward(self, input1, input2, target):
        return self._loss(input1, input2, target)


class ContrastiveLoss(_Loss):
    """Siamese contrastive loss (Hadsell, Chopra & LeCun, 2006); see nn.functional.contrastive_loss."""

    function, options = losses.contrastive_loss, ("margin",)
    repr_options = ("margin",)

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction, margin=margin)

    def forward(self, input1, input2, target):
        return self._loss(input1, input2, target)


# a loss layer asks a subclass of Tensor among its inputs as its functional form (F.mse_loss) does: each calls the
# function its class holds
_lazy.dispatch_layer_functions(globals())
