"""Repeating, reversing, rolling and moving dims: repeat, tile, repeat_interleave, flip, fliplr,
flipud, roll, rot90, movedim/moveaxis, swapaxes/swapdims, unflatten.

Repetition is a broadcast (expand) followed by a reshape, so its gradient sums the copies;
flip and roll move elements, so their gradients move dL/dy back the opposite way.
"""

import numbers
from collections.abc import Sequence

from ..backend import int32, int64, strided_view, xp
from ..errors import ShapeError, broadcast_mismatch
from ..primitive import Primitive, named_node, node_named
from ..size import Size, sizes_argument
from ..tensor import Tensor
from . import shape
from .axes import dim_index, int_or_ints, matrices_only, normalize_dims, sizes_or_keyword
from .conjugation import conj
from .conversion import type_name
from .index_vectors import IndexAddAlong, IndexSelect
from .joins import pytorchs_layout
from .layouts import preserved_copy
from .names import names


def _sizes(sizes, op="repeat"):
    return tuple(shape._size_at(i, n, op) for i, n in enumerate(sizes_argument(sizes)))


@names("repeat")
def repeat(input, *sizes, repeats=None):
    """input repeated sizes[i] times along dim i (sizes may add leading dims), as NumPy's tile."""
    sizes = _sizes(sizes_or_keyword(sizes, "repeats", repeats))
    if len(sizes) < input.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions "
                           f"of tensor (repeat dims {sizes}, tensor shape {tuple(input.shape)})")
    original = (1,) * (len(sizes) - input.ndim) + tuple(input.shape)
    if any(n < 0 for n in sizes):
        target = [r * n for r, n in zip(sizes, original)]
        raise RuntimeError(f"Trying to create tensor with negative dimension {min(target)}: {target}")
    # each dim n becomes (1, n), broadcast to (r, n), then the pairs are merged: r copies of n
    interleaved = tuple(m for n in original for m in (1, n))
    expanded = tuple(m for r, n in zip(sizes, original) for m in (r, n))
    y = shape.expand(shape.reshape(input, interleaved), expanded, written=True)
    return named_node(shape.reshape(y, tuple(r * n for r, n in zip(sizes, original))), None, "RepeatBackward0",
                      (input,))


@names("tile")
def tile(input, *sizes, dims=None):
    """repeat, with dims padded by leading 1s when shorter than input's (x.tile(2, 1) or tile(x, (2, 1)))."""
    dims = _sizes(sizes_or_keyword(sizes, "dims", dims), "tile")
    return repeat(input, (1,) * (input.ndim - len(dims)) + dims)


def _counts(repeats, vector_only=False):
    """repeat_interleave's counts tensor as an integer array, with PyTorch's refusals: another dtype, more than
    one dim (or anything but a vector, for ``repeat_interleave(counts)``), a negative count."""
    if repeats.dtype not in (int32, int64):
        raise NotImplementedError(f'"repeat_interleave_cpu" not implemented for \'{type_name(repeats.dtype)}\'')
    if vector_only and repeats.ndim != 1:
        raise RuntimeError("repeat_interleave only accept 1D vector as repeat")
    if repeats.ndim > 1:
        raise RuntimeError("repeats must be 0-dim or 1-dim tensor")
    if (repeats._data < 0).any():
        raise RuntimeError("repeats can not be negative")
    return repeats._data


@names("repeat_interleave")
def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each element (or slice along dim) repeated in place: [a, b] with 2 gives [a, a, b, b].
    ``repeats`` is a number or one count per element; with dim None input is flattened first."""
    if repeats is None:  # repeat_interleave(counts): the indices 0, 0, 1, ... themselves, in the counts' dtype
        counts = _counts(input, vector_only=True)
        return Tensor._make(xp.repeat(xp.arange(len(counts), dtype=input.dtype), counts))
    if dim is None:
        input, axis = shape.reshape(input, (-1,)), 0
    else:
        axis = dim_index(dim, input.ndim)
    if isinstance(repeats, Tensor):
        counts = _counts(repeats)
    else:  # a number: one count for every element
        if not isinstance(repeats, numbers.Integral):
            raise TypeError(f"repeat_interleave(): argument 'repeats' must be an int or a Tensor, not "
                            f"{type(repeats).__name__}")
        if repeats < 0:
            raise RuntimeError("Repeats must be non-negative")
        counts = xp.asarray(int(repeats))
    size = input.shape[axis] if input.ndim else 1
    if counts.ndim and counts.size != 1 and counts.size != size:
        raise RuntimeError(f"repeats must have the same size as input along dim, but got repeats.size(0) = "
                           f"{counts.size} and input.size({axis}) = {size}")
    total = int(counts.reshape(-1).sum()) if counts.size != 1 else int(counts.reshape(())) * size
    if output_size is not None and output_size != total:
        raise RuntimeError(f"repeat_interleave: Invalid output_size, expected {total} but got {output_size}")
    if counts.size == 1:  # one count for all: a broadcast, cheaper than an index
        r = int(counts.reshape(()))
        if input.ndim == 0:
            return shape.expand(shape.reshape(input, (1,)), (r,), written=True)
        grown = (*input.shape[:axis + 1], r, *input.shape[axis + 1:])
        y = shape.expand(shape.unsqueeze(input, axis + 1), grown, written=True)
        return shape.reshape(y, tuple(n * r if d == axis else n for d, n in enumerate(input.shape)))
    index = xp.repeat(xp.arange(size, dtype=int64), counts.reshape(-1))
    return IndexSelect.apply(input, dim=axis, index=index)


class Flip(Primitive):
    """y = x reversed along dims;   dL/dx = dL/dy reversed along the same dims. y is laid out as x (PyTorch's
    preserve_format: a channels_last image flips into a channels_last one)."""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        return preserved_copy(x, xp.flip(x, self.dims) if self.dims else x)

    def backward(self, grad, y, x):
        return (Flip.apply(grad, dims=self.dims),)


@names("flip", function=False)
def flip(input, *order, dims=None):
    """input reversed along each of dims (x.flip(0, 1), x.flip([0, 1]) or x.flip(dims=[0, 1]))."""
    if not order and dims is None:  # (dims=() flips nothing; no dims at all is a mistake, as PyTorch says)
        raise TypeError('flip() missing 1 required positional arguments: "dims"')
    if dims is not None:
        _check_dims_sequence(dims)
    dims = _sizes(sizes_or_keyword(order, "dims", dims), "flip")
    return Flip.apply(input, dims=normalize_dims(dims, input.ndim, empty_is_every=False))


@names("flip", method=False)
def flip_function(input, dims=None):
    """autograd.flip(input, dims): dims is a sequence, flip(x, [0, 1]) (only the method takes them one by one)."""
    return flip(input, dims=dims)


def _check_dims_sequence(dims):
    """PyTorch's TypeError for flip's dims given as one int (or anything but a list or tuple of ints): x.flip(-1)
    reads its ints as the dims, torch.flip(x, -1) and x.flip(dims=-1) refuse the lone int."""
    if not isinstance(dims, (tuple, list)):
        raise TypeError(f"flip(): argument 'dims' must be tuple of ints, not {type(dims).__name__}")


@names("fliplr")
def fliplr(input):
    """input reversed left to right (along dim 1; at least 2-D)."""
    if input.ndim < 2:
        raise RuntimeError(f"Input must be >= 2-d, got shape {tuple(input.shape)}")
    return Flip.apply(input, dims=(1,))


@names("flipud")
def flipud(input):
    """input reversed upside down (along dim 0; at least 1-D)."""
    if input.ndim < 1:
        raise RuntimeError("Input must be >= 1-d, got a 0-d tensor")
    return Flip.apply(input, dims=(0,))


class Roll(Primitive):
    """y = x shifted cyclically by shifts along dims;   dL/dx = dL/dy shifted back"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        return pytorchs_layout(xp.roll(x, self.shifts, self.dims), (x,))  # (row-major, as PyTorch's, or channels-last)

    def backward(self, grad, y, x):
        return (Roll.apply(grad, shifts=tuple(-s for s in self.shifts), dims=self.dims),)


@names("roll")
def roll(input, shifts, dims=None):
    """Elements shifted cyclically by ``shifts`` along ``dims`` (all elements, flattened, when None)."""
    shifts = int_or_ints(shifts, "shifts")
    if len(shifts) == 0:
        raise RuntimeError("`shifts` required")
    if dims is not None and input.ndim == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    dims = () if dims is None else int_or_ints(dims)
    if not dims:  # (no dims: over the flattened tensor)
        if len(shifts) != 1:
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:0")
        flat = shape.reshape(input, (-1,))
        return named_node(shape.reshape(Roll.apply(flat, shifts=(int(shifts[0]),), dims=(0,)), input.shape), None,
                          "RollBackward0", (input,))
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}")
    return Roll.apply(input, shifts=tuple(int(s) for s in shifts), dims=tuple(dim_index(d, input.ndim) for d in dims))


@names("rot90")
@node_named("Rot90Backward0")
def rot90(input, k=1, dims=(0, 1)):
    """input turned by 90° k times in the plane of dims (from the first dim towards the second)."""
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    if input.ndim < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {input.ndim}")
    a, b = (dim_index(d, input.ndim) for d in dims)
    if a == b:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {a} and dim1 = {b}")
    k %= 4
    if k == 1:
        return shape.transpose(Flip.apply(input, dims=(b,)), a, b)
    if k == 2:
        return Flip.apply(input, dims=tuple(sorted((a, b))))
    if k == 3:
        return Flip.apply(shape.transpose(input, a, b), dims=(b,))
    return named_node(input.clone(), None, "Rot90Backward0", (input,))  # (a copy, as PyTorch's: a board's
    # identity symmetry written into must leave the board alone)


@names("movedim", "moveaxis")
def movedim(input, source, destination):
    """input with dims ``source`` moved to positions ``destination``, the others keeping their order."""
    source, destination = int_or_ints(source), int_or_ints(destination)
    if len(source) != len(destination):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(source)} dims) should "
                           f"contain the same number of dims as destination ({list(destination)} dims)")
    source = [dim_index(d, input.ndim) for d in source]
    destination = [dim_index(d, input.ndim) for d in destination]
    for dims, name in ((source, "source"), (destination, "destination")):
        if len(set(dims)) < len(dims):
            raise RuntimeError(f"movedim: repeated dim in `{name}` ({dims})")
    if input.ndim == 0:  # dims 0 and -1 name a scalar's one place (as PyTorch wraps them): nothing moves
        return shape.permute(input, ())
    order = [d for d in range(input.ndim) if d not in source]
    for d, s in sorted(zip(destination, source)):
        order.insert(d, s)
    return shape.permute(input, order)


@names("swapaxes")
def swapaxes(input, axis0, axis1):
    """transpose under NumPy's names."""
    return shape.transpose(input, dim_index(axis0, input.ndim), dim_index(axis1, input.ndim))


@names("swapdims")
def swapdims(input, dim0, dim1):
    """transpose again, with PyTorch's keywords for this alias (``swapdims(x, dim0=0, dim1=1)``)."""
    return swapaxes(input, dim0, dim1)


@names("unflatten")
def unflatten(input, dim, sizes):
    """dim split into several dims of the given sizes (one may be -1)."""
    axis = dim_index(dim, input.ndim)
    sizes = tuple(int(n) for n in sizes)
    known = 1
    for n in sizes:
        known *= n if n != -1 else 1
    if -1 not in sizes and known != input.shape[axis]:
        raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the size of dim {dim} "
                           f"({input.shape[axis]}) in the input tensor")
    return shape._new_view(input, shape.reshape(input, (*input.shape[:axis], *sizes, *input.shape[axis + 1:])))


@names("unfold", function=False)
@node_named("UnfoldBackward0")
def unfold(input, dimension, size, step):
    """Every window of ``size`` elements along dimension, ``step`` apart: that dim becomes the count of
    windows and a new last dim of length size holds each window (x.unfold(0, 2, 1) of [a, b, c] is
    [[a, b], [b, c]]); overlapping windows add their gradients."""
    axis = dim_index(dimension, input.ndim)
    length = input.shape[axis] if input.ndim else 1
    if size < 0:
        raise RuntimeError(f"size is {size} but must be >= 0")
    if size > length:
        raise RuntimeError(f"maximum size for tensor at dimension {axis} is {length} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    if input.ndim == 0:  # one window of size elements (0 or 1) of x itself
        return shape.reshape(input, (1,))[:size]
    return Unfold.apply(input, dim=axis, size=size, step=step)


class Unfold(Primitive):
    """y = x's windows of ``size`` elements ``step`` apart along dim, a view of x's memory (dim becomes the
    count of windows, a new last dim runs along each window; overlapping windows show the same elements);
    dL/dx = each window's gradient added back where the window lies (overlapping windows add up)"""

    saves_inputs = False  # backward needs no input's values
    is_view = True
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        d, count = self.dim, (x.shape[self.dim] - self.size) // self.step + 1
        return strided_view(x, (*x.shape[:d], count, *x.shape[d + 1:], self.size),
                            (*x.strides[:d], x.strides[d] * self.step, *x.strides[d + 1:], x.strides[d]))

    def backward(self, grad, y, x):
        d, count = self.dim, grad.shape[self.dim]  # (the gradient has y's shape: its windows along dim)
        windows = (xp.arange(0, count * self.step, self.step)[:, None] + xp.arange(self.size)).reshape(-1)
        lined_up = shape.reshape(movedim(grad, -1, d + 1), (*x.shape[:d], count * self.size, *x.shape[d + 1:]))
        zeros = Tensor._make(xp.zeros(x.shape, dtype=grad.dtype))
        return (IndexAddAlong.apply(zeros, lined_up, dim=d, index=windows, alpha=1, fresh=True),)


@names("broadcast_to")
def broadcast_to(input, size):
    """input expanded to ``size`` (NumPy's broadcasting rules): a new view, also of input's own shape."""
    return shape._new_view(input, shape.expand(input, tuple(size)), "ExpandBackward0")


@names("broadcast_tensors", method=False)
def broadcast_tensors(*tensors):
    """The tensors expanded to their common broadcast shape (a ShapeError, PyTorch's RuntimeError, where
    there is none)."""
    try:
        common = xp.broadcast_shapes(*(t.shape for t in tensors))
    except ValueError:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ShapeError(f"broadcast_tensors: shapes {shapes} cannot be broadcast to one shape: "
                         f"{broadcast_mismatch(*(t.shape for t in tensors))}") \
            from None
    return tuple(shape.expand(t, common) for t in tensors)


@names("broadcast_shapes", method=False)
def broadcast_shapes(*shapes):
    """The shape that tensors of the given shapes broadcast to (an int n stands for the shape (n,))."""
    dims = []
    for s in shapes:
        if isinstance(s, numbers.Integral):
            dims.append((int(s),))
        elif isinstance(s, Sequence) and all(isinstance(n, numbers.Integral) for n in s):
            dims.append(tuple(int(n) for n in s))
        else:
            raise RuntimeError(f"Input shapes should be of type ints, a tuple of ints, or a list of ints, got {s}")
    if any(n < 0 for d in dims for n in d):
        raise ValueError("Attempting to broadcast a dimension with negative length!")
    result = ()
    for i, d in enumerate(dims):
        for k in range(1, min(len(result), len(d)) + 1):
            if result[-k] != d[-k] and 1 not in (result[-k], d[-k]):
                raise RuntimeError(f"Attempting to broadcast a dimension of length {d[-k]} at {-k}! Mismatching "
                                   f"argument at index {i} had {d}; but expected shape should be broadcastable to "
                                   f"{list(result)}")
        result = xp.broadcast_shapes(result, d)
    return Size(result)


@names("ravel")
def ravel(input):
    """input as a vector: a view of input when it is contiguous, else a view of a contiguous copy (as PyTorch's
    contiguous().view(-1): the result's _base is the copy)."""
    dense = input.contiguous()
    return shape._new_view(dense, shape.reshape(dense, (-1,)))


@names("adjoint")
def adjoint(input):
    """The conjugate transpose: the last two dims swapped, complex numbers conjugated."""
    if matrices_only(input, "adjoint()", conjugates=True):
        return conj(input)
    return conj(swapaxes(input, -2, -1))


@names("unravel_index", method=False)
def unravel_index(indices, shape):
    """The coordinates, one int64 tensor per dim, of flat ``indices`` into a tensor of ``shape``
    (the argument shadows the shape module here, as PyTorch names it)."""
    flat = indices._data if isinstance(indices, Tensor) else xp.asarray(indices)
    if flat.dtype.kind not in "iu":
        raise TypeError(f"expected 'indices' to be integer dtype, but got {type_name(flat.dtype)}")
    flat = flat.astype(int64)  # (PyTorch's arithmetic is int64's: int32 indices into 2**32 elements)
    if isinstance(shape, Tensor) or not isinstance(shape, (int, Sequence)):
        raise TypeError(f"expected 'shape' to be int or sequence of ints, but got {type(shape)}")
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    for n in dims:
        if not isinstance(n, int):
            raise TypeError(f"expected 'shape' sequence to only contain ints, but got {type(n)}")
    if any(n < 0 for n in dims):
        raise ValueError(f"'shape' cannot have negative values, but got {dims}")
    size = 1
    for n in dims:
        size *= n
    outside = (flat < -size) | (flat >= size)
    if outside.any():
        raise RuntimeError(f"index {flat[outside].flat[0]} is out of bounds for shape {dims}")
    return tuple(Tensor._make(c.astype(int64)) for c in xp.unravel_index(flat % size, dims))
