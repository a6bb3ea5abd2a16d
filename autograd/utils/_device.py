"""``autograd.utils._device``, as ``torch.utils._device``: ``set_device``, the device context as a decorator."""

import functools
import inspect

from ..device import device as _device
from ..graph import each_step_in


def set_device(device):
    """A decorator: the wrapped function runs with ``device`` the factories' default, as inside
    ``with autograd.device(device):`` (a generator function: each step of it, its caller's steps outside)."""
    where = _device(device)

    def decorate(function):
        if inspect.isgeneratorfunction(function):
            return each_step_in(lambda: _device(where.type, where.index), function)

        @functools.wraps(function)
        def run_on_device(*args, **kwargs):
            with _device(where.type, where.index):
                return function(*args, **kwargs)

        return run_on_device

    return decorate
