"""``autograd.amp``: mixed precision's two pieces, as ``torch.amp``, for programs written for a GPU.

- ``autocast(device_type, dtype)`` runs chosen ops in a lower precision. For "cuda" without a
  GPU, PyTorch warns and disables itself, and so does this one: the code inside runs in the
  tensors' own dtypes. Lowering precision is not built here, so autocast that would take
  effect (on the CPU, or with the CuPy backend) raises rather than running something else.
- ``GradScaler`` multiplies the loss by a scale s before backward, so that small float16
  gradients do not underflow, divides the gradients by s before the step, skips a step whose
  gradients hold inf or NaN (and halves s), and doubles s after ``growth_interval`` clean
  steps. For "cuda" without a GPU it is disabled, as PyTorch's: every call passes through.
"""

import functools
import warnings

from . import cuda
from .grad_mode import no_grad


class autocast:
    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device_type, self.dtype, self.enabled = device_type, dtype, bool(enabled)
        if self.enabled and device_type == "cuda" and not cuda.is_available():
            warnings.warn("CUDA is not available. Disabling autocast.", stacklevel=2)
            self.enabled = False
        if self.enabled:
            raise NotImplementedError(
                f"autocast on {device_type!r} would lower matmuls and convolutions to "
                f"{dtype or 'a half-precision dtype'}, which is not built here; pass enabled=False, or drop "
                "the autocast block (the ops then run in the tensors' own dtypes)")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def __call__(self, function):
        @functools.wraps(function)
        def run_in_autocast(*args, **kwargs):
            with self:
                return function(*args, **kwargs)

        return run_in_autocast


class GradScaler:
    def __init__(self, device="cuda", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if enabled and device == "cuda" and not cuda.is_available():
            warnings.warn("GradScaler is enabled, but CUDA is not available. Disabling.", stacklevel=2)
            enabled = False
        self._enabled = bool(enabled)
        self._scale, self._growth_factor, self._backoff_factor = float(init_scale), growth_factor, backoff_factor
        self._growth_interval, self._growth_tracker = growth_interval, 0
        self._unscaled = {}  # id(optimizer) -> whether its gradients held inf or NaN, since the last update()

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        return self._scale if self._enabled else 1.0

    def scale(self, outputs):
        """outputs · s (a tensor, or each of a list or tuple of them)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(output) for output in outputs)
        return outputs * self._scale

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by s, in place (before clipping them, say)."""
        if not self._enabled:
            return
        if id(optimizer) in self._unscaled:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        found_inf = False
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(1.0 / self._scale)
                        found_inf = found_inf or not bool(p.grad.isfinite().all())
        self._unscaled[id(optimizer)] = found_inf

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step(), unless the unscaled gradients hold inf or NaN (then skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if id(optimizer) not in self._unscaled:
            self.unscale_(optimizer)
        if self._unscaled[id(optimizer)]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        """s × backoff_factor after a skipped step; s × growth_factor after growth_interval clean ones."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale)
        elif any(self._unscaled.values()):
            self._scale *= self._backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self._growth_interval:
                self._scale *= self._growth_factor
                self._growth_tracker = 0
        self._unscaled.clear()

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled "
                               "instance of GradScaler.")
        self._scale = float(state_dict["scale"])
        self._growth_factor, self._backoff_factor = state_dict["growth_factor"], state_dict["backoff_factor"]
        self._growth_interval, self._growth_tracker = state_dict["growth_interval"], state_dict["_growth_tracker"]
