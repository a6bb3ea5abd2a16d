"""Adagrad: per-weight learning rates that shrink with the gradients seen so far."""

import numpy

from .optimizer import Optimizer, require


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011), as ``torch.optim.Adagrad``:

        g ← ∇L(W) + λ W
        η_t ← η / (1 + (t - 1) · lr_decay)
        G ← G + g²                               (G starts at initial_accumulator_value)
        W ← W - η_t g / (√G + ε)

    Weights with large past gradients take small steps, rare features large ones.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["lr_decay"] >= 0, f"Invalid lr_decay value: {group['lr_decay']}")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        require(group["initial_accumulator_value"] >= 0,
                f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']}")
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = 0
            state["sum"] = numpy.full_like(param, group["initial_accumulator_value"])
        state["step"] += 1
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += grad * grad
        denominator = numpy.sqrt(state["sum"])
        denominator += group["eps"]
        param -= lr * (grad / denominator)
