"""Binomial(total_count=1, probs or logits): successes in n trials of probability p.

    log p(k) = ln n! - ln k! - ln (n-k)! + k l - n softplus(l),   l = logit p
    (softplus(l) = max(l, 0) + ln(1 + e^(-|l|)), written so neither branch overflows),
    mean = np,   var = np(1 - p),   mode = ⌊(n + 1)p⌋ (at most n)
    entropy = -Σ_k p(k) ln p(k) over k = 0..n (one n for the whole batch, as PyTorch's)
"""

from .. import ranges
from ..ops import sampling
from . import constraints
from .distribution import BinaryParameters, Distribution, broadcast_all, probs_or_logits


def clamp_by_zero(x):
    """max(x, 0), with the gradient ½ at 0 (PyTorch's choice for this log_prob)."""
    return (x.clamp(min=0) + x - x.clamp(max=0)) / 2


class Binomial(BinaryParameters, Distribution):
    arg_constraints = {"total_count": constraints.nonnegative_integer, "probs": constraints.unit_interval,
                       "logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        if probs is not None:
            self.total_count, self.probs = broadcast_all(total_count, probs)
            self.total_count = self.total_count.to(self.probs.dtype)
        else:  # (the other one is computed on first use, as PyTorch's)
            self.total_count, self.logits = broadcast_all(total_count, logits)
            self.total_count = self.total_count.to(self.logits.dtype)
        self._param = self.probs if probs is not None else self.logits
        super().__init__(self._param.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    @property
    def mean(self):
        return self.total_count * self.probs

    @property
    def mode(self):
        return ((self.total_count + 1) * self.probs).floor().clamp(max=self.total_count)

    @property
    def variance(self):
        return self.total_count * self.probs * (1 - self.probs)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return sampling.binomial(self.total_count.detach().expand(shape), self.probs.detach().expand(shape))

    def log_prob(self, value):
        value = self._value(value, self.logits)
        n = self.total_count
        normaliser = n * clamp_by_zero(self.logits) + n * (-self.logits.abs()).exp().log1p() - (n + 1).lgamma()
        return value * self.logits - (value + 1).lgamma() - (n - value + 1).lgamma() - normaliser

    def entropy(self):
        total = int(self.total_count.max().item())
        if not self.total_count.min().item() == total:
            raise NotImplementedError("Inhomogeneous total count not supported by `entropy`.")
        log_prob = self.log_prob(self.enumerate_support(False))
        return -(log_prob.exp() * log_prob).sum(0)

    def enumerate_support(self, expand=True):
        total = int(self.total_count.max().item())
        if not self.total_count.min().item() == total:
            raise NotImplementedError("Inhomogeneous total count not supported by `enumerate_support`.")
        values = ranges.arange(1 + total, dtype=self._param.dtype).reshape(-1, *(1,) * len(self.batch_shape))
        return values.expand(-1, *self.batch_shape) if expand else values
