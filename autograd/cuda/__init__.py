"""``autograd.cuda``, as ``torch.cuda``: whether tensors live on a GPU.

CUDA is available exactly when the array module is CuPy
(``CHAINRULE_ARRAY_MODULE=cupy``, see ``autograd.backend``); then every tensor
lives on CuPy's current GPU. Random numbers come from the same host Mersenne twister
generators on every device, so seeding CUDA seeds the default generator.
"""

import contextlib

from .. import _lazy, backend
from .. import random as _random
from ..constants import typed_constructors as _typed_constructors
from ..errors import OutOfMemoryError  # noqa: F401  (torch.cuda.OutOfMemoryError is torch.OutOfMemoryError)

# torch.cuda.FloatTensor and the others: isinstance(x, torch.cuda.FloatTensor) is whether x is a GPU tensor of float32
# (never without one); calling one without a GPU raises PyTorch's TypeError
(FloatTensor, DoubleTensor, HalfTensor, LongTensor, IntTensor, ShortTensor, CharTensor, ByteTensor,
 BoolTensor) = _typed_constructors("cuda").values()


def is_available():
    """True when tensors live on a GPU (the array module is CuPy)."""
    return backend.xp.__name__ == "cupy"


def device_count():
    """How many GPUs CuPy sees (0 without CuPy)."""
    return backend.xp.cuda.runtime.getDeviceCount() if is_available() else 0


def _refuse_without_cuda(name):
    if not is_available():
        raise RuntimeError(f"autograd.cuda.{name}(): CUDA is not available (the array module is "
                           f"{backend.xp.__name__}; CUDA needs CHAINRULE_ARRAY_MODULE=cupy)")


def current_device():
    _refuse_without_cuda("current_device")
    return backend.xp.cuda.Device().id


def get_device_name(device=None):
    index = current_device() if device is None else getattr(device, "index", device) or 0
    return backend.xp.cuda.runtime.getDeviceProperties(index)["name"].decode()


def set_device(device):
    """Make GPU ``device`` (an index, "cuda:1" or a device) the current one."""
    _refuse_without_cuda("set_device")
    index = getattr(device, "index", device)
    if isinstance(device, str):
        index = int(device.partition(":")[2] or 0)
    backend.xp.cuda.Device(index or 0).use()


# -- streams and events: every op runs on CuPy's current stream; chainrule makes no others ----------------------

def stream(stream):
    """PyTorch's context that makes ``stream`` current: with None (what code that passes an optional stream
    gives on a CPU) it does nothing, as PyTorch's; a stream of its own needs CUDA."""
    if stream is None:
        return contextlib.nullcontext()
    _refuse_without_cuda("stream")
    return stream  # (a CuPy stream: its own context manager)


def current_stream(device=None):
    _refuse_without_cuda("current_stream")
    return backend.xp.cuda.get_current_stream()


def Stream(device=None, priority=0):  # noqa: N802  (PyTorch's class name)
    _refuse_without_cuda("Stream")
    raise NotImplementedError("autograd.cuda.Stream: chainrule runs every op on CuPy's current stream and makes "
                              "no others")


def Event(enable_timing=False, blocking=False, interprocess=False):  # noqa: N802  (PyTorch's class name)
    """Timing GPU work with events needs a GPU; time a CPU program with time.perf_counter() (or
    autograd.utils.benchmark.Timer)."""
    _refuse_without_cuda("Event")
    raise NotImplementedError("autograd.cuda.Event is not built: time GPU work with autograd.cuda.synchronize() "
                              "and time.perf_counter()")


def synchronize(device=None):
    """Wait for the GPU to finish its queued work (nothing to wait for on the CPU)."""
    if is_available():
        backend.xp.cuda.Device().synchronize()


def manual_seed(seed):
    """Seed the generator CUDA tensors draw from (the default one); nothing without CUDA, as PyTorch,
    which seeds CUDA lazily."""
    if is_available():
        _random.manual_seed(seed)


def manual_seed_all(seed):
    manual_seed(seed)


def seed():
    if is_available():
        _random.seed()


def seed_all():
    seed()


def empty_cache():
    if is_available():
        backend.xp.get_default_memory_pool().free_all_blocks()


def is_initialized():
    """Whether CUDA is in use (with CuPy, from the start; PyTorch initialises it lazily)."""
    return is_available()


def is_bf16_supported(including_emulation=True):
    """False: NumPy and CuPy have no bfloat16."""
    return False


def is_tf32_supported():
    """False: matmuls here are not run in TF32."""
    return False


# -- memory: CuPy's memory pool holds the GPU's arrays; without CUDA there is none (PyTorch's 0 and {}) ----------

def memory_allocated(device=None):
    """Bytes held by tensors on the GPU now (0 without CUDA)."""
    return backend.xp.get_default_memory_pool().used_bytes() if is_available() else 0


def memory_reserved(device=None):
    """Bytes the memory pool holds, in use or cached for reuse (0 without CUDA)."""
    return backend.xp.get_default_memory_pool().total_bytes() if is_available() else 0


def _no_peaks(name):
    raise NotImplementedError(f"autograd.cuda.{name}: CuPy's memory pool keeps no peak statistics; "
                              "sample autograd.cuda.memory_allocated() instead")


def max_memory_allocated(device=None):
    """The peak of memory_allocated (0 without CUDA; CuPy keeps no peak: refused)."""
    return _no_peaks("max_memory_allocated") if is_available() else 0


def max_memory_reserved(device=None):
    """The peak of memory_reserved (0 without CUDA; CuPy keeps no peak: refused)."""
    return _no_peaks("max_memory_reserved") if is_available() else 0


def reset_peak_memory_stats(device=None):
    """Nothing to reset without CUDA; CuPy keeps no peak: refused."""
    if is_available():
        _no_peaks("reset_peak_memory_stats")


def memory_stats(device=None):
    """PyTorch's statistics that a memory pool can give: the current bytes in use and held ({} without CUDA)."""
    if not is_available():
        return {}
    return {"allocated_bytes.all.current": memory_allocated(), "reserved_bytes.all.current": memory_reserved()}


# -- random state: CUDA tensors draw from the default generator (see the module's docstring) ----------------------

def get_rng_state(device="cuda"):
    _refuse_without_cuda("get_rng_state")
    return _random.get_rng_state()


def set_rng_state(new_state, device="cuda"):
    """Set the state CUDA tensors draw from (nothing without CUDA, as PyTorch, which sets it lazily)."""
    if is_available():
        _random.set_rng_state(new_state)


def get_rng_state_all():
    """[the state of each GPU]: [] without CUDA."""
    return [get_rng_state()] if is_available() else []


def set_rng_state_all(new_states):
    for state in new_states:
        set_rng_state(state)


def initial_seed():
    _refuse_without_cuda("initial_seed")
    return _random.initial_seed()



# the older spelling of mixed precision, autograd.cuda.amp, loads on first use
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"amp": ".amp"})
