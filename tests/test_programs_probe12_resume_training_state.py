# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Training-infrastructure programs where exactness matters, run as tests/probe12_resume_common.py says. State inside
the training loop: early stopping with ``copy.deepcopy(model.state_dict())`` beside a shallow ``state_dict()`` that
aliases the weights; freezing and unfreezing mid-training under ``zero_grad(set_to_none=True/False)``;
``clip_grad_norm_``/``clip_grad_value_``/``get_total_norm``/``clip_grads_with_norm_`` with ``foreach``; timm's
ModelEmaV2 and SWA (``AveragedModel``, ``SWALR``, ``update_bn``) resumed; gradient accumulation with a GradScaler;
ModelEmaV2 over tied weights and ``load_state_dict(assign=True)``."""

import copy
import io
import math

import numpy as np
import pytest

from .probe12_resume_common import bn_net, roundtrip_data, two_part_net
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Early stopping: a shallow state_dict aliases the weights, a deep copy keeps the best ones
# ----------------------------------------------------------------------------------------------


def early_stopping(m, weights, patience=2, epochs=12):
    torch, F, optim = m.torch, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    Xv, yv = X[:6] + 0.3, y[:6]  # a validation set it overfits against
    model = load(m, bn_net(m), weights)
    opt = optim.Adam(model.parameters(), lr=0.2)
    shallow = model.state_dict()  # the mistake: these tensors are the model's own
    best_loss, best_state, best_opt, best_epoch, bad = math.inf, None, None, -1, 0
    history = []
    for epoch in range(epochs):
        model.train()
        opt.zero_grad()
        F.mse_loss(model(X), y).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = F.mse_loss(model(Xv), yv).item()
        history.append(val)
        if val < best_loss - 1e-4:
            best_loss, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_opt = copy.deepcopy(opt.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    last = {k: v.clone() for k, v in model.state_dict().items()}
    shallow_is_last = [bool((shallow[k] == last[k]).all()) for k in last]
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        restored = F.mse_loss(model(Xv), yv).item()
    fresh = optim.Adam(model.parameters(), lr=0.2)
    fresh.load_state_dict(best_opt)
    return {"history": history, "best_epoch": best_epoch, "restored": restored, "best_loss": best_loss,
            "stopped_at": epoch,
            "shallow_is_last": shallow_is_last,
            "shallow_is_best": [bool((shallow[k] == best_state[k]).all()) for k in last],
            "best_opt_step": best_opt["state"][0]["step"],
            "fresh_step": fresh.state[model[0].weight]["step"],
            "num_batches_tracked": best_state["1.num_batches_tracked"]}


def test_early_stopping_with_deep_copies_and_aliasing_state_dicts():
    weights = weights_of(bn_net)
    ours, theirs = run_both(early_stopping, weights, rtol=1e-5, atol=1e-6)
    assert ours["restored"] == ours["best_loss"]
    assert ours["stopped_at"] < 11  # it stopped early
    # the shallow state_dict (buffers too: BatchNorm updates them in place) followed the training
    assert all(ours["shallow_is_last"])
    assert all(ours["shallow_is_best"])  # and load_state_dict copied the best weights into those tensors
    # (an optimizer's state_dict() is a snapshot here, as in PyTorch after 2.13: opt_shallow is left alone)
    assert ours["best_opt_step"] == ours["best_epoch"] + 1 == ours["fresh_step"]
    assert ours["num_batches_tracked"] == ours["best_epoch"] + 1


# ----------------------------------------------------------------------------------------------
# Freezing and unfreezing mid-training: zero_grad(set_to_none=...) decides whether momentum moves them
# ----------------------------------------------------------------------------------------------


def freeze_unfreeze(m, weights, set_to_none, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    model = load(m, bn_net(m), weights)
    opt = optim.SGD([{"params": model[0].parameters(), "lr": 0.01, "name": "backbone"},
                     {"params": list(model[1].parameters()) + list(model[3].parameters()), "name": "head"}],
                    lr=0.05, momentum=0.9, weight_decay=1e-2)
    frozen_snapshots, losses = [], []
    for step in range(steps):
        if step == 2:  # freeze the first layer and its BatchNorm
            for p in model[0].parameters():
                p.requires_grad_(False)
            model[1].eval()
            model[1].requires_grad_(False)
            frozen_snapshots.append(model[0].weight.detach().clone())
        if step == 5:  # unfreeze, and slow the backbone down
            model[0].requires_grad_(True)
            model[1].requires_grad_(True)
            model[1].train()
            for g in opt.param_groups:
                if g["name"] == "backbone":
                    g["lr"] *= 0.1
        opt.zero_grad(set_to_none=set_to_none)
        loss = F.mse_loss(model(X), y)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm=1.0, foreach=True)
        opt.step()
        losses.append(loss.item())
        if step == 4:
            frozen_snapshots.append(model[0].weight.detach().clone())
    return {"losses": losses, "frozen": frozen_snapshots, "final": [p.detach().clone() for p in model.parameters()],
            "bn": [model[1].running_mean, model[1].running_var, model[1].num_batches_tracked],
            "grad_is_none": model[0].weight.grad is None}


@pytest.mark.parametrize("set_to_none", [True, False])
def test_freezing_and_unfreezing_mid_training(set_to_none):
    weights = weights_of(bn_net)
    ours, _ = run_both(freeze_unfreeze, weights, set_to_none, rtol=1e-5, atol=1e-6)
    before, after = ours["frozen"]
    if set_to_none:  # no gradient: SGD skips the frozen weights
        np.testing.assert_array_equal(before, after)
    else:  # a zero gradient: momentum and weight decay still move them
        assert np.abs(before - after).max() > 1e-4
    assert ours["bn"][2] == 5  # two steps, then three frozen in eval(), then three more


# ----------------------------------------------------------------------------------------------
# Gradient clipping with foreach, and the norms it returns
# ----------------------------------------------------------------------------------------------


def clipping(m, weights, foreach):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    model = load(m, two_part_net(m), weights)
    opt = optim.SGD(model.parameters(), lr=0.1)
    norms, grads = [], []
    for step in range(4):
        opt.zero_grad()
        (10 * F.mse_loss(model(X), y)).backward()
        if step % 2 == 0:
            norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5, norm_type=2.0, foreach=foreach))
        else:
            nn.utils.clip_grad_value_(model.parameters(), clip_value=0.05, foreach=foreach)
            norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=math.inf, norm_type=1.0,
                                                  foreach=foreach))
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    # the two halves of clip_grad_norm_ (PyTorch 2.6)
    opt.zero_grad()
    F.mse_loss(model(X), y).backward()
    grads_ = [p.grad for p in model.parameters()]
    total = nn.utils.get_total_norm(grads_, norm_type=3.0, foreach=foreach)
    nn.utils.clip_grads_with_norm_(model.parameters(), max_norm=0.01, total_norm=total, foreach=foreach)
    model[0].weight.grad[0, 0] = float("nan")
    try:
        nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True, foreach=foreach)
        raised = False
    except RuntimeError:
        raised = True
    nan_norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=foreach)
    return {"norms": norms, "grads": grads, "total": total, "clipped": [p.grad[1:].clone() for p in model.parameters()
                                                                        if p.grad.dim() > 1],
            "raised": raised, "nan_norm_is_nan": bool(torch.isnan(nan_norm)),
            "weights": [p.detach() for p in model.parameters()]}


@pytest.mark.parametrize("foreach", [None, True, False])
def test_gradient_clipping_with_foreach(foreach):
    weights = weights_of(two_part_net)
    ours, _ = run_both(clipping, weights, foreach)
    assert ours["raised"] and ours["nan_norm_is_nan"]
    np.testing.assert_allclose(sum(np.abs(g).sum() for g in ours["grads"][1]), ours["norms"][1], rtol=1e-6)
    assert max(np.abs(g).max() for g in ours["grads"][1]) <= 0.05
    assert np.sqrt(sum((g ** 2).sum() for g in ours["grads"][0])) == pytest.approx(0.5, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# EMA (timm's ModelEmaV2) and SWA, resumed from a checkpoint
# ----------------------------------------------------------------------------------------------


def ema_swa_resume(m, weights, interrupt=True, steps=10, swa_start=5, resume_at=7):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    swa_utils = optim.swa_utils
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    class ModelEmaV2(nn.Module):
        def __init__(self, model, decay=0.9):
            super().__init__()
            self.module = copy.deepcopy(model)
            self.module.eval()
            self.decay = decay

        def _update(self, model, update_fn):
            with torch.no_grad():
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    ema_v.copy_(update_fn(ema_v, model_v))

        def update(self, model):
            self._update(model, update_fn=lambda e, m: self.decay * e + (1. - self.decay) * m)

    def build():
        model = load(m, bn_net(m), weights)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        ema = ModelEmaV2(model)
        swa_model = swa_utils.AveragedModel(model)
        swa_scheduler = swa_utils.SWALR(opt, swa_lr=0.02, anneal_epochs=3, anneal_strategy="cos")
        return model, opt, ema, swa_model, swa_scheduler

    model, opt, ema, swa_model, swa_scheduler = build()
    losses, lrs = [], []
    for step in range(steps):
        if interrupt and step == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.module.state_dict(),
                        "swa": swa_model.state_dict(), "swa_sched": swa_scheduler.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, map_location="cpu", weights_only=True)
            model, opt, ema, swa_model, swa_scheduler = build()
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            ema.module.load_state_dict(ckpt["ema"])
            swa_model.load_state_dict(ckpt["swa"])
            swa_scheduler.load_state_dict(ckpt["swa_sched"])
        model.train()
        opt.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        ema.update(model)
        if step >= swa_start:
            swa_model.update_parameters(model)
            swa_scheduler.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
    loader = [(X[i:i + 4],) for i in range(0, 16, 4)]  # update_bn takes the first item of each batch
    swa_utils.update_bn(loader, swa_model)
    swa_model.eval()
    ema.module.eval()
    with torch.no_grad():
        return {"losses": losses, "lrs": lrs, "n_averaged": swa_model.n_averaged,
                "swa_out": swa_model(X), "ema_out": ema.module(X),
                "swa_bn": [swa_model.module[1].running_mean, swa_model.module[1].running_var,
                           swa_model.module[1].num_batches_tracked],
                "ema_bn": ema.module[1].running_var}


def test_ema_and_swa_resume_from_a_checkpoint():
    weights = weights_of(bn_net)
    straight, _ = run_both(ema_swa_resume, weights, interrupt=False, rtol=1e-5, atol=1e-6)
    resumed, _ = run_both(ema_swa_resume, weights, rtol=1e-5, atol=1e-6)
    assert resumed["losses"] == straight["losses"] and resumed["lrs"] == straight["lrs"]
    for k in ("swa_out", "ema_out", "ema_bn"):
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)
    assert straight["n_averaged"] == 5
    # update_bn with momentum None: the running statistics are the plain average over the loader's batches
    Xn = roundtrip_data()[0]
    assert straight["swa_bn"][2] == 4


# ----------------------------------------------------------------------------------------------
# Gradient accumulation with a GradScaler: unscale once, clip, skip the step on an overflow
# ----------------------------------------------------------------------------------------------


def accumulate_scaled(m, weights, accum, overflow_at=None, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    model = load(m, two_part_net(m), weights)
    opt = optim.AdamW(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_factor=2.0, backoff_factor=0.25,
                                  growth_interval=2)
    micro = 16 // accum
    norms, scales, losses = [], [], []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(accum):
            xb, yb = X[k * micro:(k + 1) * micro], y[k * micro:(k + 1) * micro]
            loss = F.mse_loss(model(xb), yb) / accum
            if overflow_at == (step, k):
                loss = loss * torch.tensor(float("inf"))
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.unscale_(opt)
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        losses.append(total)
    return {"norms": norms, "scales": scales, "losses": losses, "weights": [p.detach() for p in model.parameters()],
            "steps": [opt.state[p]["step"] for p in model.parameters() if p in opt.state]}


def test_gradient_accumulation_with_a_grad_scaler():
    weights = weights_of(two_part_net)
    whole, _ = run_both(accumulate_scaled, weights, 1)
    split, _ = run_both(accumulate_scaled, weights, 4)
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)
    np.testing.assert_allclose(split["norms"], whole["norms"], rtol=1e-5)
    for a, b in zip(split["weights"], whole["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    skipped, _ = run_both(accumulate_scaled, weights, 4, overflow_at=(1, 2))
    assert skipped["scales"] == [2.0 ** 12, 2.0 ** 10, 2.0 ** 10]
    assert all(s == 2 for s in skipped["steps"])  # the overflowing step was skipped


# ----------------------------------------------------------------------------------------------
# ModelEmaV2 over a model with tied weights (its state_dict holds the tensor twice), and
# load_state_dict(assign=True) after the optimizer was made (the optimizer keeps the old parameters)
# ----------------------------------------------------------------------------------------------


def tied_ema_and_assign(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(6, 4)
            self.ln = nn.LayerNorm(4)
            self.head = nn.Linear(4, 6, bias=False)
            self.head.weight = self.wte.weight  # weight tying, as GPT-2's

        def forward(self, idx):
            return self.head(self.ln(self.wte(idx)))

    model = Tied()
    with torch.no_grad():
        model.wte.weight.copy_(torch.from_numpy(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)))
    ema = copy.deepcopy(model)
    opt = optim.AdamW(model.parameters(), lr=0.05)
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 1, 2])
    tgt = torch.tensor([1, 2, 3, 4, 5, 0, 2, 3])
    losses = []
    for step in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(idx), tgt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        with torch.no_grad():  # the tied tensor is met twice: it decays twice per update
            for ema_v, model_v in zip(ema.state_dict().values(), model.state_dict().values()):
                ema_v.copy_(0.9 * ema_v + 0.1 * model_v)
    net = nn.Linear(3, 2)
    opt2 = optim.SGD(net.parameters(), lr=0.5)
    sd = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}
    net.load_state_dict(sd, assign=True)
    x = torch.ones(4, 3)
    assign_losses = []
    for step in range(2):
        opt2.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        opt2.step()
        assign_losses.append(loss.item())
    return {"losses": losses, "ema": ema.wte.weight, "ema_tied": ema.head.weight is ema.wte.weight,
            "keys": list(ema.state_dict().keys()), "n_state": len(opt.state_dict()["state"]),
            "assign_losses": assign_losses, "is_param": isinstance(net.weight, nn.Parameter),
            "requires_grad": net.weight.requires_grad}


def test_tied_weights_ema_and_assign_true():
    ours, _ = run_both(tied_ema_and_assign)
    assert ours["ema_tied"] and ours["keys"] == ["wte.weight", "ln.weight", "ln.bias", "head.weight"]
    assert ours["n_state"] == 3
    assert ours["assign_losses"] == [9.0, 9.0]  # the optimizer steps the parameters assign=True replaced
    assert ours["is_param"] and ours["requires_grad"]
