"""``SyncBatchNorm``: batch normalisation whose statistics are those of the whole batch across
every rank of a data-parallel job, as ``torch.nn.SyncBatchNorm``.

Forward: each rank sums x and x² per channel over its share and counts its values; one
all-reduce gives the sums over all ranks, M values in all:

    μ = Σx / M,   σ² = Σx² / M - μ²   (biased, for normalising),   x̂ = (x - μ) / √(σ² + eps)

Backward: with g = dL/dx̂, the gradient of normalisation needs two sums over the whole
batch, all-reduced as well:

    dL/dx = (g - Σg / M - x̂ · Σ(g·x̂) / M) / √(σ² + eps)

Running statistics move as BatchNorm's, with the unbiased variance over all M values.
Outside a process group (or with one rank, or in eval) it is exactly BatchNorm.
"""

import numpy

import autograd
import autograd.distributed as dist
from autograd import Primitive, Tensor
from autograd.errors import ShapeError
from autograd.ops.normalization import count_batch, one_value_per_channel, update_running_stats

from . import functional as F
from .normalization import _BatchNorm


def _sum_over_ranks(array):
    """Σ over the ranks of a NumPy array, in place (itself outside a process group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(Tensor._make(array))
    return array


def _global_moments(x, axes):
    """Per-channel mean and biased variance over every rank's x, and the number of values M."""
    wide = numpy.promote_types(x.dtype, numpy.float64)  # sums of squares in float32 lose too much
    channels = x.shape[1]
    local = numpy.concatenate([x.sum(axes, dtype=wide), (x * x).sum(axes, dtype=wide),
                               [x.size // channels]])
    total = _sum_over_ranks(local)
    count = total[-1]
    mean = total[:channels] / count
    variance = numpy.maximum(total[channels:2 * channels] / count - mean * mean, 0.0)
    return mean, variance, int(count)


class SyncBatchNormalize(Primitive):
    """x̂ = (x - μ) · s with the whole job's μ and s = 1/√(σ² + eps) (params ``mean``, ``invstd``,
    shaped to broadcast over x, ``count`` = M, ``axes`` the summed dims);
    dL/dx = s · (g - Σg/M - x̂ · Σ(g·x̂)/M), the two sums all-reduced over the ranks."""

    saves_output = True

    def forward(self, x):
        return ((x - self.mean) * self.invstd).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        if not x.requires_grad:
            return (None,)
        channels = self.mean.size
        sums = _sum_over_ranks(numpy.concatenate([grad._data.sum(self.axes), (grad._data * y._data).sum(self.axes)]))
        shape = self.mean.shape
        mean_grad = Tensor._make((sums[:channels] / self.count).reshape(shape).astype(grad.dtype))
        mean_grad_y = Tensor._make((sums[channels:] / self.count).reshape(shape).astype(grad.dtype))
        invstd = Tensor._make(self.invstd.astype(grad.dtype))
        return ((grad - mean_grad - y * mean_grad_y) * invstd,)


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over (N, C, ...) inputs with statistics over every rank's batch."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        if process_group is not None and process_group is not dist.WORLD:
            raise ValueError(f"only the default process group is supported, got process_group={process_group!r}")
        self.process_group = process_group

    def forward(self, input):
        if input.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {input.ndim}D input)")
        if input.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")
        if input.shape[1] != self.num_features:  # (PyTorch's RuntimeError; a ValueError too)
            raise ShapeError(f"SyncBatchNorm({self.num_features}) expects {self.num_features} channels in dim 1, "
                             f"got input of shape {tuple(input.shape)}")
        training = self.training or not self.track_running_stats
        if not training or not dist.is_initialized() or dist.get_world_size() == 1:
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                training=training, momentum=self.momentum, eps=self.eps,
                                num_batches_tracked=self.num_batches_tracked if self.training else None)
        factor = count_batch(self.num_batches_tracked if self.training else None, self.momentum)
        axes = (0,) + tuple(range(2, input.ndim))
        mean, variance, count = _global_moments(input._data, axes)
        if count <= 1:
            raise one_value_per_channel(tuple(input.shape), f" on {dist.get_world_size()} ranks")
        if self.training and self.running_mean is not None:
            update_running_stats(self.running_mean, self.running_var, factor, mean, variance, count)
        shape = (1, self.num_features) + (1,) * (input.ndim - 2)
        normalized = SyncBatchNormalize.apply(input, mean=mean.reshape(shape),
                                              invstd=(1.0 / numpy.sqrt(variance + self.eps)).reshape(shape),
                                              count=count, axes=axes)
        if self.weight is not None:
            normalized = normalized * self.weight.reshape(shape)
        if self.bias is not None:
            normalized = normalized + self.bias.reshape(shape)
        return normalized

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every BatchNorm*d inside ``module`` by a SyncBatchNorm holding the same weights,
        running statistics, mode and qconfig; returns the converted module (``module`` itself when it is
        not a BatchNorm)."""
        converted = module
        if isinstance(module, _BatchNorm):  # (a SyncBatchNorm too: PyTorch's makes a new one of it as well)
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, bias=module.bias is not None)
            with autograd.no_grad():
                if module.affine:
                    converted.weight, converted.bias = module.weight, module.bias
                converted.running_mean, converted.running_var = module.running_mean, module.running_var
                converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):  # (quantization-aware training's setting goes with the layer)
                converted.qconfig = module.qconfig
        for name, child in list(module.named_children()):
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted
