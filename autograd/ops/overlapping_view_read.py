"""What a recorded write through a view of overlapping windows (``x.unfold(0, 3, 2).relu_()``) reads as the old
value, with PyTorch's gradient for it.

PyTorch records such a write as CopySlices: the in-place op's gradient for its old value is *copied* into the
view's region of the base's gradient. Where the windows share an element (a window of 3 every 2 steps shares its
ends), a copy leaves one window's gradient there, the last written, where the view op's own backward (the windows'
gradients put back and summed) would give the sum over the windows that show it.

    v = the view of the base (its ``view_chain``);   dL/dbase[i] = dL/dv at the last window position showing i,
                                                    0 where no window shows i.
"""

import numpy

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .names import names
from .shape import _replay_view_of_array


class OverlappingViewRead(Primitive):
    """v = base seen through ``view_chain`` (windows that share elements);
    dL/dbase = dL/dv copied into the windows' region of zeros, the last window's value where they share one."""

    saves_inputs = False
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, base):
        return _replay_view_of_array(base, self.view_chain)

    def backward(self, grad, v, base):
        base_size = int(numpy.prod(base.shape))
        shown = _replay_view_of_array(numpy.arange(base_size).reshape(base.shape), self.view_chain)
        source = numpy.full(base_size, -1, dtype=numpy.int64)
        source[shown.reshape(-1)] = numpy.arange(shown.size)  # (a repeated element: the last one kept)
        reached = source >= 0
        flat = grad.reshape(-1)[Tensor._make(xp.where(reached, source, 0))]  # (an index op: create_graph records it)
        return ((flat * Tensor._make(reached.astype(flat._data.dtype))).reshape(base.shape),)


@names("_read_overlapping_view")
def read_overlapping_view(base, chain):
    """The value a write through the view ``chain`` of ``base`` reads (write_door.WriteDoor._view_as_written)."""
    return OverlappingViewRead.apply(base, view_chain=chain)
