"""Rounding and remainders, each forward beside its local derivative: floor, ceil, trunc (fix), round
(to decimals), sign and sgn, frac, fmod and remainder.

Rounding is piecewise constant: its gradient is 0 (PyTorch's, also at the jumps). A remainder is
x - q·y for a whole q (truncated for fmod, floored for remainder), so dz/dx = 1 and dz/dy = -q.
Integers are already whole (their rounding is a copy), and have no inf: an integer division by
zero raises, where NumPy would give 0.
"""

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .broadcasting import unbroadcast
from .conjugation import sgn_of_complex
from .conversion import refuse_kinds, tensor_input
from .elementwise import half_as_float32, promote
from .names import names
from .outputs import write_out
from .selection import zero_gradient


def _refuse_integer_division_by_zero(x, y):
    """Integers have no inf: PyTorch raises where NumPy would silently give 0."""
    if x.dtype.kind in "iub" and y.dtype.kind in "iub" and not xp.all(y):
        raise RuntimeError("ZeroDivisionError: integer division by zero")


class Rounding(Primitive):
    """y = floor, ceil, round, trunc or sign of x: piecewise constant, so dL/dx = 0"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x):
        if x.dtype.kind == "c":  # (NumPy rounds complex numbers part by part; PyTorch refuses them)
            raise NotImplementedError(
                "Unlike NumPy, torch.sign is not intended to support complex numbers. Please use torch.sgn "
                "instead." if self.function == "sign" else f"{self.function} is not supported for complex inputs")
        if self.function == "round" and self.decimals:
            # float16 scaled by 10^decimals in float32, as PyTorch's: in float16 x · 100 overflows past 655
            return xp.round(half_as_float32(x), self.decimals).astype(x.dtype, copy=False)
        if self.function == "sign":
            if x.dtype.kind == "b":  # a bool is its own sign
                return x.copy()
            signs = xp.sign(x)
            return xp.where(xp.isnan(signs), 0, signs) if x.dtype.kind == "f" else signs  # NaN: 0, as PyTorch
        return getattr(xp, self.function)(x)

    def backward(self, grad, y, x):
        return (zero_gradient(x, grad),)


def _rounding(function, name):
    def op(input, *, out=None):
        if function != "sign":
            refuse_kinds(input, f"{function}_vml_cpu", "b")  # (PyTorch has no floor of a bool)
        if input.dtype.kind in "iu" and function != "sign":  # integers are already whole
            return write_out(input.clone(), out, same_dtype=True)
        return write_out(Rounding.apply(input, function=function, decimals=0,
                                        pytorch_name=f"{function.capitalize()}Backward0"), out, same_dtype=True)

    op.__name__ = name
    op.__doc__ = f"y = {function}(x) elementwise (gradient 0)."
    names(name, inplace=f"{name}_")(op)


for _function, _name in (("floor", "floor"), ("ceil", "ceil"), ("trunc", "trunc"), ("trunc", "fix"),
                         ("sign", "sign")):
    _rounding(_function, _name)


@names("sgn", inplace="sgn_")
def sgn(input, *, out=None):
    """sign(x) for real x (gradient 0); x / |x| for complex x (0 at 0), differentiable."""
    if input.dtype.kind == "c":
        return write_out(sgn_of_complex(input), out, same_dtype=True)
    return write_out(Rounding.apply(input, function="sign", decimals=0, pytorch_name="SgnBackward0"), out,
                     same_dtype=True)


@names("round", inplace="round_")
def round(input, *, decimals=None, out=None):
    """x rounded to ``decimals`` decimal places (none given: to whole numbers), halves to even (as PyTorch
    and NumPy)."""
    # PyTorch rounds no bools; an integer's round() is itself, but its overload with decimals (0 too) refuses them
    node = "RoundBackward1"  # (PyTorch's overload with decimals, 0 too)
    if decimals is None:
        refuse_kinds(input, "round_vml_cpu", "b")
        if input.dtype.kind in "iu":
            return write_out(input.clone(), out, same_dtype=True)
        decimals, node = 0, "RoundBackward0"
    else:
        refuse_kinds(input, "round_vml_cpu" if decimals == 0 else "round_cpu", "biu" if decimals == 0 else "biuc")
    return write_out(Rounding.apply(input, function="round", decimals=decimals, pytorch_name=node), out,
                     same_dtype=True)


class Frac(Primitive):
    """y = x - trunc(x);   dL/dx = dL/dy"""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x):
        return x - xp.trunc(x)

    def backward(self, grad, y, x):
        return (grad,)


@names("frac", inplace="frac_")
def frac(input, *, out=None):
    """x - trunc(x), of floating x (PyTorch has no frac of integers, bools or complex numbers)."""
    refuse_kinds(input, "frac_cpu", "biuc")
    return write_out(Frac.apply(input), out, same_dtype=True)


class Fmod(Primitive):
    """z = x - trunc(x/y) · y  (the sign of x, as C's fmod);   dL/dx = dL/dz,   dL/dy = -dL/dz · trunc(x/y)"""

    def forward(self, x, y):
        _refuse_integer_division_by_zero(x, y)
        return xp.fmod(x, y)

    def backward(self, grad, z, x, y):
        quotient = Tensor._make(xp.trunc(x._data / y._data))
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(-grad * quotient, y) if y.requires_grad else None)


def floored_remainder(x, y):
    """x mod y with y's sign (Python's %), as PyTorch computes it: C's fmod, plus y where fmod's sign is not y's.
    So an exact multiple keeps fmod's zero, signed as x: -4.0 % 2 is -0.0 and 4.0 % -2 is 0.0 (NumPy's remainder
    signs that zero as y). Integers have no signed zero: NumPy's floored remainder is PyTorch's."""
    if x.dtype.kind != "f":
        return xp.remainder(x, y)
    modulus = xp.fmod(x, y)
    return xp.where((modulus != 0) & ((y < 0) != (modulus < 0)), modulus + y, modulus)


class Remainder(Primitive):
    """z = x - floor(x/y) · y  (the sign of y, as Python's %);   dL/dx = dL/dz,   dL/dy = -dL/dz · floor(x/y)"""

    def forward(self, x, y):
        _refuse_integer_division_by_zero(x, y)
        return floored_remainder(x, y)

    def backward(self, grad, z, x, y):
        quotient = Tensor._make(xp.floor_divide(x._data, y._data))
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(-grad * quotient, y) if y.requires_grad else None)


class ModuloByNumber(Primitive):
    """z = x mod c for a number c (fmod or remainder);   dL/dx = dL/dz

    PyTorch's fmod and remainder by a Scalar: their nodes keep nothing (the gradient is dL/dz itself), so x may
    be written in place afterwards. c is the promoted number, a 0-d array of x's dtype."""

    saves_inputs = False  # backward needs no input's values

    @property
    def op_name(self):
        return self.written

    def forward(self, x):
        return (xp.fmod if self.written == "Fmod" else floored_remainder)(x, self.c)

    def backward(self, grad, z, x):
        return (grad,)


def _modulo(primitive, input, other, name):
    number = (type(other) is float or type(other) is int) and isinstance(input, Tensor)
    by_tensor = isinstance(other, Tensor)  # (PyTorch's Tensor overload: FmodBackward1, RemainderBackward1)
    input, other = promote(input, other)
    refuse_kinds(input, f"{name}_cpu", "bc")  # (NumPy: int8 for bools)
    if number and input._data.dtype.kind == "f":
        _refuse_integer_division_by_zero(input._data, other._data)
        return ModuloByNumber.apply(input, c=other._data, written=primitive.__name__)
    if by_tensor:
        return primitive.apply(input, other, pytorch_name=f"{primitive.__name__}Backward1")
    return primitive.apply(input, other)


@names("fmod", inplace="fmod_")
def fmod(input, other, *, out=None):
    """The remainder of input / other with input's sign (C's fmod)."""
    tensor_input("fmod", input)
    return write_out(_modulo(Fmod, input, other, "fmod"), out)


@names("remainder", inplace="remainder_")
def remainder(input, other, *, out=None):
    """The remainder of input / other with other's sign (Python's %)."""
    return write_out(_modulo(Remainder, input, other, "remainder"), out)
