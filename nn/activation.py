"""Activation layers: y = φ(x), elementwise (softmax: along a dim)."""

from . import functional as F
from .module import Module


class ReLU(Module):
    """φ(x) = max(0, x)"""

    def forward(self, input):
        return input.relu()


class LeakyReLU(Module):
    """φ(x) = x for x > 0, a·x otherwise"""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """φ(x) = 1 / (1 + e^-x), the lecture's φ"""

    def forward(self, input):
        return input.sigmoid()


class Tanh(Module):
    """φ(x) = tanh x"""

    def forward(self, input):
        return input.tanh()


class GELU(Module):
    """φ(x) = x Φ(x) (exact, with erf) or its tanh approximation"""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, input):
        return input.softmax(self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, input):
        return input.log_softmax(self.dim)
