"""PyTorch's ``torch._C``, for the few of its names that programs use directly: those of the
``__torch_function__`` protocol (``__torch_function__ = torch._C._disabled_torch_function_impl`` in a class
of tensors that does not take part in calls, ``with torch._C.DisableTorchFunctionSubclass():``) and of its
modes' stack (``torch._C._len_torch_function_stack()``), and ``torch._C._nn._parse_to``, which a Module's own
``to`` reads its arguments with, as PyTorch's does."""

import types

from .overrides import (
    DisableTorchFunction,
    DisableTorchFunctionSubclass,
    _disabled_torch_function_impl,
    _EnableTorchFunction,
    _get_function_stack_at,
    _is_torch_function_all_disabled,
    _is_torch_function_mode_enabled,
    _len_torch_function_stack,
    _pop_torch_function_stack,
    _push_on_torch_function_stack,
)
from .overrides import handle_torch_function as _handle_torch_function
from .overrides import has_torch_function as _has_torch_function
from .overrides import has_torch_function_unary as _has_torch_function_unary
from .overrides import has_torch_function_variadic as _has_torch_function_variadic
from .overrides import is_torch_function_enabled as _is_torch_function_enabled

__all__ = ["DisableTorchFunction", "DisableTorchFunctionSubclass", "_EnableTorchFunction",
           "_disabled_torch_function_impl", "_get_function_stack_at", "_has_torch_function",
           "_has_torch_function_unary", "_has_torch_function_variadic", "_is_torch_function_all_disabled",
           "_is_torch_function_enabled", "_is_torch_function_mode_enabled", "_len_torch_function_stack",
           "_nn", "_pop_torch_function_stack", "_push_on_torch_function_stack"]


def _parse_to(*args, **kwargs):
    """(device, dtype, non_blocking, memory_format) from ``Tensor.to``'s or ``Module.to``'s arguments (a device, a
    dtype, a tensor to match, non_blocking, as positions or keywords); modes and subclasses are asked, as
    PyTorch's."""
    relevant = args + tuple(kwargs.values())
    if _has_torch_function(relevant):
        return _handle_torch_function(_parse_to, relevant, *args, **kwargs)
    from .device import device
    from .ops.conversion import parse_to

    flags = [arg for arg in args if isinstance(arg, bool)]  # (non_blocking, then copy)
    non_blocking = flags[0] if flags else kwargs.get("non_blocking", False)
    memory_format = kwargs.get("memory_format")
    found_device, dtype, _ = parse_to(args, dict(kwargs))
    if found_device is not None and not isinstance(found_device, device):
        found_device = device(found_device)
    return found_device, dtype, non_blocking, memory_format


_nn = types.SimpleNamespace(_parse_to=_parse_to)  # (torch._C._nn: its one name here)
