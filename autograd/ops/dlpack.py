"""DLPack: handing a tensor's memory to another array library, and taking one from it, without
copying (PyTorch's ``torch.from_dlpack`` / ``torch.to_dlpack``, and the ``__dlpack__`` protocol
that NumPy, PyTorch, CuPy and JAX share).

- ``autograd.from_dlpack(obj)``: a tensor on obj's memory, for any obj with ``__dlpack__``
  (a torch tensor, a NumPy array) or a capsule from ``to_dlpack``. Writes show on both sides
  (and, as writes to ``x.numpy()``, the graph does not see them).
- ``x.__dlpack__()`` / ``x.__dlpack_device__()``: x's array's own, so ``torch.from_dlpack(x)`` and
  ``numpy.from_dlpack(x)`` see x's memory. As PyTorch's, a tensor that requires grad refuses
  (the other library would not record what it does with it): pass ``x.detach()``.
- ``autograd.to_dlpack(x)``: the legacy capsule, to be consumed once by a ``from_dlpack``.
"""

from ..backend import xp
from ..tensor import Tensor
from .names import names

_CPU = (1, 0)  # DLPack's (kDLCPU, device 0)


@names("__dlpack__", function=False)
def dlpack(self, *, stream=None, max_version=None, dl_device=None, copy=None):
    """A DLPack capsule of this tensor's memory (the array library's own)."""
    if self.requires_grad:
        raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
    return self._data.__dlpack__(stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)


@names("__dlpack_device__", function=False)
def dlpack_device(self):
    """(device type, device index) in DLPack's numbering: (1, 0) for the CPU."""
    return self._data.__dlpack_device__()


class _Capsule:
    """A bare capsule (what ``to_dlpack`` gives) dressed in the protocol ``from_dlpack`` reads."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return _CPU


@names("from_dlpack", method=False)
def from_dlpack(ext_tensor):
    """A tensor sharing the memory of ``ext_tensor`` (an object with ``__dlpack__``, or a capsule)."""
    if not hasattr(ext_tensor, "__dlpack__"):
        if type(ext_tensor).__name__ != "PyCapsule":
            raise TypeError(f"from_dlpack expects an object with __dlpack__ or a DLPack capsule, got "
                            f"{type(ext_tensor).__name__}")
        ext_tensor = _Capsule(ext_tensor)
    return Tensor._make(xp.from_dlpack(ext_tensor))


@names("to_dlpack", method=False)
def to_dlpack(tensor):
    """A DLPack capsule of ``tensor``'s memory (the legacy interface: ``from_dlpack(tensor)`` is the
    idiomatic one)."""
    return tensor._data.__dlpack__()
