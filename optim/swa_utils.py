"""Weight averaging (``torch.optim.swa_utils``): SWA and EMA models, the SWA learning rate, BatchNorm refresh.

Stochastic Weight Averaging (Izmailov et al., 2018) trains on as usual, and
from some epoch keeps a running average of the weights it passes through:

    W̄_0 = W_0,    W̄_{n} = W̄_{n-1} + (W_n - W̄_{n-1}) / (n + 1)      (equal weights)

An exponential moving average (EMA) weighs recent weights more:

    W̄_0 = W_0,    W̄_{n} = decay · W̄_{n-1} + (1 - decay) · W_n

``AveragedModel`` holds the averaged copy of a model, ``SWALR`` anneals the
learning rate to the constant one SWA runs at, and ``update_bn`` recomputes
BatchNorm's running statistics for the averaged weights (the averages of the
running statistics are not the statistics of the averaged network).

This module builds on ``nn`` (an ``AveragedModel`` is a Module), so ``optim``
loads it on first use: ``import optim`` does not import ``nn``.
"""

import copy
import itertools
import math

import autograd
import nn
from nn.normalization import _BatchNorm

from .scheduler import LRScheduler, per_group, warn_outside_step

__all__ = ["AveragedModel", "update_bn", "SWALR", "get_ema_multi_avg_fn", "get_swa_multi_avg_fn",
           "get_ema_avg_fn", "get_swa_avg_fn"]


def _check_decay(decay):
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def get_ema_multi_avg_fn(decay=0.999):
    """A ``multi_avg_fn`` for EMA: every averaged tensor W̄ ← W̄ + (1 - decay)(W - W̄), in place
    (a lerp, as PyTorch's; integer tensors take decay · W̄ + (1 - decay) · W, cast back)."""
    _check_decay(decay)

    @autograd.no_grad()
    def ema_update(ema_param_list, current_param_list, _):
        floating = ema_param_list[0].is_floating_point()
        for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
            if floating:
                p_ema.lerp_(p_model, 1 - decay)
            else:
                p_ema.copy_(p_ema * decay + p_model * (1 - decay))

    return ema_update


def get_swa_multi_avg_fn():
    """A ``multi_avg_fn`` for SWA: every averaged tensor W̄ ← W̄ + (W - W̄) / (n + 1), in place.
    Floating tensors take a lerp with weight 1 / (n + 1), computed in the default dtype when n is
    a Tensor (as PyTorch's); others add the difference divided by n + 1."""

    @autograd.no_grad()
    def swa_update(averaged_param_list, current_param_list, num_averaged):
        if averaged_param_list[0].is_floating_point():
            weight = float(1 / (num_averaged + 1))
            for p_averaged, p_model in zip(averaged_param_list, current_param_list, strict=True):
                p_averaged.lerp_(p_model, weight)
            return
        for p_averaged, p_model in zip(averaged_param_list, current_param_list, strict=True):
            difference = p_model - p_averaged
            if isinstance(num_averaged, autograd.Tensor):
                p_averaged.addcdiv_(difference, num_averaged + 1)
            else:
                p_averaged.add_(difference, alpha=1.0 / (num_averaged + 1))

    return swa_update


def get_ema_avg_fn(decay=0.999):
    """An ``avg_fn`` for EMA: returns decay · W̄ + (1 - decay) · W."""
    _check_decay(decay)

    @autograd.no_grad()
    def ema_update(ema_param, current_param, num_averaged):
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn():
    """An ``avg_fn`` for SWA: returns W̄ + (W - W̄) / (n + 1)."""

    @autograd.no_grad()
    def swa_update(averaged_param, current_param, num_averaged):
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)

    return swa_update


class AveragedModel(nn.Module):
    """A deep copy of ``model`` (``self.module``) whose parameters are the average of the ones
    ``update_parameters(model)`` has seen; calling it runs the copy.

    The first update copies the model's values; later ones average with ``avg_fn(W̄, W, n)``
    (returns the new W̄, one tensor at a time), or ``multi_avg_fn(W̄s, Ws, n)`` (updates lists
    of tensors of one dtype in place), or, with neither, the equal-weight SWA average (PyTorch's
    CPU rule, ``get_swa_avg_fn``). ``n_averaged`` (an int64 buffer) counts the updates.
    ``use_buffers=True`` averages the buffers too (walking parameters then buffers of each);
    otherwise the buffers are copied from ``model`` at every update.
    """

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = copy.deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", autograd.tensor(0, dtype=autograd.long, device=device))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def update_parameters(self, model):
        """Fold ``model``'s current parameters (and buffers, with use_buffers) into the average."""
        if self.use_buffers:
            averaged = itertools.chain(self.module.parameters(), self.module.buffers())
            current = itertools.chain(model.parameters(), model.buffers())
        else:  # self.parameters() is self.module's: n_averaged is a buffer
            averaged, current = self.parameters(), model.parameters()
        pairs = [(p_averaged.detach(), p_model.detach()) for p_averaged, p_model in zip(averaged, current)]
        n_averaged = self.n_averaged
        with autograd.no_grad():
            if n_averaged.item() == 0:
                for p_averaged, p_model in pairs:
                    p_averaged.copy_(p_model)
            elif self.avg_fn is not None:
                for p_averaged, p_model in pairs:
                    p_averaged.copy_(self.avg_fn(p_averaged, p_model, n_averaged))
            elif self.multi_avg_fn is not None:
                for averaged_list, current_list in _by_dtype(pairs):
                    self.multi_avg_fn(averaged_list, current_list, n_averaged)
            else:
                swa = get_swa_avg_fn()
                for p_averaged, p_model in pairs:
                    p_averaged.copy_(swa(p_averaged, p_model, n_averaged))
            if not self.use_buffers:  # the buffers follow the model's
                for b_averaged, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
                    b_averaged.copy_(b_model.detach())
            self.n_averaged += 1


def _by_dtype(pairs):
    """The (averaged, current) pairs as lists grouped by the averaged tensor's dtype, each list in
    the original order: what PyTorch hands a multi_avg_fn (one call per device and dtype)."""
    groups = {}
    for p_averaged, p_model in pairs:
        averaged_list, current_list = groups.setdefault(p_averaged.dtype, ([], []))
        averaged_list.append(p_averaged)
        current_list.append(p_model)
    return list(groups.values())


@autograd.no_grad()
def update_bn(loader, model, device=None):
    """Recompute the running mean and variance of every BatchNorm layer of ``model`` with one pass
    over ``loader``: the statistics are reset, each layer's momentum set to None (a cumulative
    average over the batches) for the pass, and restored after, as is the model's training mode.
    A batch is a Tensor, or a list or tuple whose first item is the input."""
    momenta = {}
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    for input in loader:
        if isinstance(input, (list, tuple)):
            input = input[0]
        if device is not None:
            input = input.to(device)
        model(input)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's lr from its current value to ``swa_lr`` over ``anneal_epochs`` steps,
    then hold it there. With t = min(1, step / anneal_epochs) and α = t ('linear') or
    (1 - cos πt) / 2 ('cos'):

        η_t = α · η_swa + (1 - α) · η_start

    written in PyTorch's chainable form: η_start is recovered from the group's current lr and
    the previous α, so another schedule may act on the optimizer before SWA starts. ``swa_lr``
    is one value or one per group, and is stored in each group as ``swa_lr``."""

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos", last_epoch=-1):
        for value, group in zip(per_group("swa_lr", optimizer, swa_lr), optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t):
        return t

    @staticmethod
    def _cosine_anneal(t):
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        """η_start from η = α η_swa + (1 - α) η_start (η_swa itself once α is 1)."""
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _set_anneal_func(self, anneal_strategy):
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def _alpha(self, step):
        return self.anneal_func(max(0, min(1, step / max(1, self.anneal_epochs))))

    def get_lr(self):
        warn_outside_step(self)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        previous, alpha = self._alpha(step - 1), self._alpha(step)
        groups = self.optimizer.param_groups
        starts = [self._get_initial_lr(group["lr"], group["swa_lr"], previous) for group in groups]
        return [group["swa_lr"] * alpha + start * (1 - alpha) for group, start in zip(groups, starts)]

    def state_dict(self):
        """Everything but the optimizer and the annealing function (its name is kept)."""
        return {key: value for key, value in vars(self).items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
