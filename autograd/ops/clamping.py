"""Clamping: ``clamp(x, min, max)`` (``clip``), ``clamp_min``, ``clamp_max``; each bound a number, a
tensor or None.

    y = min(max(x, low), high);   dL/dx = dL/dy · [low <= x <= high]

With tensor bounds the clamp is two ``where``s, so a bound that is chosen receives the gradient, and
at a tie (x equal to a bound) x keeps it, as in PyTorch. Integer and bool tensors follow PyTorch's
dtype rules for the bounds.
"""

import numpy

from .. import backend
from ..backend import xp
from ..operands import python_number
from ..primitive import Primitive, named_node
from ..tensor import Tensor
from ..write_door import _refuse_overflow
from .conjugation import refuse_unordered
from .elementwise import Cast, selected_share, where
from .names import names
from .outputs import write_out


class Clamp(Primitive):
    """y = min(max(x, low), high);   dL/dx = dL/dy · [low <= x <= high]"""

    pytorch_name = "ClampBackward1"  # (PyTorch's: clamp with numbers; with tensors it is ClampBackward0)

    def forward(self, x):
        refuse_unordered(x, "clamp")
        return xp.clip(x, self.low, self.high)

    def backward(self, grad, y, x):
        inside = xp.ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x._data >= self.low
        if self.high is not None:
            inside &= x._data <= self.high
        return (selected_share(grad, Tensor._make(inside)),)  # (none outside, even an infinite one)


@names("clamp")
def clamp(input, min=None, max=None, *, out=None):
    """Clamp to [min, max]; each bound a number, a tensor or None."""
    return write_out(_clamp(input, min, max), out)


def _clamp(x, min, max):
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    min, max = python_number(min), python_number(max)
    if x._data.dtype.kind in "biu":
        x, min, max = _integer_clamp(x, min, max)
    else:
        refuse_overflowing_bounds(x, min, max)
    if isinstance(min, Tensor) or isinstance(max, Tensor):  # ties keep the input's gradient, as PyTorch
        if min is not None:
            x = where(_kept(x, x >= min), x, min)
        return x if max is None else where(_kept(x, x <= max), x, max)
    return Clamp.apply(x, low=min, high=max)


def refuse_overflowing_bounds(x, min, max):
    """PyTorch's refusal of a number bound past a floating x's largest finite value (float16 clamped to 1e10,
    float32 to 1e40), as it refuses such a number written into x; an infinite or NaN bound is taken."""
    for bound in (min, max):
        if type(bound) is float or type(bound) is int:
            _refuse_overflow(bound, x._data.dtype)


def _kept(x, inside):
    """Where a tensor-bound clamp keeps x: inside the bound, or NaN (a NaN input stays NaN, as a NaN bound makes
    the result NaN: a comparison with NaN is false both ways)."""
    return inside | x.isnan() if x._data.dtype.kind in "fc" else inside


def _integer_clamp(x, min, max):
    """(x, min, max) of a clamp of integers or bools, by PyTorch's rules: a float bound makes x the default
    floating dtype (not NumPy's float64); an int bound is cast into x's dtype as PyTorch casts a number
    (-1 into uint8 is 255, 300 refused); bools clamped by bools would stay bools, which PyTorch has no
    kernel for."""
    if x._data.dtype.kind == "b" and type(min) in (bool, type(None)) and type(max) in (bool, type(None)):
        kernel = "clamp_scalar_cpu" if min is not None and max is not None else \
            "clamp_min_scalar_cpu" if min is not None else "clamp_max_scalar_cpu"
        raise NotImplementedError(f"\"{kernel}\" not implemented for 'Bool'")
    if any(isinstance(b, float) for b in (min, max)):
        return Cast.apply(x, dtype=backend.get_default_dtype()), min, max
    if x._data.dtype.kind != "b":
        from ..factories import _integers_cast  # (the range rule of a number written into integers)

        low, high = numpy.iinfo(x._data.dtype).min, numpy.iinfo(x._data.dtype).max
        min, max = (_integers_cast(b, x._data.dtype) if type(b) is int and not low <= b <= high else b
                    for b in (min, max))
    return x, min, max


@names("clip", inplace="clip_")
def clip(input, min=None, max=None, *, out=None):
    """clamp under its NumPy name."""
    return write_out(clamp(input, min, max), out)


@names("clamp_min", inplace="clamp_min_")
def clamp_min(input, min, *, out=None):
    return write_out(named_node(clamp(input, min=min), Clamp, "ClampMinBackward0"), out)


@names("clamp_max", inplace="clamp_max_")
def clamp_max(input, max, *, out=None):
    return write_out(named_node(clamp(input, max=max), Clamp, "ClampMaxBackward0"), out)
