"""StudentT(df, loc=0, scale=1): the t distribution of ν degrees of freedom, shifted and scaled.

    log p(x) = -(ν+1)/2 ln(1 + y²/ν) - ln σ - ½ ln ν - ½ ln π - ln Γ(ν/2) + ln Γ((ν+1)/2),  y = (x - μ)/σ
    mean = μ (ν > 1),   var = σ² ν/(ν - 2) (ν > 2; ∞ for 1 < ν ≤ 2),
    entropy = ln σ + (ν+1)/2 (ψ((ν+1)/2) - ψ(ν/2)) + ½ ln ν + ln B(ν/2, ½)
    rsample: x = μ + σ X / √(Z/ν) with X ~ N(0, 1), Z ~ χ²(ν): differentiable in ν through Z
"""

import math

from .. import factories
from ..ops.elementwise import where
from . import constraints
from .chi2 import Chi2
from .distribution import Distribution, broadcast_all


class StudentT(Distribution):
    arg_constraints = {"df": constraints.positive, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, df, loc=0.0, scale=1.0, validate_args=None):
        self.df, self.loc, self.scale = broadcast_all(df, loc, scale)
        self._chi2 = Chi2(self.df, validate_args=False)
        super().__init__(self.df.shape, validate_args=validate_args)

    @property
    def mean(self):
        return where(self.df > 1, self.loc, float("nan"))

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        # where it is infinite or undefined the variance takes no gradient (PyTorch writes those entries
        # over): the formula sees a stand-in ν there, not ν = 2, whose 0/0 would reach the gradient as NaN
        finite_df = self.df > 2
        df = where(finite_df, self.df, 3.0)
        finite = self.scale.pow(2) * df / (df - 2)
        return where(finite_df, finite, where(self.df > 1, float("inf"), float("nan")))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        normal = factories.randn(shape, dtype=self.df.dtype)
        chi2 = self._chi2.rsample(sample_shape)
        return self.loc + self.scale * normal * (chi2 / self.df).rsqrt()

    def log_prob(self, value):
        value = self._value(value, self.df)
        y = (value - self.loc) / self.scale
        normaliser = (self.scale.log() + 0.5 * self.df.log() + 0.5 * math.log(math.pi)
                      + (0.5 * self.df).lgamma() - (0.5 * (self.df + 1.0)).lgamma())
        return -0.5 * (self.df + 1.0) * (y.pow(2) / self.df).log1p() - normaliser

    def entropy(self):
        half = 0.5 * self.df
        log_beta = half.lgamma() + math.lgamma(0.5) - (half + 0.5).lgamma()
        return (self.scale.log() + (half + 0.5) * ((half + 0.5).digamma() - half.digamma())
                + 0.5 * self.df.log() + log_beta)
