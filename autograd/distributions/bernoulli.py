"""Bernoulli(probs or logits): 1 with probability p, else 0.

    log p(x) = x log p + (1 - x) log(1 - p) = x l - softplus(l)   (l = logits; softplus = log(1 + e^l))
    entropy = -p log p - (1 - p) log(1 - p)
"""

from .. import factories
from ..ops import sampling
from ..tensor import Tensor
from .distribution import Distribution, broadcast_all, probs_or_logits, probs_to_logits


class Bernoulli(Distribution):
    def __init__(self, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
            super().__init__(self.probs.shape, validate_args=validate_args)
            self._check("probs", self.probs, (self.probs >= 0) & (self.probs <= 1), "Interval(lower_bound=0.0, "
                        "upper_bound=1.0)")
            self.logits = probs_to_logits(self.probs, is_binary=True)
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
        return value * self.logits - self.logits.softplus()

    def entropy(self):
        return self.logits.softplus() - self.probs * self.logits

    def __repr__(self):
        return f"Bernoulli(probs: {self.probs.shape})"
