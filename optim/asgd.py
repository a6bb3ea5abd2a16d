"""ASGD: stochastic gradient descent that also keeps a running average of the iterates."""

import autograd

from ._functional import asgd  # noqa: F401  (torch.optim.asgd.asgd, the functional step)
from .optimizer import Optimizer, l2_decayed, require, scalar_tensor


class ASGD(Optimizer):
    """Averaged SGD (Polyak & Juditsky, 1992), as ``torch.optim.ASGD``:

        g ← ∇L(W) + λ_w W
        W ← W (1 - λ η_t) - η_t g
        W̄ ← W̄ + μ_t (W - W̄)        (W̄ = W while μ_t = 1, i.e. for t ≤ t₀ + 1)
        η_{t+1} ← η / (1 + λ η t)^α;   μ_{t+1} ← 1 / max(1, t - t₀)

    The average W̄ is ``state['ax']``; η_t and μ_t are scalar-dtype Tensors as
    PyTorch's (``eta``, ``mu``; ``load_state_dict`` gives them the parameter's dtype, as
    PyTorch's). ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    capturable_tensors = "params, mus, etas, and state_steps"  # (PyTorch's capturable check)

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None,
                 maximize=False, differentiable=False, capturable=False):
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize, differentiable=differentiable,
                                      capturable=capturable))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["eta"] = scalar_tensor(group["lr"])
            state["mu"] = scalar_tensor(1.0)
            state["ax"] = autograd.zeros_like(param)
        step = state["step"].add_(1).item()
        lr, lambd = group["lr"], group["lambd"]
        if group["weight_decay"]:
            grad = l2_decayed(grad, param, group["weight_decay"])
        eta = state["eta"].item()
        param.mul_(1 - lambd * eta)
        param.add_(grad, alpha=-eta)
        if state["mu"].item() != 1:
            state["ax"].add_((param - state["ax"]).mul_(state["mu"]))
        else:
            state["ax"].copy_(param)
        state["eta"].copy_(lr / ((1 + lambd * lr * step) ** group["alpha"]))
        state["mu"].copy_(1 / max(1, step - group["t0"]))
