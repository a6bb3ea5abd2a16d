"""Masked moments: PyTorch's ``torch.masked.mean``, ``var`` and ``std``.

With n the number of masked-in elements of a slice and Σ over them:

    mean = Σ x / n
    var  = Σ (x - mean)·conj(x - mean) / max(n - correction, 0)        std = √var

(correction 1 by default, Bessel's; ``unbiased=False`` or ``correction=0`` gives the population variance).
These have no identity: a fully masked slice gives 0/0 = NaN. The sums are masked sums (reductions.py),
so the gradients reach only masked-in elements.
"""

import autograd

from .masks import _input_mask
from .reductions import sum as masked_sum


def _count(input, dim, keepdim, mask):
    """n: how many elements of each slice are masked in (int64)."""
    if mask is None:
        return masked_sum(autograd.ones(input.shape, dtype=autograd.int64), dim, keepdim=keepdim)
    return mask.sum(dim=dim, keepdim=bool(keepdim))


def mean(input, dim=None, *, keepdim=False, dtype=None, mask=None):
    """Σ x / n over the masked-in elements of each slice (NaN where n = 0); a floating or complex dtype only."""
    dtype_source = "Optional"
    if dtype is None:
        dtype = input.dtype
        dtype_source = "Input"
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"mean(): Could not infer output dtype. {dtype_source} dtype must be either a floating point "
                         f"or complex dtype. Got: {dtype}")
    inmask = None if mask is None else _input_mask(input, mask=mask)
    total = masked_sum(input, dim, keepdim=keepdim, dtype=dtype, mask=inmask)
    return total / _count(input, dim, keepdim, inmask)


def _std_var(input, dim, unbiased, *, correction_opt, keepdim, dtype, mask, take_sqrt):
    """var (or std, ``take_sqrt``) as the module's docstring says; the sums run in ``dtype`` (float32 for an
    integer input without one), and the result comes in ``dtype``."""
    if unbiased is not None and correction_opt is not None:
        raise AssertionError("Only one of unbiased and correction may be given")
    correction = 1.0
    if unbiased is not None:
        correction = 1.0 if unbiased else 0.0
    if correction_opt is not None:
        correction = float(correction_opt)
    if dtype is None:
        dtype = input.dtype
        if not (dtype.is_floating_point or dtype.is_complex):
            dtype = autograd.float32
    compute_dtype = dtype if (dtype.is_floating_point or dtype.is_complex) else autograd.float32
    inmask = None if mask is None else _input_mask(input, mask=mask)
    count = _count(input, dim, True, inmask)
    sample_mean = autograd.divide(masked_sum(input, dim, keepdim=True, dtype=dtype, mask=inmask), count)
    deviation = autograd.subtract(input, sample_mean)
    total = masked_sum(deviation * deviation.conj(), dim, keepdim=keepdim, dtype=compute_dtype, mask=inmask)
    if not keepdim:
        count = count.reshape(total.shape)
    if correction != 0:
        real_dtype = total.real.dtype if compute_dtype.is_complex else compute_dtype
        count = autograd.subtract(count.to(real_dtype), correction)
        count = autograd.maximum(count, count.new_zeros([]))  # (more correction than elements: var is inf)
    output = autograd.divide(total, count).to(dtype=dtype)
    return autograd.sqrt(output) if take_sqrt else output


def var(input, dim=None, unbiased=None, *, correction=None, keepdim=False, dtype=None, mask=None):
    """Σ |x - mean|² / max(n - correction, 0) over the masked-in elements (correction 1 unless given)."""
    return _std_var(input, dim, unbiased, correction_opt=correction, keepdim=keepdim, dtype=dtype, mask=mask,
                    take_sqrt=False)


def std(input, dim=None, unbiased=None, *, correction=None, keepdim=False, dtype=None, mask=None):
    """√var over the masked-in elements."""
    return _std_var(input, dim, unbiased, correction_opt=correction, keepdim=keepdim, dtype=dtype, mask=mask,
                    take_sqrt=True)
