"""Joining tensors: ``cat`` along an existing dim and ``stack`` along a new one, one primitive for both.

    y = [x_1, x_2, ...] joined along dim;   dL/dx_k = the slice of dL/dy where x_k sits
"""

from ..backend import is_dense, xp
from ..errors import ShapeError
from ..primitive import Primitive, named_node
from ..sparse_layout import is_sparse
from ..tensor import Tensor
from .axes import dim_index, normalize_dims
from .conversion import type_name
from .elementwise import row_major
from .layouts import stored_channels_last
from .names import _numpy_aliases
from .outputs import write_out
from .promotion import can_cast, common_dtype
from .shape import unsqueeze


def pytorchs_layout(y, inputs):
    """y laid out as PyTorch's cat and roll lay out their result: row-major, unless every input is laid out
    channels-last (N, H, W, C in memory: then y keeps NumPy's layout, which follows theirs). Dims beyond 4 are left
    as NumPy lays them out (a stack of channels-last maps: PyTorch keeps their layout there too)."""
    if y.ndim > 4 or (y.ndim == 4 and all(stored_channels_last(x) for x in inputs)):
        return y
    return row_major(y)


class Cat(Primitive):
    """y = the inputs joined along dim;   dL/dx_k = the slice of dL/dy where x_k sits"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    legacy_empties = False  # some inputs are 1-d empties beside tensors of more dims: left out (cat's)

    def forward(self, *xs):
        if self.legacy_empties:
            ndim = max(x.ndim for x in xs)
            xs = [x for x in xs if not _left_out(x, ndim)]
        return pytorchs_layout(xp.concatenate(xs, axis=self.dim), xs)

    def backward(self, grad, y, *xs):
        grads, start = [], 0
        for x in xs:
            if self.legacy_empties and _left_out(x, grad.ndim):  # (left out of the join: an empty gradient)
                grads.append(Tensor._make(xp.zeros((0,), dtype=grad.dtype)) if x.requires_grad else None)
                continue
            stop = start + x.shape[self.dim]
            index = (slice(None),) * self.dim + (slice(start, stop),)
            grads.append(grad[index] if x.requires_grad else None)
            start = stop
        return tuple(grads)


def _left_out(x, ndim):
    """Whether cat leaves ``x`` out of a result of ``ndim`` dims: a 1-d empty tensor beside tensors of more dims
    (PyTorch's legacy rule; it still gets a gradient, empty)."""
    return x.shape == (0,) and ndim > 1


def _sequence_of_tensors(name, tensors):
    if isinstance(tensors, Tensor) or not hasattr(tensors, "__iter__"):
        raise TypeError(f"{name}() expects a sequence of tensors (a list or tuple), got "
                        f"{type(tensors).__name__}; write autograd.{name}([a, b])")
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor) and not is_sparse(t):  # (PyTorch's TypeError: NumPy
            # arrays, lists and numbers are not joined; sparse tensors are, by their own cat and stack)
            kind = f"{type(t).__module__}.{type(t).__name__}".removeprefix("builtins.")
            hint = (f" of shape {tuple(t.shape)}: convert it with autograd.from_numpy(x) or autograd.tensor(x)"
                    if hasattr(t, "shape") else ": convert it with autograd.tensor(x)")
            raise TypeError(f"expected Tensor as element {i} in argument 0, but got {kind}{hint}")
    return tensors


def _refuse_cast_into(out, tensors):
    """PyTorch's cat and stack refuse an ``out`` of a dtype their inputs' common dtype cannot be cast to (a float
    into integers), with a TypeError of their own, before anything is joined."""
    if isinstance(out, Tensor) and isinstance(tensors[0], Tensor):
        dtype = common_dtype([t.dtype for t in tensors])
        if not can_cast(dtype, out.dtype):
            raise TypeError(f"torch.cat(): input types can't be cast to the desired output type "
                            f"{type_name(out.dtype)} (the inputs' common dtype is {type_name(dtype)})")


def _refuse_overlap_with_out(out, tensors):
    """PyTorch's refusal of a cat or stack into an ``out`` that is one of its inputs or shares memory with one:
    its kernel would read values it has already overwritten. (Told for dense layouts, as PyTorch tells it: other
    layouts are "too hard" to judge, and pass.)"""
    if not isinstance(out, Tensor):
        return
    for t in tensors:
        written, read = out._data, t._data
        if t is out or (written.size and read.size and is_dense(written) and is_dense(read)
                        and xp.may_share_memory(written, read)):
            raise RuntimeError("unsupported operation: some elements of the input tensor and the written-to tensor "
                               "refer to a single memory location. Please clone() the tensor before performing the "
                               "operation.")


def cat(tensors, dim=0, *, out=None):
    """Join tensors along an existing dim (shapes must agree elsewhere). As PyTorch's, a 1-d empty tensor
    joins anything (its legacy rule: it is left out, but for its dtype), and a 0-d one nothing."""
    tensors = _sequence_of_tensors("cat", tensors)
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    if not all(isinstance(t, Tensor) for t in tensors):  # sparse tensors (autograd.sparse): their entries joined
        from ..sparse.making import cat_sparse

        return write_out(cat_sparse(tensors, dim), out)
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise RuntimeError(f"zero-dimensional tensor (at position {i}) cannot be concatenated")
    _refuse_cast_into(out, tensors)
    _refuse_overlap_with_out(out, tensors)
    if len({t.dtype for t in tensors}) > 1:  # PyTorch's promotion, not NumPy's; the casts are recorded
        dtype = common_dtype([t.dtype for t in tensors])
        tensors = [t if t.dtype == dtype else t.to(dtype) for t in tensors]
    kept = [t for t in tensors if t.shape != (0,)]
    if not kept:  # only legacy empties: nothing to join, along whatever dim
        return write_out(Cat.apply(*tensors, dim=0), out)
    axis = dim_index(dim, kept[0].ndim)  # (an int: None, a bool or a tuple is refused, as PyTorch's)
    first = kept[0].shape
    for t in kept[1:]:
        if t.ndim != len(first):
            raise ShapeError(f"Tensors must have same number of dimensions: got {len(first)} and {t.ndim}")
        if any(a != b for i, (a, b) in enumerate(zip(t.shape, first)) if i != axis):
            shapes = ", ".join(str(tuple(u.shape)) for u in kept)
            raise ShapeError(f"Sizes of tensors must match except in dimension {dim}: shapes {shapes}")
    if len(kept) == len(tensors):  # (the common case: no legacy empty to leave out)
        return write_out(Cat.apply(*tensors, dim=axis), out)
    return write_out(Cat.apply(*tensors, dim=axis, legacy_empties=True), out)


def stack(tensors, dim=0, *, out=None):
    """Join equally shaped tensors along a new dim."""
    tensors = _sequence_of_tensors("stack", tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    if not all(isinstance(t, Tensor) for t in tensors):  # sparse tensors (autograd.sparse): a new sparse dim
        from ..sparse.making import stack_sparse

        return write_out(stack_sparse(tensors, dim), out)
    normalize_dims(dim, tensors[0].ndim + 1)  # (a dim out of range is reported first, as PyTorch's)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        shapes = ", ".join(map(str, shapes))
        raise ShapeError(f"stack expects each tensor to be equal size (the same shape), got {shapes}")
    _refuse_cast_into(out, tensors)
    _refuse_overlap_with_out(out, tensors)
    joined = cat([unsqueeze(t, dim) for t in tensors], dim=dim % (tensors[0].ndim + 1))
    return write_out(named_node(joined, Cat, "StackBackward0"), out)


# PyTorch takes NumPy's axis= for dim= here too (torch.cat([h, skip], axis=1), as the DDIM tutorial
# writes); autograd.cat and autograd.stack are these names, imported before the ops are declared
cat = _numpy_aliases(cat)
stack = _numpy_aliases(stack)
