"""ContinuousBernoulli(probs or logits, lims=(0.499, 0.501)): the law on [0, 1] with density
C(λ) λ^x (1 - λ)^(1-x) (Loaiza-Ganem and Cunningham, 2019), the Bernoulli likelihood made a proper
density, with

    C(λ) = 2 artanh(1 - 2λ) / (1 - 2λ),   so  ln C = ln|ln(1 - λ) - ln λ| - ln|1 - 2λ|
    mean = λ/(2λ - 1) + 1/(ln(1 - λ) - ln λ),   var = λ(λ - 1)/(1 - 2λ)² + 1/(ln(1 - λ) - ln λ)²
    F(x) = (λ^x (1 - λ)^(1-x) + λ - 1)/(2λ - 1),   F⁻¹(u) = ln(1 - λ + u(2λ - 1)) - ln(1 - λ)) / ln(λ/(1 - λ))

Each of these is 0/0 at λ = ½ (the uniform law), so inside ``lims`` they are replaced by their
Taylor expansions in (λ - ½), as PyTorch's are; rsample is F⁻¹ at a uniform draw.
"""

import math

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .distribution import broadcast_all, clamp_probs, lazy_property, probs_or_logits, probs_to_logits
from .exp_family import ExponentialFamily


class ContinuousBernoulli(ExponentialFamily):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    @property
    def _natural_params(self):
        return (self.logits,)

    def _log_normalizer(self, x):
        """ln C as a function of the natural parameter l: ln|(eˡ - 1)/l|, and its Taylor form near 0"""
        unstable = (x > self._lims[0] - 0.5) & (x <= self._lims[1] - 0.5)
        cut = where(unstable, (self._lims[0] - 0.5) * factories.ones_like(x), x)
        exact = cut.expm1().abs().log() - cut.abs().log()
        taylor = 0.5 * x + x.pow(2) / 24.0 - x.pow(4) / 2880.0
        return where(unstable, taylor, exact)

    _mean_carrier_measure = 0

    def __init__(self, probs=None, logits=None, lims=(0.499, 0.501), validate_args=None):
        probs_or_logits(probs, logits)
        self._lims = lims
        if probs is not None:
            (probs,) = broadcast_all(probs)
            # checked before the clamp below hides a bad value (PyTorch checks only when
            # validate_args is passed explicitly; here, as for every other law, by default)
            self.probs = probs
            self._param = probs
            super().__init__(probs.shape, validate_args=validate_args)
            self.probs = clamp_probs(probs)
        else:
            (self.logits,) = broadcast_all(logits)
            self._param = self.logits
            super().__init__(self.logits.shape, validate_args=validate_args)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return clamp_probs(self.logits.sigmoid())

    @property
    def param_shape(self):
        return self._param.shape

    def _outside_unstable_region(self):
        return (self.probs <= self._lims[0]) | (self.probs > self._lims[1])

    def _cut_probs(self):
        """λ, moved off the unstable band (where the Taylor branch is used instead) so that the
        exact branch, computed everywhere, stays finite and its gradient too."""
        return where(self._outside_unstable_region(), self.probs, self._lims[0] * factories.ones_like(self.probs))

    def _cont_bern_log_norm(self):
        """ln C(λ); near ½: ln 2 + (4/3) t + (104/45) t², t = (λ - ½)²"""
        cut = self._cut_probs()
        below = where(cut <= 0.5, cut, 0.0 * cut)
        above = where(cut >= 0.5, cut, 0.0 * cut + 1.0)
        exact = ((-cut).log1p() - cut.log()).abs().log() - where(cut <= 0.5, (-2.0 * below).log1p(),
                                                                  (2.0 * above - 1.0).log())
        t = (self.probs - 0.5).pow(2)
        taylor = math.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * t) * t
        return where(self._outside_unstable_region(), exact, taylor)

    @property
    def mean(self):
        cut = self._cut_probs()
        exact = cut / (2.0 * cut - 1.0) + 1.0 / ((-cut).log1p() - cut.log())
        x = self.probs - 0.5
        taylor = 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * x.pow(2)) * x
        return where(self._outside_unstable_region(), exact, taylor)

    @property
    def variance(self):
        cut = self._cut_probs()
        exact = cut * (cut - 1.0) / (1.0 - 2.0 * cut).pow(2) + 1.0 / ((-cut).log1p() - cut.log()).pow(2)
        t = (self.probs - 0.5).pow(2)
        taylor = 1.0 / 12.0 - (1.0 / 15.0 - 128.0 / 945.0 * t) * t
        return where(self._outside_unstable_region(), exact, taylor)

    def rsample(self, sample_shape=()):
        u = factories.rand(self._extended_shape(sample_shape), dtype=self.probs.dtype)
        return self.icdf(u)

    def log_prob(self, value):
        """x l - softplus(l) + ln C: the Bernoulli log-likelihood of x, normalised"""
        value = self._value(value, self.probs)
        return value * self.logits - self.logits.softplus() + self._cont_bern_log_norm()

    def cdf(self, value):
        value = self._value(value, self.probs)
        cut = self._cut_probs()
        exact = (cut.pow(value) * (1.0 - cut).pow(1.0 - value) + cut - 1.0) / (2.0 * cut - 1.0)
        inside = where(self._outside_unstable_region(), exact, value)
        return where(value <= 0.0, 0.0 * value, where(value >= 1.0, 0.0 * value + 1.0, inside))

    def icdf(self, value):
        cut = self._cut_probs()
        exact = (((-cut) + value * (2.0 * cut - 1.0)).log1p() - (-cut).log1p()) / (cut.log() - (-cut).log1p())
        return where(self._outside_unstable_region(), exact, value)

    def entropy(self):
        log_probs0, log_probs1 = (-self.probs).log1p(), self.probs.log()
        return self.mean * (log_probs0 - log_probs1) - self._cont_bern_log_norm() - log_probs0
