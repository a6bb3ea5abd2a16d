# ruff: noqa: B023, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Training-infrastructure programs where exactness matters, run as tests/probe12_resume_common.py says. Optimizer
and scheduler state: optimizer ``state_dict`` round trips for every optimizer (SGD momentum/nesterov/fused,
Adam/AdamW amsgrad/fused/foreach, RMSprop centered, Adagrad, Adadelta, NAdam, RAdam, Adamax, ASGD, Rprop, Adafactor,
LBFGS) into a fresh optimizer, with a group added by ``add_param_group``; scheduler round trips (OneCycleLR,
CosineAnnealingWarmRestarts, ReduceLROnPlateau, SequentialLR, LambdaLR with a closure and a callable object,
CyclicLR, ChainedScheduler, PolynomialLR, MultiplicativeLR) and the older ``last_epoch=start_epoch - 1`` rebuild; an
author's Lion, ``_LRScheduler`` subclass and EMA step post-hook resumed."""

import copy
import io
import math

import numpy as np
import pytest

from .probe12_resume_common import roundtrip_data, two_part_net
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Optimizer state_dict round trips, for every optimizer, with a group added later
# ----------------------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd_nesterov": lambda optim, p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_dampening": lambda optim, p: optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.1),
    "adam_amsgrad": lambda optim, p: optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw_amsgrad": lambda optim, p: optim.AdamW(p, lr=0.01, amsgrad=True),
    "rmsprop_centered": lambda optim, p: optim.RMSprop(p, lr=0.01, centered=True, momentum=0.5),
    "adagrad": lambda optim, p: optim.Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "adadelta": lambda optim, p: optim.Adadelta(p, lr=1.0, rho=0.8, weight_decay=1e-3),
    "nadam": lambda optim, p: optim.NAdam(p, lr=0.01, momentum_decay=4e-3),
    "nadam_decoupled": lambda optim, p: optim.NAdam(p, lr=0.01, weight_decay=0.01, decoupled_weight_decay=True),
    "radam": lambda optim, p: optim.RAdam(p, lr=0.01),
    "radam_decoupled": lambda optim, p: optim.RAdam(p, lr=0.01, weight_decay=0.01, decoupled_weight_decay=True),
    "adamax": lambda optim, p: optim.Adamax(p, lr=0.02),
    "asgd": lambda optim, p: optim.ASGD(p, lr=0.05, t0=2, lambd=1e-3),
    "rprop": lambda optim, p: optim.Rprop(p, lr=0.01, etas=(0.4, 1.3), step_sizes=(1e-4, 1.0)),
    "adafactor": lambda optim, p: optim.Adafactor(p, lr=0.01, beta2_decay=-0.8, weight_decay=0.01),
    "adam_fused_maximize": lambda optim, p: optim.Adam(p, lr=0.01, fused=True, maximize=True),
    "adamw_foreach": lambda optim, p: optim.AdamW(p, lr=0.01, foreach=True, betas=(0.8, 0.9)),
    "sgd_fused": lambda optim, p: optim.SGD(p, lr=0.05, momentum=0.9, fused=True),
    "adagrad_fused": lambda optim, p: optim.Adagrad(p, lr=0.1, fused=True),
}


def optimizer_roundtrip(m, weights, name, interrupt=True, total=6, resume_at=3, add_at=2):
    torch, F, optim = m.torch, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn).double(), torch.from_numpy(yn).double()  # float64: any difference shows
    make = OPTIMIZERS[name]

    def build():
        model = load(m, two_part_net(m), weights).double()
        for p in model[2].parameters():
            p.requires_grad_(False)  # the head joins later, in a group of its own
        opt = make(optim, model[0].parameters())
        return model, opt

    model, opt = build()
    losses = []
    for step in range(total):
        if step == add_at:
            for p in model[2].parameters():
                p.requires_grad_(True)
            opt.add_param_group({"params": list(model[2].parameters()), "lr": opt.param_groups[0]["lr"] * 0.5})
        if interrupt and step == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, map_location="cpu", weights_only=True)
            model, opt = build()
            for p in model[2].parameters():
                p.requires_grad_(True)
            opt.add_param_group({"params": list(model[2].parameters()), "lr": 123.0})  # overwritten by the load
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        opt.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    sd = opt.state_dict()
    return {"losses": losses, "weights": [p.detach().clone() for p in model.parameters()],
            "state": sd["state"], "groups": [{k: v for k, v in g.items() if k != "params"}
                                             for g in sd["param_groups"]],
            "param_ids": [g["params"] for g in sd["param_groups"]],
            "dtypes": {i: {k: str(v.dtype).split(".")[-1] for k, v in st.items() if hasattr(v, "dtype")}
                       for i, st in sd["state"].items()}}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_dict_round_trip_with_a_later_group(name):
    weights = weights_of(two_part_net)
    straight, _ = run_both(optimizer_roundtrip, weights, name, interrupt=False, rtol=1e-10, atol=1e-12)
    resumed, _ = run_both(optimizer_roundtrip, weights, name, rtol=1e-10, atol=1e-12)
    if name.startswith("nadam"):
        # PyTorch's too: NAdam keeps mu_product in float32 (the default dtype), and load_state_dict casts every
        # state but "step" to the parameter's dtype, so the resumed run computes it in float64 from there on
        np.testing.assert_allclose(resumed["losses"], straight["losses"], rtol=1e-10)
        assert straight["dtypes"][0]["mu_product"] == "float32" and resumed["dtypes"][0]["mu_product"] == "float64"
    else:
        assert resumed["losses"] == straight["losses"]
        for a, b in zip(resumed["weights"], straight["weights"]):
            np.testing.assert_array_equal(a, b)
    # (the dtypes of the state, before and after the load, are PyTorch's: run_both compared them)
    assert resumed["param_ids"] == [[0, 1], [2, 3]]


def lbfgs_roundtrip(m, weights, interrupt=True):
    torch, F, optim = m.torch, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn).double(), torch.from_numpy(yn).double()

    def build():
        model = load(m, two_part_net(m), weights).double()
        opt = optim.LBFGS(model.parameters(), lr=0.5, max_iter=4, history_size=3, line_search_fn="strong_wolfe")
        return model, opt

    model, opt = build()
    losses = []
    for step in range(5):
        if interrupt and step == 2:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, weights_only=False)
            model, opt = build()
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])

        def closure():
            opt.zero_grad()
            loss = F.mse_loss(model(X), y)
            loss.backward()
            return loss

        losses.append(opt.step(closure).item())
    state = opt.state_dict()["state"][0]
    return {"losses": losses, "weights": [p.detach().clone() for p in model.parameters()],
            "func_evals": state["func_evals"], "n_iter": state["n_iter"], "t": state["t"],
            "old_dirs": len(state["old_dirs"]), "d": state["d"], "prev_loss": state["prev_loss"]}


def test_lbfgs_state_dict_round_trip():
    weights = weights_of(two_part_net)
    straight, _ = run_both(lbfgs_roundtrip, weights, interrupt=False, rtol=1e-8, atol=1e-10)
    resumed, _ = run_both(lbfgs_roundtrip, weights, rtol=1e-8, atol=1e-10)
    assert resumed["losses"] == straight["losses"]
    for a, b in zip(resumed["weights"], straight["weights"]):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# Scheduler state round trips
# ----------------------------------------------------------------------------------------------


class WarmupThenDecay:
    """A callable object as LambdaLR's lambda: its __dict__ is saved in the scheduler's state_dict."""

    def __init__(self, warmup, decay):
        self.warmup, self.decay = warmup, decay

    def __call__(self, step):
        return (step + 1) / self.warmup if step < self.warmup else self.decay ** (step - self.warmup)


def make_scheduler(m, name, opt):
    lr_scheduler = m.optim.lr_scheduler
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.05], total_steps=12, pct_start=0.3,
                                       anneal_strategy="cos", three_phase=True)
    if name == "onecycle_linear":
        return lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=12, anneal_strategy="linear",
                                       cycle_momentum=True, base_momentum=0.8, max_momentum=0.95)
    if name == "warm_restarts":
        return lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=1e-3)
    if name == "sequential":
        warmup = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
        cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=1e-4)
        return lr_scheduler.SequentialLR(opt, schedulers=[warmup, cosine], milestones=[3])
    if name == "lambda_closure":
        warmup_steps, total_steps = 3, 12

        def lr_lambda(step):  # a closure, as transformers' get_linear_schedule_with_warmup
            if step < warmup_steps:
                return float(step) / float(max(1, warmup_steps))
            return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))

        return lr_scheduler.LambdaLR(opt, [lr_lambda, WarmupThenDecay(4, 0.8)])
    if name == "cyclic":
        return lr_scheduler.CyclicLR(opt, base_lr=[0.01, 0.005], max_lr=0.1, step_size_up=3, step_size_down=2,
                                     mode="exp_range", gamma=0.9, base_momentum=0.8, max_momentum=0.9)
    if name == "cyclic_custom":
        return lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2, scale_fn=lambda x: 0.5 ** x,
                                     scale_mode="cycle", cycle_momentum=False)
    if name == "chained":
        return lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=4),
                                              lr_scheduler.ExponentialLR(opt, gamma=0.9)])
    if name == "polynomial":
        return lr_scheduler.PolynomialLR(opt, total_iters=8, power=2.0)
    if name == "multiplicative":
        return lr_scheduler.MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.95)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1, threshold=1e-2,
                                              cooldown=1, min_lr=[1e-3, 1e-4])
    raise ValueError(name)


SCHEDULERS = ["onecycle", "onecycle_linear", "warm_restarts", "sequential", "lambda_closure", "plateau", "cyclic",
              "cyclic_custom", "chained", "polynomial", "multiplicative"]


def scheduler_roundtrip(m, weights, name, interrupt=True, total=12, resume_at=5):
    torch, F, optim = m.torch, m.F, m.optim
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    def build():
        model = load(m, two_part_net(m), weights)
        opt = optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.02}],
                        lr=0.05, momentum=0.9)
        return model, opt, make_scheduler(m, name, opt)

    model, opt, sched = build()
    lrs, momenta, losses = [], [], []
    for step in range(total):
        if interrupt and step == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, map_location="cpu", weights_only=False)
            model, opt, sched = build()
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
        opt.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        if name == "plateau":
            sched.step(round(loss.item(), 1))  # a coarse metric: it plateaus
        else:
            sched.step()
        losses.append(loss.item())
        lrs.append([g["lr"] for g in opt.param_groups])
        momenta.append([g["momentum"] for g in opt.param_groups])
    state = {k: v for k, v in sched.state_dict().items()
             if k not in ("_schedulers", "lr_lambdas", "_scheduler", "optimizer", "_get_lr_called_within_step",
                          "anneal_func", "_anneal_func", "_anneal_func_type")}
    return {"lrs": lrs, "momenta": momenta, "losses": losses, "last_lr": sched.get_last_lr() if name != "plateau"
            else sched._last_lr, "state": state}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_state_round_trip(name):
    weights = weights_of(two_part_net)
    straight, _ = run_both(scheduler_roundtrip, weights, name, interrupt=False)
    resumed, _ = run_both(scheduler_roundtrip, weights, name)
    assert resumed["lrs"] == straight["lrs"]
    assert resumed["momenta"] == straight["momenta"]
    assert resumed["losses"] == straight["losses"]
    if name == "plateau":
        assert straight["lrs"][-1] != straight["lrs"][0]  # it did reduce


# ----------------------------------------------------------------------------------------------
# The older resume idiom: schedulers rebuilt with last_epoch=start_epoch - 1 over a loaded optimizer
# ----------------------------------------------------------------------------------------------


def last_epoch_resume(m, weights, which, interrupt=True, epochs=8, start=3, iters=4):
    torch, F, optim = m.torch, m.F, m.optim
    lr_scheduler = optim.lr_scheduler
    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    def build(last_epoch=-1):
        model = load(m, two_part_net(m), weights)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt

    def scheduler(opt, last_epoch=-1):
        if which == "step":
            return lr_scheduler.StepLR(opt, step_size=2, gamma=0.5, last_epoch=last_epoch)
        if which == "multistep":
            return lr_scheduler.MultiStepLR(opt, milestones=[2, 5], gamma=0.3, last_epoch=last_epoch)
        if which == "exponential":
            return lr_scheduler.ExponentialLR(opt, gamma=0.8, last_epoch=last_epoch)
        return lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.001, last_epoch=last_epoch)

    model, opt = build()
    sched = scheduler(opt)
    lrs = []
    for epoch in range(epochs):
        if interrupt and epoch == start:
            buf = io.BytesIO()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, weights_only=True)
            model, opt = build()
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])  # its groups carry "initial_lr", which last_epoch needs
            sched = scheduler(opt, last_epoch=ckpt["epoch"] - 1)
        for i in range(iters):
            opt.zero_grad()
            F.mse_loss(model(X[i * 4:(i + 1) * 4]), y[i * 4:(i + 1) * 4]).backward()
            opt.step()
            if which == "warm_restarts":
                sched.step(epoch + i / iters)  # the fractional epochs of its documentation
            lrs.append(opt.param_groups[0]["lr"])
        if which != "warm_restarts":
            sched.step()
    return {"lrs": lrs, "last_epoch": sched.last_epoch, "weights": [p.detach() for p in model.parameters()],
            "initial_lr": opt.param_groups[0]["initial_lr"]}


@pytest.mark.parametrize("which", ["step", "multistep", "exponential", "warm_restarts"])
def test_schedulers_rebuilt_with_last_epoch(which):
    weights = weights_of(two_part_net)
    straight, _ = run_both(last_epoch_resume, weights, which, interrupt=False)
    resumed, _ = run_both(last_epoch_resume, weights, which)
    np.testing.assert_allclose(resumed["lrs"], straight["lrs"], rtol=1e-12)  # (a closed form: not bit for bit)
    if which != "warm_restarts":  # (whose fractional steps set last_epoch to the floor of the epoch)
        assert resumed["last_epoch"] == straight["last_epoch"] == 8


def last_epoch_without_initial_lr(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    try:
        optim.lr_scheduler.StepLR(opt, step_size=2, last_epoch=4)
    except KeyError as e:
        return str(e)
    return "no error"


def test_last_epoch_without_a_loaded_optimizer_is_a_key_error():
    ours, _ = run_both(last_epoch_without_initial_lr)
    assert "initial_lr" in ours


# ----------------------------------------------------------------------------------------------
# An author's own optimizer (Lion) and scheduler subclass, an EMA in a step post-hook, all resumed
# ----------------------------------------------------------------------------------------------


def custom_parts_resume(m, weights, interrupt=True, steps=8, resume_at=4):
    torch, F, optim = m.torch, m.F, m.optim

    class Lion(optim.Optimizer):
        def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    p.data.mul_(1 - group["lr"] * group["weight_decay"])
                    grad = p.grad
                    state = self.state[p]
                    if len(state) == 0:
                        state["exp_avg"] = torch.zeros_like(p)
                        state["step"] = 0
                    state["step"] += 1
                    exp_avg = state["exp_avg"]
                    beta1, beta2 = group["betas"]
                    update = exp_avg * beta1 + grad * (1 - beta1)
                    p.add_(update.sign_(), alpha=-group["lr"])
                    exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
            return loss

    class WarmupCosine(optim.lr_scheduler._LRScheduler):
        def __init__(self, optimizer, warmup_steps, total_steps, min_ratio=0.1, last_epoch=-1):
            self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio
            super(WarmupCosine, self).__init__(optimizer, last_epoch)

        def get_lr(self):
            if self.last_epoch < self.warmup_steps:
                return [base_lr * (self.last_epoch + 1) / self.warmup_steps for base_lr in self.base_lrs]
            progress = (self.last_epoch - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            factor = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
            return [base_lr * factor for base_lr in self.base_lrs]

    Xn, yn = roundtrip_data()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    def build():
        model = load(m, two_part_net(m), weights)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = Lion(model.parameters(), lr=3e-3, weight_decay=0.1)
        sched = WarmupCosine(opt, warmup_steps=3, total_steps=steps)

        def ema_hook(optimizer, args, kwargs):
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 0.2)

        opt.register_step_post_hook(ema_hook)
        return model, ema, opt, sched

    model, ema, opt, sched = build()
    losses, lrs = [], []
    for step in range(steps):
        if interrupt and step == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, weights_only=True)
            model, ema, opt, sched = build()
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
        opt.zero_grad()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
    return {"losses": losses, "lrs": lrs, "ema": [p.detach() for p in ema.parameters()],
            "step": opt.state_dict()["state"][0]["step"], "sched": {k: v for k, v in sched.state_dict().items()}}


def test_own_optimizer_scheduler_and_ema_hook_resume():
    weights = weights_of(two_part_net)
    straight, _ = run_both(custom_parts_resume, weights, interrupt=False)
    resumed, _ = run_both(custom_parts_resume, weights)
    assert resumed["losses"] == straight["losses"] and resumed["lrs"] == straight["lrs"]
    for a, b in zip(resumed["ema"], straight["ema"]):
        np.testing.assert_array_equal(a, b)
    assert straight["step"] == resumed["step"] == 8 and isinstance(resumed["step"], int)
