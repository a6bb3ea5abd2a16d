"""The LDLᵀ factorisation of a symmetric (possibly indefinite) matrix with Bunch-Kaufman
pivoting, torch.linalg.ldl_factor, ldl_factor_ex and ldl_solve (LAPACK's sytrf and sytrs, which
PyTorch calls; only A's lower triangle is read). Complex matrices are complex symmetric, or with
hermitian=True Hermitian (hetrf and hetrs: Lᴴ for Lᵀ, D's diagonal real); pivots are chosen by
|Re| + |Im|, as LAPACK's.

    Pᵀ A P = L D Lᵀ,  L unit lower triangular, D block diagonal with 1 × 1 and 2 × 2 blocks

At step k the pivot is a_kk when it is large enough against the largest entry below it (|a_kk| ≥
α·colmax, α = (1 + √17)/8, which bounds the growth of the entries); otherwise a better diagonal
entry a_rr is swapped in, or the 2 × 2 block [[a_kk, a_rk], [a_rk, a_rr]] is used. As LAPACK's,
the factors come packed in one matrix LD (D's blocks on and just below the diagonal, L's
multipliers below them), and the swaps as 1-based int32 pivots: pivots[k] = r > 0 for a 1 × 1
block after swapping k and r, pivots[k] = pivots[k+1] = -r for a 2 × 2 block after swapping
k+1 and r. The swaps are applied to the part not yet factored only, so ldl_solve replays them in
order.

Neither has a gradient (as in PyTorch): an input that requires grad is refused with that said.
"""

import math

from ..backend import errstate, int32, to_numpy, xp
from ..graph import is_grad_enabled
from ..return_types import return_type
from ..tensor import Tensor
from .checked import _raise
from .conversion import require_same_dtype
from .half_linalg import refuses_half
from .inverses import _square
from .outputs import write_out

LDLFactorResult = return_type("linalg_ldl_factor", ["LD", "pivots"])
LDLFactorExResult = return_type("linalg_ldl_factor_ex", ["LD", "pivots", "info"])

ALPHA = (1 + math.sqrt(17)) / 8


def _swap_symmetric(w, i, j, start):
    """Swap rows and columns i and j of the symmetric block w[start:, start:]."""
    w[[i, j], start:] = w[[j, i], start:]
    w[start:, [i, j]] = w[start:, [j, i]]


def _magnitude(x):
    """LAPACK's measure of entries for pivoting: |x| of real numbers, |Re x| + |Im x| of complex (CABS1)."""
    return xp.abs(x.real) + xp.abs(x.imag) if x.dtype.kind == "c" else xp.abs(x)


def _factor_one(a, hermitian):
    """(LD, pivots, info) of one symmetric (complex: ``hermitian``, or complex symmetric) matrix, from its lower
    triangle. A Hermitian matrix's diagonal is read real, and D's stays real (LAPACK's hetrf)."""
    n = a.shape[-1]
    hermitian = hermitian and a.dtype.kind == "c"
    upper = xp.tril(a, -1).T
    w = xp.tril(a) + (upper.conj() if hermitian else upper)  # the matrix the lower triangle stands for
    if hermitian:
        w[xp.diag_indices(n)] = w.diagonal().real
    pivots = xp.zeros(n, dtype=int32)
    info = 0
    k = 0
    while k < n:
        step, r = 1, k
        diagonal = abs(w[k, k].real) if hermitian else _magnitude(w[k, k])
        below = _magnitude(w[k + 1:, k])
        i = k + 1 + int(xp.argmax(below)) if below.size else k
        column_max = below.max() if below.size else 0.0
        zero_column = max(diagonal, column_max) == 0 or xp.isnan(diagonal)
        if zero_column:
            info = info or k + 1  # D has a zero here, and there is nothing to eliminate
        elif diagonal < ALPHA * column_max:
            row = _magnitude(w[i, k:])
            row[i - k] = 0
            row_max = row.max()
            if diagonal >= ALPHA * column_max * (column_max / row_max):
                pass  # a_kk after all
            elif (abs(w[i, i].real) if hermitian else _magnitude(w[i, i])) >= ALPHA * row_max:
                r = i  # the 1 × 1 pivot a_ii, swapped into place
            else:
                step, r = 2, i  # the 2 × 2 block of rows k and i
        if not zero_column:
            last = k + step - 1
            if r != last:
                _swap_symmetric(w, last, r, k)
            rest = slice(k + step, n)
            if step == 1:  # A' = A - a aᵀ / d (Hermitian: a aᴴ / d)
                multipliers = w[rest, k] / w[k, k]
                w[rest, rest] -= xp.outer(multipliers, w[rest, k].conj() if hermitian else w[rest, k])
                w[rest, k] = multipliers
            else:  # [w_k w_{k+1}] = [a_k a_{k+1}] D⁻¹ with D the 2 × 2 block; A' = A - W Cᵀ (Hermitian: W Cᴴ)
                block = w[k:k + 2, k:k + 2]
                columns = w[rest, k:k + 2]
                multipliers = xp.linalg.solve(block.T, columns.T).T
                w[rest, rest] -= multipliers @ (columns.conj().T if hermitian else columns.T)
                w[rest, k:k + 2] = multipliers
            if hermitian:  # (the rest's diagonal stays real, as LAPACK's keeps it)
                diagonal_rest = (xp.arange(k + step, n),) * 2
                w[diagonal_rest] = w[diagonal_rest].real
        pivots[k:k + step] = r + 1 if step == 1 else -(r + 1)
        k += step
    return xp.tril(w), pivots, info


def _refuse_grad(A, op):
    if A.requires_grad and is_grad_enabled():
        raise RuntimeError(f"{op}: the LDL factorisation has no derivative (PyTorch's has none either); call it on "
                           "A.detach()")


def ldl_factor_ex(input, *, hermitian=False, check_errors=False, out=None):
    """(LD, pivots, info) of symmetric A (its lower triangle read): Pᵀ A P = L D Lᵀ, packed as
    LAPACK's sytrf; info = k > 0 where D[k, k] is zero (A singular)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    op = "torch.linalg.ldl_factor_ex"
    if A.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor A must have at least 2 dimensions.")
    _square(A, "ldl_factor_ex")
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input, got {A.dtype}")
    if A.dtype == xp.float16:  # (LAPACK's sytrf has no half precision)
        raise NotImplementedError("\"ldl_factor_kernel_cpu\" not implemented for 'Half'")
    _refuse_grad(A, op)
    n = A.shape[-1]
    batch = tuple(A.shape[:-2])
    flat = A._data.reshape((math.prod(batch), n, n))
    results = [_factor_one(a, hermitian) for a in flat]
    LD = xp.stack([r[0] for r in results]) if results else xp.zeros_like(flat)
    pivots = xp.stack([r[1] for r in results]) if results else xp.zeros((0, n), dtype=int32)
    info = xp.array([r[2] for r in results], dtype=int32)
    LD, pivots, info = LD.reshape(A.shape), pivots.reshape(batch + (n,)), info.reshape(batch)
    if check_errors and info.any():
        _raise(info, op, lambda i: f"The factorization could not be completed: D[{i},{i}] is zero, A is singular.")
    return write_out(LDLFactorExResult(Tensor._make(LD), Tensor._make(pivots), Tensor._make(info)), out)


@refuses_half("ldl_factor_kernel_cpu")
def ldl_factor(input, *, hermitian=False, out=None):
    """(LD, pivots) of symmetric A, for ldl_solve; a LinAlgError where D has a zero on its diagonal
    (PyTorch 2.13 fails there with an internal assertion instead)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    LD, pivots, info = ldl_factor_ex(A, hermitian=hermitian)
    if info._data.any():
        _raise(info._data, "torch.linalg.ldl_factor",
               lambda i: f"The factorization could not be completed: D[{i},{i}] is zero, A is singular.")
    return write_out(LDLFactorResult(LD, pivots), out)


def _solve_one(ld, pivots, b, hermitian):
    """X with A X = B from one matrix's packed factors (LAPACK's sytrs, of a Hermitian matrix hetrs): L D Y = Pᵀ B
    with the swaps replayed step by step, then Lᵀ X = Y (Lᴴ X = Y) undoing them in reverse."""
    flip = xp.conj if hermitian and ld.dtype.kind == "c" else (lambda m: m)  # Lᵀ's entries, or Lᴴ's
    n = ld.shape[-1]
    pivots = [int(p) for p in to_numpy(pivots)]  # (they steer the loop: Python integers, in host memory)
    x = b.copy()
    k = 0
    while k < n:  # L D Y = B, forward
        if pivots[k] > 0:
            r = pivots[k] - 1
            x[[k, r]] = x[[r, k]]
            x[k + 1:] -= xp.outer(ld[k + 1:, k], x[k])
            x[k] /= ld[k, k]
            k += 1
        else:
            r = -pivots[k] - 1
            x[[k + 1, r]] = x[[r, k + 1]]
            x[k + 2:] -= ld[k + 2:, k:k + 2] @ x[k:k + 2]
            block = ld[k:k + 2, k:k + 2].copy()
            block[0, 1] = flip(block[1, 0])  # (the packed factors hold the lower triangle only)
            x[k:k + 2] = xp.linalg.solve(block, x[k:k + 2])
            k += 2
    k = n - 1
    while k >= 0:  # Lᵀ X = Y, backward
        if pivots[k] > 0:
            x[k] -= flip(ld[k + 1:, k]) @ x[k + 1:]
            r = pivots[k] - 1
            x[[k, r]] = x[[r, k]]
            k -= 1
        else:
            x[k - 1:k + 1] -= flip(ld[k + 1:, k - 1:k + 1]).T @ x[k + 1:]
            r = -pivots[k] - 1
            x[[k, r]] = x[[r, k]]
            k -= 2
    return x


def ldl_solve(LD, pivots, B, *, hermitian=False, out=None):
    """X with A X = B, A given by ldl_factor's (LD, pivots). Batch dims broadcast."""
    op = "torch.linalg.ldl_solve"
    _square(LD, "ldl_solve")
    if B.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor B must have at least 2 dimensions.")
    if B.shape[-2] != LD.shape[-1]:
        raise RuntimeError(f"Incompatible matrix sizes for {op}: each A matrix is {LD.shape[-1]} by {LD.shape[-1]} "
                           f"but each b matrix is {B.shape[-2]} by {B.shape[-1]}")
    require_same_dtype(B, LD, ("b", "A"))
    if pivots.dtype.kind not in "iu" or tuple(pivots.shape) != tuple(LD.shape[:-1]):
        raise RuntimeError(f"{op}: pivots must be an integer tensor of shape {tuple(LD.shape[:-1])}, got "
                           f"{pivots.dtype} of shape {tuple(pivots.shape)}")
    _refuse_grad(LD, op)
    _refuse_grad(B, op)
    n = LD.shape[-1]
    batch = xp.broadcast_shapes(tuple(LD.shape[:-2]), tuple(B.shape[:-2]))
    ld = xp.broadcast_to(LD._data, batch + (n, n)).reshape((-1, n, n))
    p = xp.broadcast_to(pivots._data, batch + (n,)).reshape((-1, n))
    b = xp.broadcast_to(B._data, batch + tuple(B.shape[-2:])).reshape((-1,) + tuple(B.shape[-2:]))
    with errstate(divide="ignore", invalid="ignore"):  # a singular D gives inf/nan, as LAPACK's
        x = xp.stack([_solve_one(*args, hermitian) for args in zip(ld, p, b)]) if b.shape[0] else b.copy()
    return write_out(Tensor._make(x.reshape(batch + tuple(B.shape[-2:]))), out, dtype=x.dtype)

