"""Statistics composed from reductions: var_mean, std_mean, cov, corrcoef and the quantiles.

    cov(X) = (X - mean) (X - mean)ᴴ / (N - correction)     (rows are variables, columns observations;
                                                           ᴴ: the conjugate transpose, ᵀ for reals)
    corrcoef(X)_ij = cov_ij / √(cov_ii cov_jj)
"""

import numbers
import warnings

from ..backend import errstate, int64, xp
from ..graph import program_stacklevel
from ..primitive import named_node
from ..tensor import Tensor, tensor_from
from . import conjugation, elementwise, reductions, shape
from .axes import dim_index, unbiased_overload
from .names import names
from .outputs import write_out


@names("var_mean", method=False)
def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) of input (over dim), computed together; var_mean(input, False) is PyTorch's
    unbiased overload."""
    dim, unbiased = unbiased_overload("var_mean", dim, unbiased, keepdim, correction)
    return _one_node((reductions.variance(input, dim, unbiased, keepdim, correction, "var_mean"),
                      reductions.mean(input, dim, keepdim)), "VarMeanBackward0", input)


@names("std_mean", method=False)
def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) of input (over dim), computed together; std_mean(input, False) is PyTorch's
    unbiased overload."""
    dim, unbiased = unbiased_overload("std_mean", dim, unbiased, keepdim, correction)
    return _one_node((reductions.standard_deviation(input, dim, unbiased, keepdim, correction, "std_mean"),
                      reductions.mean(input, dim, keepdim)), "StdMeanBackward0", input)


def _one_node(outputs, pytorch_name, input):
    """Both outputs with the name of PyTorch's one node for them (VarMeanBackward0, StdMeanBackward0), which saves
    the input: writing it in place refuses the backward through either (named_node's saves)."""
    return tuple(named_node(output, None, pytorch_name, (input,), saves=(input,)) for output in outputs)


@names("cov")
def cov(input, *, correction=1, fweights=None, aweights=None):
    """The covariance matrix of the variables in input's rows (observations in columns), squeezed (one
    variable gives a 0-d tensor), as PyTorch's. With weights w = fweights · aweights (integer frequencies,
    floating importances) the mean is weighted, x̄ = Σ w x / Σ w, and

        cov = (X - x̄) diag(w) (X - x̄)ᴴ / (Σ w - correction · Σ w·aweights / Σ w)

    (Σ w - correction without aweights). Degrees of freedom ≤ 0 divide by 0, as PyTorch (which warns)."""
    if input.ndim > 2:
        raise RuntimeError(f"cov(): expected input to have two or fewer dimensions but got an input with "
                           f"{input.ndim} dimensions")
    if input.dtype == bool:
        raise RuntimeError("cov(): bool dtype is not supported for input")
    x = shape.reshape(input, (1, -1)) if input.ndim < 2 else input
    x = elementwise.floating(x)  # (integers: the default dtype, as PyTorch)
    observations = x.shape[1]
    w = None
    for name, weights, kinds, kind_name in (("fweights", fweights, "iu", "integral"),
                                            ("aweights", aweights, "f", "floating point")):
        if weights is None:
            continue
        _check_cov_weights(name, weights, kinds, kind_name, observations)
        w = weights if w is None else w * weights
    if w is None:
        centred = x - x.mean(1, keepdim=True)
        products, dof = centred @ centred.mH, observations - correction
    else:
        total = w.sum()
        centred = x - shape.unsqueeze((x * w).sum(1) / total, 1)
        products = centred @ (centred * w).mH
        if aweights is not None and correction != 0:
            dof = total - correction * ((w * aweights).sum() / total)
        else:
            dof = total - correction
    if dof <= 0:
        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less than the number "
                      "of observations.", UserWarning, stacklevel=program_stacklevel())
        with errstate(divide="ignore", invalid="ignore"):
            return shape.squeeze(products / (dof * 0))
    return shape.squeeze(products / dof)


def _check_cov_weights(name, weights, kinds, kind_name, observations):
    if weights.ndim > 1:
        raise RuntimeError(f"cov(): expected {name} to have one or fewer dimensions but got {name} with "
                           f"{weights.ndim} dimensions")
    if weights.numel() != observations:
        raise RuntimeError(f"cov(): expected {name} to have the same numel as there are observations in the "
                           f"input but got {weights.numel()} != {observations}")
    if weights.dtype.kind not in kinds:
        raise RuntimeError(f"cov(): expected {name} to have {kind_name} dtype but got {name} with "
                           f"{weights.dtype} dtype")
    if bool((weights._data < 0).any()):
        raise RuntimeError(f"cov(): {name} cannot be negative")


@names("corrcoef")
def corrcoef(input):
    """Pearson's correlation coefficients of the variables in input's rows, clipped to [-1, 1] (for
    complex numbers, the real and imaginary parts each, as PyTorch's)."""
    c = cov(input)
    if c.ndim == 0:
        return c / c
    d = reductions.sum(c * Tensor._make(xp.eye(c.shape[0], dtype=c.dtype)), 1).sqrt()
    r = c / shape.unsqueeze(d, 1) / shape.unsqueeze(d, 0)
    if r.dtype.kind == "c":
        return conjugation.from_parts(r.real.clamp(-1, 1), r.imag.clamp(-1, 1))
    return r.clamp(-1, 1)


QUANTILE_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile(input, q, dim, keepdim, interpolation, ignore_nan, out):
    """The q-th quantiles along dim (of every element when dim is None), as PyTorch computes them:
    sort, then the rank r = q (n - 1) among the n values (the non-NaN ones for nanquantile), and
    between the values at ⌊r⌋ and ⌈r⌉ by ``interpolation``. The gradient reaches the (one or two)
    elements each quantile is read from, through sort, gather and the interpolation."""
    if input.dtype.kind != "f" or input.dtype == xp.float16:
        # (every message names quantile(), nanquantile's too, as PyTorch's)
        raise RuntimeError("quantile() input tensor must be either float or double dtype")
    if input.numel() == 0:
        raise RuntimeError("quantile() input tensor must be non-empty")
    if out is not None and out.dtype != input.dtype:
        raise RuntimeError("quantile() out tensor must be same dtype as the input tensor")
    if not isinstance(q, (Tensor, numbers.Real)):  # (a list of q's is no tensor: PyTorch takes a float or a Tensor)
        name = "nanquantile" if ignore_nan else "quantile"
        raise TypeError(f"{name}() received an invalid combination of arguments - got (Tensor, {type(q).__name__}), "
                        f"but expected q to be a float or a Tensor")
    if isinstance(q, Tensor):
        if q.ndim > 1:
            raise RuntimeError("quantile() q must be a scalar or 1D tensor")
        if q.dtype != input.dtype:
            raise RuntimeError("quantile() q tensor must be same dtype as the input tensor")
        qs = q._data.reshape(-1)
    else:
        qs = xp.asarray([q], dtype=input.dtype)
    if not ((qs >= 0) & (qs <= 1)).all():  # (a NaN q too; PyTorch's message names a number's value, not a tensor's)
        if isinstance(q, Tensor):
            raise RuntimeError("quantile() q values must be in the range [0, 1]")
        raise RuntimeError(f"quantile() q must be in the range [0, 1] but got {q}")
    if interpolation not in QUANTILE_INTERPOLATIONS:
        raise RuntimeError(f"quantile() interpolation must be one of linear, lower, higher, midpoint or nearest, "
                           f"but got {interpolation}")
    axis = None if dim is None else dim_index(dim, input.ndim)
    if input.ndim == 0:  # dim 0 (or -1) of a 0-d tensor is its one element, as every element is
        axis = None
    values = shape.reshape(input, (-1,)) if axis is None else input.movedim(axis, -1)
    ordered = values.sort(dim=-1).values  # NaNs last
    last = ordered.shape[-1] - 1
    nan = xp.isnan(ordered._data)
    if ignore_nan:  # ranks among the values that are numbers; a slice of only NaNs reads its last NaN
        spans = (~nan).sum(axis=-1, keepdims=True).astype(input.dtype) - 1
        fixed = spans < 0
    else:  # a slice with a NaN reads its last element, a NaN
        spans = xp.full(nan.shape[:-1] + (1,), last, dtype=input.dtype)
        fixed = nan.any(axis=-1, keepdims=True)
    ranks = xp.where(fixed, last, qs * spans)
    ranks = {"lower": xp.floor, "higher": xp.ceil, "nearest": xp.round}.get(interpolation, lambda r: r)(ranks)
    below = xp.floor(ranks).astype(int64)
    result = ordered.gather(-1, tensor_from(below))
    if interpolation in ("linear", "midpoint"):
        above = ordered.gather(-1, tensor_from(xp.ceil(ranks).astype(int64)))
        weights = tensor_from((ranks - below).astype(input.dtype) if interpolation == "linear"
                         else xp.full(ranks.shape, 0.5, dtype=input.dtype))
        if interpolation == "linear" and isinstance(q, Tensor) and q.requires_grad:
            # the weight is q (n - 1) - ⌊r⌋, so dweight/dq = n - 1 (none where the rank is fixed): added
            # as (q - q.detach())(n - 1), exactly 0 in value, as PyTorch's graph differentiates q too
            moved = (shape.reshape(q, (-1,)) - shape.reshape(q.detach(), (-1,))) * tensor_from(spans)
            weights = weights + elementwise.where(xp.broadcast_to(fixed, ranks.shape), 0.0, moved)
        result = result.lerp(above, weights)  # (PyTorch's lerp, as its quantile: from the nearer end)
    if keepdim:
        result = shape.reshape(result, (1,) * input.ndim + (-1,)) if axis is None else result.unsqueeze(axis)
    return result.squeeze(-1) if not isinstance(q, Tensor) or q.ndim == 0 else result.movedim(-1, 0)


@names("quantile")
def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear", out=None):
    """The q-th quantile(s) of input (over dim); NaN where a slice holds a NaN."""
    return write_out(_quantile(input, q, dim, keepdim, interpolation, ignore_nan=False, out=out), out)


@names("nanquantile")
def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear", out=None):
    """quantile ignoring NaNs (NaN only where a slice holds nothing else)."""
    return write_out(_quantile(input, q, dim, keepdim, interpolation, ignore_nan=True, out=out), out)
