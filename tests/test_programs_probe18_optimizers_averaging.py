# ruff: noqa: B008, B023, F841, UP006, UP035  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer``, run as
tests/probe18_optimizers_common.py says. Averaged weights: schedule-free AdamW (facebookresearch):
``optimizer.train()``/``eval()`` moving between the y and x sequences by ``lerp_``, both its foreach and its
single-tensor paths, BatchNorm statistics recomputed; SWALR and AveragedModel over a custom optimizer, global step
hooks handing its step new keyword arguments; timm's Lookahead (slow weights kept in the base optimizer's state,
state dict round trip mid-run)."""

import copy
from collections import defaultdict

import numpy as np
import pytest

from .probe18_optimizers_common import WEIGHTS, batches, net, params_of
from .pytorch_programs import assert_same, load, run_both

# ----------------------------------------------------------------------------------------------
# Schedule-free AdamW (facebookresearch/schedule_free)
# ----------------------------------------------------------------------------------------------


def schedule_free_program(m, foreach=True, steps=10, resume_at=None):
    torch, F, nn = m.torch, m.F, m.nn

    class AdamWScheduleFree(torch.optim.Optimizer):
        def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0,
                     r=0.0, weight_lr_power=2.0, foreach=hasattr(torch, "_foreach_mul_")):
            defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                            weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                            weight_decay=weight_decay, foreach=foreach)
            super().__init__(params, defaults)

        @torch.no_grad()
        def eval(self):
            for group in self.param_groups:
                train_mode = group['train_mode']
                beta1, _ = group['betas']
                if train_mode:
                    for p in group['params']:
                        state = self.state[p]
                        if 'z' in state:
                            # Set p to x
                            p.lerp_(end=state['z'].to(p.device), weight=1 - 1 / beta1)
                    group['train_mode'] = False

        @torch.no_grad()
        def train(self):
            for group in self.param_groups:
                train_mode = group['train_mode']
                beta1, _ = group['betas']
                if not train_mode:
                    for p in group['params']:
                        state = self.state[p]
                        if 'z' in state:
                            # Set p to y
                            p.lerp_(end=state['z'].to(p.device), weight=1 - beta1)
                    group['train_mode'] = True

        @torch.no_grad()
        def step(self, closure=None):
            if not self.param_groups[0]['train_mode']:
                raise Exception("Optimizer was not in train mode when step is called. "
                                "Please insert .train() and .eval() calls on the "
                                "optimizer. See documentation for details.")

            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                eps = group['eps']
                beta1, beta2 = group['betas']
                decay = group['weight_decay']
                k = group['k']
                r = group['r']
                warmup_steps = group['warmup_steps']
                weight_lr_power = group['weight_lr_power']

                if k < warmup_steps:
                    sched = (k + 1) / warmup_steps
                else:
                    sched = 1.0

                bias_correction2 = 1 - beta2 ** (k + 1)
                lr = group['lr'] * sched
                group['scheduled_lr'] = lr  # For logging purposes

                lr_max = group['lr_max'] = max(lr, group['lr_max'])

                weight = ((k + 1) ** r) * (lr_max ** weight_lr_power)
                weight_sum = group['weight_sum'] = group['weight_sum'] + weight

                try:
                    ckp1 = weight / weight_sum
                except ZeroDivisionError:
                    ckp1 = 0

                active_p = [p for p in group['params'] if p.grad is not None]

                for p in active_p:
                    if 'z' not in self.state[p]:
                        self.state[p]['z'] = torch.clone(p, memory_format=torch.preserve_format)
                        self.state[p]['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)

                if group['foreach'] and len(active_p) > 0:
                    y, grad, exp_avg_sq, z = zip(*[(p, p.grad, self.state[p]['exp_avg_sq'], self.state[p]['z'])
                                                   for p in active_p])

                    # Decay the first and second moment running average coefficient
                    torch._foreach_mul_(exp_avg_sq, beta2)
                    torch._foreach_addcmul_(exp_avg_sq, grad, grad, value=1 - beta2)
                    denom = torch._foreach_div(exp_avg_sq, bias_correction2)
                    torch._foreach_sqrt_(denom)
                    torch._foreach_add_(denom, eps)

                    # Normalize grad in-place for memory efficiency
                    torch._foreach_div_(grad, denom)

                    # Weight decay calculated at y
                    if decay != 0:
                        torch._foreach_add_(grad, y, alpha=decay)

                    # These operations update y in-place,
                    # without computing x explicitly.
                    torch._foreach_lerp_(y, z, weight=ckp1)
                    torch._foreach_add_(y, grad, alpha=lr * (beta1 * (1 - ckp1) - 1))

                    # z step
                    torch._foreach_sub_(z, grad, alpha=lr)
                else:
                    for p in active_p:
                        y = p  # Notation to match theory
                        grad = p.grad

                        state = self.state[p]

                        z = state['z']
                        exp_avg_sq = state['exp_avg_sq']

                        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                        denom = exp_avg_sq.div(bias_correction2).sqrt_().add_(eps)

                        # Reuse grad buffer for memory efficiency
                        grad_normalized = grad.div_(denom)

                        # Weight decay calculated at y
                        if decay != 0:
                            grad_normalized.add_(y, alpha=decay)

                        # These operations update y in-place,
                        # without computing x explicitly.
                        y.lerp_(end=z, weight=ckp1)
                        y.add_(grad_normalized, alpha=lr * (beta1 * (1 - ckp1) - 1))

                        # z step
                        z.sub_(grad_normalized, alpha=lr)

                group['k'] = k + 1
            return loss

    def Net():  # no bias before BatchNorm: its gradient is float32 noise, which Adam's step would follow
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8, bias=False),
                             nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))

    weights = {**{k.replace("5.", "6."): v for k, v in WEIGHTS.items() if k != "3.bias"},
               "4.weight": np.ones(8, np.float32), "4.bias": np.zeros(8, np.float32),
               "4.running_mean": np.zeros(8, np.float32), "4.running_var": np.ones(8, np.float32),
               "4.num_batches_tracked": np.array(0)}

    def build():
        model = load(m, Net(), weights)
        optimizer = AdamWScheduleFree(model.parameters(), lr=5e-3, warmup_steps=4, weight_decay=0.01,
                                      foreach=foreach)
        return model, optimizer

    model, optimizer = build()
    data = batches(m)
    losses, evals = [], []
    for step in range(steps):
        if step == resume_at:
            optimizer.eval()  # the schedule-free README: save the x sequence, as for evaluation
            checkpoint = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
            model, optimizer = build()
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        model.train()
        optimizer.train()
        x, y = data[step % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 3 == 2:
            # BN statistics at x: a few forward passes in train mode with the optimizer in eval
            model.train()
            optimizer.eval()
            with torch.no_grad():
                for xb, _ in data[:3]:
                    model(xb)
            model.eval()
            with torch.no_grad():
                evals.append(sum(F.cross_entropy(model(xb), yb).item() for xb, yb in data))
    optimizer.eval()
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return losses, evals, params_of(model), group, [optimizer.state[p]["z"] for p in model.parameters()]


@pytest.mark.parametrize("foreach", [True, False])
def test_schedule_free_adamw_switches_between_y_and_x(foreach):
    # the elementwise updates are bit-equal, but the model's forward sums in float32 (conv, matmul)
    ours, theirs = run_both(schedule_free_program, foreach=foreach, rtol=1e-5, atol=1e-6)
    group = ours[3]
    assert group["k"] == 10 and group["train_mode"] is False and group["lr_max"] == 5e-3


def test_schedule_free_adamw_resumes_from_x():
    # a checkpoint of the x sequence (optimizer.eval() before saving) continues where it stopped; only
    # the lerp y -> x -> y round trip rounds, so the resumed run agrees to float32 rounding
    straight, _ = run_both(schedule_free_program, rtol=1e-5, atol=1e-6)
    resumed, _ = run_both(schedule_free_program, resume_at=5, rtol=1e-5, atol=1e-6)
    assert_same(resumed, straight, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# timm's Lookahead around AdamW, its slow weights in AdamW's state, saved and resumed mid-run
# ----------------------------------------------------------------------------------------------


def timm_lookahead_program(m, steps=10, resume_at=None):
    torch, F, optim = m.torch, m.F, m.optim
    from collections import OrderedDict
    from typing import Callable, Dict

    from_optimizer = optim.Optimizer

    class Lookahead(from_optimizer):
        def __init__(self, base_optimizer, alpha=0.5, k=6):
            # NOTE super().__init__() not called on purpose
            self._optimizer_step_pre_hooks: Dict[int, Callable] = OrderedDict()
            self._optimizer_step_post_hooks: Dict[int, Callable] = OrderedDict()
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f'Invalid slow update rate: {alpha}')
            if not 1 <= k:
                raise ValueError(f'Invalid lookahead steps: {k}')
            defaults = dict(lookahead_alpha=alpha, lookahead_k=k, lookahead_step=0)
            self._base_optimizer = base_optimizer
            self.param_groups = base_optimizer.param_groups
            self.defaults = base_optimizer.defaults
            self.defaults.update(defaults)
            self.state = defaultdict(dict)
            # manually add our defaults to the param groups
            for name, default in defaults.items():
                for group in self._base_optimizer.param_groups:
                    group.setdefault(name, default)

        @torch.no_grad()
        def update_slow(self, group):
            for fast_p in group["params"]:
                if fast_p.grad is None:
                    continue
                param_state = self._base_optimizer.state[fast_p]
                if 'lookahead_slow_buff' not in param_state:
                    param_state['lookahead_slow_buff'] = torch.empty_like(fast_p)
                    param_state['lookahead_slow_buff'].copy_(fast_p)
                slow = param_state['lookahead_slow_buff']
                slow.add_(fast_p - slow, alpha=group['lookahead_alpha'])
                fast_p.copy_(slow)

        def sync_lookahead(self):
            for group in self._base_optimizer.param_groups:
                self.update_slow(group)

        @torch.no_grad()
        def step(self, closure=None):
            loss = self._base_optimizer.step(closure)
            for group in self._base_optimizer.param_groups:
                group['lookahead_step'] += 1
                if group['lookahead_step'] % group['lookahead_k'] == 0:
                    self.update_slow(group)
            return loss

        def state_dict(self):
            return self._base_optimizer.state_dict()

        def load_state_dict(self, state_dict):
            self._base_optimizer.load_state_dict(state_dict)
            self.param_groups = self._base_optimizer.param_groups

    def build():
        model = load(m, net(m), WEIGHTS)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        base = optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=5e-3)
        optimizer = Lookahead(base, alpha=0.5, k=3)
        scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
        return model, optimizer, scheduler

    model, optimizer, scheduler = build()
    data = batches(m)
    losses, lrs = [], []
    for step in range(steps):
        if step == resume_at:
            saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict()})
            model, optimizer, scheduler = build()
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        x, y = data[step % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    optimizer.sync_lookahead()
    sd = optimizer.state_dict()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return losses, lrs, params_of(model), sd["state"][0], groups


def test_timms_lookahead_keeps_its_slow_weights_in_adamws_state():
    ours, theirs = run_both(timm_lookahead_program, rtol=1e-5, atol=1e-6)
    state, groups = ours[3], ours[4]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "lookahead_slow_buff"}
    assert groups[0]["lookahead_step"] == 10 and groups[0]["lookahead_k"] == 3


def test_timms_lookahead_resumes_from_its_base_optimizers_state_dict():
    straight, _ = run_both(timm_lookahead_program, rtol=1e-5, atol=1e-6)
    resumed, _ = run_both(timm_lookahead_program, resume_at=4, rtol=1e-5, atol=1e-6)
    assert_same(resumed, straight, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Global step hooks replacing a step's arguments, SWALR and AveragedModel over a custom optimizer
# ----------------------------------------------------------------------------------------------


def swa_over_custom_optimizer_program(m, steps=10, swa_start=5):
    torch, F, optim, nn = m.torch, m.F, m.optim, m.nn
    import importlib

    optimizer_module = importlib.import_module(optim.__name__ + ".optimizer")  # from torch.optim.optimizer import
    register_optimizer_step_pre_hook = optimizer_module.register_optimizer_step_pre_hook
    register_optimizer_step_post_hook = optimizer_module.register_optimizer_step_post_hook

    class SGDW(optim.Optimizer):
        """SGD with decoupled weight decay and a closure that it calls under enable_grad."""

        def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0):
            super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None, scale=1.0):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = p.grad.detach().clone()
                    else:
                        buf.mul_(group["momentum"]).add_(p.grad)
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(buf, alpha=-group["lr"] * scale)
            return loss

    model = load(m, net(m), WEIGHTS)
    swa_model = optim.swa_utils.AveragedModel(model)
    optimizer = SGDW(model.parameters(), lr=0.05, weight_decay=1e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    swa_scheduler = optim.swa_utils.SWALR(optimizer, swa_lr=0.02, anneal_epochs=3, anneal_strategy="linear")

    calls = []

    def halve_after_start(optimizer, args, kwargs):
        # a global pre-hook may hand the step new arguments: (args, kwargs), args without the optimizer
        if getattr(optimizer, "in_swa", False):
            return args, {**kwargs, "scale": 0.5}
        return None

    def count(optimizer, args, kwargs):
        calls.append((type(optimizer).__name__, sorted(kwargs)))

    handles = [register_optimizer_step_pre_hook(halve_after_start), register_optimizer_step_post_hook(count)]
    try:
        data = batches(m)
        losses, lrs = [], []
        for epoch in range(steps):
            x, y = data[epoch % len(data)]

            def closure():
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            losses.append(optimizer.step(closure).item())
            if epoch >= swa_start:
                optimizer.in_swa = True
                swa_model.update_parameters(model)
                swa_scheduler.step()
            else:
                scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    finally:
        for handle in handles:
            handle.remove()
    return losses, lrs, params_of(swa_model.module), swa_model.n_averaged, calls[:2] + calls[-1:], \
        optimizer.param_groups[0]["swa_lr"]


def test_swalr_and_global_step_hooks_over_a_custom_optimizer():
    ours, theirs = run_both(swa_over_custom_optimizer_program, rtol=1e-5, atol=1e-6)
    assert ours[3] == 5 and ours[4][-1] == ("SGDW", ["scale"]) and ours[5] == 0.02
