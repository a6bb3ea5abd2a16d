"""Distances between vectors, as PyTorch has them at the top level and in ``nn.functional``:
``pairwise_distance``, ``cosine_similarity``, ``pdist``; and the two helpers they share with
``nn`` (a p-norm whose gradient at a zero vector is 0, and a clamp that keeps the unclamped
gradient). Compositions of differentiable ops: their gradients are those ops'.
"""

from ..backend import float16, xp
from ..index_watching import watches_arguments
from ..primitive import node_named
from ..tensor import Tensor
from . import norms
from .arranging import broadcast_tensors
from .axes import dim_index
from .conversion import type_name
from .elementwise import where
from .names import names
from .promotion import promoted_dtype


@names("pairwise_distance", method=False)
@node_named("NormBackward1")
def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """‖x1 - x2 + eps‖_p over the last dim (eps keeps the gradient finite at 0), a norm as PyTorch's: with
    p = inf tied largest differences share the gradient; p = 0 counts the nonzero differences."""
    return vector_norm(x1 - x2 + eps, p, -1, keepdim)


def vector_norm(input, p=2.0, dim=None, keepdim=False):
    """‖x‖_p = (Σ |x_i|^p)^(1/p) over ``dim``; p = inf gives max |x_i|: linalg.vector_norm, whose gradient at a zero
    vector is 0 and its second derivative there NaN, as PyTorch's (F.normalize and cosine_similarity take theirs)."""
    input = norms._floating(input, None, "linalg.vector_norm")  # (integers refused, as PyTorch's norm refuses them)
    if input.dtype == float16:  # in float32, rounded once, as PyTorch's norm kernel: the squares and their sum
        # rounded to float16 put F.normalize, cosine_similarity and pairwise_distance a unit or two off in a tenth
        return vector_norm(input.float(), p, dim, keepdim).half()  # of their values (more for a cosine near 0)
    return norms.vector_norm(input, p, dim, keepdim)


def clamped_below_in_value(tensor, low):
    """max(tensor, low) in value, with the gradient of the unclamped tensor. PyTorch clamps
    some norms and variances in place under no_grad, so its graph never sees the clamp;
    this gives the same numbers: t where it is kept, else low + (t - t) with (t - t) = 0 carrying t's graph (chosen
    by where, not added: an overflowed t = inf would make inf - inf a NaN)."""
    return where(Tensor._make(tensor._data >= low), tensor, tensor - tensor.detach() + low)


@names("cosine_similarity", method=False)
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """Σ (x1 / max(‖x1‖, eps)) (x2 / max(‖x2‖, eps)) along dim, as PyTorch 2 computes it:
    each vector normalised first (better precision than x1·x2 / (‖x1‖ ‖x2‖)); at a zero
    vector the gradient is finite. Complex vectors are refused, as
    PyTorch refuses them (the product would need a conjugate); so are integers and bools, unless the other
    vector is floating: both are taken in their promoted dtype (float32 with int32 is float32), as PyTorch's."""
    common = promoted_dtype(x1, x2)
    if common.kind != "f":
        raise RuntimeError(f"expected common dtype to be floating point, yet common dtype is {type_name(common)}")
    x1, x2 = x1.to(common), x2.to(common)
    if x1.shape != x2.shape:
        x1, x2 = broadcast_tensors(x1, x2)
    dim = dim_index(dim, x1.ndim)  # (one int: None, a bool or a tuple is refused, as PyTorch's)
    norm1 = clamped_below_in_value(vector_norm(x1, 2, dim, keepdim=True), eps)
    norm2 = clamped_below_in_value(vector_norm(x2, 2, dim, keepdim=True), eps)
    return ((x1 / norm1) * (x2 / norm2)).sum(dim)


@names("pdist", method=False)
@node_named("PdistBackward0")
@watches_arguments("input")  # (PyTorch's node saves them: writing one refuses)
def pdist(input, p=2.0):
    """‖x_i - x_j‖_p for every pair of rows i < j of an (N, M) input, in row-major order
    (the upper triangle of the distance matrix, as scipy's pdist)."""
    if input.ndim != 2:
        raise RuntimeError(f"pdist only supports 2D tensors, got: {input.ndim}D")
    if not p >= 0:  # (a NaN p too, as PyTorch's check)
        raise RuntimeError("pdist only supports non-negative p values")
    if input.dtype.kind != "f":
        raise RuntimeError("pdist only supports floating-point dtypes")
    if input.dtype == xp.float16:
        raise NotImplementedError("\"pdist\" not implemented for 'Half'")
    first, second = xp.triu_indices(input.shape[0], 1)
    return norms.distance_norm(input[first] - input[second], p, 1, "_pdist_backward")
