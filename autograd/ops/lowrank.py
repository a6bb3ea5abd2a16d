"""Randomised low-rank SVD and PCA, torch.svd_lowrank and torch.pca_lowrank (Halko, Martinsson
and Tropp, "Finding structure with randomness", 2009, algorithms 4.4 and 5.1).

For A (m × n, taken tall: a wide A is transposed first, and U and V swapped back at the end):

    Q = an orthonormal basis of A Ω,  Ω an n × q standard normal draw (range finder)
    niter times:  Q ← basis of Aᵀ Q,  Q ← basis of A Q  (power iterations: they sharpen the
                  decay of the spectrum, so the basis finds the top singular vectors)
    B = Qᵀ A  (q × n),   B = Û S Vᵀ  (exact, small),   U = Q Û

so that A ≈ U diag(S) Vᵀ; it is exact when rank A ≤ q. A matrix M stands for a mean to take off
(A - M is factored, without forming it when M is a broadcast row). Ω comes from the project's
random generator, so autograd.manual_seed makes the result reproducible. Every step is a
differentiable op (matmul, QR of a tall matrix, SVD), so the result has their gradient.
"""

from ..factories import randn
from .decompositions import qr
from .names import names
from .svd import svd


def _basis(x):
    return qr(x).Q


def _minus(product, correction):
    return product if correction is None else product - correction


def _approximate_basis(A, q, niter, M):
    """An m × q orthonormal Q with A - M ≈ Q Qᵀ (A - M)."""
    omega = randn(A.shape[-1], q, dtype=A.dtype)
    Q = _basis(_minus(A @ omega, None if M is None else M @ omega))
    for _ in range(niter):
        Q = _basis(_minus(A.mT @ Q, None if M is None else M.mT @ Q))
        Q = _basis(_minus(A @ Q, None if M is None else M @ Q))
    return Q


def _check(A, q, niter):
    if A.ndim < 2:
        raise ValueError(f"svd_lowrank: the input must have at least 2 dimensions, got shape {tuple(A.shape)}")
    if A.dtype.kind != "f":
        raise RuntimeError(f"svd_lowrank: Expected a floating point tensor as input, got {A.dtype}")
    if not niter >= 0:
        raise ValueError(f"niter(={niter}) must be non-negative integer")


@names("svd_lowrank", method=False)
def svd_lowrank(A, q=6, niter=2, M=None):
    """(U, S, V), A - M ≈ U diag(S) Vᵀ with U m × q, S q, V n × q (q a slightly overestimated
    rank): randomised, see the module docstring. M defaults to none (0)."""
    q = 6 if q is None else q
    niter = 2 if niter is None else niter
    _check(A, q, niter)
    m, n = A.shape[-2:]
    if M is not None:
        M = M.expand(*A.shape)
    if m < n:  # work on the tall Aᵀ
        A = A.mT
        M = None if M is None else M.mT
    Q = _approximate_basis(A, q, niter, M)
    small, S, Vh = svd(_minus(Q.mT @ A, None if M is None else Q.mT @ M), full_matrices=False)
    U, V = Q @ small, Vh.mT
    return (V, S, U) if m < n else (U, S, V)


@names("pca_lowrank", method=False)
def pca_lowrank(A, q=None, center=True, niter=2):
    """(U, S, V) of the centred data A (rows are samples): V's columns are the principal
    directions, S² / (m - 1) the variances along them, A V[:, :k] the first k components.
    q defaults to min(6, m, n)."""
    m, n = A.shape[-2:]
    if q is None:
        q = min(6, m, n)
    elif not 0 <= q <= min(m, n):
        raise ValueError(f"q(={q}) must be non-negative integer and not greater than min(m, n)={min(m, n)}")
    if not niter >= 0:
        raise ValueError(f"niter(={niter}) must be non-negative integer")
    if not center:
        return svd_lowrank(A, q, niter=niter)
    return svd_lowrank(A - A.mean(-2, keepdim=True), q, niter=niter)
