"""The whole gradient PyTorch's dense-facing ops pass to a sparse tensor.

``torch.mm``, ``@``, ``torch.matmul``, ``torch.spmm``, ``torch.addmm``, ``S.mm``, ``mv`` and ``S.sum()`` differentiate
a sparse factor S as the dense matrix A it stands for:

    Y = A X,   dL/dA = dL/dY Xᵀ

which is dense: nonzero where S has no entry. PyTorch passes it back whole: into a sparse leaf's ``.grad`` (then a
dense tensor), through ``t``, ``coalesce``, scaling by a number and by a dense tensor, and to the dense tensor S was
made from (``W.to_sparse()``: all of dL/dW, not only where W is nonzero). ``torch.sparse.mm``, ``torch.sparse.addmm``
and ``torch.sparse.sum`` give the masked gradient at S's entries instead, and so does a sparse tensor made from values
(``sparse_coo_tensor(indices, values)``: PyTorch gathers dL/dA at the indices for the values), which is what the
ops on the values here compute.

So such a sparse tensor has a *dense stand-in*: a dense tensor in the graph equal to A, recorded on the tensor
the whole gradient goes to (``DenseStandIn``), and the dense-facing ops are the dense ops on it. A sparse tensor
without one (no gradient wanted, or made from values) takes the sparse path, whose gradient is PyTorch's there.
"""

from ..backend import xp
from ..graph import modes
from ..ops.linalg import matmul
from ..primitive import Primitive
from ..tensor import Tensor
from . import reductions  # noqa: F401  (binds SparseTensor.sum, which S.sum(dim) still is)
from .coo import SparseTensor
from .products import dense_factor, mm


class DenseStandIn(Primitive):
    """Y = A, the dense array a sparse tensor stands for (a parameter of the op), recorded on ``source``:

        dL/dsource = dL/dY   (whole, dense)

    ``source`` is the dense tensor the sparse one was made from, or a sparse leaf's gradient holder; its own
    values are not read (W changed in place after ``W.to_sparse()`` leaves the sparse tensor as it was)."""

    saves_inputs = False

    def forward(self, source):
        return self.dense

    def backward(self, grad, y, source):
        return (grad,)


def dense_stand_in(sparse):
    """The dense tensor in the graph that the dense-facing ops differentiate ``sparse`` as, or None where the
    values' own gradient is PyTorch's (no gradient wanted, or a sparse tensor made from values)."""
    if not modes.grad_enabled or not sparse.requires_grad:
        return None
    if sparse._dense_origin is not None:
        return sparse._dense_origin()
    if sparse._gradient_leaf:
        return DenseStandIn.apply(_holder(sparse), dense=sparse.to_dense().detach()._data)
    return None


def _holder(leaf):
    """The dense tensor that takes a sparse leaf's whole gradient (its .grad reads it): a leaf of the leaf's shape
    and dtype whose values are never read (all of them one broadcast zero)."""
    if leaf._gradient_holder is None:
        zero = xp.zeros((), dtype=leaf.dtype)
        leaf._gradient_holder = Tensor._make(xp.broadcast_to(zero, tuple(leaf.shape))).requires_grad_()
    return leaf._gradient_holder


def stand_in_of(source, sparse, pytorch_name):
    """The origin of a sparse tensor made from the dense tensor ``source`` (``source.to_sparse()``): its stand-in
    holds the sparse tensor's values and passes the whole gradient to ``source`` (a node named as PyTorch's
    ToSparseBackward). While ``source`` is unchanged its array is the stand-in's (no copy of A is made)."""
    version = source._version

    def origin():
        if source._version == version:
            return DenseStandIn.apply(source, dense=source._data, pytorch_name=pytorch_name)
        return DenseStandIn.apply(source, dense=sparse.to_dense().detach()._data, pytorch_name=pytorch_name)

    return origin


def derived_origin(parent, dense_form):
    """The origin of a sparse tensor that ``dense_form`` of ``parent``'s dense matrix gives (``t``, ``coalesce``,
    scaling by a number), or None where ``parent`` has no stand-in of its own making."""
    if parent._dense_origin is None and not parent._gradient_leaf:
        return None
    return lambda: dense_form(dense_stand_in(parent))


def dense_facing_mm(sparse, other):
    """``torch.mm(S, X)``, ``S @ X``, ``S.mm(X)``, ``torch.spmm``: the product of ``sparse.mm`` (products.py), but
    differentiated as the product of the dense matrix S stands for (see the module's docstring)."""
    stand_in = dense_stand_in(sparse)
    if stand_in is None or not isinstance(other, Tensor) or sparse.sparse_dim() != 2 or sparse.dense_dim() != 0:
        return mm(sparse, other)
    dense_factor(sparse, other)  # (PyTorch's errors for a factor that does not fit)
    return matmul(stand_in, other)


def dense_facing_rmatmul(sparse, other):
    """``X @ S``: dL/dS = Xᵀ dL/dY, whole (see ``dense_facing_mm``)."""
    stand_in = dense_stand_in(sparse)
    if stand_in is None or not isinstance(other, Tensor) or sparse.sparse_dim() != 2 or sparse.dense_dim() != 0:
        return _reflected_mm(sparse, other)
    return matmul(other, stand_in)


def dense_facing_sum(sparse, dim=None, keepdim=False, dtype=None):
    """``S.sum()``, ``torch.sum(S)``: of every entry, dL/dS = dL/dy everywhere (PyTorch's Tensor.sum). With
    ``dim``: torch.sparse.sum's (reductions.py)."""
    stand_in = dense_stand_in(sparse) if dim is None else None
    if stand_in is None:
        return _sparse_sum(sparse, dim, keepdim, dtype)
    return stand_in.sum(dtype=dtype)


def _passing_whole(method, dense_form):
    """``method`` of a sparse tensor, its result standing in as the same op of the parent's stand-in, so that the
    whole gradient goes on through it (PyTorch's t, transpose, coalesce, clone, negation, scaling by a number or a
    dense tensor). ``dense_form(*args, **kwargs)`` is that op as a function of the dense matrix, or None where the
    result takes its values' own gradient (S times a sparse tensor)."""

    def op(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        form = dense_form(*args, **kwargs)
        if form is not None and isinstance(result, SparseTensor) and result is not self:
            result._dense_origin = derived_origin(self, form)
        return result

    op.__name__ = op.__qualname__ = method.__name__
    op.__doc__ = method.__doc__
    return op


def _by_number(scale):
    """The ``dense_form`` of S * c and S / c: ``scale(dense, c)`` where c is a number (a rounded division is no
    scaling, and another tensor factor's gradient goes its own way)."""

    def form(other, rounding_mode=None):
        if isinstance(other, (int, float)) and rounding_mode is None:
            return lambda dense: scale(dense, other)
        return None

    return form


def _times_dense(other):
    """The ``dense_form`` of S * c and S * D for a number or a dense tensor D (broadcast to S's shape): A * D, so that
    a dense-facing op after the product passes dL/dA = dL/dY * D back whole, as PyTorch's mul backward does with the
    dense gradient ``(S * D).sum()`` gives it (``(W.to_sparse() * D).sum()``: dL/dW = D, at W's zeros too). A sparse
    factor's product (sparse, dense there) takes its values' own gradient."""
    if isinstance(other, (int, float, Tensor)):
        return lambda dense: dense * other
    return None


_reflected_mm = SparseTensor.__rmatmul__
_sparse_sum = SparseTensor.sum
SparseTensor.mm = SparseTensor.matmul = SparseTensor.__matmul__ = dense_facing_mm
SparseTensor.__rmatmul__ = dense_facing_rmatmul
SparseTensor.sum = dense_facing_sum
SparseTensor.t = _passing_whole(SparseTensor.t, lambda: lambda dense: dense.t())
SparseTensor.transpose = _passing_whole(SparseTensor.transpose, lambda d0, d1: lambda dense: dense.transpose(d0, d1))
SparseTensor.coalesce = _passing_whole(SparseTensor.coalesce, lambda: lambda dense: dense)
SparseTensor.clone = _passing_whole(SparseTensor.clone, lambda: lambda dense: dense)
SparseTensor.__neg__ = SparseTensor.neg = _passing_whole(SparseTensor.__neg__, lambda: lambda dense: -dense)
SparseTensor.__mul__ = SparseTensor.__rmul__ = SparseTensor.mul = _passing_whole(SparseTensor.__mul__, _times_dense)
SparseTensor.__truediv__ = SparseTensor.div = _passing_whole(SparseTensor.div, _by_number(lambda dense, c: dense / c))
