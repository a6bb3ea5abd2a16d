"""Axis bookkeeping shared by reductions and shape ops."""

import builtins


def normalize_dims(dim, ndim):
    """``dim`` (None, an int or a tuple, negatives allowed) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    if ndim == 0:  # a 0-d tensor accepts dim 0 and -1, as PyTorch, and has no axis to reduce
        for d in (dim,) if isinstance(dim, int) else tuple(dim):
            if d not in (0, -1):
                raise IndexError(f"Dimension out of range (expected to be in range of [-1, 0], but got {d})")
        return ()
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = []
    for d in dims:
        if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
                             f"but got {d}): dim {d} of a tensor of {ndim} dimensions")
        axes.append(d % ndim if ndim else 0)
    return tuple(sorted(axes))


def kept_shape(shape, axes):
    """``shape`` with the reduced ``axes`` kept as size 1 (keepdim=True's shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))
