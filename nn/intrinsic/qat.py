"""``torch.ao.nn.intrinsic.qat``: the fused layers as quantization-aware training runs them, as PyTorch's.

ConvBn2d (and ConvBnReLU2d) train with the batch norm folded into the weight before it is fake-quantized,
as it will be once quantized: with γ the norm's weight and σ its running standard deviation,

    y = BN((conv(x, fake_quantize(W · γ/σ)) ) / (γ/σ) + b)

so the batch norm still normalises with the batch's statistics (and updates its running ones) while the
convolution sees the folded, quantized weight. ``freeze_bn_stats`` stops the running statistics (the norm
then uses them); ``update_bn_stats`` resumes. ConvReLU2d and LinearReLU are the qat layers with a ReLU."""

import math

import autograd
import nn
import nn.functional as F
import nn.qat as nnqat
from nn import init

from . import ConvBn2d as _FloatConvBn2d
from . import ConvBnReLU2d as _FloatConvBnReLU2d
from . import ConvReLU2d as _FloatConvReLU2d
from . import LinearReLU as _FloatLinearReLU
from . import _FusedModule


def _check_fused_float(cls, mod):
    if type(mod) is not cls._FLOAT_MODULE:
        raise AssertionError(f"qat.{cls.__name__}.from_float only works for {cls._FLOAT_MODULE.__name__}")
    if not getattr(mod, "qconfig", None):
        raise AssertionError("Input float module must have a valid qconfig")


class ConvBn2d(nn.Conv2d, _FusedModule):
    """Conv2d and BatchNorm2d trained with the norm folded into the fake-quantized weight."""

    _FLOAT_MODULE = _FloatConvBn2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=None, padding_mode="zeros", eps=1e-05, momentum=0.1, freeze_bn=False, qconfig=None):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, False,
                           padding_mode)
        if not qconfig:
            raise AssertionError("qconfig must be provided for QAT module")
        self.qconfig = qconfig
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = nn.BatchNorm2d(out_channels, eps, momentum, True, True)
        self.weight_fake_quant = self.qconfig.weight()
        if bias:
            self.bias = nn.Parameter(autograd.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_bn_parameters()
        if self.training and not freeze_bn:
            self.update_bn_stats()
        else:
            self.freeze_bn_stats()

    def reset_running_stats(self):
        self.bn.reset_running_stats()

    def reset_bn_parameters(self):
        self.bn.reset_running_stats()
        init.uniform_(self.bn.weight)
        init.zeros_(self.bn.bias)
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def update_bn_stats(self):
        self.freeze_bn = False
        self.bn.training = True
        return self

    def freeze_bn_stats(self):
        self.freeze_bn = True
        self.bn.training = False
        return self

    def _forward(self, input):
        """The convolution of the folded, fake-quantized weight, unfolded again and batch-normalised."""
        running_std = autograd.sqrt(self.bn.running_var + self.bn.eps)
        scale_factor = self.bn.weight / running_std
        weight_shape = [1] * len(self.weight.shape)
        weight_shape[0] = -1
        bias_shape = [1] * len(self.weight.shape)
        bias_shape[1] = -1
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(weight_shape))
        zero_bias = autograd.zeros(self.out_channels, dtype=input.dtype)
        conv = self._conv_forward(input, scaled_weight, zero_bias)
        conv_orig = conv / scale_factor.reshape(bias_shape)
        if self.bias is not None:
            conv_orig = conv_orig + self.bias.reshape(bias_shape)
        return self.bn(conv_orig)

    def forward(self, input):
        return self._forward(input)

    def train(self, mode=True):
        """Batch norm's mode follows the layer's only while its statistics are not frozen."""
        self.training = mode
        if not self.freeze_bn:
            for module in self.children():
                module.train(mode)
        return self

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        _check_fused_float(cls, mod)
        conv, bn = mod[0], mod[1]
        qat_convbn = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, bn.eps, bn.momentum,
                         False, mod.qconfig)
        qat_convbn.weight = conv.weight
        qat_convbn.bias = conv.bias
        qat_convbn.bn.weight = bn.weight
        qat_convbn.bn.bias = bn.bias
        qat_convbn.bn.running_mean = bn.running_mean
        qat_convbn.bn.running_var = bn.running_var
        qat_convbn.bn.num_batches_tracked = bn.num_batches_tracked
        return qat_convbn


class ConvBnReLU2d(ConvBn2d):
    """ConvBn2d then ReLU."""

    _FLOAT_MODULE = _FloatConvBnReLU2d

    def forward(self, input):
        return F.relu(self._forward(input))


class ConvReLU2d(nnqat.Conv2d, _FusedModule):
    """The qat Conv2d then ReLU."""

    _FLOAT_MODULE = _FloatConvReLU2d

    def forward(self, input):
        return F.relu(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        _check_fused_float(cls, mod)
        conv = mod[0]
        qat_conv = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                       padding_mode=conv.padding_mode, qconfig=mod.qconfig)
        qat_conv.weight = conv.weight
        qat_conv.bias = conv.bias
        return qat_conv


class LinearReLU(nnqat.Linear, _FusedModule):
    """The qat Linear then ReLU."""

    _FLOAT_MODULE = _FloatLinearReLU

    def forward(self, input):
        return F.relu(F.linear(input, self.weight_fake_quant(self.weight), self.bias))

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        _check_fused_float(cls, mod)
        linear = mod[0]
        qat_linear = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, qconfig=mod.qconfig)
        qat_linear.weight = linear.weight
        qat_linear.bias = linear.bias
        return qat_linear


def update_bn_stats(mod):
    """For ``model.apply(update_bn_stats)``: fused conv-bn layers update their running statistics again."""
    if isinstance(mod, ConvBn2d):
        mod.update_bn_stats()


def freeze_bn_stats(mod):
    """For ``model.apply(freeze_bn_stats)``: fused conv-bn layers normalise with their running statistics, which
    stop moving (the QAT tutorial's last epochs)."""
    if isinstance(mod, ConvBn2d):
        mod.freeze_bn_stats()


__all__ = ["ConvBn2d", "ConvBnReLU2d", "ConvReLU2d", "LinearReLU", "freeze_bn_stats", "update_bn_stats"]
