"""Loss modules: each holds its options and calls its function in ``nn/losses.py``."""

from . import losses
from .module import Module


class _Loss(Module):
    function = None
    options = ()

    def __init__(self, reduction="mean", **options):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        for name, value in options.items():
            setattr(self, name, value)

    def forward(self, *inputs):
        options = {name: getattr(self, name) for name in self.options}
        return type(self).function(*inputs, reduction=self.reduction, **options)

    def extra_repr(self):
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.options if
                         getattr(self, name) is not None and not hasattr(getattr(self, name), "shape"))


class MSELoss(_Loss):
    function = losses.mse_loss


class L1Loss(_Loss):
    function = losses.l1_loss


class HuberLoss(_Loss):
    function, options = losses.huber_loss, ("delta",)

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction, delta=delta)


class BCELoss(_Loss):
    function, options = losses.binary_cross_entropy, ("weight",)

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction, weight=weight)


class BCEWithLogitsLoss(_Loss):
    function, options = losses.binary_cross_entropy_with_logits, ("weight", "pos_weight")

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction, weight=weight, pos_weight=pos_weight)


class CrossEntropyLoss(_Loss):
    function, options = losses.cross_entropy, ("weight", "ignore_index", "label_smoothing")

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)


class NLLLoss(_Loss):
    function, options = losses.nll_loss, ("weight", "ignore_index")

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction, weight=weight, ignore_index=ignore_index)


class HingeLoss(_Loss):
    """The lecture's max(0, 1 - y f(x)) for labels in {-1, +1}."""

    function, options = losses.hinge_loss, ("margin",)

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction, margin=margin)


class MultiMarginLoss(_Loss):
    function, options = losses.multi_margin_loss, ("p", "margin", "weight")

    def __init__(self, p=1, margin=1.0, weight=None, reduction="mean"):
        super().__init__(reduction, p=p, margin=margin, weight=weight)


class TripletMarginLoss(_Loss):
    function, options = losses.triplet_margin_loss, ("margin", "p", "eps", "swap")

    def __init__(self, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
        super().__init__(reduction, margin=margin, p=p, eps=eps, swap=swap)


class CosineEmbeddingLoss(_Loss):
    function, options = losses.cosine_embedding_loss, ("margin",)

    def __init__(self, margin=0.0, reduction="mean"):
        super().__init__(reduction, margin=margin)


class MarginRankingLoss(_Loss):
    function, options = losses.margin_ranking_loss, ("margin",)

    def __init__(self, margin=0.0, reduction="mean"):
        super().__init__(reduction, margin=margin)


class ContrastiveLoss(_Loss):
    """Siamese contrastive loss (Hadsell, Chopra & LeCun, 2006); see nn.functional.contrastive_loss."""

    function, options = losses.contrastive_loss, ("margin",)

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction, margin=margin)
