# ruff: noqa: B007, E721, UP008  (the programs are kept as their authors wrote them)
"""Optimisers and learning-rate schedulers beyond the common path, as training programs use them, run as
tests/probe13_optim_common.py says. Schedulers: a checkpoint PyTorch saved mid-training (model, SGD, each scheduler:
MultiStepLR, StepLR, OneCycleLR, CyclicLR, CosineAnnealingWarmRestarts, SequentialLR, ChainedScheduler,
ReduceLROnPlateau with min_lr list) continued on chainrule, and chainrule's own checkpoint of the same run (a
MultiStepLR checkpoint keeps its milestones as a ``collections.Counter``, which autograd.load reads as PyTorch's
weights-only load does), and LBFGS's cubic interpolation of a NaN loss; GradualWarmupScheduler (an ``_LRScheduler``
handing over to cosine, step and plateau schedulers); a ReduceLROnPlateau subclass overriding PyTorch's private
steps, and schedulers through PyTorch's helper methods; a scheduler copied from PyTorch's sources, the optimiser
helpers' copied code, and zero_grad without None."""

import importlib
import math

import numpy as np
import pytest

from .probe13_optim_common import TORCH
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# A checkpoint PyTorch saved mid-training (model, optimizer, scheduler) continued on chainrule
# ----------------------------------------------------------------------------------------------

CHECKPOINTED_SCHEDULES = {
    "MultiStepLR": lambda S, o: S.MultiStepLR(o, milestones=[3, 6, 6, 9], gamma=0.5),
    "StepLR": lambda S, o: S.StepLR(o, step_size=3, gamma=0.5),
    "OneCycleLR": lambda S, o: S.OneCycleLR(o, max_lr=0.2, total_steps=12, three_phase=True, anneal_strategy="linear"),
    "CyclicLR": lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="exp_range", gamma=0.9),
    "CosineAnnealingWarmRestarts": lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2, eta_min=1e-3),
    "SequentialLR": lambda S, o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=3),
                                                    S.PolynomialLR(o, total_iters=10, power=2.0)], milestones=[3]),
    "ChainedScheduler": lambda S, o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4),
                                                         S.ExponentialLR(o, gamma=0.9)]),
    "ReduceLROnPlateau": lambda S, o: S.ReduceLROnPlateau(o, mode="min", factor=0.5, patience=0, cooldown=1,
                                                          threshold=0.05, min_lr=[1e-3, 5e-3]),
}



def checkpointed_regression(m, name, epochs, checkpoint=None, path=None):
    """SGD with momentum on a linear regression (two groups), the schedule stepped each epoch; from
    ``checkpoint`` (a file torch.save wrote) where given; with ``path``, saved there after ``epochs``."""
    torch = m.torch
    rng = np.random.default_rng(11)
    X = torch.tensor(rng.standard_normal((40, 3)))
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3
    model = m.nn.Linear(3, 1).double()
    optimizer = m.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}], lr=0.1, momentum=0.9)
    scheduler = CHECKPOINTED_SCHEDULES[name](m.optim.lr_scheduler, optimizer)
    if checkpoint is not None:
        saved = torch.load(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    lrs = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = ((model(X).squeeze(1) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item()) if name == "ReduceLROnPlateau" else scheduler.step()
        lrs.append([float(lr) for lr in scheduler.get_last_lr()])
    if path is not None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, path)
    return {"lrs": lrs, "weight": model.weight.detach(), "bias": model.bias.detach()}


@pytest.mark.skipif(TORCH is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("name", list(CHECKPOINTED_SCHEDULES))
def test_a_pytorch_checkpoint_with_its_scheduler_continues_on_chainrule(name, tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    checkpointed_regression(TORCH, name, 5, path=path)
    theirs = checkpointed_regression(TORCH, name, 7, checkpoint=path)
    ours = checkpointed_regression(OURS, name, 7, checkpoint=path)
    np.testing.assert_allclose(ours["lrs"], theirs["lrs"], rtol=1e-12)
    np.testing.assert_allclose(ours["weight"].numpy(), theirs["weight"].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["bias"].numpy(), theirs["bias"].numpy(), rtol=1e-10, atol=1e-12)
    # and chainrule's own checkpoint of the same run continues the same way
    our_path = str(tmp_path / "ours.pt")
    checkpointed_regression(OURS, name, 5, path=our_path)
    again = checkpointed_regression(OURS, name, 7, checkpoint=our_path)
    np.testing.assert_allclose(again["lrs"], theirs["lrs"], rtol=1e-12)


def test_lbfgs_cubic_interpolation_of_a_nan_loss_takes_the_middle_of_the_bracket_as_pytorchs():
    from optim.lbfgs import cubic_interpolate

    assert cubic_interpolate(0.0, 1.0, -1.0, 2.0, float("nan"), 3.0) == 1.0  # (it was NaN)
    assert cubic_interpolate(0.0, 1.0, -1.0, 2.0, 2.0, 3.0, bounds=(0.5, 4.0)) == pytest.approx(0.8685170918)
    if TORCH is not None:
        from torch.optim.lbfgs import _cubic_interpolate

        torch = TORCH.torch
        assert float(_cubic_interpolate(0.0, 1.0, torch.tensor(-1.0), 2.0, float("nan"), torch.tensor(3.0))) == 1.0
        assert float(_cubic_interpolate(0.0, 1.0, torch.tensor(-1.0), 2.0, 2.0, torch.tensor(3.0),
                                        bounds=(0.5, 4.0))) == pytest.approx(0.8685170918)


# ----------------------------------------------------------------------------------------------
# GradualWarmupScheduler (ildoonet/pytorch-gradual-warmup-lr): an _LRScheduler that hands over to another
# ----------------------------------------------------------------------------------------------


def gradual_warmup_class(m):
    _LRScheduler = m.optim.lr_scheduler._LRScheduler
    ReduceLROnPlateau = m.optim.lr_scheduler.ReduceLROnPlateau

    class GradualWarmupScheduler(_LRScheduler):
        """ Gradually warm-up(increasing) learning rate in optimizer.
        Proposed in 'Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour'.
        """

        def __init__(self, optimizer, multiplier, total_epoch, after_scheduler=None):
            self.multiplier = multiplier
            if self.multiplier < 1.:
                raise ValueError('multiplier should be greater thant or equal to 1.')
            self.total_epoch = total_epoch
            self.after_scheduler = after_scheduler
            self.finished = False
            super(GradualWarmupScheduler, self).__init__(optimizer)

        def get_lr(self):
            if self.last_epoch > self.total_epoch:
                if self.after_scheduler:
                    if not self.finished:
                        self.after_scheduler.base_lrs = [base_lr * self.multiplier for base_lr in self.base_lrs]
                        self.finished = True
                    return self.after_scheduler.get_last_lr()
                return [base_lr * self.multiplier for base_lr in self.base_lrs]

            if self.multiplier == 1.0:
                return [base_lr * (float(self.last_epoch) / self.total_epoch) for base_lr in self.base_lrs]
            else:
                return [base_lr * ((self.multiplier - 1.) * self.last_epoch / self.total_epoch + 1.)
                        for base_lr in self.base_lrs]

        def step_ReduceLROnPlateau(self, metrics, epoch=None):
            if epoch is None:
                epoch = self.last_epoch + 1
            self.last_epoch = epoch if epoch != 0 else 1  # ReduceLROnPlateau is called at the end of epoch
            if self.last_epoch <= self.total_epoch:
                warmup_lr = [base_lr * ((self.multiplier - 1.) * self.last_epoch / self.total_epoch + 1.)
                             for base_lr in self.base_lrs]
                for param_group, lr in zip(self.optimizer.param_groups, warmup_lr):
                    param_group['lr'] = lr
            else:
                if epoch is None:
                    self.after_scheduler.step(metrics, None)
                else:
                    self.after_scheduler.step(metrics, epoch - self.total_epoch)

        def step(self, epoch=None, metrics=None):
            if type(self.after_scheduler) != ReduceLROnPlateau:
                if self.finished and self.after_scheduler:
                    if epoch is None:
                        self.after_scheduler.step(None)
                    else:
                        self.after_scheduler.step(epoch - self.total_epoch)
                    self._last_lr = self.after_scheduler.get_last_lr()
                else:
                    return super(GradualWarmupScheduler, self).step(epoch)
            else:
                self.step_ReduceLROnPlateau(metrics, epoch)

    return GradualWarmupScheduler


def gradual_warmup_training(m, after):
    torch = m.torch
    GradualWarmupScheduler = gradual_warmup_class(m)
    w = m.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    optimizer = m.optim.SGD([w], lr=0.01, momentum=0.9)
    if after == "cosine":
        after_scheduler = m.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=1e-4)
    elif after == "step":
        after_scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    else:
        after_scheduler = m.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=1)
    scheduler = GradualWarmupScheduler(optimizer, multiplier=8, total_epoch=5, after_scheduler=after_scheduler)
    lrs, ws = [], []
    for epoch in range(1, 16):
        optimizer.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        optimizer.step()
        if after == "plateau":
            scheduler.step(epoch, metrics=1.0)  # a validation loss that has stopped improving
        else:
            scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        ws.append(w.detach().clone())
    return lrs, ws


@pytest.mark.filterwarnings("ignore:The epoch parameter in `scheduler.step\\(\\)` was not necessary")  # (the author's)
@pytest.mark.parametrize("after", ["cosine", "step", "plateau"])
def test_gradual_warmup_hands_over_to_the_after_scheduler(after):
    (lrs, _), _ = run_both(gradual_warmup_training, after, rtol=1e-12, atol=1e-15)
    assert lrs[3] == pytest.approx(0.01 * (7 * 4 / 5 + 1))  # warming up towards 8 × 0.01


# ----------------------------------------------------------------------------------------------
# A ReduceLROnPlateau subclass that logs its reductions (overriding PyTorch's _reduce_lr) and compares its own way
# ----------------------------------------------------------------------------------------------


def logged_plateau(m):
    torch = m.torch

    class LoggedPlateau(m.optim.lr_scheduler.ReduceLROnPlateau):
        def __init__(self, *args, **kwargs):
            self.log = []
            super().__init__(*args, **kwargs)

        def _reduce_lr(self, epoch):
            before = [group["lr"] for group in self.optimizer.param_groups]
            super()._reduce_lr(epoch)
            self.log.append((epoch, before, [group["lr"] for group in self.optimizer.param_groups]))

        def _is_better(self, a, best):  # better only by a margin that grows with the epochs
            return a < best - 0.01 * self.last_epoch

    w = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    optimizer = m.optim.SGD([{"params": [w]}], lr=0.5)
    scheduler = LoggedPlateau(optimizer, patience=1, factor=0.5, cooldown=1, min_lr=0.05)
    lrs = []
    for epoch in range(12):
        optimizer.zero_grad()
        loss = (w ** 2).sum() + 0.1 * torch.cos(7 * w).sum()
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item())
        lrs.append(scheduler.get_last_lr()[0])
    saved = scheduler.state_dict()
    fresh = LoggedPlateau(optimizer)
    fresh.load_state_dict(saved)
    return {"lrs": lrs, "log": scheduler.log, "w": w.detach(), "best": scheduler.best,
            "fresh": [fresh.mode, fresh.mode_worse, fresh.patience, fresh.best]}


def test_a_plateau_subclass_overriding_pytorchs_private_steps():
    ours, _ = run_both(logged_plateau, rtol=1e-12, atol=1e-14)
    assert ours["log"] and all(after[0] < before[0] for _, before, after in ours["log"])


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_plateau_step_with_an_epoch_warns_as_pytorchs(T):
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optim.SGD([T.ones(1, requires_grad=True)], lr=0.1))
    with pytest.warns(UserWarning, match="The epoch parameter in `scheduler.step\\(\\)` was not necessary"):
        scheduler.step(1.0, 3)
    assert scheduler.last_epoch == 3


def schedules_through_pytorchs_helpers(m):
    """Schedulers subclassed where PyTorch's helpers are methods: a OneCycleLR whose cosine annealing is
    squared, a CyclicLR whose triangular2 halving is a third; and the helpers called on the classes."""
    S = m.optim.lr_scheduler

    class SharpOneCycle(S.OneCycleLR):
        @staticmethod
        def _annealing_cos(start, end, pct):
            return end + (start - end) * ((math.cos(math.pi * pct) + 1) / 2) ** 2

    class ThirdCyclic(S.CyclicLR):
        @staticmethod
        def _triangular2_scale_fn(x):
            return 1 / (3.0 ** (x - 1))

    w = m.torch.zeros(1, requires_grad=True)
    one_cycle = m.optim.SGD([w], lr=0.1, momentum=0.9)
    sharp = SharpOneCycle(one_cycle, max_lr=1.0, total_steps=12)
    cyclic = m.optim.SGD([m.torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    third = ThirdCyclic(cyclic, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="triangular2")
    rows = []
    for _ in range(10):
        one_cycle.step()
        cyclic.step()
        sharp.step()
        third.step()
        rows.append(sharp.get_last_lr() + [one_cycle.param_groups[0]["momentum"]] + third.get_last_lr())
    helpers = [S.OneCycleLR._annealing_cos(1.0, 0.0, 0.25), S.OneCycleLR._annealing_linear(1.0, 0.0, 0.25),
               S.CyclicLR._triangular2_scale_fn(3), S.CyclicLR._exp_range_scale_fn(0.9, 2)]
    return rows, helpers


def test_schedulers_through_pytorchs_helper_methods():
    (rows, helpers), _ = run_both(schedules_through_pytorchs_helpers, rtol=1e-12, atol=1e-15)
    assert helpers == pytest.approx([(math.cos(math.pi / 4) + 1) / 2, 0.75, 0.25, 0.81])
    assert rows[5][2] == pytest.approx(0.01 + 0.09 / 3)  # (the second cycle's peak: a third of the first's)


# ----------------------------------------------------------------------------------------------
# A scheduler copied from PyTorch's sources: its own step() through lr_scheduler's private helpers
# ----------------------------------------------------------------------------------------------


def copied_scheduler(m, tensor_lr):
    torch = m.torch
    lr_scheduler = m.optim.lr_scheduler
    _enable_get_lr_call = lr_scheduler._enable_get_lr_call
    _format_param = lr_scheduler._format_param
    _param_groups_val_list = lr_scheduler._param_groups_val_list
    _update_param_group_val = lr_scheduler._update_param_group_val

    class WarmupPoly(lr_scheduler.LRScheduler):
        def __init__(self, optimizer, warmup, total, floor_lr=0.0, last_epoch=-1):
            self.warmup, self.total = warmup, total
            self.floor_lrs = _format_param("floor_lr", optimizer, floor_lr)
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            lr_scheduler._warn_get_lr_called_within_step(self)
            t = self.last_epoch
            if t < self.warmup:
                return [base * (t + 1) / self.warmup for base in self.base_lrs]
            frac = min(1.0, (t - self.warmup) / (self.total - self.warmup))
            return [floor + (base - floor) * (1 - frac) ** 2 for base, floor in zip(self.base_lrs, self.floor_lrs)]

        def step(self, epoch=None):
            self._step_count += 1
            with _enable_get_lr_call(self):
                if epoch is None:
                    self.last_epoch += 1
                else:
                    self.last_epoch = epoch
                values = self.get_lr()
            for param_group, lr in zip(self.optimizer.param_groups, values):
                _update_param_group_val(param_group, "lr", lr)
            self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.2, dtype=torch.float64) if tensor_lr else 0.2
    optimizer = m.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.1}], lr=lr, momentum=0.9)
    scheduler = WarmupPoly(optimizer, warmup=3, total=10, floor_lr=[0.01, 0.005])
    lrs = []
    for step in range(12):
        optimizer.zero_grad()
        loss = ((w - torch.tensor([1.0, -2.0], dtype=torch.float64)) ** 2).sum() + (b - 0.5).pow(2).sum()
        loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append([float(v) for v in scheduler.get_last_lr()])
    return {"lrs": lrs, "w": w.detach(), "b": b.detach(), "lr_kind": type(optimizer.param_groups[0]["lr"]).__name__}


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_a_scheduler_copied_from_pytorchs_sources(tensor_lr):
    ours, _ = run_both(copied_scheduler, tensor_lr, rtol=1e-12, atol=1e-15)
    assert ours["lrs"][0] == pytest.approx([0.2 * 2 / 3, 0.1 * 2 / 3])
    assert ours["lr_kind"] == ("Tensor" if tensor_lr else "float")


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_the_optimizer_helpers_copied_code_calls_as_pytorchs(T):
    helpers = importlib.import_module(f"{'optim' if T.__name__ == 'autograd' else 'torch.optim'}.optimizer")
    a, b, c = T.ones(1), T.ones(2, dtype=T.float64), T.ones(3)
    for with_indices, indices in ((False, [[], []]), (True, [[0, 2], [1]])):
        groups = helpers.Optimizer._group_tensors_by_device_and_dtype([[a, b, c], [c, b, a], []], with_indices)
        assert sorted(([len(v) for v in lists], found) for lists, found in groups.values()) == \
            sorted(zip([[2, 2, 0], [1, 1, 0]], indices))
    assert helpers._get_value(T.tensor(3.0)) == 3.0 and helpers._get_value(2) == 2
    assert helpers._to_scalar(T.tensor([0.5])).dim() == 0 and helpers._to_scalar(0.5) == 0.5
    assert helpers._get_scalar_dtype() == T.float32 and helpers._get_scalar_dtype(is_fused=True) == T.float32
    assert helpers._default_to_fused_or_foreach([a, c], differentiable=False) == (False, False)  # (on the CPU)
    assert helpers._default_to_fused_or_foreach([a, c], differentiable=False, use_fused=True) == (True, False)
    assert helpers._default_to_fused_or_foreach([a], differentiable=True, use_fused=True) == (False, False)
    z = T.tensor([1 + 2j])
    params, grads = [z, a], [T.tensor([3 + 4j]), a]
    helpers._view_as_real(params, grads)
    assert tuple(params[0].shape) == (1, 2) and grads[0].tolist() == [[3.0, 4.0]] and params[1] is a


def test_zero_grad_without_none_keeps_a_graph_gradient_tensor_as_pytorchs():
    torch, optim = OURS.torch, OURS.optim
    w = torch.ones(2, requires_grad=True)
    optimizer = optim.SGD([w], lr=0.1)
    (w ** 3).sum().backward(create_graph=True)
    grad = w.grad
    optimizer.zero_grad(set_to_none=False)
    assert not w.grad.requires_grad and w.grad.grad_fn is None and w.grad.tolist() == [0.0, 0.0]
    assert w.grad is grad
