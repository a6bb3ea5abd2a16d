"""Equations between tensors, torch.linalg.tensorsolve and tensorinv: a tensor A whose leading
dims index equations and whose trailing dims index unknowns is a matrix in disguise, so both
are a reshape, a solve (or an inverse) and a reshape back (differentiable, as those are).

    tensorsolve:  X with Σ_j A[i..., j...] X[j...] = B[i...]
    tensorinv:    A⁻¹ with Σ_j A⁻¹[k..., j...] A[j..., l...] = δ_kl (the dims before ``ind``
                  index rows, the others columns)
"""

import math

from .half_linalg import low_precision, refuses_half
from .inverses import inv, solve
from .outputs import write_out


def tensorsolve(input, other, dims=None, *, out=None):
    """X with tensordot(A, X, X.ndim) = B; ``dims`` (A's dims that index the unknowns) are moved
    to the end first."""
    A, B = input, other  # (PyTorch's keywords, though its docs write A, B)
    if dims is not None:
        dims = [d % A.ndim for d in dims]
        A = A.permute([d for d in range(A.ndim) if d not in dims] + dims)
    unknowns = tuple(A.shape[B.ndim:])
    n = math.prod(unknowns)
    if n != math.prod(B.shape) or math.prod(A.shape) != n * n:
        raise RuntimeError(f"Expected self to satisfy the requirement prod(self.shape[other.ndim:]) == "
                           f"prod(other.shape), but got {n} != {math.prod(B.shape)} (self.shape "
                           f"{tuple(A.shape)}, other.shape {tuple(B.shape)})")
    return write_out(solve(A.reshape(n, n), B.reshape(n)).reshape(unknowns), out)


@refuses_half(low_precision("linalg.inv"))
def tensorinv(input, ind=2, *, out=None):
    """The inverse of A seen as a matrix whose rows are indexed by its first ``ind`` dims; the
    result's shape is A.shape[ind:] + A.shape[:ind]."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    if ind <= 0:
        raise RuntimeError(f"Expected a strictly positive integer for 'ind', but got {ind}")
    rows, columns = tuple(A.shape[:ind]), tuple(A.shape[ind:])
    if math.prod(rows) != math.prod(columns):
        raise RuntimeError(f"Expected self to satisfy the requirement prod(self.shape[ind:]) == "
                           f"prod(self.shape[:ind]), but got {math.prod(columns)} != {math.prod(rows)}")
    n = math.prod(rows)
    return write_out(inv(A.reshape(n, n)).reshape(columns + rows), out)
