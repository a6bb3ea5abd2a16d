"""FisherSnedecor(df1, df2): the F distribution, the ratio (X1/d1)/(X2/d2) of two independent χ²
variables over their degrees of freedom; drawn as G1/G2 with G_i ~ Gamma(d_i/2, d_i), so the
draws are differentiable in d1 and d2 through the gamma draws.

    log p(x) = ln Γ((d1+d2)/2) - ln Γ(d1/2) - ln Γ(d2/2) + (d1/2) ln(d1/d2) + (d1/2 - 1) ln x
               - ((d1+d2)/2) ln(1 + d1 x/d2)
    mean = d2/(d2 - 2) (d2 > 2),   var = 2 d2² (d1 + d2 - 2) / (d1 (d2 - 2)² (d2 - 4)) (d2 > 4),
    mode = (d1 - 2)/d1 · d2/(d2 + 2) (d1 > 2); NaN where undefined, as PyTorch's. As PyTorch's, the
    mean and variance read d2 as NaN where they are undefined: no gradient reaches d2 there (where a
    formula evaluated at d2 = 2 or 4 would send it 0/0), and d1's gradient of the variance is NaN there
"""

from ..ops.elementwise import where
from . import constraints
from .distribution import Distribution, broadcast_all
from .gamma import Gamma, clamp_tiny

NAN = float("nan")


class FisherSnedecor(Distribution):
    arg_constraints = {"df1": constraints.positive, "df2": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, df1, df2, validate_args=None):
        self.df1, self.df2 = broadcast_all(df1, df2)
        self._gamma1 = Gamma(self.df1 * 0.5, self.df1, validate_args=False)
        self._gamma2 = Gamma(self.df2 * 0.5, self.df2, validate_args=False)
        super().__init__(self.df1.shape, validate_args=validate_args)

    @property
    def mean(self):
        df2 = where(self.df2 > 2, self.df2, NAN)
        return df2 / (df2 - 2)

    @property
    def mode(self):
        return where(self.df1 > 2, (self.df1 - 2) / self.df1 * self.df2 / (self.df2 + 2), NAN)

    @property
    def variance(self):
        d1, d2 = self.df1, where(self.df2 > 4, self.df2, NAN)
        return 2 * d2.pow(2) * (d1 + d2 - 2) / (d1 * (d2 - 2).pow(2) * (d2 - 4))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        x1 = self._gamma1.rsample(sample_shape).reshape(*shape)
        x2 = clamp_tiny(self._gamma2.rsample(sample_shape).reshape(*shape))
        return clamp_tiny(x1 / x2)

    def log_prob(self, value):
        value = self._value(value, self.df1)
        half1, half2, ratio = self.df1 * 0.5, self.df2 * 0.5, self.df1 / self.df2
        return ((half1 + half2).lgamma() - half1.lgamma() - half2.lgamma() + half1 * ratio.log()
                + (half1 - 1) * value.log() - (half1 + half2) * (ratio * value).log1p())
