"""Whether a value is a sparse tensor, as the core sees one. A sparse COO tensor (``autograd.sparse``) is no
``Tensor`` subclass, and the sparse package is built on the core, so the core never imports it (arrows point
down): it asks the value. Every op, factory and optimizer that hands a sparse operand to the sparse tensor's
own method, or refuses one, asks here."""


def is_sparse(value):
    """Whether ``value`` is a sparse tensor: its ``is_sparse`` is True. A dense Tensor's is False; a number, an
    array or None has none; ``is True``, not truth, so that an object answering every attribute (a mock) is
    not taken for one."""
    return getattr(value, "is_sparse", False) is True
