"""RelaxedOneHotCategorical(temperature, probs or logits): the Concrete / Gumbel-softmax
relaxation of a one-hot Categorical, a law on the simplex with a reparameterised sample:

    ExpRelaxedCategorical (its logarithm):  x = log_softmax((l + g) / τ),  g_k = -ln(-ln u_k) Gumbel noise
        log p(x) = ln Γ(K) + (K - 1) ln τ + Σ_k (l_k - τ x_k) - K logsumexp_k (l_k - τ x_k)
    RelaxedOneHotCategorical = exp(x), a TransformedDistribution of it by ExpTransform
"""

import math

from .. import factories
from . import constraints
from .categorical import Categorical, OverCategorical
from .distribution import Distribution, clamp_probs
from .relaxed_bernoulli import OverRelaxedBase, TemperedBase, temperature_tensor
from .transformed_distribution import TransformedDistribution
from .transforms import ExpTransform


class ExpRelaxedCategorical(TemperedBase, OverCategorical, Distribution):
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    support = constraints.real_vector  # (the true support is a submanifold of it)
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs, logits)
        self.temperature = temperature_tensor(temperature, self._categorical.logits)
        super().__init__(self._categorical.batch_shape, self._categorical.param_shape[-1:],
                         validate_args=validate_args)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        uniforms = clamp_probs(factories.rand(shape, dtype=self.logits.dtype))
        gumbels = -(-uniforms.log()).log()
        scores = (self.logits + gumbels) / self.temperature
        return scores - scores.logsumexp(-1, keepdim=True)

    def log_prob(self, value):
        k = self._categorical._num_events
        value = self._value(value, self.logits)
        log_scale = math.lgamma(k) + (k - 1) * self.temperature.log()
        score = self.logits - value * self.temperature
        return (score - score.logsumexp(-1, keepdim=True)).sum(-1) + log_scale


class RelaxedOneHotCategorical(OverRelaxedBase, TransformedDistribution):
    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        base = ExpRelaxedCategorical(temperature, probs, logits, validate_args=validate_args)
        super().__init__(base, ExpTransform(), validate_args=validate_args)
