"""Adam and AdamW: momentum on the gradient and on its square, with bias correction."""

import math

import numpy

from .optimizer import Optimizer, require


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), in ``torch.optim.Adam``'s order of operations:

        g ← ∇L(W) + λ W                          (weight_decay λ, L2-coupled)
        m ← β₁ m + (1 - β₁) g                    (first moment: a momentum)
        v ← β₂ v + (1 - β₂) g²                   (second moment: per-weight scale)
        v̂ ← max(v̂, v) if amsgrad else v
        W ← W - η/(1 - β₁ᵗ) · m / (√v̂ / √(1 - β₂ᵗ) + ε)

    A per-weight learning rate: the lecture's "variable learning rates for
    features/dimensions", with momentum, and bias correction for the zero start.
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        for i, beta in enumerate(group["betas"]):
            require(0 <= beta < 1, f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")

    def update(self, param, grad, state, group):
        if self.decoupled:  # AdamW: shrink the weights directly, outside the moments
            param *= 1 - group["lr"] * group["weight_decay"]
        elif group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        adam_update(param, grad, state, group["lr"], *group["betas"], group["eps"], group["amsgrad"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019):
        W ← W (1 - η λ), then the Adam step on ∇L alone (λ defaults to 1e-2)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


def adam_update(param, grad, state, lr, beta1, beta2, eps, amsgrad):
    if not state:
        state["step"] = 0
        state["exp_avg"] = numpy.zeros_like(param)
        state["exp_avg_sq"] = numpy.zeros_like(param)
        if amsgrad:
            state["max_exp_avg_sq"] = numpy.zeros_like(param)
    state["step"] += 1
    step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
    m += (grad - m) * (1 - beta1)  # PyTorch's lerp: m + (1 - β₁)(g - m)
    v *= beta2
    v += (1 - beta2) * grad * grad
    if amsgrad:
        numpy.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        v = state["max_exp_avg_sq"]
    step_size = lr / (1 - beta1**step)
    denominator = numpy.sqrt(v)
    denominator /= math.sqrt(1 - beta2**step)
    denominator += eps
    param -= step_size * (m / denominator)  # addcdiv: value · (a / b), in that order
