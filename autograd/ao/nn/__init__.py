"""``torch.ao.nn``: the quantization layers, which live in ``nn`` (``nn.qat``, ``nn.intrinsic``); loaded on first
use."""

from ... import _lazy

__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"qat": "nn.qat", "intrinsic": "nn.intrinsic"})
