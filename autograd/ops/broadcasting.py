"""``x.sum_to_size(*size)``: the inverse of broadcasting, x summed down to a shape it could have
been expanded from (what every binary op's backward does to a broadcast gradient)."""

import collections

from ..size import Size
from .elementwise import unbroadcast
from .names import names

_Shape = collections.namedtuple("_Shape", "shape")  # what unbroadcast reads off its ``like``


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
