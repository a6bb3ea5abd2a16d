"""Sparse matrices in PyTorch's compressed-sparse-rows layout (``torch.sparse_csr_tensor``, ``Tensor.to_sparse_csr``),
as graph code keeps an adjacency matrix: row i's entries are values[crow[i]:crow[i+1]], in the columns
col[crow[i]:crow[i+1]].

A CSR matrix here is the COO matrix of the same entries (``autograd.sparse.coo``; the rows spelled out from crow)
over its own values Tensor, so its products (``A @ X``, ``torch.sparse.mm``) are the COO's, and their gradients
reach the values (dL/dvalues[e] = dL/dY[row_e] · X[col_e]). Built: the constructor, the three index and value
tensors, ``to_dense``, ``to_sparse_coo`` and the product with a dense matrix; other ops are not.
"""

import numpy

from ..constants import sparse_csr
from ..size import Size
from ..tensor import Tensor, tensor_from
from .coo import SparseBasics, SparseTensor, _index_tensor


class SparseCsrTensor(SparseBasics):
    """A 2-d sparse matrix in the CSR layout: ``crow_indices`` (rows + 1 offsets), ``col_indices`` and ``values``
    (one per entry), and its size."""

    is_sparse = False  # (PyTorch's is_sparse answers for the COO layout only)
    is_sparse_csr = True
    layout = sparse_csr

    def __init__(self, crow, col, values, size):
        self._crow, self._col, self._values_tensor, self._size = crow, col, values, Size(size)

    def crow_indices(self):
        return self._crow

    def col_indices(self):
        return self._col

    def values(self):
        return self._values_tensor

    def to_sparse_coo(self):
        """The same entries in the COO layout, over the same values (products through it reach them)."""
        rows = numpy.repeat(numpy.arange(self._size[0], dtype=numpy.int64), numpy.diff(self._crow.numpy()))
        indices = tensor_from(numpy.stack([rows, self._col.numpy()]))
        return SparseTensor(indices, self._values_tensor, self._size, self._nnz() <= 1)

    def to_sparse(self, sparse_dim=None, *, layout=None):
        return self.to_sparse_coo()

    def to_dense(self):
        return self.to_sparse_coo().to_dense()

    def __matmul__(self, other):
        """A @ X of a dense matrix (or vector) X: dense, as PyTorch's."""
        from .products import mm

        return mm(self.to_sparse_coo(), other)

    matmul = mm = __matmul__

    def __repr__(self):
        def body(t):
            return repr(t.detach()).removeprefix("tensor(").removesuffix(")")

        return (f"tensor(crow_indices=tensor({body(self._crow)}),\n       col_indices=tensor({body(self._col)}),\n"
                f"       values=tensor({body(self._values_tensor)}), size={tuple(self._size)}, nnz={self._nnz()}, "
                "layout=torch.sparse_csr)")


def sparse_csr_tensor(crow_indices, col_indices, values, size=None, *, dtype=None, device=None, pin_memory=False,
                      requires_grad=False, check_invariants=None):
    """A sparse CSR matrix (``torch.sparse_csr_tensor``): row i's entries values[crow[i]:crow[i+1]] in the columns
    col[crow[i]:crow[i+1]]. ``size`` defaults to (len(crow) - 1, one past the largest column). The indices are
    always checked (PyTorch checks only with ``check_invariants=True``)."""
    crow, col = _index_tensor(crow_indices), _index_tensor(col_indices)
    values = values if isinstance(values, Tensor) else tensor_from(values)
    if dtype is not None:
        values = values.to(dtype)
    if requires_grad:
        values.requires_grad_()
    if crow.ndim != 1 or col.ndim != 1 or values.ndim != 1:
        raise RuntimeError("sparse_csr_tensor: crow_indices, col_indices and values must be 1-d here (a batch of "
                           f"CSR matrices is not built), got {crow.ndim}, {col.ndim} and {values.ndim} dims")
    rows = crow.shape[0] - 1
    offsets, columns = crow.numpy(), col.numpy()
    if size is None:
        size = (rows, int(columns.max()) + 1 if columns.size else 0)
    size = tuple(size)
    if len(size) != 2:
        raise RuntimeError(f"sparse_csr_tensor: a CSR matrix has 2 dims, got size {list(size)}")
    if crow.shape[0] != size[0] + 1:
        raise RuntimeError(f"crow_indices.size(-1) must be equal to size[-2] + 1 (that is {size[0] + 1}), but got: "
                           f"{crow.shape[0]}")
    if col.shape[0] != values.shape[0]:
        raise RuntimeError(f"col_indices and values must have the same number of elements, but got "
                           f"{col.shape[0]} and {values.shape[0]}")
    if offsets[0] != 0 or offsets[-1] != col.shape[0] or (numpy.diff(offsets) < 0).any():
        raise RuntimeError(f"crow_indices must start at 0, end at nnz ({col.shape[0]}) and never decrease, got "
                           f"{offsets.tolist()}")
    if columns.size and (columns.min() < 0 or columns.max() >= size[1]):
        raise RuntimeError(f"col_indices must be in [0, {size[1]}) for size {list(size)}, got {columns.tolist()}")
    return SparseCsrTensor(crow, col, values, size)


def to_sparse_csr(dense, dense_dim=None):
    """``dense.to_sparse_csr()`` of a matrix: its nonzeros row by row (their values gathered as ``to_sparse``'s,
    so that gradients reach the dense tensor)."""
    if dense.ndim != 2 or dense_dim:
        raise RuntimeError(f"to_sparse_csr: a matrix (2 dims, no dense dims) is built here, got shape "
                           f"{list(dense.shape)}")
    coo = dense.to_sparse()
    rows, columns = coo._indices_tensor.numpy()
    crow = numpy.concatenate([[0], numpy.cumsum(numpy.bincount(rows, minlength=dense.shape[0]))])
    return SparseCsrTensor(tensor_from(crow.astype(numpy.int64)), tensor_from(columns.copy()), coo._values_tensor,
                           dense.shape)
