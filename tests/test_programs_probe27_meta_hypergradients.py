# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors would write them)
"""Meta-learning and differentiating through optimisation, run as tests/probe27_meta_common.py says. Hypergradients
and learned optimisers: DARTS (finite-difference and exact unrolled hypergradients); unrolled hand-written Adam and
momentum SGD with hypergradients of the learning rate and weight decays; Neumann-series implicit hypergradients;
forward-mode hypergradients and ``linearize``; hypernetworks (bmm, parametrize, a dynamic convolution); learned
optimisers (GRUCell with detach_ between truncations, a two-layer nn.LSTM, an MLP over momentum features)."""

import copy
import math

import numpy as np
import pytest

from .probe27_meta_common import TIGHT, arr
from .pytorch_programs import OURS, run_both


def make_darts(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MixedOp(nn.Module):
        def __init__(self, C):
            super().__init__()
            self.ops = nn.ModuleList([nn.Identity(), nn.Conv1d(C, C, 3, padding=1, bias=False),
                                      nn.Sequential(nn.ReLU(), nn.Conv1d(C, C, 1, bias=False)),
                                      nn.AvgPool1d(3, 1, 1)])

        def forward(self, x, w):
            return sum(wi * op(x) for wi, op in zip(w, self.ops))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv1d(2, 4, 1)
            self.cells = nn.ModuleList([MixedOp(4), MixedOp(4)])
            self.head = nn.Linear(4, 2)
            self.alphas = nn.Parameter(1e-3 * torch.randn(2, 4))

        def weights(self):
            return [p for n, p in self.named_parameters() if n != "alphas"]

        def forward(self, x):
            x = self.stem(x)
            w = F.softmax(self.alphas, dim=-1)
            for i, c in enumerate(self.cells):
                x = c(x, w[i])
            return self.head(x.mean(-1))

    return Net()


def darts(m):
    """DARTS's second-order architecture step as its reference code writes it: an unrolled copy of the model
    (deepcopy, weights written with copy_ under no_grad), the Hessian-vector product by finite differences of
    the weights moved through p.data.add_, the architecture gradient set by hand, then the weight step."""
    torch, F = m.torch, m.F
    torch.manual_seed(3)
    net = make_darts(m).double()
    xt, yt = torch.tensor(arr(4, 8, 2, 6)), torch.tensor([0, 1] * 4)
    xv, yv = torch.tensor(arr(5, 8, 2, 6)), torch.tensor([1, 0] * 4)
    eta = 0.1
    arch_opt = torch.optim.Adam([net.alphas], lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    w_opt = torch.optim.SGD(net.weights(), lr=eta, momentum=0.9, weight_decay=3e-4)
    for step in range(2):
        loss = F.cross_entropy(net(xt), yt)
        theta = torch.cat([p.reshape(-1) for p in net.weights()]).detach()
        dtheta = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, net.weights())]).detach() + 3e-4 * theta
        unrolled = copy.deepcopy(net)
        offset = 0
        with torch.no_grad():
            for p in unrolled.weights():
                n = p.numel()
                p.copy_((theta - eta * dtheta)[offset:offset + n].view_as(p))
                offset += n
        ul = F.cross_entropy(unrolled(xv), yv)
        unrolled.zero_grad()
        ul.backward()
        dalpha = unrolled.alphas.grad
        vector = [p.grad.data for p in unrolled.weights()]
        R = 0.01 / torch.cat([v.view(-1) for v in vector]).norm()
        for p, v in zip(net.weights(), vector):
            p.data.add_(v, alpha=R)
        gp = torch.autograd.grad(F.cross_entropy(net(xt), yt), net.alphas)[0]
        for p, v in zip(net.weights(), vector):
            p.data.sub_(v, alpha=2 * R)
        gn = torch.autograd.grad(F.cross_entropy(net(xt), yt), net.alphas)[0]
        for p, v in zip(net.weights(), vector):
            p.data.add_(v, alpha=R)
        implicit = (gp - gn).div_(2 * R)
        dalpha.data.sub_(implicit, alpha=eta)
        net.alphas.grad = dalpha.data.clone() if net.alphas.grad is None else net.alphas.grad.copy_(dalpha)
        arch_opt.step()
        w_opt.zero_grad()
        F.cross_entropy(net(xt), yt).backward()
        torch.nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()
        arch_opt.zero_grad()
    return {"alphas": net.alphas.detach(), "w": [p.detach() for p in net.weights()]}


def darts_exact(m, alpha0=(0.0, 0.0, 0.0)):
    """The exact bilevel hypergradient: three inner steps through functional_call on candidate ops mixed by
    softmax(alpha) (create_graph), the validation loss differentiated in alpha and in the starting weights."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(4)
    ops = nn.ModuleList([nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.GELU()),
                         nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 3))]).double()
    alpha = torch.tensor(alpha0, dtype=torch.float64, requires_grad=True)
    mod = nn.ModuleDict({"ops": ops, "head": nn.Linear(3, 1).double()})

    def fwd(params, x):
        w = torch.softmax(alpha, 0)
        h = sum(w[i] * torch.func.functional_call(
            mod["ops"][i], {k.split(".", 2)[2]: v for k, v in params.items() if k.startswith(f"ops.{i}.")}, (x,))
            for i in range(3))
        return torch.func.functional_call(mod["head"], {k[5:]: v for k, v in params.items() if k.startswith("head.")},
                                          (h,))

    x, y = torch.tensor(arr(6, 7, 3)), torch.tensor(arr(7, 7, 1))
    params = dict(mod.named_parameters())
    p = params
    for _ in range(3):
        loss = F.smooth_l1_loss(fwd(p, x), y)
        g = torch.autograd.grad(loss, list(p.values()), create_graph=True)
        p = {k: v - 0.3 * gi for (k, v), gi in zip(p.items(), g)}
    val = F.huber_loss(fwd(p, x * 0.5), y, delta=0.5)
    ga, = torch.autograd.grad(val, alpha, retain_graph=True)
    gw = torch.autograd.grad(val, list(params.values()))
    return {"val": val, "ga": ga, "gw": list(gw)}


def unrolled_adam(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = torch.tensor(arr(1, 20, 5)); Y = X @ torch.tensor(arr(2, 5, 1)) + 0.1 * torch.tensor(arr(3, 20, 1))
    Xv = torch.tensor(arr(4, 10, 5)); Yv = Xv @ torch.tensor(arr(2, 5, 1))
    log_lr = torch.tensor(math.log(0.05), dtype=torch.float64, requires_grad=True)
    log_wd = torch.tensor(math.log(1e-2), dtype=torch.float64, requires_grad=True)
    hopt = torch.optim.Adam([log_lr, log_wd], lr=0.05)
    hist = []
    for outer in range(3):
        w = torch.zeros(5, 1, dtype=torch.float64, requires_grad=True)
        mbuf = torch.zeros_like(w); v = torch.zeros_like(w)
        b1, b2, eps = 0.9, 0.999, 1e-8
        for t in range(1, 6):
            loss = ((X @ w - Y) ** 2).mean() + log_wd.exp() * (w ** 2).sum()
            g, = torch.autograd.grad(loss, w, create_graph=True)
            mbuf = b1 * mbuf + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat = mbuf / (1 - b1 ** t); vhat = v / (1 - b2 ** t)
            w = w - log_lr.exp() * mhat / (vhat.sqrt() + eps)
        val = F.mse_loss(Xv @ w, Yv)
        hopt.zero_grad(); val.backward()
        hist.append((val.item(), log_lr.grad.clone(), log_wd.grad.clone()))
        hopt.step()
    return {"hist": hist, "lr": log_lr.detach(), "wd": log_wd.detach()}


def neumann_ift(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Softplus(), nn.Linear(8, 1)).double()
    wd = torch.full((sum(p.numel() for p in model.parameters()),), -3.0, dtype=torch.float64, requires_grad=True)
    X = torch.tensor(arr(5, 30, 4)); Y = torch.tensor(arr(6, 30, 1))
    Xv = torch.tensor(arr(7, 15, 4)); Yv = torch.tensor(arr(8, 15, 1))
    params = list(model.parameters())
    def train_loss():
        flat = torch.nn.utils.parameters_to_vector(params)
        return F.mse_loss(model(X), Y) + (wd.exp() * flat ** 2).sum()
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(20):
        opt.zero_grad(); train_loss().backward(); opt.step()
    val = F.mse_loss(model(Xv), Yv)
    v1 = torch.autograd.grad(val, params)
    tl = train_loss()
    dtrain = torch.autograd.grad(tl, params, create_graph=True)
    p = v = list(v1)
    for _ in range(10):
        hv = torch.autograd.grad(dtrain, params, grad_outputs=v, retain_graph=True)
        v = [v_ - 0.1 * h for v_, h in zip(v, hv)]
        p = [p_ + v_ for p_, v_ in zip(p, v)]
    v2 = [0.1 * p_ for p_ in p]
    v3 = torch.autograd.grad(dtrain, wd, grad_outputs=v2)[0]
    return {"val": val, "hyper": -v3, "v2": v2}


def hypernet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    class Hyper(nn.Module):
        def __init__(self, zdim=4):
            super().__init__()
            self.emb = nn.Embedding(3, zdim)
            self.gen = nn.Sequential(nn.Linear(zdim, 32), nn.ReLU(), nn.Linear(32, 2 * 8 + 8 + 8 * 1 + 1))
        def forward(self, task, x):
            z = self.emb(task)
            flat = self.gen(z)
            W1, b1, W2, b2 = torch.split(flat, [16, 8, 8, 1], dim=-1)
            W1 = W1.view(-1, 8, 2); W2 = W2.view(-1, 1, 8)
            h = torch.relu(torch.bmm(W1, x.transpose(1, 2)) + b1.unsqueeze(-1))
            return (torch.bmm(W2, h) + b2.unsqueeze(-1)).transpose(1, 2)
    hn = Hyper().double()
    opt = torch.optim.AdamW(hn.parameters(), lr=1e-2)
    x = torch.tensor(arr(11, 3, 6, 2)); y = torch.tensor(arr(12, 3, 6, 1))
    task = torch.arange(3)
    ls = []
    for _ in range(3):
        opt.zero_grad()
        x = x.detach().requires_grad_()
        out = hn(task, x)
        loss = F.mse_loss(out, y)
        # gradient penalty wrt generated input
        gx, = torch.autograd.grad(out.sum(), x, create_graph=True)
        loss = loss + 0.1 * gx.pow(2).sum()
        loss.backward(); opt.step(); ls.append(loss.item())
        x = x.detach()
    return {"ls": ls, "p": [p.detach() for p in hn.parameters()]}


def forward_hyper(m):
    torch, nn, F = m.torch, m.nn, m.F
    fwAD = torch.autograd.forward_ad
    X = torch.tensor(arr(33, 10, 3)); Y = torch.tensor(arr(34, 10))
    Xv = torch.tensor(arr(35, 5, 3)); Yv = torch.tensor(arr(36, 5))
    with fwAD.dual_level():
        lr = fwAD.make_dual(torch.tensor(0.1, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
        w = torch.zeros(3, dtype=torch.float64)
        for _ in range(4):
            # gradient by hand (forward mode cannot nest reverse on duals here)
            g = 2 * X.t() @ (X @ w - Y) / 10
            w = w - lr * g
        val = ((Xv @ w - Yv) ** 2).mean()
        p, t = fwAD.unpack_dual(val)
    # reverse for reference
    lr2 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(3, dtype=torch.float64)
    for _ in range(4):
        w = w - lr2 * (2 * X.t() @ (X @ w - Y) / 10)
    val2 = ((Xv @ w - Yv) ** 2).mean()
    r, = torch.autograd.grad(val2, lr2)
    # forward-over-reverse hvp with torch.func
    def loss(w):
        return torch.nn.functional.softplus(X @ w - Y).sum()
    w0 = torch.tensor(arr(37, 3)); v = torch.tensor(arr(38, 3))
    hvp = torch.func.jvp(torch.func.grad(loss), (w0,), (v,))[1]
    lin_out, jvp_fn = torch.func.linearize(torch.func.grad(loss), w0)
    return {"p": p, "t": t, "r": r, "hvp": hvp, "lin": jvp_fn(v)}


def gru_opt(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(11)
    class LOpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(2, 6)
            self.out = nn.Linear(6, 1)
            self.out.weight.data.mul_(0.1)
            self.out.bias.data.zero_()
        def forward(self, g, h):
            k = 10.0
            logg = torch.clamp(torch.log(g.abs() + 1e-8) / k, min=-1.0)
            sgn = torch.clamp(g * math.exp(k), -1.0, 1.0)
            inp = torch.stack([logg, sgn], -1)
            h = self.cell(inp, h)
            return self.out(h).squeeze(-1), h
    lopt = LOpt().double()
    meta_opt = torch.optim.RMSprop(lopt.parameters(), lr=1e-3)
    A = torch.tensor(arr(45, 6, 4)); b = torch.tensor(arr(46, 6))
    for ep in range(2):
        theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        h = torch.zeros(4, 6, dtype=torch.float64)
        total = 0
        for t in range(6):
            loss = ((A @ theta - b) ** 2).sum()
            total = total + loss
            g, = torch.autograd.grad(loss, theta, retain_graph=True)
            upd, h = lopt(g.detach(), h)
            theta = theta + upd
            theta.retain_grad()
            if (t + 1) % 3 == 0:
                meta_opt.zero_grad()
                total.backward()
                meta_opt.step()
                total = 0
                theta = theta.detach().requires_grad_()
                h.detach_()
    return {"theta": theta.detach(), "p": [p.detach() for p in lopt.parameters()], "h": h}


def parametrize_hyper(m):
    torch, nn, F = m.torch, m.nn, m.F
    P = torch.nn.utils.parametrize
    torch.manual_seed(16)
    class HyperWeight(nn.Module):
        def __init__(self, shape, z=3):
            super().__init__()
            self.shape = shape
            self.z = nn.Parameter(torch.randn(z))
            self.gen = nn.Linear(z, shape[0] * shape[1])
        def forward(self, W):
            return W + self.gen(self.z).view(self.shape)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    P.register_parametrization(net[0], "weight", HyperWeight((4, 3)).double())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.tensor(arr(71, 5, 3)); y = torch.tensor(arr(72, 5, 2))
    for _ in range(3):
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        gx = torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
        (loss + 0.01 * sum(g.pow(2).sum() for g in gx)).backward()
        opt.step()
    names = [n for n, _ in net.named_parameters()]
    with P.cached():
        w = net[0].weight
    return {"names": names, "w": w, "p": [p.detach() for p in net.parameters()], "sd": sorted(net.state_dict().keys())}


def wd_hyper(m):
    """per-parameter weight-decay tuned by hypergradient; params written in place under no_grad each outer step"""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(17)
    net = nn.Sequential(nn.Linear(4, 6), nn.Softsign(), nn.Linear(6, 1)).double()
    # (versions counted from here: chainrule's cast moves them on by one, PyTorch's .data = does not, see
    # tests/test_programs_moduleapi_state.py)
    start = [t._version for t in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    log_wd = {n: torch.full((), -4.0, dtype=torch.float64, requires_grad=True) for n in names}
    hopt = torch.optim.SGD(log_wd.values(), lr=0.5)
    X = torch.tensor(arr(73, 16, 4)); Y = torch.tensor(arr(74, 16, 1))
    Xv = torch.tensor(arr(75, 8, 4)); Yv = torch.tensor(arr(76, 8, 1))
    hist = []
    for outer in range(3):
        p = {n: t for n, t in net.named_parameters()}
        buf = {n: torch.zeros_like(t) for n, t in p.items()}
        for k in range(3):
            loss = F.mse_loss(torch.func.functional_call(net, p, X), Y)
            loss = loss + sum(log_wd[n].exp() * p[n].pow(2).sum() for n in names)
            gs = torch.autograd.grad(loss, list(p.values()), create_graph=True)
            buf = {n: 0.9 * buf[n] + g for n, g in zip(names, gs)}
            p = {n: p[n] - 0.1 * buf[n] for n in names}
        val = F.mse_loss(torch.func.functional_call(net, p, Xv), Yv)
        hopt.zero_grad()
        val.backward(inputs=list(log_wd.values()))
        hopt.step()
        with torch.no_grad():
            for n, t in net.named_parameters():
                t.copy_(p[n])
        hist.append(val.item())
        assert all(t.grad is None for t in net.parameters())
    return {"hist": hist, "wd": [v.detach() for v in log_wd.values()], "params": [t.detach() for t in net.parameters()],
            "vers": [t._version - v for t, v in zip(net.parameters(), start)]}


def lstm_lopt(m):
    """L2L with nn.LSTM over coordinates as batch, hidden detached between unrolls"""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(19)
    class Opt(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(1, 6, num_layers=2)
            self.out = nn.Linear(6, 1)
        def forward(self, g, hidden):
            o, hidden = self.lstm(g.view(1, -1, 1), hidden)
            return self.out(o).view(-1) * 0.1, hidden
    lo = Opt().double()
    mopt = torch.optim.Adam(lo.parameters(), lr=1e-3)
    W = torch.tensor(arr(94, 5, 3)); Y = torch.tensor(arr(95, 5))
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    hidden = None
    for unroll in range(2):
        total = 0
        for t in range(4):
            loss = ((W @ theta - Y) ** 2).sum()
            total = total + loss
            g, = torch.autograd.grad(loss, theta, retain_graph=True)
            upd, hidden = lo(g.detach(), hidden)
            theta = theta + upd
        mopt.zero_grad(); total.backward(); mopt.step()
        theta = theta.detach().requires_grad_()
        hidden = tuple(h.detach() for h in hidden)
    return {"theta": theta, "hidden": list(hidden), "p": [p.detach() for p in lo.parameters()]}


def dyn_conv(m):
    """Dynamic filters from a hypernetwork: per-sample convolution by the groups trick, an input-gradient penalty,
    batched weights through einsum, and a transposed convolution with the generated weights."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(32)
    B, C, O, K = 3, 2, 4, 3
    hyper = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, O * C * K * K + O)).double()
    z = torch.tensor(arr(1, B, 5)); x = torch.tensor(arr(2, B, C, 6, 6), requires_grad=True)
    flat = hyper(z)
    w = flat[:, :O * C * K * K].reshape(B * O, C, K, K); b = flat[:, O * C * K * K:].reshape(-1)
    y = F.conv2d(x.reshape(1, B * C, 6, 6), w, b, padding=1, groups=B).reshape(B, O, 6, 6)
    y = F.leaky_relu(y, 0.1)
    gx, = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    pen = gx.pow(2).mean()
    W = torch.einsum("bi,ij->bj", z, torch.tensor(arr(3, 5, 12))).reshape(B, 3, 4)
    e = torch.einsum("bij,bcj->bci", W, y.flatten(2)[:, :, :4].tanh())
    loss = pen + e.pow(2).mean() + F.conv_transpose2d(y, w[:O], stride=2).pow(2).mean()
    g = torch.autograd.grad(loss, list(hyper.parameters()) + [x])
    return {"loss": loss, "g": list(g)}


def mlp_lopt(m):
    """A per-parameter MLP learned optimizer (learned_optimization's features: momenta at three timescales by lerp,
    an rsqrt-normalised gradient, clipped gradient, the parameter and the step), second-order through the
    optimizee's gradients, the meta-gradient clipped by value."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(34)
    decays = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    lopt = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    mopt = torch.optim.Adam(lopt.parameters(), lr=1e-3)
    A = torch.tensor(arr(1, 8, 4)); b = torch.tensor(arr(2, 8))
    for outer in range(2):
        w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        mom = torch.zeros(4, 3, dtype=torch.float64); rms = torch.zeros(4, dtype=torch.float64)
        meta_loss = 0
        for t in range(4):
            loss = F.smooth_l1_loss(A @ w, b)
            g, = torch.autograd.grad(loss, w, create_graph=True)
            mom = torch.lerp(mom, g.unsqueeze(-1).expand(-1, 3), 1 - decays)
            rms = 0.999 * rms + 0.001 * g * g
            feats = torch.cat([g.unsqueeze(-1), mom, (g * torch.rsqrt(rms + 1e-8)).unsqueeze(-1), w.unsqueeze(-1),
                               torch.clip(g, -0.1, 0.1).unsqueeze(-1), torch.full_like(g, t / 4.0).unsqueeze(-1)], -1)
            feats = feats / (feats.pow(2).mean(0, keepdim=True) + 1e-8).sqrt()
            out = lopt(torch.nan_to_num(feats))
            direction, magnitude = out[:, 0], out[:, 1]
            step = direction * torch.exp(magnitude * 1e-3) * 1e-2
            w = w - step
            meta_loss = meta_loss + F.smooth_l1_loss(A @ w, b)
        mopt.zero_grad(); (meta_loss / 4).backward()
        torch.nn.utils.clip_grad_value_(lopt.parameters(), 1.0)
        mopt.step()
    return {"w": w.detach(), "p": [p.detach() for p in lopt.parameters()], "ml": meta_loss}


def test_darts_finite_difference_architecture_step():
    ours, _ = run_both(darts, **TIGHT)
    np.testing.assert_allclose(ours["alphas"][0], [0.006751766145796109, -0.004865607352406963,
                                                   -0.0061066384952775075, 0.005948612738653701], rtol=1e-7)


def test_darts_exact_hypergradient_equals_finite_differences():
    ours, _ = run_both(darts_exact, **TIGHT)
    eps = 1e-6
    for i in range(3):
        plus, minus = [0.0] * 3, [0.0] * 3
        plus[i], minus[i] = eps, -eps
        slope = (darts_exact(OURS, tuple(plus))["val"].item() - darts_exact(OURS, tuple(minus))["val"].item()) / (2 * eps)
        assert ours["ga"][i] == pytest.approx(slope, rel=1e-5, abs=1e-9)


def test_unrolled_hand_written_adam_hypergradients():
    ours, _ = run_both(unrolled_adam, **TIGHT)
    np.testing.assert_allclose([h[0] for h in ours["hist"]], [13.529967014918252, 13.45103411319688, 13.3696066663082],
                               rtol=1e-9)


def test_neumann_series_implicit_hypergradient():
    ours, _ = run_both(neumann_ift, **TIGHT)
    assert ours["val"] == pytest.approx(1.6758976557803886, rel=1e-9)
    assert ours["hyper"].sum() == pytest.approx(-0.04481831832099228, rel=1e-7)


def test_hypernetwork_with_input_gradient_penalty():
    ours, _ = run_both(hypernet, **TIGHT)
    np.testing.assert_allclose(ours["ls"], [1.1869745574552362, 1.0296855660179223, 0.8852059298873125], rtol=1e-9)


def test_forward_mode_hypergradient_and_linearize():
    ours, _ = run_both(forward_hyper, **TIGHT)
    assert ours["t"] == pytest.approx(ours["r"], rel=1e-10)  # forward mode's tangent is reverse mode's gradient
    np.testing.assert_allclose(ours["hvp"], ours["lin"], rtol=1e-12)


def test_gru_cell_learned_optimizer_truncated_with_detach_():
    ours, _ = run_both(gru_opt, **TIGHT)
    np.testing.assert_allclose(ours["theta"], [0.1091102820779456, 0.34217286166252237, 0.5012156401498042,
                                               -0.07999009376264274], rtol=1e-8)


def test_hypernetwork_as_a_parametrization():
    ours, _ = run_both(parametrize_hyper, **TIGHT)
    assert ours["names"][1:3] == ["0.parametrizations.weight.original", "0.parametrizations.weight.0.z"]


def test_weight_decay_hypergradient_with_no_grad_writes_between_outer_steps():
    ours, _ = run_both(wd_hyper, **TIGHT)
    np.testing.assert_allclose(ours["hist"], [1.4669892976479852, 1.420387483440586, 1.391252190266817], rtol=1e-9)
    assert ours["vers"] == [3, 3, 3, 3]  # three copy_ after the cast


def test_two_layer_lstm_learned_optimizer():
    ours, _ = run_both(lstm_lopt, **TIGHT)
    np.testing.assert_allclose(ours["theta"], [0.03261619796791196, 0.022128753741609154, 0.02275098391207242],
                               rtol=1e-8)


def test_dynamic_convolution_from_a_hypernetwork():
    ours, _ = run_both(dyn_conv, **TIGHT)
    assert ours["loss"] == pytest.approx(4.051715277004383, rel=1e-9)
    assert ours["g"][0].sum() == pytest.approx(11.938297611296123, rel=1e-8)


def test_mlp_learned_optimizer_with_momentum_features():
    ours, _ = run_both(mlp_lopt, **TIGHT)
    assert ours["ml"] == pytest.approx(2.2345496723824305, rel=1e-9)
    np.testing.assert_allclose(ours["w"], [-0.004109985474971715, -0.006834806719988092, -0.00262612230690357,
                                           -0.02307816392645598], rtol=1e-7)
