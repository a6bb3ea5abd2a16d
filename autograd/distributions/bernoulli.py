"""Bernoulli(probs or logits): 1 with probability p, else 0.

    log p(x) = x log p + (1 - x) log(1 - p) = -[(1 - x) l + softplus(-l)]   (l = logits; softplus = log(1 + e^l))
    entropy = -p log p - (1 - p) log(1 - p)
"""

from .. import ranges
from ..ops import sampling
from ..ops.elementwise import where
from ..ops.losses import binary_cross_entropy_with_logits
from . import constraints
from .distribution import BinaryParameters, broadcast_all, probs_or_logits
from .exp_family import ExponentialFamily


class Bernoulli(BinaryParameters, ExponentialFamily):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    has_enumerate_support = True

    @property
    def _natural_params(self):
        return (self.logits,)

    def _log_normalizer(self, x):
        return x.exp().log1p()

    _mean_carrier_measure = 0

    def __init__(self, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        if probs is not None:  # (the other one is computed on first use, as PyTorch's)
            (self.probs,) = broadcast_all(probs)
        else:
            (self.logits,) = broadcast_all(logits)
        self._param = self.probs if probs is not None else self.logits
        super().__init__(self._param.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        """1 where p > 1/2, 0 where p < 1/2, NaN at p = 1/2 (no single mode), as PyTorch's."""
        return where(self.probs == 0.5, float("nan"), (self.probs >= 0.5).to(self.probs.dtype))

    @property
    def variance(self):
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return sampling.bernoulli(self.probs.detach().expand(shape))

    def log_prob(self, value):
        """-BCE(logits, x), as PyTorch's: (1 - x) l + softplus(-l) rounds as its kernel does, a logit of ±inf gives
        -inf (not NaN) for the value it excludes, and integer or bool values are refused as its loss refuses them."""
        value = self._value(value, self.logits)
        logits, value = broadcast_all(self.logits, value)
        return -binary_cross_entropy_with_logits(logits, value, reduction="none")

    def entropy(self):
        return binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")

    def enumerate_support(self, expand=True):
        values = ranges.arange(2, dtype=self._param.dtype).reshape(-1, *(1,) * len(self.batch_shape))
        return values.expand(-1, *self.batch_shape) if expand else values
