# ruff: noqa: B007, B023, F841  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer``, run as
tests/probe18_optimizers_common.py says. Update rules beyond Adam: ASAM (SamsungLabs' wrapper: ``eps`` kept in its
own ``defaultdict`` state, written by ``t_w[...] = p[...]``, the norm of ``torch.stack`` of per-tensor norms,
ascent/descent steps around SGD); Lion as lucidrains' foreach version writes it (``_foreach_mul_``,
``_foreach_lerp_``, ``_foreach_sign_``, ``_foreach_add_`` with alpha), under a OneCycleLR that cycles its ``betas``
(a custom optimizer's key); Keller Jordan's Muon with an auxiliary Adam (``use_muon`` groups, Newton-Schulz
orthogonalisation on a custom optimizer; in float32, where the author casts to bfloat16, which chainrule does not
build); a foreach LAMB with ``_foreach_norm``/``_foreach_maximum_`` and per-tensor trust ratios, and AdamW subclassed
to centralise gradients before ``super().step()``."""

import math
from collections import defaultdict

import numpy as np
import pytest

from .probe18_optimizers_common import WEIGHTS, batches, net, params_of
from .pytorch_programs import load, run_both

# ----------------------------------------------------------------------------------------------
# ASAM (SamsungLabs/ASAM)
# ----------------------------------------------------------------------------------------------


def asam_program(m, adaptive=True):
    torch, F, optim = m.torch, m.F, m.optim

    class SAM:
        def __init__(self, optimizer, model, rho=0.5, eta=0.01):
            self.optimizer = optimizer
            self.model = model
            self.rho = rho
            self.eta = eta
            self.state = defaultdict(dict)

        @torch.no_grad()
        def ascent_step(self):
            grads = []
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                grads.append(torch.norm(p.grad, p=2))
            grad_norm = torch.norm(torch.stack(grads), p=2) + 1.e-16
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                eps = self.state[p].get("eps")
                if eps is None:
                    eps = torch.clone(p).detach()
                    self.state[p]["eps"] = eps
                eps[...] = p.grad[...]
                eps.mul_(self.rho / grad_norm)
                p.add_(eps)
            self.optimizer.zero_grad()

        @torch.no_grad()
        def descent_step(self):
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                p.sub_(self.state[p]["eps"])
            self.optimizer.step()
            self.optimizer.zero_grad()

    class ASAM(SAM):
        @torch.no_grad()
        def ascent_step(self):
            wgrads = []
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                t_w = self.state[p].get("eps")
                if t_w is None:
                    t_w = torch.clone(p).detach()
                    self.state[p]["eps"] = t_w
                if 'weight' in n:
                    t_w[...] = p[...]
                    t_w.abs_().add_(self.eta)
                    p.grad.mul_(t_w)
                wgrads.append(torch.norm(p.grad, p=2))
            wgrad_norm = torch.norm(torch.stack(wgrads), p=2) + 1.e-16
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                t_w = self.state[p].get("eps")
                if 'weight' in n:
                    p.grad.mul_(t_w)
                eps = t_w
                eps[...] = p.grad[...]
                eps.mul_(self.rho / wgrad_norm)
                p.add_(eps)
            self.optimizer.zero_grad()

    model = load(m, net(m), WEIGHTS)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    minimizer = (ASAM if adaptive else SAM)(optimizer, model, rho=0.5 if adaptive else 0.05, eta=0.01)
    losses = []
    for epoch in range(2):
        for inputs, targets in batches(m):
            # Ascent Step
            predictions = model(inputs)
            batch_loss = F.cross_entropy(predictions, targets)
            batch_loss.mean().backward()
            minimizer.ascent_step()
            # Descent Step
            F.cross_entropy(model(inputs), targets).mean().backward()
            minimizer.descent_step()
            losses.append(batch_loss.item())
    eps = [minimizer.state[p]["eps"] for p in model.parameters()]
    return losses, params_of(model), eps


@pytest.mark.parametrize("adaptive", [True, False])
def test_asam_and_sam_as_samsunglabs_writes_them(adaptive):
    # norms (reductions) enter every step: float32 summation order differs, so not bit-equal
    ours, theirs = run_both(asam_program, adaptive=adaptive, rtol=1e-4, atol=1e-5)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# Lion, lucidrains' foreach version, under OneCycleLR cycling its betas
# ----------------------------------------------------------------------------------------------


def lion_foreach_program(m, steps=12):
    torch, F, optim = m.torch, m.F, m.optim

    def exists(val):
        return val is not None

    class Lion(optim.Optimizer):
        def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, decoupled_weight_decay=False):
            assert lr > 0.
            assert all([0. <= beta <= 1. for beta in betas])
            assert all([hasattr(torch, f'_foreach_{attr}_') for attr in ('mul', 'add', 'sign', 'lerp')]), \
                'this version of torch does not have the prerequisite foreach functions'
            self._init_lr = lr
            self.decoupled_wd = decoupled_weight_decay
            defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if exists(closure):
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                lr, wd, beta1, beta2, decoupled_wd, init_lr = group['lr'], group['weight_decay'], *group['betas'], \
                    self.decoupled_wd, self._init_lr
                # maybe decoupled weight decay
                if decoupled_wd:
                    wd /= init_lr
                # accumulate List[Tensor] for foreach inplace updates
                params = []
                grads = []
                exp_avgs = []
                for p in filter(lambda p: exists(p.grad), group['params']):
                    grad, state = p.grad, self.state[p]
                    # init state - exponential moving average of gradient values
                    if len(state) == 0:
                        state['exp_avg'] = torch.zeros_like(p)
                    exp_avg = state['exp_avg']
                    params.append(p)
                    grads.append(grad)
                    exp_avgs.append(exp_avg)
                # stepweight decay
                torch._foreach_mul_(params, 1. - lr * wd)
                # weight update
                updates = [t.clone() for t in exp_avgs]
                torch._foreach_lerp_(updates, grads, 1. - beta1)
                torch._foreach_sign_(updates)
                torch._foreach_add_(params, updates, alpha=-lr)
                # decay momentum running average
                torch._foreach_lerp_(exp_avgs, grads, 1. - beta2)
            return loss

    model = load(m, net(m), WEIGHTS)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = Lion([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, weight_decay=1.0,
                     decoupled_weight_decay=True)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.3,
                                              base_momentum=0.85, max_momentum=0.95)
    losses, lrs, betas = [], [], []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
        betas.append(optimizer.param_groups[1]["betas"])
    exp_avgs = [optimizer.state[p]["exp_avg"] for p in model.parameters()]
    return losses, lrs, betas, params_of(model), exp_avgs


def test_lion_foreach_under_one_cycle_cycling_its_betas():
    # the update is elementwise (sign of a lerp, then lerp), the model's forward sums in float32
    ours, theirs = run_both(lion_foreach_program, rtol=1e-5, atol=1e-6)
    betas = ours[2]
    assert betas[0][0] != betas[3][0] and betas[0][1] == 0.99  # beta1 cycled, beta2 left


# ----------------------------------------------------------------------------------------------
# Muon with an auxiliary Adam (KellerJordan/Muon's SingleDeviceMuonWithAuxAdam)
# ----------------------------------------------------------------------------------------------


def muon_program(m, steps=8):
    torch, F, optim = m.torch, m.F, m.optim

    def zeropower_via_newtonschulz5(G, steps: int):
        """Newton-Schulz iteration to compute the zeroth power / orthogonalization of G. (The author runs it in
        bfloat16, which chainrule does not build: float32 here, as the float32 ports of it do.)"""
        assert G.ndim >= 2  # batched Muon implementation by @scottjmaddox
        a, b, c = (3.4445, -4.7750, 2.0315)
        X = G.float()
        if G.size(-2) > G.size(-1):
            X = X.mT

        # Ensure spectral norm is at most 1
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        # Perform the NS iterations
        for _ in range(steps):
            A = X @ X.mT
            B = b * A + c * A @ A  # quintic computation strategy
            X = a * X + B @ X

        if G.size(-2) > G.size(-1):
            X = X.mT
        return X

    def muon_update(grad, momentum, beta=0.95, ns_steps=5, nesterov=True):
        momentum.lerp_(grad, 1 - beta)
        update = grad.lerp_(momentum, beta) if nesterov else momentum
        if update.ndim == 4:  # for the case of conv filters
            update = update.view(len(update), -1)
        update = zeropower_via_newtonschulz5(update, steps=ns_steps)
        update *= max(1, grad.size(-2) / grad.size(-1))**0.5
        return update

    def adam_update(grad, buf1, buf2, step, betas, eps):
        buf1.lerp_(grad, 1 - betas[0])
        buf2.lerp_(grad.square(), 1 - betas[1])
        buf1c = buf1 / (1 - betas[0]**step)
        buf2c = buf2 / (1 - betas[1]**step)
        return buf1c / (buf2c.sqrt() + eps)

    class SingleDeviceMuonWithAuxAdam(torch.optim.Optimizer):
        """
        Non-distributed variant of MuonWithAuxAdam.
        """
        def __init__(self, param_groups):
            for group in param_groups:
                assert "use_muon" in group
                if group["use_muon"]:
                    # defaults
                    group["lr"] = group.get("lr", 0.02)
                    group["momentum"] = group.get("momentum", 0.95)
                    group["weight_decay"] = group.get("weight_decay", 0)
                    assert set(group.keys()) == set(["params", "lr", "momentum", "weight_decay", "use_muon"])
                else:
                    # defaults
                    group["lr"] = group.get("lr", 3e-4)
                    group["betas"] = group.get("betas", (0.9, 0.95))
                    group["eps"] = group.get("eps", 1e-10)
                    group["weight_decay"] = group.get("weight_decay", 0)
                    assert set(group.keys()) == set(["params", "lr", "betas", "eps", "weight_decay", "use_muon"])
            super().__init__(param_groups, dict())

        @torch.no_grad()
        def step(self, closure=None):

            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                if group["use_muon"]:
                    for p in group["params"]:
                        if p.grad is None:
                            # continue
                            p.grad = torch.zeros_like(p)  # Force synchronization
                        state = self.state[p]
                        if len(state) == 0:
                            state["momentum_buffer"] = torch.zeros_like(p)
                        update = muon_update(p.grad, state["momentum_buffer"], beta=group["momentum"])
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                        p.add_(update.reshape(p.shape), alpha=-group["lr"])
                else:
                    for p in group["params"]:
                        if p.grad is None:
                            # continue
                            p.grad = torch.zeros_like(p)  # Force synchronization
                        state = self.state[p]
                        if len(state) == 0:
                            state["exp_avg"] = torch.zeros_like(p)
                            state["exp_avg_sq"] = torch.zeros_like(p)
                            state["step"] = 0
                        state["step"] += 1
                        update = adam_update(p.grad, state["exp_avg"], state["exp_avg_sq"],
                                             state["step"], group["betas"], group["eps"])
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                        p.add_(update, alpha=-group["lr"])

            return loss

    model = load(m, net(m), WEIGHTS)
    hidden_weights = [p for p in model[:4].parameters() if p.ndim >= 2]
    hidden_gains_biases = [p for p in model[:4].parameters() if p.ndim < 2]
    nonhidden_params = [*model[5].parameters()]
    param_groups = [
        dict(params=hidden_weights, use_muon=True, lr=0.02, weight_decay=0.01),
        dict(params=hidden_gains_biases + nonhidden_params, use_muon=False, lr=3e-3, betas=(0.9, 0.95),
             weight_decay=0.01),
    ]
    optimizer = SingleDeviceMuonWithAuxAdam(param_groups)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    buffers = [optimizer.state[p]["momentum_buffer"] for p in hidden_weights]
    return losses, params_of(model), buffers


def test_muon_with_an_auxiliary_adam():
    # Newton-Schulz is five rounds of float32 matmuls on a norm-scaled matrix: summation order differs
    ours, theirs = run_both(muon_program, rtol=1e-4, atol=1e-5)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# A foreach LAMB with an AMSGrad maximum, and Adam with gradient centralisation
# ----------------------------------------------------------------------------------------------


def foreach_lamb_program(m, steps=8, gradient_centralization=True):
    torch, F, optim = m.torch, m.F, m.optim

    class Lamb(optim.Optimizer):
        """LAMB (You et al.) over lists of tensors, with AMSGrad's running maximum and an optional gradient
        centralisation of every weight of two or more dimensions."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_trust=10.0,
                     amsgrad=True, gc=False):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust=max_trust,
                            amsgrad=amsgrad, gc=gc)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                grads = [p.grad for p in params]
                if group["gc"]:
                    for g in grads:
                        if g.dim() > 1:
                            g.add_(-g.mean(dim=tuple(range(1, len(list(g.size())))), keepdim=True))
                for p in params:
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                states = [self.state[p] for p in params]
                exp_avgs = [s["exp_avg"] for s in states]
                exp_avg_sqs = [s["exp_avg_sq"] for s in states]
                max_exp_avg_sqs = [s["max_exp_avg_sq"] for s in states]
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                beta1, beta2 = group["betas"]
                step = steps[0].item()

                torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
                if group["amsgrad"]:
                    torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
                    second = max_exp_avg_sqs
                else:
                    second = exp_avg_sqs
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                denom = torch._foreach_sqrt(second)
                torch._foreach_div_(denom, math.sqrt(bias_correction2))
                torch._foreach_add_(denom, group["eps"])
                updates = torch._foreach_div(exp_avgs, denom)
                torch._foreach_div_(updates, bias_correction1)
                if group["weight_decay"] != 0:
                    torch._foreach_add_(updates, params, alpha=group["weight_decay"])

                w_norms = torch._foreach_norm(params)
                u_norms = torch._foreach_norm(updates)
                trust_ratios = [torch.where((w > 0) & (u > 0), (w / u).clamp(max=group["max_trust"]),
                                            torch.ones_like(w)) for w, u in zip(w_norms, u_norms)]
                torch._foreach_mul_(updates, trust_ratios)
                torch._foreach_add_(params, updates, alpha=-group["lr"])
                for p, ratio in zip(params, trust_ratios):
                    self.state[p]["trust_ratio"] = ratio
            return loss

    model = load(m, net(m), WEIGHTS)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = Lamb([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.02,
                     gc=gradient_centralization)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    states = [dict(optimizer.state[p]) for p in model.parameters()]
    return losses, params_of(model), states


@pytest.mark.parametrize("gradient_centralization", [True, False])
def test_a_foreach_lamb_with_amsgrads_maximum(gradient_centralization):
    # the trust ratios are ratios of float32 norms
    ours, theirs = run_both(foreach_lamb_program, gradient_centralization=gradient_centralization,
                            rtol=1e-4, atol=1e-6)
    assert ours[2][0]["trust_ratio"].shape == () and ours[2][0]["step"] == 8


def adam_gc_program(m, steps=8):
    torch, F, optim = m.torch, m.F, m.optim

    class AdamWGC(optim.AdamW):
        """AdamW on centralised gradients (Yong et al., "Gradient Centralization")."""

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if len(list(grad.size())) > 1:
                        grad.add_(-grad.mean(dim=tuple(range(1, len(list(grad.size())))), keepdim=True))
            super().step()
            return loss

    model = load(m, net(m), WEIGHTS)
    optimizer = AdamWGC(model.parameters(), lr=3e-3, weight_decay=1e-2)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    conv = model[0].weight
    return losses, params_of(model), optimizer.state[conv]["exp_avg"].sum(dim=(1, 2, 3))


def test_adam_on_centralised_gradients():
    # the centring mean is a float32 reduction
    ours, theirs = run_both(adam_gc_program, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours[2], 0, atol=1e-7)  # every filter's first moment is centred (decay decoupled)
