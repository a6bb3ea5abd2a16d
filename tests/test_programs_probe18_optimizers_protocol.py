# ruff: noqa: B023, UP006, UP035, UP045  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer``, run as
tests/probe18_optimizers_common.py says. The Optimizer protocol: step hooks, state-dict hooks, ``add_param_group``
and removing a group mid-training, per-group options of a custom optimizer; SPSA (a zeroth-order optimizer with a
loss closure), clipping its estimates with the helpers of ``torch.utils._foreach_utils``
(``_group_tensors_by_device_and_dtype``, ``_has_foreach_support``)."""

import copy
import math

import numpy as np

from .probe18_optimizers_common import WEIGHTS, batches, net, params_of
from .pytorch_programs import load, run_both

# ----------------------------------------------------------------------------------------------
# Hooks, groups added and removed mid-training, per-group options of a custom optimizer
# ----------------------------------------------------------------------------------------------


def hooks_and_groups_program(m, steps=9):
    torch, F, optim, nn = m.torch, m.F, m.optim, m.nn

    class AdaBeliefLite(optim.Optimizer):
        """AdaBelief's update (Zhuang et al.) with per-group ``rectify`` and ``centralize`` switches."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, centralize=False):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, centralize=centralize)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if group["centralize"] and grad.dim() > 1:
                        grad = grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["step"] += 1
                    exp_avg, exp_avg_var = state["exp_avg"], state["exp_avg_var"]
                    if group["weight_decay"] != 0:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    grad_residual = grad - exp_avg
                    exp_avg_var.mul_(beta2).addcmul_(grad_residual, grad_residual, value=1 - beta2)
                    bias_correction1 = 1 - beta1 ** state["step"]
                    bias_correction2 = 1 - beta2 ** state["step"]
                    denom = (exp_avg_var.add_(group["eps"]).sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
                    step_size = group["lr"] / bias_correction1
                    p.addcdiv_(exp_avg, denom, value=-step_size)
            return loss

    torch.manual_seed(0)
    model = load(m, net(m), WEIGHTS)
    extra_head = nn.Linear(8, 2)
    with torch.no_grad():
        extra_head.weight.copy_(torch.tensor(np.linspace(-0.3, 0.3, 16, dtype=np.float32).reshape(2, 8)))
        extra_head.bias.zero_()
    optimizer = AdaBeliefLite([{"params": model[0].parameters(), "centralize": True},
                               {"params": model[3:].parameters()}], lr=3e-3, weight_decay=0.01)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)  # (chainable: decays groups added later)

    events = []

    def clip_before_step(optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        events.append(("pre", nn.utils.clip_grad_norm_(params, max_norm=1.0).item()))

    def count_after_step(optimizer, args, kwargs):
        events.append(("post", sum(len(s) for s in optimizer.state.values())))

    def tag_state_dict(optimizer, state_dict):
        state_dict["param_groups"][0]["saved_by"] = "hook"
        return state_dict

    def before_saving(optimizer):
        events.append(("saving", len(optimizer.param_groups)))

    def before_loading(optimizer, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for group in state_dict["param_groups"]:
            group.pop("saved_by", None)
        return state_dict

    def after_loading(optimizer):
        events.append(("loaded", [g["lr"] for g in optimizer.param_groups]))

    pre = optimizer.register_step_pre_hook(clip_before_step)
    optimizer.register_step_post_hook(count_after_step)
    optimizer.register_state_dict_pre_hook(before_saving)
    optimizer.register_state_dict_post_hook(tag_state_dict)
    optimizer.register_load_state_dict_pre_hook(before_loading)
    optimizer.register_load_state_dict_post_hook(after_loading)

    data = batches(m)
    losses, saved = [], None
    for step in range(steps):
        x, y = data[step % len(data)]
        if step == 3:  # a second head joins with options of its own
            optimizer.add_param_group({"params": extra_head.parameters(), "lr": 1e-2, "centralize": True,
                                       "betas": (0.8, 0.99)})
        if step == 6:  # ... and leaves again, its state with it
            removed = optimizer.param_groups.pop()
            for p in removed["params"]:
                optimizer.state.pop(p, None)
            pre.remove()
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if len(optimizer.param_groups) == 3:
            hidden = model[:5](x)
            loss = loss + 0.1 * F.cross_entropy(extra_head(hidden), (y > 0).long())
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step == 4:
            saved = optimizer.state_dict()
    fresh = AdaBeliefLite([{"params": model[0].parameters(), "centralize": True},
                           {"params": model[3:].parameters()}, {"params": extra_head.parameters()}])
    fresh.register_load_state_dict_pre_hook(before_loading)
    fresh.load_state_dict(saved)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in fresh.param_groups]
    final = optimizer.state_dict()
    return (losses, events, params_of(model), params_of(extra_head), groups,
            {k: v for k, v in final["param_groups"][0].items()}, sorted(final["state"]))


def test_step_and_state_dict_hooks_with_groups_added_and_removed():
    # the pre-hook's gradient norm and the model's forward are float32 reductions
    ours, theirs = run_both(hooks_and_groups_program, rtol=1e-5, atol=1e-6)
    groups = ours[4]
    assert "saved_by" not in groups[0] and groups[2]["betas"] == (0.8, 0.99) and groups[2]["lr"] != 1e-2
    assert ours[5]["saved_by"] == "hook" and ours[6] == [0, 1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------------------------
# SPSA (a zeroth-order optimizer) clipping its estimates with torch.utils._foreach_utils' helpers
# ----------------------------------------------------------------------------------------------


def spsa_program(m, steps=4, n=5):
    torch, F, optim = m.torch, m.F, m.optim
    import importlib
    from typing import Dict, List, Optional, Tuple

    Tensor = torch.Tensor
    Optimizer = optim.Optimizer
    _foreach_utils = importlib.import_module(torch.__name__ + ".utils._foreach_utils")
    _group_tensors_by_device_and_dtype = _foreach_utils._group_tensors_by_device_and_dtype
    _has_foreach_support = _foreach_utils._has_foreach_support
    _device_has_foreach_support = _foreach_utils._device_has_foreach_support
    rademacher = np.random.default_rng(3)

    class SPSA(Optimizer):
        def __init__(self, params, lr: float = 2e-3, perturb: float = 1e-3, alpha: float = 0.602,
                     gamma: float = 0.101, A: float = 5.0, n: int = 200, clip_grad_norm: Optional[float] = 2000):
            self.lr = lr
            self.perturb = perturb
            self.alpha = alpha
            self.gamma = gamma
            self.A = A
            self.n = n
            self.clip_grad_norm = clip_grad_norm
            defaults = dict(lr=lr, perturb=perturb, alpha=alpha, gamma=gamma, A=A)
            super().__init__(params, defaults)
            self.flat_params = [p for group in self.param_groups for p in group["params"]]

        @torch.no_grad()
        def step(self, loss_eval):
            loss = loss_eval
            a = self.lr
            c = self.perturb
            theta_flat = self.flat_params
            dtype = theta_flat[0].dtype
            for k in range(self.n):
                ak = a / (k + 1 + self.A) ** self.alpha
                ck = c / (k + 1) ** self.gamma
                deltas = []
                for theta in theta_flat:
                    d = 2 * torch.from_numpy(rademacher.integers(0, 2, size=tuple(theta.shape))).to(dtype=dtype) - 1
                    deltas.append(d)
                    assert torch.all((d == 1) | (d == -1)), "Deltas must be ±1"
                # thetaplus = theta + ck * delta
                for theta, d in zip(theta_flat, deltas):
                    theta.add_(ck * d)
                yplus = loss()
                # thetaminus = theta - ck * delta
                for theta, d in zip(theta_flat, deltas):
                    theta.add_(-2 * ck * d)
                yminus = loss()
                # restore theta
                for theta, d in zip(theta_flat, deltas):
                    theta.add_(ck * d)
                # gradient estimate
                ghat = [(yplus - yminus) / (2 * ck * d) for d in deltas]
                # clip gradients norms
                if self.clip_grad_norm is not None:
                    self._clip_grad_norm(ghat, self.clip_grad_norm)
                assert all([torch.all(torch.isfinite(g)) for g in ghat]), "Non-finite SPSA diff encountered"
                # theta = theta - ak * ghat
                for theta, g in zip(theta_flat, ghat):
                    theta.add_(-ak * g)
            return loss()

        @torch.no_grad()
        def _clip_grad_norm(self, grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                            foreach: Optional[bool] = None) -> torch.Tensor:
            max_norm = float(max_norm)
            norm_type = float(norm_type)
            if len(grads) == 0:
                return torch.tensor(0.)
            first_device = grads[0].device
            grouped_grads: Dict[Tuple[torch.device, torch.dtype], Tuple[List[List[Tensor]], List[int]]] \
                = _group_tensors_by_device_and_dtype([grads])  # type: ignore[assignment]

            norms: List[Tensor] = []
            for ((device, _), ([device_grads], _)) in grouped_grads.items():  # type: ignore[assignment]
                if (
                        (foreach is None and _has_foreach_support(device_grads, device))
                        or (foreach and _device_has_foreach_support(device))
                ):
                    norms.extend(torch._foreach_norm(device_grads, norm_type))
                elif foreach:
                    raise RuntimeError(
                        f'foreach=True was passed, but can\'t use the foreach API on {device.type} tensors')
                else:
                    norms.extend([torch.linalg.vector_norm(g, norm_type) for g in device_grads])

            total_norm = torch.linalg.vector_norm(torch.stack([norm.to(first_device) for norm in norms]), norm_type)
            clip_coef = max_norm / (total_norm + 1e-6)
            clip_coef_clamped = torch.clamp(clip_coef, max=1.0)
            for ((device, _), ([device_grads], _)) in grouped_grads.items():  # type: ignore[assignment]
                if (
                        (foreach is None and _has_foreach_support(device_grads, device))
                        or (foreach and _device_has_foreach_support(device))
                ):
                    torch._foreach_mul_(device_grads, clip_coef_clamped.to(device))
                else:
                    clip_coef_clamped_device = clip_coef_clamped.to(device)
                    for g in device_grads:
                        g.mul_(clip_coef_clamped_device)
            return total_norm

    model = load(m, net(m), WEIGHTS).double()  # float64: the estimate divides a loss difference by 2 c_k
    optimizer = SPSA(model.parameters(), lr=0.05, perturb=1e-2, n=n, clip_grad_norm=5.0)
    data = batches(m)
    losses = []
    for i in range(steps):
        x, y = data[i % len(data)]
        losses.append(optimizer.step(lambda: F.cross_entropy(model(x.double()), y)).item())
    support = (_has_foreach_support([torch.ones(1), None], torch.device("cpu")),
               _has_foreach_support(list(model.parameters()), torch.device("cpu")))
    return losses, params_of(model), support


def test_spsa_clips_its_estimates_with_pytorchs_foreach_utils():
    ours, theirs = run_both(spsa_program, rtol=1e-9, atol=1e-11)
    assert ours[2] == (True, False)  # a Parameter is no plain Tensor to torch.utils._foreach_utils
