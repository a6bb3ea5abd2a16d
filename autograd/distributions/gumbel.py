"""Gumbel(loc, scale): the law of the maximum of many draws, F(x) = exp(-e^(-(x - μ)/β)).

    log p(x) = -(z + e^(-z)) - ln β  with z = (x - μ)/β,   mean = μ + βγ (γ Euler's constant),
    var = π²β²/6,   entropy = ln β + 1 + γ
    rsample: x = μ - β ln(-ln u) with u ~ U(0, 1), the inverse CDF
"""

import math

from .. import factories
from ..backend import xp
from . import constraints
from .distribution import Distribution, broadcast_all

EULER_GAMMA = 0.57721566490153286061


class Gumbel(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.loc + self.scale * EULER_GAMMA

    @property
    def mode(self):
        return self.loc

    @property
    def stddev(self):
        return (math.pi / math.sqrt(6)) * self.scale

    @property
    def variance(self):
        return self.stddev.pow(2)

    def rsample(self, sample_shape=()):
        finfo = xp.finfo(self.loc.dtype)  # u inside (0, 1): both logarithms finite
        u = factories.empty(*self._extended_shape(sample_shape), dtype=self.loc.dtype)
        u = u.uniform_(float(finfo.tiny), 1 - float(finfo.eps))
        return self.icdf(u)

    def log_prob(self, value):
        value = self._value(value, self.loc)
        z = (value - self.loc) / self.scale
        return -(z + (-z).exp()) - self.scale.log()

    def cdf(self, value):
        value = self._value(value, self.loc)
        return (-(-(value - self.loc) / self.scale).exp()).exp()

    def icdf(self, value):
        return self.loc - self.scale * (-value.log()).log()

    def entropy(self):
        return self.scale.log() + (1 + EULER_GAMMA)
