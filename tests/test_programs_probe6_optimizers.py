# ruff: noqa: B007, B023, E701, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Optimizers people write around PyTorch's (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights and data, comparing losses, learning rates and parameters.

SAM (davda54/sam, both its versions: ``e_w`` kept in ``self.state`` and undone by ``sub_``, and the
newer ``old_p`` with ``adaptive`` and a closure wrapped by ``torch.enable_grad()(closure)``; an
``Optimizer`` subclass that builds its base optimizer on its own ``param_groups``); a Lookahead wrapper
(lonePatient's: an ``Optimizer`` subclass that never calls ``Optimizer.__init__``, shares the inner
optimizer's ``param_groups`` and keeps its slow weights in a ``defaultdict`` state, with a LambdaLR on
top); gradient accumulation as the Hugging Face scripts write it (no-decay groups by parameter name,
``clip_grad_norm_``, a linear-warmup cosine ``LambdaLR`` from ``functools.partial``); and
ReduceLROnPlateau in ``'max'`` mode with cooldown, ``min_lr`` and a tensor metric."""

import functools
import math
from collections import defaultdict

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def batches(m, n=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n * size, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5).astype(np.int64)
    return [(m.torch.tensor(X[i * size:(i + 1) * size]), m.torch.tensor(y[i * size:(i + 1) * size]))
            for i in range(n)]


# ----------------------------------------------------------------------------------------------
# SAM: sharpness-aware minimisation
# ----------------------------------------------------------------------------------------------


def sam_classes(m):
    torch = m.torch

    class SAMv1(m.optim.Optimizer):
        """The first release: e(w) kept in the state and taken off again."""

        def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
            assert rho >= 0.0, f"Invalid rho, should be non-negative: {rho}"
            defaults = dict(rho=rho, **kwargs)
            super(SAMv1, self).__init__(params, defaults)
            self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
            self.param_groups = self.base_optimizer.param_groups

        @torch.no_grad()
        def first_step(self, zero_grad=False):
            grad_norm = self._grad_norm()
            for group in self.param_groups:
                scale = group["rho"] / (grad_norm + 1e-12)
                for p in group["params"]:
                    if p.grad is None: continue
                    e_w = p.grad * scale
                    p.add_(e_w)  # climb to the local maximum "w + e(w)"
                    self.state[p]["e_w"] = e_w
            if zero_grad: self.zero_grad()

        @torch.no_grad()
        def second_step(self, zero_grad=False):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None: continue
                    p.sub_(self.state[p]["e_w"])  # get back to "w" from "w + e(w)"
            self.base_optimizer.step()  # do the actual "sharpness-aware" update
            if zero_grad: self.zero_grad()

        def _grad_norm(self):
            shared_device = self.param_groups[0]["params"][0].device
            norm = torch.norm(
                torch.stack([p.grad.norm(p=2).to(shared_device)
                             for group in self.param_groups for p in group["params"] if p.grad is not None]),
                p=2)
            return norm

    class SAM(m.optim.Optimizer):
        """The current one: the old weights kept, adaptive SAM, a closure."""

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
                    p.add_(e_w)  # climb to the local maximum "w + e(w)"
            if zero_grad: self.zero_grad()

        @torch.no_grad()
        def second_step(self, zero_grad=False):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None: continue
                    p.data = self.state[p]["old_p"]  # get back to "w" from "w + e(w)"
            self.base_optimizer.step()  # do the actual "sharpness-aware" update
            if zero_grad: self.zero_grad()

        @torch.no_grad()
        def step(self, closure=None):
            assert closure is not None, "Sharpness Aware Minimization requires closure, but it was not provided"
            closure = torch.enable_grad()(closure)  # the closure should do a full forward-backward pass
            self.first_step(zero_grad=True)
            closure()
            self.second_step()

        def _grad_norm(self):
            shared_device = self.param_groups[0]["params"][0].device
            norm = torch.norm(
                torch.stack([
                    ((torch.abs(p) if group["adaptive"] else 1.0) * p.grad).norm(p=2).to(shared_device)
                    for group in self.param_groups for p in group["params"]
                    if p.grad is not None
                ]),
                p=2
            )
            return norm

        def load_state_dict(self, state_dict):
            super().load_state_dict(state_dict)
            self.base_optimizer.param_groups = self.param_groups

    return SAMv1, SAM


def sam_training(m, weights, version, epochs=2):
    torch, nn, F = m.torch, m.nn, m.F
    SAMv1, SAM = sam_classes(m)
    model = load(m, mlp(m), weights)
    loss_function = nn.CrossEntropyLoss()
    if version == 1:
        optimizer = SAMv1(model.parameters(), m.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    else:
        optimizer = SAM(model.parameters(), m.optim.SGD, rho=0.5, adaptive=True, lr=0.1, momentum=0.9,
                        weight_decay=5e-4)
    scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    losses, lrs = [], []
    for epoch in range(epochs):
        for inputs, targets in batches(m):
            if version == 1:
                # first forward-backward pass
                loss = loss_function(model(inputs), targets)  # use this loss for any training statistics
                loss.backward()
                optimizer.first_step(zero_grad=True)
                # second forward-backward pass
                loss_function(model(inputs), targets).backward()  # make sure to do a full forward pass
                optimizer.second_step(zero_grad=True)
            else:
                def closure():
                    loss = loss_function(model(inputs), targets)
                    loss.backward()
                    return loss

                loss = loss_function(model(inputs), targets)
                loss.backward()
                optimizer.step(closure)
                optimizer.zero_grad()
            losses.append(loss.item())
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    n_state = sum(len(s) for s in optimizer.state.values())
    inner_state = sorted(k for s in optimizer.base_optimizer.state.values() for k in s)[:1]
    saved = optimizer.state_dict()
    return {"losses": losses, "lrs": lrs, "params": [p.detach() for p in model.parameters()],
            "n_state": n_state, "inner": inner_state, "groups": len(saved["param_groups"]),
            "rho": saved["param_groups"][0]["rho"],
            "same_groups": optimizer.param_groups is optimizer.base_optimizer.param_groups}


@pytest.mark.filterwarnings("ignore:Detected call of")  # SAMv1 never calls its own step
def test_sam_both_versions():
    weights = weights_of(mlp)
    for version in (1, 2):
        ours, _ = run_both(sam_training, weights, version, rtol=1e-4, atol=1e-5)
        assert ours["losses"][-1] < ours["losses"][0], version
        assert ours["lrs"][3] == 0.05 and ours["lrs"][-1] == 0.0125
        assert ours["n_state"] == 6 and ours["inner"] == ["momentum_buffer"] and ours["same_groups"]


def test_sam_first_step_climbs_by_rho_along_the_gradient():
    """Without torch: after first_step each weight moved by rho * g / |g| (the norm over all of them)."""
    SAMv1, _ = sam_classes(OURS)
    torch = OURS.torch
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    optimizer = SAMv1([w], OURS.optim.SGD, rho=0.5, lr=0.1)
    (w ** 2).sum().backward()  # g = (6, 8), |g| = 10
    optimizer.first_step()
    np.testing.assert_allclose(w.detach().numpy(), [3.3, 4.4], rtol=1e-6)
    optimizer.second_step()  # back to w, then SGD with the gradient taken at w + e(w)
    np.testing.assert_allclose(w.detach().numpy(), [3.0 - 0.6, 4.0 - 0.8], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Lookahead around Adam
# ----------------------------------------------------------------------------------------------


def lookahead_class(m):
    torch = m.torch

    class Lookahead(m.optim.Optimizer):
        def __init__(self, base_optimizer, alpha=0.5, k=6):
            # NOTE super().__init__() not invoked
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

    return Lookahead


def lookahead_training(m, weights, epochs=2, resume=False):
    torch, nn = m.torch, m.nn
    Lookahead = lookahead_class(m)
    model = load(m, mlp(m), weights)
    base = m.optim.Adam([{"params": model[0].parameters()},
                         {"params": list(model[2].parameters()) + list(model[4].parameters()), "lr": 5e-3}],
                        lr=1e-2)
    optimizer = Lookahead(base, alpha=0.5, k=3)
    scheduler = m.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.9 ** epoch)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for epoch in range(epochs):
        for inputs, targets in batches(m, seed=1):
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        if resume and epoch == 0:  # a checkpoint of everything, loaded as a new process would
            Lookahead = lookahead_class(m)  # (PyTorch patches the class's step on first zero_grad)
            saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict()}
            model = load(m, mlp(m), {k: v.numpy() for k, v in saved["model"].items()})
            base = m.optim.Adam([{"params": model[0].parameters()},
                                 {"params": list(model[2].parameters()) + list(model[4].parameters())}], lr=1.0)
            optimizer = Lookahead(base, alpha=0.5, k=3)
            scheduler = m.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.9 ** epoch)
            optimizer.load_state_dict(saved["optimizer"])  # after making the scheduler, which sets lr
            scheduler.load_state_dict(saved["scheduler"])
    optimizer.sync_lookahead()
    saved = optimizer.state_dict()
    return {"losses": losses, "params": [p.detach() for p in model.parameters()],
            "counters": [g["lookahead_step"] for g in optimizer.param_groups], "lrs": scheduler.get_last_lr(),
            "slow": [s["lookahead_slow_buff"] for s in base.state.values()],
            "state_keys": sorted(saved["state"][0]), "group_keys": sorted(saved["param_groups"][1]),
            "steps": [s["step"] for s in base.state.values()], "defaults": sorted(optimizer.defaults)}


def test_lookahead_around_adam():
    weights = weights_of(mlp)
    ours, _ = run_both(lookahead_training, weights, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["counters"] == [12, 12] and len(ours["slow"]) == 6
    assert ours["state_keys"] == ["exp_avg", "exp_avg_sq", "lookahead_slow_buff", "step"]
    assert "lookahead_k" in ours["group_keys"] and "lookahead_alpha" in ours["defaults"]
    assert [float(s) for s in ours["steps"]] == [12.0] * 6
    np.testing.assert_allclose(ours["lrs"], [1e-2 * 0.81, 5e-3 * 0.81], rtol=1e-6)
    for slow, p in zip(ours["slow"], ours["params"]):  # sync_lookahead leaves fast == slow
        np.testing.assert_array_equal(slow, p)
    resumed, _ = run_both(lookahead_training, weights, resume=True, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(resumed["losses"], ours["losses"], rtol=1e-6)
    assert resumed["lrs"] == ours["lrs"]


# ----------------------------------------------------------------------------------------------
# Gradient accumulation, Hugging Face style: no-decay groups, clipping, warmup then cosine
# ----------------------------------------------------------------------------------------------


def _get_cosine_schedule_with_warmup_lr_lambda(current_step, *, num_warmup_steps, num_training_steps, num_cycles):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def get_cosine_schedule_with_warmup(m, optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5, last_epoch=-1):
    lr_lambda = functools.partial(_get_cosine_schedule_with_warmup_lr_lambda, num_warmup_steps=num_warmup_steps,
                                  num_training_steps=num_training_steps, num_cycles=num_cycles)
    return m.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch)


def small_encoder(m):
    nn = m.nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(4, 16)
            self.LayerNorm = nn.LayerNorm(16)
            self.classifier = nn.Linear(16, 3)

        def forward(self, x):
            return self.classifier(self.LayerNorm(m.F.gelu(self.dense(x))))

    return Encoder()


def accumulation(m, weights, gradient_accumulation_steps=3, num_train_epochs=2, max_grad_norm=0.5):
    torch, nn = m.torch, m.nn
    model = load(m, small_encoder(m), weights)
    X = np.concatenate([x.numpy() for x, _ in batches(OURS, n=4, size=5)])
    y = np.concatenate([t.numpy() for _, t in batches(OURS, n=4, size=5)])
    train_dataloader = m.data.DataLoader(m.data.TensorDataset(torch.tensor(X), torch.tensor(y)), batch_size=4)
    no_decay = ["bias", "LayerNorm.weight"]
    optimizer_grouped_parameters = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = m.optim.AdamW(optimizer_grouped_parameters, lr=5e-2, eps=1e-8)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / gradient_accumulation_steps)
    t_total = num_update_steps_per_epoch * num_train_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(m, optimizer, num_warmup_steps=1, num_training_steps=t_total)
    lrs, norms, losses = [lr_scheduler.get_last_lr()[0]], [], []
    model.zero_grad()
    for epoch in range(num_train_epochs):
        model.train()
        for step, (inputs, labels) in enumerate(train_dataloader):
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss = loss / gradient_accumulation_steps
            loss.backward()
            losses.append(loss.item())
            if (step + 1) % gradient_accumulation_steps == 0 or step == len(train_dataloader) - 1:
                norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                lrs.append(lr_scheduler.get_last_lr()[0])
    return {"losses": losses, "lrs": lrs, "norms": norms, "params": [p.detach() for p in model.parameters()],
            "sizes": [len(g["params"]) for g in optimizer.param_groups], "last_epoch": lr_scheduler.last_epoch}


def test_gradient_accumulation_with_warmup_cosine():
    weights = weights_of(small_encoder)
    ours, _ = run_both(accumulation, weights, rtol=1e-4, atol=1e-5)
    assert ours["sizes"] == [2, 4] and ours["last_epoch"] == 4
    np.testing.assert_allclose(ours["lrs"], [0.0, 5e-2, 5e-2 * 0.75, 5e-2 * 0.25, 0.0], atol=1e-9)
    assert all(n > 0 for n in ours["norms"]) and len(ours["losses"]) == 10


# ----------------------------------------------------------------------------------------------
# ReduceLROnPlateau on a validation accuracy
# ----------------------------------------------------------------------------------------------


def plateau(m, weights, epochs=14):
    torch, nn = m.torch, m.nn
    model = load(m, mlp(m), weights)
    optimizer = m.optim.SGD([{"params": model[0].parameters()},
                             {"params": list(model[2].parameters()) + list(model[4].parameters()), "lr": 0.05}],
                            lr=0.2, momentum=0.9)
    scheduler = m.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1, cooldown=1,
                                                       threshold=0.01, threshold_mode="abs", min_lr=[0.02, 0.01])
    train, val = batches(m, n=4), batches(m, n=2, seed=7)
    criterion = nn.CrossEntropyLoss()
    history = []
    for epoch in range(epochs):
        model.train()
        for inputs, targets in train:
            optimizer.zero_grad()
            criterion(model(inputs), targets).backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros(())
        with torch.no_grad():
            for inputs, targets in val:
                correct += (model(inputs).argmax(1) == targets).sum()
        val_acc = correct / 16
        scheduler.step(val_acc)
        history.append((val_acc.item(), [g["lr"] for g in optimizer.param_groups], scheduler.num_bad_epochs,
                        scheduler.cooldown_counter))
    state = scheduler.state_dict()
    return {"history": history, "best": float(state["best"]), "last": scheduler.get_last_lr(),
            "mode": state["mode"], "min_lrs": state["min_lrs"]}


def test_reduce_lr_on_plateau_max_mode_with_cooldown_and_floors():
    weights = weights_of(mlp)
    ours, _ = run_both(plateau, weights, rtol=1e-5, atol=1e-6)
    lrs = [lr for _, lr, _, _ in ours["history"]]
    assert ours["mode"] == "max" and ours["min_lrs"] == [0.02, 0.01]
    assert all(a >= b for a, b in zip([x[0] for x in lrs], [x[0] for x in lrs[1:]]))
    assert lrs[-1][0] >= 0.02 and lrs[-1][1] >= 0.01 and lrs[-1] == ours["last"]


def test_reduce_lr_on_plateau_known_trajectory():
    """Without torch: mode='min', patience 1, cooldown 1, an absolute threshold, a floor."""
    w = OURS.torch.zeros(1, requires_grad=True)
    optimizer = OURS.optim.SGD([w], lr=1.0)
    scheduler = OURS.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, cooldown=1,
                                                          threshold=0.1, threshold_mode="abs", min_lr=0.2)
    lrs = []
    for metric in [1.0, 0.95, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]:
        scheduler.step(OURS.torch.tensor(metric))
        lrs.append(optimizer.param_groups[0]["lr"])
    # 0.95 is not better than 1.0 - 0.1: two bad epochs -> halve; cooldown; 0.5 improves; then
    # bad, bad -> halve to 0.25; cooldown; bad, bad -> 0.125 floored to 0.2
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2]
