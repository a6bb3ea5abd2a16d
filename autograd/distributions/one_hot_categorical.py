"""OneHotCategorical(probs or logits): a Categorical whose draws are one-hot vectors of length K.

    log p(e_k) = log p_k,   mean = p,   var = p (1 - p),   entropy = H(Categorical(p))
"""

from .. import factories, ranges
from . import constraints
from .categorical import Categorical, OverCategorical
from .distribution import Distribution


def one_hot(indices, classes, dtype):
    """Indices (any shape) as one-hot vectors along a new last dim of length ``classes``."""
    return (indices.unsqueeze(-1) == ranges.arange(classes)).to(dtype)


class OneHotCategorical(OverCategorical, Distribution):
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.independent(constraints.real, 1)}
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs=probs, logits=logits, validate_args=validate_args)
        batch = self._categorical.batch_shape
        super().__init__(batch, self._categorical.param_shape[-1:], validate_args=validate_args)

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        return one_hot(self.probs.argmax(-1), self.event_shape[0], self.probs.dtype)

    @property
    def variance(self):
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape=()):
        return one_hot(self._categorical.sample(sample_shape), self.event_shape[0], self.probs.dtype)

    def log_prob(self, value):
        value = self._value(value, self.probs)
        return self._categorical.log_prob(value.argmax(-1))

    def entropy(self):
        return self._categorical.entropy()

    def enumerate_support(self, expand=True):
        n = self.event_shape[0]
        values = factories.eye(n, dtype=self.probs.dtype).reshape(n, *(1,) * len(self.batch_shape), n)
        return values.expand(n, *self.batch_shape, n) if expand else values


class OneHotCategoricalStraightThrough(OneHotCategorical):
    """OneHotCategorical with the straight-through gradient estimator (Bengio et al., 2013):
    ``rsample`` returns the one-hot draw, differentiated as if it were the probabilities
    (x + p - stop_gradient(p)), a biased but useful gradient through a discrete choice."""

    has_rsample = True

    def rsample(self, sample_shape=()):
        probs = self.probs
        return self.sample(sample_shape) + (probs - probs.detach())
