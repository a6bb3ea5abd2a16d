"""Tensors from existing data, PyTorch's way: ``from_numpy`` and ``as_tensor`` share memory
where they can (``tensor`` always copies), and ``x.new_zeros(...)`` and friends make a new
tensor with x's dtype."""

import numpy

from .backend import xp
from .factories import _shape, empty, full, ones, tensor, zeros
from .ops import bind_tensor_methods
from .ops.names import names
from .tensor import Tensor, as_array


@names("from_numpy", method=False)
def from_numpy(ndarray):
    """A tensor on the same memory as ``ndarray`` (its dtype kept): a change to one shows in the other."""
    if not isinstance(ndarray, (numpy.ndarray, xp.ndarray)):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    return Tensor._make(xp.asarray(ndarray))


@names("as_tensor", method=False)
def as_tensor(data, dtype=None, device=None):
    """``data`` as a tensor, without copying when it already is one (or a NumPy array) of ``dtype``;
    otherwise a new tensor, with ``tensor``'s dtype rules (Python floats become the default dtype)."""
    if isinstance(data, Tensor):
        return data if dtype is None or data.dtype == numpy.dtype(dtype) else data.to(dtype)
    if isinstance(data, (numpy.ndarray, xp.ndarray)):
        return Tensor._make(xp.asarray(data, dtype=dtype))
    return Tensor._make(as_array(data, dtype))


def _like(self, dtype):
    return self.dtype if dtype is None else dtype


# x.new_*: a new tensor with x's dtype (``device`` is accepted: it lives where x does)


@names("new_zeros", function=False)
def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
    return zeros(_shape(size), dtype=_like(self, dtype), requires_grad=requires_grad)


@names("new_ones", function=False)
def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
    return ones(_shape(size), dtype=_like(self, dtype), requires_grad=requires_grad)


@names("new_empty", function=False)
def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
    return empty(_shape(size), dtype=_like(self, dtype), requires_grad=requires_grad)


@names("new_full", function=False)
def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    return full(tuple(size), fill_value, dtype=_like(self, dtype), requires_grad=requires_grad)


@names("new_tensor", function=False)
def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    """A copy of ``data`` with x's dtype (not the default dtype) unless ``dtype`` says otherwise."""
    return tensor(data, dtype=_like(self, dtype), requires_grad=requires_grad)


# autograd.ops bound the ops' methods before this module was imported: bind these too
bind_tensor_methods()
