"""Sums and softmaxes of sparse tensors (``torch.sparse.sum``, ``softmax``, ``log_softmax``): over the entries
present, the missing ones counting as 0 in a sum and as -inf in a softmax (so they stay missing)."""

import numpy

from ..backend import ufunc_at, xp
from ..ops.axes import dim_index
from ..primitive import Primitive, named_node
from ..tensor import Tensor
from .coo import SparseTensor
from .merging import linear_positions


def sum(input, dim=None, dtype=None):  # noqa: A001  (torch.sparse.sum's name)
    """The sum of every entry (a dense 0-d tensor), or over ``dim``: a sparse tensor of the sparse dims left
    (coalesced), or dense once every sparse dim is summed."""
    values = input._values_tensor if dtype is None else input._values_tensor.to(dtype)
    if dim is None:
        return values.sum()
    listed = [dim_index(d, input.dim()) for d in ((dim,) if isinstance(dim, int) else dim)]
    dims = set(listed)
    if len(dims) < len(listed):
        repeated = next(d for d in listed if listed.count(d) > 1)
        raise RuntimeError(f"dim {repeated} appears multiple times in the list of dims")
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
    unique, group = numpy.unique(linear_positions(positions, sizes), return_inverse=True)
    return input, group.reshape(-1).astype(numpy.int64), len(unique)


class SparseSoftmax(Primitive):
    """Softmax of each group's values (the entries one row or column of a sparse tensor has; each column of a
    hybrid tensor's values on its own), in PyTorch's sparse kernels' order of operations:

        y = e^(v - max) · (1 / Σ e^(v - max))          dL/dv = y (g - Σ g y)
        log: y = v - (max + log Σ e^(v - max))          dL/dv = g - e^y Σ g

    each Σ over the group, its entries added in their order."""

    saves_output = True  # backward needs y only
    saves_inputs = False
    saves_arguments = True  # the groups: freed after backward

    def forward(self, values):
        sizes = (self.groups,) + values.shape[1:]
        largest = xp.full(sizes, -xp.inf, dtype=values.dtype)
        ufunc_at("maximum", largest, self.group, values)
        exps = xp.exp(values - largest[self.group])
        totals = xp.zeros(sizes, dtype=values.dtype)
        ufunc_at("add", totals, self.group, exps)
        if self.log:
            return values - (largest + xp.log(totals))[self.group]
        return exps * (1 / totals)[self.group]

    def backward(self, grad, y, values):
        group = Tensor._make(self.group)
        sizes = (self.groups,) + tuple(grad.shape[1:])
        if self.log:
            return (grad - y.exp() * grad.new_zeros(sizes).index_add(0, group, grad)[group],)
        return (y * (grad + grad.new_zeros(sizes).index_add(0, group, -(y * grad))[group]),)


def _sparse_softmax(input, dim, dtype, log):
    dim = dim % input.dim()
    if dim >= input.sparse_dim():  # along a dense dim of a hybrid tensor: each entry's values on their own
        input = input.coalesce()
        values = input._values_tensor if dtype is None else input._values_tensor.to(dtype)
        dim = dim - input.sparse_dim() + 1
        return input._with_values(values.log_softmax(dim) if log else values.softmax(dim), True)
    input, group, groups = _grouped(input, dim)
    values = input._values_tensor if dtype is None else input._values_tensor.to(dtype)
    result = SparseSoftmax.apply(values, group=xp.asarray(group), groups=groups, log=log)
    if log:
        result = named_node(result, SparseSoftmax, "SparseLogSoftmaxBackward0")
    return input._with_values(result, True)


def softmax(input, dim, dtype=None):
    """Softmax along ``dim`` over the entries present (the missing ones count as -inf: they stay absent),
    ``torch.sparse.softmax``: values[e] = exp(v_e) / Σ_{e' in e's group} exp(v_e'). Along a dense dim of a hybrid
    tensor: each entry's values on their own."""
    return _sparse_softmax(input, dim, dtype, log=False)


def log_softmax(input, dim, dtype=None):
    """log of ``softmax``: v_e - (max + log Σ exp(v - max)) over e's group (``torch.sparse.log_softmax``)."""
    return _sparse_softmax(input, dim, dtype, log=True)


def _sum_method(self, dim=None, keepdim=False, dtype=None):
    """``x.sum(dim, keepdim)``: torch.sparse.sum, each summed dim then put back with size 1 (as ``unsqueeze`` puts
    it: a sparse dim where it falls among the sparse ones), as PyTorch's."""
    total = sum(self, dim, dtype=dtype)
    if keepdim and dim is not None:
        for d in sorted(dim_index(d, self.dim()) for d in ((dim,) if isinstance(dim, int) else dim)):
            total = total.unsqueeze(d)
    return total


SparseTensor.sum = _sum_method
