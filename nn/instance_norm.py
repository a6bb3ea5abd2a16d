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

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A checkpoint with no version (PyTorch before 0.4.0, when instance norms kept running statistics by
        default) loaded into a layer that keeps none: PyTorch's error names its running statistics and drops them,
        strict or not, instead of reporting unexpected keys."""
        if local_metadata.get("version") is None and not self.track_running_stats:
            found = [prefix + name for name in ("running_mean", "running_var") if prefix + name in state_dict]
            if found:
                cls = type(self).__name__
                names = " and ".join(f'"{key}"' for key in found)
                error_msgs.append(
                    f"Unexpected running stats buffer(s) {names} for {cls} with track_running_stats=False. If "
                    f"state_dict is a checkpoint saved before 0.4.0, this may be expected because {cls} does not track "
                    f"running stats by default since 0.4.0. Please remove these keys from state_dict. If the running "
                    f"stats are actually needed, instead set track_running_stats=True in {cls} to enable them. See "
                    f"the documentation of {cls} for details.")
                for key in found:
                    del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

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
