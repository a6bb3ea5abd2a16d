"""``autograd.autograd.forward_ad``: PyTorch's ``torch.autograd.forward_ad``, forward-mode differentiation
with dual tensors (the state and the arithmetic are in ``autograd.dual``):

    import autograd.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        x = fwAD.make_dual(primal, tangent)       # x = primal + ε·tangent
        y = f(x)
        jvp = fwAD.unpack_dual(y).tangent         # J_f(primal) · tangent

One pass gives the directional derivative of every output along the tangent: J ẋ, where a backward
pass gives gᵀJ. For a function of few inputs and many outputs, forward mode is the cheaper way to its
Jacobian (one pass per input instead of one per output).
"""

import collections
import contextlib

from .. import dual
from ..backend import xp
from ..tensor import Tensor

UnpackedDualTensor = collections.namedtuple("UnpackedDualTensor", ["primal", "tangent"])


def enter_dual_level():
    """Open a dual level (there is one at a time: nesting is refused, as PyTorch refuses it); returns 0."""
    return dual.open_level()


def exit_dual_level(*, level=None):
    """Close the dual level: every tangent made in it is gone."""
    dual.close_level()


@contextlib.contextmanager
def dual_level():
    """``with dual_level():`` dual tensors live inside the block; it yields the level (0)."""
    level = enter_dual_level()
    try:
        yield level
    finally:
        exit_dual_level(level=level)


def make_dual(tensor, tangent, *, level=None):
    """A view of ``tensor`` carrying ``tangent`` (ẋ, of its shape) at the open level. The tangent is kept as given,
    the very tensor, where it is laid out in memory as the primal is (as PyTorch keeps it: ``unpack_dual`` gives
    it back, and an op's tangent takes the dtype the op's output has); otherwise a copy laid out as the primal."""
    if dual.LEVEL is None:
        raise RuntimeError("Trying to create a dual Tensor for forward AD but no level exists, make sure to "
                           "enter_dual_level() first.")
    for role, x in (("primal", tensor), ("tangent", tangent)):
        if not isinstance(x, Tensor) or x.dtype.kind not in "fc":
            raise ValueError(f"Expected {role} to be floating point or complex, but got: "
                             f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if tangent.shape != tensor.shape:
        raise RuntimeError("Trying to set a forward gradient that has a different size than that of the original "
                           f"Tensor, this is not supported. Tensor is of size {list(tensor.shape)} while the given "
                           f"forward gradient is of size {list(tangent.shape)}.")
    if dual.tangent_of(tangent) is not None:  # (a tangent's own tangent would be a second order, not built)
        raise RuntimeError("Setting a forward grad that itself has a forward gradient at the same level 0 is not "
                           "supported.")
    if not _laid_out_alike(tangent, tensor):  # (PyTorch copies it then: a write into the unpacked tangent is not
        tangent = _copy_laid_out_as(tangent, tensor)  # one into the tensor given)
    with dual.paused():  # (the view is labelled with the tangent, not computed with one)
        view = tensor.view_as(tensor)
    dual.mark_root(view)
    dual.set_tangent(view, tangent)
    return view


def _laid_out_alike(tangent, primal):
    """PyTorch's test for keeping a tangent as given: the same strides, storage offset and storage size as the
    primal (any empty tensor passes)."""
    if primal.numel() == 0:
        return True
    return (tangent.stride() == primal.stride() and tangent.storage_offset() == primal.storage_offset()
            and tangent.untyped_storage().nbytes() // tangent.element_size()
            == primal.untyped_storage().nbytes() // primal.element_size())  # (the storages' sizes in elements)


def _copy_laid_out_as(tangent, primal):
    """A copy of the tangent's values in memory laid out as the primal's (its order of strides)."""
    memory = xp.empty_like(primal._data, dtype=tangent._data.dtype, order="K")
    memory[...] = tangent._data
    return Tensor._make(memory)


def unpack_dual(tensor, *, level=None):
    """(primal, tangent): a view of the tensor's value without its tangent, and the tangent (None for a
    tensor that carries none, or outside the level it was made in)."""
    tangent = dual.tangent_of(tensor)
    with dual.paused():
        primal = tensor.view_as(tensor)
    if tangent is not None:  # (the primal of a dual: a tensor of its own for forward mode, as make_dual's view)
        dual.mark_root(primal)
    return UnpackedDualTensor(primal, tangent)
