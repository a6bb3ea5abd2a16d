"""``torch.ao``: what quantization-aware training is written against (``autograd.ao.quantization``: observers,
fake-quantize modules, qconfigs, stubs, ``prepare_qat``) and ``autograd.ao.nn`` (the ``nn.qat`` and
``nn.intrinsic`` layers). Both are nn's (autograd does not import nn), registered here by ``import nn``; the
quantized dtypes and schemes are autograd's own (``schemes.py``)."""

from .. import _lazy

__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"quantization": ".quantization", "nn": ".nn"})
