"""``F.interpolate`` and ``Upsample``: resizing the spatial dims of (N, C, *spatial) inputs.

Each output position o along a dim of input size n and output size m reads the
input at a source coordinate s(o), computed with PyTorch's conventions:
    nearest:        s = min(floor(o · r), n - 1)
    nearest-exact:  s = min(floor((o + ½) · r), n - 1)
    linear:         s = max(r (o + ½) - ½, 0)       (align_corners=False)
                    s = o (n - 1) / (m - 1)          (align_corners=True)
with r = 1 / scale_factor when a scale factor is given, n / m otherwise. Linear
modes blend the two neighbours: y = (1 - λ) x[⌊s⌋] + λ x[⌊s⌋ + 1], λ = s - ⌊s⌋.
Bicubic blends four, x[⌊s⌋ - 1 .. ⌊s⌋ + 2] (indices clamped to the input), with
Keys' cubic convolution weights, a = -0.75 (PyTorch's; s not clamped at 0):
    W(d) = (a + 2)|d|³ - (a + 3)|d|² + 1        for |d| ≤ 1
    W(d) = a|d|³ - 5a|d|² + 8a|d| - 4a           for 1 < |d| < 2
Bilinear, bicubic and trilinear are a 1-d rule applied along each dim in turn
(the weights of a separable interpolation are products). Everything is
indexing and weighted sums, so gradients come from those ops. A dim whose size
does not change is copied by the linear modes (and antialiased ones), and by
'nearest' on 4-D input (which also reads o // 2 for a doubled size), even when a
scale factor would move its samples (floor(3 · 1.1) = 3), as PyTorch's kernels
do; bicubic's, nearest-exact's and 3-D/5-D nearest's kernels resample.

``antialias=True`` (bilinear, bicubic, lanczos; 4-D input) widens the filter when shrinking, as
PIL does, so every input pixel counts: output o along a dim of ratio r is centred at
c = r (o + ½) and averages the inputs i within the support R·max(r, 1) of c, weighted by
k((i + ½ - c) / max(r, 1)) and normalised to sum to 1, with the kernel k of support R:
    bilinear:  k(d) = max(1 - |d|, 0)                         R = 1
    bicubic:   Keys' W(d) with a = -0.5                        R = 2
    lanczos:   k(d) = sinc(d) sinc(d / 3) for |d| < 3          R = 3
The weights make one matrix per dim, and the resize is y = M_H x M_Wᵀ (matrix products: their
gradients are the transposed products).

uint8 images (bilinear, bicubic, antialiased or not) are resized in fixed point, as PyTorch's and PIL's
kernels resize them: the same matrices rounded to integers, each pass rounded back to uint8
(_fixed_point_resize).
"""

import math
import numbers
import sys
import warnings

import numpy

from autograd import Tensor, _lazy
from autograd.backend import xp
from autograd.graph import program_stacklevel
from autograd.ops.conversion import type_name
from autograd.ops.cubic_convolution import cubic_kernel, cubic_weights
from autograd.ops.layouts import in_suggested_layout
from autograd.ops.pooling_layers import window_sums
from autograd.ops.sliced_gather import gather_along
from autograd.primitive import named_node

from .functional_3d import adaptive_avg_pool3d
from .functional_conv import adaptive_avg_pool1d, adaptive_avg_pool2d
from .module import Module

_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _is_integer(size):
    """PyTorch's _is_integer for one output size: an int (not a bool), a NumPy integer, an integer tensor."""
    if isinstance(size, Tensor):
        return size.dtype.kind in "iu"
    return isinstance(size, numbers.Integral) and not isinstance(size, bool)


def _output_sizes(input, size, scale_factor, spatial, recompute_scale_factor):
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("either size or scale_factor should be defined")
    if size is not None:
        listed = isinstance(size, (list, tuple)) or isinstance(size, Tensor) and size.ndim > 0
        sizes = list(size) if listed else [size] * spatial  # (a 0-d integer tensor is one size, as an int is)
        if not all(_is_integer(s) for s in sizes):  # (PyTorch's message; for one number its argument parser's)
            raise TypeError(f"expected size to be one of int or Tuple[int] or Tuple[int, int] or Tuple[int, int, int], "
                            f"but got size with types {[type(s) for s in sizes]}")
        if len(sizes) != spatial:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, but got input "
                             f"with spatial dimensions of {list(input.shape[2:])} and output size of {size}. "
                             "Please provide input tensor in (N, C, d1, d2, ...,dK) format and output size in "
                             "(o1, o2, ...,oK) format.")
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        return [int(s) for s in sizes], None
    factors = [scale_factor] * spatial if isinstance(scale_factor, numbers.Real) else list(scale_factor)
    if len(factors) != spatial:
        raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but got input "
                         f"with spatial dimensions of {list(input.shape[2:])} and scale_factor of shape "
                         f"{scale_factor}.")
    if not all(abs(n * f) < 2.0 ** 63 for n, f in zip(input.shape[2:], factors)):  # (an inf or NaN factor too)
        raise RuntimeError("value cannot be converted to type int64_t without overflow")
    # PyTorch's kernels truncate n·f toward 0 (a negative factor's size is then refused unless it is 0 or -0.x); its
    # Python computes the size floor(n·f) where it recomputes the scale factor
    sizes = [math.floor(n * f) if recompute_scale_factor else int(n * f) for n, f in zip(input.shape[2:], factors)]
    return sizes, factors


def _ratio(size, out, factor, align_corners=False):
    if align_corners:
        return (size - 1) / (out - 1) if out > 1 else 0.0
    return 1.0 / factor if factor is not None else size / out


def _nearest_index(size, out, factor, exact, planar):
    if planar and not exact:  # PyTorch's 2-d nearest kernel (its nearest_idx) copies a kept size and halves a
        if out == size:  # doubled one whatever the scale factor; its 1-d and 3-d kernels and nearest-exact's do
            return xp.arange(size)  # not (7 columns at scale 1.1 read column 5 last there)
        if out == 2 * size:
            return xp.arange(out) >> 1
    ratio = numpy.float32(_ratio(size, out, factor))  # PyTorch computes the source index in float
    positions = xp.arange(out, dtype=numpy.float32) + (numpy.float32(0.5) if exact else 0)
    return xp.minimum(xp.floor(positions * ratio).astype(xp.int64), size - 1)


def _linear_along(input, dim, out, factor, align_corners, weights_dtype=None):
    size = input.shape[dim]
    if out == size:  # PyTorch's kernels copy a dim that keeps its size, whatever the scale factor (1.1 on 3 rows)
        return input
    ratio = _ratio(size, out, factor, align_corners)
    positions = xp.arange(out, dtype=input.dtype)
    source = positions * ratio if align_corners else xp.maximum(_fused_source(ratio, positions), 0)
    low = xp.minimum(xp.floor(source).astype(xp.int64), size - 1)
    high = xp.minimum(low + 1, size - 1)
    weight = (source - low).astype(input.dtype)
    rest = 1 - weight
    if weights_dtype is not None:  # (float16: PyTorch's kernel keeps λ in float16, and 1 - λ computed from it)
        weight = weight.astype(weights_dtype)
        weight, rest = weight.astype(input.dtype), (1 - weight).astype(input.dtype)
    shape = (out,) + (1,) * (input.ndim - 1 - dim)
    return (gather_along(input, {dim: low}) * Tensor._make(rest.reshape(shape))
            + gather_along(input, {dim: high}) * Tensor._make(weight.reshape(shape)))


def _fused_source(ratio, positions):
    """r (o + ½) - ½ in the positions' precision with one rounding, as PyTorch's compiled kernels compute it (the
    product and the subtraction contracted to one fused multiply-add): rounding the product first moves the source
    of a float32 output past a few thousand by an ulp, and the blend of a long signal by 2e-4 of its step. The
    product of two float32 numbers is exact in float64, so float64 then one rounding is the fused operation."""
    scale = positions.dtype.type(ratio)  # (PyTorch's scale, in the input's precision)
    if positions.dtype != numpy.float32:
        return scale * (positions + 0.5) - 0.5
    return (numpy.float64(scale) * (positions.astype(numpy.float64) + 0.5) - 0.5).astype(numpy.float32)


def _cubic_along(input, dim, out, factor, align_corners, weights_dtype=None):
    size = input.shape[dim]
    ratio = _ratio(size, out, factor, align_corners)
    positions = xp.arange(out, dtype=input.dtype)
    source = positions * ratio if align_corners else _fused_source(ratio, positions)
    floor = xp.floor(source)
    weights = cubic_weights((source - floor).astype(input.dtype))
    if weights_dtype is not None:  # (float16: PyTorch's kernel stores the weights in float16)
        weights = [weight.astype(weights_dtype).astype(input.dtype) for weight in weights]
    shape = (out,) + (1,) * (input.ndim - 1 - dim)
    before = (slice(None),) * dim
    result = None
    for k, weight in enumerate(weights):
        index = xp.clip(floor.astype(xp.int64) - 1 + k, 0, size - 1)
        term = input[before + (index,)] * Tensor._make(weight.reshape(shape))
        result = term if result is None else result + term
    return result


_ANTIALIASED = {  # mode: (the kernel's support R at ratio 1, the kernel k)
    "bilinear": (1, lambda d: numpy.maximum(1 - numpy.abs(d), 0.0)),
    "bicubic": (2, lambda d: cubic_kernel(d, -0.5)),
    "lanczos": (3, lambda d: numpy.where(numpy.abs(d) < 3, numpy.sinc(d) * numpy.sinc(d / 3), 0.0)),
}


def _antialiased_taps(size, out, factor, align_corners, mode):
    """The inputs each output of an antialiased resize along one dim reads, and their weights (PyTorch's and PIL's
    rule: see the module's docstring): (positions, valid, weights), each (out, taps). Where the support leaves the
    input, the weights inside are renormalised; a tap of weight 0 inside the support is still read, as PyTorch's."""
    if out == size:  # a dim that keeps its size is copied, as _linear_along's (PyTorch's forward kernel)
        return numpy.arange(size)[:, None], numpy.ones((size, 1), bool), numpy.ones((size, 1))
    radius, kernel = _ANTIALIASED[mode]
    ratio = _ratio(size, out, factor, align_corners)
    widening = max(ratio, 1.0)
    support = radius * widening
    taps = math.ceil(support) * 2 + 1  # the most inputs one output can read
    centres = ratio * (numpy.arange(out) + 0.5)
    first = numpy.maximum(numpy.trunc(centres - support + 0.5).astype(numpy.int64), 0)
    count = numpy.clip(numpy.minimum(numpy.trunc(centres + support + 0.5).astype(numpy.int64), size) - first, 0, taps)
    inside = numpy.arange(taps) < count[:, None]
    positions = numpy.minimum(first[:, None] + numpy.arange(taps), size - 1)  # (the masked ones kept in range)
    weights = numpy.where(inside, kernel((first[:, None] + numpy.arange(taps) - centres[:, None] + 0.5) / widening),
                          0.0)
    totals = weights.sum(1, keepdims=True)
    weights = numpy.divide(weights, totals, out=weights, where=totals != 0)
    return positions, inside, weights


def _antialiased_weights(size, out, factor, align_corners, mode):
    """The (out, size) matrix of antialiased resizing along one dim: each output's taps' weights."""
    positions, inside, weights = _antialiased_taps(size, out, factor, align_corners, mode)
    matrix = numpy.zeros((out, size))
    rows = numpy.broadcast_to(numpy.arange(out)[:, None], positions.shape)
    matrix[rows[inside], positions[inside]] = weights[inside]
    return matrix


def _antialiased(input, sizes, factors, align_corners, mode):
    """Antialiased resizing of an (N, C, H, W) input: along W, then along H, each a matrix product. An inf or NaN,
    which the products would spread over every output of its row or column, shows in the output (every input is
    some output's tap); then each output sums its own taps instead (``window_sums``), as PyTorch's kernels."""
    height, width = (_antialiased_weights(n, out, factor, align_corners, mode)
                     for n, out, factor in zip(input.shape[2:], sizes, factors))
    dtype = input.dtype
    resized = input
    if not _is_identity(width):  # (a dim left as it is: no product, no node)
        resized = resized @ Tensor._make(xp.asarray(width.T, dtype=dtype))
    if not _is_identity(height):
        resized = Tensor._make(xp.asarray(height, dtype=dtype)) @ resized
    if resized is input or xp.isfinite(resized._data).all():
        return resized
    taps = [None if _is_identity(matrix) else _antialiased_taps(n, out, factor, align_corners, mode)
            for matrix, n, out, factor in zip((height, width), input.shape[2:], sizes, factors)]
    return window_sums(input, taps)


def _weight_matrix(size, out, factor, align_corners, mode, antialias):
    """The (out, size) float64 matrix of one dim's resize: the antialiased one, or the float kernels' own weights
    (their resize of the identity), a weight read at a clamped index added to that index's."""
    if antialias:
        return _antialiased_weights(size, out, factor, align_corners, mode)
    along = _cubic_along if mode == "bicubic" else _linear_along
    return along(Tensor._make(xp.eye(size)), 0, out, factor, align_corners)._data


def _fixed_point_resize(input, sizes, factors, align_corners, mode, antialias):
    """A uint8 image resized as PyTorch's (and PIL's) fixed-point kernels resize it, along W, then along H, each
    pass rounded back to uint8. A pass's weights w (_weight_matrix) become integers q = round(w·2^P), at the
    precision P, at most 22, past which the largest weight doubled would not fit in int16; each output is
        y = clamp((Σ q·x + 2^(P-1)) >> P, 0, 255),
    so rounding happens once per pass, in integers. A dim that keeps its size is left as it is."""
    data = input._data.astype(xp.int64)
    for axis in (3, 2):
        size, out = data.shape[axis], sizes[axis - 2]
        if out == size:
            continue
        matrix = xp.asarray(_weight_matrix(size, out, factors[axis - 2], align_corners, mode, antialias))
        largest = float(matrix.max())
        precision = next((p for p in range(22) if int(0.5 + largest * (1 << (p + 1))) >= 1 << 15), 22)
        scaled = matrix * (1 << precision)
        quantised = xp.trunc(scaled + xp.where(scaled < 0, -0.5, 0.5)).astype(xp.int64)
        summed = xp.moveaxis(xp.tensordot(data, quantised, axes=([axis], [1])), -1, axis)
        data = xp.clip((summed + (1 << (precision - 1))) >> precision, 0, 255)
    return Tensor._make(data.astype(xp.uint8))


def _is_identity(matrix):
    return matrix.shape[0] == matrix.shape[1] and numpy.array_equal(matrix, numpy.eye(len(matrix)))


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of an (N, C, *spatial) input to ``size`` or by ``scale_factor``.

    mode: 'nearest', 'nearest-exact', 'linear' (3-D input), 'bilinear' or 'bicubic' (4-D),
    'trilinear' (5-D), 'area' (adaptive average pooling to the size), 'lanczos' (4-D, antialias only).
    ``recompute_scale_factor=True`` maps coordinates with n / m instead of 1 / scale_factor.
    ``antialias=True`` (bilinear, bicubic, lanczos; 4-D) widens the filter when shrinking, as PIL does.
    """
    if input.ndim < 3:  # PyTorch's NotImplementedError: no mode resizes an input without (N, C) in front
        raise _unsupported(input, mode)
    spatial = input.ndim - 2
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    sizes, factors = _output_sizes(input, size, scale_factor, spatial, recompute_scale_factor)
    if recompute_scale_factor:
        factors = None
    factors = factors or [None] * spatial
    if antialias and not (mode in _ANTIALIASED and input.ndim == 4):
        raise ValueError("Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires a "
                         f"4-D tensor as input (got mode {mode!r} and an input of shape {tuple(input.shape)})")
    if mode == "lanczos" and input.ndim == 4:
        if align_corners:
            raise ValueError("Lanczos mode does not support align_corners=True")
        if not antialias:
            raise ValueError("Lanczos mode requires antialias=True")
    _refuse_dtype(input, mode, antialias)
    if input.dtype == numpy.float16:
        # PyTorch's kernels weigh float16 in float32 and round once; weights, products and sums rounded to
        # float16 at each step put a bilinear resize 1e-2 off. (Nearest copies exactly, but its backward adds each
        # input's gradient terms in float32 too: rounded at each addition they were an ulp or two off.)
        # The linear, trilinear and bicubic forward kernels also store their weights in float16 (1 - λ from the
        # rounded λ), their backward kernels not: the forward's values, the backward's gradient.
        widened = input.float()
        resized = _resized(widened, sizes, factors, mode, align_corners, antialias, spatial)
        if mode in ("linear", "trilinear", "bicubic") and resized is not widened:
            rounded = _resized(widened.detach(), sizes, factors, mode, align_corners, antialias, spatial,
                               numpy.float16)
            resized = resized + (rounded - resized).detach()
        resized = resized.half()
    elif input.dtype == numpy.uint8 and mode in ("bilinear", "bicubic"):
        _check_sizes(input, sizes)
        resized = _fixed_point_resize(input, sizes, factors, bool(align_corners), mode, antialias)
    else:
        resized = _resized(input, sizes, factors, mode, align_corners, antialias, spatial)
    if resized is input:  # every size kept (a skip connection's size): a copy still, as PyTorch's kernels write one
        resized = input.clone()
    # laid out as PyTorch's kernels write it (the index gathers and weighted sums leave NumPy's layouts, batch or
    # channels innermost): channels-last maps stay channels-last, anything else is row-major. (1-d area is PyTorch's
    # 2-d adaptive pool of the unsqueezed sequence, laid out as that pool lays it out.)
    if not (mode == "area" and spatial == 1):
        resized = in_suggested_layout(resized, input)
    return named_node(resized, None, _upsample_node(mode, spatial, antialias), (input,))


_DIMS = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}  # the input's dims each mode needs


def _refuse_dtype(input, mode, antialias):
    """PyTorch's NotImplementedError (naming the kernel that looked) for a dtype its resampling kernels have no loop
    for: nearest copies floating values and uint8; the weighted modes weigh floating values, and uint8 images
    (bilinear and bicubic of a 4-d input, in fixed point: not built here, our own message); antialiasing weighs
    float32 and float64 only. (An input with the wrong number of dims for its mode is refused by _resized.)"""
    kind, spatial = input.dtype.kind, input.ndim - 2
    if mode in _DIMS and input.ndim != _DIMS[mode] or mode not in _DIMS and mode not in ("nearest", "nearest-exact",
                                                                                        "area"):
        return
    planar = spatial == 2 and mode in ("nearest", "nearest-exact", "bilinear")
    if antialias:
        kernel, floating = "compute_index_ranges_weights", input.dtype in (numpy.float32, numpy.float64)
    elif mode == "area":
        kernel, floating = "adaptive_avg_pool3d_cpu" if spatial == 3 else "adaptive_avg_pool2d", kind == "f"
    elif planar:
        kernel, floating = f"upsample_{mode.split('-')[0]}2d_channels_last", kind == "f"
    else:
        rule = {"bicubic": "cubic", "linear": "linear", "trilinear": "linear"}.get(mode, "nearest")
        kernel, floating = f"compute_indices_weights_{rule}", kind == "f"
    if floating or input.dtype == numpy.uint8 and ("nearest" in mode or mode in ("bilinear", "bicubic")):
        return
    raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(input.dtype)}'")


def _upsample_node(mode, spatial, antialias):
    """PyTorch's node for interpolate's mode: UpsampleNearest2DBackward0, UpsampleBilinear2DAaBackward0, ... (area's
    is its adaptive pooling's, named there)."""
    name = {"nearest": "Nearest", "nearest-exact": "NearestExact", "linear": "Linear", "bilinear": "Bilinear",
            "bicubic": "Bicubic", "trilinear": "Trilinear", "lanczos": "Lanczos"}.get(mode)
    return None if name is None else f"Upsample{name}{spatial}D{'Aa' if antialias else ''}Backward0"


def _check_sizes(input, sizes):
    """PyTorch's upsampling kernels refuse an empty input or output (a scale factor that floors a size to 0, a
    size of 0 or less), then an input without channels. 'area' is adaptive average pooling, which checks its own
    sizes."""
    inputs, spatial = input.shape[2:], len(sizes)
    if min(inputs) > 0 and min(sizes) > 0:
        if input.shape[1] == 0:  # (then no channel: an empty batch is resized, an empty channel dim refused)
            raise RuntimeError(f"Non-empty {input.ndim}D data tensor expected but got a tensor with sizes "
                               f"{list(input.shape)}")
        return
    names = "DHW"[3 - spatial:]

    def described(values):
        return ", ".join(f"{name}: {value}" for name, value in zip(names, values))

    joined = " and" if spatial == 1 else ""  # (PyTorch's 1-d kernels' message)
    raise RuntimeError(f"Input and output sizes should be greater than 0, but got input ({described(inputs)}){joined} "
                       f"output ({described(sizes)})")


def _resized(input, sizes, factors, mode, align_corners, antialias, spatial, weights_dtype=None):
    """The resize in input's dtype, its linear, trilinear and bicubic weights rounded to ``weights_dtype`` if given
    (PyTorch's forward kernels of a float16 input; its bilinear one keeps them in float32)."""
    if antialias:
        _check_sizes(input, sizes)
        return _antialiased(input, sizes, factors, bool(align_corners), mode)
    if mode in ("nearest", "nearest-exact"):
        _check_sizes(input, sizes)
        exact = mode == "nearest-exact"
        return gather_along(input, {2 + k: _nearest_index(input.shape[2 + k], out, factor, exact, spatial == 2)
                                    for k, (out, factor) in enumerate(zip(sizes, factors))})
    if mode == "area" and spatial <= 3:  # each output the mean of its input window: adaptive average pooling
        return (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d)[spatial - 1](input, tuple(sizes))
    if mode == "bicubic":
        if spatial != 2:
            raise NotImplementedError(f"Got {input.ndim}D input, but bicubic mode needs 4D input")
        _check_sizes(input, sizes)
        for k, (out, factor) in enumerate(zip(sizes, factors)):
            input = _cubic_along(input, 2 + k, out, factor, bool(align_corners), weights_dtype)
        return input
    if mode in _LINEAR_MODES:
        if _LINEAR_MODES[mode] != spatial:
            raise NotImplementedError(f"Got {input.ndim}D input, but {mode} mode needs "
                                      f"{_LINEAR_MODES[mode] + 2}D input")
        _check_sizes(input, sizes)
        for k, (out, factor) in enumerate(zip(sizes, factors)):
            input = _linear_along(input, 2 + k, out, factor, bool(align_corners), weights_dtype)
        return input
    raise _unsupported(input, mode)


def _unsupported(input, mode):
    return NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.ndim}D) for the "
                               f"modes: nearest | linear | bilinear | bicubic | trilinear | lanczos | area | "
                               f"nearest-exact (got {mode})")


class Upsample(Module):
    """``interpolate`` as a layer."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.name = type(self).__name__  # PyTorch's attribute (its deprecation warnings name the class)
        if isinstance(scale_factor, tuple):  # kept as floats, as PyTorch (and so printed)
            scale_factor = tuple(float(factor) for factor in scale_factor)
        elif scale_factor:  # (a list is refused here by float(), as PyTorch's layer refuses it; interpolate takes one)
            scale_factor = float(scale_factor)
        self.size, self.scale_factor, self.mode = size, scale_factor or None, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, input):
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           self.recompute_scale_factor)

    def extra_repr(self):
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}")
        return info + f", mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """Upsample with mode='nearest' (PyTorch's older name)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Upsample with mode='bilinear' and align_corners=True (PyTorch's older name)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


def upsample_nearest(input, size=None, scale_factor=None):
    """interpolate(mode='nearest'), deprecated in PyTorch (and warned of, as there)."""
    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=program_stacklevel())
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """interpolate(mode='bilinear', align_corners=True), deprecated in PyTorch (and warned of, as there)."""
    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=program_stacklevel())
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# nn.Upsample calls the interpolate held here: it asks a subclass of Tensor or an entered mode as F.interpolate does,
# and a symbolic trace through it records interpolate
_lazy.dispatch_namespace(sys.modules[__name__], lambda name, function: name == "interpolate")
