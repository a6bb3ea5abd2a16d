"""``autograd.mps`` and ``autograd.xpu`` (as ``torch.mps`` and ``torch.xpu``), the stream and event names of
``autograd.cuda``, and ``autograd.serialization`` as an attribute: what device-agnostic programs call on a machine
without those devices answers as PyTorch's does there, and what needs the device raises."""

import subprocess
import sys

import pytest

import autograd


def test_mps_answers_as_on_a_machine_without_it(T):
    assert T.mps.is_available() is False and T.mps.device_count() == 0
    assert T.mps.manual_seed(0) is None
    for call in (T.mps.synchronize, T.mps.empty_cache, T.mps.seed, T.mps.get_rng_state,
                 T.mps.current_allocated_memory):
        with pytest.raises(RuntimeError, match="without MPS backend"):
            call()


def test_xpu_answers_as_on_a_machine_without_it(T):
    assert T.xpu.is_available() is False and T.xpu.device_count() == 0 and T.xpu.is_initialized() is False
    assert T.xpu.manual_seed(0) is None and T.xpu.manual_seed_all(0) is None and T.xpu.empty_cache() is None
    assert T.xpu.memory_allocated() == 0 and T.xpu.is_bf16_supported() is False
    for call in (T.xpu.synchronize, T.xpu.current_device, T.xpu.get_device_name):
        with pytest.raises(AssertionError, match="not compiled with XPU enabled"):
            call()


def test_a_device_agnostic_seeding_helper_runs(T):
    # the helper training scripts carry: seed every backend there might be
    def seed_everything(seed):
        T.manual_seed(seed)
        T.cuda.manual_seed_all(seed)
        T.mps.manual_seed(seed)
        T.xpu.manual_seed_all(seed)

    seed_everything(3)
    first = T.rand(3)
    seed_everything(3)
    assert T.equal(first, T.rand(3))
    device = ("cuda" if T.cuda.is_available() else "mps" if T.backends.mps.is_available()
              else "xpu" if T.xpu.is_available() else "cpu")
    assert device == "cpu"


def test_cuda_streams_and_events_need_cuda(T):
    if T.cuda.is_available():
        pytest.skip("checks the answers without CUDA")
    with T.cuda.stream(None):  # an optional stream left out: nothing to switch
        x = T.ones(2) * 2
    assert x.tolist() == [2.0, 2.0]
    for make in (lambda: T.cuda.Event(enable_timing=True), lambda: T.cuda.Stream()):
        with pytest.raises(RuntimeError):
            make()


def test_serialization_is_an_attribute_before_any_load():
    # torch.serialization.add_safe_globals([...]) is the first line of many checkpoint loaders (PyTorch 2.6's
    # weights_only default): it must not need an earlier load or an import of the submodule
    code = "import autograd; autograd.serialization.add_safe_globals([]); print(autograd.serialization.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "autograd.serialization"
    assert autograd.serialization.load is autograd.load


def test_distributed_says_which_backends_it_has():
    # what launch scripts ask before init_process_group: backend = "nccl" if dist.is_nccl_available() else ...
    import autograd.distributed as dist

    assert dist.is_nccl_available() is False and dist.is_gloo_available() is True and dist.is_ucc_available() is False
    assert dist.is_available() is True
