"""Shape and indexing primitives: each forward beside its local derivative.

Moving elements around has a simple derivative: move the gradient back.
Reshape, permute, expand and basic indexing return views of their input. How ``x[index]`` and
``x[index] = v`` read their index is subscripts.py's; joining tensors (cat, stack) is joins.py's.
"""

import builtins
import operator

import numpy

from ..backend import strided_view, ufunc_at, xp
from ..dtype_objects import DTYPE_TYPES
from ..errors import ShapeError
from ..meta import MetaArray, meta_array
from ..primitive import Primitive
from ..size import sizes_argument
from ..tensor import Tensor
from ..warn_once import warn_once
from ..write_door import is_basic_index
from .axes import dim_index, inverse_permutation, matrices_only, normalize_dims, sizes_or_keyword
from .broadcasting import unbroadcast
from .conjugation import ViewAsComplex, ViewAsReal
from .conversion import type_name
from .index_errors import index_error_in_pytorch_words
from .names import names


class Reshape(Primitive):
    """y = x laid out as another shape;   dL/dx = dL/dy reshaped back"""

    saves_inputs = False  # backward needs no input's values

    is_view = True
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        y = x.reshape(self.shape)
        if y.size and not xp.may_share_memory(x, y):
            # the strides allowed no view (a transposed x): y is a copy, as PyTorch's reshape gives, and
            # must not be taken for a view, or a write into it would be replayed on x's history
            self.is_view = False
        return y

    def backward(self, grad, y, x):
        return (grad.reshape(x.shape),)

    def name(self):  # (view, reshape, flatten: PyTorch's view; a reshape that had to copy, its _unsafe_view)
        return self.pytorch_name or ("ViewBackward0" if self.is_view else "UnsafeViewBackward0")


def reshape(x, shape, pytorch_name=None):
    shape = _resolved(sizes_argument(shape), x._data.size, tuple(x.shape))
    if shape == x.shape:
        return x
    if pytorch_name is None:  # (the common case: no key added to the node's parameters)
        return Reshape.apply(x, shape=shape)
    return Reshape.apply(x, shape=shape, pytorch_name=pytorch_name)


def _resolved(shape, size, x_shape):
    """``shape`` with its -1 spelled out (to spot a no-op), or PyTorch's RuntimeError when it
    cannot hold ``size`` elements."""
    if shape.count(-1) > 1:
        raise ShapeError("only one dimension can be inferred")
    known = 1
    for n in shape:
        if n < -1:
            raise ShapeError(f"invalid shape dimension {n}")
        if n != -1:
            known *= n
    if -1 not in shape:
        if known == size:
            return shape
    elif known and size % known == 0:
        return tuple(size // known if n == -1 else n for n in shape)
    elif not known and not size:
        raise ShapeError(f"cannot reshape tensor of 0 elements into shape {list(shape)} because the unspecified "
                         "dimension size -1 can be any value and is ambiguous")
    raise ShapeError(f"Reshape of shapes {x_shape}: cannot reshape a tensor of size {size} into shape {shape} "
                     f"(shape '{list(shape)}' is invalid for input of size {size})")


def flatten(x, start_dim=0, end_dim=-1):
    start, end = dim_index(start_dim, x.ndim), dim_index(end_dim, x.ndim)  # (a 0-d tensor takes dims -1 and 0)
    if x.ndim == 0:
        return reshape(x, (1,))
    if start > end:
        raise ShapeError("flatten() has invalid args: start_dim cannot come after end_dim")
    merged = 1
    for n in x.shape[start:end + 1]:
        merged *= n
    return reshape(x, (*x.shape[:start], merged, *x.shape[end + 1:]))


def unsqueeze(x, dim):
    dim = dim_index(dim, x.ndim + 1)
    return reshape(x, (*x.shape[:dim], 1, *x.shape[dim:]), "UnsqueezeBackward0")


def squeeze(x, dim=None):
    axes = normalize_dims(dim, x.ndim, empty_is_every=False)
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)), _squeeze_name(dim))


def _squeeze_name(dim):
    """PyTorch's node for squeeze(), squeeze(dim) and squeeze(dims)."""
    return f"SqueezeBackward{0 if dim is None else 1 if isinstance(dim, int) else 2}"


class Permute(Primitive):
    """y = x with its axes reordered;   dL/dx = dL/dy with the inverse order"""

    saves_inputs = False  # backward needs no input's values

    is_view = True
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        return xp.transpose(x, self.dims)

    def backward(self, grad, y, x):
        return (grad.permute(*inverse_permutation(self.dims)),)


def permute(x, dims, pytorch_name=None):
    dims = sizes_argument(dims)
    if sorted(d % builtins.max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
        raise ShapeError(f"permute: {dims} is not an ordering of the {x.ndim} axes of shape {tuple(x.shape)}")
    dims = tuple(d % x.ndim for d in dims)
    if pytorch_name is None:
        return Permute.apply(x, dims=dims)
    return Permute.apply(x, dims=dims, pytorch_name=pytorch_name)


def transpose(x, dim0, dim1):
    dims = list(range(x.ndim))
    dim0, dim1 = dim_index(dim0, x.ndim), dim_index(dim1, x.ndim)
    if x.ndim == 0:  # a scalar's only "dim" is itself
        return x
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims, "TransposeBackward0")


class Expand(Primitive):
    """y = x broadcast to a larger shape, a view of x's memory;   dL/dx = dL/dy summed over the copies

    As in PyTorch, the new dims and the size-1 dims that grow step 0 through memory: a write to x
    shows in y, and a write into y, where several of its elements are one in memory, is refused
    (the write door's overlap check)."""

    saves_inputs = False  # backward needs no input's values
    is_view = True
    written = False  # a reduction's backward (spread): a new array instead, laid out in memory as ``like``
    like = None  # a tiny array laid out in memory as y should be (None: row-major)
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        if not self.written:
            return broadcast_view(x, self.shape)
        self.is_view = False  # (a gradient the backward pass owns: written, and cheaper than a view to make)
        if type(x) is MetaArray or type(self.like) is MetaArray:  # a reduction of a meta tensor: its gradient
            # is one too (no values, and none to write into its read-only array)
            return meta_array(self.shape, x.dtype)
        if self.like is None:
            y = xp.empty(self.shape, dtype=x.dtype)
        else:
            y = xp.empty_like(self.like, shape=self.shape, dtype=x.dtype)
        y[...] = x
        return y

    def backward(self, grad, y, x):
        return (unbroadcast(grad, x),)


def broadcast_view(x, shape):
    """The array x broadcast to ``shape`` as a writeable view of its memory, the new dims and the grown
    size-1 dims with step 0 (NumPy's broadcast_to makes the same view, read-only and several times
    slower to make)."""
    added = len(shape) - x.ndim
    if xp is not numpy:  # (CuPy's broadcast_to is a writeable view)
        return xp.broadcast_to(x, shape)
    return strided_view(x, shape, (0,) * added + tuple(step if old == new else 0 for old, new, step in
                                                       zip(x.shape, shape[added:], x.strides)))


def _size_at(i, n, op, name="size"):
    """Argument i of a list of sizes as an int, or PyTorch's TypeError. (A bool is refused first, as PyTorch's
    parser, which tells a list of ints by its first element: x.repeat(True, 1) is refused, x.flip(0, True) is not.)"""
    try:
        if i == 0 and isinstance(n, bool):
            raise TypeError
        return operator.index(n)
    except TypeError:
        raise TypeError(f"{op}(): argument '{name}' failed to unpack the object at pos {i + 1} with error \"type must "
                        f"be tuple of ints,but got {type(n).__name__}\"") from None


def expand(x, sizes, written=False):
    """x broadcast to ``sizes`` (-1 keeps a dim); x may have fewer dims, as in NumPy. A view of x; ``written``:
    a new tensor instead (the ops whose PyTorch result is one: repeat, repeat_interleave, addmm with beta 0)."""
    sizes = sizes_argument(sizes)
    if not set(map(type, sizes)) <= {int}:  # (a NumPy integer or a 0-d tensor will do; a float will not)
        sizes = tuple(_size_at(i, n, "expand") for i, n in enumerate(sizes))
    added = len(sizes) - x.ndim
    if added < 0:
        raise ShapeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
                         f"the number of dimensions in the tensor ({x.ndim})")
    if any(n == -1 for n in sizes[:added]):
        leading = next(i for i, n in enumerate(sizes[:added]) if n == -1)
        raise ShapeError(f"The expanded size of the tensor (-1) isn't allowed in a leading, non-existing dimension "
                         f"{leading}")
    shape = tuple(x.shape[i - added] if n == -1 else n for i, n in enumerate(sizes))
    for i, (old, new) in reversed(list(enumerate(zip(x.shape, shape[added:])))):  # (PyTorch's: from the last)
        if old != new and old != 1:
            raise ShapeError(f"The expanded size of the tensor ({new}) must match the existing size ({old}) "
                             f"at non-singleton dimension {i + added}.  Target sizes: {list(sizes)}.  "
                             f"Tensor sizes: {list(x.shape)}")
    if written:  # (a copy even where nothing grows: x.repeat(1, 1) owns its memory, as PyTorch's)
        return Expand.apply(x, shape=shape, written=True)
    if shape == x.shape:
        return x
    return Expand.apply(x, shape=shape)


class GetItem(Primitive):
    """y = x[index];   dL/dx = dL/dy put back at index, 0 elsewhere (repeated indices add up)"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value
    saves_index = True  # an index of tensors, as PyTorch's IndexBackward saves it (to_sparse's gather: not)

    def forward(self, x):
        index = self.index
        self.is_view = type(index) is int or type(index) is slice or is_basic_index(index)  # (x[t], x[a:b] at once)
        try:
            y = x[self.index]
        except IndexError as error:
            raise index_error_in_pytorch_words(error, x.shape, self.index) from None
        if type(y) is not type(x):  # an element: NumPy gives a scalar (a copy), PyTorch a 0-d view
            y = x[(*self.index, ...) if type(self.index) is tuple else (self.index, ...)]
        elif not self.is_view and type(y) is numpy.ndarray and not y.flags.c_contiguous:
            # NumPy lays x[:, mask] out with the indexed dim innermost; PyTorch's gather of a row-major x is
            # row-major (is_contiguous(), stride())
            y = numpy.ascontiguousarray(y)
        return y

    def release(self):
        if not self.is_view and self.saves_index:  # (a slice is no saved tensor: a second backward may pass)
            super().release()

    def backward(self, grad, y, x):
        return (IndexAdd.apply_in_backward(grad, index=self.index, shape=x.shape, basic=self.is_view),)

    def name(self):
        """PyTorch's node for x[index]: IndexBackward0 for an index of tensors; else that of the last view its
        indexing made (an int selects, a slice slices, None unsqueezes; a whole ``:`` after others makes none)."""
        if self.pytorch_name:  # (unbind, split, chunk)
            return self.pytorch_name
        if not self.is_view:
            return "IndexBackward0"
        if type(self.index) is slice:
            return "SliceBackward0"
        last = "AliasBackward0"  # (x[...]: a view with no step)
        for part in self.index if type(self.index) is tuple else (self.index,):
            if part is None:
                last = "UnsqueezeBackward0"
            elif type(part) is slice:
                if part != slice(None):
                    last = "SliceBackward0"
            elif part is not Ellipsis:
                last = "SelectBackward0"
        return last


class IndexAdd(Primitive):
    """y = zeros(shape) with x added at index: GetItem's adjoint;   dL/dx = dL/dy[index]"""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the index: freed after backward, as PyTorch frees it
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        if type(x) is MetaArray:  # (a meta tensor's gradient: a shape, on the meta device too)
            return meta_array(self.shape, x.dtype)
        y = xp.zeros(self.shape, dtype=x.dtype)
        if self.basic:
            y[self.index] = x
        else:
            ufunc_at("add", y, self.index, x)
        return y

    def backward(self, grad, y, x):
        return (grad[self.index],)


class IndexPut(Primitive):
    """y = x with y[index] = v (x[index] = v when recorded);
    dL/dx = dL/dy with 0 at index,   dL/dv = dL/dy[index] summed to v's shape"""

    saves_inputs = False
    saves_arguments = True  # backward uses the index: freed after backward, as PyTorch frees it
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x, v):
        y = x.copy()
        y[self.index] = v
        return y

    def backward(self, grad, y, x, v):
        grad_x = grad_v = None
        if x.requires_grad:
            kept = xp.ones(x.shape, dtype=grad.dtype)
            kept[self.index] = 0
            grad_x = grad * Tensor._make(kept)
        if v.requires_grad:
            grad_v = unbroadcast(grad[self.index], v)
        return grad_x, grad_v


# What a recorded node keeps about itself (Primitive.apply's recording, tensor and node hooks,
# retain_grad, anomaly mode, saved-tensor hooks, forward AD). A view's chain holds the dict its node
# was made with, so these arrive there once the node is recorded or hooked; a replayed view is a new
# node and takes none of them (it took the old node's hooks dict: a hook registered on the view after
# a write through it then ran on the old node too, with the gradient of the old value)
_NODE_STATE = frozenset({"inputs", "parents", "created", "output_data", "output_version", "packed", "where",
                         "hooks", "pre_hooks", "post_hooks", "retained", "released_parents", "_metadata",
                         "_fw_output"})


def replay_view(tensor, chain):
    """The view that ``chain`` (a view's (op, params) steps) makes of ``tensor``, recorded."""
    for op, params in chain:
        tensor = op.apply(tensor, **{k: v for k, v in params.items() if k not in _NODE_STATE})
    return tensor


def _replay_view_of_array(array, chain):
    for op, params in chain:
        step = object.__new__(op)
        step.__dict__.update(params)
        array = step.forward(array)
    return array


class WriteThroughView(Primitive):
    """y = the base with the region a view shows replaced by v (a write through a view, recorded);
    dL/dbase = dL/dy with 0 in the region,   dL/dv = the region of dL/dy.

    The new values are already in the base's memory (``storage``) when this runs.
    """

    pytorch_name = "torch::autograd::CopySlices"
    saves_inputs = False
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, base, v):
        return self.storage

    def backward(self, grad, y, base, v):
        grad_base = grad_v = None
        if base.requires_grad and grad.dtype.kind == "c":  # kept or not part by part: a write through .real keeps Im
            parts = xp.ones((*base.shape, 2), dtype=xp.finfo(grad.dtype).dtype)
            _replay_view_of_array(parts.view(grad.dtype)[..., 0], self.view_chain)[...] = 0
            grad_base = ViewAsComplex.apply(ViewAsReal.apply(grad) * Tensor._make(parts))
        elif base.requires_grad:
            kept = xp.ones(base.shape, dtype=grad.dtype)
            _replay_view_of_array(kept, self.view_chain)[...] = 0
            grad_base = grad * Tensor._make(kept)
        if v.requires_grad:
            grad_v = unbroadcast(replay_view(grad, self.view_chain), v)
        return grad_base, grad_v


# -- the names these ops go by ------------------------------------------------------------------


def _new_view(x, y, pytorch_name=None):
    """y, or where a shape op changed nothing (y is x), a new view of x. PyTorch's view ops always give a new
    tensor sharing x's memory, never x itself: what happens to the result (t_(), requires_grad_(), a hook)
    must leave x alone. (The internal reshape keeps its shortcut: backward passes call it often.)
    ``pytorch_name``: PyTorch's node for the op that changed nothing, where it is not a view's."""
    if y is not x:
        return y
    if pytorch_name is None:
        return Reshape.apply(x, shape=x.shape)
    return Reshape.apply(x, shape=x.shape, pytorch_name=pytorch_name)


@names("reshape", function=False)  # autograd.reshape: ops/functions.py
def _reshape(input, *sizes, shape=None):
    return _new_view(input, reshape(input, sizes_or_keyword(sizes, "shape", shape)))


@names("view", function=False)
def _view(x, *sizes, size=None, dtype=None):
    """x in another shape, sharing memory. Where the strides allow no view, a view of a row-major tensor (a
    transpose, a strided slice) is refused as PyTorch refuses it, since a write into a copy would not reach the
    base; any other tensor is copied instead (a convolution's batch-innermost output: chainrule's layouts differ
    from PyTorch's there, so refusing would break programs PyTorch runs, whose convolution output is contiguous).
    Given a dtype instead (``x.view(autograd.int32)``), x's memory read as that dtype."""
    if dtype is None and len(sizes) == 1 and isinstance(sizes[0], DTYPE_TYPES):
        dtype = sizes[0]
    elif dtype is not None and sizes:
        raise TypeError(f"view() takes sizes or a dtype, got both {sizes} and dtype={dtype}")
    if dtype is not None:
        return _view_as_dtype(x, numpy.dtype(dtype))
    return _viewed(x, sizes_or_keyword(sizes, "size", size))


def _viewed(x, shape):
    """x as ``shape``: a view, a copy where x's layout is chainrule's own, or PyTorch's refusal (``view``)."""
    y = reshape(x, shape)
    if y is not x and x._base is not None and x._data.size and x._base._data.flags.c_contiguous \
            and not xp.may_share_memory(y._data, x._data):
        # (NumPy copied; x's strides are PyTorch's, a view op's of a row-major base)
        raise RuntimeError(f"view size is not compatible with input tensor's size and stride (at least one dimension "
                           f"spans across two contiguous subspaces). Use .reshape(...) instead. (view of shape "
                           f"{tuple(x.shape)}, strides {x.stride()}, as {tuple(y.shape)})")
    return _new_view(x, y)


def _view_as_dtype(x, dtype):
    """x's bytes read as ``dtype``, sharing its memory; the last dim grows or shrinks by the ratio
    of the element sizes. Not differentiable: as PyTorch's, the result never requires grad."""
    data, old = x._data, x._data.dtype
    if dtype.itemsize != old.itemsize:
        what = f"to view {type_name(old)} as {type_name(dtype)} (different element sizes)"
        if data.ndim == 0:
            raise RuntimeError(f"self.dim() cannot be 0 {what}")
        if data.shape[-1] != 1 and x.stride(-1) != 1:  # (x.stride: an empty tensor's steps are row-major)
            raise RuntimeError(f"self.stride(-1) must be 1 {what}, but got {x.stride(-1)}")
        if dtype.itemsize > old.itemsize:  # the wider elements must start where one of them could
            ratio = dtype.itemsize // old.itemsize
            if data.shape[-1] % ratio:
                raise RuntimeError(f"self.size(-1) must be divisible by {ratio} {what}, but got {data.shape[-1]}")
            if x.storage_offset() % ratio:
                raise RuntimeError(f"self.storage_offset() must be divisible by {ratio} {what}, but got "
                                   f"{x.storage_offset()}")
            for d, step in enumerate(x.stride()[:-1]):
                if step % ratio:
                    raise RuntimeError(f"self.stride({d}) must be divisible by {ratio} {what}, but got {step}")
    return Tensor._make(data.view(dtype))


@names("as_subclass", function=False)
def as_subclass(x, cls):
    """x as an instance of the Tensor subclass ``cls``, on x's memory and in its graph (PyTorch's: an alias of x,
    AliasBackward0, whose writes are x's)."""
    if not (isinstance(cls, type) and issubclass(cls, Tensor)):
        raise TypeError(f"as_subclass(): argument 'cls' must be a subclass of Tensor, not {cls!r}")
    alias = Reshape.apply(x, shape=x.shape, pytorch_name="AliasBackward0")
    alias.__class__ = cls
    return alias


@names("reshape_as", function=False)
def _reshape_as(x, other):
    return _new_view(x, reshape(x, other.shape))


@names("view_as", function=False)
def _view_as(x, other):
    return _viewed(x, other.shape)


@names("flatten", function=False)
def _flatten(input, start_dim=0, end_dim=-1):
    return flatten(input, start_dim, end_dim)


@names("transpose", function=False)
def _transpose(input, dim0, dim1):
    return transpose(input, dim0, dim1)


@names("t", function=False)
def t(input):
    if input.ndim > 2:
        raise ShapeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D (shape "
                         f"{tuple(input.shape)})")
    return permute(input, tuple(reversed(range(input.ndim))), "TBackward0")


@names("permute", function=False)
def _permute(input, *order, dims=None):
    return permute(input, sizes_or_keyword(order, "dims", dims))


names("unsqueeze", function=False)(unsqueeze)


@names("squeeze", function=False)
def _squeeze(input, dim=None):
    return _new_view(input, squeeze(input, dim), _squeeze_name(dim))


@names("expand", function=False)
def _expand(x, *sizes, size=None, implicit=False):
    """(implicit: PyTorch's mark, for its tracer, of an expand it made itself to broadcast; the view is the same.)"""
    return _new_view(x, expand(x, sizes_or_keyword(sizes, "size", size)), "ExpandBackward0")


@names("expand_as", function=False)
def _expand_as(x, other):
    return _new_view(x, expand(x, other.shape), "ExpandBackward0")


@names("T", function=False)
@property
def reversed_dims(x):
    """x with its dims in reverse order. PyTorch deprecates it for other than 2 dims (x.mT transposes
    the last two), and warns once in a process, as here."""
    if x.ndim not in (0, 2):
        warn_once("x.T", "The use of `x.T` on tensors of dimension other than 2 to reverse their shape is deprecated "
                  "and it will throw an error in a future release. Consider `x.mT` to transpose batches of matrices "
                  "or `x.permute(*torch.arange(x.ndim - 1, -1, -1))` to reverse the dimensions of a tensor.")
    return permute(x, tuple(reversed(range(x.ndim))))


def _matrix_transpose(x):
    """The last two dims swapped (a batch of matrices transposed): every matmul's backward."""
    if x.ndim < 2:
        raise ShapeError(f"mT needs at least 2 dimensions, got shape {tuple(x.shape)}")
    return Permute.apply(x, dims=(*range(x.ndim - 2), x.ndim - 1, x.ndim - 2), pytorch_name="TransposeBackward0")


def _mT(x):
    """x.mT: the last two dims swapped (a batch of matrices transposed)."""
    return _new_view(x, x) if matrices_only(x, "mT") else _matrix_transpose(x)


names("mT", function=False)(property(_mT))


def _setitem_node_name(shape, index, value):
    """PyTorch's name for the node of ``x[index] = value`` (x of ``shape``, the index as NumPy reads it).
    PyTorch takes the basic part of the index first: where that makes a view (an integer, None, a bool, a
    slice short of its whole dim) the write goes through it, and the base's node is CopySlices; else the
    tensor indexes itself, and the write is an index_put_ (arrays or lists in the index), a fill_ (a 0-dim
    value) or a copy_."""
    items = index if isinstance(index, tuple) else (index,)

    def dims_taken(item):  # how many of x's dims an index item stands for
        if item is None or item is Ellipsis or isinstance(item, (bool, numpy.bool_)):
            return 0
        ndim = getattr(item, "ndim", None)
        if ndim is None:  # an int, a slice or a list
            return 1
        return ndim if item.dtype.kind == "b" else min(ndim, 1)

    dim, advanced = 0, False
    for item in items:
        if item is Ellipsis:
            dim += len(shape) - sum(dims_taken(i) for i in items)
        elif isinstance(item, slice):
            if dim >= len(shape):  # too many indices: the write itself says so
                return None
            if item.indices(shape[dim]) != (0, shape[dim], 1):
                return "torch::autograd::CopySlices"
            dim += 1
        elif getattr(item, "ndim", 1) == 0 or not isinstance(item, (list, numpy.ndarray)):
            # an int (a select; a 0-dim integer tensor indexes as one), None or a bool (an unsqueeze)
            return "torch::autograd::CopySlices"
        else:
            advanced = True
            dim += dims_taken(item)
    if advanced:
        return "IndexPutBackward0"
    return "FillBackward3" if getattr(value, "ndim", None) == 0 else "torch::autograd::CopyBackwards"


@names("_index_put")
def _index_put(x, index, value):
    """x with x[index] = value, out of place and recorded (a recorded __setitem__)."""
    return IndexPut.apply(x, value, index=index, pytorch_name=_setitem_node_name(x.shape, index, value))


@names("_written_through_view")
def _written_through_view(base, new, chain):
    return WriteThroughView.apply(base, new, view_chain=chain, storage=base._data)


names("_replay_view")(replay_view)
