"""InverseGamma(concentration, rate): 1/X for X ~ Gamma(α, β), a TransformedDistribution
(PowerTransform(-1)); density β^α x^(-α-1) e^(-β/x) / Γ(α). Its draws are differentiable in α
through the gamma draw.

    mean = β/(α - 1) (∞ for α ≤ 1),   mode = β/(α + 1),   var = β²/((α - 1)²(α - 2)) (∞ for α ≤ 2),
    entropy = α + ln β + ln Γ(α) - (1 + α) ψ(α)
"""

from ..ops.elementwise import where
from . import constraints
from .gamma import Gamma
from .transformed_distribution import TransformedDistribution
from .transforms import PowerTransform


class InverseGamma(TransformedDistribution):
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, concentration, rate, validate_args=None):
        base = Gamma(concentration, rate, validate_args=validate_args)
        minus_one = -base.rate.new_ones(())  # (in the rate's dtype)
        super().__init__(base, PowerTransform(minus_one), validate_args=validate_args)

    @property
    def concentration(self):
        return self.base_dist.concentration

    @property
    def rate(self):
        return self.base_dist.rate

    @property
    def mean(self):
        return where(self.concentration > 1, self.rate / (self.concentration - 1), float("inf"))

    @property
    def mode(self):
        return self.rate / (self.concentration + 1)

    @property
    def variance(self):
        finite = self.rate.pow(2) / ((self.concentration - 1).pow(2) * (self.concentration - 2))
        return where(self.concentration > 2, finite, float("inf"))

    def entropy(self):
        a = self.concentration
        return a + self.rate.log() + a.lgamma() - (1 + a) * a.digamma()
