"""A masked gradient as PyTorch's backward gives it: selected, not multiplied.

Where an op's derivative is 0 on part of its input (relu off, clamp outside its bounds, a flat
piece of hardtanh, the smaller input of a maximum), PyTorch's backward selects: ``where(off, 0, g)``.
The fast way to compute that here is the product g ⊙ m with m = 0 there, and the two agree until g
holds an inf or a NaN where m is 0: 0 · ∞ = NaN, which a matmul below then spreads over every
weight. ``relu(x).sqrt()`` and lp_pool over a window of zeros are ways to meet it (sqrt's
derivative at 0 is ∞, on exactly the entries relu cut off).

So the product is kept where every element of it is finite (one BLAS pass, Σ z², tells: NumPy's
``where`` costs ten times the product on random signs), and the select made where one is not. Σ z²
also overflows for |z| > 1e19 in float32: the select then runs and changes nothing.

Where the derivative is 0 everywhere (rounding, sign, x⁰, a division rounded to whole numbers), the
gradient is zeros, as PyTorch's ``zeros_like``: not g · 0, NaN where g is infinite.
"""

import math

from ..backend import xp
from ..tensor import Tensor

isfinite, vdot = math.isfinite, xp.vdot  # (module globals: one lookup each on relu's path)


def all_finite(array):
    """Whether every element of a real array is finite (or the sum of squares overflowed). (vdot reads memory in
    C's order and copies an array laid out otherwise: raveled in its own order, a product is read in place.)"""
    flat = array.ravel("K")
    return isfinite(vdot(flat, flat))


def selected(grad, factor):
    """grad ⊙ ``factor`` (real arrays), with 0 wherever the factor is 0, whatever grad is there. (``all_finite``
    written out: relu's backward runs this, and a call more costs it 2%.)"""
    product = grad * factor
    flat = product.ravel("K")  # (a view: a product is dense in memory, in its inputs' order, which may not be C's)
    if isfinite(vdot(flat, flat)):
        return product
    return xp.where(factor == 0, 0, product)


def zero_gradient(input, grad):
    """dL/dx of a map that is flat everywhere: zeros of the input's shape, in the gradient's dtype."""
    return Tensor._make(xp.zeros(input.shape, grad._data.dtype))
