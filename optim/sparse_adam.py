"""SparseAdam: Adam that moves only the rows a sparse gradient has (an ``nn.Embedding(sparse=True)``'s)."""

import math

import autograd
from autograd import Tensor

from .optimizer import Optimizer


class SparseAdam(Optimizer):
    """Adam on the entries of a sparse gradient only, as ``torch.optim.SparseAdam``. For each row r the gradient
    has (its repeats summed first), at step t:

        m_r ← m_r + (1 - β₁)(g_r - m_r)        v_r ← v_r + (1 - β₂)(g_r² - v_r)
        W_r ← W_r - η √(1 - β₂ᵗ)/(1 - β₁ᵗ) · m_r / (√v_r + ε)

    The other rows, their moments included, stay as they are: a word not in this batch keeps its momentum,
    where Adam would decay it and move the word anyway. t counts the optimizer's steps, not the row's. Each
    gradient must be sparse (Adam is for dense ones), in PyTorch's order of operations.
    """

    scalar_state = ()  # its step is a plain int, loaded as one (a Tensor step would make the bias corrections float32)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))
        complex_params = [[i, j] for i, group in enumerate(self.param_groups)
                          for j, p in enumerate(group["params"]) if p.dtype.kind == "c"]
        if complex_params:
            raise ValueError(f"Complex params at indices {complex_params}: SparseAdam does not support complex "
                             "parameters")

    def sparse_gradient(self, grad, group):
        return grad

    def update(self, param, grad, state, group):
        if not grad.is_sparse:
            raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
        if not state:
            state["step"] = 0
            state["exp_avg"] = autograd.zeros_like(param)
            state["exp_avg_sq"] = autograd.zeros_like(param)
        state["step"] += 1
        grad = grad.coalesce()  # (the update is not linear in g: each row once)
        rows, values = tuple(grad._indices()), grad._values()
        if values.numel() == 0:
            return
        (beta1, beta2), step = group["betas"], state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        old_exp_avg = exp_avg[rows]
        exp_avg_change = (values - old_exp_avg).mul_(1 - beta1)
        exp_avg.index_put_(rows, exp_avg_change, accumulate=True)
        old_exp_avg_sq = exp_avg_sq[rows]
        exp_avg_sq_change = values.pow(2).sub_(old_exp_avg_sq).mul_(1 - beta2)
        exp_avg_sq.index_put_(rows, exp_avg_sq_change, accumulate=True)
        numerator = exp_avg_change.add_(old_exp_avg)  # (the new m_r and v_r, as PyTorch sums them)
        denominator = exp_avg_sq_change.add_(old_exp_avg_sq).sqrt_().add_(group["eps"])
        step_size = float(group["lr"]) * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        param.index_put_(rows, -step_size * numerator.div_(denominator), accumulate=True)
