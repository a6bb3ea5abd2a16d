"""A masked gradient as PyTorch's backward gives it: selected, not multiplied.

Where an op's derivative is 0 on part of its input (relu off, clamp outside its bounds, a flat
piece of hardtanh, the smaller input of a maximum), PyTorch's backward selects: ``where(off, 0, g)``.
The fast way to compute that here is the product z = g ⊙ m with m = 0 there, and the two agree
until g holds an inf or a NaN where m is 0: 0 · ∞ = NaN, which a matmul below then spreads over
every weight. ``d.clamp(min=0).sqrt()``, a distance, is the usual way to meet it (sqrt's
derivative at 0 is ∞, on exactly the entries the clamp cut off).

So the product is kept where every element is finite (one BLAS pass, Σ z², tells), and the
select is made only where one is not. Σ z² also overflows for |z| > 1e19 in float32; the select
then runs and changes nothing.

Where the derivative is 0 everywhere (rounding, sign, x⁰, a division rounded to whole numbers), the
gradient is zeros, as PyTorch's ``zeros_like``: not g · 0, NaN where g is infinite.
"""

import math

from ..backend import xp
from ..tensor import Tensor


def all_finite(array):
    """Whether every element is finite (or the sum of squares overflowed: then the caller's select runs)."""
    return math.isfinite(xp.vdot(array, array).real)


def selected(product, factor):
    """``product`` = g ⊙ ``factor`` (arrays), with 0 wherever the factor is 0, whatever g is there."""
    return product if all_finite(product) else xp.where(factor == 0, 0, product)


def zero_gradient(input, grad):
    """dL/dx of a map that is flat everywhere: zeros of the input's shape, in the gradient's dtype."""
    return Tensor._make(xp.zeros(input.shape, grad._data.dtype))
