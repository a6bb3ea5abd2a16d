"""The history a view made under no_grad (or in inference_mode) takes when a recorded write changes its base, or
another view of it: one that refuses the backward.

Such a view's values are now the base's new ones, which a gradient came from, but no op of the graph made the view,
so a gradient through it could not reach them. PyTorch refuses it, when its grad_fn is next read; here the
refusal waits in the view's history and is raised by the first backward that reaches it:

    v = the view's values (unchanged: the memory it shows);   dL/dbase: refused, in PyTorch's words.
"""

from ..primitive import Primitive
from ..write_door import no_grad_view_words
from .names import names


class RebasedNoGradView(Primitive):
    """v = the values ``shown``; its backward raises PyTorch's error for a no_grad view whose base a recorded
    write changed (``made_in`` "no_grad" or "inference"; ``base_shape`` for the words)."""

    saves_inputs = False
    handles_complex = True

    def forward(self, base):
        return self.shown

    def backward(self, grad, v, base):
        raise RuntimeError("A view was created " + no_grad_view_words(
            self.made_in, "its base or another view of its base has been modified inplace") +
            f" (A view of shape {tuple(grad.shape)}, whose base of shape {self.base_shape} a recorded write changed "
            "after it was made: the gradient would not reach the new values.)")


@names("_rebase_no_grad_view")
def rebase_no_grad_view(base, view):
    """The history of ``view`` (made under no_grad) once a recorded write changed ``base`` (write_door's
    _rederive_views)."""
    return RebasedNoGradView.apply(base, shown=view._data, made_in=view._made_in_no_grad, base_shape=tuple(base.shape))
