"""kl_divergence(p, q) = E_p[log p(x) - log q(x)], in closed form for the pairs registered with
``@register_kl(TypeP, TypeQ)``. A pair is looked up by the most specific registered types that
p and q are instances of, p's first (a subclass reuses its parent's formula), as PyTorch's.

The formulas of the families of this package live beside them in ``kl_pairs.py``; this module
holds the registry and the three formulas that came first:

    Normal:      ln(σ_q/σ_p) + (σ_p² + (μ_p - μ_q)²) / (2σ_q²) - ½
    Categorical: Σ_k p_k (log p_k - log q_k)
    Bernoulli:   p (log p - log q) + (1 - p)(log(1 - p) - log(1 - q))
"""

import warnings

from ..graph import program_stacklevel
from ..ops.elementwise import where
from .bernoulli import Bernoulli
from .categorical import Categorical
from .normal import Normal

_KL_REGISTRY = {}
_KL_MEMOIZE = {}  # (type of p, type of q) -> the formula chosen for them (so an ambiguity is warned once, as PyTorch's)


def _batch_trace_XXT(bmat):
    """tr(X Xᵀ), the sum of the squares, of each matrix over trailing batch dims (PyTorch's private helper)."""
    return bmat.pow(2).sum((-2, -1))


def register_kl(type_p, type_q):
    """Decorator: ``@register_kl(Normal, Normal) def kl(p, q): ...``."""
    if not isinstance(type_p, type) or not isinstance(type_q, type):
        raise TypeError(f"Expected type_p and type_q to be subclasses of Distribution, got {type_p} and {type_q}")

    def decorator(fn):
        _KL_REGISTRY[type_p, type_q] = fn
        _KL_MEMOIZE.clear()  # a new pair may be the closer match for a pair of types already looked up
        return fn

    return decorator


def _dispatch(type_p, type_q):
    """The registered formula for the most specific pair of ancestors, p's type first, as PyTorch's: among the
    pairs that match, the one with the closest ancestor of p, then of q. Where putting q first would choose
    another formula (say a pair registered for (MyLaw, Distribution) against the parent's (Normal, Normal)), the
    choice is ambiguous, and PyTorch's RuntimeWarning says which pair to register."""
    matches = [(p, q) for p, q in _KL_REGISTRY if issubclass(type_p, p) and issubclass(type_q, q)]
    if not matches:
        return None
    left_p, left_q = min(matches, key=lambda m: (type_p.__mro__.index(m[0]), type_q.__mro__.index(m[1])))
    right_p, right_q = min(matches, key=lambda m: (type_q.__mro__.index(m[1]), type_p.__mro__.index(m[0])))
    if _KL_REGISTRY[left_p, left_q] is not _KL_REGISTRY[right_p, right_q]:
        warnings.warn(f"Ambiguous kl_divergence({type_p.__name__}, {type_q.__name__}). "
                      f"Please register_kl({left_p.__name__}, {right_q.__name__})", RuntimeWarning,
                      stacklevel=program_stacklevel())
    return _KL_REGISTRY[left_p, left_q]


def kl_divergence(p, q):
    try:
        fn = _KL_MEMOIZE[type(p), type(q)]
    except KeyError:
        fn = _KL_MEMOIZE[type(p), type(q)] = _dispatch(type(p), type(q))
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
