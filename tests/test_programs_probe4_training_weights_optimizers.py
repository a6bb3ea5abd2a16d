# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch training-loop programs (see tests/pytorch_programs.py), each run unchanged but for its imports on
chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients. Fine-tuning with an
optimizer built over every parameter while the backbone is frozen (``requires_grad_(False)``, its BatchNorm kept in
``eval()``), then unfrozen layer by layer and a new head added with ``add_param_group`` under a running scheduler; an
exponential moving average of the weights written five ways (``lerp_``, ``mul_().add_(alpha=)``, timm's ModelEmaV2
over ``state_dict().values()`` with its buffers, its ModelEmaV3's ``torch._foreach_lerp_`` and diffusers'
``torch._foreach_sub_``); an optimizer over named parameters; an optimizer written against PyTorch 1.x's deprecated
signatures (Hugging Face's old AdamW)."""

import copy
import io
import math
import warnings

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Fine-tuning: freeze, keep BatchNorm statistics, unfreeze gradually, add a head's param group
# ----------------------------------------------------------------------------------------------


def finetune_net(m):
    nn = m.nn
    backbone = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                             nn.Linear(8, 8), nn.ReLU())
    return nn.ModuleDict({"backbone": backbone, "head": nn.Linear(8, 3), "head2": nn.Linear(8, 2)})


def finetuning(m, weights, epochs=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, finetune_net(m), weights)
    backbone, head = net["backbone"], net["head"]
    for p in backbone.parameters():
        p.requires_grad_(False)
    # every parameter goes to the optimizer; the frozen ones get no .grad, so no update
    optimizer = optim.SGD([{"params": backbone.parameters(), "lr": 0.01},
                           {"params": head.parameters()}], lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    rng = np.random.default_rng(9)
    X = torch.tensor(rng.standard_normal((12, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 12))
    y2 = torch.tensor(rng.integers(0, 2, 12))
    frozen_stats = backbone[1].running_mean.clone()
    log = []
    for epoch in range(epochs):
        net.train()
        if epoch < 2:
            backbone.eval()  # keep the frozen BatchNorm's running statistics
        if epoch == 2:
            for p in backbone[3].parameters():  # unfreeze the last layer of the backbone
                p.requires_grad_(True)
        if epoch == 4:
            backbone.requires_grad_(True)
            optimizer.add_param_group({"params": net["head2"].parameters(), "lr": 0.05})
        optimizer.zero_grad()
        feats = backbone(X)
        loss = F.cross_entropy(head(feats), y)
        if epoch >= 4:
            loss = loss + F.cross_entropy(net["head2"](feats), y2)
        loss.backward()
        optimizer.step()
        scheduler.step()
        log.append((loss.item(), [g["lr"] for g in optimizer.param_groups],
                    [p.grad is None for p in backbone.parameters()], backbone.training, backbone[1].training))
    stats_kept = bool(torch.equal(frozen_stats, backbone[1].running_mean)) if epochs <= 2 else None
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    state = optimizer.state_dict()
    return (log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], backbone[1].running_mean,
            backbone[1].num_batches_tracked, n_trainable, sorted(state["state"]), len(state["param_groups"]),
            stats_kept)


def test_finetuning_frozen_backbone_unfreezing_and_a_new_group():
    weights = weights_of(finetune_net)
    ours, _ = run_both(finetuning, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, rmean, tracked, n_trainable, state_keys, n_groups, _ = ours
    assert [entry[2] for entry in log[:2]] == [[True] * 5] * 2  # frozen: no .grad at all
    assert log[2][2] == [True, True, True, False, False] and log[4][2] == [False] * 5
    assert log[0][3:] == (False, False) and log[2][3:] == (True, True)
    assert int(tracked) == 4  # the statistics moved only once the backbone was in train()
    assert grads[0] is not None and not np.array_equal(params[0], weights["backbone.0.weight"])  # unfrozen
    assert [entry[1] for entry in log][4] == [0.0025, 0.025, 0.05] and n_groups == 3
    assert n_trainable == sum(v.size for v in weights.values() if v.dtype == np.float32) - 16  # less BN buffers
    frozen_only = finetuning(OURS, weights, epochs=2)
    assert frozen_only[-1]  # in eval() the frozen BatchNorm kept its running statistics
    for k, p in zip(["backbone.0.weight", "backbone.1.weight", "backbone.1.bias", "backbone.3.weight"], frozen_only[1]):
        np.testing.assert_array_equal(p.numpy(), weights[k])  # weight decay and momentum left them alone


# ----------------------------------------------------------------------------------------------
# An exponential moving average of the weights, three ways, evaluated in eval()
# ----------------------------------------------------------------------------------------------


def ema_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 6, bias=False), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2))


def ema(m, weights, steps=5, decay=0.8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ema_net(m), weights)
    ema_lerp = copy.deepcopy(model)
    ema_mul = copy.deepcopy(model)
    ema_v2 = copy.deepcopy(model)
    for e in (ema_lerp, ema_mul, ema_v2):
        e.eval()
        for p in e.parameters():
            p.requires_grad_(False)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    rng = np.random.default_rng(10)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    losses = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        with torch.no_grad():
            for e, p in zip(ema_lerp.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
            for e, p in zip(ema_mul.parameters(), model.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            for e_b, b in zip(ema_lerp.buffers(), model.buffers()):
                e_b.copy_(b)
            msd = model.state_dict()  # timm's ModelEmaV2: parameters and buffers alike
            for k, ema_v in ema_v2.state_dict().items():
                model_v = msd[k].detach()
                if ema_v.is_floating_point():
                    ema_v.copy_(ema_v * decay + (1.0 - decay) * model_v)
                else:
                    ema_v.copy_(model_v)
    with torch.no_grad():
        outs = [e(X) for e in (ema_lerp, ema_mul, ema_v2)]
    return (losses, [p for p in ema_lerp.parameters()], [p for p in ema_mul.parameters()], ema_v2.state_dict(), outs,
            [p.detach() for p in model.parameters()], ema_lerp[1].num_batches_tracked)


def test_ema_of_weights_three_ways():
    weights = weights_of(ema_net)
    (losses, lerped, mulled, v2, outs, params, tracked), _ = run_both(ema, weights, rtol=1e-5, atol=1e-6)
    for a, b in zip(lerped, mulled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v2["0.weight"], lerped[0], rtol=1e-5, atol=1e-7)
    assert int(v2["1.num_batches_tracked"]) == 5 == int(tracked)
    assert not np.allclose(v2["0.weight"], params[0])  # an average lags behind the weights


def ema_v3(m, weights, steps=4, decay=0.8):
    """timm's ModelEmaV3 update (foreach path): ``_foreach_lerp_`` over the floating parameters and
    buffers, a plain copy of the integer ones; and diffusers' EMAModel step (``_foreach_sub_``)."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ema_net(m), weights)
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    shadow = [p.clone().detach() for p in model.parameters()]
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(10)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    for step in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
        with torch.no_grad():
            ema_lerp_values, model_lerp_values = [], []
            for ema_v, model_v in zip(ema_model.state_dict().values(), model.state_dict().values()):
                if ema_v.is_floating_point():
                    ema_lerp_values.append(ema_v)
                    model_lerp_values.append(model_v)
                else:
                    ema_v.copy_(model_v)
            torch._foreach_lerp_(ema_lerp_values, model_lerp_values, weight=1.0 - decay)
            params = [p for p in model.parameters() if p.requires_grad]
            torch._foreach_sub_(shadow, torch._foreach_sub(shadow, params), alpha=1.0 - decay)
    with torch.no_grad():
        out = ema_model(X)
    return out, ema_model.state_dict(), shadow


def test_ema_with_foreach_ops_as_timm_and_diffusers():
    weights = weights_of(ema_net)
    (out, state, shadow), _ = run_both(ema_v3, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["0.weight"], shadow[0], rtol=1e-5, atol=1e-7)
    assert int(state["1.num_batches_tracked"]) == 4


# ----------------------------------------------------------------------------------------------
# Optimizers over named parameters (PyTorch 2.6): the names travel in param_groups and the state dict
# ----------------------------------------------------------------------------------------------


def named_optimizer(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ema_net(m), weights)
    named = list(model.named_parameters())
    opt = optim.AdamW([{"params": [(n, p) for n, p in named if p.ndim > 1], "weight_decay": 0.1},
                       {"params": [(n, p) for n, p in named if p.ndim <= 1], "weight_decay": 0.0}], lr=0.05)
    rng = np.random.default_rng(17)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf)
    resumed = optim.AdamW([{"params": [p for n, p in named if p.ndim > 1]},
                           {"params": [p for n, p in named if p.ndim <= 1]}], lr=0.05)
    resumed.load_state_dict(saved)
    opt.zero_grad()
    F.cross_entropy(model(X), y).backward()
    opt.step()
    return ([g["param_names"] for g in saved["param_groups"]], [g.get("param_names") for g in resumed.param_groups],
            [p.detach() for p in model.parameters()], [g["weight_decay"] for g in resumed.param_groups])


def test_an_optimizer_over_named_parameters():
    weights = weights_of(ema_net)
    (saved_names, resumed_names, params, decays), _ = run_both(named_optimizer, weights, rtol=1e-5, atol=1e-6)
    assert saved_names == [["0.weight", "3.weight"], ["1.weight", "1.bias", "3.bias"]] == resumed_names
    assert decays == [0.1, 0.0]


# ----------------------------------------------------------------------------------------------
# An optimizer written against PyTorch 1.x's deprecated signatures (Hugging Face's old AdamW, the
# original RAdam/AdaBound code): add_(alpha, tensor), addcmul_(value, t1, t2), addcdiv_(value, t1, t2)
# ----------------------------------------------------------------------------------------------


def old_signature_adamw(m, weights, steps=3, old_style=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class AdamW(optim.Optimizer):
        def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                          correct_bias=correct_bias))

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p.data)
                        state["exp_avg_sq"] = torch.zeros_like(p.data)
                    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                    beta1, beta2 = group["betas"]
                    state["step"] += 1
                    if old_style:
                        exp_avg.mul_(beta1).add_(1.0 - beta1, grad)
                        exp_avg_sq.mul_(beta2).addcmul_(1.0 - beta2, grad, grad)
                    else:
                        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                    denom = exp_avg_sq.sqrt().add_(group["eps"])
                    step_size = group["lr"]
                    if group["correct_bias"]:
                        bias_correction1 = 1.0 - beta1 ** state["step"]
                        bias_correction2 = 1.0 - beta2 ** state["step"]
                        step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                    if old_style:
                        p.data.addcdiv_(-step_size, exp_avg, denom)
                    else:
                        p.data.addcdiv_(exp_avg, denom, value=-step_size)
                    if group["weight_decay"] > 0.0:
                        p.data.add_(p.data, alpha=-group["lr"] * group["weight_decay"])

    model = load(m, ema_net(m), weights)
    opt = AdamW(model.parameters(), weight_decay=0.01)
    rng = np.random.default_rng(22)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def test_an_optimizer_in_pytorch_1_signatures():
    weights = weights_of(ema_net)
    modern, _ = run_both(old_signature_adamw, weights, old_style=False, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():  # PyTorch warns that the signatures are deprecated
        warnings.simplefilter("ignore")
        old, _ = run_both(old_signature_adamw, weights, old_style=True, rtol=1e-5, atol=1e-6)
    for a, b in zip(old, modern):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
