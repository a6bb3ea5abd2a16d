"""PyTorch's channels-last layout as an array knows it: a 4-d image batch stored N, H, W, C (a 5-d volume N, D, H,
W, C), the channels innermost. The orders live here, below ``constants.py``'s memory formats, so that the core's
layout tests (random fills, ``stride()``) need not import the factories."""

ORDERS = {4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}  # the dims from the outermost in memory


def is_contiguous(array):
    """Whether ``array`` is laid out N, H, W, C (N, D, H, W, C) without gaps, its size-1 dims aside (PyTorch's
    is_contiguous(memory_format=channels_last)), and is not row-major too."""
    order = ORDERS.get(array.ndim)
    return order is not None and not array.flags.c_contiguous and array.transpose(order).flags.c_contiguous


def dense_strides(shape):
    """The strides (in elements) of a dense tensor of ``shape`` laid out channels-last, or None for a rank that
    has no such layout: each dim's step is the product of the sizes inside it in N, [D,] H, W, C order."""
    order = ORDERS.get(len(shape))
    if order is None:
        return None
    strides, step = [0] * len(shape), 1
    for dim in reversed(order):
        strides[dim] = step
        step *= max(shape[dim], 1)
    return tuple(strides)
