"""Number-theoretic and floating-point-format ops: gcd, lcm (integers), ldexp, frexp,
nextafter (the bits of floats), and erfc, the complementary error function.

gcd and lcm are piecewise constant: no gradient; nextafter's is input's (PyTorch's). ldexp and frexp's mantissa scale
by powers of two, so their gradients are those scales (exact).
"""

import math

from ..backend import errstate, int32, xp
from ..index_watching import watch_returned_indices
from ..operands import _operand
from ..primitive import Primitive
from ..return_types import return_type
from ..tensor import Tensor
from .broadcasting import unbroadcast
from .conversion import c_name, refuse_kinds, tensors_only
from .elementwise import floating, promote, where
from .error_function import erfc as erfc_of_array
from .names import names
from .outputs import write_out
from .pointwise import _floating_pair
from .predicates import on_integers

FrexpResult = return_type("frexp", ["mantissa", "exponent"])


def _pair(input, other):
    if not isinstance(input, Tensor):
        input = _operand(input, other)
    return input, _operand(other, input)


def _integers(name, function):
    def op(input, other, *, out=None):
        tensors_only(name, input, other)
        x, y = _pair(input, other)
        return write_out(on_integers(function, x, y, name, kinds="iu", error=NotImplementedError), out)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} of two integer tensors (broadcasting; always >= 0; 0 with 0 gives 0)."
    names(name, inplace=f"{name}_")(op)


_integers("gcd", xp.gcd)
_integers("lcm", xp.lcm)


class Ldexp(Primitive):
    """y = x · 2^e;   dL/dx = dL/dy · 2^e,   dL/de = dL/dy · y · ln 2 (a floating e; an integer e has none)

    An integer e scales x exactly: no 2^e is formed, so nothing overflows before the product does: in float32,
    0 · 2^128 is 0 and 1e-30 · 2^128 is 3.4e8, as PyTorch's, where x · pow(2, e) gives NaN and inf (the gradient's
    ldexp, as exact). A floating e: x · pow(2, e), as PyTorch computes it. As PyTorch's LdexpBackward0 the node saves
    y and e (for dL/dx), not x: x may be written in place after the forward."""

    pytorch_name = "LdexpBackward0"
    saves_output = True  # (dL/de reads y: PyTorch's node saves it whatever needs a gradient)
    saved_input_readers = ((), (0,))  # x for no gradient, e for dL/dx

    def forward(self, x, exponent):
        if exponent.dtype.kind == "f":  # (NumberPow's power of two, then Mul's product: the composite's values)
            return x * xp.asarray(2.0, dtype=exponent.dtype) ** exponent
        with errstate(over="ignore"):
            return xp.ldexp(x, _ldexp_exponent(exponent))

    def backward(self, grad, y, x, exponent):
        if exponent._data.dtype.kind != "f":
            with errstate(over="ignore"):
                scaled = xp.ldexp(grad._data, _ldexp_exponent(exponent._data))
            return unbroadcast(Tensor._make(scaled), x), None
        grad_x = unbroadcast(grad * 2.0 ** exponent, x) if x.requires_grad else None
        grad_exponent = unbroadcast(grad * y * math.log(2.0), exponent) if exponent.requires_grad else None
        return grad_x, grad_exponent


def _ldexp_exponent(exponent):
    """An integer exponent array NumPy's ldexp takes (it has no loop for unsigned 64-bit integers)."""
    return exponent.astype(xp.int64) if exponent.dtype == xp.uint64 else exponent


@names("ldexp", inplace="ldexp_")
def ldexp(input, other, *, out=None):
    """input · 2^other;   dL/dinput = dL/dy · 2^other,   dL/dother = dL/dy · y · ln 2 (as PyTorch's,
    which computes it as input · pow(2, other)), in the dtype input and other promote to (float16 with
    integers stays float16); integers alone give the default dtype. An integer tensor exponent scales a floating
    input exactly (``Ldexp``), as PyTorch's: the power of two is never formed, so it cannot overflow on its own.
    (PyTorch's gradient there is dL/dy times 2^other computed in integers, 0 for a negative exponent; this one is
    the derivative.)"""
    tensors_only("ldexp", input, other)
    if other.dtype.kind in "iu" \
            and input.dtype.kind == "f":  # (integers scaled are PyTorch's input · pow(2, other): 0 · 2^200 is NaN)
        return write_out(Ldexp.apply(input, other), out)
    input, other = _floating_pair(input, other)
    if input._data.dtype.kind == "f" and input._data.dtype.itemsize >= 4:  # (float16 and complex: the composite)
        return write_out(Ldexp.apply(input, other), out)
    return write_out(input * (2.0 ** other), out)


@names("frexp")
def frexp(input, *, out=None):
    """(mantissa, exponent) with input = mantissa · 2^exponent, |mantissa| in [0.5, 1) (0 for 0);
    the exponent is int32. dL/dinput = dL/dmantissa / 2^exponent: the mantissa is input times an
    exact power of two, recorded as that product."""
    if input.dtype.kind != "f":
        raise RuntimeError("torch.frexp() only supports floating-point dtypes")
    if isinstance(out, (tuple, list)):  # (a lone tensor is write_out's to refuse)
        mantissa, exponent = out
        if mantissa.dtype != input.dtype:
            raise RuntimeError(f"torch.frexp() expects mantissa to have dtype {c_name(input.dtype)} but got "
                               f"{c_name(mantissa.dtype)}")
        if exponent.dtype != int32:
            raise RuntimeError(f"torch.frexp() expects exponent to have int dtype but got {c_name(exponent.dtype)}")
    _, exponent = xp.frexp(input._data)
    # 2^-exponent in two halves: whole, it overflows float16 for a subnormal input (2^-20 needs 2^20 > 65504)
    first = -exponent // 2
    one = xp.ones((), dtype=input.dtype)
    scaled = input * Tensor._make(xp.ldexp(one, first)) * Tensor._make(xp.ldexp(one, -exponent - first))
    return write_out(FrexpResult(*watch_returned_indices(scaled, Tensor._make(exponent.astype(int32)))), out)


class NextAfter(Primitive):
    """y = the next float after x towards other;   dL/dx = dL/dy where x != other (0 where y = x),
    dL/dother = 0

    y is x moved by one unit in the last place, and PyTorch differentiates it as x itself."""

    pytorch_name = "NextafterBackward0"  # (PyTorch's node for it)

    def forward(self, x, other):
        return xp.nextafter(x, other)

    def backward(self, grad, y, x, other):
        moved = Tensor._make(xp.broadcast_to(x._data != other._data, grad.shape))
        return (unbroadcast(where(moved, grad, 0.0), x), unbroadcast(grad, other) * 0.0)


@names("nextafter", inplace="nextafter_")
def nextafter(input, other, *, out=None):
    """The next float after input towards other (one unit in the last place); its gradient is
    input's (1, 0 where input = other), none reaches other, as PyTorch's."""
    tensors_only("nextafter", input, other)
    x, y = promote(input, other)
    if x.dtype.kind != "f":
        raise NotImplementedError(f"\"nextafter_cpu\" not implemented for '{x.dtype}'")
    return write_out(NextAfter.apply(x, y), out)


class Erfc(Primitive):
    """y = erfc(x) = 1 - erf(x) = 2/√π ∫_x^∞ e^(-t²) dt;   dL/dx = -dL/dy · 2/√π · e^(-x²)

    Computed directly (error_function.erfc), not as 1 - erf(x), which loses every digit once erf(x)
    rounds to 1 (x ≳ 6)."""

    def forward(self, x):
        return erfc_of_array(x).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return ((-(x * x)).exp() * (-2 / math.sqrt(math.pi)) * grad,)  # (in PyTorch's order, as erf's)


@names("erfc", inplace="erfc_")
def erfc(input, *, out=None):
    """erfc of a tensor (of real numbers only, as PyTorch's); integers and bools become the default dtype first."""
    x = floating(input)
    refuse_kinds(x, "erfc_vml_cpu", "c")
    return write_out(Erfc.apply(x), out)
