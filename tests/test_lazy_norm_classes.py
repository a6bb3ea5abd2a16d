"""A lazy norm is no eager norm until its first input (PyTorch's LazyBatchNorm1d derives from _LazyNormBase and
_BatchNorm, not BatchNorm1d), then becomes one; a LazyLinear or LazyConv2d is a Linear or Conv2d from the start.
Code that tells layers apart by isinstance (freezing BatchNorm1d layers, fusing convolutions) sees what PyTorch's
sees."""

import importlib

import pytest

CASES = [  # (lazy, eager, an input, whether it is the eager class before its first input)
    ("LazyBatchNorm1d", "BatchNorm1d", (4, 3), False),
    ("LazyBatchNorm2d", "BatchNorm2d", (2, 3, 2, 2), False),
    ("LazyBatchNorm3d", "BatchNorm3d", (2, 3, 2, 2, 2), False),
    ("LazyInstanceNorm1d", "InstanceNorm1d", (2, 3, 4), False),
    ("LazyInstanceNorm2d", "InstanceNorm2d", (2, 3, 4, 4), False),
    ("LazyLinear", "Linear", (2, 3), True),
]


@pytest.mark.parametrize("module", ["autograd", "torch"])
@pytest.mark.parametrize("lazy, eager, shape, eager_before", CASES)
def test_lazy_layers_become_their_eager_class(module, lazy, eager, shape, eager_before):
    T = importlib.import_module("autograd") if module == "autograd" else pytest.importorskip("torch")
    modules = importlib.import_module("nn") if module == "autograd" else T.nn
    layer = getattr(modules, lazy)(5) if lazy == "LazyLinear" else getattr(modules, lazy)()
    assert isinstance(layer, getattr(modules, eager)) is eager_before
    y = layer(T.ones(*shape))
    assert type(layer) is getattr(modules, eager)
    assert tuple(y.shape) == ((2, 5) if lazy == "LazyLinear" else shape)
    if lazy != "LazyLinear":
        assert layer.num_features == 3 and tuple(layer.weight.shape) == (3,)
