"""How a tensor gives up its values (a mixin of ``Tensor``, tensor.py): as a NumPy array that shares its memory,
as one Python number (``item``, ``float``, ``int``, ``bool``, an index), or as nested lists, with PyTorch's
refusals where a value would be lost or is ambiguous."""

import numpy

from . import backend
from .backend import xp
from .errors import ShapeError
from .graph import modes
from .meta import MetaArray
from .warn_once import warn_once


class Conversions:
    """The conversions of ``Tensor`` (its only subclass)."""

    __slots__ = ()

    def numpy(self, *, force=False):
        """The data as a NumPy array (shared with the tensor, not copied; under CuPy a GPU tensor's
        is a copy in host memory). ``force=True``, PyTorch's way past its refusals (a tensor that
        requires grad, one on a GPU), changes nothing here: neither is refused. A meta tensor has no values
        to give: refused, as PyTorch's."""
        if type(self._data) is MetaArray:
            raise TypeError("can't convert meta device type tensor to numpy. Copy the tensor to host memory first.")
        return backend.to_numpy(self._data)

    def item(self):
        if self._data.size != 1:
            raise ShapeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar: item() needs "
                             f"one element, got shape {tuple(self.shape)}")
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def __array__(self, dtype=None, copy=None):
        """The values for NumPy: ``numpy.asarray(t)`` shares the tensor's memory, ``numpy.array(t)`` (copy=True)
        copies it, as with PyTorch's tensors. ``copy=False`` with another dtype is NumPy's ValueError (a cast
        copies), as PyTorch's."""
        array = self.numpy()
        if dtype is not None and numpy.dtype(dtype) != array.dtype:
            if copy is False:
                raise ValueError("Unable to avoid copy while creating an array as requested: the tensor's "
                                 f"{array.dtype} values cast to {numpy.dtype(dtype)} are a copy.")
            return array.astype(dtype)
        return array.copy() if copy else array

    def __array_wrap__(self, array, context=None, return_scalar=False):
        """A NumPy ufunc's result on a tensor (``numpy.sin(t)``) as a tensor, as PyTorch's: a bool result
        (``numpy.isnan(t)``, ``numpy.greater(t, 0)``) as uint8, PyTorch's ByteTensor. Not recorded, so for a
        tensor that requires grad the bare array comes back (a tensor would look like part of the graph)."""
        if self._requires_grad or not isinstance(array, (xp.ndarray, numpy.ndarray)):  # (a host array too, under CuPy)
            return array[()] if return_scalar and isinstance(array, numpy.ndarray) else array
        return type(self)._make(array.astype(numpy.uint8) if array.dtype == bool else array)

    def __float__(self):
        if self._requires_grad and modes.grad_enabled:  # (PyTorch's, for float() only: item(), int() and bool() say
            warn_once("float()", "Converting a tensor with requires_grad=True to a scalar may lead to unexpected "
                      "behavior.\nConsider using tensor.detach() first.")  # nothing)
        return float(self._real_item("double"))

    def __int__(self):
        return int(self._real_item("int64_t"))

    def __complex__(self):
        return complex(self._python_scalar())

    def _python_scalar(self):
        """The one number for ``float()``, ``int()`` and ``complex()``: of more or fewer elements, PyTorch's
        ValueError (``item()`` says it another way, as a RuntimeError)."""
        if self._data.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars (got shape "
                             f"{tuple(self.shape)}: reduce it first, or take one element)")
        return self.item()

    def _real_item(self, c_type):
        """The one number; a complex one only where its imaginary part is 0, as PyTorch's (it would be lost)."""
        value = self._python_scalar()
        if type(value) is complex:
            if value.imag != 0:
                raise RuntimeError(f"value cannot be converted to type {c_type} without overflow (a complex number "
                                   "with an imaginary part: take .real or .abs() first)")
            return value.real
        return value

    def __index__(self):
        if self._data.dtype.kind not in "biu" or self._data.size != 1:  # (a 0-d bool is 0 or 1, as PyTorch's)
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            count = "no values" if self._data.size == 0 else "more than one value"
            raise RuntimeError(f"Boolean value of Tensor with {count} is ambiguous (a tensor of shape "
                               f"{tuple(self.shape)}); use .any() or .all()")
        return bool(self._data)
