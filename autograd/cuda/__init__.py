"""``autograd.cuda``, as ``torch.cuda``: whether tensors live on a GPU.

CUDA is available exactly when the array module is CuPy
(``CHAINRULE_ARRAY_MODULE=cupy``, see ``autograd.backend``); then every tensor
lives on CuPy's current GPU. Random numbers come from the same NumPy PCG64
generators on every device, so seeding CUDA seeds the default generator.
"""

from .. import _lazy, backend
from .. import random as _random
from ..errors import OutOfMemoryError  # noqa: F401  (torch.cuda.OutOfMemoryError is torch.OutOfMemoryError)


def is_available():
    """True when tensors live on a GPU (the array module is CuPy)."""
    return backend.xp.__name__ == "cupy"


def device_count():
    """How many GPUs CuPy sees (0 without CuPy)."""
    return backend.xp.cuda.runtime.getDeviceCount() if is_available() else 0


def current_device():
    if not is_available():
        raise RuntimeError("autograd.cuda.current_device(): CUDA is not available (the array module is "
                           f"{backend.xp.__name__}; CUDA needs CHAINRULE_ARRAY_MODULE=cupy)")
    return backend.xp.cuda.Device().id


def get_device_name(device=None):
    index = current_device() if device is None else getattr(device, "index", device) or 0
    return backend.xp.cuda.runtime.getDeviceProperties(index)["name"].decode()


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



# the older spelling of mixed precision, autograd.cuda.amp, loads on first use
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"amp": ".amp"})
