"""Multinomial(total_count=1, probs or logits): counts of each of K classes (the last dim) in n
independent draws of a Categorical.

    log p(x) = ln n! - Σ_k ln x_k! + Σ_k x_k ln p_k,   mean = n p,   var = n p (1 - p)
    entropy = n H(Categorical(p)) - ln n! + Σ_k E[ln x_k!],  x_k ~ Binomial(n, p_k)
"""

import math

import numpy

from ..ops.elementwise import where
from ..ops.sampling import _tensor
from . import constraints
from .binomial import Binomial
from .categorical import Categorical, OverCategorical
from .distribution import Distribution


class Multinomial(OverCategorical, Distribution):
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.independent(constraints.real, 1)}

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        if not isinstance(total_count, int):
            raise NotImplementedError("inhomogeneous total_count is not supported")
        self.total_count = total_count
        self._categorical = Categorical(probs=probs, logits=logits, validate_args=validate_args)
        self._binomial = Binomial(total_count=total_count, probs=self._categorical.probs, validate_args=False)
        batch = self._categorical.batch_shape
        super().__init__(batch, self._categorical.param_shape[-1:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.multinomial(self.total_count)

    @property
    def mean(self):
        return self.probs * self.total_count

    @property
    def variance(self):
        return self.total_count * self.probs * (1 - self.probs)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._binomial = self._binomial.expand(tuple(batch_shape) + tuple(self.event_shape))
        return new

    def sample(self, sample_shape=()):
        # PyTorch's draws: total_count Categorical draws per sample (drawn first), then counted per class
        drawn = self._categorical.sample((self.total_count, *tuple(sample_shape))).numpy()  # (n, *sample, *batch)
        counts = (drawn[..., None] == numpy.arange(self._categorical._num_events)).sum(0)
        return _tensor(counts, self.probs.dtype)

    def log_prob(self, value):
        value = self._value(value, self.probs)
        logits = where((value == 0) & (self.logits == float("-inf")), 0.0, self.logits)  # 0 · -inf is 0 here
        return ((value.sum(-1) + 1).lgamma() - (value + 1).lgamma().sum(-1) + (logits * value).sum(-1))

    def entropy(self):
        support = self._binomial.enumerate_support(expand=False)[1:]  # k = 1..n (ln 0! = 0)
        expected_log_factorials = (self._binomial.log_prob(support).exp() * (support + 1).lgamma()).sum(0).sum(-1)
        return self.total_count * self._categorical.entropy() - math.lgamma(self.total_count + 1) \
            + expected_log_factorials
