"""``nn.CTCLoss``, the layer of the Connectionist Temporal Classification loss; the loss, its recursions
and its exact gradient live in ``autograd/ops/ctc.py`` (``F.ctc_loss``, ``autograd.ctc_loss``)."""

from autograd.ops.ctc import ctc_loss

from .loss import _Loss


class CTCLoss(_Loss):
    """The CTC loss as a layer: CTCLoss(blank=0, reduction='mean', zero_infinity=False)."""

    def __init__(self, blank=0, reduction="mean", zero_infinity=False):
        super().__init__(reduction)
        self.blank, self.zero_infinity = blank, zero_infinity

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction,
                        self.zero_infinity)
