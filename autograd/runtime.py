"""The process-wide settings PyTorch programs make in their first lines, with PyTorch's names
and checks, and what each means here:

- ``set_float32_matmul_precision``: "highest", "high" or "medium" permit faster, less precise
  float32 products on hardware that has them; NumPy's BLAS always computes at full precision,
  which every setting allows, so the setting is kept and reported and changes no result.
- ``use_deterministic_algorithms``: every op here is deterministic already; the flag is kept.
- ``set_num_threads``: the threads of the BLAS under NumPy, through threadpoolctl when it is
  installed (the ``reference`` extra brings it); otherwise the number is only kept.
"""

import os
import warnings

_settings = {"matmul_precision": "highest", "deterministic": False, "warn_only": False, "threads": None}
_limits = []  # the threadpoolctl limit in force (kept alive: releasing it restores the default)


def set_float32_matmul_precision(precision):
    if precision not in ("highest", "high", "medium"):
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
                      "set_float32_matmul_precision call has no effect.", stacklevel=2)
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
