"""The LU factorisation with partial pivoting, A = P L U, and what is built on it: torch.linalg's
lu_factor, lu_factor_ex, lu and lu_solve, and torch's lu_unpack, lu and lu_solve.

For A of shape m × n and k = min(m, n): P is an m × m permutation, L is m × k unit lower
triangular, U is k × n upper triangular. As LAPACK's getrf (which PyTorch calls), the factors
come packed in one m × n matrix (U on and above the diagonal, L below it, L's unit diagonal not
stored), with the row swaps as 1-based int32 ``pivots``: row j was swapped with row pivots[j]
at step j.

The gradient (square A) follows from dA = P (dL U + L dU): with X = L⁻¹ Pᵀ dA U⁻¹ = L⁻¹dL + dU U⁻¹,
whose strictly lower part is L⁻¹dL and upper part dU U⁻¹,

    dL/dA = P L⁻ᴴ Φ U⁻ᴴ,   Φ = tril₋₁(Lᴴ L̄) + triu(Ū Uᴴ)        (L̄ = dL/dL, Ū = dL/dU)

A wide A = P L [U₁ U₂] adds U₂'s path: Φ = tril₋₁(Lᴴ L̄ - Ū₂ U₂ᴴ) + triu(Ū₁ U₁ᴴ) and
dL/dA = P L⁻ᴴ [Φ U₁⁻ᴴ, Ū₂]. A tall A = P [L₁; L₂] U adds L₂'s: Φ = tril₋₁(L₁ᴴ L̄₁) +
triu(Ū Uᴴ - L₂ᴴ L̄₂) and dL/dA = P [L₁⁻ᴴ Φ U⁻ᴴ; L̄₂ U⁻ᴴ]. (ᴴ is ᵀ for real matrices; the complex
gradient is PyTorch's.) The triangular solves are differentiable, so the gradient has one too.
"""

import math
import warnings

from ..backend import int32, xp
from ..errors import refuse_unbroadcastable
from ..graph import program_stacklevel
from ..primitive import Primitive, named_node
from ..return_types import return_type
from ..tensor import Tensor
from . import joins
from .conversion import require_same_dtype
from .half_linalg import refuses_half
from .names import names
from .outputs import write_out
from .triangular import solve_triangular

LUFactorResult = return_type("linalg_lu_factor", ["LU", "pivots"])
LUFactorExResult = return_type("linalg_lu_factor_ex", ["LU", "pivots", "info"])
LUResult = return_type("linalg_lu", ["P", "L", "U"])
LUUnpackResult = return_type("lu_unpack", ["P", "L", "U"])
LUWithInfoResult = return_type("_lu_with_info", ["LU", "pivots", "info"])


def factor(a):
    """(LU packed, pivots, info) of a batch of m × n arrays, by Gaussian elimination with partial
    pivoting: at step j the row with the largest |a_ij| (i ≥ j; |Re a_ij| + |Im a_ij| where complex, as
    LAPACK's izamax) is swapped into place, the column
    below the pivot is divided by it (giving L's column) and its outer product with the pivot's
    row is taken off the trailing block. info is the 1-based index of the first zero pivot (0 if
    none); a zero pivot's column is left unscaled, as LAPACK's getf2."""
    m, n = a.shape[-2:]
    batch = a.shape[:-2]
    k = min(m, n)
    lu = a.reshape((math.prod(batch), m, n)).copy()
    rows = xp.arange(lu.shape[0])
    pivots = xp.zeros((lu.shape[0], k), dtype=int32)
    info = xp.zeros(lu.shape[0], dtype=int32)
    for j in range(k):
        column = lu[:, j:, j]
        size = xp.abs(column.real) + xp.abs(column.imag) if column.dtype.kind == "c" else xp.abs(column)
        p = j + xp.argmax(size, axis=-1)
        pivots[:, j] = p + 1
        lu[rows, j], lu[rows, p] = lu[rows, p], lu[rows, j].copy()
        pivot = lu[:, j, j]
        zero = pivot == 0
        info[(info == 0) & zero] = j + 1
        lu[:, j + 1:, j] /= xp.where(zero, 1, pivot)[:, None]
        lu[:, j + 1:, j + 1:] -= lu[:, j + 1:, j:j + 1] * lu[:, j:j + 1, j + 1:]
    return lu.reshape(a.shape), pivots.reshape(batch + (k,)), info.reshape(batch)


def permutation(pivots, m, dtype):
    """The m × m permutation matrices P (A = P L U) of a batch of LAPACK pivots: the swaps, replayed
    on the row order 0..m-1, say which row of A each row of L U is (PᵀA = A[order])."""
    batch = pivots.shape[:-1]
    swaps = pivots.reshape((math.prod(batch), pivots.shape[-1])).astype(xp.int64) - 1
    order = xp.broadcast_to(xp.arange(m), (swaps.shape[0], m)).copy()
    rows = xp.arange(swaps.shape[0])
    for j in range(swaps.shape[-1]):
        p = swaps[:, j]
        order[rows, j], order[rows, p] = order[rows, p], order[rows, j].copy()
    P = xp.zeros((swaps.shape[0], m, m), dtype=dtype)
    P[rows[:, None], order, xp.arange(m)] = 1  # P[order_i, i] = 1
    return P.reshape(batch + (m, m))


def _unit_lower(lu, k):
    """L (m × k, unit diagonal) from packed factors."""
    m = lu.shape[-2]
    eye = Tensor._make(xp.eye(m, k, dtype=lu.dtype))
    return lu[..., :, :k].tril(-1) + eye


class LUFactor(Primitive):
    """The packed factors LU of A = P L U (computed by ``factor``, which also gives the integer
    pivots, and handed over here); the gradient is the module docstring's."""

    pytorch_name = "LinalgLuFactorExBackward0"  # (PyTorch's node for it)
    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True  # (written with ᴴ)

    def forward(self, a):
        return self.__dict__.pop("lu")  # (the node keeps it as its output, not twice)

    def backward(self, grad, lu, a):
        m, n = a.shape[-2:]
        k = min(m, n)
        P = Tensor._make(self.permutation)
        lower, upper = _unit_lower(lu, k), lu[..., :k, :].triu()
        grad_lower, grad_upper = grad[..., :, :k].tril(-1), grad[..., :k, :].triu()
        lower1, upper1 = lower[..., :k, :], upper[..., :, :k]
        inner_lower = lower1.mH @ grad_lower[..., :k, :]
        inner_upper = grad_upper[..., :, :k] @ upper1.mH
        if m < n:  # U₂'s path
            inner_lower = inner_lower - grad_upper[..., :, k:] @ upper[..., :, k:].mH
        if m > n:  # L₂'s path
            inner_upper = inner_upper - lower[..., k:, :].mH @ grad_lower[..., k:, :]
        phi = inner_lower.tril(-1) + inner_upper.triu()
        right = solve_triangular(upper1.mH, phi, upper=False, left=False)  # Φ U₁⁻ᴴ
        if m < n:
            right = joins.cat([right, grad_upper[..., :, k:]], -1)
        grad_a = solve_triangular(lower1.mH, right, upper=True, unitriangular=True)  # L₁⁻ᴴ (…)
        if m > n:
            grad_a = joins.cat([grad_a, solve_triangular(upper1.mH, grad_lower[..., k:, :], upper=False, left=False)],
                               -2)
        return (P @ grad_a,)


def _matrices(A, op):
    if A.ndim < 2:
        raise RuntimeError(f"{op}: Expected tensor with 2 or more dimensions. Got size: {list(A.shape)} instead")
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input, got {A.dtype}")


def _check_pivot(pivot, op):
    if not pivot:
        raise RuntimeError(f"{op}: LU without pivoting is not implemented on the CPU")


def _zero_pivot_error(info, op):
    """PyTorch's error for the first matrix of the batch with a zero on U's diagonal."""
    flat = info.reshape(-1)
    first = int(xp.flatnonzero(flat)[0])
    where = f"(Batch element {first}): " if info.ndim else ""
    i = int(flat[first])
    return RuntimeError(f"torch.{op}: {where}U[{i},{i}] is zero and using it on lu_solve would result in a division "
                        "by zero. If you still want to perform the factorization, consider calling linalg.lu(A, pivot) "
                        "or linalg.lu_factor_ex(A, pivot)")


@refuses_half("lu_cpu")
def lu_factor_ex(A, *, pivot=True, check_errors=False, out=None):
    """(LU, pivots, info): the packed factors of A = P L U, LAPACK's 1-based int32 pivots, and
    info > 0 where U has a zero on its diagonal (U[info, info], 1-based; an error with
    check_errors)."""
    _matrices(A, "linalg.lu_factor_ex")
    _check_pivot(pivot, "linalg.lu_factor_ex")
    lu, pivots, info = factor(A._data)
    if check_errors and info.any():
        raise _zero_pivot_error(info, "linalg.lu_factor_ex")
    packed = LUFactor.apply(A, lu=lu, permutation=permutation(pivots, A.shape[-2], lu.dtype))
    return write_out(LUFactorExResult(packed, Tensor._make(pivots), Tensor._make(info)), out, same_dtype=True)


@refuses_half("lu_cpu")
def lu_factor(A, *, pivot=True, out=None):
    """(LU, pivots) of A = P L U, for lu_solve; an error where U would have a zero on its diagonal."""
    _matrices(A, "linalg.lu_factor")
    _check_pivot(pivot, "linalg.lu_factor")
    packed, pivots, info = lu_factor_ex(A)
    if info._data.any():
        raise _zero_pivot_error(info._data, "linalg.lu_factor")
    return write_out(LUFactorResult(packed, pivots), out, same_dtype=True)


def _check_pivots(pivots, op, note=""):
    if pivots.dtype != int32:
        raise RuntimeError(f"{op}: pivots should be a Tensor of scalar type torch.int32{note}")


@names("lu_unpack", method=False)
def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True, *, out=None):
    """(P, L, U) from lu_factor's packed factors: L = the strictly lower part plus the unit
    diagonal, U = the upper part (both differentiable in LU_data), P from the pivots."""
    if LU_pivots.dtype != int32:
        raise RuntimeError("torch.lu_unpack: LU_pivots is expected to be a contiguous tensor of torch.int32 dtype.\n"
                           "Note: this function is intended to be used with the output produced by "
                           "torch.linalg.lu_factor")
    m, n = LU_data.shape[-2:]
    k = min(m, n)
    empty = Tensor._make(xp.zeros((0,), dtype=LU_data.dtype))
    P = Tensor._make(permutation(LU_pivots._data, m, LU_data.dtype)) if unpack_pivots else empty
    L, U = (_unit_lower(LU_data, k), LU_data[..., :k, :].triu()) if unpack_data else (empty, empty)
    return write_out(LUUnpackResult(P, L, U), out)


@refuses_half("lu_cpu")
def lu(A, *, pivot=True, out=None):
    """(P, L, U) with A = P L U: P a permutation, L unit lower triangular, U upper triangular
    (torch.linalg.lu; A may be rectangular, and singular)."""
    _matrices(A, "linalg.lu")
    _check_pivot(pivot, "linalg.lu")
    packed, pivots, _ = lu_factor_ex(A)
    return write_out(LUResult(*lu_unpack(packed, pivots)), out, same_dtype=True)


@names("lu")
def torch_lu(A, pivot=True, get_infos=False, out=None):
    """torch.lu / A.lu(): (LU, pivots), with info too when get_infos (deprecated in PyTorch in
    favour of linalg.lu_factor, with its warning)."""
    warnings.warn("torch.lu is deprecated in favor of torch.linalg.lu_factor / torch.linalg.lu_factor_ex and will be "
                  "removed in a future PyTorch release.\nLU, pivots = torch.lu(A, compute_pivots)\nshould be replaced "
                  "with\nLU, pivots = torch.linalg.lu_factor(A, compute_pivots)\nand\nLU, pivots, info = torch.lu(A, "
                  "compute_pivots, get_infos=True)\nshould be replaced with\nLU, pivots, info = "
                  "torch.linalg.lu_factor_ex(A, compute_pivots)", UserWarning, stacklevel=program_stacklevel())
    _check_pivot(pivot, "lu")
    packed, pivots, info = lu_factor_ex(A)
    result = LUWithInfoResult(packed, pivots, info) if get_infos else (packed, pivots)
    return write_out(result, out)


def lu_solve(LU, pivots, B, *, left=True, adjoint=False, out=None):
    """X with A X = B (Aᴴ X = B with adjoint; X A = B, X Aᴴ = B when not left), A = P L U given
    by lu_factor: X = U⁻¹ L⁻¹ Pᵀ B (or P L⁻ᴴ U⁻ᴴ B), two triangular solves reading the packed
    factors in place (so LU's gradient lands on the triangles each reads). (ᴴ is ᵀ for reals.)"""
    if LU.ndim < 2 or LU.shape[-1] != LU.shape[-2]:
        raise RuntimeError(f"torch.linalg.lu_solve: A must be batches of square matrices, but they are "
                           f"{' by '.join(map(str, LU.shape[-2:]))} matrices")
    if B.ndim < 2:
        raise RuntimeError("linalg.lu_solve: The input tensor B must have at least 2 dimensions.")
    _check_pivots(pivots, "linalg.lu_solve")
    n = LU.shape[-1]
    if pivots.ndim == 0 or pivots.shape[-1] != n:
        raise RuntimeError("linalg.lu_solve: Number of pivots per batch should be same as the dimension of the matrix")
    if tuple(pivots.shape) != tuple(LU.shape[:-1]):
        raise RuntimeError(f"linalg.lu_solve: Expected LU.shape[:-1] and pivots.shape to be the same, but got pivots "
                           f"with shape {list(pivots.shape)} instead")
    require_same_dtype(LU, B, ("LU", "B"), "linalg.lu_solve")
    if (B.shape[-2] if left else B.shape[-1]) != n:
        raise RuntimeError(f"linalg.lu_solve: Incompatible shapes of A and B for the equation "
                           f"{'AX = B' if left else 'XA = B'} ({n}x{n} and {B.shape[-2]}x{B.shape[-1]})")
    refuse_unbroadcastable(B.shape[:-2], LU.shape[:-2])  # (the batch dims, in PyTorch's order: B's, then A's)
    if not left:  # X A = B ⇔ Aᴴ Xᴴ = Bᴴ (and X Aᴴ = B ⇔ A Xᴴ = Bᴴ)
        X = lu_solve(LU, pivots, B.mH, adjoint=not adjoint).mH
        return write_out(named_node(X, None, "LinalgLuSolveBackward0", (LU, B), saves=(pivots,)), out,
                         same_dtype=True)
    P = Tensor._make(permutation(pivots._data, n, LU.dtype))
    if adjoint:  # Aᴴ = Uᴴ Lᴴ Pᵀ
        Y = solve_triangular(LU.mH, B, upper=False)
        X = P @ solve_triangular(LU.mH, Y, upper=True, unitriangular=True)
    else:
        Y = solve_triangular(LU, P.mT @ B, upper=False, unitriangular=True)
        X = solve_triangular(LU, Y, upper=True)
    # (PyTorch's node, which saves the pivots: P made of them here, writing them after the forward refuses the backward
    # as there)
    return write_out(named_node(X, None, "LinalgLuSolveBackward0", (LU, B), saves=(pivots,)), out, same_dtype=True)


@names("lu_solve")
def torch_lu_solve(input, LU_data, LU_pivots, *, out=None):
    """torch.lu_solve(b, LU_data, LU_pivots): linalg.lu_solve with the older argument order (b is
    PyTorch's ``input=``; deprecated in PyTorch, with this warning)."""
    warnings.warn("torch.lu_solve is deprecated in favor of torch.linalg.lu_solveand will be removed in a future "
                  "PyTorch release.\nNote that torch.linalg.lu_solve has its arguments reversed.\n"
                  "X = torch.lu_solve(B, LU, pivots)\nshould be replaced with\n"
                  "X = torch.linalg.lu_solve(LU, pivots, B)", UserWarning,
                  stacklevel=program_stacklevel())  # ("lu_solveand": PyTorch's)
    return lu_solve(LU_data, LU_pivots, input, out=out)
