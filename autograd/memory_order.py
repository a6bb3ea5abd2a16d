"""In which order PyTorch's serial random kernels fill a tensor (``uniform_``, ``normal_``, dropout's mask):
one element after another through its memory. For a tensor PyTorch lays out row-major, that is the row-major
order; for a view that is not (a transpose, a permutation, a slice) it is the view's own memory order, and
``normal_`` draws one number at a time where its blocks of 16 need contiguous memory.

NumPy's layouts are not always PyTorch's: an op's result is row-major in PyTorch, whatever steps NumPy gave it
(a convolution's output here is batch-innermost, and elementwise ops on it keep that). So the memory order is
followed only for the tensors whose layout PyTorch shares: views (which know their base), and the tensors
``empty_like`` made like one (``randn_like(img.permute(2, 0, 1))``)."""

import weakref

from . import channels_last_layout

_MADE_LIKE_A_VIEW = weakref.WeakValueDictionary()  # id -> tensor (a WeakSet would compare tensors by ==)


def fills_in_memory_order(tensor):
    """Whether PyTorch's serial kernels fill ``tensor`` otherwise than row-major: it is not row-major, and it is a
    view whose layout PyTorch shares (see the module's docstring), so its memory order is its own, or it is laid
    out channels-last, a layout PyTorch's kernels keep as NumPy's do (``randn_like``, dropout's mask of a
    channels-last image go through it N, H, W, C)."""
    array = tensor._data
    if array.flags.c_contiguous:
        return False
    if tensor._base is not None or _MADE_LIKE_A_VIEW.get(id(tensor)) is tensor:
        return True
    return channels_last_layout.is_contiguous(array)


def made_like_a_view(tensor):
    """Record that ``tensor`` was laid out as a view it was made like (empty_like's preserve_format)."""
    _MADE_LIKE_A_VIEW[id(tensor)] = tensor
    return tensor
