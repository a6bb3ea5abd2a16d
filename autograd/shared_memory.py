"""Tensors whose memory other processes map too: ``x.share_memory_()`` and ``x.is_shared()``.

PyTorch's ``share_memory_`` moves a tensor's storage into shared memory, so that a process
started after it (``autograd.multiprocessing``: forked, which inherits the mapping, or spawned,
which is handed the memory's file descriptor) writes the same numbers the parent reads. That is
how Hogwild training lets several processes update one model in place.

Here a shared tensor's array lies on a ``Segment``: an anonymous file (Linux's ``memfd``, else
an unlinked temporary file) mapped with ``MAP_SHARED``. The descriptor stays open while the
segment lives, for ``multiprocessing``'s pickler to duplicate into a receiving process
(``segment_of`` finds it from any array on it). Nothing here imports ``multiprocessing``: the
reductions that send segments between processes are autograd.multiprocessing's, registered
only when a program imports it, as PyTorch's are.
"""

import ctypes
import mmap
import os
import weakref

import numpy

from . import backend
from .backend import memory_owner


class Segment(mmap.mmap):
    """A shared mapping of an anonymous file, and the file's descriptor (``fd``), closed with it."""

    @classmethod
    def new(cls, nbytes):
        """A zeroed segment of ``nbytes`` (at least one: an empty tensor's segment still maps a page)."""
        nbytes = max(nbytes, 1)
        try:
            fd = os.memfd_create("chainrule-tensor", os.MFD_CLOEXEC)
        except (AttributeError, OSError):  # (macOS, or a sandbox that forbids it: a temporary file, unlinked at
            import tempfile  # once, so nothing outlives the processes; importing it costs more than this module)

            fd, path = tempfile.mkstemp(prefix="chainrule-tensor-")
            os.unlink(path)
        os.ftruncate(fd, nbytes)
        return cls.attach(fd, nbytes)

    @classmethod
    def attach(cls, fd, nbytes):
        """The segment on an open descriptor, which it now owns (a received duplicate, or a new file)."""
        segment = cls(fd, max(nbytes, 1), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        segment.fd = fd
        weakref.finalize(segment, os.close, fd)
        return segment

    def array(self, shape, dtype, offset=0, strides=None):
        """The array of ``shape`` and ``dtype`` on this segment, ``offset`` bytes in."""
        return numpy.ndarray(shape, dtype, self, offset, strides)


def segment_of(array):
    """(the Segment, the byte offset of the array's first element in it), or None where the array's memory
    is not shared."""
    if backend.xp is not numpy or not isinstance(array, numpy.ndarray):
        return None
    owner = memory_owner(array)
    buffer = owner.base.obj if isinstance(owner.base, memoryview) else owner.base
    if not isinstance(buffer, Segment):
        return None
    start = numpy.frombuffer(buffer, numpy.uint8, 1).ctypes.data  # (the mapping's first byte)
    return buffer, array.ctypes.data - start


def is_shared(tensor):
    return segment_of(tensor._data) is not None


def share_memory_(tensor):
    """Move the tensor's values into a new shared segment (nothing to do when they already are there),
    and return the tensor. A view moves its base's whole memory, as PyTorch moves the storage; the
    live views the base knows of (those made with grad mode on: see WriteDoor's ``_views``) move with
    it. Arrays taken from the tensor earlier (``x.numpy()``, an ``x.data`` kept from before) keep the
    old memory."""
    if backend.xp is not numpy:
        raise RuntimeError(f"share_memory_: a tensor on {tensor.device} cannot be moved into shared memory "
                           "between processes here; move it to the CPU first (x.cpu())")
    base = tensor._base if tensor._base is not None else tensor
    if is_shared(base):
        return tensor
    owner = memory_owner(base._data)
    if not (owner.flags.c_contiguous or owner.flags.f_contiguous):  # (memory NumPy does not own: a copy of x)
        owner = base._data = numpy.ascontiguousarray(base._data)
    segment = Segment.new(owner.nbytes)
    start = owner.ctypes.data
    ctypes.memmove(segment.array((owner.nbytes,), numpy.uint8).ctypes.data, start, owner.nbytes)
    holders = [base, *(base._views or ())]
    if not any(holder is tensor for holder in holders):  # (a view made with grad mode off: not among them)
        holders.append(tensor)
    for holder in holders:
        array = holder._data
        if memory_owner(array) is owner:  # the same numbers, at the same place in the segment
            moved = segment.array(array.shape, array.dtype, array.ctypes.data - start, array.strides)
            moved.flags.writeable = array.flags.writeable
            holder._data = moved
    return tensor
