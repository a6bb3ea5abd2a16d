"""The memory layouts PyTorch's kernels give their results, where NumPy's would differ: a result laid out otherwise
is a different tensor to a program that views it (``y.view(-1)`` shares PyTorch's memory, where here it would have
to copy, and a write through the view would not reach y)."""

from ..constants import channels_last, channels_last_3d

_CHANNELS_LAST = {4: channels_last, 5: channels_last_3d}


def stored_channels_last(array):
    """Whether ``array`` is a 4-d map stored N, H, W, C (or a 5-d volume stored N, D, H, W, C) and not also row-major:
    PyTorch's suggested memory format for it is channels-last."""
    memory_format = _CHANNELS_LAST.get(array.ndim)
    return (memory_format is not None and not array.flags.c_contiguous
            and array.transpose(memory_format.order).flags.c_contiguous)


def in_suggested_layout(y, like):
    """y laid out in ``like``'s suggested memory format, PyTorch's rule for the kernels that follow their input's
    layout (batch norm, the reflect and replicate pads, interpolation): channels-last where ``like`` is stored so
    (``stored_channels_last``), row-major otherwise (a transposed (N, L, C) sequence)."""
    if stored_channels_last(like._data):
        return y.contiguous(memory_format=_CHANNELS_LAST[like.ndim])
    return y.contiguous()
