"""The process-wide settings PyTorch programs make in their first lines, with PyTorch's names
and checks, and what each means here:

- ``set_float32_matmul_precision``: "highest", "high" or "medium" permit faster, less precise
  float32 products on hardware that has them; NumPy's BLAS always computes at full precision,
  which every setting allows, so the setting is kept and reported and changes no result.
- ``use_deterministic_algorithms``: every op here is deterministic already; the flag is kept.
- ``set_num_threads``: the threads of the BLAS under NumPy, through threadpoolctl when it is
  installed (the ``reference`` extra brings it); otherwise the number is only kept.
  ``set_num_interop_threads`` (PyTorch's pool that runs independent ops side by side): NumPy
  runs one op at a time, so the number is checked and kept; ``init_num_threads`` has nothing
  to propagate (threadpoolctl's limit holds for every thread).
- ``set_deterministic_debug_mode``: ``use_deterministic_algorithms`` by another name (0 off,
  1 warn only, 2 on), one setting read by both.
- ``set_flush_denormal``: NumPy cannot flush denormal numbers to zero, so it returns False, as
  PyTorch does on a CPU without the instructions, and nothing changes.
- ``set_warn_always`` is warn_once.py's, the owner of PyTorch's once-a-process warnings.
- ``set_anomaly_enabled``: the function form of ``set_detect_anomaly`` (``autograd.graph`` owns
  the mode). Anomaly mode here always checks for NaN, so ``check_nan=False`` is refused.
- ``set_default_tensor_type`` (deprecated in PyTorch): sets the default dtype from a type name
  ("torch.DoubleTensor") or a typed constructor (``autograd.DoubleTensor``).
"""

import os
import warnings

from .graph import program_stacklevel

_settings = {"matmul_precision": "highest", "deterministic": False, "warn_only": False, "threads": None,
             "interop_threads": None}
_limits = []  # the threadpoolctl limit in force (kept alive: releasing it restores the default)


def set_float32_matmul_precision(precision):
    if precision not in ("highest", "high", "medium"):
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
                      "set_float32_matmul_precision call has no effect.", stacklevel=program_stacklevel())
        return
    _settings["matmul_precision"] = precision


def get_float32_matmul_precision():
    return _settings["matmul_precision"]


def use_deterministic_algorithms(mode, *, warn_only=False):
    _settings["deterministic"], _settings["warn_only"] = bool(mode), bool(warn_only)


def are_deterministic_algorithms_enabled():
    return _settings["deterministic"]


def is_deterministic_algorithms_warn_only_enabled():
    return _settings["warn_only"]


def set_num_threads(count):
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        raise RuntimeError("set_num_threads expects a positive integer")
    _settings["threads"] = count
    try:
        import threadpoolctl
    except ImportError:
        return
    _limits[:] = [threadpoolctl.threadpool_limits(count, user_api="blas")]


def get_num_threads():
    return _settings["threads"] or os.cpu_count() or 1


def _positive_count(count, name):
    if not isinstance(count, int) or isinstance(count, bool):
        raise RuntimeError(f"{name} expects an int, but got {type(count).__name__}")
    if count <= 0:
        raise RuntimeError(f"{name} expects a positive integer")
    return count


def set_num_interop_threads(count):
    _settings["interop_threads"] = _positive_count(count, "set_num_interop_threads")


def get_num_interop_threads():
    return _settings["interop_threads"] or os.cpu_count() or 1


def init_num_threads():
    """Nothing to do: a thread limit set by set_num_threads holds for every thread already."""


def set_flush_denormal(mode):
    """False: NumPy has no flush-to-zero mode (see the module's docstring)."""
    return False


_DEBUG_MODES = {"default": 0, "warn": 1, "error": 2}


def set_deterministic_debug_mode(debug_mode):
    """0 / "default": off; 1 / "warn": warn only; 2 / "error": on (use_deterministic_algorithms)."""
    if isinstance(debug_mode, str):
        if debug_mode not in _DEBUG_MODES:
            raise RuntimeError("invalid value of debug_mode, expected one of `default`, `warn`, `error`, but got "
                               f"{debug_mode}")
        debug_mode = _DEBUG_MODES[debug_mode]
    elif not isinstance(debug_mode, int):
        raise TypeError(f"debug_mode must be str or int, but got {type(debug_mode)}")
    if debug_mode not in (0, 1, 2):
        raise RuntimeError(f"invalid value of debug_mode, expected 0, 1, or 2, but got {debug_mode}")
    use_deterministic_algorithms(debug_mode > 0, warn_only=debug_mode == 1)


def get_deterministic_debug_mode():
    if not _settings["deterministic"]:
        return 0
    return 1 if _settings["warn_only"] else 2


def set_anomaly_enabled(enabled, check_nan=True):
    """Turn anomaly detection on or off in this thread (set_detect_anomaly as a plain call)."""
    from .graph import set_detect_anomaly

    set_detect_anomaly(enabled, check_nan)


def is_anomaly_check_nan_enabled():
    """Whether anomaly mode checks values (detect_anomaly's check_nan; True unless set off)."""
    from .graph import modes

    return modes.anomaly_check_nan


def set_default_tensor_type(t):
    """Deprecated (as in PyTorch): the default dtype becomes t's ("torch.DoubleTensor",
    ``autograd.DoubleTensor``; "torch.cuda.FloatTensor" also makes "cuda" the default device)."""
    from .backend import set_default_dtype
    from .device import set_default_device
    from .ops.conversion import _TYPE_NAMES

    warnings.warn("torch.set_default_tensor_type() is deprecated as of PyTorch 2.1, please use "
                  "torch.set_default_dtype() and torch.set_default_device() as alternatives.",
                  stacklevel=program_stacklevel())
    dtypes = {f"{kind}Tensor": name for name, kind in _TYPE_NAMES.items()}
    if isinstance(t, str):
        module, _, name = t.rpartition(".")
        if module not in ("torch", "torch.cuda"):
            raise ModuleNotFoundError(f"No module named '{module or t}'")
        if name not in dtypes:
            raise AttributeError(f"module '{module}' has no attribute '{name}'")
        cuda, dtype = module == "torch.cuda", dtypes[name]
    else:
        cuda, dtype = False, dtypes.get(getattr(t, "__name__", None))
        if dtype is None:
            raise TypeError("invalid type object: only floating-point types are supported as the default type")
    if dtype not in ("float16", "float32", "float64"):
        raise TypeError("only floating-point types are supported as the default type")
    set_default_dtype(dtype)
    if cuda:
        set_default_device("cuda")


def typename(obj):
    """The type's full name: a tensor's PyTorch type name ('torch.FloatTensor'), else
    'module.QualifiedName' of obj (a class) or of obj's class, without 'builtins.'."""
    from .tensor import Tensor

    if isinstance(obj, Tensor):
        return obj.type()
    named = obj if hasattr(obj, "__qualname__") else type(obj)
    module = getattr(named, "__module__", "") or ""
    return named.__qualname__ if module in ("", "builtins") else f"{module}.{named.__qualname__}"


def is_storage(obj):
    """False: tensors here keep their memory in NumPy arrays; there are no storage objects."""
    return False


def get_file_path(*path_components):
    """The path of ``path_components`` in the folder that holds the ``autograd`` package."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *path_components)


def prepare_multiprocessing_environment(path):
    """Nothing to prepare (as PyTorch's open-source build)."""
