"""``Size``: a tensor's shape as PyTorch gives it from ``x.size()``: a tuple that prints as one."""

import math


class Size(tuple):
    """A tensor's shape (PyTorch's torch.Size): a tuple (compares, unpacks and indexes as one)."""

    def __repr__(self):
        return f"Size({list(self)})"

    def numel(self):
        return math.prod(self)
