"""MultivariateNormal(loc, covariance_matrix | precision_matrix | scale_tril): the Gaussian
N(μ, Σ) over vectors of length n (the last dim of loc), parametrised by Σ, by Σ⁻¹, or by the
lower Cholesky factor L of Σ = L Lᵀ. Everything is computed from L:

    log p(x) = -½ (n ln 2π + ‖L⁻¹(x - μ)‖²) - Σ_i ln L_ii,     entropy = ½ n (1 + ln 2π) + Σ_i ln L_ii
    rsample: x = μ + L ε with ε ~ N(0, I)

L⁻¹ v is a triangular solve, done here by ``linalg.solve`` on the lower triangle of L (exact,
and its gradient reaches only that triangle, as a triangular solve's does).
"""

import math

from .. import factories
from ..backend import xp
from ..linalg import cholesky
from ..ops.decompositions import cholesky_inverse
from ..ops.inverses import solve
from ..ops.triangular import _in_dtype_of_A
from ..size import Size
from ..tensor import Tensor, tensor_from
from . import constraints
from .distribution import Distribution, lazy_property


def solve_lower(L, B):
    """L⁻¹ B for lower-triangular L (batched, broadcasting): a solve with L's lower triangle, in L's dtype,
    as PyTorch's distributions solve with linalg.solve_triangular (a float64 value's log_prob under a float32
    MultivariateNormal is float32; a float32 loc from torch.zeros beside a float64 covariance gives float64)."""
    L, B = _in_dtype_of_A(L, B, "linalg.solve_triangular")
    return solve(L.tril(), B)


def batch_mv(matrix, vector):
    """Matrix-vector products over broadcast batch dims: (..., n, m) by (..., m) to (..., n)."""
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def batch_mahalanobis(L, x):
    """‖L⁻¹ x‖² over the last dim: xᵀ Σ⁻¹ x for Σ = L Lᵀ."""
    shape = xp.broadcast_shapes(tuple(L.shape[:-2]), tuple(x.shape[:-1]))
    n = L.shape[-1]
    solved = solve_lower(L.expand(*shape, n, n), x.expand(*shape, n).unsqueeze(-1)).squeeze(-1)
    return solved.pow(2).sum(-1)


def precision_to_scale_tril(precision):
    """The lower Cholesky factor of P⁻¹ without inverting P: with J the order-reversing permutation,
    J P J = U Uᵀ (Cholesky), so P = (J U J)(J U J)ᵀ with J U J upper-triangular, and
    P⁻¹ = L Lᵀ for L = (J U J)⁻ᵀ, lower-triangular."""
    flipped = cholesky(precision.flip((-2, -1)))
    inverse_transpose = flipped.flip((-2, -1)).mT  # L⁻¹, lower-triangular
    identity = factories.eye(precision.shape[-1], dtype=precision.dtype)
    return solve_lower(inverse_transpose, identity.expand(*inverse_transpose.shape))


# PyTorch's private names for these, which code written against torch.distributions imports (Pyro does)
_batch_mv, _batch_mahalanobis, _precision_to_scale_tril = batch_mv, batch_mahalanobis, precision_to_scale_tril


class MultivariateNormal(Distribution):
    arg_constraints = {"loc": constraints.real_vector, "covariance_matrix": constraints.positive_definite,
                       "precision_matrix": constraints.positive_definite, "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, covariance_matrix=None, precision_matrix=None, scale_tril=None, validate_args=None):
        loc = loc if isinstance(loc, Tensor) else tensor_from(loc)
        if loc.ndim < 1:
            raise ValueError("loc must be at least one-dimensional.")
        if (covariance_matrix is not None) + (scale_tril is not None) + (precision_matrix is not None) != 1:
            raise ValueError("Exactly one of covariance_matrix or precision_matrix or scale_tril may be specified.")
        given = {"scale_tril": scale_tril, "covariance_matrix": covariance_matrix, "precision_matrix": precision_matrix}
        name, matrix = next((k, v) for k, v in given.items() if v is not None)
        if matrix.ndim < 2:
            what = "scale_tril matrix" if name == "scale_tril" else name.replace("_", " ")
            raise ValueError(f"{what} must be at least two-dimensional, with optional leading batch dimensions")
        batch = Size(xp.broadcast_shapes(tuple(matrix.shape[:-2]), tuple(loc.shape[:-1])))
        n = loc.shape[-1]
        setattr(self, name, matrix.expand(*batch, -1, -1))
        self.loc = loc.expand(*batch, -1)
        super().__init__(batch, (n,), validate_args=validate_args)
        if name == "scale_tril":
            self._unbroadcasted_scale_tril = matrix
        elif name == "covariance_matrix":
            self._unbroadcasted_scale_tril = cholesky(matrix)
        else:
            self._unbroadcasted_scale_tril = precision_to_scale_tril(matrix)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril
        return new

    @lazy_property
    def scale_tril(self):
        return self._unbroadcasted_scale_tril.expand(*self.batch_shape, *self.event_shape, *self.event_shape)

    @lazy_property
    def covariance_matrix(self):
        L = self._unbroadcasted_scale_tril
        return (L @ L.mT).expand(*self.batch_shape, *self.event_shape, *self.event_shape)

    @lazy_property
    def precision_matrix(self):
        return cholesky_inverse(self._unbroadcasted_scale_tril).expand(*self.batch_shape, *self.event_shape,
                                                                        *self.event_shape)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return self._unbroadcasted_scale_tril.pow(2).sum(-1).expand(*self.batch_shape, *self.event_shape)

    def rsample(self, sample_shape=()):
        noise = factories.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype)
        return self.loc + batch_mv(self._unbroadcasted_scale_tril, noise)

    def _half_log_det(self):
        return self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def log_prob(self, value):
        value = self._value(value, self.loc)
        mahalanobis = batch_mahalanobis(self._unbroadcasted_scale_tril, value - self.loc)
        return -0.5 * (self.event_shape[0] * math.log(2 * math.pi) + mahalanobis) - self._half_log_det()

    def entropy(self):
        entropy = 0.5 * self.event_shape[0] * (1.0 + math.log(2 * math.pi)) + self._half_log_det()
        return entropy.expand(*self.batch_shape) if self.batch_shape else entropy
