"""Beta(concentration1, concentration0): a probability, with density ∝ x^(α-1) (1 - x)^(β-1).

It is the first coordinate of Dirichlet((α, β)), which supplies its log_prob, entropy and rsample.

    mean = α/(α + β),   var = αβ / ((α + β)² (α + β + 1)),   mode = (α - 1)/(α + β - 2)
"""

from ..ops.joins import stack
from . import constraints
from .dirichlet import Dirichlet
from .distribution import broadcast_all
from .exp_family import ExponentialFamily


class Beta(ExponentialFamily):
    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    @property
    def _natural_params(self):
        return self.concentration1, self.concentration0

    def _log_normalizer(self, x, y):
        return x.lgamma() + y.lgamma() - (x + y).lgamma()

    @property
    def _mean_carrier_measure(self):
        """E[ln h(x)] with h = 1/(x(1 - x)) (t(x) = (ln x, ln(1 - x))): -E[ln x] - E[ln(1 - x)]"""
        total = (self.concentration1 + self.concentration0).digamma()
        return -(self.concentration1.digamma() - total) - (self.concentration0.digamma() - total)

    def __init__(self, concentration1, concentration0, validate_args=None):
        concentration1, concentration0 = broadcast_all(concentration1, concentration0)
        self._dirichlet = Dirichlet(stack([concentration1, concentration0], -1), validate_args=validate_args)
        super().__init__(self._dirichlet.batch_shape, validate_args=validate_args)

    @property
    def concentration1(self):
        return self._dirichlet.concentration[..., 0]

    @property
    def concentration0(self):
        return self._dirichlet.concentration[..., 1]

    @property
    def mean(self):
        return self.concentration1 / (self.concentration1 + self.concentration0)

    @property
    def mode(self):
        return self._dirichlet.mode[..., 0]

    @property
    def variance(self):
        total = self.concentration1 + self.concentration0
        return self.concentration1 * self.concentration0 / (total.pow(2) * (total + 1))

    def rsample(self, sample_shape=()):
        return self._dirichlet.rsample(sample_shape)[..., 0]

    def log_prob(self, value):
        value = self._value(value, self._dirichlet.concentration)
        return self._dirichlet.log_prob(stack([value, 1.0 - value], -1))

    def entropy(self):
        return self._dirichlet.entropy()
