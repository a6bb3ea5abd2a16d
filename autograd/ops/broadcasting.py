"""The inverse of broadcasting: a gradient summed down to the shape of the input that was broadcast
(``unbroadcast``, what every binary op's backward does), and ``x.sum_to_size(*size)``, the same for the user."""

import collections

from ..graph import modes
from ..size import Size
from ..tensor import Tensor
from .names import names

_Shape = collections.namedtuple("_Shape", "shape")  # what unbroadcast reads off its ``like``


def unbroadcast(grad, like):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to ``like.shape``."""
    shape = like._data.shape if type(like) is Tensor else like.shape  # (a tensor's array's: no Size made)
    if grad._data.shape == shape:  # (the common case: nothing was broadcast)
        return grad
    grad_shape = grad._data.shape
    added = len(grad_shape) - len(shape)
    stretched = tuple(added + i for i, n in enumerate(shape) if n == 1 and grad_shape[added + i] != 1)
    if not stretched:  # only leading axes were added (a bias): summing them gives the shape
        return _sum(grad, tuple(range(added)), False)
    return _sum(grad, tuple(range(added)) + stretched, True).reshape(shape)


_Sum = None  # ops/reductions.Sum, once unbroadcast has loaded it (reductions imports this module)


def _sum(grad, axes, keepdim):
    """grad.sum(axes, keepdim): in a backward pass that records nothing, Sum's forward on the array alone (no node,
    no call through the Tensor method; the hot path of every bias's gradient), else the method."""
    global _Sum
    if modes.grad_enabled is not False or type(grad) is not Tensor:  # (recorded; a forward's, inference mode's;
        return grad.sum(axes, keepdim=keepdim)  # a subclass's own sum)
    if _Sum is None:
        from .reductions import Sum as _Sum
    return _Sum.apply_in_backward(grad, axes=axes, keepdim=keepdim)


@names("sum_to_size", function=False)
def sum_to_size(input, *size):
    """input summed over the dims that expanding ``size`` to input's shape would add or stretch;
    dL/dinput = dL/dy expanded back (Sum's gradient)."""
    size = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
    if not size:  # the sum of every element (PyTorch's, whatever the input's shape)
        return input.sum()
    shape = tuple(input.shape)
    lead = len(shape) - len(size)
    if lead < 0 or any(n != 1 and n != shape[lead + i] for i, n in enumerate(size)):
        raise RuntimeError(f"size {{{list(size)}}} is not expandable to size {{{list(shape)}}}.")
    return unbroadcast(input, _Shape(Size(size)))
