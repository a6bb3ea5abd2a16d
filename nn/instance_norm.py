"""Instance normalisation (Ulyanov, Vedaldi & Lempitsky, 2016): ``F.instance_norm`` and
``InstanceNorm1d/2d/3d``.

Each channel of each sample is normalised over its own spatial positions,

    y[n, c] = (x[n, c] − mean(x[n, c])) / √(var(x[n, c]) + eps) · γ[c] + β[c]      (biased variance),

batch norm with a batch of one sample. By PyTorch's defaults the layers learn no γ, β (affine=False) and keep
no running statistics (track_running_stats=False). When they do keep them, a training step moves them
towards the batch's average of the per-instance statistics (the unbiased variance of each instance):

    running = (1 − momentum) · running + momentum · mean_n(statistic of instance n)

and eval normalises with them instead of each instance's own.
"""

import warnings

from autograd.graph import program_stacklevel
from autograd.ops.normalization import instance_norm  # noqa: F401  (nn.instance_norm.instance_norm as before)

from .normalization import _NormBase


class _InstanceNorm(_NormBase):
    """See the module's docstring; input (N, C, *spatial) or, unbatched, (C, *spatial)."""

    spatial = 0

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, device=None,
                 dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def _get_no_batch_dim(self):
        """The dims of an unbatched input, (C, *spatial): PyTorch's hook, which forward asks as it asks
        _check_input_dim; a subclass of _InstanceNorm names both (_InstanceNorm itself neither)."""
        if not self.spatial:
            raise NotImplementedError(f"{type(self).__name__} must define _get_no_batch_dim")
        return self.spatial + 1

    def _check_input_dim(self, input):
        unbatched = self._get_no_batch_dim()
        if input.ndim not in (unbatched, unbatched + 1):
            raise ValueError(f"expected {unbatched}D or {unbatched + 1}D input (got {input.ndim}D input)")

    def forward(self, input):
        self._check_input_dim(input)
        unbatched = self._get_no_batch_dim()
        channel_dim = input.ndim - unbatched
        if input.shape[channel_dim] != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={channel_dim} to match num_features "
                                 f"({self.num_features}), but got: {input.shape[channel_dim]}.")
            warnings.warn(f"input's size at dim={channel_dim} does not match num_features. You can silence this "
                          "warning by not passing in num_features, which is not used because affine=False",
                          stacklevel=program_stacklevel())
        batched = input.unsqueeze(0) if input.ndim == unbatched else input
        y = instance_norm(batched, self.running_mean, self.running_var, self.weight, self.bias,
                          self.training or not self.track_running_stats,
                          self.momentum if self.momentum is not None else 0.0, self.eps)
        return y.squeeze(0) if input.ndim == unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Input (N, C, L) or (C, L)."""

    spatial = 1


class InstanceNorm2d(_InstanceNorm):
    """Input (N, C, H, W) or (C, H, W)."""

    spatial = 2


class InstanceNorm3d(_InstanceNorm):
    """Input (N, C, D, H, W) or (C, D, H, W)."""

    spatial = 3
