"""LogNormal(loc, scale): e^X for X ~ N(μ, σ²), on (0, ∞).

    log p(x) = log N(ln x; μ, σ) - ln x,   F(x) = Φ((ln x - μ)/σ),   mean = e^(μ + σ²/2),
    var = (e^(σ²) - 1) e^(2μ + σ²),   mode = e^(μ - σ²),   entropy = H(N(μ, σ)) + μ
    rsample: x = e^(μ + σ ε)

A TransformedDistribution of Normal(μ, σ) by ExpTransform, as PyTorch's: isinstance, ``transforms``,
rsample / log_prob / cdf / icdf through the transform (its cdf checks the logarithm against the base's
support, so F(0) = 0), KL through the base; the closed forms above for its moments and entropy.
"""

from . import constraints
from .normal import Normal
from .scalar_transforms import ExpTransform
from .transformed_distribution import TransformedDistribution


class LogNormal(TransformedDistribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        base_dist = Normal(loc, scale, validate_args=validate_args)
        super().__init__(base_dist, ExpTransform(), validate_args=validate_args)

    @property
    def loc(self):
        return self.base_dist.loc

    @property
    def scale(self):
        return self.base_dist.scale

    @property
    def mean(self):
        return (self.loc + self.scale.pow(2) / 2).exp()

    @property
    def mode(self):
        return (self.loc - self.scale.pow(2)).exp()

    @property
    def variance(self):
        square = self.scale.pow(2)
        return square.expm1() * (2 * self.loc + square).exp()

    def entropy(self):
        return self.base_dist.entropy() + self.loc
