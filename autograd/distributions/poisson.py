"""Poisson(rate): counts of events at rate λ.

    log p(k) = k ln λ - λ - ln k!,   mean = var = λ,   mode = ⌊λ⌋
"""

from ..ops import sampling
from ..ops.pointwise_pairs import xlogy
from . import constraints
from .distribution import broadcast_all
from .exp_family import ExponentialFamily


class Poisson(ExponentialFamily):
    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer

    @property
    def _natural_params(self):
        return (self.rate.log(),)

    def _log_normalizer(self, x):
        return x.exp()

    def __init__(self, rate, validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.rate

    @property
    def mode(self):
        return self.rate.floor()

    @property
    def variance(self):
        return self.rate

    def sample(self, sample_shape=()):
        return sampling.poisson(self.rate.detach().expand(self._extended_shape(sample_shape)))

    def log_prob(self, value):
        value = self._value(value, self.rate)
        return xlogy(value, self.rate) - self.rate - (value + 1).lgamma()
