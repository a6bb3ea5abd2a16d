"""Adamax: Adam with the infinity norm of past gradients in place of their root mean square."""

import autograd

from ._functional import adamax  # noqa: F401  (torch.optim.adamax.adamax, the functional step)
from .adam import AdamFamily, apply_weight_decay
from .optimizer import kept_for_backward, scalar_tensor


class Adamax(AdamFamily):
    """Adamax (Kingma & Ba, 2015, section 7), as ``torch.optim.Adamax``:

        g ← ∇L(W) + λ W
        m ← m + (1 - β₁)(g - m)
        u ← max(β₂ u, |g| + ε)                   (exponentially weighted infinity norm)
        W ← W - η/(1 - β₁ᵗ) · m / u

    ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize, differentiable=differentiable,
                                      capturable=capturable))

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["exp_avg"] = autograd.zeros_like(param)
            state["exp_inf"] = autograd.zeros_like(param)
        step = state["step"].add_(1).item()
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        grad = apply_weight_decay(param, grad, group)
        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_inf.mul_(beta2)
        exp_inf.copy_(kept_for_backward(exp_inf, group).maximum(grad.abs().add_(eps)))
        param.addcdiv_(exp_avg, exp_inf, value=-lr / (1 - beta1**step))
