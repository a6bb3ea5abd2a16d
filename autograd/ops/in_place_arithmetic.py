"""The in-place arithmetic of tensors: ``x.add_(y)``, ``x.mul_(y)``, ``x += y``, ``fill_``, ``copy_``,
``addcmul_``, ``lerp_``, ... (what optimisers, initialisers and masks write with).

Each passes through the tensor's write door (``Tensor._write``, in tensor.py) with two versions of
the same change: ``out_of_place(old)``, the new value as a Tensor (recorded when the tensor or the
value written requires grad), and ``in_place(array)``, the change made on the array directly, the
fast path a parameter update under ``no_grad`` takes. Every other in-place twin ``x.op_(...)``
writes ``x.op(...)`` back (``names(..., inplace=...)``); these are the ones with a fast path.
"""

from ..backend import float16, float32, xp
from ..errors import refuse_bool_subtraction, refuse_unbroadcastable
from ..operands import _is_bool, _operand, _operand_array, is_no_number, left_to_python, python_number, real_part
from ..tensor import Tensor, tensor_from
from ..write_door import _data, _refuse_overflow
from .arithmetic import (
    _number_first,
    _scaled,
    add,
    addcdiv,
    addcmul,
    fused_add_into,
    in_common_dtype,
    integer_value,
    number_argument,
    refuse_integer_addcdiv,
    sub,
)
from .clamping import refuse_overflowing_bounds
from .conversion import c_name
from .elementwise import Where
from .names import names
from .promotion import promoted_dtype


@names("abs_", "absolute_", function=False)
def abs_(self):
    """x ← |x|; refused for a complex tensor, as PyTorch 2.13 refuses it (|z| is real: no complex value to
    write back)."""
    if self._data.dtype.kind == "c":
        raise RuntimeError("In-place abs is not supported for complex tensors.")
    return self._write_back(lambda x: x.abs(), (), {})


@names("zero_", function=False)
def zero_(self):
    return _fill(self, 0, "ZeroBackward0")


@names("fill_", function=False)
def fill_(self, value):
    if isinstance(value, Tensor):
        if value.ndim:  # (one number: a tensor of several would be copied elementwise)
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} "
                               f"dimensions (of shape {tuple(value.shape)}, filling a tensor of shape "
                               f"{tuple(self.shape)}).")
        if value._data.dtype.kind == "c" and self._data.dtype.kind != "c":  # (NumPy's copy would drop the
            _refuse_overflow(value.item(), self._data.dtype)  # imaginary part, with a warning only)
    if type(value) is complex or (type(value) is float or type(value) is int) and \
            (self._data.dtype.kind != "f" or not -65504.0 <= value <= 65504.0):  # (what may overflow: a
        _refuse_overflow(value, self._data.dtype)  # float's usual values are not checked further)
    elif is_no_number(value):  # (NumPy would fill None as NaN)
        raise TypeError(f"fill_() received an invalid combination of arguments - got ({type(value).__name__}), but "
                        "expected one of: (Tensor value), (Number value)")
    return _fill(self, value, "FillBackward3" if isinstance(value, Tensor) else "FillBackward2")  # (overloads)


def _fill(self, value, pytorch_name):
    # one number everywhere: an expanded tensor takes it (its elements sharing memory all get it), a tensor it refuses
    return self._write((value,), lambda old: old._filled_with(_operand(value, old), pytorch_name),
                       lambda a: a.fill(_data(value)), overlapping_ok=not isinstance(value, Tensor))


@names("copy_", function=False)
def copy_(self, other, non_blocking=False):  # (PyTorch's binding names the source other=)
    source = other if isinstance(other, Tensor) else tensor_from(other)
    if source._data.shape != self._data.shape:
        refuse_unbroadcastable(self._data.shape, source._data.shape)
    if source._data.dtype != self._data.dtype:
        # copy_ casts anything, as PyTorch's (floats into integers truncate); recorded, differentiable
        source = source.to(self._data.dtype)
    return self._write((source,), lambda old: _copied(old, source), lambda a: self._store(source))


def _copied(old, source):
    """copy_'s recorded write, PyTorch's CopyBackwards: a node with two inputs, the value written over (its
    gradient zeros: it no longer counts, but its history still gets a gradient, as PyTorch's) and the source
    (dL/dy, summed back to its shape). A node of its own: a leaf source, which has none, would otherwise leave
    the tensor a leaf cut off from it."""
    nowhere = xp.broadcast_to(xp.asarray(False), old._data.shape)  # (old's parent first, as PyTorch's edges)
    return Where.apply(old, source, condition=nowhere, pytorch_name="torch::autograd::CopyBackwards")


# (the in-place paths take a number as a bare 0-d array; only a recorded write needs a Tensor)


def _operand_in_common(other, self):
    """other's array for a fast in-place path, in PyTorch's common dtype with self: a 0-d tensor of a wider
    dtype of self's kind is cast down first (float32 x.add_(0-d float64) computes in float32, as x + it
    does), where NumPy would compute in float64 and round once more; a narrower one is cast up (float64
    x.add_(float32 y, alpha=a) scales y in float64, where NumPy would round a · y to float32)."""
    array = _operand_array(other, self)
    if array.dtype != self._data.dtype:
        array = array.astype(promoted_dtype(self._data, array), copy=False)
    return array


@names("add_", function=False)
def add_(self, other, *number_first, alpha=1):
    if number_first:  # PyTorch 1's add_(alpha, other), alpha also a 0-d Tensor (SGD-HD's Tensor lr)
        other, alpha = number_first[0], _number_first("add_", "add_(Tensor other, *, Number alpha)", other)
    alpha = number_argument("add_", "alpha", alpha)
    if alpha == 1:
        return self._write((other,), lambda old: old + _operand(other, old),
                           lambda a: xp.add(a, _operand_in_common(other, self), out=a, casting="same_kind"))
    if self._data.dtype == float16 or self._data.dtype == float32:  # (add's fused sum, rounded once)
        return self._write((other,), lambda old: add(old, other, alpha=alpha),
                           lambda a: _fused_or_scaled(a, _operand_in_common(other, self), alpha, xp.add))
    return self._write((other,), lambda old: old + _scaled(_operand(other, old), alpha, old),
                       lambda a: xp.add(a, alpha * _operand_in_common(other, self), out=a, casting="same_kind"))


@names("sub_", function=False)
def sub_(self, other, *number_first, alpha=1):
    if number_first:  # PyTorch 1's sub_(alpha, other)
        other, alpha = number_first[0], _number_first("sub_", "sub_(Tensor other, *, Number alpha)", other)
    alpha = number_argument("sub_", "alpha", alpha)
    refuse_bool_subtraction(_is_bool(self), _is_bool(other))
    if alpha == 1:  # (a subtraction, not an addition of -other: -1 is no uint8)
        return self._write((other,), lambda old: old - _operand(other, old),
                           lambda a: xp.subtract(a, _operand_in_common(other, self), out=a, casting="same_kind"))
    if self._data.dtype == float16 or self._data.dtype == float32:  # (sub's fused sum, rounded once)
        return self._write((other,), lambda old: sub(old, other, alpha=alpha),
                           lambda a: _fused_or_scaled(a, _operand_in_common(other, self), -alpha, xp.add))
    return self._write((other,), lambda old: old - _scaled(_operand(other, old), alpha, old),
                       lambda a: xp.subtract(a, alpha * _operand_in_common(other, self), out=a, casting="same_kind"))


def _fused_or_scaled(a, other, alpha, ufunc):
    """a += alpha · other in place, fused where PyTorch's kernel fuses it (arithmetic.fused_add_into)."""
    if not fused_add_into(a, other, alpha):
        ufunc(a, alpha * other, out=a, casting="same_kind")


def _half_by_number(self, other):
    """float16 x times or over a number (a Python one or a 0-d tensor): written as the operator computes it, in
    float32 and rounded once (the fast path would round the number to float16 first)."""
    return self._data.dtype == float16 and (type(other) in (int, float) or isinstance(other, Tensor) and
                                            other.ndim == 0 and other._data.dtype.kind in "fiu")


@names("mul_", function=False)
def mul_(self, other):
    if _half_by_number(self, other):
        return self._write((other,), lambda old: old * other)
    return self._write((other,), lambda old: old * _operand(other, old),
                       lambda a: xp.multiply(a, _operand_in_common(other, self), out=a, casting="same_kind"))


@names("div_", function=False)
def div_(self, other, *, rounding_mode=None):
    if rounding_mode is not None:  # trunc/floor: the out-of-place div's rule, written back
        return self._write((other,), lambda old: old.div(_operand(other, old), rounding_mode=rounding_mode))
    if _half_by_number(self, other):
        return self._write((other,), lambda old: old / other)
    return self._write((other,), lambda old: old / _operand(other, old),
                       lambda a: xp.divide(a, _operand_in_common(other, self), out=a, casting="same_kind"))


@names("clamp_", function=False)
def clamp_(self, min=None, max=None):
    if min is None and max is None:  # (the fast path's NumPy clip would take no bounds as a no-op)
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if self._data.dtype.kind != "f":  # integers take clamp's casts of the bounds (-1 into uint8 is 255), and
        return self._write((min, max), lambda old: old.clamp(min, max))  # complex numbers clamp's refusal
    refuse_overflowing_bounds(self, python_number(min), python_number(max))
    return self._write((min, max), lambda old: old.clamp(min, max),
                       lambda a: xp.clip(a, _data(min), _data(max), out=a))


@names("addcmul_", function=False)
def addcmul_(self, tensor1, tensor2, *number_first, value=1):
    """x += value · tensor1 · tensor2"""
    if number_first:  # PyTorch 1's addcmul_(value, tensor1, tensor2)
        value = _number_first("addcmul_", "addcmul_(Tensor tensor1, Tensor tensor2, *, Number value)", tensor1)
        tensor1, tensor2 = tensor2, number_first[0]
    value = integer_value(number_argument("addcmul_", "value", value), self, tensor1, tensor2)
    tensor1, tensor2 = in_common_dtype(self, tensor1, tensor2)  # (formed in the wider dtype, written in self's)
    if self._data.dtype == float16:  # (in float32, rounded once: addcmul's)
        return self._write((tensor1, tensor2), lambda old: addcmul(old, tensor1, tensor2, value=value))
    return self._write((tensor1, tensor2), lambda old: old + value * (tensor1 * tensor2),
                       lambda a: _add_scaled(a, xp.multiply(_data(tensor1), _data(tensor2)), value))


@names("addcdiv_", function=False)
def addcdiv_(self, tensor1, tensor2, *number_first, value=1):
    """x += value · tensor1 / tensor2"""
    if number_first:  # PyTorch 1's addcdiv_(value, tensor1, tensor2)
        value = _number_first("addcdiv_", "addcdiv_(Tensor tensor1, Tensor tensor2, *, Number value)", tensor1)
        tensor1, tensor2 = tensor2, number_first[0]
    value = number_argument("addcdiv_", "value", value)
    refuse_integer_addcdiv(tensor1, tensor2)
    tensor1, tensor2 = in_common_dtype(self, tensor1, tensor2)  # (formed in the wider dtype, written in self's)
    if self._data.dtype == float16:  # (in float32, rounded once: addcdiv's)
        return self._write((tensor1, tensor2), lambda old: addcdiv(old, tensor1, tensor2, value=value))
    return self._write((tensor1, tensor2), lambda old: addcdiv(old, tensor1, tensor2, value=value),
                       lambda a: xp.add(a, _scaled_quotient(_data(tensor1), _data(tensor2), value), out=a,
                                        casting="same_kind"))


def _scaled_quotient(numerator, denominator, scale):
    """(scale · numerator) / denominator in one temporary, in addcdiv's order (arithmetic.addcdiv)."""
    term = xp.array(numerator, copy=True) if _is_one(scale) else xp.multiply(numerator,
                                                                             _same_kind_number(scale, numerator))
    if not isinstance(term, xp.ndarray):  # (NumPy gives a scalar for 0-d operands)
        term = xp.asarray(term)
    xp.divide(term, denominator, out=term, casting="unsafe")
    return term



@names("lerp_", function=False)
def lerp_(self, end, weight):
    """x += weight · (end - x)"""
    if self._data.dtype.kind not in "fc" or self._data.dtype == float16 or \
            isinstance(end, Tensor) and end._data.dtype != self._data.dtype:  # (lerp's refusals, float16 in float32)
        return self._write((end, weight), lambda old: old.lerp(end, weight))
    return self._write((end, weight), lambda old: old + weight * (end - old),
                       lambda a: _add_scaled(a, xp.subtract(_data(end), a), _data(weight)))


@names("sqrt_", function=False)
def sqrt_(self):
    return self._write((), lambda old: old.sqrt(), lambda a: xp.sqrt(a, out=a))


@names("neg_", function=False)
def neg_(self):
    return self._write((), lambda old: -old, lambda a: xp.negative(a, out=a))


def _augmented(dunder, method):
    """``x //= y`` and the other augmented operators write into x, as PyTorch's do: without them Python
    would rebind x to a new tensor, and a view of x (or another name for it) would not see the change. An operand
    that is no number and no array is left to Python (x += None is its TypeError; an object's own reflected
    operator answers x += unit), as PyTorch's return NotImplemented."""

    def operator(self, other):
        if left_to_python(other):
            return NotImplemented
        return getattr(self, method)(other)

    operator.__name__ = operator.__qualname__ = dunder
    operator.__doc__ = f"x {dunder} y is x.{method}(y)."
    names(dunder, function=False)(operator)


for _dunder, _method in (("__iadd__", "add_"), ("__isub__", "sub_"), ("__imul__", "mul_"), ("__itruediv__", "div_"),
                         ("__ifloordiv__", "floor_divide_"), ("__imod__", "remainder_"), ("__ipow__", "pow_"),
                         ("__iand__", "bitwise_and_"), ("__ior__", "bitwise_or_"), ("__ixor__", "bitwise_xor_"),
                         ("__ilshift__", "bitwise_left_shift_"), ("__irshift__", "bitwise_right_shift_")):
    _augmented(_dunder, _method)


def _add_scaled(array, term, scale):
    """array += scale · term, in place, reusing ``term`` (a fresh temporary) for the product:
    the fast path of the optimizers' in-place updates makes one temporary, not two."""
    if not isinstance(term, xp.ndarray):  # NumPy gives a scalar, not a 0-d array, for 0-d operands
        term = xp.asarray(term)
    if not _is_one(scale):
        xp.multiply(term, _same_kind_number(scale, term), out=term, casting="unsafe")
    xp.add(array, term, out=array, casting="same_kind")
    return array


def _is_one(scale):
    return isinstance(scale, (int, float)) and scale == 1


def _same_kind_number(scale, array):
    """A float scale as a 0-d array of a floating array's dtype: converted once, as NumPy would at the call,
    only slower. A complex scale of a real array is its real part, or refused where it has an imaginary one, as
    PyTorch converts a number to the tensor's dtype (the unsafe cast of the product would drop it silently)."""
    kind = type(scale)
    if kind is float:
        return xp.asarray(scale, dtype=array.dtype) if array.dtype.kind == "f" else scale
    if kind is not int and array.dtype.kind != "c" and _is_complex_number(scale):
        return real_part(complex(scale.item() if hasattr(scale, "item") else scale), c_name(array.dtype))
    return scale


def _is_complex_number(scale):
    """Whether a scale is a complex number: a Python or NumPy one, or a 0-d complex tensor or array."""
    return type(scale) is complex or getattr(getattr(scale, "dtype", None), "kind", "") == "c"
