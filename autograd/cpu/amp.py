"""``autograd.cpu.amp``: the older spelling of mixed precision on the CPU (``torch.cpu.amp``), which
PyTorch deprecates in favour of ``autograd.amp`` with ``"cpu"``: subclasses of the same classes,
each warning with PyTorch's FutureWarning when made.

PyTorch's CPU autocast lowers to bfloat16 by default, which NumPy does not have: ``dtype``
defaults to autocast's CPU dtype here (float16 unless set), to which it lowers as
``autograd.amp.autocast("cpu")`` does (see ``autograd.autocast_cpu``); bfloat16 raises."""

import warnings

from .. import amp
from ..graph import program_stacklevel

__all__ = ["GradScaler", "autocast"]


class autocast(amp.autocast):
    def __init__(self, enabled=True, dtype=None, cache_enabled=True):
        warnings.warn("`autograd.cpu.amp.autocast(args...)` is deprecated. Please use "
                      "`autograd.amp.autocast('cpu', args...)` instead.", FutureWarning,
                      stacklevel=program_stacklevel())
        super().__init__("cpu", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(amp.GradScaler):
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
        warnings.warn("`autograd.cpu.amp.GradScaler(args...)` is deprecated. Please use "
                      "`autograd.amp.GradScaler('cpu', args...)` instead.", FutureWarning,
                      stacklevel=program_stacklevel())
        super().__init__("cpu", init_scale, growth_factor, backoff_factor, growth_interval, enabled)
