"""Pooling layers with PyTorch's names, arguments, shapes and errors: max, average and adaptive pooling
of 1-d, 2-d and 3-d inputs. ``nn.functional`` gives the same functions; ``autograd.max_pool2d`` and its
kin are PyTorch's top-level spellings (``torch.max_pool2d``: no ``return_indices``; the ``_with_indices``
forms and ``adaptive_max_pool1d`` return (values, indices)).

Max and average pooling are primitives of 4-d (N, C, H, W) tensors (``autograd.ops.pooling``): 1-d
versions insert H = 1, unbatched inputs insert N = 1. Adaptive average pooling is a product with fixed
matrices (y = A_h x A_wᵀ), so its gradient comes from matmul's.

On volumes (N, C, D, H, W) a window is a box, a product of intervals, and the maximum or the sum over a
box is taken one axis after the other: pool each plane over (H, W), then the depth with a (kd, 1)
window. The divisor of an average is a product over the axes (with or without the padding), so it
splits the same way. Max pooling's winner is then PyTorch's, the first maximum in (d, h, w) scan order
(NaN winning): the plane pass finds the first in (h, w) of each plane, the depth pass the first plane
holding the maximum.
"""

from ..backend import xp
from ..errors import ShapeError
from ..index_watching import watch_returned_indices, watches_arguments
from ..meta import MetaArray
from ..primitive import named_node, node_named
from ..tensor import tensor_from
from . import pooling
from .conversion import refuse_kinds, type_name
from .elementwise import where
from .layer_arguments import _as_2d, _batched, _tuple, check_pooling_window
from .layouts import in_suggested_layout
from .names import names
from .outputs import write_out

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
           "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
           "adaptive_max_pool3d", "adaptive_max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "max_pool1d", "max_pool1d_with_indices", "max_pool2d", "max_pool2d_with_indices", "max_pool3d",
           "max_pool3d_with_indices"]


def _pool_sizes(input, kernel_size, stride, padding, dilation, ceil_mode, spatial, name):
    kernel = _tuple(kernel_size, spatial, "kernel_size")
    # (stride == [] is no test for a NumPy integer stride: NumPy compares it elementwise, to an empty array)
    no_stride = stride is None or isinstance(stride, (list, tuple)) and len(stride) == 0
    stride = kernel if no_stride else _tuple(stride, spatial, "stride")
    padding, dilation = _tuple(padding, spatial, "padding"), _tuple(dilation, spatial, "dilation")
    check_pooling_window(kernel, stride, dilation, padding)
    for k, p, d in zip(kernel, padding, dilation):
        if p > (d * (k - 1) + 1) // 2:
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={p}, "
                               f"kernel_size={k} and dilation={d}")
    if any(p > k // 2 for k, p in zip(kernel, padding)):
        shown = " ".join(f"pad{axis} = {p}," for axis, p in zip("DHW"[3 - spatial:], padding))
        raise RuntimeError(f"pad should be smaller than or equal to half of kernel size, but got {shown} "
                           f"kernel_size={kernel}")
    sizes = input.shape[-spatial:]
    out = tuple(pooling.pool_output_size(*args, ceil_mode) for args in zip(sizes, kernel, stride, padding, dilation))
    if min(out) <= 0:  # (sizes as the 2-d kernel sees a 1-d input: of height 1)
        channels, height = input.shape[-spatial - 1:-spatial], (1,) if spatial == 1 else ()
        raise RuntimeError(f"Given input size: ({'x'.join(map(str, channels + height + sizes))}). "
                           f"Calculated output size: ({'x'.join(map(str, channels + height + out))})"
                           f". Output size is too small ({name})")
    if spatial == 1:
        return (1,) + kernel, (1,) + stride, (0,) + padding, (1,) + dilation, (1,) + out
    return kernel, stride, padding, dilation, out


def _refuse_empty_planes_to_pool(input, spatial, name):
    """PyTorch's max and average pooling take an empty batch, but no other empty dim (a window of nothing has no
    maximum or mean), in the words of each kernel: the 1-d average pooling's is the 2-d one's, of height 1."""
    _batched(input, spatial, name)  # (the number of dims checked before the sizes are read)
    shape = list(input.shape)
    if 0 not in shape[-(spatial + 1):]:
        return
    if spatial == 3:  # (PyTorch's sentence names the empty dim by its size, 0, not by its index)
        kernel = "max_pool3d_with_indices_out_cpu_template" if name == "max_pool3d" else name
        raise RuntimeError(f"{kernel}(): Expected input's non-batch dimensions to have positive length, but input has "
                           f"a shape of {shape} and non-batch dimension 0 has length zero!")
    prefix = "max_pool1d: " if name == "max_pool1d" else ""
    if name == "avg_pool1d":
        shape, spatial = shape[:-1] + [1] + shape[-1:], 2
    raise RuntimeError(f"{prefix}Expected {spatial + 1}D or {spatial + 2}D (batch mode) tensor with optional 0 dim "
                       f"batch size for input, but got:{shape}")


def _check_max_pool1d_values(input, kernel_size, stride, padding, dilation, ceil_mode):
    """PyTorch's max_pool1d without indices is a kernel of its own, which checks its arguments in its own words (with
    indices it is the 2-d kernel's, as here): each size, the padding against half the kernel, the output's size."""
    kernel, padding, dilation = (_tuple(v, 1, what)[0] for v, what in ((kernel_size, "kernel_size"),
                                                                         (padding, "padding"), (dilation, "dilation")))
    no_stride = stride is None or isinstance(stride, (list, tuple)) and len(stride) == 0
    stride = kernel if no_stride else _tuple(stride, 1, "stride")[0]
    for what, value, least, bound in (("kernel_size", kernel, 1, "greater than zero"),
                                      ("stride", stride, 1, "greater than zero"),
                                      ("padding", padding, 0, "non-negative")):
        if value < least:
            raise RuntimeError(f"max_pool1d() {what} must be {bound}, but got {value}")
    if padding > kernel // 2:
        raise RuntimeError(f"max_pool1d() padding should be at most half of kernel size, but got padding={padding} "
                           f"and kernel_size={kernel}")
    if dilation < 1:
        raise RuntimeError(f"max_pool1d() dilation must be greater than zero, but got {dilation}")
    out = pooling.pool_output_size(input.shape[-1], kernel, stride, padding, dilation, ceil_mode)
    if out <= 0:
        raise RuntimeError(f"max_pool1d() Invalid computed output size: {out}")


def _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, spatial):
    name = f"max_pool{spatial}d"
    _refuse_empty_planes_to_pool(input, spatial, name)
    if spatial == 1 and not return_indices:
        _check_max_pool1d_values(input, kernel_size, stride, padding, dilation, ceil_mode)
    sizes = _pool_sizes(input, kernel_size, stride, padding, dilation, ceil_mode, spatial, name)
    input, undo = _as_2d(input, spatial, name)
    kernel, stride, padding, dilation, out = sizes
    # PyTorch's values-only 1-d kernel has floating loops only (its kernel with indices, the 2-d one, takes integers
    # too, but not bools: a mask is pooled as uint8 or float); neither takes complex numbers, which have no order
    values_only = spatial == 1 and not return_indices
    refuse_kinds(input, "max_pool1d_impl" if values_only else "max_pool2d", "biuc" if values_only else "bc")
    params = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, out=out)
    return pooling.window_maxima(input, params, return_indices, undo)


@node_named("MaxPool2DWithIndicesBackward0")  # (an unbatched input too: PyTorch's kernel takes it as it is)
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """y = the maximum of each window (padding never wins); with return_indices, also the flat index
    h·W + w of each maximum in its input plane (PyTorch's, for max_unpool)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """max_pool2d's values and indices (whatever return_indices says, as PyTorch's)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, True, 2)


def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, True, 1)


def _window_counts(size, out, kernel, stride, padding):
    """Per output position along one axis: the window's length clipped to the padded input (counted
    with the padding) and to the input itself (without it), as PyTorch's avg_pool divides."""
    start = xp.arange(out) * stride - padding
    end = xp.minimum(start + kernel, size + padding)
    with_padding = end - start
    return with_padding, xp.minimum(end, size) - xp.maximum(start, 0)


def _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, spatial):
    name = f"avg_pool{spatial}d"
    _refuse_empty_planes_to_pool(input, spatial, name)
    kernel, stride, padding, _, out = _pool_sizes(input, kernel_size, stride, padding, 1, ceil_mode, spatial, name)
    input, undo = _as_2d(input, spatial, name)
    if divisor_override is not None:
        if divisor_override == 0:
            raise RuntimeError("avg_pool2d: divisor must be not zero")
        divisor = xp.full(out, float(divisor_override))
    else:
        counts = [_window_counts(input.shape[2 + a], out[a], kernel[a], stride[a], padding[a]) for a in (0, 1)]
        which = 0 if count_include_pad else 1
        divisor = (counts[0][which][:, None] * counts[1][which][None, :]).astype(float)
    refuse_narrow_kinds(input, "avg_pool2d")
    if input.dtype.kind in "iu":  # integers: the window's sum divided as integers, rounding towards 0 (PyTorch)
        total = pooling.AvgPool2d.apply(input, kernel_size=kernel, stride=stride, padding=padding, out=out,
                                        scale=xp.ones(out))._data
        return undo(_divided_towards_zero(total, divisor, input.dtype))
    scale = 1.0 / divisor
    if input.dtype == xp.float16:  # summed in float32 and rounded once, as PyTorch's kernel (not at each add)
        return undo(pooling.AvgPool2d.apply(input.float(), kernel_size=kernel, stride=stride, padding=padding,
                                            out=out, scale=scale).half())
    return undo(pooling.AvgPool2d.apply(input, kernel_size=kernel, stride=stride, padding=padding, out=out,
                                        scale=scale))


def refuse_narrow_kinds(input, kernel):
    """PyTorch's average pooling kernels have int64 among the integers: bools and the narrower integers (uint8,
    int8, int16, int32 images) are its NotImplementedError (NumPy would average them), and so are complex numbers."""
    refuse_kinds(input, kernel, "c" if input.dtype == xp.int64 else "biuc")


def _divided_towards_zero(total, divisor, dtype):
    """total / divisor as C's integer division (PyTorch's average pooling of integers), as a tensor."""
    total, divisor = total.astype(xp.int64), xp.asarray(divisor).astype(xp.int64)
    return tensor_from((xp.sign(total) * xp.sign(divisor) * (xp.abs(total) // xp.abs(divisor))).astype(dtype))


@node_named("AvgPool2DBackward0")  # (an unbatched input too, as max_pool2d)
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """y = the mean of each window: the window's sum divided by its size counted with the zero padding
    (count_include_pad) or without it, or by divisor_override."""
    y = _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, 2)
    return write_out(y, out)


@names("avg_pool1d", method=False)
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, 1)


def _refuse_empty_planes(shape, name, first):
    """PyTorch's adaptive pooling check: the dims from ``first`` on (the planes' for average pooling in 1-d and
    2-d, every dim but the first for the others) must not be empty, where a mean or maximum would be of nothing."""
    for d in range(first, len(shape)):
        if shape[d] == 0:
            raise RuntimeError(f"{name}(): Expected input to have non-zero size for non-batch dimensions, but input "
                               f"has sizes {list(shape)} with dimension {d} being empty")


def _adaptive_sizes(input, output_size, spatial, name):
    """(input as N, C, H, W; what undoes that; the output's (H, W)). PyTorch's 1-d pooling is its 2-d
    kernel's, so its errors name the 2-d one; an output size of 0 gives an empty result, as PyTorch's."""
    if name.startswith("adaptive_max"):
        _refuse_empty_planes(input.shape, name, 1)
    else:  # (the 2-d kernel's view of a 1-d input: a height of 1)
        viewed = input.shape if spatial == 2 else input.shape[:-1] + (1,) + input.shape[-1:]
        _refuse_empty_planes(viewed, "adaptive_avg_pool2d", len(viewed) - 2)
    input, undo = _as_2d(input, spatial, name)
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * spatial
    if len(sizes) != spatial:
        raise ShapeError(f"{name}: output_size must be an int or a tuple of {spatial}, got {output_size!r}")
    sizes = tuple(input.shape[4 - spatial + a] if s is None else int(s) for a, s in enumerate(sizes))
    if min(sizes) < 0:
        raise RuntimeError(f"{name.replace('1d', '2d')}: elements of output_size must be greater than or equal "
                           f"to 0 but received {{{', '.join(map(str, sizes))}}}")
    _refuse_kinds_of_bins(input, name.replace("1d", "2d"), sizes)
    return input, undo, ((1,) if spatial == 1 else ()) + sizes


def _no_bins(input, out, spatial, kernel, return_indices=False):
    """Adaptive pooling to an output size ``out`` with a 0: an empty result (and indices), whose backward PyTorch's
    ``kernel`` refuses (its 2-d kernel sees a 1-d output with a height of 1)."""
    shape = input.shape[:input.ndim - spatial] + tuple(out[-spatial:])
    shown = shape[:-1] + (1,) + shape[-1:] if spatial == 1 else shape
    y = pooling.NoBins.apply(input, shape=shape, shown=shown, kernel=kernel)
    return watch_returned_indices(y, tensor_from(xp.zeros(shape, dtype=xp.int64))) if return_indices else y


def _refuse_kinds_of_bins(input, kernel, sizes):
    """PyTorch's adaptive kernels have no bool, integer or complex loops (NumPy would average integers into
    floats); an average into one bin per plane is its mean, which takes complex numbers and refuses integers in its
    own words, and the 2-d average into no bins returns its empty result before its kernel looks at the dtype."""
    average = kernel.startswith("adaptive_avg")
    if average and all(s == 1 for s in sizes):
        if input.dtype.kind in "biu":
            raise RuntimeError("mean(): could not infer output dtype. Input dtype must be either a floating point or "
                               f"complex dtype. Got: {type_name(input.dtype)}")
    elif not (kernel == "adaptive_avg_pool2d" and 0 in sizes):
        refuse_kinds(input, kernel, "biuc")


def _bins(size, out):
    """PyTorch's adaptive bins: bin i covers [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    i = xp.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _bin_average(size, out, dtype):
    """The (out, size) matrix whose row i averages bin i (in float32 for float16: see _separable)."""
    dtype = xp.float32 if dtype == xp.float16 else dtype
    start, end = _bins(size, out)
    positions = xp.arange(size)
    inside = (positions >= start[:, None]) & (positions < end[:, None])
    return inside.astype(dtype) / (end - start)[:, None].astype(dtype)


@watches_arguments("input")  # (PyTorch's node saves them: writing one refuses)
def adaptive_avg_pool2d(input, output_size):
    """y[i, j] = the mean of x over bin i of the rows and bin j of the columns: y = A_h x A_wᵀ."""
    planes, undo, out = _adaptive_sizes(input, output_size, 2, "adaptive_avg_pool2d")
    if 0 in out:
        return _no_bins(input, out, 2, "adaptive_avg_pool2d")
    pooled = undo(_separable(planes, [_bin_average(planes.shape[2 + a], out[a], planes.dtype) for a in (0, 1)]))
    pooled = in_suggested_layout(pooled, input)  # (a product's result is row-major; PyTorch's follows its input)
    # (PyTorch's: a mean over the last two dims for a 1x1 output, its adaptive pooling's node otherwise)
    return named_node(pooled, None, "MeanBackward1" if tuple(out) == (1, 1) else "AdaptiveAvgPool2DBackward0",
                      (planes, input))


@names("adaptive_avg_pool1d", method=False)
@watches_arguments("input")  # (PyTorch's node saves them: writing one refuses)
def adaptive_avg_pool1d(input, output_size):
    planes, undo, out = _adaptive_sizes(input, output_size, 1, "adaptive_avg_pool1d")
    if 0 in out:
        return _no_bins(input, out, 1, "adaptive_avg_pool2d")
    input = planes
    return undo(_separable(input, [None, _bin_average(input.shape[3], out[1], input.dtype)]))


def _separable(input, matrices):
    """A_h x A_wᵀ over the last two dims (a None matrix leaves that dim alone). float16 is averaged in float32
    (the matrices' 1/n too) and rounded once, as PyTorch's kernels."""
    if input.dtype == xp.float16:
        wide = [None if matrix is None else matrix.astype(xp.float32) for matrix in matrices]
        return _separable(input.float(), wide).half()
    rows, columns = matrices
    pooled = input
    if rows is not None:
        pooled = tensor_from(rows) @ pooled
    if columns is not None:
        pooled = pooled @ tensor_from(xp.ascontiguousarray(columns.T))
    # An inf or NaN in the input would be spread by the products over every bin of its row or column (0 · inf is
    # NaN); it reaches the output, as every position lies in some bin, so the output alone (the smaller) is checked
    if type(pooled._data) is not MetaArray and not xp.isfinite(pooled._data).all():
        return _bin_means_of_nonfinite(input, rows, columns)
    return pooled


def _bin_means_of_nonfinite(input, rows, columns):
    """A_h x A_wᵀ as PyTorch's kernels compute it, bin by bin: each output reads only its own bin (the matrix's
    nonzero run in its row), so an inf or NaN reaches the bins that hold it and no other."""
    return window_sums(input, [None if matrix is None else _taps_of(matrix) for matrix in (rows, columns)])


def _taps_of(matrix):
    """The taps of a matrix whose rows are runs of nonzero weights: (positions, valid, weights), each (out, taps),
    the runs padded to the longest by repeating their last position, masked out."""
    inside = matrix != 0
    counts, first = inside.sum(1), inside.argmax(1)
    slots = xp.arange(int(counts.max()))
    valid = slots < counts[:, None]
    positions = xp.minimum(first[:, None] + slots, first[:, None] + counts[:, None] - 1)
    return positions, valid, xp.where(valid, xp.take_along_axis(matrix, positions, 1), 0)


def window_sums(input, taps):
    """y = Σ_taps w · x over the last two dims of (N, C, H, W), one axis after the other, each output reading only
    its own taps ``(positions, valid, weights)`` (out, taps) per axis (None: the axis left alone). The products with
    (out, size) weight matrices give the same sums, but spread an inf or NaN over every output of its row (0 · inf
    is NaN); this gathers each output's taps instead, so a non-finite input reaches the outputs that read it and no
    other, as PyTorch's kernels (the sums over one axis then the other are the sum over the box: a set holding NaN,
    or +inf and -inf, sums to NaN however it is grouped)."""
    for axis, axis_taps in zip((2, 3), taps):
        if axis_taps is None:
            continue
        positions, valid, weights = axis_taps
        if axis == 2:  # (N, C, out, taps, W)
            gathered = input[:, :, positions, :]
            valid, weights, summed = valid[:, :, None], weights[:, :, None], 3
        else:  # (N, C, H, out, taps)
            gathered = input[:, :, :, positions]
            summed = 4
        input = (where(tensor_from(valid), gathered, 0.0) * tensor_from(weights.astype(input.dtype))).sum(summed)
    return input


def _adaptive_max(input, output_size, return_indices, spatial):
    name = f"adaptive_max_pool{spatial}d"
    planes, undo, out = _adaptive_sizes(input, output_size, spatial, name)
    if 0 in out:
        return _no_bins(input, out, spatial, "adaptive_max_pool2d", return_indices)
    input = planes
    height, width = input.shape[2:]
    tiles = pooling.bins_as_windows((height, width), out)
    if tiles and type(input._data) is not MetaArray:  # (max pooling's passes: see bins_as_windows)
        return pooling.window_maxima(input, tiles, return_indices, undo)
    # Every bin padded to the longest bin by repeating its last position: repeats never change a maximum,
    # and come after the original in scan order, so the first maximum is PyTorch's.
    positions = []
    for size, count in ((height, out[0]), (width, out[1])):
        start, end = _bins(size, count)
        longest = int((end - start).max())
        positions.append(xp.minimum(start[:, None] + xp.arange(longest), end[:, None] - 1))
    rows, columns = positions
    flat = rows[:, None, :, None] * width + columns[None, :, None, :]  # (oh, ow, kh, kw)
    window = flat.shape[2] * flat.shape[3]  # (sizes spelled out: a -1 is ambiguous in an empty batch)
    values = input._data.reshape(*input.shape[:2], height * width)[:, :, flat.reshape(-1)]
    values = values.reshape(*input.shape[:2], *out, window)
    choice = pooling.window_winner(values)
    candidates = xp.broadcast_to(flat.reshape(*out, window), values.shape)
    indices = xp.take_along_axis(candidates, choice[..., None], -1)[..., 0]
    y = pooling.GatherFlat.apply(input, indices=indices, overlapping=True)
    # (a gather's result is row-major; PyTorch's follows its input)
    y, indices = in_suggested_layout(y, input), in_suggested_layout(tensor_from(indices), input)
    return watch_returned_indices(undo(y), undo(indices)) if return_indices else undo(y)


@node_named("AdaptiveMaxPool2DBackward0")
def adaptive_max_pool2d(input, output_size, return_indices=False):
    """y[i, j] = the maximum of x over bin i of the rows and bin j of the columns (PyTorch's bins)."""
    return _adaptive_max(input, output_size, return_indices, 2)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _adaptive_max(input, output_size, return_indices, 1)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    return _adaptive_max(input, output_size, True, 2)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    return _adaptive_max(input, output_size, True, 1)


# -- volumes ---------------------------------------------------------------------------------------


def _unbatch(y, unbatched):
    return y.squeeze(0) if unbatched else y


def _planes(x):
    """(N, C, D, H, W) → (N, C·D, H, W): every plane of every channel as a channel of a 2-d op."""
    n, c, d, h, w = x.shape
    return x.reshape(n, c * d, h, w)


def _columns(planes, n, c, depth):
    """(N, C·D, H', W') → (N, C, D, H'·W'): the sizes spelled out (a -1 is ambiguous in an empty batch)."""
    return planes.reshape(n, c, depth, planes.shape[-2] * planes.shape[-1])



def _volume_indices(plane_indices, depth_indices, shape):
    """Flat indices d·H·W + h·W + w of the winners, from the depth pass's (d·L + l over the (D, L) plane of
    plane-pass outputs, L = oh·ow) and the plane pass's (h·W + w in each plane, (N, C·D, oh, ow))."""
    n, c, depth, height, width = shape
    out_d, columns = depth_indices.shape[2:]
    chosen = depth_indices._data // columns  # the winning depth d
    # (a depth window wholly in the padding has no winner: its index names the first depth it would read, past the
    # input, as PyTorch's, whose index there lies outside the volume too)
    within = xp.take_along_axis(plane_indices._data.reshape(n, c, depth, columns), xp.minimum(chosen, depth - 1),
                                axis=2)
    return tensor_from((chosen * (height * width) + within).reshape(n, c, out_d, *plane_indices.shape[2:]))


def _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    name = "max_pool3d"
    _refuse_empty_planes_to_pool(input, 3, name)
    kernel, stride, padding, dilation, out = _pool_sizes(input, kernel_size, stride, padding, dilation, ceil_mode,
                                                         3, name)
    refuse_kinds(input, name, "bc")  # (before its plane pass, the 2-d kernel, refuses in its own name)
    input, unbatched = _batched(input, 3, name)
    n, c, depth = input.shape[:3]
    planes = _max_pool(_planes(input), kernel[1:], stride[1:], padding[1:], dilation[1:], ceil_mode, return_indices, 2)
    values = planes[0] if return_indices else planes
    pooled = _max_pool(_columns(values, n, c, depth), (kernel[0], 1), (stride[0], 1), (padding[0], 0),
                       (dilation[0], 1), ceil_mode, return_indices, 2)
    # (the depth pass's result is row-major; PyTorch's follows its input)
    if not return_indices:
        return _unbatch(in_suggested_layout(pooled.reshape(n, c, *out), input), unbatched)
    y = in_suggested_layout(pooled[0].reshape(n, c, *out), input)
    indices = in_suggested_layout(_volume_indices(planes[1], pooled[1], input.shape), input)
    return watch_returned_indices(_unbatch(y, unbatched), _unbatch(indices, unbatched))


@node_named("MaxPool3DWithIndicesBackward0")
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """y = the maximum of each kd×kh×kw window (padding never wins); with return_indices, also the flat
    index d·H·W + h·W + w of each maximum in its input volume."""
    return _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    return _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def _refuse_volume_smaller_than_kernel(input, kernel_size):
    """PyTorch's 3-d average pooling (its 3-d max pooling does not) wants each dim of the volume, before padding, at
    least as long as the kernel, and says so before it looks at the padding or the output's size."""
    kernel = _tuple(kernel_size, 3, "kernel_size")
    sizes = input.shape[-3:]
    if min(kernel) > 0 and any(size < k for size, k in zip(sizes, kernel)):
        raise RuntimeError(f"input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than kernel size "
                           f"(kT: {kernel[0]} kH: {kernel[1]} kW: {kernel[2]})")


@node_named("AvgPool3DBackward0")
def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """y = the mean of each window: its sum over the size of the window counted with the zero padding
    (count_include_pad) or without, or over divisor_override."""
    name = "avg_pool3d"
    _refuse_empty_planes_to_pool(input, 3, name)
    _refuse_volume_smaller_than_kernel(input, kernel_size)
    kernel, stride, padding, _, _ = _pool_sizes(input, kernel_size, stride, padding, 1, ceil_mode, 3, name)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("avg_pool3d: divisor must be not zero")
    input, unbatched = _batched(input, 3, name)
    refuse_narrow_kinds(input, "avg_pool3d_out_frame")
    if input.dtype == xp.float16:  # (its 3-d kernel has no Half loop; its 2-d one has)
        refuse_kinds(input, "avg_pool3d_out_frame", "f")
    if input.dtype.kind in "iu":  # integers: the sums (exact in float64), divided once as integers
        total = avg_pool3d(input.double(), kernel, stride, padding, ceil_mode, count_include_pad, 1)._data
        if divisor_override is None:
            which = 0 if count_include_pad else 1
            counts = [_window_counts(input.shape[2 + a], total.shape[2 + a], kernel[a], stride[a], padding[a])[which]
                      for a in range(3)]
            divisor = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
        else:
            divisor = divisor_override
        return write_out(_unbatch(_divided_towards_zero(total, divisor, input.dtype), unbatched), out)
    n, c, depth = input.shape[:3]
    # the planes' sums when a divisor_override divides the whole sum, else their means (the divisor is a product)
    planes = _avg_pool(_planes(input), kernel[1:], stride[1:], padding[1:], ceil_mode, count_include_pad,
                       None if divisor_override is None else 1, 2)
    y = _avg_pool(_columns(planes, n, c, depth), (kernel[0], 1), (stride[0], 1), (padding[0], 0), ceil_mode,
                  count_include_pad, divisor_override, 2)
    return write_out(_unbatch(y.reshape(n, c, y.shape[2], *planes.shape[2:]), unbatched), out)


def _adaptive_sizes3d(input, output_size, name):
    _refuse_empty_planes(input.shape, name, 1)
    input, unbatched = _batched(input, 3, name)
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 3
    if len(sizes) != 3:
        raise RuntimeError(f"{name}(): internal error: output_size.size() must be 3")
    sizes = tuple(input.shape[2 + a] if s is None else int(s) for a, s in enumerate(sizes))
    if min(sizes) < 0:
        raise RuntimeError(f"{name}: output_size must be non-negative, got {sizes}")
    _refuse_kinds_of_bins(input, f"{name}_cpu", sizes)
    return input, unbatched, sizes


@watches_arguments("input")  # (PyTorch's node saves them: writing one refuses)
def adaptive_avg_pool3d(input, output_size):
    """y[t, i, j] = the mean of x over PyTorch's adaptive bins of each axis: y = A_d · (plane pass)."""
    volumes, unbatched, out = _adaptive_sizes3d(input, output_size, "adaptive_avg_pool3d")
    if 0 in out:
        return _no_bins(input, out, 3, "adaptive_avg_pool3d")
    input = volumes
    n, c, depth = input.shape[:3]
    planes = _columns(adaptive_avg_pool2d(_planes(input), out[1:]), n, c, depth)
    y = _separable(planes, [_bin_average(depth, out[0], input.dtype), None])
    name = "MeanBackward1" if tuple(out) == (1, 1, 1) else "AdaptiveAvgPool3DBackward0"  # (PyTorch's: a mean)
    return named_node(_unbatch(y.reshape(n, c, *out), unbatched), None, name, (input,))


def _adaptive_max3d(input, output_size, return_indices):
    volumes, unbatched, out = _adaptive_sizes3d(input, output_size, "adaptive_max_pool3d")
    if 0 in out:
        return _no_bins(input, out, 3, "adaptive_max_pool3d", return_indices)
    input = volumes
    n, c, depth = input.shape[:3]
    planes = _adaptive_max(_planes(input), out[1:], return_indices, 2)
    values = planes[0] if return_indices else planes
    pooled = _adaptive_max(_columns(values, n, c, depth), (out[0], None), return_indices, 2)
    if not return_indices:
        return _unbatch(pooled.reshape(n, c, *out), unbatched)
    indices = _volume_indices(planes[1], pooled[1], input.shape)
    return watch_returned_indices(_unbatch(pooled[0].reshape(n, c, *out), unbatched), _unbatch(indices, unbatched))


@node_named("AdaptiveMaxPool3DBackward0")  # (PyTorch's one kernel, for an unbatched input too)
def adaptive_max_pool3d(input, output_size, return_indices=False):
    """y = the maximum of x over PyTorch's adaptive bins of each axis."""
    return _adaptive_max3d(input, output_size, return_indices)


@node_named("AdaptiveMaxPool3DBackward0")
def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    return _adaptive_max3d(input, output_size, True)


# -- PyTorch's top-level forms -----------------------------------------------------------------------------


@names("max_pool1d", method=False)
def max_pool1d_values(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """PyTorch's ``torch.max_pool1d``: the values only (no ``return_indices``)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, False, 1)


@names("max_pool2d", method=False)
def max_pool2d_values(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """PyTorch's ``torch.max_pool2d``: the values only (no ``return_indices``)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, False, 2)


@names("max_pool3d", method=False)
def max_pool3d_values(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """PyTorch's ``torch.max_pool3d``: the values only (no ``return_indices``)."""
    return _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, False)


@names("max_pool1d_with_indices", method=False)
def max_pool1d_values_and_indices(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """PyTorch's ``torch.max_pool1d_with_indices``: (values, indices), ``ceil_mode`` sixth."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, True, 1)


@names("adaptive_max_pool1d", method=False)
def adaptive_max_pool1d_values_and_indices(input, output_size):
    """PyTorch's ``torch.adaptive_max_pool1d``: (values, indices), always."""
    return _adaptive_max(input, output_size, True, 1)
