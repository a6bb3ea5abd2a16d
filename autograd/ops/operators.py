"""The names the elementwise ops go by: Python's operators (``x + y``, ``x * 0.5``, ``-x``, ``x ** 2``),
PyTorch's methods (``x.exp()``, ``x.clamp()``, ``x.clone()``, ``x.maximum(y)``) and their in-place twins.
The ops themselves, each forward beside its derivative, are in elementwise.py and elementwise_unary.py.
"""

import numbers

from .. import backend
from ..backend import errstate, xp
from ..errors import DtypeError
from ..operands import left_to_python, python_number
from ..primitive import named_node
from ..sparse_layout import is_sparse
from ..tensor import Tensor
from .arithmetic import positive
from .conversion import tensors_only
from .elementwise import (
    Add,
    Cast,
    Clone,
    Div,
    Fill,
    Maximum,
    Minimum,
    Mul,
    Neg,
    NumberPow,
    Pow,
    PowConstant,
    Rsub,
    Scale,
    Shift,
    Sub,
    binary,
    floating,
    where,
)
from .elementwise_unary import Abs, Cos, Exp, Log, Sigmoid, Sin, Sqrt, Tanh
from .names import names
from .pointwise import Reciprocal


def _floating_method(primitive, name):
    """x.name() of a floating function: integer and bool tensors become the default dtype first."""

    def method(input):
        return primitive.apply(floating(input))

    method.__name__ = name
    method.__doc__ = primitive.__doc__
    return method


def _operator(op, reflected=False, by_number=None, reflected_name=None):
    """Python's operator for ``op``: x + y, or y + x for the reflected one (``__radd__``). The
    common cases go straight to a primitive: two floating tensors of one dtype, and a floating
    tensor with a Python number when ``by_number(x, c)`` says how (x * c is Scale). ``reflected_name``:
    PyTorch's name for the reflected op's node where it has its own (1 - x is RsubBackward1)."""

    def operator(x, other):
        if type(other) is Tensor:
            if other._data.dtype is x._data.dtype and x._data.dtype.kind == "f":
                return op.apply(other, x) if reflected else op.apply(x, other)
        elif (type(other) is float or type(other) is int) and by_number is not None and x._data.dtype.kind == "f" \
                and not (op is Mul and x._data.dtype is backend.float16):  # (binary's float32 product)
            return by_number(x, other)
        elif op is Mul and is_sparse(other):  # dense · sparse: sparse, as sparse · dense
            return other * x
        elif left_to_python(other):  # (x + None: Python's TypeError; [pad] * n with a 0-d n: a list's repetition)
            return NotImplemented
        elif reflected and op is Div and isinstance(other, numbers.Number):
            # c / x for every number c (a NumPy one; beside an integer tensor, len(labels) / counts): PyTorch's
            # x.reciprocal() * c, with its two roundings, as for a Python number beside a floating tensor
            return _over(floating(x), python_number(other))
        if not reflected:
            return binary(op, x, other)
        return named_node(binary(op, other, x), op, reflected_name)

    return operator


def by_constant(x, c):
    """The number c as a 0-d array of the floating tensor x's dtype: the same rounding NumPy
    gives a Python number, done once per op rather than at every use (NumPy 2 converts a
    Python number at each call, about as costly as the arithmetic on a small array)."""
    dtype = x._data.dtype
    if dtype.itemsize < 8 and type(c) is not complex and not -65504.0 <= c <= 65504.0:
        with errstate(over="ignore"):  # past float16's range: inf where the dtype cannot hold c, unwarned (PyTorch's)
            return xp.asarray(c, dtype=dtype)
    return xp.asarray(c, dtype=dtype)


def _scaled(x, c):
    return Scale.apply(x, c=by_constant(x, c), number=c)  # (the number as given: the node shows it)


def _shifted(x, c):
    return Shift.apply(x, c=by_constant(x, c))


def _lowered(x, c):
    return Shift.apply(x, c=by_constant(x, -c), written="Sub")


def _subtracted_from(x, c):
    return Rsub.apply(x, c=by_constant(x, c))


def _over(x, c):
    """c / x as PyTorch's Tensor.__rtruediv__ computes it: x.reciprocal() * c (two roundings, a MulBackward0 node
    that keeps only 1/x, so x may then be written in place)."""
    return Reciprocal.apply(x) * c


for _name, _op, _by_number, _reflected_by_number in (("add", Add, _shifted, _shifted),
                                                      ("sub", Sub, _lowered, _subtracted_from),
                                                      ("mul", Mul, _scaled, _scaled), ("truediv", Div, None, _over)):
    names(f"__{_name}__")(_operator(_op, by_number=_by_number))
    names(f"__r{_name}__")(_operator(_op, reflected=True, by_number=_reflected_by_number,
                                     reflected_name="RsubBackward1" if _op is Sub else None))


@names("__pow__")
def _pow(input, exponent):
    """input ** exponent; a number exponent is a constant of the op (y = x^c)."""
    if left_to_python(exponent):
        return NotImplemented
    exponent = python_number(exponent)
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool) and isinstance(input, Tensor):
        if isinstance(exponent, float) and input.dtype.kind not in "fc":  # int ** float: the default dtype
            input = Cast.apply(input, dtype=backend.get_default_dtype())
        elif input.dtype.kind in "biu":
            if exponent < 0:
                raise DtypeError("Integers to negative integer powers are not allowed.")
            if input.dtype.kind == "b":  # bool ** 2 is int64, as PyTorch's (NumPy's is int8)
                input = Cast.apply(input, dtype=backend.int64)
        try:
            return PowConstant.apply(input, exponent=exponent)
        except OverflowError:  # (NumPy's, for an exponent past the integer dtype's range: uint8 ** 300)
            raise RuntimeError(f"value cannot be converted to type {input.dtype} without overflow") from None
    if type(exponent) is bool and isinstance(input, Tensor) and input._data.dtype.kind == "b":
        # bools to a bool power stay bools, as PyTorch's: x ** True is x, x ** False all True (NumPy's is int8)
        return Tensor._make(input._data | (not exponent))
    return binary(Pow, input, exponent)


@names("__rpow__")
def _reflected_pow(x, base):
    if left_to_python(base):
        return NotImplemented
    if type(base) in (int, float) and x._data.dtype.kind == "f":  # (its gradient takes ln of the number itself)
        return NumberPow.apply(x, base=float(base))
    return named_node(binary(Pow, base, x), Pow, "PowBackward2")  # (PyTorch's node for a number to a tensor power)


@names("__neg__")
def _neg(input):
    return Neg.apply(input)  # (which refuses bools, as PyTorch's)


names("__pos__")(positive)  # +x: x itself, bools refused


@names("__abs__")
def _absolute(x):
    return Abs.apply(x)


@names("square", function=False)
def square(input):
    """input · input; bools become int64 first, as PyTorch's (True · True would stay a bool)."""
    if input._data.dtype.kind == "b":
        input = Cast.apply(input, dtype=backend.int64)
    return input ** 2  # (PyTorch's square is pow(x, 2): its node PowBackward0, with x's one edge)


@names("maximum", function=False)
def maximum(input, other):
    """The larger of two tensors, elementwise (PyTorch's takes no number: clamp_min does)."""
    if input.__class__ is not Tensor or other.__class__ is not Tensor:  # (no call on the usual path)
        tensors_only("maximum", input, other)
    return binary(Maximum, input, other)


@names("minimum", function=False)
def minimum(input, other):
    """The smaller of two tensors, elementwise (PyTorch's takes no number: clamp_max does)."""
    if input.__class__ is not Tensor or other.__class__ is not Tensor:
        tensors_only("minimum", input, other)
    return binary(Minimum, input, other)




@names("where", function=False)
def _where_method(x, condition, other):
    """x.where(condition, other): x where condition holds, other elsewhere."""
    return where(condition, x, other)


@names("clone", function=False)
def clone(input, *, memory_format=None):
    """A copy, recorded: laid out as input where it fills its memory densely (PyTorch's default preserve_format:
    channels_last, a transpose), row-major otherwise, or as ``memory_format`` asks (contiguous_format: row-major;
    channels_last: N, H, W, C)."""
    if memory_format is None or getattr(memory_format, "name", None) == "preserve_format":
        return Clone.apply(input)
    order = getattr(memory_format, "order", None) or tuple(range(input.ndim))  # (contiguous_format: row-major)
    if input.ndim != len(order):
        raise RuntimeError(f"required rank {len(order)} tensor to use {memory_format.name} format")
    return Clone.apply(input, order=order)


@names("_filled_with")
def _filled_with(x, value, pytorch_name=None):
    """x's shape filled with ``value`` (a recorded fill_ or zero_, whose node PyTorch names)."""
    return Fill.apply(x, value, pytorch_name=pytorch_name)


for _name, _primitive in (("exp", Exp), ("log", Log), ("sqrt", Sqrt), ("sin", Sin), ("cos", Cos), ("tanh", Tanh),
                          ("sigmoid", Sigmoid)):  # autograd.exp etc.: ops/functions.py
    names(_name, function=False, inplace=f"{_name}_")(_floating_method(_primitive, _name))
