"""The Hurwitz zeta function (``special.zeta``): ζ(x, q) = Σ_{k≥0} (k + q)^(-x), for x > 1.

    ∂ζ/∂q = -x ζ(x + 1, q);   ∂ζ/∂x has no closed form: PyTorch does not implement it, nor do we.

Computed in float64 as Cephes does: the first n ≥ 9 terms summed (until q + n > 9), then the
Euler-Maclaurin remainder from w = q + n,

    ζ(x, q) ≈ Σ_{k<n} (q+k)^(-x) + w^(1-x)/(x-1) + w^(-x)/2 + Σ_j B_2j/(2j)! · x(x+1)···(x+2j-2) · w^(-x-2j+1)

stopping (in both sums) as soon as a term no longer changes the total: the remainder is an
asymptotic series, which diverges for large x if summed on. At the edges, as Cephes: ∞ at
x = 1, NaN below; for q ≤ 0, ∞ at the poles q = 0, -1, ..., and NaN unless x is an integer.
"""

import math

from ..backend import errstate, xp
from ..primitive import Primitive
from .broadcasting import unbroadcast
from .conversion import type_name
from .gamma import _BERNOULLI
from .outputs import write_out
from .pointwise import _floating_pair

_EPS = 2.0**-53
# (2j)! / B_2j, j = 1..12: the Euler-Maclaurin terms' denominators (B_22, B_24 beside gamma.py's ten)
_DENOMINATORS = [math.factorial(2 * j) / b
                 for j, b in enumerate(_BERNOULLI + [854513 / 138, -236364091 / 2730], start=1)]


def hurwitz_zeta(x, q):
    """ζ(x, q) of two arrays (float64 out)."""
    x, q = xp.broadcast_arrays(xp.asarray(x, dtype=xp.float64), xp.asarray(q, dtype=xp.float64))
    x, q = x.ravel(), q.ravel()
    result = xp.full(x.shape, xp.nan)
    pole = (x == 1) | ((x > 1) & (q <= 0) & (q == xp.floor(q)))
    result[pole] = xp.inf
    defined = ~(x <= 1) & ~pole & ~((q <= 0) & (x != xp.floor(x)))  # (NaN stays in, and comes out NaN)
    x, q = x[defined], q[defined]
    with errstate(over="ignore", divide="ignore", invalid="ignore"):
        total = q ** -x
        a, b = q.copy(), xp.zeros_like(q)
        done = xp.zeros(q.shape, dtype=bool)
        active, i = xp.arange(q.size), 0
        while active.size:  # the first terms, one more each round for the elements still summing
            i += 1
            a[active] += 1.0
            b[active] = a[active] ** -x[active]
            total[active] += b[active]
            converged = xp.abs(b[active] / total[active]) < _EPS
            done[active[converged]] = True
            active = active[~converged & ((i < 9) | (a[active] <= 9.0))]
        w = a
        tail = ~done  # the remainder, where the sum itself did not converge
        total[tail] += b[tail] * w[tail] / (x[tail] - 1.0) - 0.5 * b[tail]
        rising, k = xp.ones_like(q), xp.zeros_like(q)
        active = xp.flatnonzero(tail)
        for denominator in _DENOMINATORS:
            if not active.size:
                break
            rising[active] *= x[active] + k[active]
            b[active] /= w[active]
            term = rising[active] * b[active] / denominator
            total[active] += term
            k[active] += 1.0
            rising[active] *= x[active] + k[active]
            b[active] /= w[active]
            k[active] += 1.0
            active = active[xp.abs(term / total[active]) >= _EPS]
    result[defined] = total
    return result


class Zeta(Primitive):
    """z = ζ(x, q);   dL/dq = dL/dz · -x ζ(x+1, q);   dL/dx is not implemented (as in PyTorch)"""

    def forward(self, x, q):
        shape = xp.broadcast_shapes(x.shape, q.shape)
        return hurwitz_zeta(x, q).reshape(shape).astype(x.dtype)

    def backward(self, grad, z, x, q):
        if x.requires_grad:
            raise NotImplementedError("the derivative for 'zeta' is not implemented.")
        return None, unbroadcast(grad * -x * Zeta.apply(x + 1.0, q), q)


def zeta(input, other, *, out=None):
    """The Hurwitz zeta function ζ(input, other) = Σ_{k≥0} (k + other)^(-input)
    (``special.zeta``; ζ(x, 1) is Riemann's)."""
    input, other = _floating_pair(input, other)
    if input.dtype == xp.float16 or input.dtype.kind == "c":  # (PyTorch's kernel: float32 and float64 only)
        raise NotImplementedError(f"\"zeta_cpu\" not implemented for '{type_name(input.dtype)}'")
    return write_out(Zeta.apply(input, other), out)
