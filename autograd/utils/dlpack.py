"""``autograd.utils.dlpack``, as ``torch.utils.dlpack``: tensors to and from other array libraries."""

from ..ops.dlpack import DLDeviceType, from_dlpack, to_dlpack

__all__ = ["DLDeviceType", "from_dlpack", "to_dlpack"]
