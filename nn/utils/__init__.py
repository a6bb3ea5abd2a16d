"""``nn.utils``: gradient clipping, parameters as one vector, early stopping, spectral and weight
normalisation (the hook-based ones), fusing BatchNorm into the layer before it, ``skip_init``;
``nn.utils.rnn`` (padding and packing sequences), ``parametrize`` and ``parametrizations.weight_norm``,
``stateless.functional_call``, ``prune``."""

import copy

import autograd
from autograd import Tensor
from autograd.tensor import tensor_from

# the submodules, as torch.nn.utils.*
from . import clip_grad, convert_parameters, fusion, parametrizations, parametrize, prune, rnn, stateless  # noqa: F401
from .clip_grad import (  # noqa: F401
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)
from .convert_parameters import parameters_to_vector, vector_to_parameters  # noqa: F401
from .fusion import fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval, fuse_linear_bn_weights  # noqa: F401
from .init import skip_init  # noqa: F401
from .spectral_norm import remove_spectral_norm, spectral_norm  # noqa: F401
from .weight_norm import remove_weight_norm, weight_norm  # noqa: F401


def convert_conv2d_weight_memory_format(module, memory_format):
    """The module, its Conv2d and ConvTranspose2d weights laid out in ``memory_format`` (PyTorch's, for
    channels_last): layouts change no values here (see autograd.memory_format), so the module as it is,
    its parameters the same objects (an optimizer made before still holds them)."""
    return module


def convert_conv3d_weight_memory_format(module, memory_format):
    """As ``convert_conv2d_weight_memory_format``, for Conv3d and ConvTranspose3d (channels_last_3d)."""
    return module


class EarlyStopping:
    """Stop training when a validation metric has stopped improving (the lecture's
    early stopping), and optionally restore the best weights seen.

        stopper = nn.utils.EarlyStopping(patience=5, mode="min")
        for epoch in ...:
            if stopper.step(validation_loss, model):
                break          # the model holds its best weights again

    mode 'min' for a loss, 'max' for an accuracy; an improvement must beat the
    best value by more than ``min_delta``.
    """

    def __init__(self, patience=5, min_delta=0.0, mode="min", restore_best_weights=True):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.restore_best_weights = restore_best_weights
        self.best, self.best_epoch, self.epoch, self.bad_epochs = None, None, -1, 0
        self.best_state, self.should_stop = None, False

    def improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value, model=None):
        """Record this epoch's metric; True when training should stop."""
        value = float(value)
        self.epoch += 1
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            if model is not None and self.restore_best_weights:
                self.best_state = {k: tensor_from(v._data.copy()) for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.should_stop = self.bad_epochs >= self.patience
        if self.should_stop and model is not None and self.best_state is not None:
            model.load_state_dict(self.best_state)
        return self.should_stop

    def state_dict(self):
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "best_state"})
