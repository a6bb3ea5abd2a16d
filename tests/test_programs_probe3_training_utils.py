# ruff: noqa: B007, B023, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py): the utilities of a training loop. Gradient
accumulation equal to a big batch, ``clip_grad_norm_``'s returned norm, ``GradScaler`` on the CPU,
activation checkpointing, scheduler trajectories (``OneCycleLR``, ``CosineAnnealingWarmRestarts``,
``ReduceLROnPlateau``, ``LambdaLR``, ``SequentialLR``, ``ChainedScheduler``), resuming from an
optimizer and scheduler state dict, ``add_param_group``, per-parameter options,
``zero_grad(set_to_none=False)`` and editing ``param_groups[0]["lr"]`` by hand."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def data(m, n=16):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.1).astype(np.float32)
    return m.torch.tensor(X), m.torch.tensor(y)


def accumulation(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = data(m)
    big = load(m, mlp(m), weights)
    small = load(m, mlp(m), weights)
    opt_big = optim.SGD(big.parameters(), lr=0.1, momentum=0.9)
    opt_small = optim.SGD(small.parameters(), lr=0.1, momentum=0.9)
    accum = 4
    norms = []
    for epoch in range(3):
        opt_big.zero_grad()
        F.mse_loss(big(X), y).backward()
        norms.append(nn.utils.clip_grad_norm_(big.parameters(), max_norm=1.0))
        opt_big.step()
        opt_small.zero_grad(set_to_none=False)
        for i, (xb, yb) in enumerate(zip(X.split(4), y.split(4))):
            loss = F.mse_loss(small(xb), yb) / accum
            loss.backward()
            if (i + 1) % accum == 0:
                nn.utils.clip_grad_norm_(small.parameters(), max_norm=1.0)
                opt_small.step()
                opt_small.zero_grad(set_to_none=False)
    zeroed = [p.grad for p in small.parameters()]
    return norms, [p.detach() for p in big.parameters()], [p.detach() for p in small.parameters()], zeroed


def test_gradient_accumulation_equals_the_big_batch_and_clip_returns_the_norm():
    weights = weights_of(mlp)
    (norms, big, small, zeroed), _ = run_both(accumulation, weights, rtol=1e-4, atol=1e-6)
    for a, b in zip(big, small):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.ndim(norms[0]) == 0 and float(norms[0]) > 1.0  # the norm before clipping
    assert all(g is not None and (g == 0).all() for g in zeroed)  # set_to_none=False keeps zeros


def grad_scaler(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = data(m)
    model = load(m, mlp(m), weights)
    opt = optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)
    scales, losses, grads = [], [], []
    for step in range(5):
        opt.zero_grad()
        with torch.autocast("cpu", enabled=False):  # (no bfloat16 in NumPy: the README says so)
            loss = F.mse_loss(model(X), y)
        if step == 2:
            loss = loss * float("inf")  # an overflow: the step is skipped and the scale halves
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grads.append(model[0].weight.grad.abs().sum().item() if step != 2 else -1.0)
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        losses.append(loss.item() if step != 2 else -1.0)
    return scales, losses, grads, scaler.state_dict()["scale"]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy on the inf step
def test_grad_scaler_on_cpu_skips_an_overflowing_step():
    weights = weights_of(mlp)
    (scales, losses, grads, scale), _ = run_both(grad_scaler, weights, rtol=1e-4, atol=1e-6)
    assert scales == [256.0, 512.0, 256.0, 256.0, 512.0]
    assert losses[3] < losses[1] < losses[0]


def checkpointed(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    cp = torch.utils.checkpoint
    model = load(m, mlp(m), weights)
    X, y = data(m)
    def segment(x):
        return model[1](model[0](x))
    h = cp.checkpoint(segment, X, use_reentrant=False)
    loss = F.mse_loss(model[2](h), y)
    loss.backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = cp.checkpoint_sequential(model, 2, X, use_reentrant=False)
    F.mse_loss(out, y).backward()
    g2 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.mse_loss(model(X), y).backward()
    g3 = [p.grad for p in model.parameters()]
    return loss, g1, g2, g3


def test_activation_checkpointing_gives_the_plain_gradients():
    weights = weights_of(mlp)
    (loss, g1, g2, g3), _ = run_both(checkpointed, weights, rtol=1e-5, atol=1e-6)
    for a, b, c in zip(g1, g2, g3):
        np.testing.assert_allclose(a, c, rtol=1e-6)
        np.testing.assert_allclose(b, c, rtol=1e-6)


def schedulers(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    S = optim.lr_scheduler
    def fresh(lr=0.1, **kw):
        return optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9, **kw)
    out = {}
    opt = fresh()
    s = S.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    lrs, moms = [], []
    for _ in range(9):
        opt.step()
        s.step()
        lrs.append(s.get_last_lr()[0])
        moms.append(opt.param_groups[0]["momentum"])
    out["onecycle"], out["onecycle_momentum"] = lrs, moms
    opt = fresh()
    s = S.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.01)
    lrs = []
    for epoch in range(4):
        for i in range(5):
            opt.step()
            s.step(epoch + i / 5)  # the per-iteration form of its docstring
            lrs.append(s.get_last_lr()[0])
    out["warm_restarts"] = lrs
    opt = fresh()
    s = S.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1, threshold=0.01, cooldown=1)
    lrs = []
    for val in [1.0, 0.9, 0.895, 0.894, 0.893, 0.892, 0.5, 0.5, 0.5, 0.5]:
        opt.step()
        s.step(val)
        lrs.append(opt.param_groups[0]["lr"])
    out["plateau"] = lrs
    opt = fresh()
    warm = S.LinearLR(opt, start_factor=0.1, total_iters=3)
    decay = S.ExponentialLR(opt, gamma=0.5)
    s = S.SequentialLR(opt, schedulers=[warm, decay], milestones=[3])
    lrs = []
    for _ in range(7):
        opt.step()
        s.step()
        lrs.append(s.get_last_lr()[0])
    out["sequential"] = lrs
    opt = fresh()
    s = S.ChainedScheduler([S.ConstantLR(opt, factor=0.5, total_iters=2), S.ExponentialLR(opt, gamma=0.9)])
    lrs = []
    for _ in range(5):
        opt.step()
        s.step()
        lrs.append(s.get_last_lr()[0])
    out["chained"] = lrs
    opt = optim.SGD([{"params": [nn.Parameter(torch.zeros(1))]},
                     {"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}], lr=0.1)
    s = S.LambdaLR(opt, lr_lambda=[lambda e: 0.9 ** e, lambda e: 1 / (e + 1)])
    lrs = []
    for _ in range(4):
        opt.step()
        s.step()
        lrs.append(s.get_last_lr())
    out["lambda_groups"] = lrs
    return out


def test_scheduler_trajectories():
    out, _ = run_both(schedulers, rtol=1e-6, atol=1e-9)
    assert max(out["onecycle"]) <= 1.0 and out["onecycle"][-1] < 1e-3
    assert min(out["onecycle_momentum"]) >= 0.85 - 1e-9
    np.testing.assert_allclose(out["sequential"], [0.04, 0.07, 0.1, 0.05, 0.025, 0.0125, 0.00625], rtol=1e-6)
    np.testing.assert_allclose(out["chained"], [0.045, 0.0405 * 2, 0.0729, 0.06561, 0.059049], rtol=1e-6)
    assert out["plateau"][0] == 0.1 and out["plateau"][-1] < 0.1
    np.testing.assert_allclose(out["lambda_groups"][-1], [0.1 * 0.9 ** 4, 1.0 / 5])


def resume(m, weights, interrupt):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = data(m)
    model = load(m, mlp(m), weights)
    opt = optim.Adam(model.parameters(), lr=0.05, amsgrad=True)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses = []
    for step in range(6):
        if interrupt and step == 3:
            ckpt = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
            model = load(m, mlp(m), weights)
            opt = optim.Adam(model.parameters(), lr=0.05, amsgrad=True)
            sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
        opt.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    state = opt.state_dict()
    return losses, [p.detach() for p in model.parameters()], sorted(state["state"]), state["param_groups"][0]["lr"]


def test_resuming_from_state_dicts_equals_an_uninterrupted_run():
    weights = weights_of(mlp)
    (l1, p1, keys, lr), _ = run_both(resume, weights, False, rtol=1e-5, atol=1e-6)
    (l2, p2, keys2, lr2), _ = run_both(resume, weights, True, rtol=1e-5, atol=1e-6)
    assert l1 == l2 and keys == keys2 == [0, 1, 2, 3] and lr == lr2 == 0.05 / 8
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
    assert l1[-1] < l1[0]


def param_groups(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = data(m)
    model = load(m, mlp(m), weights)
    model[2].requires_grad_(False)
    opt = optim.SGD([{"params": model[0].weight, "lr": 0.01},
                     {"params": model[0].bias, "weight_decay": 0.1}], lr=0.1, momentum=0.5)
    losses, lrs = [], []
    for step in range(6):
        if step == 2:  # unfreeze the head and give it its own options
            model[2].requires_grad_(True)
            opt.add_param_group({"params": model[2].parameters(), "lr": 0.05, "nesterov": True})
        if step == 4:
            for g in opt.param_groups:
                g["lr"] = g["lr"] * 0.1
        opt.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        lrs.append([g["lr"] for g in opt.param_groups])
    groups = [{k: v for k, v in g.items() if k in ("lr", "momentum", "weight_decay", "nesterov", "dampening")}
              for g in opt.param_groups]
    return losses, lrs, groups, [p.detach() for p in model.parameters()]


def test_param_groups_add_param_group_and_manual_lr_edits():
    weights = weights_of(mlp)
    (losses, lrs, groups, params), _ = run_both(param_groups, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lrs[-1], [0.001, 0.01, 0.005])
    assert groups[2] == {"lr": groups[2]["lr"], "momentum": 0.5, "weight_decay": 0, "nesterov": True, "dampening": 0}
    assert losses[-1] < losses[0]
