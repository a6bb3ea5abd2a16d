"""The small names PyTorch programs reach for: dtype aliases, math constants, ``Size``, layouts and
memory formats, the legacy typed constructors (``FloatTensor``) and the accelerator queries."""

import builtins
import math
import types

import numpy

from . import backend
from .channels_last_layout import ORDERS as channels_last_orders
from .dtype_objects import dtype  # torch.dtype: the type of autograd.float32 and the others
from .factories import tensor
from .size import Size  # noqa: F401  (autograd.Size)
from .tensor import Tensor

float16, float32, float64 = dtype(backend.float16), dtype(backend.float32), dtype(backend.float64)
int8, int16, int32, int64, uint8 = dtype("int8"), dtype("int16"), dtype("int32"), dtype("int64"), dtype("uint8")
# (PyTorch's wider unsigned dtypes: 16-bit images arrive as uint16 from NumPy; PyTorch does little arithmetic
# on them, so programs convert them first, as torchvision's to_dtype does)
uint16, uint32, uint64 = dtype("uint16"), dtype("uint32"), dtype("uint64")
bool_ = dtype(backend.bool_)
half, short, int = float16, int16, int32  # torch.half, torch.short, torch.int
complex64, complex128 = dtype("complex64"), dtype("complex128")
cfloat, cdouble = complex64, complex128  # torch.cfloat, torch.cdouble
inf, nan, pi, e = math.inf, math.nan, math.pi, math.e
newaxis = None  # torch.newaxis, NumPy's: x[:, autograd.newaxis] adds a dim of size 1


class layout:
    """How a tensor's elements lie in memory (torch.layout): a Tensor is ``strided``, a dense array; a sparse
    tensor (``autograd.sparse``) is ``sparse_coo``. The compressed layouts are names only: nothing here
    has them."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


strided = layout("strided")
sparse_coo = layout("sparse_coo")
sparse_csr, sparse_csc = layout("sparse_csr"), layout("sparse_csc")
sparse_bsr, sparse_bsc = layout("sparse_bsr"), layout("sparse_bsc")


class memory_format:  # noqa: N801  (torch.memory_format's name)
    """An order in which to lay a tensor's elements out (torch.memory_format), accepted wherever PyTorch takes
    ``memory_format=``. ``channels_last`` (channels_last_3d) lays a 4-d (5-d) tensor out as N, H, W, C (N, D, H, W,
    C) where ``contiguous``, ``clone`` and ``to`` are asked for it (``order``: the dims from the outermost in memory);
    elsewhere (the ``*_like`` factories) they change no values, and this project picks its own layouts (``stride``)."""

    def __init__(self, name, order=None):
        self.name, self.order = name, order

    def __repr__(self):
        return f"torch.{self.name}"


contiguous_format = memory_format("contiguous_format")
preserve_format = memory_format("preserve_format")
channels_last = memory_format("channels_last", channels_last_orders[4])
channels_last_3d = memory_format("channels_last_3d", channels_last_orders[5])


class tensortype(type):  # noqa: N801  (torch.tensortype's name)
    """The kind of the legacy typed constructors (``FloatTensor``, ``LongTensor``, ...), as PyTorch's:
    calling one makes a tensor of its ``dtype`` from data, or uninitialised (here: zeros) of the given
    sizes; ``isinstance(x, FloatTensor)`` asks whether x is a CPU tensor of that dtype; and
    ``x.type(LongTensor)`` converts to it. ``autograd.cuda.FloatTensor`` and the others are the GPU's: without one
    they make nothing, as PyTorch's refuse, and no tensor is one of them."""

    def __call__(cls, *data, device=None):
        if cls.device_type == "cuda" and backend.xp.__name__ == "numpy":
            raise TypeError(f"type torch.cuda.{cls.__name__} not available. Torch not compiled with CUDA enabled.")
        from .device import legacy_device_checked  # (constants is imported before the devices)

        legacy_device_checked(device, data[0] if len(data) == 1 else None)
        if len(data) == 1 and isinstance(data[0], Size):
            data = tuple(data[0])
        sizes = all(isinstance(n, (builtins.int, numpy.integer)) and not isinstance(n, builtins.bool) for n in data)
        if data and sizes:
            from .factories import _shape  # (constants is imported before the factories; a negative size is refused
            # in PyTorch's words there)

            return tensor(numpy.zeros(_shape(data), dtype=cls.dtype))
        if len(data) == 1 and cls.device_type == "cpu" and getattr(data[0], "dtype", None) == cls.dtype:
            # of its own dtype, an array or a tensor is shared, not copied, as PyTorch's (an environment's observation
            # buffer written in place shows in the tensor): the array as from_numpy, the tensor as an alias of it
            if isinstance(data[0], Tensor):
                return data[0].view_as(data[0])
            if type(data[0]) is numpy.ndarray:
                from .creation import from_numpy  # (constants is imported before the factories)

                return from_numpy(data[0])
        if len(data) == 1 and isinstance(data[0], Tensor):  # a conversion, without tensor()'s copy warning
            data = (data[0]._data,)
        return tensor(data[0] if len(data) == 1 else list(data), dtype=cls.dtype)

    def __instancecheck__(cls, obj):
        from .tensor import Tensor

        return isinstance(obj, Tensor) and obj.dtype == cls.dtype and obj.device.type == cls.device_type

    def __repr__(cls):
        return f"<class 'torch.{'cuda.' if cls.device_type == 'cuda' else ''}{cls.__name__}'>"


def _typed(dtype, name, device_type="cpu"):
    return tensortype(name, (), {"dtype": dtype, "device_type": device_type,
                                 "__doc__": f"The legacy constructor of {dtype.name} tensors ({device_type})."})


FloatTensor = _typed(float32, "FloatTensor")
DoubleTensor = _typed(float64, "DoubleTensor")
HalfTensor = _typed(float16, "HalfTensor")
LongTensor = _typed(int64, "LongTensor")
IntTensor = _typed(int32, "IntTensor")
ShortTensor = _typed(int16, "ShortTensor")
CharTensor = _typed(int8, "CharTensor")
ByteTensor = _typed(uint8, "ByteTensor")
BoolTensor = _typed(bool_, "BoolTensor")


def typed_constructors(device_type):
    """The legacy typed constructors of another device type, by name (torch.cuda.FloatTensor, ...)."""
    return {cls.__name__: _typed(cls.dtype, cls.__name__, device_type) for cls in (
        FloatTensor, DoubleTensor, HalfTensor, LongTensor, IntTensor, ShortTensor, CharTensor, ByteTensor, BoolTensor)}



def _current_accelerator(check_available=False):
    """torch.accelerator.current_accelerator(): the device "cuda" where CuPy serves one, else None."""
    if backend.xp.__name__ == "numpy":
        return None
    from .device import device  # (constants is imported before the device module)

    return device("cuda")


def _on_the_one_device(*args, **kwargs):
    """What needs no doing with one device or none (synchronize, set_device_index, empty_cache)."""


# torch.accelerator: chainrule serves the CPU (or CuPy's GPU as "cuda", one device)
accelerator = types.SimpleNamespace(
    is_available=lambda: backend.xp.__name__ != "numpy",
    current_accelerator=_current_accelerator,
    device_count=lambda: 0 if backend.xp.__name__ == "numpy" else 1,
    current_device_index=lambda: 0, current_device_idx=lambda: 0, set_device_index=_on_the_one_device,
    set_device_idx=_on_the_one_device, synchronize=_on_the_one_device, empty_cache=_on_the_one_device,
)
# (torch.backends is the package autograd/backends/)
