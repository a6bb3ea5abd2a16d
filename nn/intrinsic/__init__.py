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


def _fused(name, *types):
    """A fused layer of these types in this order (PyTorch's ConvReLU2d(conv, relu), ConvBn3d(conv, bn), ...)."""

    def __init__(self, *modules):
        _check_types(name, modules, *types)
        _FusedModule.__init__(self, *modules)

    return type(name, (_FusedModule,), {"__init__": __init__, "__module__": __name__,
                                        "__doc__": " then ".join(t.__name__ for t in types) + "."})


ConvReLU1d = _fused("ConvReLU1d", nn.Conv1d, nn.ReLU)
ConvReLU2d = _fused("ConvReLU2d", nn.Conv2d, nn.ReLU)
ConvReLU3d = _fused("ConvReLU3d", nn.Conv3d, nn.ReLU)
ConvBn1d = _fused("ConvBn1d", nn.Conv1d, nn.BatchNorm1d)
ConvBn2d = _fused("ConvBn2d", nn.Conv2d, nn.BatchNorm2d)
ConvBn3d = _fused("ConvBn3d", nn.Conv3d, nn.BatchNorm3d)
ConvBnReLU1d = _fused("ConvBnReLU1d", nn.Conv1d, nn.BatchNorm1d, nn.ReLU)
ConvBnReLU2d = _fused("ConvBnReLU2d", nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
ConvBnReLU3d = _fused("ConvBnReLU3d", nn.Conv3d, nn.BatchNorm3d, nn.ReLU)
BNReLU2d = _fused("BNReLU2d", nn.BatchNorm2d, nn.ReLU)
BNReLU3d = _fused("BNReLU3d", nn.BatchNorm3d, nn.ReLU)
LinearReLU = _fused("LinearReLU", nn.Linear, nn.ReLU)


__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"qat": ".qat"})
