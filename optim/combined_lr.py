"""Schedules made of schedules: one after another (SequentialLR) or all at once (ChainedScheduler)."""

from bisect import bisect_right

from .scheduler import LRScheduler, set_lr


def check_schedulers(combinator, schedulers, optimizer):
    """PyTorch's checks: at least one scheduler, all on ``optimizer``, none a ReduceLROnPlateau."""
    from .lr_scheduler import ReduceLROnPlateau

    name = type(combinator).__name__
    if len(schedulers) < 1:
        raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
    for i, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{name} at index {i} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(f"{name} does not support `ReduceLROnPlateau` scheduler as it requires additional "
                             f"kwargs to be specified when calling `step`, but got one at index {i} in the given "
                             "schedulers sequence.")
        if optimizer is not scheduler.optimizer:
            raise ValueError(f"{name} expects all schedulers to belong to the same optimizer, but got scheduler "
                             f"{type(scheduler).__name__} at index {i} has {scheduler.optimizer}, which is "
                             f"different from {type(optimizer).__name__}.")


class SequentialLR(LRScheduler):
    """schedulers[0] until milestones[0], then schedulers[1] (restarted at its epoch 0), ...

    E.g. a LinearLR warm-up for 5 epochs, then a CosineAnnealingLR:
    ``SequentialLR(opt, [LinearLR(opt, ...), CosineAnnealingLR(opt, ...)], milestones=[5])``.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        check_schedulers(self, schedulers, optimizer)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError("Sequential Schedulers expects number of schedulers provided to be one more than the "
                             f"number of milestone points, but got number of schedulers {len(schedulers)} and the "
                             f"number of milestones to be equal to {len(milestones)}")
        self._schedulers, self._milestones = list(schedulers), list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # Each scheduler's constructor has already made its initial step: undo them all,
        # then make the first scheduler's initial step again.
        for group in optimizer.param_groups:
            set_lr(group, group["initial_lr"])
        self.recursive_undo()
        self._initial_step()

    def _initial_step(self):
        """Epoch 0: the first scheduler's initial step (also when this SequentialLR is itself inside a
        combinator, which undoes and remakes its schedulers' initial steps: a plain step here would count
        one epoch too many)."""
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched=None):
        """Undo the initial step of each scheduler (and of those inside a combinator), PyTorch's name."""
        scheduler = self if sched is None else sched
        if hasattr(scheduler, "_schedulers"):
            for inner in scheduler._schedulers:
                self.recursive_undo(inner)
        elif hasattr(scheduler, "last_epoch"):
            scheduler.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            scheduler._update_lr(0)  # a fresh start: its closed form at epoch 0
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        state = {k: v for k, v in vars(self).items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        inner = state.pop("_schedulers")
        self.__dict__.update(state)
        for scheduler, saved in zip(self._schedulers, inner):
            scheduler.load_state_dict(saved)


class ChainedScheduler(LRScheduler):
    """Every scheduler steps at every step, each multiplying in its own factor
    (chainable forms compose: e.g. ConstantLR warm-up times ExponentialLR decay)."""

    def __init__(self, schedulers, optimizer=None):
        optimizer = optimizer or (schedulers[0].optimizer if len(schedulers) else None)
        check_schedulers(self, schedulers, optimizer)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = self._group_lrs()

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self._group_lrs()

    def _initial_step(self):
        """Every scheduler's initial step (inside a SequentialLR, which undid them): a plain step would
        apply each one's first decay too early."""
        for scheduler in self._schedulers:
            scheduler._initial_step()
        self._last_lr = self._group_lrs()

    state_dict = SequentialLR.state_dict
    load_state_dict = SequentialLR.load_state_dict
