"""What a tensor and its dtype are (``is_floating_point`` and the other kind predicates are in
ops/predicates.py): its memory layout as PyTorch reports it (``stride``, ``storage_offset``, ``data_ptr``,
``dim_order``, ``untyped_storage``), ``element_size``, ``nelement``,
``finfo``/``iinfo`` (the limits of a dtype), ``type_as``, and ``format(x, spec)``."""

import builtins
import warnings

import numpy

from . import backend
from .backend import address, bfloat16, memory_owner
from .constants import memory_format
from .dtype_objects import torch_dtype
from .graph import program_stacklevel
from .meta import MetaArray
from .ops import bind_tensor_methods
from .ops.axes import dim_index
from .ops.names import names
from .tensor import Tensor

# -- memory layout, as PyTorch reports it (in elements, where NumPy counts bytes) ---------------


@names("stride", function=False)
def stride(self, dim=None):
    """The step in elements between neighbours along each dim (or along ``dim``), NumPy's. A dim of size 1
    never moves the address, so its step is whatever made it: NumPy's is PyTorch's for the view ops
    (``t()`` of a (1, 4) tensor steps (1, 4)) and fresh arrays, but a dim that indexing with None added steps 0
    there, where PyTorch's unsqueeze steps over the dim after it (size · step, 1 for a last dim). An empty
    tensor (and a meta tensor: it has one zero) reports row-major steps, as PyTorch's contiguous ones."""
    array = self._data
    if array.size == 0 or type(array) is MetaArray:
        strides, step = [], 1
        for n in reversed(array.shape):
            strides.append(step)
            step *= builtins.max(n, 1)
        strides.reverse()
    else:
        strides = [step // array.itemsize for step in array.strides]
        if 0 in strides:
            shape, after = array.shape, 1
            for d in range(array.ndim - 1, -1, -1):
                if strides[d] == 0 and shape[d] == 1:
                    strides[d] = after
                after = shape[d] * strides[d]
    strides = tuple(strides)
    return strides if dim is None else strides[dim_index(dim, array.ndim)]


@names("storage_offset", function=False)
def storage_offset(self):
    """Where this tensor's first element lies in the memory it shares, in elements."""
    return (data_ptr(self) - address(memory_owner(self._data))) // self._data.itemsize


class UntypedStorage:
    """The memory a tensor shares with its views, as PyTorch's ``x.untyped_storage()`` shows it: where it
    starts (``data_ptr()``), its size in bytes (``nbytes()``, ``size()``, ``len``) and its bytes (``s[i]``,
    ``s[i] = b``, ``s[a:b]`` the storage of those bytes, ``tolist()``). Two tensors share memory when their
    storages start at one address, which is how programs test it."""

    def __init__(self, memory):
        self._memory = memory

    def data_ptr(self):
        return address(self._memory)

    def nbytes(self):
        return self._memory.nbytes

    def element_size(self):
        return 1

    def size(self):
        return self.nbytes() // self.element_size()

    def __len__(self):
        return self.size()

    def _elements(self):
        """The memory as one row of this storage's elements (bytes here), written through."""
        if not (self._memory.flags.c_contiguous or self._memory.flags.f_contiguous):
            raise RuntimeError(f"this storage's memory of {self._memory.nbytes} bytes is not one block: read it "
                               "through a tensor instead")
        return self._memory.reshape(-1, order="A").view(numpy.uint8)

    def _position(self, index):
        size = self.size()
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for storage of size {size}")
        return index % size

    def __getitem__(self, index):
        if isinstance(index, slice):  # the storage of those bytes (the same memory)
            return UntypedStorage(self._elements()[index])
        return self._elements()[self._position(index)].item()

    def __setitem__(self, index, value):
        elements = self._elements()
        elements[index if isinstance(index, slice) else self._position(index)] = value

    def __iter__(self):
        return iter(self.tolist())

    def tolist(self):
        return self._elements().tolist()

    def __repr__(self):
        return f"<storage of {self.size()} elements of {self.element_size()} bytes at {self.data_ptr():#x}>"


class TypedStorage(UntypedStorage):
    """PyTorch's older ``x.storage()``: the same memory counted in elements of x's dtype (``s[i]`` an element,
    ``s[i] = v`` a write that x and its views see)."""

    def __init__(self, memory, dtype):
        super().__init__(memory)
        self.dtype = torch_dtype(numpy.dtype(dtype))

    def element_size(self):
        return self.dtype.itemsize

    def _elements(self):
        return super()._elements()[: self.size() * self.dtype.itemsize].view(self.dtype)

    def __getitem__(self, index):
        if isinstance(index, slice):
            raise RuntimeError("slices are only supported in UntypedStorage.__getitem__")
        return super().__getitem__(index)

    def __repr__(self):
        values = "".join(f" {value}\n" for value in self.tolist())
        return f"{values}[TypedStorage(dtype={self.dtype}, device=cpu) of size {self.size()}]"


@names("untyped_storage", function=False)
def untyped_storage(self):
    return UntypedStorage(memory_owner(self._data))


@names("storage", function=False)
def storage(self):
    warnings.warn("TypedStorage is deprecated. It will be removed in the future and UntypedStorage will be the only "
                  "storage class. This should only matter to you if you are using storages directly.  To access "
                  "UntypedStorage directly, use tensor.untyped_storage() instead of tensor.storage()", UserWarning,
                  stacklevel=program_stacklevel())
    return TypedStorage(memory_owner(self._data), self._data.dtype)


@names("to_dense", function=False)
def to_dense(self, dtype=None, *, masked_grad=None):
    """A dense tensor is its own dense form (PyTorch returns self; with a dtype, a cast)."""
    return self if dtype is None else self.to(dtype)


@names("sparse_dim", function=False)
def sparse_dim(self):
    """A dense tensor has no sparse dims (PyTorch's answer for a strided tensor)."""
    return 0


@names("dense_dim", function=False)
def dense_dim(self):
    """Every dim of a dense tensor is dense."""
    return self.ndim


@names("_is_view", function=False)
def _is_view(self):
    """Whether this tensor is a view of another (its ``_base``): PyTorch's private test, which its own test
    suite and some libraries read."""
    return self._base is not None


@names("data_ptr", "const_data_ptr", function=False)  # (const: PyTorch's name for a pointer not written through)
def data_ptr(self):
    """The address of this tensor's first element."""
    return address(self._data)


@names("is_set_to", function=False)
def is_set_to(self, tensor):
    """Whether both tensors show the same elements of one memory: the same first element, sizes and strides."""
    return (memory_owner(self._data) is memory_owner(tensor._data) and data_ptr(self) == data_ptr(tensor)
            and self._data.shape == tensor._data.shape and self._data.strides == tensor._data.strides)


def _dense_along(shape, strides, dims):
    """Whether the dims, innermost first, step through memory densely (dims of size 1 skipped)."""
    step = 1
    for d in dims:
        if shape[d] != 1:
            if strides[d] != step:
                return False
            step *= shape[d]
    return True


def _stride_order(shape, strides, a, b):
    """-1 where dim a lies outside dim b in memory, 1 where inside, 0 where the strides cannot tell
    (a zero stride, or equal strides over sizes that do not break the tie), as PyTorch compares them."""
    def at_least(x, y):
        return y == 0 or (x != 0 and (x >= y or x % y == 0))

    if strides[a] == 0 or strides[b] == 0:
        return 0
    if strides[a] == strides[b]:
        return 0 if at_least(shape[b], shape[a]) else 1
    if at_least(strides[b], strides[a]):
        return -1
    return 1 if at_least(strides[a], strides[b]) else 0


@names("dim_order", function=False)
def dim_order(self, *, ambiguity_check=False):
    """The dims from outermost to innermost in memory: (0, 1, ..., n-1) for a contiguous tensor,
    (0, 2, 3, 1) for channels_last, otherwise an insertion sort by stride (PyTorch's, ties kept).

    The order is ambiguous where a dim has size 1 or two neighbouring dims have equal strides.
    ``ambiguity_check=True`` refuses such a tensor (RuntimeError); a list of memory formats refuses
    it unless exactly one of them describes its layout, as PyTorch's."""
    if not isinstance(ambiguity_check, bool) and not (
            isinstance(ambiguity_check, list) and all(isinstance(f, memory_format) for f in ambiguity_check)):
        raise TypeError("The ambiguity_check argument must be a bool or a list of memory formats.")
    shape, strides, ndim = self.shape, stride(self), self.ndim
    check = ambiguity_check is not False
    if check:
        formats = ambiguity_check if isinstance(ambiguity_check, list) else []
        ambiguous = 1 in shape or any(a == b for a, b in zip(strides, strides[1:]))
        if ambiguous and builtins.sum(1 for f in formats if self.is_contiguous(memory_format=f)) != 1:
            raise RuntimeError("The tensor does not have unique dim order, or cannot map to exact one of the given "
                               "memory formats.")
    if ndim < 2:
        return tuple(range(ndim))
    contiguous = self.numel() < 2 or _dense_along(shape, strides, reversed(range(ndim)))
    last = ndim == 4 and _dense_along(shape, strides, (1, 3, 2, 0))
    if contiguous != last:
        return tuple(range(ndim)) if contiguous else (0, *range(2, ndim), 1)
    order = list(reversed(range(ndim)))  # innermost first while sorting
    for i in range(1, ndim):
        moving = i
        for j in reversed(range(i)):
            comparison = _stride_order(shape, strides, order[j], order[moving])
            if comparison < 0:
                break
            if comparison > 0:
                order[j], order[moving] = order[moving], order[j]
                moving = j
    if check and any(_stride_order(shape, strides, order[i], order[i + 1]) != -1 for i in range(ndim - 1)):
        raise RuntimeError("The tensor does not have unique dim order.")
    return tuple(reversed(order))


@names("ndimension", function=False)
def ndimension(self):
    return self.ndim


@names("element_size", function=False)
def element_size(self):
    """Bytes per element."""
    return self.dtype.itemsize


@names("nelement", function=False)
def nelement(self):
    return self.numel()


@names("type_as", function=False)
def type_as(self, other):
    """self cast to other's dtype (recorded, so gradients flow through the cast)."""
    return self if self.dtype == other.dtype else self.to(other.dtype)


@names("__format__", function=False)
def format_tensor(self, format_spec):
    """PyTorch's rule: a plain 0-d tensor off the meta device formats as its number (f"{loss:.4f}"); any other
    tensor, a subclass's (nn.Parameter's) or a meta one included, takes only the empty spec, which gives its str."""
    if self.ndim == 0 and type(self) is Tensor and not self.is_meta:
        return self.item().__format__(format_spec)
    return object.__format__(self, format_spec)


def _dtype(dtype):
    return backend.get_default_dtype() if dtype is None else numpy.dtype(dtype)


class finfo:
    """Limits of a floating dtype (the default dtype when left out): ``eps`` (the gap from 1 to
    the next number), ``max``, ``min``, ``tiny`` (= ``smallest_normal``), ``resolution``, ``bits``.
    A complex dtype has the limits of its parts (complex64's are float32's, as PyTorch's and NumPy's)."""

    def __init__(self, type=None):
        if type is bfloat16:  # (its limits are known though NumPy has no such type: float32's range, 8-bit mantissa)
            self.dtype, self.bits, self.eps, self.resolution = "bfloat16", 16, 2.0**-7, 0.01
            self.max, self.min = float.fromhex("0x1.fep127"), -float.fromhex("0x1.fep127")
            self.tiny = self.smallest_normal = 2.0**-126
            return
        dtype = _dtype(type)
        if dtype.kind == "c":
            dtype = numpy.dtype(f"float{dtype.itemsize * 4}")
        if dtype.kind != "f":
            raise TypeError("autograd.finfo() requires a floating point input type. Use autograd.iinfo to "
                            f"handle '{dtype}'")
        info = numpy.finfo(dtype)
        self.dtype = str(dtype)
        self.bits = int(info.bits)
        self.eps = float(info.eps)
        self.max = float(info.max)
        self.min = float(info.min)
        self.tiny = self.smallest_normal = float(info.smallest_normal)
        self.resolution = 10.0 ** -int(info.precision)  # exactly 10^-digits, as PyTorch gives it

    def __eq__(self, other):  # (one dtype's limits equal another's that has the same: complex64's and float32's)
        return isinstance(other, finfo) and vars(self) == vars(other)

    __hash__ = None  # (unhashable, as PyTorch's)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """Limits of an integer dtype: ``max``, ``min``, ``bits``."""

    def __init__(self, type):
        dtype = numpy.dtype(type)
        if dtype.kind == "b":
            raise TypeError("bool is not supported by autograd.iinfo")
        if dtype.kind not in "iu":
            raise TypeError("autograd.iinfo() requires an integer input type. Use autograd.finfo to handle "
                            f"'{dtype}'")
        info = numpy.iinfo(dtype)
        self.dtype = str(dtype)
        self.bits = int(info.bits)
        self.max = int(info.max)
        self.min = int(info.min)

    def __eq__(self, other):
        return isinstance(other, iinfo) and vars(self) == vars(other)

    __hash__ = None

    def __repr__(self):
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"


# autograd.ops bound the ops' methods before this module was imported: bind these too
bind_tensor_methods()
