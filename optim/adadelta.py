"""Adadelta: step sizes from the ratio of recent update and gradient magnitudes."""

import autograd

from ._functional import adadelta  # noqa: F401  (torch.optim.adadelta.adadelta, the functional step)
from .optimizer import Optimizer, l2_decayed, require, scalar_tensor


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``:

        g ← ∇L(W) + λ W
        s ← ρ s + (1 - ρ) g²                      (running mean square of gradients)
        Δ ← √(u + ε) / √(s + ε) · g               (u: running mean square of updates)
        u ← ρ u + (1 - ρ) Δ²
        W ← W - η Δ

    The units of Δ match W's, so no global learning rate is needed (η = 1).
    ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    capturable_xla = (False, False)  # (PyTorch's lists for Adadelta name no xla)

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      capturable=capturable, foreach=foreach, differentiable=differentiable))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(0 <= group["rho"] <= 1, f"Invalid rho value: {group['rho']}")
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["square_avg"] = autograd.zeros_like(param)
            state["acc_delta"] = autograd.zeros_like(param)
        state["step"].add_(1)
        if group["weight_decay"]:
            grad = l2_decayed(grad, param, group["weight_decay"])
        rho, eps = group["rho"], group["eps"]
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = (square_avg + eps).sqrt_()
        delta = (acc_delta + eps).sqrt_().div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        param.add_(delta, alpha=-group["lr"])
