"""Householder reflections: torch.geqrf (QR with Q kept as reflections, LAPACK's geqrf),
torch.linalg.householder_product and its alias torch.orgqr (Q from them), and torch.ormqr (Q
applied to another matrix without forming it).

A reflection H = I - τ v vᴴ maps v to (1 - τ vᴴv) v and fixes the plane orthogonal to v (vᴴ is the
conjugate transpose, vᵀ for real numbers). For A of shape m × n and τ of length k, v_i is the i-th
column of A below the diagonal with a 1 on it (zeros above), and Q = H₁ H₂ ⋯ H_k (m × m). Each H is
applied as a rank-one update,

    H X = X - τ v (vᴴ X),    X H = X - τ (X v) vᴴ

so what is built on them is differentiable in A, τ and X. (geqrf itself has no gradient, as in
PyTorch.)
"""

import math

from ..backend import xp
from ..graph import is_grad_enabled
from ..return_types import return_type
from ..tensor import Tensor
from .conversion import refuse_kinds
from .half_linalg import refuses_half
from .names import names
from .outputs import write_out
from .sorting import UniqueValues

GeqrfResult = return_type("geqrf", ["a", "tau"])


def _reflector_vectors(A):
    """The v_i as the columns of an m × n matrix: A's strictly lower part plus a unit diagonal."""
    m, n = A.shape[-2:]
    return A.tril(-1) + Tensor._make(xp.eye(m, n, dtype=A.dtype))


def _reflect(X, v, tau, from_left):
    """H X (from_left) or X H, for H = I - τ v vᴴ (τ a batch of scalars; vᴴ = vᵀ for real v)."""
    tau = tau[..., None, None]
    return X - tau * (v @ (v.mH @ X)) if from_left else X - tau * ((X @ v) @ v.mH)


def _floating_pair(A, other, op, name):
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"{op}: Expected a floating point tensor as input, got {A.dtype}")
    if other.dtype != A.dtype:
        raise RuntimeError(f"{op}: Expected input and {name} to have the same dtype, but input has dtype {A.dtype} "
                           f"and {name} has dtype {other.dtype}")


def _batch_of_tau(A, tau, op):
    if tuple(tau.shape[:-1]) != tuple(A.shape[:-2]):
        raise RuntimeError(f"{op}: Expected batch dimensions of tau to be equal to input.shape[:-2], but got "
                           f"{list(tau.shape[:-1])}")


def householder_product(input, tau, *, out=None):
    """The first n columns of H₁ ⋯ H_k (torch.linalg.householder_product; torch.orgqr): the Q of
    a QR factorisation from geqrf's reflections, applied from the right end inwards to the first
    n columns of the identity."""
    A, op = input, "torch.linalg.householder_product"
    if A.ndim < 2:
        raise RuntimeError(f"{op}: input must have at least 2 dimensions.")
    m, n = A.shape[-2:]
    if m < n:
        raise RuntimeError(f"{op}: input.shape[-2] must be greater than or equal to input.shape[-1]")
    if tau.shape[-1] > n:
        raise RuntimeError(f"{op}: input.shape[-1] must be greater than or equal to tau.shape[-1]")
    _batch_of_tau(A, tau, op)
    _floating_pair(A, tau, op, "tau")
    vectors = _reflector_vectors(A)
    Q = Tensor._make(xp.broadcast_to(xp.eye(m, n, dtype=A.dtype), A.shape).copy())
    for i in reversed(range(tau.shape[-1])):
        Q = _reflect(Q, vectors[..., :, i:i + 1], tau[..., i], from_left=True)
    return write_out(Q, out)


@names("orgqr")
@refuses_half("orgqr_cpu")
def orgqr(input, input2, *, out=None):
    """householder_product(input, tau) under torch.orgqr's keywords: tau is ``input2=``."""
    return householder_product(input, input2, out=out)


@names("ormqr")
@refuses_half("ormqr_cpu")
def ormqr(input, input2, input3, left=True, transpose=False, *, out=None):
    """Q C, Qᴴ C (transpose), C Q or C Qᴴ (not left), Q = H₁ ⋯ H_k given by geqrf's (input, tau),
    without forming Q: the k reflections applied one by one, in the order the product needs.
    PyTorch's keywords name tau ``input2=`` and C ``input3=``."""
    A, tau, other, op = input, input2, input3, "torch.ormqr"
    if A.ndim < 2 or other.ndim < 2:
        raise RuntimeError(f"{op}: input and other must have at least 2 dimensions.")
    rows = other.shape[-2] if left else other.shape[-1]
    if rows != A.shape[-2]:
        raise RuntimeError(f"{op}: other.shape[{-2 if left else -1}] must be equal to input.shape[-2]")
    if tau.shape[-1] != min(rows, A.shape[-1]):
        raise RuntimeError(f"{op}: tau.shape[-1] must be equal to min(other.shape[{-2 if left else -1}], "
                           "input.shape[-1])")
    _batch_of_tau(A, tau, op)
    _floating_pair(A, other, op, "other")
    _floating_pair(A, tau, op, "tau")
    vectors = _reflector_vectors(A)
    steps = range(tau.shape[-1])
    # Q C = H₁(H₂(⋯ H_k C)) and C Qᵀ = C H_k ⋯ H₁ take H_k first; Qᵀ C and C Q take H₁ first
    if left != transpose:
        steps = reversed(steps)
    if transpose:  # Qᴴ's reflections are H_iᴴ = I - conj(τ_i) v vᴴ (the same H_i for real numbers)
        tau = tau.conj()
    result = other
    for i in steps:
        result = _reflect(result, vectors[..., :, i:i + 1], tau[..., i], from_left=left)
    return write_out(result, out)


@names("geqrf")
@refuses_half("geqrf_cpu")
def geqrf(input, *, out=None):
    """(a, tau): the QR factorisation as LAPACK's geqrf leaves it, R on and above a's diagonal and
    the reflections' vectors below it, with their τ (for householder_product and ormqr). No
    derivative, as in PyTorch: for an input that requires grad both are in the graph, and a backward
    pass through them raises (the forward, and whatever uses only the values, runs)."""
    op = "torch.geqrf"
    if input.ndim < 2:
        raise RuntimeError(f"{op}: input must have at least 2 dimensions.")
    refuse_kinds(input, "geqrf_cpu", "biu")  # (complex matrices factor as real ones do: LAPACK's zgeqrf)
    m, n = input.shape[-2:]
    batch = tuple(input.shape[:-2])
    flat = input._data.reshape((math.prod(batch), m, n))
    packed = xp.empty_like(flat)
    taus = xp.empty((flat.shape[0], min(m, n)), dtype=flat.dtype)
    for i, matrix in enumerate(flat):
        h, tau = xp.linalg.qr(matrix, mode="raw")  # (LAPACK's geqrf, its output transposed)
        packed[i], taus[i] = h.T, tau
    packed, taus = packed.reshape(input.shape), taus.reshape(batch + (min(m, n),))
    if input.requires_grad and is_grad_enabled():  # (GeqrfBackward0, PyTorch's node, raising as its does)
        result = GeqrfResult(UniqueValues.apply(input, values=packed, kernel="geqrf"),
                             UniqueValues.apply(input, values=taus, kernel="geqrf"))
    else:
        result = GeqrfResult(Tensor._make(packed), Tensor._make(taus))
    return write_out(result, out)
