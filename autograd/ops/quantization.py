"""Fake quantization, as quantization-aware training uses it: x rounded onto an integer grid of step s
(the scale) shifted by z (the zero point), clamped to [qmin, qmax], and mapped back to floats:

    q = round(x / s) + z,   y = (clamp(q, qmin, qmax) - z) · s

``fake_quantize_per_tensor_affine`` takes one (s, z); ``fake_quantize_per_channel_affine`` one per
slice along ``axis``. Rounding has no slope, so the gradient is the straight-through estimator:
dL/dx = dL/dy where q landed inside [qmin, qmax], 0 where it was clamped.

The learnable variants (``_fake_quantize_learnable_per_tensor_affine`` and ``..._per_channel_affine``,
LSQ's) also differentiate s and z, with PyTorch's formulas (grad_factor scales both):

    inside:  dL/ds = dL/dy · (y - x) / s,        dL/dz = 0
    clamped: dL/ds = dL/dy · (qmin - z or qmax - z),   dL/dz = -dL/dy · s

Numbers are PyTorch's to the bit: x is multiplied by 1/s (in float32, s itself read as a float32)
rather than divided by s, rounding is half to even, and (q - z)·s is formed in float32 then cast to
x's dtype (so a float64 x comes back on float32's grid of s); in double for a float zero point.
"""

import numpy

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .names import names


def _grid(x, scale, zero_point, float_zero_point):
    """The integer level of each x (as floats): round(x · (1/s)) + z, or round(z + x · (1/s)) for a float z."""
    inverse_scale = (numpy.float32(1) / scale).astype(numpy.float32)
    scaled = x * inverse_scale.astype(x.dtype) if x.dtype == numpy.float32 else x * inverse_scale
    return xp.rint(zero_point + scaled) if float_zero_point else xp.rint(scaled) + zero_point


class FakeQuantizeAffine(Primitive):
    """y = (clamp(round(x / s) + z, qmin, qmax) - z) · s;   dL/dx = dL/dy · [qmin <= round(x / s) + z <= qmax]

    ``scale`` (float32) and ``zero_point`` are arrays that broadcast against x (one value, or one per
    channel shaped along the axis); they are not differentiated."""

    def forward(self, x):
        levels = _grid(x, self.scale, self.zero_point, self.float_zero_point)
        clamped = xp.clip(levels, self.quant_min, self.quant_max)
        if self.float_zero_point:  # (PyTorch's kernel for a float zero point forms (q - z)·s in double)
            wide = (clamped.astype(numpy.float64) - self.zero_point) * self.scale.astype(numpy.float64)
            return wide.astype(x.dtype)
        return ((clamped - self.zero_point).astype(numpy.float32) * self.scale).astype(x.dtype)  # (in float32)

    def backward(self, grad, y, x):
        levels = _grid(x._data, self.scale, self.zero_point, self.float_zero_point)
        inside = (levels >= self.quant_min) & (levels <= self.quant_max)
        # multiplied, not selected, as PyTorch's (dL/dy · mask): an infinite or NaN dL/dy gives NaN where clamped
        return (grad * Tensor._make(inside.astype(grad.dtype)),)


def _check_range(quant_min, quant_max):
    if quant_min > quant_max:
        raise RuntimeError("`quant_min` should be less than or equal to `quant_max`.")


def _number(value):
    """A qparam given as a number or a one-element tensor, as a Python number."""
    return value.item() if isinstance(value, Tensor) else value


@names("fake_quantize_per_tensor_affine", method=False)
def fake_quantize_per_tensor_affine(input, scale, zero_point, quant_min, quant_max):
    """y = (clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point) · scale, the gradient
    passing straight through where x was not clamped. ``scale`` and ``zero_point`` are numbers or
    one-element tensors."""
    tensor_qparams = isinstance(scale, Tensor) or isinstance(zero_point, Tensor)
    scale, zero_point = _number(scale), _number(zero_point)
    _check_range(quant_min, quant_max)
    # (PyTorch checks a number zero_point against the range; one in a tensor, as an observer's or a learnt one,
    # it takes as it is: the rounded values are clamped into the range all the same)
    if not tensor_qparams and not quant_min <= zero_point <= quant_max:
        raise RuntimeError("`zero_point` must be between `quant_min` and `quant_max`.")
    return FakeQuantizeAffine.apply(
        input, scale=numpy.float32(scale), zero_point=int(zero_point), quant_min=quant_min, quant_max=quant_max,
        float_zero_point=False, pytorch_name="FakeQuantizePerTensorAffineCachemaskTensorQparamsBackward0"
        if tensor_qparams else "FakeQuantizePerTensorAffineCachemaskBackward0")


def _along(values, axis, ndim):
    """One value per slice along ``axis``, shaped to broadcast against a tensor of ``ndim`` dims."""
    shape = [1] * ndim
    shape[axis] = values.shape[0]
    return values.reshape(shape)


def _per_channel_qparams(input, scale, zero_point, axis, quant_min, quant_max):
    """scale and zero_point as arrays shaped along ``axis`` (checked as PyTorch checks them), and the axis."""
    _check_range(quant_min, quant_max)
    if scale.dtype != numpy.float32:
        raise RuntimeError(f"Scale must be Float or BFloat16, found {_dtype_name(scale.dtype)}")
    if zero_point.dtype not in (numpy.int32, numpy.float32, numpy.float16):
        raise RuntimeError(f"Zero-point must be Int32, Float or Half, found {_dtype_name(zero_point.dtype)}")
    if scale.dim() != 1:
        raise RuntimeError("scale should be a 1-D tensor")
    if zero_point.dim() != 1:
        raise RuntimeError("zero point should be a 1-D tensor")
    if scale.numel() != zero_point.numel():
        raise RuntimeError("scale and zero-point need to have the same dimensions")
    if not -input.dim() <= axis < input.dim():
        raise IndexError(f"Dimension out of range (expected to be in range of [{-input.dim()}, {input.dim() - 1}], "
                         f"but got {axis})")
    if scale.numel() != input.shape[axis]:
        raise RuntimeError("dimensions of scale and zero-point are not consistent with input tensor")
    if axis < 0:  # (PyTorch counts no axis from the end here, once the sizes agree)
        raise RuntimeError(f"`axis` must be between 0 and number of dimensions of input: got axis {axis}")
    zero_points = zero_point._data
    if zero_point.dtype == numpy.int32 and ((zero_points < quant_min) | (zero_points > quant_max)).any():
        raise RuntimeError("`zero_point` must be between `quant_min` and `quant_max`.")
    return (_along(scale._data, axis, input.dim()), _along(zero_points, axis, input.dim()),
            zero_point.dtype != numpy.int32)


def _dtype_name(dtype):
    return {"float64": "Double", "float32": "Float", "float16": "Half", "int64": "Long", "int32": "Int",
            "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}.get(numpy.dtype(dtype).name, str(dtype))


@names("fake_quantize_per_channel_affine", method=False)
def fake_quantize_per_channel_affine(input, scale, zero_point, axis, quant_min, quant_max):
    """Fake quantization with one (scale, zero_point) per slice of ``input`` along ``axis``: ``scale`` a
    float32 tensor, ``zero_point`` an int32 (or float) one, both 1-D of the axis's size."""
    scales, zero_points, float_zero_point = _per_channel_qparams(input, scale, zero_point, axis, quant_min,
                                                                 quant_max)
    return FakeQuantizeAffine.apply(input, scale=scales, zero_point=zero_points, quant_min=quant_min,
                                    quant_max=quant_max, float_zero_point=float_zero_point,
                                    pytorch_name="FakeQuantizePerChannelAffineCachemaskBackward0")


class FakeQuantizeLearnable(Primitive):
    """y = fake_quantize(x; s, round(z)) with s and z differentiated too (LSQ):

        dL/dx = dL/dy · [inside],
        dL/ds = grad_factor · Σ dL/dy · ((y - x) / s if inside, else qmin - z or qmax - z),
        dL/dz = grad_factor · Σ dL/dy · (0 if inside, else -s)

    summed over everything (per tensor) or over all dims but ``axis`` (per channel). ``zero_point`` in
    backward is PyTorch's: floor(z + 0.5) clamped to the range per tensor, z rounded half to even per
    channel (forward rounds half to even in both)."""

    def forward(self, x, scale, zero_point):
        self.rounded_zero_point = self._zero_point(zero_point, forward=True)
        return FakeQuantizeAffine.forward(self._affine(scale, self.rounded_zero_point), x)

    def _zero_point(self, zero_point, forward):
        """z as the whole numbers the quantizer uses (float32), shaped to broadcast against x."""
        z = zero_point.astype(numpy.float32)
        z = xp.rint(z) if forward or self.axis is not None else xp.floor(z + numpy.float32(0.5))
        z = xp.clip(z, self.quant_min, self.quant_max)
        return z if self.axis is None else _along(z, self.axis, self.ndim)

    def _scale(self, scale):
        scale = scale.astype(numpy.float32)
        return scale if self.axis is None else _along(scale, self.axis, self.ndim)

    def _affine(self, scale, zero_point):
        """The plain fake quantizer at these (s, z)."""
        affine = object.__new__(FakeQuantizeAffine)
        affine.__dict__.update(scale=self._scale(scale), zero_point=zero_point.astype(numpy.int64),
                               quant_min=self.quant_min, quant_max=self.quant_max, float_zero_point=False)
        return affine

    def backward(self, grad, y, x, scale, zero_point):
        params = {name: getattr(self, name) for name in ("quant_min", "quant_max", "grad_factor", "axis", "ndim")}
        return tuple(FakeQuantizeLearnableGrad.apply(grad, x, scale, zero_point, part=part, **params)
                     for part in ("input", "scale", "zero_point"))


class FakeQuantizeLearnableGrad(Primitive):
    """One of FakeQuantizeLearnable's three gradients (``part``: "input", "scale" or "zero_point"), from dL/dy,
    x, s and z. It has no derivative of its own (nor has PyTorch's): a second backward through it says so."""

    def forward(self, dy, x, scale, zero_point):
        s = FakeQuantizeLearnable._scale(self, scale)
        z = FakeQuantizeLearnable._zero_point(self, zero_point, forward=False)
        levels = _grid(x, s, z, float_zero_point=True)  # (PyTorch's backward rounds z + x/s, not x/s)
        below, above = levels < self.quant_min, levels > self.quant_max
        inside = ~(below | above)
        if self.part == "input":
            return dy * inside.astype(dy.dtype)  # (multiplied, as PyTorch's: a NaN dL/dy stays NaN)
        grad_factor = numpy.float32(self.grad_factor)
        if self.part == "scale":
            quantized = (xp.clip(levels, self.quant_min, self.quant_max) - z) * s
            inverse_scale = (numpy.float32(1) / s).astype(numpy.float32)
            share = xp.where(inside, dy * (quantized - x) * inverse_scale,
                             dy * xp.where(below, self.quant_min - z, self.quant_max - z)) * grad_factor
            like = scale
        else:
            share = xp.where(inside, 0, -dy * s) * grad_factor
            like = zero_point
        over = tuple(d for d in range(x.ndim) if d != self.axis)  # all dims, or all but the channel's
        total = Tensor._make(share.astype(numpy.float32)).sum(dim=over)._data
        return total.reshape(like.shape).astype(like.dtype)

    def backward(self, grad, y, *inputs):
        name = "_fake_quantize_learnable_per_tensor_affine_backward" if self.axis is None else \
            "_fake_quantize_learnable_per_channel_affine_backward"
        raise NotImplementedError(f"the derivative for '{name}' is not implemented.")


@names("_fake_quantize_learnable_per_tensor_affine", method=False,
       functions=("_fake_quantize_learnable_per_tensor_affine",))
def _fake_quantize_learnable_per_tensor_affine(input, scale, zero_point, quant_min, quant_max, grad_factor=1.0):
    """Fake quantization whose one-element ``scale`` and (float) ``zero_point`` tensors are learnt (LSQ)."""
    _check_range(quant_min, quant_max)
    if scale.numel() != 1 or zero_point.numel() != 1:
        raise RuntimeError("The scale and zero_point must be one-element tensors, got scale of shape "
                           f"{tuple(scale.shape)} and zero_point of shape {tuple(zero_point.shape)}")
    return FakeQuantizeLearnable.apply(input, scale, zero_point, quant_min=quant_min, quant_max=quant_max,
                                       grad_factor=grad_factor, axis=None, ndim=input.dim(),
                                       pytorch_name="FakeQuantizeLearnablePerTensorAffineBackward0")


@names("_fake_quantize_learnable_per_channel_affine", method=False,
       functions=("_fake_quantize_learnable_per_channel_affine",))
def _fake_quantize_learnable_per_channel_affine(input, scale, zero_point, axis, quant_min, quant_max,
                                                grad_factor=1.0):
    """Per-channel fake quantization whose ``scale`` and (float) ``zero_point`` tensors are learnt (LSQ)."""
    _, _, _ = _per_channel_qparams(input, scale, zero_point, axis, quant_min, quant_max)
    return FakeQuantizeLearnable.apply(input, scale, zero_point, quant_min=quant_min, quant_max=quant_max,
                                       grad_factor=grad_factor, axis=axis, ndim=input.dim(),
                                       pytorch_name="FakeQuantizeLearnablePerChannelAffineBackward0")
