# ruff: noqa: B007, E501, E701, E702, F841  (the programs are kept as their authors would write them)
"""Meta-learning and differentiating through optimisation, run as tests/probe27_meta_common.py says. Few-shot
meta-learning: MAML through torch.func.functional_call on conv / BatchNorm / LayerNorm and on GRU + attention nets
(second order), in torch.func alone (nested grads) and MAML++'s per-step BatchNorm rows; functional_call updating
given buffers; Meta-SGD; Reptile (state dicts, p.data, in-place writes under no_grad, parameters_to_vector);
learn2learn's clone_module / update_module; a ridge-regression head (MetaOptNet) with a learned lambda;
conjugate-gradient implicit hypergradients (iMAML)."""

import copy

import numpy as np
import pytest

from .probe27_meta_common import TIGHT, arr
from .pytorch_programs import OURS, run_both


def maml_conv(m):
    """MAML through torch.func.functional_call on a conv / BatchNorm (batch statistics) / LayerNorm net, second
    order, two inner steps, SGD on the meta-gradient."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4, track_running_stats=False)
            self.ln = nn.LayerNorm(4 * 16)
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            x = F.relu(self.bn(self.conv(x)))
            x = F.max_pool2d(x, 2).flatten(1)
            return self.fc(torch.tanh(self.ln(x)))

    net = Net().double()
    params = {k: v for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    xs, ys = torch.tensor(arr(1, 6, 1, 8, 8)), torch.tensor([0, 1, 2, 0, 1, 2])
    xq, yq = torch.tensor(arr(2, 6, 1, 8, 8)), torch.tensor([2, 1, 0, 2, 1, 0])
    out = []
    for step in range(2):
        fast = params
        for _ in range(2):
            loss = F.cross_entropy(torch.func.functional_call(net, fast, (xs,)), ys)
            grads = torch.autograd.grad(loss, fast.values(), create_graph=True)
            fast = {k: w - 0.4 * g for (k, w), g in zip(fast.items(), grads)}
        qloss = F.cross_entropy(torch.func.functional_call(net, fast, (xq,)), yq)
        opt.zero_grad()
        qloss.backward()
        opt.step()
        out.append(qloss.detach())
    return {"losses": out, "grads": [p.grad for p in net.parameters()], "params": [p.detach() for p in net.parameters()]}


def meta_sgd(m):
    """Meta-SGD (Li et al.): a learned learning rate per parameter entry, trained with the weights by Adam."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    lrs = nn.ParameterList([nn.Parameter(torch.full_like(p, 0.05)) for p in model.parameters()])
    opt = torch.optim.Adam(list(model.parameters()) + list(lrs.parameters()), lr=1e-2)
    x = torch.tensor(arr(3, 10, 2))
    y = torch.sin(x.sum(1, keepdim=True))
    res = []
    for it in range(3):
        names = [n for n, _ in model.named_parameters()]
        ws = list(model.parameters())
        loss = F.mse_loss(torch.func.functional_call(model, dict(zip(names, ws)), x[:5]), y[:5])
        gs = torch.autograd.grad(loss, ws, create_graph=True)
        fast = [w - a * g for w, a, g in zip(ws, lrs, gs)]
        ql = F.mse_loss(torch.func.functional_call(model, dict(zip(names, fast)), x[5:]), y[5:])
        opt.zero_grad()
        ql.backward()
        opt.step()
        res.append(ql.item())
    return {"res": res, "lr_grads": [a.grad for a in lrs], "lrs": [a.detach() for a in lrs]}


def reptile(m):
    """Reptile (Nichol et al.'s sine-wave script): deepcopy of the state dict, inner SGD through p.data, the
    interpolated state loaded back; then a meta copy moved by in-place ops under no_grad."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 1))
    rng = np.random.default_rng(5)
    for outer in range(3):
        weights_before = copy.deepcopy(model.state_dict())
        amp, ph = rng.uniform(0.5, 2), rng.uniform(0, 3)
        xb = torch.tensor(rng.uniform(-5, 5, (10, 1)), dtype=torch.float32)
        yb = amp * torch.sin(xb + ph)
        for _ in range(3):
            model.zero_grad()
            loss = F.mse_loss(model(xb), yb)
            loss.backward()
            for p in model.parameters():
                p.data -= 0.02 * p.grad.data
        weights_after = model.state_dict()
        eps = 0.1 * (1 - outer / 3)
        model.load_state_dict({name: weights_before[name] + (weights_after[name] - weights_before[name]) * eps
                               for name in weights_before})
    meta = copy.deepcopy(model)
    with torch.no_grad():
        for p, q in zip(meta.parameters(), model.parameters()):
            p.add_(q - p.clone().mul_(0.5), alpha=0.3)
            p.mul_(0.9).addcmul_(q, q, value=0.01)
    return {"sd": dict(model.state_dict()), "meta": [p.detach() for p in meta.parameters()],
            "rg": [p.requires_grad for p in meta.parameters()], "leaf": [p.is_leaf for p in meta.parameters()]}


def l2l(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    def clone_module(module, memo=None):
        if memo is None:
            memo = {}
        if not isinstance(module, torch.nn.Module):
            return module
        clone = module.__new__(type(module))
        clone.__dict__ = module.__dict__.copy()
        clone._parameters = clone._parameters.copy()
        clone._buffers = clone._buffers.copy()
        clone._modules = clone._modules.copy()
        if hasattr(clone, '_parameters'):
            for param_key in module._parameters:
                if module._parameters[param_key] is not None:
                    param = module._parameters[param_key]
                    param_ptr = param.data_ptr
                    if param_ptr in memo:
                        clone._parameters[param_key] = memo[param_ptr]
                    else:
                        cloned = param.clone()
                        clone._parameters[param_key] = cloned
                        memo[param_ptr] = cloned
        if hasattr(clone, '_buffers'):
            for buffer_key in module._buffers:
                if clone._buffers[buffer_key] is not None and clone._buffers[buffer_key].requires_grad:
                    clone._buffers[buffer_key] = module._buffers[buffer_key].clone()
        if hasattr(clone, '_modules'):
            for module_key in clone._modules:
                clone._modules[module_key] = clone_module(module._modules[module_key], memo=memo)
        if hasattr(clone, 'flatten_parameters'):
            clone = clone._apply(lambda x: x)
        return clone
    def update_module(module, updates=None, memo=None):
        if memo is None:
            memo = {}
        if updates is not None:
            params = list(module.parameters())
            for p, g in zip(params, updates):
                p.update = g
        for param_key in module._parameters:
            p = module._parameters[param_key]
            if p in memo:
                module._parameters[param_key] = memo[p]
            else:
                if p is not None and hasattr(p, 'update') and p.update is not None:
                    updated = p + p.update
                    p.update = None
                    memo[p] = updated
                    module._parameters[param_key] = updated
        for module_key in module._modules:
            module._modules[module_key] = update_module(module._modules[module_key], updates=None, memo=memo)
        if hasattr(module, 'flatten_parameters'):
            module._apply(lambda x: x)
        return module
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3)).double()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    X = torch.tensor(arr(20, 12, 4)); Yl = torch.tensor([0, 1, 2] * 4)
    out = []
    for it in range(2):
        opt.zero_grad()
        total = 0.0
        for task in range(2):
            learner = clone_module(model)
            for step in range(2):
                loss = F.cross_entropy(learner(X[:6] + task), Yl[:6])
                grads = torch.autograd.grad(loss, learner.parameters(), retain_graph=True, create_graph=True, allow_unused=True)
                learner = update_module(learner, updates=[-0.5 * g for g in grads])
            ev = F.cross_entropy(learner(X[6:] + task), Yl[6:])
            ev.backward()
            total += ev.item()
            out.append([type(p).__name__ for p in learner.parameters()])
        for p in model.parameters():
            p.grad.data.mul_(1.0 / 2)
        opt.step()
        out.append(total)
    return {"out": out, "g": [p.grad for p in model.parameters()], "p": [p.detach() for p in model.parameters()]}


def ridge_head(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(7)
    enc = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.AdaptiveAvgPool1d(2), nn.Flatten()).double()
    log_lam = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    opt = torch.optim.SGD(list(enc.parameters()) + [log_lam, scale], lr=0.05, momentum=0.9, nesterov=True)
    xs = torch.tensor(arr(26, 6, 1, 10)); ys = torch.tensor([0, 1, 2, 0, 1, 2])
    xq = torch.tensor(arr(27, 6, 1, 10)); yq = torch.tensor([1, 2, 0, 0, 2, 1])
    res = []
    for it in range(3):
        zs, zq = enc(xs), enc(xq)
        Y = F.one_hot(ys, 3).double()
        K = zs @ zs.t()
        alpha = torch.linalg.solve(K + log_lam.exp() * torch.eye(6, dtype=torch.float64), Y)
        W = zs.t() @ alpha
        logits = scale * (zq @ W)
        loss = F.cross_entropy(logits, yq)
        protos = torch.stack([zs[ys == c].mean(0) for c in range(3)])
        d = ((zq.unsqueeze(1) - protos.unsqueeze(0)) ** 2).sum(-1)  # (cdist has no double backward)
        loss = loss + F.cross_entropy(-d, yq)
        g = torch.autograd.grad(loss, list(enc.parameters()), create_graph=True)
        loss = loss + 1e-3 * sum(gi.pow(2).sum() for gi in g)
        opt.zero_grad(); loss.backward(); opt.step()
        res.append(loss.item())
    return {"res": res, "p": [p.detach() for p in enc.parameters()], "lam": log_lam.detach(), "rm": enc[1].running_mean}


def imaml(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(2, 10), nn.SiLU(), nn.Linear(10, 1)).double()
    meta = [p.detach().clone().requires_grad_() for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    lam = 2.0
    xs = torch.tensor(arr(28, 8, 2)); ys = torch.tensor(arr(29, 8, 1))
    xq = torch.tensor(arr(30, 8, 2)); yq = torch.tensor(arr(31, 8, 1))
    def fl(ps, x):
        return torch.func.functional_call(net, dict(zip(names, ps)), (x,))
    # inner: solve proximal problem by GD on detached copies
    fast = [p.detach().clone().requires_grad_(True) for p in meta]
    inner = torch.optim.SGD(fast, lr=0.1)
    for _ in range(15):
        inner.zero_grad()
        l = F.mse_loss(fl(fast, xs), ys) + lam / 2 * sum(((a - b.detach()) ** 2).sum() for a, b in zip(fast, meta))
        l.backward(); inner.step()
    qloss = F.mse_loss(fl(fast, xq), yq)
    gq = torch.autograd.grad(qloss, fast)
    gq_flat = torch.cat([g.reshape(-1) for g in gq])
    tl = F.mse_loss(fl(fast, xs), ys)
    gtr = torch.autograd.grad(tl, fast, create_graph=True)
    gtr_flat = torch.cat([g.reshape(-1) for g in gtr])
    def Av(v):
        hv = torch.autograd.grad(gtr_flat, fast, grad_outputs=v, retain_graph=True)
        return v + torch.cat([h.reshape(-1) for h in hv]) / lam
    x = torch.zeros_like(gq_flat); r = gq_flat.clone(); p = r.clone(); rs = r.dot(r)
    for _ in range(10):
        Ap = Av(p); a = rs / p.dot(Ap)
        x = x + a * p; r = r - a * Ap
        rs_new = r.dot(r)
        if rs_new.sqrt() < 1e-12: break
        p = r + (rs_new / rs) * p; rs = rs_new
    meta_grads = []
    off = 0
    for mp in meta:
        n = mp.numel(); meta_grads.append(x[off:off + n].view_as(mp)); off += n
    for mp, g in zip(meta, meta_grads):
        mp.grad = g.clone()
    mo = torch.optim.Adam(meta, lr=0.01)
    mo.step()
    return {"x": x, "meta": [p.detach() for p in meta], "q": qloss}


def bn_functional(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(15)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    params = dict(net.named_parameters())
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    x = torch.tensor(arr(70, 6, 3))
    out = torch.func.functional_call(net, (params, buffers), (x,))
    g = torch.autograd.grad(out.sum(), list(params.values()), create_graph=True)
    fast = {k: v - 0.1 * gi for (k, v), gi in zip(params.items(), g)}
    out2 = torch.func.functional_call(net, {**fast, **buffers}, x)
    loss = out2.pow(2).mean()
    loss.backward()
    return {"buffers": buffers, "module_buffers": dict(net.named_buffers()), "grads": [p.grad for p in net.parameters()], "out2": out2}


def maml_seq(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(18)
    class SeqNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(2, 5, batch_first=True)
            self.att = nn.MultiheadAttention(5, 1, batch_first=True)
            self.norm = nn.LayerNorm(5)
            self.head = nn.Linear(5, 1)
        def forward(self, x):
            h, _ = self.rnn(x)
            a, _ = self.att(h, h, h)
            return self.head(self.norm(h + a)[:, -1])
    net = SeqNet().double()
    params = dict(net.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    xs = torch.tensor(arr(90, 4, 6, 2)); ys = torch.tensor(arr(91, 4, 1))
    xq = torch.tensor(arr(92, 4, 6, 2)); yq = torch.tensor(arr(93, 4, 1))
    out = []
    for it in range(2):
        fast = params
        for _ in range(2):
            l = F.mse_loss(torch.func.functional_call(net, fast, (xs,)), ys)
            g = torch.autograd.grad(l, fast.values(), create_graph=True)
            fast = {k: v - 0.2 * gi for (k, v), gi in zip(fast.items(), g)}
        ql = F.mse_loss(torch.func.functional_call(net, fast, (xq,)), yq)
        opt.zero_grad(); ql.backward(); opt.step()
        out.append(ql.detach())
    # the module's own parameters are back after functional_call
    plain = net(xq)
    return {"out": out, "g": [p.grad for p in net.parameters()], "plain": plain}


def vec_params_reptile(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(20)
    net = nn.Sequential(nn.Conv1d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 2)).double()
    start = [p._version for p in net.parameters()]  # (counted from the cast on, as in wd_hyper)
    x = torch.tensor(arr(96, 4, 1, 8)); y = torch.tensor([0, 1, 1, 0])
    meta_vec = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    for outer in range(2):
        torch.nn.utils.vector_to_parameters(meta_vec, net.parameters())
        inner = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            inner.zero_grad(); F.cross_entropy(net(x + outer), y).backward(); inner.step()
        new_vec = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
        meta_vec.add_(new_vec - meta_vec, alpha=0.5)
    return {"meta": meta_vec, "params": [p.detach() for p in net.parameters()], "vers": [p._version - v for p, v in zip(net.parameters(), start)],
            "leaf": [p.is_leaf for p in net.parameters()]}


def func_maml_nested(m, layer_norm=False, use_vmap=True):
    """MAML written in torch.func alone: grad of a vmap over tasks of an adaptation by tf.grad (two inner steps),
    and the autograd.grad(create_graph=True) loop over tasks that must give the same meta-gradient."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = torch.func
    torch.manual_seed(24)
    layers = [nn.Linear(2, 8), nn.SiLU()] + ([nn.LayerNorm(8)] if layer_norm else []) + [nn.Linear(8, 1)]
    net = nn.Sequential(*layers).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    xs, ys = torch.tensor(arr(1, 3, 5, 2)), torch.tensor(arr(2, 3, 5, 1))
    xq, yq = torch.tensor(arr(3, 3, 5, 2)), torch.tensor(arr(4, 3, 5, 1))

    def inner_loss(p, x, y):
        return F.mse_loss(tf.functional_call(net, p, (x,)), y)

    def adapt(p, x, y):
        for _ in range(2):
            g = tf.grad(inner_loss)(p, x, y)
            p = {k: p[k] - 0.1 * g[k] for k in p}
        return p

    def outer(p, xs, ys, xq, yq):
        return inner_loss(adapt(p, xs, ys), xq, yq)

    if use_vmap:
        def meta_loss(p):
            return tf.vmap(outer, in_dims=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq).mean()
    else:
        def meta_loss(p):
            return sum(outer(p, xs[i], ys[i], xq[i], yq[i]) for i in range(3)) / 3
    meta_g, val = tf.grad_and_value(meta_loss)(params)
    ps = {k: v.clone().requires_grad_() for k, v in params.items()}
    total = 0
    for i in range(3):
        p = ps
        for _ in range(2):
            gs = torch.autograd.grad(inner_loss(p, xs[i], ys[i]), list(p.values()), create_graph=True)
            p = {k: v - 0.1 * gi for (k, v), gi in zip(p.items(), gs)}
        total = total + inner_loss(p, xq[i], yq[i])
    looped = dict(zip(ps, torch.autograd.grad(total / 3, list(ps.values()))))
    return {"meta_g": meta_g, "val": val, "looped": looped}


def maml_pp(m):
    """MAML++ (Antoniou et al.): per-step BatchNorm statistics kept as rows of a buffer and updated through
    F.batch_norm on a row (a view), per-step weights and biases, learned per-layer per-step learning rates (LSLR)
    in a ParameterDict, and the multi-step loss weighted by importance."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(33)
    steps = 3
    class MetaBN(nn.Module):
        def __init__(self, C):
            super().__init__()
            self.register_buffer("running_mean", torch.zeros(steps, C))
            self.register_buffer("running_var", torch.ones(steps, C))
            self.weight = nn.Parameter(torch.ones(steps, C))
            self.bias = nn.Parameter(torch.zeros(steps, C))
        def forward(self, x, step, params=None):
            w, b = (self.weight, self.bias) if params is None else params
            return F.batch_norm(x, self.running_mean[step], self.running_var[step], w[step], b[step], training=True, momentum=0.1)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3)
            self.bn = MetaBN(3)
            self.fc = nn.Linear(3, 2)
        def forward(self, x, step, p):
            x = F.conv2d(x, p["conv.weight"], p["conv.bias"])
            x = F.relu(self.bn(x, step, (p["bn.weight"], p["bn.bias"])))
            return F.linear(x.mean((2, 3)), p["fc.weight"], p["fc.bias"])
    net = Net().double()
    names = [n for n, _ in net.named_parameters()]
    lslr = nn.ParameterDict({n.replace(".", "-"): nn.Parameter(torch.full((steps + 1,), 0.1, dtype=torch.float64)) for n in names})
    opt = torch.optim.Adam(list(net.parameters()) + list(lslr.parameters()), lr=1e-3)
    xs = torch.tensor(arr(1, 4, 1, 5, 5)); ys = torch.tensor([0, 1, 0, 1])
    xq = torch.tensor(arr(2, 4, 1, 5, 5)); yq = torch.tensor([1, 0, 1, 0])
    importance = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    for epoch in range(2):
        p = dict(net.named_parameters())
        total = 0
        for s in range(steps):
            loss = F.cross_entropy(net(xs, s, p), ys)
            g = torch.autograd.grad(loss, list(p.values()), create_graph=True)
            p = {n: w - lslr[n.replace(".", "-")][s] * gi for (n, w), gi in zip(p.items(), g)}
            total = total + importance[s] * F.cross_entropy(net(xq, s, p), yq)
        opt.zero_grad(); total.backward(); opt.step()
    return {"rm": net.bn.running_mean, "rv": net.bn.running_var, "lslr": [v.detach() for v in lslr.values()], "total": total}


# ----------------------------------------------------------------------------------------------
# the tests: each program on both libraries, and what must hold without PyTorch
# ----------------------------------------------------------------------------------------------


def test_maml_functional_call_conv_batchnorm_layernorm():
    ours, _ = run_both(maml_conv, **TIGHT)
    np.testing.assert_allclose(ours["losses"], [1.0745943110235008, 0.6743038587348719], rtol=1e-9)
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in ours["grads"])


def test_meta_sgd_learned_learning_rates():
    ours, _ = run_both(meta_sgd, **TIGHT)
    np.testing.assert_allclose(ours["res"], [0.41048404849558634, 0.3373742229144646, 0.27990921087856196], rtol=1e-9)
    assert all(np.abs(g).sum() > 0 for g in ours["lr_grads"])  # the learning rates are learned


def test_reptile_state_dicts_and_in_place_writes():
    ours, _ = run_both(reptile, rtol=1e-5, atol=1e-6)  # float32, as the script runs
    assert ours["rg"] == [True] * 4 and ours["leaf"] == [True] * 4
    assert ours["sd"]["2.bias"][0] == pytest.approx(-0.13238583505153656, rel=1e-5)


def test_learn2learn_clone_and_update_module():
    ours, _ = run_both(l2l, **TIGHT)
    assert ours["out"][2] == pytest.approx(2.3284948408327812, rel=1e-9)
    assert ours["out"][0] == ["Tensor"] * 6  # the updated learner holds tensors that are not Parameters


def test_ridge_regression_head_with_learned_lambda():
    ours, _ = run_both(ridge_head, **TIGHT)
    np.testing.assert_allclose(ours["res"], [2.4180573765803057, 2.2420196120799987, 2.170981586619607], rtol=1e-9)


def test_imaml_conjugate_gradient():
    ours, _ = run_both(imaml, **TIGHT)
    assert ours["q"] == pytest.approx(0.35789641403281874, rel=1e-9)
    np.testing.assert_allclose(ours["x"][:3], [0.01940560196073964, -0.0036950508975726803, -0.006554661185009808],
                               rtol=1e-7)


def test_functional_call_updates_given_buffers():
    ours, _ = run_both(bn_functional, **TIGHT)
    assert ours["buffers"]["1.num_batches_tracked"] == 2 and ours["module_buffers"]["1.num_batches_tracked"] == 0
    np.testing.assert_allclose(ours["module_buffers"]["1.running_var"], np.ones(4))


def test_maml_over_gru_and_attention():
    ours, _ = run_both(maml_seq, **TIGHT)
    np.testing.assert_allclose(ours["out"], [0.9480754960339846, 0.5518182689484288], rtol=1e-9)


def test_reptile_through_parameters_to_vector():
    ours, _ = run_both(vec_params_reptile, **TIGHT)
    assert ours["meta"].sum() == pytest.approx(-1.3076350611837488, rel=1e-9)
    assert ours["vers"] == [6, 6, 6, 6] and ours["leaf"] == [True] * 4


@pytest.mark.parametrize("use_vmap", [False, True])
def test_maml_in_torch_func_alone(use_vmap):
    ours, _ = run_both(func_maml_nested, use_vmap=use_vmap, **TIGHT)
    for k, g in ours["looped"].items():
        np.testing.assert_allclose(ours["meta_g"][k], g, rtol=1e-10, atol=1e-14)


def test_maml_in_torch_func_through_layer_norm():
    """The same with a LayerNorm: compared with the autograd.grad loop only. PyTorch 2.x's vmap of grad of grad
    through layer_norm gives a meta-gradient 2% off its own loop (0.3749 for 0.3915 here); ours is the loop's."""
    ours = func_maml_nested(OURS, layer_norm=True)
    for k, g in ours["looped"].items():
        np.testing.assert_allclose(ours["meta_g"][k].numpy(), g.numpy(), rtol=1e-10, atol=1e-14)
    assert ours["meta_g"]["0.weight"][0, 0].item() == pytest.approx(0.3914642656633732, rel=1e-9)


def test_maml_plus_plus_per_step_batch_norm_rows():
    ours, _ = run_both(maml_pp, **TIGHT)
    assert ours["total"] == pytest.approx(0.7891948230632566, rel=1e-9)
    rm = ours["rm"]  # each step's row of the buffer moved, through F.batch_norm on the row
    assert np.abs(rm).min() > 1e-3 and not np.allclose(rm[0], rm[1])
    np.testing.assert_allclose(rm[2], [-0.00855894274909414, 0.08802937920048563, 0.07961928372130764], rtol=1e-8)
