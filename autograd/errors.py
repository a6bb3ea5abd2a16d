"""Exception types shared across the package."""


class ShapeError(RuntimeError, ValueError):
    """Shapes that do not fit together (a reshape, cat, stack, expand or permute that cannot be).

    PyTorch raises RuntimeError here; NumPy, and chainrule's earlier messages, ValueError.
    Being both, it is caught by ``except RuntimeError`` in PyTorch programs and by
    ``except ValueError`` in NumPy-minded ones."""


class DtypeError(RuntimeError, TypeError):
    """A dtype an operation cannot take (an integer tensor asked to require grad, a float result
    written into an integer tensor). PyTorch raises RuntimeError; Python's habit is TypeError:
    being both, it is caught either way."""
