"""The condition number of a matrix, torch.linalg.cond: how much A⁻¹ can magnify a relative error.

    κ_p(A) = ‖A‖_p ‖A⁻¹‖_p,   and for p = 2 (the default) κ₂(A) = σ_max / σ_min

p = 2 and -2 (σ_min / σ_max) need only the singular values, so A may be rectangular; the other
norms ('fro', 'nuc', 1, -1, inf, -inf) invert A, which must be square. A singular matrix has
κ = inf. Composed of differentiable ops (svdvals, inv, matrix_norm), so it has their gradient.
"""

import math

from ..backend import errstate, xp
from ..tensor import Tensor
from .checked import inv_ex
from .elementwise import where
from .half_linalg import refuses_half
from .inverses import _square
from .norms import matrix_norm, svdvals
from .outputs import write_out

_INVERTING = ("fro", "nuc", 1, -1, math.inf, -math.inf)


@refuses_half("linalg_svd_cpu")
def cond(input, p=None, *, out=None):
    """κ_p(A) = ‖A‖_p ‖A⁻¹‖_p (σ_max / σ_min for p None or 2, σ_min / σ_max for -2)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    if A.ndim < 2:
        raise RuntimeError("linalg.cond: The input tensor must have at least 2 dimensions.")
    if p is not None and p not in (2, -2) and p not in _INVERTING:
        raise RuntimeError(f"linalg.cond got an invalid norm type: {p}")
    if A.shape[-1] == 0 or A.shape[-2] == 0:  # κ of matrices with no elements: 0, as PyTorch's
        real = xp.zeros(1, dtype=A.dtype).real.dtype
        return write_out(Tensor._make(xp.zeros(A.shape[:-2], dtype=real)), out)
    if p is None or p in (2, -2):
        sigma = svdvals(A)
        largest, smallest = sigma[..., 0], sigma[..., -1]
        with errstate(divide="ignore"):  # σ_min = 0: κ = inf, as PyTorch, without NumPy's warning
            return write_out(smallest / largest if p == -2 else largest / smallest, out)
    if p not in _INVERTING:
        raise RuntimeError(f"linalg.cond got an invalid norm type: {p}")
    _square(A, f"cond(ord={p})")
    inverse, info = inv_ex(A)
    singular = info._data > 0
    if not singular.any():
        return write_out(matrix_norm(A, p) * matrix_norm(inverse, p), out)
    # a singular matrix's inverse is NaN: the identity stands in for it, and its κ is inf
    identity = Tensor._make(xp.eye(A.shape[-1], dtype=A.dtype))
    inverse = where(Tensor._make(singular[..., None, None]), identity, inverse)
    return write_out(where(Tensor._make(singular), xp.inf, matrix_norm(A, p) * matrix_norm(inverse, p)), out)
