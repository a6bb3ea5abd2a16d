"""The orthogonal parametrization (PyTorch's ``nn.utils.parametrizations.orthogonal``): a matrix
Q of shape m × n (or a batch of them) with orthonormal columns when m ≥ n (QᵀQ = Iₙ), orthonormal
rows when m < n (QQᵀ = Iₘ), computed from an unconstrained tensor X of the same shape.

A wide X is handled as its transpose, so below X is tall (n ≥ k). Three maps:

- ``matrix_exp``: A = L - Lᵀ with L = tril(X) padded with zeros to n × n is skew-symmetric, and
  e^A is orthogonal (e^A (e^A)ᵀ = e^A e^(-A) = I); Q is its first k columns.
- ``cayley``: the same A, and Q = (I + A/2)(I - A/2)⁻¹ (the Cayley transform), computed as the
  solve of (I - A/2) Q = I + A/2 (the two factors commute).
- ``householder``: the reflections H_i = I - τᵢ vᵢ vᵢᵀ, vᵢ the i-th column of X below the diagonal
  with a 1 on it and τᵢ = 2/‖vᵢ‖² (so H_i is an exact reflection), Q = H₁ ⋯ H_k (its first k
  columns), each column's sign set by the sign of X's diagonal (which is not trained).

With ``use_trivialization`` (the dynamic trivialization of Lezcano-Casado, 2019) the map's result
is multiplied by a fixed orthogonal n × n matrix B, the buffer ``base``: Q = B · map(X). Assigning
an orthogonal Q to the weight then stores Q (completed to n × n) as B and sets X so that map(X) = I
(X = -I for the householder map, whose diagonal carries the signs; -I is also zero for the other
two, since tril(-I) - tril(-I)ᵀ = 0).

A complex X gives a unitary Q (QᴴQ = I): A = L - Lᴴ is skew-Hermitian, and e^A and the Cayley transform
of it are unitary; the householder map refuses complex weights, as PyTorch's.
"""

import enum

import autograd

from ..module import Module


class _OrthMaps(enum.Enum):
    matrix_exp = enum.auto()
    cayley = enum.auto()
    householder = enum.auto()


def _is_orthogonal(Q):
    """QᴴQ = I within 10 n ε (Q tall, n its rows), PyTorch's tolerance."""
    n, k = Q.shape[-2:]
    eps = 10.0 * n * autograd.finfo(Q.dtype).eps
    return autograd.allclose(Q.mH @ Q, autograd.eye(k, dtype=Q.dtype), atol=eps)


def _make_orthogonal(A):
    """The Q of A = QR (A tall) normalised so that R's diagonal is non-negative: the unique such
    factor when A has full rank (PyTorch's, which takes it from geqrf)."""
    Q, R = autograd.linalg.qr(A)
    return Q * R.diagonal(dim1=-2, dim2=-1).sgn().unsqueeze(-2)


class _Orthogonal(Module):
    """Q = [base ·] map(X) (see the module docstring); ``right_inverse`` sets X from an orthogonal Q."""

    def __init__(self, weight, orthogonal_map, *, use_trivialization=True):
        super().__init__()
        if weight.is_complex() and orthogonal_map == _OrthMaps.householder:
            raise ValueError("The householder parametrization does not support complex tensors.")
        self.shape = weight.shape
        self.orthogonal_map = orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, X):
        n, k = X.shape[-2:]
        transposed = n < k
        if transposed:  # a wide matrix is the transpose of a tall one
            X = X.mT
            n, k = k, n
        if self.orthogonal_map == _OrthMaps.householder:
            A = X.tril(diagonal=-1)
            tau = 2.0 / (1.0 + (A * A).sum(dim=-2))  # 2/‖vᵢ‖², vᵢ with its unit diagonal entry
            Q = autograd.linalg.householder_product(A, tau)
            # the diagonal's signs, as integers (truncated, as PyTorch's .int()): not trained
            Q = Q * X.diagonal(dim1=-2, dim2=-1).detach().int().unsqueeze(-2)
        else:
            L = X.tril()
            if n != k:  # n × k - k(k-1)/2 parameters embedded in a square matrix
                L = autograd.cat([L, L.new_zeros(n, n - k).expand(*L.shape[:-2], -1, -1)], dim=-1)
            A = L - L.mH  # skew-symmetric
            if self.orthogonal_map == _OrthMaps.matrix_exp:
                Q = autograd.linalg.matrix_exp(A)
            else:
                eye = autograd.eye(n, dtype=A.dtype)
                Q = autograd.linalg.solve(eye - 0.5 * A, eye + 0.5 * A)
            if n != k:
                Q = Q[..., :k]
        if hasattr(self, "base"):
            Q = self.base @ Q
        return Q.mT if transposed else Q

    def right_inverse(self, Q):
        with autograd.no_grad():
            return self._right_inverse(Q)

    def _right_inverse(self, Q):
        if Q.shape != self.shape:
            raise ValueError(f"Expected a matrix or batch of matrices of shape {tuple(self.shape)}. "
                             f"Got a tensor of shape {tuple(Q.shape)}.")
        Q_init = Q
        n, k = Q.shape[-2:]
        transposed = n < k
        if transposed:
            Q = Q.mT
            n, k = k, n
        if not hasattr(self, "base"):
            if self.orthogonal_map != _OrthMaps.householder:
                # no known X with map(X) = Q for these two (registration goes on without one)
                raise NotImplementedError("It is not possible to assign to the matrix exponential "
                                          "or the Cayley parametrizations when use_trivialization=False.")
            # Q = H₁ ⋯ H_k R: geqrf's reflections below the diagonal, the signs of R's diagonal on it
            # (a reflection LAPACK skipped, τ = 0, flips the sign the map will apply)
            A, tau = autograd.geqrf(Q)
            diagonal = A.diagonal(dim1=-2, dim2=-1)
            signs = diagonal.sign()
            diagonal.copy_(autograd.where(tau == 0.0, -signs, signs))
            return A.mT if transposed else A
        if n == k:
            Q = Q.clone() if _is_orthogonal(Q) else _make_orthogonal(Q)
        else:  # complete Q to an n × n orthogonal matrix with random columns
            extra = autograd.randn(*(tuple(Q.shape[:-2]) + (n, n - k)), dtype=Q.dtype)
            Q = _make_orthogonal(autograd.cat([Q, extra], dim=-1))
        self.base = Q
        neg_eye = autograd.zeros_like(Q_init)  # -I: map(-I) = I for each of the three maps
        neg_eye.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
        return neg_eye
