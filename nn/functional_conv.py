"""``nn.functional`` for images and sequences: convolution, pooling, channel dropout,
resizing, fold/unfold, with PyTorch's names, arguments, shapes and errors.

Everything is computed on 4-d (N, C, H, W) tensors: 1-d versions insert H = 1,
unbatched inputs insert N = 1. Convolution, max and average pooling, fold and
unfold are primitives (``autograd.ops.convolution``, ``autograd.ops.pooling``);
adaptive average pooling and bilinear resizing are products with fixed
matrices (y = A_h x A_wᵀ), so their gradients come from matmul's.
"""

import autograd
from autograd import Tensor
from autograd.backend import xp
from autograd.errors import check_same_dtype
from autograd.ops import convolution, pooling

from .padding import pad


def _tuple(value, n, name):
    """An int or a sequence of n ints, as a tuple of n ints (PyTorch's _pair / _single)."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _dims(value, ndim):
    return "[" + ", ".join(str(s) for s in value) + "]" if ndim else str(value)


def _batched(input, spatial, name):
    """input as (N, C, *spatial) and whether a batch dim was added (PyTorch accepts unbatched input)."""
    if input.ndim == spatial + 2:
        return input, False
    if input.ndim == spatial + 1:
        return input.unsqueeze(0), True
    raise RuntimeError(f"Expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input to {name}, "
                       f"but got input of size: {_dims(input.shape, 1)}")


def _as_2d(input, spatial, name):
    """(N, C, *spatial) → (N, C, H, W): 1-d inputs get H = 1. Returns the tensor and how to undo it."""
    input, unbatched = _batched(input, spatial, name)
    if spatial == 1:
        input = input.unsqueeze(2)

    def undo(y):
        if spatial == 1:
            y = y.squeeze(2)
        return y.squeeze(0) if unbatched else y

    return input, undo


# -- convolution --------------------------------------------------------------------------------------


def _same_padding(kernel, dilation):
    """'same': d(k−1) zeros in all, the odd one on the right/bottom, as PyTorch."""
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple(t // 2 for t in total), tuple(t - 2 * (t // 2) for t in total)


def _conv_padding(padding, n, kernel, dilation, stride):
    """Symmetric padding pairs and extra bottom/right padding, from PyTorch's int/tuple/'same'/'valid'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * n, (0,) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            return _same_padding(kernel, dilation)
        raise RuntimeError(f"Invalid padding string: {padding!r}, should be one of 'valid', 'same'")
    return _tuple(padding, n, "padding"), (0,) * n


def _check_conv(input, weight, groups, in_channels, name, transposed=False, bias=None):
    check_same_dtype(name, input, weight=weight, bias=bias)
    if groups <= 0:
        raise RuntimeError(f"{name}: non-positive groups is not supported, got groups={groups}")
    if weight.shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {_dims(weight.shape, 1)} instead")
    if input.shape[1] != in_channels:
        raise RuntimeError(
            f"Given groups={groups}, {'transposed=1, ' if transposed else ''}weight of size "
            f"{_dims(weight.shape, 1)}, expected input with {in_channels} channels, got {input.shape[1]} "
            f"(input shape {_dims(input.shape, 1)})")


def _conv(input, weight, bias, stride, padding, dilation, groups, spatial):
    name = f"conv{spatial}d"
    if weight.ndim != spatial + 2:
        raise RuntimeError(f"{name}: expected a weight of {spatial + 2} dimensions (out, in/groups, *kernel), "
                           f"got weight of size {_dims(weight.shape, 1)}")
    input, undo = _as_2d(input, spatial, name)
    _check_conv(input, weight, groups, weight.shape[1] * groups, name, bias=bias)
    kernel = tuple(weight.shape[2:])
    stride, dilation = _tuple(stride, spatial, "stride"), _tuple(dilation, spatial, "dilation")
    padding, extra = _conv_padding(padding, spatial, kernel, dilation, stride)
    if spatial == 1:
        weight = weight.unsqueeze(2)
        kernel, stride, padding, dilation, extra = ((1,) + kernel, (1,) + stride, (0,) + padding,
                                                    (1,) + dilation, (0,) + extra)
    if extra[0] or extra[1]:  # 'same' with an even d(k−1): the odd zero right/below
        input = pad(input, (0, extra[1], 0, extra[0]))
    shape = input.shape
    padded = (shape[2] + 2 * padding[0], shape[3] + 2 * padding[1])
    effective = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if effective[0] > padded[0] or effective[1] > padded[1]:
        shown = slice(2 - spatial, 2)
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded[shown]))}). Kernel size: "
            f"({' x '.join(map(str, effective[shown]))}). Kernel size can't be greater than actual input size "
            f"(input shape {_dims(input.shape, 1)})")
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return undo(convolution.Conv2d.apply(*inputs, **params))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n,o] = b[o] + Σ_c w[o,c] ⋆ x[n, c] (cross-correlation, as PyTorch), weight (O, C/groups, kh, kw);
    padding: int, pair, 'valid' (none) or 'same' (output size = input size, stride 1)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d on (N, C, L) with weight (O, C/groups, k)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1)


def conv_tbc(input, weight, bias, pad=0):
    """conv1d in (time, batch, channel) layout: input (T, B, C_in), weight (k, C_in, C_out), bias (C_out,)
    → (T + 2·pad − k + 1, B, C_out)."""
    if input.ndim != 3 or weight.ndim != 3 or bias.ndim != 1:
        raise RuntimeError(f"conv_tbc: expected a 3-D input, a 3-D weight and a 1-D bias, got shapes "
                           f"{list(input.shape)}, {list(weight.shape)} and {list(bias.shape)}")
    y = conv1d(input.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=pad)
    return y.permute(2, 0, 1)


def _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, spatial):
    name = f"conv_transpose{spatial}d"
    input, undo = _as_2d(input, spatial, name)
    _check_conv(input, weight, groups, weight.shape[0], name, transposed=True, bias=bias)
    stride, padding = _tuple(stride, spatial, "stride"), _tuple(padding, spatial, "padding")
    output_padding, dilation = _tuple(output_padding, spatial, "output_padding"), _tuple(dilation, spatial, "dilation")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    if spatial == 1:
        weight = weight.unsqueeze(2)
        stride, padding, dilation = (1,) + stride, (0,) + padding, (1,) + dilation
        output_padding = (0,) + output_padding
    out = [(input.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (weight.shape[2 + a] - 1) + 1
           + output_padding[a] for a in (0, 1)]
    if min(out) <= 0:
        raise RuntimeError(f"{name}: output size {tuple(out[2 - spatial:])} is too small (input shape "
                           f"{_dims(input.shape, 1)}, weight shape {_dims(weight.shape, 1)}, padding {padding})")
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=output_padding)
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return undo(convolution.ConvTranspose2d.apply(*inputs, **params))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The adjoint of conv2d in its input ("deconvolution"), weight (C_in, C_out/groups, kh, kw):
    output size (in − 1)·s − 2p + d(k − 1) + output_padding + 1."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 2)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 1)


# -- pooling --------------------------------------------------------------------------------------------


def _pool_sizes(input, kernel_size, stride, padding, dilation, ceil_mode, spatial, name):
    kernel = _tuple(kernel_size, spatial, "kernel_size")
    stride = kernel if stride is None or stride == [] or stride == () else _tuple(stride, spatial, "stride")
    padding, dilation = _tuple(padding, spatial, "padding"), _tuple(dilation, spatial, "dilation")
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
    if min(out) <= 0:
        raise RuntimeError(f"{name}: given input size: ({'x'.join(map(str, input.shape[-spatial - 1:]))}). "
                           f"Calculated output size: ({'x'.join(map(str, input.shape[-spatial - 1:-spatial] + out))})"
                           f". Output size is too small")
    if spatial == 1:
        return (1,) + kernel, (1,) + stride, (0,) + padding, (1,) + dilation, (1,) + out
    return kernel, stride, padding, dilation, out


def _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, spatial):
    name = f"max_pool{spatial}d"
    sizes = _pool_sizes(input, kernel_size, stride, padding, dilation, ceil_mode, spatial, name)
    input, undo = _as_2d(input, spatial, name)
    kernel, stride, padding, dilation, out = sizes
    params = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, out=out)
    values = pooling.MaxPool2d.apply(input, **params)
    if not return_indices:
        return undo(values)
    node = values.grad_fn
    winners = (node.winners_for(input._data, values._data) if node is not None else
               pooling.max_pool_winners(input._data, values._data, params))
    return undo(values), undo(Tensor(pooling.max_pool_indices(winners, input.shape, params)))


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
    scale = 1.0 / divisor
    return undo(pooling.AvgPool2d.apply(input, kernel_size=kernel, stride=stride, padding=padding, out=out,
                                        scale=scale))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """y = the mean of each window: the window's sum divided by its size counted with the zero padding
    (count_include_pad) or without it, or by divisor_override."""
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, 2)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, 1)


def _adaptive_sizes(input, output_size, spatial, name):
    input, undo = _as_2d(input, spatial, name)
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * spatial
    if len(sizes) != spatial:
        raise ValueError(f"{name}: output_size must be an int or a tuple of {spatial}, got {output_size!r}")
    sizes = tuple(input.shape[4 - spatial + a] if s is None else int(s) for a, s in enumerate(sizes))
    if min(sizes) <= 0:
        raise RuntimeError(f"{name}: output_size must be positive, got {sizes}")
    return input, undo, ((1,) if spatial == 1 else ()) + sizes


def _bins(size, out):
    """PyTorch's adaptive bins: bin i covers [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    i = xp.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _bin_average(size, out, dtype):
    """The (out, size) matrix whose row i averages bin i."""
    start, end = _bins(size, out)
    positions = xp.arange(size)
    inside = (positions >= start[:, None]) & (positions < end[:, None])
    return inside.astype(dtype) / (end - start)[:, None].astype(dtype)


def adaptive_avg_pool2d(input, output_size):
    """y[i, j] = the mean of x over bin i of the rows and bin j of the columns: y = A_h x A_wᵀ."""
    input, undo, out = _adaptive_sizes(input, output_size, 2, "adaptive_avg_pool2d")
    return undo(_separable(input, [_bin_average(input.shape[2 + a], out[a], input.dtype) for a in (0, 1)]))


def adaptive_avg_pool1d(input, output_size):
    input, undo, out = _adaptive_sizes(input, output_size, 1, "adaptive_avg_pool1d")
    return undo(_separable(input, [None, _bin_average(input.shape[3], out[1], input.dtype)]))


def _separable(input, matrices):
    """A_h x A_wᵀ over the last two dims (a None matrix leaves that dim alone)."""
    rows, columns = matrices
    if rows is not None:
        input = Tensor(rows) @ input
    if columns is not None:
        input = input @ Tensor(xp.ascontiguousarray(columns.T))
    return input


def _adaptive_max(input, output_size, return_indices, spatial):
    name = f"adaptive_max_pool{spatial}d"
    input, undo, out = _adaptive_sizes(input, output_size, spatial, name)
    height, width = input.shape[2:]
    # Every bin padded to the longest bin by repeating its last position: repeats never change a maximum,
    # and come after the original in scan order, so the first maximum is PyTorch's.
    positions = []
    for size, count in ((height, out[0]), (width, out[1])):
        start, end = _bins(size, count)
        longest = int((end - start).max())
        positions.append(xp.minimum(start[:, None] + xp.arange(longest), end[:, None] - 1))
    rows, columns = positions
    flat = rows[:, None, :, None] * width + columns[None, :, None, :]  # (oh, ow, kh, kw)
    values = input._data.reshape(*input.shape[:2], -1)[:, :, flat.reshape(-1)]
    values = values.reshape(*input.shape[:2], *out, -1)
    choice = _first_max(values)
    indices = xp.take_along_axis(xp.broadcast_to(flat.reshape(*out, -1), values.shape), choice[..., None], -1)[..., 0]
    y = autograd.ops.pooling.GatherFlat.apply(input, indices=indices, overlapping=True)
    return (undo(y), undo(Tensor(indices))) if return_indices else undo(y)


def _first_max(values):
    """argmax over the last axis, NaN counted as the largest (as PyTorch's max pooling)."""
    nan = xp.isnan(values)
    return xp.where(nan.any(-1), nan.argmax(-1), values.argmax(-1))


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """y[i, j] = the maximum of x over bin i of the rows and bin j of the columns (PyTorch's bins)."""
    return _adaptive_max(input, output_size, return_indices, 2)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    return _adaptive_max(input, output_size, return_indices, 1)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    return _adaptive_max(input, output_size, True, 2)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    return _adaptive_max(input, output_size, True, 1)


# -- fold and unfold ----------------------------------------------------------------------------------


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col: every kh×kw block of (N, C, H, W) as a column, (N, C·kh·kw, L), L the number of blocks."""
    if input.ndim != 4:
        raise NotImplementedError(f"Input Error: Only 4D input Tensors are supported (got {input.ndim}D, "
                                  f"input of size {_dims(input.shape, 1)})")
    params = dict(kernel_size=_tuple(kernel_size, 2, "kernel_size"), dilation=_tuple(dilation, 2, "dilation"),
                  padding=_tuple(padding, 2, "padding"), stride=_tuple(stride, 2, "stride"))
    out = [convolution.output_size(input.shape[2 + a], *(params[k][a] for k in ("kernel_size", "stride",
                                                                                 "padding", "dilation")))
           for a in (0, 1)]
    if min(out) <= 0:
        raise RuntimeError(f"unfold: the kernel {params['kernel_size']} (dilation {params['dilation']}) does "
                           f"not fit the padded input of size {_dims(input.shape, 1)} (padding {params['padding']})")
    return convolution.Unfold.apply(input, **params)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im, unfold's adjoint: columns (N, C·kh·kw, L) summed into (N, C, *output_size) where blocks overlap."""
    input, unbatched = (input.unsqueeze(0), True) if input.ndim == 2 else (input, False)
    if input.ndim != 3:
        raise RuntimeError(f"Expected 2D or 3D (batched) input to fold, got input of size {_dims(input.shape, 1)}")
    params = dict(kernel_size=_tuple(kernel_size, 2, "kernel_size"), dilation=_tuple(dilation, 2, "dilation"),
                  padding=_tuple(padding, 2, "padding"), stride=_tuple(stride, 2, "stride"))
    output_size = _tuple(output_size, 2, "output_size")
    blocks = [convolution.output_size(output_size[a], *(params[k][a] for k in ("kernel_size", "stride",
                                                                              "padding", "dilation")))
              for a in (0, 1)]
    kernel_area = params["kernel_size"][0] * params["kernel_size"][1]
    if input.shape[1] % kernel_area:
        raise RuntimeError(f"Expected size of input's dimension 1 to be divisible by the product of kernel_size, "
                           f"but got input.size(1)={input.shape[1]} and kernel_size={params['kernel_size']}")
    if blocks[0] * blocks[1] != input.shape[2] or min(blocks) <= 0:
        raise RuntimeError(
            f"Given output_size={output_size}, kernel_size={params['kernel_size']}, dilation={params['dilation']}, "
            f"padding={params['padding']}, stride={params['stride']}, expected size of input's dimension 2 to "
            f"match the calculated number of sliding blocks {blocks[0]} * {blocks[1]} = {blocks[0] * blocks[1]}, "
            f"but got input.size(2)={input.shape[2]}.")
    y = convolution.Fold.apply(input, output_size=output_size, **params)
    return y.squeeze(0) if unbatched else y


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """interpolate under its older name."""
    from .interpolation import interpolate  # nn.interpolation is built after this module

    return interpolate(input, size, scale_factor, mode, align_corners)
