"""load_state_dict of an optimizer written against ``torch.optim.Optimizer``, as PyTorch's: a ``step``
kept as a number stays a number (timm's RAdamLegacy caches step sizes keyed by it: a Tensor step,
incremented in place, was also the cache's key, so the cache went stale and the resumed run diverged),
and what the saved groups shared (RAdamLegacy's ``buffer`` default) they share again. Against PyTorch."""

import copy
import importlib
import math

import numpy as np
import pytest

import autograd

LIBRARIES = ["ours", pytest.param("torch", marks=pytest.mark.torch)]


def modules(which):
    if which == "ours":
        return autograd, importlib.import_module("nn"), importlib.import_module("optim")
    torch = pytest.importorskip("torch")
    return torch, torch.nn, torch.optim


def radam_legacy(torch, optim):
    class RAdamLegacy(optim.Optimizer):
        """timm's (optim/radam.py), its step sizes cached per group by step % 10"""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                            buffer=[[None, None, None] for _ in range(10)])
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.float()
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                    beta1, beta2 = group["betas"]
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    state["step"] += 1
                    buffered = group["buffer"][int(state["step"] % 10)]
                    if state["step"] == buffered[0]:
                        num_sma, step_size = buffered[1], buffered[2]
                    else:
                        buffered[0] = state["step"]
                        beta2_t = beta2 ** state["step"]
                        num_sma_max = 2 / (1 - beta2) - 1
                        num_sma = num_sma_max - 2 * state["step"] * beta2_t / (1 - beta2_t)
                        buffered[1] = num_sma
                        if num_sma >= 5:
                            step_size = group["lr"] * math.sqrt(
                                (1 - beta2_t) * (num_sma - 4) / (num_sma_max - 4) * (num_sma - 2) / num_sma
                                * num_sma_max / (num_sma_max - 2)) / (1 - beta1 ** state["step"])
                        else:
                            step_size = group["lr"] / (1 - beta1 ** state["step"])
                        buffered[2] = step_size
                    if num_sma >= 5:
                        p.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
                    else:
                        p.add_(exp_avg, alpha=-step_size)

    return RAdamLegacy


@pytest.mark.parametrize("which", LIBRARIES)
def test_resumed_custom_optimizer_follows_the_same_path(which):
    torch, nn, optim = modules(which)
    rng = np.random.default_rng(0)
    weight, bias = (nn.Parameter(torch.tensor(rng.standard_normal(s).astype(np.float32))) for s in ((5, 3), (5,)))
    x = torch.tensor(rng.standard_normal(3).astype(np.float32))

    def make(weight, bias):
        return radam_legacy(torch, optim)([{"params": [weight]}, {"params": [bias], "lr": 1e-2}], lr=1e-3)

    def step(optimizer, weight, bias):
        optimizer.zero_grad()
        (weight.mv(x) + bias).pow(2).sum().backward()
        optimizer.step()

    optimizer = make(weight, bias)
    for _ in range(12):
        step(optimizer, weight, bias)
    with torch.no_grad():
        weight_c, bias_c = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())
    resumed = make(weight_c, bias_c)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    groups = resumed.param_groups
    assert groups[0]["buffer"] is groups[1]["buffer"]  # shared when saved, shared again
    assert type(resumed.state[weight_c]["step"]) is int and resumed.state[weight_c]["step"] == 12
    for _ in range(12):
        step(optimizer, weight, bias)
        step(resumed, weight_c, bias_c)
    np.testing.assert_array_equal(weight_c.detach().numpy(), weight.detach().numpy())
    np.testing.assert_array_equal(bias_c.detach().numpy(), bias.detach().numpy())


@pytest.mark.parametrize("which", LIBRARIES)
def test_a_builtin_optimizer_still_steps_with_a_tensor_after_an_old_style_state(which):
    torch, nn, optim = modules(which)
    p = nn.Parameter(torch.ones(2))
    adam = optim.Adam([p], lr=0.1)
    p.grad = torch.ones(2)
    adam.step()
    state = adam.state_dict()
    state["state"][0]["step"] = 1  # as written before step became a Tensor
    adam.load_state_dict(state)
    assert torch.is_tensor(adam.state[p]["step"]) and float(adam.state[p]["step"]) == 1.0
