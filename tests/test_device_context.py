"""``with autograd.device(...)``: the factories' default device inside the block, as PyTorch's device
context (``with torch.device("cpu"): model = Net()``), restored after it, also when nested or when
the block raises."""

import pytest

import autograd
import nn


def test_the_block_sets_and_restores_the_default_device():
    before = autograd.get_default_device()
    with autograd.device("cpu") as d:
        assert d == autograd.device("cpu") and autograd.get_default_device() == "cpu"
        layer = nn.Linear(2, 3)
        assert layer.weight.device == "cpu" and autograd.zeros(1).device == "cpu"
        with autograd.device("cpu:0"):
            assert autograd.get_default_device() == "cpu"
        assert autograd.get_default_device() == "cpu"
    assert autograd.get_default_device() == before
    with pytest.raises(ValueError), autograd.device("cpu"):
        raise ValueError
    assert autograd.get_default_device() == before


def test_a_device_that_is_not_served_raises_on_entry_and_changes_nothing():
    if autograd.cuda.is_available():
        pytest.skip("CUDA is served here")
    before = autograd.get_default_device()
    with pytest.raises(RuntimeError, match="device 'cuda' is not available"), autograd.device("cuda"):
        pass
    assert autograd.get_default_device() == before


def test_as_pytorch():
    torch = pytest.importorskip("torch")
    with torch.device("cpu"):
        theirs = torch.nn.Linear(2, 3).weight.device.type
    with autograd.device("cpu"):
        ours = nn.Linear(2, 3).weight.device.type
    assert ours == theirs == "cpu"
