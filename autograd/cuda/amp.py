"""``autograd.cuda.amp``: the older spelling of mixed precision (``torch.cuda.amp``), which
PyTorch deprecates in favour of ``autograd.amp`` with ``"cuda"``: the same objects, with
PyTorch's FutureWarning."""

import warnings

from .. import amp
from ..graph import program_stacklevel


def autocast(enabled=True, dtype=None, cache_enabled=True):
    warnings.warn("`autograd.cuda.amp.autocast(args...)` is deprecated. Please use "
                  "`autograd.amp.autocast('cuda', args...)` instead.", FutureWarning, stacklevel=program_stacklevel())
    return amp.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def GradScaler(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
    warnings.warn("`autograd.cuda.amp.GradScaler(args...)` is deprecated. Please use "
                  "`autograd.amp.GradScaler('cuda', args...)` instead.", FutureWarning, stacklevel=program_stacklevel())
    return amp.GradScaler("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def custom_fwd(fwd=None, *, cast_inputs=None):
    """``autograd.amp.custom_fwd`` for "cuda" (``@torch.cuda.amp.custom_fwd`` and ``@...custom_fwd(cast_inputs=)``
    on a custom Function's forward), with PyTorch's FutureWarning."""
    warnings.warn("`autograd.cuda.amp.custom_fwd(args...)` is deprecated. Please use "
                  "`autograd.amp.custom_fwd(args..., device_type='cuda')` instead.", FutureWarning,
                  stacklevel=program_stacklevel())
    return amp.custom_fwd(fwd, device_type="cuda", cast_inputs=cast_inputs)


def custom_bwd(bwd=None):
    """``autograd.amp.custom_bwd`` for "cuda", with PyTorch's FutureWarning."""
    warnings.warn("`autograd.cuda.amp.custom_bwd(args...)` is deprecated. Please use "
                  "`autograd.amp.custom_bwd(args..., device_type='cuda')` instead.", FutureWarning,
                  stacklevel=program_stacklevel())
    return amp.custom_bwd(bwd, device_type="cuda")
