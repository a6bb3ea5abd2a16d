"""Hardswish (Howard et al., 2019, MobileNetV3), as PyTorch computes it:

    y = x · min(max(x + 3, 0), 6) / 6,
    dy/dx = 0 for x ≤ -3,  x/3 + 1/2 for -3 < x < 3,  1 from 3 (and at NaN: it passes no test),
    d²y/dx² = 1/3 strictly inside (-3, 3), 0 elsewhere.

One primitive, not a composition of ``where``: a branch that is not taken would still send its
gradient through 0 · ∞ = NaN at ±∞ (PyTorch's gradient there is 0 and 1). Its backward is a node of
its own (``HardswishGrad``), so the second derivative has a graph too.
"""

from ..backend import errstate, select, xp
from ..primitive import Primitive
from ..tensor import Tensor
from .elementwise import half_as_float32
from .piecewise_linear import refuse_unless_real
from .selection import selected


def slope(x):
    """dy/dx at the array x: 0 for x ≤ -3, x/3 + 1/2 below 3, 1 otherwise (NaN included). Picked by bits
    (backend.select: NumPy's where branches on each element; 3.1 -> 1.9 ms over 524,288 float32 values), each
    choice written over x/3 + 1/2's array (no new one: each cost about as much as a product)."""
    inner = x / x.dtype.type(3)
    inner += x.dtype.type(0.5)
    inner = select(x < 3, inner, xp.ones((), x.dtype), over_x=True)
    return select(~(x <= -3), inner, xp.zeros((), x.dtype), over_x=True)  # (not x > -3: NaN keeps its 1)


class Hardswish(Primitive):
    """y = x · min(max(x + 3, 0), 6) / 6;   dL/dx = dL/dy · slope(x)"""

    def forward(self, x):
        refuse_unless_real(x, "hardswish")
        wide = half_as_float32(x)  # (float16 in float32, rounded once, as PyTorch's kernel)
        with errstate(invalid="ignore"):  # -∞ · 0 is NaN, as PyTorch's
            if not wide.ndim:  # (a 0-d array's arithmetic gives NumPy scalars, which take no out=)
                return (wide * xp.clip(wide + 3, 0, 6) / 6).astype(x.dtype, copy=False)
            y = wide + 3  # (the same steps written into one array)
            xp.clip(y, 0, 6, out=y)
            y *= wide
            y /= 6
            return y.astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (HardswishGrad.apply(grad, x),)


class HardswishGrad(Primitive):
    """z = g · slope(x)  (g = dL/dy);   dL/dg = u · slope(x),   dL/dx = u · g / 3 strictly inside (-3, 3), else 0"""

    def forward(self, g, x):
        # (0 below -3 even for an infinite g: PyTorch selects; float16 in float32, rounded once)
        return selected(half_as_float32(g), slope(half_as_float32(x))).astype(g.dtype, copy=False)

    def backward(self, u, z, g, x):
        data = x._data
        inside = Tensor._make(((data > -3) & (data < 3)).astype(data.dtype) * (1 / 3))
        return (HardswishGrad.apply(u, x) if g.requires_grad else None,
                u * g * inside if x.requires_grad else None)
