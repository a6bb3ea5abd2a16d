"""Masked normalizations: PyTorch's ``torch.masked.softmax``, ``log_softmax``, ``softmin``, ``normalize``,
``cumsum`` and ``cumprod``, and the masked pointwise ``logaddexp``.

Each maps a slice along one ``dim`` to a slice of the same shape, reading only its masked-in elements x:

    softmax(x)_i = exp(x_i) / Σ exp(x)          (masked-out elements: -inf, so they get 0)
    log_softmax  = log softmax                   (masked-out elements: -inf)
    softmin      = softmax(-x)                   (masked-out elements: +inf, so they get 0)
    normalize    = x_i / max(‖x‖_ord, eps)       (masked-out elements: 0)
    cumsum, cumprod: running Σ, Π with masked-out elements 0, 1 (they repeat the running value)

A fully masked slice gives NaN for the softmaxes (0/0) and 0 for normalize. What a masked-out output
element holds is unspecified by PyTorch; these are its values.
"""

import autograd

from .masks import _canonical_dim, _combine_input_and_mask
from .reductions import amax, amin, prod
from .reductions import norm as masked_norm
from .reductions import sum as masked_sum


def softmax(input, dim, *, dtype=None, mask=None):
    """exp(x_i) / Σ exp(x) over the masked-in elements of each slice along ``dim``."""
    dtype = input.dtype if dtype is None else dtype
    dim = _canonical_dim(dim, input.ndim)[0]
    return autograd.softmax(_combine_input_and_mask(amax, input, mask), dim, dtype=dtype)


def log_softmax(input, dim, *, dtype=None, mask=None):
    """x_i - log Σ exp(x) over the masked-in elements of each slice along ``dim``."""
    dtype = input.dtype if dtype is None else dtype
    dim = _canonical_dim(dim, input.ndim)[0]
    return autograd.log_softmax(_combine_input_and_mask(amax, input, mask), dim, dtype=dtype)


def softmin(input, dim, *, dtype=None, mask=None):
    """exp(-x_i) / Σ exp(-x) over the masked-in elements of each slice along ``dim``."""
    dtype = input.dtype if dtype is None else dtype
    dim = _canonical_dim(dim, input.ndim)[0]
    return autograd.softmax(-_combine_input_and_mask(amin, input, mask), dim, dtype=dtype)


def normalize(input, ord, dim, *, eps=1e-12, dtype=None, mask=None):
    """x_i / max(‖x‖_ord, eps) over the masked-in elements of each slice along ``dim`` (masked-out: 0)."""
    dtype = input.dtype if dtype is None else dtype
    masked_input = _combine_input_and_mask(masked_sum, input, mask)
    norms = masked_norm(input, ord, dim, keepdim=True, dtype=dtype, mask=mask)
    return autograd.divide(masked_input, autograd.maximum(norms, norms.new_full([], eps)))


def cumsum(input, dim, *, dtype=None, mask=None):
    """Running Σ along ``dim`` of the masked-in elements (a masked-out element repeats the running sum)."""
    dtype = input.dtype if dtype is None else dtype
    dim = _canonical_dim(dim, input.ndim)[0]
    return autograd.cumsum(_combine_input_and_mask(masked_sum, input, mask), dim, dtype=dtype).to(dtype=dtype)


def cumprod(input, dim, *, dtype=None, mask=None):
    """Running Π along ``dim`` of the masked-in elements (a masked-out element repeats the running product)."""
    dtype = input.dtype if dtype is None else dtype
    dim = _canonical_dim(dim, input.ndim)[0]
    return autograd.cumprod(_combine_input_and_mask(prod, input, mask), dim, dtype=dtype).to(dtype=dtype)


def logaddexp(input, other, *, dtype=None, input_mask=None, other_mask=None):
    """log(exp(a) + exp(b)) elementwise, each operand's masked-out elements -inf (adding nothing); both
    masked out gives -inf. ``dtype``: the result's, cast after."""
    dtype = input.dtype if dtype is None else dtype
    masked_input = _combine_input_and_mask(logaddexp, input, input_mask)
    masked_other = _combine_input_and_mask(logaddexp, other, other_mask)
    return autograd.logaddexp(masked_input, masked_other).to(dtype=dtype)
