"""RAdam: Adam whose adaptive step is switched on only once its variance is tractable."""

import autograd

from ._functional import radam  # noqa: F401  (torch.optim.radam.radam, the functional step)
from .adam import AdamFamily, apply_weight_decay, update_moments
from .optimizer import fresh_plus, scalar_tensor


class RAdam(AdamFamily):
    """RAdam (Liu et al., 2020), in ``torch.optim.RAdam``'s order of operations:

        g ← ∇L(W) + λ W        or  W ← W (1 - η λ)   (decoupled_weight_decay)
        m ← m + (1 - β₁)(g - m);   v ← β₂ v + (1 - β₂) g²
        m̂ ← m / (1 - β₁ᵗ)
        ρ_∞ ← 2/(1 - β₂) - 1;   ρ_t ← ρ_∞ - 2 t β₂ᵗ / (1 - β₂ᵗ)
        if ρ_t > 5:  r ← √((ρ_t - 4)(ρ_t - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t))
                     W ← W - η m̂ · √(1 - β₂ᵗ)/(√v + ε) · r
        else:        W ← W - η m̂                      (plain momentum, early steps)

    ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "decoupled_weight_decay": False,
                         "capturable": False}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable))

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["exp_avg"] = autograd.zeros_like(param)
            state["exp_avg_sq"] = autograd.zeros_like(param)
        step = state["step"].add_(1).item()
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        grad = apply_weight_decay(param, grad, group)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        update_moments(exp_avg, exp_avg_sq, grad, group["betas"])
        bias_correction1, bias_correction2 = 1 - beta1**step, 1 - beta2**step
        corrected_exp_avg = exp_avg / bias_correction1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        if rho_t > 5.0:
            rectification = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            adaptive_lr = bias_correction2**0.5 / fresh_plus(exp_avg_sq.sqrt(), eps, group)
            param.add_(corrected_exp_avg * lr * adaptive_lr * rectification, alpha=-1.0)
        else:
            param.add_(corrected_exp_avg * lr, alpha=-1.0)
