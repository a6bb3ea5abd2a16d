"""PyTorch's elementwise functions of two tensors (or a tensor and a number), each forward beside its local
derivative: atan2, hypot, logaddexp and logaddexp2, xlogy and xlog1py, lerp, float_power, heaviside, copysign,
fmax and fmin (the functions of one tensor: pointwise.py)."""

import math

from ..backend import errstate, xp
from ..errors import DtypeError, refuse_complex_extremum, refuse_unbroadcastable
from ..operands import _operand, real_part
from ..primitive import Primitive, named_node, node_named
from ..tensor import Tensor, tensor_from
from .broadcasting import unbroadcast
from .conjugation import conj
from .conversion import c_name, refuse_kinds, tensor_input, tensors_only, type_name
from .elementwise import Where, half_as_float32, promote, where
from .names import names
from .outputs import write_out
from .pointwise import _floating_only_pair, _floating_pair
from .predicates import WithoutDerivative
from .promotion import promoted_dtype


class Atan2(Primitive):
    """z = atan2(y, x), the angle of the point (x, y);
    dL/dy = dL/dz · x / (x² + y²),   dL/dx = -dL/dz · y / (x² + y²)"""

    def forward(self, y, x):
        return xp.arctan2(y, x)

    def backward(self, grad, z, y, x):
        recip = (x * x + y * y).reciprocal()
        # at (0, 0) 1 / 0 is replaced by 0 after it is taken, as PyTorch's: the gradient there is 0 (-0 · 0 gives
        # -0, as PyTorch's), and its own derivative NaN (inf · 0 in the reciprocal's), as PyTorch's
        recip = Where.apply(recip, Tensor._make(xp.zeros((), dtype=recip.dtype)), condition=recip._data != xp.inf)
        return (unbroadcast(grad * x * recip, y) if y.requires_grad else None,  # g · x · (1 / (x² + y²)) in this
                unbroadcast(grad * -y * recip, x) if x.requires_grad else None)  # order, as PyTorch's atan2_backward


@names("atan2", "arctan2", inplace=("atan2_", "arctan2_"))
def atan2(input, other, *, out=None):
    """The angle of the point (other, input), in (-π, π] (of real numbers only, as PyTorch's)."""
    tensors_only("atan2", input, other)
    input, other = _floating_pair(input, other)
    refuse_kinds(input, "atan2_cpu", "c")
    return write_out(Atan2.apply(input, other), out)


class Hypot(Primitive):
    """z = √(x² + y²) without overflow;   dL/dx = dL/dz · x / z,   dL/dy = dL/dz · y / z"""

    saves_output = True

    def forward(self, x, y):
        return xp.hypot(x, y)

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad * x / z, x) if x.requires_grad else None,
                unbroadcast(grad * y / z, y) if y.requires_grad else None)


@names("hypot", inplace="hypot_")
def hypot(input, other, *, out=None):
    """√(input² + other²), elementwise, without overflow."""
    tensors_only("hypot", input, other)
    return write_out(Hypot.apply(*_floating_only_pair(input, other, "hypot_cpu")), out)


class LogAddExp(Primitive):
    """z = ln(e^x + e^y) without overflow;   dL/dx = dL/dz · e^(x - z) = dL/dz · σ(x - y),
    dL/dy = dL/dz · σ(y - x)  (from x and y only: z may be changed in place later, as PyTorch allows;
    complex: · conj σ, z holomorphic; computed as PyTorch's, m + ln(1 + e^(n - m)) for m the operand of the larger
    real part and n the other, so z's imaginary part is m's plus a phase: not reduced to (-π, π])"""

    pytorch_name = "LogaddexpBackward0"  # (PyTorch's node for it)
    handles_complex = True

    def forward(self, x, y):
        if x.dtype.kind != "c":
            return xp.logaddexp(x, y)
        x_larger = x.real >= y.real
        larger, smaller = xp.where(x_larger, x, y), xp.where(x_larger, y, x)
        with errstate(divide="ignore", invalid="ignore", over="ignore"):
            shifted = xp.log1p(xp.exp(smaller - larger)) + larger
            # (two infinite real parts of one sign: PyTorch's ln(e^x + e^y) for +∞, the smaller operand for -∞)
            same_infinity = xp.isinf(smaller.real) & (smaller.real == larger.real)
            return xp.where(same_infinity, xp.where(larger.real > 0, xp.log(xp.exp(x) + xp.exp(y)), smaller), shifted)

    def backward(self, grad, z, x, y):
        if grad._data.dtype.kind == "c":
            return (unbroadcast(grad * conj((x - y).sigmoid()), x) if x.requires_grad else None,
                    unbroadcast(grad * conj((y - x).sigmoid()), y) if y.requires_grad else None)
        # g / (1 + e^(y - x)), PyTorch's formula (σ(x - y) · g was a unit off in a third of the values)
        return (unbroadcast(grad / ((y - x).exp() + 1.0), x) if x.requires_grad else None,
                unbroadcast(grad / ((x - y).exp() + 1.0), y) if y.requires_grad else None)


class LogAddExp2(Primitive):
    """z = log₂(2^x + 2^y);   dL/dx = dL/dz · 2^(x - z) = dL/dz · σ((x - y) ln 2),
    dL/dy = dL/dz · σ((y - x) ln 2)  (from x and y only, as LogAddExp)"""

    pytorch_name = "Logaddexp2Backward0"  # (PyTorch's node for it)

    def forward(self, x, y):
        return xp.logaddexp2(x, y)

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad * ((x - y) * math.log(2)).sigmoid(), x) if x.requires_grad else None,
                unbroadcast(grad * ((y - x) * math.log(2)).sigmoid(), y) if y.requires_grad else None)


@names("logaddexp")
def logaddexp(input, other, *, out=None):
    """ln(e^input + e^other), without overflow."""
    tensors_only("logaddexp", input, other)
    return write_out(LogAddExp.apply(*_floating_only_pair(input, other, "logaddexp_cpu")), out)


@names("logaddexp2")
def logaddexp2(input, other, *, out=None):
    """log₂(2^input + 2^other), without overflow."""
    tensors_only("logaddexp2", input, other)
    return write_out(LogAddExp2.apply(*_floating_only_pair(input, other, "logaddexp2_cpu")), out)


def _zero_on_edge(slope, x, y, edge):
    """dL/dx of x ln(y) (or x ln(1 + y)): grad · ln(...) where the logarithm is finite, 0 where x
    is 0 and y at or past the logarithm's edge (grad itself enters through xlogy, so a zero
    grad gives 0 even there)."""
    condition = xp.broadcast_to((x._data == 0) & (y._data <= edge), slope.shape)
    return Where.apply(Tensor._make(xp.zeros((), dtype=slope.dtype)), slope, condition=condition)


class Xlogy(Primitive):
    """z = x ln y, and 0 where x = 0 (unless y is NaN);
    dL/dx = dL/dz · ln y (0 where x = 0 and y ≤ 0, as PyTorch's: z is 0 on that edge),
    dL/dy = dL/dz · x / y"""

    def forward(self, x, y):
        with errstate(divide="ignore", invalid="ignore"):
            product = x * xp.log(y)
        return xp.where((x == 0) & ~xp.isnan(y), xp.zeros((), dtype=product.dtype), product)

    def backward(self, grad, z, x, y):
        grad_x = grad_y = None
        if x.requires_grad:
            grad_x = unbroadcast(_zero_on_edge(Xlogy.apply(grad, y), x, y, 0.0), x)
        if y.requires_grad:
            grad_y = unbroadcast(grad * x / y, y)
        return grad_x, grad_y


@names("xlogy", inplace="xlogy_")
def xlogy(input, other, *, out=None):
    """input · ln(other), defined as 0 where input is 0 (entropy terms p ln p at p = 0); real numbers only, as
    PyTorch's."""
    input, other = _floating_pair(input, other)
    refuse_kinds(input, "xlogy_cpu", "c")
    return write_out(Xlogy.apply(input, other), out)


class Xlog1py(Primitive):
    """z = x ln(1 + y), and 0 where x = 0 (unless y is NaN);
    dL/dx = dL/dz · ln(1 + y) (0 where x = 0 and y ≤ -1),   dL/dy = dL/dz · x / (1 + y)"""

    pytorch_name = "SpecialXlog1PyBackward0"  # (PyTorch's node for it)

    def forward(self, x, y):
        with errstate(divide="ignore", invalid="ignore"):
            product = x * xp.log1p(y)
        return xp.where((x == 0) & ~xp.isnan(y), xp.zeros((), dtype=product.dtype), product)

    def backward(self, grad, z, x, y):
        grad_x = grad_y = None
        if x.requires_grad:
            grad_x = unbroadcast(_zero_on_edge(Xlog1py.apply(grad, y), x, y, -1.0), x)
        if y.requires_grad:
            grad_y = unbroadcast(grad * x / (y + 1.0), y)
        return grad_x, grad_y


def xlog1py(input, other, *, out=None):
    """input · ln(1 + other), 0 where input is 0 (``special.xlog1py``)."""
    input, other = _floating_pair(input, other)
    refuse_kinds(input, "xlog1py_cpu", "c")
    return write_out(Xlog1py.apply(input, other), out)


class Lerp(Primitive):
    """z = start + weight · (end - start);   dL/dstart = dL/dz · (1 - weight),
    dL/dend = dL/dz · weight,   dL/dweight = dL/dz · (end - start)

    Computed as PyTorch does, from the nearer end: start + w (end - start) for w < 1/2,
    end - (end - start)(1 - w) otherwise, so that w = 1 gives end exactly. Complex operands take the
    factors' conjugates.
    """

    handles_complex = True
    # start and end only for dL/dweight; the weight whichever gradient is wanted (PyTorch's LerpBackward1 saves it
    # for dL/dstart and dL/dend alike, start and end only where the weight needs a gradient)
    saved_input_readers = ((2,), (2,), (0, 1, 2))

    def forward(self, start, end, weight):
        if start.dtype == xp.float16:  # in float32, rounded once, as PyTorch's kernel
            return self.forward(*(half_as_float32(xp.asarray(a)) for a in (start, end, weight))).astype(xp.float16)
        difference = end - start
        return xp.where(xp.abs(weight) < 0.5, start + weight * difference, end - difference * (1 - weight))

    def backward(self, grad, z, start, end, weight):
        return (unbroadcast(grad * conj(1.0 - weight), start) if start.requires_grad else None,
                unbroadcast(grad * conj(weight), end) if end.requires_grad else None,
                unbroadcast(grad * conj(end - start), weight) if weight.requires_grad else None)


@names("lerp")
def lerp(input, end, weight, *, out=None):
    """input + weight · (end - input): the point a fraction ``weight`` of the way to end. As PyTorch's, input
    and end have one dtype, and so has a weight tensor with dims; a 0-d weight tensor takes part in the type
    promotion (an integer input with a 0-d float weight is computed in floats); integers are refused."""
    for name, other in (("end", end), ("weight", weight)):
        if isinstance(other, Tensor) and other.dtype != input.dtype and (name == "end" or other.ndim):
            raise DtypeError(f"expected dtype {c_name(input.dtype)} for `{name}` but "
                             f"got dtype {c_name(other.dtype)}")
    if not isinstance(weight, Tensor):
        refuse_kinds(input, "lerp_kernel_scalar", "biu")
        if isinstance(weight, complex) and input.dtype.kind != "c":  # (read as the input's dtype: 1+0j is 1)
            weight = real_part(weight, c_name(input.dtype))
        if input.dtype == xp.float16 and isinstance(end, Tensor) and end.dtype == xp.float16:
            # the number kept in float32, not rounded to float16 (0.3 would become 0.2998), as PyTorch's kernel
            return write_out(named_node(lerp(input.float(), end.float(), weight).half(), None, "LerpBackward0",
                                        (input, end)), out)
        weight = _operand(weight, input)
    else:
        dtype = promoted_dtype(input, weight)
        input, end, weight = (t if t.dtype == dtype else t.to(dtype) for t in (input, end, weight))
        refuse_kinds(input, "lerp_kernel_tensor", "biu")
        return write_out(Lerp.apply(input, end, weight, pytorch_name="LerpBackward1"), out)  # (PyTorch's overload)
    return write_out(Lerp.apply(input, end, weight), out)


def _float_power_dtype(input, exponent):
    """float64, or complex128 where either operand is complex: the dtype float_power computes in."""
    complex_ = any(isinstance(v, complex) or isinstance(v, Tensor) and v.dtype.kind == "c" for v in (input, exponent))
    return xp.complex128 if complex_ else xp.float64


@names("float_power")
def float_power(input, exponent, *, out=None):
    """input ** exponent in float64, or in complex128 where either is complex (as PyTorch's)."""
    wide = _float_power_dtype(input, exponent)
    complex_ = wide == xp.complex128
    input = input.to(wide) if isinstance(input, Tensor) else tensor_from(input, dtype=wide)
    if isinstance(exponent, Tensor):
        exponent = exponent.to(wide)
    else:  # (a complex number exponent: x ** 0.5 of a complex x must not take the real path)
        exponent = complex(exponent) if complex_ else float(exponent)
    if out is not None and out.dtype != wide:  # (a float32 out would silently lose the precision the op is for)
        raise RuntimeError(f"the output given to float_power has dtype {type_name(out.dtype)} but the operation's "
                           f"result requires dtype {type_name(xp.dtype(wide))}")
    return write_out(input ** exponent, out)


@names("float_power_", function=False)
def float_power_(input, exponent):
    """input = input ** exponent, which float_power computes in float64 (complex128): so input must have that dtype,
    as PyTorch asks (a float32 input would silently lose the precision the op is for)."""
    wide = _float_power_dtype(input, exponent)
    if input.dtype != wide:
        raise RuntimeError(f"the base given to float_power_ has dtype {type_name(input.dtype)} but the operation's "
                           f"result requires dtype {type_name(xp.dtype(wide))}")
    return input._write_back(float_power, (exponent,), {})


@names("heaviside", inplace="heaviside_")
def heaviside(input, values, *, out=None):
    """0 where input < 0, 1 where input > 0, ``values`` where input is 0 (NaN gives 0, as PyTorch). input and values
    (a tensor, not a number) must have one dtype (PyTorch promotes neither). It has no derivative: recorded where
    an argument requires grad, so that a backward pass through it raises, as PyTorch's (a surrogate gradient is the
    program's to write), instead of leaving that argument's share of the gradient out."""
    tensors_only("heaviside", input, values, "values")
    x, v = input._data, values._data
    if x.dtype.kind == "c" or v.dtype.kind == "c" or out is not None and out.dtype.kind == "c":  # (checked first)
        raise DtypeError("heaviside is not yet implemented for complex tensors.")
    if x.dtype != v.dtype:
        raise DtypeError("heaviside is not yet implemented for tensors with different dtypes.")
    refuse_unbroadcastable(x.shape, v.shape)  # (NumPy's where would raise its ValueError)
    steps = xp.where(x == 0, v, x > 0).astype(xp.result_type(x, v))
    if out is None and (input.requires_grad or values.requires_grad):
        return WithoutDerivative.apply(input, values, values=steps, kernel="heaviside")
    return write_out(Tensor._make(steps), out)


class Copysign(Primitive):
    """z = |x| with the sign (bit) of y;   dL/dx = dL/dy · z / x (0 where x = 0),   dL/dy = 0

    PyTorch's rule, z / x, is NaN at an infinite or NaN x, and the output depends on y (its gradient, 0, flows)
    even where x does not require grad."""

    saves_output = True
    saved_input_readers = ((0,), ())  # x only for dL/dx, y for none: PyTorch's node saves x where x needs a gradient

    def forward(self, x, y):
        return xp.copysign(x, y)  # (a NaN's sign bit copied too, as PyTorch's)

    def backward(self, grad, z, x, y):
        with errstate(invalid="ignore", divide="ignore"):
            ratio = xp.where(x._data == 0, 0.0, z._data / x._data).astype(x.dtype)
        return (unbroadcast(grad * Tensor._make(ratio), x) if x.requires_grad else None,
                unbroadcast(Tensor._make(xp.zeros(grad.shape, grad.dtype)), y) if y.requires_grad else None)


@names("copysign", inplace="copysign_")
def copysign(input, other, *, out=None):
    """|input| with the sign of other (signed zeros included); complex numbers have no sign to copy."""
    tensor_input("copysign", input)
    node = "CopysignBackward0" if isinstance(other, Tensor) else "CopysignBackward1"
    input, other = _floating_pair(input, other)
    refuse_kinds(input, "copysign_cpu", "c")
    refuse_unbroadcastable(input.shape, other.shape)
    return write_out(Copysign.apply(input, other, pytorch_name=node), out)


class Fmax(Primitive):
    """z = fmax(x, y), the larger, a NaN ignored (NaN only where both are): x where x >= y or y is NaN, else y;
    dL/dx = dL/dz there, dL/dy the rest. PyTorch's forward rule gives a tie ẏ, where its backward gives x the
    gradient: ż = ẏ + [x > y or y is NaN] (ẋ − ẏ) (fmin's rule is its backward read forward: a composite)."""

    pytorch_name = "FmaxBackward0"

    def forward(self, x, y):
        refuse_complex_extremum(x, "fmax")  # (x and y share a dtype: promoted by fmax)
        return xp.where(_x_chosen(x, y), x, y)

    def backward(self, grad, z, x, y):
        x_side = Tensor._make(xp.broadcast_to(_x_chosen(x._data, y._data), grad.shape))
        return (unbroadcast(where(x_side, grad, 0.0), x) if x.requires_grad else None,
                unbroadcast(where(x_side, 0.0, grad), y) if y.requires_grad else None)

    def jvp(self, tangents, z, x, y):
        x_t, y_t = tangents
        return y_t + ((x > y) | y.isnan()).to(x_t.dtype) * (x_t - y_t)


def _x_chosen(x, y):
    """Where fmax takes x (arrays): x >= y, or y is NaN."""
    return (x >= y) | xp.isnan(y)


@names("fmax")
def fmax(input, other, *, out=None):
    """The larger of input and other elementwise, ignoring a NaN (NaN only where both are);
    the gradient goes to input where input >= other or other is NaN, as PyTorch's."""
    tensors_only("fmax", input, other)
    input, other = promote(input, other)
    refuse_unbroadcastable(input.shape, other.shape)
    return write_out(Fmax.apply(input, other), out)


@names("fmin")
@node_named("FminBackward0")
def fmin(input, other, *, out=None):
    """The smaller of input and other elementwise, ignoring a NaN (NaN only where both are)."""
    tensors_only("fmin", input, other)
    input, other = promote(input, other)  # (shapes that do not broadcast: the comparison raises PyTorch's error)
    refuse_complex_extremum(input, "fmin")
    # (the choice is made here, so the node reads neither; PyTorch's FminBackward0 saves both: writing one in
    # place after the forward refuses the backward, as there)
    return write_out(named_node(where((input <= other) | other.isnan(), input, other), None, None,
                                saves=(input, other)), out)
