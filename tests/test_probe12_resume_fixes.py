"""Focused tests of the fixes the resume probe (tests/test_programs_probe12_resume_*.py) led to, each on chainrule
and on PyTorch (the ``T`` fixture) against the same values."""

import importlib

import pytest


def test_distributed_sampler_shuffles_with_pytorchs_permutation(T):
    """randperm from a Generator seeded seed + epoch, as PyTorch's (it was NumPy's permutation): a DDP run's data
    order, and its resume at an epoch by set_epoch, are PyTorch's; padded by repeating the start."""
    data = importlib.import_module(f"{T.__name__}.utils.data")
    sampler = data.DistributedSampler(list(range(10)), num_replicas=3, rank=1, seed=5)
    assert list(sampler) == [4, 3, 2, 1]
    sampler.set_epoch(1)
    assert list(sampler) == [7, 8, 2, 0]
    assert len(sampler) == 4


def test_resuming_a_scheduler_without_initial_lr_explains_itself(T):
    optim = importlib.import_module("optim" if T.__name__ == "autograd" else "torch.optim")
    optimizer = optim.SGD([T.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(KeyError, match=r"(?s)initial_lr.*param_groups\[0\].*haven't properly loaded the optimizer"):
        optim.lr_scheduler.StepLR(optimizer, step_size=2, last_epoch=3)
