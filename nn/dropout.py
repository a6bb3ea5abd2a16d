"""Dropout, AlphaDropout, FeatureAlphaDropout (activations) and DropConnect (weights): regularisers active in
training only."""

from autograd import _lazy
from autograd.ops.dropout import check_dropout_probability

from . import functional as F
from .module import Module


class _DropoutNd(Module):
    """What every dropout layer shares (p, inplace, and training-only application of its ``function``), as
    PyTorch's base of that name. Each layer below derives from it, not from Dropout: PyTorch's Dropout2d or
    AlphaDropout is no Dropout, so MC-dropout code that re-enables ``isinstance(m, nn.Dropout)`` at test time
    leaves them off, and ``isinstance(m, _DropoutNd)`` finds them all."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        check_dropout_probability(p)
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return type(self).function(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Inverted dropout (Srivastava et al., 2014): in training each activation is zeroed
    with probability p and the survivors are scaled by 1/(1-p), so the expected output
    equals the input; in eval it is the identity."""

    function = staticmethod(F.dropout)


class Dropout1d(_DropoutNd):
    """Channel dropout for (N, C, L) inputs: each channel of each sample is zeroed whole."""

    function = staticmethod(F.dropout1d)


class Dropout2d(_DropoutNd):
    """Channel dropout for (N, C, H, W) inputs: each feature map is zeroed whole."""

    function = staticmethod(F.dropout2d)


class Dropout3d(_DropoutNd):
    """Channel dropout for (N, C, D, H, W) inputs: each feature volume is zeroed whole."""

    function = staticmethod(F.dropout3d)


class AlphaDropout(_DropoutNd):
    """Dropout for SELU networks: dropped units take SELU's negative saturation value and
    the output is rescaled so that zero mean and unit variance are kept (see
    ``F.alpha_dropout``); in eval it is the identity."""

    function = staticmethod(F.alpha_dropout)


class FeatureAlphaDropout(_DropoutNd):
    """Alpha dropout of whole channels of (N, C, *) inputs (see ``F.feature_alpha_dropout``); in eval the
    identity."""

    function = staticmethod(F.feature_alpha_dropout)


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


# nn.Dropout(x) asks a mode or a subclass as F.dropout(x) does, and a trace records F.dropout
_lazy.dispatch_layer_functions(globals())
