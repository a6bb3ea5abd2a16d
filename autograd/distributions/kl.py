"""kl_divergence(p, q) = E_p[log p(x) - log q(x)], in closed form for two of a kind:

    Normal:      ln(σ_q/σ_p) + (σ_p² + (μ_p - μ_q)²) / (2σ_q²) - ½
    Categorical: Σ_k p_k (log p_k - log q_k)
    Bernoulli:   p (log p - log q) + (1 - p)(log(1 - p) - log(1 - q))
    Independent: the base distributions' KL, summed over the event dims (both must read the same
                 number of batch dims as event dims)
"""

from ..ops.elementwise import where
from .bernoulli import Bernoulli
from .categorical import Categorical
from .independent import Independent, sum_rightmost
from .normal import Normal


def kl_divergence(p, q):
    if isinstance(p, Independent) and isinstance(q, Independent):
        if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
            raise NotImplementedError("kl_divergence of two Independent distributions needs the same "
                                      "reinterpreted_batch_ndims")
        return sum_rightmost(kl_divergence(p.base_dist, q.base_dist), p.reinterpreted_batch_ndims)
    if type(p) is not type(q) or not isinstance(p, (Normal, Categorical, Bernoulli)):
        raise NotImplementedError(f"kl_divergence is implemented for two Normal, Categorical, Bernoulli (or two "
                                  f"Independent of them) distributions, got {type(p).__name__} and "
                                  f"{type(q).__name__}")
    if isinstance(p, Normal):
        ratio = (p.scale / q.scale) ** 2
        return 0.5 * (ratio + ((p.loc - q.loc) / q.scale) ** 2 - 1 - ratio.log())
    if isinstance(p, Categorical):  # 0 log 0 is 0; p > 0 where q = 0 is infinite
        terms = where(q.probs == 0, float("inf"), p.probs * (p.logits - q.logits))
        return where(p.probs == 0, 0.0, terms).sum(-1)
    # Bernoulli, from the logits: p (l_p - l_q) + softplus(l_q) - softplus(l_p)
    return p.probs * (p.logits - q.logits) + q.logits.softplus() - p.logits.softplus()
