"""Rprop: a step per weight that grows while its gradient keeps its sign and shrinks when it flips."""

import autograd
from autograd import where

from ._functional import rprop  # noqa: F401  (torch.optim.rprop.rprop, the functional step)
from .optimizer import Optimizer, require, scalar_tensor


class Rprop(Optimizer):
    """Rprop (Riedmiller & Braun, 1993), as ``torch.optim.Rprop``: only the gradient's sign is used.

        s ← sign(g · g_prev)
        Δ ← clamp(Δ · (η+ if s > 0, η- if s < 0, 1 otherwise), Δ_min, Δ_max)   (Δ starts at lr)
        g ← 0 where s < 0                           (after a flip, no step and no memory of it)
        W ← W - sign(g) · Δ;   g_prev ← g

    ``foreach`` is accepted and ignored; ``capturable=True`` is refused at the step (PyTorch's
    AssertionError on the CPU).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    capturable_xla = (True, True)  # (PyTorch's lists for Rprop name xla on both paths)

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
                 maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, capturable=capturable))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        eta_minus, eta_plus = group["etas"]
        require(0.0 < eta_minus < 1.0 < eta_plus, f"Invalid eta values: {eta_minus}, {eta_plus}")

    def update(self, param, grad, state, group):
        if not state:
            state["step"] = scalar_tensor(0.0)
            state["prev"] = autograd.zeros_like(param)
            state["step_size"] = autograd.full_like(grad, group["lr"])  # (of grad, as PyTorch's: a plain tensor)
        state["step"].add_(1)
        eta_minus, eta_plus = group["etas"]
        step_min, step_max = group["step_sizes"]
        agreement = (grad * state["prev"]).sign()
        factor = where(agreement > 0, eta_plus,  # (ones_like: param's dtype)
                       where(agreement < 0, eta_minus, autograd.ones_like(param)))
        state["step_size"].mul_(factor).clamp_(step_min, step_max)
        grad = where(agreement < 0, 0.0, grad)
        param.addcmul_(grad.sign(), state["step_size"], value=-1)
        state["prev"].copy_(grad)
