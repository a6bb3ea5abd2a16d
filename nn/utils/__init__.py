"""``nn.utils``: gradient clipping, parameters as one vector, early stopping; ``nn.utils.rnn``
(padding and packing sequences), ``parametrize`` and ``parametrizations.weight_norm``."""

import copy
import math

import autograd
from autograd import Tensor
from autograd.backend import xp

from . import parametrizations, parametrize, rnn  # noqa: F401  (as torch.nn.utils.*)


def _with_grads(parameters):
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    The norm is taken over all gradients as if concatenated into one vector
    (norm_type 2, 1, ... or inf):  ‖g‖ = (Σ |g_i|^p)^(1/p); every gradient is then
    multiplied in place by min(1, max_norm / (‖g‖ + 1e-6)). Returns ‖g‖, before
    clipping, as a Tensor of the gradients' dtype. The lecture's remedy for
    exploding gradients. ``foreach`` (PyTorch's choice of kernel) changes nothing here.
    """
    parameters = _with_grads(parameters)
    if not parameters:
        return autograd.tensor(0.0)
    dtype = parameters[0].grad._data.dtype
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = max(float(xp.abs(p.grad._data).max()) for p in parameters)
    else:
        total = sum(float((xp.abs(p.grad._data.astype(xp.float64)) ** norm_type).sum())
                    for p in parameters) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite "
                           f"({total}), so it cannot be clipped. To disable this error and scale the gradients "
                           "by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coefficient = min(max_norm / (total + 1e-6), 1.0)
    with autograd.no_grad():
        for p in parameters:
            p.grad.mul_(coefficient)
    return autograd.tensor(total, dtype=dtype)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value]."""
    with autograd.no_grad():
        for p in _with_grads(parameters):
            p.grad.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """All parameters flattened into one vector (differentiable, like PyTorch's)."""
    return autograd.cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vector, parameters):
    """Copy consecutive slices of ``vector`` into the parameters (in place)."""
    if not isinstance(vector, Tensor) or vector.ndim != 1:
        raise TypeError(f"expected a 1-D Tensor, got {type(vector).__name__}")
    parameters = list(parameters)
    needed = sum(p.numel() for p in parameters)
    if vector.numel() != needed:
        raise ValueError(f"vector has {vector.numel()} elements but the parameters need {needed}")
    start = 0
    with autograd.no_grad():
        for p in parameters:
            p.copy_(vector[start:start + p.numel()].reshape(p.shape))
            start += p.numel()


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
                self.best_state = {k: Tensor(v._data.copy()) for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.should_stop = self.bad_epochs >= self.patience
        if self.should_stop and model is not None and self.best_state is not None:
            model.load_state_dict(self.best_state)
        return self.should_stop

    def state_dict(self):
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "best_state"})
