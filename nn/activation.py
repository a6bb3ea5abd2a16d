"""Activation layers: y = φ(x), elementwise (softmax and its kin: along a dim).

Each layer holds its options and calls its function in ``nn.functional``,
where the formula and the derivative at the kinks are documented.
"""

import warnings

import autograd
from autograd import _lazy
from autograd.graph import program_stacklevel

from . import functional as F
from .module import Module
from .parameter import Parameter


def _inplace_text(inplace):
    return "inplace=True" if inplace else ""


class _Elementwise(Module):
    """φ applied elementwise, with an optional ``inplace`` (PyTorch's layers that take one)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        return _inplace_text(self.inplace)


class ReLU(_Elementwise):
    """φ(x) = max(0, x)"""

    def forward(self, input):
        return F.relu(input, self.inplace)


class SiLU(_Elementwise):
    """φ(x) = x σ(x)"""

    def forward(self, input):
        return F.silu(input, self.inplace)


class Mish(_Elementwise):
    """φ(x) = x tanh(softplus(x))"""

    def forward(self, input):
        return F.mish(input, self.inplace)


class SELU(_Elementwise):
    """φ(x) = λ elu(x, α), λ ≈ 1.0507, α ≈ 1.6733"""

    def forward(self, input):
        return F.selu(input, self.inplace)


class Hardsigmoid(_Elementwise):
    """φ(x) = relu6(x + 3) / 6"""

    def forward(self, input):
        return F.hardsigmoid(input, self.inplace)

    def extra_repr(self):
        return ""  # PyTorch prints no options for this one, inplace or not


class Hardswish(_Elementwise):
    """φ(x) = x relu6(x + 3) / 6"""

    def forward(self, input):
        return F.hardswish(input, self.inplace)

    def extra_repr(self):
        return ""  # PyTorch prints no options for this one, inplace or not


class LeakyReLU(Module):
    """φ(x) = x for x > 0, a·x otherwise"""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class RReLU(Module):
    """φ(x) = x for x > 0, a·x otherwise, a ~ U(lower, upper) per element in training, (lower + upper) / 2 in
    eval (randomized leaky ReLU, Xu et al., 2015)"""

    def __init__(self, lower=1.0 / 8, upper=1.0 / 3, inplace=False):
        super().__init__()
        self.lower, self.upper, self.inplace = lower, upper, inplace

    def forward(self, input):
        return F.rrelu(input, self.lower, self.upper, self.training, self.inplace)

    def extra_repr(self):
        return f"lower={self.lower}, upper={self.upper}" + (", inplace=True" if self.inplace else "")


class _ExponentialLinear(Module):
    """What ELU and CELU share (alpha, inplace); neither is the other, as in PyTorch, where ``isinstance(m,
    nn.ELU)`` is False for a CELU."""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return type(self).function(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class ELU(_ExponentialLinear):
    """φ(x) = x for x > 0, α (e^x - 1) otherwise"""

    function = staticmethod(F.elu)


class CELU(_ExponentialLinear):
    """φ(x) = max(0, x) + min(0, α (e^(x/α) - 1))"""

    function = staticmethod(F.celu)


class Hardtanh(Module):
    """φ(x) = clamp(x, min_val, max_val); ``min_value``/``max_value`` are PyTorch's deprecated names
    for them (a FutureWarning, as there)."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, min_value=None, max_value=None):
        super().__init__()
        if min_value is not None:
            warnings.warn("keyword argument `min_value` is deprecated and renamed to `min_val`", FutureWarning,
                          stacklevel=program_stacklevel())
            min_val = min_value
        if max_value is not None:
            warnings.warn("keyword argument `max_value` is deprecated and renamed to `max_val`", FutureWarning,
                          stacklevel=program_stacklevel())
            max_val = max_value
        if max_val <= min_val:
            raise AssertionError(f"max_val ({max_val}) must be greater than min_val ({min_val})")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """φ(x) = min(max(0, x), 6): a Hardtanh from 0 to 6, as PyTorch's (min_val, max_val, isinstance)."""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def forward(self, input):
        return F.relu6(input, self.inplace)

    def extra_repr(self):
        return _inplace_text(self.inplace)


class Threshold(Module):
    """φ(x) = x where x > threshold, else value"""

    def __init__(self, threshold, value, inplace=False):
        super().__init__()
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def forward(self, input):
        return F.threshold(input, self.threshold, self.value, self.inplace)

    def extra_repr(self):
        return f"threshold={self.threshold}, value={self.value}" + (", inplace=True" if self.inplace else "")


class Softplus(Module):
    """φ(x) = ln(1 + e^(βx)) / β, linear where βx > threshold"""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class PReLU(Module):
    """φ(x) = x for x > 0, a·x otherwise, with a learned slope a (He et al., 2015): one
    shared slope, or one per channel (num_parameters = channels), each starting at ``init``."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(autograd.empty(num_parameters, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        with autograd.no_grad():
            self.weight.fill_(self.init)

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class _Stateless(Module):
    function = None

    def forward(self, input):
        return type(self).function(input)


class Sigmoid(_Stateless):
    """φ(x) = 1 / (1 + e^-x), the lecture's φ"""

    function = staticmethod(autograd.sigmoid)  # (torch.sigmoid, as PyTorch's layer calls: what a mode is given)


class Tanh(_Stateless):
    """φ(x) = tanh x"""

    function = staticmethod(autograd.tanh)  # (torch.tanh, as PyTorch's layer calls)


class LogSigmoid(_Stateless):
    """φ(x) = ln σ(x)"""

    function = F.logsigmoid


class Softsign(_Stateless):
    """φ(x) = x / (1 + |x|)"""

    function = F.softsign


class Tanhshrink(_Stateless):
    """φ(x) = x - tanh x"""

    function = F.tanhshrink


class _Shrink(Module):
    """What Hardshrink and Softshrink share (the threshold λ); neither is the other, as in PyTorch."""

    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def forward(self, input):
        return type(self).function(input, self.lambd)

    def extra_repr(self):
        return f"{self.lambd}"


class Hardshrink(_Shrink):
    """φ(x) = x where |x| > λ, else 0"""

    function = staticmethod(F.hardshrink)


class Softshrink(_Shrink):
    """φ(x) = x - λ above λ, x + λ below -λ, else 0"""

    function = staticmethod(F.softshrink)


class GELU(Module):
    """φ(x) = x Φ(x) (exact, with erf) or its tanh approximation"""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class GLU(Module):
    """φ(a, b) = a σ(b), a and b the halves of the input along ``dim``"""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class _AlongDim(Module):
    """What Softmax, LogSoftmax and Softmin share (``dim``, the function along it); none is another, as in
    PyTorch: code that strips a final ``isinstance(m, nn.Softmax)`` to read logits leaves a LogSoftmax."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return type(self).function(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """φ(x)_i = e^x_i / Σ_j e^x_j along ``dim`` (dim=None: PyTorch's implicit choice, with a warning)"""

    function = staticmethod(F.softmax)


class LogSoftmax(_AlongDim):
    """φ(x)_i = x_i - ln Σ_j e^x_j along ``dim``"""

    function = staticmethod(F.log_softmax)


class Softmin(_AlongDim):
    """φ(x) = softmax(-x) along ``dim``"""

    function = staticmethod(F.softmin)


class Softmax2d(Module):
    """Softmax over the channels of an (N, C, H, W) or (C, H, W) input"""

    def forward(self, input):
        if input.ndim not in (3, 4):
            raise ValueError(f"Softmax2d: expected input of 3 or 4 dimensions, got {input.ndim}")
        return input.softmax(-3)


# nn.ELU(x) asks a mode or a subclass as F.elu(x) does, and a trace records F.elu (the layers hold their function)
_lazy.dispatch_layer_functions(globals())
