"""LowRankMultivariateNormal(loc, cov_factor, cov_diag): N(μ, Σ) with Σ = W Wᵀ + D, W an n×m
matrix (m ≪ n) and D a positive diagonal. Nothing n×n is factored: by the matrix determinant
lemma and the Woodbury identity, with the m×m capacitance C = I + Wᵀ D⁻¹ W = K Kᵀ (Cholesky),

    ln det Σ = ln det C + Σ_i ln D_i = 2 Σ ln K_ii + Σ ln D_i
    xᵀ Σ⁻¹ x = xᵀ D⁻¹ x - ‖K⁻¹ Wᵀ D⁻¹ x‖²

    rsample: x = μ + W ε_W + √D ∘ ε_D,   ε_W ~ N(0, I_m), ε_D ~ N(0, I_n)
"""

import math

from .. import factories
from ..backend import xp
from ..linalg import cholesky
from ..size import Size
from ..tensor import Tensor, tensor_from
from . import constraints
from .distribution import Distribution
from .multivariate_normal import batch_mahalanobis, batch_mv, solve_lower


def capacitance_tril(W, D):
    """The Cholesky factor K of C = I + Wᵀ D⁻¹ W."""
    m = W.shape[-1]
    scaled = W.mT / D.unsqueeze(-2)  # Wᵀ D⁻¹
    return cholesky(scaled @ W + factories.eye(m, dtype=W.dtype))


def lowrank_logdet(W, D, K):
    """ln det(W Wᵀ + D) = 2 Σ ln K_ii + Σ ln D_i."""
    return 2 * K.diagonal(dim1=-2, dim2=-1).log().sum(-1) + D.log().sum(-1)


def lowrank_mahalanobis(W, D, x, K):
    """xᵀ (W Wᵀ + D)⁻¹ x = xᵀ D⁻¹ x - ‖K⁻¹ Wᵀ D⁻¹ x‖²."""
    projected = batch_mv(W.mT / D.unsqueeze(-2), x)
    return (x.pow(2) / D).sum(-1) - batch_mahalanobis(K, projected)


class LowRankMultivariateNormal(Distribution):
    arg_constraints = {"loc": constraints.real_vector, "cov_factor": constraints.independent(constraints.real, 2),
                       "cov_diag": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, cov_factor, cov_diag, validate_args=None):
        loc = loc if isinstance(loc, Tensor) else tensor_from(loc)
        if loc.ndim < 1:
            raise ValueError("loc must be at least one-dimensional.")
        event = Size(loc.shape[-1:])
        if cov_factor.ndim < 2:
            raise ValueError("cov_factor must be at least two-dimensional, with optional leading batch dimensions")
        if tuple(cov_factor.shape[-2:-1]) != tuple(event):
            raise ValueError(f"cov_factor must be a batch of matrices with shape {event[0]} x m")
        if tuple(cov_diag.shape[-1:]) != tuple(event):
            raise ValueError(f"cov_diag must be a batch of vectors with shape {event}")
        m = cov_factor.shape[-1]
        batch = Size(xp.broadcast_shapes(tuple(loc.shape[:-1]), tuple(cov_factor.shape[:-2]),
                                         tuple(cov_diag.shape[:-1])))
        self.loc = loc.expand(*batch, event[0])
        self.cov_factor = cov_factor.expand(*batch, event[0], m)
        self.cov_diag = cov_diag.expand(*batch, event[0])
        self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag = cov_factor, cov_diag
        super().__init__(batch, event, validate_args=validate_args)  # (checks cov_diag > 0 before it is used)
        self._capacitance_tril = capacitance_tril(cov_factor, cov_diag)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        for name in ("_unbroadcasted_cov_factor", "_unbroadcasted_cov_diag", "_capacitance_tril"):
            setattr(new, name, getattr(self, name))
        return new

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        return (W.pow(2).sum(-1) + D).expand(*self.batch_shape, *self.event_shape)

    @property
    def scale_tril(self):
        """L = √D chol(I + D^(-1/2) W Wᵀ D^(-1/2)), so L Lᵀ = W Wᵀ + D."""
        n = self.event_shape[0]
        root = self._unbroadcasted_cov_diag.sqrt().unsqueeze(-1)
        scaled = self._unbroadcasted_cov_factor / root
        inner = scaled @ scaled.mT + factories.eye(n, dtype=scaled.dtype)
        return (root * cholesky(inner)).expand(*self.batch_shape, n, n)

    @property
    def covariance_matrix(self):
        W = self._unbroadcasted_cov_factor
        return (W @ W.mT + self._unbroadcasted_cov_diag.diag_embed()).expand(*self.batch_shape, *self.event_shape,
                                                                               *self.event_shape)

    @property
    def precision_matrix(self):
        """Woodbury: Σ⁻¹ = D⁻¹ - Aᵀ A with A = K⁻¹ Wᵀ D⁻¹."""
        W, D = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        A = solve_lower(self._capacitance_tril, W.mT / D.unsqueeze(-2))
        return (D.reciprocal().diag_embed() - A.mT @ A).expand(*self.batch_shape, *self.event_shape,
                                                               *self.event_shape)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        factor_noise = factories.randn(*shape[:-1], self.cov_factor.shape[-1], dtype=self.loc.dtype)
        diagonal_noise = factories.randn(shape, dtype=self.loc.dtype)
        return (self.loc + batch_mv(self._unbroadcasted_cov_factor, factor_noise)
                + self._unbroadcasted_cov_diag.sqrt() * diagonal_noise)

    def log_prob(self, value):
        value = self._value(value, self.loc)
        W, D, K = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag, self._capacitance_tril
        mahalanobis = lowrank_mahalanobis(W, D, value - self.loc, K)
        return -0.5 * (self.event_shape[0] * math.log(2 * math.pi) + lowrank_logdet(W, D, K) + mahalanobis)

    def entropy(self):
        W, D, K = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag, self._capacitance_tril
        entropy = 0.5 * (self.event_shape[0] * (1.0 + math.log(2 * math.pi)) + lowrank_logdet(W, D, K))
        return entropy.expand(*self.batch_shape) if self.batch_shape else entropy
