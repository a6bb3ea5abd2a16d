"""Sparse tensors in PyTorch's COO layout: the nonzero entries of a big, mostly empty tensor, as
the positions where they are (``indices``) and what is there (``values``).

A graph with n nodes and E edges is an adjacency matrix A (n x n) with E nonzeros. A graph
convolution (Kipf and Welling's, the pygcn program) computes Â H W, where the product with the
sparse Â costs one multiply-add per edge instead of n² of them:

    (A X)[i] = Σ_{k : (i, k) ∈ indices} A[i, k] X[k]

A sparse tensor here keeps its ``values`` as an ordinary Tensor of the graph, so every
operation below is written with dense ops on the values (``index_add``, ``index_select``,
``index_put``) and gradients flow without a backward of its own:

    dL/dvalues[e] = dL/dY[i_e] · X[k_e]          dL/dX[k] = Σ_{e : k_e = k} values[e] dL/dY[i_e]

which is what ``index_add``'s and ``index_select``'s derivatives give. A sparse leaf's ``.grad``
is the sparse tensor of dL/dvalues at its own indices (PyTorch's is that too).

Uncoalesced tensors may repeat an index; their entries add (``to_dense``, products and sums
read them so). ``coalesce()`` sorts the indices and sums repeats. Ops that are not linear
in the values (``sqrt``, ``softmax``) coalesce first, as PyTorch's do.

Dense ops given a sparse tensor raise PyTorch's NotImplementedError for the sparse backend,
except for ``+`` and ``*`` with a dense tensor, which give a dense sum or a sparse product.
"""

import math

import numpy

from .. import backend
from ..constants import sparse_coo
from ..primitive import named_node
from ..size import Size
from ..tensor import Tensor, tensor_from
from .arithmetic import SparseArithmetic
from .merging import linear_positions


def _index_tensor(indices):
    """The indices as an int64 tensor (lists, arrays, int32 and float tensors are converted, as PyTorch's)."""
    indices = indices.detach() if isinstance(indices, Tensor) else tensor_from(indices)
    if indices.dtype != backend.int64:
        indices = indices.to(backend.int64)
    return indices


def sparse_coo_tensor(indices=None, values=None, size=None, *, dtype=None, device=None, pin_memory=False,
                      requires_grad=False, check_invariants=None, is_coalesced=None):
    """A sparse COO tensor with ``values[e]`` at position ``indices[:, e]`` (``torch.sparse_coo_tensor``); given only
    a size (``sparse_coo_tensor((2, 3))`` or ``size=``), the empty one of that size (``zeros(size, layout=...)``).

    indices: (sparse_dim, nnz) integers; values: (nnz, *dense_sizes). ``size`` defaults to one past the largest
    index in each sparse dim, followed by the values' own sizes. The indices are always checked against ``size``
    (PyTorch checks only with ``check_invariants=True``, and reads past its memory otherwise)."""
    from ..device import resolve

    resolve(device)
    if values is None:
        return empty_sparse(indices if size is None else size, dtype=dtype, requires_grad=requires_grad)
    indices = _index_tensor(indices)
    if isinstance(values, Tensor):
        values = values if dtype is None or values.dtype == dtype else values.to(dtype)
    else:
        values = tensor_from(values, dtype)
    if indices.ndim != 2:
        raise RuntimeError(f"indices must be sparse_dim x nnz, but got: {list(indices.shape)}")
    sparse_dim = indices.shape[0]
    positions = indices._data
    if size is None:
        sparse_sizes = tuple(int(row.max()) + 1 if row.size else 0 for row in positions)
        size = sparse_sizes + tuple(values.shape[1:])
    size = Size(size)
    if len(size) != sparse_dim + values.ndim - 1:
        raise RuntimeError(f"'len(size) == sparse_dim + dense_dim' is not satisfied: len(size) = {len(size)}, "
                           f"sparse_dim = {sparse_dim}, dense_dim = {values.ndim - 1}")
    if indices.shape[1] != values.shape[0]:  # (checked after the number of dims, as PyTorch's)
        raise RuntimeError(f"indices and values must have same nnz, but got nnz from indices: {indices.shape[1]}, "
                           f"nnz from values: {values.shape[0]}")
    if tuple(size[sparse_dim:]) != tuple(values.shape[1:]):
        raise RuntimeError(f"values has incorrect size, expected {[values.shape[0], *size[sparse_dim:]]}, got "
                           f"{list(values.shape)}")
    if positions.size:
        for dim, row in enumerate(positions):
            lowest, highest = int(row.min()), int(row.max())
            if lowest < 0:
                raise RuntimeError(f"found negative index {lowest} for dim {dim}")
            if highest >= size[dim]:
                raise RuntimeError(f"size is inconsistent with indices: for dim {dim}, size is {size[dim]} but "
                                   f"found index {highest}")
    if requires_grad:  # a leaf: its .grad is dL/dvalues at these indices, or dense (see SparseTensor.grad)
        values = values.detach().requires_grad_()
    elif values.requires_grad:  # made from values of a graph: not a leaf, gradients flow back to them
        values = named_node(values.view(values.shape), None, "SparseCooTensorWithDimsAndTensorsBackward0")
    coalesced = values.shape[0] <= 1 if is_coalesced is None else bool(is_coalesced)
    if coalesced and values.shape[0] > 1:  # a claim (a file's too) the ops rely on: checked, not trusted
        order = linear_positions(backend.to_numpy(positions), tuple(size[:sparse_dim]))
        if not (order[1:] > order[:-1]).all():
            raise RuntimeError("is_coalesced=True, but the indices are not sorted and unique (a coalesced tensor's "
                               f"are); leave it out or call .coalesce() (indices of shape {list(indices.shape)})")
    made = SparseTensor(indices, values, size, coalesced)
    made._gradient_leaf = requires_grad
    return made


def empty_sparse(size, sparse_dim=None, *, dtype=None, requires_grad=False):
    """The sparse tensor of ``size`` with no entries (nnz 0), its first ``sparse_dim`` dims sparse (all by default):
    PyTorch's ``zeros(size, layout=sparse_coo)``, ``zeros_like(sparse)``."""
    from ..factories import zeros

    size = Size(size)
    sparse_dim = len(size) if sparse_dim is None else sparse_dim
    indices = zeros((sparse_dim, 0), dtype=backend.int64)
    values = zeros((0,) + tuple(size[sparse_dim:]), dtype=dtype, requires_grad=requires_grad)
    return SparseTensor(indices, values, size, True)


class SparseBasics:
    """What a sparse tensor (a COO tensor, a CSR matrix) answers of itself: its shape, read off its ``_size``, and
    its dtype, device, entry count and whether it requires grad, read off its values tensor."""

    @property
    def shape(self):
        return self._size

    def size(self, dim=None):
        return self._size if dim is None else self._size[dim]

    def dim(self):
        return len(self._size)

    ndim = property(dim)

    @property
    def dtype(self):
        return self._values_tensor.dtype

    @property
    def device(self):
        return self._values_tensor.device

    @property
    def requires_grad(self):
        return self._values_tensor.requires_grad

    def _nnz(self):
        return self._values_tensor.shape[0]


class SparseTensor(SparseBasics, SparseArithmetic):
    """A sparse COO tensor (PyTorch's ``layout=torch.sparse_coo``). Made by ``autograd.sparse_coo_tensor``,
    ``dense.to_sparse()`` or the legacy ``autograd.sparse.FloatTensor(indices, values, size)``."""

    is_sparse = True
    is_sparse_csr = False
    layout = sparse_coo
    __array_priority__ = 2000  # ndarray op sparse calls the sparse tensor's reflected operator
    # the whole dense gradient of torch.mm and kin (dense_gradient.py): a function giving the dense tensor that
    # stands in for this one, where it was made from one (W.to_sparse(), S.t()); whether it is a leaf that takes
    # that gradient itself, and the dense tensor holding it
    _dense_origin = None
    _gradient_leaf = False
    _gradient_holder = None

    def __init__(self, indices, values, size, coalesced=False):
        self._indices_tensor, self._values_tensor = indices, values
        self._size, self._coalesced = Size(size), coalesced

    # -- what it is ----------------------------------------------------------------------------------------

    def numel(self):
        return math.prod(self._size)

    def __len__(self):
        if not self._size:
            raise TypeError("len() of a 0-d tensor")
        return self._size[0]

    is_cuda = property(lambda self: self._values_tensor.is_cuda)

    def sparse_dim(self):
        return self._indices_tensor.shape[0]

    def dense_dim(self):
        return self._values_tensor.ndim - 1

    def is_coalesced(self):
        return self._coalesced

    def _indices(self):
        return self._indices_tensor

    def _values(self):
        return self._values_tensor.detach()

    def indices(self):
        self._refuse_uncoalesced("indices")
        return self._indices_tensor

    def values(self):
        """The values, differentiable (as PyTorch's, for a coalesced tensor only)."""
        self._refuse_uncoalesced("values")
        return self._values_tensor

    def _refuse_uncoalesced(self, what):
        if not self._coalesced:
            raise RuntimeError(f"Cannot get {what} on an uncoalesced tensor, please call .coalesce() first")

    # -- the graph: a sparse tensor's gradient lives on its values ------------------------------------------

    def requires_grad_(self, requires_grad=True):
        self._values_tensor.requires_grad_(requires_grad)
        self._gradient_leaf = bool(requires_grad) and self._values_tensor.is_leaf
        return self

    @property
    def is_leaf(self):
        return self._values_tensor.is_leaf

    @property
    def grad_fn(self):
        return self._values_tensor.grad_fn

    @property
    def grad(self):
        """dL/dself of a sparse leaf, as PyTorch's: dL/dA (A the dense tensor it stands for) at the positions it
        has, coalesced, from the ops on its values (torch.sparse.mm); dense, all of dL/dA, once a dense-facing op
        (torch.mm, @, S.sum()) has given it a gradient (dense_gradient.py); None before backward. Each entry's
        dL/dvalues[e] is dL/dA at its position, so an index given twice has the same gradient twice: the first is
        taken. The gradient of a leaf not flagged coalesced has sorted unique indices but is not flagged either
        (is_coalesced() False, as PyTorch's)."""
        return self._gradient_from(self._values_tensor.grad,
                                   None if self._gradient_holder is None else self._gradient_holder.grad)

    def _gradient_sources(self):
        """The tensors in the graph whose gradients make dL/dself (what autograd.grad captures for it): its
        values, and the holder of the whole gradient once a dense-facing op has given it one."""
        return (self._values_tensor,) if self._gradient_holder is None else (self._values_tensor,
                                                                             self._gradient_holder)

    def _gradient_from(self, values_grad, whole=None):
        """dL/dself from dL/dvalues and the whole dense gradient (either may be None), as .grad reads it."""
        at_entries = self._gradient_at_entries(values_grad)
        if whole is None or at_entries is None:
            return at_entries if whole is None else whole
        return whole + at_entries.to_dense()

    def _gradient_at_entries(self, grad):
        if grad is None or self._coalesced:
            return None if grad is None else SparseTensor(self._indices_tensor, grad, self._size, True)
        indices, first = self._coalesced_positions(return_index=True)  # (unflagged, as PyTorch's of such a leaf)
        return SparseTensor(indices, grad.index_select(0, tensor_from(first)), self._size, False)

    def _coalesced_positions(self, return_index=False):
        """The sorted unique indices, and for each entry which of them it is (or, with ``return_index``, for
        each unique index its first entry)."""
        positions = self._indices_tensor._data
        sparse_sizes = tuple(self._size[:self.sparse_dim()])
        unique, first, inverse = numpy.unique(linear_positions(positions, sparse_sizes), return_index=True,
                                              return_inverse=True)
        indices = tensor_from(numpy.stack(numpy.unravel_index(unique, sparse_sizes)).astype(numpy.int64).reshape(
            len(sparse_sizes), len(unique)))
        which = first if return_index else inverse
        return indices, which.reshape(-1).astype(numpy.int64)

    @grad.setter
    def grad(self, value):
        if value is not None:
            raise RuntimeError("a sparse tensor's grad can only be set to None here")
        self._values_tensor.grad = None
        if self._gradient_holder is not None:
            self._gradient_holder.grad = None

    def zero_(self):
        """No entries left (PyTorch's zero_ of a sparse tensor: nnz 0), in place: what zero_grad(set_to_none=False)
        does to a sparse .grad."""
        self._indices_tensor = self._indices_tensor[:, :0]
        self._values_tensor = self._values_tensor.detach()[:0]
        self._coalesced = True
        return self

    def detach_(self):
        self._values_tensor = self._values_tensor.detach()
        return self

    @property
    def _version_cell(self):
        """Its values' version counter: an in-place change of the values is one of the tensor (what a custom
        Function that saved it checks, pyGAT's SpecialSpmmFunction)."""
        return self._values_tensor._version_cell

    @property
    def data(self):
        """The same tensor outside the graph (old programs' ``p.data.add_(-lr, p.grad.data)``)."""
        return self.detach()

    def detach(self):
        return SparseTensor(self._indices_tensor, self._values_tensor.detach(), self._size, self._coalesced)

    def clone(self):
        return SparseTensor(self._indices_tensor.clone(), self._values_tensor.clone(), self._size, self._coalesced)

    def _with_values(self, values, coalesced=None):
        """The same positions holding ``values``."""
        return SparseTensor(self._indices_tensor, values, self._size,
                            self._coalesced if coalesced is None else coalesced)

    # -- conversions -----------------------------------------------------------------------------------------

    def to(self, *args, **kwargs):
        """Another dtype (the device stays the one tensors live on), as ``Tensor.to``."""
        values = self._values_tensor.to(*args, **kwargs)
        return self if values is self._values_tensor else self._with_values(values)

    def type(self, dtype=None):
        """With no dtype, PyTorch's type name ('torch.sparse.FloatTensor'); otherwise another dtype."""
        if dtype is None:
            from ..ops.conversion import type_name

            return f"torch.sparse.{type_name(self.dtype)}Tensor"
        return self.to(dtype)

    def float(self):
        return self.to(backend.float32)

    def double(self):
        return self.to(backend.float64)

    def half(self):
        return self.to(backend.float16)

    def long(self):
        return self.to(backend.int64)

    def int(self):
        return self.to(backend.int32)

    def cpu(self):
        return self._with_values(self._values_tensor.cpu())

    def cuda(self, *args, **kwargs):
        return self._with_values(self._values_tensor.cuda(*args, **kwargs))

    def to_sparse(self, sparse_dim=None, *, layout=None):
        _refuse_layout(layout)
        if sparse_dim is not None and sparse_dim != self.sparse_dim():
            raise RuntimeError(f"to_sparse: sparse_dim argument must match the sparse_dim of the input "
                               f"({sparse_dim} vs {self.sparse_dim()}) for a sparse tensor")
        return self

    to_sparse_coo = to_sparse

    def _positions(self):
        """The indices as a tuple of index tensors, one per sparse dim (what ``x[positions]`` reads)."""
        return tuple(self._indices_tensor.unbind(0))

    def to_dense(self, dtype=None, *, masked_grad=None):
        """The dense tensor: zeros, plus each value at its position (repeated positions add)."""
        values = self._values_tensor if dtype is None else self._values_tensor.to(dtype)
        dense = values.new_zeros(tuple(self._size))
        return named_node(dense.index_put(self._positions(), values, accumulate=True), None, "ToDenseBackward0")

    def coalesce(self):
        """The same tensor with its indices sorted (row-major) and repeated positions summed into one entry."""
        if self._coalesced:
            return self
        indices, inverse = self._coalesced_positions()
        values = self._values_tensor
        summed = values.new_zeros((indices.shape[1],) + tuple(values.shape[1:])).index_add(
            0, tensor_from(inverse), values)
        summed = named_node(summed, None, "CoalesceBackward0")
        return SparseTensor(indices, summed, self._size, True)

    def select(self, dim, index):
        """The entries at ``index`` along sparse dim ``dim``, without that dim (a sparse tensor; a dense one
        once no sparse dim is left)."""
        dim = dim % self.dim()
        if dim >= self.sparse_dim():  # a dense dim: each value's slice, at the same positions
            return SparseTensor(self._indices_tensor, self._values_tensor.select(dim - self.sparse_dim() + 1, index),
                                self._size[:dim] + self._size[dim + 1:], self._coalesced)
        if not -self._size[dim] <= index < self._size[dim]:
            raise IndexError(f"select(): index {index} out of range for tensor of size {list(self._size)} at "
                             f"dimension {dim}")
        index %= self._size[dim]
        chosen = tensor_from(numpy.flatnonzero(self._indices_tensor._data[dim] == index))
        values = self._values_tensor.index_select(0, chosen)
        kept = [d for d in range(self.sparse_dim()) if d != dim]
        size = [s for d, s in enumerate(self._size) if d != dim]
        if not kept:
            return values.sum(0)
        return SparseTensor(self._indices_tensor[kept].index_select(1, chosen), values, size, self._coalesced)

    def index_select(self, dim, index):
        """The slices at ``index`` along sparse dim ``dim``, in the order given (repeats repeated), as PyTorch's: for
        each position of ``index`` the entries there, in their own order (uncoalesced). A minibatch of a graph's
        rows: ``adj.index_select(0, batch)``."""
        dim = dim % self.dim()
        index = _index_tensor(index)
        if dim >= self.sparse_dim():  # a dense dim: each value's slices, at the same positions
            values = self._values_tensor.index_select(dim - self.sparse_dim() + 1, index)
            size = self._size[:dim] + (index.numel(),) + self._size[dim + 1:]
            return SparseTensor(self._indices_tensor, values, size, self._coalesced)
        if index.ndim > 1:
            raise IndexError("index_select() argument index must be 1-D strided (non-sparse) long-tensor.")
        wanted = index._data.reshape(-1)
        if wanted.size and (wanted.max() >= self._size[dim] or wanted.min() < -self._size[dim]):
            bad = int(wanted.max() if wanted.max() >= self._size[dim] else wanted.min())
            raise IndexError(f"index_select(): index contains {bad} that is out of range for tensor of size "
                             f"{list(self._size)} at dimension {dim}")
        wanted = backend.to_numpy(wanted % self._size[dim] if wanted.size else wanted)
        along = backend.to_numpy(self._indices_tensor._data[dim])  # (NumPy's: CuPy repeats by no array of its own)
        grouped = numpy.argsort(along, kind="stable")  # the entries at each position, in their own order
        starts = numpy.searchsorted(along[grouped], wanted, side="left")
        counts = numpy.searchsorted(along[grouped], wanted, side="right") - starts
        slot = numpy.repeat(numpy.arange(len(wanted)), counts)
        first = numpy.repeat(numpy.cumsum(counts) - counts, counts)
        taken = backend.xp.asarray(grouped[numpy.repeat(starts, counts) + numpy.arange(len(slot)) - first],
                                   dtype=numpy.int64)
        indices = self._indices_tensor._data[:, taken].copy()
        indices[dim] = backend.xp.asarray(slot)
        size = list(self._size)
        size[dim] = len(wanted)
        return SparseTensor(tensor_from(indices), self._values_tensor.index_select(0, tensor_from(taken)), size,
                            coalesced=not len(taken))

    def __getitem__(self, index):
        if isinstance(index, int):
            return self.select(0, index)
        raise NotImplementedError(f"indexing a sparse tensor with {index!r} is not built here (an int selects "
                                  f"along dim 0); call .to_dense() first")

    # (the products, mm and @, are bound by autograd.sparse.products; the sums and softmaxes by .reductions)

    def t(self):
        if self.sparse_dim() > 2 or self.dim() > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 sparse and 0 dense dimensions, but got "
                               f"{self.sparse_dim()} sparse and {self.dense_dim()} dense dimensions")
        return self if self.dim() < 2 else self.transpose(0, 1)

    def transpose(self, dim0, dim1):
        n = self.sparse_dim()
        dim0, dim1 = dim0 % self.dim(), dim1 % self.dim()
        if dim0 >= n or dim1 >= n:
            raise RuntimeError(f"sparse transpose: transposed dimensions must be sparse Got sparse_dim: {n}, d0: "
                               f"{dim0}, d1: {dim1}")
        order = list(range(n))
        order[dim0], order[dim1] = order[dim1], order[dim0]
        size = list(self._size)
        size[dim0], size[dim1] = size[dim1], size[dim0]
        return SparseTensor(self._indices_tensor[order], self._values_tensor, size, dim0 == dim1 and self._coalesced)

    def mv(self, vec):
        """sparse matrix @ vector (``torch.mv``)."""
        if vec.ndim != 1:
            raise RuntimeError(f"vector + matrix @ vector expected, got 2, 2, {vec.ndim}")
        return self.mm(vec)

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """The norm of every entry (a dense 0-d tensor, PyTorch's norm_sparse: of the coalesced values, the
        missing entries being 0)."""
        if dim is not None and sorted(d % self.dim() for d in ((dim,) if isinstance(dim, int) else dim)) != \
                list(range(self.dim())):
            raise RuntimeError("norm_sparse currently only supports full reductions, so 'dim' must either be empty "
                               "or contain all dimensions of the input")
        values = self.coalesce()._values_tensor
        return values.norm(2 if p == "fro" else p, dtype=dtype)

    # -- functions with f(0) = 0, applied to the values (PyTorch's sparse kernels; repeated positions summed first,
    # as f(a) + f(b) is not f(a + b)) ------------------------------------------------------------------------------

    def _zero_preserving(name, linear=False):
        def op(self, *args, **kwargs):
            source = self if linear else self.coalesce()
            return source._with_values(getattr(source._values_tensor, name)(*args, **kwargs))

        op.__name__ = op.__qualname__ = name
        op.__doc__ = f"``{name}`` of each value (the missing entries stay 0, as {name}(0) = 0)."
        return op

    for _name in ("abs", "sqrt", "square", "sin", "sinh", "tan", "tanh", "asin", "asinh", "atan", "atanh", "relu",
                  "sign", "sgn", "expm1", "log1p", "erf", "erfinv", "trunc", "floor", "ceil", "round", "frac",
                  "signbit", "isnan", "isinf", "isposinf", "isneginf", "nan_to_num"):
        locals()[_name] = _zero_preserving(_name)
    deg2rad, rad2deg = _zero_preserving("deg2rad", True), _zero_preserving("rad2deg", True)
    del _name, _zero_preserving

    # -- what PyTorch has no sparse kernel for ---------------------------------------------------------------

    def __getattr__(self, name):
        if name.startswith("__") or not hasattr(Tensor, name):
            raise AttributeError(f"'SparseTensor' object has no attribute {name!r}")
        raise NotImplementedError(f"Could not run 'aten::{name}' with arguments from the 'SparseCPU' backend: "
                                  f"{name} is not defined for sparse tensors (a tensor of layout torch.sparse_coo, "
                                  f"size {tuple(self._size)}); call .to_dense() first")

    def numpy(self, *, force=False):
        raise TypeError("can't convert Sparse layout tensor to numpy. Use Tensor.to_dense() first.")

    def __dlpack__(self, **kwargs):
        raise BufferError("Can't export tensors with layout other than torch.strided")

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False, layout=None, pin_memory=False):
        """The sparse tensor of ``size`` with no entries, in its dtype (PyTorch's new_zeros keeps the layout)."""
        from ..size import sizes_argument

        return empty_sparse(sizes_argument(size), dtype=dtype or self.dtype, requires_grad=requires_grad)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"a sparse tensor (size {tuple(self._size)}, nnz {self._nnz()}) has no dense array; call "
                        f".to_dense() first")

    def __bool__(self):
        raise RuntimeError("the truth value of a sparse tensor is not defined")

    def __repr__(self):
        from ..printing import sparse_repr

        return sparse_repr(self)


def _refuse_layout(layout):
    if layout is not None and layout is not sparse_coo:
        raise NotImplementedError(f"to_sparse: layout {layout} is not built here (only torch.sparse_coo)")
