"""Adafactor: Adam's second moment in factored form, a relative step size, update clipping."""

import autograd
from autograd import finfo

from .optimizer import Optimizer, check_tensor_lr, require, scalar_tensor


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern, 2018) as ``torch.optim.Adafactor``, in its order of operations.
    For a matrix gradient G (m × n, or a batch of them over leading dims) the second moment is
    kept as a row factor R (m × 1) and a column factor C (1 × n), memory m + n instead of m n:

        β̂₂ = 1 - t^τ                                  (beta2_decay τ ≤ 0: β̂₂ grows towards 1)
        ρ = min(η, 1/√t),   α = max(ε₂, RMS(W)) · ρ    (a step relative to the weights' size)
        W ← W (1 - η λ)                                (decoupled weight decay λ)
        R ← R + (1 - β̂₂)(mean over columns of G² - R)  (lerps; means of G², as PyTorch: not sums)
        C ← C + (1 - β̂₂)(mean over rows of G² - C)
        V̂ = R C / max(mean(R), ε₁)                     (vectors: V̂ ← V̂ + (1 - β̂₂)(G² - V̂))
        U = G / max(√V̂, ε₁)
        W ← W - α U / max(1, RMS(U) / d)               (update clipping at threshold d)

    ε₁ defaults to the machine epsilon of the parameter's dtype (``eps=(None, 1e-3)``). PyTorch's
    single-tensor loop takes the first parameter's epsilon for the whole group; here each parameter
    takes its own dtype's, which is the same unless one group mixes dtypes. ``foreach`` is accepted
    and ignored. As PyTorch notes, this differs from the paper in using η as the cap of ρ and as
    the weight-decay factor, and in applying ε₁ to the estimate rather than to G².
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None}

    supports_complex = False  # (its factored second moment is of real matrices: PyTorch refuses them too)

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 foreach=None, maximize=False):
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                                      weight_decay=weight_decay, foreach=foreach, maximize=maximize))

    def check_hyperparameters(self, group):
        check_tensor_lr(group)
        eps1, eps2 = group["eps"]
        require(0.0 <= group["lr"], f"Learning rate should be >= 0 but is: {group['lr']}")
        require(0.0 >= group["beta2_decay"], f"beta2_decay should be <= 0 but is: {group['beta2_decay']}")
        require(eps1 is None or 0.0 <= eps1, f"epsilon1 should be >= 0 but is: {eps1}")
        require(0.0 <= eps2, f"epsilon2 should be >= 0 but is: {eps2}")
        require(1.0 <= group["d"], f"Clipping threshold d should be >= 1 but is: {group['d']}")
        require(0.0 <= group["weight_decay"], f"weight_decay should be >= 0 but is: {group['weight_decay']}")
        super().check_hyperparameters(group)

    def update(self, param, grad, state, group):
        if param.dtype.kind == "c":
            raise RuntimeError("Adafactor does not support complex parameters")
        factored = grad.ndim > 1
        if not state:
            state["step"] = scalar_tensor(0.0)
            if factored:
                state["row_var"] = grad.new_zeros(grad.shape[:-1] + (1,))
                state["col_var"] = grad.new_zeros(grad.shape[:-2] + (1, grad.shape[-1]))
            else:
                state["variance"] = autograd.zeros_like(grad)
        lr, (eps1, eps2), weight_decay = group["lr"], group["eps"], group["weight_decay"]
        if eps1 is None:
            eps1 = finfo(param.dtype).eps
        step = state["step"].add_(1).item()
        one_minus_beta2 = step ** group["beta2_decay"]
        rho = min(lr, 1 / step**0.5)
        alpha = max(eps2, param.norm(2).item() / param.numel() ** 0.5) * rho
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        if factored:
            row_var, col_var = state["row_var"], state["col_var"]
            row_var.lerp_(grad.norm(dim=-1, keepdim=True).square().div_(grad.shape[-1]), one_minus_beta2)
            col_var.lerp_(grad.norm(dim=-2, keepdim=True).square().div_(grad.shape[-2]), one_minus_beta2)
            estimate = (row_var @ col_var).div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        else:
            state["variance"].lerp_(grad * grad, one_minus_beta2)
            estimate = state["variance"].clone()
        update = estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)  # 1 / max(√V̂, ε₁) · G
        clip = max(1.0, update.norm(2).item() / (update.numel() ** 0.5 * group["d"]))
        param.add_(update, alpha=-alpha / clip)
