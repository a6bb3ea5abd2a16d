"""GeneralizedPareto(loc, scale, concentration): the law of exceedances over a high threshold
(Pickands-Balkema-de Haan). With z = (x - μ)/σ and shape ξ,

    log S(x) = -ln(1 + ξz)/ξ (survival; -z at ξ = 0, the exponential),   log p(x) = -ln σ - (1/ξ + 1) ln(1 + ξz)
    F⁻¹(u) = μ + σ/ξ ((1 - u)^(-ξ) - 1)  (μ - σ ln(1 - u) at ξ = 0);  rsample is F⁻¹ at a uniform draw
    mean = μ + σ/(1 - ξ) (ξ < 1),   var = σ²/((1 - ξ)²(1 - 2ξ)) (ξ < ½),   entropy = ln σ + ξ + 1
    support [μ, ∞) for ξ ≥ 0, [μ, μ - σ/ξ] for ξ < 0

ξ within 1e-8 of 0 takes the ξ = 0 forms (PyTorch's test, isclose), computed with ξ replaced by 1
elsewhere so the unused branch stays finite and so do gradients.
"""

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .distribution import Distribution, broadcast_all

NAN = float("nan")


class GeneralizedPareto(Distribution):
    arg_constraints = {"loc": constraints.real, "scale": constraints.positive, "concentration": constraints.real}
    has_rsample = True

    def __init__(self, loc, scale, concentration, validate_args=None):
        self.loc, self.scale, self.concentration = broadcast_all(loc, scale, concentration)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def _near_zero(self):
        return self.concentration.abs() <= 1e-8

    def _safe_concentration(self):
        return where(self._near_zero(), factories.ones_like(self.concentration), self.concentration)

    def rsample(self, sample_shape=()):
        u = factories.rand(self._extended_shape(sample_shape), dtype=self.loc.dtype)
        return self.icdf(u)

    def log_prob(self, value):
        value = self._value(value, self.loc)
        z = (value - self.loc) / self.scale
        xi = self._safe_concentration()
        power = 1 / xi + 1
        nonzero = where(power == 0, power, power * (xi * z).log1p())
        return -self.scale.log() - where(self._near_zero(), z, nonzero)

    def log_survival_function(self, value):
        value = self._value(value, self.loc)
        z = (value - self.loc) / self.scale
        xi = self._safe_concentration()
        return where(self._near_zero(), -z, -(xi * z).log1p() / xi)

    def log_cdf(self, value):
        return (-self.log_survival_function(value).exp()).log1p()

    def cdf(self, value):
        return self.log_cdf(value).exp()

    def icdf(self, value):
        xi = self._safe_concentration()
        log_survival = (-value).log1p()
        return where(self._near_zero(), self.loc - self.scale * log_survival,
                     self.loc + self.scale / xi * (-xi * log_survival).expm1())

    @property
    def mean(self):
        valid = self.concentration < 1
        xi = where(valid, self.concentration, 0.5 + 0 * self.concentration)
        return where(valid, self.loc + self.scale / (1 - xi), NAN)

    @property
    def variance(self):
        valid = self.concentration < 0.5
        xi = where(valid, self.concentration, 0.25 + 0 * self.concentration)
        return where(valid, self.scale.pow(2) / ((1 - xi).pow(2) * (1 - 2 * xi)), NAN)

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        return (self.scale.log() + self.concentration + 1).expand(*self.batch_shape)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        upper = where(self.concentration < 0, self.loc - self.scale / self.concentration, float("inf"))
        return constraints.interval(self.loc, upper)
