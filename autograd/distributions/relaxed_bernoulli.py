"""RelaxedBernoulli(temperature, probs or logits): the Concrete / Gumbel-softmax relaxation of a
Bernoulli (Maddison et al. 2017; Jang et al. 2017), a law on (0, 1) that nears the Bernoulli as the
temperature τ goes to 0 and has a reparameterised sample:

    LogitRelaxedBernoulli:  x = (l + ln u - ln(1 - u)) / τ,  u ~ U(0, 1)   (l = logit p)
        log p(x) = ln τ + (l - τx) - 2 ln(1 + e^(l - τx))
    RelaxedBernoulli = σ(x), a TransformedDistribution of it by SigmoidTransform
"""

from .. import factories
from ..tensor import Tensor, tensor_from
from . import constraints
from .distribution import BinaryParameters, Distribution, broadcast_all, clamp_probs, probs_or_logits
from .transformed_distribution import TransformedDistribution
from .transforms import SigmoidTransform


def temperature_tensor(temperature, like):
    return temperature if isinstance(temperature, Tensor) else tensor_from(float(temperature), dtype=like.dtype)


class TemperedBase:
    """A relaxed base law (LogitRelaxedBernoulli, ExpRelaxedCategorical) whose temperature is not a batch
    parameter: expand() keeps it as given, as PyTorch's, rather than expanding a temperature whose shape
    happens to match the batch (which would broadcast it against the expanded logits a second time)."""

    def expand(self, batch_shape, _instance=None):
        new = _instance if _instance is not None else object.__new__(type(self))
        new.__dict__["temperature"] = self.temperature
        return super().expand(batch_shape, _instance=new)


class OverRelaxedBase:
    """A relaxed law as a transform of its base (RelaxedBernoulli, RelaxedOneHotCategorical): its
    temperature, logits and probs are the base distribution's."""

    @property
    def temperature(self):
        return self.base_dist.temperature

    @property
    def logits(self):
        return self.base_dist.logits

    @property
    def probs(self):
        return self.base_dist.probs


class LogitRelaxedBernoulli(TemperedBase, BinaryParameters, Distribution):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        probs_or_logits(probs, logits)
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
        else:
            (self.logits,) = broadcast_all(logits)
        self._param = self.probs if probs is not None else self.logits
        self.temperature = temperature_tensor(temperature, self._param)
        super().__init__(self._param.shape, validate_args=validate_args)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        probs = clamp_probs(self.probs.expand(*shape))
        uniforms = clamp_probs(factories.rand(shape, dtype=probs.dtype))
        return (uniforms.log() - (-uniforms).log1p() + probs.log() - (-probs).log1p()) / self.temperature

    def log_prob(self, value):
        value = self._value(value, self._param)
        difference = self.logits - value * self.temperature
        return self.temperature.log() + difference - 2 * difference.exp().log1p()


class RelaxedBernoulli(OverRelaxedBase, TransformedDistribution):
    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        base = LogitRelaxedBernoulli(temperature, probs, logits, validate_args=validate_args)
        super().__init__(base, SigmoidTransform(), validate_args=validate_args)
