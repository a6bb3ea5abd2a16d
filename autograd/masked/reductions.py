"""Masked reductions: PyTorch's ``torch.masked.sum``, ``prod``, ``amax``, ``amin``, ``argmax``, ``argmin``,
``logsumexp``, ``norm`` and ``median``.

Each reduces ``where(mask, input, identity)`` with the plain reduction (masks.py), so a slice whose elements
are all masked out gives the identity itself (sum 0, prod 1, amax -inf, amin +inf, logsumexp -inf, norm 0
(+inf for ord=-inf), median NaN), and the gradient of a masked-out element is zero. ``dim`` is an int, a
tuple of ints, or None for every dim (argmax, argmin and median take one int); ``dtype`` is the result's.
"""

import autograd

from .masks import _canonical_dim, _combine_input_and_mask

# integer dtypes a sum or product widens to int64 (as the plain sum does)
_WIDENED_TO_INT64 = frozenset({autograd.uint8, autograd.bool, autograd.int8, autograd.int16, autograd.int32})


def _accumulating_dtype(input, dtype):
    """dtype, else int64 for a small integer or boolean input, else input's."""
    if dtype is not None:
        return dtype
    return autograd.int64 if input.dtype in _WIDENED_TO_INT64 else input.dtype


def sum(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Σ over the masked-in elements of each slice along ``dim`` (identity 0)."""
    dtype = _accumulating_dtype(input, dtype)
    dims = _canonical_dim(dim, input.ndim)
    return autograd.sum(_combine_input_and_mask(sum, input, mask), dims, bool(keepdim), dtype=dtype)


def prod(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Π over the masked-in elements of each slice along ``dim`` (identity 1)."""
    dtype = _accumulating_dtype(input, dtype)
    dims = _canonical_dim(dim, input.ndim)
    result = _combine_input_and_mask(prod, input, mask).to(dtype=dtype)
    for d in reversed(dims):  # one dim at a time, last first: the plain prod takes one dim
        result = result.prod(dim=d, keepdim=bool(keepdim))
    return result


def amax(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """max over the masked-in elements (identity -inf, or the dtype's least integer)."""
    dtype = input.dtype if dtype is None else dtype
    masked_input = _combine_input_and_mask(amax, input, mask)
    return autograd.amax(masked_input, _canonical_dim(dim, masked_input.ndim), bool(keepdim)).to(dtype=dtype)


def amin(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """min over the masked-in elements (identity +inf, or the dtype's greatest integer)."""
    dtype = input.dtype if dtype is None else dtype
    masked_input = _combine_input_and_mask(amin, input, mask)
    return autograd.amin(masked_input, _canonical_dim(dim, masked_input.ndim), bool(keepdim)).to(dtype=dtype)


def argmax(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Index of the max over the masked-in elements (of the flattened input for dim=None).

    As PyTorch's, the index comes in ``dtype``, which defaults to the *input's* dtype (a float input gives
    float indices); a fully masked slice gives index 0."""
    dtype = input.dtype if dtype is None else dtype
    return autograd.argmax(_combine_input_and_mask(argmax, input, mask), dim, bool(keepdim)).to(dtype=dtype)


def argmin(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Index of the min over the masked-in elements, in ``dtype`` (the input's by default, as argmax)."""
    dtype = input.dtype if dtype is None else dtype
    return autograd.argmin(_combine_input_and_mask(argmin, input, mask), dim, bool(keepdim)).to(dtype=dtype)


def logsumexp(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """log Σ exp(x) over the masked-in elements (identity -inf: exp(-inf) = 0 adds nothing)."""
    dtype = input.dtype if dtype is None else dtype
    dims = _canonical_dim(dim, input.ndim)
    masked_input = _combine_input_and_mask(logsumexp, input, mask)
    return autograd.logsumexp(masked_input, dims, keepdim=keepdim).to(dtype=dtype)


def norm(input, ord=2.0, dim=None, *, keepdim=False, dtype=None, mask=None):
    """The vector ``ord``-norm (Σ|x|^ord)^(1/ord) over the masked-in elements (linalg.vector_norm's ord:
    inf, -inf, 0 and any other number); masked-out elements count as 0, or +inf for ord=-inf."""
    dtype = input.dtype if dtype is None else dtype
    masked_input = _combine_input_and_mask(norm, input, mask, ord)
    return autograd.linalg.vector_norm(masked_input, ord, _canonical_dim(dim, input.ndim), bool(keepdim),
                                       dtype=dtype)


def median(input, dim=-1, *, keepdim=False, dtype=None, mask=None):
    """The lower median of the masked-in elements along ``dim``: nanmedian with masked-out elements NaN.

    A fully masked slice gives NaN; an integer input is read as float32, and gives the median back in its
    own dtype (``dtype`` is used only then) unless a slice was fully masked, which it refuses."""
    dtype = input.dtype if dtype is None else dtype
    dim = _canonical_dim(dim, input.ndim)[0]
    is_float = input.dtype.is_floating_point
    if not is_float:
        input = input.to(dtype=autograd.float32)
    output = autograd.nanmedian(_combine_input_and_mask(median, input, mask), dim, keepdim).values
    if is_float:
        return output
    if not autograd.isnan(output).any():
        return output.to(dtype=dtype)
    raise ValueError("masked median expects no fully masked out rows if dtype is not floating point")
