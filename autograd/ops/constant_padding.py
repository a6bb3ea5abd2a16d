"""Constant padding: ``autograd.constant_pad_nd`` (PyTorch's ``torch.constant_pad_nd``), the op behind
``F.pad(mode='constant')`` and the zero padding of convolutions.

``pad`` lists (before, after) amounts from the last dim backwards, as PyTorch: (left, right) pads the
last dim, (left, right, top, bottom) the last two. Negative amounts crop. The op is one primitive whose
adjoint is padding again: dL/dx = pad(dL/dy, -amounts, 0), which crops what was added and puts zeros
where the forward cropped.
"""

from ..backend import xp
from ..factories import empty_in_format
from ..primitive import Primitive
from ..write_door import _refuse_overflow
from .layouts import suggested_format
from .names import names


class ConstantPad(Primitive):
    """y = x with ``amounts[d] = (before, after)`` positions of ``value`` added on each dim d
    (negative amounts crop);   dL/dx = dL/dy cropped back: pad(dL/dy, -amounts, 0)"""

    pytorch_name = "ConstantPadNdBackward0"
    saves_inputs = False  # backward needs no input's values (PyTorch's node keeps only the padding)
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        shape, source, target = [], [], []
        for size, (before, after) in zip(x.shape, self.amounts):
            kept = size - max(-before, 0) - max(-after, 0)
            shape.append(kept + max(before, 0) + max(after, 0))
            source.append(slice(max(-before, 0), max(-before, 0) + max(kept, 0)))
            target.append(slice(max(before, 0), max(before, 0) + max(kept, 0)))
        memory_format = suggested_format(x)  # (PyTorch's pad is laid out so: a channels_last image pads into one)
        if memory_format is None:
            y = xp.full(shape, self.value, dtype=x.dtype)
        else:
            y = empty_in_format(shape, x.dtype, memory_format)
            y.fill(self.value)
        y[tuple(target)] = x[tuple(source)]
        return y

    def backward(self, grad, y, x):
        return (ConstantPad.apply(grad, amounts=[(-b, -a) for b, a in self.amounts], value=0),)


def padding_amounts(ndim, pad):
    """PyTorch's flat ``pad`` (last dim first) as one (before, after) pair per dim of an ``ndim``-d input."""
    amounts = [(0, 0)] * ndim
    for k in range(len(pad) // 2):
        amounts[ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    return amounts


def check_output_sizes(shape, amounts):
    """A crop may not take more than a dim holds: PyTorch's crops each dim first (narrow), its start and then its end,
    so a crop past the whole dim is refused even where padding on the other side would make the size up."""
    for dim, (size, (before, after)) in enumerate(zip(shape, amounts)):
        left = size + min(before, 0)
        if left < 0 or left + min(after, 0) < 0:
            raise RuntimeError(f"narrow(): length must be non-negative. (The padding ({before}, {after}) crops "
                               f"dimension {dim} of the input, of size {size}, past its end.)")


@names("constant_pad_nd", method=False)
def constant_pad_nd(input, pad, value=0):
    """y = ``input`` with ``value`` added around its last len(pad) / 2 dims (negative amounts crop);
    always a new tensor, as PyTorch's."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError(f"Length of pad must be even but instead it equals {len(pad)}")
    if len(pad) // 2 > input.ndim:
        raise RuntimeError(f"Length of pad should be no more than twice the number of dimensions of the input. "
                           f"Pad length is {len(pad)} while the input has {input.ndim} dimensions.")
    amounts = padding_amounts(input.ndim, pad)
    check_output_sizes(input.shape, amounts)
    if type(value) is int or type(value) is float:  # a Scalar, cast as fill_ casts one: -1 into uint8 is 255, NaN
        _refuse_overflow(value, input.dtype)  # into integers is refused
        if type(value) is int and value < 0 and input.dtype.kind == "u":
            value += 1 << (8 * input.dtype.itemsize)
    return ConstantPad.apply(input, amounts=amounts, value=value)
