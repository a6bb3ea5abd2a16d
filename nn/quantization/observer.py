"""Observers (``torch.ao.quantization.observer``): modules that watch the tensors passing through them and
choose a scale and zero point for them, as PyTorch's.

An observer returns its input unchanged; ``forward`` updates the statistics it keeps in buffers (so they are
in the state dict), ``calculate_qparams`` turns them into ``(scale, zero_point)``:

    MinMaxObserver                         the running min and max of everything seen
    MovingAverageMinMaxObserver            min and max moved towards each batch's by ``averaging_constant``
    PerChannelMinMaxObserver               a min and max per slice along ``ch_axis``
    MovingAveragePerChannelMinMaxObserver  the same, moving averages
    PlaceholderObserver, NoopObserver      keep nothing (a dtype only)

For an affine scheme over [qmin, qmax], with the range first widened to hold 0:

    scale = (max - min) / (qmax - qmin)  (at least eps),   zero_point = clamp(qmin - round(min / scale))

and for a symmetric one scale = max(-min, max) / ((qmax - qmin) / 2), the zero point in the middle (0 for
signed types, 128 for quint8). ``Observer.with_args(...)`` makes a constructor with those arguments, which is
what a ``QConfig`` holds."""

import functools
import warnings
from abc import ABCMeta, abstractmethod

import numpy

import autograd
import nn
from autograd.ao import schemes
from autograd.ao.schemes import per_channel_affine, per_tensor_affine, qint8, qint32, quint8
from autograd.graph import program_stacklevel

EPS = float(numpy.finfo(numpy.float32).eps)


class _PartialWrapper:
    """A constructor with some arguments given (``Observer.with_args(...)``); ``callable_args`` are called
    afresh for each object made."""

    def __init__(self, p):
        self.p = p
        self.callable_args = {}

    def __call__(self, *args, **keywords):
        for name, make in self.callable_args.items():
            if name not in keywords:
                keywords = {**keywords, name: make()}
        return self.p(*args, **keywords)

    def __repr__(self):
        return self.p.__repr__() + self.callable_args.__repr__()

    def with_args(self, **kwargs):
        return _with_args(self, **kwargs)

    def with_callable_args(self, **kwargs):
        result = _PartialWrapper(p=self.p)
        result.callable_args = {**self.callable_args, **kwargs}
        return result


def _with_args(cls_or_self, **kwargs):
    return _PartialWrapper(functools.partial(cls_or_self, **kwargs))


def _with_callable_args(cls_or_self, **kwargs):
    return _PartialWrapper(functools.partial(cls_or_self)).with_callable_args(**kwargs)


class ObserverBase(nn.Module, metaclass=ABCMeta):
    """An observer: ``forward`` records statistics of its input and returns it; ``calculate_qparams`` gives
    the scale and zero point they call for. ``dtype`` is the quantized type the input is meant for."""

    def __init__(self, dtype, is_dynamic=False):
        super().__init__()
        self.dtype = dtype
        self.is_dynamic = is_dynamic

    @abstractmethod
    def forward(self, x):
        pass

    @abstractmethod
    def calculate_qparams(self, **kwargs):
        pass

    with_args = classmethod(_with_args)
    with_callable_args = classmethod(_with_callable_args)


_ALLOWED_DTYPES = (qint8, quint8, schemes.quint4x2, qint32, autograd.int8, autograd.uint8, autograd.int16,
                   autograd.int32)


def calculate_qmin_qmax(quant_min, quant_max, has_customized_qrange, dtype, reduce_range):
    """The integer range [qmin, qmax] of ``dtype`` (halved by ``reduce_range``), or the one given."""
    if has_customized_qrange:
        if dtype in (qint32, autograd.int32):
            initial_quant_min, initial_quant_max = 0, 2**32 - 1
        else:
            initial_quant_min, initial_quant_max = 0, 255
        if quant_min is not None and quant_max is not None:
            initial_quant_min, initial_quant_max = quant_min, quant_max
        qrange_len = initial_quant_max - initial_quant_min + 1
        if dtype in (qint8, autograd.int8) and not 0 < qrange_len <= 256:
            raise AssertionError("quantization range should be positive and not exceed the maximum bit range "
                                 "(=256).")
        if dtype in (qint32, autograd.int32) and not 0 < qrange_len <= 2**32:
            raise AssertionError("quantization range should be positive and not exceed the maximum bit range "
                                 "(=4294967296).")
        if reduce_range:
            quant_min, quant_max = quant_min // 2, quant_max // 2
        return quant_min, quant_max
    if dtype in (qint8, autograd.int8):
        return (-64, 63) if reduce_range else (-128, 127)
    if dtype in (quint8, autograd.uint8):
        return (0, 127) if reduce_range else (0, 255)
    if dtype in (qint32, autograd.int32):
        return -(2**31), 2**31 - 1
    if dtype == autograd.int16:
        return -(2**15), 2**15 - 1
    return 0, 15


def check_min_max_valid(min_val, max_val):
    """Whether the observer has seen anything (PyTorch's warning where it has not), and min <= max."""
    if min_val.numel() == 0 or max_val.numel() == 0:
        warnings.warn("must run observer before calling calculate_qparams. Returning default values.",
                      stacklevel=program_stacklevel())
        return False
    if min_val.dim() == 0 or max_val.dim() == 0:
        if min_val == float("inf") and max_val == float("-inf"):
            warnings.warn("must run observer before calling calculate_qparams. Returning default values.",
                          stacklevel=program_stacklevel())
            return False
        if min_val > max_val:
            raise AssertionError(f"min {min_val} should be less than max {max_val}")
    elif autograd.any(min_val > max_val):
        raise AssertionError(f"min {min_val} should be less than max {max_val}")
    return True


class UniformQuantizationObserverBase(ObserverBase):
    """An observer whose quantization is uniform: a scale and zero point (one, or one per channel) over the
    range [quant_min, quant_max] of ``dtype`` (see the module's docstring for how they are chosen)."""

    def __init__(self, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False, quant_min=None,
                 quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False, **kwargs):
        super().__init__(dtype=dtype, is_dynamic=is_dynamic, **kwargs)
        self.qscheme = qscheme
        if reduce_range:
            warnings.warn("Please use quant_min and quant_max to specify the range for observers. reduce_range "
                          "will be deprecated in a future release of PyTorch.", stacklevel=program_stacklevel())
        self.reduce_range = reduce_range
        self.register_buffer("eps", autograd.tensor([eps]))
        if qscheme not in schemes.SCHEMES.values():
            raise AssertionError("Default Observer only works for per_tensor_affine, per_tensor_symmetric, "
                                 "per_channel_affine, per_channel_symmetric and per_channel_float_qparams "
                                 "quantization scheme")
        if dtype not in _ALLOWED_DTYPES:
            raise AssertionError(f"Default Observer only works for {_ALLOWED_DTYPES} data type")
        self.has_customized_qrange = quant_min is not None and quant_max is not None
        if self.has_customized_qrange:
            self._validate_qmin_qmax(quant_min, quant_max)
        self.quant_min, self.quant_max = calculate_qmin_qmax(quant_min, quant_max, self.has_customized_qrange,
                                                             dtype, reduce_range)

    def _validate_qmin_qmax(self, quant_min, quant_max):
        if not quant_min <= 0 <= quant_max:
            raise AssertionError("Used-specified quantization range must include 0.")
        if quant_min >= quant_max:
            raise AssertionError("qmin must be strictly less than qmax for user-specified quantization range.")

    def _calculate_qparams(self, min_val, max_val):
        """(scale, zero_point) for these mins and maxes (tensors: one value, or one per channel)."""
        if not check_min_max_valid(min_val, max_val):
            return autograd.tensor([1.0]), autograd.tensor([0])
        quant_min, quant_max = self.quant_min, self.quant_max
        min_val_neg = autograd.min(min_val, autograd.zeros_like(min_val))  # the range always holds 0
        max_val_pos = autograd.max(max_val, autograd.zeros_like(max_val))
        zero_point = autograd.zeros(min_val_neg.size(), dtype=autograd.int64)
        if schemes.is_symmetric(self.qscheme):
            max_val_pos = autograd.max(-min_val_neg, max_val_pos)
            scale = max_val_pos / (float(quant_max - quant_min) / 2)
            scale = autograd.max(scale, self.eps)
            if self.dtype in (quint8, autograd.uint8):
                middle = (quant_min + quant_max) // 2 if self.has_customized_qrange else 128
                zero_point = zero_point.new_full(zero_point.size(), middle)
        elif schemes.is_float_qparams(self.qscheme):
            scale = (max_val - min_val) / float(quant_max - quant_min)
            scale = autograd.where(scale > self.eps, scale, autograd.ones_like(scale))
            zero_point = -1 * min_val / scale  # (a float zero point: min itself lands on qmin)
        else:
            scale = (max_val_pos - min_val_neg) / float(quant_max - quant_min)
            scale = autograd.max(scale, self.eps)
            zero_point = quant_min - autograd.round(min_val_neg / scale).to(autograd.int32)
            zero_point = autograd.clamp(zero_point, quant_min, quant_max)
        if scale.dim() == 0:
            scale = autograd.tensor([float(scale)], dtype=scale.dtype)
        if zero_point.dim() == 0:
            zero_point = autograd.tensor([zero_point.item()], dtype=zero_point.dtype)
        return scale, zero_point

    def reset_min_max_vals(self):
        raise NotImplementedError("Cannot reset min/max values in the given observer.")


class MinMaxObserver(UniformQuantizationObserverBase):
    """Scale and zero point from the running minimum and maximum of everything seen (per tensor)."""

    def __init__(self, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False, quant_min=None,
                 quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False, **kwargs):
        if not schemes.is_per_tensor(qscheme):
            raise NotImplementedError("MinMaxObserver's qscheme only support torch.per_tensor_symmetric and "
                                      "torch.per_tensor_affine.")
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min,
                         quant_max=quant_max, factory_kwargs=factory_kwargs, eps=eps, is_dynamic=is_dynamic,
                         **kwargs)
        self.register_buffer("min_val", autograd.tensor(float("inf")))
        self.register_buffer("max_val", autograd.tensor(float("-inf")))
        if qscheme == schemes.per_tensor_symmetric and reduce_range and dtype == quint8:
            raise NotImplementedError("Cannot reduce range for symmetric quantization for quint8")

    def forward(self, x_orig):
        """Records the running minimum and maximum of ``x``."""
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().to(self.min_val.dtype)
        min_val_cur, max_val_cur = autograd.aminmax(x)
        self.min_val.copy_(autograd.min(min_val_cur, self.min_val))
        self.max_val.copy_(autograd.max(max_val_cur, self.max_val))
        return x_orig

    def calculate_qparams(self):
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def reset_min_max_vals(self):
        self.min_val.copy_(autograd.tensor(float("inf")))
        self.max_val.copy_(autograd.tensor(float("-inf")))


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Scale and zero point from moving averages of the batches' minima and maxima:
    min ← min + c · (min(x) - min) (the first batch's own at the start), and max alike."""

    def __init__(self, averaging_constant=0.01, dtype=quint8, qscheme=per_tensor_affine, reduce_range=False,
                 quant_min=None, quant_max=None, eps=EPS, is_dynamic=False, **kwargs):
        if not schemes.is_per_tensor(qscheme):
            raise NotImplementedError("MovingAverageMinMaxObserver's qscheme only support "
                                      f"torch.per_tensor_symmetric and torch.per_tensor_affine. but got: {qscheme}")
        self.averaging_constant = averaging_constant
        if is_dynamic and averaging_constant != 1:
            raise NotImplementedError("MovingAverageMinMaxObserver doesn't support dynamic quantization for "
                                      f"averaging constant of {averaging_constant}")
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min,
                         quant_max=quant_max, eps=eps, is_dynamic=is_dynamic, **kwargs)

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().to(self.min_val.dtype)
        min_val, max_val = self.min_val, self.max_val
        if min_val == float("inf") and max_val == float("-inf"):
            min_val, max_val = autograd.aminmax(x)
        else:
            min_val_cur, max_val_cur = autograd.aminmax(x)
            min_val = min_val + self.averaging_constant * (min_val_cur - min_val)
            max_val = max_val + self.averaging_constant * (max_val_cur - max_val)
        self.min_val.copy_(min_val)
        self.max_val.copy_(max_val)
        return x_orig


class PerChannelMinMaxObserver(UniformQuantizationObserverBase):
    """A scale and zero point per slice along ``ch_axis``, from each slice's running minimum and maximum."""

    def __init__(self, ch_axis=0, dtype=quint8, qscheme=per_channel_affine, reduce_range=False, quant_min=None,
                 quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False, **kwargs):
        if not schemes.is_per_channel(qscheme):
            raise NotImplementedError("PerChannelMinMaxObserver's qscheme only support torch.per_channel_symmetric, "
                                      "torch.per_channel_affine and torch.per_channel_affine_float_qparams.")
        if is_dynamic:
            raise NotImplementedError("PerChannelMinMaxObserver doesn't support dynamic quantization")
        super().__init__(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min,
                         quant_max=quant_max, factory_kwargs=factory_kwargs, eps=eps, is_dynamic=is_dynamic,
                         **kwargs)
        self.ch_axis = ch_axis
        self.register_buffer("min_val", autograd.tensor([]))
        self.register_buffer("max_val", autograd.tensor([]))
        if qscheme == schemes.per_channel_symmetric and reduce_range and dtype == quint8:
            raise NotImplementedError("Cannot reduce range for symmetric quantization for quint8")

    def forward(self, x_orig):
        return self._forward(x_orig)

    def _channel_extrema(self, x):
        """Each channel's (min, max) of x: the channel axis first, the rest flattened."""
        axes = list(range(x.dim()))
        axes[self.ch_axis], axes[0] = 0, self.ch_axis
        return autograd.aminmax(autograd.flatten(x.permute(axes).to(self.min_val.dtype), start_dim=1), dim=1)

    def _update(self, min_val, max_val):
        self.min_val.resize_(min_val.shape)
        self.max_val.resize_(max_val.shape)
        self.min_val.copy_(min_val)
        self.max_val.copy_(max_val)

    def _forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        min_val, max_val = self._channel_extrema(x_orig.detach())
        if self.min_val.numel() != 0 and self.max_val.numel() != 0:
            min_val, max_val = autograd.min(min_val, self.min_val), autograd.max(max_val, self.max_val)
        self._update(min_val, max_val)
        return x_orig

    def calculate_qparams(self):
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("min_val", "max_val"):  # (sized by the first batch: take the saved size)
            key = prefix + name
            if key in state_dict:
                getattr(self, name).resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def reset_min_max_vals(self):
        self.min_val = autograd.tensor([])
        self.max_val = autograd.tensor([])


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel scales and zero points from moving averages of each channel's minima and maxima."""

    def __init__(self, averaging_constant=0.01, ch_axis=0, dtype=quint8, qscheme=per_channel_affine,
                 reduce_range=False, quant_min=None, quant_max=None, eps=EPS, is_dynamic=False, **kwargs):
        if not schemes.is_per_channel(qscheme):
            raise NotImplementedError("MovingAveragePerChannelMinMaxObserver's qscheme only support "
                                      "torch.per_channel_symmetric, torch.per_channel_affine and "
                                      "torch.per_channel_affine_float_qparams.")
        if is_dynamic:
            raise NotImplementedError("MovingAveragePerChannelMinMaxObserver doesn't support dynamic quantization")
        super().__init__(ch_axis=ch_axis, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                         quant_min=quant_min, quant_max=quant_max, eps=eps, is_dynamic=is_dynamic, **kwargs)
        self.averaging_constant = averaging_constant

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        min_val, max_val = self._channel_extrema(x_orig.detach())
        if self.min_val.numel() != 0 and self.max_val.numel() != 0:
            min_val = self.min_val + self.averaging_constant * (min_val - self.min_val)
            max_val = self.max_val + self.averaging_constant * (max_val - self.max_val)
        self._update(min_val, max_val)
        return x_orig


class PlaceholderObserver(ObserverBase):
    """Keeps nothing: says only the dtype (and, for dynamic quantization, that it is dynamic)."""

    def __init__(self, dtype=autograd.float32, custom_op_name="", compute_dtype=None, quant_min=None,
                 quant_max=None, qscheme=None, eps=None, is_dynamic=False):
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        if qscheme is None:
            qscheme = per_tensor_affine
        if eps is None:
            eps = EPS
        self.quant_min, self.quant_max, self.qscheme, self.eps = quant_min, quant_max, qscheme, eps
        self.custom_op = custom_op_name
        if compute_dtype:
            self.is_dynamic = True

    def forward(self, x):
        return x

    def extra_repr(self):
        return f"dtype={self.dtype}, is_dynamic={self.is_dynamic}"

    def calculate_qparams(self):
        raise Exception("calculate_qparams should not be called for PlaceholderObserver")  # noqa: TRY002


class NoopObserver(ObserverBase):
    """Observes nothing (for float16 outputs, which need no scale)."""

    def __init__(self, dtype=autograd.float16, custom_op_name=""):
        super().__init__(dtype=dtype)
        self.dtype, self.custom_op = dtype, custom_op_name

    def forward(self, x):
        return x

    def calculate_qparams(self):
        raise Exception("calculate_qparams should not be called for NoopObserver")  # noqa: TRY002


default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_weight_observer = MinMaxObserver.with_args(dtype=qint8, qscheme=schemes.per_tensor_symmetric)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(dtype=qint8,
                                                                         qscheme=schemes.per_channel_symmetric)
default_placeholder_observer = PlaceholderObserver
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(
    dtype=quint8, qscheme=schemes.per_channel_affine_float_qparams, ch_axis=0)
