"""``autograd.autograd.graph``, part of PyTorch's ``torch.autograd.graph``: hooks on the tensors
that nodes save for backward, ``Node`` (what every ``grad_fn`` is), ``increment_version``, and
``GradientEdge`` (a place in the graph where a gradient arrives, which ``autograd.autograd.grad``
takes in place of a tensor).

``saved_tensors_hooks(pack_hook, unpack_hook)``: within the block, every tensor a recorded op
saves goes through ``pack_hook`` and the node keeps what it returns; backward gets the tensor
back from ``unpack_hook`` (see ``autograd.graph``, which owns the rule). ``save_on_cpu`` is its
best-known use: keep the saved tensors in CPU memory and bring them back to their device for
backward.
"""

import abc
import weakref
from typing import NamedTuple

from ..backend import to_numpy, xp
from ..engine import current_backward_pass, watch_passes
from ..function import BackwardFunction, _OutputSlot
from ..graph import bump_version
from ..hooks import RemovableHandle
from ..primitive import AccumulateGrad, Primitive
from ..saved_tensor_hooks import allow_mutation_on_saved_tensors, disable_saved_tensors_hooks, saved_tensors_hooks
from ..tensor import Tensor

__all__ = ["GradientEdge", "Node", "allow_mutation_on_saved_tensors", "disable_saved_tensors_hooks",
           "get_gradient_edge", "increment_version", "register_multi_grad_hook", "save_on_cpu", "saved_tensors_hooks"]


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


class GradientEdge(NamedTuple):
    """Where the gradient of a tensor arrives in the graph: output ``output_nr`` of ``node`` (the
    tensor's grad_fn, or the ``AccumulateGrad`` of a leaf), as PyTorch's. ``autograd.autograd.grad``
    takes one in place of the tensor, as an input (the gradient reaching that point) or an output
    (where the backward pass starts), and it stays valid after the tensor itself is changed in place
    (which gives the tensor a new grad_fn). ``ownership_token``: what ``get_gradient_edge`` keeps
    of the tensor (its shape and dtype), which an output edge needs."""

    node: Node
    output_nr: int
    ownership_token: object = None


class _EdgeToken(NamedTuple):
    """The shape and dtype of the tensor an edge was taken from (the gradient there has them)."""

    shape: tuple
    dtype: object


def get_gradient_edge(tensor):
    """The ``GradientEdge`` at which ``tensor``'s gradient is computed: ``autograd.grad(loss, x)`` and
    ``autograd.grad(loss, get_gradient_edge(x))`` give the same result."""
    if not tensor.requires_grad:
        raise RuntimeError("It is not possible to get the gradient edge for a Tensor that does not require "
                           "gradients")
    node = tensor.grad_fn if tensor.grad_fn is not None else AccumulateGrad.of(tensor)
    output_nr = node.index if isinstance(node, _OutputSlot) else 0
    return GradientEdge(node, output_nr, _EdgeToken(tuple(tensor.shape), tensor.dtype))


def edge_as_tensor(edge, role):
    """A tensor standing where ``edge`` is (``role``: 'input' or 'output' of the backward pass): the
    leaf itself, or a stand-in whose grad_fn is the edge's node, so the engine starts or stops there."""
    node = edge.node
    if isinstance(node, AccumulateGrad):
        return node.variable
    token = edge.ownership_token
    if not isinstance(token, _EdgeToken):
        if role == "output":
            raise ValueError("a GradientEdge used as an output must come from get_gradient_edge (its shape "
                             "and dtype are needed to check the gradient given for it)")
        token = _EdgeToken((), None)
    stand_in = Tensor._make(xp.broadcast_to(xp.zeros((), dtype=token.dtype or "float32"), token.shape))
    stand_in.requires_grad = True
    stand_in.grad_fn = node
    return stand_in


class _MultiHandle(RemovableHandle):
    """The handle of a multi-grad hook (a RemovableHandle, as PyTorch's): ``remove()`` removes the hook
    from every tensor."""

    def __init__(self, handles):
        super().__init__({})
        self.handles = tuple(handles)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def register_multi_grad_hook(tensors, fn, *, mode="all"):
    """One hook on several tensors, as PyTorch's. ``mode="all"``: once per backward pass, after the
    gradient of every tensor the pass reaches has been computed, ``fn(grads)`` with one entry per tensor
    (None for a tensor the pass does not reach: not in its graph, or not on the way to the ``inputs``
    asked for). ``mode="any"``: once per pass, ``fn(grad)`` with the first of their gradients computed.
    Returns a handle whose ``remove()`` removes it. ``fn`` should not change what it is given."""
    if mode not in ("all", "any"):
        raise ValueError(f"Expects mode to be one of ('all', 'any') but got {mode}")
    tensors = tuple(tensors)
    watch_passes()
    if mode == "any":
        done = weakref.WeakKeyDictionary()  # the passes in which fn has run

        def first(grad):
            run = current_backward_pass()
            if run in done:
                return
            done[run] = True
            fn(grad)

        return _MultiHandle(x.register_hook(first) for x in tensors if x.requires_grad)

    nodes = [x.grad_fn if x.grad_fn is not None else x for x in tensors]
    waiting = weakref.WeakKeyDictionary()  # pass -> [gradients still to come, the gradients so far]

    def collector(i):
        def collect(grad):
            run = current_backward_pass()
            if run not in waiting:
                waiting[run] = [sum(run.will_run(node) for node in nodes), [None] * len(tensors)]
            entry = waiting[run]
            entry[1][i] = grad
            entry[0] -= 1
            if entry[0] == 0:
                del waiting[run]
                fn(entry[1])

        return collect

    return _MultiHandle(x.register_hook(collector(i)) for i, x in enumerate(tensors))


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
