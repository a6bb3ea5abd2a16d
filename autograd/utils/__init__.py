"""``autograd.utils``, as ``torch.utils``: the data pipeline lives in ``autograd.utils.data``,
activation checkpointing in ``autograd.utils.checkpoint``, ``flop_counter``, ``module_tracker``, ``benchmark``,
``_pytree``, ``dlpack`` and ``weak`` (loaded on first use), and ``swap_tensors``."""

from .. import _lazy
from . import data, hooks  # noqa: F401  (autograd.utils.data after import autograd, as torch.utils.data)
from .swap import swap_tensors  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"benchmark": ".benchmark", "checkpoint": ".checkpoint",
                                                                 "_pytree": "._pytree", "dlpack": ".dlpack",
                                                                 "_device": "._device", "weak": ".weak",
                                                                 "flop_counter": ".flop_counter",
                                                                 "module_tracker": ".module_tracker"})
