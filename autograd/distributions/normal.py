"""Normal(loc, scale): the Gaussian N(μ, σ²).

    log p(x) = -(x - μ)² / (2σ²) - ln σ - ½ ln 2π,     entropy = ½ + ½ ln 2π + ln σ
    rsample: x = μ + σ ε with ε ~ N(0, 1), so dx/dμ = 1 and dx/dσ = ε (the reparameterisation trick)
"""

import math

from .. import factories
from . import constraints
from .distribution import broadcast_all
from .exp_family import ExponentialFamily


class Normal(ExponentialFamily):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    @property
    def _natural_params(self):
        return self.loc / self.scale.pow(2), -0.5 * self.scale.pow(2).reciprocal()

    def _log_normalizer(self, x, y):
        return -0.25 * x.pow(2) / y + 0.5 * (-math.pi / y).log()

    _mean_carrier_measure = 0

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return self.scale * self.scale

    @property
    def stddev(self):
        return self.scale

    def rsample(self, sample_shape=()):
        noise = factories.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype)
        return self.loc + noise * self.scale

    def log_prob(self, value):
        value = self._value(value, self.loc)
        return -((value - self.loc) ** 2) / (2 * self.variance) - self.scale.log() - math.log(math.sqrt(2 * math.pi))

    def entropy(self):
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()

    def cdf(self, value):
        value = self._value(value, self.loc)
        # (PyTorch's order: √2 divides the standardised value, in its dtype, not a float32 scale beside a float64 value)
        return 0.5 * (1 + ((value - self.loc) * self.scale.reciprocal() / math.sqrt(2)).erf())

    def icdf(self, value):
        """x = μ + σ √2 erf⁻¹(2p - 1)"""
        return self.loc + self.scale * (2 * value - 1).erfinv() * math.sqrt(2)
