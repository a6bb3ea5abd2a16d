"""How a tensor crosses a process boundary: by its shared memory, never by a copy of its values.

``multiprocessing`` pickles what one process hands another (a spawned process's arguments, what
goes through a ``Queue``) with its ``ForkingPickler``, which looks up a reducer by the object's
exact class. Registered here for ``Tensor`` and each of its subclasses, the reducer moves the
tensor into shared memory (``share_memory_``, as PyTorch's does; nothing moves when it is there
already) and sends the segment's file descriptor, duplicated into the receiver, with where the
tensor lies in it. The receiver maps the same memory: a write on either side shows on the other.

A tensor computed in a graph that requires grad is refused, as PyTorch refuses it: the graph
cannot cross. Its ``.grad`` does not go either. As with PyTorch's 'file_descriptor' strategy, a
process hands its descriptor over itself (multiprocessing's resource sharer), so it must still be
running when the receiver takes the tensor from the queue.
"""

from multiprocessing.reduction import DupFd, ForkingPickler

from ..shared_memory import Segment, segment_of
from ..tensor import SUBCLASS_WATCHERS, Tensor

# what the receiver rebuilds from its own values, not the sender's (gradients, hooks, view bookkeeping)
LEFT_BEHIND = frozenset(("_grad", "_hooks", "_post_hooks", "_accumulate_post_hooks", "_accumulate_pre_hooks",
                         "_base", "_view_chain", "_views"))


def reduce_tensor(tensor):
    if tensor.requires_grad and tensor.grad_fn is not None:
        raise RuntimeError(
            "Cowardly refusing to serialize non-leaf tensor which requires_grad, since autograd does not support "
            f"crossing process boundaries (a tensor of shape {tuple(tensor.shape)} made by "
            f"{tensor.grad_fn.name()}). If you just want to transfer the data, call detach() on the tensor "
            "before serializing (e.g., putting it on the queue).")
    tensor.share_memory_()
    segment, offset = segment_of(tensor._data)
    array = tensor._data
    attributes = {name: value for name, value in (getattr(tensor, "__dict__", None) or {}).items()
                  if name not in LEFT_BEHIND}
    return rebuild_tensor, (type(tensor), DupFd(segment.fd), len(segment), offset, array.shape, array.strides,
                            array.dtype.str, tensor.requires_grad, attributes)


def rebuild_tensor(cls, descriptor, nbytes, offset, shape, strides, dtype, requires_grad, attributes):
    """The tensor of class ``cls`` on the sender's memory, mapped again in this process."""
    segment = Segment.attach(descriptor.detach(), nbytes)
    tensor = cls.__new__(cls)
    tensor.__dict__.update(attributes)
    tensor._data = segment.array(shape, dtype, offset, strides)
    tensor.grad_fn = None
    tensor._version_cell = [0, 0, 0]
    tensor._shared = False
    tensor._requires_grad = requires_grad
    return tensor


def register(cls):
    """Send tensors of ``cls`` (and of its subclasses, now and later) by their shared memory."""
    ForkingPickler.register(cls, reduce_tensor)
    for subclass in cls.__subclasses__():
        register(subclass)


def init_reductions():
    register(Tensor)
    if register not in SUBCLASS_WATCHERS:
        SUBCLASS_WATCHERS.append(register)
