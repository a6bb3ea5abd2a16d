"""HalfCauchy(scale): |X| for X ~ Cauchy(0, γ), on [0, ∞); no mean, no variance.

    log p(x) = log Cauchy(x; 0, γ) + ln 2 (x ≥ 0),   F(x) = 2 arctan(x/γ) / π,   entropy = ln 2πγ
    rsample: x = γ |c| with c a standard Cauchy draw
"""

from .. import factories
from ..tensor import Tensor
from .cauchy import Cauchy
from .folded import Folded


class HalfCauchy(Folded):
    base_law = Cauchy

    @property
    def mean(self):
        return factories.full(self._extended_shape(), float("inf"), dtype=self.scale.dtype)

    @property
    def variance(self):
        return factories.full(self._extended_shape(), float("inf"), dtype=self.scale.dtype)

    def log_prob(self, value):
        # PyTorch's HalfCauchy (not HalfNormal) takes the value in the scale's dtype (a number is still refused)
        return super().log_prob(value.to(self.scale.dtype) if isinstance(value, Tensor) else value)
