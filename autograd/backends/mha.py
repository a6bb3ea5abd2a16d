"""``autograd.backends.mha``: PyTorch's ``torch.backends.mha`` switch for the "fast path" of ``MultiheadAttention``
and the Transformer encoder: the fused inference kernels PyTorch runs in eval mode when no gradient is wanted.
chainrule computes the same maths either way, but keeps what the fused kernels do differently (a query whose every
key is masked gets NaN there, 0 elsewhere; an encoder pads its masked positions with 0), so the switch matters."""

_is_fastpath_enabled = True


def get_fastpath_enabled():
    """Whether ``MultiheadAttention`` and the Transformer encoder may take their fused inference path."""
    return _is_fastpath_enabled


def set_fastpath_enabled(value):
    """Allow (True) or forbid (False) the fused inference path."""
    global _is_fastpath_enabled
    _is_fastpath_enabled = bool(value)
