"""Special functions: erf (for the exact GELU) and softplus (for losses on logits).

NumPy has no vectorised erf, and looping ``math.erf`` over elements is slow.
So erf is tabulated once, on first use: [0.5, 6] is cut into intervals of width
1/8 and on each ``math.erf`` is interpolated by a Chebyshev series of degree 12;
below 0.5 its Taylor series is used (exact relative precision near 0).
Evaluating either is a short loop over whole arrays, accurate to about 1e-15.
Beyond 6, erf is ±1 in double precision.
"""

import functools
import math

import numpy

from ..backend import xp
from ..primitive import Primitive
from .elementwise import floating, half_as_float32
from .names import names
from .outputs import write_out

_START, _WIDTH, _LIMIT, _DEGREE = 0.5, 0.125, 6.0, 12
# erf(x) = 2/√π Σ_n (-1)^n x^(2n+1) / (n! (2n+1)): 16 terms reach 1e-19 at x = 0.5
_TAYLOR = [2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(16)]


@functools.cache  # fitted on the first erf, not at import (numpy.polynomial and the fit take milliseconds)
def _erf_table():
    """Chebyshev coefficients c_0..c_12 per interval, in s = (x - centre) / half-width."""
    import numpy.polynomial.chebyshev

    count = int((_LIMIT - _START) / _WIDTH)
    table = numpy.empty((count, _DEGREE + 1))
    for k in range(count):
        centre = _START + (k + 0.5) * _WIDTH
        table[k] = numpy.polynomial.chebyshev.chebinterpolate(
            numpy.vectorize(lambda s, c=centre: math.erf(c + s * _WIDTH / 2)), _DEGREE)
    return table


def erf(x):
    """erf(x) = 2/√π ∫_0^x e^(-t²) dt, elementwise on an array."""
    magnitude = xp.minimum(xp.abs(x).astype(numpy.float64), _LIMIT)
    square = magnitude * magnitude
    near_zero = _TAYLOR[-1]
    for c in reversed(_TAYLOR[:-1]):
        near_zero = near_zero * square + c
    near_zero = near_zero * magnitude
    table = _erf_table()
    k = xp.clip(((magnitude - _START) / _WIDTH).astype(numpy.int64), 0, len(table) - 1)
    s = (magnitude - _START - (k + 0.5) * _WIDTH) / (_WIDTH / 2)
    coefficients = xp.asarray(table)[k]
    # Clenshaw's recurrence: Σ c_j T_j(s) without forming the polynomials
    later, latest = 0.0, 0.0
    for j in range(_DEGREE, 0, -1):
        later, latest = latest, coefficients[..., j] + 2 * s * latest - later
    tabulated = coefficients[..., 0] + s * latest - later
    y = xp.where(magnitude < _START, near_zero, xp.minimum(tabulated, 1.0))
    y = xp.where(magnitude >= _LIMIT, 1.0, y)
    # (copysign, not sign(x) · y: erf(-0.0) is -0.0, as PyTorch's)
    return xp.copysign(y, x).astype(x.dtype if x.dtype.kind == "f" else numpy.float64)


class Erf(Primitive):
    """y = erf(x);   dL/dx = dL/dy · 2/√π · e^(-x²)"""

    def forward(self, x):
        if x.dtype.kind == "c":
            raise NotImplementedError("erf is not implemented for complex inputs (as PyTorch's)")
        return erf(x)

    def backward(self, grad, y, x):
        return ((-(x * x)).exp() * (2 / math.sqrt(math.pi)) * grad,)  # (in PyTorch's order: float16 rounds each step)


@names("erf", inplace="erf_")
def erf_of(input, *, out=None):
    """erf of a tensor; integers and bools become the default dtype first."""
    return write_out(Erf.apply(floating(input)), out)


@names("softplus")
class Softplus(Primitive):
    """y = ln(1 + e^x);   dL/dx = dL/dy · σ(x)"""

    def forward(self, x):
        # ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|): no overflow, full precision. float16 in float32, rounded
        # once, as PyTorch's log_sigmoid (binary_cross_entropy_with_logits's log σ(x) was a unit off in a tenth)
        wide = half_as_float32(x)
        return (xp.maximum(wide, 0) + xp.log1p(xp.exp(-xp.abs(wide)))).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (grad * x.sigmoid(),)
