"""``autograd.amp``: mixed precision's two pieces, as ``torch.amp``, for programs written for a GPU.

- ``autocast(device_type, dtype)`` runs chosen ops in a lower precision. On the CPU it lowers to
  float16 as PyTorch's CPU autocast does (autocast_cpu.py: PyTorch's lists of which ops run in
  float16, which in float32); bfloat16, PyTorch's CPU default, NumPy does not have, so asking for
  it raises (float16 is the default here). For "cuda" without a GPU, PyTorch warns and disables
  itself, and so does this one: the code inside runs in the tensors' own dtypes. On other devices
  (and with the CuPy backend) autocast that would take effect raises.
- ``GradScaler`` multiplies the loss by a scale s before backward, so that small float16
  gradients do not underflow, divides the gradients by s before the step, skips a step whose
  gradients hold inf or NaN (and halves s), and doubles s after ``growth_interval`` clean
  steps. For "cuda" without a GPU it is disabled, as PyTorch's: every call passes through.

The autocast state, per thread as PyTorch's, lives here and only here: for each device type
whether autocast is on and its dtype, whether casts are cached, and how deep autocast blocks
are nested. ``autocast`` blocks and PyTorch's functions (``autograd.is_autocast_enabled``,
``set_autocast_dtype``, ``autocast_increment_nesting``, ...) read and write it. Turning autocast
on where it would take effect and is not built raises, as ``autocast`` does. NumPy has no bfloat16, so every
device's dtype starts as float16 (PyTorch's CPU starts at bfloat16). The casts of weights made inside the
outermost block are cached here too, and cleared when it ends.
"""

import collections.abc
import functools
import math
import threading
import warnings

import numpy

from . import backend, cuda
from .dtype_objects import torch_dtype
from .grad_mode import no_grad
from .graph import program_stacklevel
from .tensor import Tensor

_DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia",
                 "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")


class _AutocastState(threading.local):
    def __init__(self):
        self.enabled = {}  # device type -> on (off when absent)
        self.dtype = {}  # device type -> the lower-precision dtype (float16 when absent)
        self.cache_enabled = True
        self.nesting = 0
        self.cast_cache = {}  # id(weight) -> (weak reference to it, its float16 cast): autocast_cpu.py
        self.cpu_mode = None  # the CpuAutocast mode an enabled CPU block pushed (one for the outermost)


_state = _AutocastState()


def _device_type(device_type):
    if device_type not in _DEVICE_TYPES:
        raise RuntimeError(f"Expected one of {', '.join(_DEVICE_TYPES)} device type at start of device string: "
                           f"{device_type}")
    return device_type


def _refuse_if_effective(device_type, dtype=None):
    """autocast that would take effect and is not built refuses: the CPU's to anything but float16 (bfloat16:
    NumPy has none), and every other device's that is there (a GPU)."""
    if device_type == "cuda" and not cuda.is_available():
        return
    if device_type == "cpu" and xp_is_numpy():
        if dtype is None or dtype == backend.float16:
            return
        if dtype is backend.bfloat16:
            raise NotImplementedError(
                "autocast on 'cpu' to bfloat16 is not built here: NumPy has no bfloat16 type. Pass "
                "dtype=autograd.float16 (the default here), which autocast lowers to as PyTorch's CPU autocast does")
    raise NotImplementedError(
        f"autocast on {device_type!r} would lower matmuls and convolutions to "
        f"{dtype or 'a half-precision dtype'}, which is not built here; pass enabled=False, or drop "
        "the autocast block (the ops then run in the tensors' own dtypes)")


def is_autocast_enabled(device_type="cuda"):
    return _state.enabled.get(_device_type(device_type), False)


def is_any_autocast_enabled():
    """Whether autocast is on for some device type (PyTorch's ``torch._C._is_any_autocast_enabled``: a recurrent
    layer then lets an input of another dtype than its weights through, as autocast casts both)."""
    return any(_state.enabled.values())


def set_autocast_enabled(device_type, enabled=None):
    """set_autocast_enabled(device_type, enabled), or PyTorch's older set_autocast_enabled(enabled) for "cuda"."""
    if enabled is None:
        device_type, enabled = "cuda", device_type
    if not isinstance(enabled, bool):
        raise TypeError("set_autocast_enabled(): argument 'enabled' (position 2) must be bool, not "
                        f"{type(enabled).__name__}")
    if enabled:
        _refuse_if_effective(_device_type(device_type), get_autocast_dtype(device_type))
        if device_type == "cpu" and _state.cpu_mode is None:  # (the switch alone would cast nothing: the casts are
            raise NotImplementedError(  # the mode's, which an autocast block enters)
                "set_autocast_enabled('cpu', True) outside an autocast block is not built here: CPU autocast lowers "
                "through the block's mode; use `with autograd.autocast('cpu', dtype=autograd.float16):`")
    _state.enabled[_device_type(device_type)] = enabled


def get_autocast_dtype(device_type):
    return torch_dtype(numpy.dtype(_state.dtype.get(_device_type(device_type), backend.float16)))


def set_autocast_dtype(device_type, dtype):
    _state.dtype[_device_type(device_type)] = dtype


def _deprecated(old, new):
    warnings.warn(f"torch.{old}() is deprecated. Please use torch.{new} instead.", DeprecationWarning,
                  stacklevel=program_stacklevel())


def is_autocast_cpu_enabled():
    _deprecated("is_autocast_cpu_enabled", "is_autocast_enabled('cpu')")
    return is_autocast_enabled("cpu")


def set_autocast_cpu_enabled(enabled):
    _deprecated("set_autocast_cpu_enabled", "set_autocast_enabled('cpu', enabled)")
    set_autocast_enabled("cpu", enabled)


def get_autocast_cpu_dtype():
    _deprecated("get_autocast_cpu_dtype", "get_autocast_dtype('cpu')")
    return get_autocast_dtype("cpu")


def set_autocast_cpu_dtype(dtype):
    _deprecated("set_autocast_cpu_dtype", "set_autocast_dtype('cpu', dtype)")
    set_autocast_dtype("cpu", dtype)


def set_autocast_gpu_dtype(dtype):
    _deprecated("set_autocast_gpu_dtype", "set_autocast_dtype('cuda', dtype)")
    set_autocast_dtype("cuda", dtype)


def get_autocast_gpu_dtype():
    _deprecated("get_autocast_gpu_dtype", "get_autocast_dtype('cuda')")
    return get_autocast_dtype("cuda")


def is_autocast_cache_enabled():
    return _state.cache_enabled


def set_autocast_cache_enabled(enabled):
    _state.cache_enabled = bool(enabled)


def clear_autocast_cache():
    """Forget the cached casts of weights (an autocast block clears them when the outermost one ends)."""
    _state.cast_cache.clear()


def cast_cache():
    """This thread's cached float16 casts of weights: {id(weight): (weak reference to it, its cast)}."""
    return _state.cast_cache


def xp_is_numpy():
    return backend.xp is numpy


def autocast_increment_nesting():
    """One more autocast block open; the new depth."""
    _state.nesting += 1
    return _state.nesting


def autocast_decrement_nesting():
    """One autocast block fewer; the new depth (PyTorch lets it go below 0, and so does this)."""
    _state.nesting -= 1
    return _state.nesting


class autocast:
    """Within the block (or each call of a decorated function), autocast on ``device_type`` set to
    ``enabled`` with ``dtype`` and ``cache_enabled``; the previous state comes back at the end."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        _device_type(device_type)
        self.device, self._enabled = device_type, enabled
        self.fast_dtype = get_autocast_dtype(device_type) if dtype is None else dtype
        self._cache_enabled = is_autocast_cache_enabled() if cache_enabled is None else cache_enabled
        if self._enabled and device_type == "cuda" and not cuda.is_available():
            warnings.warn("CUDA is not available or torch_xla is imported. Disabling autocast.",
                          stacklevel=program_stacklevel())
            self._enabled = False
        elif self._enabled and device_type != "cuda" and self.fast_dtype not in (backend.bfloat16, backend.float16):
            name = device_type.upper()
            warnings.warn(f"In {name} autocast, but the target dtype is not supported. Disabling autocast.\n"
                          f"{name} Autocast only supports dtypes of torch.bfloat16, torch.float16 currently.",
                          stacklevel=program_stacklevel())
            self._enabled = False
        if self._enabled:
            _refuse_if_effective(device_type, self.fast_dtype)
        self._saved = []

    def __enter__(self):
        pushed = None
        if self.device == "cpu" and self._enabled and _state.cpu_mode is None:
            from .autocast_cpu import CpuAutocast  # (loaded by the first CPU autocast block)

            pushed = _state.cpu_mode = CpuAutocast()
            pushed.__enter__()  # (every public call of this thread reaches it from now on: autocast_cpu.py)
        self._saved.append((is_autocast_enabled(self.device), get_autocast_dtype(self.device),
                            is_autocast_cache_enabled(), pushed))
        set_autocast_enabled(self.device, bool(self._enabled))
        set_autocast_dtype(self.device, self.fast_dtype)
        set_autocast_cache_enabled(self._cache_enabled)
        autocast_increment_nesting()
        return self

    def __exit__(self, *exc_info):
        if autocast_decrement_nesting() == 0:
            clear_autocast_cache()
        enabled, dtype, cache_enabled, pushed = self._saved.pop()
        set_autocast_enabled(self.device, enabled)
        set_autocast_dtype(self.device, dtype)
        set_autocast_cache_enabled(cache_enabled)
        if pushed is not None:
            _state.cpu_mode = None
            pushed.__exit__(*exc_info)
        return False

    def __call__(self, function):
        if not callable(function):
            raise TypeError(f"autocast()(func) requires a callable, but got {type(function).__name__}. Did you mean to "
                            "use autocast as a context manager? For example:\n    with torch.autocast(device_type=...):"
                            "\n        output = model(input)")
        @functools.wraps(function)
        def run_in_autocast(*args, **kwargs):
            with self:
                return function(*args, **kwargs)

        return run_in_autocast


def is_autocast_available(device_type):
    """Whether autocast can lower precision on ``device_type``: the CPU's (to float16), as PyTorch's; no other
    device type's here (PyTorch: "cuda", "xpu", ...). Code that asks first then runs in the tensors' own dtypes,
    rather than into autocast's refusal."""
    return _device_type(device_type) == "cpu" and xp_is_numpy()


def _cast(value, device_type, dtype, convert=None):
    """``value`` with each floating tensor on ``device_type`` (float64 excepted) cast to ``dtype`` (by
    ``convert(tensor, dtype)`` where given), through lists, tuples and dicts (autocast's rule for what it casts)."""
    if isinstance(value, Tensor):
        eligible = value.is_floating_point() and value.device.type == device_type and value.dtype != backend.float64
        if not eligible:
            return value
        return value.to(dtype) if convert is None else convert(value, dtype)
    if isinstance(value, dict):
        return {_cast(k, device_type, dtype, convert): _cast(v, device_type, dtype, convert) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = (_cast(v, device_type, dtype, convert) for v in value)
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # (a named tuple's fields:
    return value                                                                         # a PackedSequence's)


def custom_fwd(fwd=None, *, device_type, cast_inputs=None):
    """Decorate a custom ``Function``'s ``forward(ctx, ...)`` for autocast: it records on ``ctx``
    whether autocast was on (``custom_bwd`` runs backward in the same state); with ``cast_inputs``,
    inside an autocast block, it casts the floating inputs to that dtype and runs forward with
    autocast off. Outside autocast (always, here, unless it is on for a "cuda" that is absent) it
    only records."""
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        ctx = args[0]
        ctx._dtype = get_autocast_dtype(device_type)
        enabled = is_autocast_enabled(device_type)
        ctx._fwd_used_autocast = enabled and cast_inputs is None
        if cast_inputs is None or not enabled:
            return fwd(*args, **kwargs)
        with autocast(device_type, enabled=False):
            return fwd(*_cast(args, device_type, cast_inputs), **_cast(kwargs, device_type, cast_inputs))

    return decorate_fwd


def custom_bwd(bwd=None, *, device_type):
    """Decorate a custom ``Function``'s ``backward(ctx, ...)`` to run in the autocast state its
    ``custom_fwd`` forward recorded."""
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args, **kwargs):
        ctx = args[0]
        with autocast(device_type, enabled=ctx._fwd_used_autocast, dtype=ctx._dtype):
            return bwd(*args, **kwargs)

    return decorate_bwd


class GradScaler:
    """Loss scaling, as PyTorch's ``torch.amp.GradScaler``. The scale s is a float32 number (PyTorch keeps it in
    a float32 tensor, so ``get_scale()`` reads float32's rounding of it).

    Each optimizer goes through three stages per iteration: ready; unscaled (``unscale_``: its gradients divided
    by s, and whether any held inf or NaN noted); stepped (``step``: ``optimizer.step()`` unless they did).
    ``update()`` then changes s from what every optimizer found, and readies them all again:

        any inf or NaN:  s ← s · backoff_factor,  tracker ← 0
        otherwise:       tracker ← tracker + 1; at growth_interval, s ← s · growth_factor (if finite), tracker ← 0
    """

    def __init__(self, device="cuda", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if enabled and device == "cuda" and not cuda.is_available():
            warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.",
                          stacklevel=program_stacklevel())
            enabled = False
        self._device, self._enabled = device, enabled
        if not self._enabled:
            return
        if growth_factor <= 1.0:
            raise AssertionError("The growth factor must be > 1.0.")
        if backoff_factor >= 1.0:
            raise AssertionError("The backoff factor must be < 1.0.")
        self._init_scale, self._growth_factor, self._backoff_factor = init_scale, growth_factor, backoff_factor
        self._growth_interval, self._init_growth_tracker = growth_interval, 0
        self._scale = self._growth_tracker = None  # set by the first scale(), as PyTorch's (lazily)
        self._stages = {}  # id(optimizer) -> (stage, whether its gradients held inf or NaN), this iteration

    def _started(self, doing):
        """The scale, which only ``scale()`` sets up: a step or update before any is a mistake in the loop."""
        if self._scale is None:
            raise AssertionError(f"Attempted {doing} but _scale is None.  This may indicate your script did not use "
                                 "scaler.scale(loss or outputs) earlier in the iteration.")
        return self._scale

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale

    def scale(self, outputs):
        """outputs · s: a tensor, or each tensor of a (nested) list, tuple or other iterable (given back as a map)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._scale = _float32(self._init_scale)
                self._growth_tracker = self._init_growth_tracker
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(output) for output in outputs)
        if isinstance(outputs, collections.abc.Iterable):
            return map(self.scale, outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by s, in place (before clipping them, say), noting whether any holds
        inf or NaN. float16 gradients are refused: a float16 master weight cannot take the unscaled step."""
        if not self._enabled:
            return
        scale = self._started("unscale_")
        stage = self._stages.get(id(optimizer), ("ready",))[0]
        if stage == "unscaled":
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if stage == "stepped":
            raise RuntimeError("unscale_() is being called after step().")
        inverse_scale = _float32(1.0 / scale)  # (the reciprocal in float64, then float32, as PyTorch's)
        found_inf = None  # None: no gradient to look at
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if p.grad.dtype == backend.float16:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    p.grad.mul_(inverse_scale)
                    found_inf = bool(found_inf) or not bool(p.grad.isfinite().all())
        self._stages[id(optimizer)] = ("unscaled", found_inf)

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step(), unless the unscaled gradients hold inf or NaN (then skipped, giving None)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._started("step")
        stage = self._stages.get(id(optimizer), ("ready",))[0]
        if stage == "stepped":
            raise RuntimeError("step() has already been called since the last update().")
        if stage == "ready":
            self.unscale_(optimizer)
        found_inf = self._stages[id(optimizer)][1]
        if found_inf is None:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        self._stages[id(optimizer)] = ("stepped", found_inf)
        return None if found_inf else optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        """s × backoff_factor after a skipped step; s × growth_factor after growth_interval clean ones; or
        ``new_scale`` (a float, or a one-element tensor without grad on the scaler's device)."""
        if not self._enabled:
            return
        scale = self._started("update")
        if new_scale is not None:
            if not isinstance(new_scale, float):
                if (new_scale.device.type != self._device or new_scale.numel() != 1 or new_scale.requires_grad):
                    raise AssertionError("new_scale should be a float or a 1-element torch.cuda.FloatTensor or "
                                         "torch.FloatTensor with requires_grad=False.")
                new_scale = new_scale.item()
            self._scale = _float32(new_scale)
        else:
            found_infs = [found_inf for _, found_inf in self._stages.values() if found_inf is not None]
            if not found_infs:
                raise AssertionError("No inf checks were recorded prior to update.")
            if any(found_infs):
                self._scale, self._growth_tracker = _float32(scale * self._backoff_factor), 0
            elif self._growth_tracker + 1 == self._growth_interval:
                grown = _float32(scale * self._growth_factor)
                self._scale = grown if math.isfinite(grown) else scale
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
        self._stages.clear()

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = new_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = new_factor

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = new_interval

    def _get_growth_tracker(self):
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        self._init_scale, self._init_growth_tracker = state_dict["scale"], state_dict["_growth_tracker"]
        if self._scale is not None:
            self._scale, self._growth_tracker = _float32(state_dict["scale"]), state_dict["_growth_tracker"]
        self._growth_factor, self._backoff_factor = state_dict["growth_factor"], state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]

    def __getstate__(self):
        """Picklable between iterations only, as PyTorch's; the copy sets its scale up again at its first scale()."""
        state = self.__dict__.copy()
        if self._enabled:
            if self._stages:
                raise AssertionError("A GradScaler instance may only be pickled at the beginning of an iteration, "
                                     "or at the end after scaler.update().")
            state.update(_init_scale=self.get_scale(), _init_growth_tracker=self._get_growth_tracker(),
                         _scale=None, _growth_tracker=None)
        return state


def _float32(number):
    """The float32 nearest ``number``, as a Python float: the precision of PyTorch's scale tensor."""
    return float(numpy.float32(number))
