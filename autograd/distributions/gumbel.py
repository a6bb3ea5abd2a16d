"""Gumbel(loc, scale): the law of the maximum of many draws, F(x) = exp(-e^(-(x - μ)/β)).

    log p(x) = -(z + e^(-z)) - ln β  with z = (x - μ)/β,   mean = μ + βγ (γ Euler's constant),
    var = π²β²/6,   entropy = ln β + 1 + γ
    rsample: x = μ - β ln(-ln u) with u ~ U(tiny, 1 - eps), the inverse CDF

A TransformedDistribution of that uniform by ln, -1·, ln and μ - β·, as PyTorch's: isinstance, ``base_dist``
and ``transforms``, rsample / cdf / icdf through the transforms; log_prob written out (PyTorch's, for
precision) and the closed forms above for its moments and entropy.
"""

import math

from .. import factories
from ..backend import xp
from . import constraints
from .distribution import broadcast_all
from .scalar_transforms import AffineTransform, ExpTransform
from .transformed_distribution import TransformedDistribution
from .uniform import Uniform

EULER_GAMMA = 0.57721566490153286061


class Gumbel(TransformedDistribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        finfo = xp.finfo(self.loc.dtype)  # u inside (0, 1): both logarithms finite
        tiny, below_one = float(finfo.tiny), 1 - float(finfo.eps)
        if isinstance(loc, (int, float)) and isinstance(scale, (int, float)):
            base_dist = Uniform(tiny, below_one, validate_args=validate_args)
        else:
            base_dist = Uniform(factories.full_like(self.loc, tiny), factories.full_like(self.loc, below_one),
                                validate_args=validate_args)
        transforms = [ExpTransform().inv, AffineTransform(loc=0, scale=-factories.ones_like(self.scale)),
                      ExpTransform().inv, AffineTransform(loc=loc, scale=-self.scale)]
        super().__init__(base_dist, transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Gumbel, _instance)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        y = (self.loc - value) / self.scale
        return (y - y.exp()) - self.scale.log()

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

    def entropy(self):
        return self.scale.log() + (1 + EULER_GAMMA)
