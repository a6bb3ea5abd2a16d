"""``autograd.utils``, as ``torch.utils``: the data pipeline lives in ``autograd.utils.data``,
activation checkpointing in ``autograd.utils.checkpoint``, ``flop_counter``, ``module_tracker``, ``benchmark``,
``_pytree``, ``dlpack`` and ``weak`` (loaded on first use), and ``swap_tensors``. ``autograd.utils.data`` reads
after ``import autograd`` alone, as torch.utils.data does, and loads on that first use: optim's fused Adam needs
``utils._foreach_utils``, not the data pipeline."""

from .. import _lazy
from . import hooks  # noqa: F401
from .swap import swap_tensors  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"data": ".data",
                                                                 "benchmark": ".benchmark", "checkpoint": ".checkpoint",
                                                                 "_pytree": "._pytree", "dlpack": ".dlpack",
                                                                 "_device": "._device", "weak": ".weak",
                                                                 "flop_counter": ".flop_counter",
                                                                 "module_tracker": ".module_tracker"})
