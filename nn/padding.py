"""Padding: ``F.pad`` and the padding layers (``ZeroPad2d``, ``ReflectionPad1d``, ...).

``pad`` lists (before, after) amounts from the last dim backwards, as PyTorch:
(left, right) pads the last dim, (left, right, top, bottom) the last two.

'constant' pads with a value (negative amounts crop): ``autograd.constant_pad_nd``,
one primitive whose adjoint is padding again (``autograd/ops/constant_padding.py``).
'reflect', 'replicate' and
'circular' read each output position from some input position: slice copies along
each padded dim, whose gradient adds up where a position is read twice, as at a
reflected edge (``autograd/ops/padding.py``).
"""

import numbers
import sys

from autograd import _lazy
from autograd.errors import ShapeError
from autograd.ops.constant_padding import ConstantPad, check_output_sizes, constant_pad_nd, padding_amounts
from autograd.ops.conversion import refuse_kinds
from autograd.ops.layouts import in_suggested_layout
from autograd.ops.padding import copying_pad
from autograd.primitive import named_node
from autograd.size import refuse_negative_sizes
from autograd.write_door import _refuse_overflow

from .module import Module


def _check_non_constant(input, pad, mode):
    dims = len(pad) // 2
    if input.ndim not in (dims + 1, dims + 2):
        raise NotImplementedError(
            f"Padding size {len(pad)} is not supported for {input.ndim}D input tensor.\n"
            "Supported combinations for non-constant padding:\n"
            "  - 2D or 3D input: padding size = 2 (pads last dimension)\n"
            "  - 3D or 4D input: padding size = 4 (pads last 2 dimensions)\n"
            "  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)")
    if mode in ("reflect", "replicate") and 0 in input.shape[input.ndim - dims - 1:]:  # all but a batch dim
        raise RuntimeError(
            f"Expected {dims + 1}D or {dims + 2}D (batch mode) tensor with possibly 0 batch size and other "
            f"non-zero dimensions for input, but got: {list(input.shape)}")
    if mode in ("reflect", "replicate"):
        # PyTorch's reflection and replication kernels have no bool loop (circular copies slices, which any dtype has)
        refuse_kinds(input, f"{'reflection' if mode == 'reflect' else 'replication'}_pad{dims}d", "b")
    for k in range(dims):
        dim = input.ndim - 1 - k
        before, after, size = pad[2 * k], pad[2 * k + 1], input.shape[dim]
        if mode == "reflect" and (before >= size or after >= size):
            raise RuntimeError(
                f"Argument #{4 + 2 * k}: Padding size should be less than the corresponding input dimension, but got: "
                f"padding ({before}, {after}) at dimension {dim} of input {list(input.shape)}")
        if mode == "circular" and (before > size or after > size):
            raise RuntimeError("Padding value causes wrapping around more than once.")
        if mode == "circular" and size + before + after < 0:  # (crops past the whole dim: PyTorch's check)
            raise RuntimeError("Negative padding value is resulting in an empty dimension")
        if mode == "circular" and size + min(before, 0) + min(after, 0) <= 0 and max(before, after) > 0:
            # (PyTorch's kernel returns uninitialised memory here, or an empty dim when the crop goes past the
            # whole dim: the crop leaves nothing to wrap around)
            raise RuntimeError(f"Circular padding ({before}, {after}) of dimension {dim} of input "
                               f"{list(input.shape)} crops it to nothing, then has nothing to wrap around")
    if mode in ("reflect", "replicate"):  # (after reflection's amounts, as PyTorch's kernels check)
        _check_gathered_sizes(input.shape, pad)


def _check_gathered_sizes(shape, pad):
    """PyTorch's reflection and replication kernels refuse an output with no element in any padded dim (only
    crops make one), then a negative size in some dim."""
    dims = len(pad) // 2
    names = "DHW"[3 - dims:]
    sizes = shape[len(shape) - dims:]
    outputs = [size + pad[2 * (dims - 1 - i)] + pad[2 * (dims - 1 - i) + 1] for i, size in enumerate(sizes)]
    if all(n < 1 for n in outputs):
        given = " ".join(f"{name}: {size}" for name, size in zip(names, sizes)).replace(" W", ", W")  # (sic)
        calculated = " ".join(f"{name}: {n}" for name, n in zip(names, outputs))
        raise RuntimeError(f"input ({given}) is too small. Calculated output {calculated}")
    out_shape = list(shape[:len(shape) - dims]) + outputs
    refuse_negative_sizes(out_shape)


def pad(input, pad, mode="constant", value=None):
    """Pad (or, with negative amounts, crop) the last len(pad) / 2 dims of ``input``.

    mode: 'constant' (with ``value``, 0 by default), 'reflect' (mirror without
    repeating the edge: [0 1 2] → [2 1 | 0 1 2 | 1 0]), 'replicate' (repeat the
    edge) or 'circular' (wrap around).
    """
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > input.ndim:
        raise RuntimeError(f"Padding length should be less than or equal to two times the input dimension "
                           f"but got padding length {len(pad)} and input of dimension {input.ndim}")
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    amounts = padding_amounts(input.ndim, pad)
    if mode == "constant":
        check_output_sizes(input.shape, amounts)
        if value is not None:  # (F.pad's value is a float: -1 does not wrap into uint8, NaN fits no integer)
            _refuse_overflow(float(value), input.dtype)
        return constant_pad_nd(input, pad, 0.0 if value is None else value)
    if value not in (None, 0, 0.0):
        raise RuntimeError(f"Padding mode \"{mode}\" doesn't take in value argument.")
    _check_non_constant(input, pad, mode)
    # PyTorch's node: ReflectionPad2DBackward0, ReplicationPad1DBackward0, ...; circular's is its last copy into the
    # padded tensor's slices (CopySlices)
    node = {"reflect": "Reflection", "replicate": "Replication"}.get(mode)
    name = "torch::autograd::CopySlices" if node is None else f"{node}Pad{len(pad) // 2}DBackward0"
    padded = _padded(input, amounts, mode)
    if padded is input:  # nothing padded nor cropped: a new tensor all the same, as PyTorch's (not x itself, which
        padded = input.clone()  # an in-place op on the result would change)
    # laid out as PyTorch's kernels write it (the index gathers leave NumPy's layouts, batch or channels innermost):
    # circular copies slices into a fresh row-major tensor, reflect and replicate follow the input's layout
    padded = padded.contiguous() if mode == "circular" else in_suggested_layout(padded, input)
    # (ReflectionPad and ReplicationPad's nodes save the input: writing it refuses the backward; circular's copies)
    return named_node(padded, None, name, (input,), saves=(input,) if node is not None else ())


def _padded(input, amounts, mode):
    if mode in ("replicate", "reflect"):  # PyTorch's index formulas, negative amounts included: positions run
        return copying_pad(input, amounts, mode)  # from -before in the whole input, so a crop on one side leaves
        # the other side reflecting (or replicating) the uncropped edge
    # circular: negative amounts crop first; the rest wraps around what remains (PyTorch's _pad_circular)
    cropped = [(min(b, 0), min(a, 0)) for b, a in amounts]
    if any(c != (0, 0) for c in cropped):
        input = ConstantPad.apply(input, amounts=cropped, value=0.0)
    return copying_pad(input, [(max(b, 0), max(a, 0)) for b, a in amounts], mode)


class _PadNd(Module):
    mode, dims = "constant", 1

    def __init__(self, padding, value=0.0):
        super().__init__()
        self.padding = ((int(padding),) * (2 * self.dims) if isinstance(padding, numbers.Integral)  # (NumPy's too)
                        else tuple(padding))
        if len(self.padding) != 2 * self.dims:
            # (PyTorch's RuntimeError, raised at its forward call; also a ValueError)
            raise ShapeError(f"{type(self).__name__}: padding must be an int or {2 * self.dims} ints, "
                             f"got {padding!r}")
        self.value = value

    def forward(self, input):
        if self.mode == "circular" and input.ndim not in (self.dims + 1, self.dims + 2):
            # (PyTorch's circular pad layers check the rank themselves, before F.pad)
            raise ValueError(f"expected {self.dims + 1}D or {self.dims + 2}D input (got {input.ndim}D input)")
        if self.mode == "constant":
            return pad(input, self.padding, "constant", self.value)
        return pad(input, self.padding, self.mode)

    def extra_repr(self):
        if self.mode == "constant" and not type(self).__name__.startswith("Zero"):
            return f"padding={self.padding}, value={self.value}"
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    mode = "constant"


class _ReflectionPadNd(_PadNd):
    mode = "reflect"


class _ReplicationPadNd(_PadNd):
    mode = "replicate"


class _CircularPadNd(_PadNd):
    mode = "circular"


# each mode's base, as PyTorch's (isinstance(layer, nn.modules.padding._ReflectionPadNd))
_MODE_BASES = {base.mode: base for base in (_ConstantPadNd, _ReflectionPadNd, _ReplicationPadNd, _CircularPadNd)}


def _pad_layer(name, mode, dims, takes_value, base=None):
    """The layer class ``name``: a subclass of its mode's base, or of ``base`` (ZeroPad2d is a ConstantPad2d
    in PyTorch)."""
    def __init__(self, padding, value=0.0):
        _PadNd.__init__(self, padding, value)

    def __init_without_value(self, padding):
        _PadNd.__init__(self, padding, 0.0)

    body = {"dims": dims, "__init__": __init__ if takes_value else __init_without_value,
            "__doc__": f"F.pad of the last {dims} dim(s) in mode {mode!r}, as torch.nn.{name}."}
    return type(name, (base or _MODE_BASES[mode],), body)


ConstantPad1d = _pad_layer("ConstantPad1d", "constant", 1, True)
ConstantPad2d = _pad_layer("ConstantPad2d", "constant", 2, True)
ConstantPad3d = _pad_layer("ConstantPad3d", "constant", 3, True)
ZeroPad1d = _pad_layer("ZeroPad1d", "constant", 1, False, ConstantPad1d)
ZeroPad2d = _pad_layer("ZeroPad2d", "constant", 2, False, ConstantPad2d)
ZeroPad3d = _pad_layer("ZeroPad3d", "constant", 3, False, ConstantPad3d)
ReflectionPad1d = _pad_layer("ReflectionPad1d", "reflect", 1, False)
ReflectionPad2d = _pad_layer("ReflectionPad2d", "reflect", 2, False)
ReflectionPad3d = _pad_layer("ReflectionPad3d", "reflect", 3, False)
ReplicationPad1d = _pad_layer("ReplicationPad1d", "replicate", 1, False)
ReplicationPad2d = _pad_layer("ReplicationPad2d", "replicate", 2, False)
ReplicationPad3d = _pad_layer("ReplicationPad3d", "replicate", 3, False)
CircularPad1d = _pad_layer("CircularPad1d", "circular", 1, False)
CircularPad2d = _pad_layer("CircularPad2d", "circular", 2, False)
CircularPad3d = _pad_layer("CircularPad3d", "circular", 3, False)


# a padding layer asks a subclass of Tensor input as F.pad(input, ...) does (the layers call the pad held here)
_lazy.dispatch_namespace(sys.modules[__name__], lambda name, function: name == "pad")
