"""The schedulers added in version 2 against torch.optim.lr_scheduler: learning-rate
(and momentum) sequences over 40 steps, step(epoch), state dicts, errors."""

import math

import numpy as np
import pytest

import optim
from autograd import Tensor

pytestmark = pytest.mark.torch

SCHEDULERS = {
    "OneCycleLR-cos": lambda o, m: m.OneCycleLR(o, max_lr=0.5, total_steps=40),
    "OneCycleLR-linear": lambda o, m: m.OneCycleLR(o, max_lr=[0.5, 0.2], epochs=4, steps_per_epoch=10,
                                                   anneal_strategy="linear", pct_start=0.25),
    "OneCycleLR-three-phase": lambda o, m: m.OneCycleLR(o, max_lr=1.0, total_steps=41, three_phase=True,
                                                        div_factor=10.0, final_div_factor=100.0),
    "OneCycleLR-no-momentum": lambda o, m: m.OneCycleLR(o, max_lr=0.3, total_steps=40, cycle_momentum=False),
    "CyclicLR-triangular": lambda o, m: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4),
    "CyclicLR-triangular2": lambda o, m: m.CyclicLR(o, base_lr=[0.01, 0.02], max_lr=0.1, step_size_up=3,
                                                    step_size_down=5, mode="triangular2"),
    "CyclicLR-exp_range": lambda o, m: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="exp_range",
                                                  gamma=0.97, base_momentum=0.7, max_momentum=0.95),
    "CyclicLR-scale_fn": lambda o, m: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4,
                                                 scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations",
                                                 cycle_momentum=False),
    "CosineAnnealingWarmRestarts": lambda o, m: m.CosineAnnealingWarmRestarts(o, T_0=7, eta_min=0.01),
    "CosineAnnealingWarmRestarts-mult": lambda o, m: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
    "PolynomialLR": lambda o, m: m.PolynomialLR(o, total_iters=25, power=2.0),
    "PolynomialLR-linear": lambda o, m: m.PolynomialLR(o),
    "ConstantLR": lambda o, m: m.ConstantLR(o, factor=0.5, total_iters=7),
    "MultiplicativeLR": lambda o, m: m.MultiplicativeLR(o, lambda epoch: 0.95 if epoch % 3 else 0.9),
    "SequentialLR": lambda o, m: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=5),
                                                    m.CosineAnnealingLR(o, T_max=20, eta_min=0.001),
                                                    m.ExponentialLR(o, gamma=0.9)], milestones=[5, 25]),
    "SequentialLR-constant": lambda o, m: m.SequentialLR(o, [m.ConstantLR(o, factor=0.25, total_iters=3),
                                                             m.StepLR(o, step_size=4, gamma=0.5)],
                                                         milestones=[6]),
    "ChainedScheduler": lambda o, m: m.ChainedScheduler([m.ConstantLR(o, factor=0.1, total_iters=4),
                                                         m.ExponentialLR(o, gamma=0.9)]),
    "ChainedScheduler-three": lambda o, m: m.ChainedScheduler([m.LinearLR(o, start_factor=0.5, total_iters=6),
                                                               m.MultiStepLR(o, milestones=[10, 20], gamma=0.3),
                                                               m.PolynomialLR(o, total_iters=30)], optimizer=o),
}
MOMENTUM = ("OneCycleLR", "CyclicLR")


def optimizers(module, kind):
    """Two parameter groups (lr 1 and 0.5): SGD with momentum, or Adam (betas)."""
    make = Tensor if module is None else module.tensor
    lib = optim if module is None else module.optim
    groups = [{"params": [make(np.ones(2), requires_grad=True)]},
              {"params": [make(np.ones(3), requires_grad=True)], "lr": 0.5}]
    return lib.SGD(groups, lr=1.0, momentum=0.9) if kind == "SGD" else lib.Adam(groups, lr=1.0)


def sequence(module, name, kind="SGD", steps=40):
    """Each step's learning rates and momenta (β₁ for Adam), read after optimizer.step()."""
    optimizer = optimizers(module, kind)
    scheduler = SCHEDULERS[name](optimizer, optim.lr_scheduler if module is None else module.optim.lr_scheduler)
    rows = []
    for _ in range(steps):
        momenta = [g["betas"][0] if kind == "Adam" else g["momentum"] for g in optimizer.param_groups]
        rows.append(list(scheduler.get_last_lr()) + [g["lr"] for g in optimizer.param_groups] + momenta)
        optimizer.step()
        scheduler.step()
    return np.array(rows, dtype=float)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_sequence_matches_torch(name):
    import torch

    for kind in ("SGD", "Adam") if name.startswith(MOMENTUM) else ("SGD",):
        np.testing.assert_allclose(sequence(None, name, kind), sequence(torch, name, kind), rtol=1e-12, atol=0)


def test_warm_restarts_with_fractional_epochs_match_torch():
    import torch

    def run(module):
        optimizer = optimizers(module, "SGD")
        lib = optim if module is None else module.optim
        scheduler = lib.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=2, T_mult=3, eta_min=0.05)
        seen = []
        for epoch in range(12):
            for batch in range(4):
                scheduler.step(epoch + batch / 4)
                seen.append(scheduler.get_last_lr() + [scheduler.T_i, scheduler.T_cur, scheduler.last_epoch])
        return np.array(seen, dtype=float)

    np.testing.assert_allclose(run(None), run(torch), rtol=1e-12)


def test_warm_restarts_by_hand():
    optimizer = optimizers(None, "SGD")
    scheduler = optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=4)
    lrs = []
    for _ in range(9):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step()
    np.testing.assert_allclose(lrs, [(1 + math.cos(math.pi * (t % 4) / 4)) / 2 for t in range(9)])


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
                                  "PolynomialLR", "CosineAnnealingLR"])
def test_step_with_an_epoch_uses_the_closed_form_as_torch(name):
    import torch

    makers = {"StepLR": lambda o, m: m.StepLR(o, 3, 0.5), "MultiStepLR": lambda o, m: m.MultiStepLR(o, [2, 6, 6]),
              "ConstantLR": lambda o, m: m.ConstantLR(o, 0.5, 4), "LinearLR": lambda o, m: m.LinearLR(o, 0.2),
              "ExponentialLR": lambda o, m: m.ExponentialLR(o, 0.9), "PolynomialLR": lambda o, m: m.PolynomialLR(o, 8),
              "CosineAnnealingLR": lambda o, m: m.CosineAnnealingLR(o, 6, 0.1)}

    def run(module):
        optimizer = optimizers(module, "SGD")
        scheduler = makers[name](optimizer, optim.lr_scheduler if module is None else module.optim.lr_scheduler)
        seen = []
        for epoch in [1, 2, 5, 3, 9, 0, 7]:
            scheduler.step(epoch)
            seen.append(scheduler.get_last_lr())
        return np.array(seen)

    with pytest.warns(UserWarning):
        ours = run(None)
    with pytest.warns(UserWarning):
        theirs = run(torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize("name", ["OneCycleLR-cos", "CyclicLR-triangular2", "CosineAnnealingWarmRestarts-mult",
                                  "SequentialLR", "ChainedScheduler-three", "PolynomialLR"])
def test_resuming_from_a_state_dict_continues_the_sequence(name):
    whole = sequence(None, name, steps=30)
    optimizer = optimizers(None, "SGD")
    scheduler = SCHEDULERS[name](optimizer, optim.lr_scheduler)
    for _ in range(12):
        optimizer.step()
        scheduler.step()
    saved_scheduler, saved_optimizer = scheduler.state_dict(), optimizer.state_dict()
    optimizer = optimizers(None, "SGD")
    scheduler = SCHEDULERS[name](optimizer, optim.lr_scheduler)
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    for step in range(12, 30):
        assert scheduler.get_last_lr() == list(whole[step, :2])
        optimizer.step()
        scheduler.step()


def test_onecycle_by_hand():
    optimizer = optimizers(None, "SGD")
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=10, anneal_strategy="linear",
                                              pct_start=0.5, div_factor=10.0, final_div_factor=1.0)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step()
    # up from 0.1 to 1 over steps 0..4, down to 0.1 over steps 4..9
    np.testing.assert_allclose(lrs, [0.1, 0.325, 0.55, 0.775, 1.0, 0.82, 0.64, 0.46, 0.28, 0.1])
    with pytest.raises(ValueError, match="Tried to step 11 times. The specified number of total steps is 10"):
        scheduler.step()


def test_a_scheduler_needs_an_optimizer():
    import torch

    not_an_optimizer = [Tensor([1.0], requires_grad=True)]
    for make in [lambda o, m: m.StepLR(o, 2), lambda o, m: m.OneCycleLR(o, 1.0, total_steps=5),
                 lambda o, m: m.CyclicLR(o, 0.1, 1.0), lambda o, m: m.ReduceLROnPlateau(o),
                 lambda o, m: m.CosineAnnealingWarmRestarts(o, 3)]:
        with pytest.raises(TypeError) as ours:
            make(not_an_optimizer, optim.lr_scheduler)
        with pytest.raises(TypeError) as theirs:
            make(not_an_optimizer, torch.optim.lr_scheduler)
        assert str(ours.value) == str(theirs.value) == "list is not an Optimizer"
    for make in [optim.lr_scheduler.LambdaLR, optim.lr_scheduler.MultiplicativeLR]:  # PyTorch: AttributeError
        with pytest.raises(TypeError, match="list is not an Optimizer"):
            make(not_an_optimizer, abs)


@pytest.mark.parametrize("make", [
    lambda o, m: m.OneCycleLR(o, 1.0),
    lambda o, m: m.OneCycleLR(o, 1.0, total_steps=0),
    lambda o, m: m.OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=-1),
    lambda o, m: m.OneCycleLR(o, 1.0, total_steps=10, pct_start=1),
    lambda o, m: m.OneCycleLR(o, 1.0, total_steps=10, anneal_strategy="exp"),
    lambda o, m: m.OneCycleLR(o, [1.0], total_steps=10),
    lambda o, m: m.CyclicLR(o, 0.1, 1.0, mode="sawtooth"),
    lambda o, m: m.CosineAnnealingWarmRestarts(o, T_0=0),
    lambda o, m: m.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=1.5),
    lambda o, m: m.ConstantLR(o, factor=2.0),
    lambda o, m: m.MultiplicativeLR(o, [abs]),
    lambda o, m: m.SequentialLR(o, [m.StepLR(o, 2)], milestones=[3]),
    lambda o, m: m.SequentialLR(o, [], milestones=[]),
    lambda o, m: m.ChainedScheduler([m.StepLR(o, 2), m.ReduceLROnPlateau(o)]),
])
def test_bad_arguments_raise_torchs_errors(make):
    import torch

    with pytest.raises(Exception) as theirs:
        make(optimizers(torch, "SGD"), torch.optim.lr_scheduler)
    with pytest.raises(theirs.type) as ours:
        make(optimizers(None, "SGD"), optim.lr_scheduler)
    assert str(ours.value) == str(theirs.value)


def test_cycle_momentum_needs_a_momentum():
    optimizer = optim.Adagrad([Tensor([1.0], requires_grad=True)])
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        optim.lr_scheduler.OneCycleLR(optimizer, 1.0, total_steps=10)
    optim.lr_scheduler.OneCycleLR(optimizer, 1.0, total_steps=10, cycle_momentum=False)


def test_reduce_lr_on_plateau_reaches_a_group_added_later_and_saves_pytorchs_keys():
    import autograd
    import nn

    first = nn.Parameter(autograd.ones(1))
    optimizer = optim.SGD([first], lr=1.0)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, min_lr=0.05)
    for _ in range(3):
        scheduler.step(1.0)
    optimizer.add_param_group({"params": [nn.Parameter(autograd.ones(1))], "lr": 1.0})
    lrs = []
    for _ in range(3):
        scheduler.step(1.0)
        lrs.append([group["lr"] for group in optimizer.param_groups])
    assert lrs == [[0.05, 0.1], [0.05, 0.05], [0.05, 0.05]]  # the new group is reduced too (zip skipped it)
    assert {"default_min_lr", "mode_worse", "min_lrs"} <= set(scheduler.state_dict())
    listed = optim.lr_scheduler.ReduceLROnPlateau(optim.SGD([first], lr=1.0), patience=0, min_lr=[0.1])
    listed.optimizer.add_param_group({"params": [nn.Parameter(autograd.ones(1))]})
    with pytest.raises(RuntimeError, match="number of param groups"):
        for _ in range(3):
            listed.step(1.0)
