"""LogNormal(loc, scale): e^X for X ~ N(μ, σ²), on (0, ∞).

    log p(x) = log N(ln x; μ, σ) - ln x,   F(x) = Φ((ln x - μ)/σ),   mean = e^(μ + σ²/2),
    var = (e^(σ²) - 1) e^(2μ + σ²),   mode = e^(μ - σ²),   entropy = H(N(μ, σ)) + μ
    rsample: x = e^(μ + σ ε)
"""

from . import constraints
from .distribution import Distribution, broadcast_all
from .normal import Normal


class LogNormal(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        self.base_dist = Normal(self.loc, self.scale, validate_args=False)
        super().__init__(self.loc.shape, validate_args=validate_args)

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

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).exp()

    def log_prob(self, value):
        value = self._value(value, self.loc)
        logarithm = value.log()
        return self.base_dist.log_prob(logarithm) - logarithm

    def cdf(self, value):
        value = self._value(value, self.loc)
        return self.base_dist.cdf(value.log())

    def icdf(self, value):
        return self.base_dist.icdf(value).exp()

    def entropy(self):
        return self.base_dist.entropy() + self.loc
