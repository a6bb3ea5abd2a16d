"""Dirichlet(concentration): a distribution over the probability simplex (the last dim, k entries).

    log p(x) = Σ_i (α_i - 1) ln x_i + ln Γ(α₀) - Σ_i ln Γ(α_i),   α₀ = Σ_i α_i
    mean = α/α₀,   var = α(α₀ - α) / (α₀² (α₀ + 1)),
    entropy = Σ_i ln Γ(α_i) - ln Γ(α₀) - (k - α₀) ψ(α₀) - Σ_i (α_i - 1) ψ(α_i)
    rsample: x = G / Σ_j G_j with G_i ~ Gamma(α_i, 1) independent, differentiable in α by PyTorch's rule,
    which holds each coordinate's Beta marginal CDF fixed (ops/dirichlet_draw.py).
    The coordinates stay inside (0, 1), as PyTorch's: in float32 a coordinate of a small
    concentration would round to exactly 0 or 1, where log_prob is infinite.
"""

from .. import ranges
from ..ops.dirichlet_draw import dirichlet_draw
from ..ops.elementwise import where
from ..ops.pointwise_pairs import xlogy
from ..tensor import Tensor, tensor_from
from . import constraints
from .exp_family import ExponentialFamily


class Dirichlet(ExponentialFamily):
    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    @property
    def _natural_params(self):
        return (self.concentration,)

    def _log_normalizer(self, x):
        return x.lgamma().sum(-1) - x.sum(-1).lgamma()

    @property
    def _mean_carrier_measure(self):
        """E[ln h(x)] with h = 1/Π x_i (t(x) = ln x): -Σ E[ln x_i] = -Σ (ψ(α_i) - ψ(α₀))"""
        return -(self.concentration.digamma() - self.concentration.sum(-1, keepdim=True).digamma()).sum(-1)

    def __init__(self, concentration, validate_args=None):
        concentration = concentration if isinstance(concentration, Tensor) else tensor_from(concentration)
        if concentration.ndim < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = concentration
        super().__init__(concentration.shape[:-1], concentration.shape[-1:], validate_args=validate_args)

    @property
    def mean(self):
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self):
        excess = (self.concentration - 1).clamp(min=0.0)
        mode = excess / excess.sum(-1, keepdim=True)
        corner = (self.concentration < 1).all(-1, keepdim=True)  # every α < 1: the mass piles at a vertex
        vertex = (self.concentration.argmax(-1, keepdim=True) == ranges.arange(self.concentration.shape[-1]))
        return where(corner, vertex.to(mode.dtype), mode)

    @property
    def variance(self):
        total = self.concentration.sum(-1, keepdim=True)
        return self.concentration * (total - self.concentration) / (total.pow(2) * (total + 1))

    def rsample(self, sample_shape=()):
        # (the gammas are drawn in float64, as PyTorch's: a float32 gamma of concentration 0.01 underflows
        # with probability 0.4, and two underflowed coordinates would make a spurious mode at 1/2)
        return dirichlet_draw(self.concentration.expand(self._extended_shape(sample_shape)))

    def log_prob(self, value):
        value = self._value(value, self.concentration)
        return (xlogy(self.concentration - 1.0, value).sum(-1) + self.concentration.sum(-1).lgamma()
                - self.concentration.lgamma().sum(-1))

    def entropy(self):
        k = self.concentration.shape[-1]
        total = self.concentration.sum(-1)
        return (self.concentration.lgamma().sum(-1) - total.lgamma() - (k - total) * total.digamma()
                - ((self.concentration - 1.0) * self.concentration.digamma()).sum(-1))
