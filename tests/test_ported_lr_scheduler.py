"""Learning-rate schedulers ported from PyTorch's test/optim/test_lrscheduler.py (TestLRScheduler).

Every schedule's learning rates epoch by epoch (the literal or closed-form targets of PyTorch's
tests), the chainable form against the closed form that ``step(epoch)`` uses, the combinators
(SequentialLR, ChainedScheduler, several schedulers on one optimizer), ReduceLROnPlateau,
CyclicLR, OneCycleLR, CosineAnnealingWarmRestarts, SWALR, state_dict round trips, resuming with
``last_epoch``, the step-order warnings and the errors. Each test runs on chainrule's
`optim` and, where it is installed, on ``torch.optim`` (fixture `T`).

The optimizer of most tests is PyTorch's: SGD over two groups, lr 0.05 and a Tensor lr 0.5.
"""

import copy
import gc
import importlib
import math
import pickle
import types
import warnings
import weakref

import numpy as np
import pytest

from tests.ported import raises


def optim_of(T):
    """The optimizers of the library under test: chainrule's `optim` or torch.optim."""
    return importlib.import_module("optim") if T.__name__ == "autograd" else T.optim


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def number(x):
    """A learning rate, momentum, ... as a Python float (a Tensor lr too)."""
    return float(x) if x is not None else None


def same_lrs(expected, got, atol=1e-5, where=""):
    """Lists of learning rates agree to atol (PyTorch's tests' tolerance)."""
    expected, got = [number(x) for x in expected], [number(x) for x in got]
    assert len(expected) == len(got), f"{where}: {len(expected)} groups != {len(got)}"
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=where)


def equal(a, b):
    """Deep equality of scheduler attributes: Tensors by value, containers element by element."""
    if hasattr(a, "detach") or hasattr(b, "detach"):
        return np.array_equal(np.asarray(number(a)), np.asarray(number(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


class Case:
    """PyTorch's setUp: a net of two 1x1 convolutions and SGD over two groups, lr 0.05 and a Tensor lr 0.5."""

    def __init__(self, T):
        self.T, self.optim, self.nn = T, optim_of(T), nn_of(T)
        self.S = self.optim.lr_scheduler
        self.setUp()

    def setUp(self):
        T, nn = self.T, self.nn
        T.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)
        self.opt = self.optim.SGD([{"params": self.conv1.parameters()},
                                   {"params": self.conv2.parameters(), "lr": T.tensor(0.5)}], lr=0.05)

    def parameters(self):
        return [*self.conv1.parameters(), *self.conv2.parameters()]

    def lrs(self):
        return [group["lr"] for group in self.opt.param_groups]

    # PyTorch's drivers, which step and compare each epoch's learning rates with targets (one list per group)
    def run(self, schedulers, targets, epochs=10):
        """The lr of each epoch, then every scheduler steps."""
        if not isinstance(schedulers, list):
            schedulers = [schedulers]
        for epoch in range(epochs):
            same_lrs([t[epoch] for t in targets], self.lrs()[:len(targets)], where=f"epoch {epoch}")
            for scheduler in schedulers:
                scheduler.step()

    def run_with_epoch(self, schedulers, targets, epochs=10):
        """step(epoch), the deprecated form, warns once per scheduler and jumps to the closed form."""
        if not isinstance(schedulers, list):
            schedulers = [schedulers]
        for epoch in range(epochs):
            self.opt.step()
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                for scheduler in schedulers:
                    scheduler.step(epoch)
            check_epoch_deprecation(self, w, len(schedulers))
            same_lrs([t[epoch] for t in targets], self.lrs()[:len(targets)], where=f"epoch {epoch}")

    def run_get_last_lr(self, schedulers, targets, epochs=10):
        if not isinstance(schedulers, list):
            schedulers = [schedulers]
        optimizers = {id(s.optimizer): s.optimizer for s in schedulers}.values()
        for epoch in range(epochs):
            results = [scheduler.get_last_lr() for scheduler in schedulers]
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            for result in results:
                same_lrs([t[epoch] for t in targets], result, where=f"epoch {epoch}")

    def run_against_closed_form(self, make, epochs=10):
        """The chainable form (step()) follows the closed form (step(epoch)) epoch by epoch. (PyTorch's own
        version reads the lrs of a fresh optimizer made after both schedulers, so it compares constants;
        here each scheduler steps the optimizer that is read.)"""
        self.setUp()
        closed = make(self.opt)
        targets = []
        for epoch in range(epochs):
            self.opt.step()
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                closed.step(epoch + 1)  # after epoch + 1 steps the chainable form is at epoch + 1
            check_epoch_deprecation(self, w)
            targets.append([number(lr) for lr in self.lrs()])
        self.setUp()
        scheduler = make(self.opt)
        for epoch in range(epochs):
            self.opt.step()
            scheduler.step()
            same_lrs(targets[epoch], self.lrs(), where=f"epoch {epoch}")

    def run_plateau(self, schedulers, targets, metrics, epochs=10):
        if not isinstance(schedulers, list):
            schedulers = [schedulers]
        for epoch in range(epochs):
            self.opt.step()
            for scheduler in schedulers:
                if isinstance(scheduler, self.S.ReduceLROnPlateau):
                    scheduler.step(metrics[epoch])
                else:
                    scheduler.step()
            same_lrs([t[epoch] for t in targets], self.lrs()[:len(targets)], where=f"epoch {epoch}")

    def run_cycle(self, scheduler, lr_targets, momentum_targets, batches, use_beta1=False):
        for batch in range(batches):
            for group, lr_target, momentum_target in zip(self.opt.param_groups, lr_targets, momentum_targets):
                same_lrs([lr_target[batch]], [group["lr"]], where=f"lr of batch {batch}")
                if use_beta1 and "betas" in group:
                    same_lrs([momentum_target[batch]], [group["betas"][0]], where=f"beta1 of batch {batch}")
                elif "momentum" in group:
                    same_lrs([momentum_target[batch]], [group["momentum"]], where=f"momentum of batch {batch}")
            self.opt.step()
            scheduler.step()

    def check_state_dict(self, make, make_other, epochs=10):
        """A scheduler's state_dict, loaded into one made differently, makes it the same scheduler."""
        scheduler = make()
        for _ in range(epochs):
            scheduler.optimizer.step()
            scheduler.step()
        copied = make_other()
        copied.load_state_dict(scheduler.state_dict())
        for key in scheduler.__dict__:
            if key != "optimizer":
                assert equal(scheduler.__dict__[key], copied.__dict__[key]), key
        same_lrs(scheduler.get_last_lr(), copied.get_last_lr())


def check_epoch_deprecation(case, caught, count=1):
    """`caught` holds exactly `count` warnings, each the deprecation of step(epoch)."""
    assert len(caught) == count, [str(w.message) for w in caught]
    for w in caught:
        assert w.message.args == (case.S.EPOCH_DEPRECATION_WARNING,)


@pytest.fixture
def c(T):
    return Case(T)


# ---- construction, cycles of references, the step-order warnings ----

def test_error_when_getlr_has_epoch(c):
    class MultiStepLR(c.S.LRScheduler):
        def __init__(self, optimizer, gamma, milestones, last_epoch=-1):
            self.init_lr = [group["lr"] for group in optimizer.param_groups]
            self.gamma, self.milestones = gamma, milestones
            super().__init__(optimizer, last_epoch)

        def get_lr(self, step):
            return self.init_lr

    optimizer = c.optim.SGD([c.T.rand(1)], lr=1)
    with pytest.raises(TypeError):
        MultiStepLR(optimizer, gamma=1, milestones=[10, 20])


def test_no_cyclic_references(c):
    param = c.nn.Parameter(c.T.empty(10))
    opt = c.optim.SGD([param], lr=0.5)
    scheduler = c.S.LambdaLR(opt, lambda epoch: 1.0)
    del scheduler
    assert len(gc.get_referrers(opt)) == 0, "Optimizer should contain no cyclic references"
    gc.collect()
    gone = weakref.ref(opt)
    gc.disable()  # (freed by its reference count alone, with no cycle to collect; PyTorch's test counts what
    try:  # gc.collect() finds, which garbage left by other tests' threads also moves)
        del opt
        assert gone() is None, "Optimizer should be garbage-collected on __del__"
    finally:
        gc.enable()


def test_no_cyclic_references_in_step(c):
    def run():
        param = c.T.empty(10, requires_grad=True)
        opt = c.optim.SGD(params=[param], lr=0.5)
        scheduler = c.S.LambdaLR(opt, lambda epoch: 1.0)
        param.sum().backward()
        opt.step()
        scheduler.step()
        return weakref.ref(scheduler)

    gc.disable()
    try:
        assert run()() is None
    finally:
        gc.enable()


def no_warning_while(fn):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        out = fn()
    assert len(ws) == 0, [str(w.message) for w in ws]
    return out


def old_pattern(c, scheduler):
    for _ in range(35):
        scheduler.step()
        c.opt.step()


@pytest.mark.parametrize("resuming", [False, True])
def test_old_pattern_warning(c, resuming):
    """scheduler.step() before optimizer.step() warns that the first lr of the schedule is skipped."""
    if resuming:
        for group in c.opt.param_groups:
            group["initial_lr"] = 0.01
    scheduler = no_warning_while(lambda: c.S.StepLR(c.opt, gamma=0.1, step_size=3,
                                                     last_epoch=10 if resuming else -1))
    with pytest.warns(UserWarning, match="how-to-adjust-learning-rate"):
        old_pattern(c, scheduler)


def override_step(opt):
    """Replace opt.step on the instance by a function that calls the old one."""
    old_step = opt.step

    def new_step(o, *args, **kwargs):
        return old_step(*args, **kwargs)

    opt.step = types.MethodType(new_step, opt)


def test_old_pattern_warning_with_overridden_optim_step(c):
    for group in c.opt.param_groups:
        group["initial_lr"] = 0.01
    scheduler = no_warning_while(lambda: c.S.StepLR(c.opt, gamma=0.1, step_size=3, last_epoch=10))
    override_step(c.opt)
    with pytest.warns(UserWarning, match="how-to-adjust-learning-rate"):
        old_pattern(c, scheduler)


def test_new_pattern_no_warning(c):
    scheduler = no_warning_while(lambda: c.S.StepLR(c.opt, gamma=0.1, step_size=3))

    def new_pattern():
        for _ in range(35):
            c.opt.step()
            scheduler.step()

    no_warning_while(new_pattern)


def test_new_pattern_no_warning_with_overridden_optim_step(c):
    """An optimizer.step replaced after the scheduler was made cannot be watched: PyTorch warns so."""
    scheduler = no_warning_while(lambda: c.S.StepLR(c.opt, gamma=0.1, step_size=3))
    override_step(c.opt)
    with pytest.warns(UserWarning, match=r"`optimizer.step\(\)` has been overridden"):
        for _ in range(35):
            c.opt.step()
            scheduler.step()


def test_step_before_scheduler_made_with_overridden_step_no_warning(c):
    """A step replaced before the scheduler was made is watched like the optimizer's own."""
    override_step(c.opt)
    scheduler = no_warning_while(lambda: c.S.StepLR(c.opt, gamma=0.1, step_size=3))

    def new_pattern():
        for _ in range(5):
            c.opt.step()
            scheduler.step()

    no_warning_while(new_pattern)


@pytest.mark.parametrize("make", [
    lambda S, opt: S.StepLR(opt, 2),
    lambda S, opt: S.ExponentialLR(opt, gamma=0.9),
    lambda S, opt: S.ConstantLR(opt),
    lambda S, opt: S.LinearLR(opt),
    lambda S, opt: S.PolynomialLR(opt, power=0.9),
], ids=["StepLR", "ExponentialLR", "ConstantLR", "LinearLR", "PolynomialLR"])
def test_lr_is_constant_for_constant_epoch(c, make):
    scheduler = make(c.S, c.opt)
    seen = []
    for _ in range(10):
        scheduler.optimizer.step()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            scheduler.step(2)
        check_epoch_deprecation(c, w)
        seen.append(number(c.opt.param_groups[0]["lr"]))
    assert min(seen) == max(seen)


# ---- the schedules' values ----

def test_step_lr(c):
    single = [0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3
    c.run(c.S.StepLR(c.opt, gamma=0.1, step_size=3), [single, [x * 10 for x in single]], 10)


def test_get_last_lr_step_lr(c):
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.randn(2, 2, requires_grad=True))], 0.1)
    scheduler = c.S.StepLR(optimizer, 3, gamma=0.1)
    c.run_get_last_lr(scheduler, [[0.1] * 3 + [0.01] * 3 + [0.001] * 3 + [0.0001]], 10)


def test_get_last_lr_multi_step_lr(c):
    single = [0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 1
    c.run_get_last_lr(c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9]), [single, [x * 10 for x in single]])


def test_raise_error_when_last_epoch_is_greater_than_0_and_initial_lr_is_not_specified(c):
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.randn(2, 2, requires_grad=True))], 0.1)
    raises(KeyError, r"param \'initial_lr\' is not specified in param_groups\[0\] when resuming scheduler with "
                     r"last_epoch >= 0", c.S.StepLR, optimizer, step_size=3, gamma=0.1, last_epoch=1)


def test_multi_step_lr(c):
    single = [0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 3
    c.run(c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9]), [single, [x * 10 for x in single]])


def test_multi_step_lr_with_epoch(c):
    single = [0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 3
    c.run_with_epoch(c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9]), [single, [x * 10 for x in single]])


def test_get_last_lr_constantlr(c):
    single = [0.025] * 5 + [0.05] * 5
    c.run_get_last_lr(c.S.ConstantLR(c.opt, factor=1.0 / 2, total_iters=5), [single, [x * 10 for x in single]])


def linear_targets(start, end, iters, epochs=10):
    single = [0.05 * (start + i * (end - start) / iters) for i in range(iters)] + [0.05 * end] * (epochs - iters)
    return [single, [x * 10 for x in single]]


def test_get_last_lr_linearlr(c):
    scheduler = c.S.LinearLR(c.opt, start_factor=1.0 / 4, end_factor=3.0 / 5, total_iters=4)
    c.run_get_last_lr(scheduler, linear_targets(1.0 / 4, 3.0 / 5, 4))


def test_constantlr(c):
    single = [0.025] * 5 + [0.05] * 5
    c.run(c.S.ConstantLR(c.opt, factor=1.0 / 2, total_iters=5), [single, [x * 10 for x in single]])


def test_constantlr_with_epoch(c):
    single = [0.025] * 5 + [0.05] * 5
    c.run_with_epoch(c.S.ConstantLR(c.opt, factor=1.0 / 2, total_iters=5), [single, [x * 10 for x in single]])


def test_linearlr(c):
    c.run(c.S.LinearLR(c.opt, start_factor=1.0 / 2, total_iters=4), linear_targets(0.5, 1.0, 4))


def test_linearlr_with_epoch(c):
    c.run_with_epoch(c.S.LinearLR(c.opt, start_factor=1.0 / 2, total_iters=4), linear_targets(0.5, 1.0, 4))


@pytest.mark.parametrize("start_factor", [0.0, 1.1])
def test_linearlr_start_factor_limits(c, start_factor):
    raises(ValueError, "Starting multiplicative factor expected to be greater than 0 and less or equal to 1",
           c.S.LinearLR, c.opt, start_factor=start_factor, total_iters=4)


@pytest.mark.parametrize("factor", [-0.1, 1.1])
def test_constantlr_factor_limits(c, factor):
    raises(ValueError, "Constant multiplicative factor expected to be between 0 and 1", c.S.ConstantLR, c.opt,
           factor=factor)


def test_exp_lr(c):
    single = [0.05 * 0.9**x for x in range(10)]
    c.run(c.S.ExponentialLR(c.opt, gamma=0.9), [single, [x * 10 for x in single]])


def test_poly_lr(c):
    single = [(1.0 - x / 5) ** 0.9 * 0.05 for x in range(5)] + [0.0] * 5
    c.run(c.S.PolynomialLR(c.opt, power=0.9, total_iters=5), [single, [x * 10 for x in single]])


def cosine(x, T_max, top=0.05, eta_min=1e-10):
    return eta_min + (top - eta_min) * (1 + math.cos(math.pi * x / T_max)) / 2


def test_cos_anneal_lr(c):
    single = [cosine(x, 10) for x in range(10)]
    c.run(c.S.CosineAnnealingLR(c.opt, T_max=10, eta_min=1e-10), [single, [x * 10 for x in single]])


@pytest.mark.parametrize("make", [
    lambda S, opt: S.StepLR(opt, gamma=0.1, step_size=3),
    lambda S, opt: S.LinearLR(opt, start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
    lambda S, opt: S.ConstantLR(opt, factor=1.0 / 3, total_iters=4),
    lambda S, opt: S.MultiStepLR(opt, gamma=0.1, milestones=[2, 5, 9]),
    lambda S, opt: S.ExponentialLR(opt, gamma=0.9),
    lambda S, opt: S.PolynomialLR(opt, power=0.9),
    lambda S, opt: S.CosineAnnealingLR(opt, T_max=5, eta_min=1e-10),
], ids=["StepLR", "LinearLR", "ConstantLR", "MultiStepLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR"])
def test_closed_form(c, make):
    """20 epochs: CosineAnnealingLR's chainable form goes past T_max = 5 (rising again) with the closed form."""
    c.run_against_closed_form(lambda opt: make(c.S, opt), 20)


def test_cos_anneal_lr_continue(c):
    scheduler = c.S.CosineAnnealingLR(c.opt, T_max=5, eta_min=0.1)
    c.opt.step()
    scheduler.step()
    original = scheduler.get_last_lr()
    resumed = c.S.CosineAnnealingLR(c.opt, T_max=5, eta_min=0.1, last_epoch=0)
    np.testing.assert_allclose([number(x) for x in resumed.get_last_lr()], [number(x) for x in original],
                               rtol=1e-4, atol=1e-5)


# ---- ReduceLROnPlateau ----

def set_all_lrs(c, lr):
    for group in c.opt.param_groups:
        group["lr"] = lr


PLATEAU_CASES = {
    "1": (10, dict(threshold_mode="abs", mode="min", threshold=0.01, patience=5, cooldown=5),
          [[0.5] * 20], [10 - i * 0.0167 for i in range(20)]),
    "2": (22, dict(patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
          [[0.5] * 6 + [0.05] * 7 + [0.005] * 7 + [0.0005] * 2], [10 - i * 0.0165 for i in range(22)]),
    "3": (22, dict(mode="max", patience=5, cooldown=5, threshold_mode="abs"),
          [[0.5] * (2 + 6) + [0.05] * (5 + 6) + [0.005] * 4], [-0.8] * 2 + [-0.234] * 20),
    "4": (20, dict(mode="max", patience=3, threshold_mode="rel", threshold=0.1),
          [[0.5] * 20], [1.5 * (1.025**i) for i in range(20)]),
    "5": (20, dict(mode="max", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
          [[0.5] * 6 + [0.05] * (5 + 6) + [0.005] * 4], [1.5 * (1.005**i) for i in range(20)]),
    "6": (20, dict(mode="min", threshold_mode="rel", threshold=0.1),
          [[0.5] * 20], [1.5 * (0.85**i) for i in range(20)]),
    "7": (20, dict(mode="min", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
          [[0.5] * 6 + [0.05] * (5 + 6) + [0.005] * 4], [1] * 7 + [0.6] + [0.5] * 12),
    "8": (20, dict(mode="max", threshold_mode="rel", min_lr=[0.4, 0.3], threshold=0.1, patience=5, cooldown=5),
          [[0.5] * 6 + [0.4] * 14, [0.5] * 6 + [0.3] * 14], [1.5 * (1.005**i) for i in range(20)]),
}


@pytest.mark.parametrize("name", PLATEAU_CASES)
def test_reduce_lr_on_plateau(c, name):
    epochs, kwargs, targets, metrics = PLATEAU_CASES[name]
    set_all_lrs(c, 0.5)
    c.run_plateau(c.S.ReduceLROnPlateau(c.opt, **kwargs), targets, metrics, epochs)


def test_reduce_lr_on_plateau_get_last_lr_before_step(c):
    set_all_lrs(c, 0.5)
    scheduler = c.S.ReduceLROnPlateau(c.opt)
    same_lrs([0.5, 0.5], scheduler.get_last_lr())


def test_reduce_lr_on_plateau_preserves_lr_type(c):
    """A Tensor lr stays a Tensor (filled in place), a float a float."""
    kinds = [type(group["lr"]) for group in c.opt.param_groups]
    scheduler = c.S.ReduceLROnPlateau(c.opt, mode="min", patience=0)
    scheduler.step(1.0)
    scheduler.step(2.0)  # reduces
    assert [type(group["lr"]) for group in c.opt.param_groups] == kinds
    same_lrs([0.005, 0.05], c.lrs())


@pytest.mark.parametrize("kwargs, words", [
    (dict(factor=1.0), "Factor should be < 1.0"),
    (dict(mode="middle"), "mode middle is unknown!"),
    (dict(threshold_mode="far"), "threshold mode far is unknown!"),
    (dict(min_lr=[0.1]), "expected 2 min_lrs, got 1"),
])
def test_reduce_lr_on_plateau_errors(c, kwargs, words):
    raises(ValueError, words, c.S.ReduceLROnPlateau, c.opt, **kwargs)


@pytest.mark.parametrize("min_lr", ["scalar", "list"])
def test_add_param_group_does_not_break_reduce_lr_on_plateau(c, min_lr):
    set_all_lrs(c, 0.5)
    targets = [[0.5] * 6 + [0.05] * (5 + 6) + [0.005] * 4]
    metrics = [1] * 7 + [0.6] + [0.5] * 12
    scheduler = c.S.ReduceLROnPlateau(c.opt, mode="min", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5,
                                      min_lr=0 if min_lr == "scalar" else [1e-5, 1e-4])
    for epoch in range(20):
        if epoch == 8:
            c.opt.add_param_group({"params": [c.nn.Parameter(c.T.rand(2, 3))], "lr": 0.05})
            if min_lr == "list":
                scheduler.min_lrs.append(1e-6)
        c.opt.step()
        scheduler.step(metrics[epoch])
        same_lrs([targets[0][epoch]], c.lrs()[:1], where=f"epoch {epoch}")


def test_add_param_group_errors_reduce_lr_on_plateau(c):
    scheduler = c.S.ReduceLROnPlateau(c.opt, mode="min", threshold_mode="rel", threshold=1e-5, patience=0,
                                      cooldown=0, min_lr=[1e-5, 1e-4])
    c.opt.add_param_group({"params": [c.nn.Parameter(c.T.rand(2, 3))], "lr": 0.05})
    c.opt.step()
    scheduler.step(1)
    c.opt.step()
    raises(RuntimeError, "The number of param groups in the", scheduler.step, 1.3)


# ---- SequentialLR and ChainedScheduler ----

def test_sequentiallr1(c):
    targets = [[0.05, 0.04, 0.032] + [0.05] * 4 + [0.005] * 4 + [0.0005] * 4 + [0.00005] * 4]
    schedulers = [c.S.ExponentialLR(c.opt, gamma=0.8), c.S.StepLR(c.opt, gamma=0.1, step_size=4)]
    c.run(c.S.SequentialLR(c.opt, schedulers=schedulers, milestones=[3]), targets, 19)


def test_sequentiallr2(c):
    targets = [[0.005, 0.005, 0.005] + [0.05 * 0.9**x for x in range(10)]]
    schedulers = [c.S.ConstantLR(c.opt, factor=0.1, total_iters=3), c.S.ExponentialLR(c.opt, gamma=0.9)]
    c.run(c.S.SequentialLR(c.opt, schedulers=schedulers, milestones=[3]), targets, 13)


def three_schedulers(c):
    return [c.S.ConstantLR(c.opt, factor=0.1, total_iters=3), c.S.ExponentialLR(c.opt, gamma=0.8),
            c.S.StepLR(c.opt, gamma=0.1, step_size=2)]


THREE_TARGETS = [0.005] * 3 + [0.05, 0.04, 0.032] + [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005]


def test_sequentiallr3(c):
    c.run(c.S.SequentialLR(c.opt, schedulers=three_schedulers(c), milestones=[3, 6]), [THREE_TARGETS], 12)


def test_sequentiallr4(c):
    """Making the schedulers does not change the optimizer's learning rate."""
    optimizer = c.optim.SGD([c.T.tensor(0.5)], lr=0.1)
    schedulers = [c.S.ConstantLR(optimizer, factor=1), c.S.ConstantLR(optimizer, factor=0.1)]
    c.S.SequentialLR(optimizer, schedulers, milestones=[10])
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_sequentiallr5(c):
    """SequentialLR of a ChainedScheduler then a ConstantLR."""
    targets = [[0.0005, 0.0014, 0.0023, 0.0032, 0.0041] + [0.025] * 5]
    const = c.S.ConstantLR(optimizer=c.opt, factor=0.1, total_iters=5)
    linear = c.S.LinearLR(optimizer=c.opt, start_factor=0.1, total_iters=5)
    chained = c.S.ChainedScheduler([linear, const])
    const2 = c.S.ConstantLR(optimizer=c.opt, factor=0.5, total_iters=5)
    c.run(c.S.SequentialLR(c.opt, schedulers=[chained, const2], milestones=[5]), targets, 10)


def test_sequentiallr_no_warnings(c):
    first = c.S.LinearLR(c.opt, start_factor=0.5, end_factor=0.1, total_iters=5)
    scheduler = c.S.SequentialLR(c.opt, schedulers=[first, c.S.ExponentialLR(c.opt, gamma=0.9)], milestones=[5])
    for _ in range(10):
        c.opt.step()
        no_warning_while(scheduler.step)


def test_get_last_lr_sequentiallr(c):
    scheduler = c.S.SequentialLR(c.opt, schedulers=three_schedulers(c), milestones=[3, 6])
    c.run_get_last_lr(scheduler, [THREE_TARGETS, [x * 10 for x in THREE_TARGETS]], 12)


def test_sequentiallr_does_not_alias_lr_and_initial_lr(c):
    """With a Tensor lr, the schedules start from its first value (PyTorch issue 162359)."""
    c.opt = c.optim.SGD(c.parameters(), lr=c.T.tensor(2.0))
    schedulers = [c.S.LinearLR(c.opt, 0.1, 0.8, total_iters=4), c.S.LinearLR(c.opt, 0.8, 0.1, total_iters=4)]
    scheduler = c.S.SequentialLR(c.opt, schedulers, milestones=[4])
    c.run(scheduler, [[0.2, 0.55, 0.9, 1.25, 1.6, 1.25, 0.9, 0.55]], 8)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(schedulers=[], milestones=[]), ValueError, "SequentialLR expects at least one scheduler"),
    (dict(milestones=[1, 2]), ValueError, "Sequential Schedulers expects number of schedulers provided to be one "
                                          "more than the number of milestone points"),
])
def test_sequentiallr_errors(c, kwargs, error, words):
    kwargs = dict(kwargs)
    kwargs.setdefault("schedulers", [c.S.ConstantLR(c.opt), c.S.ExponentialLR(c.opt, 0.9)])
    raises(error, words, c.S.SequentialLR, c.opt, **kwargs)


def test_combinators_refuse_plateau_and_other_optimizers(c):
    other = c.optim.SGD([c.nn.Parameter(c.T.zeros(1))], lr=0.1)
    raises(ValueError, "does not support `ReduceLROnPlateau`", c.S.SequentialLR, c.opt,
           [c.S.ConstantLR(c.opt), c.S.ReduceLROnPlateau(c.opt)], milestones=[1])
    raises(ValueError, "expects all schedulers to belong to the same optimizer", c.S.ChainedScheduler,
           [c.S.ConstantLR(c.opt), c.S.ConstantLR(other)])


def test_chained_lr2_get_last_lr_before_step(c):
    schedulers = [c.S.LinearLR(c.opt, start_factor=0.4, total_iters=3),
                  c.S.MultiStepLR(c.opt, milestones=[4, 8, 10], gamma=0.1)]
    scheduler = c.S.ChainedScheduler(schedulers)
    same_lrs(schedulers[-1].get_last_lr(), scheduler.get_last_lr())


def chained(c, schedulers, targets, epochs):
    scheduler = c.S.ChainedScheduler(schedulers)
    c.run([scheduler], targets, epochs)
    same_lrs(schedulers[-1].get_last_lr(), scheduler.get_last_lr())


def test_chained_lr1(c):
    chained(c, [c.S.StepLR(c.opt, gamma=0.1, step_size=3)],
            [[0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3], 10)


def test_chained_lr2(c):
    chained(c, [c.S.LinearLR(c.opt, start_factor=0.4, total_iters=3)], [[0.02, 0.03, 0.04] + [0.05] * 9], 10)


def test_chained_lr3(c):
    chained(c, [c.S.LinearLR(c.opt, start_factor=0.4, total_iters=3),
                c.S.MultiStepLR(c.opt, milestones=[4, 8, 10], gamma=0.1)],
            [[0.02, 0.03, 0.04, 0.05] + [0.005] * 4 + [0.0005] * 3 + [0.00005] * 3], 10)


def test_chained_lr4(c):
    targets = [[0.05 * 0.2 * 0.9**x for x in range(3)] + [0.05 * 0.2 * 0.9**3 * 0.1]
               + [0.05 * 0.9**x * 0.1 for x in range(4, 6)] + [0.05 * 0.9**x * 0.01 for x in range(6, 9)]]
    chained(c, [c.S.ExponentialLR(c.opt, gamma=0.9), c.S.ConstantLR(c.opt, factor=0.2, total_iters=4),
                c.S.StepLR(c.opt, gamma=0.1, step_size=3)], targets, 9)


def test_chained_lr5(c):
    def poly(lr):
        return [lr * (1.0 - x / 5) ** 0.9 for x in range(5)] + [0.0] * 5

    targets = [[x * 0.1 for x in poly(0.05)], [x * 0.1 for x in poly(0.5)]]
    chained(c, [c.S.PolynomialLR(c.opt, power=0.9, total_iters=5), c.S.ConstantLR(c.opt, factor=0.1)], targets, 10)


# several schedulers stepping one optimizer: their chainable forms multiply
def compound_targets(base, multipliers):
    single = [x * y for x, y in zip(base, multipliers)]
    return [single, [x * 10 for x in single]]


def test_compound_step_and_multistep_lr(c):
    c.run([c.S.StepLR(c.opt, gamma=0.1, step_size=3), c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9])],
          [[0.05] * 2 + [0.005] * 1 + [5e-4] * 2 + [5e-5] + [5e-6] * 3 + [5e-8]])


def test_compound_step_and_exp_lr(c):
    targets = compound_targets([0.05 * 0.9**x for x in range(12)], [0.1 ** (x // 3) for x in range(12)])
    c.run([c.S.StepLR(c.opt, gamma=0.1, step_size=3), c.S.ExponentialLR(c.opt, gamma=0.9)], targets)


def test_compound_exp_and_multistep_lr(c):
    steps = [1] * 2 + [0.1] * 3 + [0.01] * 4 + [0.001] * 2
    targets = compound_targets([0.05 * 0.9**x for x in range(11)], steps)
    c.run([c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9]), c.S.ExponentialLR(c.opt, gamma=0.9)], targets)


def test_compound_exp_and_linearlr(c):
    factors = [0.4 + i / 4 * 0.5 for i in range(4)] + [0.9] * 7
    targets = compound_targets([0.05 * 0.9**x for x in range(11)], factors)
    c.run([c.S.LinearLR(c.opt, start_factor=0.4, end_factor=0.9, total_iters=4),
           c.S.ExponentialLR(c.opt, gamma=0.9)], targets)


def test_compound_step_and_constantlr(c):
    single = [0.05 * 0.4] * 3 + [0.005 * 0.4] + [0.005] * 2 + [0.0005] * 3 + [0.00005] * 3
    c.run([c.S.StepLR(c.opt, gamma=0.1, step_size=3), c.S.ConstantLR(c.opt, factor=0.4, total_iters=4)],
          [single, [x * 10 for x in single]])


def test_compound_linearlr_and_multistep_lr(c):
    base = [0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 2
    targets = compound_targets(base, [0.4 + i / 4 * 0.6 for i in range(4)] + [1] * 7)
    c.run([c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9]),
           c.S.LinearLR(c.opt, start_factor=0.4, total_iters=4)], targets)


COSINE = [cosine(x, 10) for x in range(10)]


def test_compound_cosanneal_and_step_lr(c):
    targets = compound_targets(COSINE, [0.1 ** (i // 3) for i in range(10)])
    c.run([c.S.CosineAnnealingLR(c.opt, T_max=10, eta_min=1e-10), c.S.StepLR(c.opt, gamma=0.1, step_size=3)], targets)


def test_compound_cosanneal_and_multistep_lr(c):
    targets = compound_targets(COSINE, [1] * 2 + [0.1] * 3 + [0.01] * 4 + [0.001])
    c.run([c.S.CosineAnnealingLR(c.opt, T_max=10, eta_min=1e-10),
           c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[2, 5, 9])], targets)


def test_compound_cosanneal_and_linearlr(c):
    targets = compound_targets(COSINE, [0.4 + i / 4 * 0.6 for i in range(4)] + [1] * 6)
    c.run([c.S.LinearLR(c.opt, start_factor=0.4, total_iters=4),
           c.S.CosineAnnealingLR(c.opt, T_max=10, eta_min=1e-10)], targets)


def test_compound_cosanneal_and_exp_lr(c):
    targets = compound_targets(COSINE, [0.1**i for i in range(10)])
    c.run([c.S.CosineAnnealingLR(c.opt, T_max=10, eta_min=1e-10), c.S.ExponentialLR(c.opt, gamma=0.1)], targets)


def test_compound_reduce_lr_on_plateau(c):
    """ReduceLROnPlateau with another schedule on the same optimizer (PyTorch's compound plateau tests
    check no epoch: their targets list is emptied; here the values are checked)."""
    set_all_lrs(c, 0.5)
    metrics = [10 - i * 0.0165 for i in range(22)]
    plateau = c.S.ReduceLROnPlateau(c.opt, patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1)
    steps = c.S.MultiStepLR(c.opt, gamma=0.1, milestones=[3, 8, 12])
    # After step e (from 0): MultiStepLR is at epoch e + 1, so its milestones act at e = 2, 7, 11. The metric
    # falls 0.0165 an epoch, so it beats the best by the threshold 0.1 every 7th epoch (e = 7, 14); six bad
    # epochs in a row (> patience) reduce at e = 6, 13, 20.
    reductions = [2, 7, 11, 6, 13, 20]
    targets = [[0.5 * 0.1 ** sum(e >= r for r in reductions) for e in range(22)]]
    c.run_plateau([plateau, steps], targets, metrics, 22)


# ---- CyclicLR and OneCycleLR ----

def test_cycle_lr_invalid_mode(c):
    raises(ValueError, "mode is invalid and scale_fn is None", c.S.CyclicLR, c.opt, base_lr=0, max_lr=0, mode="CATS")


TRIANGLE = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3]
TRIANGLE_MOMENTUM = [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3]
TRIANGLE2 = [1, 2, 3, 4, 5, 4, 3, 2, 1, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 1.5, 1, 1.25, 1.50, 1.75, 2.00, 1.75]
TRIANGLE2_MOMENTUM = [5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 4.0, 3.5, 3.0, 3.5, 4.0, 4.5, 5.0, 4.75,
                      4.5, 4.25, 4.0, 4.25]


def test_cycle_lr_triangular_mode_one_lr(c):
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True, base_momentum=1,
                             max_momentum=5, mode="triangular")
    c.run_cycle(scheduler, [TRIANGLE] * 2, [TRIANGLE_MOMENTUM] * 2, len(TRIANGLE))


def test_cycle_lr_triangular_mode_one_lr_no_momentum(c):
    momentum = [c.opt.defaults["momentum"]] * len(TRIANGLE)
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False, mode="triangular")
    c.run_cycle(scheduler, [TRIANGLE] * 2, [momentum] * 2, len(TRIANGLE))


def test_cycle_lr_triangular2_mode_one_lr(c):
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True, base_momentum=1,
                             max_momentum=5, mode="triangular2")
    c.run_cycle(scheduler, [TRIANGLE2] * 2, [TRIANGLE2_MOMENTUM] * 2, len(TRIANGLE2))


XS = [0, 0.25, 0.5, 0.75, 1, 0.75, 0.50, 0.25, 0, 0.25, 0.5, 0.75, 1]


def exp_range(base, top, xs, gamma=0.9):
    return ([base + x * (top - base) * gamma**i for i, x in enumerate(xs)],
            [top - x * (top - base) * gamma**i for i, x in enumerate(xs)])


def test_cycle_lr_exp_range_mode_one_lr(c):
    lrs, momenta = exp_range(1, 5, XS)
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True, base_momentum=1,
                             max_momentum=5, mode="exp_range", gamma=0.9)
    c.run_cycle(scheduler, [lrs] * 2, [momenta] * 2, len(lrs))


def test_cycle_lr_triangular_mode(c):
    scheduler = c.S.CyclicLR(c.opt, base_lr=[1, 2], max_lr=[5, 6], step_size_up=4, cycle_momentum=True,
                             base_momentum=[1, 2], max_momentum=[5, 6], mode="triangular")
    c.run_cycle(scheduler, [TRIANGLE, [x + 1 for x in TRIANGLE]],
                [TRIANGLE_MOMENTUM, [x + 1 for x in TRIANGLE_MOMENTUM]], len(TRIANGLE))


def test_cycle_lr_triangular2_mode(c):
    scheduler = c.S.CyclicLR(c.opt, base_lr=[1, 3], max_lr=[5, 7], step_size_up=4, cycle_momentum=True,
                             base_momentum=[1, 3], max_momentum=[5, 7], mode="triangular2")
    c.run_cycle(scheduler, [TRIANGLE2, [x + 2 for x in TRIANGLE2]],
                [TRIANGLE2_MOMENTUM, [x + 2 for x in TRIANGLE2_MOMENTUM]], len(TRIANGLE2))


def test_cycle_lr_exp_range_mode(c):
    lrs1, momenta1 = exp_range(1, 5, XS)
    lrs2, momenta2 = exp_range(5, 12, XS)
    scheduler = c.S.CyclicLR(c.opt, base_lr=[1, 5], max_lr=[5, 12], step_size_up=4, cycle_momentum=True,
                             base_momentum=[1, 5], max_momentum=[5, 12], mode="exp_range", gamma=0.9)
    c.run_cycle(scheduler, [lrs1, lrs2], [momenta1, momenta2], len(lrs1))


def test_cycle_lr_triangular_mode_step_size_up_down(c):
    lrs = [1.0, 2.0, 3.0, 4.0, 5.0, 13.0 / 3, 11.0 / 3, 9.0 / 3, 7.0 / 3, 5.0 / 3, 1.0]
    momenta = [5.0, 4.0, 3.0, 2.0, 1.0, 5.0 / 3, 7.0 / 3, 3.0, 11.0 / 3, 13.0 / 3, 5.0]
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=4, step_size_down=6, cycle_momentum=True,
                             base_momentum=1, max_momentum=5, mode="triangular")
    c.run_cycle(scheduler, [lrs] * 2, [momenta] * 2, len(lrs))


def test_cycle_lr_triangular2_mode_step_size_up_down(c):
    lrs = [1.0, 3.0, 5.0, 13.0 / 3, 11.0 / 3, 9.0 / 3, 7.0 / 3, 5.0 / 3, 1.0, 2.0, 3.0, 8.0 / 3, 7.0 / 3, 6.0 / 3,
           5.0 / 3, 4.0 / 3, 1.0, 3.0 / 2, 2.0, 11.0 / 6, 10.0 / 6, 9.0 / 6, 8.0 / 6, 7.0 / 6]
    momenta = [5.0, 3.0, 1.0, 5.0 / 3, 7.0 / 3, 3.0, 11.0 / 3, 13.0 / 3, 5.0, 4.0, 3.0, 10.0 / 3, 11.0 / 3, 4.0,
               13.0 / 3, 14.0 / 3, 5.0, 4.5, 4.0, 25.0 / 6, 13.0 / 3, 4.5, 14.0 / 3, 29.0 / 6]
    scheduler = c.S.CyclicLR(c.opt, base_lr=[1, 3], max_lr=[5, 7], step_size_up=2, step_size_down=6,
                             cycle_momentum=True, base_momentum=[1, 3], max_momentum=[5, 7], mode="triangular2")
    c.run_cycle(scheduler, [lrs, [x + 2 for x in lrs]], [momenta, [x + 2 for x in momenta]], len(lrs))


def test_cycle_lr_exp_range_mode_step_size_up_down(c):
    xs = [0.0, 0.5, 1.0, 5.0 / 6, 4.0 / 6, 3.0 / 6, 2.0 / 6, 1.0 / 6, 0.0, 0.5, 1.0, 5.0 / 6, 4.0 / 6]
    lrs, momenta = exp_range(1, 5, xs)
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=2, step_size_down=6, cycle_momentum=True,
                             base_momentum=1, max_momentum=5, mode="exp_range", gamma=0.9)
    c.run_cycle(scheduler, [lrs] * 2, [momenta] * 2, len(lrs))


def adam_case(c):
    c.opt = c.optim.Adam([{"params": c.conv1.parameters()}, {"params": c.conv2.parameters(), "lr": 0.5}], lr=0.05)


def test_cycle_lr_with_momentumless_optimizer(c):
    adam_case(c)
    scheduler = c.S.CyclicLR(c.opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False, mode="triangular")
    c.run_cycle(scheduler, [TRIANGLE] * 2, [[None] * len(TRIANGLE)] * 2, len(TRIANGLE))


def test_cycle_lr_cycle_momentum_fail_with_momentumless_optimizer(c):
    raises(ValueError, "optimizer must support momentum or beta1 with `cycle_momentum` option enabled",
           c.S.CyclicLR, c.optim.Rprop(c.parameters()), base_lr=1, max_lr=5, cycle_momentum=True)


def test_cycle_lr_cycle_momentum_with_beta1_optimizer(c):
    adam = c.optim.Adam(c.parameters())
    c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=True)
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)  # β₁ starts at max_momentum


def test_cycle_lr_removed_after_out_of_scope(c):
    def make():
        adam = c.optim.Adam(c.parameters())
        return weakref.ref(c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False))

    gc.disable()
    try:
        assert make()() is None
    finally:
        gc.enable()


class ScaleFn:
    def __init__(self):
        self.x = 0.5

    def __call__(self, _):
        return self.x


def test_cycle_lr_state_dict_picklable(c):
    """The state_dict pickles: a custom scale_fn is saved as None (a function) or its attributes (an object)."""
    adam = c.optim.Adam(c.parameters())
    state = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False).state_dict()
    assert "_scale_fn_ref" not in state and state["_scale_fn_custom"] is None
    pickle.dumps(state)

    state = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=lambda _: 0.5).state_dict()
    assert "_scale_fn_ref" not in state and state["_scale_fn_custom"] is None
    pickle.dumps(state)

    scale_fn = ScaleFn()
    state = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=scale_fn).state_dict()
    assert "_scale_fn_ref" not in state and state["_scale_fn_custom"] == {"x": 0.5}
    pickle.dumps(state)


def test_cycle_lr_scale_fn_restored_from_state_dict(c):
    adam = c.optim.Adam(c.parameters())
    scheduler = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, mode="triangular2")
    restored = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.mode == scheduler.mode == "triangular2"
    assert restored._scale_fn_custom is None and scheduler._scale_fn_custom is None
    assert restored.scale_fn(3) == 0.25  # triangular2 halves each cycle

    def scale_fn(_):
        return 0.5

    scheduler = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=scale_fn)
    restored = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=scale_fn)
    restored.load_state_dict(scheduler.state_dict())
    assert scheduler._scale_fn_custom is scale_fn and restored._scale_fn_custom is scale_fn

    saved = ScaleFn()
    saved.x = 0.25
    scheduler = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=saved)
    fresh = ScaleFn()
    restored = c.S.CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=fresh)
    restored.load_state_dict(scheduler.state_dict())
    assert restored._scale_fn_custom is fresh and fresh.x == 0.25


@pytest.mark.parametrize("kwargs, words", [
    (dict(anneal_strategy="CATS"), "anneal_strategy must be one of 'cos' or 'linear', instead got CATS"),
    (dict(pct_start=1.1), "Expected float between 0 and 1 pct_start, but got 1.1"),
    (dict(total_steps=None), "You must define either total_steps OR"),
    (dict(total_steps=0), "Expected positive integer total_steps, but got 0"),
    (dict(total_steps=None, epochs=0, steps_per_epoch=3), "Expected positive integer epochs, but got 0"),
    (dict(total_steps=None, epochs=2, steps_per_epoch=-1), "Expected positive integer steps_per_epoch, but got -1"),
])
def test_onecycle_lr_errors(c, kwargs, words):
    kwargs = {"total_steps": 10, **kwargs}
    raises(ValueError, words, c.S.OneCycleLR, c.opt, max_lr=1e-3, **kwargs)


def annealing_cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


ONECYCLE_COS = ([1, 13, 25] + [annealing_cos(25, 0.5, i / 7.0) for i in range(1, 7)] + [0.5],
                [22, 11.5, 1] + [annealing_cos(1, 22, i / 7.0) for i in range(1, 7)] + [22])


def test_onecycle_lr_linear_annealing(c):
    scheduler = c.S.OneCycleLR(c.opt, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22,
                               total_steps=10, anneal_strategy="linear")
    c.run_cycle(scheduler, [[1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5]] * 2,
                [[22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22]] * 2, 10)


def test_onecycle_lr_linear_annealing_three_phases(c):
    scheduler = c.S.OneCycleLR(c.opt, max_lr=25, div_factor=25, base_momentum=1, max_momentum=22, total_steps=10,
                               anneal_strategy="linear", pct_start=0.4, final_div_factor=4, three_phase=True)
    c.run_cycle(scheduler, [[1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25]] * 2,
                [[22, 15, 8, 1, 8, 15, 22, 22, 22, 22]] * 2, 10)


def test_onecycle_lr_cosine_annealing(c):
    scheduler = c.S.OneCycleLR(c.opt, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22,
                               total_steps=10)
    c.run_cycle(scheduler, [ONECYCLE_COS[0]] * 2, [ONECYCLE_COS[1]] * 2, 10)


def test_onecycle_lr_steps_past_total_steps(c):
    scheduler = c.S.OneCycleLR(c.opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        c.opt.step()
        scheduler.step()
    c.opt.step()
    raises(ValueError, "Tried to step 4 times. The specified number of total steps is 3", scheduler.step)


def test_cycle_lr_with_adam(c):
    adam_case(c)
    scheduler = c.S.OneCycleLR(c.opt, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22,
                               total_steps=10, anneal_strategy="linear")
    c.run_cycle(scheduler, [[1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5]] * 2,
                [[22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22]] * 2, 10, use_beta1=True)


def test_cosine_then_cyclic(c):
    """PyTorch issue 21965: CyclicLR after CosineAnnealingLR stays within max_lr."""
    optimizer = c.optim.SGD(c.nn.Linear(2, 1).parameters(), lr=0.5)
    first = c.S.CosineAnnealingLR(optimizer, T_max=20, eta_min=0.1)
    second = c.S.CyclicLR(optimizer, base_lr=0.1, max_lr=0.3, step_size_up=1, step_size_down=3)
    for i in range(40):
        optimizer.step()
        (first if i <= first.T_max else second).step()
        if i > first.T_max:
            assert 0.1 - 1e-12 <= number(optimizer.param_groups[0]["lr"]) <= 0.3 + 1e-12


# ---- LambdaLR, MultiplicativeLR ----

def test_lambda_lr(c):
    c.opt.param_groups[0]["lr"] = 0.05
    c.opt.param_groups[1]["lr"] = 0.4
    targets = [[0.05 * 0.9**x for x in range(10)], [0.4 * 0.8**x for x in range(10)]]
    c.run(c.S.LambdaLR(c.opt, lr_lambda=[lambda x1: 0.9**x1, lambda x2: 0.8**x2]), targets)


def test_multiplicative_lr(c):
    c.opt.param_groups[0]["lr"] = 0.05
    c.opt.param_groups[1]["lr"] = 0.4
    targets = [[0.05 * 0.9**x for x in range(10)], [0.4 * 0.8**x for x in range(10)]]
    c.run(c.S.MultiplicativeLR(c.opt, lr_lambda=[lambda x1: 0.9, lambda x2: 0.8]), targets)


def test_multiplicative_lr_with_lr_lambda(c):
    raises(TypeError, "lr_lambda should be a function", c.S.MultiplicativeLR, c.opt, 0.95)
    raises(TypeError, "lr_lambda should be a function", c.S.MultiplicativeLR, c.opt, [0.95, 0.95])


def test_lambda_lr_wrong_number_of_lambdas(c):
    raises(ValueError, "Expected 2 lr_lambdas, but got 3", c.S.LambdaLR, c.opt, [lambda e: 1.0] * 3)


# ---- CosineAnnealingWarmRestarts ----

@pytest.mark.parametrize("T_mult", [1, 2, 4])
def test_CosineAnnealingWarmRestarts_lr1(c, T_mult):
    T_i, T_cur = 10, 0
    targets = [[0.05], [0.5]]
    scheduler = c.S.CosineAnnealingWarmRestarts(c.opt, T_0=T_i, T_mult=T_mult, eta_min=1e-10)
    for _ in range(1, 100):
        T_cur += 1
        if T_cur >= T_i:
            T_cur, T_i = T_cur - T_i, T_mult * T_i
        targets[0].append(cosine(T_cur, T_i, 0.05))
        targets[1].append(cosine(T_cur, T_i, 0.5))
    c.run(scheduler, targets, 100)


@pytest.mark.parametrize("T_mult", [1, 2, 4])
def test_CosineAnnealingWarmRestarts_lr2(c, T_mult):
    """step(epoch) with fractional epochs 0, 0.1, ..., 29.9."""
    T_i, T_cur = 10, 0
    targets = [[0.05], [0.5]]
    scheduler = c.S.CosineAnnealingWarmRestarts(c.opt, T_0=T_i, T_mult=T_mult, eta_min=1e-10)
    for _ in range(1, 300):
        T_cur = round(T_cur + 0.1, 1)
        if T_cur >= T_i:
            T_cur, T_i = T_cur - T_i, T_mult * T_i
        targets[0].append(cosine(T_cur, T_i, 0.05))
        targets[1].append(cosine(T_cur, T_i, 0.5))
    for index in range(300):
        epoch = round(index * 0.1, 1)
        scheduler.step(epoch)
        same_lrs([targets[0][index], targets[1][index]], c.lrs(), where=f"epoch {epoch}")


@pytest.mark.parametrize("epochs, T_mult, T_curs, T_is", [
    ([0, 1, 2, 3, 4, 5, 12, 27, 3, 4, 5, 6, 13], 1,
     [1, 2, 3, 4, 5, 2, 7, 3, 4, 5, 6, 3], [10] * 12),
    ([0, 1, 2, 3, 4, 5, 25, 32, 33, 34, 80, 81, 3], 2,
     [1, 2, 3, 4, 5, 15, 2, 3, 4, 10, 11, 3], [10, 10, 10, 10, 10, 20, 40, 40, 40, 80, 80, 10]),
    ([0, 0.1, 0.2, 0.3, 1.3, 2.3, 17.5, 18.5, 19.5, 29.5, 30.5, 31.5, 50], 3,
     [0.1, 0.2, 0.3, 1.3, 2.3, 7.5, 8.5, 9.5, 19.5, 20.5, 21.5, 10], [10, 10, 10, 10, 10, 30, 30, 30, 30, 30, 30, 90]),
])
def test_CosineAnnealingWarmRestarts_lr3(c, epochs, T_mult, T_curs, T_is):
    """step(epoch) with epochs that jump back and forth."""
    targets = [[0.05] + [cosine(t, T, 0.05) for t, T in zip(T_curs, T_is)],
               [0.5] + [cosine(t, T, 0.5) for t, T in zip(T_curs, T_is)]]
    scheduler = c.S.CosineAnnealingWarmRestarts(c.opt, T_0=10, T_mult=T_mult, eta_min=1e-10)
    for index, epoch in enumerate(epochs):
        scheduler.step(epoch)
        same_lrs([targets[0][index], targets[1][index]], c.lrs(), where=f"epoch {epoch}")


def test_CosineAnnealingWarmRestarts_T_cur_reset(c):
    scheduler = c.S.CosineAnnealingWarmRestarts(c.opt, T_0=4)
    for epoch in [7, 8, 9]:
        scheduler.T_cur = epoch
        scheduler.step()
        assert scheduler.T_cur == (epoch + 1) % scheduler.T_0


@pytest.mark.parametrize("kwargs, words", [
    (dict(T_0=0), "Expected positive integer T_0, but got 0"),
    (dict(T_0=2.5), "Expected positive integer T_0, but got 2.5"),
    (dict(T_0=2, T_mult=0), "Expected integer T_mult >= 1, but got 0"),
    (dict(T_0=2, eta_min="0"), "Expected float or int eta_min, but got 0 of type <class 'str'>"),
])
def test_CosineAnnealingWarmRestarts_errors(c, kwargs, words):
    raises(ValueError, words, c.S.CosineAnnealingWarmRestarts, c.opt, **kwargs)


def test_CosineAnnealingWarmRestarts_negative_epoch(c):
    scheduler = c.S.CosineAnnealingWarmRestarts(c.opt, T_0=2)
    raises(ValueError, "Expected non-negative epoch, but got -1", scheduler.step, -1)


# ---- SWALR ----

def run_swalr(c, swa_scheduler, scheduler, targets, swa_start, epochs):
    for epoch in range(epochs):
        same_lrs([t[epoch] for t in targets], c.lrs(), where=f"epoch {epoch}")
        if epoch >= swa_start:
            c.opt.step()
            swa_scheduler.step()
        elif scheduler is not None:
            c.opt.step()
            scheduler.step()


def test_swalr_no_anneal(c):
    epochs, swa_start, swa_lr = 10, 5, 0.01
    targets = [[lr] * (swa_start + 1) + [swa_lr] * (epochs - swa_start - 1) for lr in (0.05, 0.5)]
    run_swalr(c, c.optim.swa_utils.SWALR(c.opt, anneal_epochs=1, swa_lr=swa_lr), None, targets, swa_start, epochs)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_swalr_anneal_after_multiplicative(c, strategy):
    """cos: one swa_lr for both groups, 5 epochs of annealing; linear: one swa_lr per group, 4 epochs."""
    epochs, swa_start = 15, 5
    swa_lrs, anneal_epochs = ([0.01, 0.01], 5) if strategy == "cos" else ([0.01, 0.02], 4)
    scheduler = c.S.MultiplicativeLR(c.opt, lr_lambda=lambda epoch: 0.9)
    swa_scheduler = c.optim.swa_utils.SWALR(c.opt, anneal_epochs=anneal_epochs, anneal_strategy=strategy,
                                            swa_lr=swa_lrs[0] if strategy == "cos" else swa_lrs)

    def anneal_coef(t):
        if t + 1 >= anneal_epochs:
            return 0.0
        if strategy == "cos":
            return (1 + math.cos(math.pi * (t + 1) / anneal_epochs)) / 2
        return 1 - (t + 1) / anneal_epochs

    before = [[lr * 0.9**i for i in range(swa_start + 1)] for lr in (0.05, 0.5)]
    targets = [lrs + [lrs[-1] * anneal_coef(t) + swa_lr * (1 - anneal_coef(t)) for t in range(epochs - swa_start - 1)]
               for lrs, swa_lr in zip(before, swa_lrs)]
    run_swalr(c, swa_scheduler, scheduler, targets, swa_start, epochs)


def test_swalr_hypers(c):
    SWALR = c.optim.swa_utils.SWALR
    raises(ValueError, "anneal_strategy must", SWALR, c.opt, anneal_strategy="exponential", swa_lr=1.0)
    raises(ValueError, "anneal_epochs must", SWALR, c.opt, anneal_epochs=-1, swa_lr=1.0)
    raises(ValueError, "anneal_epochs must", SWALR, c.opt, anneal_epochs=1.7, swa_lr=1.0)
    raises(ValueError, "swa_lr must", SWALR, c.opt, swa_lr=[1.0, 0.1, 0.01])


# ---- state_dict round trips ----

@pytest.mark.parametrize("make, make_other", [
    (lambda S, opt: S.StepLR(opt, gamma=0.1, step_size=3), lambda S, opt: S.StepLR(opt, gamma=0.01 / 2, step_size=1)),
    (lambda S, opt: S.MultiStepLR(opt, gamma=0.1, milestones=[2, 5, 9]),
     lambda S, opt: S.MultiStepLR(opt, gamma=0.01, milestones=[1, 4, 6])),
    (lambda S, opt: S.ExponentialLR(opt, gamma=0.1), lambda S, opt: S.ExponentialLR(opt, gamma=0.01)),
    (lambda S, opt: S.CosineAnnealingLR(opt, T_max=10, eta_min=1e-10),
     lambda S, opt: S.CosineAnnealingLR(opt, T_max=5, eta_min=1e-10 / 2)),
    (lambda S, opt: S.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2),
     lambda S, opt: S.CosineAnnealingWarmRestarts(opt, T_0=100)),
    (lambda S, opt: S.swa_utils_SWALR(opt, anneal_epochs=3, swa_lr=0.5),
     lambda S, opt: S.swa_utils_SWALR(opt, anneal_epochs=10, anneal_strategy="linear", swa_lr=5.0)),
], ids=["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "SWALR"])
def test_scheduler_state_dict(c, make, make_other):
    S = types.SimpleNamespace(**{name: getattr(c.S, name) for name in dir(c.S) if not name.startswith("__")},
                              swa_utils_SWALR=c.optim.swa_utils.SWALR)
    c.check_state_dict(lambda: make(S, c.opt), lambda: make_other(S, c.opt))


def test_reduce_lr_on_plateau_state_dict(c):
    scheduler = c.S.ReduceLROnPlateau(c.opt, mode="min", factor=0.1, patience=2)
    for score in [1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 3.0, 2.0, 1.0]:
        scheduler.step(score)
    copied = c.S.ReduceLROnPlateau(c.opt, mode="max", factor=0.5, patience=10)
    copied.load_state_dict(scheduler.state_dict())
    for key in scheduler.__dict__:
        if key not in {"optimizer", "is_better"}:
            assert equal(scheduler.__dict__[key], copied.__dict__[key]), key


class LambdaLRTestObject:
    def __init__(self, value):
        self.value = value

    def __call__(self, epoch):
        return self.value * epoch

    def __eq__(self, other):
        return isinstance(other, self.__class__) and self.__dict__ == other.__dict__


def test_lambda_lr_state_dict_fn(c):
    scheduler = c.S.LambdaLR(c.opt, lr_lambda=lambda x: x)
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0] is None
    copied = c.S.LambdaLR(c.opt, lr_lambda=lambda x: x)
    copied.load_state_dict(state)
    for key in scheduler.__dict__:
        if key not in {"optimizer", "lr_lambdas"}:
            assert equal(scheduler.__dict__[key], copied.__dict__[key]), key


def test_lambda_lr_state_dict_obj(c):
    scheduler = c.S.LambdaLR(c.opt, lr_lambda=LambdaLRTestObject(10))
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0] == {"value": 10}
    copied = c.S.LambdaLR(c.opt, lr_lambda=LambdaLRTestObject(-1))
    copied.load_state_dict(state)
    for key in scheduler.__dict__:
        if key != "optimizer":
            assert equal(scheduler.__dict__[key], copied.__dict__[key]), key


def test_sequential_and_chained_state_dict(c):
    """The combinators save their schedulers' states and load them back into theirs."""
    def make_sequential():
        return c.S.SequentialLR(c.opt, three_schedulers(c), milestones=[3, 6])

    scheduler = make_sequential()
    for _ in range(7):
        c.opt.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert [s["last_epoch"] for s in state["_schedulers"]] == [2, 2, 1]
    copied = make_sequential()
    copied.load_state_dict(state)
    assert copied.last_epoch == scheduler.last_epoch == 7
    assert [s.last_epoch for s in copied._schedulers] == [2, 2, 1]


LR_CLASSES = {
    "LambdaLR": lambda S, opt, **kw: S.LambdaLR(opt, lr_lambda=lambda e: e // 10, **kw),
    "MultiplicativeLR": lambda S, opt, **kw: S.MultiplicativeLR(opt, lr_lambda=lambda e: 0.95, **kw),
    "StepLR": lambda S, opt, **kw: S.StepLR(opt, step_size=30, **kw),
    "MultiStepLR": lambda S, opt, **kw: S.MultiStepLR(opt, milestones=[30, 80], **kw),
    "ConstantLR": lambda S, opt, **kw: S.ConstantLR(opt, **kw),
    "LinearLR": lambda S, opt, **kw: S.LinearLR(opt, **kw),
    "ExponentialLR": lambda S, opt, **kw: S.ExponentialLR(opt, gamma=0.9, **kw),
    "PolynomialLR": lambda S, opt, **kw: S.PolynomialLR(opt, **kw),
    "CosineAnnealingLR": lambda S, opt, **kw: S.CosineAnnealingLR(opt, T_max=10, **kw),
    "CosineAnnealingWarmRestarts": lambda S, opt, **kw: S.CosineAnnealingWarmRestarts(opt, T_0=20, **kw),
    "CyclicLR": lambda S, opt, **kw: S.CyclicLR(opt, base_lr=0.01, max_lr=0.1, **kw),
    "OneCycleLR": lambda S, opt, **kw: S.OneCycleLR(opt, max_lr=0.01, total_steps=10, anneal_strategy="linear", **kw),
}


@pytest.mark.parametrize("name", [*LR_CLASSES, "ChainedScheduler", "SequentialLR", "ReduceLROnPlateau", "SWALR"])
@pytest.mark.parametrize("weights_only", [True, False])
def test_lr_scheduler_state_dict_load(c, name, weights_only, tmp_path):
    """A scheduler's state_dict survives save and load (weights_only too), and loads into a new scheduler."""
    makers = {**LR_CLASSES,
              "ChainedScheduler": lambda S, opt: S.ChainedScheduler([S.ConstantLR(opt), S.ConstantLR(opt)]),
              "SequentialLR": lambda S, opt: S.SequentialLR(opt, [S.ConstantLR(opt), S.ConstantLR(opt)],
                                                            milestones=[2]),
              "ReduceLROnPlateau": lambda S, opt: S.ReduceLROnPlateau(opt),
              "SWALR": lambda S, opt: c.optim.swa_utils.SWALR(opt, swa_lr=0.01)}
    c.opt = c.optim.SGD([{"params": c.conv1.parameters()}, {"params": c.conv2.parameters(), "lr": 0.5}], lr=0.05)
    scheduler = makers[name](c.S, c.opt)
    state = scheduler.state_dict()
    path = tmp_path / "state.pt"
    c.T.save(state, path)
    loaded = c.T.load(path, weights_only=weights_only)
    assert equal(state, loaded)
    again = makers[name](c.S, c.opt)
    again.load_state_dict(loaded)
    assert equal(again.state_dict(), state)


# ---- the initial lr stays what it was: base_lrs do not alias a Tensor lr ----

@pytest.mark.parametrize("name", [name for name in LR_CLASSES if name not in ("CyclicLR", "OneCycleLR")])
def test_constant_initial_lr(c, name):
    lr = c.T.as_tensor(0.1)
    opt = c.optim.SGD([c.nn.Parameter(c.T.randn(1))], lr=lr)
    scheduler = LR_CLASSES[name](c.S, opt)
    original = copy.deepcopy(opt.param_groups)
    for i in range(2):
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step(i)
        lr.mul_(0.1)
        for group, before in zip(opt.param_groups, original):
            assert number(group["initial_lr"]) == number(before["initial_lr"])
            same_lrs([0.1], scheduler.base_lrs)
            assert scheduler.base_lrs[0] is not group["initial_lr"]


def test_constant_initial_params_cyclelr(c):
    lr, max_lr = c.T.as_tensor(0.1), c.T.as_tensor(0.2)
    base_momentum, max_momentum = c.T.as_tensor(0.8), c.T.as_tensor(0.9)
    opt = c.optim.SGD([c.nn.Parameter(c.T.randn(1))], lr=lr)
    scheduler = c.S.CyclicLR(opt, base_lr=lr, max_lr=max_lr, base_momentum=base_momentum, max_momentum=max_momentum)
    original = copy.deepcopy(opt.param_groups)
    for i in range(2):
        for t in (lr, max_lr, base_momentum, max_momentum):
            t.mul_(0.5)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step(i)
        for group, before in zip(opt.param_groups, original):
            for key in ("initial_lr", "max_momentum", "base_momentum"):
                assert number(group[key]) == number(before[key]), key
            same_lrs([0.1], scheduler.base_lrs)
            same_lrs([0.2], scheduler.max_lrs)
            same_lrs([0.9, 0.8], [group["max_momentum"], group["base_momentum"]], atol=1e-7)


def test_constant_initial_params_onecyclelr(c):
    lr, base_momentum, max_momentum = c.T.as_tensor(0.1), c.T.as_tensor(0.85), c.T.as_tensor(0.95)
    opt = c.optim.SGD([c.nn.Parameter(c.T.randn(1))], lr=lr)
    scheduler = c.S.OneCycleLR(opt, max_lr=lr, total_steps=10, base_momentum=base_momentum, max_momentum=max_momentum)
    original = copy.deepcopy(opt.param_groups)
    for i in range(2):
        for t in (lr, base_momentum, max_momentum):
            t.mul_(0.5)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step(i)
        for group, before in zip(opt.param_groups, original):
            for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
                assert number(group[key]) == number(before[key]), key
            same_lrs([0.95, 0.85], [group["max_momentum"], group["base_momentum"]], atol=1e-7)


def test_constant_initial_params_swalr(c):
    lr, swa_lr = c.T.as_tensor(0.1), c.T.as_tensor(0.05)
    opt = c.optim.SGD([c.nn.Parameter(c.T.randn(1))], lr=lr)
    scheduler = c.optim.swa_utils.SWALR(opt, swa_lr=swa_lr)
    original = copy.deepcopy(opt.param_groups)
    for _ in range(2):
        lr.mul_(0.5)
        swa_lr.mul_(0.5)
        opt.step()
        scheduler.step()
        for group, before in zip(opt.param_groups, original):
            assert number(group["initial_lr"]) == number(before["initial_lr"])
            assert number(group["swa_lr"]) == number(before["swa_lr"])
            same_lrs([0.05], [group["swa_lr"]], atol=1e-8)
            same_lrs([0.1], scheduler.base_lrs, atol=1e-8)


# ---- resuming with last_epoch from a checkpoint ----

@pytest.mark.parametrize("name", [*LR_CLASSES, "SWALR"])
def test_lr_scheduler_checkpoint(c, name):
    """A scheduler made with last_epoch=0 on an optimizer loaded from a checkpoint reports the lr it has."""
    makers = {**LR_CLASSES, "ExponentialLR": lambda S, opt, **kw: S.ExponentialLR(opt, gamma=0.999, **kw),
              "LambdaLR": lambda S, opt, **kw: S.LambdaLR(opt, lr_lambda=lambda e: e // 30, **kw),
              "OneCycleLR": lambda S, opt, **kw: S.OneCycleLR(opt, max_lr=0.01, total_steps=10, **kw),
              "SWALR": lambda S, opt, **kw: c.optim.swa_utils.SWALR(opt, swa_lr=0.01, **kw)}
    model = c.nn.Linear(3, 3)
    opt = c.optim.AdamW(model.parameters())
    scheduler = makers[name](c.S, opt)
    opt.step()
    scheduler.step()
    opt2 = c.optim.AdamW(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    resumed = makers[name](c.S, opt2, last_epoch=0)
    same_lrs([opt.param_groups[0]["lr"]], resumed.get_last_lr()[:1], atol=1e-12)


def test_lr_scheduler_checkpoint_on_plateau(c):
    model = c.nn.Linear(3, 3)
    opt = c.optim.AdamW(model.parameters())
    scheduler = c.S.ReduceLROnPlateau(opt, mode="min")
    opt.step()
    scheduler.step(1)
    opt2 = c.optim.AdamW(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    resumed = c.S.ReduceLROnPlateau(opt2, mode="min")
    same_lrs([opt.param_groups[0]["lr"]], resumed.get_last_lr()[:1], atol=0)


def test_scheduler_refuses_what_is_not_an_optimizer(c):
    raises(TypeError, "is not an Optimizer", c.S.StepLR, object(), 3)


def test_get_lr_outside_step_warns(c):
    """get_lr computes the next lr from the current one: called from outside step() it warns, pointing
    to get_last_lr(); within step() it does not."""
    scheduler = c.S.StepLR(c.opt, 2)
    with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
        scheduler.get_lr()
    c.opt.step()
    no_warning_while(scheduler.step)
    assert "_get_lr_called_within_step" in scheduler.state_dict()


def test_chained_scheduler_with_optimizer_argument(c):
    schedulers = [c.S.ConstantLR(c.opt, factor=0.5, total_iters=2), c.S.ExponentialLR(c.opt, 0.9)]
    scheduler = c.S.ChainedScheduler(schedulers, optimizer=c.opt)
    assert scheduler.optimizer is c.opt
    c.run(scheduler, [[0.05 * (0.5 if e < 2 else 1) * 0.9**e for e in range(6)]], 6)


def test_onecycle_lr_epochs_and_steps_per_epoch(c):
    """total_steps = epochs · steps_per_epoch; up for 30% of the steps (cosine), then down to
    initial_lr / final_div_factor."""
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.zeros(1))], lr=1.0)
    scheduler = c.S.OneCycleLR(optimizer, max_lr=1.0, epochs=2, steps_per_epoch=3)
    assert scheduler.total_steps == 6
    up_end, low = 0.3 * 6 - 1, 0.04 / 1e4
    expected = [annealing_cos(0.04, 1.0, 0.0)] + [annealing_cos(1.0, low, (t - up_end) / (5 - up_end))
                                                  for t in range(1, 6)]
    got = []
    for _ in range(6):
        got.append(number(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cycle_lr_custom_scale_fn_per_iteration(c):
    """scale_fn with scale_mode='iterations' scales by the iteration count, not the cycle."""
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.zeros(1))], lr=1.0, momentum=0.9)
    scheduler = c.S.CyclicLR(optimizer, base_lr=0.1, max_lr=1.0, step_size_up=2, scale_fn=lambda x: 0.5**x,
                             scale_mode="iterations")
    got = []
    for _ in range(6):
        got.append(number(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    expected = [0.1 + 0.9 * max(0.0, 1 - abs(t / 2 - 2 * math.floor(1 + t / 4) + 1)) * 0.5**t for t in range(6)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_reduce_lr_on_plateau_tensor_metrics_and_counters(c):
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.zeros(1))], lr=1.0)
    scheduler = c.S.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    for metric in [c.T.tensor(1.0), c.T.tensor(2.0), 3.0]:
        scheduler.step(metric)
    assert number(optimizer.param_groups[0]["lr"]) == 0.25
    assert (scheduler.best, scheduler.num_bad_epochs, scheduler.last_epoch) == (1.0, 0, 3)


def test_user_scheduler_subclass(c):
    """A schedule of one's own: get_lr from base_lrs and last_epoch (PyTorch's old _LRScheduler name too)."""
    class Halving(c.S._LRScheduler):
        def __init__(self, optimizer, last_epoch=-1):
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            return [base * 0.5**self.last_epoch for base in self.base_lrs]

    scheduler = Halving(c.opt)
    assert isinstance(scheduler, c.S.LRScheduler)
    c.run(scheduler, [[0.05 * 0.5**e for e in range(5)], [0.5 * 0.5**e for e in range(5)]], 5)
    same_lrs([0.05 * 0.5**5, 0.5 * 0.5**5], scheduler.get_last_lr())


# ---- test/optim's small files: ReduceLROnPlateau with Tensor lrs, nested combinators, aliasing ----

def test_reduce_lr_on_plateau_tensor_lr_stays_tensor(c):
    """test_reduce_lr_tensor.py: a 1-element Tensor lr is filled in place, a float lr stays a float."""
    optimizer = c.optim.Adam([c.nn.Parameter(c.T.ones(1))], lr=c.T.tensor([0.1]))
    scheduler = c.S.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, min_lr=0.001)
    scheduler.step(1.0)
    scheduler.step(1.0)
    lr = optimizer.param_groups[0]["lr"]
    assert isinstance(lr, c.T.Tensor) and tuple(lr.shape) == (1,)
    np.testing.assert_allclose(lr.numpy(), [0.05], rtol=1e-6)

    optimizer = c.optim.SGD([{"params": [c.nn.Parameter(c.T.ones(1))], "lr": c.T.tensor([0.1])},
                             {"params": [c.nn.Parameter(c.T.ones(1))], "lr": 0.2}])
    scheduler = c.S.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, min_lr=0.001)
    scheduler.step(1.0)
    scheduler.step(1.0)
    assert isinstance(optimizer.param_groups[0]["lr"], c.T.Tensor)
    np.testing.assert_allclose(optimizer.param_groups[0]["lr"].numpy(), [0.05], rtol=1e-6)
    assert optimizer.param_groups[1]["lr"] == 0.1


def first_lrs(scheduler, steps=5):
    out = []
    for _ in range(steps):
        out.append(number(scheduler.get_last_lr()[0]))
        scheduler.optimizer.step()
        scheduler.step()
    return out


def xfail_on_torch(request, c, reason):
    """Mark the PyTorch half of a test as an expected failure (strict: it must fail there)."""
    if c.T.__name__ == "torch":
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


NESTED_BUG = ("PyTorch 2.13 (installed here) gives a combinator inside SequentialLR one step too many when it "
              "is made; PyTorch fixed it after (test/optim/test_scheduler_nested_composite*.py), and chainrule "
              "follows the fix")


@pytest.mark.parametrize("kind", ["sequential", "chained"])
def test_nested_composite_matches_direct(c, kind, request):
    """test_scheduler_nested_composite.py: a combinator inside SequentialLR (no milestones) steps as the
    combinator alone."""
    xfail_on_torch(request, c, NESTED_BUG)
    def make(opt):
        if kind == "sequential":
            return c.S.SequentialLR(opt, [c.S.ConstantLR(opt, factor=0.5, total_iters=2),
                                          c.S.ConstantLR(opt, factor=0.2, total_iters=10)], milestones=[2])
        return c.S.ChainedScheduler([c.S.ConstantLR(opt, factor=0.5, total_iters=2),
                                     c.S.ExponentialLR(opt, gamma=0.9)], optimizer=opt)

    def new_optimizer():
        return c.optim.SGD([c.nn.Parameter(c.T.zeros(1))], lr=0.1)

    direct = first_lrs(make(new_optimizer()))
    opt = new_optimizer()
    nested = first_lrs(c.S.SequentialLR(opt, [make(opt)], milestones=[]))
    np.testing.assert_allclose(nested, direct, rtol=1e-12)
    expected = ([0.05, 0.05, 0.02, 0.02, 0.02] if kind == "sequential"
                else [0.05, 0.045, 0.081, 0.0729, 0.06561])
    np.testing.assert_allclose(direct, expected, rtol=1e-12)


def test_nested_sequential_scheduler_initializes_last_lr(c):
    """test_scheduler_nested_composite_state.py."""
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.tensor(1.0))], lr=0.1)
    inner = c.S.SequentialLR(optimizer, [c.S.ConstantLR(optimizer, factor=0.5, total_iters=2),
                                         c.S.ExponentialLR(optimizer, gamma=0.9)], milestones=[2])
    outer = c.S.SequentialLR(optimizer, [inner, c.S.ExponentialLR(optimizer, gamma=0.8)], milestones=[3])
    assert outer.get_last_lr() == inner.get_last_lr()
    assert len(outer.get_last_lr()) == 1


def test_nested_sequential_in_sequential_steps_as_direct(c, request):
    """The inner SequentialLR of test_scheduler_nested_composite_state.py, stepped: the same learning rates
    as the inner one alone for its 3 epochs, then the outer's ExponentialLR from the initial lr."""
    xfail_on_torch(request, c, NESTED_BUG)
    optimizer = c.optim.SGD([c.nn.Parameter(c.T.tensor(1.0))], lr=0.1)
    inner = c.S.SequentialLR(optimizer, [c.S.ConstantLR(optimizer, factor=0.5, total_iters=2),
                                         c.S.ExponentialLR(optimizer, gamma=0.9)], milestones=[2])
    outer = c.S.SequentialLR(optimizer, [inner, c.S.ExponentialLR(optimizer, gamma=0.8)], milestones=[3])
    np.testing.assert_allclose(first_lrs(outer, 6), [0.05, 0.05, 0.1, 0.1, 0.08, 0.064], rtol=1e-12)
