"""Fake-quantize modules (``torch.ao.quantization.fake_quantize``), as PyTorch's: an observer chooses the
scale and zero point from what passes through, and the input comes out fake-quantized on that grid
(``autograd.fake_quantize_per_tensor_affine`` or ``..._per_channel_affine``: the gradient passes straight
through where nothing was clamped).

Both steps can be switched off (buffers ``observer_enabled`` and ``fake_quant_enabled``, so that they are in
the state dict): QAT usually freezes the observers after some epochs (``model.apply(disable_observer)``) and
trains on with the scales fixed."""

from abc import abstractmethod

import numpy

import autograd
import nn
from autograd.ao import schemes
from autograd.ao.schemes import qint8, quint8

from .observer import (
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    ObserverBase,
    _with_args,
    _with_callable_args,
)

_QUANTIZED_RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1),
                     "quint4x2": (0, 15), "quint2x4": (0, 3)}


def _integer_range(dtype):
    """torch.iinfo(dtype)'s (min, max), for a quantized dtype too."""
    if isinstance(dtype, schemes.qdtype):
        return _QUANTIZED_RANGES[dtype.name]
    info = numpy.iinfo(dtype)
    return int(info.min), int(info.max)


class FakeQuantizeBase(nn.Module):
    """A fake-quantize module: ``forward`` observes (while ``observer_enabled``) and fake-quantizes (while
    ``fake_quant_enabled``); ``calculate_qparams`` gives the current scale and zero point."""

    def __init__(self):
        super().__init__()
        # buffers, not attributes, so that DDP replicates them (uint8: NCCL has no bool), as PyTorch's
        self.register_buffer("fake_quant_enabled", autograd.tensor([1], dtype=autograd.uint8))
        self.register_buffer("observer_enabled", autograd.tensor([1], dtype=autograd.uint8))

    @abstractmethod
    def forward(self, x):
        pass

    @abstractmethod
    def calculate_qparams(self, **kwargs):
        pass

    def enable_fake_quant(self, enabled=True):
        self.fake_quant_enabled[0] = 1 if enabled else 0

    def disable_fake_quant(self):
        self.enable_fake_quant(False)

    def enable_observer(self, enabled=True):
        self.observer_enabled[0] = 1 if enabled else 0

    def disable_observer(self):
        self.enable_observer(False)

    with_args = classmethod(_with_args)
    with_callable_args = classmethod(_with_callable_args)


class FakeQuantize(FakeQuantizeBase):
    """Observe x with ``observer(**observer_kwargs)`` and fake-quantize it with the scale and zero point
    it chooses: (clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point) · scale, per tensor
    or per channel as the observer's ``qscheme`` says."""

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min=None, quant_max=None, is_dynamic=False,
                 **observer_kwargs):
        super().__init__()
        if quant_min is not None and quant_max is not None:
            if quant_min > quant_max:
                raise AssertionError("quant_min must be less than or equal to quant_max")
            dtype = observer_kwargs.get("dtype", quint8)
            if hasattr(observer, "p"):  # a with_args constructor may hold the dtype
                dtype = getattr(observer.p, "keywords", {}).get("dtype", dtype)
            low, high = _integer_range(dtype)
            if low > quant_min:
                raise AssertionError("quant_min out of bound")
            if quant_max > high:
                raise AssertionError("quant_max out of bound")
            observer_kwargs.update({"quant_min": quant_min, "quant_max": quant_max})
        observer_kwargs["is_dynamic"] = is_dynamic
        self.activation_post_process = observer(**observer_kwargs)
        self.quant_min = self.activation_post_process.quant_min
        self.quant_max = self.activation_post_process.quant_max
        self.is_dynamic = self.activation_post_process.is_dynamic
        zero_point_dtype = autograd.float32 if schemes.is_float_qparams(self.activation_post_process.qscheme) \
            else autograd.int32
        self.register_buffer("scale", autograd.tensor([1.0], dtype=autograd.float32))
        self.register_buffer("zero_point", autograd.tensor([0], dtype=zero_point_dtype))
        self.dtype = self.activation_post_process.dtype
        self.qscheme = self.activation_post_process.qscheme
        self.ch_axis = getattr(self.activation_post_process, "ch_axis", -1)
        if not (schemes.is_per_channel(self.qscheme) or schemes.is_per_tensor(self.qscheme)):
            raise AssertionError("Only per channel and per tensor quantization are supported in fake quantize got "
                                 f"qscheme: {self.qscheme}")
        self.is_per_channel = schemes.is_per_channel(self.qscheme)

    def calculate_qparams(self):
        return self.activation_post_process.calculate_qparams()

    def _observe(self, X):
        """Update the observer with X and take the scale and zero point it now chooses."""
        self.activation_post_process(X.detach())
        scale, zero_point = self.calculate_qparams()
        if self.scale.shape != scale.shape:
            self.scale.resize_(scale.shape)
            self.zero_point.resize_(zero_point.shape)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)

    def forward(self, X):
        if self.observer_enabled[0] == 1:
            self._observe(X)
        if self.fake_quant_enabled[0] == 1:
            quant_min, quant_max = self.activation_post_process.quant_min, self.activation_post_process.quant_max
            if self.is_per_channel:
                X = autograd.fake_quantize_per_channel_affine(X, self.scale, self.zero_point, self.ch_axis,
                                                              quant_min, quant_max)
            else:
                X = autograd.fake_quantize_per_tensor_affine(X, self.scale, self.zero_point, quant_min, quant_max)
        return X

    def extra_repr(self):
        return (f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
                f"quant_min={self.activation_post_process.quant_min}, "
                f"quant_max={self.activation_post_process.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
                f"ch_axis={self.ch_axis}, scale={self.scale}, zero_point={self.zero_point}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("scale", "zero_point"):  # (per channel, sized by the first batch: take the saved size)
            key = prefix + name
            if key in state_dict:
                getattr(self, name).resize_(state_dict[key].shape)
            elif strict:
                missing_keys.append(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def choose_qparams(min_val, max_val, quant_min, quant_max, symmetric):
    """fbgemm's ChooseQuantizationParams, which the fused module uses in place of the observer's formulas:
    (scale, zero_point) for a range [min_val, max_val] (floats), as PyTorch's C++ computes them: the range
    made symmetric (then the zero point is the middle) or widened to hold 0, the scale rounded to float32 and
    kept at least 6.1e-5 (the range scaled up with it), the zero point from whichever end loses less."""
    min_val, max_val = numpy.float32(min_val), numpy.float32(max_val)
    if min_val < 0 < max_val and symmetric:
        symmetric_qmin, symmetric_qmax = -((quant_max - quant_min) // 2 + 1), (quant_max - quant_min) // 2
        max_scale = max(abs(min_val / numpy.float32(symmetric_qmin)), abs(max_val / numpy.float32(symmetric_qmax)))
        min_val, max_val = max_scale * numpy.float32(symmetric_qmin), max_scale * numpy.float32(symmetric_qmax)
    min_val, max_val = min(min_val, numpy.float32(0)), max(max_val, numpy.float32(0))
    scale = numpy.float32((float(max_val) - float(min_val)) / (quant_max - quant_min))
    if scale == 0 or numpy.isinf(numpy.float32(1) / scale):
        scale = numpy.float32(0.1)
    small = numpy.float32(6.1e-5)
    if scale < small:
        amplifier = small / scale
        scale = small
        if min_val == 0:
            max_val = small * numpy.float32(quant_max - quant_min)
        elif max_val == 0:
            min_val = -small * numpy.float32(quant_max - quant_min)
        else:
            min_val, max_val = min_val * amplifier, max_val * amplifier
    from_min = quant_min - float(min_val) / float(scale)
    from_max = quant_max - float(max_val) / float(scale)
    from_min_error = abs(quant_min) - abs(float(min_val) / float(scale))
    from_max_error = abs(quant_max) - abs(float(max_val) / float(scale))
    zero_point = from_min if from_min_error < from_max_error else from_max
    if min_val < 0 < max_val and symmetric:
        zero_point = (quant_min + quant_max) / 2
    return scale, int(numpy.clip(numpy.rint(zero_point), quant_min, quant_max))


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """FakeQuantize with a moving-average observer, observed and fake-quantized in one step as PyTorch's
    fused op does: the running min and max move towards the batch's (per tensor, or per row along dim 0),
    then scale and zero point come from ``choose_qparams`` (fbgemm's, not the observer's formulas)."""

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, **observer_kwargs):
        super().__init__(observer, quant_min, quant_max, **observer_kwargs)
        if not isinstance(self.activation_post_process,
                          (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)):
            raise AssertionError("Fused observer+fake_quant module only works with MovingAverageMinMaxObserver")
        self.register_buffer("fake_quant_enabled", autograd.tensor([1], dtype=autograd.int64))
        self.register_buffer("observer_enabled", autograd.tensor([1], dtype=autograd.int64))
        self.is_symmetric_quant = schemes.is_symmetric(self.activation_post_process.qscheme)

    def _move_running_range(self, X):
        observer = self.activation_post_process
        x = X.detach()
        if self.is_per_channel:
            if self.ch_axis != 0:
                raise RuntimeError("Per-channel FakeQuant in fused_moving_avg_obs_fake_quant is only supported on "
                                   f"axis == 0, got {self.ch_axis}")
            low, high = autograd.aminmax(x.flatten(1), dim=1)
        else:
            low, high = autograd.aminmax(x)
        low, high = low.reshape(-1).numpy(), high.reshape(-1).numpy()
        running_low, running_high = observer.min_val.reshape(-1).numpy(), observer.max_val.reshape(-1).numpy()
        if running_low.size == 0:  # (a per-channel observer starts empty)
            running_low, running_high = numpy.full_like(low, numpy.inf), numpy.full_like(high, -numpy.inf)
        c = numpy.float32(observer.averaging_constant)
        running_low = numpy.where(numpy.isinf(running_low), low, running_low + c * (low - running_low))
        running_high = numpy.where(numpy.isinf(running_high), high, running_high + c * (high - running_high))
        shape = observer.min_val.shape if not self.is_per_channel else (len(low),)
        if self.is_per_channel and tuple(observer.min_val.shape) != shape:
            observer.min_val.resize_(shape)
            observer.max_val.resize_(shape)
        observer.min_val.copy_(autograd.tensor(running_low.astype(numpy.float32)).reshape(shape))
        observer.max_val.copy_(autograd.tensor(running_high.astype(numpy.float32)).reshape(shape))

    def forward(self, X):
        if X.numel() == 0:
            return X.clone()
        if self.observer_enabled[0] == 1:
            self._move_running_range(X)
        if self.fake_quant_enabled[0] != 1:
            return X
        observer = self.activation_post_process
        quant_min, quant_max = observer.quant_min, observer.quant_max
        qparams = [choose_qparams(low, high, quant_min, quant_max, self.is_symmetric_quant) for low, high in
                   zip(observer.min_val.reshape(-1).tolist(), observer.max_val.reshape(-1).tolist())]
        scale = autograd.tensor([s for s, _ in qparams], dtype=autograd.float32)
        zero_point = autograd.tensor([z for _, z in qparams], dtype=self.zero_point.dtype)
        if self.scale.shape != scale.shape:
            self.scale.resize_(scale.shape)
            self.zero_point.resize_(zero_point.shape)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)
        if self.is_per_channel:
            return autograd.fake_quantize_per_channel_affine(X, self.scale, self.zero_point, self.ch_axis, quant_min,
                                                             quant_max)
        return autograd.fake_quantize_per_tensor_affine(X, self.scale, self.zero_point, quant_min, quant_max)

    def extra_repr(self):
        return (f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
                f"scale={self.scale}, zero_point={self.zero_point}, dtype={self.dtype}, "
                f"quant_min={self.activation_post_process.quant_min}, "
                f"quant_max={self.activation_post_process.quant_max}, qscheme={self.qscheme}, "
                f"reduce_range={self.activation_post_process.reduce_range}")


def _is_fake_quant(module):
    return isinstance(module, FakeQuantizeBase)


def disable_fake_quant(mod):
    """For ``model.apply(disable_fake_quant)``: a fake-quantize module passes its input through unchanged."""
    if _is_fake_quant(mod):
        mod.disable_fake_quant()


def enable_fake_quant(mod):
    if _is_fake_quant(mod):
        mod.enable_fake_quant()


def disable_observer(mod):
    """For ``model.apply(disable_observer)``: a fake-quantize module keeps its scale and zero point."""
    if _is_fake_quant(mod):
        mod.disable_observer()


def enable_observer(mod):
    if _is_fake_quant(mod):
        mod.enable_observer()


default_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                            dtype=quint8, qscheme=schemes.per_tensor_affine, reduce_range=True)
default_weight_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128,
                                                   quant_max=127, dtype=qint8, qscheme=schemes.per_tensor_symmetric,
                                                   reduce_range=False)
default_dynamic_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                                    quant_max=255, is_dynamic=True, dtype=quint8,
                                                    averaging_constant=1)
default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=qint8,
    qscheme=schemes.per_channel_symmetric, reduce_range=False, ch_axis=0)
default_embedding_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, qscheme=schemes.per_channel_affine_float_qparams,
    dtype=quint8, quant_min=0, quant_max=255, ch_axis=0, averaging_constant=1)

default_fused_act_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=quint8)
default_fused_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=qint8,
    qscheme=schemes.per_tensor_symmetric)
default_fused_per_channel_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=qint8,
    qscheme=schemes.per_channel_symmetric)

__all__ = ["FakeQuantize", "FakeQuantizeBase", "FusedMovingAvgObsFakeQuantize", "ObserverBase",
           "default_dynamic_fake_quant", "default_embedding_fake_quant", "default_fake_quant",
           "default_fused_act_fake_quant", "default_fused_per_channel_wt_fake_quant", "default_fused_wt_fake_quant",
           "default_per_channel_weight_fake_quant", "default_weight_fake_quant", "disable_fake_quant",
           "disable_observer", "enable_fake_quant", "enable_observer"]
