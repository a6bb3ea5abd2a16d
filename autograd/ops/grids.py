"""Grids and index sets built from tensors: meshgrid, cartesian_prod, block_diag, and the
index factories triu_indices and tril_indices.

Grids are broadcasts of their inputs (so gradients sum over the copies); block_diag places
each input in its own block of zeros (its gradient is its block).
"""

import warnings

from ..backend import int64, xp
from ..graph import program_stacklevel
from ..tensor import Tensor
from . import joins, shape
from .conversion import refuse_kinds
from .names import names
from .promotion import common_dtype


@names("meshgrid", method=False)
def meshgrid(*tensors, indexing=None):
    """Coordinate grids: output k varies along dim k ('ij') — or, for 'xy', with the first two swapped.
    Without ``indexing``, 'ij' with PyTorch's warning that it will have to be given."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise RuntimeError("meshgrid expects a non-empty TensorList")
    if indexing is None:
        warnings.warn("torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.",
                      UserWarning, stacklevel=program_stacklevel())
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f"torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but received: {indexing}")
    for t in tensors:
        if t.ndim > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got: {t.ndim}D")
    if len({t.dtype for t in tensors}) > 1:
        raise RuntimeError("meshgrid expects all tensors to have the same dtype")
    vectors = [shape.reshape(t, (-1,)) for t in tensors]
    swap = indexing == "xy" and len(vectors) >= 2
    if swap:
        vectors[0], vectors[1] = vectors[1], vectors[0]
    sizes = tuple(v.shape[0] for v in vectors)
    grids = []
    for k, v in enumerate(vectors):
        placed = shape.reshape(v, tuple(n if i == k else 1 for i, n in enumerate(sizes)))
        grids.append(shape.expand(placed, sizes))
    if swap:  # 'xy' is 'ij' of the inputs with the first two swapped, and the outputs swapped back
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)


@names("cartesian_prod", method=False)
def cartesian_prod(*tensors):
    """Every combination of one element from each vector, as rows (a vector for one input)."""
    for t in tensors:
        if t.ndim != 1:
            raise RuntimeError(f"Expect a 1D vector, but got shape {list(t.shape)}")
    if len(tensors) == 1:
        return tensors[0]
    grids = meshgrid(*tensors, indexing="ij")
    return joins.stack([shape.reshape(g, (-1,)) for g in grids], dim=1)


@names("block_diag", method=False)
def block_diag(*tensors):
    """The matrices (vectors as rows, scalars as 1×1) along the diagonal of a matrix of zeros."""
    for i, t in enumerate(tensors):
        if t.ndim > 2:
            raise RuntimeError(f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has "
                               f"{t.ndim} dimensions")
    blocks = [shape.reshape(t, (1, -1) if t.ndim == 1 else (1, 1) if t.ndim == 0 else t.shape) for t in tensors]
    rows = sum(b.shape[0] for b in blocks)
    columns = sum(b.shape[1] for b in blocks)
    dtype = common_dtype([b.dtype for b in blocks]) if blocks else xp.float32  # (PyTorch's promotion)
    result, row, column = None, 0, 0
    for b in blocks:
        index = (slice(row, row + b.shape[0]), slice(column, column + b.shape[1]))
        placed = shape.IndexAdd.apply(b.to(dtype) if b.dtype != dtype else b, index=index, shape=(rows, columns),
                                      basic=True)
        result = placed if result is None else result + placed
        row, column = row + b.shape[0], column + b.shape[1]
    return result if result is not None else Tensor._make(xp.zeros((1, 0), dtype=dtype))  # (PyTorch's 1 × 0)


def _triangle_indices(row, col, offset, lower):
    for name, size in (("row", row), ("col", col)):
        if size < 0:
            raise RuntimeError(f"{name} must be non-negative, got{size}")  # (PyTorch's words, without the space)
    rows, columns = xp.nonzero(xp.tri(row, col, offset, dtype=bool) if lower else ~xp.tri(row, col, offset - 1,
                                                                                         dtype=bool))
    return Tensor._make(xp.stack([rows, columns]).astype(int64))


def _refuse_index_dtype(dtype, kernel):
    """PyTorch's triangle indices are made by its index kernels: int32 and int64 only."""
    if xp.dtype(dtype) not in (xp.int32, int64):
        refuse_kinds(xp.empty(0, dtype), kernel, "biufc")


@names("triu_indices", method=False)
def triu_indices(row, col, offset=0, *, dtype=int64, device=None, layout=None):
    """The (2, N) coordinates of the upper triangle (on and above the offset-th diagonal), row by row."""
    _refuse_index_dtype(dtype, "triu_indices")
    return _triangle_indices(row, col, offset, lower=False).to(dtype=dtype, device=device)


@names("tril_indices", method=False)
def tril_indices(row, col, offset=0, *, dtype=int64, device=None, layout=None):
    """The (2, N) coordinates of the lower triangle (on and below the offset-th diagonal), row by row."""
    _refuse_index_dtype(dtype, "tril_indices")
    return _triangle_indices(row, col, offset, lower=True).to(dtype=dtype, device=device)
