"""Shape and indexing primitives: each forward beside its local derivative.

Moving elements around has a simple derivative: move the gradient back.
Reshape, permute, expand and basic indexing return views of their input.
"""

import builtins

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .axes import dim_index, normalize_dims
from .elementwise import unbroadcast


class Reshape(Primitive):
    """y = x laid out as another shape;   dL/dx = dL/dy reshaped back"""

    is_view = True

    def forward(self, x):
        return x.reshape(self.shape)

    def backward(self, grad, y, x):
        return (grad.reshape(x.shape),)


def _shape_argument(shape):
    """Accept reshape(2, 3) and reshape((2, 3)), as PyTorch does."""
    if len(shape) == 1 and not isinstance(shape[0], int):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, shape):
    shape = _shape_argument(shape)
    if -1 in shape and shape.count(-1) == 1:  # spell the inferred size out, to spot a no-op
        known = 1
        for n in shape:
            known *= n if n != -1 else 1
        if known and x._data.size % known == 0:
            shape = tuple(x._data.size // known if n == -1 else n for n in shape)
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape=shape)


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, (1,))
    start, end = dim_index(start_dim, x.ndim), dim_index(end_dim, x.ndim)
    merged = 1
    for n in x.shape[start:end + 1]:
        merged *= n
    return reshape(x, (*x.shape[:start], merged, *x.shape[end + 1:]))


def unsqueeze(x, dim):
    dim = dim_index(dim, x.ndim + 1)
    return reshape(x, (*x.shape[:dim], 1, *x.shape[dim:]))


def squeeze(x, dim=None):
    axes = normalize_dims(dim, x.ndim)
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


class Permute(Primitive):
    """y = x with its axes reordered;   dL/dx = dL/dy with the inverse order"""

    is_view = True

    def forward(self, x):
        return xp.transpose(x, self.dims)

    def backward(self, grad, y, x):
        inverse = [0] * len(self.dims)
        for position, axis in enumerate(self.dims):
            inverse[axis] = position
        return (grad.permute(*inverse),)


def permute(x, dims):
    dims = _shape_argument(dims)
    if sorted(d % builtins.max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not an ordering of the {x.ndim} axes of shape {x.shape}")
    return Permute.apply(x, dims=tuple(d % x.ndim for d in dims))


def transpose(x, dim0, dim1):
    dims = list(range(x.ndim))
    dim0, dim1 = dim_index(dim0, x.ndim), dim_index(dim1, x.ndim)
    if x.ndim == 0:  # a scalar's only "dim" is itself
        return x
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


class Expand(Primitive):
    """y = x broadcast to a larger shape;   dL/dx = dL/dy summed over the copies"""

    def forward(self, x):
        # a written copy rather than NumPy's read-only broadcast view: several
        # times cheaper to make at small sizes, and safe to change in place
        y = xp.empty(self.shape, dtype=x.dtype)
        y[...] = x
        return y

    def backward(self, grad, y, x):
        return (unbroadcast(grad, x),)


def expand(x, sizes):
    """x broadcast to ``sizes`` (-1 keeps a dim); x may have fewer dims, as in NumPy."""
    sizes = _shape_argument(sizes)
    added = len(sizes) - x.ndim
    shape = tuple(x.shape[i - added] if n == -1 else n for i, n in enumerate(sizes))
    if shape == x.shape:
        return x
    return Expand.apply(x, shape=shape)


def _is_basic(index):
    """True for an index of ints, slices, None and ... only (NumPy returns a view)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


class GetItem(Primitive):
    """y = x[index];   dL/dx = dL/dy put back at index, 0 elsewhere (repeated indices add up)"""

    def forward(self, x):
        self.is_view = _is_basic(self.index)
        return x[self.index]

    def backward(self, grad, y, x):
        return (IndexAdd.apply(grad, index=self.index, shape=x.shape, basic=self.is_view),)


class IndexAdd(Primitive):
    """y = zeros(shape) with x added at index: GetItem's adjoint;   dL/dx = dL/dy[index]"""

    def forward(self, x):
        y = xp.zeros(self.shape, dtype=x.dtype)
        if self.basic:
            y[self.index] = x
        else:
            xp.add.at(y, self.index, x)
        return y

    def backward(self, grad, y, x):
        return (grad[self.index],)


class Cat(Primitive):
    """y = the inputs joined along dim;   dL/dx_k = the slice of dL/dy where x_k sits"""

    def forward(self, *xs):
        return xp.concatenate(xs, axis=self.dim)

    def backward(self, grad, y, *xs):
        grads, start = [], 0
        for x in xs:
            stop = start + x.shape[self.dim]
            index = (slice(None),) * self.dim + (slice(start, stop),)
            grads.append(grad[index] if x.requires_grad else None)
            start = stop
        return tuple(grads)


def cat(tensors, dim=0):
    """Join tensors along an existing dim (shapes must agree elsewhere)."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    if tensors[0].ndim == 0:
        raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
    axis = normalize_dims(dim, tensors[0].ndim)[0]
    first = tensors[0].shape
    for t in tensors[1:]:
        if t.ndim != len(first) or any(a != b for i, (a, b) in enumerate(zip(t.shape, first)) if i != axis):
            shapes = ", ".join(str(u.shape) for u in tensors)
            raise ValueError(f"cat along dim {dim}: shapes {shapes} differ outside that dim")
    return Cat.apply(*tensors, dim=axis)


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new dim."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {', '.join(map(str, shapes))}")
    return cat([unsqueeze(t, dim) for t in tensors], dim=dim % (tensors[0].ndim + 1))
