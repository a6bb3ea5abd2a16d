"""A symmetric law about 0 folded onto [0, ∞): |X| for X ~ base(0, scale) (HalfNormal, HalfCauchy).

    log p(x) = log p_base(x) + ln 2 (x ≥ 0; -∞ below),   F(x) = 2 F_base(x) - 1,
    F⁻¹(q) = F_base⁻¹((q + 1) / 2),   entropy = entropy_base - ln 2,   rsample: |base draw|

A TransformedDistribution of the base by AbsTransform, as PyTorch's: isinstance, ``transforms``, draws and
``expand`` through it, KL against another TransformedDistribution of the same transform through the bases;
the closed forms above for the density (|x| is not one-to-one), the cdf and the entropy.
"""

import math

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .scalar_transforms import AbsTransform
from .transformed_distribution import TransformedDistribution


class Folded(TransformedDistribution):
    """The shared half of HalfNormal and HalfCauchy; a subclass names ``base_law`` and its moments."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    base_law = None  # the symmetric law, built as base_law(loc=0, scale)

    def __init__(self, scale, validate_args=None):
        base_dist = self.base_law(0, scale, validate_args=False)
        super().__init__(base_dist, AbsTransform(), validate_args=validate_args)

    @property
    def scale(self):
        return self.base_dist.scale

    @property
    def mode(self):
        return factories.zeros_like(self.scale)

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
