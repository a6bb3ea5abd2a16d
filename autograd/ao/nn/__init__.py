"""``torch.ao.nn``: the quantization layers (``qat``, ``intrinsic``). They live in nn (``nn.qat``,
``nn.intrinsic``): autograd does not import nn, and ``import nn`` registers them here."""

from ... import _lazy

__getattr__, __dir__ = _lazy.provided_from_above(
    globals(), "the quantization layers live in nn (nn.qat, nn.intrinsic): import nn first (autograd does not "
               "import nn; it registers them here)")
