"""Exponential(rate): the waiting time of a Poisson process of intensity λ.

    log p(x) = ln λ - λx (x ≥ 0),   F(x) = 1 - e^(-λx),   entropy = 1 - ln λ,   mean = 1/λ,   var = 1/λ²
    rsample: x = E / λ with E ~ Exp(1), so dx/dλ = -x/λ
"""

from .. import factories
from . import constraints
from .distribution import broadcast_all
from .exp_family import ExponentialFamily


class Exponential(ExponentialFamily):
    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    @property
    def _natural_params(self):
        return (-self.rate,)

    def _log_normalizer(self, x):
        return -(-x).log()

    _mean_carrier_measure = 0

    def __init__(self, rate, validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.rate.reciprocal()

    @property
    def mode(self):
        return factories.zeros_like(self.rate)

    @property
    def stddev(self):
        return self.rate.reciprocal()

    @property
    def variance(self):
        return self.rate.pow(-2)

    def rsample(self, sample_shape=()):
        unit = factories.empty(self._extended_shape(sample_shape), dtype=self.rate.dtype).exponential_()
        return unit / self.rate

    def log_prob(self, value):
        value = self._value(value, self.rate)
        return self.rate.log() - self.rate * value

    def cdf(self, value):
        value = self._value(value, self.rate)
        return 1 - (-self.rate * value).exp()

    def icdf(self, value):
        return -(-value).log1p() / self.rate

    def entropy(self):
        return 1.0 - self.rate.log()
