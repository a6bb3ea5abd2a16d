"""HalfCauchy(scale): |X| for X ~ Cauchy(0, γ), on [0, ∞); no mean, no variance.

    log p(x) = log Cauchy(x; 0, γ) + ln 2 (x ≥ 0),   F(x) = 2 arctan(x/γ) / π,   entropy = ln 2πγ
    rsample: x = γ |c| with c a standard Cauchy draw
"""

import math

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .cauchy import Cauchy
from .distribution import Distribution, broadcast_all


class HalfCauchy(Distribution):
    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, scale, validate_args=None):
        (self.scale,) = broadcast_all(scale)
        self.base_dist = Cauchy(factories.zeros_like(self.scale), self.scale, validate_args=False)
        super().__init__(self.scale.shape, validate_args=validate_args)

    @property
    def mean(self):
        return factories.full(self._extended_shape(), float("inf"), dtype=self.scale.dtype)

    @property
    def mode(self):
        return factories.zeros_like(self.scale)

    @property
    def variance(self):
        return factories.full(self._extended_shape(), float("inf"), dtype=self.scale.dtype)

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).abs()

    def log_prob(self, value):
        value = self._value(value, self.scale)
        return where(value >= 0, self.base_dist.log_prob(value) + math.log(2), float("-inf"))

    def cdf(self, value):
        value = self._value(value, self.scale)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, prob):
        return self.base_dist.icdf((prob + 1) / 2)

    def entropy(self):
        return self.base_dist.entropy() - math.log(2)
