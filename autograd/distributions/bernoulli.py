"""Bernoulli(probs or logits): 1 with probability p, else 0.

    log p(x) = x log p + (1 - x) log(1 - p) = x l - log(1 + e^l)   (l = logits, computed stably)
    entropy = -p log p - (1 - p) log(1 - p)
"""

from .. import factories
from ..backend import xp
from ..ops import sampling
from ..tensor import Tensor
from .distribution import Distribution, broadcast_all


def _log_one_plus_exp(logits):
    """log(1 + e^l) without overflow: max(l, 0) + log(1 + e^-|l|)."""
    return logits.clamp(min=0) + (-logits.abs()).exp().log1p()


class Bernoulli(Distribution):
    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
            super().__init__(self.probs.shape, validate_args=validate_args)
            self._check("probs", self.probs, (self.probs >= 0) & (self.probs <= 1), "Interval(lower_bound=0.0, "
                        "upper_bound=1.0)")
            eps = float(xp.finfo(self.probs.dtype).eps)
            clamped = self.probs.clamp(eps, 1 - eps)
            self.logits = clamped.log() - (1 - clamped).log()  # (PyTorch's probs_to_logits)
        else:
            (self.logits,) = broadcast_all(logits)
            super().__init__(self.logits.shape, validate_args=validate_args)
            self.probs = self.logits.sigmoid()

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        return (self.probs >= 0.5).to(self.probs.dtype)

    @property
    def variance(self):
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return sampling.bernoulli(self.probs.detach().expand(shape))

    def log_prob(self, value):
        value = value if isinstance(value, Tensor) else factories.tensor(value, dtype=self.logits.dtype)
        return value * self.logits - _log_one_plus_exp(self.logits)

    def entropy(self):
        return _log_one_plus_exp(self.logits) - self.probs * self.logits

    def __repr__(self):
        return f"Bernoulli(probs: {self.probs.shape})"
