"""The singular value decomposition A = U diag(S) Vh and what is built on it: torch.linalg.svd
and torch.svd, the pseudo-inverse (linalg.pinv, pinverse), least squares (linalg.lstsq) and
the numerical rank (linalg.matrix_rank).

For A of shape m × n, k = min(m, n), reduced factors U (m × k), S (k), Vh (k × n), F_ij =
1/(s_j² - s_i²) off the diagonal and 0 on it (Townsend, "Differentiating the singular value
decomposition", 2016; ᴴ is ᵀ for real matrices):

    dL/dA = U [ (F ∘ (UᴴŪ - ŪᴴU)) S + diag(S̄) + S (F ∘ (VᴴV̄ - V̄ᴴV)) + diag(i Im(UᴴŪ)_jj / s_j) ] Vᴴ
            + (I - UUᴴ) Ū S⁻¹ Vᴴ + U S⁻¹ V̄ᴴ (I - VVᴴ)

(Ū = dL/dU, S̄ = dL/dS, V̄ = dL/dV, V = Vhᴴ.) The singular vectors' gradient needs distinct
nonzero singular values, as PyTorch's. With full_matrices=True the extra columns of U (rows of
Vh) are any orthonormal completion: as in PyTorch, their gradient is ignored. Complex singular
vectors are defined up to a common phase (U diag(e^{iθ}), V diag(e^{iθ})): the last term of the
bracket, 0 for real matrices, is that quotient's (PyTorch's svd_backward), and a loss that depends
on the phases (Im diag(UᴴŪ + VᴴV̄) ≠ 0) has no gradient: its backward raises PyTorch's error.

The pseudo-inverse X = A⁺ has its own gradient (Golub & Pereyra), finite wherever the rank
does not change (repeated singular values included):

    dL/dA = -Xᴴ Ḡ Xᴴ + (I - AX) Ḡᴴ X Xᴴ + XᴴX Ḡᴴ (I - XA)
"""


from ..backend import errstate, int64, xp
from ..errors import refuse_unbroadcastable
from ..primitive import Primitive
from ..return_types import return_type
from ..tensor import Tensor
from .conversion import type_name
from .decompositions import _require_phase_free
from .half_linalg import FLOAT_OR_DOUBLE, PINV, refuses_half
from .inverses import LinAlgError, _square, converging, first_failure, is_vector_rhs
from .linalg import matmul
from .names import names
from .norms import refuse_cpu_svd_driver
from .outputs import write_out

SVDResult = return_type("linalg_svd", ["U", "S", "Vh"])
TorchSVDResult = return_type("svd", ["U", "S", "V"])
LstsqResult = return_type("linalg_lstsq", ["solution", "residuals", "rank", "singular_values"])


def _matrices(A, op, hermitian=False):
    """Refuse what op cannot take: fewer than 2 dims, integers; with ``hermitian``, matrices that are not
    square (PyTorch's hermitian path is eigh's, and refuses them in eigh's words)."""
    if A.ndim < 2:
        raise RuntimeError(f"linalg.{op}: The input tensor A must have at least 2 dimensions.")
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.{op}: Expected a floating point or complex tensor as input, got {A.dtype}")
    if hermitian:
        _square(A, "eigh")


def _sizes(m, n, full):
    k = min(m, n)
    return (m, m if full else k), (n if full else k, n)


def _unpack(packed, m, n, full):
    """(U, S, Vh) from the one array SVD returns (batch dims first, each factor flattened)."""
    (rows_u, cols_u), (rows_v, cols_v) = _sizes(m, n, full)
    batch, k = tuple(packed.shape[:-1]), min(m, n)
    u_end, s_end = rows_u * cols_u, rows_u * cols_u + k
    return (packed[..., :u_end].reshape(batch + (rows_u, cols_u)), packed[..., u_end:s_end],
            packed[..., s_end:].reshape(batch + (rows_v, cols_v)))


class SVD(Primitive):
    """U, S, Vh of A, returned packed in one array (each flattened, side by side); the gradient
    is the module docstring's."""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True  # (written with ᴴ; the phase term and check are PyTorch's)

    def forward(self, a):
        with converging(a, "linalg.svd", "singular values"):
            u, s, vh = xp.linalg.svd(a, full_matrices=self.full_matrices)
        batch = a.shape[:-2]  # (sizes spelt out, not -1: an empty batch has no size to infer)
        return xp.concatenate([u.reshape(batch + (u.shape[-2] * u.shape[-1],)), s,
                               vh.reshape(batch + (vh.shape[-2] * vh.shape[-1],))], axis=-1)

    def backward(self, grad, packed, a):
        m, n = a.shape[-2:]
        k = min(m, n)
        u, s, vh = _unpack(packed, m, n, self.full_matrices)
        grad_u, grad_s, grad_vh = _unpack(grad, m, n, self.full_matrices)
        if grad_s.dtype.kind == "c":  # S is real, packed beside complex vectors: Im dL/dS has nowhere to go
            grad_s = grad_s.real  # (it is 0 from S itself, not from a second derivative through the backward's S)
        u, grad_u, vh, grad_vh = u[..., :k], grad_u[..., :k], vh[..., :k, :], grad_vh[..., :k, :]
        if not (grad.requires_grad or xp.any(grad_u._data) or xp.any(grad_vh._data)):  # only S was used: U diag(dL/dS)
            # Vᴴ, as PyTorch's, whose dL/dU and dL/dVh are then undefined; F's 1/0 of repeated singular values (an
            # identity's) times their zeros would make it NaN. (Zeros that are a function of something, as the
            # double-vjp trick's dummy cotangent, keep the whole formula: its derivative with respect to them.)
            return (u @ (grad_s.unsqueeze(-1) * vh),)
        v, grad_v = vh.mH, grad_vh.mH
        eye = Tensor._make(xp.eye(k, dtype=grad.dtype))
        squares = s * s
        gaps = squares.unsqueeze(-2) - squares.unsqueeze(-1) + eye  # s_j² - s_i² (1 on the diagonal)
        f = (1.0 - eye) / gaps
        left = u.mH @ grad_u
        right = v.mH @ grad_v
        rows, columns = s.unsqueeze(-1), s.unsqueeze(-2)  # S · X scales rows, X · S columns
        inner = (f * (left - left.mH)) * columns + grad_s.unsqueeze(-1) * eye + rows * (f * (right - right.mH))
        if grad.dtype.kind == "c":
            _require_phase_free(left, "svd_backward: The singular vectors in the complex case are specified up to "
                                "multiplication by e^{i phi}. The specified loss function depends on this phase term, "
                                "making it ill-defined.", right)
            inner = inner + (left - left.mH) * eye * 0.5 / columns  # i Im(UᴴŪ)_jj / s_j
        grad_a = u @ inner @ vh
        if m > k:  # (I - UUᴴ) Ū S⁻¹ Vᴴ
            grad_a = grad_a + ((grad_u - u @ left) / columns) @ vh
        if n > k:  # U S⁻¹ V̄ᴴ (I - VVᴴ)
            grad_a = grad_a + u @ ((grad_vh - right.mH @ vh) / rows)
        return (grad_a,)


@refuses_half("linalg_svd_cpu")
def svd(A, full_matrices=True, *, driver=None, out=None):
    """(U, S, Vh) with A = U diag(S) Vh, S descending and real (torch.linalg.svd; ``driver``: see
    refuse_cpu_svd_driver)."""
    _matrices(A, "svd")
    refuse_cpu_svd_driver(A, driver)
    m, n = A.shape[-2:]
    packed = SVD.apply(A, full_matrices=bool(full_matrices) and m != n)
    u, s, vh = _unpack(packed, m, n, bool(full_matrices) and m != n)
    s = s.real if s.dtype.kind == "c" else s  # (packed beside complex vectors, S is real)
    return write_out(SVDResult(u, s, vh), out, same_dtype=True)


@names("svd")
def torch_svd(input, some=True, compute_uv=True, *, out=None):
    """(U, S, V) with input = U diag(S) Vᴴ (torch.svd: V, not Vh; some=False gives the full U and V).
    With compute_uv=False, U and V are zeros, square whatever ``some`` says (S alone is used)."""
    u, s, vh = svd(input, full_matrices=not some)
    if not compute_uv:
        rows, columns = input.shape[-2:]
        u = Tensor._make(xp.zeros(input.shape[:-2] + (rows, rows), dtype=u.dtype))
        vh = Tensor._make(xp.zeros(input.shape[:-2] + (columns, columns), dtype=vh.dtype))
    return write_out(TorchSVDResult(u, s, vh.mH), out)


class PseudoInverse(Primitive):
    """X = A⁺;   dL/dA = -Xᴴ Ḡ Xᴴ + (I - AX) Ḡᴴ X Xᴴ + XᴴX Ḡᴴ (I - XA)  (constant rank)"""

    pytorch_name = "LinalgPinvBackward0"  # (PyTorch's node for it)
    saves_output = True
    handles_complex = True  # (written with ᴴ, as PyTorch's pinv_backward)

    def forward(self, a):
        if xp.__name__ == "cupy":  # (CuPy's pinv names the relative tolerance rcond, and has no hermitian path)
            return xp.linalg.pinv(a, rcond=self.rtol)
        with converging(a, *(("linalg.eigh",) if self.hermitian else ("linalg.svd", "singular values"))):
            return xp.linalg.pinv(a, rtol=self.rtol, hermitian=self.hermitian)

    def backward(self, grad, x, a):
        xt, gt = x.mH, grad.mH
        row_side = gt @ x @ xt  # Ḡᴴ X Xᴴ
        column_side = xt @ x @ gt  # XᴴX Ḡᴴ
        return (-(xt @ grad @ xt) + (row_side - a @ (x @ row_side)) + (column_side - (column_side @ x) @ a),)


def _one_tolerance(op, name, atol, rtol):
    """The older overloads (a positional rcond or tol) take no atol= or rtol= beside it, as PyTorch's."""
    if atol is not None or rtol is not None:
        raise TypeError(f"{op}() takes either {name} or atol=/rtol=, not both")


def _singular_values(A, hermitian):
    """A's singular values as an array (Hermitian A: its eigenvalues' absolute values, from its lower triangle)."""
    if hermitian:
        with converging(A._data, "linalg.eigh"):
            return xp.abs(xp.linalg.eigvalsh(A._data))
    with converging(A._data, "linalg.svd", "singular values"):
        return xp.linalg.svd(A._data, compute_uv=False)


def _relative_tolerance(A, atol, rtol, hermitian):
    """max(atol, rtol · σ_max) / σ_max for each matrix of A (atol and rtol are numbers, or tensors that
    broadcast over A's batch): the one relative cutoff NumPy's pinv takes. PyTorch's default rtol is
    eps · max(m, n) when atol is not given, 0 otherwise. (σ_max = 0 gives NaN: nothing is kept.)"""
    if rtol is None:
        rtol = 0.0 if atol is not None else xp.finfo(A.dtype).eps * max(A.shape[-2:])
    rtol = xp.asarray(rtol._data if isinstance(rtol, Tensor) else rtol, dtype=xp.float64)
    if atol is None:
        return rtol
    atol = xp.asarray(atol._data if isinstance(atol, Tensor) else atol, dtype=xp.float64)
    values = _singular_values(A, hermitian)
    largest = values.max(-1) if values.shape[-1] else xp.zeros(values.shape[:-1])
    with errstate(divide="ignore", invalid="ignore"):
        return xp.maximum(atol / largest, rtol)


@refuses_half(PINV)
def pinv(input, rcond=None, hermitian=False, *, atol=None, rtol=None, out=None):
    """The Moore-Penrose pseudo-inverse A⁺ (singular values below rtol · σ_max count as zero).
    PyTorch's older overload pinv(A, rcond, hermitian) takes rcond as rtol."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    if rcond is not None:
        _one_tolerance("pinv", "rcond", atol, rtol)
        rtol = rcond
    _matrices(A, "pinv", hermitian)
    return write_out(PseudoInverse.apply(A, rtol=_relative_tolerance(A, atol, rtol, hermitian), hermitian=hermitian),
                     out)


@names("pinverse")
@refuses_half(PINV)
def pinverse(input, rcond=1e-15):
    """torch.pinverse: pinv with the relative tolerance rcond."""
    return pinv(input, rtol=rcond)


@refuses_half(FLOAT_OR_DOUBLE)
def matrix_rank(input, tol=None, hermitian=False, *, atol=None, rtol=None, out=None):
    """How many singular values exceed max(atol, rtol · σ_max) (int64; no gradient). PyTorch's
    older overload matrix_rank(A, tol, hermitian) takes tol as atol (and rtol 0). With hermitian=True
    they are the eigenvalues' absolute values, from A's lower triangle alone, as PyTorch's."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    if tol is not None:
        _one_tolerance("matrix_rank", "tol", atol, rtol)
        atol = tol
    _matrices(A, "matrix_rank", hermitian)
    values = _singular_values(A, hermitian)
    largest = values.max(-1) if values.shape[-1] else xp.zeros(values.shape[:-1])
    with errstate(invalid="ignore"):  # (σ_max = 0: a NaN cutoff, which no value exceeds)
        tolerance = _relative_tolerance(A, atol, rtol, hermitian) * largest
    return write_out(Tensor._make((values > tolerance[..., None]).sum(-1).astype(int64)), out)


LSTSQ_DRIVERS = ("gels", "gelsy", "gelsd", "gelss")


def _require_full_rank(A):
    """gels's refusal: it solves by QR (LQ for a wide A) and stops at an exact zero on R's diagonal, reporting its
    1-based index (an all-zero A it answers with zeros, LAPACK's early return)."""
    a = A._data if A.shape[-2] >= A.shape[-1] else xp.conj(xp.swapaxes(A._data, -1, -2))  # (LQ of A: QR of Aᴴ)
    zeros = xp.diagonal(xp.linalg.qr(a, mode="r"), 0, -2, -1) == 0
    info = xp.where(zeros.any(-1) & xp.any(a != 0, axis=(-2, -1)), zeros.argmax(-1) + 1, 0)
    if info.any():
        where, order = first_failure(info)
        raise LinAlgError(f"torch.linalg.lstsq: {where}The least squares solution could not be computed because the "
                          f"input matrix does not have full rank (error code: {order}).")



@refuses_half(FLOAT_OR_DOUBLE)
def lstsq(input, b, rcond=None, *, driver=None, out=None):
    """X minimising ‖AX - B‖ (the one of least norm where several do): A⁺ B. The other outputs are
    those PyTorch's LAPACK ``driver`` gives (gelsy by default on the CPU), empty where it gives none:

        residuals        ‖AX - B‖² per column of B, where A is tall (m > n), of full rank and the driver
                         is gels, gelsd or gelss (differentiable: a composition of X)
        rank             A's numerical rank, except under gels (which assumes full rank)
        singular_values  A's, under gelsd and gelss
    """
    A, B = input, b  # (PyTorch's keywords, though its docs write A, B)
    _matrices(A, "lstsq")
    driver = "gelsy" if driver is None else driver
    if driver not in LSTSQ_DRIVERS:
        raise RuntimeError(f"torch.linalg.lstsq: parameter `driver` should be one of ({', '.join(LSTSQ_DRIVERS)})")
    if not 0 <= A.ndim - B.ndim <= 1:  # (B is A's batch of matrices, or of vectors: it does not broadcast A)
        raise RuntimeError("torch.linalg.lstsq: input.dim() must be greater or equal to other.dim() and "
                           f"(input.dim() - other.dim()) <= 1 (got shapes {tuple(A.shape)} and {tuple(B.shape)})")
    if A.dtype != B.dtype:  # (PyTorch promotes neither: a real B of a complex A too)
        raise RuntimeError(f"torch.linalg.lstsq: Expected input and other to have the same dtype, but got input's "
                           f"dtype {type_name(A.dtype)} and other's dtype {type_name(B.dtype)}")
    vector = B.ndim == A.ndim - 1
    B = B.unsqueeze(-1) if vector else B
    if A.shape[-2] != B.shape[-2]:  # (checked here: the product below would name pinv's shapes instead)
        # PyTorch's words name other's last dim only for what it takes for vectors (its shapes' rule)
        which = -1 if is_vector_rhs(A, b) else -2
        raise RuntimeError(f"torch.linalg.lstsq: input.size(-2) should match other.size({which}) "
                           f"(got shapes {tuple(A.shape)} and {tuple(b.shape)})")
    refuse_unbroadcastable(A.shape[:-2], B.shape[:-2])  # (the batch dims, named as PyTorch names them)
    if driver == "gels" and A.numel():
        _require_full_rank(A)
    solution = matmul(pinv(A, rtol=rcond), B)
    rank = matrix_rank(A, rtol=rcond) if driver != "gels" else Tensor._make(xp.zeros((0,), dtype=int64))
    full_rank = driver == "gels" or bool((rank._data == A.shape[-1]).all())
    # none computed: an empty (real) tensor of the solution's graph, as PyTorch's (it requires grad, its tangent
    # is empty)
    residuals = solution.real.reshape(-1)[:0]
    if driver != "gelsy" and A.shape[-2] > A.shape[-1] and full_rank:
        residuals = (matmul(A, solution) - B).abs().square().sum(-2)  # (a vector B keeps its column: (1,))
    singular_values = Tensor._make(xp.zeros((0,), dtype=A._data.real.dtype))  # (none computed; real, as A's are)
    if driver in ("gelsd", "gelss"):
        singular_values = Tensor._make(_singular_values(A, False))
    result = LstsqResult(solution.squeeze(-1) if vector else solution, residuals, rank, singular_values)
    return write_out(result, out)
