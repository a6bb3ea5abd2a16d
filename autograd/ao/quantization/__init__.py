"""``torch.ao.quantization``: observers, fake-quantize modules, qconfigs, QuantStub/DeQuantStub, ``prepare_qat``.

They are nn.Modules and work on modules, so they live in nn (``nn/quantization``): autograd does not import
nn. ``import nn`` registers that package here, and every name then reads as in PyTorch
(``autograd.ao.quantization.QuantStub``, ``from autograd.ao.quantization import prepare_qat``)."""

from ... import _lazy

__getattr__, __dir__ = _lazy.provided_from_above(
    globals(), "the quantization modules are nn.Modules and live in nn: import nn first (autograd does not "
               "import nn; it registers them here)")
