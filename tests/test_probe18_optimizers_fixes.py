"""Fixes found by tests/test_programs_probe18_optimizers.py, checked on chainrule and PyTorch (the ``T`` fixture).

A group added by ``add_param_group`` after a scheduler was made has no base learning rate (nor momentum range)
in it: PyTorch's LambdaLR, MultiplicativeLR, CyclicLR and CosineAnnealingWarmRestarts refuse to step then (their
``zip(..., strict=True)``); chainrule's stepped on and left the new group's lr as it was."""

import pytest

from .pytorch_programs import OURS, pytorch

TORCH = pytorch()


def optim_of(T):
    return OURS.optim if T.__name__ == "autograd" else TORCH.optim


SCHEDULERS = [
    ("LambdaLR", dict(lr_lambda=lambda epoch: 0.5), "zip() argument 2 is shorter than argument 1"),
    ("MultiplicativeLR", dict(lr_lambda=lambda epoch: 0.5), "zip() argument 2 is longer than argument 1"),
    ("CyclicLR", dict(base_lr=0.1, max_lr=1.0), "zip() argument 2 is shorter than argument 1"),
    ("CyclicLR", dict(base_lr=0.1, max_lr=1.0, cycle_momentum=False), "zip() argument 2 is shorter than argument 1"),
    ("CosineAnnealingWarmRestarts", dict(T_0=3), "zip() argument 2 is shorter than argument 1"),
]


@pytest.mark.parametrize("name, options, message", SCHEDULERS)
def test_a_scheduler_refuses_a_group_added_after_it_as_pytorchs(T, name, options, message):
    optim = optim_of(T)
    first, later = T.ones(2, requires_grad=True), T.ones(2, requires_grad=True)
    optimizer = optim.SGD([first], lr=1.0, momentum=0.9)
    scheduler = getattr(optim.lr_scheduler, name)(optimizer, **options)
    optimizer.add_param_group({"params": [later], "lr": 0.3})
    optimizer.step()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scheduler.step()
    assert optimizer.param_groups[1]["lr"] == 0.3


@pytest.mark.parametrize("name, options", [("StepLR", dict(step_size=1, gamma=0.5)),
                                           ("ExponentialLR", dict(gamma=0.5))])
def test_a_chainable_scheduler_decays_a_group_added_after_it(T, name, options):
    optim = optim_of(T)
    first, later = T.ones(2, requires_grad=True), T.ones(2, requires_grad=True)
    optimizer = optim.SGD([first], lr=1.0)
    scheduler = getattr(optim.lr_scheduler, name)(optimizer, **options)
    optimizer.add_param_group({"params": [later], "lr": 0.3})
    optimizer.step()
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == [0.5, 0.15]
