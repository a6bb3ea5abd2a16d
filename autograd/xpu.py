"""``autograd.xpu``, as ``torch.xpu``: Intel GPUs, which chainrule does not serve.

What programs ask before choosing a device, or call to seed and tidy every backend, answers as PyTorch's does on a
machine without an XPU; whatever needs the device itself raises PyTorch's error."""


def is_available():
    """False: tensors here live in NumPy's (or CuPy's) memory."""
    return False


def device_count():
    return 0


def is_initialized():
    return False


def is_bf16_supported(including_emulation=True):
    return False


def manual_seed(seed):
    """Nothing to seed without an XPU (PyTorch seeds it lazily)."""


manual_seed_all = manual_seed


def empty_cache():
    """Nothing cached without an XPU."""


def memory_allocated(device=None):
    return 0


def memory_reserved(device=None):
    return 0


def max_memory_allocated(device=None):
    return 0


def _refuse():
    raise AssertionError("Torch not compiled with XPU enabled")


def synchronize(device=None):
    _refuse()


def current_device():
    _refuse()


def get_device_name(device=None):
    _refuse()


def set_device(device):
    _refuse()
