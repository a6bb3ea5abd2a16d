"""Elementwise primitives: each forward beside its local derivative (the functions of one tensor: exp, log,
tanh, sigmoid, relu, ... in elementwise_unary.py).

Binary ops broadcast as NumPy does; ``unbroadcast`` sums a gradient back to
the shape of the input it belongs to (the gradient of broadcasting is a sum).
A gradient is computed only for inputs that require one. The ops marked ``handles_complex``
conjugate where complex numbers need it (the rule is in conjugation.py). The names the ops go by
(Python's operators, the methods) are declared in operators.py.
"""

import math
import warnings

from .. import backend
from ..backend import errstate, select, xp
from ..errors import DtypeError, refuse_bool_subtraction, refuse_complex_extremum, refuse_unbroadcastable
from ..graph import modes, program_stacklevel
from ..index_watching import watches_index
from ..operands import _is_bool, _operand, python_number
from ..primitive import Primitive
from ..saved_tensor_views import saved_argument, saved_input
from ..tensor import Tensor, as_array
from ..write_door import _refuse_overflow
from .axes import inverse_permutation
from .broadcasting import unbroadcast
from .conjugation import conj
from .half_arithmetic import HalfDiv, HalfMul, half_with_number, number_beside_half
from .layouts import preserved_copy
from .outputs import write_out
from .promotion import promoted_dtype
from .selection import all_finite, zero_gradient


def promote(x, y):
    """Both operands as tensors of their common dtype (casts are recorded, so each gradient
    comes back in its own input's dtype)."""
    if not isinstance(x, Tensor):
        x = _operand(x, y)
    if not isinstance(y, Tensor):
        y = _operand(y, x)
    if x.dtype == y.dtype:
        return x, y
    dtype = promoted_dtype(x, y)
    return (x if x.dtype == dtype else Cast.apply(x, dtype=dtype),
            y if y.dtype == dtype else Cast.apply(y, dtype=dtype))


def floating(x):
    """x, or x cast to the default dtype when it holds integers or bools (exp of an int64 tensor
    is float32, as PyTorch's; NumPy's would be float64, a bool's float16)."""
    if not isinstance(x, Tensor):
        x = Tensor._make(as_array(x))
    return x if x._data.dtype.kind in "fc" else Cast.apply(x, dtype=backend.get_default_dtype())


def binary(op, x, y):
    """op(x, y) for tensors or numbers on either side, with PyTorch's type promotion
    (true division of integers gives the default floating dtype). A float16 tensor times or
    divided by a Python number (or a 0-d tensor after it) is computed in float32 and rounded once, as
    PyTorch's: the number itself is not rounded to float16 (1e5 would become inf, 0.1 lose digits). (PyTorch's
    sums and differences do round it first; NumPy's arithmetic does the same.)"""
    dtype = x._data.dtype if type(x) is Tensor else None
    if dtype is not None and dtype.kind == "f" and type(y) is Tensor and y._data.dtype is dtype:
        return op.apply(x, y)  # the common case: two floating tensors of one dtype
    if op is Div and (type(y) is float or type(y) is int) and dtype is not None and dtype.kind == "f" \
            and dtype.itemsize >= 4:  # a floating tensor over a Python number: the number is all the node keeps
        return DivConstant.apply(x, c=_operand(y, x)._data, number=y)
    if (op is Mul or op is Div) and half_with_number(x, y):
        return (HalfMul if op is Mul else HalfDiv).apply(x, number_beside_half(y))
    if (op is Mul or op is Div) and type(x) is not Tensor and half_with_number(y, x):
        if op is Mul:  # a number times the tensor: the tensor first, as PyTorch's node has them
            return HalfMul.apply(y, number_beside_half(x))
        return Cast.apply(binary(op, x, _widened(y)), dtype=backend.float16)
    if op is Sub:
        refuse_bool_subtraction(_is_bool(x), _is_bool(y))
    if op is Div and not _floating(x) and not _floating(y):
        # true division of integers: each operand becomes the default float first, as PyTorch's (not their common
        # integer dtype: a 0-d int8 -1 over a uint8 [1] is -1, not 255 / 1)
        x, y = promote(*(Cast.apply(v, dtype=backend.get_default_dtype()) if isinstance(v, Tensor) else v
                         for v in (x, y)))
    else:
        x, y = promote(x, y)
    return op.apply(x, y)


def _floating(value):
    """A floating or complex tensor, or a Python float or complex number."""
    return value._data.dtype.kind in "fc" if isinstance(value, Tensor) else isinstance(value, (float, complex))


def _widened(x):
    return Cast.apply(x, dtype=backend.float32) if type(x) is Tensor and x._data.dtype == backend.float16 else x


def half_as_float32(array):
    """A float16 array as float32, any other as it is: PyTorch computes float16 ops in float32 and rounds once,
    where a formula of several steps in float16 rounds at each (σ, 1/√x: a unit or two off)."""
    return array.astype(backend.float32) if array.dtype == backend.float16 else array


def row_major(array):
    """The array laid out row-major (itself when it is): the result of a PyTorch kernel that writes a contiguous
    output whatever its input's layout (softmax, cumsum, masked_fill of a transpose), so a view of it shares its
    memory, as PyTorch's does. (A meta array's copy is one too.)"""
    return array if array.flags.c_contiguous else array.copy(order="C")


class Add(Primitive):
    """z = x + y;   dL/dx = dL/dz,   dL/dy = dL/dz"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True

    def forward(self, x, y):
        return x + y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(grad, y) if y.requires_grad else None)


class Sub(Primitive):
    """z = x - y;   dL/dx = dL/dz,   dL/dy = -dL/dz"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True

    def forward(self, x, y):
        return x - y

    def backward(self, grad, z, x, y):
        return (unbroadcast(grad, x) if x.requires_grad else None,
                unbroadcast(Neg.apply_in_backward(grad), y) if y.requires_grad else None)


class Mul(Primitive):
    """z = x · y;   dL/dx = dL/dz · y,   dL/dy = dL/dz · x   (complex: · ȳ and · x̄)"""

    handles_complex = True
    saved_input_readers = ((1,), (0,))  # x is read only for dL/dy, y only for dL/dx

    def forward(self, x, y):
        return x * y

    def backward(self, grad, z, x, y):
        by_x, by_y = (conj(x), conj(y)) if grad._data.dtype.kind == "c" else (x, y)
        # (Mul itself, not the * operator: x, y and so dL/dz share one dtype, promoted before the forward)
        return (unbroadcast(Mul.apply_in_backward(grad, by_y), x) if x.requires_grad else None,
                unbroadcast(Mul.apply_in_backward(grad, by_x), y) if y.requires_grad else None)


class Div(Primitive):
    """z = x / y;   dL/dx = dL/dz / y,   dL/dy = -dL/dz · x / y² = -dL/dz · (x / y) / y   (complex: x̄, ȳ)

    The operands are kept, not z (as PyTorch's): z may then be written in place, as scores
    divided by √d are by masked_fill_. (x / y) / y, not x / y², which would underflow first."""

    handles_complex = True
    saved_input_readers = ((1,), (0, 1))  # x is read only for dL/dy; y for both

    def forward(self, x, y):
        return x / y

    def backward(self, grad, z, x, y):
        bx, by = (conj(x), conj(y)) if grad._data.dtype.kind == "c" else (x, y)
        return (unbroadcast(grad / by, x) if x.requires_grad else None,
                unbroadcast(-grad * ((bx / by) / by), y) if y.requires_grad else None)  # (PyTorch's grouping)


class DivConstant(Primitive):
    """z = x / c for a number c (x / 255, pixels / (size − 1));   dL/dx = dL/dz / c

    PyTorch's division by a Python number (a 0-d tensor that needs no gradient): the node keeps the number,
    not x, so x may be written in place afterwards (VoxelMorph's new_locs[:, i] = 2 * (new_locs[:, i] /
    (shape[i] − 1) − 0.5)). c is Div's operand, a 0-d array of x's dtype: the same quotient."""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # a second backward raises, as PyTorch's: it saves the number as a 0-d tensor
    saves_number = True  # (shown as _saved_other)
    op_name = "Div"  # as the graph and PyTorch (DivBackward0) call it
    number_operand = True

    def forward(self, x):
        return x / self.c

    def backward(self, grad, z, x):
        return (DivConstant.apply(grad, c=self.c),)


class Pow(Primitive):
    """z = x^y;   dL/dx = dL/dz · y · x^(y-1),   dL/dy = dL/dz · z · ln x

    As PyTorch: dL/dx is 0 where y = 0 (x^0 is constant, even at x = 0), and dL/dy is 0
    where x = 0 and y >= 0 (z · ln x → 0 there; Re y >= 0 for complex y), never NaN. Complex x and y take the
    derivatives' conjugates (PyTorch's convention for a holomorphic z).
    """

    saves_output = True
    handles_complex = True
    pytorch_name = "PowBackward1"  # (PowBackward0 is a tensor to a number's power: PowConstant)

    def forward(self, x, y):
        if y.dtype.kind in "biu":  # (x has y's dtype: both were promoted alike)
            return _integer_power(x, y)
        return x**y

    _saved_exponent = saved_input(1)  # (PyTorch's PowBackward1 shows the exponent tensor it saved)

    def backward(self, grad, z, x, y):
        grad_x = grad_y = None
        with errstate(divide="ignore", invalid="ignore"):  # the masked-out branch may be inf or NaN
            if x.requires_grad:
                grad_x = unbroadcast(where(y == 0, 0.0, grad * conj(y * x ** (y - 1))), x)
            if y.requires_grad:
                at_zero = (x == 0) & ((y.real if y.is_complex() else y) >= 0)
                grad_y = unbroadcast(where(at_zero, 0.0, grad * conj(z * where(at_zero, 1.0, x).log())), y)
        return grad_x, grad_y


def _integer_power(x, y):
    """x^y of two integer arrays as PyTorch computes it. A negative power is the integer part of 1 / x^|y|:
    1 for x = 1, ±1 for x = -1 (by y's parity), 0 for any other x, 0 included (NumPy refuses them all).
    Bools have no power (PyTorch has no kernel for them; NumPy's would be int8)."""
    if y.dtype.kind == "b":
        raise NotImplementedError("\"pow\" not implemented for 'Bool'")
    negative = y < 0
    if not negative.any():
        return x**y
    power = x ** xp.where(negative, xp.zeros_like(y), y)
    inverse = xp.where(x == -1, 1 - 2 * (y & 1), x == 1)
    return xp.where(negative, inverse, power).astype(power.dtype, copy=False)


class PowConstant(Primitive):
    """y = x^c for a number c;   dL/dx = dL/dy · c · x^(c-1)  (0 for c = 0, as PyTorch)

    x^-0.5 is 1 / sqrt(x), as PyTorch computes it (NumPy's ** takes sqrt for 0.5 as PyTorch does, but pow for
    -0.5): so -0 gives -inf and -inf NaN, in x^-0.5 and in the derivative of x^0.5 (where pow gave inf and 0)."""

    handles_complex = True

    def forward(self, x):
        if self.exponent == -0.5 and x.dtype.kind == "f":
            with errstate(divide="ignore", invalid="ignore"):
                return (1 / xp.sqrt(half_as_float32(x))).astype(x.dtype, copy=False)
        return x**self.exponent

    _saved_exponent = saved_argument(lambda node: node.exponent)  # (PyTorch's PowBackward0 shows the number)

    def name(self):
        return "PowBackward0"  # (PyTorch's node for a number exponent; the drawings keep "PowConstant")

    def backward(self, grad, y, x):
        c = self.exponent
        x = conj(x)  # (the complex rule: dL/dx = dL/dy · conj(c x^(c-1)), c real)
        if c == 0:
            return (zero_gradient(x, grad),)
        # dL/dy · (c · x^(c-1)) in PyTorch's order: float16 rounds x^(c-1), then c · x^(c-1), then the product
        # (dL/dy · c first was a unit off in a fifth of the float16 gradients of x³, and of x² where subnormal)
        if c == 2:
            return (grad * (x * 2.0),)
        return (grad * (x ** (c - 1) * c),)


class NumberPow(Primitive):
    """z = c^y for a real number c and a floating tensor y (2 ** y, γ ** t);   dL/dy = dL/dz · (z · ln c), with
    ln c of the number itself, as PyTorch's pow_backward_exponent (ln of c rounded to y's dtype first put every
    float32 gradient of 0.9 ** t a unit or more off, float16 ones several units); 0 where c = 0 and y >= 0.
    The values are Pow's of c in y's dtype."""

    saves_output = True
    # (PyTorch's PowBackward2 saved the number as self, the tensor as the exponent)
    _saved_self = saved_argument(lambda node: node.base)
    _saved_exponent = saved_input(0)

    def forward(self, y):
        return xp.asarray(self.base, dtype=y.dtype) ** y

    def name(self):
        return "PowBackward2"  # (PyTorch's node for a number to a tensor's power)

    def backward(self, grad, z, y):
        c = self.base
        if c == 0:  # (z · ln 0 is 0 · -inf or 1 · -inf where y >= 0: PyTorch's gradient is 0 there)
            return (where(y >= 0, 0.0, grad * (z * -math.inf)),)
        return (grad * (z * (math.log(c) if c > 0 else math.nan)),)


class Maximum(Primitive):
    """z = max(x, y);   dL/dz goes to the larger input, split in half on a tie (where z is NaN, whole to both:
    see _split)"""

    def forward(self, x, y):
        refuse_complex_extremum(x, "maximum")
        return xp.maximum(x, y)

    def backward(self, grad, z, x, y):
        return _split(grad, x._data > y._data, x._data < y._data, x, y)

    def jvp(self, tangents, z, x, y):
        return _winners_tangent(tangents, x, y, x > y)


class Minimum(Primitive):
    """z = min(x, y);   dL/dz goes to the smaller input, split in half on a tie (where z is NaN, whole to both:
    see _split)"""

    def forward(self, x, y):
        refuse_complex_extremum(x, "minimum")
        return xp.minimum(x, y)

    def backward(self, grad, z, x, y):
        return _split(grad, x._data < y._data, x._data > y._data, x, y)

    def jvp(self, tangents, z, x, y):
        return _winners_tangent(tangents, x, y, x < y)


def _winners_tangent(tangents, x, y, x_won):
    """PyTorch's forward rule for max and min, ż = ẏ + w (ẋ − ẏ) with w = 1 where x won, ½ on a tie, 0 where y
    won: where a NaN makes the comparisons false it is ẏ (the backward, read forward, would give ẋ + ẏ there)."""
    x_t, y_t = tangents
    step = x_t - y_t
    return y_t + where(x == y, 0.5, x_won.to(step.dtype)) * step


def _split(grad, x_won, y_won, x, y):
    """dL/dz of max or min to its inputs, as PyTorch's: all of it to the winner, none to the loser (even where
    grad is infinite, selection.py), half to each on a tie. PyTorch's rule takes from an input only what it lost,
    so where a NaN made the comparisons false both ways each input receives the whole of dL/dz."""
    tie = x._data == y._data
    share_of_x = Tensor._make(xp.where(y_won, 0.0, xp.where(tie, 0.5, 1.0)).astype(grad.dtype))
    share_of_y = Tensor._make(xp.where(x_won, 0.0, xp.where(tie, 0.5, 1.0)).astype(grad.dtype))
    return (unbroadcast(selected_share(grad, share_of_x), x) if x.requires_grad else None,
            unbroadcast(selected_share(grad, share_of_y), y) if y.requires_grad else None)


def selected_share(grad, share):
    """grad ⊙ share (Tensors, differentiable), and 0 wherever the share is 0 whatever grad is there:
    PyTorch's backward selects where this multiplies (selection.py says when the two differ)."""
    portion = grad * share
    return portion if all_finite(portion._data) else where(share != 0, portion, 0.0)


class Where(Primitive):
    """z = x where condition else y;   dL/dx = dL/dz where condition else 0,   dL/dy the rest.

    The gradient is selected, not multiplied by the mask, as PyTorch's: an infinite or NaN
    dL/dz where y was chosen gives x a gradient of 0, not ∞ · 0 = NaN."""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the condition: freed after backward, as PyTorch frees it
    handles_complex = True

    def forward(self, x, y):
        return select(self.condition, x, y)

    def backward(self, grad, z, x, y):
        condition = xp.broadcast_to(self.condition, grad.shape)
        return (unbroadcast(where(condition, grad, 0.0), x) if x.requires_grad else None,
                unbroadcast(where(condition, 0.0, grad), y) if y.requires_grad else None)


@watches_index("condition", 0)
def where(condition, input=None, other=None, *, out=None):
    """Elementwise choice: input where ``condition`` holds, other elsewhere (either may be a number).
    With the condition alone, as PyTorch: the indices where it holds, one int64 vector per dim."""
    condition = condition._data if isinstance(condition, Tensor) else xp.asarray(condition)
    if input is None and other is None:
        return tuple(Tensor._make(i.astype(xp.int64)) for i in xp.nonzero(xp.atleast_1d(condition)))
    if condition.dtype == xp.uint8:  # PyTorch's deprecated reading of a byte mask (pytorch-crf's), with its warning
        warnings.warn("where received a uint8 condition tensor. This behavior is deprecated and will be removed in a "
                      "future version of PyTorch. Use a boolean condition instead.", UserWarning,
                      stacklevel=program_stacklevel())
        condition = condition.astype(bool)
    elif condition.dtype != bool:
        raise DtypeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype "
                         f"{condition.dtype}")
    x, y = python_number(input), python_number(other)  # (NumPy scalars count as Python numbers, as PyTorch's)
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = Tensor._make(as_array(x))
    for number, beside in ((x, y), (y, x)):  # an int an integer tensor cannot hold: PyTorch's refusal, not a wrap
        if type(number) is int and isinstance(beside, Tensor) and beside._data.dtype.kind in "iu":
            _refuse_overflow(number, beside._data.dtype)
    x, y = promote(x, y)
    if not x._data.shape == y._data.shape == condition.shape:
        refuse_unbroadcastable(condition.shape, x.shape, y.shape)
    if isinstance(out, Tensor) and out.dtype != x.dtype:  # (PyTorch's where casts into no other dtype)
        from .conversion import type_name  # (conversion imports this module: imported when needed)

        raise RuntimeError(f"Expected out type to be {type_name(x.dtype)} but got {type_name(out.dtype)}")
    return write_out(Where.apply(x, y, condition=condition), out)


class Scale(Primitive):
    """y = c · x for a number c (x * 0.5, 2 * x);   dL/dx = c · dL/dy

    PyTorch's mul by a Scalar: the number is a constant of the op, not a tensor to save
    or to promote against (x's floating dtype is kept, as NumPy does for a Python number).
    It is held as a 0-d array of x's dtype (``by_constant``), converted once for both passes."""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # a second backward raises, as PyTorch's: it saves the number as a 0-d tensor
    saves_number = True  # (shown as _saved_other)
    op_name = "Mul"  # as the graph and PyTorch (MulBackward0) call it
    number_operand = True

    def forward(self, x):
        return x * self.c

    def backward(self, grad, y, x):
        if modes.grad_enabled or self.apply_replaced:  # create_graph records c · dL/dy, a node a second
            return (Scale.apply(grad, c=self.c),)  # derivative goes through (apply_in_backward says when else)
        return (Tensor._make(grad._data * self.c),)  # a pass that records nothing needs no node, only the array
        # (forward's product written out: a call fewer per node, 3% of a 10^5-node chain's backward)


class Shift(Primitive):
    """y = x + c for a number c (x + 1, x - 0.5 as x + (-0.5): the same in floating point);
    dL/dx = dL/dy"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True
    written = "Add"  # "Sub" for x - c: how the graph and PyTorch name the node
    number_operand = True

    @property
    def op_name(self):
        return self.written

    def forward(self, x):
        return x + self.c

    def backward(self, grad, y, x):
        return (grad,)


class Rsub(Primitive):
    """y = c - x for a number c (1 - x);   dL/dx = -dL/dy

    PyTorch's rsub by a Scalar (RsubBackward1): the number is a constant of the op, so the node's one edge is x's
    (a constant tensor beside x showed a (None, 0) edge before it in next_functions)."""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True
    pytorch_name = "RsubBackward1"

    def forward(self, x):
        return self.c - x

    def backward(self, grad, y, x):
        return (Neg.apply_in_backward(grad),)


class MaskedFill(Primitive):
    """y = c where mask holds, x elsewhere, for a number c (0-d array of x's dtype);   dL/dx = dL/dy where the mask
    does not hold, 0 where it does

    PyTorch's masked_fill by a Scalar (MaskedFillBackward0): the number is a constant of the op, so the node's
    one edge is x's. A 0-d tensor value is Where's (MaskedFillBackward1, with the value's edge)."""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the mask: freed after backward, as PyTorch frees it
    handles_complex = True
    pytorch_name = "MaskedFillBackward0"

    def forward(self, x):
        return row_major(select(self.mask, self.value, x))  # (PyTorch's fills a contiguous clone of x)

    def backward(self, grad, y, x):
        return (unbroadcast(where(xp.broadcast_to(self.mask, grad.shape), 0.0, grad), x),)  # (a wider mask: summed)


class Neg(Primitive):
    """y = -x;   dL/dx = -dL/dy"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True

    def forward(self, x):
        if x.dtype.kind == "b":
            raise DtypeError("Negation, the `-` operator, on a bool tensor is not supported. If you are trying "
                             "to invert a mask, use the `~` or `logical_not()` operator instead.")
        return -x

    def backward(self, grad, y, x):
        return (Neg.apply_in_backward(grad),)


class Cast(Primitive):
    """y = x as another dtype;   dL/dx = dL/dy as x's dtype (its real part, for a real x made complex).
    y is laid out as PyTorch's _to_copy lays it out (preserve_format, as Clone): x's own layout where x fills its
    memory densely, else dense in the order of x's strides (row-major for an expanded x, where NumPy's order
    would follow the zero strides)."""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True
    pytorch_name = "ToCopyBackward0"

    def forward(self, x):
        if x.dtype.kind == "c" and self.dtype.kind == "b":
            cast = x != 0  # a complex number is true where either part is nonzero (NumPy's cast too), unwarned
        elif x.dtype.kind == "c" and self.dtype.kind != "c":
            warnings.warn("Casting complex values to real discards the imaginary part", UserWarning,
                          stacklevel=program_stacklevel())
            cast = x.real.astype(self.dtype)  # (PyTorch's warning, not NumPy's ComplexWarning)
        else:
            cast = x.astype(self.dtype, copy=False)
        return cast if cast is x or backend.is_dense(x) else preserved_copy(x, cast)

    def backward(self, grad, y, x):
        if grad._data.dtype.kind == "c" and x.dtype.kind != "c":
            grad = grad.real
        return (grad.to(x.dtype),)


class Fill(Primitive):
    """y = a constant c in x's shape (x.fill_(c) when recorded);   dL/dx = 0,   dL/dc = Σ dL/dy"""

    saves_inputs = False
    handles_complex = True  # (y is linear in c: Σ dL/dy is its gradient for complex c too)

    def forward(self, x, value):
        return xp.full(x.shape, value, dtype=x.dtype)

    def backward(self, grad, y, x, value):
        return (zero_gradient(x, grad) if x.requires_grad else None,
                unbroadcast(grad, value) if value.requires_grad else None)


class Clone(Primitive):
    """y = a copy of x;   dL/dx = dL/dy. ``order``: the dims from the outermost in memory (channels_last's, or
    row-major's); else PyTorch's preserve_format: x's own layout where x fills its memory densely (a transpose,
    channels_last), and otherwise dense strides in the order of x's (infer_dense_strides: row-major for a slice
    of a row-major tensor)."""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True
    order = None

    def forward(self, x):
        if self.order is None:
            return preserved_copy(x)
        return x.transpose(self.order).copy().transpose(inverse_permutation(self.order))  # (copy: a new array, always)

    def backward(self, grad, y, x):
        return (grad,)
