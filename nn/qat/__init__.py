"""``torch.nn.qat`` (``torch.ao.nn.qat``): the layers quantization-aware training swaps in, as PyTorch's.

Each is its float layer whose weight passes through ``weight_fake_quant`` (made by the qconfig's ``weight``)
on every call, so the layer trains on the weight it will have once quantized; ``from_float`` builds one from
a float layer that carries a ``qconfig``, sharing its parameters (``prepare_qat`` calls it)."""

import nn
import nn.functional as F
from nn.conv import Conv2d as _FloatConv2d
from nn.conv import Conv3d as _FloatConv3d


def _check_float(cls, mod):
    if type(mod) is not cls._FLOAT_MODULE:
        raise AssertionError(f" qat.{cls.__name__}.from_float only works for {cls._FLOAT_MODULE.__name__}")
    if not getattr(mod, "qconfig", None):
        raise AssertionError("Input float module must have a valid qconfig")


class Linear(nn.Linear):
    """y = x · fake_quantize(W)ᵀ + b."""

    _FLOAT_MODULE = nn.Linear

    def __init__(self, in_features, out_features, bias=True, qconfig=None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, dtype=dtype)
        if not qconfig:
            raise AssertionError("qconfig must be provided for QAT module")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight(factory_kwargs={"device": device, "dtype": dtype})

    def forward(self, input):
        return F.linear(input, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        _check_float(cls, mod)
        qat_linear = cls(mod.in_features, mod.out_features, bias=mod.bias is not None, qconfig=mod.qconfig)
        qat_linear.weight = mod.weight
        qat_linear.bias = mod.bias
        return qat_linear

    def to_float(self):
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        linear.weight = nn.Parameter(self.weight.detach())
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach())
        linear.train(self.training)
        return linear


class _ConvNd:
    """A convolution of fake_quantize(W) (mixed into the float convolution's class)."""

    def _qat_init(self, qconfig, factory_kwargs):
        if not qconfig:
            raise AssertionError("qconfig must be provided for QAT module")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight(factory_kwargs=factory_kwargs)

    def forward(self, input):
        return self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        _check_float(cls, mod)
        qat_conv = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                       dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                       padding_mode=mod.padding_mode, qconfig=mod.qconfig)
        qat_conv.weight = mod.weight
        qat_conv.bias = mod.bias
        return qat_conv


class Conv2d(_ConvNd, _FloatConv2d):
    """A Conv2d whose weight is fake-quantized on every call."""

    _FLOAT_MODULE = _FloatConv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", qconfig=None, device=None, dtype=None):
        _FloatConv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode, dtype=dtype)
        self._qat_init(qconfig, {"device": device, "dtype": dtype})


class Conv3d(_ConvNd, _FloatConv3d):
    """A Conv3d whose weight is fake-quantized on every call."""

    _FLOAT_MODULE = _FloatConv3d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", qconfig=None, device=None, dtype=None):
        _FloatConv3d.__init__(self, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode, dtype=dtype)
        self._qat_init(qconfig, {"device": device, "dtype": dtype})


__all__ = ["Conv2d", "Conv3d", "Linear"]
