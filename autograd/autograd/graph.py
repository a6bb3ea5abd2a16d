"""``autograd.autograd.graph``, part of PyTorch's ``torch.autograd.graph``: hooks on the tensors
that nodes save for backward.

``saved_tensors_hooks(pack_hook, unpack_hook)``: within the block, every tensor a recorded op
saves goes through ``pack_hook`` and the node keeps what it returns; backward gets the tensor
back from ``unpack_hook`` (see ``autograd.graph``, which owns the rule). ``save_on_cpu`` is its
best-known use: keep the saved tensors in CPU memory and bring them back to their device for
backward.
"""

from ..graph import disable_saved_tensors_hooks, saved_tensors_hooks

__all__ = ["disable_saved_tensors_hooks", "save_on_cpu", "saved_tensors_hooks"]


class save_on_cpu(saved_tensors_hooks):
    """Within the block, tensors saved for backward are kept in CPU memory (``pin_memory`` would
    pin it) and moved back to their device when backward needs them. With the NumPy array
    module every tensor already lives in CPU memory: each is kept as it is."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        self.pin_memory, self.device_type = pin_memory, device_type

        def pack(tensor):
            return tensor.device, tensor.cpu()

        def unpack(packed):
            device, tensor = packed
            return tensor.to(device)

        super().__init__(pack, unpack)
