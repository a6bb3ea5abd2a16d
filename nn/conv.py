"""Convolution layers: ``Conv1d``/``2d``/``3d``, ``ConvTranspose1d``/``2d``/``3d``, and ``Fold``/``Unfold``.

Weights have PyTorch's layouts: (out, in/groups, *kernel) for a convolution, (in, out/groups, *kernel) for a
transposed one. Default initialisation, PyTorch's: kaiming_uniform_ with a = √5, which is
W ~ U(−1/√fan_in, 1/√fan_in), fan_in = weight.shape[1] · prod(kernel); b ~ U(−1/√fan_in, 1/√fan_in).
"""

import math

import autograd

from . import functional as F
from . import init
from .functional_conv import _same_padding, _tuple
from .module import Module
from .parameter import Parameter

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    convolution = None  # its function in nn.functional ("conv2d"); a transposed layer has a forward of its own

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)

    def _conv_forward(self, input, weight, bias):
        """This layer's convolution with another weight and bias (PyTorch's hook for QAT's fake-quantized weight)."""
        input, padding = self._padded_input(input)
        return getattr(F, self.convolution)(input, weight, bias, self.stride, padding, self.dilation, self.groups)

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, transposed, output_padding,
                 groups, bias, padding_mode, device=None, dtype=None):
        """PyTorch's signature, which layers subclassing _ConvNd itself call (CondConv, Bayesian convolutions):
        kernel_size a tuple, whose length is the number of spatial dims."""
        super().__init__()
        spatial = len(kernel_size)
        self.transposed = transposed
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, but got padding_mode="
                             f"'{padding_mode}'")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, spatial, "kernel_size")
        self.stride, self.dilation = _tuple(stride, spatial, "stride"), _tuple(dilation, spatial, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _tuple(padding, spatial, "padding")
        self.output_padding = _tuple(output_padding, spatial, "output_padding")
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = self._reverse_repeat_padding(spatial)
        shape = ((in_channels, out_channels // groups) if self.transposed else
                 (out_channels, in_channels // groups)) + self.kernel_size
        self.weight = Parameter(autograd.empty(shape, dtype=dtype))
        self.bias = Parameter(autograd.empty(out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def _reverse_repeat_padding(self, spatial):
        """The padding as F.pad takes it, last dim first, (left, right) per dim: PyTorch's
        ``_reversed_padding_repeated_twice``, which its layers (and layers written after them, overriding
        ``_conv_forward``) pass to F.pad for the padding modes other than zeros. 'same' puts the odd one on the
        right; 'valid' pads nothing."""
        if self.padding == "valid":
            pairs = [(0, 0)] * spatial
        elif self.padding == "same":
            before, extra = _same_padding(self.kernel_size, self.dilation)
            pairs = [(b, b + e) for b, e in zip(before, extra)]
        else:
            pairs = [(p, p) for p in self.padding]
        return tuple(amount for pair in reversed(pairs) for amount in pair)

    def _padded_input(self, input):
        """For padding modes other than zeros: pad by copying values first (F.pad), then convolve with no
        padding."""
        if self.padding_mode == "zeros" or self.padding == "valid":
            return input, self.padding
        return F.pad(input, self._reversed_padding_repeated_twice, self.padding_mode), 0

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * len(self.kernel_size):
            text += f", padding={self.padding}"  # 'same' unquoted, as PyTorch prints it
        if self.dilation != (1,) * len(self.dilation):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class Conv2d(_ConvNd):
    """y[n, o] = b[o] + Σ_c W[o, c] ⋆ x[n, c] over the channels c of o's group (cross-correlation);
    input (N, C_in, H, W) or (C_in, H, W), weight (C_out, C_in/groups, kh, kw).
    Output size per axis: ⌊(in + 2·padding − dilation·(k − 1) − 1) / stride⌋ + 1."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 2, "kernel_size"), stride, padding, dilation,
                         False, 0, groups, bias, padding_mode, device, dtype)

    convolution = "conv2d"


class Conv1d(_ConvNd):
    """Conv2d's 1-d twin: input (N, C_in, L) or (C_in, L), weight (C_out, C_in/groups, k)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 1, "kernel_size"), stride, padding, dilation,
                         False, 0, groups, bias, padding_mode, device, dtype)

    convolution = "conv1d"


class Conv3d(_ConvNd):
    """Conv2d over volumes: input (N, C_in, D, H, W) or (C_in, D, H, W), weight (C_out, C_in/groups, kd, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 3, "kernel_size"), stride, padding, dilation,
                         False, 0, groups, bias, padding_mode, device, dtype)

    convolution = "conv3d"


class _ConvTransposeNd(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, transposed, output_padding,
                 groups, bias, padding_mode, device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, transposed, output_padding,
                         groups, bias, padding_mode, device, dtype)

    def _output_padding(self, input, output_size, stride=None, padding=None, kernel_size=None, num_spatial_dims=None,
                        dilation=None):
        """The output_padding that gives ``output_size`` (PyTorch's forward(input, output_size)):
        a strided transposed convolution can make several sizes; what each axis has beyond the
        smallest, which must stay below its stride (PyTorch's range: an output_padding below the dilation alone,
        which conv_transpose accepts, is not reached through output_size). PyTorch's signature, which the forward
        of a layer written after PyTorch's calls with the geometry it convolves with (dilation None: 1); with
        input and output_size alone (this project's layers), the layer's own."""
        if output_size is None:
            return self.output_padding
        if stride is None:
            stride, padding, kernel_size = self.stride, self.padding, self.kernel_size
            num_spatial_dims, dilation = len(self.kernel_size), self.dilation
        dilation = (1,) * num_spatial_dims if dilation is None else dilation
        batch_dims = 2 if input.ndim == num_spatial_dims + 2 else 1
        if len(output_size) == batch_dims + num_spatial_dims:
            output_size = output_size[batch_dims:]
        if len(output_size) != num_spatial_dims:
            raise ValueError(f"ConvTranspose{num_spatial_dims}D: for {input.ndim}D input, output_size must have "
                             f"{num_spatial_dims} or {batch_dims + num_spatial_dims} elements (got {len(output_size)})")
        least = [(input.shape[batch_dims + axis] - 1) * stride[axis] - 2 * padding[axis]
                 + dilation[axis] * (kernel_size[axis] - 1) + 1 for axis in range(num_spatial_dims)]
        most = [size + s - 1 for size, s in zip(least, stride)]
        if any(not low <= wanted <= high for low, wanted, high in zip(least, output_size, most)):
            # (PyTorch's words, its input.size()[2:] too, which for an unbatched input drops a spatial size)
            raise ValueError(f"requested an output size of {output_size}, but valid sizes range from {least} to "
                             f"{most} (for an input of {input.shape[2:]})")
        return tuple(wanted - low for wanted, low in zip(output_size, least))


class ConvTranspose2d(_ConvTransposeNd):
    """The adjoint of Conv2d in its input (a learnable upsampling): weight (C_in, C_out/groups, kh, kw);
    output size per axis: (in − 1)·stride − 2·padding + dilation·(k − 1) + output_padding + 1."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 2, "kernel_size"), stride, padding, dilation,
                         True, output_padding, groups, bias, padding_mode, device, dtype)

    def forward(self, input, output_size=None):
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(input, output_size), self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 1, "kernel_size"), stride, padding, dilation,
                         True, output_padding, groups, bias, padding_mode, device, dtype)

    def forward(self, input, output_size=None):
        return F.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(input, output_size), self.groups, self.dilation)


class ConvTranspose3d(_ConvTransposeNd):
    """ConvTranspose2d over volumes: weight (C_in, C_out/groups, kd, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _tuple(kernel_size, 3, "kernel_size"), stride, padding, dilation,
                         True, output_padding, groups, bias, padding_mode, device, dtype)

    def forward(self, input, output_size=None):
        return F.conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(input, output_size), self.groups, self.dilation)


class Unfold(Module):
    """im2col as a layer: (N, C, H, W) → (N, C·kh·kw, L), every block a column."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input):
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride}")


class Fold(Module):
    """col2im as a layer: (N, C·kh·kw, L) → (N, C, *output_size), overlapping blocks summed."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size = output_size
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input):
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")
