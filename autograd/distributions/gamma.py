"""Gamma(concentration, rate): shape α, rate β, on (0, ∞).

    log p(x) = α ln β + (α - 1) ln x - βx - ln Γ(α),   F(x) = P(α, βx) (the regularised incomplete
    gamma function),   mean = α/β,   var = α/β²,   entropy = α - ln β + ln Γ(α) + (1 - α) ψ(α)
    rsample: x = G / β with G ~ Gamma(α, 1) drawn by ``_standard_gamma``, whose gradient in α is
    the implicit reparameterisation dG/dα = -(∂P/∂α)/p(G) (see ops/standard_gamma.py).
"""

from .. import factories
from ..backend import xp
from ..ops.incomplete_gamma import igamma
from ..ops.pointwise_pairs import xlogy
from ..ops.standard_gamma import standard_gamma
from . import constraints
from .distribution import broadcast_all
from .exp_family import ExponentialFamily


def clamp_tiny(draws):
    """Draws below the smallest normal number lifted to it (a gamma draw of small shape can
    underflow to 0, where ln x is -inf), without changing their gradient."""
    tiny = float(xp.finfo(draws.dtype).tiny)
    floor = draws.detach()
    return draws + (floor.clamp(min=tiny) - floor)


class Gamma(ExponentialFamily):
    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    @property
    def _natural_params(self):
        return self.concentration - 1, -self.rate

    def _log_normalizer(self, x, y):
        return (x + 1).lgamma() + (x + 1) * (-y.reciprocal()).log()

    _mean_carrier_measure = 0

    def __init__(self, concentration, rate, validate_args=None):
        self.concentration, self.rate = broadcast_all(concentration, rate)
        super().__init__(self.concentration.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.concentration / self.rate

    @property
    def mode(self):
        return ((self.concentration - 1) / self.rate).clamp(min=0)

    @property
    def variance(self):
        return self.concentration / self.rate.pow(2)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return clamp_tiny(standard_gamma(self.concentration.expand(shape)) / self.rate.expand(shape))

    def log_prob(self, value):
        # PyTorch's Gamma (and Chi2) makes the value a tensor of the rate's dtype first: a number is taken, and a
        # float64 value under float32 parameters gives a float32 density
        value = self._value(factories.as_tensor(value, dtype=self.rate.dtype), self.rate)
        return (xlogy(self.concentration, self.rate) + xlogy(self.concentration - 1, value) - self.rate * value
                - self.concentration.lgamma())

    def cdf(self, value):
        value = self._value(value, self.rate)
        return igamma(self.concentration, self.rate * value)

    def entropy(self):
        return (self.concentration - self.rate.log() + self.concentration.lgamma()
                + (1.0 - self.concentration) * self.concentration.digamma())
