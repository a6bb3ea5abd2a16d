"""Sparse tensors made from others (``autograd.sparse.coo``'s type): a dense tensor's nonzeros (``to_sparse``),
sparse tensors joined (``cat``, ``stack``), diagonals (``spdiags``), pygcn's legacy constructors
(``sparse.FloatTensor(indices, values, size)``), and ``check_sparse_tensor_invariants``."""

import warnings

import numpy

from ..backend import xp
from ..graph import program_stacklevel
from ..ops.constant_padding import constant_pad_nd
from ..ops.joins import cat
from ..ops.shape import GetItem
from ..tensor import Tensor, tensor_from
from .arithmetic import _cat_all
from .coo import SparseTensor, _index_tensor, _refuse_layout, sparse_coo_tensor
from .dense_gradient import stand_in_of


def to_sparse(dense, sparse_dim=None, *, layout=None, blocksize=None, dense_dim=None):
    """``dense.to_sparse()``: the nonzeros of ``dense``, its first ``sparse_dim`` dims (all by default) indexed
    and the rest kept dense in each value (an entry is kept where any of its values is nonzero)."""
    _refuse_layout(layout)
    node = "ToSparseBackward1" if sparse_dim is None else "ToSparseBackward0"  # (PyTorch's, by overload)
    if sparse_dim is None:
        sparse_dim = dense.ndim - (dense_dim or 0)
    if not 0 < sparse_dim <= dense.ndim:
        raise RuntimeError(f"to_sparse: sparse_dim must be in [1, {dense.ndim}] for a tensor of shape "
                           f"{list(dense.shape)}, got {sparse_dim}")
    array = dense._data
    nonzero = array != 0
    if sparse_dim < array.ndim:
        nonzero = nonzero.any(axis=tuple(range(sparse_dim, array.ndim)))
    positions = tuple(p.astype(numpy.int64) for p in numpy.nonzero(nonzero))  # (row-major: sorted)
    # the values gathered as PyTorch's ToSparseBackward0 passes their gradient: saving no tensor, so that a second
    # backward pass through it (another use of the sparse tensor) works
    values = GetItem.apply(dense, index=positions, saves_index=False, pytorch_name=node)
    indices = tensor_from(numpy.stack(positions).reshape(sparse_dim, -1))
    made = SparseTensor(indices, values, dense.shape, True)
    if values.requires_grad:  # torch.mm and kin pass all of dL/d(dense) back to it, not only at the nonzeros
        made._dense_origin = stand_in_of(dense, made, node)
    return made


def _refuse_dense_among(tensors):
    for i, t in enumerate(tensors):
        if not isinstance(t, SparseTensor):
            raise RuntimeError(f"Concatenating sparse tensors, but a dense tensor was found at position {i}.")


def cat_sparse(tensors, dim=0):
    """``torch.cat`` of sparse tensors along a sparse dim: each one's entries after the one before's, shifted along
    ``dim`` by the sizes before it (uncoalesced), as PyTorch's. Relations' adjacencies side by side. Along a dense
    dim: each one's entries too, their values padded with zeros to the joined dense size, in their own place."""
    _refuse_dense_among(tensors)
    first = tensors[0]
    dim = dim % first.dim()
    for i, t in enumerate(tensors):
        if t.sparse_dim() != first.sparse_dim() or [s for d, s in enumerate(t.shape) if d != dim] != \
                [s for d, s in enumerate(first.shape) if d != dim]:
            raise RuntimeError(f"All tensors must have the same shape: {list(first.shape)} (except in the "
                               f"concatenating dimension), but found shape: {list(t.shape)} at position {i}.")
    starts = numpy.cumsum([0] + [t.shape[dim] for t in tensors[:-1]])
    if dim >= first.sparse_dim():
        return _cat_along_a_dense_dim(tensors, dim, starts)
    pieces = []
    for t, start in zip(tensors, starts):
        positions = t._indices_tensor._data.copy()
        positions[dim] += start
        pieces.append(positions)
    size = list(first.shape)
    size[dim] = sum(t.shape[dim] for t in tensors)
    values = _cat_all([t._values_tensor for t in tensors])
    return SparseTensor(tensor_from(numpy.concatenate(pieces, axis=1)), values, size)


def _cat_along_a_dense_dim(tensors, dim, starts):
    axis = dim - tensors[0].sparse_dim() + 1  # (of the values)
    total = int(starts[-1]) + tensors[-1].shape[dim]
    padded = [constant_pad_nd(t._values_tensor, (0, 0) * (t._values_tensor.ndim - axis - 1)
                  + (int(start), int(total - start - t.shape[dim])))
              for t, start in zip(tensors, starts)]
    size = list(tensors[0].shape)
    size[dim] = total
    return SparseTensor(cat([t._indices_tensor for t in tensors], 1), _cat_all(padded), size)


def stack_sparse(tensors, dim=0):
    """``torch.stack`` of sparse tensors of one shape: a new sparse dim at ``dim`` holding which tensor each
    entry came from (uncoalesced), as PyTorch's. A relation-by-node-by-node adjacency for ``torch.bmm``."""
    _refuse_dense_among(tensors)
    first = tensors[0]
    dim = dim % (first.dim() + 1)
    if dim > first.sparse_dim():
        raise NotImplementedError(f"stack: a new dense dim ({dim}) for sparse tensors is not built here")
    for t in tensors:
        if tuple(t.shape) != tuple(first.shape):
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(first.shape)} at entry 0 "
                               f"and {list(t.shape)} at entry {tensors.index(t)}")
    pieces = [_with_row(t._indices_tensor._data, dim, i) for i, t in enumerate(tensors)]
    size = list(first.shape)
    size.insert(dim, len(tensors))
    return SparseTensor(tensor_from(xp.concatenate(pieces, axis=1).astype(numpy.int64)),
                        _cat_all([t._values_tensor for t in tensors]), size)


def _with_row(indices, dim, value):
    """The (sparse dims, nnz) ``indices`` with a row of ``value`` inserted before row ``dim`` (NumPy's insert,
    which CuPy has not)."""
    row = xp.full((1, indices.shape[1]), value, dtype=indices.dtype)
    return xp.concatenate([indices[:dim], row, indices[dim:]])


def spdiags(diagonals, offsets, shape, layout=None):
    """A sparse matrix of ``shape`` with diagonals[i] on the diagonal ``offsets[i]`` (``torch.sparse.spdiags``,
    SciPy's convention: entry (r, r + offsets[i]) is diagonals[i, r + offsets[i]], its column), entries a diagonal
    after another, as PyTorch's. A degree matrix: ``spdiags(deg.pow(-0.5).unsqueeze(0), torch.tensor([0]), (n, n))``."""
    _refuse_layout(layout)
    offsets = _index_tensor(offsets)
    if diagonals.ndim == 1 and offsets.ndim == 0:
        diagonals = diagonals.unsqueeze(0)
    offsets = offsets._data.reshape(-1)
    if diagonals.ndim != 2:
        raise RuntimeError(f"Diagonals must be vector or matrix, got a tensor of shape {list(diagonals.shape)}")
    if len(offsets) != diagonals.shape[0]:
        raise RuntimeError(f"Number of diagonals ({diagonals.shape[0]}) does not match the number of offsets "
                           f"({len(offsets)})")
    if len(numpy.unique(offsets)) != len(offsets):
        raise RuntimeError("Offset tensor contains duplicate values")
    rows, columns = (int(size) for size in shape)
    which, at_rows = [], []
    for k, offset in enumerate(offsets.tolist()):
        first, end = max(0, -offset), min(rows, columns - offset, diagonals.shape[1] - offset)
        at_rows.append(numpy.arange(first, max(first, end)))
        which.append(numpy.full(max(0, end - first), k))
    at_rows = numpy.concatenate(at_rows).astype(numpy.int64)
    which = numpy.concatenate(which).astype(numpy.int64)
    at_columns = at_rows + offsets[which]
    values = diagonals[tensor_from(which), tensor_from(at_columns)]
    return SparseTensor(tensor_from(numpy.stack([at_rows, at_columns])), values, (rows, columns))


class check_sparse_tensor_invariants:
    """PyTorch's switch (and context manager, and decorator) for checking a sparse tensor's indices when it is
    made. chainrule checks them always (see ``sparse_coo_tensor``); the switch is kept so that programs that turn
    it on run, and ``is_enabled()`` says what they set (off by default, as PyTorch's)."""

    _enabled = False

    @staticmethod
    def is_enabled():
        return check_sparse_tensor_invariants._enabled

    @staticmethod
    def enable():
        check_sparse_tensor_invariants._enabled = True

    @staticmethod
    def disable():
        check_sparse_tensor_invariants._enabled = False

    def __init__(self, enable=True):
        self.state, self.saved_state = enable, None

    def __enter__(self):
        if self.saved_state is not None:
            raise RuntimeError("This context manager instance is already activated. Use a different context "
                               "manager instance for context nesting.")
        self.saved_state = self.is_enabled()
        check_sparse_tensor_invariants._enabled = self.state

    def __exit__(self, *exc):
        check_sparse_tensor_invariants._enabled = self.saved_state
        self.saved_state = None

    def __call__(self, function):
        import functools

        @functools.wraps(function)
        def checked(*args, **kwargs):
            with check_sparse_tensor_invariants(self.state):
                return function(*args, **kwargs)

        return checked


def legacy_constructor(dtype):
    """``torch.sparse.FloatTensor(indices, values, size)`` and its kin (pygcn's): a sparse tensor of ``dtype``;
    ``FloatTensor(*sizes)`` an empty one."""

    def construct(*args, size=None):
        if args and isinstance(args[0], (Tensor, list, numpy.ndarray)) and len(args) >= 2:
            indices, values, *rest = args
            size = rest[0] if rest else size
            warnings.warn("torch.sparse.SparseTensor(indices, values, shape, *, device=) is deprecated.  Please use "
                          "torch.sparse_coo_tensor(indices, values, shape, dtype=, device=).", UserWarning,
                          stacklevel=program_stacklevel())
            return sparse_coo_tensor(indices, values, size, dtype=dtype)
        sizes = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        sizes = tuple(sizes or size or ())
        values = tensor_from(numpy.zeros((0,), dtype=dtype))
        return SparseTensor(tensor_from(numpy.zeros((len(sizes), 0), dtype=numpy.int64)), values, sizes, True)

    return construct
