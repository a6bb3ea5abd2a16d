"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

import autograd

from ._functional import rmsprop  # noqa: F401  (torch.optim.rmsprop.rmsprop, the functional step)
from .optimizer import Optimizer, l2_decayed, require, scalar_tensor


class RMSprop(Optimizer):
    """RMSprop (Hinton, Coursera lecture 6e), as ``torch.optim.RMSprop``:

        g ← ∇L(W) + λ W
        s ← α s + (1 - α) g²                      (running mean square)
        ḡ ← ḡ + (1 - α)(g - ḡ);  d ← √(s - ḡ²) + ε   if centered, else d ← √s + ε
        b ← μ b + g / d;  W ← W - η b             with momentum μ > 0
        W ← W - η g / d                           otherwise

    ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"momentum": 0, "centered": False, "foreach": None, "maximize": False, "differentiable": False,
                         "capturable": False}

    capturable_xla = (True, True)  # (PyTorch's lists for RMSprop name xla on both paths)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        # in PyTorch's order: state_dict() prints a param group's keys in it
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        require(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']}")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        require(group["alpha"] >= 0, f"Invalid alpha value: {group['alpha']}")

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["square_avg"] = autograd.zeros_like(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = autograd.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = autograd.zeros_like(param)
        state["step"].add_(1)
        if group["weight_decay"]:
            grad = l2_decayed(grad, param, group["weight_decay"])
        alpha, square_avg = group["alpha"], state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"].lerp_(grad, 1 - alpha)
            denominator = square_avg.clone().addcmul_(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            denominator = square_avg.sqrt()
        denominator.add_(group["eps"])
        if group["momentum"] > 0:
            buffer = state["momentum_buffer"].mul_(group["momentum"]).addcdiv_(grad, denominator)
            param.add_(buffer, alpha=-group["lr"])
        else:
            param.addcdiv_(grad, denominator, value=-group["lr"])
