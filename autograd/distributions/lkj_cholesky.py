"""LKJCholesky(dim, concentration=1.0): the LKJ law on D×D correlation matrices (Lewandowski,
Kurowicka and Joe, 2009), over their lower Cholesky factors L, density ∝ Π_{i≥2} L_ii^(D - i + 2(η - 1)).

    log p(L) = Σ_{i=2..D} (2(η - 1) + D - i) ln L_ii - [½(D-1) ln π + ln Γ_{D-1}(α - ½) - (D-1) ln Γ(α)],
    α = η + (D - 1)/2 (Γ_p the multivariate gamma function)
    sample (the onion method, as PyTorch's): row i of L is √y_i times a uniform direction in its
    first i coordinates, y_i ~ Beta(i/2, α - i/2), and its diagonal entry completes it to unit length
"""

import math

from .. import factories, ranges
from ..backend import xp
from ..ops.gamma import mvlgamma
from ..ops.joins import cat
from . import constraints
from .beta import Beta
from .distribution import Distribution, broadcast_all


class LKJCholesky(Distribution):
    arg_constraints = {"concentration": constraints.positive}
    support = constraints.corr_cholesky

    def __init__(self, dim, concentration=1.0, validate_args=None):
        if dim < 2:
            raise ValueError(f"Expected dim to be an integer greater than or equal to 2. Found dim={dim}.")
        self.dim = dim
        (self.concentration,) = broadcast_all(concentration)
        marginal = self.concentration + 0.5 * (dim - 2)
        offset = ranges.arange(dim - 1, dtype=self.concentration.dtype)
        offset = cat([factories.zeros(1, dtype=offset.dtype), offset])
        self._beta = Beta(offset + 0.5, marginal.unsqueeze(-1) - 0.5 * offset)
        super().__init__(self.concentration.shape, (dim, dim), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._beta = self._beta.expand(tuple(batch_shape) + (self.dim,))
        return new

    def sample(self, sample_shape=()):
        y = self._beta.sample(sample_shape).unsqueeze(-1)
        normal = factories.randn(self._extended_shape(sample_shape), dtype=y.dtype).tril(-1)
        norms = normal.pow(2).sum(-1, keepdim=True).sqrt()
        first_row = ranges.arange(self.dim).reshape(-1, 1) == 0  # row 0 is (1, 0, ...): no direction
        direction = (normal / norms.clamp(min=float(xp.finfo(y.dtype).tiny))).masked_fill(first_row, 0.0)
        w = y.sqrt() * direction
        diagonal = (1 - w.pow(2).sum(-1)).clamp(min=float(xp.finfo(w.dtype).tiny)).sqrt()
        return w + diagonal.diag_embed()

    def log_prob(self, value):
        value = self._value(value, self.concentration)
        diagonal = value.diagonal(dim1=-1, dim2=-2)[..., 1:]
        order = ranges.arange(2, self.dim + 1, dtype=self.concentration.dtype)
        order = 2 * (self.concentration - 1).unsqueeze(-1) + self.dim - order
        unnormalised = (order * diagonal.log()).sum(-1)
        dm1 = self.dim - 1
        alpha = self.concentration + 0.5 * dm1
        normaliser = 0.5 * dm1 * math.log(math.pi) + mvlgamma(alpha - 0.5, dm1) - alpha.lgamma() * dm1
        return unnormalised - normaliser
