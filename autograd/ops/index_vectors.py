"""Ops that take vectors of positions: index_select, index_add, index_copy and index_reduce name
slices along a dim by one index vector, take and put name elements of the flattened tensor, and
index_put names elements by a tuple of index vectors (or masks). Each forward beside its local
derivative; index_select and index_add are each other's adjoint, as gather and scatter_add are:

    y = index_select(x, dim, index)          dL/dx = index_add(zeros, dim, index, dL/dy)
    y = index_add(x, dim, index, src, α)     dL/dx = dL/dy,  dL/dsrc = α · index_select(dL/dy, dim, index)
"""

from ..backend import int64, xp
from ..errors import IndexRangeError
from ..index_watching import watches_arguments, watches_index
from ..operands import is_no_number, python_number
from ..primitive import Primitive, node_named
from ..sparse_layout import is_sparse
from ..tensor import Tensor
from ..warn_once import warn_once
from . import elementwise, shape
from .axes import dim_index
from .conversion import refuse_kinds
from .index_errors import index_error_in_pytorch_words, index_tensor_dim, refuse_uint8_mask_fill, warn_uint8_mask
from .indexing import (
    _INT32_OR_64,
    _accumulated,
    _check_bounds,
    _index_array,
    _same_dtype,
    _scatter_reduce,
)
from .names import names
from .outputs import write_out


class IndexSelect(Primitive):
    """y = x with slices index[0], index[1], ... taken along dim;   dL/dx = index_add(0, dim, index, dL/dy)"""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the index: freed after backward, as PyTorch frees it
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        return xp.take(x, self.index, axis=self.dim) if x.ndim else x.copy()  # a scalar's one index is 0

    def backward(self, grad, y, x):
        zeros = Tensor._make(xp.zeros(x.shape, dtype=grad.dtype))
        return (IndexAddAlong.apply(zeros, grad, dim=self.dim, index=self.index, alpha=1, fresh=True),)


class IndexAddAlong(Primitive):
    """y = x, then y[..., index[j], ...] += alpha · src[..., j, ...] along dim;
    dL/dx = dL/dy,   dL/dsrc = alpha · index_select(dL/dy, dim, index)"""

    pytorch_name = "IndexAddBackward0"
    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the index: freed after backward, as PyTorch frees it

    fresh = False  # x is a temporary the op may write into (index_select's backward): no copy
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x, src):
        y = x if self.fresh else x.copy()
        # (PyTorch casts alpha to an integer source's dtype, wrapping around: -1 scales uint8 by 255)
        alpha = xp.asarray(self.alpha).astype(src.dtype) if src.dtype.kind in "iu" else self.alpha
        if x.ndim == 0:
            y[()] += (alpha * src.sum()).astype(y.dtype)
            return y
        position = (slice(None),) * self.dim + (self.index,)
        # (PyTorch's index_add of slices by alpha 1 accumulates float16 in float32; of a vector, or with another
        # alpha, it rounds each step)
        return _accumulated("add", y, position, src if self.alpha == 1 else alpha * src,
                            widen=x.ndim > 1 and self.alpha == 1)

    def backward(self, grad, y, x, src):
        grad_src = None
        if src.requires_grad:
            grad_src = IndexSelect.apply(grad, dim=self.dim, index=self.index)
            if self.alpha != 1:
                grad_src = grad_src * self.alpha
            grad_src = grad_src.reshape(src.shape)
        return (grad if x.requires_grad else None), grad_src


def _vector_index(x, dim, index, op, refusal, dtypes=_INT32_OR_64, error=RuntimeError, wraps=False,
                  in_self=False):
    """(axis, index as an int64 vector) for an op taking one index vector along dim: ``refusal`` and ``error``
    for an index of another dtype than ``dtypes``; negative positions count from the end where the op ``wraps``;
    a position out of range is "index out of range in self" (then which) where PyTorch's kernel says so
    (``in_self``)."""
    axis = dim_index(dim, x.ndim)
    index = _index_array(index, refusal, dtypes, error)
    if index.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector, got shape {tuple(index.shape)}")
    size = x.shape[axis] if x.ndim else 1
    index = index.reshape(-1)
    try:
        if wraps:  # (checked before wrapping, so that the error names the index given: -6, not -1)
            index = xp.where(_check_bounds(index, size, axis, low=-size) < 0, index + size, index)
        return axis, _check_bounds(index, size, axis).astype(int64, copy=False)
    except IndexRangeError as out_of_range:
        if not in_self:
            raise
        raise IndexRangeError(f"index out of range in self: {out_of_range}") from None


@names("index_select")
@watches_index("index", 2)
def index_select(input, dim, index, *, out=None):
    """y = input's slices index[0], index[1], ... along dim (index a vector of ints)."""
    if is_sparse(input):  # (autograd.index_select(sparse, ...): the sparse tensor's own)
        return write_out(input.index_select(dim, index), out)
    axis, index = _vector_index(input, dim, index, "index_select",
                                "index_select(): Expected dtype int32 or int64 for index", in_self=True)
    if input.ndim == 0 and index.size != 1:  # (a scalar's one value: neither repeated nor left out)
        raise RuntimeError(f"index_select(): Index to scalar can have only 1 value, got {index.size} value(s)")
    return write_out(IndexSelect.apply(input, dim=axis, index=index), out)


@names("index_add", inplace="index_add_")
@watches_index("index", 2)
@watches_arguments("source")  # (PyTorch's node saves it too: writing it refuses)
def index_add(input, dim, index, source, *, alpha=1, out=None):
    """y = input, then y[..., index[j], ...] += alpha · source[..., j, ...] (repeats add up)."""
    axis, index = _vector_index(input, dim, index, "index_add",
                                "index_add_(): Expected dtype int32/int64 for index but got: {}",
                                in_self=input.ndim <= 1)  # (PyTorch's kernel for a vector or a scalar)
    _same_dtype(input, source, "index_add_(): self ({}) and source ({}) must have the same scalar type")
    expected = tuple(len(index) if d == axis else n for d, n in enumerate(input.shape))
    if tuple(source.shape) != expected and not (input.ndim == 0 and source.numel() == index.size):
        raise RuntimeError(f"index_add(): source tensor shape must match self tensor shape, excluding the specified "
                           f"dimension. Got self.shape = {list(input.shape)} source.shape = {list(source.shape)} "
                           f"({len(index)} indices along dim {axis} need source of shape {list(expected)})")
    if isinstance(alpha, Tensor):  # a one-element tensor is read as the number it holds, as PyTorch's Scalar
        alpha = alpha.item()
    return write_out(IndexAddAlong.apply(input, source, dim=axis, index=index, alpha=python_number(alpha)), out)


@names("index_reduce", inplace="index_reduce_")
@watches_index("index", 2)
def index_reduce(input, dim, index, source, reduce, *, include_self=True, out=None):
    """y = input with each slice source[..., j, ...] reduced ('prod', 'mean', 'amax', 'amin') into
    y[..., index[j], ...]; include_self=False leaves input's own values at those slices out. It
    is scatter_reduce with index[j] spread over the whole slice j (same values, same gradients)."""
    if reduce not in ("prod", "mean", "amax", "amin"):
        raise RuntimeError(f"index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got {reduce}.")
    refuse_kinds(input, "index_func_", "bc")  # (PyTorch's kernel has no bool or complex loop, for any reduce)
    axis, index = _vector_index(input, dim, index, "index_reduce",
                                "index_reduce_(): Expected dtype int32/int64 for index but got: {}")
    _same_dtype(input, source, "index_reduce_(): self ({}) and source ({}) must have the same scalar type")
    expected = tuple(len(index) if d == axis else n for d, n in enumerate(input.shape))
    if tuple(source.shape) != expected:
        raise RuntimeError(f"index_reduce(): source has shape {tuple(source.shape)} but input of shape "
                           f"{tuple(input.shape)} with {len(index)} indices along dim {axis} needs {expected}")
    warn_once("index_reduce", "index_reduce() is in beta and the API may change at any time.")
    spread_index = xp.broadcast_to(index.reshape([-1 if d == axis else 1 for d in range(input.ndim)]), expected)
    return write_out(_scatter_reduce(input, source, axis, xp.ascontiguousarray(spread_index), reduce, include_self,
                                     caller="index_reduce"), out)


@names("take")
@node_named("TakeBackward0")
@watches_index("index", 1)
@watches_arguments("input")  # (PyTorch's node saves it too: writing it refuses)
def take(input, index, *, out=None):
    """input's elements at the given positions of its flattened form (the result has index's shape)."""
    index = _index_array(index, "take(): Expected a long tensor for index, but got {}", (int64,))
    flat = shape.reshape(input, (-1,))
    size = input.numel()
    if index.size and not size:
        raise IndexError("take(): tried to take from an empty tensor")
    if index.size and ((index < -size) | (index >= size)).any():  # PyTorch's IndexError here (gather's is RuntimeError)
        bad = index[(index < -size) | (index >= size)].flat[0]
        raise IndexError(f"out of range: tried to access index {bad} on a tensor of {size} elements.")
    positions = index % size if size else index
    return write_out(shape.GetItem.apply(flat, index=positions.astype(int64)), out)


@names("put", inplace="put_")
@watches_index("index", 1)
@watches_arguments("source")  # (PyTorch's node saves it too: writing it refuses)
def put(input, index, source, accumulate=False):
    """input with the elements at ``index`` of its flattened (row-major) form replaced by source's
    (added to, with ``accumulate``); index and source have as many elements, negative positions
    count from the end. dL/dinput = dL/dy with the replaced positions zeroed (all kept when
    accumulating), dL/dsource = dL/dy at the positions."""
    index = _index_array(index, "put_(): Expected a long tensor for index, but got {}", (int64,)).reshape(-1)
    if source.numel() != index.size:
        raise IndexError(f"put_(): Expected source and index to have the same number of elements, but got "
                         f"source.numel() = {source.numel()}, index.numel() = {index.size}")
    _same_dtype(input, source, "put_(): self and source expected to have the same dtype, but got self.dtype = {} "
                               "and source.dtype = {}")
    size = input.numel()
    if index.size and ((index < -size) | (index >= size)).any():
        bad = index[(index < -size) | (index >= size)][0]
        raise IndexError(f"out of range: tried to access index {bad} on a tensor of {size} elements.")
    positions = (index % size if size else index).astype(int64)
    flat, values = shape.reshape(input, (-1,)), shape.reshape(source, (-1,))
    if accumulate:
        put_flat = IndexAddAlong.apply(flat, values, dim=0, index=positions, alpha=1)
    else:
        put_flat = shape.IndexPut.apply(flat, values, index=(positions,))
    return shape.reshape(put_flat, tuple(input.shape))


def _slices_mask(input, axis, index):
    """True at the slices ``index`` along ``axis``, shaped to broadcast against input."""
    chosen = xp.zeros(input.shape[axis] if input.ndim else 1, dtype=bool)
    chosen[index] = True
    return chosen.reshape((-1,) + (1,) * (input.ndim - axis - 1)) if input.ndim else chosen.reshape(())


@names("index_copy", inplace="index_copy_")
@node_named("IndexCopyBackward0")
@watches_index("index", 2)
@watches_arguments("source")  # (PyTorch's node saves it too: writing it refuses)
def index_copy(input, dim, index, source, *, out=None):
    """input with its slices index[j] along dim replaced by source's slices j (of a position named twice, the
    last slice, as PyTorch's loop leaves it; the others get no gradient)."""
    dim_index(dim, input.ndim)  # (PyTorch's order of checks: the dim, the dtypes, then the index)
    _same_dtype(input, source, "index_copy_(): self and source expected to have the same dtype, but got (self) {} "
                               "and (source) {}")
    try:
        axis, index = _vector_index(input, dim, index, "index_copy",
                                    "index_copy_(): Expected a long tensor for index, but got {}", (int64,))
    except IndexRangeError as error:  # (PyTorch's IndexError here, named for the op)
        raise IndexError(f"index_copy_(): {error}") from None
    if source.ndim and input.ndim and source.ndim != input.ndim:
        raise IndexError(f"index_copy_(): When source and destination are not scalars, their dimensionality must "
                         f"match. Source dimensionality ({source.ndim}), destination dimensionality ({input.ndim})")
    count = source.shape[axis] if source.ndim else 1
    if index.size != count:
        raise IndexError(f"index_copy_(): Number of indices ({index.size}) should be equal to source.size(dim) "
                         f"({count})")
    slices = [(n, m) for d, (n, m) in enumerate(zip(input.shape, source.shape)) if d != axis]
    for d, (n, m) in enumerate(slices):
        if n != m:
            raise RuntimeError(f"index_copy_(): Source/destination tensor must have same slice shapes. Destination "
                               f"slice shape: {n} at dimension {d} and source slice shape: {m} at dimension {d}.")
    named, last_from_end = xp.unique(index[::-1], return_index=True)
    if named.size != index.size:  # (copied, not added up: only each position's last slice is written)
        kept = xp.sort(index.size - 1 - last_from_end)
        index, source = index[kept], IndexSelect.apply(source, dim=axis if source.ndim else 0, index=kept)
    mask = _slices_mask(input, axis, index)
    zeros = Tensor._make(xp.zeros(input.shape, dtype=source.dtype))
    placed = IndexAddAlong.apply(zeros, source, dim=axis, index=index, alpha=1, fresh=True)
    return write_out(elementwise.Where.apply(placed, input, condition=xp.broadcast_to(mask, input.shape)), out)


def _put_index(index):
    """One of index_put's indices as an array: integer positions (int64 or int32) or a mask (bool, or uint8 as
    PyTorch's deprecated rule reads it); None (ATen's optional index) is a whole dim, a slice."""
    if index is None:
        return slice(None)
    array = index._data if isinstance(index, Tensor) else xp.asarray(index)
    if array.dtype == xp.uint8:
        warn_uint8_mask()
        return array.astype(bool)
    if array.dtype not in _INT32_OR_64 and array.dtype != bool:
        raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
    return array


@names("index_put", inplace="index_put_")
def index_put(input, indices, values, accumulate=False):
    """input with ``values`` written at input[indices] (a tuple of index tensors), or added there
    with accumulate=True (repeated positions then add up)."""
    if isinstance(indices, Tensor):
        raise TypeError("index_put(): argument 'indices' (position 1) must be tuple of Tensors, not Tensor")
    for k, i in enumerate(indices):
        if not isinstance(i, Tensor):  # (ATen's index_put takes None for a whole dim: torch.ops.aten.index_put,
            # optional_index_put)
            raise TypeError(f"expected Tensor as element {k} in argument 1, but got {type(i).__name__}")
    return optional_index_put(input, indices, values, accumulate)


@node_named("IndexPutBackward0")
@watches_index("indices", 1)
def optional_index_put(input, indices, values, accumulate=False):
    """ATen's index_put: index_put whose ``indices`` may hold None, a whole dim (as a slice ``:`` in a subscript),
    so x.index_put((None, i), v) writes v at x[:, i]."""
    if not accumulate:
        refuse_uint8_mask_fill([i._data if isinstance(i, Tensor) else i for i in indices if i is not None],
                               values.numel() if isinstance(values, Tensor) else xp.size(values))
    index = tuple(_put_index(i) for i in indices)
    if not isinstance(values, Tensor):
        if is_no_number(values):  # (NumPy would write None as NaN)
            raise TypeError(f"index_put_(): argument 'values' (position 2) must be Tensor, not {type(values).__name__}")
        values = Tensor._make(xp.asarray(values, dtype=input.dtype))
    if not (len(index) == 1 and index[0].dtype == bool and index[0].ndim and values.numel() == 1):  # (but for
        # one mask and one value: PyTorch's masked_fill_, which casts)
        _same_dtype(input, values, "Index put requires the source and destination dtypes match, got {} for the "
                                   "destination and {} for the source.")
    elif values.dtype != input.dtype:
        values = values.to(input.dtype)
    if len(index) > input.ndim:
        raise IndexError(f"too many indices for tensor of dimension {input.ndim} (got {len(index)})")
    d = 0  # the dim of input that i indexes: a mask covers as many as it has (its shape NumPy checks below)
    for i in index:
        if d >= input.ndim:
            break
        if not isinstance(i, slice) and i.dtype != bool:
            outside = (i < -input.shape[d]) | (i >= input.shape[d])
            if outside.any():
                raise IndexError(f"index {i[outside].flat[0]} is out of bounds for dimension "
                                 f"{index_tensor_dim(index, d, input.ndim)} with size {input.shape[d]}")
        d += i.ndim if not isinstance(i, slice) and i.dtype == bool else 1
    try:
        target = xp.empty(input.shape, dtype=bool)[index].shape  # the shape input[indices] has
    except IndexError as error:  # (a mask that does not fit)
        raise index_error_in_pytorch_words(error, input.shape, index) from None
    if values.ndim > len(target) or any(v not in (1, n) for v, n in zip(values.shape[::-1], target[::-1])):
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(values.shape)} cannot be broadcast to "
                           f"indexing result of shape {list(target)}")
    values = shape.expand(values, target)
    if accumulate:
        return input + shape.IndexAdd.apply(values, index=index, shape=input.shape, basic=False)
    positions = xp.arange(input.numel()).reshape(input.shape)[index].reshape(-1)  # where each value lands
    written = xp.zeros(input.numel(), dtype=bool)
    written[positions] = True
    if written.sum() < positions.size:  # a position written twice: the last write wins, as in NumPy (PyTorch
        # leaves it undefined); the values it overwrites reach nothing, so they get no gradient
        _, last_from_end = xp.unique(positions[::-1], return_index=True)
        last = xp.zeros(positions.size, dtype=bool)
        last[positions.size - 1 - last_from_end] = True
        nothing = Tensor._make(xp.zeros((), dtype=values.dtype))
        values = elementwise.Where.apply(values, nothing, condition=last.reshape(target))
    placed = shape.IndexAdd.apply(values, index=index, shape=input.shape, basic=False)
    return elementwise.Where.apply(placed, input, condition=written.reshape(input.shape))
