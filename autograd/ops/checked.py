"""The ``_ex`` variants of torch.linalg's inverse, solve and Cholesky factorisation: the result
with an int32 ``info`` per matrix instead of an error, so that a loop over a batch can check
for itself (check_errors=True raises PyTorch's error instead).

info is LAPACK's: for inv_ex and solve_ex the 1-based index of the first zero on the diagonal
of U in A = P L U (A singular), for cholesky_ex the order of the first leading minor that is not
positive-definite; 0 where all went well. Where info is nonzero, PyTorch leaves whatever LAPACK
had computed so far in the result; here those matrices' results are NaN, so that they cannot
pass for answers. The others keep their values and gradients.

The common case costs what the plain op costs: info is only worked out when the op fails.
"""

import math

from ..backend import int32, xp
from ..return_types import return_type
from ..tensor import Tensor
from .decompositions import cholesky
from .elementwise import where
from .half_linalg import low_precision, refuses_half
from .inverses import LinAlgError, _square, first_failure, inv, is_vector_rhs, solve
from .lu import factor
from .outputs import write_out

InvExResult = return_type("linalg_inv_ex", ["inverse", "info"])
SolveExResult = return_type("linalg_solve_ex", ["result", "info"])
CholeskyExResult = return_type("linalg_cholesky_ex", ["L", "info"])


def _raise(info, op, message):
    """PyTorch's error for the first failed matrix, naming it in a batch."""
    where_, first = first_failure(info)
    raise LinAlgError(f"{op}: {where_}{message(first)}")


def _cholesky_info(a, upper=False):
    """The order of the first leading minor of each matrix that is not positive-definite (0 if
    none), by the Cholesky recurrence l_jj² = a_jj - Σ_{k<j} |l_jk|², column by column, reading
    A's lower triangle (its upper one, mirrored, with upper)."""
    n = a.shape[-1]
    flat = a.reshape((math.prod(a.shape[:-2]), n, n))
    if upper:
        flat = xp.conj(xp.swapaxes(flat, -1, -2))
    lower = xp.zeros_like(flat)
    info = xp.zeros(flat.shape[0], dtype=int32)
    for j in range(n):
        pivot = flat[:, j, j].real - (abs(lower[:, j, :j]) ** 2).sum(-1)
        bad = ~(pivot > 0)
        info[(info == 0) & bad] = j + 1
        lower[:, j, j] = xp.sqrt(xp.where(bad, 1.0, pivot))
        below = flat[:, j + 1:, j] - (lower[:, j + 1:, :j] @ xp.conj(lower[:, j, :j, None]))[..., 0]
        lower[:, j + 1:, j] = below / lower[:, j, j, None]
    return info.reshape(a.shape[:-2])


def _on_the_good_ones(op, A, info, vector=False):
    """op(A) where info is 0, NaN where it is not: the failed matrices are replaced by the identity
    for the computation (their results, and gradients, are then set aside). ``vector``: op(A) is
    a batch of vectors, not of matrices."""
    failed = Tensor._make((info > 0)[..., None, None])
    identity = Tensor._make(xp.eye(A.shape[-1], dtype=A.dtype))
    result = op(where(failed, identity, A))
    return where(failed[..., 0] if vector else failed, float("nan"), result)


@refuses_half(low_precision("linalg.inv"))
def inv_ex(A, *, check_errors=False, out=None):
    """(inverse, info): A⁻¹, with info > 0 (and NaN) for a singular matrix instead of an error."""
    _square(A, "inv_ex")
    try:
        result, info = inv(A), xp.zeros(A.shape[:-2], dtype=int32)
    except LinAlgError:
        info = factor(A._data)[2]
        if check_errors:
            _raise(info, "linalg.inv_ex", lambda i: f"The diagonal element {i} is zero, the inversion could not be "
                                                    "completed because the input matrix is singular.")
        result = _on_the_good_ones(inv, A, info)
    return write_out(InvExResult(result, Tensor._make(info)), out)


def solve_ex(A, B, *, left=True, check_errors=False, out=None):
    """(result, info): X with A X = B (X A = B when not left), with info > 0 (and NaN) for a
    singular A instead of an error."""
    _square(A, "solve_ex")
    try:
        result, info = solve(A, B, left=left), xp.zeros(A.shape[:-2], dtype=int32)
    except LinAlgError:
        info = factor(A._data)[2]
        if check_errors:
            _raise(info, "torch.linalg.solve_ex", lambda i: "The solver failed because the input matrix is singular.")
        result = _on_the_good_ones(lambda a: solve(a, B, left=left), A, info, is_vector_rhs(A, B))
    return write_out(SolveExResult(result, Tensor._make(info)), out, same_dtype=True)


@refuses_half("cholesky_cpu")
def cholesky_ex(input, *, upper=False, check_errors=False, out=None):
    """(L, info): the Cholesky factor, with info > 0 (and NaN) for a matrix that is not
    positive-definite instead of an error."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    _square(A, "cholesky")
    try:
        result, info = cholesky(A, upper=upper), xp.zeros(A.shape[:-2], dtype=int32)
    except LinAlgError:
        info = _cholesky_info(A._data, upper)
        if check_errors:
            _raise(info, "linalg.cholesky_ex", lambda i: "The factorization could not be completed because the input "
                                                         f"is not positive-definite (the leading minor of order {i} is "
                                                         "not positive-definite).")
        result = _on_the_good_ones(lambda a: cholesky(a, upper=upper), A, info)
    return write_out(CholeskyExResult(result, Tensor._make(info)), out)
