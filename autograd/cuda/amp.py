"""``autograd.cuda.amp``: the older spelling of mixed precision (``torch.cuda.amp``), which
PyTorch deprecates in favour of ``autograd.amp`` with ``"cuda"``: the same objects, with
PyTorch's FutureWarning."""

import warnings

from .. import amp


def autocast(enabled=True, dtype=None, cache_enabled=True):
    warnings.warn("`autograd.cuda.amp.autocast(args...)` is deprecated. Please use "
                  "`autograd.amp.autocast('cuda', args...)` instead.", FutureWarning, stacklevel=2)
    return amp.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def GradScaler(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
    warnings.warn("`autograd.cuda.amp.GradScaler(args...)` is deprecated. Please use "
                  "`autograd.amp.GradScaler('cuda', args...)` instead.", FutureWarning, stacklevel=2)
    return amp.GradScaler("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)
