"""Products with a sparse matrix (``torch.sparse.mm``, ``torch.spmm``, ``@``), built of dense ops on its values:

    (A X)[i] = Σ_{e : i_e = i} values[e] X[k_e]

so the gradients are index_add's and index_select's (see ``autograd.sparse.coo``)."""

import numpy

from .. import backend
from ..ops.conversion import type_name
from ..ops.joins import stack
from ..tensor import Tensor, tensor_from
from .arithmetic import _dense
from .coo import SparseTensor


def _refuse_not_sparse_matrix(sparse, op):
    if not isinstance(sparse, SparseTensor):
        raise TypeError(f"{op}: the first argument must be a sparse tensor (layout torch.sparse_coo), got "
                        f"{type(sparse).__name__}")
    if sparse.sparse_dim() != 2 or sparse.dense_dim() != 0:
        raise RuntimeError(f"{op}: expected a sparse matrix (2 sparse dims, 0 dense), got {sparse.sparse_dim()} "
                           f"sparse and {sparse.dense_dim()} dense dims (size {list(sparse.shape)})")


def dense_factor(sparse, dense):
    """The dense factor of sparse @ dense as a matrix (a vector as one column), refused in PyTorch's words where
    it does not fit the sparse matrix."""
    matrix = dense.unsqueeze(1) if dense.ndim == 1 else dense
    if matrix.ndim != 2:
        raise RuntimeError(f"mm: expected a matrix or a vector as the dense factor, got shape {list(dense.shape)}")
    if matrix.shape[0] != sparse.shape[1]:
        raise RuntimeError(f"addmm: Argument #3 (dense): Expected dim 0 size {sparse.shape[1]}, got "
                           f"{matrix.shape[0]} (sparse {list(sparse.shape)} @ dense {list(dense.shape)})")
    if matrix.dtype != sparse.dtype:
        raise RuntimeError(f"expected scalar type {type_name(sparse.dtype)} but found "
                           f"{type_name(matrix.dtype)} (sparse {sparse.dtype} @ dense {matrix.dtype})")
    return matrix


def mm(sparse, dense):
    """sparse @ dense (``torch.sparse.mm``, ``torch.spmm``): each row i sums values[e] · dense[k_e] over its
    entries e = (i, k_e). A sparse second factor gives the sparse product."""
    if isinstance(sparse, SparseTensor) and sparse.sparse_dim() == 3 and getattr(dense, "ndim", 0) == 3:
        return bmm(sparse, dense)  # (autograd.bmm's product of a sparse batch)
    if getattr(sparse, "is_sparse_csr", False) is True and not isinstance(sparse, Tensor):  # (a CSR matrix: its COO's)
        sparse = sparse.to_sparse_coo()
    _refuse_not_sparse_matrix(sparse, "mm")
    if isinstance(dense, SparseTensor):
        return mm(sparse, dense.to_dense()).to_sparse()
    matrix = dense_factor(sparse, dense)
    vector = dense.ndim == 1
    rows, columns = sparse._indices_tensor.unbind(0)
    shares = sparse._values_tensor.unsqueeze(1) * matrix.index_select(0, columns)  # values[e] · dense[k_e]
    product = matrix.new_zeros((sparse.shape[0], matrix.shape[1])).index_add(0, rows, shares)
    return product.squeeze(1) if vector else product


def bmm(sparse, dense):
    """A batch of sparse matrices (3 sparse dims: batch, row, column) times a batch of dense ones (``torch.bmm``):
    the block-diagonal sparse matrix of the batch times the stacked dense ones, so each product keeps to its own
    matrix."""
    if not isinstance(sparse, SparseTensor) or sparse.sparse_dim() != 3 or sparse.dense_dim() != 0:
        raise RuntimeError(f"bmm_sparse: expected a 3-D sparse tensor with no dense dims as the first argument, "
                           f"got size {list(sparse.shape)}")
    if dense.ndim != 3:
        raise RuntimeError(f"bmm_sparse: Expected dense tensor to have dim 3, but got {dense.ndim}")
    batches, rows, columns = sparse.shape
    if dense.shape[0] != batches:
        raise RuntimeError("bmm_sparse: 'self.size(0)' and 'mat2.size(0)' must match")
    if dense.shape[1] != columns:
        raise RuntimeError(f"bmm_sparse: Expected dense tensor to have size {columns} at dim 1, but got "
                           f"{dense.shape[1]} (sparse {list(sparse.shape)}, dense {list(dense.shape)})")
    batch, row, column = sparse._indices_tensor.unbind(0)
    blocks = SparseTensor(stack([batch * rows + row, batch * columns + column]), sparse._values_tensor,
                          (batches * rows, batches * columns))
    return mm(blocks, dense.reshape(batches * columns, dense.shape[2])).reshape(batches, rows, dense.shape[2])


def addmm(mat, mat1, mat2, *, beta=1.0, alpha=1.0):
    """beta · mat + alpha · (mat1 @ mat2), mat1 sparse (``torch.sparse.addmm``)."""
    product = mm(mat1, mat2)
    return (mat if beta == 1 else mat * beta) + (product if alpha == 1 else product * alpha)


def hspmm(sparse, dense):
    """sparse @ dense as a hybrid sparse tensor (``torch.hspmm``): one entry per row the sparse matrix has entries in,
    holding that row of the product (1 sparse dim, 1 dense)."""
    product = mm(sparse, dense)
    rows = tensor_from(numpy.unique(backend.to_numpy(sparse._indices_tensor._data[0])))
    return SparseTensor(rows.unsqueeze(0), product.index_select(0, rows), product.shape)


def smm(sparse, dense):
    """sparse @ dense as a sparse matrix (``torch.smm``): every column of each row ``hspmm`` keeps, as an entry."""
    rows = hspmm(sparse, dense)
    columns = dense.shape[1]
    indices = stack([rows._indices_tensor[0].repeat_interleave(columns),
                     tensor_from(numpy.arange(columns)).repeat(rows._nnz())])
    return SparseTensor(indices, rows._values_tensor.reshape(-1), rows.shape)


def _reflected_mm(sparse, other):
    """dense @ sparse = (sparseᵀ @ denseᵀ)ᵀ (a vector: sparseᵀ @ vector)."""
    other = _dense(other)
    return mm(sparse.t(), other) if other.ndim == 1 else mm(sparse.t(), other.t()).t()


SparseTensor.mm = SparseTensor.matmul = SparseTensor.__matmul__ = mm
SparseTensor.bmm, SparseTensor.hspmm, SparseTensor.smm = bmm, hspmm, smm
SparseTensor.__rmatmul__ = _reflected_mm
