"""``autograd.distributions``: PyTorch's probability distributions that training code reaches for
(policy gradients, VAEs, dropout-like noise): Normal, Categorical, Bernoulli, Uniform, Independent
(a batch's last dims read as one event), and the KL divergence between two of a kind.

    m = Categorical(logits=scores)        # a batch of distributions over the last dim
    action = m.sample()                   # drawn from autograd's generator (manual_seed)
    loss = -(m.log_prob(action) * reward).sum()

``rsample`` (the reparameterisation trick, x = μ + σ ε) keeps the gradient to the parameters;
``sample`` draws without one. Samples come from NumPy's generator: the same numbers on every
machine for a seed, not PyTorch's numbers.
"""

from .bernoulli import Bernoulli
from .categorical import Categorical
from .distribution import Distribution
from .independent import Independent
from .kl import kl_divergence
from .normal import Normal
from .uniform import Uniform

__all__ = ["Bernoulli", "Categorical", "Distribution", "Independent", "Normal", "Uniform", "kl_divergence"]
