"""Transforms onto simplices and matrices: softmax and stick-breaking onto the simplex, onto
lower-triangular Cholesky factors (of correlation matrices too) and positive-definite matrices."""

import math

from .. import factories
from ..backend import xp
from ..linalg import cholesky
from ..ops.joins import cat
from ..tensor import tensor_from
from . import constraints
from .scalar_transforms import _clipped_sigmoid, log_sigmoid
from .transform import _ParameterFree


class SoftmaxTransform(_ParameterFree):
    """y = softmax(x) over the last dim (not a bijection: x + c maps to the same y; its inverse is ln y)."""

    domain, codomain = constraints.real_vector, constraints.simplex

    def _call(self, x):
        probs = (x - x.max(-1, keepdim=True).values).exp()
        return probs / probs.sum(-1, keepdim=True)

    def _inverse(self, y):
        return y.log()


class StickBreakingTransform(_ParameterFree):
    """A bijection from Rⁿ onto the interior of the simplex in Rⁿ⁺¹ by breaking a stick: the k-th
    piece takes the fraction z_k = σ(x_k - ln(n - k)) of what is left (k = 0..n-1; the shift makes
    x = 0 the centre of the simplex), and the last piece the rest:

        y_k = z_k Π_{j<k} (1 - z_j),   y_n = Π_{j<n} (1 - z_j)
        log |det J| = Σ_k (-x̃_k + log σ(x̃_k) + log y_k),   x̃_k = x_k - ln(n - k)
    """

    domain, codomain, bijective = constraints.real_vector, constraints.simplex, True

    @staticmethod
    def _log_offset(n, dtype):
        return tensor_from(xp.log(xp.arange(n, 0, -1, dtype=dtype)))  # ln(n - k), k = 0..n-1

    def _call(self, x):
        n = x.shape[-1]
        z = _clipped_sigmoid(x - self._log_offset(n, x.dtype))
        remaining = (1 - z).cumprod(-1)
        ones = factories.ones(*x.shape[:-1], 1, dtype=x.dtype)
        return cat([z, ones], -1) * cat([ones, remaining], -1)

    def _inverse(self, y):
        cropped = y[..., :-1]
        n = cropped.shape[-1]
        left = (1 - cropped.cumsum(-1)).clamp(min=float(xp.finfo(y.dtype).tiny))
        return cropped.log() - left.log() + self._log_offset(n, y.dtype)

    def log_abs_det_jacobian(self, x, y):
        shifted = x - self._log_offset(x.shape[-1], x.dtype)
        return (-shifted + log_sigmoid(shifted) + y[..., :-1].log()).sum(-1)

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError("Too few dimensions on input")
        return tuple(shape[:-1]) + (shape[-1] + 1,)

    def inverse_shape(self, shape):
        if len(shape) < 1:
            raise ValueError("Too few dimensions on input")
        return tuple(shape[:-1]) + (shape[-1] - 1,)


class LowerCholeskyTransform(_ParameterFree):
    """A map from unconstrained square matrices to lower-triangular ones with a positive diagonal:
    the strict lower triangle kept, the diagonal exponentiated (not a bijection of all matrices)."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.lower_cholesky

    def _call(self, x):
        return x.tril(-1) + x.diagonal(dim1=-2, dim2=-1).exp().diag_embed()

    def _inverse(self, y):
        return y.tril(-1) + y.diagonal(dim1=-2, dim2=-1).log().diag_embed()


def _tril_indices(n, diag):
    """Row-major flat indices of the entries of an n×n matrix on or below diagonal ``diag``."""
    rows, cols = xp.meshgrid(xp.arange(n), xp.arange(n), indexing="ij")
    return xp.flatnonzero(cols < rows + (diag + 1))


def tril_matrix_to_vec(mat, diag=0):
    """The entries of (a batch of) square matrices on or below diagonal ``diag``, row by row."""
    n = mat.shape[-1]
    if diag < -n or diag >= n:
        raise ValueError(f"diag ({diag}) provided is outside [{-n}, {n - 1}].")
    return mat.reshape(*mat.shape[:-2], n * n)[..., tensor_from(_tril_indices(n, diag))]


def vec_to_tril_matrix(vec, diag=0):
    """The inverse of tril_matrix_to_vec: a lower-triangular matrix from its entries, row by row
    (a gather from the vector with a zero put in front, so it stays differentiable)."""
    size = vec.shape[-1]
    n = (-(1 + 2 * diag) + ((1 + 2 * diag) ** 2 + 8 * size + 4 * abs(diag) * (diag + 1)) ** 0.5) / 2
    if round(n) - n > float(xp.finfo(vec.dtype).eps):
        raise ValueError(f"The size of last dimension is {size} which cannot be expressed as the lower triangular "
                         f"part of a square D x D matrix.")
    n = round(n)
    source = xp.zeros(n * n, dtype=xp.int64)
    source[_tril_indices(n, diag)] = xp.arange(1, size + 1)
    padded = cat([factories.zeros(*vec.shape[:-1], 1, dtype=vec.dtype), vec], -1)
    return padded[..., tensor_from(source)].reshape(*vec.shape[:-1], n, n)


class CorrCholeskyTransform(_ParameterFree):
    """Unconstrained vectors of length D(D-1)/2 onto Cholesky factors of D×D correlation matrices:
    tanh maps each entry into (-1, 1), then each row is filled by stick-breaking so that it has unit
    length, y_ij = r_ij √(1 - Σ_{k<j} r_ik²) for j < i, y_ii = √(1 - Σ_{k<i} r_ik²) (LKJ, 2009).

        log |det J| = ½ Σ_{j<i-1} ln(1 - Σ_{k≤j} y_ik²) + Σ ln(1 - tanh² x)
    """

    domain, codomain, bijective = constraints.real_vector, constraints.corr_cholesky, True

    def _call(self, x):
        eps = float(xp.finfo(x.dtype).eps)
        r = vec_to_tril_matrix(x.tanh().clamp(min=-1 + eps, max=1 - eps), diag=-1)
        remaining = (1 - r.pow(2)).sqrt().cumprod(-1)  # Π_{k≤j} √(1 - r_ik²)
        ones = factories.ones(*remaining.shape[:-1], 1, dtype=x.dtype)
        r = r + factories.eye(r.shape[-1], dtype=x.dtype)
        return r * cat([ones, remaining[..., :-1]], -1)

    def _inverse(self, y):
        left = 1 - (y * y).cumsum(-1)
        ones = factories.ones(*left.shape[:-1], 1, dtype=y.dtype)
        shifted = cat([ones, left[..., :-1]], -1)
        t = tril_matrix_to_vec(y, diag=-1) / tril_matrix_to_vec(shifted, diag=-1).sqrt()
        return (t.log1p() - (-t).log1p()) / 2

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        left = 1 - (y * y).cumsum(-1)
        stick_breaking = 0.5 * tril_matrix_to_vec(left, diag=-2).log().sum(-1)
        tanh = -2 * (x + (-2 * x).softplus() - math.log(2.0)).sum(-1)
        return stick_breaking + tanh

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError("Too few dimensions on input")
        n = shape[-1]
        d = round((0.25 + 2 * n) ** 0.5 + 0.5)
        if d * (d - 1) // 2 != n:
            raise ValueError("Input is not a flattened lower-diagonal number")
        return tuple(shape[:-1]) + (d, d)

    def inverse_shape(self, shape):
        if len(shape) < 2:
            raise ValueError("Too few dimensions on input")
        if shape[-2] != shape[-1]:
            raise ValueError("Input is not square")
        d = shape[-1]
        return tuple(shape[:-2]) + (d * (d - 1) // 2,)


class PositiveDefiniteTransform(_ParameterFree):
    """Unconstrained square matrices onto positive-definite ones: L Lᵀ with L = LowerCholeskyTransform(x)."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.positive_definite

    def _call(self, x):
        lower = LowerCholeskyTransform()(x)
        return lower @ lower.mT

    def _inverse(self, y):
        return LowerCholeskyTransform().inv(cholesky(y))
