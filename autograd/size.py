"""``Size``: a tensor's shape as PyTorch gives it from ``x.size()``: a tuple that prints as one."""

import math
import operator


def _length(i, n):
    """One size as an int: anything with ``__index__`` (a NumPy integer, a one-element integer tensor)."""
    try:
        return operator.index(n)
    except TypeError:
        raise TypeError(f"torch.Size() takes an iterable of 'int' (item {i} is '{type(n).__name__}')") from None


class Size(tuple):
    """A tensor's shape (PyTorch's torch.Size): a tuple (compares, unpacks, hashes and indexes as one) whose
    slices, sums and repeats are Sizes again."""

    def __new__(cls, sizes=()):
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
