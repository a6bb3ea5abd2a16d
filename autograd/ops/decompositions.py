"""Matrix decompositions with gradients: Cholesky (A = L Lᴴ), the Hermitian eigendecomposition
(A = V diag(λ) Vᴴ) and QR, as torch.linalg.cholesky, eigh, eigvalsh and qr; and matrix_power.

    L = chol A:   dL/dA = L⁻ᴴ ½(P + tril₋₁(P)ᴴ) L⁻¹,  P = tril(Lᴴ dL/dL)
    λ, V = eigh A:   dL/dA = V (diag(dL/dλ) + offdiag(skew(Vᴴ dL/dV)) / E) Vᴴ,  E_ij = λ_j - λ_i

(skew X = (X - Xᴴ)/2; ᴴ is ᵀ for real matrices.) The eigenvector gradient needs distinct eigenvalues.
Complex gradients are PyTorch's (the conjugate Wirtinger derivative). A complex eigenvector is only
defined up to a phase e^{iφ}: a loss that depends on that phase (Im diag(Vᴴ dL/dV) ≠ 0) has no
gradient, and its backward raises PyTorch's error.
"""


import warnings

from ..backend import xp
from ..errors import refuse_unbroadcastable
from ..graph import is_grad_enabled, program_stacklevel
from ..primitive import Primitive, named_node
from ..return_types import return_type
from ..tensor import Tensor
from . import joins, shape
from .broadcasting import unbroadcast
from .conversion import require_same_dtype, type_name
from .elementwise import Where
from .half_linalg import refuses_half
from .inverses import LinAlgError, Solve, _square, converging, first_failure, inv
from .names import names
from .outputs import write_out
from .triangular import SolveTriangular, substitute

EighResult = return_type("linalg_eigh", ["eigenvalues", "eigenvectors"])


def _lower_half_diagonal(x):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    n = x.shape[-1]
    weights = xp.tril(xp.ones((n, n), dtype=x.dtype)) - 0.5 * xp.eye(n, dtype=x.dtype)
    return x * Tensor._make(weights)


class Cholesky(Primitive):
    """L = the lower Cholesky factor of A (A = L Lᴴ);   dL/dA = L⁻ᴴ ½(P + tril₋₁(P)ᴴ) L⁻¹,  P = tril(Lᴴ dL/dL)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True  # (written with ᴴ; P's diagonal keeps its imaginary part, as PyTorch's)
    upper = False  # which triangle of A is read (LAPACK's uplo): the other is taken to mirror it

    def forward(self, a):
        try:
            # the upper triangle, conjugated onto the lower, is the Hermitian matrix that triangle describes
            lower = xp.linalg.cholesky(xp.conj(xp.swapaxes(a, -1, -2)) if self.upper else a)
            if xp.isnan(xp.diagonal(lower, axis1=-2, axis2=-1)).any():  # NumPy lets a NaN pivot through; LAPACK's
                raise xp.linalg.LinAlgError  # potrf, PyTorch's, counts it as not positive
            return lower
        except xp.linalg.LinAlgError:
            from .checked import _cholesky_info, _raise  # (checked imports this module)

            _raise(_cholesky_info(a, self.upper), "linalg.cholesky", lambda order: "The factorization could not be "
                   f"completed because the input is not positive-definite (the leading minor of order {order} is not "
                   "positive-definite).")

    def jvp(self, tangents, lower, a):
        """PyTorch's forward rule, L̇ = L Φ(L⁻¹ Ȧ L⁻ᴴ) with Ȧ as it is: the backward read forward sees only Ȧ's
        Hermitian part (its gradient is Hermitian), the same for a Hermitian Ȧ but not for one entry bumped."""
        from .triangular import solve_triangular  # (triangular imports inverses, as this module does)

        (tangent,) = tangents
        inner = solve_triangular(lower.mH, solve_triangular(lower, tangent, upper=False), upper=True, left=False)
        return lower @ _lower_half_diagonal(inner)

    def backward(self, grad, lower, a):
        upper = lower.mH
        p = (upper @ grad).tril()
        middle = (p + p.tril(-1).mH) * 0.5  # Hermitian but for the diagonal's imaginary part
        x = Solve.apply(upper, middle)  # L⁻ᴴ M
        return (Solve.apply(upper, x.mH).mH,)  # (L⁻ᴴ M) L⁻¹ = (L⁻ᴴ (L⁻ᴴ M)ᴴ)ᴴ


@refuses_half("cholesky_cpu")
def cholesky(input, *, upper=False, out=None):
    """The lower triangular L with A = L Lᵀ (or the upper U = Lᵀ with upper=True), for symmetric
    positive-definite A (LinAlgError otherwise)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    _square(A, "cholesky")
    lower = Cholesky.apply(A, upper=upper)  # (LAPACK's potrf reads only A's upper triangle then, as PyTorch's)
    factor = named_node(lower.mH if upper else lower, None, "LinalgCholeskyExBackward0", (A,))  # (PyTorch's node)
    return write_out(factor, out, same_dtype=True)  # (U = Lᴴ: conjugated where complex)


class Eigh(Primitive):
    """λ, V of Hermitian A, returned stacked as one array [λ; V] of shape (..., n + 1, n);
    dL/dA = V (diag(dL/dλ) + offdiag(skew(Vᴴ dL/dV)) / E) Vᴴ  with E_ij = λ_j - λ_i"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True  # (written with ᴴ; the phase check is PyTorch's)

    def forward(self, a):
        with converging(a, "linalg.eigh"):
            values, vectors = xp.linalg.eigh(a, UPLO=self.uplo)
        return xp.concatenate([values[..., None, :], vectors], axis=-2)

    def jvp(self, tangents, y, a):
        """PyTorch's forward rule with Ȧ as it is (not its Hermitian part): P = Vᴴ Ȧ V, λ̇ = Re diag P, V̇ = V (P ⊘ E)
        with E_ij = λ_j − λ_i off the diagonal and 0 on it"""
        values, vectors = y[..., 0, :], y[..., 1:, :]
        (tangent,) = tangents
        p = vectors.mH @ tangent @ vectors
        diagonal = p.diagonal(0, -2, -1)
        eye = Tensor._make(xp.eye(values.shape[-1], dtype=values.dtype))
        gaps = shape.unsqueeze(values, -2) - shape.unsqueeze(values, -1) + eye
        dvectors = vectors @ (p / gaps * (1 - eye))
        dvalues = diagonal.real if diagonal.dtype.kind == "c" else diagonal
        return joins.cat([shape.unsqueeze(dvalues.to(dvectors.dtype), -2), dvectors], -2)

    def backward(self, grad, y, a):
        values, vectors = y[..., 0, :], y[..., 1:, :]
        grad_values, grad_vectors = grad[..., 0, :], grad[..., 1:, :]
        if grad_values.dtype.kind == "c":  # λ is real, stacked with complex vectors: Im dL/dλ has nowhere to go
            grad_values = grad_values.real  # (0 from λ itself, not from a second derivative through the backward's λ)
        if not (grad.requires_grad or xp.any(grad_vectors._data)):  # only λ was used (eigvalsh): V diag(dL/dλ) Vᴴ,
            # as PyTorch's, whose dL/dV is then undefined; the gaps' 0 / 0 of repeated eigenvalues (an identity)
            # would make it NaN. (Zeros that are a function of something keep the whole formula, as eig's and
            # svd's: forward mode's zeros stand for every tangent, the vectors' too.)
            return ((vectors * shape.unsqueeze(grad_values, -2)) @ vectors.mH,)
        inner = vectors.mH @ grad_vectors
        if inner.dtype.kind == "c":
            _require_phase_free(inner, "linalg_eigh_backward: The eigenvectors in the complex case are specified up to "
                                "multiplication by e^{i phi}. The specified loss function depends on this quantity, "
                                "so it is ill-defined.")
        gaps = shape.unsqueeze(values, -2) - shape.unsqueeze(values, -1)  # E_ij = λ_j - λ_i
        n = a.shape[-1]
        eye = xp.eye(n, dtype=grad.dtype)
        # (skew's diagonal is i Im diag(Vᴴ dL/dV), a phase's derivative: dropped, as PyTorch drops it)
        skew = (inner - inner.mH) * Tensor._make(0.5 - 0.5 * eye)
        eye = Tensor._make(eye)
        middle = skew / (gaps + eye) + shape.unsqueeze(grad_values, -1) * eye
        return (vectors @ middle @ vectors.mH,)


def _require_phase_free(inner, message, other=None):
    """Refuse a loss that depends on the phases of complex singular vectors or eigenvectors: Im diag(inner)
    (+ Im diag(other)) must vanish, within PyTorch's lax tolerance (1e-2), else RuntimeError(message)."""
    phases = xp.imag(xp.diagonal(inner._data, 0, -2, -1))
    if other is not None:
        phases = phases + xp.imag(xp.diagonal(other._data, 0, -2, -1))
    if not xp.allclose(phases, 0, rtol=1e-2, atol=1e-2):
        raise RuntimeError(message)


@refuses_half("linalg_eigh_cpu")
def eigh(input, UPLO="L", *, out=None):
    """(eigenvalues, eigenvectors) of symmetric A, eigenvalues ascending; A's ``UPLO`` triangle is read."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    _square(A, "eigh", kernel="linalg_eigh_cpu")
    if UPLO not in ("L", "U", "l", "u"):  # (either case, as PyTorch's check)
        raise RuntimeError(f"Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    stacked = Eigh.apply(A, uplo=UPLO.upper())
    values = stacked[..., 0, :]  # a Hermitian matrix's are real, though stacked with complex vectors
    values = values.real if values.dtype.kind == "c" else values
    return write_out(EighResult(values, stacked[..., 1:, :]), out, same_dtype=True)


@refuses_half("linalg_eigh_cpu")
def eigvalsh(input, UPLO="L", *, out=None):
    """The eigenvalues of symmetric A, ascending."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    return write_out(named_node(eigh(A, UPLO).eigenvalues, None, "LinalgEighBackward0", (A,)), out, same_dtype=True)


@names("cholesky")
def tensor_cholesky(input, upper=False, *, out=None):
    """torch.cholesky / x.cholesky(upper=False) (deprecated in PyTorch, with this warning)."""
    warnings.warn("torch.cholesky is deprecated in favor of torch.linalg.cholesky and will be removed in a future "
                  "PyTorch release.\nL = torch.cholesky(A)\nshould be replaced with\nL = torch.linalg.cholesky(A)\nand"
                  "\nU = torch.cholesky(A, upper=True)\nshould be replaced with\nU = torch.linalg.cholesky(A).mH\n"
                  "This transform will produce equivalent results for all valid (symmetric positive definite) inputs.",
                  UserWarning, stacklevel=program_stacklevel())
    try:
        factor = cholesky(input, upper=upper)
    except LinAlgError as error:  # (PyTorch names the op its user called: "cholesky: The factorization ...")
        raise LinAlgError(str(error).replace("linalg.cholesky: ", "cholesky: ", 1)) from None
    return write_out(named_node(factor, None, "CholeskyBackward0", (input,)), out, same_dtype=True)


QRResult = return_type("linalg_qr", ["Q", "R"])
TorchQRResult = return_type("qr", ["Q", "R"])  # (torch.qr's own type)


class QR(Primitive):
    """Q, R of A = QR (reduced: Q has A's shape, R is square upper triangular; A tall or square),
    returned stacked as one array [Q; R];
    dL/dA = (dL/dQ + Q copyltu(M)) R⁻ᴴ  with M = R (dL/dR)ᴴ - (dL/dQ)ᴴ Q  and
    copyltu(M) = the lower triangle of M mirrored onto the upper one, conjugated, and the real part
    of its diagonal (R's diagonal is real: Im diag(M) has nowhere to go)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True  # (written with ᴴ, as PyTorch's linalg_qr_backward)

    def forward(self, a):
        q, r = xp.linalg.qr(a, mode="reduced")
        return xp.concatenate([q, r], axis=-2)

    def backward(self, grad, y, a):
        m = a.shape[-2]
        q, r = y[..., :m, :], y[..., m:, :]
        grad_q, grad_r = grad[..., :m, :], grad[..., m:, :]
        half = _lower_half_diagonal(r @ grad_r.mH - grad_q.mH @ q)
        mirrored = half + half.mH  # (the diagonal: ½(m + m̄) = Re m, exactly m where real)
        # (…) R⁻ᴴ = (R⁻¹ (…)ᴴ)ᴴ, by back substitution, as PyTorch's: R of a rank-deficient A has a zero on its
        # diagonal, which gives inf and NaN there rather than the refusal of a general solve
        return (SolveTriangular.apply(r, (grad_q + q @ mirrored).mH, upper=True, unitriangular=False).mH,)


@refuses_half("geqrf_cpu")
def qr(A, mode="reduced", *, out=None):
    """(Q, R) with A = QR, Q with orthonormal columns and R upper triangular. mode 'reduced': Q is
    m × k, R k × n (k = min(m, n)); 'complete': Q is m × m; 'r': R alone (Q empty).

    A wide A = [X Y] (X square) is Q [R₁ R₂] with X = Q R₁ and R₂ = Qᴴ Y: the square factorisation
    and a product, so its gradient is theirs. The m - n columns 'complete' adds to a tall A's Q are
    any orthonormal completion, with no gradient, and 'r' keeps no Q for one: computed, and refused at
    backward, as PyTorch's (NoQRGradient)."""
    if A.ndim < 2:
        raise RuntimeError("linalg.qr: The input tensor A must have at least 2 dimensions.")
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.qr: Expected a floating point or complex tensor as input. Got {type_name(A.dtype)}")
    if mode not in ("reduced", "r", "complete"):
        raise RuntimeError(f"qr received unrecognized mode '{mode}' but expected one of 'reduced' (default), 'r', "
                           "or 'complete'")
    m, n = A.shape[-2:]
    why = _QR_WITHOUT_GRADIENT.get("r" if mode == "r" else "complete" if mode == "complete" and m > n else None)
    if why is not None and A.requires_grad and is_grad_enabled():  # computed, and refused at backward (PyTorch's)
        factors = (NoQRGradient.apply(A, value=factor._data, why=why) for factor in qr(A.detach(), mode))
        return write_out(QRResult(*factors), out, same_dtype=True)
    if m < n:
        q, r = qr(A[..., :m])
        r = joins.cat([r, q.mH @ A[..., m:]], -1)
    elif mode == "complete" and m > n:
        q, r = (Tensor._make(x) for x in xp.linalg.qr(A._data, mode="complete"))
    else:
        stacked = QR.apply(A)
        q, r = stacked[..., :m, :], stacked[..., m:, :]
    if mode == "r":
        q = Tensor._make(xp.zeros((0,), dtype=A.dtype))
    return write_out(QRResult(q, r), out, same_dtype=True)


_QR_WITHOUT_GRADIENT = {  # PyTorch's words, by the mode that has no derivative
    "complete": "The QR decomposition is not differentiable when mode='complete' and nrows > ncols.",
    "r": "The derivative of linalg.qr depends on Q, which is not computed when mode='r'. Please use linalg.qr(A, "
         "mode='reduced') if you are going to differentiate through linalg.qr.",
}


class NoQRGradient(Primitive):
    """A factor of linalg.qr in a mode PyTorch computes but does not differentiate, already computed (``value``):
    'complete' of a tall A, whose m - n added columns of Q are any orthonormal completion, and 'r', which keeps no
    Q for the derivative. The outputs are in the graph, as PyTorch's (LinalgQrBackward0); a backward through them
    raises its error (``why``)."""

    saves_inputs = False
    handles_complex = True
    pytorch_name = "LinalgQrBackward0"

    def forward(self, a):
        return self.value

    def backward(self, grad, y, a):
        raise RuntimeError(self.why)


def matrix_power(input, n, *, out=None):
    """A multiplied by itself n times (n < 0: the inverse's power; n = 0: the identity), by squaring."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    if n >= 0 and A.dtype.kind in "iub":  # (integer powers need no inverse, so PyTorch takes integer matrices)
        _square(A.float(), "matrix_power")
    else:
        _square(A, "matrix_power")
    if n < 0:
        A, n = inv(A), -n
    result = None
    power = A
    while n:
        if n & 1:
            result = power if result is None else result @ power
        n >>= 1
        if n:
            power = power @ power
    if result is None:  # the identity, still connected to A (with gradient 0), as PyTorch's
        identity = Tensor._make(xp.broadcast_to(xp.eye(A.shape[-1], dtype=A.dtype), A.shape).copy())
        return write_out(Where.apply(identity, A, condition=xp.ones(A.shape, dtype=bool)), out, same_dtype=True)
    return write_out(result, out, same_dtype=True)


@names("matrix_power")
def tensor_matrix_power(input, n, *, out=None):
    return write_out(matrix_power(input, n), out, same_dtype=True)


@names("qr")
def tensor_qr(input, some=True, *, out=None):
    """torch.qr / x.qr(): linalg.qr in mode 'reduced' (some=True) or 'complete' (deprecated in PyTorch, with
    this warning)."""
    warnings.warn("torch.qr is deprecated in favor of torch.linalg.qr and will be removed in a future PyTorch "
                  "release.\nThe boolean parameter 'some' has been replaced with a string parameter 'mode'.\n"
                  "Q, R = torch.qr(A, some)\nshould be replaced with\n"
                  "Q, R = torch.linalg.qr(A, 'reduced' if some else 'complete')", UserWarning,
                  stacklevel=program_stacklevel())
    return write_out(TorchQRResult(*qr(input, "reduced" if some else "complete")), out, same_dtype=True)


def _require_square_factor(L, prefix):
    """PyTorch's refusals of a Cholesky factor that is not a batch of square matrices (its messages' prefix:
    '' for cholesky_solve's, 'cholesky_inverse: ')."""
    if L.ndim < 2:
        raise RuntimeError(f"{prefix}The input tensor A must have at least 2 dimensions." if prefix else
                           f"u should have at least 2 dimensions, but has {L.ndim} dimensions instead")
    if L.shape[-1] != L.shape[-2]:
        raise RuntimeError(f"{prefix}A must be batches of square matrices, but they are {L.shape[-2]} by "
                           f"{L.shape[-1]} matrices")


def _refuse_integers(L, kernel):
    if L.dtype.kind not in "fc":  # (PyTorch's kernel has no integer or bool version, and is dispatched last)
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(L.dtype)}'")


def _lower_triangle(factor, upper):
    """The lower factor L of A = L Lᴴ as an array, from the stored factor's triangle alone (upper: U = Lᴴ)."""
    return xp.tril(xp.conj(xp.swapaxes(factor, -1, -2)) if upper else factor)


class CholeskySolve(Primitive):
    """X = (L Lᴴ)⁻¹ B from the factor's triangle alone (L, or U = Lᴴ with upper), by two substitutions, as
    LAPACK's potrs: a zero on the diagonal gives inf or NaN, not an error. The gradient is PyTorch's, of the
    factor F as given:  dL/dB = (L Lᴴ)⁻¹ dL/dX,  dL/dF = -(C + Cᴴ) F  (-F (C + Cᴴ) with upper),  C = (dL/dB) Xᴴ"""

    saves_output = True
    handles_complex = True  # (written with ᴴ, as PyTorch's)
    upper = False

    def forward(self, b, factor):
        lower = _lower_triangle(factor, self.upper)
        halfway = substitute(lower, b, upper=False, unitriangular=False)  # L Y = B, then Lᴴ X = Y
        return substitute(xp.conj(xp.swapaxes(lower, -1, -2)), halfway, upper=True, unitriangular=False)

    def backward(self, grad, x, b, factor):
        grad_b = CholeskySolve.apply(grad, factor, upper=self.upper)
        grad_factor = None
        if factor.requires_grad:
            common = grad_b @ x.mH
            common = common + common.mH
            grad_factor = unbroadcast(-(factor @ common) if self.upper else -(common @ factor), factor)
        return unbroadcast(grad_b, b) if b.requires_grad else None, grad_factor


@names("cholesky_solve")
@refuses_half("cholesky_solve_cpu")
def cholesky_solve(input, input2, upper=False, *, out=None):
    """X with A X = input, for A = L Lᴴ given its Cholesky factor input2 (L, or U = Lᴴ with upper), batches
    broadcast: two triangular solves, L Y = input then Lᴴ X = Y (ᴴ is ᵀ for reals)."""
    if input.ndim < 2:
        raise RuntimeError(f"b should have at least 2 dimensions, but has {input.ndim} dimensions instead")
    if input2.ndim >= 2:
        require_same_dtype(input, input2, ("b", "A"))
    _require_square_factor(input2, "")
    if input.shape[-2] != input2.shape[-1]:
        raise RuntimeError(f"Incompatible matrix sizes for cholesky_solve: each A matrix is {input2.shape[-1]} by "
                           f"{input2.shape[-1]} but each b matrix is {input.shape[-2]} by {input.shape[-1]}")
    refuse_unbroadcastable(input.shape[:-2], input2.shape[:-2])  # (the batch dims: b's, then A's, as PyTorch)
    _refuse_integers(input2, "cholesky_solve_cpu")
    return write_out(CholeskySolve.apply(input, input2, upper=bool(upper)), out)


class CholeskyInverse(Primitive):
    """Y = (L Lᴴ)⁻¹ = L⁻ᴴ L⁻¹ from the factor's triangle alone (L, or U = Lᴴ with upper), as LAPACK's potri. The
    gradient is PyTorch's, of the factor F as given:  dL/dF = -Y (G + Gᴴ) Y F  (-F Y (G + Gᴴ) Y with upper)"""

    saves_output = True
    handles_complex = True  # (written with ᴴ, as PyTorch's)
    upper = False

    def forward(self, factor):
        lower = _lower_triangle(factor, self.upper)
        eye = xp.broadcast_to(xp.eye(factor.shape[-1], dtype=factor.dtype), factor.shape)
        inverse_factor = substitute(lower, eye, upper=False, unitriangular=False)  # L⁻¹
        return xp.conj(xp.swapaxes(inverse_factor, -1, -2)) @ inverse_factor

    def backward(self, grad, inverse, factor):
        common = inverse @ (grad + grad.mH) @ inverse
        return (-(factor @ common) if self.upper else -(common @ factor),)


@names("cholesky_inverse")
@refuses_half("cholesky_inverse_out_cpu")
def cholesky_inverse(input, upper=False, *, out=None):
    """A⁻¹ for A = L Lᴴ given its Cholesky factor (L, or U with upper): L⁻ᴴ L⁻¹. A zero on the factor's
    diagonal is LAPACK's potri error, naming its 1-based index."""
    _require_square_factor(input, "cholesky_inverse: ")
    _refuse_integers(input, "cholesky_inverse_out_cpu")
    zeros = xp.diagonal(input._data, 0, -2, -1) == 0
    if zeros.any():
        where, order = first_failure(xp.where(zeros.any(-1), zeros.argmax(-1) + 1, 0))
        raise LinAlgError(f"cholesky_inverse: {where}The diagonal element {order} is zero, the inversion could not "
                          "be completed because the input matrix is singular.")
    return write_out(CholeskyInverse.apply(input, upper=bool(upper)), out)


@names("lobpcg", method=False)
def lobpcg(A, k=None, B=None, X=None, n=None, iK=None, niter=None, tol=None, largest=None, method=None,
           tracker=None, ortho_iparams=None, ortho_fparams=None, ortho_bparams=None):
    """torch.lobpcg: the k largest (``largest``, the default) or smallest eigenpairs of symmetric A, or of the
    generalised problem A x = λ B x (B positive definite, x B-orthonormal), eigenvalues in that order; batched.

    PyTorch iterates LOBPCG from X (randn((m, n)) for each matrix when X is not given) to a residual of its
    tolerance (√eps); here the eigenpairs are eigh's, the answer that iteration converges to (PyTorch's agree to
    about its tolerance, eigenvectors up to sign). The random start is drawn all the same, so that the generator
    moves on as PyTorch's does; iK, niter, tol, method, tracker and the ortho parameters steer the iteration
    only. Differentiable as PyTorch's, through (A + Aᵀ)/2 (and (B + Bᵀ)/2, where PyTorch's backward refuses B)."""
    from ..factories import randn  # (factories is imported after the ops)

    if A.shape[-2] != A.shape[-1]:
        raise AssertionError(f"A must be square, got shape {tuple(A.shape)}")
    if B is not None and A.shape != B.shape:
        raise AssertionError(f"A and B must have same shape, got {tuple(A.shape)} vs {tuple(B.shape)}")
    m = A.shape[-1]
    k = (1 if X is None else X.shape[-1]) if k is None else k
    n = (k if n is None else n) if X is None else X.shape[-1]
    if m < 3 * n:
        raise ValueError(f"LOBPCG algorithm is not applicable when the number of A rows (={m}) is smaller than "
                         f"3 x the number of requested eigenpairs (={n})")
    A = A if A.dtype.kind == "f" else A.float()  # (PyTorch's floating dtype of A: float32 unless A has one)
    if X is None:
        for _ in range(int(xp.prod(xp.asarray(A.shape[:-2], dtype=xp.int64)))):
            randn((m, n), dtype=A.dtype)
    A = (A + A.mT) / 2
    if B is None:
        values, vectors = eigh(A)
    else:
        lower = cholesky((B + B.mT) / 2)
        values, vectors = eigh(Solve.apply(lower, Solve.apply(lower, A).mT))  # L⁻¹ A L⁻ᵀ
        vectors = Solve.apply(lower.mT, vectors)
    if largest is None or largest:
        values, vectors = values.flip(-1), vectors.flip(-1)
    return values[..., :k], vectors[..., :k]
