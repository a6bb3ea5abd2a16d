"""Sparse tensors cut and rearranged (``narrow_copy``, ``unsqueeze``, ``permute``, ``t_``), as PyTorch's: a sparse
dim moves or cuts the indices, a dense dim each value (its dim ``d - sparse_dim + 1``). The values are read by
``index_select`` and ``narrow`` of the graph, so gradients flow back to them (see ``autograd.sparse.coo``)."""

import numpy

from ..ops.axes import dim_index
from ..size import Size
from ..tensor import tensor_from
from .coo import SparseTensor


def narrow_copy(self, dim, start, length):
    """The entries with ``start <= index < start + length`` along ``dim``, that index less ``start`` (a sparse dim);
    each value narrowed (a dense dim). A new tensor, as PyTorch's (``narrow`` itself, a view, has no sparse kernel)."""
    dim = dim_index(dim, self.dim())
    if not (0 <= start and length >= 0 and start + length <= self._size[dim]):
        raise RuntimeError(f"Invalid range to narrow. range(start, start+length) must be a subset of range(0, "
                           f"{self._size[dim]}).")
    size = Size(tuple(self._size[:dim]) + (length,) + tuple(self._size[dim + 1:]))
    n = self.sparse_dim()
    if dim >= n:
        return SparseTensor(self._indices_tensor.clone(), self._values_tensor.narrow(dim - n + 1, start, length), size,
                            self._coalesced)
    along = self._indices_tensor._data[dim]
    kept = tensor_from(numpy.flatnonzero((along >= start) & (along < start + length)))
    indices = self._indices_tensor.index_select(1, kept)
    indices[dim] -= start
    return SparseTensor(indices, self._values_tensor.index_select(0, kept), size, self._coalesced)


def unsqueeze(self, dim):
    """A dim of size 1 at ``dim``: a sparse one (a row of zeros among the indices) where it falls among or just after
    the sparse dims, a dense one (each value unsqueezed) past them."""
    dim = dim_index(dim, self.dim() + 1)
    size = Size(tuple(self._size[:dim]) + (1,) + tuple(self._size[dim:]))
    n = self.sparse_dim()
    if dim > n:
        return SparseTensor(self._indices_tensor, self._values_tensor.unsqueeze(dim - n + 1), size, self._coalesced)
    indices = self._indices_tensor
    indices = indices.new_zeros((n + 1, indices.shape[1]))
    indices[:dim], indices[dim + 1:] = self._indices_tensor[:dim], self._indices_tensor[dim:]
    return SparseTensor(indices, self._values_tensor, size, self._coalesced)


def permute(self, *dims):
    """The dims in the order ``dims``: the sparse ones among themselves (the rows of the indices), the dense ones
    among themselves (each value's dims); a sparse and a dense dim cannot trade places, as in PyTorch's."""
    dims = tuple(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else dims
    if len(dims) != self.dim():
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match the length "
                           f"of the desired ordering of dimensions i.e. input.dim() = {self.dim()} is not equal to "
                           f"len(dims) = {len(dims)}")
    dims = tuple(dim_index(d, self.dim()) for d in dims)
    n = self.sparse_dim()
    if sorted(dims[:n]) != list(range(n)):
        raise RuntimeError("permute(sparse_coo): transpositions between sparse and dense dimensions are not allowed. "
                           "Only transpositions within sparse and dense dimensions are supported.")
    values = self._values_tensor.permute(0, *(d - n + 1 for d in dims[n:]))
    size = Size(self._size[d] for d in dims)
    return SparseTensor(self._indices_tensor[list(dims[:n])], values, size, dims[:n] == tuple(range(n))
                        and self._coalesced)


def transpose_(self, dim0, dim1):
    """transpose in place: this object becomes its transpose (PyTorch's ``t_``, ``transpose_``)."""
    transposed = self.transpose(dim0, dim1)
    self._indices_tensor, self._size, self._coalesced = transposed._indices_tensor, transposed._size, \
        transposed._coalesced
    return self


def t_(self):
    return self if self.dim() < 2 else transpose_(self, 0, 1)


def is_nonzero(self):
    """Whether its one element is nonzero (its entries summed: an uncoalesced tensor's may cancel)."""
    if self.numel() != 1:
        raise RuntimeError(f"Boolean value of Tensor with {'no values' if self.numel() == 0 else 'more than one value'}"
                           f" is ambiguous")
    return bool(self._values_tensor.sum() != 0)


SparseTensor.narrow_copy, SparseTensor.unsqueeze, SparseTensor.permute = narrow_copy, unsqueeze, permute
SparseTensor.transpose_, SparseTensor.t_, SparseTensor.is_nonzero = transpose_, t_, is_nonzero
