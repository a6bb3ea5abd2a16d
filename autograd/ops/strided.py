"""``x.as_strided(size, stride, storage_offset=None)``: the elements of x's memory at positions
storage_offset + Σ_d i_d · stride_d (in elements, from the start of the memory x lives in, as
PyTorch's storage), in the shape ``size``. Windows that overlap (a stride smaller than the
window) show the same element several times: sliding windows without copying.

    dL/dx_k = Σ of dL/dy over the output elements that show x_k

(positions outside x's own elements, which x[1:].as_strided can reach, get no gradient, as
in PyTorch). For a contiguous x the result is a view, as PyTorch's: a write through it changes
x and is recorded. For a non-contiguous x it is a copy of the same values (the view would be
defined on x's memory layout, which a recorded write replays on contiguous arrays).

``as_strided_scatter(input, src, size, stride, storage_offset=None)`` is the write the other way:
a copy of input with the elements that input.as_strided(size, stride, storage_offset) shows
replaced by src's, so dL/dsrc = dL/dy at those elements and dL/dinput = dL/dy with them zeroed.
``x.as_strided_(...)`` and ``autograd.as_strided_`` make x itself that view (reshaping_in_place.py).
"""

from ..backend import address, int64, memory_owner, strided_view, xp
from ..primitive import Primitive
from ..tensor import Tensor
from . import shape
from .names import names


def _root(array):
    """The array whose memory ``array`` shows, and array's first element's place in it (elements)."""
    root = memory_owner(array)
    offset = address(array) - address(root)
    return root, offset // array.itemsize


def _positions(size, stride, start):
    """start + Σ_d i_d · stride_d for every index of ``size``, in row-major order."""
    positions = xp.full(size, start, dtype=int64)
    for d, (n, step) in enumerate(zip(size, stride)):
        along = [-1 if e == d else 1 for e in range(len(size))]
        positions = positions + (xp.arange(n, dtype=int64) * step).reshape(along)
    return positions


class AsStrided(Primitive):
    """y = x's memory read at the positions size and stride give;   dL/dx = dL/dy added back at
    the elements of x each output element shows (overlapping windows add up)"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # (the gradient is moved and summed, scaled by real shares only)
    sharing = None  # where x's own elements overlap (an expanded x): (each element's position, 1 / its sharers)

    def forward(self, x):
        memory, start = _storage(x, self.size, self.stride, self.start, self.reach)
        if self.is_view:
            if x.strides != self.layout:  # (a replay on an array laid out otherwise than x was)
                raise RuntimeError("as_strided view replayed on a tensor with another memory layout: write through "
                                   "a contiguous copy instead")
            steps = tuple(s * x.itemsize for s in self.stride)
            # (on the memory's own buffer, so that the view's storage_offset and data_ptr are PyTorch's)
            return strided_view(memory[start:], self.size, steps)
        return memory[_positions(self.size, self.stride, start)]

    def backward(self, grad, y, x):
        inside = self.source >= 0
        values = grad.reshape(-1)[Tensor._make(inside.reshape(-1))]
        placed = shape.IndexAdd.apply(values, index=(self.source[inside],), basic=False, shape=(self.count,))
        if self.sharing is not None:  # the gradient of a position, split evenly among x's elements that show it
            position, share = self.sharing  # (as PyTorch's; an expand's backward then sums the shares back)
            totals = shape.IndexAdd.apply(placed, index=(position,), basic=False, shape=(int(position.max()) + 1,))
            placed = totals[Tensor._make(position)] * Tensor._make(share.astype(grad.dtype))
        return (placed.reshape(self.shape),)


def _storage(x, size, stride, start, reach):
    """(x's memory as one flat array, the position ``start`` elements past x's first element in it),
    refused as PyTorch refuses a layout that reaches outside the memory (``reach`` elements from there)."""
    root, offset = _root(x)
    if not root.flags.c_contiguous:
        raise RuntimeError("as_strided: the memory of this tensor is not one row-major block")
    memory = root.reshape(-1)
    start = offset + start
    refuse_outside(size, stride, start, reach, x.itemsize, memory.size)
    return memory, start


def refuse_outside(size, stride, start, reach, itemsize, available):
    """PyTorch's refusal of a layout that reaches past the ``available`` elements of a memory."""
    if start < 0 or (reach > 0 and start + reach > available):
        raise RuntimeError(
            f"setStorage: sizes {list(size)}, strides {list(stride)}, storage offset "
            f"{start}, and itemsize {itemsize} requiring a storage size of {(start + reach) * itemsize} "
            f"are out of bounds for storage of size {available * itemsize}")


def reach_of(size, stride):
    """How many positions a layout spans from its first element (0 for no elements)."""
    return 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))


def checked_layout(size, stride):
    """``size`` and ``stride`` as tuples of ints, refused as PyTorch refuses them (as_strided,
    empty_strided): one stride per dim, none negative."""
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise RuntimeError(f"mismatch in length of strides and shape: size {list(size)}, stride {list(stride)}")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"as_strided: Negative strides are not supported at the moment, got strides: "
                           f"{list(stride)}")
    return size, stride


@names("as_strided")
def as_strided(input, size, stride, storage_offset=None):
    """The view of input's memory with shape ``size`` and steps ``stride`` (elements), starting at
    ``storage_offset`` (input's own offset by default); see the module's docstring."""
    size, stride = checked_layout(size, stride)
    start, reach, source, sharing = _shown(input, size, stride, storage_offset)
    return AsStrided.apply(input, size=size, stride=stride, start=start, reach=reach, source=source.reshape(size),
                           count=input.numel(), shape=tuple(input.shape), layout=input._data.strides,
                           is_view=bool(input._data.flags.c_contiguous), sharing=sharing)


def _shown(input, size, stride, storage_offset):
    """(start, reach, source, sharing) of input.as_strided(size, stride, storage_offset): its first position
    counted from input's first element, how many positions it spans, for each of its elements (row-major)
    which of input's elements (row-major numbering) it shows, -1 for none, and, where input's own elements
    overlap (an expanded input), the AsStrided node's ``sharing``: for each element of input the number of
    its position among them, and 1 / how many elements of input show that position (None otherwise)."""
    own_offset = input.storage_offset()
    start = (own_offset if storage_offset is None else int(storage_offset)) - own_offset  # from input's first element
    reach = reach_of(size, stride)
    wanted = _positions(size, stride, start).reshape(-1)
    held = _positions(tuple(input.shape), input.stride(), 0).reshape(-1)
    order = xp.argsort(held, kind="stable")
    sorted_held = held[order]
    sharing = None
    if input.requires_grad and sorted_held.size > 1 and (sorted_held[1:] == sorted_held[:-1]).any():
        _, position, sharers = xp.unique(held, return_inverse=True, return_counts=True)
        sharing = (position, 1.0 / sharers[position])
    found = xp.clip(xp.searchsorted(sorted_held, wanted), 0, max(sorted_held.size - 1, 0))
    source = xp.where(sorted_held[found] == wanted, order[found], -1) if sorted_held.size else -xp.ones_like(wanted)
    return start, reach, source, sharing


@names("as_strided_scatter")
def as_strided_scatter(input, src, size, stride, storage_offset=None):
    """A copy of input with the elements input.as_strided(size, stride, storage_offset) shows
    replaced by src's (src of shape ``size``); see the module's docstring. Positions in input's
    memory that are none of input's elements (the gaps of x[:, ::2]) take nothing, as in PyTorch."""
    size, stride = checked_layout(size, stride)
    if tuple(src.shape) != size:
        raise RuntimeError(f"expected src to have a size equal to the slice of self. src size = {list(src.shape)}, "
                           f"slice size = {list(size)}")
    start, reach, source, _ = _shown(input, size, stride, storage_offset)
    _storage(input._data, size, stride, start, reach)  # (refuses a layout outside input's memory)
    if xp.unique(_positions(size, stride, 0)).size != source.size:
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a single "
                           "memory location. Please clone() the tensor before performing the operation.")
    inside = source >= 0
    values = src.reshape(-1).to(input.dtype)[Tensor._make(xp.nonzero(inside)[0])]
    return input.reshape(-1).index_put((Tensor._make(source[inside]),), values).reshape(input.shape)


@names("slice_inverse", method=False)
def slice_inverse(input, src, dim=0, start=None, end=None, step=1):
    """The tensor that ``input`` is the slice start:end:step (along dim) of: input's memory read in
    src's layout (shape, strides, offset), src being a tensor laid out as that whole tensor. As in
    PyTorch (a helper of its functionalization), only src's layout is read; dim, start, end and
    step say which slice input is."""
    return as_strided(input, tuple(src.shape), src.stride(), src.storage_offset())
