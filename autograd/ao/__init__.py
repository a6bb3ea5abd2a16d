"""``torch.ao``: what quantization-aware training is written against (``autograd.ao.quantization``: observers,
fake-quantize modules, qconfigs, stubs, ``prepare_qat``) and ``autograd.ao.nn`` (the ``nn.qat`` and
``nn.intrinsic`` layers). Loaded on first use."""

from .. import _lazy

__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"quantization": ".quantization", "nn": ".nn"})
