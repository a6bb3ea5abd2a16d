"""MixtureSameFamily(mixture_distribution, component_distribution): a mixture of K components of
one family (the last batch dim of the component distribution) weighted by a Categorical.

    log p(x) = logsumexp_k (log π_k + log p_k(x)),    mean = Σ_k π_k μ_k,
    var = Σ_k π_k σ_k² + Σ_k π_k (μ_k - mean)²   (the law of total variance)
    sample: a component k ~ π, then a draw of component k (no reparameterised sample)
"""

from . import constraints
from .categorical import Categorical
from .distribution import Distribution


class MixtureSameFamily(Distribution):
    arg_constraints = {}
    has_rsample = False

    def __init__(self, mixture_distribution, component_distribution, validate_args=None):
        if not isinstance(mixture_distribution, Categorical):
            raise ValueError(" The Mixture distribution needs to be an  instance of torch.distributions.Categorical")
        if not isinstance(component_distribution, Distribution):
            raise ValueError("The Component distribution needs to be an instance of torch.distributions.Distribution")
        self._mixture_distribution, self._component_distribution = mixture_distribution, component_distribution
        mixture_batch = mixture_distribution.batch_shape
        component_batch = component_distribution.batch_shape[:-1]
        for a, b in zip(reversed(mixture_batch), reversed(component_batch)):
            if a != 1 and b != 1 and a != b:
                raise ValueError(f"`mixture_distribution.batch_shape` ({mixture_batch}) is not compatible with "
                                 f"`component_distribution.batch_shape`({component_batch})")
        km, kc = mixture_distribution.logits.shape[-1], component_distribution.batch_shape[-1]
        if km != kc:
            raise ValueError(f"`mixture_distribution component` ({km}) does not equal "
                             f"`component_distribution.batch_shape[-1]` ({kc})")
        self._num_component = km
        self._event_ndims = len(component_distribution.event_shape)
        super().__init__(component_batch, component_distribution.event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = object.__new__(type(self)) if _instance is None else _instance
        for name, value in self.__dict__.items():  # (a subclass's expand set its own, expanded, fields first)
            new.__dict__.setdefault(name, value)
        new._component_distribution = self._component_distribution.expand(tuple(batch_shape) + (self._num_component,))
        new._mixture_distribution = self._mixture_distribution.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property
    def support(self):
        return constraints.MixtureSameFamilyConstraint(self._component_distribution.support)

    @property
    def mixture_distribution(self):
        return self._mixture_distribution

    @property
    def component_distribution(self):
        return self._component_distribution

    def _pad(self, x):
        """x with a component dim before its event dims."""
        return x.unsqueeze(-1 - self._event_ndims)

    def _pad_mixture_dimensions(self, x):
        """The mixture weights (.., K) shaped to broadcast against the components' (..., K, *event)."""
        batch_ndims, mixture_ndims = len(self.batch_shape), len(self._mixture_distribution.batch_shape)
        pad = 0 if mixture_ndims == 1 else batch_ndims - mixture_ndims
        return x.reshape(*x.shape[:-1], *([1] * pad), x.shape[-1], *([1] * self._event_ndims))

    @property
    def mean(self):
        probs = self._pad_mixture_dimensions(self._mixture_distribution.probs)
        return (probs * self._component_distribution.mean).sum(-1 - self._event_ndims)

    @property
    def variance(self):
        probs = self._pad_mixture_dimensions(self._mixture_distribution.probs)
        mean_of_variances = (probs * self._component_distribution.variance).sum(-1 - self._event_ndims)
        deviations = (self._component_distribution.mean - self._pad(self.mean)).pow(2.0)
        return mean_of_variances + (probs * deviations).sum(-1 - self._event_ndims)

    def cdf(self, x):
        return (self._component_distribution.cdf(self._pad(x)) * self._mixture_distribution.probs).sum(-1)

    def log_prob(self, x):
        if self._validate_args:
            self._validate_sample(x)
        log_prob_x = self._component_distribution.log_prob(self._pad(x))
        return (log_prob_x + self._mixture_distribution.logits.log_softmax(-1)).logsumexp(-1)

    def sample(self, sample_shape=()):
        sample_shape = tuple(sample_shape)
        gather_dim = len(sample_shape) + len(self.batch_shape)
        chosen = self._mixture_distribution.sample(sample_shape)  # sample + batch
        drawn = self._component_distribution.sample(sample_shape)  # sample + batch + (K,) + event
        event = tuple(self.event_shape)
        index = chosen.reshape(*chosen.shape, 1, *([1] * len(event))).expand(*chosen.shape, 1, *event)
        return drawn.gather(gather_dim, index).squeeze(gather_dim)

    def __repr__(self):
        return f"MixtureSameFamily(\n  {self._mixture_distribution},\n  {self._component_distribution})"
