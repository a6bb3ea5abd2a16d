"""``LRScheduler``: the base of the learning-rate schedules, with PyTorch's ``step()`` protocol.

Create the scheduler after the optimizer (its first, "initial" step sets each
group's lr for epoch 0), call ``optimizer.step()`` then ``scheduler.step()`` once
per epoch (or batch), and read ``get_last_lr()``. A schedule's ``get_lr`` is
PyTorch's chainable form: the next lr from the group's current one, so several
schedules can act on one optimizer. ``step(epoch)`` (deprecated in PyTorch)
jumps to an epoch through the schedule's closed form where it has one.
"""

import contextlib
import types
import warnings

from autograd import Tensor
from autograd.graph import program_stacklevel

from .optimizer import Optimizer

STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and later, you should call "
    "them in the opposite order: `optimizer.step()` before `lr_scheduler.step()`.  Failure to do this will result "
    "in PyTorch skipping the first value of the learning rate schedule. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)
STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler initialization. Please, make "
    "sure to call `optimizer.step()` before `lr_scheduler.step()`. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where possible. Please "
    "use `scheduler.step()` to step the scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available."
)


GET_LR_OUTSIDE_STEP_WARNING = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."


def warn_outside_step(scheduler):
    """A schedule's get_lr computes the next lr from the current one, so it means something only within
    step(): called from outside, PyTorch's warns and points to get_last_lr()."""
    if not scheduler._get_lr_called_within_step:
        warnings.warn(GET_LR_OUTSIDE_STEP_WARNING, UserWarning, stacklevel=program_stacklevel())


@contextlib.contextmanager
def stepping(scheduler):
    """Marks the scheduler as within its step (for warn_outside_step)."""
    scheduler._get_lr_called_within_step = True
    try:
        yield
    finally:
        scheduler._get_lr_called_within_step = False


def check_optimizer(optimizer):
    """PyTorch's check that a scheduler was given an optimizer."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def per_group(name, optimizer, value):
    """One value per parameter group: a list of the right length as it is, a scalar repeated. A Tensor
    value is copied, as PyTorch's schedulers copy it: the scheduler's value does not follow the caller's
    later in-place changes to it."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. {name} has "
                             f"{len(value)} values, param_groups has {len(optimizer.param_groups)}.")
    else:
        value = [value] * len(optimizer.param_groups)
    return [copied(v) for v in value]


def copied(value):
    """A Tensor's copy (a learning rate a scheduler keeps must not alias the group's), a number as it is."""
    return value.clone() if isinstance(value, Tensor) else value


def set_lr(group, lr):
    """group["lr"] ← lr. A learning rate given as a Tensor is filled in place, as PyTorch's schedulers
    do: the Tensor the optimizer was given stays its group's lr (and keeps its dtype: float32 rounds)."""
    if isinstance(group["lr"], Tensor):
        group["lr"].fill_(lr.reshape(()) if isinstance(lr, Tensor) else lr)
    else:
        group["lr"] = lr


def saved_callable(fn):
    """A user's function in a scheduler's state_dict, as PyTorch saves it: None for a plain function (its
    code cannot be saved), a callable object's attributes (a copy of its ``__dict__``)."""
    return None if fn is None or isinstance(fn, types.FunctionType) else fn.__dict__.copy()


def restore_callable(fn, attributes):
    """Load what saved_callable saved into the scheduler's own function (a function keeps itself)."""
    if attributes is not None and fn is not None:
        fn.__dict__.update(attributes)


def set_momentum(group, momentum, use_beta1):
    """Cycle the momentum: β₁ for the Adam family (``betas``), ``momentum`` otherwise."""
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def momentum_kind(optimizer):
    """Whether cycle_momentum acts on β₁ (True) or on ``momentum`` (False); raise if neither exists."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    return "betas" in optimizer.defaults


class LRScheduler:
    _is_initial = False  # True during the first step, made by the constructor
    _get_lr_called_within_step = False  # True while step() computes the new lrs (stepping)

    def __init__(self, optimizer, last_epoch=-1):
        check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:  # (a copy of a Tensor lr, which set_lr fills in place)
                group.setdefault("initial_lr", copied(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                                   "scheduler with last_epoch >= 0.\nThis typically happens when:\n1. You're "
                                   "trying to resume training from a checkpoint but haven't properly loaded the "
                                   "optimizer state\n2. You're using last_epoch >= 0 for a fresh training run "
                                   "(not recommended)")
        self.base_lrs = [copied(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        # from now on the optimizer's step marks it stepped (optimizer.py), so that our first step can tell
        # whether it came first, as it should; steps taken before any scheduler was made do not count
        optimizer.__dict__.setdefault("_opt_called", False)
        # and a step the user puts on the instance after this (optimizer.step = ...) may not do so: remember
        # the step there is now, to warn at our first step if it was replaced since, as PyTorch does
        optimizer.__dict__["_step_when_scheduled"] = optimizer.__dict__.get("step")
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The next lr of each group (chainable form), at ``self.last_epoch``."""
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rate of each group, as set by the last step()."""
        return self._last_lr

    def step(self, epoch=None):
        if self._step_count == 1:
            watched = self.optimizer.__dict__
            if watched.get("step") is not watched.get("_step_when_scheduled"):
                warnings.warn(STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=program_stacklevel())
            elif not watched.get("_opt_called", True):
                warnings.warn(STEP_ORDER_WARNING, UserWarning, stacklevel=program_stacklevel())
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=program_stacklevel())
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        with stepping(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        # strict, as PyTorch's: a group added after the scheduler was made has no base lr, and is refused
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            set_lr(group, lr)
        self._last_lr = self._group_lrs()

    def _group_lrs(self):
        """Each group's lr now (a copy of a Tensor lr: what get_last_lr returns must not change with it)."""
        return [copied(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self):
        """Everything but the optimizer. LambdaLR's and MultiplicativeLR's ``lr_lambdas`` are saved as PyTorch
        saves them: None for a function (its code cannot be saved), a callable object's attributes."""
        state = {k: v for k, v in vars(self).items() if k not in ("optimizer", "lr_lambdas")}
        if "lr_lambdas" in vars(self):
            state["lr_lambdas"] = [saved_callable(fn) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved_lambdas = state_dict.pop("lr_lambdas", None)
        self.__dict__.update(state_dict)
        for fn, attributes in zip(getattr(self, "lr_lambdas", ()), saved_lambdas or ()):
            restore_callable(fn, attributes)
