"""NAdam: Adam with Nesterov momentum, the momentum coefficient warming up over time."""

import autograd

from ._functional import nadam  # noqa: F401  (torch.optim.nadam.nadam, the functional step)
from .adam import AdamFamily, apply_weight_decay, update_moments
from .optimizer import number_over, require, scalar_tensor


class NAdam(AdamFamily):
    """NAdam (Dozat, 2016), in ``torch.optim.NAdam``'s order of operations:

        g ← ∇L(W) + λ W        or  W ← W (1 - η λ)   (decoupled_weight_decay)
        μ_t ← β₁ (1 - ½ · 0.96^(t ψ))                 (ψ: momentum_decay; μ warms up)
        Π_t ← Π_{t-1} μ_t                             (``mu_product``, Π_0 = 1)
        m ← m + (1 - β₁)(g - m);   v ← β₂ v + (1 - β₂) g²
        d ← √(v / (1 - β₂ᵗ)) + ε
        W ← W - η (1 - μ_t)/(1 - Π_t) · g/d - η μ_{t+1}/(1 - Π_t μ_{t+1}) · m/d

    The last line is Nesterov's look-ahead: the step uses the momentum of the
    next iteration. ``mu_product`` is a scalar-dtype Tensor as PyTorch's (float32
    unless the default dtype is float64; ``load_state_dict`` gives it the parameter's
    dtype, as PyTorch's). ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                         "decoupled_weight_decay": False}

    capturable_tensors = "params, mu_products and state_steps"  # (PyTorch's capturable check)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["momentum_decay"] >= 0, f"Invalid momentum_decay value: {group['momentum_decay']}")

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["mu_product"] = scalar_tensor(1.0)
            state["exp_avg"] = autograd.zeros_like(param)
            state["exp_avg_sq"] = autograd.zeros_like(param)
        step = state["step"].add_(1).item()
        lr, (beta1, beta2), eps, psi = group["lr"], group["betas"], group["eps"], group["momentum_decay"]
        grad = apply_weight_decay(param, grad, group)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * psi)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * psi)))
        mu_product = state["mu_product"].mul_(mu)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        update_moments(exp_avg, exp_avg_sq, grad, group["betas"])
        denominator = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(eps)
        if group["differentiable"]:  # PyTorch's recorded path: the two factors as scalar-dtype Tensors
            param.addcdiv_(grad * number_over(-lr * (1.0 - mu), 1.0 - mu_product), denominator)
            param.addcdiv_(exp_avg * number_over(-lr * mu_next, 1.0 - mu_product * mu_next), denominator)
            return
        mu_product = mu_product.item()
        param.addcdiv_(grad, denominator, value=-lr * (1.0 - mu) / (1.0 - mu_product))
        param.addcdiv_(exp_avg, denominator, value=(-lr * mu_next) / (1.0 - mu_product * mu_next))
