"""``autograd.autograd.graph``, part of PyTorch's ``torch.autograd.graph``: hooks on the tensors
that nodes save for backward, ``Node`` (what every ``grad_fn`` is) and ``increment_version``.

``saved_tensors_hooks(pack_hook, unpack_hook)``: within the block, every tensor a recorded op
saves goes through ``pack_hook`` and the node keeps what it returns; backward gets the tensor
back from ``unpack_hook`` (see ``autograd.graph``, which owns the rule). ``save_on_cpu`` is its
best-known use: keep the saved tensors in CPU memory and bring them back to their device for
backward.
"""

import abc

from ..backend import to_numpy, xp
from ..function import BackwardFunction, _OutputSlot
from ..graph import bump_version, disable_saved_tensors_hooks, saved_tensors_hooks
from ..primitive import AccumulateGrad, Primitive
from ..tensor import Tensor

__all__ = ["Node", "disable_saved_tensors_hooks", "increment_version", "save_on_cpu", "saved_tensors_hooks"]


class Node(abc.ABC):
    """A node of the graph, as ``torch.autograd.graph.Node``: ``isinstance(y.grad_fn, Node)`` holds for
    every op's node (``Primitive``), a custom Function's (``BackwardFunction``) and each output slot of a
    Function with several outputs. Each has ``name()``, ``next_functions``, ``metadata``,
    ``register_hook`` and ``register_prehook``."""

    @abc.abstractmethod
    def name(self):
        """The node's name, as PyTorch's (MulBackward0)."""


for _node_class in (Primitive, BackwardFunction, _OutputSlot, AccumulateGrad):
    Node.register(_node_class)


def increment_version(tensor):
    """Count a write the engine did not see (one made through NumPy, say), so that a graph that saved
    the tensor refuses to use it, as after any in-place op; a tensor or an iterable of them."""
    for each in ([tensor] if isinstance(tensor, Tensor) else tensor):
        bump_version(each)


class save_on_cpu(saved_tensors_hooks):
    """Within the block, tensors saved for backward are kept in CPU memory (``pin_memory`` would
    pin it) and moved back to their device when backward needs them. With the NumPy array
    module every tensor already lives in CPU memory: each is kept as it is; under CuPy each is
    copied to host memory as a NumPy array and back to the GPU for backward."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        self.pin_memory, self.device_type = pin_memory, device_type

        def pack(tensor):
            if tensor.device.type == "cpu":
                return tensor  # already in CPU memory
            return to_numpy(tensor._data)  # a GPU tensor (CuPy): a copy in host memory

        def unpack(packed):
            return packed if isinstance(packed, Tensor) else Tensor._make(xp.asarray(packed))

        super().__init__(pack, unpack)
