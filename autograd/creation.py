"""Tensors from existing data, PyTorch's way: ``from_numpy`` and ``as_tensor`` share memory
where they can (``tensor`` always copies), and ``x.new_zeros(...)`` and friends make a new
tensor with x's dtype."""

import builtins
import warnings

import numpy

from .backend import get_default_dtype, xp
from .device import resolve
from .factories import _shape, as_tensor, copied_data, device_of, empty, full, ones, tensor, zeros
from .graph import modes, program_stacklevel
from .ops import bind_tensor_methods
from .ops.names import names
from .reading_data import read_array, shareable
from .tensor import Tensor
from .warn_once import warn_once


@names("from_numpy", method=False)
def from_numpy(ndarray):
    """A tensor on the same memory as ``ndarray`` (its dtype kept): a change to one shows in the other."""
    if not isinstance(ndarray, (numpy.ndarray, xp.ndarray)):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    tensor = Tensor._make(shareable(ndarray))
    if modes.inference:  # made in inference_mode: an inference tensor, as a factory's there
        tensor._inference = True
    return tensor


names("as_tensor", method=False)(as_tensor)  # (factories.py's)


def _like(self, dtype):
    return self.dtype if dtype is None else dtype


# x.new_*: a new tensor with x's dtype (``device`` is accepted: it lives where x does)


@names("new_zeros", function=False)
def new_zeros(self, *sizes, size=None, dtype=None, device=None, requires_grad=False):
    return zeros(_shape(sizes, size, "new_zeros"), dtype=_like(self, dtype), device=device_of(self, device),
                 requires_grad=requires_grad)


@names("new_ones", function=False)
def new_ones(self, *sizes, size=None, dtype=None, device=None, requires_grad=False):
    return ones(_shape(sizes, size, "new_ones"), dtype=_like(self, dtype), device=device_of(self, device),
                requires_grad=requires_grad)


@names("new_empty", function=False)
def new_empty(self, *sizes, size=None, dtype=None, device=None, requires_grad=False):
    return empty(_shape(sizes, size, "new_empty"), dtype=_like(self, dtype), device=device_of(self, device),
                 requires_grad=requires_grad)


@names("new_full", function=False)
def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    return full(tuple(size), fill_value, dtype=_like(self, dtype), device=device_of(self, device),
                requires_grad=requires_grad)


@names("new_tensor", function=False)
def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    """A copy of ``data`` with x's dtype (not the default dtype) unless ``dtype`` says otherwise."""
    data = copied_data(data, call="tensor.new_tensor(sourceTensor)")
    return tensor(data, dtype=_like(self, dtype), requires_grad=requires_grad)


@names("asarray", method=False)
def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=None):
    """``obj`` as a tensor, sharing memory with a Tensor, an array or a buffer (bytes read as ``dtype``, the default
    dtype unless given) when it can (``copy=None``),
    always copying (``copy=True``), or raising where it would have to copy (``copy=False``). A tensor
    keeps its graph unless ``requires_grad=False`` (left unsaid, it follows obj's, with PyTorch's warning
    that this default changed)."""
    if isinstance(obj, Tensor):
        return _tensor_as_array(obj, dtype, copy, requires_grad)
    data = obj
    if isinstance(data, (numpy.ndarray, xp.ndarray)):
        data = shareable(data)
        array = data if dtype is None else data.astype(dtype, copy=False)
        if copy:
            array = array.copy()
        elif copy is False and array is not data:
            from .ops.conversion import type_name  # (the ops import this module's users: imported when needed)

            raise ValueError(f"can't alias tensor with dtype '{type_name(data.dtype)}' into dtype "
                             f"'{type_name(numpy.dtype(dtype))}'.")
        result = obj if array is data and isinstance(obj, Tensor) else Tensor._make(array)
    elif _is_buffer(obj):  # bytes, bytearray, array.array, a memoryview: its bytes read as dtype, as frombuffer
        result = frombuffer(obj, dtype=dtype or get_default_dtype())
        if copy:
            result = result.clone()
    else:
        if copy is False and isinstance(obj, numpy.generic):
            raise RuntimeError("can't alias NumPy scalars. Either remove copy=False or transform it in a ndarray. ")
        if copy is False:
            raise ValueError("can't alias arbitrary sequence into a tensor.")
        result = Tensor._make(read_array(obj, dtype, copy=False))  # (tensor()'s reading: a list's NumPy scalars
        # and 0-d tensors give its dtype, as PyTorch's asarray, and an integer past int64 is refused, not uint64)
    return result.requires_grad_() if requires_grad else result


def _is_buffer(obj):
    """Whether asarray reads ``obj`` as PyTorch's does an object with the buffer protocol: its raw bytes (a NumPy
    scalar has the protocol too, but is read as its number)."""
    if isinstance(obj, (numpy.generic, str)):
        return False
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


def _tensor_as_array(obj, dtype, copy, requires_grad):
    """asarray of a tensor: itself (the same object, as PyTorch's), a copy or a cast; its graph kept when it is
    to require grad, a detached alias when it is not."""
    if requires_grad is None:
        if obj.requires_grad:
            warnings.warn("torch.asarray: unspecified requires_grad now defaults to obj.requires_grad instead of "
                          "False. Pass requires_grad=False explicitly to get the old behavior and silence this "
                          "warning.", UserWarning, stacklevel=program_stacklevel())
        requires_grad = obj.requires_grad
    source = obj if requires_grad or not obj.requires_grad else obj.detach()
    if dtype is not None and numpy.dtype(dtype) != obj.dtype:
        if copy is False:
            from .ops.conversion import type_name  # (the ops import this module's users: imported when needed)

            raise ValueError(f"can't alias tensor with dtype '{type_name(obj.dtype)}' into dtype "
                             f"'{type_name(numpy.dtype(dtype))}'.")
        source = source.to(dtype)
    elif copy:
        source = source.clone()
    return source.requires_grad_() if requires_grad and not source.requires_grad else source


@names("frombuffer", method=False)
def frombuffer(buffer, *, dtype, count=-1, offset=0, requires_grad=False):
    """A 1-d tensor on the memory of an object with the buffer protocol (bytes, bytearray,
    array.array): ``count`` elements of ``dtype`` (all by default) from byte ``offset``."""
    try:
        length = memoryview(buffer).nbytes
    except TypeError:
        raise ValueError("object does not implement Python buffer protocol.") from None
    size = numpy.dtype(dtype).itemsize
    if length == 0 or count == 0:
        raise ValueError(f"both buffer length ({length}) and count ({count}) must not be 0")
    if not 0 <= offset < length:
        raise ValueError(f"offset ({offset} bytes) must be non-negative and no greater than buffer length "
                         f"({length} bytes) minus 1")
    if count < 0 and (length - offset) % size:
        raise ValueError(f"buffer length ({length - offset} bytes) after offset ({offset} bytes) must be a multiple "
                         f"of element size ({size})")
    if count > 0 and count * size > length - offset:
        raise ValueError(f"requested buffer length ({count} * {size} bytes) after offset ({offset} bytes) must not "
                         f"be greater than actual buffer length ({length} bytes)")
    array = numpy.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    if not array.flags.writeable:  # (bytes; PyTorch's tensor writes into it, where NumPy's read-only view refuses)
        warn_once("buffer not writable", "The given buffer is not writable, and PyTorch does not support "
                  "non-writable tensors. This means you can write to the underlying (supposedly non-writable) buffer "
                  "using the tensor. You may want to copy the buffer to protect its data or make it writable before "
                  "converting it to a tensor. This type of warning will be suppressed for the rest of this program.")
    return Tensor._make(xp.asarray(array)).requires_grad_(requires_grad)


@names("from_file", method=False)
def from_file(filename, shared=None, size=0, *, dtype=None, layout=None, device=None, requires_grad=False,
              pin_memory=False):
    """A 1-d tensor of ``size`` elements of ``dtype`` (the default dtype) read from the raw bytes of
    a file (``x.numpy().tofile(path)`` writes one). With ``shared=True`` the tensor is the file,
    mapped into memory: a write to one shows in the other, and a missing or shorter file is made
    long enough; otherwise it is a private copy of the file's first bytes."""
    resolve(device)
    dtype = numpy.dtype(dtype or get_default_dtype())
    nbytes = size * dtype.itemsize
    if shared:
        if xp is not numpy:
            raise RuntimeError("from_file(shared=True) maps the file into host memory, which a GPU tensor cannot "
                               "share; use shared=False for a copy")
        with open(filename, "ab") as file:  # (created if missing; appending nothing leaves it as it is)
            if file.tell() < nbytes:
                file.truncate(nbytes)
        array = numpy.memmap(filename, dtype=dtype, mode="r+", shape=(size,)) if size else numpy.empty(0, dtype)
        return Tensor._make(array.view(numpy.ndarray)).requires_grad_(requires_grad)
    try:
        with open(filename, "rb") as file:
            data = file.read(nbytes)
    except OSError as error:
        raise RuntimeError(f"unable to open file <{filename}> in read-only mode: {error.strerror} "
                           f"({error.errno})") from None
    if len(data) < nbytes:
        raise RuntimeError(f"file <{filename}> size <{len(data)}> is smaller than the required mapping size "
                           f"<{nbytes}>")
    array = numpy.frombuffer(data, dtype=dtype).copy()
    return Tensor._make(xp.asarray(array)).requires_grad_(requires_grad)


@names("scalar_tensor", method=False)
def scalar_tensor(s, *, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False):
    """A 0-d tensor holding the number ``s``, of the default dtype unless ``dtype`` says otherwise."""
    return tensor(s, dtype=dtype or get_default_dtype(), requires_grad=requires_grad)


def _strided(size, stride, dtype):
    """An array of shape ``size`` whose neighbours along each dim lie ``stride`` elements apart, on
    a new buffer just long enough (strides of 0 repeat an element, as an expanded tensor's)."""
    from .ops.strided import checked_layout  # (a deferred op module: ops/deferred.py)

    size, stride = checked_layout(size, stride)
    span = 0 if 0 in size else 1 + builtins.sum((n - 1) * s for n, s in zip(size, stride))
    if span * numpy.dtype(dtype).itemsize >= 2**63:
        raise RuntimeError(f"Storage size calculation overflowed with sizes={list(size)} and strides={list(stride)}")
    buffer = xp.zeros(span, dtype=dtype)  # (zeros where PyTorch leaves memory uninitialised)
    return xp.lib.stride_tricks.as_strided(buffer, size, tuple(s * buffer.itemsize for s in stride))


@names("empty_strided", method=False)
def empty_strided(size, stride, *, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False):
    """A new tensor of shape ``size`` laid out with ``stride`` (in elements)."""
    return Tensor._make(_strided(_shape((), size), stride, dtype or get_default_dtype())).requires_grad_(requires_grad)


@names("empty_permuted", method=False)
def empty_permuted(size, physical_layout, *, dtype=None, layout=None, device=None, requires_grad=False,
                   pin_memory=False):
    """A new tensor of shape ``size`` whose dims lie in memory in the order ``physical_layout``
    (outermost first: (0, 2, 3, 1) is NHWC for an NCHW shape); t.stride(physical_layout[i]) is the
    i-th contiguous stride of the permuted shape. Not empty(size).permute(physical_layout)."""
    size, physical_layout = tuple(int(n) for n in size), tuple(int(d) for d in physical_layout)
    if len(size) != len(physical_layout):
        raise RuntimeError(f"Number of dimensions in size does not match the length of the physical_layout; i.e. "
                           f"len(size) = {len(size)} is not equal to len(physical_layout) = {len(physical_layout)}")
    for i, d in enumerate(physical_layout):
        if not 0 <= d < len(size):
            raise RuntimeError(f"Dimension out of range (expected to be between 0 and {len(size) - 1}, but got {d} at "
                               f"index {i}).  NB: negative dims not currently supported; file an issue if you want it.")
    if len(set(physical_layout)) != len(physical_layout):
        raise RuntimeError("Duplicate dim not allowed")
    stored = xp.zeros([size[d] for d in physical_layout], dtype=dtype or get_default_dtype())  # (zeros, as _strided)
    logical = xp.transpose(stored, tuple(physical_layout.index(d) for d in builtins.range(len(size))))
    return Tensor._make(logical).requires_grad_(requires_grad)


@names("new_empty_strided", function=False)
def new_empty_strided(self, size, stride, *, dtype=None, device=None, requires_grad=False):
    """empty_strided with x's dtype."""
    return empty_strided(size, stride, dtype=_like(self, dtype), requires_grad=requires_grad)


# autograd.ops bound the ops' methods before this module was imported: bind these too
bind_tensor_methods()
