"""``Size``: a tensor's shape as PyTorch gives it from ``x.size()``: a tuple that prints as one."""

import math
import operator


def _length(i, n):
    """One size as an int: anything with ``__index__`` (a NumPy integer, a one-element integer tensor)."""
    try:
        return operator.index(n)
    except TypeError:
        raise TypeError(f"torch.Size() takes an iterable of 'int' (item {i} is '{type(n).__name__}')") from None


def sizes_argument(sizes):
    """The sizes a shape-taking call got, as a tuple: ``f(2, 3)`` or ``f((2, 3))`` (a tuple, a list, a Size, a
    1-d tensor), as PyTorch reads them. A lone size may be any integer: a NumPy integer, a 0-d integer tensor
    (``zeros(numpy.int64(2))``, ``zeros(n)`` with n a tensor), which is one size, not a sequence of them."""
    if len(sizes) == 1 and not _is_one_size(sizes[0]):
        return tuple(sizes[0])
    return tuple(sizes)


def refuse_negative_sizes(shape):
    """PyTorch's refusal of a shape with a negative size, for a tensor to be made of it (a factory's, a legacy
    constructor's): NumPy's own error would be a ValueError in other words."""
    for n in shape:
        if n < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {n}: {list(shape)}")


def _is_one_size(value):
    """An int, a NumPy integer or a 0-d tensor: one size (a list, a tuple, a Size, a 1-d tensor hold several)."""
    return type(value) is int or hasattr(value, "__index__") and getattr(value, "ndim", 0) == 0


class Size(tuple):
    """A tensor's shape (PyTorch's torch.Size): a tuple (compares, unpacks, hashes and indexes as one) whose
    slices, sums and repeats are Sizes again."""

    def __new__(cls, sizes=()):
        if type(sizes) is cls:  # (immutable: the same sizes)
            return sizes
        if type(sizes) is not tuple or not set(map(type, sizes)) <= {int}:  # (NumPy's shapes pass as they are)
            sizes = tuple(_length(i, n) for i, n in enumerate(sizes))
        return tuple.__new__(cls, sizes)

    def __repr__(self):
        return f"Size({list(self)})"

    def __getitem__(self, key):
        item = tuple.__getitem__(self, key)
        return Size(item) if isinstance(key, slice) else item

    def __add__(self, other):
        return Size(tuple.__add__(self, other)) if isinstance(other, tuple) else NotImplemented

    def __radd__(self, other):
        return Size(tuple.__add__(other, self)) if isinstance(other, tuple) else NotImplemented

    def __mul__(self, times):
        return Size(tuple.__mul__(self, times))

    __rmul__ = __mul__

    def numel(self):
        return math.prod(self)
