"""Every module class that nn and torch.nn both have, built with the same arguments, against PyTorch:
its repr, its parameters and buffers (names, order, shapes, dtypes, requires_grad), its state_dict's
keys and metadata versions, named_modules, a strict state_dict round trip in both directions followed
by equal forward outputs (train and eval, float64 and float32) and gradients, the public attributes
programs read (values and types: a tuple is not an int) of it and every module inside it, its public
methods, the default initialisation (family and bounds, on large layers, after reset_parameters too),
state_dict tensors sharing memory with the module, and the exception class for invalid arguments and
inputs. Deliberate differences are xfailed (strict) with their reason.

The whole file skips without PyTorch; the cases are small so that it runs in seconds."""

import collections
import inspect

import numpy as np
import pytest

import autograd
import nn

torch = pytest.importorskip("torch")
tnn = torch.nn


class T:
    """A tensor argument of a constructor or a forward call: ``value`` becomes a chainrule tensor for
    ours and a torch tensor for PyTorch's."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __repr__(self):
        return f"T{self.value.shape}"


def _single(value):
    """``value`` with every float64 T (in lists, tuples and dicts too) made float32."""
    if isinstance(value, T):
        return T(value.value.astype(np.float32)) if value.value.dtype == np.float64 else value
    if isinstance(value, (list, tuple)):
        return type(value)(_single(v) for v in value)
    if isinstance(value, dict):
        return {k: _single(v) for k, v in value.items()}
    return value


def _for(side, value):
    """``value`` with every T (in lists, tuples and dicts too) made a tensor of ``side`` ('ours'/'torch')."""
    if isinstance(value, T):
        return autograd.tensor(value.value) if side == "ours" else torch.tensor(value.value)
    if isinstance(value, (list, tuple)):
        return type(value)(_for(side, v) for v in value)
    if isinstance(value, dict):
        return {k: _for(side, v) for k, v in value.items()}
    if isinstance(value, New):
        return value.ours() if side == "ours" else value.torch()
    if isinstance(value, Fn):
        return value.ours if side == "ours" else value.torch
    return value


class Fn:
    """An argument that is a function: ``ours`` for nn, ``torch`` for torch.nn."""

    def __init__(self, ours, theirs):
        self.ours, self.torch = ours, theirs

    def __repr__(self):
        return repr(self.torch)


class New(Fn):
    """A module argument, made afresh for each build: ``ours()`` for nn, ``torch()`` for torch.nn."""

    def __repr__(self):
        return type(self.torch()).__name__


rng = np.random.default_rng(0)


def randn(*shape):
    return T(rng.standard_normal(shape))


def rand(*shape, low=0.0, high=1.0):
    return T(rng.uniform(low, high, shape))


def ints(high, *shape, low=0):
    return T(rng.integers(low, high, shape))


def signs(*shape):
    return T(rng.choice([-1.0, 1.0], shape))


class Case:
    """``name(*args, **kwargs)`` and a forward call on ``inputs`` (a function giving the list of forward
    arguments, T where a tensor goes). ``random``: the forward draws random numbers in training, so
    only eval mode is compared. ``kw``: keyword arguments of the forward call."""

    def __init__(self, name, *args, inputs=None, random=False, kw=None, id=None, factory=None, method=None,
                 **kwargs):
        self.name, self.args, self.kwargs, self.inputs, self.random = name, args, kwargs, inputs, random
        self.forward_kwargs, self.factory, self.method = kw or {}, factory, method
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        called = ", ".join(f"{k}={v!r}" for k, v in self.forward_kwargs.items())
        self.id = id or (f"{name}{'.' + factory if factory else ''}({shown})"
                         + (f".{method}" if method else "") + (f"-({called})" if called else ""))

    def build(self, side, seed=0, single=False):
        """The module of ``side`` ('ours' or 'torch'); single: its tensor arguments in float32."""
        (autograd if side == "ours" else torch).manual_seed(seed)
        owner = nn if side == "ours" else tnn
        args, kwargs = (_single(self.args), _single(self.kwargs)) if single else (self.args, self.kwargs)
        cls = getattr(owner, self.name)
        make = getattr(cls, self.factory) if self.factory else cls
        return make(*_for(side, args), **_for(side, kwargs))

    def call(self, module, side, inputs, single=False):
        """The forward call (or the method asked for) of ``module`` on ``inputs`` (tensors of ``side``);
        single: its tensor keyword arguments in float32."""
        function = getattr(module, self.method) if self.method else module
        return function(*inputs, **_for(side, _single(self.forward_kwargs) if single else self.forward_kwargs))


def x(*shape):
    return lambda: [randn(*shape)]


def pair(*shape):
    return lambda: [randn(*shape), randn(*shape)]


def x_and(target):
    return lambda shape: (lambda: [randn(*shape), target(shape)])


def _classes(shape):
    return ints(shape[1], shape[0])


def _probabilities(shape):
    return rand(*shape, low=0.05, high=0.95)


CASES = [
    # -- activations ------------------------------------------------------------------------------------
    *[Case(name, inputs=x(2, 3, 4)) for name in
      ["CELU", "ELU", "GELU", "GLU", "Hardshrink", "Hardsigmoid", "Hardswish", "Hardtanh", "LeakyReLU", "LogSigmoid",
       "Mish", "PReLU", "ReLU", "ReLU6", "SELU", "SiLU", "Sigmoid", "Softmax2d", "Softplus", "Softshrink", "Softsign",
       "Tanh", "Tanhshrink", "Identity", "Flatten", "LogSoftmax", "Softmax", "Softmin"]],
    Case("RReLU", inputs=x(2, 3, 4), random=True),
    Case("RReLU", 0.1, 0.3, True, inputs=x(2, 3, 4), random=True),
    Case("CELU", alpha=2.0, inplace=True, inputs=x(2, 3)),
    Case("ELU", alpha=0.5, inplace=True, inputs=x(2, 3)),
    Case("GELU", approximate="tanh", inputs=x(2, 3)),
    Case("GLU", dim=0, inputs=x(4, 3)),
    Case("Hardshrink", 0.3, inputs=x(2, 3)),
    Case("Hardtanh", -2.0, 2.0, inputs=x(2, 3)),
    Case("Hardtanh", -2, 2, True, inputs=x(2, 3)),
    Case("LeakyReLU", 0.2, True, inputs=x(2, 3)),
    Case("PReLU", num_parameters=3, init=0.1, inputs=x(2, 3, 4)),
    Case("ReLU", inplace=True, inputs=x(2, 3)),
    Case("ReLU6", True, inputs=x(2, 3)),
    Case("SELU", inplace=True, inputs=x(2, 3)),
    Case("SiLU", inplace=True, inputs=x(2, 3)),
    Case("Mish", inplace=True, inputs=x(2, 3)),
    Case("Hardswish", inplace=True, inputs=x(2, 3)),
    Case("Hardsigmoid", inplace=True, inputs=x(2, 3)),
    Case("Softmax", dim=1, inputs=x(2, 3)),
    Case("Softmin", 0, inputs=x(2, 3)),
    Case("LogSoftmax", dim=-1, inputs=x(2, 3)),
    Case("Softplus", beta=2.0, threshold=10.0, inputs=x(2, 3)),
    Case("Softshrink", 0.3, inputs=x(2, 3)),
    Case("Threshold", 0.1, 20.0, inputs=x(2, 3)),
    Case("Threshold", 0.1, 20, inplace=True, inputs=x(2, 3)),
    Case("Flatten", 0, -1, inputs=x(2, 3, 4)),
    Case("Unflatten", 1, (2, 3), inputs=x(2, 6)),
    Case("Unflatten", -1, [3, 2], inputs=x(2, 6)),
    Case("CosineSimilarity", inputs=pair(3, 4)),
    Case("CosineSimilarity", dim=0, eps=1e-6, inputs=pair(3, 4)),
    Case("PairwiseDistance", inputs=pair(3, 4)),
    Case("PairwiseDistance", p=1.0, eps=1e-5, keepdim=True, inputs=pair(3, 4)),
    # -- linear, embeddings --------------------------------------------------------------------------------
    Case("Linear", 3, 4, inputs=x(2, 3)),
    Case("Linear", 3, 4, bias=False, inputs=x(2, 5, 3)),
    Case("Bilinear", 3, 2, 4, inputs=lambda: [randn(5, 3), randn(5, 2)]),
    Case("Bilinear", 3, 2, 4, bias=False, inputs=lambda: [randn(5, 3), randn(5, 2)]),
    Case("LazyLinear", 4, inputs=x(2, 3)),
    Case("Embedding", 10, 3, inputs=lambda: [ints(10, 2, 5)]),
    Case("Embedding", 10, 3, padding_idx=2, inputs=lambda: [ints(10, 2, 5)]),
    Case("Embedding", 10, 3, padding_idx=-1, max_norm=1.0, norm_type=1.0, inputs=lambda: [ints(10, 7)]),
    Case("EmbeddingBag", 10, 3, inputs=lambda: [ints(10, 2, 4)]),
    Case("EmbeddingBag", 10, 3, mode="sum", inputs=lambda: [ints(10, 7), T(np.array([0, 3])), randn(7)],
         id="EmbeddingBag(10, 3, mode='sum')-(offsets, per_sample_weights)"),
    Case("Embedding", randn(6, 3), factory="from_pretrained", inputs=lambda: [ints(6, 2, 4)]),
    Case("Embedding", randn(6, 3), factory="from_pretrained", freeze=False, padding_idx=1, max_norm=2.0,
         inputs=lambda: [ints(6, 2, 4)]),
    Case("EmbeddingBag", randn(6, 3), factory="from_pretrained", mode="max", inputs=lambda: [ints(6, 2, 4)]),
    Case("EmbeddingBag", 10, 3, mode="sum", padding_idx=0, inputs=lambda: [ints(10, 2, 4)]),
    Case("EmbeddingBag", 10, 3, mode="max", include_last_offset=True,
         inputs=lambda: [ints(10, 6), T(np.array([0, 2, 6]))]),
    # -- dropout ------------------------------------------------------------------------------------------
    *[Case(name, inputs=x(*shape), random=True) for name, shape in
      [("Dropout", (2, 3)), ("Dropout1d", (2, 3, 4)), ("Dropout2d", (2, 3, 4, 5)), ("Dropout3d", (2, 3, 4, 5, 6)),
       ("AlphaDropout", (2, 3)), ("FeatureAlphaDropout", (2, 3, 4, 5))]],
    Case("Dropout", 0.2, True, inputs=x(2, 3), random=True),
    Case("Dropout", p=0.0, inputs=x(2, 3)),
    Case("Dropout2d", p=0.3, inplace=True, inputs=x(2, 3, 4, 4), random=True),
    # -- convolution ---------------------------------------------------------------------------------------
    Case("Conv1d", 2, 4, 3, inputs=x(2, 2, 7)),
    Case("Conv1d", 4, 6, 3, stride=2, padding=1, dilation=2, groups=2, bias=False, padding_mode="circular",
         inputs=x(2, 4, 9)),
    Case("Conv1d", 2, 4, 3, padding="same", padding_mode="reflect", inputs=x(2, 2, 7)),
    Case("Conv2d", 2, 4, 3, inputs=x(2, 2, 6, 5)),
    Case("Conv2d", 4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
         padding_mode="replicate", inputs=x(2, 4, 7, 6)),
    Case("Conv2d", 2, 4, 3, padding="valid", bias=False, inputs=x(2, 2, 6, 5)),
    Case("Conv2d", 2, 4, 4, padding="same", padding_mode="zeros", dilation=2, inputs=x(1, 2, 7, 8)),
    Case("Conv3d", 2, 4, 2, inputs=x(1, 2, 4, 3, 4)),
    Case("Conv3d", 2, 4, (2, 1, 2), stride=2, padding=1, padding_mode="reflect", bias=False,
         inputs=x(1, 2, 4, 3, 4)),
    Case("ConvTranspose1d", 2, 4, 3, inputs=x(2, 2, 5)),
    Case("ConvTranspose1d", 4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2, bias=False,
         inputs=x(2, 4, 5)),
    Case("ConvTranspose2d", 2, 4, 3, inputs=x(2, 2, 4, 5)),
    Case("ConvTranspose2d", 2, 4, 3, stride=2, inputs=x(2, 2, 4, 5), kw=dict(output_size=[10, 12])),
    Case("ConvTranspose2d", 4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2,
         inputs=x(1, 4, 4, 3)),
    Case("ConvTranspose3d", 2, 4, 2, inputs=x(1, 2, 3, 2, 3)),
    Case("ConvTranspose3d", 2, 4, 3, stride=2, padding=1, bias=False, inputs=x(1, 2, 3, 2, 3)),
    Case("LazyConv1d", 4, 3, inputs=x(2, 2, 7)),
    Case("LazyConv2d", 4, 3, stride=2, bias=False, inputs=x(2, 2, 6, 5)),
    Case("LazyConv3d", 4, 2, inputs=x(1, 2, 4, 3, 4)),
    Case("LazyConvTranspose1d", 4, 3, inputs=x(2, 2, 5)),
    Case("LazyConvTranspose2d", 4, 3, stride=2, inputs=x(2, 2, 4, 5)),
    Case("LazyConvTranspose3d", 4, 2, inputs=x(1, 2, 3, 2, 3)),
    Case("Fold", (4, 5), 2, inputs=x(2, 12, 12)),
    Case("Fold", output_size=5, kernel_size=(2, 3), dilation=1, padding=1, stride=2, inputs=x(2, 12, 9)),
    Case("Unfold", 2, inputs=x(2, 3, 4, 5)),
    Case("Unfold", kernel_size=(2, 3), dilation=2, padding=1, stride=(1, 2), inputs=x(2, 3, 5, 6)),
    # -- pooling --------------------------------------------------------------------------------------------
    Case("MaxPool1d", 2, inputs=x(2, 3, 7)),
    Case("MaxPool1d", 3, stride=2, padding=1, dilation=2, return_indices=True, ceil_mode=True, inputs=x(2, 3, 9)),
    Case("MaxPool2d", 2, inputs=x(2, 3, 6, 5)),
    Case("MaxPool2d", (3, 2), stride=(2, 1), padding=1, ceil_mode=True, inputs=x(2, 3, 6, 5)),
    Case("MaxPool3d", 2, inputs=x(1, 2, 4, 4, 5)),
    Case("MaxPool3d", 2, stride=1, return_indices=True, inputs=x(1, 2, 3, 3, 3)),
    Case("AvgPool1d", 3, inputs=x(2, 3, 7)),
    Case("AvgPool1d", 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False, inputs=x(2, 3, 8)),
    Case("AvgPool2d", 2, inputs=x(2, 3, 6, 5)),
    Case("AvgPool2d", (3, 2), stride=(2, 1), padding=1, ceil_mode=True, count_include_pad=False,
         divisor_override=2, inputs=x(2, 3, 6, 5)),
    Case("AvgPool3d", 2, inputs=x(1, 2, 4, 4, 5)),
    Case("AvgPool3d", 3, stride=2, padding=1, count_include_pad=False, inputs=x(1, 2, 5, 4, 5)),
    Case("LPPool1d", 2, 3, inputs=lambda: [rand(2, 3, 7, low=0.1)]),
    Case("LPPool1d", 1.5, 2, stride=1, ceil_mode=True, inputs=lambda: [rand(2, 3, 7, low=0.1)]),
    Case("LPPool2d", 2, 2, inputs=lambda: [rand(2, 3, 6, 5, low=0.1)]),
    Case("LPPool2d", 3.0, (2, 3), stride=(1, 2), inputs=lambda: [rand(2, 3, 6, 5, low=0.1)]),
    Case("LPPool3d", 2, 2, inputs=lambda: [rand(1, 2, 4, 4, 4, low=0.1)]),
    Case("AdaptiveAvgPool1d", 3, inputs=x(2, 3, 7)),
    Case("AdaptiveAvgPool2d", (3, None), inputs=x(2, 3, 7, 5)),
    Case("AdaptiveAvgPool2d", 2, inputs=x(2, 3, 7, 5)),
    Case("AdaptiveAvgPool3d", (2, 1, 3), inputs=x(1, 2, 4, 4, 5)),
    Case("AdaptiveMaxPool1d", 3, inputs=x(2, 3, 7)),
    Case("AdaptiveMaxPool1d", 3, return_indices=True, inputs=x(2, 3, 7)),
    Case("AdaptiveMaxPool2d", (3, 2), inputs=x(2, 3, 7, 5)),
    Case("AdaptiveMaxPool3d", 2, return_indices=True, inputs=x(1, 2, 4, 4, 5)),
    # (their windows' offsets are drawn at each call, in eval too: given here)
    Case("FractionalMaxPool2d", 2, output_size=3, _random_samples=rand(1, 2, 2), inputs=x(1, 2, 7, 7)),
    Case("FractionalMaxPool2d", (2, 2), output_ratio=(0.5, 0.5), return_indices=True, _random_samples=rand(2, 2, 2),
         inputs=x(2, 2, 8, 8)),
    Case("FractionalMaxPool3d", 2, output_size=(2, 2, 2), _random_samples=rand(1, 2, 3), inputs=x(1, 2, 5, 5, 5)),
    Case("MaxUnpool1d", 2, inputs=lambda: [randn(2, 3, 4), T(np.tile(np.array([1, 2, 5, 6]), (2, 3, 1)))]),
    Case("MaxUnpool2d", 2, stride=2, padding=0,
         inputs=lambda: [randn(1, 2, 2, 2), T(np.tile(np.array([[0, 3], [9, 14]]), (1, 2, 1, 1)))]),
    Case("MaxUnpool3d", (2, 2, 2),
         inputs=lambda: [randn(1, 1, 1, 1, 2), T(np.array([0, 3]).reshape(1, 1, 1, 1, 2))]),
    # -- padding, shuffles, resampling --------------------------------------------------------------------
    *[Case(f"{kind}Pad{d}d", 1, inputs=x(*(2, 3, 4, 5, 6)[:d + 2])) for d in (1, 2, 3)
      for kind in ("Circular", "Reflection", "Replication", "Zero")],
    *[Case(f"ConstantPad{d}d", 1, 2.5, inputs=x(*(2, 3, 4, 5, 6)[:d + 2])) for d in (1, 2, 3)],
    Case("CircularPad1d", (1, 2), inputs=x(2, 3, 4)),
    Case("ReflectionPad2d", (1, 2, 0, 1), inputs=x(2, 3, 4, 5)),
    Case("ReplicationPad3d", (1, 2, 0, 1, 1, 0), inputs=x(1, 2, 3, 4, 5)),
    Case("ZeroPad2d", (1, 2, 0, 1), inputs=x(2, 3, 4, 5)),
    Case("ConstantPad2d", (1, 0, 2, 1), -1, inputs=x(2, 3, 4, 5)),
    Case("PixelShuffle", 2, inputs=x(2, 8, 3, 3)),
    Case("PixelUnshuffle", 2, inputs=x(2, 2, 4, 6)),
    Case("ChannelShuffle", 2, inputs=x(2, 4, 3, 3)),
    Case("Upsample", scale_factor=2, inputs=x(2, 3, 4, 5)),
    Case("Upsample", size=(5, 7), mode="bilinear", align_corners=True, inputs=x(2, 3, 4, 5)),
    Case("Upsample", scale_factor=1.5, mode="bicubic", inputs=x(2, 3, 4, 5)),
    Case("Upsample", scale_factor=(2.0, 1.5), mode="nearest", recompute_scale_factor=True, inputs=x(2, 3, 4, 5)),
    Case("Upsample", size=7, mode="linear", inputs=x(2, 3, 4)),
    Case("UpsamplingNearest2d", scale_factor=2, inputs=x(2, 3, 4, 5)),
    Case("UpsamplingBilinear2d", size=(6, 7), inputs=x(2, 3, 4, 5)),
    # -- normalisation ----------------------------------------------------------------------------------
    Case("BatchNorm1d", 3, inputs=x(4, 3)),
    Case("BatchNorm1d", 3, eps=1e-3, momentum=None, affine=False, inputs=x(4, 3, 5)),
    Case("BatchNorm1d", 3, track_running_stats=False, inputs=x(4, 3)),
    Case("BatchNorm1d", 3, bias=False, inputs=x(4, 3)),
    Case("BatchNorm2d", 3, inputs=x(2, 3, 4, 5)),
    Case("BatchNorm2d", 3, momentum=0.3, affine=False, track_running_stats=False, inputs=x(2, 3, 4, 5)),
    Case("BatchNorm3d", 2, inputs=x(2, 2, 3, 4, 3)),
    Case("LazyBatchNorm1d", inputs=x(4, 3)),
    Case("LazyBatchNorm2d", affine=False, inputs=x(2, 3, 4, 5)),
    Case("LazyBatchNorm3d", inputs=x(2, 2, 3, 4, 3)),
    Case("SyncBatchNorm", 3),  # (its forward needs a process group)
    Case("SyncBatchNorm", 3, eps=1e-3, momentum=None, bias=False),
    Case("InstanceNorm1d", 3, inputs=x(2, 3, 5)),
    Case("InstanceNorm1d", 3, affine=True, track_running_stats=True, inputs=x(2, 3, 5)),
    Case("InstanceNorm2d", 3, inputs=x(2, 3, 4, 5)),
    Case("InstanceNorm2d", 3, eps=1e-3, momentum=0.2, affine=True, inputs=x(2, 3, 4, 5)),
    Case("InstanceNorm3d", 2, track_running_stats=True, inputs=x(2, 2, 3, 4, 3)),
    Case("LazyInstanceNorm1d", inputs=x(2, 3, 5)),
    Case("LazyInstanceNorm2d", affine=True, inputs=x(2, 3, 4, 5)),
    Case("LazyInstanceNorm3d", track_running_stats=True, inputs=x(2, 2, 3, 4, 3)),
    Case("LayerNorm", 4, inputs=x(2, 3, 4)),
    Case("LayerNorm", [3, 4], eps=1e-3, elementwise_affine=False, inputs=x(2, 3, 4)),
    Case("LayerNorm", (4,), bias=False, inputs=x(2, 3, 4)),
    Case("GroupNorm", 2, 4, inputs=x(2, 4, 3)),
    Case("GroupNorm", 2, 4, eps=1e-3, affine=False, inputs=x(2, 4, 3, 2)),
    Case("GroupNorm", 1, 4, bias=False, inputs=x(2, 4, 3, 2)),
    Case("LocalResponseNorm", 2, inputs=x(2, 5, 3, 3)),
    Case("LocalResponseNorm", 3, alpha=1e-2, beta=0.5, k=2.0, inputs=x(2, 5, 4)),
    Case("CrossMapLRN2d", 3, alpha=1e-2, beta=0.75, k=1.0, inputs=x(2, 5, 3, 3)),
    Case("RMSNorm", 4, inputs=x(2, 3, 4)),
    Case("RMSNorm", [3, 4], eps=1e-3, elementwise_affine=False, inputs=x(2, 3, 4)),
    # -- recurrent ---------------------------------------------------------------------------------------
    Case("RNN", 3, 4, inputs=x(5, 2, 3)),
    Case("RNN", 3, 4, num_layers=2, nonlinearity="relu", bias=False, batch_first=True, bidirectional=True,
         inputs=x(2, 5, 3)),
    Case("LSTM", 3, 4, inputs=x(5, 2, 3)),
    Case("LSTM", 3, 4, num_layers=2, batch_first=True, bidirectional=True, inputs=x(2, 5, 3)),
    Case("LSTM", 3, 4, proj_size=2, num_layers=2, inputs=x(5, 2, 3)),
    Case("LSTM", 3, 4, num_layers=2, inputs=lambda: [randn(5, 2, 3), (randn(2, 2, 4), randn(2, 2, 4))],
         id="LSTM(3, 4, num_layers=2)-(h0, c0)"),
    Case("GRU", 3, 4, batch_first=True, inputs=lambda: [randn(2, 5, 3), randn(1, 2, 4)],
         id="GRU(3, 4, batch_first=True)-(h0)"),
    Case("RNN", 3, 4, bidirectional=True, inputs=lambda: [randn(5, 3), randn(2, 4)],
         id="RNN(3, 4, bidirectional=True)-(h0)"),
    Case("LSTMCell", 3, 4, inputs=lambda: [randn(2, 3), (randn(2, 4), randn(2, 4))], id="LSTMCell(3, 4)-(h, c)"),
    Case("LSTM", 3, 4, num_layers=2, dropout=0.5, inputs=x(5, 2, 3), random=True),
    Case("GRU", 3, 4, inputs=x(5, 2, 3)),
    Case("GRU", 3, 4, num_layers=2, bias=False, bidirectional=True, inputs=x(5, 3)),
    Case("RNNBase", "LSTM", 3, 4, num_layers=2),  # (PyTorch's has no forward)
    Case("RNNCell", 3, 4, inputs=x(2, 3)),
    Case("RNNCell", 3, 4, bias=False, nonlinearity="relu", inputs=x(3)),
    Case("LSTMCell", 3, 4, inputs=x(2, 3)),
    Case("LSTMCell", 3, 4, bias=False, inputs=x(2, 3)),
    Case("GRUCell", 3, 4, inputs=x(2, 3)),
    Case("GRUCell", 3, 4, bias=False, inputs=x(2, 3)),
    # -- attention, transformers ------------------------------------------------------------------------
    Case("MultiheadAttention", 4, 2, inputs=lambda: [randn(3, 2, 4)] * 3),
    Case("MultiheadAttention", 4, 2, bias=False, batch_first=True, inputs=lambda: [randn(2, 3, 4)] * 3),
    Case("MultiheadAttention", 4, 2, add_bias_kv=True, add_zero_attn=True, kdim=3, vdim=5,
         inputs=lambda: [randn(3, 2, 4), randn(6, 2, 3), randn(6, 2, 5)]),
    Case("MultiheadAttention", 4, 2, dropout=0.5, inputs=lambda: [randn(3, 2, 4)] * 3, random=True),
    Case("MultiheadAttention", 4, 2, batch_first=True, inputs=lambda: [randn(2, 3, 4), randn(2, 5, 4), randn(2, 5, 4)],
         kw=dict(key_padding_mask=T(np.array([[False] * 4 + [True], [False] * 5])), average_attn_weights=False)),
    Case("MultiheadAttention", 4, 2, inputs=lambda: [randn(3, 2, 4)] * 3,
         kw=dict(attn_mask=T(np.triu(np.ones((3, 3), bool), 1)), need_weights=False)),
    Case("MultiheadAttention", 4, 2, inputs=lambda: [randn(3, 2, 4)] * 3,
         kw=dict(attn_mask=T(np.triu(np.full((3, 3), -np.inf), 1)), is_causal=True)),
    Case("TransformerEncoderLayer", 4, 2, dim_feedforward=8, inputs=x(3, 2, 4), random=True),
    Case("TransformerEncoderLayer", 4, 2, dim_feedforward=8, dropout=0.0, activation="gelu", batch_first=True,
         norm_first=True, inputs=x(2, 3, 4)),
    Case("TransformerEncoderLayer", 4, 2, 8, 0.0, bias=False, layer_norm_eps=1e-3, inputs=x(3, 2, 4)),
    Case("TransformerDecoderLayer", 4, 2, dim_feedforward=8, inputs=pair(3, 2, 4), random=True),
    Case("TransformerDecoderLayer", 4, 2, dim_feedforward=8, dropout=0.0, batch_first=True, norm_first=True,
         inputs=pair(2, 3, 4)),
    Case("TransformerEncoder", New(lambda: nn.TransformerEncoderLayer(4, 2, 8, 0.0),
                                   lambda: tnn.TransformerEncoderLayer(4, 2, 8, 0.0)), 2, inputs=x(3, 2, 4)),
    Case("TransformerEncoder", New(lambda: nn.TransformerEncoderLayer(4, 2, 8, 0.0, batch_first=True),
                                   lambda: tnn.TransformerEncoderLayer(4, 2, 8, 0.0, batch_first=True)),
         num_layers=1, norm=New(lambda: nn.LayerNorm(4), lambda: tnn.LayerNorm(4)), enable_nested_tensor=False,
         inputs=x(2, 3, 4), kw=dict(src_key_padding_mask=T(np.array([[False, False, True], [False] * 3])))),
    Case("TransformerDecoder", New(lambda: nn.TransformerDecoderLayer(4, 2, 8, 0.0),
                                   lambda: tnn.TransformerDecoderLayer(4, 2, 8, 0.0)),
         2, norm=New(lambda: nn.LayerNorm(4), lambda: tnn.LayerNorm(4)), inputs=pair(3, 2, 4)),
    Case("Transformer", 4, 2, 1, 1, 8, inputs=pair(3, 2, 4), random=True),
    Case("Transformer", d_model=4, nhead=2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=8,
         dropout=0.0, batch_first=True, inputs=pair(2, 3, 4)),
    # -- losses -------------------------------------------------------------------------------------------
    Case("L1Loss", inputs=pair(3, 4)),
    Case("L1Loss", reduction="sum", inputs=pair(3, 4)),
    Case("MSELoss", inputs=pair(3, 4)),
    Case("MSELoss", reduction="none", inputs=pair(3, 4)),
    Case("HuberLoss", inputs=pair(3, 4)),
    Case("HuberLoss", reduction="sum", delta=0.5, inputs=pair(3, 4)),
    Case("SmoothL1Loss", inputs=pair(3, 4)),
    Case("SmoothL1Loss", beta=0.5, reduction="none", inputs=pair(3, 4)),
    Case("SoftMarginLoss", inputs=lambda: [randn(3, 4), signs(3, 4)]),
    Case("BCELoss", inputs=lambda: [rand(3, 4, low=0.05, high=0.95), rand(3, 4)]),
    Case("BCELoss", weight=rand(4), reduction="sum", inputs=lambda: [rand(3, 4, low=0.05, high=0.95), rand(3, 4)]),
    Case("BCEWithLogitsLoss", inputs=pair(3, 4)),
    Case("BCEWithLogitsLoss", weight=rand(4), pos_weight=rand(4), reduction="none",
         inputs=lambda: [randn(3, 4), rand(3, 4)]),
    Case("CrossEntropyLoss", inputs=lambda: [randn(5, 4), ints(4, 5)]),
    Case("CrossEntropyLoss", weight=rand(4), ignore_index=1, label_smoothing=0.1, reduction="sum",
         inputs=lambda: [randn(5, 4, 2), ints(4, 5, 2)]),
    Case("LinearCrossEntropyLoss", 3, 4, inputs=lambda: [randn(5, 3), ints(4, 5)]),
    Case("LinearCrossEntropyLoss", 3, 4, out_features=(2,), bias=True, weight=rand(4), ignore_index=1,
         label_smoothing=0.1, reduction="sum", inputs=lambda: [randn(5, 3), ints(4, 5, 2)]),
    Case("NLLLoss", inputs=lambda: [randn(5, 4), ints(4, 5)]),
    Case("NLLLoss", weight=rand(4), ignore_index=0, inputs=lambda: [randn(5, 4), ints(4, 5)]),
    Case("NLLLoss2d", inputs=lambda: [randn(2, 4, 3, 3), ints(4, 2, 3, 3)]),
    Case("KLDivLoss", inputs=pair(3, 4)),
    Case("KLDivLoss", reduction="batchmean", log_target=True, inputs=pair(3, 4)),
    Case("PoissonNLLLoss", inputs=pair(3, 4)),
    Case("PoissonNLLLoss", log_input=False, full=True, eps=1e-6, inputs=lambda: [rand(3, 4), rand(3, 4, high=3)]),
    Case("GaussianNLLLoss", inputs=lambda: [randn(3, 4), randn(3, 4), rand(3, 4, low=0.1)]),
    Case("GaussianNLLLoss", full=True, eps=1e-3, reduction="sum",
         inputs=lambda: [randn(3, 4), randn(3, 4), rand(3, 1, low=0.1)]),
    Case("HingeEmbeddingLoss", inputs=lambda: [randn(3, 4), signs(3, 4)]),
    Case("HingeEmbeddingLoss", margin=0.5, reduction="none", inputs=lambda: [randn(3, 4), signs(3, 4)]),
    Case("MarginRankingLoss", inputs=lambda: [randn(5), randn(5), signs(5)]),
    Case("MarginRankingLoss", margin=0.3, inputs=lambda: [randn(5), randn(5), signs(5)]),
    Case("CosineEmbeddingLoss", inputs=lambda: [randn(3, 4), randn(3, 4), signs(3)]),
    Case("CosineEmbeddingLoss", margin=0.2, reduction="sum", inputs=lambda: [randn(3, 4), randn(3, 4), signs(3)]),
    Case("MultiMarginLoss", inputs=lambda: [randn(5, 4), ints(4, 5)]),
    Case("MultiMarginLoss", p=2, margin=0.5, weight=rand(4), inputs=lambda: [randn(5, 4), ints(4, 5)]),
    Case("MultiLabelMarginLoss", inputs=lambda: [randn(2, 4), T(np.array([[3, 0, -1, 1], [1, 2, 3, -1]]))]),
    Case("MultiLabelSoftMarginLoss", inputs=lambda: [randn(3, 4), ints(2, 3, 4)]),
    Case("MultiLabelSoftMarginLoss", weight=rand(4), inputs=lambda: [randn(3, 4), ints(2, 3, 4)]),
    Case("TripletMarginLoss", inputs=lambda: [randn(3, 4), randn(3, 4), randn(3, 4)]),
    Case("TripletMarginLoss", margin=0.5, p=1.0, swap=True, inputs=lambda: [randn(3, 4), randn(3, 4), randn(3, 4)]),
    Case("TripletMarginWithDistanceLoss", inputs=lambda: [randn(3, 4), randn(3, 4), randn(3, 4)]),
    Case("TripletMarginWithDistanceLoss", margin=0.5, swap=True,
         distance_function=Fn(nn.PairwiseDistance(p=1.0), tnn.PairwiseDistance(p=1.0)),
         inputs=lambda: [randn(3, 4), randn(3, 4), randn(3, 4)]),
    Case("CTCLoss", inputs=lambda: [T(np.log(rng.dirichlet(np.ones(4), (6, 2)))), ints(4, 2, 3, low=1),
                                    T(np.array([6, 5])), T(np.array([3, 2]))]),
    Case("CTCLoss", blank=3, reduction="sum", zero_infinity=True,
         inputs=lambda: [T(np.log(rng.dirichlet(np.ones(4), (6, 2)))), ints(3, 2, 3),
                         T(np.array([6, 5])), T(np.array([3, 2]))]),
    Case("AdaptiveLogSoftmaxWithLoss", 4, 10, [3, 6], inputs=lambda: [randn(5, 4), ints(10, 5)]),
    Case("AdaptiveLogSoftmaxWithLoss", 8, 10, (3, 6), div_value=2.0, head_bias=True,
         inputs=lambda: [randn(5, 8), ints(10, 5)]),
    Case("AdaptiveLogSoftmaxWithLoss", 8, 10, [3, 6], div_value=2.0, method="log_prob", inputs=x(5, 8)),
    Case("AdaptiveLogSoftmaxWithLoss", 8, 10, [3, 6], div_value=2.0, method="predict", inputs=x(5, 8)),
    Case("Transformer", d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8,
         dropout=0.0, inputs=pair(3, 2, 4),
         kw=dict(tgt_mask=T(np.triu(np.full((3, 3), -np.inf), 1)), tgt_is_causal=True,
                 src_key_padding_mask=T(np.array([[False, False, True], [False] * 3])))),
    Case("TransformerEncoderLayer", 4, 2, 8, 0.0, batch_first=True, inputs=x(2, 3, 4),
         kw=dict(src_mask=T(np.triu(np.ones((3, 3), bool), 1)))),
]

# classes that both have and this file does not build: bases, containers and wrappers (a check of
# their repr or state would test their contents; test_containers_print_as_pytorchs prints some)
NOT_BUILT = {"Module", "Container", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict",
             "DataParallel", "RNNCellBase"}


def test_containers_print_as_pytorchs():
    """Their repr, with the dtype named as this project names it (README: deliberate differences)."""
    def build(owner, tensors):
        return [owner.ParameterList([owner.Parameter(tensors.ones(2)), owner.Parameter(tensors.ones(2, 3).double()),
                                     3]),
                owner.ParameterDict({"a": owner.Parameter(tensors.ones(2)),
                                     "b": owner.Parameter(tensors.zeros(1).double(), requires_grad=False)}),
                owner.ModuleDict({"x": owner.ReLU(), "y": owner.Linear(1, 1)}), owner.ParameterList(),
                owner.Sequential(), owner.ModuleList([owner.Tanh(), owner.Tanh(), owner.ReLU()]),
                owner.Sequential(collections.OrderedDict(fc=owner.Linear(1, 1), act=owner.ReLU()))]

    for ours, theirs in zip(build(nn, autograd), build(tnn, torch)):
        assert repr(ours) == repr(theirs).replace("[torch.float", "[autograd.float")


def test_every_class_both_have_is_covered():
    both = {name for name, obj in vars(tnn).items()
            if inspect.isclass(obj) and issubclass(obj, tnn.Module) and hasattr(nn, name)}
    assert both - NOT_BUILT - {case.name for case in CASES} == set()


# public methods PyTorch's class has and ours has not, each with why
MISSING_METHODS = {
    "DataParallel": {"gather", "parallel_apply", "replicate", "scatter"},  # one device here: nothing to spread
}


@pytest.mark.parametrize("name", sorted({case.name for case in CASES} | {"Module", "Sequential", "ModuleList",
                                                                          "ModuleDict", "ParameterList",
                                                                          "ParameterDict", "DataParallel"}))
def test_public_methods(name):
    theirs, ours = getattr(tnn, name), getattr(nn, name)
    expected = {n for n in dir(theirs) if not n.startswith("_") and callable(getattr(theirs, n))}
    expected -= {"bfloat16", "T_destination"}  # no bfloat16 dtype here; T_destination is a typing variable
    assert sorted(n for n in expected if not hasattr(ours, n)) == sorted(MISSING_METHODS.get(name, ()))


# -- comparisons ----------------------------------------------------------------------------------------


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _members(module, kind):
    return [(name, tuple(t.shape), _dtype_name(t.dtype), bool(t.requires_grad))
            for name, t in getattr(module, f"named_{kind}")()]


def _public_attributes(module):
    """The plain attributes a program may read: not the tensors or children (compared elsewhere)."""
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, (torch.Tensor, tnn.Module))}


def _same_value(ours, theirs):
    if callable(theirs) and not isinstance(theirs, type):
        return callable(ours) and getattr(ours, "__name__", None) == getattr(theirs, "__name__", None)
    if isinstance(theirs, torch.dtype):
        return _dtype_name(ours) == _dtype_name(theirs)
    if isinstance(theirs, (tuple, list)):
        return (type(ours) is type(theirs) and len(ours) == len(theirs)
                and all(_same_value(a, b) for a, b in zip(ours, theirs)))
    return type(ours) is type(theirs) and ours == theirs


def _outputs(value):
    """Every tensor in a forward's result, in order, as float64/int64 arrays."""
    if value is None:
        return []
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _outputs(v)]
    return [value.detach().numpy() if isinstance(value, torch.Tensor) else value.numpy()]


def _materialise(case, ours, theirs, inputs):
    """A lazy module gets its shapes from one forward call (on float32 inputs: it makes float32
    parameters)."""
    if case.name.startswith("Lazy"):
        inputs = _single(inputs)
        ours(*_for("ours", inputs), **_for("ours", case.forward_kwargs))
        theirs(*_for("torch", inputs), **_for("torch", case.forward_kwargs))


@pytest.fixture(params=CASES, ids=lambda case: case.id)
def case(request):
    return request.param


def _pair(case):
    inputs = case.inputs() if case.inputs else None
    ours, theirs = case.build("ours"), case.build("torch")
    if inputs is not None:
        _materialise(case, ours, theirs, inputs)
    return ours, theirs, inputs


def test_repr(case):
    ours, theirs, _ = _pair(case)
    assert repr(ours) == repr(theirs)


def test_parameters_buffers_and_state_dict_keys(case):
    ours, theirs, _ = _pair(case)
    assert _members(ours, "parameters") == _members(theirs, "parameters")
    assert _members(ours, "buffers") == _members(theirs, "buffers")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.state_dict()._metadata == theirs.state_dict()._metadata  # each module's version
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == [
        (n, type(m).__name__) for n, m in theirs.named_modules()]


@pytest.mark.parametrize("metadata", [None, 1, 2])
@pytest.mark.parametrize("name", ["BatchNorm1d", "InstanceNorm2d", "SyncBatchNorm"])
def test_old_checkpoint_without_num_batches_tracked(name, metadata):
    """A state_dict older than version 2 (or a plain dict) may lack num_batches_tracked: it loads strictly,
    keeping the module's own count, as PyTorch's; at version 2 the key is missing."""
    def attempt(owner, tensor):
        outer = owner.Sequential(getattr(owner, name)(3, track_running_stats=True))
        outer[0].num_batches_tracked.fill_(5)
        state = {k: tensor(v.numpy()) for k, v in outer.state_dict().items() if "num_batches" not in k}
        if metadata is not None:
            state = type(outer.state_dict())(state)
            state._metadata = {"": {"version": 1}, "0": {"version": metadata}}
        try:
            outer.load_state_dict(state)
        except RuntimeError as error:
            return type(error).__name__, "num_batches_tracked" in str(error)
        return int(outer[0].num_batches_tracked.item())

    assert attempt(nn, autograd.tensor) == attempt(tnn, torch.tensor) == (
        5 if metadata != 2 else ("RuntimeError", True))


def test_public_attributes(case):
    """Of the module and of every module inside it (a TransformerEncoderLayer's self_attn.batch_first)."""
    ours, theirs, _ = _pair(case)
    differ = {}
    for (path, inner), (_, their_inner) in zip(ours.named_modules(), theirs.named_modules()):
        for name, value in _public_attributes(their_inner).items():
            if not _same_value(getattr(inner, name, "<missing>"), value):
                differ[f"{path}.{name}" if path else name] = (getattr(inner, name, "<missing>"), value)
        # what PyTorch registers as None (bias=False's bias, a norm's absent running_mean): None here too
        for registry in ("_parameters", "_buffers", "_modules"):
            for name in [n for n, v in getattr(their_inner, registry).items() if v is None]:
                if getattr(inner, name, "<missing>") is not None:
                    differ[f"{path}.{name}" if path else name] = (getattr(inner, name, "<missing>"), None)
    assert differ == {}
    assert ours.training is theirs.training is True


def _same_forward(case, ours, theirs, inputs, mode, tolerance=None, single=False):
    tolerance = tolerance or dict(rtol=1e-9, atol=1e-10)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    with torch.no_grad():
        got = _outputs(case.call(ours, "ours", _for("ours", inputs), single))
        want = _outputs(case.call(theirs, "torch", _for("torch", inputs), single))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, **tolerance)


def _same_state(ours, theirs):
    """After the forward calls (running statistics updated in training), the same state."""
    got, want = ours.state_dict(), theirs.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert _dtype_name(got[key].dtype) == _dtype_name(want[key].dtype), key  # .double() left int64 alone
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-9, atol=1e-10, err_msg=key)


def _modes(case):
    return ["eval"] if case.random else ["train", "eval"]


def test_state_dict_from_torch_gives_the_same_forward(case):
    if case.inputs is None:
        pytest.skip("no forward to compare (an abstract base, or one that needs a process group)")
    inputs = case.inputs()
    ours, theirs = case.build("ours", seed=1), case.build("torch")
    _materialise(case, ours, theirs, inputs)
    ours, theirs = ours.double(), theirs.double()
    ours.load_state_dict({k: autograd.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    for mode in _modes(case):
        _same_forward(case, ours, theirs, inputs, mode)
    _same_state(ours, theirs)


def _leaves(side, inputs):
    """The forward arguments of ``side``, the first one requiring grad where it is floating (a loss's
    target need not, and some may not; an Embedding's indices cannot)."""
    tensors = _for(side, inputs)
    if tensors[0].is_floating_point():
        tensors[0].requires_grad_()
    return tensors


# deliberate differences in gradients, each with why
GRADIENT_DIFFERENCES = {
    "CTCLoss": "deliberate: PyTorch's ctc_loss backward gives exp(log_probs) - posterior, the gradient it "
               "assumes a log_softmax below will turn into the right one; ours is the exact derivative with "
               "respect to log_probs (the two agree after a log_softmax, tests/test_ctc.py)",
    "CrossMapLRN2d": "deliberate: PyTorch's hand-written backward is not the derivative of its forward (its "
                     "own gradcheck fails); ours is the exact gradient of the same outputs "
                     "(tests/test_nn_cross_map_lrn.py)",
}
# PyTorch's own rounding, where a float64 gradient of its is not float64-exact
GRADIENT_RTOL = {}


def test_gradients_after_loading_torchs_state_dict(case, request):
    """In training mode (eval for the random ones), the gradients of a random projection of every output
    with respect to every parameter and the first input, as PyTorch's."""
    if case.name in GRADIENT_DIFFERENCES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=GRADIENT_DIFFERENCES[case.name]))
    if case.inputs is None:
        pytest.skip("no forward to compare (an abstract base, or one that needs a process group)")
    inputs = case.inputs()
    ours, theirs = case.build("ours", seed=1), case.build("torch")
    _materialise(case, ours, theirs, inputs)
    ours, theirs = ours.double(), theirs.double()
    ours.load_state_dict({k: autograd.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours.train(not case.random)
    theirs.train(not case.random)
    ours_in, theirs_in = _leaves("ours", inputs), _leaves("torch", inputs)
    # (a copy goes in, so that an inplace layer writes into a tensor that may be written)
    got = [o for o in _flat(case.call(ours, "ours", _copies(ours_in))) if o.dtype == autograd.float64]
    want = [o for o in _flat(case.call(theirs, "torch", _copies(theirs_in))) if o.dtype == torch.float64]
    if not any(o.requires_grad for o in want):
        pytest.skip("nothing to differentiate")
    projections = [np.random.default_rng(1).standard_normal(tuple(o.shape)) for o in want]
    sum(((o * autograd.tensor(r)).sum() for o, r in zip(got, projections) if o.requires_grad)).backward()
    sum(((o * torch.tensor(r)).sum() for o, r in zip(want, projections) if o.requires_grad)).backward()
    pairs = list(zip(ours.parameters(), theirs.parameters())) + [(ours_in[0], theirs_in[0])]
    for a, b in pairs:
        if b.grad is None:
            assert a.grad is None or not a.grad.numpy().any()
        else:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=GRADIENT_RTOL.get(case.name, 1e-8),
                                       atol=1e-10)


def _copies(tensors):
    return [t.clone() if getattr(t, "requires_grad", False) else t for t in tensors]


def _flat(value):
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return [] if value is None else [value]


def test_float32_forward_after_loading_torchs_state_dict(case):
    """The default dtype: float32 parameters and inputs give float32 outputs equal to PyTorch's to
    float32's precision (no silent float64 anywhere)."""
    if case.inputs is None:
        pytest.skip("no forward to compare (an abstract base, or one that needs a process group)")
    inputs = _single(case.inputs())
    ours, theirs = case.build("ours", seed=1, single=True), case.build("torch", single=True)
    _materialise(case, ours, theirs, inputs)
    ours.load_state_dict({k: autograd.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    for mode in _modes(case):
        _same_forward(case, ours, theirs, inputs, mode, tolerance=dict(rtol=1e-4, atol=1e-5), single=True)


def test_state_dict_from_ours_gives_the_same_forward(case):
    if case.inputs is None:
        pytest.skip("no forward to compare (an abstract base, or one that needs a process group)")
    inputs = case.inputs()
    ours, theirs = case.build("ours"), case.build("torch", seed=1)
    _materialise(case, ours, theirs, inputs)
    ours, theirs = ours.double(), theirs.double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    for mode in _modes(case):
        _same_forward(case, ours, theirs, inputs, mode)
    _same_state(ours, theirs)


# -- default initialisation ------------------------------------------------------------------------------

INIT_CASES = [
    Case("Linear", 256, 512), Case("Bilinear", 8, 12, 512), Case("Conv1d", 16, 32, 5),
    Case("Conv2d", 16, 32, 3, groups=4), Case("Conv3d", 8, 16, 3), Case("ConvTranspose1d", 16, 32, 5),
    Case("ConvTranspose2d", 16, 32, 3, groups=2), Case("ConvTranspose3d", 8, 16, 3), Case("Embedding", 2000, 32),
    Case("Embedding", 2000, 32, padding_idx=3), Case("EmbeddingBag", 2000, 32, padding_idx=0),
    Case("RNN", 64, 128, num_layers=2), Case("LSTM", 64, 128, proj_size=32), Case("GRU", 64, 128, bidirectional=True),
    Case("RNNCell", 64, 128), Case("LSTMCell", 64, 128), Case("GRUCell", 64, 128), Case("MultiheadAttention", 128, 4),
    Case("MultiheadAttention", 64, 4, kdim=32, vdim=48, add_bias_kv=True), Case("PReLU", 64),
    Case("BatchNorm2d", 64), Case("InstanceNorm1d", 64, affine=True, track_running_stats=True),
    Case("LayerNorm", 256), Case("GroupNorm", 4, 64), Case("RMSNorm", 64),
    Case("TransformerEncoderLayer", 64, 4, 128), Case("TransformerDecoderLayer", 64, 4, 128),
    Case("AdaptiveLogSoftmaxWithLoss", 64, 1000, [100, 500], head_bias=True),
]


@pytest.mark.parametrize("reset", [False, True], ids=["built", "reset_parameters"])
@pytest.mark.parametrize("case", INIT_CASES, ids=lambda case: case.id)
def test_default_initialisation_has_pytorchs_distribution(case, reset):
    """Each tensor of the state: a constant (zeros, ones, 0.25) exactly; a random one from the same family
    (its kurtosis) with the same spread (its standard deviation, and a uniform's bound: the largest |w|)
    within a few percent of PyTorch's, its mean near 0 where PyTorch's is. reset: the same after
    reset_parameters() on parameters overwritten with 7 (a program re-initialising a model)."""
    if reset and not hasattr(getattr(tnn, case.name), "reset_parameters"):
        pytest.skip(f"torch.nn.{case.name} has no reset_parameters")
    got, want = _pooled_state(case, "ours", reset), _pooled_state(case, "torch", reset)
    assert list(got) == list(want)
    for key, b in want.items():
        a = got[key]
        assert a.shape == b.shape, key
        if b.size and (b == b.flat[0]).all():
            assert (a == b.flat[0]).all(), key
            continue
        if (b == 0).any():  # an Embedding's padding row: zeros in the same places
            np.testing.assert_array_equal(a == 0, b == 0, err_msg=key)
        a, b = a[b != 0], b[b != 0]
        tolerance = 0.05 + 3 / np.sqrt(b.size)
        assert abs(a.std() / b.std() - 1) < tolerance, key
        assert abs(a.mean()) < abs(b.mean()) + 4 * b.std() / np.sqrt(b.size), key
        assert abs(_kurtosis(a) - _kurtosis(b)) < 0.6, key  # the family: 1.8 for a uniform, 3 for a normal
        if _kurtosis(b) < 2.4:  # a uniform's bound
            assert abs(np.abs(a).max() / np.abs(b).max() - 1) < tolerance, key


def _kurtosis(values):
    centred = values - values.mean()
    return (centred ** 4).mean() / (centred ** 2).mean() ** 2


def _pooled_state(case, side, reset, enough=2000, most=30):
    """{key: the values of that state tensor, from as many seeds as give ``enough`` of them (at most
    ``most`` seeds): a bias of 16 numbers says little about its distribution}."""
    def state(seed):
        module = case.build(side, seed)
        if reset:
            with (autograd if side == "ours" else torch).no_grad():
                for parameter in module.parameters():
                    parameter.fill_(7.0)
            module.reset_parameters()
        return module.state_dict()

    states = [state(0)]
    smallest = min((v.numel() for v in states[0].values()), default=enough) or enough
    for seed in range(1, min(most, -(-enough // smallest))):
        states.append(state(seed))
    return {key: np.stack([state[key].numpy().astype(np.float64) for state in states]) for key in states[0]}


# -- invalid arguments -------------------------------------------------------------------------------------

_LATE = pytest.mark.xfail(strict=True, reason="deliberate: refused at construction with a ValueError, as "
                          "PyTorch's RNN refuses it; PyTorch's RNNCell takes it and raises a RuntimeError at "
                          "the first forward call")

ERROR_CASES = [
    Case("Linear", -1, 3), Case("Linear", 3, -2), Case("Linear", 2.5, 3), Case("Bilinear", -1, 2, 3),
    Case("Conv2d", 3, 4, 3, groups=2), Case("Conv2d", 4, 3, 3, groups=2), Case("Conv2d", 4, 4, 3, padding_mode="foo"),
    Case("Conv2d", 4, 4, 3, padding="same", stride=2), Case("Conv2d", 4, 4, 3, padding="bad"),
    Case("Conv2d", 4, 4, 3, groups=0), Case("Conv2d", 4, 4, 3, groups=-1), Case("Conv1d", -1, 4, 3),
    Case("ConvTranspose2d", 4, 4, 3, padding_mode="circular"),
    Case("ConvTranspose2d", 3, 4, 3, groups=2), Case("LazyConv2d", 4, 3, groups=0),
    Case("Embedding", 10, 3, padding_idx=10), Case("Embedding", 10, 3, padding_idx=-11), Case("Embedding", -1, 3),
    Case("EmbeddingBag", 10, 3, padding_idx=10),
    Case("BatchNorm1d", -1), Case("GroupNorm", 3, 4), Case("GroupNorm", 0, 4), Case("LayerNorm", -1),
    Case("RMSNorm", -1), Case("SyncBatchNorm", -1),
    Case("MultiheadAttention", 10, 3), Case("MultiheadAttention", 10, 0), Case("MultiheadAttention", 0, 2),
    Case("RNN", 3, 4, nonlinearity="foo"), Case("RNN", 3, 4, num_layers=0), Case("RNN", 3, 0),
    Case("RNN", 3, 4, dropout=2.0), Case("RNN", 3, 4, dropout=True), Case("RNN", 3, 4.0),
    Case("LSTM", 3, 4, proj_size=4), Case("LSTM", 3, 4, proj_size=-1), Case("LSTM", 3, 4, num_layers=1.5),
    Case("GRU", 3, 4, proj_size=2), Case("RNN", 3, 4, proj_size=2), Case("RNNBase", "FOO", 3, 4),
    Case("LSTMCell", -1, 4), Case("GRUCell", 3, -4),
    Case("Dropout", 1.5), Case("Dropout", -0.1), Case("Dropout2d", 2), Case("AlphaDropout", 1.1),
    Case("TransformerEncoderLayer", 10, 3), Case("TransformerEncoderLayer", 8, 2, activation="foo"),
    Case("TransformerDecoderLayer", 8, 2, activation="tanh"), Case("Transformer", d_model=10, nhead=3),
    Case("Hardtanh", 1.0, -1.0), Case("Threshold"),
    Case("Unflatten", 1, 3), Case("Unflatten", 1, (2.0, 3)), Case("MaxPool2d"), Case("Fold", 4),
    Case("FractionalMaxPool2d", 2), Case("FractionalMaxPool2d", 2, output_ratio=1.5),
    Case("FractionalMaxPool2d", 2, output_size=3, output_ratio=0.5),
    Case("AdaptiveLogSoftmaxWithLoss", 4, 10, [6, 3]), Case("AdaptiveLogSoftmaxWithLoss", 4, 10, [3, 10]),
    Case("AdaptiveLogSoftmaxWithLoss", 4, 10, [3, 3]), Case("AdaptiveLogSoftmaxWithLoss", 4, 10, [0, 3]),
    Case("TripletMarginWithDistanceLoss", margin=0), Case("TripletMarginWithDistanceLoss", margin=-1.0),
    # PyTorch takes these and raises at the first forward call; ours may refuse them earlier, with the class
    # PyTorch raises then
    Case("Conv2d", 4, 4, (3, 3, 3), inputs=x(1, 4, 5, 5)), Case("ZeroPad2d", (1, 2, 3), inputs=x(1, 2, 3, 3)),
    Case("ConstantPad1d", (1, 2, 3), 0.0, inputs=x(1, 2, 3)),
    Case("MSELoss", reduction="avg", inputs=pair(3)), Case("KLDivLoss", reduction="batch", inputs=pair(3)),
    Case("BCEWithLogitsLoss", reduction="x", inputs=lambda: [randn(3), rand(3)]),
    Case("CrossEntropyLoss", reduction="foo", inputs=lambda: [randn(3, 4), ints(4, 3)]),
    Case("CTCLoss", reduction="foo", inputs=lambda: [T(np.log(rng.dirichlet(np.ones(4), (6, 2)))), ints(4, 2, 3, low=1),
                                                    T(np.array([6, 5])), T(np.array([3, 2]))]),
    pytest.param(Case("RNNCell", 3, 4, nonlinearity="sigmoid", inputs=x(2, 3)), marks=_LATE),
    # window sizes PyTorch's functions refuse (a zero stride divided by, a zero dilation or kernel computed with)
    Case("Conv2d", 2, 2, 3, stride=0, inputs=x(1, 2, 5, 5)), Case("Conv2d", 2, 2, 3, dilation=0, inputs=x(1, 2, 5, 5)),
    Case("Conv2d", 2, 2, 0, inputs=x(1, 2, 5, 5)), Case("Conv1d", 2, 2, 3, padding=-1, inputs=x(1, 2, 5)),
    Case("Conv3d", 2, 2, 2, stride=(1, 0, 1), inputs=x(1, 2, 3, 3, 3)),
    Case("ConvTranspose2d", 2, 2, 3, stride=0, inputs=x(1, 2, 5, 5)),
    Case("ConvTranspose1d", 2, 2, 3, dilation=0, inputs=x(1, 2, 5)), Case("MaxPool2d", 0, inputs=x(1, 1, 4, 4)),
    Case("MaxPool1d", 2, stride=0, inputs=x(1, 1, 4)), Case("MaxPool2d", 2, dilation=0, inputs=x(1, 1, 4, 4)),
    Case("AvgPool1d", 0, inputs=x(1, 1, 4)), Case("AvgPool2d", 2, padding=-1, inputs=x(1, 1, 4, 4)),
    Case("AvgPool3d", 2, stride=0, inputs=x(1, 1, 4, 4, 4)), Case("MaxPool3d", 2, padding=-1, inputs=x(1, 1, 4, 4, 4)),
    Case("PixelShuffle", 0, inputs=x(1, 4, 2, 2)), Case("PixelUnshuffle", -1, inputs=x(1, 4, 2, 2)),
    Case("LocalResponseNorm", 0, inputs=x(1, 2, 4, 4)), Case("RReLU", 0.5, 0.1, inputs=x(2, 3)),
    Case("LazyLinear", -1, inputs=x(2, 3)),
]


# inputs a module refuses: the exception class PyTorch's raises
INPUT_ERROR_CASES = [
    Case("Linear", 3, 4, inputs=x(2, 5)), Case("Bilinear", 3, 2, 4, inputs=lambda: [randn(5, 3), randn(5, 3)]),
    Case("Conv2d", 2, 4, 3, inputs=x(2, 3, 6, 5)), Case("Conv2d", 2, 4, 3, inputs=x(2, 2, 2, 2)),
    Case("Conv1d", 2, 4, 3, inputs=x(2, 2, 2, 6, 5)), Case("ConvTranspose2d", 2, 4, 3, inputs=x(2, 3, 4, 4)),
    Case("BatchNorm1d", 3, inputs=x(4, 4)), Case("BatchNorm1d", 3, inputs=x(1, 3)),
    Case("BatchNorm2d", 3, inputs=x(2, 3, 4)), Case("LayerNorm", 4, inputs=x(2, 3)), Case("RMSNorm", 4, inputs=x(2, 3)),
    Case("GroupNorm", 2, 4, inputs=x(2, 3, 5)),
    Case("Embedding", 5, 2, inputs=lambda: [ints(9, 3, low=6)]), Case("Embedding", 5, 2, inputs=lambda: [randn(3)]),
    Case("LSTM", 3, 4, inputs=x(5, 2, 4)), Case("GRU", 3, 4, inputs=x(5, 2, 2, 3)),
    Case("RNNCell", 3, 4, inputs=x(2, 4)),
    Case("LSTM", 3, 4, inputs=lambda: [randn(5, 2, 3), (randn(1, 3, 4), randn(1, 2, 4))], id="LSTM(3, 4)-(bad h0)"),
    Case("MultiheadAttention", 4, 2, inputs=lambda: [randn(3, 2, 4), randn(3, 2, 5), randn(3, 2, 5)]),
    Case("MaxPool2d", 3, inputs=x(1, 1, 2, 2)), Case("AdaptiveAvgPool2d", 2, inputs=x(3)),
    Case("CrossEntropyLoss", inputs=lambda: [randn(3, 4), ints(5, 3, low=4)]),
    Case("CrossEntropyLoss", inputs=lambda: [randn(3, 4), ints(4, 2)], id="CrossEntropyLoss()-(batch 3, 2 targets)"),
    Case("NLLLoss", inputs=lambda: [randn(3, 4), randn(3)]), Case("MSELoss", inputs=lambda: [randn(3, 4), randn(4, 4)]),
    Case("Flatten", 0, 5, inputs=x(2, 3)), Case("Unflatten", 1, (2, 2), inputs=x(2, 6)),
    Case("PixelShuffle", 2, inputs=x(1, 3, 2, 2)), Case("Softmax", 3, inputs=x(2, 3)),
    Case("ReflectionPad2d", 3, inputs=x(1, 1, 2, 2)),
    Case("Upsample", scale_factor=2, mode="bilinear", inputs=x(1, 2, 3)),
    Case("Fold", (4, 5), 2, inputs=x(2, 12, 11)), Case("PReLU", 3, inputs=x(2, 4)), Case("GLU", inputs=x(2, 3)),
    Case("TransformerEncoderLayer", 4, 2, 8, inputs=x(3, 2, 5)),
    Case("CosineSimilarity", inputs=lambda: [randn(3, 4), randn(2, 4)]),
    Case("BCELoss", inputs=lambda: [T([1.5, 0.5]), rand(2)]),
]


def _raised(side, case, inputs):
    try:
        module = case.build(side)
        if inputs is not None:
            module.double()(*_for(side, inputs))
    except Exception as error:  # noqa: BLE001  (the class is what is compared)
        return error
    return None


@pytest.mark.parametrize("case", ERROR_CASES + INPUT_ERROR_CASES, ids=lambda case: case.id)
@pytest.mark.filterwarnings("ignore")
def test_invalid_arguments_raise_pytorchs_exception_class(case):
    inputs = case.inputs() if case.inputs else None
    want, got = _raised("torch", case, inputs), _raised("ours", case, inputs)
    assert want is not None
    assert isinstance(got, type(want)), (got, want)


@pytest.mark.parametrize("case", [case for case in CASES if case.name.startswith("Lazy")], ids=lambda case: case.id)
def test_lazy_module_before_its_first_call(case):
    """Before the first forward call: the repr (in_features=0), the state_dict's keys and parameter and
    buffer names, the public attributes, and has_uninitialized_params()."""
    ours, theirs = case.build("ours"), case.build("torch")
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    expected = _public_attributes(theirs)
    assert {name: getattr(ours, name, "<missing>") for name in expected} == expected
    assert ours.has_uninitialized_params() is theirs.has_uninitialized_params() is True


@pytest.mark.parametrize("make, shape", [(lambda: nn.Conv1d(2, 3, 3), (1, 2, 5)), (lambda: nn.BatchNorm1d(2), (4, 2))],
                         ids=["Conv1d", "BatchNorm1d"])
def test_module_pickles_after_a_forward_call(make, shape):
    """pickle.dumps(model) after training (multiprocessing, torch.save(model)-style checkpoints) works in
    PyTorch; copy.deepcopy already works here."""
    import pickle

    module, input = make(), autograd.randn(*shape)
    output = module(input)  # (alive: so are the views of the weight it took)
    copied = pickle.loads(pickle.dumps(module))
    np.testing.assert_array_equal(copied(input).numpy(), output.numpy())


def test_state_dict_shares_memory_with_the_module(case):
    """state_dict()'s tensors are detached views of the module's own: an EMA written into them in place
    (``v.mul_(d).add_(w)``) reaches the module, as in PyTorch; keep_vars=True gives the parameters."""
    ours, theirs, _ = _pair(case)
    for module in (ours, theirs):
        state = module.state_dict()
        for key, value in state.items():
            assert not value.requires_grad, key
            value.add_(1)
        kept = module.state_dict(keep_vars=True)
        for key, value in module.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), state[key].numpy(), err_msg=key)
            assert kept[key] is _owner_tensor(module, key)


def _owner_tensor(module, key):
    *path, name = key.split(".")
    for part in path:
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return getattr(module, name)


@pytest.mark.parametrize("case", [case for case in CASES if case.name in ("RNN", "LSTM", "GRU", "RNNBase")],
                         ids=lambda case: case.id)
def test_recurrent_weight_lists(case):
    """The names per layer and direction that weight-dropping code walks (``_all_weights``), the flat
    list, and ``all_weights`` (the tensors, per layer and direction)."""
    ours, theirs, _ = _pair(case)
    assert ours._all_weights == theirs._all_weights
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [[tuple(w.shape) for w in ws] for ws in ours.all_weights] == [
        [tuple(w.shape) for w in ws] for ws in theirs.all_weights]


def test_non_persistent_buffers_set_as_pytorchs():
    """PyTorch's name for the buffers state_dict leaves out, read and updated by code written for it."""
    def program(owner, tensors):
        module = owner.Linear(2, 2)
        seen = [set(module._non_persistent_buffers_set)]
        module.register_buffer("a", tensors.ones(1), persistent=False)
        module.register_buffer("b", tensors.ones(1))
        seen += [set(module._non_persistent_buffers_set), list(module.state_dict())]
        module._non_persistent_buffers_set.discard("a")
        module._non_persistent_buffers_set.add("b")
        return seen + [list(module.state_dict())]

    assert program(nn, autograd) == program(tnn, torch) == [set(), {"a"}, ["weight", "bias", "b"],
                                                            ["weight", "bias", "a"]]


def _takes_factory_kwargs(case):
    parameters = inspect.signature(getattr(tnn, case.name).__init__).parameters
    return case.factory is None and "dtype" in parameters and "device" in parameters


@pytest.mark.parametrize("case", [case for case in CASES if _takes_factory_kwargs(case)], ids=lambda case: case.id)
def test_device_and_dtype_arguments(case):
    """device='cpu', dtype=float64 reach every parameter and floating buffer, as PyTorch's."""
    def build(side):
        owner = nn if side == "ours" else tnn
        kwargs = dict(_for(side, case.kwargs), device="cpu", dtype=(autograd if side == "ours" else torch).float64)
        return getattr(owner, case.name)(*_for(side, case.args), **kwargs)

    ours, theirs = build("ours"), build("torch")
    if case.name.startswith("Lazy"):  # (materialised in float64 by a float64 input)
        inputs = case.inputs()
        ours(*_for("ours", inputs))
        theirs(*_for("torch", inputs))
    assert _members(ours, "parameters") == _members(theirs, "parameters")
    assert _members(ours, "buffers") == _members(theirs, "buffers")
