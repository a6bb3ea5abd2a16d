"""Inverses, linear solves and determinants of (batches of) square matrices.

    Y = A⁻¹:          dL/dA = -Yᵀ (dL/dY) Yᵀ
    X = A⁻¹ B:        dL/dB = A⁻ᵀ (dL/dX),   dL/dA = -(dL/dB) Xᵀ
    d = det A:        dL/dA = dL/dd · cof A   (= dL/dd · d · A⁻ᵀ where A is invertible)
    ln|det A|:        dL/dA = dL/dy · A⁻ᵀ
"""

import contextlib

from ..backend import xp
from ..errors import refuse_unbroadcastable
from ..graph import is_grad_enabled
from ..primitive import Primitive, named_node
from ..return_types import return_type
from ..tensor import Tensor
from . import shape
from .broadcasting import unbroadcast
from .conversion import require_same_dtype, type_name
from .cumulative import _product_of_others
from .elementwise import Where
from .half_linalg import low_precision, refuses_half
from .names import names
from .outputs import write_out

SlogdetResult = return_type("slogdet", ["sign", "logabsdet"])
LinalgSlogdetResult = return_type("linalg_slogdet", ["sign", "logabsdet"])


class LinAlgError(RuntimeError):
    """A matrix the operation cannot handle (singular), as torch.linalg.LinAlgError."""


def _square(A, op, kernel=None):
    """PyTorch's refusals of A that is not a batch of floating or complex square matrices. With ``kernel``, an
    integer or bool A is refused as PyTorch's dispatch does, naming that kernel (NotImplementedError)."""
    if A.ndim < 2:
        raise RuntimeError(f"linalg.{op}: The input tensor A must have at least 2 dimensions.")
    if A.shape[-1] != A.shape[-2]:
        raise RuntimeError(f"linalg.{op}: A must be batches of square matrices, but they are {A.shape[-2]} by "
                           f"{A.shape[-1]} matrices")
    if A.dtype.kind not in "fc" and kernel is not None:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(A.dtype)}'")
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.{op}: Expected a floating point or complex tensor as input. Got "
                           f"{type_name(A.dtype)}")


def first_failure(info):
    """The first failed matrix of a batch, by its LAPACK-style info (0: fine): PyTorch's "(Batch element b): "
    naming it ('' for a single matrix), and its info."""
    flat = info.reshape(-1)
    first = int(xp.flatnonzero(flat)[0])
    return f"(Batch element {first}): " if info.ndim else "", int(flat[first])


@contextlib.contextmanager
def converging(a, op, values="eigenvalues"):
    """Run a decomposition NumPy iterates (eigh's, svd's), turning its LinAlgError, which names no matrix, into
    PyTorch's: the first matrix of the batch with a NaN or inf, what stops the iteration in practice. ``values``:
    what the decomposition finds, for the message's 'too many repeated ...'."""
    try:
        yield
    except xp.linalg.LinAlgError:
        non_finite = ~xp.isfinite(a).all(axis=(-2, -1))
        where = first_failure(non_finite)[0] if non_finite.any() else ""
        cause = ("contained non-finite values." if non_finite.any() and values == "singular values" else
                 f"is ill-conditioned or has too many repeated {values}.")
        raise LinAlgError(f"{op}: {where}The algorithm failed to converge because the input matrix {cause}") from None


def _singular(a, op):
    """PyTorch's error for a singular matrix in inv or solve: which one of the batch, and (inv) the 1-based
    index of the first zero on U's diagonal, as LAPACK's getrf reports it."""
    from .lu import factor  # (lu's triangular solves import this module)

    info = factor(a)[2].reshape(a.shape[:-2])
    where, pivot = first_failure(info) if info.any() else ("", 0)  # (0: LAPACK's zero pivot, not found again)
    if op == "solve":
        return LinAlgError(f"torch.linalg.solve: {where}The solver failed because the input matrix is singular.")
    zero = f"The diagonal element {pivot} is zero, the" if pivot else "The"
    return LinAlgError(f"linalg.inv: {where}{zero} inversion could not be completed because the input matrix is "
                       "singular.")


class Inverse(Primitive):
    """Y = A⁻¹;   dL/dA = -Yᵀ (dL/dY) Yᵀ"""

    pytorch_name = "LinalgInvExBackward0"  # (PyTorch's node for it)
    saves_inputs = False  # backward needs no input's values

    saves_output = True
    handles_complex = True  # (ᵀ read as ᴴ: PyTorch's complex gradient)

    def forward(self, a):
        try:
            return xp.linalg.inv(a)
        except xp.linalg.LinAlgError:
            raise _singular(a, "inv") from None

    def backward(self, grad, y, a):
        return (-(y.mH @ grad @ y.mH),)


@refuses_half(low_precision("linalg.inv"))
def inv(A, *, out=None):
    """The inverse of each square matrix (RuntimeError when one is singular)."""
    _square(A, "inv")
    return write_out(Inverse.apply(A), out, dtype=A.dtype)  # (PyTorch casts into no other dtype)


class Solve(Primitive):
    """X = A⁻¹ B (B a batch of matrices);   dL/dB = A⁻ᵀ (dL/dX),   dL/dA = -(dL/dB) Xᵀ"""

    saves_output = True
    saved_input_readers = ((0, 1), ())  # A for both gradients; B for none (dL/dA reads X): PyTorch's saves A and X
    handles_complex = True  # (ᵀ read as ᴴ: PyTorch's complex gradient)

    def forward(self, a, b):
        if a.shape[:-2] != b.shape[:-2]:  # batch dims broadcast here: CuPy's solve wants them equal
            batch = xp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            a, b = xp.broadcast_to(a, batch + a.shape[-2:]), xp.broadcast_to(b, batch + b.shape[-2:])
        try:
            return xp.linalg.solve(a, b)
        except xp.linalg.LinAlgError:
            raise _singular(a, "solve") from None

    def backward(self, grad, x, a, b):
        grad_b = Solve.apply(a.mH, grad)
        grad_a = unbroadcast(-(grad_b @ x.mH), a) if a.requires_grad else None
        return grad_a, unbroadcast(grad_b, b) if b.requires_grad else None


def is_vector_rhs(A, B):
    """Whether B is a (batch of) vector(s) for A X = B, as PyTorch decides: 1-D, or A's shape
    without its last dim."""
    return B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))


@refuses_half("lu_cpu")
def solve(A, B, *, left=True, out=None):
    """X with A X = B (or X A = B when left is False); B a matrix, a batch, or vectors, of A's dtype. Its node is
    PyTorch's LinalgSolveExBackward0."""
    return write_out(named_node(_solution(A, B, left), None, "LinalgSolveExBackward0", (A, B)), out,
                     dtype=A.dtype)  # (out has A's dtype: PyTorch casts into no other)


def _solution(A, B, left):
    _square(A, "solve")
    require_same_dtype(A, B, ("A", "B"), "linalg.solve")
    if not left:  # X A = B  ⇔  Aᵀ Xᵀ = Bᵀ
        vector = is_vector_rhs(A, B)  # (PyTorch reads a vector as the column B, n x 1, which no X A is)
        if vector or B.shape[-1] != A.shape[-2]:
            rows, columns = (B.shape[-1], 1) if vector else B.shape[-2:]
            raise RuntimeError(f"linalg.solve: Incompatible shapes of A and B for the equation XA = B "
                               f"({A.shape[-2]}x{A.shape[-1]} and {rows}x{columns})")
        return _solution(A.mT, B.mT, True).mT
    if is_vector_rhs(A, B):
        if B.shape[-1] != A.shape[-1]:  # (a vector is the column B, n x 1)
            raise RuntimeError(f"linalg.solve: Incompatible shapes of A and B for the equation AX = B "
                               f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-1]}x1)")
        return shape.squeeze(Solve.apply(A, shape.unsqueeze(B, -1)), -1)
    if B.shape[-2] != A.shape[-1]:
        raise RuntimeError(f"linalg.solve: Incompatible shapes of A and B for the equation AX = B "
                           f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2]}x{B.shape[-1]})")
    refuse_unbroadcastable(B.shape[:-2], A.shape[:-2])  # (the batch dims, in PyTorch's order: B's, then A's)
    return Solve.apply(A, B)


class Det(Primitive):
    """d = det A;   dL/dA = dL/dd · cof A, the cofactor matrix: d · A⁻ᵀ where A is invertible, and
    ``Cofactors`` (from the SVD) where some matrix of the batch is singular, whose cofactors need not
    vanish (det [[1, 2], [2, 4]] changes at the rate [[4, -2], [-2, 1]]). A complex A's gradient is
    dL/dd · conj(cof A), PyTorch's convention for a holomorphic function, singular or not.

    At a singular matrix PyTorch 2.13's first backward gives 0 (its LU path solves for d · A⁻ᴴ with d = 0), and
    its create_graph=True path the cofactors, as here: a wart of PyTorch's, where this gives the derivative
    (what finite differences see) in both."""

    pytorch_name = "LinalgDetBackward0"  # (PyTorch's node for it)
    saves_output = True
    handles_complex = True  # (conj(d) A⁻ᴴ: PyTorch's complex gradient)

    def forward(self, a):
        return xp.linalg.det(a)

    def backward(self, grad, d, a):
        if xp.all(d._data != 0):  # (recorded again with create_graph: differentiable twice)
            return (shape.unsqueeze(shape.unsqueeze(grad * d.conj(), -1), -1) * Inverse.apply(a).mH,)
        # (recorded, with create_graph: the same cofactors from linalg.svd of A, so that a second derivative
        # sees U, s and V turn with A, as PyTorch's singular path; it needs distinct s, as svd's gradient does)
        cofactors = _svd_cofactors(a) if is_grad_enabled() else Cofactors.apply(a)
        if a.dtype.kind == "c":
            cofactors = cofactors.conj()
        return (shape.unsqueeze(shape.unsqueeze(grad, -1), -1) * cofactors,)


class Cofactors(Primitive):
    """cof A = adj(A)ᵀ, for any square A, singular or not: with A = U diag(s) Vᴴ,
    cof A = det U · det Vᴴ · conj(U diag(∏_{j≠i} s_j) Vᴴ) (= det A · A⁻ᵀ where A is invertible, and
    continuous; det U · det Vᴴ is ±1 for a real A, on the unit circle for a complex one).
    Only first derivatives of det reach it (a recorded one takes ``_svd_cofactors``, differentiable)."""

    handles_complex = True

    def forward(self, a):
        u, s, vh = xp.linalg.svd(a)
        others = _product_of_others(Tensor._make(s), (s.ndim - 1,))._data  # ∏_{j≠i} s_j (prod's, exact with zeros)
        sign = xp.linalg.det(u) * xp.linalg.det(vh)
        return sign[..., None, None] * xp.conj((u * others[..., None, :]) @ vh)

    def backward(self, grad, y, a):
        raise RuntimeError("the second derivative of det at a singular matrix is not built (create_graph=True "
                           f"through det of a singular matrix of shape {tuple(a.shape)})")


def _svd_cofactors(a):
    """Cofactors' formula in Tensor operations on linalg.svd of a: differentiable again. det U · det Vᴴ, ±1 for a
    real a, is piecewise constant there."""
    from .svd import svd  # (svd's module imports this one's)

    u, s, vh = svd(a)
    sign = Tensor._make(xp.linalg.det(u._data) * xp.linalg.det(vh._data))
    others = shape.unsqueeze(_product_of_others(s, (s.ndim - 1,)), -2)  # ∏_{j≠i} s_j, as a row
    return shape.unsqueeze(shape.unsqueeze(sign, -1), -1) * ((u * others) @ vh).conj()


@refuses_half("lu_cpu")
def det(A, *, out=None):
    """The determinant of each square matrix."""
    _square(A, "det")
    return write_out(Det.apply(A), out, dtype=A.dtype)


class LogAbsDet(Primitive):
    """y = ln |det A|;   dL/dA = dL/dy · A⁻ᵀ  (= cof A / det A: infinite at a singular A, where y = -inf)"""

    handles_complex = True  # (A⁻ᴴ: PyTorch's complex gradient of Re ln det A)

    def forward(self, a):
        return xp.linalg.slogdet(a)[1]

    def backward(self, grad, y, a):
        return (shape.unsqueeze(shape.unsqueeze(grad, -1), -1) * _inverse_adjoint(a),)


def _inverse_adjoint(a):
    """A⁻ᴴ (A⁻ᵀ for a real A): at a singular matrix of the batch conj(cof A / det A), which is ±inf there (NaN
    where a cofactor is 0; for a complex A, NaN), as PyTorch's gradients of ln|det A| and of its sign, not an
    error."""
    try:
        return Inverse.apply(a).mH
    except LinAlgError:
        per_unit = Cofactors.apply(a) / shape.unsqueeze(shape.unsqueeze(Det.apply(a), -1), -1)
        return per_unit.conj() if a.dtype.kind == "c" else per_unit


class DetSign(Primitive):
    """s = det A / |det A| (for a complex A on the unit circle: s = e^(iθ), θ = arg det A);
    dL/dA = i · Im(s̄ · dL/ds) · A⁻ᴴ   (dθ = Im tr(A⁻¹ dA), so ds = i s dθ; PyTorch's slogdet gradient).
    A real sign, ±1, is piecewise constant: its derivative is 0 (in the graph all the same, as PyTorch's:
    it requires grad, and its tangent is zeros)."""

    saves_output = True
    handles_complex = True
    pytorch_name = "LinalgSlogdetBackward0"

    def forward(self, a):
        return xp.linalg.slogdet(a)[0]

    def backward(self, grad, s, a):
        if s._data.dtype.kind != "c":
            return (None,)
        turn = (s.conj() * grad).imag * 1j  # i · Im(s̄ dL/ds), per matrix
        return (shape.unsqueeze(shape.unsqueeze(turn, -1), -1) * _inverse_adjoint(a),)


@refuses_half(low_precision("linalg.slogdet"))
def slogdet(A, *, out=None, result=LinalgSlogdetResult):
    """(sign, logabsdet) of each square matrix: det A = sign · e^logabsdet, without overflow.
    A real sign is piecewise constant (a zero derivative); a complex one, e^(i arg det A), is not."""
    _square(A, "slogdet")
    return write_out(result(DetSign.apply(A), LogAbsDet.apply(A)), out)


@names("inverse")
@refuses_half(low_precision("linalg.inv"))
def inverse(input, *, out=None):
    return inv(input, out=out)


@names("det")
def tensor_det(input):
    return det(input)


@names("logdet")
@refuses_half(low_precision("logdet"))
def logdet(input):
    """ln det A: NaN for a negative determinant (with a zero gradient there, as PyTorch's: ln is not
    defined, so nothing flows back), -inf for a singular matrix. Complex: ln det A = ln|det A| + ln(sign),
    the principal complex logarithm (ln of the unit-modulus sign is i·arg det A)."""
    sign, logabsdet = slogdet(input)
    if sign._data.dtype.kind == "c":
        return logabsdet + sign.log()
    nan = Tensor._make(xp.full(logabsdet.shape, xp.nan, dtype=logabsdet.dtype))
    return Where.apply(logabsdet, nan, condition=sign._data >= 0)


@names("slogdet")
def tensor_slogdet(input, *, out=None):
    return write_out(slogdet(input, result=SlogdetResult), out)
