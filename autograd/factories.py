"""Making tensors: ``tensor``, ``zeros``, ``ones``, ``rand``, ``randn``, ``arange``, ...

Floating factories use the default dtype (float32) unless ``dtype`` says
otherwise; random ones draw from the global generator (``manual_seed``).
"""

from . import backend
from .backend import xp
from .random import generator
from .tensor import Tensor


def _shape(size):
    """Accept zeros(2, 3) and zeros((2, 3)), as PyTorch does."""
    if len(size) == 1 and not isinstance(size[0], int):
        return tuple(size[0])
    return tuple(size)


def _float(dtype):
    return backend.get_default_dtype() if dtype is None else dtype


def tensor(data, dtype=None, requires_grad=False):
    """A new leaf tensor holding a copy of ``data``."""
    data = data._data if isinstance(data, Tensor) else data
    return Tensor(xp.array(data, dtype=dtype, copy=True) if dtype else _copy(data),
                  requires_grad=requires_grad)


def _copy(data):
    return data.copy() if isinstance(data, xp.ndarray) else data


def zeros(*size, dtype=None, requires_grad=False):
    return Tensor(xp.zeros(_shape(size), dtype=_float(dtype)), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return Tensor(xp.ones(_shape(size), dtype=_float(dtype)), requires_grad=requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return Tensor(xp.empty(_shape(size), dtype=_float(dtype)), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        dtype = xp.asarray(fill_value).dtype if isinstance(fill_value, (bool, int)) else _float(None)
    return Tensor(xp.full(tuple(size), fill_value, dtype=dtype), requires_grad=requires_grad)


def zeros_like(x, dtype=None, requires_grad=False):
    return Tensor(xp.zeros(x.shape, dtype=dtype or x.dtype), requires_grad=requires_grad)


def ones_like(x, dtype=None, requires_grad=False):
    return Tensor(xp.ones(x.shape, dtype=dtype or x.dtype), requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, requires_grad=False):
    return Tensor(xp.full(x.shape, fill_value, dtype=dtype or x.dtype), requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    """Uniform on [0, 1)."""
    data = generator().random(_shape(size)).astype(_float(dtype))
    return Tensor(data, requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    """Standard normal."""
    data = generator().standard_normal(_shape(size)).astype(_float(dtype))
    return Tensor(data, requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=None):
    """Integers in [low, high) (or [0, low) when high is left out)."""
    if high is None:
        low, high = 0, low
    return Tensor(generator().integers(low, high, size=tuple(size)).astype(dtype or backend.int64))


def randperm(n, dtype=None):
    return Tensor(generator().permutation(n).astype(dtype or backend.int64))


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None and all(isinstance(v, int) for v in (start, end, step)):
        dtype = backend.int64
    return Tensor(xp.arange(start, end, step, dtype=_float(dtype)), requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    return Tensor(xp.linspace(start, end, steps, dtype=_float(dtype)), requires_grad=requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    return Tensor(xp.eye(n, m, dtype=_float(dtype)), requires_grad=requires_grad)
