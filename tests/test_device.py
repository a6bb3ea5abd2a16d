"""Devices: autograd.device, autograd.cuda, Tensor.to/cpu/cuda/type and the casts, device= on factories,
Module.to."""

import pickle

import numpy as np
import pytest

import autograd
import nn
from autograd import Tensor

CUDA = autograd.cuda.is_available()


def test_device_names_parse_and_compare_as_pytorch():
    cpu = autograd.device("cpu")
    assert cpu.type == "cpu" and cpu.index is None and str(cpu) == "cpu" and repr(cpu) == "device(type='cpu')"
    cuda1 = autograd.device("cuda:1")
    assert (cuda1.type, cuda1.index, str(cuda1)) == ("cuda", 1, "cuda:1")
    assert autograd.device("cuda", 1) == cuda1 and autograd.device(cuda1) == cuda1
    assert autograd.device(0) == autograd.device("cuda:0")
    assert repr(cuda1) == "device(type='cuda', index=1)"
    assert autograd.device("cpu:0").index == 0 and autograd.device("cpu:0") != cpu  # as PyTorch
    assert cpu == "cpu" and cuda1 == "cuda:1" and cpu != "cuda" and cpu != "gpu"
    assert {cpu: 1}[autograd.device("cpu")] == 1
    assert pickle.loads(pickle.dumps(cuda1)) == cuda1
    with pytest.raises(AttributeError):
        cpu.type = "cuda"


BAD_NAMES = ["gpu", "cuda:x", "cuda:-1", "cpu:1:2"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_device_strings_raise(name):
    with pytest.raises(RuntimeError):
        autograd.device(name)
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda, .* device type at start of device string: gpu"):
        autograd.ones(1).to("gpu")


@pytest.mark.torch
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_device_strings_raise_as_pytorch(name):
    import torch
    with pytest.raises(RuntimeError) as ours:
        autograd.device(name)
    with pytest.raises(RuntimeError) as theirs:
        torch.device(name)
    if name in ("gpu", "cuda:x"):
        assert str(ours.value) == str(theirs.value)


def test_tensors_live_on_the_served_device():
    x = autograd.zeros(2)
    expected = "cuda" if CUDA else "cpu"
    assert isinstance(x.device, autograd.device) and x.device.type == expected
    assert x.is_cuda == CUDA and x.is_cpu == (not CUDA)
    assert x.get_device() == (0 if CUDA else -1)


@pytest.mark.skipif(CUDA, reason="checks the CPU-only build")
@pytest.mark.parametrize("where", ["cuda", "cuda:3", "mps", autograd.device("cuda", 0), 0])
def test_a_device_that_cannot_be_served_raises_naming_it(where):
    x = autograd.ones(2)
    with pytest.raises(RuntimeError) as error:
        x.to(where)
    message = str(error.value)
    assert str(autograd.device(where)) in message and "cpu" in message
    assert "numpy" in message  # what the array module is, not a NumPy error
    with pytest.raises(RuntimeError, match="CuPy|cpu"):
        x.cuda()
    for factory in (lambda: autograd.zeros(2, device=where), lambda: autograd.tensor([1.0], device=where),
                    lambda: autograd.randn(3, device=where), lambda: autograd.arange(3, device=where),
                    lambda: nn.Linear(2, 2).to(where), lambda: autograd.Generator(device=where)):
        with pytest.raises(RuntimeError, match="not available"):
            factory()
    with pytest.raises(RuntimeError, match="Expected one of"):
        x.to("gpu")


@pytest.mark.skipif(CUDA, reason="checks the CPU-only build")
def test_cuda_module_without_cupy():
    assert autograd.cuda.is_available() is False and autograd.cuda.device_count() == 0
    autograd.cuda.manual_seed(0)
    autograd.cuda.manual_seed_all(0)
    autograd.cuda.synchronize()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        autograd.cuda.current_device()


def test_to_the_same_place_and_dtype_is_the_tensor_itself():
    x = autograd.ones(3)
    here = x.device
    assert x.to(here) is x and x.to(str(here)) is x and x.to(autograd.float32) is x
    assert x.float() is x and x.to(x) is x
    assert x.to(device=here, dtype=autograd.float32, non_blocking=True) is x
    copied = x.to(autograd.float32, copy=True)
    assert copied is not x and np.array_equal(copied.numpy(), x.numpy())
    copied._data[0] = 5
    assert x.numpy()[0] == 1
    if not CUDA:
        assert x.cpu() is x and x.to("cpu:0") is x


def test_dtype_conversions():
    x = Tensor(np.array([1.5, -2.25, 0.0]), dtype=autograd.float32)
    assert x.double().dtype == np.float64 and x.half().dtype == np.float16
    assert x.long().tolist() == [1, -2, 0] and x.long().dtype == np.int64
    assert x.int().dtype == np.int32 and x.short().dtype == np.int16 and x.byte().dtype == np.uint8
    assert x.char().dtype == np.int8
    assert x.bool().tolist() == [True, True, False]
    assert x.to(autograd.float64).dtype == np.float64
    assert x.to(str(x.device), autograd.float64).dtype == np.float64
    assert x.to(dtype=autograd.int64).dtype == np.int64
    assert x.to(autograd.zeros(1, dtype=autograd.float64)).dtype == np.float64
    assert x.type(autograd.float64).dtype == np.float64
    assert x.type("torch.DoubleTensor").dtype == np.float64
    assert x.type() == "torch.FloatTensor" and x.long().type() == "torch.LongTensor"


@pytest.mark.torch
def test_type_names_are_pytorchs():
    import torch
    for name in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        assert autograd.zeros(1, dtype=np.dtype(name)).type() == torch.zeros(1, dtype=getattr(torch, name)).type()


def test_a_dtype_change_is_differentiable():
    x = Tensor(np.array([1.0, 2.0]), dtype=autograd.float32, requires_grad=True)
    y = x.to(autograd.float64)
    assert y.dtype == np.float64 and y.grad_fn is not None
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.tolist() == [2.0, 4.0]
    z = x.double()
    (z * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0]


def test_to_checks_its_arguments():
    x = autograd.ones(2)
    with pytest.raises(TypeError):
        x.to(autograd.float32, False, False, "extra")
    with pytest.raises(TypeError):
        x.to(colour="red")


def test_factories_take_device_dtype_and_requires_grad():
    here = str(autograd.zeros(1).device)
    made = [
        autograd.zeros(2, 3, device=here), autograd.ones((2, 3), device=here), autograd.empty(2, 3, device=here),
        autograd.full((2, 3), 1.5, device=here), autograd.rand(2, 3, device=here), autograd.randn(2, 3, device=here),
        autograd.zeros_like(autograd.ones(2, 3), device=here), autograd.ones_like(autograd.ones(2, 3), device=here),
        autograd.empty_like(autograd.ones(2, 3), device=here), autograd.full_like(autograd.ones(2, 3), 2, device=here),
        autograd.rand_like(autograd.ones(2, 3), device=here), autograd.randn_like(autograd.ones(2, 3), device=here),
        autograd.tensor(np.ones((2, 3)), dtype=autograd.float32, device=here),
    ]
    for x in made:
        assert x.shape == (2, 3) and x.dtype == np.float32 and x.device == here
    assert autograd.randint(0, 5, (4,), device=here).dtype == np.int64
    assert autograd.randint(5, (4,), device=here).shape == (4,)
    assert autograd.randint_like(autograd.ones(4), 3, device=here).dtype == np.float32
    assert autograd.randperm(5, device=here).dtype == np.int64
    assert autograd.arange(5, device=here).dtype == np.int64
    assert autograd.arange(0, 1, 0.25, device=here, dtype=autograd.float64).dtype == np.float64
    assert autograd.linspace(0, 1, 5, device=here).shape == (5,)
    assert autograd.eye(3, device=here, requires_grad=True).requires_grad
    assert autograd.zeros(2, dtype=autograd.float64, requires_grad=True).requires_grad
    assert autograd.as_tensor([1, 2], device=here).dtype == np.int64
    assert autograd.normal(0.0, 1.0, (2, 2), device=here, dtype=autograd.float64).dtype == np.float64


def test_default_device():
    here = autograd.zeros(1).device
    autograd.set_default_device(str(here))
    try:
        assert autograd.get_default_device() == here and autograd.zeros(1).device == here
    finally:
        autograd.set_default_device(None)
    if not CUDA:
        with pytest.raises(RuntimeError, match="not available"):
            autograd.set_default_device("cuda")


def test_module_to_moves_and_casts_floating_tensors_only():
    class Counted(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 3)
            self.register_buffer("steps", autograd.zeros(1, dtype=autograd.int64))

    model = Counted()
    here = autograd.zeros(1).device
    assert model.to(here) is model and model.to(str(here), autograd.float64) is model
    assert model.linear.weight.dtype == np.float64 and model.steps.dtype == np.int64
    assert model.float().linear.bias.dtype == np.float32 and model.half().linear.weight.dtype == np.float16
    assert model.to(dtype=autograd.float64, non_blocking=True).linear.weight.dtype == np.float64
    assert model.to(autograd.zeros(1, dtype=autograd.float32)).linear.weight.dtype == np.float32
    assert isinstance(model.linear.weight, nn.Parameter) and model.linear.weight.requires_grad
    with pytest.raises(TypeError, match="only accepts floating point"):
        model.to(autograd.int64)
    if not CUDA:
        assert model.cpu() is model
        with pytest.raises(RuntimeError, match="not available"):
            model.cuda()


def test_pinning_is_a_no_op():
    x = autograd.ones(2)
    assert x.pin_memory() is x and x.is_pinned() is False


def test_under_cupy_the_current_gpu_is_served_and_nothing_else(monkeypatch):
    """The device logic with the array module swapped for a stand-in that answers as CuPy does."""
    import sys
    import types

    from autograd import backend
    devices = sys.modules["autograd.device"]  # the module (autograd.device is the class, as torch.device)
    cuda_api = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0),
                                     runtime=types.SimpleNamespace(getDeviceCount=lambda: 2))
    monkeypatch.setattr(backend, "xp", types.SimpleNamespace(__name__="cupy", cuda=cuda_api))
    assert autograd.cuda.is_available() and autograd.cuda.device_count() == 2
    assert autograd.cuda.current_device() == 0
    assert devices.served() == "cuda:0"
    assert devices.resolve("cuda") == devices.resolve("cuda:0") == devices.resolve(0) == "cuda:0"
    for elsewhere in ("cuda:1", "cpu", "mps"):
        with pytest.raises(RuntimeError, match=f"device '{elsewhere}' is not available.*cuda:0.*cupy"):
            devices.resolve(elsewhere)
