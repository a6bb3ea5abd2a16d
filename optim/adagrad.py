"""Adagrad: per-weight learning rates that shrink with the gradients seen so far."""

import autograd

from ._functional import adagrad  # noqa: F401  (torch.optim.adagrad.adagrad, the functional step)
from .optimizer import Optimizer, fresh_plus, l2_decayed, require, scalar_tensor


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011), as ``torch.optim.Adagrad``:

        g ← ∇L(W) + λ W
        η_t ← η / (1 + (t - 1) · lr_decay)
        G ← G + g²                               (G starts at initial_accumulator_value)
        W ← W - η_t g / (√G + ε)

    Weights with large past gradients take small steps, rare features large ones.
    ``foreach`` and ``fused`` are accepted and ignored.
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"foreach": None, "maximize": False, "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable,
                                      fused=fused))
        for group in self.param_groups:  # PyTorch fills the state at once: state_dict() shows every sum
            for p in group["params"]:
                self._initial_state(p, self.state[p], group)

    def _initial_state(self, param, state, group):
        """A parameter's first state. Its sum starts at the optimizer's initial_accumulator_value, a group's own
        notwithstanding (also for a group added later), as PyTorch's: the group's value is kept, and unused."""
        state["step"] = scalar_tensor(0.0, fused=group["fused"])
        value = self.defaults["initial_accumulator_value"]  # (both parts of a complex parameter's, as PyTorch's)
        state["sum"] = autograd.full_like(param, complex(value, value) if param.dtype.kind == "c" else value)

    def share_memory(self):
        """PyTorch moves the sums to shared memory for torch.multiprocessing; on one process
        nothing needs to move (as Module.share_memory)."""

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["lr_decay"] >= 0, f"Invalid lr_decay value: {group['lr_decay']}")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        require(group["initial_accumulator_value"] >= 0,
                f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']}")
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")

    def sparse_gradient(self, grad, group):
        if group["weight_decay"]:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        return grad

    def update(self, param, grad, state, group):
        if not state:  # a parameter of a group added later (add_param_group)
            self._initial_state(param, state, group)
        step = state["step"].add_(1).item()
        lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        if grad.is_sparse:  # (an Embedding's sparse=True) only the rows it has: PyTorch's sparse path, in its order
            grad = grad.coalesce()
            rows, values = tuple(grad._indices()), grad._values()
            state["sum"].index_put_(rows, values.pow(2), accumulate=True)
            std = state["sum"][rows].sqrt_().add_(group["eps"])
            param.index_put_(rows, values / std * -lr, accumulate=True)
            return
        if group["weight_decay"]:
            grad = l2_decayed(grad, param, group["weight_decay"])
        state["sum"].addcmul_(grad, grad, value=1)
        param.addcdiv_(grad, fresh_plus(state["sum"].sqrt(), group["eps"], group), value=-lr)
