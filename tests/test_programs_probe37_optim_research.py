# ruff: noqa: B007, B023, E501, E701, E702, F841, UP008  (the programs are kept as their authors would write them)
"""Optimiser research code as its repositories write it, run on chainrule and (where installed) PyTorch: davda54's SAM
(perturb, second forward, restore; an Optimizer wrapping a base optimizer's param_groups; ASAM and timm's Lookahead
are test_programs_probe18_optimizers_*'s), the LARS of the self-supervised repositories and pytorch-lamb's LAMB (Optimizer subclasses with their own state),
adaptive gradient clipping with gradient centralisation, an EMA of the weights with torch._foreach_*, the
optimizer's hooks (step pre/post, state_dict and load_state_dict), torch.optim.swa_utils (AveragedModel, an EMA
multi_avg_fn, SWALR, update_bn), GradScaler on the CPU skipping a step on inf, and the GPT recipe of decay and
no-decay groups from named_parameters with a LambdaLR per group. Without PyTorch each test checks the first loss
against NumPy's forward pass and what the update rule guarantees."""

import copy

import numpy as np
import pytest

from .probe37_common import F32, arrays, batch, mlp, numpy_mlp_loss
from .pytorch_programs import OURS, run_both


def first_loss_by_hand(seed=0):
    x, y = batch(OURS)
    return numpy_mlp_loss(arrays(mlp(OURS, seed)), x.numpy().astype(np.float64), y.numpy())


# ---------------------------------------------------------------- davda54/sam: sam.py and its training loop
def sam(m, adaptive):
    torch, F = m.torch, m.F

    class SAM(torch.optim.Optimizer):
        def __init__(self, params, base_optimizer, rho=0.05, adaptive=False, **kwargs):
            assert rho >= 0.0, f"Invalid rho, should be non-negative: {rho}"
            defaults = dict(rho=rho, adaptive=adaptive, **kwargs)
            super(SAM, self).__init__(params, defaults)
            self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
            self.param_groups = self.base_optimizer.param_groups
            self.defaults.update(self.base_optimizer.defaults)

        @torch.no_grad()
        def first_step(self, zero_grad=False):
            grad_norm = self._grad_norm()
            for group in self.param_groups:
                scale = group["rho"] / (grad_norm + 1e-12)
                for p in group["params"]:
                    if p.grad is None: continue
                    self.state[p]["old_p"] = p.data.clone()
                    e_w = (torch.pow(p, 2) if group["adaptive"] else 1.0) * p.grad * scale.to(p)
                    p.add_(e_w)
            if zero_grad: self.zero_grad()

        @torch.no_grad()
        def second_step(self, zero_grad=False):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None: continue
                    p.data = self.state[p]["old_p"]
            self.base_optimizer.step()
            if zero_grad: self.zero_grad()

        @torch.no_grad()
        def step(self, closure=None):
            assert closure is not None, "Sharpness Aware Minimization requires closure, but it was not provided"
            closure = torch.enable_grad()(closure)
            self.first_step(zero_grad=True)
            closure()
            self.second_step()

        def _grad_norm(self):
            shared_device = self.param_groups[0]["params"][0].device
            norm = torch.norm(torch.stack([
                ((torch.abs(p) if group["adaptive"] else 1.0) * p.grad).norm(p=2).to(shared_device)
                for group in self.param_groups for p in group["params"] if p.grad is not None]), p=2)
            return norm

        def load_state_dict(self, state_dict):
            super().load_state_dict(state_dict)
            self.base_optimizer.param_groups = self.param_groups

    model = mlp(m); x, y = batch(m)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=2.0 if adaptive else 0.05, adaptive=adaptive, lr=0.1,
                    momentum=0.9)
    losses = []
    for i in range(3):
        def closure():
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            loss.backward()
            return loss
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        optimizer.step(closure)
        optimizer.zero_grad()
        losses.append(loss.item())
    sd = optimizer.state_dict()
    resumed = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    resumed.load_state_dict(sd)
    return (losses, sorted(sd["param_groups"][0]), resumed.base_optimizer.param_groups[0]["rho"],
            sorted(sd["state"][0]), [p.detach() for p in model.parameters()])


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam(adaptive):
    losses, group_keys, rho, state_keys, params = run_both(sam, adaptive, **F32)[0]
    assert losses[0] != pytest.approx(first_loss_by_hand())  # (label smoothing: not the plain cross-entropy)
    assert group_keys == ["adaptive", "dampening", "differentiable", "foreach", "fused", "lr", "maximize",
                          "momentum", "nesterov", "params", "rho", "weight_decay"]
    assert rho == (2.0 if adaptive else 0.05) and state_keys == ["old_p"]  # (SAM's own state; the momentum is the base optimizer's)
    assert losses[2] < losses[0]


# ---------------------------------------------------------------- LARS (DINO / Barlow Twins) and pytorch-lamb
def lars(m):
    torch, F = m.torch, m.F

    class LARS(torch.optim.Optimizer):
        def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, eta=0.001,
                     weight_decay_filter=None, lars_adaptation_filter=None):
            defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta,
                            weight_decay_filter=weight_decay_filter, lars_adaptation_filter=lars_adaptation_filter)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self):
            for g in self.param_groups:
                for p in g['params']:
                    dp = p.grad
                    if dp is None:
                        continue
                    if p.ndim != 1:
                        dp = dp.add(p, alpha=g['weight_decay'])
                    if p.ndim != 1:
                        param_norm = torch.norm(p)
                        update_norm = torch.norm(dp)
                        one = torch.ones_like(param_norm)
                        q = torch.where(param_norm > 0.,
                                        torch.where(update_norm > 0, (g['eta'] * param_norm / update_norm), one), one)
                        dp = dp.mul(q)
                    param_state = self.state[p]
                    if 'mu' not in param_state:
                        param_state['mu'] = torch.zeros_like(p)
                    mu = param_state['mu']
                    mu.mul_(g['momentum']).add_(dp)
                    p.add_(mu, alpha=-g['lr'])

    model = mlp(m); x, y = batch(m)
    w0 = model[0].weight.detach().clone()
    optimizer = LARS(model.parameters(), lr=0.5, weight_decay=1e-4)
    losses = []
    for i in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if i == 0:
            g0 = model[0].weight.grad.detach().clone()
        optimizer.step()
        if i == 0:
            first_update = model[0].weight.detach() - w0
        losses.append(loss.item())
    sd = optimizer.state_dict()
    return losses, first_update, w0, g0, sd["param_groups"][0]["eta"], sorted(sd["state"][0])


def test_lars():
    losses, update, w0, g0, eta, state_keys = run_both(lars, **F32)[0]
    d = g0.astype(np.float64) + 1e-4 * w0  # the first step by hand: -lr * eta * |w| / |d| * d
    expected = -0.5 * 0.001 * np.linalg.norm(w0) / np.linalg.norm(d) * d
    np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-8)
    assert losses[0] == pytest.approx(first_loss_by_hand(), rel=1e-5) and eta == 0.001 and state_keys == ["mu"]


def lamb(m):
    torch, F = m.torch, m.F

    class Lamb(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0, adam=False):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            self.adam = adam
            super(Lamb, self).__init__(params, defaults)

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    state = self.state[p]
                    if len(state) == 0:
                        state['step'] = 0
                        state['exp_avg'] = torch.zeros_like(p.data)
                        state['exp_avg_sq'] = torch.zeros_like(p.data)
                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    beta1, beta2 = group['betas']
                    state['step'] += 1
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    step_size = group['lr']
                    weight_norm = p.data.pow(2).sum().sqrt().clamp(0, 10)
                    adam_step = exp_avg / exp_avg_sq.sqrt().add(group['eps'])
                    if group['weight_decay'] != 0:
                        adam_step.add_(p.data, alpha=group['weight_decay'])
                    adam_norm = adam_step.pow(2).sum().sqrt()
                    if weight_norm == 0 or adam_norm == 0:
                        trust_ratio = 1
                    else:
                        trust_ratio = weight_norm / adam_norm
                    state['weight_norm'] = weight_norm
                    state['adam_norm'] = adam_norm
                    state['trust_ratio'] = trust_ratio
                    if self.adam:
                        trust_ratio = 1
                    p.data.add_(adam_step, alpha=-step_size * trust_ratio)
            return loss

    model = mlp(m); x, y = batch(m)
    optimizer = Lamb(model.parameters(), lr=0.02, weight_decay=0.01)
    losses = []
    for i in range(3):
        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        losses.append(optimizer.step(closure).item())
    state = optimizer.state[model[0].weight]
    return losses, [p.detach() for p in model.parameters()], state["trust_ratio"], state["weight_norm"], state["adam_norm"]


def test_lamb():
    losses, params, ratio, weight_norm, adam_norm = run_both(lamb, **F32)[0]
    assert losses[0] == pytest.approx(first_loss_by_hand(), rel=1e-5) and losses[2] < losses[0]
    assert ratio == pytest.approx(weight_norm / adam_norm) and weight_norm == pytest.approx(np.linalg.norm(params[0]), rel=1e-2)


# ---------------------------------------------------------------- timm's agc.py with gradient centralisation
def agc_gc(m):
    torch, nn, F = m.torch, m.nn, m.F

    def unitwise_norm(x, norm_type=2.0):
        if x.ndim <= 1:
            return x.norm(norm_type)
        else:
            return x.norm(norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)

    def adaptive_clip_grad(parameters, clip_factor=0.01, eps=1e-3, norm_type=2.0):
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        for p in parameters:
            if p.grad is None:
                continue
            p_data = p.detach()
            g_data = p.grad.detach()
            max_norm = unitwise_norm(p_data, norm_type=norm_type).clamp_(min=eps).mul_(clip_factor)
            grad_norm = unitwise_norm(g_data, norm_type=norm_type)
            clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
            new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
            p.grad.detach().copy_(new_grads)

    def centralized_gradient(x, use_gc=True, gc_conv_only=False):
        if use_gc:
            if gc_conv_only:
                if len(list(x.size())) > 3:
                    x.add_(-x.mean(dim=tuple(range(1, len(list(x.size())))), keepdim=True))
            else:
                if len(list(x.size())) > 1:
                    x.add_(-x.mean(dim=tuple(range(1, len(list(x.size())))), keepdim=True))
        return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(4, 2, 4, 4); y = torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    losses, grads = [], []
    for i in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        adaptive_clip_grad(model.parameters(), 0.02)
        for p in model.parameters():
            centralized_gradient(p.grad, gc_conv_only=False)
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        losses.append(loss.item())
    return losses, grads, [p.detach() for p in model.parameters()]


def test_agc_with_gradient_centralisation():
    losses, grads, params = run_both(agc_gc, **F32)[0]
    for g in grads:  # centralised: every output unit's gradient sums to zero over its fan-in
        assert abs(g[0].reshape(4, -1).sum(1)).max() < 1e-6 and abs(g[2].sum(1)).max() < 1e-6
    assert losses[2] < losses[0]


# ---------------------------------------------------------------- an EMA of the weights with torch._foreach_*
def ema_foreach(m):
    torch, F = m.torch, m.F
    model = mlp(m); x, y = batch(m)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        with torch.no_grad():
            ema_params = list(ema.parameters())
            model_params = list(model.parameters())
            torch._foreach_mul_(ema_params, 0.9)
            torch._foreach_add_(ema_params, model_params, alpha=0.1)
            torch._foreach_lerp_(ema_params, model_params, 0.5)
            norms = torch._foreach_norm(ema_params)
            torch._foreach_addcmul_(ema_params, model_params, model_params, value=0.01)
            diffs = torch._foreach_sub(ema_params, model_params)
            torch._foreach_maximum_(diffs, 0.0)
            torch._foreach_clamp_max_(diffs, 1.0)
            roots = torch._foreach_sqrt(torch._foreach_abs(diffs))
            torch._foreach_addcdiv_(ema_params, roots, torch._foreach_add(roots, 1.0), value=-0.01)
    return list(ema.parameters()), norms, list(model.parameters())


def test_ema_with_foreach():
    ema, norms, params = run_both(ema_foreach, **F32)[0]
    for e, p in zip(ema, params):
        assert abs(e - p).max() < 0.05


# ---------------------------------------------------------------- the optimizer's hooks
def optimizer_hooks(m):
    torch, F = m.torch, m.F
    model = mlp(m); x, y = batch(m)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    seen = []
    pre = optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(("pre", len(args), sorted(kwargs))))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(("post", type(opt).__name__)))
    for i in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    pre.remove()
    optimizer.step()
    optimizer.register_state_dict_pre_hook(lambda opt: seen.append("state_dict pre"))

    def add_version(opt, state_dict):
        state_dict["version"] = 2
        return state_dict

    optimizer.register_state_dict_post_hook(add_version)
    sd = optimizer.state_dict()
    optimizer.register_load_state_dict_pre_hook(lambda opt, state_dict: seen.append(("load pre", sorted(state_dict))))
    optimizer.register_load_state_dict_post_hook(lambda opt: seen.append("load post"))
    optimizer.load_state_dict(sd)
    return seen, sorted(sd), sd["state"][0]["step"]


def test_optimizer_hooks():
    seen, keys, step = run_both(optimizer_hooks)[0]
    assert seen == [("pre", 1, []), ("post", "Adam"), ("pre", 1, []), ("post", "Adam"), ("post", "Adam"),
                    "state_dict pre", ("load pre", ["param_groups", "state", "version"]), "load post"]
    assert keys == ["param_groups", "state", "version"] and step == 3.0


# ---------------------------------------------------------------- torch.optim.swa_utils as its tutorial uses it
def swa(m):
    torch, nn, F = m.torch, m.nn, m.F
    swa_utils = torch.optim.swa_utils
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = batch(m)
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    swa_model = swa_utils.AveragedModel(model)
    ema_model = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    swa_scheduler = swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=2, anneal_strategy='cos')
    lrs = []
    for epoch in range(5):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            ema_model.update_parameters(model)
        if epoch >= 2:
            swa_model.update_parameters(model)
            swa_scheduler.step()
        else:
            scheduler.step()
        lrs.append(optimizer.param_groups[0]['lr'])
    swa_utils.update_bn(loader, swa_model)
    swa_model.eval()
    return (lrs, swa_model(x), ema_model.module[1].running_mean, swa_model.n_averaged,
            sorted(swa_model.state_dict()), swa_model.module[1].running_mean)


def test_swa_utils():
    lrs, out, ema_mean, n, keys, swa_mean = run_both(swa, **F32)[0]
    assert n == 3 and keys[0] == "module.0.weight" and keys[-1] == "n_averaged" and out.shape == (16, 3)
    assert lrs[-1] == pytest.approx(0.05) and lrs[0] == pytest.approx(0.1 * (1 + np.cos(np.pi / 4)) / 2)


# ---------------------------------------------------------------- GradScaler on the CPU, a step skipped on inf
def grad_scaler(m):
    torch, F = m.torch, m.F
    model = mlp(m); x, y = batch(m)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10, growth_interval=2)
    log = []
    for i in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if i == 1:
            model[0].weight.grad[0, 0] = float('inf')
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) if hasattr(torch, "nn") else \
            m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        log.append((loss.item(), scaler.get_scale(), norm.item()))
    return log, scaler.state_dict(), [p.detach() for p in model.parameters()]


def test_grad_scaler_on_cpu():
    log, state, params = run_both(grad_scaler, **F32)[0]
    assert [scale for _, scale, _ in log] == [1024.0, 512.0, 512.0, 1024.0] and log[1][2] == np.inf
    assert log[1][0] == log[2][0] and state["scale"] == 1024.0 and state["_growth_tracker"] == 0


# ---------------------------------------------------------------- nanoGPT's groups from named_parameters
def decay_groups(m):
    torch, F = m.torch, m.F
    model = mlp(m); x, y = batch(m)
    param_dict = {pn: p for pn, p in model.named_parameters() if p.requires_grad}
    decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
    optim_groups = [{'params': decay_params, 'weight_decay': 0.1}, {'params': nodecay_params, 'weight_decay': 0.0}]
    num_decay_params = sum(p.numel() for p in decay_params)
    optimizer = torch.optim.AdamW(optim_groups, lr=1e-2, betas=(0.9, 0.95), fused=None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s: min(1.0, (s + 1) / 3), lambda s: 0.5 ** s])
    log = []
    for i in range(4):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        log.append((loss.item(), scheduler.get_last_lr()))
    named = torch.optim.AdamW(model.named_parameters(), lr=1e-3)
    named.zero_grad()
    F.cross_entropy(model(x), y).backward()
    named.step()
    sd = scheduler.state_dict()
    return (log, num_decay_params, sd["lr_lambdas"], sd["base_lrs"], [p.detach() for p in model.parameters()],
            named.state_dict()["param_groups"])


def test_decay_groups_and_lambda_lr():
    log, n_decay, lambdas, base_lrs, params, named_groups = run_both(decay_groups, **F32)[0]
    assert log[0][0] == pytest.approx(first_loss_by_hand(), rel=1e-5) and n_decay == 64
    assert log[-1][1] == pytest.approx([1e-2, 1e-2 * 0.5 ** 4]) and lambdas == [None, None] and base_lrs == [0.01, 0.01]
    assert named_groups[0]["param_names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
