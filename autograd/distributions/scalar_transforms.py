"""Elementwise bijections: exp, powers, sigmoid, tanh, softplus, a distribution's CDF, |x| and
affine maps, each with its log |dy/dx| (see transform.py for what a transform is)."""

import math

from .. import factories
from ..backend import xp
from ..tensor import Tensor, tensor_from
from . import constraints
from .distribution import lazy_property
from .transform import Transform, _ParameterFree


class ExpTransform(_ParameterFree):
    """y = eˣ;   log |dy/dx| = x"""

    domain, codomain, bijective, sign = constraints.real, constraints.positive, True, 1

    def _call(self, x):
        return x.exp()

    def _inverse(self, y):
        return y.log()

    def log_abs_det_jacobian(self, x, y):
        return x


class PowerTransform(Transform):
    """y = xᵉ on (0, ∞);   log |dy/dx| = log |e y / x|"""

    domain, codomain, bijective = constraints.positive, constraints.positive, True

    def __init__(self, exponent, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.exponent = exponent if isinstance(exponent, Tensor) else tensor_from(float(exponent))

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else PowerTransform(self.exponent, cache_size=cache_size)

    @lazy_property
    def sign(self):
        return self.exponent.sign()

    def __eq__(self, other):
        return isinstance(other, PowerTransform) and bool((self.exponent == other.exponent).all())

    __hash__ = object.__hash__

    def _call(self, x):
        return x.pow(self.exponent)

    def _inverse(self, y):
        return y.pow(1 / self.exponent.to(y.dtype))  # (1/e in y's precision: a float32 0.4 is not 1/2.5)

    def log_abs_det_jacobian(self, x, y):
        return (self.exponent * y / x).abs().log()

    def forward_shape(self, shape):
        return tuple(xp.broadcast_shapes(tuple(shape), tuple(self.exponent.shape)))

    def inverse_shape(self, shape):
        return tuple(xp.broadcast_shapes(tuple(shape), tuple(self.exponent.shape)))


def _clipped_sigmoid(x):
    """σ(x) inside [tiny, 1 - eps], so its logarithms stay finite."""
    finfo = xp.finfo(x.dtype)
    return x.sigmoid().clamp(min=float(finfo.tiny), max=1.0 - float(finfo.eps))


class SigmoidTransform(_ParameterFree):
    """y = σ(x) = 1/(1 + e⁻ˣ);   log |dy/dx| = log σ(x) + log σ(-x) = -softplus(-x) - softplus(x)"""

    domain, codomain, bijective, sign = constraints.real, constraints.unit_interval, True, 1

    def _call(self, x):
        return _clipped_sigmoid(x)

    def _inverse(self, y):
        finfo = xp.finfo(y.dtype)
        y = y.clamp(min=float(finfo.tiny), max=1.0 - float(finfo.eps))
        return y.log() - (-y).log1p()

    def log_abs_det_jacobian(self, x, y):
        return -(-x).softplus() - x.softplus()


class TanhTransform(_ParameterFree):
    """y = tanh x;   log |dy/dx| = log(1 - tanh² x) = 2 (ln 2 - x - softplus(-2x)) (stable for large |x|)"""

    domain, codomain, bijective, sign = constraints.real, constraints.interval(-1.0, 1.0), True, 1

    def _call(self, x):
        return x.tanh()

    def _inverse(self, y):
        return 0.5 * ((1 + y).log() - (1 - y).log())  # atanh (no clamping: PyTorch's caches instead)

    def log_abs_det_jacobian(self, x, y):
        return 2.0 * (math.log(2.0) - x - (-2.0 * x).softplus())


class SoftplusTransform(_ParameterFree):
    """y = ln(1 + eˣ);   x = y + ln(1 - e^(-y)),   log |dy/dx| = log σ(x) = -softplus(-x)
    (computed exactly for every x; PyTorch's switches to y = x above x = 20)"""

    domain, codomain, bijective, sign = constraints.real, constraints.positive, True, 1

    def _call(self, x):
        return x.softplus()

    def _inverse(self, y):
        return (-(-y).expm1()).log() + y

    def log_abs_det_jacobian(self, x, y):
        return -(-x).softplus()


class CumulativeDistributionTransform(Transform):
    """y = F(x), the CDF of ``distribution`` (onto the unit interval; copulas are built with it);
    log |dy/dx| = log p(x)."""

    bijective, codomain, sign = True, constraints.unit_interval, 1

    def __init__(self, distribution, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.distribution = distribution

    @property
    def domain(self):
        return self.distribution.support

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else \
            CumulativeDistributionTransform(self.distribution, cache_size=cache_size)

    def _call(self, x):
        return self.distribution.cdf(x)

    def _inverse(self, y):
        return self.distribution.icdf(y)

    def log_abs_det_jacobian(self, x, y):
        return self.distribution.log_prob(x)


class AbsTransform(_ParameterFree):
    """y = |x| (not a bijection: its inverse picks x ≥ 0)."""

    domain, codomain = constraints.real, constraints.positive

    def _call(self, x):
        return x.abs()

    def _inverse(self, y):
        return y


class AffineTransform(Transform):
    """y = loc + scale · x;   log |dy/dx| = log |scale| (summed over ``event_dim`` dims)"""

    bijective = True

    def __init__(self, loc, scale, event_dim=0, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.loc, self.scale, self._event_dim = loc, scale, event_dim

    @property
    def event_dim(self):
        return self._event_dim

    @lazy_property
    def domain(self):
        return constraints.real if self._event_dim == 0 else constraints.independent(constraints.real,
                                                                                     self._event_dim)

    @lazy_property
    def codomain(self):
        return self.domain

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else \
            AffineTransform(self.loc, self.scale, self._event_dim, cache_size=cache_size)

    def __eq__(self, other):
        if not isinstance(other, AffineTransform):
            return False
        same = [(a == b) if not (isinstance(a, Tensor) or isinstance(b, Tensor)) else bool((a == b).all())
                for a, b in ((self.loc, other.loc), (self.scale, other.scale))]
        return all(same)

    __hash__ = object.__hash__

    @property
    def sign(self):
        if isinstance(self.scale, (int, float)):
            return 1 if float(self.scale) > 0 else -1 if float(self.scale) < 0 else 0
        return self.scale.sign()

    def _call(self, x):
        return self.loc + self.scale * x

    def _inverse(self, y):
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x, y):
        shape = tuple(x.shape)
        if isinstance(self.scale, (int, float)):
            result = factories.full(shape, math.log(abs(self.scale)), dtype=x.dtype)
        else:
            result = self.scale.abs().log()
        if self._event_dim:  # one value per event: the sum over its dims
            result = result.reshape(*result.shape[:result.ndim - self._event_dim], -1).sum(-1)
            shape = shape[:len(shape) - self._event_dim]
        return result.expand(*shape)

    def forward_shape(self, shape):
        return tuple(xp.broadcast_shapes(tuple(shape), tuple(getattr(self.loc, "shape", ())),
                                         tuple(getattr(self.scale, "shape", ()))))

    inverse_shape = forward_shape


def log_sigmoid(x):
    """log σ(x) = -softplus(-x)"""
    return -(-x).softplus()
