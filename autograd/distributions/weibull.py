"""Weibull(scale, concentration): x = λ E^(1/k) with E ~ Exponential(1), a TransformedDistribution
(PowerTransform(1/k), then a scale by λ); density (k/λ)(x/λ)^(k-1) e^(-(x/λ)^k).

    mean = λ Γ(1 + 1/k),   var = λ² (Γ(1 + 2/k) - Γ(1 + 1/k)²),   mode = λ ((k - 1)/k)^(1/k),
    entropy = γ (1 - 1/k) + ln(λ/k) + 1
"""

from .. import factories
from . import constraints
from .distribution import broadcast_all
from .exponential import Exponential
from .gumbel import EULER_GAMMA
from .transformed_distribution import TransformedDistribution
from .transforms import AffineTransform, PowerTransform


class Weibull(TransformedDistribution):
    arg_constraints = {"scale": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive

    def __init__(self, scale, concentration, validate_args=None):
        self.scale, self.concentration = broadcast_all(scale, concentration)
        self.concentration_reciprocal = self.concentration.reciprocal()
        base = Exponential(factories.ones_like(self.scale), validate_args=validate_args)
        transforms = [PowerTransform(exponent=self.concentration_reciprocal), AffineTransform(loc=0, scale=self.scale)]
        super().__init__(base, transforms, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        # 1/k computed anew from the expanded k, as PyTorch's: the expanded law's graph is its own, so a
        # backward through it leaves the original's intact
        new = self._get_checked_instance(Weibull, _instance)
        new.concentration = self.concentration.expand(batch_shape)
        new.concentration_reciprocal = new.concentration.reciprocal()
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        return self.scale * (1 + self.concentration_reciprocal).lgamma().exp()

    @property
    def mode(self):
        return self.scale * ((self.concentration - 1) / self.concentration) ** self.concentration.reciprocal()

    @property
    def variance(self):
        return self.scale.pow(2) * ((1 + 2 * self.concentration_reciprocal).lgamma().exp()
                                    - (2 * (1 + self.concentration_reciprocal).lgamma()).exp())

    def entropy(self):
        return (EULER_GAMMA * (1 - self.concentration_reciprocal)
                + (self.scale * self.concentration_reciprocal).log() + 1)
