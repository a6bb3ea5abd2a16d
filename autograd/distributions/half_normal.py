"""HalfNormal(scale): |X| for X ~ N(0, σ²), on [0, ∞).

    log p(x) = log N(x; 0, σ) + ln 2 (x ≥ 0),   F(x) = erf(x / σ√2),   mean = σ √(2/π),
    var = σ² (1 - 2/π),   entropy = ½ ln(πσ²/2) + ½
    rsample: x = σ |ε| with ε ~ N(0, 1)
"""

import math

from .folded import Folded
from .normal import Normal


class HalfNormal(Folded):
    base_law = Normal

    @property
    def mean(self):
        return self.scale * math.sqrt(2 / math.pi)

    @property
    def variance(self):
        return self.scale.pow(2) * (1 - 2 / math.pi)
