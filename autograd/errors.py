"""Exception types shared across the package."""


class ShapeError(RuntimeError, ValueError):
    """Shapes that do not fit together (a reshape, cat, stack, expand or permute that cannot be).

    PyTorch raises RuntimeError here; NumPy, and chainrule's earlier messages, ValueError.
    Being both, it is caught by ``except RuntimeError`` in PyTorch programs and by
    ``except ValueError`` in NumPy-minded ones."""
