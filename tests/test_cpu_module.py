"""autograd.cpu (torch.cpu), autograd.newaxis, autograd.GradScaler, autograd.OutOfMemoryError."""

import warnings

import numpy as np
import pytest

import autograd
from autograd import amp, cpu


def test_newaxis_is_none_and_indexes_a_new_dim():
    assert autograd.newaxis is None
    x = autograd.arange(6).reshape(2, 3)
    assert x[:, autograd.newaxis].shape == (2, 1, 3)
    assert x[autograd.newaxis, ..., autograd.newaxis].shape == (1, 2, 3, 1)


def test_top_level_grad_scaler_is_amps():
    assert autograd.GradScaler is amp.GradScaler
    scaler = autograd.GradScaler("cpu", init_scale=4.0)
    assert scaler.is_enabled() and scaler.get_scale() == 4.0
    np.testing.assert_array_equal(scaler.scale(autograd.tensor([1.0, 2.0])).numpy(), [4.0, 8.0])


def test_out_of_memory_error_is_a_runtime_error_shared_with_cuda():
    assert issubclass(autograd.OutOfMemoryError, RuntimeError)
    assert autograd.cuda.OutOfMemoryError is autograd.OutOfMemoryError
    with pytest.raises(RuntimeError):
        raise autograd.OutOfMemoryError("CUDA out of memory")


def test_cpu_device_queries():
    assert cpu.is_available() is True and cpu.is_initialized() is True
    assert cpu.device_count() == 1 and cpu.current_device() == "cpu"
    assert cpu.set_device("cpu") is None and cpu.synchronize() is None and cpu.synchronize(0) is None


def test_cpu_streams_and_events():
    default = cpu.current_stream()
    s = cpu.Stream(priority=0)
    with cpu.stream(s):
        assert cpu.current_stream() is s
        with cpu.stream(None):  # None leaves the stream as it is
            assert cpu.current_stream() is s
    assert cpu.current_stream() is default
    event = cpu.Event()
    assert event.query() is True and event.record() is None and event.synchronize() is None
    assert s.wait_stream(default) is None and s.record_event() is None


def test_cpu_amp_is_the_deprecated_spelling_of_amp_cpu():
    with pytest.warns(FutureWarning, match=r"Please use `autograd.amp.autocast\('cpu', args...\)`"):
        block = cpu.amp.autocast(enabled=False)
    assert isinstance(block, amp.autocast) and block.device == "cpu"
    with block:
        assert not autograd.is_autocast_enabled("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with cpu.amp.autocast():  # (float16, autocast's CPU dtype here: NumPy has no bfloat16)
            assert autograd.is_autocast_enabled("cpu") and autograd.get_autocast_dtype("cpu") == autograd.float16
        with pytest.raises(NotImplementedError, match="bfloat16 is not built here"):  # as autograd.amp.autocast
            cpu.amp.autocast(dtype=autograd.bfloat16)
    with pytest.warns(FutureWarning, match="GradScaler"):
        scaler = cpu.amp.GradScaler(init_scale=8.0)
    assert isinstance(scaler, amp.GradScaler) and scaler.get_scale() == 8.0


@pytest.mark.torch
def test_against_torch():
    torch = pytest.importorskip("torch")
    assert torch.newaxis is autograd.newaxis
    assert torch.GradScaler is torch.amp.GradScaler
    assert issubclass(torch.OutOfMemoryError, RuntimeError) and torch.cuda.OutOfMemoryError is torch.OutOfMemoryError
    for name in ("is_available", "is_initialized", "device_count", "current_device"):
        assert getattr(cpu, name)() == getattr(torch.cpu, name)(), name
    with pytest.warns(FutureWarning):
        torch.cpu.amp.autocast(enabled=False)
