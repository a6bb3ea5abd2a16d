"""PyTorch's ``torch.dtype`` objects: what ``x.dtype`` and ``autograd.float32`` are.

Arrays are NumPy's, so a dtype here is a NumPy dtype, and everything NumPy reads from one it reads from
these: NumPy takes any object whose ``dtype`` attribute is a NumPy dtype wherever it takes a dtype
(``numpy.zeros(3, dtype=autograd.float32)``, ``a.astype(x.dtype)``), and one compares and hashes equal
to its NumPy dtype (``x.dtype == numpy.float32``, a dict keyed by NumPy dtypes), prints as it (``float32``)
and answers its attributes (``kind``, ``itemsize``, ``type``). NumPy's dtype classes can be neither
subclassed nor given attributes, so PyTorch's own (``is_floating_point``, ``is_complex``, ``is_signed``,
``to_complex()``, ``to_real()``), which library code reads (an EMA of a model's floating state,
torchvision's ``convert_image_dtype``), need this class of their own. There is one object per NumPy dtype,
so ``x.dtype is autograd.float32`` holds, as PyTorch's.
"""

import numpy


class dtype:  # noqa: N801  (PyTorch's name: torch.dtype)
    """A NumPy dtype with PyTorch's properties. ``autograd.dtype("float32")`` (anything ``numpy.dtype`` reads)
    gives the one object for that dtype."""

    # NumPy's dtype (what NumPy reads through the ``dtype`` attribute), and the attributes the ops read most,
    # kept here: the others are looked up on it
    __slots__ = ("dtype", "kind", "itemsize", "char", "name", "type")

    def __new__(cls, spec):
        numpy_dtype = numpy.dtype(spec)
        made = _MADE.get(numpy_dtype)
        if made is None:
            made = _MADE[numpy_dtype] = object.__new__(cls)
            made.dtype = numpy_dtype
            made.kind, made.itemsize, made.char = numpy_dtype.kind, numpy_dtype.itemsize, numpy_dtype.char
            made.name, made.type = numpy_dtype.name, numpy_dtype.type
        return made

    def __getattr__(self, name):  # the rest of NumPy's attributes (str, num, byteorder, fields, ...)
        if name in dtype.__slots__:  # (an unset slot: an object being unpickled)
            raise AttributeError(name)
        return getattr(self.dtype, name)

    def __eq__(self, other):
        return self is other or self.dtype == (other.dtype if type(other) is dtype else other)

    def __hash__(self):
        return hash(self.dtype)

    def __repr__(self):
        return repr(self.dtype)

    def __str__(self):
        return str(self.dtype)

    def __reduce__(self):
        return dtype, (self.dtype,)

    @property
    def is_floating_point(self):
        """Whether it is a floating dtype (float16, float32, float64; not complex)."""
        return self.kind == "f"

    @property
    def is_complex(self):
        return self.kind == "c"

    @property
    def is_signed(self):
        """Whether it holds negative numbers: every floating and complex dtype and the signed integers."""
        return self.kind in "fci"

    def to_complex(self):
        """The complex dtype of this precision (float32: complex64; float64: complex128); a complex dtype is
        itself. float16's, complex32, is not built (NumPy has none)."""
        if self.kind == "c":
            return self
        if self.kind != "f" or self.itemsize < 4:
            raise RuntimeError(f"to_complex is not supported for {self}" if self.kind != "f" else
                               "to_complex of float16 (complex32) is not built here: NumPy has no complex32")
        return dtype(numpy.complex128 if self.itemsize == 8 else numpy.complex64)

    def to_real(self):
        """The floating dtype of this precision (complex64: float32; complex128: float64); a floating dtype is
        itself."""
        if self.kind == "f":
            return self
        if self.kind != "c":
            raise RuntimeError(f"to_real is not supported for {self}")
        return dtype(numpy.float64 if self.itemsize == 16 else numpy.float32)


dtype.__module__ = "autograd"  # (where programs reach it, as torch.dtype: its pickle names it so)
_MADE = {}  # NumPy's dtype -> the one dtype object for it
DTYPE_TYPES = (numpy.dtype, dtype)  # what an argument that is a dtype is (isinstance): one of these, or a NumPy
# number type (numpy.float32), which is a class


def torch_dtype(numpy_dtype):
    """The dtype object of a NumPy dtype (an array's, ``x.dtype``; None stays None)."""
    return _MADE.get(numpy_dtype) or (None if numpy_dtype is None else dtype(numpy_dtype))
