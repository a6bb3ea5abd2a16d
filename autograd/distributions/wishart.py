"""Wishart(df, covariance_matrix | precision_matrix | scale_tril): the law of Σ_k x_k x_kᵀ over ν
draws x_k ~ N(0, Σ) (any real ν > p - 1), on p×p positive-definite matrices. With Σ = L Lᵀ,

    log p(X) = -ν (p ln 2 / 2 + Σ ln L_ii) - ln Γ_p(ν/2) + (ν - p - 1)/2 ln det X - ½ tr(Σ⁻¹ X)
    entropy = (p + 1)(p ln 2 / 2 + Σ ln L_ii) + ln Γ_p(ν/2) - (ν - p - 1)/2 ψ_p(ν/2) + νp/2
    mean = ν Σ,   var_ij = ν (Σ_ij² + Σ_ii Σ_jj),   mode = (ν - p - 1) Σ (ν > p + 1)
    rsample (Bartlett): X = (L A)(L A)ᵀ with A lower-triangular, A_ii = √χ²(ν - i), A_ij ~ N(0, 1)
    below; differentiable in ν through the χ² (gamma) draws and in Σ through L.

Giving none or two of the matrices is a ValueError here (PyTorch raises AssertionError).
"""

import math
import warnings

from .. import factories, ranges
from ..backend import xp
from ..graph import program_stacklevel
from ..linalg import cholesky, slogdet
from ..ops.decompositions import cholesky_solve
from ..ops.elementwise import where
from ..ops.gamma import mvlgamma
from ..ops.grids import tril_indices
from ..size import Size
from ..tensor import Tensor, tensor_from
from . import constraints
from .chi2 import Chi2
from .distribution import lazy_property
from .exp_family import ExponentialFamily
from .multivariate_normal import precision_to_scale_tril

LOG_2 = math.log(2)


def mvdigamma(x, p):
    """ψ_p(x) = Σ_{i<p} ψ(x - i/2), the derivative of ln Γ_p."""
    return (x.unsqueeze(-1) - ranges.arange(p, dtype=x.dtype) / 2).digamma().sum(-1)


class Wishart(ExponentialFamily):
    support = constraints.positive_definite
    has_rsample = True

    @property
    def arg_constraints(self):
        return {"covariance_matrix": constraints.positive_definite, "precision_matrix": constraints.positive_definite,
                "scale_tril": constraints.lower_cholesky, "df": constraints.greater_than(self.event_shape[-1] - 1)}

    def __init__(self, df, covariance_matrix=None, precision_matrix=None, scale_tril=None, validate_args=None):
        if (covariance_matrix is not None) + (scale_tril is not None) + (precision_matrix is not None) != 1:
            raise ValueError("Exactly one of covariance_matrix or precision_matrix or scale_tril may be specified.")
        name, param = next((k, v) for k, v in (("covariance_matrix", covariance_matrix),
                                               ("precision_matrix", precision_matrix), ("scale_tril", scale_tril))
                           if v is not None)
        if param.ndim < 2:
            raise ValueError("scale_tril must be at least two-dimensional, with optional leading batch dimensions")
        if isinstance(df, Tensor):
            batch = Size(xp.broadcast_shapes(tuple(param.shape[:-2]), tuple(df.shape)))
            self.df = df.expand(*batch)
        else:
            batch = Size(param.shape[:-2])
            self.df = tensor_from(float(df), dtype=param.dtype)
        p = param.shape[-1]
        if bool((self.df <= p - 1).any()):
            raise ValueError(f"Value of df={df} expected to be greater than ndim - 1 = {p - 1}.")
        setattr(self, name, param.expand(*batch, -1, -1))
        if bool((self.df < p).any()):
            warnings.warn("Low df values detected. Singular samples are highly likely to occur for ndim - 1 < df < "
                          "ndim.", stacklevel=program_stacklevel())
        super().__init__(batch, param.shape[-2:], validate_args=validate_args)
        if name == "scale_tril":
            self._unbroadcasted_scale_tril = param
        elif name == "covariance_matrix":
            self._unbroadcasted_scale_tril = cholesky(param)
        else:
            self._unbroadcasted_scale_tril = precision_to_scale_tril(param)
        self._dist_chi2 = self._chi2(batch)

    def _chi2(self, batch):
        p = self.event_shape[-1]
        degrees = self.df.unsqueeze(-1) - ranges.arange(p, dtype=self._unbroadcasted_scale_tril.dtype)
        return Chi2(degrees.expand(*batch, p), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril.expand(*batch_shape, *self.event_shape)
        new.df = self.df.expand(*batch_shape)
        new._dist_chi2 = new._chi2(Size(batch_shape))
        return new

    @lazy_property
    def scale_tril(self):
        return self._unbroadcasted_scale_tril.expand(*self.batch_shape, *self.event_shape)

    @lazy_property
    def covariance_matrix(self):
        L = self._unbroadcasted_scale_tril
        return (L @ L.mT).expand(*self.batch_shape, *self.event_shape)

    @lazy_property
    def precision_matrix(self):
        identity = factories.eye(self.event_shape[-1], dtype=self._unbroadcasted_scale_tril.dtype)
        return cholesky_solve(identity, self._unbroadcasted_scale_tril).expand(*self.batch_shape, *self.event_shape)

    def _df_matrix(self):
        return self.df.reshape(*self.batch_shape, 1, 1)

    @property
    def mean(self):
        return self._df_matrix() * self.covariance_matrix

    @property
    def mode(self):
        factor = self.df - self.event_shape[-1] - 1
        factor = where(factor <= 0, float("nan"), factor)
        return factor.reshape(*self.batch_shape, 1, 1) * self.covariance_matrix

    @property
    def variance(self):
        V = self.covariance_matrix
        diagonal = V.diagonal(dim1=-2, dim2=-1)
        return self._df_matrix() * (V.pow(2) + diagonal.unsqueeze(-1) * diagonal.unsqueeze(-2))

    def _bartlett_sampling(self, sample_shape=()):
        p = self.event_shape[-1]
        eps = float(xp.finfo(self._unbroadcasted_scale_tril.dtype).eps)
        noise = self._dist_chi2.rsample(sample_shape).sqrt().clamp(min=eps).diag_embed()
        # p(p-1)/2 normals filled in below the diagonal row by row, as PyTorch draws them (not a p×p draw's
        # lower triangle: that takes other numbers from the generator)
        rows, cols = tril_indices(p, p, offset=-1)
        noise[..., rows, cols] = factories.randn(*tuple(sample_shape), *self.batch_shape, p * (p - 1) // 2,
                                                 dtype=noise.dtype)
        factor = self._unbroadcasted_scale_tril @ noise
        return factor @ factor.mT

    def rsample(self, sample_shape=(), max_try_correction=10):
        """A draw; one that is numerically singular (possible for ν near p - 1) is drawn again,
        up to ``max_try_correction`` times, with PyTorch's warning."""
        sample = self._bartlett_sampling(sample_shape)
        singular = ~self.support.check(sample)
        if bool(singular.any()):
            warnings.warn("Singular sample detected.", stacklevel=program_stacklevel())
            for _ in range(max_try_correction):
                sample = where(singular.unsqueeze(-1).unsqueeze(-1), self._bartlett_sampling(sample_shape), sample)
                singular = ~self.support.check(sample)
                if not bool(singular.any()):
                    break
        return sample

    def _log_det_scale_term(self):
        """p ln 2 / 2 + Σ ln L_ii = ½ ln det(2Σ)"""
        p = self.event_shape[-1]
        return p * LOG_2 / 2 + self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def log_prob(self, value):
        value = self._value(value, self.df)
        nu, p = self.df, self.event_shape[-1]
        trace = cholesky_solve(value, self._unbroadcasted_scale_tril).diagonal(dim1=-2, dim2=-1).sum(-1)
        return (-nu * self._log_det_scale_term() - mvlgamma(nu / 2, p) + (nu - p - 1) / 2 * slogdet(value)[1]
                - trace / 2)

    @property
    def _natural_params(self):
        return -self.precision_matrix / 2, (self.df - self.event_shape[-1] - 1) / 2

    def _log_normalizer(self, x, y):
        p = self.event_shape[-1]
        return (y + (p + 1) / 2) * (-slogdet(-2 * x)[1] + LOG_2 * p) + mvlgamma(y + (p + 1) / 2, p)

    _mean_carrier_measure = 0

    def entropy(self):
        nu, p = self.df, self.event_shape[-1]
        return ((p + 1) * self._log_det_scale_term() + mvlgamma(nu / 2, p) - (nu - p - 1) / 2 * mvdigamma(nu / 2, p)
                + nu * p / 2)
