"""Matrix decompositions with gradients: Cholesky (A = L Lᵀ) and the symmetric eigendecomposition
(A = V diag(λ) Vᵀ), as torch.linalg.cholesky, eigh and eigvalsh.

    L = chol A:   dL/dA = sym(L⁻ᵀ Φ(Lᵀ dL/dL) L⁻¹),  Φ = the lower triangle with half its diagonal
    λ, V = eigh A:   dL/dA = V (diag(dL/dλ) + skew(Vᵀ dL/dV) / E) Vᵀ,  E_ij = λ_j - λ_i

(sym X = (X + Xᵀ)/2, skew X = (X - Xᵀ)/2.) The eigenvector gradient needs distinct eigenvalues.
"""

import collections

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from . import shape
from .inverses import LinAlgError, Solve, _square
from .names import names
from .outputs import write_out

EighResult = collections.namedtuple("linalg_eigh", ["eigenvalues", "eigenvectors"])


def _lower_half_diagonal(x):
    """Φ(X): the lower triangle of X with its diagonal halved."""
    n = x.shape[-1]
    weights = xp.tril(xp.ones((n, n), dtype=x.dtype)) - 0.5 * xp.eye(n, dtype=x.dtype)
    return x * Tensor._make(weights)


class Cholesky(Primitive):
    """L = the lower Cholesky factor of A (A = L Lᵀ);   dL/dA = sym(L⁻ᵀ Φ(Lᵀ dL/dL) L⁻¹)"""

    saves_output = True

    def forward(self, a):
        try:
            return xp.linalg.cholesky(a)
        except xp.linalg.LinAlgError:
            raise LinAlgError("linalg.cholesky: The factorization could not be completed because the input is "
                              "not positive-definite.") from None

    def backward(self, grad, lower, a):
        p = _lower_half_diagonal(lower.mT @ grad)
        x = Solve.apply(lower.mT, p)  # L⁻ᵀ P
        s = Solve.apply(lower.mT, x.mT).mT  # (L⁻ᵀ P) L⁻¹
        return ((s + s.mT) * 0.5,)


def cholesky(A, *, upper=False, out=None):
    """The lower triangular L with A = L Lᵀ (or the upper U = Lᵀ with upper=True), for symmetric
    positive-definite A (LinAlgError otherwise)."""
    _square(A, "cholesky")
    lower = Cholesky.apply(A)
    return write_out(lower.mT if upper else lower, out)


class Eigh(Primitive):
    """λ, V of symmetric A, returned stacked as one array [λ; V] of shape (..., n + 1, n);
    dL/dA = V (diag(dL/dλ) + skew(Vᵀ dL/dV) / E) Vᵀ  with E_ij = λ_j - λ_i"""

    saves_output = True

    def forward(self, a):
        values, vectors = xp.linalg.eigh(a, UPLO=self.uplo)
        return xp.concatenate([values[..., None, :], vectors], axis=-2)

    def backward(self, grad, y, a):
        values, vectors = y[..., 0, :], y[..., 1:, :]
        grad_values, grad_vectors = grad[..., 0, :], grad[..., 1:, :]
        inner = vectors.mT @ grad_vectors
        gaps = shape.unsqueeze(values, -2) - shape.unsqueeze(values, -1)  # E_ij = λ_j - λ_i
        n = a.shape[-1]
        eye = Tensor._make(xp.eye(n, dtype=grad.dtype))
        middle = (inner - inner.mT) * 0.5 / (gaps + eye) + shape.unsqueeze(grad_values, -1) * eye
        return (vectors @ middle @ vectors.mT,)


def eigh(A, UPLO="L", *, out=None):
    """(eigenvalues, eigenvectors) of symmetric A, eigenvalues ascending; A's ``UPLO`` triangle is read."""
    _square(A, "eigh")
    if UPLO not in ("L", "U"):
        raise RuntimeError(f"Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    stacked = Eigh.apply(A, uplo=UPLO)
    return write_out(EighResult(stacked[..., 0, :], stacked[..., 1:, :]), out)


def eigvalsh(A, UPLO="L", *, out=None):
    """The eigenvalues of symmetric A, ascending."""
    return write_out(eigh(A, UPLO).eigenvalues, out)


@names("cholesky")
def tensor_cholesky(input, upper=False):
    """torch.cholesky / x.cholesky(upper=False)."""
    return cholesky(input, upper=upper)
