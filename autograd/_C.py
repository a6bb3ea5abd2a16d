"""PyTorch's ``torch._C``, for the few of its names that programs use directly: those of the
``__torch_function__`` protocol (``__torch_function__ = torch._C._disabled_torch_function_impl`` in a class
of tensors that does not take part in calls, ``with torch._C.DisableTorchFunctionSubclass():``)."""

from .overrides import DisableTorchFunction, DisableTorchFunctionSubclass, _disabled_torch_function_impl
from .overrides import has_torch_function as _has_torch_function
from .overrides import has_torch_function_unary as _has_torch_function_unary
from .overrides import has_torch_function_variadic as _has_torch_function_variadic
from .overrides import is_torch_function_enabled as _is_torch_function_enabled

__all__ = ["DisableTorchFunction", "DisableTorchFunctionSubclass", "_disabled_torch_function_impl",
           "_has_torch_function", "_has_torch_function_unary", "_has_torch_function_variadic",
           "_is_torch_function_enabled"]
