"""PyTorch's ``torch._C``, for the few of its names that programs use directly: those of the
``__torch_function__`` protocol (``__torch_function__ = torch._C._disabled_torch_function_impl`` in a class
of tensors that does not take part in calls, ``with torch._C.DisableTorchFunctionSubclass():``)."""

from .overrides import DisableTorchFunction, DisableTorchFunctionSubclass, _disabled_torch_function_impl

__all__ = ["DisableTorchFunction", "DisableTorchFunctionSubclass", "_disabled_torch_function_impl"]
