"""Axis bookkeeping shared by reductions and shape ops."""

import builtins


def normalize_dims(dim, ndim):
    """``dim`` (None, an int or a tuple, negatives allowed) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = []
    for d in dims:
        if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise IndexError(f"dim {d} is out of range for a tensor of {ndim} dimensions")
        axes.append(d % ndim if ndim else 0)
    return tuple(sorted(axes))


def kept_shape(shape, axes):
    """``shape`` with the reduced ``axes`` kept as size 1 (keepdim=True's shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))
