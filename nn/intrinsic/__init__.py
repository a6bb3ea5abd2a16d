"""``torch.ao.nn.intrinsic`` (``torch.nn.intrinsic``): layers fused for quantization, as PyTorch's.

``fuse_modules``/``fuse_modules_qat`` put a convolution (or linear layer) and the batch norm and ReLU after it
into one of these Sequentials, so that they are quantized as one; ``prepare_qat`` then swaps each for its
``nn.intrinsic.qat`` form, which trains with the batch norm folded into the fake-quantized weight."""

import nn
from autograd import _lazy


class _FusedModule(nn.Sequential):
    """Layers that quantization treats as one."""


def _check_types(name, modules, *types):
    if len(modules) != len(types) or not all(type(m) is t for m, t in zip(modules, types)):
        raise AssertionError(f"Incorrect types for input modules{tuple(type(m) for m in modules)}")


class ConvReLU2d(_FusedModule):
    """Conv2d then ReLU."""

    def __init__(self, conv, relu):
        _check_types("ConvReLU2d", (conv, relu), nn.Conv2d, nn.ReLU)
        super().__init__(conv, relu)


class ConvBn2d(_FusedModule):
    """Conv2d then BatchNorm2d."""

    def __init__(self, conv, bn):
        _check_types("ConvBn2d", (conv, bn), nn.Conv2d, nn.BatchNorm2d)
        super().__init__(conv, bn)


class ConvBnReLU2d(_FusedModule):
    """Conv2d, BatchNorm2d, then ReLU."""

    def __init__(self, conv, bn, relu):
        _check_types("ConvBnReLU2d", (conv, bn, relu), nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
        super().__init__(conv, bn, relu)


class LinearReLU(_FusedModule):
    """Linear then ReLU."""

    def __init__(self, linear, relu):
        _check_types("LinearReLU", (linear, relu), nn.Linear, nn.ReLU)
        super().__init__(linear, relu)


__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"qat": ".qat"})
