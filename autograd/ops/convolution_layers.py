"""Convolution layers with PyTorch's names, arguments, shapes and errors: ``conv1d``, ``conv2d``,
``conv3d``, their transposes, ``conv_tbc``, ``convolution`` (all of them as one call), ``unfold`` and
``fold``. ``nn.functional`` gives the same functions; ``autograd.conv2d`` and its kin are PyTorch's
top-level spellings (``torch.conv2d``).

Everything is computed on 4-d (N, C, H, W) tensors by the primitives of ``autograd.ops.convolution``:
1-d versions insert H = 1, unbatched inputs insert N = 1. A volume (N, C, D, H, W) is a stack of
planes, and each 3-d convolution is the 2-d one over the planes (H, W) and one step along the depth D:

- convolution: unfold the depth, so that output depth t gathers the kd planes x_pad[t·s + p·d] it reads
  as kd·C channels (``unfold`` with a (kd, 1) window), then one ``conv2d`` with the weight
  (O, C/G, kd, kh, kw) read as (O, C/G·kd, kh, kw):

      y[n, o, t] = Σ_{c, p} w[o, c, p] ⋆ x_pad[n, c, t·s + p·d]        (⋆ the 2-d cross-correlation)

- transposed convolution, the adjoint: ``conv_transpose2d`` of each input plane to kd·C_out channels,
  then fold the depth (``fold``: the kd planes made from input depth t added at t·s + p·d).

Every step is a differentiable op, so gradients (of every order) are theirs.
"""

import functools

from ..backend import int64
from ..errors import check_same_dtype
from ..index_watching import watches_arguments
from ..primitive import named_node, node_named
from ..tensor import Tensor
from ..warn_once import warn_once
from . import convolution
from .constant_padding import constant_pad_nd
from .conversion import c_name, refuse_kinds, type_name
from .layer_arguments import _as_2d, _batched, _dims, _tuple, check_convolution_window
from .layouts import stored_channels_last
from .names import names

__all__ = ["conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "convolution_layer", "fold", "unfold"]


def _unbatch(y, unbatched):
    return y.squeeze(0) if unbatched else y


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
            padding, extra = _same_padding(kernel, dilation)
            if any(extra):  # (the input is padded by one more zero on one side first: a copy, as in PyTorch)
                warn_once("conv same padding", "Using padding='same' with even kernel lengths and odd dilation may "
                                               "require a zero-padded copy of the input be created")
            return padding, extra
        raise RuntimeError(f"Invalid padding string: {padding!r}, should be one of 'valid', 'same'")
    return _tuple(padding, n, "padding"), (0,) * n


def _convolution_dtype_words(input, weight, bias, transposed):
    """PyTorch's words for a weight or bias of a dtype other than the input's: its check of the bias comes first
    (its transposed convolutions check the weight's only)."""
    if bias is not None and bias.dtype != input.dtype and not (transposed and weight.dtype != input.dtype):
        return f"Input type ({c_name(input.dtype)}) and bias type ({c_name(bias.dtype)}) should be the same"
    return f"expected scalar type {type_name(input.dtype)} but found {type_name(weight.dtype)}"


def _check_conv(input, weight, groups, in_channels, name, transposed=False, bias=None, spatial=2):
    """PyTorch's checks of a convolution's arguments; ``input`` is batched, and for ``spatial`` 1 it has the
    height 1 that ``_as_2d`` gave it (not shown in the messages)."""
    check_same_dtype(name, input, (_convolution_dtype_words, input, weight, bias, transposed), weight=weight,
                     bias=bias)
    # PyTorch's kernels have no bool loop (NumPy would multiply-add bools); its 1-d convolutions are its 2-d ones
    kernel = f"slow_conv_transpose{input.ndim - 2}d_out_cpu" if transposed else f"slow_conv{input.ndim - 2}d_cpu"
    # (and its transposed kernels' only integer loop is int64's)
    refuse_kinds(input, kernel, "b" if not transposed or input.dtype == int64 else "biu")
    if groups <= 0:
        raise RuntimeError(f"{name}: non-positive groups is not supported, got groups={groups}")
    if weight.shape[0] < groups:  # (no filter at all: PyTorch's words before NumPy's reshape could fail)
        raise RuntimeError(f"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but got "
                           f"weight of size {_dims(weight.shape, 1)} instead")
    if weight.shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {_dims(weight.shape, 1)} instead")
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(f"Given weight of size {_dims(weight.shape, 1)}, expected bias to be 1-dimensional with "
                           f"{out_channels} elements, but got bias of size {_dims(bias.shape, 1)} instead")
    if input.shape[1] != in_channels:
        raise RuntimeError(
            f"Given groups={groups}, {'transposed=1, ' if transposed else ''}weight of size "
            f"{_dims(weight.shape, 1)}, expected input"
            f"{_dims(input.shape[:2] + input.shape[3:] if spatial == 1 else input.shape, 1)} to have {in_channels} "
            f"channels, but got {input.shape[1]} channels instead")


def _channels_last(input, weight, spatial):
    """Whether PyTorch's 2-d convolution kernels lay out their result N, H, W, C: where the input or the weight
    suggests channels-last (its is_channels_last_strides, a crop of a channels-last image included). A 1-d
    convolution's input, however it is stored, gives a row-major result."""
    return spatial == 2 and any(stored_channels_last(x._data) for x in (input, weight)
                                if isinstance(x, Tensor))  # (a non-tensor is refused by the op, in its words)


def _conv(input, weight, bias, stride, padding, dilation, groups, spatial):
    name = f"conv{spatial}d"
    if weight.ndim != spatial + 2:
        raise RuntimeError(f"{name}: expected a weight of {spatial + 2} dimensions (out, in/groups, *kernel), "
                           f"got weight of size {_dims(weight.shape, 1)}")
    input, undo = _as_2d(input, spatial, name)
    _check_conv(input, weight, groups, weight.shape[1] * groups, name, bias=bias, spatial=spatial)
    kernel = tuple(weight.shape[2:])
    stride, dilation = _tuple(stride, spatial, "stride"), _tuple(dilation, spatial, "dilation")
    padding, extra = _conv_padding(padding, spatial, kernel, dilation, stride)
    check_convolution_window(kernel, stride, dilation, padding)
    if spatial == 1:
        weight = weight.unsqueeze(2)
        kernel, stride, padding, dilation, extra = ((1,) + kernel, (1,) + stride, (0,) + padding,
                                                    (1,) + dilation, (0,) + extra)
    if extra[0] or extra[1]:  # 'same' with an even d(k−1): the odd zero right/below
        input = constant_pad_nd(input, (0, extra[1], 0, extra[0]))
    shape = input.shape
    padded = (shape[2] + 2 * padding[0], shape[3] + 2 * padding[1])
    effective = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if effective[0] > padded[0] or effective[1] > padded[1]:
        shown = slice(2 - spatial, 2)
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded[shown]))}). Kernel size: "
            f"({' x '.join(map(str, effective[shown]))}). Kernel size can't be greater than actual input size "
            f"(input shape {_dims(input.shape[:2] + input.shape[3:] if spatial == 1 else input.shape, 1)})")
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  channels_last=_channels_last(input, weight, spatial))
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return undo(convolution.Conv2d.apply(*inputs, **params))


def _convolution_node(function):
    """Decorator for a convolution built of other ops: its result's node is PyTorch's ConvolutionBackward0 for a
    batched input; an unbatched one's result is the squeeze that PyTorch's ends with too (SqueezeBackward1: it
    convolves the input unsqueezed)."""

    @functools.wraps(function)
    def named(input, weight, *args, **kwargs):
        result = function(input, weight, *args, **kwargs)
        if input.ndim == weight.ndim:  # (N, C, *spatial) beside (out, in, *kernel): batched
            named_node(result, None, "ConvolutionBackward0", (input, weight, *args, *kwargs.values()))
        return result

    return named


@names("conv2d", method=False)
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n,o] = b[o] + Σ_c w[o,c] ⋆ x[n, c] (cross-correlation, as PyTorch), weight (O, C/groups, kh, kw);
    padding: int, pair, 'valid' (none) or 'same' (output size = input size, stride 1)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2)


@names("conv1d", method=False)
@_convolution_node
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d on (N, C, L) with weight (O, C/groups, k)."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1)


@names("conv_tbc", method=False)
def conv_tbc(input, weight, bias, pad=0):
    """conv1d in (time, batch, channel) layout: input (T, B, C_in), weight (k, C_in, C_out), bias (C_out,)
    → (T + 2·pad − k + 1, B, C_out)."""
    # (PyTorch's checks, in its order)
    if input.ndim != 3:
        raise RuntimeError("Input must have 3 dims: time, batch, in_channel")
    if weight.ndim != 3:
        raise RuntimeError("Weight tensor must have 3 dims: kernel_width, in_channels, out_channels.")
    if bias.ndim != 1:
        raise RuntimeError("Bias must be 1-D")
    if input.shape[2] != weight.shape[1]:
        raise RuntimeError("Input dim 2 (input channels) is not == dim 1 in the weight tensor")
    if bias.shape[0] != weight.shape[2]:
        raise RuntimeError("Bias size must equal dim 2 in the weight tensor (output channels).")
    y = conv1d(input.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=pad)
    return y.permute(2, 0, 1)


def _check_transposed_output(input, out):
    """PyTorch's words for a transposed convolution whose padding cuts away its whole output (a 1-d one's sizes
    with the height 1 that its 2-d kernel sees, as PyTorch's)."""
    if min(out) <= 0:
        raise RuntimeError(f"Given input size per channel: ({' x '.join(map(str, input.shape[2:]))}). Calculated "
                           f"output size per channel: ({' x '.join(map(str, out))}). Output size is too small")


def _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, spatial):
    name = f"conv_transpose{spatial}d"
    if weight.ndim != spatial + 2:  # (before NumPy could fail on the kernel's sizes, in its words)
        raise RuntimeError(f"{name}: expected a weight of {spatial + 2} dimensions (in, out/groups, *kernel), "
                           f"got weight of size {_dims(weight.shape, 1)}")
    input, undo = _as_2d(input, spatial, name)
    _check_conv(input, weight, groups, weight.shape[0], name, transposed=True, bias=bias, spatial=spatial)
    stride, padding = _tuple(stride, spatial, "stride"), _tuple(padding, spatial, "padding")
    output_padding, dilation = _tuple(output_padding, spatial, "output_padding"), _tuple(dilation, spatial, "dilation")
    check_convolution_window(weight.shape[2:], stride, dilation, padding)
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    if spatial == 1:
        weight = weight.unsqueeze(2)
        stride, padding, dilation = (1,) + stride, (0,) + padding, (1,) + dilation
        output_padding = (0,) + output_padding
    out = [(input.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (weight.shape[2 + a] - 1) + 1
           + output_padding[a] for a in (0, 1)]
    _check_transposed_output(input, out)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=output_padding,
                  channels_last=_channels_last(input, weight, spatial))
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return undo(convolution.ConvTranspose2d.apply(*inputs, **params))


@names("conv_transpose2d", method=False)
@_convolution_node
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The adjoint of conv2d in its input ("deconvolution"), weight (C_in, C_out/groups, kh, kw):
    output size (in − 1)·s − 2p + d(k − 1) + output_padding + 1."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 2)


@names("conv_transpose1d", method=False)
@_convolution_node
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 1)


def _check_window(params):
    """PyTorch's checks of fold's and unfold's window: a positive kernel, stride and dilation, no negative padding."""
    for key, words, short in (("kernel_size", "kernel size should be greater than zero", "kernel"),
                              ("stride", "stride should be greater than zero", "stride"),
                              ("dilation", "dilation should be greater than zero", "dilation"),
                              ("padding", "padding should be non-negative", "pad")):
        (h, w), least = params[key], 0 if key == "padding" else 1
        if h < least or w < least:
            raise RuntimeError(f"{words}, but got {short}_height: {h} {short}_width: {w}")


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col: every kh×kw block of (N, C, H, W) as a column, (N, C·kh·kw, L), L the number of blocks;
    an unbatched (C, H, W) gives (C·kh·kw, L), as fold takes back."""
    # (only the batch may be empty: no channels or no rows is refused, as PyTorch's im2col)
    if input.ndim not in (3, 4) or 0 in input.shape[input.ndim - 3:]:
        raise RuntimeError(f"Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero "
                           f"dimensions for input, but got: {list(input.shape)}")
    refuse_kinds(input, "im2col_out_cpu", "iu")  # (PyTorch's kernel has floating, complex and bool loops)
    return _unfold(input, kernel_size, dilation, padding, stride)


def _unfold(input, kernel_size, dilation, padding, stride):
    """unfold without its refusals of empty dims and integers: conv3d's planes, of an input with no channels or an
    empty batch, or of integers, which PyTorch's conv3d takes."""
    if input.ndim == 3:
        return _unfold(input.unsqueeze(0), kernel_size, dilation, padding, stride).squeeze(0)
    params = dict(kernel_size=_tuple(kernel_size, 2, "kernel_size"), dilation=_tuple(dilation, 2, "dilation"),
                  padding=_tuple(padding, 2, "padding"), stride=_tuple(stride, 2, "stride"))
    _check_window(params)
    out = [convolution.output_size(input.shape[2 + a], *(params[k][a] for k in ("kernel_size", "stride",
                                                                                 "padding", "dilation")))
           for a in (0, 1)]
    if min(out) <= 0:  # (PyTorch's im2col's words, which name the sizes, the window and the blocks it makes)
        raise RuntimeError(f"Given input with spatial size {tuple(input.shape[2:])}, kernel_size="
                           f"{params['kernel_size']}, dilation={params['dilation']}, padding={params['padding']}, "
                           f"calculated shape of the array of sliding blocks as {tuple(out)}, but its components "
                           f"must be at least one.")
    return convolution.Unfold.apply(input, **params)


@node_named("Col2ImBackward0")
def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im, unfold's adjoint: columns (N, C·kh·kw, L) summed into (N, C, *output_size) where blocks overlap."""
    refuse_kinds(input, "col2im_out_cpu", "iu")  # (as unfold's)
    return _fold(input, output_size, kernel_size, dilation, padding, stride)


def _fold(input, output_size, kernel_size, dilation, padding, stride):
    """fold without its refusal of integers: conv_transpose3d's planes, which PyTorch's computes for integers."""
    input, unbatched = (input.unsqueeze(0), True) if input.ndim == 2 else (input, False)
    if input.ndim != 3:
        raise RuntimeError(f"Expected 2D or 3D (batched) input to fold, got input of size {_dims(input.shape, 1)}")
    params = dict(kernel_size=_tuple(kernel_size, 2, "kernel_size"), dilation=_tuple(dilation, 2, "dilation"),
                  padding=_tuple(padding, 2, "padding"), stride=_tuple(stride, 2, "stride"))
    _check_window(params)
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


# -- volumes ---------------------------------------------------------------------------------------


@names("conv3d", method=False)
@_convolution_node
@watches_arguments("input")  # (PyTorch's node saves them: writing one refuses)
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
    check_convolution_window(kernel, stride, dilation, padding)
    if any(extra):  # 'same' with an even d(k−1): the odd zero after
        input = constant_pad_nd(input, (0, extra[2], 0, extra[1], 0, extra[0]))
    padded = [input.shape[2 + a] + 2 * padding[a] for a in range(3)]
    effective = [dilation[a] * (kernel[a] - 1) + 1 for a in range(3)]
    if any(e > p for e, p in zip(effective, padded)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). Kernel size: "
            f"({' x '.join(map(str, effective))}). Kernel size can't be greater than actual input size "
            f"(input shape {_dims(input.shape, 1)})")
    n, channels, depth_in, height, width = input.shape  # (sizes spelt out, not -1: ambiguous in an empty batch)
    # (N, C, D, H·W) → (N, C·kd, od·H·W): channel (c, p) of output depth t is the plane x_pad[c, t·s + p·d]
    columns = _unfold(input.reshape(n, channels, depth_in, height * width), (kernel[0], 1), (dilation[0], 1),
                      (padding[0], 0), (stride[0], 1))
    depth = columns.shape[2] // (height * width)
    planes = columns.reshape(n, channels * kernel[0], depth, height, width).permute(0, 2, 1, 3, 4)
    planes = planes.reshape(n * depth, channels * kernel[0], height, width)
    y = conv2d(planes, weight.reshape(weight.shape[0], -1, *kernel[1:]), bias, stride[1:], padding[1:],
               dilation[1:], groups)
    return _unbatch(y.reshape(n, depth, *y.shape[1:]).permute(0, 2, 1, 3, 4), unbatched)


@names("conv_transpose3d", method=False)
@_convolution_node
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
    check_convolution_window(weight.shape[2:], stride, dilation, padding)
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    kernel = tuple(weight.shape[2:])
    out = [(input.shape[2 + a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + 1
           + output_padding[a] for a in range(3)]
    _check_transposed_output(input, out)
    n, channels, depth, height, width = input.shape
    planes = input.permute(0, 2, 1, 3, 4).reshape(n * depth, channels, height, width)
    # each input plane → C_out·kd planes, channel (o, p) the one that lands at depth t·s + p·d
    made = conv_transpose2d(planes, weight.reshape(channels, -1, *kernel[1:]), None, stride[1:], padding[1:],
                            output_padding[1:], groups, dilation[1:])
    area = made.shape[2] * made.shape[3]
    columns = made.reshape(n, depth, made.shape[1], area).permute(0, 2, 1, 3).reshape(n, made.shape[1],
                                                                                     depth * area)
    # fold adds the planes at depths t·s + p·d, 0 ≤ t < depth, into the uncropped depth (D − 1)·s + d(kd − 1) + 1;
    # the output is its rows padding ≤ r < padding + out, those past its end (output_padding) zeros
    full = (depth - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    y = _fold(columns, (full, area), (kernel[0], 1), (dilation[0], 1), 0, (stride[0], 1))
    if padding[0] + out[0] > full:
        y = constant_pad_nd(y, (0, 0, 0, padding[0] + out[0] - full))
    y = y[:, :, padding[0]:padding[0] + out[0]].reshape(n, y.shape[1], out[0], *made.shape[2:])
    if bias is not None:
        y = y + bias.reshape(-1, 1, 1, 1)
    return _unbatch(y, unbatched)


@names("convolution", method=False)
def convolution_layer(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """PyTorch's ``torch.convolution``: every convolution as one call, every argument required, the number
    of spatial dims read off the weight (weight.ndim − 2: 1, 2 or 3); ``transposed`` picks the adjoint
    (``output_padding`` is read only then)."""
    spatial = weight.ndim - 2
    if spatial not in (1, 2, 3):
        raise RuntimeError(f"convolution: expected a weight of 3, 4 or 5 dimensions, got weight of size "
                           f"{_dims(weight.shape, 1)}")
    if transposed:
        function = (conv_transpose1d, conv_transpose2d, conv_transpose3d)[spatial - 1]
        return function(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return (conv1d, conv2d, conv3d)[spatial - 1](input, weight, bias, stride, padding, dilation, groups)
