"""HalfNormal(scale): |X| for X ~ N(0, σ²), on [0, ∞).

    log p(x) = log N(x; 0, σ) + ln 2 (x ≥ 0),   F(x) = erf(x / σ√2),   mean = σ √(2/π),
    var = σ² (1 - 2/π),   entropy = ½ ln(πσ²/2) + ½
    rsample: x = σ |ε| with ε ~ N(0, 1)
"""

import math

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .distribution import Distribution, broadcast_all
from .normal import Normal


class HalfNormal(Distribution):
    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, scale, validate_args=None):
        (self.scale,) = broadcast_all(scale)
        self.base_dist = Normal(factories.zeros_like(self.scale), self.scale, validate_args=False)
        super().__init__(self.scale.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.scale * math.sqrt(2 / math.pi)

    @property
    def mode(self):
        return factories.zeros_like(self.scale)

    @property
    def variance(self):
        return self.scale.pow(2) * (1 - 2 / math.pi)

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
