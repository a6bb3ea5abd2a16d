"""Sums and softmaxes of sparse tensors (``torch.sparse.sum``, ``softmax``, ``log_softmax``): over the entries
present, the missing ones counting as 0 in a sum and as -inf in a softmax (so they stay missing)."""

import numpy

from ..tensor import tensor_from
from .coo import SparseTensor


def sum(input, dim=None, dtype=None):  # noqa: A001  (torch.sparse.sum's name)
    """The sum of every entry (a dense 0-d tensor), or over ``dim``: a sparse tensor of the sparse dims left
    (coalesced), or dense once every sparse dim is summed."""
    values = input._values_tensor if dtype is None else input._values_tensor.to(dtype)
    if dim is None:
        return values.sum()
    dims = {d % input.dim() for d in ((dim,) if isinstance(dim, int) else dim)}
    n = input.sparse_dim()
    dense_dims = sorted(d - n + 1 for d in dims if d >= n)
    if dense_dims:
        values = values.sum(dense_dims)
    kept = [d for d in range(n) if d not in dims]
    if not kept:
        return values.sum(0)
    size = [input.shape[d] for d in kept] + [input.shape[d] for d in range(n, input.dim()) if d not in dims]
    return SparseTensor(input._indices_tensor[kept], values, size).coalesce()


def _grouped(input, dim):
    """``input`` coalesced, the group of each entry (entries that differ only in sparse dim ``dim``), and the
    number of groups: what softmax along ``dim`` normalises over."""
    input = input.coalesce()
    positions = numpy.delete(input._indices_tensor._data, dim, axis=0)
    sizes = tuple(s for d, s in enumerate(input.shape[:input.sparse_dim()]) if d != dim)
    linear = numpy.ravel_multi_index(tuple(positions), sizes) if sizes else numpy.zeros(input._nnz(), numpy.int64)
    unique, group = numpy.unique(linear, return_inverse=True)
    return input, tensor_from(group.reshape(-1).astype(numpy.int64)), len(unique)


def _shifted_and_totals(input, dim, dtype):
    """Per entry, value minus its group's largest, and each group's Σ exp (softmax's denominator); each column of
    a hybrid tensor's values (its dense dims) on its own."""
    input, group, groups = _grouped(input, dim)
    values = input._values_tensor if dtype is None else input._values_tensor.to(dtype)
    dense_sizes = tuple(values.shape[1:])
    spread = group.reshape((-1,) + (1,) * len(dense_sizes)).expand(tuple(values.shape))
    largest = values.detach().new_zeros((groups,) + dense_sizes).scatter_reduce(0, spread, values.detach(), "amax",
                                                                               include_self=False)
    shifted = values - largest[group]
    totals = values.new_zeros((groups,) + dense_sizes).index_add(0, group, shifted.exp())
    return input, shifted, totals[group]


def _along_dense_dim(input, dim, dtype, function):
    """softmax / log_softmax along a dense dim: of each entry's values on their own."""
    input = input.coalesce()
    values = input._values_tensor if dtype is None else input._values_tensor.to(dtype)
    return input._with_values(function(values, dim - input.sparse_dim() + 1), True)


def softmax(input, dim, dtype=None):
    """Softmax along ``dim`` over the entries present (the missing ones count as -inf: they stay absent),
    ``torch.sparse.softmax``: values[e] = exp(v_e) / Σ_{e' in e's group} exp(v_e'). Along a dense dim of a hybrid
    tensor: each entry's values on their own."""
    dim = dim % input.dim()
    if dim >= input.sparse_dim():
        return _along_dense_dim(input, dim, dtype, lambda values, d: values.softmax(d))
    input, shifted, totals = _shifted_and_totals(input, dim, dtype)
    return input._with_values(shifted.exp() / totals, True)


def log_softmax(input, dim, dtype=None):
    """log of ``softmax``: v_e - max - log Σ exp(v - max) over e's group (``torch.sparse.log_softmax``)."""
    dim = dim % input.dim()
    if dim >= input.sparse_dim():
        return _along_dense_dim(input, dim, dtype, lambda values, d: values.log_softmax(d))
    input, shifted, totals = _shifted_and_totals(input, dim, dtype)
    return input._with_values(shifted - totals.log(), True)


def _sum_method(self, dim=None, keepdim=False, dtype=None):
    if keepdim:
        raise RuntimeError("sum: keepdim is not defined for a sparse tensor")
    return sum(self, dim, dtype=dtype)


SparseTensor.sum = _sum_method
