"""Kumaraswamy(concentration1, concentration0): a Beta-like law on (0, 1) with a closed-form CDF,
F(x) = 1 - (1 - x^a)^b, so x = (1 - (1 - u)^(1/b))^(1/a) for u ~ U(0, 1): a TransformedDistribution
of the uniform by PowerTransform(1/b), AffineTransform(1, -1), PowerTransform(1/a).

    E[xⁿ] = b B(1 + n/a, b),   mode = ((a - 1)/(ab - 1))^(1/a) (a, b ≥ 1; NaN otherwise),
    entropy = (1 - 1/b) + (1 - 1/a) H_b - ln(ab),   H_b = ψ(b + 1) + γ (the b-th harmonic number)
"""

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .distribution import broadcast_all
from .gumbel import EULER_GAMMA
from .transformed_distribution import TransformedDistribution
from .transforms import AffineTransform, PowerTransform
from .uniform import Uniform


def _moment(a, b, n):
    """E[xⁿ] = b Γ(1 + n/a) Γ(b) / Γ(1 + n/a + b)"""
    shifted = 1 + n / a
    return b * (shifted.lgamma() + b.lgamma() - (shifted + b).lgamma()).exp()


class Kumaraswamy(TransformedDistribution):
    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, concentration1, concentration0, validate_args=None):
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        base = Uniform(factories.zeros_like(self.concentration0), factories.ones_like(self.concentration0),
                       validate_args=validate_args)
        transforms = [PowerTransform(exponent=self.concentration0.reciprocal()), AffineTransform(loc=1.0, scale=-1.0),
                      PowerTransform(exponent=self.concentration1.reciprocal())]
        super().__init__(base, transforms, validate_args=validate_args)

    @property
    def mean(self):
        return _moment(self.concentration1, self.concentration0, 1)

    @property
    def mode(self):
        a, b = self.concentration1, self.concentration0
        log_mode = b.reciprocal() * (-b).log1p() - (-b * a).log1p()
        return where((b < 1) | (a < 1), float("nan"), log_mode).exp()

    @property
    def variance(self):
        return _moment(self.concentration1, self.concentration0, 2) - self.mean.pow(2)

    def entropy(self):
        a, b = self.concentration1, self.concentration0
        harmonic = (b + 1).digamma() + EULER_GAMMA
        return (1 - b.reciprocal()) + (1 - a.reciprocal()) * harmonic - a.log() - b.log()
