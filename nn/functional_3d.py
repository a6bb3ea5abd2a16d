"""``nn.functional`` on volumes (N, C, D, H, W): 3-d convolution and pooling, built from the 2-d ops.

A volume is a stack of planes, and each 3-d op here is its 2-d op over the planes (H, W) and one step
along the depth D:

- convolution: unfold the depth, so that output depth t gathers the kd planes x_pad[t·s + p·d] it reads
  as kd·C channels (``F.unfold`` with a (kd, 1) window), then one ``conv2d`` with the weight
  (O, C/G, kd, kh, kw) read as (O, C/G·kd, kh, kw):

      y[n, o, t] = Σ_{c, p} w[o, c, p] ⋆ x_pad[n, c, t·s + p·d]        (⋆ the 2-d cross-correlation)

- transposed convolution, the adjoint: ``conv_transpose2d`` of each input plane to kd·C_out channels,
  then fold the depth (``F.fold``: the kd planes made from input depth t added at t·s + p·d);
- max, average and adaptive pooling: a window is a box, a product of intervals, and the maximum or the
  sum over a box is taken one axis after the other: pool each plane over (H, W), then the depth with a
  (kd, 1) window. The divisor of an average is a product over the axes (with or without the padding), so
  it splits the same way.

Max pooling's winner is then PyTorch's, the first maximum in (d, h, w) scan order (NaN winning): the
plane pass finds the first in (h, w) of each plane, the depth pass the first plane holding the maximum.

Every step is a differentiable op of the 2-d family, so gradients (of every order) are theirs.
"""

from autograd import Tensor
from autograd.backend import xp

from .functional_conv import (
    _adaptive_max,
    _avg_pool,
    _batched,
    _bin_average,
    _check_conv,
    _conv_padding,
    _dims,
    _max_pool,
    _pool_sizes,
    _separable,
    _tuple,
    adaptive_avg_pool2d,
    conv2d,
    conv_transpose2d,
    fold,
    unfold,
)
from .padding import pad


def _unbatch(y, unbatched):
    return y.squeeze(0) if unbatched else y


def _planes(x):
    """(N, C, D, H, W) → (N, C·D, H, W): every plane of every channel as a channel of a 2-d op."""
    n, c, d, h, w = x.shape
    return x.reshape(n, c * d, h, w)


# -- convolution --------------------------------------------------------------------------------------


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n,o] = b[o] + Σ_c w[o,c] ⋆ x[n,c] over volumes; weight (O, C/groups, kd, kh, kw); padding: int,
    triple, 'valid' or 'same' (stride 1)."""
    name = "conv3d"
    if weight.ndim != 5:
        raise RuntimeError(f"{name}: expected a weight of 5 dimensions (out, in/groups, kd, kh, kw), got weight "
                           f"of size {_dims(weight.shape, 1)}")
    input, unbatched = _batched(input, 3, name)
    _check_conv(input, weight, groups, weight.shape[1] * groups, name, bias=bias)
    kernel = tuple(weight.shape[2:])
    stride, dilation = _tuple(stride, 3, "stride"), _tuple(dilation, 3, "dilation")
    padding, extra = _conv_padding(padding, 3, kernel, dilation, stride)
    if any(extra):  # 'same' with an even d(k−1): the odd zero after
        input = pad(input, (0, extra[2], 0, extra[1], 0, extra[0]))
    padded = [input.shape[2 + a] + 2 * padding[a] for a in range(3)]
    effective = [dilation[a] * (kernel[a] - 1) + 1 for a in range(3)]
    if any(e > p for e, p in zip(effective, padded)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). Kernel size: "
            f"({' x '.join(map(str, effective))}). Kernel size can't be greater than actual input size "
            f"(input shape {_dims(input.shape, 1)})")
    n, channels, _, height, width = input.shape
    # (N, C, D, H·W) → (N, C·kd, od·H·W): channel (c, p) of output depth t is the plane x_pad[c, t·s + p·d]
    columns = unfold(input.reshape(n, channels, -1, height * width), (kernel[0], 1), (dilation[0], 1),
                     (padding[0], 0), (stride[0], 1))
    depth = columns.shape[2] // (height * width)
    planes = columns.reshape(n, channels * kernel[0], depth, height, width).permute(0, 2, 1, 3, 4)
    planes = planes.reshape(n * depth, channels * kernel[0], height, width)
    y = conv2d(planes, weight.reshape(weight.shape[0], -1, *kernel[1:]), bias, stride[1:], padding[1:],
               dilation[1:], groups)
    return _unbatch(y.reshape(n, depth, *y.shape[1:]).permute(0, 2, 1, 3, 4), unbatched)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The adjoint of conv3d in its input, weight (C_in, C_out/groups, kd, kh, kw); output size per axis
    (in − 1)·s − 2p + d(k − 1) + output_padding + 1."""
    name = "conv_transpose3d"
    if weight.ndim != 5:
        raise RuntimeError(f"{name}: expected a weight of 5 dimensions (in, out/groups, kd, kh, kw), got weight "
                           f"of size {_dims(weight.shape, 1)}")
    input, unbatched = _batched(input, 3, name)
    _check_conv(input, weight, groups, weight.shape[0], name, transposed=True, bias=bias)
    stride, padding = _tuple(stride, 3, "stride"), _tuple(padding, 3, "padding")
    output_padding, dilation = _tuple(output_padding, 3, "output_padding"), _tuple(dilation, 3, "dilation")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    kernel = tuple(weight.shape[2:])
    out = [(input.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + 1
           + output_padding[a] for a in range(3)]
    if min(out) <= 0:
        raise RuntimeError(f"{name}: output size {tuple(out)} is too small (input shape {_dims(input.shape, 1)}, "
                           f"weight shape {_dims(weight.shape, 1)}, padding {padding})")
    n, channels, depth, height, width = input.shape
    planes = input.permute(0, 2, 1, 3, 4).reshape(n * depth, channels, height, width)
    # each input plane → C_out·kd planes, channel (o, p) the one that lands at depth t·s + p·d
    made = conv_transpose2d(planes, weight.reshape(channels, -1, *kernel[1:]), None, stride[1:], padding[1:],
                            output_padding[1:], groups, dilation[1:])
    area = made.shape[2] * made.shape[3]
    columns = made.reshape(n, depth, made.shape[1], area).permute(0, 2, 1, 3).reshape(n, made.shape[1], -1)
    # fold adds the planes at depths t·s + p·d, 0 ≤ t < depth, into the uncropped depth (D − 1)·s + d(kd − 1) + 1;
    # the output is its rows padding ≤ r < padding + out, those past its end (output_padding) zeros
    full = (depth - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    y = fold(columns, (full, area), (kernel[0], 1), (dilation[0], 1), 0, (stride[0], 1))
    if padding[0] + out[0] > full:
        y = pad(y, (0, 0, 0, padding[0] + out[0] - full))
    y = y[:, :, padding[0]:padding[0] + out[0]].reshape(n, -1, out[0], *made.shape[2:])
    if bias is not None:
        y = y + bias.reshape(-1, 1, 1, 1)
    return _unbatch(y, unbatched)


# -- pooling --------------------------------------------------------------------------------------------


def _volume_indices(plane_indices, depth_indices, shape):
    """Flat indices d·H·W + h·W + w of the winners, from the depth pass's (d·L + l over the (D, L) plane of
    plane-pass outputs, L = oh·ow) and the plane pass's (h·W + w in each plane, (N, C·D, oh, ow))."""
    n, c, depth, height, width = shape
    out_d, columns = depth_indices.shape[2:]
    chosen = depth_indices._data // columns  # the winning depth d
    within = xp.take_along_axis(plane_indices._data.reshape(n, c, depth, columns), chosen, axis=2)
    return Tensor((chosen * (height * width) + within).reshape(n, c, out_d, *plane_indices.shape[2:]))


def _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    name = "max_pool3d"
    kernel, stride, padding, dilation, out = _pool_sizes(input, kernel_size, stride, padding, dilation, ceil_mode,
                                                         3, name)
    input, unbatched = _batched(input, 3, name)
    n, c, depth = input.shape[:3]
    planes = _max_pool(_planes(input), kernel[1:], stride[1:], padding[1:], dilation[1:], ceil_mode, return_indices, 2)
    values = planes[0] if return_indices else planes
    pooled = _max_pool(values.reshape(n, c, depth, -1), (kernel[0], 1), (stride[0], 1), (padding[0], 0),
                       (dilation[0], 1), ceil_mode, return_indices, 2)
    if not return_indices:
        return _unbatch(pooled.reshape(n, c, *out), unbatched)
    indices = _volume_indices(planes[1], pooled[1], input.shape)
    return _unbatch(pooled[0].reshape(n, c, *out), unbatched), _unbatch(indices, unbatched)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """y = the maximum of each kd×kh×kw window (padding never wins); with return_indices, also the flat
    index d·H·W + h·W + w of each maximum in its input volume."""
    return _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    return _max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """y = the mean of each window: its sum over the size of the window counted with the zero padding
    (count_include_pad) or without, or over divisor_override."""
    name = "avg_pool3d"
    kernel, stride, padding, _, _ = _pool_sizes(input, kernel_size, stride, padding, 1, ceil_mode, 3, name)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("avg_pool3d: divisor must be not zero")
    input, unbatched = _batched(input, 3, name)
    n, c, depth = input.shape[:3]
    # the planes' sums when a divisor_override divides the whole sum, else their means (the divisor is a product)
    planes = _avg_pool(_planes(input), kernel[1:], stride[1:], padding[1:], ceil_mode, count_include_pad,
                       None if divisor_override is None else 1, 2)
    y = _avg_pool(planes.reshape(n, c, depth, -1), (kernel[0], 1), (stride[0], 1), (padding[0], 0), ceil_mode,
                  count_include_pad, divisor_override, 2)
    return _unbatch(y.reshape(n, c, y.shape[2], *planes.shape[2:]), unbatched)


def _adaptive_sizes3d(input, output_size, name):
    input, unbatched = _batched(input, 3, name)
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 3
    if len(sizes) != 3:
        raise RuntimeError(f"{name}(): internal error: output_size.size() must be 3")
    sizes = tuple(input.shape[2 + a] if s is None else int(s) for a, s in enumerate(sizes))
    if min(sizes) < 0:
        raise RuntimeError(f"{name}: output_size must be non-negative, got {sizes}")
    return input, unbatched, sizes


def adaptive_avg_pool3d(input, output_size):
    """y[t, i, j] = the mean of x over PyTorch's adaptive bins of each axis: y = A_d · (plane pass)."""
    input, unbatched, out = _adaptive_sizes3d(input, output_size, "adaptive_avg_pool3d")
    n, c, depth = input.shape[:3]
    planes = adaptive_avg_pool2d(_planes(input), out[1:]).reshape(n, c, depth, -1)
    y = _separable(planes, [_bin_average(depth, out[0], input.dtype), None])
    return _unbatch(y.reshape(n, c, *out), unbatched)


def _adaptive_max3d(input, output_size, return_indices):
    input, unbatched, out = _adaptive_sizes3d(input, output_size, "adaptive_max_pool3d")
    n, c, depth = input.shape[:3]
    planes = _adaptive_max(_planes(input), out[1:], return_indices, 2)
    values = planes[0] if return_indices else planes
    pooled = _adaptive_max(values.reshape(n, c, depth, -1), (out[0], None), return_indices, 2)
    if not return_indices:
        return _unbatch(pooled.reshape(n, c, *out), unbatched)
    indices = _volume_indices(planes[1], pooled[1], input.shape)
    return _unbatch(pooled[0].reshape(n, c, *out), unbatched), _unbatch(indices, unbatched)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """y = the maximum of x over PyTorch's adaptive bins of each axis."""
    return _adaptive_max3d(input, output_size, return_indices)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    return _adaptive_max3d(input, output_size, True)
