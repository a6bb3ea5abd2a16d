"""Complex numbers and their gradients: ``conj()``, ``.real``, ``.imag``, ``angle()``, ``sgn()``,
``view_as_real`` / ``view_as_complex``, ``complex(real, imag)``, ``polar(abs, angle)``, ``isreal()``, and
the conjugate transposes ``.H`` and ``.mH``.

The gradient of a complex tensor is PyTorch's: for a real loss L and z = a + ib,

    z.grad = ∂L/∂a + i ∂L/∂b

the gradient over the real pair (a, b) written as one complex number (twice the conjugate
Wirtinger derivative ∂L/∂z̄), so that gradient descent is still z -= lr · z.grad. For an op
y = f(z) with a complex derivative f'(z) (+, ·, /, exp, log, @, the Fourier transforms) the
chain rule then reads

    dL/dz = dL/dy · conj(f'(z))

so a backward conjugates what it multiplies the gradient by (Mul: dL/dx = dL/dz · conj(y)).
A real function of z (Re z, Im z, |z|, angle z) or a complex function of reals (complex(a, b))
is a pair of real functions, and its backward is the real chain rule on each part: for a real
input t, dL/dt = Re(conj(dy/dt) · dL/dy).

An op whose backward follows these rules declares ``handles_complex = True``; any other refuses
to record a complex tensor that requires grad (NotImplementedError naming the op), rather than
return a gradient that is silently wrong. On a real tensor, conjugation changes nothing: conj(),
.real and friends return the tensor itself (or its transpose), as in PyTorch.
"""

import math

from ..backend import get_default_dtype, strided_view, xp
from ..errors import refuse_non_tensors, refuse_unordered  # noqa: F401  (the ops that need an order import it here)
from ..primitive import Primitive
from ..tensor import Tensor, tensor_from
from .axes import matrices_only
from .names import names
from .outputs import write_out
from .selection import zero_gradient


class Conj(Primitive):
    """y = z̄;   dL/dz = conj(dL/dy)"""

    saves_inputs = False
    handles_complex = True

    def forward(self, z):
        return xp.conj(z)

    def backward(self, grad, y, z):
        return (Conj.apply(grad),)


@names("conj")
def conj(input):
    """The complex conjugate (a copy: PyTorch's is a lazy view); input itself when it is real."""
    return Conj.apply(input) if input._data.dtype.kind == "c" else input


@names("conj_physical")
def conj_physical(input, *, out=None):
    """conj, under the name that takes out= in PyTorch (into an out of input's dtype only, as PyTorch's)."""
    return write_out(conj(input), out, same_dtype=True)


@names("resolve_conj", "resolve_neg")
def resolve(input):
    """input itself: PyTorch's lazy conjugate and negative views are materialised here when made, so
    there is never a conjugate or negative bit to resolve."""
    return input


@names("conj_physical_", function=False)
def conj_physical_(input):
    """Conjugated in place. A real tensor's values stay, but, as in PyTorch, it is still a write: the version
    moves on, a leaf that requires grad refuses and a recorded tensor's history takes the (identity) step."""
    return input._write_back(conj, (), {}, "conj_physical_")


class RealPart(Primitive):
    """y = Re z, a view of z's memory;   dL/dz = dL/dy + 0i"""

    saves_inputs = False
    is_view = True
    handles_complex = True

    def forward(self, z):
        return z.real

    def backward(self, grad, y, z):
        return (grad.to(z.dtype),)


class ImagPart(Primitive):
    """y = Im z, a view of z's memory;   dL/dz = i · dL/dy"""

    saves_inputs = False
    is_view = True
    handles_complex = True

    def forward(self, z):
        return z.imag

    def backward(self, grad, y, z):
        return (grad.to(z.dtype) * 1j,)


def _real(input):
    return RealPart.apply(input) if input._data.dtype.kind == "c" else input


def _imaginary(input):
    if input.dtype.kind != "c":
        raise RuntimeError("imag is not implemented for tensors with non-complex dtypes.")
    return ImagPart.apply(input)


def _set_part(input, value, imaginary):
    """``x.real = v`` / ``x.imag = v``: that part of x's elements becomes v (broadcast, cast to the part's
    dtype), the other part kept, written through the part's view as PyTorch writes it; recorded like any
    write into x."""
    (_imaginary(input) if imaginary else _real(input)).copy_(value if isinstance(value, Tensor) else
                                                                 tensor_from(value))


names("real", function=False)(property(_real, lambda input, value: _set_part(input, value, False)))
names("imag", function=False)(property(_imaginary, lambda input, value: _set_part(input, value, True)))


@names("real", method=False)
def real(input):
    """The real part, a view of input's memory; input itself when it is real."""
    return _real(input)


@names("imag", method=False)
def imag(input):
    """The imaginary part, a view of input's memory."""
    return _imaginary(input)


@names("isreal")
def isreal(input):
    """True where the imaginary part is 0: everywhere for a real tensor."""
    return Tensor._make(xp.imag(input._data) == 0 if input.dtype.kind == "c" else xp.ones(input.shape, dtype=bool))


class Angle(Primitive):
    """y = arg z = atan2(Im z, Re z);   dL/dz = dL/dy · i z / |z|²  (0 at z = 0).

    For a real x, arg x is π for negative x and 0 otherwise: piecewise constant, dL/dx = 0
    (NaN stays NaN), as PyTorch's."""

    handles_complex = True

    def forward(self, z):
        if z.dtype.kind == "c":
            return xp.angle(z)
        return xp.where(xp.isnan(z), xp.nan, xp.where(z < 0, math.pi, 0.0)).astype(z.dtype)

    def backward(self, grad, y, z):
        if z.dtype.kind != "c":
            return (zero_gradient(z, grad),)
        size = z.abs()
        return (grad.to(z.dtype) * 1j * z / (size * size + (size == 0)),)


@names("angle")
def angle(input, *, out=None):
    """The argument of each element; of a real tensor π for negative numbers, 0 otherwise. Integers give
    the default dtype."""
    if input.dtype.kind not in "fc":
        input = input.to(get_default_dtype())
    return write_out(Angle.apply(input), out)


def sgn_of_complex(z):
    """z / |z| (0 at z = 0, with a gradient of 0 there, as PyTorch's), differentiable: the denominator
    |z| + [z = 0] is 1 where z = 0, so neither pass divides by zero, and the mask [z ≠ 0] zeroes both."""
    size = z.abs()
    return z / (size + (size == 0)) * (size != 0)


class ViewAsReal(Primitive):
    """y[..., 0] = Re z, y[..., 1] = Im z, a view of z's memory;   dL/dz = dL/dy[..., 0] + i dL/dy[..., 1]"""

    saves_inputs = False
    is_view = True
    reads_as_dtype = True  # (a regenerated view keeps this node: write_door._regenerated_node)
    handles_complex = True

    def forward(self, z):
        pairs = strided_view(z, (*z.shape, 2), (*z.strides, z.itemsize // 2), z.real.dtype)
        if pairs is None:  # (memory NumPy cannot view as real numbers: a copy)
            self.is_view = False
            return xp.stack((z.real, z.imag), axis=-1)
        return pairs

    def backward(self, grad, y, z):
        return (ViewAsComplex.apply(grad),)


class ViewAsComplex(Primitive):
    """z = x[..., 0] + i x[..., 1], a view of x's memory where its layout allows (each pair adjacent, each
    step a whole number of pairs);   dL/dx[..., 0] = Re dL/dz, dL/dx[..., 1] = Im dL/dz"""

    saves_inputs = False
    is_view = True
    reads_as_dtype = True  # (a regenerated view keeps this node: write_door._regenerated_node)
    handles_complex = True

    def forward(self, x):
        complex_dtype = xp.dtype(xp.complex128 if x.dtype == xp.float64 else xp.complex64)
        if x.strides[-1] == x.itemsize and all(step % complex_dtype.itemsize == 0 for step in x.strides[:-1]):
            numbers = strided_view(x, x.shape[:-1], x.strides[:-1], complex_dtype)
            if numbers is not None:
                return numbers
        # a layout of chainrule's own that PyTorch's would not have (a convolution's batch-innermost output): a
        # copy, as view() copies where the strides allow no view
        self.is_view = False
        return xp.ascontiguousarray(x).view(complex_dtype)[..., 0]

    def backward(self, grad, z, x):
        return (ViewAsReal.apply(grad),)


@names("view_as_real")
def view_as_real(input):
    """A complex tensor as a real one with a last dimension of 2 (real part, imaginary part), a view of the
    same memory."""
    if input.dtype.kind != "c":
        raise RuntimeError("view_as_real is only supported for complex tensors")
    return ViewAsReal.apply(input)


@names("view_as_complex")
def view_as_complex(input):
    """A float32/float64 tensor whose last dimension is 2 as a complex one, a view of the same memory (a copy
    where chainrule's layout allows none)."""
    if input.dtype not in (xp.float32, xp.float64):
        raise RuntimeError(f"view_as_complex is only supported for float and double tensors, but got a tensor of "
                           f"scalar type: {input.dtype}")
    if input.ndim == 0:
        raise RuntimeError("Input tensor must have one or more dimensions")
    if input.shape[-1] != 2:
        raise RuntimeError(f"Tensor must have a last dimension of size 2 (got shape {tuple(input.shape)})")
    return ViewAsComplex.apply(input)


def _check_parts(op, first, second, out):
    """PyTorch's checks of complex's and polar's operands: two tensors (a number is a TypeError), both float or
    double (half is PyTorch's too, and not chainrule's), of one dtype, and an out= of the complex dtype they make."""
    from .conversion import type_name  # (conversion builds on this module)

    refuse_non_tensors(f"autograd.{op}", (first, second), Tensor)

    if first.dtype.kind != "f" or second.dtype.kind != "f":
        raise RuntimeError(f"Expected both inputs to be Half, Float or Double tensors but got "
                           f"{type_name(first.dtype)} and {type_name(second.dtype)}")
    if first.dtype != second.dtype:
        raise RuntimeError(f"Expected object of scalar type {type_name(first.dtype)} but got scalar type "
                           f"{type_name(second.dtype)} for second argument")
    if first.dtype not in (xp.float32, xp.float64):
        raise RuntimeError(f"complex and polar of {type_name(first.dtype)} tensors: chainrule has no complex32")
    made = xp.result_type(first.dtype, xp.complex64)
    if out is not None and out.dtype != made:
        raise RuntimeError(f"Expected object of scalar type {type_name(made)} but got scalar type "
                           f"{type_name(out.dtype)} for argument 'out'")


@names("complex", method=False)
def from_parts(real, imag, *, out=None):
    """real + i imag, from two real tensors of one floating dtype (float32 gives complex64)."""
    _check_parts("complex", real, imag, out)
    from .arranging import broadcast_tensors  # (the shape ops build on the elementwise ones, which build on
    from .joins import stack  # this module)

    return write_out(view_as_complex(stack(list(broadcast_tensors(real, imag)), -1)), out)


class PolarMagnitude(Primitive):
    """y = r, polar's magnitude;   dL/dr = sign(r) · dL/dy.

    PyTorch's polar differentiates its magnitude as Re(conj(dL/dz) · sgn(z)) for z = r e^(iθ): e^(iθ) for
    r > 0, but 0 at r = 0 (a masked or silent bin of a spectrogram gets no gradient) and the negated
    e^(iθ) for r < 0 (outside polar's domain). Passing r through this, then the true derivative of
    r cos θ and r sin θ, gives those same numbers."""

    def forward(self, r):
        return r.copy()

    def backward(self, grad, y, r):
        return (grad * r.sign(),)


@names("polar", method=False)
def polar(abs, angle, *, out=None):
    """abs · (cos angle + i sin angle)  (PyTorch's argument names)."""
    _check_parts("polar", abs, angle, out)
    size = PolarMagnitude.apply(abs)
    return write_out(from_parts(size * angle.cos(), size * angle.sin()), out)


def _conjugate_transpose(input, op):
    if op == "H" and input.ndim not in (0, 2):
        batches = " For batches of matrices, consider using tensor.mH" if input.ndim > 2 else ""
        raise RuntimeError(f"tensor.H is only supported on matrices (2-D tensors). Got {input.ndim}-D tensor."
                           f"{batches}")
    if op == "mH":
        return conj(input) if matrices_only(input, "mH", conjugates=True) else conj(input.mT)
    return conj(input.T)


names("H", function=False)(property(lambda x: _conjugate_transpose(x, "H")))
names("mH", function=False)(property(lambda x: _conjugate_transpose(x, "mH")))
