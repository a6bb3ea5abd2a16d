"""Cutting a tensor into pieces and joining pieces: chunk, split, tensor_split, unbind, narrow,
select, and the cat family's aliases (concat, hstack, vstack, dstack, column_stack).

Every piece is a slice of the input (a view), so its gradient is its slice's: dL/dy put back
where the piece came from, 0 elsewhere.
"""

import operator
import weakref

from ..backend import int64
from ..sparse_layout import is_sparse
from ..tensor import Tensor, tensor_from
from ..write_door import mark_several_views
from . import joins, shape
from .axes import dim_index
from .conversion import type_name
from .names import names
from .outputs import write_out


def _slice_along(x, axis, start, stop, pytorch_name=None):
    index = (slice(None),) * axis + (slice(start, stop),)
    if pytorch_name is None:
        return shape.GetItem.apply(x, index=index)
    return shape.GetItem.apply(x, index=index, pytorch_name=pytorch_name)


def _pieces(x, axis, sizes, pytorch_name=None):
    """x cut along axis into pieces of these sizes; ``pytorch_name``: PyTorch's node for the cut (split's), whose
    pieces are then one multi-output view op's (tensor_split's are slices, each a view of its own)."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(_slice_along(x, axis, start, start + size, pytorch_name))
        start += size
    if pytorch_name is None:
        return tuple(pieces)
    return mark_several_views(tuple(pieces), pytorch_name[:-len("Backward0")])


@names("split", method=False)
def split(tensor, split_size_or_sections, dim=0):
    """Pieces along dim: of split_size each (the last may be smaller), or of the given sizes."""
    if tensor.ndim == 0:
        raise RuntimeError("split expects at least a 1-dimensional tensor")
    axis = dim_index(dim, tensor.ndim)
    length = tensor.shape[axis]
    if isinstance(split_size_or_sections, Tensor) and split_size_or_sections.ndim == 0:
        split_size_or_sections = operator.index(split_size_or_sections)  # (a 0-d integer tensor: one size)
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size < 0:
            raise RuntimeError(f"split expects split_size be non-negative, but got split_size={size}")
        if size == 0 and length:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension size of {length}")
        if size == 0:
            return (tensor,)
        return _pieces(tensor, axis, [min(size, length - start) for start in range(0, max(length, 1), size)],
                       "SplitBackward0")
    sizes = [shape._size_at(i, s, "split_with_sizes", "split_sizes") for i, s in enumerate(split_size_or_sections)]
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"split_with_sizes expects split_sizes have only non-negative entries, but got "
                           f"split_sizes={sizes}")
    if sum(sizes) != length:
        raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {length} (input tensor's size "
                           f"at dimension {axis}), but got split_sizes={sizes}")
    return _pieces(tensor, axis, sizes, "SplitWithSizesBackward0")


@names("split", function=False)
def split_method(input, split_size, dim=0):
    """split under the keyword x.split takes (``x.split(split_size=2)``)."""
    return split(input, split_size, dim)


@names("split_with_sizes")
def split_with_sizes(input, split_sizes, dim=0):
    return split(input, list(split_sizes), dim)


def not_views(pieces):
    """Pieces on one tensor's memory that autograd does not take for views: each has a version counter of its own
    and no base, so writing one in place leaves what was saved of another valid. The unsafe_* forms (PyTorch's:
    the caller answers for such writes, as the name says), and the outputs of a primitive that returns several
    tensors as one flat array (a recurrent layer's y, h_n, c_n: PyTorch's kernel gives separate tensors)."""
    base = pieces[0]._base if pieces else None
    if base is not None and base._views is not None:  # nor views a write to the input re-derives (a new set, not
        unsafe = {id(piece) for piece in pieces}  # WeakSet.discard, which compares tensors by ==)
        base._views = weakref.WeakSet(view for view in base._views if id(view) not in unsafe)
    for piece in pieces:
        piece._version_cell = [0, 0, 0]
        piece._base = piece._view_chain = piece._made_by_function = None
    return pieces


@names("unsafe_split")
def unsafe_split(input, split_size, dim=0):
    return not_views(split(input, split_size, dim))


@names("unsafe_split_with_sizes")
def unsafe_split_with_sizes(input, split_sizes, dim=0):
    return not_views(split(input, list(split_sizes), dim))


@names("unsafe_chunk")
def unsafe_chunk(input, chunks, dim=0):
    return not_views(chunk(input, chunks, dim))


@names("chunk")
def chunk(input, chunks, dim=0):
    """At most ``chunks`` pieces along dim, each of ceil(size / chunks) elements (the last smaller)."""
    chunks = operator.index(chunks)  # (an int, or a 0-d integer tensor)
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    if input.ndim == 0:
        raise RuntimeError("chunk expects at least a 1-dimensional tensor")
    axis = dim_index(dim, input.ndim)
    length = input.shape[axis]
    if length == 0:  # nothing to share out: as PyTorch, that many empty pieces
        return _pieces(input, axis, [0] * chunks, "SplitBackward0")
    return split(input, -(-length // chunks), axis)


def _one_way_to_cut(op, indices_or_sections, **keywords):
    """The one way of cutting given: positionally, or by PyTorch's keyword for its kind
    (``sections=n``, ``indices=[...]``, ``tensor_indices_or_sections=t``)."""
    given = {name: value for name, value in keywords.items() if value is not None}
    if indices_or_sections is not None:
        given["indices_or_sections"] = indices_or_sections
    if len(given) != 1:
        raise TypeError(f"{op}() takes one of the sections or the indices to cut at "
                        f"({', '.join(keywords)}), got {sorted(given) or 'none'}")
    return next(iter(given.values()))


@names("tensor_split")
def tensor_split(input, indices_or_sections=None, dim=0, *, sections=None, indices=None,
                 tensor_indices_or_sections=None):
    """NumPy's array_split: n nearly equal pieces (the first ones one larger), or cuts at the given indices."""
    indices_or_sections = _one_way_to_cut("tensor_split", indices_or_sections, sections=sections, indices=indices,
                                          tensor_indices_or_sections=tensor_indices_or_sections)
    if input.ndim == 0:
        raise RuntimeError("tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 dims")
    if isinstance(indices_or_sections, Tensor):
        if indices_or_sections.dtype != int64:
            raise RuntimeError(f"tensor_split expected tensor_indices_or_sections to have dtype of long, but got "
                               f"{type_name(indices_or_sections.dtype)}")
        if indices_or_sections.ndim > 1:
            raise RuntimeError(f"tensor_split expected tensor_indices_or_sections to be a zero-dimensional or "
                               f"one-dimensional tensor, but got a tensor with {indices_or_sections.ndim} dims")
        indices_or_sections = indices_or_sections.tolist()
    axis = dim_index(dim, input.ndim)
    length = input.shape[axis]
    if not isinstance(indices_or_sections, (list, tuple)):  # a number of sections (an int, a NumPy integer)
        n = operator.index(indices_or_sections)
        if n <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {n}")
        base, extra = divmod(length, n)
        return _pieces(input, axis, [base + 1 if i < extra else base for i in range(n)])
    cuts = [min(max(c if c >= 0 else c + length, 0), length) for c in indices_or_sections]
    bounds = [0, *cuts, length]
    return tuple(_slice_along(input, axis, a, max(a, b)) for a, b in zip(bounds[:-1], bounds[1:]))


@names("select")
def select(input, dim, index):
    """The slice at ``index`` along dim, with that dim removed (x.select(0, i) is x[i])."""
    if is_sparse(input):  # (autograd.select(sparse, ...): the sparse tensor's own)
        return input.select(dim, index)
    if input.ndim == 0:  # (NumPy's shape lookup would say "tuple index out of range")
        raise IndexError("select() cannot be applied to a 0-dim tensor.")
    axis = dim_index(dim, input.ndim)
    size = input.shape[axis]
    if not -size <= index < size:
        raise IndexError(f"select(): index {index} out of range for tensor of size {list(input.shape)} "
                         f"at dimension {axis}")
    return shape.GetItem.apply(input, index=(slice(None),) * axis + (index % size,))


@names("unbind")
def unbind(input, dim=0):
    """Every slice along dim, that dim removed: x.unbind(0) is tuple(x)."""
    if input.ndim == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    axis = dim_index(dim, input.ndim)
    lead = (slice(None),) * axis
    return mark_several_views(tuple(shape.GetItem.apply(input, index=lead + (i,), pytorch_name="UnbindBackward0")
                                    for i in range(input.shape[axis])), "Unbind")


@names("narrow")
def narrow(input, dim, start, length):
    """The ``length`` elements along dim from ``start`` on (a view)."""
    if input.ndim == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor.")
    axis = dim_index(dim, input.ndim)
    size = input.shape[axis]
    if isinstance(start, Tensor) and (start.ndim or start.dtype.kind not in "iu"):
        raise RuntimeError("start must be an 0-dim integral Tensor.")
    start, length = operator.index(start), operator.index(length)  # (ints or 0-d integer tensors, not floats)
    if not -size <= start <= size:
        raise IndexError(f"start out of range (expected to be in range of [{-size}, {size}], but got {start})")
    if start < 0:
        start += size
    if length < 0:
        raise RuntimeError("narrow(): length must be non-negative.")
    if start + length > size:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    return _slice_along(input, axis, start, start + length)


def _tensors(tensors, op=None):
    """The sequence's elements as tensors; ``op`` (hstack, vstack, ...) refuses an empty one, and one tensor
    where a sequence of them belongs, as PyTorch."""
    if op is not None and isinstance(tensors, Tensor):
        raise TypeError(f"{op}(): argument 'tensors' (position 1) must be tuple of Tensors, not Tensor")
    if op is not None and len(tensors) == 0:
        raise RuntimeError(f"{op} expects a non-empty TensorList")
    return [t if isinstance(t, Tensor) else tensor_from(t) for t in tensors]


@names("concat", "concatenate", method=False)
def concat(tensors, dim=0, *, out=None):
    """cat under its other names."""
    return write_out(joins.cat(tensors, dim), out)


def _at_least(x, ndim):
    """x with leading (1-d: trailing for the third dim, as NumPy's atleast_3d) size-1 dims."""
    if x.ndim >= ndim:
        return x
    if ndim == 3:
        x = _at_least(x, 2)
        return shape.unsqueeze(x, -1)
    return shape.reshape(x, (1,) * (ndim - x.ndim) + tuple(x.shape))


@names("atleast_1d", method=False)
def atleast_1d(*tensors):
    results = [_at_least(t, 1) for t in _tensors(_flat(tensors))]
    return results[0] if len(results) == 1 else tuple(results)


@names("atleast_2d", method=False)
def atleast_2d(*tensors):
    results = [_at_least(t, 2) for t in _tensors(_flat(tensors))]
    return results[0] if len(results) == 1 else tuple(results)


@names("atleast_3d", method=False)
def atleast_3d(*tensors):
    results = [_at_least(t, 3) for t in _tensors(_flat(tensors))]
    return results[0] if len(results) == 1 else tuple(results)


def _flat(tensors):
    return tuple(tensors[0]) if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tensors


@names("hstack", method=False)
def hstack(tensors, *, out=None):
    """Join along dim 1 (dim 0 for vectors)."""
    tensors = [_at_least(t, 1) for t in _tensors(tensors, "hstack")]
    return joins.cat(tensors, 0 if tensors[0].ndim == 1 else 1, out=out)  # (PyTorch's cat_out: its refusals)


@names("vstack", "row_stack", method=False)
def vstack(tensors, *, out=None):
    """Join along dim 0, vectors taken as rows."""
    return joins.cat([_at_least(t, 2) for t in _tensors(tensors, "vstack")], 0, out=out)


@names("dstack", method=False)
def dstack(tensors, *, out=None):
    """Join along dim 2, vectors and matrices given trailing size-1 dims first."""
    return joins.cat([_at_least(t, 3) for t in _tensors(tensors, "dstack")], 2, out=out)


@names("column_stack", method=False)
def column_stack(tensors, *, out=None):
    """Join as columns: vectors (and scalars) become columns, then hstack."""
    columns = [shape.reshape(t, (t.numel(), 1)) if t.ndim <= 1 else t for t in _tensors(tensors, "column_stack")]
    return joins.cat(columns, 1, out=out)


def _split_along(input, indices_or_sections, dim, op, min_ndim):
    if input.ndim < min_ndim:
        raise RuntimeError(f"torch.{op} requires a tensor with at least {min_ndim} dimension, but got a tensor "
                           f"with {input.ndim} dimensions!")
    if isinstance(indices_or_sections, int) and (indices_or_sections == 0
                                                 or input.shape[dim] % indices_or_sections):
        raise RuntimeError(f"torch.{op} attempted to split along dimension {dim}, but the size of the dimension "
                           f"{input.shape[dim]} is not divisible by the split_size {indices_or_sections}!")
    return tensor_split(input, indices_or_sections, dim)


@names("hsplit")
def hsplit(input, indices_or_sections=None, *, sections=None, indices=None):
    """tensor_split along dim 1 (dim 0 for vectors), equal pieces only (at least 1-D)."""
    indices_or_sections = _one_way_to_cut("hsplit", indices_or_sections, sections=sections, indices=indices)
    return _split_along(input, indices_or_sections, 0 if input.ndim == 1 else 1, "hsplit", 1)


@names("vsplit")
def vsplit(input, indices_or_sections=None, *, sections=None, indices=None):
    """tensor_split along dim 0, equal pieces only (at least 2-D)."""
    indices_or_sections = _one_way_to_cut("vsplit", indices_or_sections, sections=sections, indices=indices)
    return _split_along(input, indices_or_sections, 0, "vsplit", 2)


@names("dsplit")
def dsplit(input, indices_or_sections=None, *, sections=None, indices=None):
    """tensor_split along dim 2, equal pieces only (at least 3-D)."""
    indices_or_sections = _one_way_to_cut("dsplit", indices_or_sections, sections=sections, indices=indices)
    return _split_along(input, indices_or_sections, 2, "dsplit", 3)
