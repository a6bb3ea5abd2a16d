"""NegativeBinomial(total_count, probs or logits): the number of successes before the r-th failure
of trials that succeed with probability p (r may be any positive real).

    log p(k) = ln Γ(r + k) - ln Γ(k + 1) - ln Γ(r) + r ln(1 - p) + k ln p
    mean = r p/(1 - p),   var = mean/(1 - p),   mode = ⌊(r - 1) p/(1 - p)⌋ (at least 0)
    sample: a Poisson draw of a Gamma(r, (1 - p)/p) rate (the gamma-Poisson mixture)
"""

from ..ops import sampling
from ..ops.elementwise import where
from . import constraints
from .distribution import BinaryParameters, Distribution, broadcast_all, probs_or_logits
from .gamma import Gamma
from .transforms import log_sigmoid


class NegativeBinomial(BinaryParameters, Distribution):
    arg_constraints = {"total_count": constraints.greater_than_eq(0), "probs": constraints.half_open_interval(0.0, 1.0),
                       "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, total_count, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        if probs is not None:
            self.total_count, self.probs = broadcast_all(total_count, probs)
            self.total_count = self.total_count.to(self.probs.dtype)
        else:
            self.total_count, self.logits = broadcast_all(total_count, logits)
            self.total_count = self.total_count.to(self.logits.dtype)
        self._param = self.probs if probs is not None else self.logits
        super().__init__(self._param.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.total_count * self.logits.exp()

    @property
    def mode(self):
        return ((self.total_count - 1) * self.logits.exp()).floor().clamp(min=0.0)

    @property
    def variance(self):
        return self.mean / (-self.logits).sigmoid()

    def sample(self, sample_shape=()):
        rate = Gamma(self.total_count.detach(), (-self.logits.detach()).exp(), validate_args=False)
        return sampling.poisson(rate.sample(sample_shape))

    def log_prob(self, value):
        value = self._value(value, self._param)
        unnormalised = self.total_count * log_sigmoid(-self.logits) + value * log_sigmoid(self.logits)
        normaliser = -(self.total_count + value).lgamma() + (1.0 + value).lgamma() + self.total_count.lgamma()
        return unnormalised - where(self.total_count + value == 0.0, 0.0, normaliser)  # (r = k = 0: p(0) = 1)
