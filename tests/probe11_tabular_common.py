# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""What the files of session 11's recommender, tabular and time-series probe
(tests/test_programs_probe11_tabular_*.py, one family of models each) share: a few training steps, the parameters'
values, TabNet's sparsemax and entmax-1.5 Functions (NODE's trees use them too), and a synthetic multivariate series.

The programs (see tests/pytorch_programs.py) are written as their reference repositories write them, each trained a
few steps from the same weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients and
parameters (float64 to about 1e-10 unless said), and checked against NumPy by hand where a formula is short."""

import numpy as np


def train(m, model, loss_of, optimizer, steps):
    """The usual loop: returns the losses, and the gradients of the last step."""
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_of(model)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        losses.append(loss.item())
    return losses, grads


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def tabnet_functions(m):
    torch = m.torch
    Function = torch.autograd.Function

    def _make_ix_like(input, dim=0):
        d = input.size(dim)
        rho = torch.arange(1, d + 1, device=input.device, dtype=input.dtype)
        view = [1] * input.dim()
        view[0] = -1
        return rho.view(view).transpose(0, dim)

    class SparsemaxFunction(Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input -= max_val  # same numerical stability trick as for softmax
            tau, supp_size = SparsemaxFunction._threshold_and_support(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0

            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            input_srt, _ = torch.sort(input, descending=True, dim=dim)
            input_cumsum = input_srt.cumsum(dim) - 1
            rhos = _make_ix_like(input, dim)
            support = rhos * input_srt > input_cumsum

            support_size = support.sum(dim=dim).unsqueeze(dim)
            tau = input_cumsum.gather(dim, support_size - 1)
            tau /= support_size.to(input.dtype)
            return tau, support_size

    class Entmax15Function(Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input = input - max_val  # same numerical stability trick as for softmax
            input = input / 2  # divide by 2 to solve actual Entmax
            tau_star, _ = Entmax15Function._threshold_and_support(input, dim)
            output = torch.clamp(input - tau_star, min=0) ** 2
            ctx.save_for_backward(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            Y, = ctx.saved_tensors
            gppr = Y.sqrt()  # = 1 / g'' (Y)
            dX = grad_output * gppr
            q = dX.sum(ctx.dim) / gppr.sum(ctx.dim)
            q = q.unsqueeze(ctx.dim)
            dX -= q * gppr
            return dX, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            Xsrt, _ = torch.sort(input, descending=True, dim=dim)
            rho = _make_ix_like(input, dim)
            mean = Xsrt.cumsum(dim) / rho
            mean_sq = (Xsrt ** 2).cumsum(dim) / rho
            ss = rho * (mean_sq - mean ** 2)
            delta = (1 - ss) / rho
            delta_nz = torch.clamp(delta, 0)
            tau = mean - torch.sqrt(delta_nz)
            support_size = (tau <= Xsrt).sum(dim).unsqueeze(dim)
            tau_star = tau.gather(dim, support_size - 1)
            return tau_star, support_size

    return SparsemaxFunction, Entmax15Function


def multivariate(length=60, channels=3, seed=15):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    return (np.arange(channels) * 3 + 0.1 * t + np.sin(2 * np.pi * t / (8 + np.arange(channels)))
            + 0.1 * rng.standard_normal((length, channels)))
