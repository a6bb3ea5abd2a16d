"""A sparse tensor's arithmetic, as PyTorch's sparse kernels: times a number or a tensor (sparse where either
factor is zero), division by a number (rounded ones coalesce first), the sum of two sparse tensors of one shape in
PyTorch's order of entries, powers, negation, and their in-place forms, which the same object holds (pygcn-style
``adj.mul_(scale)``). A mixin of ``SparseTensor`` (coo.py): results are made as ``type(self)``."""

import numpy

from ..graph import is_grad_enabled
from ..operands import refuse_broadcast_with_sparse
from ..tensor import Tensor, tensor_from
from .merging import _merge_walk


class SparseArithmetic:
    """The arithmetic of ``SparseTensor`` (its indices, values, size and ``_with_values``)."""

    def __mul__(self, other):
        """sparse × number (or 0-d tensor): the values scaled; × a dense tensor of its shape or another sparse
        tensor: sparse, nonzero only where both are (a dense one may broadcast to its shape: a row of column
        scales)."""
        if isinstance(other, SparseArithmetic):
            _refuse_other_shape(self, other, "mul")
            return (self.to_dense() * other.to_dense()).to_sparse(self.sparse_dim())
        if isinstance(other, Tensor) and other.ndim > 0:
            if tuple(other.shape) != tuple(self._size):  # a dense factor that broadcasts to the sparse one's shape
                if _broadcast(other.shape, self._size) != tuple(self._size):
                    _refuse_other_shape(self, other, "mul")
                other = other.expand(tuple(self._size))
            return self._with_values(self._values_tensor * other[self._positions()])
        return self._with_values(self._values_tensor * other)

    __rmul__ = mul = __mul__

    def div(self, other, *, rounding_mode=None):
        """sparse / number (or 0-d tensor). Rounded (``//``, ``rounding_mode``), it is not linear in the values: the
        repeated entries are summed first (coalesced), as PyTorch's."""
        if isinstance(other, (SparseArithmetic, Tensor)) and getattr(other, "ndim", 0) > 0:
            raise RuntimeError(f"Sparse division requires a scalar or zero-dim dense tensor divisor (got shape "
                               f"{list(other.shape)} for divisor)")
        if rounding_mode is None:
            return self._with_values(self._values_tensor / other)
        coalesced = self.coalesce()
        return coalesced._with_values(coalesced._values_tensor.div(other, rounding_mode=rounding_mode))

    __truediv__ = div

    def __floordiv__(self, other):
        return self.div(other, rounding_mode="floor")

    def _coalesced_(self, coalesced):
        """Marks it coalesced or not, unchecked (PyTorch's private setter, which its tests use)."""
        self._coalesced = bool(coalesced)
        return self

    def is_same_size(self, other):
        return tuple(self.shape) == tuple(other.shape)

    def __neg__(self):
        return self._with_values(-self._values_tensor)

    neg = __neg__

    def __add__(self, other, *, alpha=1):
        """sparse + sparse (of one shape), PyTorch's entries: both lists walked side by side as if sorted (see
        ``_merge_walk``), so two coalesced tensors give their coalesced sum and uncoalesced ones the entries PyTorch's
        has (an embedding's sparse gradients summed over lookups, or over backward calls, keep its nnz and order);
        sparse + dense raises, as PyTorch's (dense + sparse is dense)."""
        if isinstance(other, SparseArithmetic):
            _refuse_other_shape(self, other, "add")
            common = _result_type(self._values_tensor, other._values_tensor)
            if self.dtype != common:  # (float32 + float64 entries: float64, as PyTorch's promotion)
                return self.to(common).__add__(other, alpha=alpha)
            other_values = other._values_tensor if other.dtype == common else other._values_tensor.to(common)
            other_values = other_values if alpha == 1 else other_values * alpha
            if other._nnz() == 0:
                return self._with_values(self._values_tensor.clone())
            if self._nnz() == 0:
                return other._with_values(other_values if alpha != 1 else other_values.clone())
            if self._coalesced and other._coalesced:  # (the walk of two sorted lists: their sorted union)
                indices = tensor_from(numpy.concatenate([self._indices_tensor._data, other._indices_tensor._data], 1))
                return type(self)(indices, _cat_values(self._values_tensor, other_values), self._size).coalesce()
            indices, own_slots, other_slots = _merge_walk(self, other)
            values = self._values_tensor.new_zeros((indices.shape[1],) + tuple(self._values_tensor.shape[1:]))
            values = values.index_add(0, own_slots, self._values_tensor).index_add(0, other_slots, other_values)
            return type(self)(indices, values, self._size)
        raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")

    add = __add__

    def __radd__(self, other):
        if not isinstance(other, Tensor):  # number + sparse: PyTorch's add(sparse, number)
            raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")
        refuse_broadcast_with_sparse(other, self)
        return other + self.to_dense()

    def __sub__(self, other):
        return self.__add__(other, alpha=-1)

    sub = __sub__

    def __rsub__(self, other):
        refuse_broadcast_with_sparse(_dense(other), self)  # (a number is a tensor of size [] here, as PyTorch's)
        return _dense(other) - self.to_dense()

    def __pow__(self, exponent):
        return self.pow(exponent)

    def pow(self, exponent):
        if isinstance(exponent, (int, float)) and exponent == 0:
            raise RuntimeError("pow: cannot raise to zeroth power on sparse tensor; it would make the result tensor "
                               "dense")
        if not isinstance(exponent, (int, float)) or exponent < 0:
            raise RuntimeError(f"pow: a sparse tensor is raised only to a positive number (0 ** {exponent} is not "
                               f"0), got {exponent!r}")
        coalesced = self.coalesce()
        return coalesced._with_values(coalesced._values_tensor ** exponent)

    # -- in place: the same object holds the result (pygcn-style ``adj.mul_(scale)``) -------------------------

    def _assign(self, result):
        leaf = self._values_tensor.is_leaf and self._values_tensor.requires_grad
        if leaf and is_grad_enabled():
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        # (a leaf changed under no_grad, an optimizer's step: still the leaf, its values a new leaf)
        values = result._values_tensor.detach().requires_grad_() if leaf else result._values_tensor
        self._indices_tensor, self._values_tensor = result._indices_tensor, values
        self._coalesced = result._coalesced
        return self

    def add_(self, other, *, alpha=1):
        return self._assign(self.__add__(other, alpha=alpha))

    def sub_(self, other, *, alpha=1):
        return self._assign(self.__add__(other, alpha=-alpha))

    def mul_(self, other):
        return self._assign(self.__mul__(other))

    def div_(self, other):
        return self._assign(self.__truediv__(other))

    def neg_(self):
        return self._assign(self.__neg__())

    def copy_(self, src, non_blocking=False):
        """self takes src's entries (another sparse tensor), in self's dtype, as PyTorch's copy_ between sparse
        tensors (a sparse buffer loaded from a state dict)."""
        if not isinstance(src, SparseArithmetic):
            raise RuntimeError("copy_() between dense and sparse Tensors is not implemented! Found self type = "
                               f"sparse tensor of size {list(self._size)} and src type = dense tensor of size "
                               f"{list(src.shape)}")
        self._indices_tensor = src._indices_tensor.clone()
        self._values_tensor = src._values_tensor.detach().to(self.dtype).clone()
        self._size, self._coalesced = src._size, src._coalesced
        return self


def _broadcast(*shapes):
    """The shape ``shapes`` broadcast to, or None where they do not."""
    try:
        return numpy.broadcast_shapes(*(tuple(shape) for shape in shapes))
    except ValueError:
        return None


def _result_type(a, b):
    from ..ops.promotion import promoted_dtype

    return promoted_dtype(a, b)


def _cat_values(a, b):
    return _cat_all([a, b])


def _cat_all(values):
    from ..ops.joins import cat

    return cat(values, 0)


def _refuse_other_shape(a, b, op):
    if tuple(a.shape) != tuple(b.shape):
        if op == "add":
            raise RuntimeError(f"add: expected sizes of 'self' and 'other' to match, but {list(a.shape)} != "
                               f"{list(b.shape)}")
        raise RuntimeError(f"{op}: expected sizes to match, but got {list(a.shape)} (sparse) and {list(b.shape)}")


def _dense(other):
    return other if isinstance(other, Tensor) else tensor_from(other)
