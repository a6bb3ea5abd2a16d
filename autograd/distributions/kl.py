"""kl_divergence(p, q) = E_p[log p(x) - log q(x)], in closed form for the pairs registered with
``@register_kl(TypeP, TypeQ)``. A pair is looked up by the most specific registered types that
p and q are instances of (a subclass reuses its parent's formula), as PyTorch's.

The formulas of the families of this package live beside them in ``kl_pairs.py``; this module
holds the registry and the three formulas that came first:

    Normal:      ln(σ_q/σ_p) + (σ_p² + (μ_p - μ_q)²) / (2σ_q²) - ½
    Categorical: Σ_k p_k (log p_k - log q_k)
    Bernoulli:   p (log p - log q) + (1 - p)(log(1 - p) - log(1 - q))
"""

from ..ops.elementwise import where
from .bernoulli import Bernoulli
from .categorical import Categorical
from .normal import Normal

_KL_REGISTRY = {}


def _batch_trace_XXT(bmat):
    """tr(X Xᵀ), the sum of the squares, of each matrix over trailing batch dims (PyTorch's private helper)."""
    return bmat.pow(2).sum((-2, -1))


def register_kl(type_p, type_q):
    """Decorator: ``@register_kl(Normal, Normal) def kl(p, q): ...``."""
    if not isinstance(type_p, type) or not isinstance(type_q, type):
        raise TypeError(f"Expected type_p and type_q to be subclasses of Distribution, got {type_p} and {type_q}")

    def decorator(fn):
        _KL_REGISTRY[type_p, type_q] = fn
        return fn

    return decorator


def _dispatch(type_p, type_q):
    """The registered formula for the closest pair of ancestors (by method-resolution order)."""
    matches = [(type_p.__mro__.index(p), type_q.__mro__.index(q), fn) for (p, q), fn in _KL_REGISTRY.items()
               if issubclass(type_p, p) and issubclass(type_q, q)]
    return min(matches, key=lambda m: (m[0] + m[1], m[0]))[2] if matches else None


def kl_divergence(p, q):
    fn = _dispatch(type(p), type(q))
    if fn is None:
        raise NotImplementedError(f"No KL(p || q) is implemented for p type {type(p).__name__} and q type "
                                  f"{type(q).__name__}")
    return fn(p, q)


@register_kl(Normal, Normal)
def _kl_normal_normal(p, q):
    ratio = (p.scale / q.scale) ** 2
    return 0.5 * (ratio + ((p.loc - q.loc) / q.scale) ** 2 - 1 - ratio.log())


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p, q):  # 0 log 0 is 0; p > 0 where q = 0 is infinite
    terms = where(q.probs == 0, float("inf"), p.probs * (p.logits - q.logits))
    return where(p.probs == 0, 0.0, terms).sum(-1)


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p, q):
    """p ln(p/q) + (1-p) ln((1-p)/(1-q)), from the logits (ln p = -softplus(-l), ln(1-p) = -softplus(l)).
    0 ln 0 is 0, and mass where the other law has none makes it infinite, as PyTorch's: the clamped
    logits alone would give a finite ln(eps) there."""
    ones = p.probs * ((-q.logits).softplus() - (-p.logits).softplus())
    ones = where(p.probs == 0, 0.0, where(q.probs == 0, float("inf"), ones))
    zeros = (1 - p.probs) * (q.logits.softplus() - p.logits.softplus())
    zeros = where(p.probs == 1, 0.0, where(q.probs == 1, float("inf"), zeros))
    return ones + zeros
