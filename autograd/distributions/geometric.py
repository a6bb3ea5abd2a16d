"""Geometric(probs or logits): the number of failures before the first success of trials that
succeed with probability p.

    log p(k) = k ln(1 - p) + ln p,   mean = 1/p - 1,   var = (1/p - 1)/p,
    entropy = (softplus(l) - p l) / p   (the binary cross-entropy of p with itself, per success)
    sample: ⌊ln u / ln(1 - p)⌋ with u ~ U(0, 1), the inverse CDF
"""

from .. import factories
from ..backend import xp
from ..ops.elementwise import where
from . import constraints
from .distribution import BinaryParameters, Distribution, broadcast_all, probs_or_logits


class Geometric(BinaryParameters, Distribution):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
        else:  # (the other one is computed on first use, as PyTorch's)
            (self.logits,) = broadcast_all(logits)
        self._param = self.probs if probs is not None else self.logits
        super().__init__(self._param.shape, validate_args=validate_args)
        if probs is not None:
            # p = 0 never succeeds: PyTorch refuses it too, naming the unit interval
            self._check("probs", self.probs, self.probs > 0, "Interval(lower_bound=0.0, upper_bound=1.0)")

    @property
    def mean(self):
        return 1.0 / self.probs - 1.0

    @property
    def mode(self):
        return factories.zeros_like(self.probs)

    @property
    def variance(self):
        return (1.0 / self.probs - 1.0) / self.probs

    def sample(self, sample_shape=()):
        tiny = float(xp.finfo(self.probs.dtype).tiny)
        u = factories.empty(self._extended_shape(sample_shape), dtype=self.probs.dtype).uniform_(tiny, 1)
        return (u.log() / (-self.probs.detach()).log1p()).floor()

    def log_prob(self, value):
        value = self._value(value, self.probs)
        probs = where((self.probs == 1) & (value == 0), 0.0, self.probs)  # 0 · ln 0 is 0: p(0) = 1 at p = 1
        return value * (-probs).log1p() + self.probs.log()

    def entropy(self):
        return (self.logits.softplus() - self.logits * self.probs) / self.probs
