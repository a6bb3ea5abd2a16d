"""``autograd.mps``, as ``torch.mps``: Apple's Metal GPUs, which chainrule does not serve.

Programs ask ``torch.mps.is_available()`` before choosing a device and seed every backend they might run on: those
answer as PyTorch's do on a machine without MPS. Whatever needs the device itself raises PyTorch's error."""


def is_available():
    """False: tensors here live in NumPy's (or CuPy's) memory, never Metal's."""
    return False


def device_count():
    return 0


def manual_seed(seed):
    """Nothing to seed without MPS (PyTorch's answer there too)."""


def _refuse(what):
    raise RuntimeError(f"Cannot execute {what}() without MPS backend.")


def seed():
    _refuse("getDefaultGenerator")


def get_rng_state(device="mps"):
    _refuse("getDefaultGenerator")


def set_rng_state(new_state, device="mps"):
    _refuse("getDefaultGenerator")


def synchronize():
    _refuse("deviceSynchronize")


def empty_cache():
    _refuse("emptyCache")


def current_allocated_memory():
    _refuse("getCurrentAllocatedMemory")


def driver_allocated_memory():
    _refuse("getDriverAllocatedMemory")
