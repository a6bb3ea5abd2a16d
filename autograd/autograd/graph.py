"""``autograd.autograd.graph``, part of PyTorch's ``torch.autograd.graph``: ``save_on_cpu``.

PyTorch's ``saved_tensors_hooks(pack_hook, unpack_hook)`` (the general form, where every
tensor a node saves passes through the hooks) needs the engine to call them where nodes
save and read their tensors; it is not here yet. ``save_on_cpu`` is its best-known use:
keep the saved tensors in CPU memory and bring them back to the device for backward.
"""

from ..device import served


class save_on_cpu:
    """Within the block, tensors saved for backward are kept in CPU memory (``pin_memory`` would
    pin it). With the NumPy array module every tensor already lives in CPU memory, so there is
    nothing to move and the block changes nothing; with another array module (CuPy) it is
    refused, as the engine cannot yet move saved tensors."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        self.pin_memory, self.device_type = pin_memory, device_type

    def __enter__(self):
        if served().type != "cpu":
            raise NotImplementedError(f"save_on_cpu on a {served().type} array module: moving the tensors saved "
                                      "for backward needs saved-tensor hooks in the engine, which it has not")
        return self

    def __exit__(self, *exc_info):
        return False
