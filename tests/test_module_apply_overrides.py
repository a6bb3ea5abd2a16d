"""A subclass's ``_apply`` runs on every ``to()`` and on ``to_empty()``, as PyTorch's (timm's patch-embed
resampler overrides it to drop a cache of tensors that are not buffers), and ``_replicate_for_data_parallel``
gives PyTorch's replica (attributes shared, no parameters of its own); against PyTorch where installed."""

import importlib

import pytest

import autograd

LIBRARIES = ["ours", pytest.param("torch", marks=pytest.mark.torch)]


def modules(which):
    if which == "ours":
        return autograd, importlib.import_module("nn")
    torch = pytest.importorskip("torch")
    return torch, torch.nn


def caching_module(torch, nn):
    class Resampler(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)
            self.register_buffer("scale", torch.ones(2))
            self.cache = {}
            self.applied = 0

        def _apply(self, fn, recurse=True):
            self.cache.clear()  # cached tensors are not buffers: drop them on any move or cast
            self.applied += 1
            return super()._apply(fn)

    outer = nn.Sequential(Resampler())
    return outer, outer[0]


@pytest.mark.parametrize("which", LIBRARIES)
def test_apply_override_runs_on_every_move(which):
    torch, nn = modules(which)
    outer, inner = caching_module(torch, nn)
    weight = inner.proj.weight
    for move in (lambda m: m.to("cpu"), lambda m: m.cpu(), lambda m: m.to(torch.float64), lambda m: m.float(),
                 lambda m: m.to_empty(device="cpu")):
        inner.cache["key"] = torch.zeros(1)
        assert move(outer) is outer and not inner.cache
    assert inner.applied == 5 and inner.proj.weight is weight and inner.proj.weight.dtype == torch.float32
    assert inner.scale.shape == (2,) and inner.proj.weight.shape == (2, 2)


@pytest.mark.parametrize("which", LIBRARIES)
def test_to_empty_keeps_parameters_and_recurse(which):
    torch, nn = modules(which)
    outer, inner = caching_module(torch, nn)
    weight, before = inner.proj.weight, inner.proj.weight.detach().clone()
    outer.to_empty(device="cpu", recurse=False)  # the Sequential has no tensors of its own
    assert torch.equal(inner.proj.weight, before) and inner.applied == 0
    outer.to_empty(device="cpu")
    assert inner.proj.weight is weight and inner.applied == 1


@pytest.mark.parametrize("which", LIBRARIES)
def test_replicate_for_data_parallel(which):
    torch, nn = modules(which)
    _, inner = caching_module(torch, nn)
    replica = inner._replicate_for_data_parallel()
    assert type(replica) is type(inner) and replica._is_replica and not inner.__dict__.get("_is_replica", False)
    assert replica.cache is inner.cache and replica.proj is inner.proj  # attributes and children shared
    assert dict(replica._parameters) == {} and replica._buffers is not inner._buffers
    assert replica._buffers["scale"] is inner.scale and replica._modules is not inner._modules
