"""Products of Householder reflections, torch.linalg.householder_product (LAPACK's orgqr): the
Q of a QR factorisation stored as geqrf stores it.

A reflection H = I - τ v vᵀ maps v to (1 - τ vᵀv) v and fixes the plane orthogonal to v. For A of
shape m × n (m ≥ n) and τ of length k ≤ n, v_i is the i-th column of A below the diagonal with a 1
on it (zeros above), and

    Q = (H₁ H₂ ⋯ H_k)[:, :n]   (the first n columns of the m × m product)

Applied from the right end inwards, H_i X = X - τ_i v_i (v_iᵀ X), to the first n columns of the
identity: k rank-one updates of an m × n matrix, each differentiable in A and τ.
"""

from ..backend import xp
from ..tensor import Tensor
from .outputs import write_out


def householder_product(A, tau, *, out=None):
    """The first n columns of H₁ ⋯ H_k, H_i = I - τ_i v_i v_iᵀ, v_i = A's i-th column below the
    diagonal with a unit diagonal entry."""
    op = "torch.linalg.householder_product"
    if A.ndim < 2:
        raise RuntimeError(f"{op}: input must have at least 2 dimensions.")
    m, n = A.shape[-2:]
    if m < n:
        raise RuntimeError(f"{op}: input.shape[-2] must be greater than or equal to input.shape[-1]")
    if tau.shape[-1] > n:
        raise RuntimeError(f"{op}: input.shape[-1] must be greater than or equal to tau.shape[-1]")
    if tuple(tau.shape[:-1]) != tuple(A.shape[:-2]):
        raise RuntimeError(f"{op}: Expected batch dimensions of tau to be equal to input.shape[:-2], but got "
                           f"{list(tau.shape[:-1])}")
    if A.dtype.kind != "f" or tau.dtype != A.dtype:
        raise RuntimeError(f"{op}: tau dtype {tau.dtype} does not match input dtype {A.dtype}" if A.dtype.kind == "f"
                           else f"{op}: Expected a floating point tensor as input, got {A.dtype}")
    vectors = A.tril(-1) + Tensor._make(xp.eye(m, n, dtype=A.dtype))
    Q = Tensor._make(xp.broadcast_to(xp.eye(m, n, dtype=A.dtype), A.shape).copy())
    for i in reversed(range(tau.shape[-1])):
        v = vectors[..., :, i:i + 1]
        Q = Q - tau[..., i, None, None] * (v @ (v.mT @ Q))
    return write_out(Q, out)
