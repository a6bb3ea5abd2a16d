"""Ops over a sequence of samples: the trapezoidal rule (``trapezoid``/``trapz`` and
``cumulative_trapezoid``), the Vandermonde matrix (``vander``), r-element combinations
(``combinations``), and the deprecated inclusive ``range``.

All are compositions of differentiable ops (slices, sums, cumulative sums and products,
indexing), so their gradients are those ops' gradients.
"""

import itertools
import math
import warnings

from ..backend import get_default_dtype, int64, xp
from ..factories import out_dtype, written
from ..graph import program_stacklevel
from ..tensor import Tensor, as_array
from .axes import dim_index
from .elementwise import floating
from .names import names


def _refuse_complex_spacing(dx, name):
    if isinstance(dx, complex):
        raise RuntimeError(f"{name}: Currently, we only support dx as a real number.")


def _areas(y, x, dx, dim, name):
    """The trapezoids' areas (y_i + y_{i+1}) / 2 · Δx_i along dim (one fewer than the samples)."""
    if x is not None and dx is not None:
        raise TypeError(f"{name}() takes either x or dx, not both")
    if y.dtype.kind == "b" or isinstance(x, Tensor) and x.dtype.kind == "b":
        raise RuntimeError(f"{name}: received a bool input for `x` or `y`, but bool is not supported" if x is not None
                           else f"{name}: received a bool input for `y`, but bool is not supported")
    if isinstance(x, Tensor) and x.dtype.kind in "fc" and y.dtype.kind not in "fc":
        y = y.to(x.dtype)  # (integer samples at float16 points: float16, as PyTorch promotes them)
    y = floating(y)
    dim = dim_index(dim, y.ndim)
    count = y.shape[dim]
    heights = (y.narrow(dim, 0, count - 1) + y.narrow(dim, 1, count - 1)) * 0.5
    if x is None:
        return heights * (1.0 if dx is None else dx), dim
    if not isinstance(x, Tensor):
        x = Tensor._make(as_array(x))
    if x.ndim == 1:
        if x.shape[0] != count:
            raise RuntimeError(f"{name}: There must be one `x` value for each sample point")
        x = x.reshape((count,) + (1,) * (y.ndim - 1 - dim))
    return heights * x.diff(dim=dim - y.ndim), dim


@names("trapezoid", "trapz", method=False)
def trapezoid(y, x=None, *, dx=None, dim=-1):
    """∫ y along dim by the trapezoidal rule: Σ_i (y_i + y_{i+1}) / 2 · (x_{i+1} - x_i), with samples
    at ``x`` (one per point, or of y's shape) or ``dx`` apart (1 by default). Fewer than two
    samples give 0."""
    _refuse_complex_spacing(dx, "trapezoid")
    if y.shape[dim_index(dim, y.ndim)] == 0:
        return floating(y).sum(dim)
    areas, dim = _areas(y, x, dx, dim, "trapezoid")
    return areas.sum(dim)


@names("cumulative_trapezoid", method=False)
def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    """The running trapezoidal integral: one value per interval (one fewer than the samples)."""
    _refuse_complex_spacing(dx, "cumulative_trapezoid")
    if y.shape[dim_index(dim, y.ndim)] == 0:  # (nothing to integrate; a 1-d x must still have no points, as PyTorch)
        if isinstance(x, Tensor) and x.ndim == 1 and x.shape[0] != 0:
            raise RuntimeError("cumulative_trapezoid: There must be one `x` value for each sample point")
        return floating(y)
    areas, dim = _areas(y, x, dx, dim, "cumulative_trapezoid")
    return areas.cumsum(dim)


def running_powers(x, N):
    """[1, x, x², ..., x^(N-1)] along a new last dim, as a running product of x."""
    ones = Tensor._make(xp.ones(tuple(x.shape) + (1,), dtype=x.dtype))
    if N <= 1:
        return ones[..., :N]
    from .joins import cat

    return cat([ones, x.unsqueeze(-1).expand(*x.shape, N - 1).cumprod(-1)], -1)


@names("vander", method=False)
def vander(x, N=None, increasing=False):
    """The Vandermonde matrix of a vector: column j is x^(N-1-j) (x^j when ``increasing``), N = len(x)
    by default. Integers and bools become int64. Built as a running product of x (PyTorch's way),
    so the powers' gradients are products too (no x^-1 at x = 0)."""
    if x.ndim != 1:
        raise RuntimeError("x must be a one-dimensional tensor.")
    if N is None:
        N = x.shape[0]
    if N < 0:
        raise RuntimeError("N must be non-negative.")
    if x.dtype.kind in "biu":
        x = x.to(int64)
    powers = running_powers(x, N)
    return powers if increasing else powers.flip(1)


@names("combinations", method=False)
def combinations(input, r=2, with_replacement=False):
    """The r-element combinations of a vector's elements, one per row, in lexicographic order of
    positions (as itertools.combinations; with_replacement as combinations_with_replacement)."""
    if input.ndim != 1:
        raise RuntimeError(f"Expect a 1D vector, but got shape {list(input.shape)}")
    if r < 0:
        raise RuntimeError(f"Expect a non-negative number, but got {r}")
    if r == 0:
        return Tensor._make(xp.empty((0,), dtype=input.dtype))
    choose = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    positions = list(choose(range(input.shape[0]), r))
    index = xp.asarray(positions, dtype=xp.int64).reshape(len(positions), r)
    return input[Tensor._make(index)]


@names("range", method=False)
def range_inclusive(start=0, end=None, step=1, *, out=None, dtype=None, layout=None, device=None,
                    requires_grad=False):
    """start, start + step, ..., up to and including end (PyTorch's deprecated torch.range; arange
    excludes end). The default dtype, even for integer arguments."""
    warnings.warn("autograd.range is deprecated and will be removed in a future release because its behavior "
                  "is inconsistent with Python's range builtin. Instead, use autograd.arange, which produces "
                  "values in [start, end).", UserWarning, stacklevel=program_stacklevel())
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError("upper bound and larger bound inconsistent with step sign")
    count = math.floor((end - start) / step) + 1
    values = start + step * xp.arange(count, dtype=xp.float64)
    dtype = out_dtype(dtype, out)
    return written(Tensor._make(values.astype(dtype or get_default_dtype())).requires_grad_(requires_grad), out,
                   points=True)
