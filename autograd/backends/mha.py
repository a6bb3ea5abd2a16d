"""``autograd.backends.mha``: PyTorch's ``torch.backends.mha`` switch for the fused inference path ("fast path") of
``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``. Its values are the slow path's, but its attention uses
an ordinary softmax, so a query whose every key is masked comes out NaN; switched off, inference computes as
training does (nn/attention, nn/transformer)."""

_fastpath_enabled = True


def get_fastpath_enabled():
    """Whether the fused path may run (it still runs only where its conditions on the inputs hold)."""
    return _fastpath_enabled


def set_fastpath_enabled(value):
    global _fastpath_enabled
    _fastpath_enabled = value
