"""DLPack: handing a tensor's memory to another array library, and taking one from it, without
copying (PyTorch's ``torch.from_dlpack`` / ``torch.to_dlpack``, and the ``__dlpack__`` protocol
that NumPy, PyTorch, CuPy and JAX share).

- ``autograd.from_dlpack(obj, *, device=None, copy=None)``: a tensor on obj's memory, for any obj with
  ``__dlpack__`` (a torch tensor, a NumPy array) or a capsule from ``to_dlpack``. Writes show on both sides
  (and, as writes to ``x.numpy()``, the graph does not see them); ``copy=True`` gives a copy instead.
- ``x.__dlpack__()`` / ``x.__dlpack_device__()``: x's array's own, so ``torch.from_dlpack(x)`` and
  ``numpy.from_dlpack(x)`` see x's memory. As PyTorch's, a tensor that requires grad refuses
  (the other library would not record what it does with it): pass ``x.detach()``.
- ``autograd.to_dlpack(x)``: the legacy capsule, to be consumed once by a ``from_dlpack``.
"""

import enum

from ..backend import xp
from ..device import resolve
from ..tensor import Tensor
from .names import names


class DLDeviceType(enum.IntEnum):
    """DLPack's device numbering (dlpack.h's ``DLDeviceType``), as ``torch.utils.dlpack.DLDeviceType``."""

    kDLCPU = 1
    kDLCUDA = 2
    kDLCUDAHost = 3
    kDLOpenCL = 4
    kDLVulkan = 7
    kDLMetal = 8
    kDLVPI = 9
    kDLROCM = 10
    kDLROCMHost = 11
    kDLExtDev = 12
    kDLCUDAManaged = 13
    kDLOneAPI = 14
    kDLWebGPU = 15
    kDLHexagon = 16
    kDLMAIA = 17


@names("__dlpack__", function=False)
def dlpack(self, *, stream=None, max_version=None, dl_device=None, copy=None):
    """A DLPack capsule of this tensor's memory (the array library's own): versioned (``"dltensor_versioned"``)
    where the consumer's ``max_version`` is 1.0 or newer, the legacy ``"dltensor"`` otherwise."""
    if stream is not None and type(stream) is not int:
        raise TypeError("stream must be ``int`` or ``none``")
    if stream is not None:  # (a stream orders work on an accelerator; a CPU's memory is ready when it is handed)
        raise AssertionError("stream should be None on cpu.")
    if self.requires_grad:
        raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
    if dl_device is not None and dl_device[0] != DLDeviceType.kDLCPU:
        raise BufferError(f"Unsupported device_type: {int(dl_device[0])}")
    return self._data.__dlpack__(max_version=max_version, copy=copy)


@names("__dlpack_device__", function=False)
def dlpack_device(self):
    """(device type, device index) in DLPack's numbering: (DLDeviceType.kDLCPU, 0) for the CPU."""
    return DLDeviceType.kDLCPU, 0


class _Capsule:
    """A bare capsule (what ``to_dlpack`` gives) dressed in the protocol ``from_dlpack`` reads."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return DLDeviceType.kDLCPU, 0


class _WritableAlias:
    """An array interface on a read-only array's memory that says it may be written. NumPy marks what it reads
    from a legacy capsule read-only (the capsule carries no flag saying otherwise); PyTorch's tensor on the same
    memory takes writes, which show on both sides. The alias keeps the array, and so the memory, alive."""

    def __init__(self, array):
        self.array = array
        self.__array_interface__ = dict(array.__array_interface__, data=(array.ctypes.data, False))


@names("from_dlpack", method=False)
def from_dlpack(ext_tensor, *, device=None, copy=None):
    """A tensor sharing the memory of ``ext_tensor`` (an object with ``__dlpack__``, or a capsule);
    a copy where ``copy=True``. ``device`` may only name the CPU, where the memory already is."""
    resolve(device)
    if not hasattr(ext_tensor, "__dlpack__"):
        if type(ext_tensor).__name__ != "PyCapsule":
            raise TypeError(f"from_dlpack expects an object with __dlpack__ or a DLPack capsule, got "
                            f"{type(ext_tensor).__name__}")
        ext_tensor = _Capsule(ext_tensor)
    array = xp.from_dlpack(ext_tensor)
    if copy:
        array = array.copy()
    elif not array.flags.writeable:
        array = xp.asarray(_WritableAlias(array))
    return Tensor._make(array)


@names("to_dlpack", method=False)
def to_dlpack(tensor):
    """A DLPack capsule of ``tensor``'s memory (the legacy interface: ``from_dlpack(tensor)`` is the
    idiomatic one)."""
    return tensor._data.__dlpack__()
