"""Clamping: ``clamp(x, min, max)`` (``clip``), ``clamp_min``, ``clamp_max``; each bound a number, a
tensor or None.

    y = min(max(x, low), high);   dL/dx = dL/dy · [low <= x <= high]

With tensor bounds a bound that is chosen receives the gradient, and at a tie (x equal to a bound) x keeps
it, as in PyTorch (ClampByTensors gives its exact rules for NaNs and crossed bounds). Integer and bool tensors
follow PyTorch's dtype rules for the bounds.
"""

import numpy

from .. import backend
from ..backend import xp
from ..operands import python_number, real_part
from ..primitive import Primitive, named_node
from ..tensor import Tensor
from ..write_door import _refuse_overflow
from .broadcasting import unbroadcast
from .conjugation import refuse_unordered
from .conversion import refuse_kinds
from .elementwise import Cast, promote, selected_share, where
from .names import names
from .outputs import write_out


class Clamp(Primitive):
    """y = min(max(x, low), high);   dL/dx = dL/dy · [low <= x <= high]"""

    pytorch_name = "ClampBackward1"  # (PyTorch's: clamp with numbers; with tensors it is ClampBackward0)

    def forward(self, x):
        refuse_unordered(x, "clamp")
        y = xp.clip(x, self.low, self.high)  # (a NaN bound makes every element NaN, as PyTorch's)
        if (self.low == 0 or self.high == 0) and x.dtype.kind == "f":
            # x is kept on its bound, as PyTorch's: a -0 clamped at 0 stays -0 (NumPy's clip may give the bound's
            # +0, which would turn sqrt's infinite slope there from -inf to inf)
            zero = (y == 0) & (x == 0)
            if zero.any():
                y = xp.where(zero, x, y)
        return y

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
    return write_out(_clamp(input, min, max), out, same_dtype=_number_bounds(min, max))


def _number_bounds(min, max):
    """Whether no bound is a tensor: PyTorch's clamp by numbers writes only into an out of its result's dtype
    ("Found dtype Double but expected Float"), where by tensors it casts into any dtype the result can be cast to."""
    return not isinstance(min, Tensor) and not isinstance(max, Tensor)


def _clamp(x, min, max, inclusive=False):
    """``inclusive``: clamp_min's and clamp_max's node (a tie takes x's tangent in forward mode: ClampByTensors.jvp)."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    min, max = python_number(min), python_number(max)
    if type(min) is complex or type(max) is complex:
        min, max = _real_bounds(x, min, max, inclusive)
    if x._data.dtype.kind in "biu":
        x, min, max = _integer_clamp(x, min, max)
    else:
        refuse_overflowing_bounds(x, min, max)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        return _clamp_by_tensors(x, min, max, inclusive)
    return Clamp.apply(x, low=min, high=max)


class ClampByTensors(Primitive):
    """y = min(max(x, low), high) with tensor bounds (either may be absent), by PyTorch's subgradients:

        dL/dx = dL/dy · [low <= x <= high],   dL/dlow = dL/dy · [x < low < high],
        dL/dhigh = dL/dy · [x > high or high < low]

    so a tie (x on a bound) keeps x's gradient, crossed bounds (low > high) give all of it to high, bounds that
    meet (low == high) give it to nobody unless x lies on them, and a NaN anywhere gives it to nobody (every
    comparison with NaN is false) while the value stays NaN."""

    pytorch_name = "ClampBackward0"
    inclusive = False  # clamp_min's or clamp_max's node, not clamp's: a tie has its own forward rule (jvp)

    def forward(self, x, *bounds):
        refuse_unordered(x, "clamp")
        low, high = self._bounds(bounds)
        y = x if low is None else xp.maximum(x, low)  # (NumPy's maximum and minimum keep a NaN of either side)
        return y if high is None else xp.minimum(y, high)

    def _bounds(self, bounds):
        """(low, high) from the bound inputs given after x (None for an absent one)."""
        bounds = list(bounds)
        return (bounds.pop(0) if self.has_low else None), (bounds.pop(0) if self.has_high else None)

    def backward(self, grad, y, x, *bounds):
        low, high = (None if b is None else b._data for b in self._bounds(bounds))
        x_data = x._data
        inside = xp.ones(grad.shape, dtype=bool)
        if low is not None:
            inside = inside & (x_data >= low)
        if high is not None:
            inside = inside & (x_data <= high)
        gradients = [unbroadcast(selected_share(grad, Tensor._make(inside)), x) if x.requires_grad else None]
        if low is not None:
            below = (x_data < low) & (low < high) if high is not None else x_data < low
            gradients.append(unbroadcast(selected_share(grad, Tensor._make(xp.broadcast_to(below, grad.shape))),
                                         bounds[0]) if bounds[0].requires_grad else None)
        if high is not None:
            above = (x_data > high) | (high < low) if low is not None else x_data > high
            gradients.append(unbroadcast(selected_share(grad, Tensor._make(xp.broadcast_to(above, grad.shape))),
                                         bounds[-1]) if bounds[-1].requires_grad else None)
        return tuple(gradients)

    def jvp(self, tangents, y, x, *bounds):
        """PyTorch's forward rules, which at a tie or a NaN are not the backward read forward (ẏ = ẋ where x lies
        strictly inside the bounds; a bound's tangent where x is on it, NaN, or past it):

            clamp(x, low):        ẏ = ẋ where x > low else l̇          clamp_min(x, low): ẋ where x >= low else l̇
            clamp(x, high=high):  ẏ = ẋ where x < high else ḣ         clamp_max(x, high): ẋ where x <= high else ḣ
            clamp(x, low, high):  ẏ = ḣ where low > high, else l̇ where x < low, else ḣ where x > high, else ẋ"""
        low, high = self._bounds(bounds)
        x_t, (low_t, high_t) = tangents[0], self._bounds(tangents[1:])
        if high is None:
            return where(x >= low if self.inclusive else x > low, x_t, low_t)
        if low is None:
            return where(x <= high if self.inclusive else x < high, x_t, high_t)
        return where(low > high, high_t, where(x < low, low_t, where(x > high, high_t, x_t)))


def _clamp_by_tensors(x, min, max, inclusive=False):
    """clamp(x, min, max) with a tensor bound: x and the bounds in their common dtype (a number bound beside a
    tensor one as a tensor of it)."""
    for bound in (min, max):
        if bound is not None:
            x, _ = promote(x, bound)
    if min is not None and max is not None:  # (PyTorch's kernel for both tensor bounds has no bool loop, so bools
        refuse_kinds(x, "clamp_cpu", "b")  # clamped by bools are refused; bools and int bounds run in int64)
    bounds = [promote(x, bound)[1] for bound in (min, max) if bound is not None]
    if inclusive:
        return ClampByTensors.apply(x, *bounds, has_low=min is not None, has_high=max is not None, inclusive=True)
    return ClampByTensors.apply(x, *bounds, has_low=min is not None, has_high=max is not None)


def _real_bounds(x, min, max, inclusive):
    """Complex number bounds as PyTorch reads them: clamp of a floating x reads each as a real number (1+0j is 1; one
    with an imaginary part cannot be, and is refused as PyTorch's conversion refuses it), of integers or bools it
    would make the result complex, and clamp_min and clamp_max take no complex number at all. (Silently clamping to
    a complex bound would return a complex tensor where PyTorch refuses.)"""
    if inclusive or x._data.dtype.kind != "f":
        raise NotImplementedError("clamp is not supported for complex types")
    return tuple(real_part(bound, "double") if type(bound) is complex else bound  # (the kernel reads a double)
                 for bound in (min, max))


def refuse_overflowing_bounds(x, min, max):
    """PyTorch's refusal of a number bound past a floating x's largest finite value (float16 clamped to 1e10,
    float32 to 1e40), as it refuses such a number written into x; an infinite or NaN bound is taken."""
    for bound in (min, max):
        if type(bound) is float or type(bound) is int:
            _refuse_overflow(bound, x._data.dtype)


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
        from ..reading_data import integers_cast  # (the range rule of a number written into integers)

        low, high = numpy.iinfo(x._data.dtype).min, numpy.iinfo(x._data.dtype).max
        min, max = (integers_cast(b, x._data.dtype) if type(b) is int and not low <= b <= high else b
                    for b in (min, max))
    return x, min, max


@names("clip", inplace="clip_")
def clip(input, min=None, max=None, *, out=None):
    """clamp under its NumPy name."""
    return write_out(clamp(input, min, max), out, same_dtype=_number_bounds(min, max))


@names("clamp_min", inplace="clamp_min_")
def clamp_min(input, min, *, out=None):
    y = named_node(_clamp(input, min, None, inclusive=True), Clamp, "ClampMinBackward0")
    return write_out(named_node(y, ClampByTensors, "ClampMinBackward1"), out,
                     same_dtype=not isinstance(min, Tensor))


@names("clamp_max", inplace="clamp_max_")
def clamp_max(input, max, *, out=None):
    y = named_node(_clamp(input, None, max, inclusive=True), Clamp, "ClampMaxBackward0")
    return write_out(named_node(y, ClampByTensors, "ClampMaxBackward1"), out,
                     same_dtype=not isinstance(max, Tensor))
