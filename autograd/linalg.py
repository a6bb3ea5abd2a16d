"""``autograd.linalg``: torch.linalg's names (norms, inverses, solves, determinants, products)."""

from .backend import xp
from .ops.contractions import einsum
from .ops.diagonals import diagonal as _diagonal
from .ops.inverses import LinAlgError, det, inv, slogdet, solve
from .ops.linalg import matmul
from .ops.norms import linalg_norm as norm
from .ops.norms import matrix_norm, svdvals, vector_norm
from .tensor import Tensor

__all__ = ["LinAlgError", "cross", "det", "diagonal", "inv", "matmul", "matrix_norm", "multi_dot", "norm", "slogdet",
           "solve", "svdvals", "vecdot", "vector_norm"]


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    """The ``offset``-th diagonal of each matrix (torch.linalg's defaults: the last two dims)."""
    return _diagonal(A, offset, dim1, dim2)


def vecdot(x, y, *, dim=-1):
    """Σ_i x_i y_i along dim (the two broadcast)."""
    return (x * y).sum(dim)


def multi_dot(tensors):
    """A product of matrices A @ B @ C ... (the first may be a row vector, the last a column)."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise RuntimeError(f"multi_dot(): expected at least 2 tensors but got {len(tensors)}")
    result = tensors[0]
    for t in tensors[1:]:
        result = matmul(result, t)
    return result


def cross(input, other, *, dim=-1):
    """The cross product of 3-vectors along dim: (a₂b₃ - a₃b₂, a₃b₁ - a₁b₃, a₁b₂ - a₂b₁)."""
    if input.shape[dim] != 3 or other.shape[dim] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got {input.shape[dim]} "
                           f"and {other.shape[dim]}")
    levi_civita = xp.zeros((3, 3, 3))
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        levi_civita[i, j, k], levi_civita[i, k, j] = 1.0, -1.0
    a, b = input.movedim(dim, -1), other.movedim(dim, -1)
    dtype = (a._data[..., :1] * b._data[..., :1]).dtype
    return einsum("ijk,...j,...k->...i", Tensor._make(levi_civita.astype(dtype)), a, b).movedim(-1, dim)
