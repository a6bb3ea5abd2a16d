"""Lazy layers (nn/lazy.py: the input size learnt at the first call), nn.Buffer and DataParallel: shapes, the class they
become, initialisation, optimizers holding the parameters from before, state_dicts; against PyTorch where
it is installed (repr, state_dict keys, a loaded torch state_dict giving the same outputs)."""

import numpy as np
import pytest

import autograd
import nn
import optim

torch_only = pytest.mark.torch


def randn(*shape, seed=0):
    return autograd.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_lazy_linear_learns_in_features_and_becomes_a_linear():
    layer = nn.LazyLinear(4)
    assert repr(layer) == "LazyLinear(in_features=0, out_features=4, bias=True)"
    assert isinstance(layer.weight, nn.UninitializedParameter) and layer.has_uninitialized_params()
    with pytest.raises(RuntimeError, match="Can't access the shape of an uninitialized parameter"):
        _ = layer.weight.shape
    weight = layer.weight
    optimizer = optim.SGD(layer.parameters(), lr=0.1)  # given the parameters before they have a shape
    y = layer(randn(2, 3))
    assert type(layer) is nn.Linear and repr(layer) == "Linear(in_features=3, out_features=4, bias=True)"
    assert layer.weight is weight and type(weight) is nn.Parameter and weight.shape == (4, 3)
    assert np.abs(weight.numpy()).max() <= 1 / np.sqrt(3)  # Linear's initialisation
    before = weight.numpy().copy()
    y.sum().backward()
    optimizer.step()
    lr = np.float64(np.float32(0.1))  # (SGD's p.add_(grad, alpha=-lr): one fused multiply-add, as PyTorch's)
    np.testing.assert_array_equal(weight.numpy(), (before - lr * weight.grad.numpy().astype(np.float64)).astype(
        np.float32))
    assert nn.LazyLinear(2, bias=False).double()(randn(1, 5).double()).dtype == autograd.float64


def test_lazy_conv_and_norm_layers_learn_their_channels():
    conv = nn.LazyConv2d(6, 3, groups=2, padding=1)
    assert conv(randn(2, 4, 5, 5)).shape == (2, 6, 5, 5) and type(conv) is nn.Conv2d
    assert conv.weight.shape == (6, 2, 3, 3) and conv.in_channels == 4
    transposed = nn.LazyConvTranspose1d(3, 2, stride=2, bias=False)
    assert transposed(randn(4, 5)).shape == (3, 10) and transposed.weight.shape == (4, 3, 2)  # unbatched
    assert nn.LazyConv3d(2, 1)(randn(1, 3, 2, 2, 2)).shape == (1, 2, 2, 2, 2)
    assert list(nn.LazyBatchNorm2d(bias=False).state_dict())[:2] == ["weight", "running_mean"]
    norm = nn.LazyBatchNorm1d()
    assert list(norm.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    norm(randn(8, 3))
    assert type(norm) is nn.BatchNorm1d and norm.num_features == 3 and norm.num_batches_tracked.item() == 1
    np.testing.assert_array_equal(norm.weight.numpy(), 1.0)
    instance = nn.LazyInstanceNorm2d()
    assert instance(randn(3, 4, 5)).shape == (3, 4, 5) and instance.num_features == 3  # unbatched: C is dim 0
    plain = nn.LazyInstanceNorm1d(affine=False, track_running_stats=False)  # nothing to materialize
    assert plain(randn(2, 3, 4)).shape == (2, 3, 4) and plain.num_features == 3
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.LazyConv2d(6, 3, groups=2)(randn(2, 3, 5, 5))
    with pytest.raises(RuntimeError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input to LazyConv2d"):
        nn.LazyConv2d(6, 3)(randn(5, 5))


def test_a_state_dict_materializes_a_lazy_layer():
    source = nn.Sequential(nn.Linear(3, 4))
    lazy = nn.Sequential(nn.LazyLinear(4))
    lazy.load_state_dict(source.state_dict())
    x = randn(2, 3)
    np.testing.assert_array_equal(lazy(x).detach().numpy(), source(x).detach().numpy())
    assert type(lazy[0]) is nn.Linear


def test_buffer_assigned_as_an_attribute_is_registered():
    module = nn.Module()
    module.kept = nn.Buffer(autograd.ones(2))
    module.scratch = nn.Buffer(autograd.zeros(3), persistent=False)
    assert list(module.state_dict()) == ["kept"]
    assert list(dict(module.named_buffers())) == ["kept", "scratch"]
    assert isinstance(module.kept, nn.Buffer) and not isinstance(autograd.ones(1), nn.Buffer)
    module.kept = autograd.full((2,), 5.0)  # a registered buffer takes a plain tensor
    np.testing.assert_array_equal(module.state_dict()["kept"].numpy(), [5.0, 5.0])
    assert module.double().scratch.dtype == autograd.float64
    module.scratch = nn.Buffer(autograd.zeros(3))  # now persistent
    assert list(module.state_dict()) == ["kept", "scratch"]


@torch_only
@pytest.mark.parametrize("name, args, shape", [
    ("LazyLinear", (4,), (2, 3)),
    ("LazyConv1d", (4, 3), (2, 3, 7)),
    ("LazyConv2d", (4, 3, 1, 1, 1, 2), (2, 6, 5, 5)),
    ("LazyConvTranspose2d", (4, 3, 2), (2, 3, 4, 4)),
    ("LazyConv3d", (2, 2), (1, 3, 3, 3, 3)),
    ("LazyBatchNorm2d", (), (4, 3, 2, 2)),
    ("LazyInstanceNorm1d", (), (2, 3, 5)),
])
def test_lazy_layers_match_torch(name, args, shape):
    import torch

    ours, theirs = getattr(nn, name)(*args).double(), getattr(torch.nn, name)(*args).double()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal(shape)
    expected = theirs(torch.tensor(x))
    ours.load_state_dict({k: autograd.Tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    y = ours(autograd.Tensor(x))
    assert repr(ours) == repr(theirs) and type(ours).__name__ == type(theirs).__name__
    np.testing.assert_allclose(y.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-10)


@torch_only
def test_buffer_matches_torch():
    import torch

    ours, theirs = nn.Module(), torch.nn.Module()
    ours.a, theirs.a = nn.Buffer(autograd.ones(2)), torch.nn.Buffer(torch.ones(2))
    ours.b, theirs.b = nn.Buffer(autograd.ones(2), persistent=False), torch.nn.Buffer(torch.ones(2), persistent=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(dict(ours.named_buffers())) == list(dict(theirs.named_buffers()))


def test_data_parallel_without_gpus_runs_the_module():
    inner = nn.Linear(3, 2)
    wrapped = nn.DataParallel(inner)
    x = randn(4, 3)
    np.testing.assert_array_equal(wrapped(x).detach().numpy(), inner(x).detach().numpy())
    assert list(wrapped.state_dict()) == ["module.weight", "module.bias"] and wrapped.device_ids == []
    assert repr(wrapped) == "DataParallel(\n  (module): Linear(in_features=3, out_features=2, bias=True)\n)"
    assert nn.parallel.DataParallel is nn.DataParallel
