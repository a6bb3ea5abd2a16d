"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names and ``step()`` semantics.

This module holds the decaying schedules; the cyclic ones live in cyclic_lr.py,
the combinators (SequentialLR, ChainedScheduler) in combined_lr.py, and the
base class in scheduler.py. All are importable from here, as in PyTorch.
"""

import contextlib
import math
import warnings
from bisect import bisect_right
from collections import Counter

from autograd import Tensor
from autograd.graph import program_stacklevel

from .optimizer import _to_scalar  # noqa: F401  (PyTorch's lr_scheduler has it, imported from optimizer)
from .scheduler import (  # noqa: F401 (EPOCH_DEPRECATION_WARNING: PyTorch exports it from lr_scheduler)
    EPOCH_DEPRECATION_WARNING,
    LRScheduler,
    check_optimizer,
    copied,
    per_group,
    set_lr,
    stepping,
    warn_outside_step,
)


class _LRScheduler(LRScheduler):
    """PyTorch's old base, which older code subclasses: a subclass of LRScheduler, not its other name, so
    ``isinstance(StepLR(...), _LRScheduler)`` is False, as in PyTorch (where code tests it to tell schedulers
    apart)."""


# -- PyTorch's helpers under their names (schedulers copied from PyTorch's sources import them) ------------------

def _format_param(name, optimizer, param):
    """One value per parameter group (a list of the right length, or one value repeated); Tensors copied."""
    return per_group(name, optimizer, param)


def _param_groups_val_list(optimizer, key):
    """Each group's ``key`` (a Tensor copied, so the list does not follow it)."""
    return [copied(group[key]) for group in optimizer.param_groups]


def _update_param_group_val(param_group, key, val):
    """param_group[key] ← val; a Tensor there is filled in place (the optimizer keeps the Tensor it was given)."""
    if isinstance(param_group[key], Tensor):
        param_group[key].fill_(val.reshape(()) if isinstance(val, Tensor) else val)
    else:
        param_group[key] = val


_warn_get_lr_called_within_step = warn_outside_step
_enable_get_lr_call = stepping  # (a context manager: ``with _enable_get_lr_call(self):`` in a custom step)


@contextlib.contextmanager
def _initial_mode(scheduler):
    """The scheduler's initial step: its get_lr gives the groups' lrs as they are."""
    scheduler._is_initial = True
    try:
        yield
    finally:
        scheduler._is_initial = False


class LambdaLR(LRScheduler):
    """η_t = η₀ · λ(t), one function per group or one for all."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(LRScheduler):
    """η_t = η_{t-1} · λ(t) (the initial step leaves η₀ as it is)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = lambdas(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        if self._is_initial:
            return self._group_lrs()
        return [lr * fn(self.last_epoch) for fn, lr in zip(self.lr_lambdas, self._group_lrs(), strict=True)]


def lambdas(optimizer, lr_lambda):
    check_optimizer(optimizer)  # before reading its groups (PyTorch would raise AttributeError)
    groups = len(optimizer.param_groups)
    if not isinstance(lr_lambda, (list, tuple)):
        return [lr_lambda] * groups
    if len(lr_lambda) != groups:
        raise ValueError(f"Expected {groups} lr_lambdas, but got {len(lr_lambda)}")
    return list(lr_lambda)


class StepLR(LRScheduler):
    """η ← γ η every ``step_size`` epochs:  η_t = η₀ γ^⌊t / step_size⌋."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """η ← γ η at each milestone epoch (a milestone listed twice multiplies twice)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = Counter(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        if self.last_epoch not in self.milestones:
            return self._group_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base * self.gamma ** bisect_right(milestones, self.last_epoch) for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """η_t = factor · η₀ for t < total_iters, then η₀."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._group_lrs()]
        if self.last_epoch != self.total_iters:
            return self._group_lrs()
        return [lr * (1.0 / self.factor) for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """η goes linearly from start_factor·η₀ to end_factor·η₀ over total_iters epochs (a warm-up)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        t, start, end, total = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if t == 0:
            return [lr * start for lr in self._group_lrs()]
        if self._is_initial or t > total:
            return self._group_lrs()
        factor = 1.0 + (end - start) / (total * start + (t - 1) * (end - start))
        return [lr * factor for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        t, start, end, total = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        return [base * (start + (end - start) * min(total, t) / total) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """η ← γ η every epoch:  η_t = η₀ γᵗ."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        if self._is_initial:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """η_t = η₀ (1 - min(t, T)/T)^power: a polynomial decay to 0 at T = total_iters."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        t, total = self.last_epoch, self.total_iters
        if self._is_initial or t > total:
            return self._group_lrs()
        factor = ((1.0 - t / total) / (1.0 - (t - 1) / total)) ** self.power
        return [lr * factor for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
                for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """η_t = η_min + (η₀ - η_min)(1 + cos(π t / T_max)) / 2  (Loshchilov & Hutter, 2017),
    computed recursively as PyTorch does (it continues past T_max, rising again)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warn_outside_step(self)
        t, T, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._group_lrs()
        if self._step_count == 1 and t > 0:
            return [low + (base - low) * (1 + math.cos(t * math.pi / T)) / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - low) * (1 - math.cos(math.pi / T)) / 2
                    for lr, base in zip(self._group_lrs(), self.base_lrs)]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - low) + low
                for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class ReduceLROnPlateau(LRScheduler):
    """η ← max(factor · η, min_lr) when a metric has not improved for ``patience`` epochs.

    step(metric) once per epoch. mode 'min' (a loss) or 'max' (an accuracy);
    'rel' threshold: better means beyond best · (1 ∓ threshold), 'abs': best ∓ threshold.
    After a reduction, ``cooldown`` epochs pass before counting again.
    The work is split among PyTorch's methods (``_is_better``, ``_reduce_lr``, ``_reset``,
    ``_init_is_better``), which subclasses override (a ``_reduce_lr`` that also logs, say).
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)) and len(min_lr) != len(optimizer.param_groups):
            raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
        # (default_min_lr, for groups added later, first: the state_dict lists them in PyTorch's order)
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else min_lr
        self.min_lrs = per_group("min_lr", optimizer, min_lr)
        self.patience, self.cooldown, self.eps = patience, cooldown, eps
        self.last_epoch = 0
        self._last_lr = self._group_lrs()
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self):
        """The best value, the bad-epoch count and the cooldown start again."""
        self.best = self.mode_worse
        self.cooldown_counter, self.num_bad_epochs = 0, 0

    def _is_better(self, value, best):
        if self.mode == "min":
            return value < (best * (1 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    is_better = _is_better  # (its public name in PyTorch before 2.2; step calls _is_better, as PyTorch's)

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode

    @property
    def in_cooldown(self):
        """Whether the epochs of rest after a reduction are still running."""
        return self.cooldown_counter > 0

    def step(self, metrics, epoch=None):
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=program_stacklevel())
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = self._group_lrs()

    def _reduce_lr(self, epoch):
        """Each group's lr times factor, not below its min_lr (nor changed by less than eps)."""
        if len(self.min_lrs) != len(self.optimizer.param_groups):  # a group was added since (add_param_group)
            if self.default_min_lr is None:
                raise RuntimeError("The number of param groups in the `optimizer` "
                                   f"({len(self.optimizer.param_groups)}) differs from when `ReduceLROnPlateau` "
                                   f"was initialized ({len(self.min_lrs)}), usually due to a new param group "
                                   "being added to the optimizer. Please modify the `min_lrs` field to match the "
                                   "length of the `optimizer` param groups.")
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = float(group["lr"])  # (a Tensor lr too, as PyTorch's)
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                set_lr(group, new_lr)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)


from .combined_lr import ChainedScheduler, SequentialLR  # noqa: E402
from .cyclic_lr import CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR  # noqa: E402

__all__ = ["LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
           "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "ReduceLROnPlateau", "SequentialLR",
           "ChainedScheduler", "CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts"]
