"""Dropout (activations) and DropConnect (weights): regularisers active in training only."""

from . import functional as F
from .module import Module


class Dropout(Module):
    """Inverted dropout (Srivastava et al., 2014): in training each activation is zeroed
    with probability p and the survivors are scaled by 1/(1-p), so the expected output
    equals the input; in eval it is the identity."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class DropConnect(Module):
    """DropConnect (Wan et al., 2013) around a Linear layer: in training each *weight*
    is dropped with probability p (survivors scaled by 1/(1-p)) for every forward
    pass, instead of dropping activations; in eval the layer runs unchanged."""

    def __init__(self, linear, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"DropConnect probability has to be between 0 and 1, but got {p}")
        self.linear, self.p = linear, p

    def forward(self, input):
        weight = F.dropconnect(self.linear.weight, self.p, self.training)
        return F.linear(input, weight, self.linear.bias)

    def extra_repr(self):
        return f"p={self.p}"
