"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

import numpy

from .optimizer import Optimizer, require


class RMSprop(Optimizer):
    """RMSprop (Hinton, Coursera lecture 6e), as ``torch.optim.RMSprop``:

        g ← ∇L(W) + λ W
        s ← α s + (1 - α) g²                      (running mean square)
        ḡ ← α ḡ + (1 - α) g;  d ← √(s - ḡ²) + ε   if centered, else d ← √s + ε
        b ← μ b + g / d;  W ← W - η b             with momentum μ > 0
        W ← W - η g / d                           otherwise
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        require(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']}")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        require(group["alpha"] >= 0, f"Invalid alpha value: {group['alpha']}")

    def update(self, param, grad, state, group):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        if not state:
            state["step"] = 0
            state["square_avg"] = numpy.zeros_like(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = numpy.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = numpy.zeros_like(param)
        state["step"] += 1
        alpha, square_avg = group["alpha"], state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (grad - grad_avg) * (1 - alpha)
            denominator = numpy.sqrt(square_avg - grad_avg * grad_avg)
        else:
            denominator = numpy.sqrt(square_avg)
        denominator += group["eps"]
        if group["momentum"] > 0:
            buffer = state["momentum_buffer"]
            buffer *= group["momentum"]
            buffer += grad / denominator
            param -= group["lr"] * buffer
        else:
            param -= group["lr"] * (grad / denominator)
