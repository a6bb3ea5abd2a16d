"""Laplace(loc, scale): the double exponential, density e^(-|x - μ|/b) / 2b.

    F(x) = ½ - ½ sign(x - μ) (e^(-|x - μ|/b) - 1),   entropy = 1 + ln 2b,   var = 2b²
    rsample: u ~ U(-1, 1), x = μ - b sign(u) ln(1 - |u|)   (the inverse CDF at (u + 1)/2)
"""

import math

from .. import factories
from ..backend import xp
from . import constraints
from .distribution import Distribution, broadcast_all


class Laplace(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

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
        return 2 * self.scale.pow(2)

    @property
    def stddev(self):
        return math.sqrt(2) * self.scale

    def rsample(self, sample_shape=()):
        eps = float(xp.finfo(self.loc.dtype).eps)  # keeps 1 - |u| above 0
        u = factories.empty(self._extended_shape(sample_shape), dtype=self.loc.dtype).uniform_(eps - 1, 1)
        return self.loc - self.scale * u.sign() * (-u.abs()).log1p()

    def log_prob(self, value):
        value = self._value(value, self.loc)
        return -(2 * self.scale).log() - (value - self.loc).abs() / self.scale

    def cdf(self, value):
        value = self._value(value, self.loc)
        return 0.5 - 0.5 * (value - self.loc).sign() * (-(value - self.loc).abs() / self.scale).expm1()

    def icdf(self, value):
        term = value - 0.5
        return self.loc - self.scale * term.sign() * (-2 * term.abs()).log1p()

    def entropy(self):
        return 1 + (2 * self.scale).log()
