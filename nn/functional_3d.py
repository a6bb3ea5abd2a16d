"""``nn.functional`` on volumes (N, C, D, H, W): 3-d convolution and pooling, built from the 2-d ops.

They live in ``autograd/ops/convolution_layers.py`` and ``autograd/ops/pooling_layers.py`` (whose
docstrings give the maths), as ``autograd.conv3d``, ``autograd.max_pool3d``, ...; this module gives
them to ``nn.functional`` and the layers.
"""

from autograd.ops.convolution_layers import conv3d, conv_transpose3d  # noqa: F401  (F.conv3d, ...)
from autograd.ops.pooling_layers import (  # noqa: F401  (F.max_pool3d, ...)
    adaptive_avg_pool3d,
    adaptive_max_pool3d,
    adaptive_max_pool3d_with_indices,
    avg_pool3d,
    max_pool3d,
    max_pool3d_with_indices,
)
