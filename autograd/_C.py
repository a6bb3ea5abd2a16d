"""PyTorch's ``torch._C``, for the few of its names that programs use directly: those of the
``__torch_function__`` protocol (``__torch_function__ = torch._C._disabled_torch_function_impl`` in a class
of tensors that does not take part in calls, ``with torch._C.DisableTorchFunctionSubclass():``) and of its
modes' stack (``torch._C._len_torch_function_stack()``)."""

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
from .overrides import has_torch_function as _has_torch_function
from .overrides import has_torch_function_unary as _has_torch_function_unary
from .overrides import has_torch_function_variadic as _has_torch_function_variadic
from .overrides import is_torch_function_enabled as _is_torch_function_enabled

__all__ = ["DisableTorchFunction", "DisableTorchFunctionSubclass", "_EnableTorchFunction",
           "_disabled_torch_function_impl", "_get_function_stack_at", "_has_torch_function",
           "_has_torch_function_unary", "_has_torch_function_variadic", "_is_torch_function_all_disabled",
           "_is_torch_function_enabled", "_is_torch_function_mode_enabled", "_len_torch_function_stack",
           "_pop_torch_function_stack", "_push_on_torch_function_stack"]
