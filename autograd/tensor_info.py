"""What a tensor and its dtype are (``is_floating_point`` is in ops/predicates.py): ``element_size``, ``nelement``,
``finfo``/``iinfo`` (the limits of a dtype), ``type_as``, and ``format(x, spec)``."""

import numpy

from . import backend
from .ops import bind_tensor_methods
from .ops.names import names


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
    """PyTorch's rule: a 0-d tensor formats as its number (f"{loss:.4f}"); any other tensor
    takes only the empty spec, which gives its str."""
    if self.ndim == 0:
        return self.item().__format__(format_spec)
    return object.__format__(self, format_spec)


def _dtype(dtype):
    return backend.get_default_dtype() if dtype is None else numpy.dtype(dtype)


class finfo:
    """Limits of a floating dtype (the default dtype when left out): ``eps`` (the gap from 1 to
    the next number), ``max``, ``min``, ``tiny`` (= ``smallest_normal``), ``resolution``, ``bits``."""

    def __init__(self, type=None):
        dtype = _dtype(type)
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

    def __repr__(self):
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"


# autograd.ops bound the ops' methods before this module was imported: bind these too
bind_tensor_methods()
