"""Pareto(scale, alpha): the power law on [x_m, ∞), density α x_m^α / x^(α+1); x = x_m e^E with
E ~ Exponential(α), a TransformedDistribution (ExpTransform, then a scale by x_m).

    mean = α x_m/(α - 1) (∞ for α ≤ 1),   var = x_m² α / ((α - 1)² (α - 2)) (∞ for α ≤ 2),
    entropy = ln(x_m/α) + 1 + 1/α
"""

from . import constraints
from .distribution import broadcast_all
from .exponential import Exponential
from .transformed_distribution import TransformedDistribution
from .transforms import AffineTransform, ExpTransform


class Pareto(TransformedDistribution):
    arg_constraints = {"alpha": constraints.positive, "scale": constraints.positive}

    def __init__(self, scale, alpha, validate_args=None):
        self.scale, self.alpha = broadcast_all(scale, alpha)
        base = Exponential(self.alpha, validate_args=validate_args)
        super().__init__(base, [ExpTransform(), AffineTransform(loc=0, scale=self.scale)],
                         validate_args=validate_args)

    @property
    def mean(self):
        a = self.alpha.clamp(min=1)  # (a/(a - 1) is ∞ at a = 1, as the mean for α ≤ 1)
        return a * self.scale / (a - 1)

    @property
    def mode(self):
        return self.scale

    @property
    def variance(self):
        a = self.alpha.clamp(min=2)
        return self.scale.pow(2) * a / ((a - 1).pow(2) * (a - 2))

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.greater_than_eq(self.scale)

    def entropy(self):
        return (self.scale / self.alpha).log() + (1 + self.alpha.reciprocal())


