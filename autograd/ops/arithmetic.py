"""The functional spellings of arithmetic with PyTorch's keyword names: ``autograd.add(input,
other, alpha=1, out=None)``, sub, mul, div (rounding_mode), true_divide, floor_divide, rsub,
pow, neg, and their NumPy-style aliases (subtract, multiply, divide, negative, absolute).

They are the operators of tensor.py (same primitives, same gradients) with PyTorch's extra
arguments. Integer division gives the default floating dtype, as in PyTorch.
"""

import warnings

from ..backend import float16, float32, float64, xp
from ..errors import refuse_bool_subtraction
from ..graph import program_stacklevel
from ..operands import _is_bool, _operand, left_to_python, python_number, real_part
from ..primitive import Primitive, named_node, node_named
from ..sparse_layout import is_sparse
from ..tensor import Tensor, tensor_from
from . import elementwise
from .broadcasting import unbroadcast
from .conversion import c_name, refuse_kinds, tensor_input
from .elementwise_unary import Abs
from .names import names
from .outputs import write_out
from .predicates import WithoutDerivative
from .promotion import common_dtype, promoted_dtype
from .rounding import _refuse_integer_division_by_zero, remainder
from .selection import zero_gradient


def _pair(input, other):
    """input and other as Tensors (numbers made the other's dtype); a sparse tensor (autograd.sparse) stays one: its
    own operators give ``autograd.add(S, S)``, ``autograd.mul(S, 2)``, ... as PyTorch's."""
    if not isinstance(input, Tensor) and not is_sparse(input):
        input = _operand(input, other) if isinstance(other, Tensor) else tensor_from(input)
    if not isinstance(other, Tensor) and not is_sparse(other) and not is_sparse(input):
        other = _operand(other, input)
    return input, other


def _scaled(other, alpha, input):
    """alpha · other, for input + alpha · other (a floating alpha would turn integer sums floating: refused)."""
    if isinstance(alpha, float) and input.dtype.kind in "biu" and other.dtype.kind in "biu":
        raise RuntimeError("For integral input tensors, argument alpha must not be a floating point number.")
    if isinstance(alpha, complex) and input.dtype.kind != "c" and other.dtype.kind != "c":
        raise RuntimeError("For non-complex input tensors, argument alpha must not be a complex number.")
    if type(alpha) is bool and not (input.dtype.kind == "b" and other.dtype.kind == "b"):
        raise RuntimeError("Boolean alpha only supported for Boolean results.")
    if alpha == 1:
        return other
    if input.dtype.kind == "b" and other.dtype.kind == "b":  # PyTorch casts alpha to the bool result: 0 is False,
        return other * bool(alpha)  # any other number True (an int alpha made the sum int64)
    common = promoted_dtype(input, other)
    if other.dtype != common:  # PyTorch scales in the result's dtype: a float32 other beside a float64 input is
        other = other.to(common)  # not rounded to float32 once more after the multiplication by alpha
    return other * alpha


def number_argument(op, name, number):
    """A Number argument (add's alpha, addcdiv's value) as PyTorch's argument parser takes it: a 0-d tensor outside
    the graph passes as its number; a tensor with dims, or one that requires grad, is refused (PyTorch records no
    gradient for a Number: a learnt step size in ``p.add(g, alpha=-lr)`` would get none there, so it says so)."""
    if isinstance(number, Tensor) and (number.ndim != 0 or number.requires_grad):
        raise TypeError(f"{op}(): argument '{name}' must be Number, not Tensor")
    return number


def _number_first(name, signature, number):
    """``number``, given first as PyTorch 1's signatures put it (optimizers of that time still call
    ``p.data.addcdiv_(-step_size, exp_avg, denom)``): read as PyTorch reads it, with its warning (at the
    program's line)."""
    warnings.warn(f"This overload of {name} is deprecated: the number comes last now, as in {signature}",
                  UserWarning, stacklevel=program_stacklevel())
    return number.item() if isinstance(number, Tensor) else number


class ScaledSum(Primitive):
    """z = x + α · y for two float16 or two float32 tensors and a number α, as PyTorch's CPU kernel computes it: one
    fused multiply-add, α first rounded to the tensors' dtype, the product exact and the sum rounded once, here a
    precision up (float16 in float32, float32 in float64) and rounded back;   dL/dx = dL/dz,   dL/dy = α · dL/dz

    One node, named as PyTorch's (AddBackward0, or SubBackward0 for x - α · y, given as ``pytorch_name`` with -α),
    where casts around a wider sum showed ToCopyBackward0 in the graph and in the tensor's repr."""

    saves_inputs = False  # backward needs no input's values
    op_name = "Add"

    def forward(self, x, y):
        wide = float32 if x.dtype == float16 else float64
        return xp.add(x, y.astype(wide) * wide.type(x.dtype.type(self.alpha)), dtype=wide).astype(x.dtype)

    def backward(self, grad, z, x, y):
        # (PyTorch's dL/dy multiplies by α as given, not rounded: dL/dz · α is its number product)
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(grad * self.alpha, y) if y.requires_grad else None)


def _fused_scaled_sum(input, other, alpha, pytorch_name=None):
    """input + alpha · other (ScaledSum) for two float16 or two float32 tensors and a number alpha ≠ 1: rounding
    alpha · other first put a tenth (float16) to a quarter (float32) of the sums a unit off; SGD's
    ``p.add_(grad, alpha=-lr)`` drifted from PyTorch's. None for any other operands."""
    alpha = _alpha_number(alpha)
    if alpha is None or alpha == 1 or not isinstance(input, Tensor) or not isinstance(other, Tensor):
        return None
    dtype = input._data.dtype
    if dtype != other._data.dtype or (dtype != float16 and dtype != float32):
        return None
    return ScaledSum.apply(input, other, alpha=alpha, pytorch_name=pytorch_name)


def _alpha_number(alpha):
    """alpha as a Python int or float (a NumPy scalar, or a one-element tensor outside the graph, as LBFGS's
    ``q.add_(s, alpha=-al[i])`` passes it: PyTorch reads it as a number); None for anything else."""
    if isinstance(alpha, Tensor):
        if alpha.requires_grad or alpha.numel() != 1 or alpha._data.dtype.kind not in "iuf":
            return None
        alpha = alpha.item()
    alpha = python_number(alpha)
    return alpha if type(alpha) in (int, float) else None


def fused_add_into(array, other, alpha):
    """``array += alpha · other`` on arrays (no graph), fused as ``_fused_scaled_sum``; False where that does not
    apply (the caller adds as before)."""
    dtype, alpha = array.dtype, _alpha_number(alpha)
    if alpha is None or other.dtype != dtype or (dtype != float16 and dtype != float32):
        return False
    wide = float32 if dtype == float16 else float64
    product = other.astype(wide)
    product *= wide.type(dtype.type(alpha))  # (exact: two numbers of half the wide mantissa)
    array[...] = xp.add(array, product, dtype=wide)
    return True


@names("add")
def add(input, other, *number_first, alpha=1, out=None):
    """input + alpha · other (or PyTorch 1's add(input, alpha, other), with its warning)"""
    if number_first:
        other, alpha = number_first[0], _number_first("add", "add(Tensor input, Tensor other, *, Number alpha)",
                                                      other)
    alpha = number_argument("add", "alpha", alpha)
    fused = _fused_scaled_sum(input, other, alpha)
    if fused is not None:
        return write_out(fused, out)
    input, other = _pair(input, other)
    return write_out(input + _scaled(other, alpha, input), out)


@names("sub", "subtract", inplace="subtract_")
def sub(input, other, *number_first, alpha=1, out=None):
    """input - alpha · other (or PyTorch 1's sub(input, alpha, other), with its warning)"""
    if number_first:
        other, alpha = number_first[0], _number_first("sub", "sub(Tensor input, Tensor other, *, Number alpha)",
                                                      other)
    refuse_bool_subtraction(_is_bool(input), _is_bool(other))  # (before _pair: it would make True a number)
    number = _alpha_number(number_argument("sub", "alpha", alpha))
    fused = None if number is None else _fused_scaled_sum(input, other, -number, "SubBackward0")
    if fused is not None:
        return write_out(fused, out)
    input, other = _pair(input, other)
    return write_out(input - _scaled(other, alpha, input), out)


@names("rsub")
def rsub(input, other, *, alpha=1):
    """other - alpha · input (PyTorch's node RsubBackward0, or RsubBackward1 for a number other)"""
    tensor_input("rsub", input)
    name = "RsubBackward0" if isinstance(other, Tensor) else "RsubBackward1"
    input, other = _pair(input, other)
    return named_node(other - _scaled(input, alpha, other), None, name, (input, other))


@names("mul", "multiply", inplace="multiply_")
def mul(input, other, *, out=None):
    """input · other"""
    if isinstance(input, Tensor) and not isinstance(other, Tensor) and not is_sparse(other):
        # as the operator: a number keeps its value
        return write_out(elementwise.binary(elementwise.Mul, input, other), out)  # (float16 · 0.1 in float32)
    input, other = _pair(input, other)
    return write_out(input * other, out)


class RoundedDiv(Primitive):
    """z = x / y rounded toward zero ('trunc') or down ('floor'): piecewise constant, dL/dx = dL/dy = 0"""

    # backward reads no values, but PyTorch's DivBackward2 saves y, and x where y needs a gradient: writing one
    # in place after the forward refuses the backward there, as PyTorch's
    saved_input_readers = ((1,), (0, 1))

    def forward(self, x, y):
        _refuse_integer_division_by_zero(x, y)
        if self.rounding_mode == "floor":
            return xp.floor_divide(x, y)
        if x.dtype.kind in "biu":  # exact for integers (both operands share a dtype): floor, then toward zero
            floor = xp.floor_divide(x, y)
            return floor + ((xp.remainder(x, y) != 0) & ((x < 0) != (y < 0)))
        return xp.trunc(x / y)

    def backward(self, grad, z, x, y):
        return (zero_gradient(x, grad) if x.requires_grad else None,
                zero_gradient(y, grad) if y.requires_grad else None)


@names("div", "divide", "true_divide", inplace=("divide_", "true_divide_"))
def div(input, other, *, rounding_mode=None, out=None):
    """input / other; rounding_mode 'trunc' rounds toward zero, 'floor' down (then integers stay integers)."""
    if not isinstance(input, Tensor):
        if is_sparse(input):  # a sparse tensor's own division (by a number)
            return write_out(input.div(other, rounding_mode=rounding_mode), out)
        if not isinstance(other, Tensor):  # two numbers: a 0-d tensor, as PyTorch
            input = tensor_from(input)
    if rounding_mode is None:  # true division, as the operator: a number is not first made the tensor's dtype
        return write_out(elementwise.binary(elementwise.Div, input, other), out)
    input, other = _pair(input, other)
    if rounding_mode not in ("trunc", "floor"):
        raise RuntimeError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                           f"'{rounding_mode}'")
    input, other = elementwise.promote(input, other)  # PyTorch's promotion, not NumPy's (float16 // int64 is float16)
    refuse_kinds(input, f"div_{rounding_mode}_cpu", "bc")  # (NumPy: int8 for bools)
    # (PyTorch's node for div with a rounding mode; a Python number is a tensor there too)
    return write_out(RoundedDiv.apply(input, other, rounding_mode=rounding_mode, pytorch_name="DivBackward2"), out)


@names("floor_divide", inplace="floor_divide_")
def floor_divide(input, other, *, out=None):
    """input / other rounded down: div's with rounding_mode="floor", but where that has gradient 0, PyTorch gives
    floor_divide (and //) no derivative: recorded so that a backward pass through it raises, as PyTorch's."""
    quotient = div(*(x.detach() if isinstance(x, Tensor) else x for x in (input, other)), rounding_mode="floor")
    if not isinstance(quotient, Tensor):  # (a sparse tensor's own division)
        return write_out(quotient, out)
    operands = [x for x in (input, other) if isinstance(x, Tensor)]
    return write_out(WithoutDerivative.apply(*operands, values=quotient._data, kernel="floor_divide"), out)


@names("__floordiv__", function=False)
def _floordiv(input, other):
    """x // y: floor division (Tensor has no // of its own)."""
    if left_to_python(other):
        return NotImplemented
    return floor_divide(input, other)


@names("__rfloordiv__", function=False)
def _rfloordiv(input, other):
    if left_to_python(other):
        return NotImplemented
    return floor_divide(other, input)


@names("__mod__", function=False)
def _mod(input, other):
    """x % y: the remainder with y's sign, as Python's."""
    if left_to_python(other):
        return NotImplemented
    return remainder(input, other)


@names("__rmod__", function=False)
def _rmod(input, other):
    if left_to_python(other):
        return NotImplemented
    return remainder(other, input)


@names("pow", inplace="pow_")
def pow(input, exponent, *, out=None):
    """input ** exponent; either may be a number (autograd.pow(2, x) is 2 ** x)."""
    if not isinstance(input, Tensor):
        if not isinstance(exponent, Tensor):  # (Python's own number ** number otherwise)
            raise TypeError(f"pow() received an invalid combination of arguments - got ({type(input).__name__}, "
                            f"{type(exponent).__name__}): one of them must be a Tensor")
        return write_out(exponent.__rpow__(input), out)
    return write_out(input**exponent, out)


@names("neg", "negative", inplace="negative_")
def neg(input, *, out=None):
    """-input (the operator's, which refuses a bool tensor as PyTorch does)"""
    return write_out(-input, out, same_dtype=True)


@names("positive")
def positive(input):
    """input itself (for symmetry with negative); PyTorch refuses a bool tensor."""
    if input.dtype.kind == "b":
        raise RuntimeError("The `+` operator, on a bool tensor is not supported.")
    return input


@names("absolute")
def absolute(input, *, out=None):
    """|input|"""
    return write_out(Abs.apply(input), out, same_dtype=input.dtype.kind != "c")


def integer_value(value, *tensors):
    """addcmul's ``value`` as PyTorch reads it: a number of the tensors' result type, so a float is truncated when
    they are all integers (0.5 is 0 there, and the result stays an integer tensor), and a complex one is read as
    ``real_value`` reads it."""
    kind = type(value)
    if kind is Tensor:  # (a 0-d tensor outside the graph, number_argument's: PyTorch reads it as its number)
        value = value.item()
        kind = type(value)
    if kind is float and all(isinstance(t, Tensor) and t._data.dtype.kind in "iu" for t in tensors):
        return int(value)
    return real_value(value, *tensors) if kind is complex else value


def real_value(value, *tensors):
    """addcmul's and addcdiv's complex ``value`` beside tensors none of which is complex, as PyTorch converts it to
    their result's dtype: its real part where it has no imaginary one (2+0j is 2), refused where it has (the result
    would have become complex, or the imaginary part been dropped by an in-place write)."""
    if isinstance(value, Tensor):  # (a 0-d tensor outside the graph, number_argument's, read as its number)
        value = value.item()
    if type(value) is not complex or any(isinstance(t, Tensor) and t._data.dtype.kind == "c" for t in tensors):
        return value
    return real_part(value, c_name(common_dtype([t.dtype for t in tensors if isinstance(t, Tensor)])))


def in_common_dtype(input, tensor1, tensor2):
    """tensor1 and tensor2 in the dtype of all three, as PyTorch's kernel computes value · t1 · t2 (or / t2):
    float32 factors beside a float64 input are multiplied in float64, not rounded to float32 first. (Tensors
    with dimensions only: a 0-d one, which widens none, is left to the arithmetic's own promotion.)"""
    tensors = (input, tensor1, tensor2)
    if not all(isinstance(t, Tensor) and t.ndim for t in tensors) or len({t.dtype for t in tensors}) == 1:
        return tensor1, tensor2
    dtype = common_dtype([t.dtype for t in tensors])
    return tensor1.to(dtype), tensor2.to(dtype)


@names("addcmul")
@node_named("AddcmulBackward0")
def addcmul(input, tensor1, tensor2, *number_first, value=1, out=None):
    """input + value · tensor1 · tensor2 (or PyTorch 1's addcmul(input, value, tensor1, tensor2), with its
    warning)"""
    if number_first:
        value = _number_first("addcmul", "addcmul(Tensor input, Tensor tensor1, Tensor tensor2, *, Number value)",
                              tensor1)
        tensor1, tensor2 = tensor2, number_first[0]
    if all(isinstance(t, Tensor) and t._data.dtype.kind == "b" for t in (tensor1, tensor2)):
        refuse_kinds(input, "addcmul_cpu_out", "b")  # (the kernel runs in the common dtype: bools with ints are ints)
    value = integer_value(number_argument("addcmul", "value", value), input, tensor1, tensor2)
    if all(isinstance(t, Tensor) and t._data.dtype == float16 for t in (input, tensor1, tensor2)):
        # in float32, rounded once, as PyTorch's kernel (value · t1 · t2 rounded at each step came out a unit off)
        return write_out(addcmul(input.float(), tensor1.float(), tensor2.float(), value=value).half(), out)
    tensor1, tensor2 = in_common_dtype(input, tensor1, tensor2)
    product = tensor1 * tensor2
    return write_out(input + (product if value == 1 else product * value), out)


def refuse_integer_addcdiv(tensor1, tensor2):
    if all(isinstance(t, Tensor) and t.dtype.kind in "iub" for t in (tensor1, tensor2)):
        # (PyTorch's words, its two spaces included: programs match them)
        raise RuntimeError("Integer division with addcdiv is no longer supported, and in a future  release addcdiv "
                           "will perform a true division of tensor1 and tensor2. The historic addcdiv behavior can be "
                           "implemented as (input + value * torch.trunc(tensor1 / tensor2)).to(input.dtype) for "
                           "integer inputs and as (input + value * tensor1 / tensor2) for float inputs. The future "
                           "addcdiv behavior is just the latter implementation: (input + value * tensor1 / tensor2), "
                           "for all dtypes.")


@names("addcdiv")
@node_named("AddcdivBackward0")
def addcdiv(input, tensor1, tensor2, *number_first, value=1, out=None):
    """input + value · tensor1 / tensor2 (or PyTorch 1's addcdiv(input, value, tensor1, tensor2), with its
    warning). Integer (or bool) tensor1 and tensor2 are refused, as PyTorch refuses them: its addcdiv once divided
    them as integers, so it asks for the division meant."""
    if number_first:
        value = _number_first("addcdiv", "addcdiv(Tensor input, Tensor tensor1, Tensor tensor2, *, Number value)",
                              tensor1)
        tensor1, tensor2 = tensor2, number_first[0]
    value = real_value(number_argument("addcdiv", "value", value), input, tensor1, tensor2)
    refuse_integer_addcdiv(tensor1, tensor2)
    if all(isinstance(t, Tensor) and t._data.dtype == float16 for t in (input, tensor1, tensor2)):
        # in float32, rounded once, as PyTorch's kernel (as addcmul)
        return write_out(addcdiv(input.float(), tensor1.float(), tensor2.float(), value=value).half(), out)
    tensor1, tensor2 = in_common_dtype(input, tensor1, tensor2)
    # value · tensor1 first, then the division, as PyTorch's kernel orders it (the quotient scaled after rounded
    # otherwise: a few hundredths of the results a unit off)
    result = input + (tensor1 if value == 1 else tensor1 * value) / tensor2
    # what PyTorch's AddcdivBackward0 saves, where the quotient's node keeps value · tensor1: tensor2, and tensor1
    # where tensor2 needs a gradient (writing one in place after the forward refuses the backward, as there)
    return write_out(named_node(result, None, None, saves=(tensor2, tensor1) if tensor2.requires_grad else
                                (tensor2,)), out)
