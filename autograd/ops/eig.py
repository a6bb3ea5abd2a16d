"""The eigendecomposition of a general square matrix, torch.linalg.eig and eigvals: A V = V
diag(λ), with complex λ and V even for a real A (conjugate pairs), as PyTorch returns them.

Values only: the derivative (complex even for a real A) is not built yet, so an input that
requires grad is refused (with the way out in the message). A complex A is accepted. For a
symmetric A, eigh and eigvalsh give real results with gradients.
"""

import collections

from ..backend import xp
from ..graph import is_grad_enabled
from ..tensor import Tensor
from .inverses import _square
from .outputs import write_out

EigResult = collections.namedtuple("linalg_eig", ["eigenvalues", "eigenvectors"])

def _decompose(A, op, vectors):
    _square(A, op)
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.{op}: Expected a floating point or complex tensor as input. Got {A.dtype}")
    if A.requires_grad and is_grad_enabled():
        raise RuntimeError(f"linalg.{op}: the derivative of the general eigendecomposition is not built here yet. "
                           "Call it on A.detach(), or use linalg.eigh for a symmetric A (it has one).")
    complex_dtype = xp.complex128 if A.dtype in (xp.float64, xp.complex128) else xp.complex64
    data = A._data
    if vectors:
        values, vecs = xp.linalg.eig(data)
        return Tensor._make(values.astype(complex_dtype)), Tensor._make(vecs.astype(complex_dtype))
    return Tensor._make(xp.linalg.eigvals(data).astype(complex_dtype))


def eig(input, *, out=None):
    """(eigenvalues, eigenvectors) of square A, both complex; each eigenvector has unit norm
    (LAPACK's geev, as PyTorch)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    return write_out(EigResult(*_decompose(A, "eig", True)), out)


def eigvals(input, *, out=None):
    """The (complex) eigenvalues of square A."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    return write_out(_decompose(A, "eigvals", False), out)
