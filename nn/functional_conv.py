"""``nn.functional`` for images and sequences: convolution, pooling, fold/unfold and resizing, with
PyTorch's names, arguments, shapes and errors.

The convolutions and fold/unfold live in ``autograd/ops/convolution_layers.py``, the pooling in
``autograd/ops/pooling_layers.py`` (autograd gives them as ``autograd.conv2d``, ``autograd.max_pool2d``,
... and never imports nn); this module gives them to ``nn.functional`` and the layers.
"""

import warnings

from autograd.graph import program_stacklevel
from autograd.ops.convolution_layers import (  # noqa: F401  (F.conv2d, ...; _same_padding for nn.Conv2d)
    _same_padding,
    conv1d,
    conv2d,
    conv_tbc,
    conv_transpose1d,
    conv_transpose2d,
    fold,
    unfold,
)
from autograd.ops.layer_arguments import _batched, _tuple  # noqa: F401  (nn's layers use them)
from autograd.ops.pooling_layers import (  # noqa: F401  (F.max_pool2d, ...)
    _pool_sizes,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool1d_with_indices,
    adaptive_max_pool2d,
    adaptive_max_pool2d_with_indices,
    avg_pool1d,
    avg_pool2d,
    max_pool1d,
    max_pool1d_with_indices,
    max_pool2d,
    max_pool2d_with_indices,
)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """interpolate under its older name, deprecated in PyTorch (and warned of, as there)."""
    from .interpolation import interpolate  # nn.interpolation is built after this module

    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=program_stacklevel())
    return interpolate(input, size, scale_factor, mode, align_corners)
