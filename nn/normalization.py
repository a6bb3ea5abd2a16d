"""Normalisation layers: BatchNorm1d/2d/3d, LayerNorm, GroupNorm, LocalResponseNorm (the lecture's
feature-statistics regularisers)."""

import numbers

import autograd
from autograd.errors import ShapeError

from . import functional as F
from .module import Module
from .parameter import Parameter


def _ones_and_zeros(weight, bias):
    """γ = 1 and β = 0 (either may be None): every normalisation layer's initial affine map."""
    with autograd.no_grad():
        if weight is not None:
            weight.fill_(1)
        if bias is not None:
            bias.zero_()


class _NormBase(Module):
    """What batch and instance norm share: γ (weight, ones) and β (bias, zeros) of num_features when affine,
    and the running statistics (running_mean, running_var, num_batches_tracked) when track_running_stats;
    PyTorch's names, so state_dicts load both ways."""

    _version = 2  # PyTorch's: version 2 added num_batches_tracked

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        made = {"device": device, "dtype": dtype}
        self.weight = Parameter(autograd.ones(num_features, **made)) if affine else None
        self.bias = Parameter(autograd.zeros(num_features, **made)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", autograd.zeros(num_features, **made))
            self.register_buffer("running_var", autograd.ones(num_features, **made))
            self.register_buffer("num_batches_tracked", autograd.tensor(0, device=device))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A state_dict older than version 2 (or a plain dict, with no version) may lack
        num_batches_tracked, as checkpoints written before PyTorch 0.4.1 do: this module's own count
        is kept then, as PyTorch keeps it, instead of a missing key (a count on the meta device, which holds no
        value, is a 0 then, as PyTorch's: loading with assign=True gives the module a real count)."""
        key = prefix + "num_batches_tracked"
        version = local_metadata.get("version")
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            count = self.num_batches_tracked
            state_dict[key] = autograd.tensor(0) if count is None or count.is_meta else count
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def reset_running_stats(self):
        """Running mean 0, running variance 1, no batches seen (what update_bn starts from)."""
        if self.track_running_stats:
            with autograd.no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        """The running statistics reset, and γ = 1, β = 0."""
        self.reset_running_stats()
        _ones_and_zeros(self.weight, self.bias)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    """y = (x - mean) / √(var + eps) · γ + β per channel; see F.batch_norm for the
    training/eval statistics and the running averages (exactly PyTorch's)."""

    expected_dims = ()

    def _check_input_dim(self, input):
        """PyTorch's hook for the number of dims a layer accepts, which forward calls first: subclasses of
        ``_BatchNorm`` name their own (V-Net's ContBatchNorm3d accepts 5 dims only); the layers here accept
        ``expected_dims``, and ``_BatchNorm`` itself none (PyTorch's NotImplementedError)."""
        if not self.expected_dims:
            raise NotImplementedError(f"{type(self).__name__} must define _check_input_dim")
        if input.ndim not in self.expected_dims:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects input of "
                             f"{' or '.join(map(str, self.expected_dims))} dims with {self.num_features} channels "
                             f"in dim 1, got shape {tuple(input.shape)}")

    def forward(self, input):
        self._check_input_dim(input)
        if input.shape[1] != self.num_features:  # PyTorch's RuntimeError (ShapeError is a ValueError too)
            raise ShapeError(f"running_mean should contain {input.shape[1]} elements not {self.num_features} "
                             f"({type(self).__name__}({self.num_features}) expects {self.num_features} channels "
                             f"in dim 1, got shape {tuple(input.shape)})")
        # PyTorch's rules: training with track_running_stats switched off after construction leaves the running
        # statistics (and the count) alone; eval uses them whenever they exist, batch statistics otherwise
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias,
                            training=self.training or (self.running_mean is None and self.running_var is None),
                            momentum=self.momentum, eps=self.eps,
                            num_batches_tracked=self.num_batches_tracked if self.training and track else None)


class BatchNorm1d(_BatchNorm):
    """Input (N, C) or (N, C, L)."""

    expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Input (N, C, H, W)."""

    expected_dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Input (N, C, D, H, W)."""

    expected_dims = (5,)


class LayerNorm(Module):
    """Normalise each sample over its last dims (Ba, Kiros & Hinton, 2016)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = ((int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral)
                                 else tuple(normalized_shape))  # (an int or a NumPy integer: one size)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        made = {"device": device, "dtype": dtype}
        self.weight = Parameter(autograd.ones(self.normalized_shape, **made)) if elementwise_affine else None
        self.bias = (Parameter(autograd.zeros(self.normalized_shape, **made)) if elementwise_affine and bias
                     else None)

    def reset_parameters(self):
        _ones_and_zeros(self.weight, self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    """Scale each sample by the root mean square over its last dims (Zhang & Sennrich, 2019)."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = ((int(normalized_shape),) if isinstance(normalized_shape, numbers.Integral)
                                 else tuple(normalized_shape))  # (an int or a NumPy integer: one size)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        made = {"device": device, "dtype": dtype}
        self.weight = Parameter(autograd.ones(self.normalized_shape, **made)) if elementwise_affine else None

    def reset_parameters(self):
        _ones_and_zeros(self.weight, None)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalise groups of channels of each sample (Wu & He, 2018)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        made = {"device": device, "dtype": dtype}
        self.weight = Parameter(autograd.ones(num_channels, **made)) if affine else None
        self.bias = Parameter(autograd.zeros(num_channels, **made)) if affine and bias else None

    def reset_parameters(self):
        _ones_and_zeros(self.weight, self.bias)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class LocalResponseNorm(Module):
    """Divide each channel by a power of the squares of its neighbours across channels (Krizhevsky et al.,
    2012); see ``F.local_response_norm``."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
