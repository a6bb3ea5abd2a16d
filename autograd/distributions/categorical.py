"""Categorical(probs or logits): one draw among K classes (the last dim), for each distribution
in the batch.

    p_k = probs_k / Σ_j probs_j,   or softmax(logits)_k;   log p(k) = logits_k - logsumexp(logits)
    entropy = -Σ_k p_k log p_k
"""

import math

from .. import factories
from ..backend import xp
from ..ops import sampling
from ..tensor import Tensor, tensor_from
from . import constraints
from .distribution import Distribution, lazy_property, logits_to_probs, probs_or_logits, probs_to_logits


class Categorical(Distribution):
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.independent(constraints.real, 1)}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        self._given = "probs" if probs is not None else "logits"  # (param_shape is the given one's)
        if probs is not None:
            probs = probs if isinstance(probs, Tensor) else tensor_from(probs)
            if probs.ndim < 1:
                raise ValueError("`probs` parameter must be at least one-dimensional.")
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:  # (the other one is computed on first use, as PyTorch's)
            logits = logits if isinstance(logits, Tensor) else tensor_from(logits)
            if logits.ndim < 1:
                raise ValueError("`logits` parameter must be at least one-dimensional.")
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        given = self.probs if probs is not None else self.logits
        self._num_events = given.shape[-1]
        super().__init__(given.shape[:-1], validate_args=validate_args)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits)  # (a softmax, as PyTorch's: exp of the normalised logits rounds otherwise)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    @property
    def param_shape(self):
        return (self.probs if self._given == "probs" else self.logits).shape

    @property
    def mean(self):
        return factories.full(self.batch_shape, float("nan"), dtype=self.probs.dtype)  # undefined, as PyTorch's

    @property
    def variance(self):
        return factories.full(self.batch_shape, float("nan"), dtype=self.probs.dtype)  # (the labels are not numbers)

    @property
    def mode(self):
        return self.probs.argmax(-1)

    def sample(self, sample_shape=()):
        """Class indices (int64) of shape sample_shape + batch_shape."""
        sample_shape = tuple(sample_shape)
        rows = self.probs.detach().reshape(-1, self._num_events)
        drawn = sampling.multinomial(rows, math.prod(sample_shape), replacement=True)  # (batch, count)
        return drawn.T.reshape(*sample_shape, *self.batch_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = (value if isinstance(value, Tensor) else tensor_from(value)).long()
        batch = tuple(xp.broadcast_shapes(value.shape, self.batch_shape))
        index = value.expand(batch).unsqueeze(-1)
        return self.logits.expand(batch + (self._num_events,)).gather(-1, index).squeeze(-1)

    def entropy(self):
        logits = self.logits.clamp(min=float(xp.finfo(self.logits.dtype).min))  # 0 · -inf would be NaN
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand=True):
        values = tensor_from(xp.arange(self._num_events)).reshape(-1, *(1,) * len(self.batch_shape))
        return values.expand(-1, *self.batch_shape) if expand else values


class OverCategorical:
    """A law built on a Categorical it keeps in ``_categorical`` (OneHotCategorical, Multinomial,
    ExpRelaxedCategorical): its probs, logits and param_shape are the Categorical's, which expands with it."""

    @property
    def probs(self):
        return self._categorical.probs

    @property
    def logits(self):
        return self._categorical.logits

    @property
    def param_shape(self):
        return self._categorical.param_shape

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._categorical = self._categorical.expand(batch_shape)
        return new
