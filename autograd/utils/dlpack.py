"""``autograd.utils.dlpack``, as ``torch.utils.dlpack``: tensors to and from other array libraries."""

from ..ops.dlpack import from_dlpack, to_dlpack

__all__ = ["from_dlpack", "to_dlpack"]
