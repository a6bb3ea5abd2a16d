"""The memory layouts PyTorch's kernels give their results, where NumPy's would differ: a result laid out otherwise
is a different tensor to a program that views it (``y.view(-1)`` shares PyTorch's memory, where here it would have
to copy, and a write through the view would not reach y)."""

from ..constants import channels_last, channels_last_3d

_CHANNELS_LAST = {4: channels_last, 5: channels_last_3d}


def in_suggested_layout(y, like):
    """y laid out in ``like``'s suggested memory format, PyTorch's rule for the kernels that follow their input's
    layout (batch norm, the reflect and replicate pads, interpolation): channels-last where ``like`` is a 4-d map
    stored N, H, W, C (or a 5-d volume stored N, D, H, W, C) and not also row-major, row-major otherwise (a
    transposed (N, L, C) sequence)."""
    memory_format = _CHANNELS_LAST.get(like.ndim)
    if memory_format is not None and not like.is_contiguous() and like.is_contiguous(memory_format=memory_format):
        return y.contiguous(memory_format=memory_format)
    return y.contiguous()
