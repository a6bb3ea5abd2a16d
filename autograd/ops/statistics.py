"""Statistics composed from reductions: var_mean, std_mean, cov and corrcoef.

    cov(X) = (X - mean) (X - mean)ᵀ / (N - correction)     (rows are variables, columns observations)
    corrcoef(X)_ij = cov_ij / √(cov_ii cov_jj)
"""

from ..backend import xp
from ..tensor import Tensor
from . import reductions, shape
from .names import names


@names("var_mean", method=False)
def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) of input (over dim), computed together."""
    return (reductions.var(input, dim, unbiased, keepdim, correction), reductions.mean(input, dim, keepdim))


@names("std_mean", method=False)
def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) of input (over dim), computed together."""
    return (reductions.std(input, dim, unbiased, keepdim, correction), reductions.mean(input, dim, keepdim))


@names("cov")
def cov(input, *, correction=1, fweights=None, aweights=None):
    """The covariance matrix of the variables in input's rows (observations in columns)."""
    if input.ndim > 2:
        raise RuntimeError(f"cov(): expected input to have two or fewer dimensions but got an input with "
                           f"{input.ndim} dimensions")
    if fweights is not None or aweights is not None:
        raise NotImplementedError("cov(): fweights and aweights are not supported yet")
    x = shape.reshape(input, (1, -1)) if input.ndim < 2 else input
    if x.dtype.kind not in "fc":
        x = x.double()
    observations = x.shape[1]
    centred = x - x.mean(1, keepdim=True)
    scale = observations - correction
    result = (centred @ centred.mT) * (1.0 / scale if scale > 0 else float("nan"))
    return shape.reshape(result, ()) if input.ndim < 2 else result


@names("corrcoef")
def corrcoef(input):
    """Pearson's correlation coefficients of the variables in input's rows, clipped to [-1, 1]."""
    c = cov(input)
    if c.ndim == 0:
        return c / c
    d = reductions.sum(c * Tensor._make(xp.eye(c.shape[0], dtype=c.dtype)), 1).sqrt()
    return (c / shape.unsqueeze(d, 1) / shape.unsqueeze(d, 0)).clamp(-1, 1)
