"""``ExponentialFamily``: laws whose density is p(x) = h(x) exp(⟨θ, t(x)⟩ - F(θ)) for natural
parameters θ, sufficient statistics t and log-normaliser F. Then E[t(x)] = ∇F(θ), so

    entropy = F(θ) - ⟨θ, ∇F(θ)⟩ - E[ln h(x)]
    KL(p ‖ q) = F(θ_q) - F(θ_p) - ⟨θ_q - θ_p, ∇F(θ_p)⟩   (the Bregman divergence of F, same family)

with ∇F computed by this engine's autograd. A subclass gives ``_natural_params`` (a tuple),
``_log_normalizer(*θ)`` and ``_mean_carrier_measure`` (E[ln h(x)]); the families here also have
closed forms, which override these.
"""

from ..differentiate import grad
from .distribution import Distribution


class ExponentialFamily(Distribution):
    @property
    def _natural_params(self):
        raise NotImplementedError

    def _log_normalizer(self, *natural_params):
        raise NotImplementedError

    @property
    def _mean_carrier_measure(self):
        raise NotImplementedError

    def entropy(self):
        result = -self._mean_carrier_measure
        params = [p.detach().requires_grad_() for p in self._natural_params]
        log_normalizer = self._log_normalizer(*params)
        gradients = grad(log_normalizer.sum(), params, create_graph=True)
        result = result + log_normalizer
        for param, gradient in zip(params, gradients):
            result = result - sum_beyond_batch(param * gradient, len(self.batch_shape))
        return result


def sum_beyond_batch(value, batch_ndim):
    """value summed over every dim after the first ``batch_ndim`` (⟨θ, ∇F⟩ for each law: a natural
    parameter may span more or fewer dims than the event, as Wishart's scalar one does)."""
    return value.reshape(*value.shape[:batch_ndim], -1).sum(-1)
