# ruff: noqa: B007, B020, E501, E701, F841, UP039  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. fast.ai part 2 (miniai): Kaiming-init
statistics through layers; a Learner with callbacks and forward hooks collecting means, stds and ``.abs().histc``
histograms over a GeneralRelu (``sub_``, ``clamp_max_``) network, LSUV initialisation; a hand-written running
BatchNorm (``register_buffer``, ``lerp_``) in a ResBlock CNN trained under OneCycleLR; a DDPM noise schedule
(``linspace``, ``cumprod``) with a training step and its sampling loop."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# fast.ai part 2: Kaiming init statistics, GeneralRelu, hooks with histograms, LSUV, a Learner
# ----------------------------------------------------------------------------------------------


def image_data(n=32, side=8, classes=4, seed=3):
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((classes, side, side)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = protos[y] + 0.7 * rng.standard_normal((n, side, side)).astype(np.float32)
    return x[:, None], y


def kaiming_statistics(m):
    torch = m.torch
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((200, 100)).astype(np.float32))
    raw = [torch.tensor(rng.standard_normal((100, 100)).astype(np.float32)) for _ in range(50)]
    stats = {}
    for name, scale in (("plain", 1.0), ("xavier", 1 / math.sqrt(100)), ("kaiming", math.sqrt(2 / 100))):
        h = x
        for w in raw:
            h = (h @ (w * scale)).relu() if name == "kaiming" else h @ (w * scale)
        stats[name] = (h.mean().item(), h.std().item(), h.isnan().any().item() or h.isinf().any().item())
    # the init module's gain arithmetic
    stats["gains"] = [m.nn.init.calculate_gain('relu'), m.nn.init.calculate_gain('leaky_relu', 0.1),
                      m.nn.init.calculate_gain('tanh'), m.nn.init.calculate_gain('linear')]
    w = torch.empty(50, 40)
    m.nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu')
    stats["kaiming_std"] = w.std().item()
    c = torch.empty(16, 8, 3, 3)
    m.nn.init.kaiming_uniform_(c, a=math.sqrt(5))
    stats["conv_bound"] = c.abs().max().item()
    return stats


def test_fastai_kaiming_init_statistics():
    ours, theirs = run_both(kaiming_statistics, compare=False)
    assert ours["plain"][2] is True  # a product of 50 unit-variance matrices overflows float32
    assert abs(ours["xavier"][1]) < 1.5  # without a nonlinearity 1/sqrt(n) keeps the scale
    assert 0.3 < ours["kaiming"][1] < 3.0
    np.testing.assert_allclose(ours["gains"], [math.sqrt(2), math.sqrt(2 / 1.01), 5 / 3, 1], rtol=1e-12)
    assert abs(ours["kaiming_std"] - math.sqrt(2 / 50)) < 0.02
    assert ours["conv_bound"] <= 1 / math.sqrt(72) + 1e-7
    if theirs is not None:
        for k in ("plain", "xavier", "kaiming"):
            assert ours[k][2] == theirs[k][2]
            if not ours[k][2]:
                np.testing.assert_allclose(ours[k][:2], theirs[k][:2], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(ours["gains"], theirs["gains"], rtol=1e-12)


def make_miniai_net(m):
    nn, F = m.nn, m.F

    class GeneralRelu(nn.Module):
        def __init__(self, leak=None, sub=None, maxv=None):
            super().__init__()
            self.leak, self.sub, self.maxv = leak, sub, maxv

        def forward(self, x):
            x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
            if self.sub is not None: x -= self.sub
            if self.maxv is not None: x.clamp_max_(self.maxv)
            return x

    def conv(ni, nf, ks=3, stride=2, act=True):
        res = nn.Conv2d(ni, nf, stride=stride, kernel_size=ks, padding=ks // 2)
        if act: res = nn.Sequential(res, GeneralRelu(leak=0.1, sub=0.4, maxv=6.))
        return res

    return nn.Sequential(conv(1, 4), conv(4, 8), conv(8, 16), conv(16, 4, act=False), nn.Flatten())


def miniai_hooks_lsuv_learner(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from functools import partial
    model = load(m, make_miniai_net(m), weights_of(make_miniai_net))
    x_np, y_np = image_data()
    xb, yb = torch.tensor(x_np), torch.tensor(y_np)

    # LSUV: rescale each conv until its GeneralRelu output has unit std and zero mean
    class Hook():
        def __init__(self, m, f): self.hook = m.register_forward_hook(partial(f, self))
        def remove(self): self.hook.remove()
        def __del__(self): self.remove()

    def _lsuv_stats(hook, mod, inp, outp):
        acts = outp.detach()
        hook.mean, hook.std = acts.mean(), acts.std()

    def lsuv_init(model, m_relu, m_in, xb):
        h = Hook(m_relu, _lsuv_stats)
        with torch.no_grad():
            for i in range(8):
                model(xb)
                if abs(h.std - 1) < 1e-3 and abs(h.mean) < 1e-3: break
                m_in.bias -= h.mean
                m_in.weight.data /= h.std
        h.remove()
        return h.mean.item(), h.std.item(), i

    lsuv = []
    for block in list(model)[:3]:
        lsuv.append(lsuv_init(model, block[1], block[0], xb))

    # activation statistics with histograms, as miniai's ActivationStats collects them
    class Hooks(list):
        def __init__(self, ms, f): super().__init__([Hook(m, f) for m in ms])
        def __enter__(self, *args): return self
        def __exit__(self, *args): self.remove()
        def remove(self):
            for h in self: h.remove()

    def append_stats(hook, mod, inp, outp):
        if not hasattr(hook, 'stats'): hook.stats = ([], [], [])
        acts = outp.detach().float()
        hook.stats[0].append(acts.mean())
        hook.stats[1].append(acts.std())
        hook.stats[2].append(acts.abs().histc(40, 0, 10))

    def get_min(h):
        h1 = torch.stack(h.stats[2]).t().float()
        return h1[0] / h1.sum(0)

    class Callback(): order = 0
    class CancelFitException(Exception): pass

    class Learner():
        def __init__(self, model, xb, yb, loss_func, lr, cbs, opt_func=optim.SGD):
            self.model, self.xb, self.yb, self.loss_func, self.lr, self.opt_func = model, xb, yb, loss_func, lr, opt_func
            self.cbs = sorted(cbs, key=lambda c: c.order)
            for cb in self.cbs: cb.learn = self

        def callback(self, name):
            for cb in self.cbs:
                method = getattr(cb, name, None)
                if method is not None: method()

        def fit(self, n_epochs):
            self.opt = self.opt_func(self.model.parameters(), self.lr)
            self.epochs = range(n_epochs)
            try:
                self.callback('before_fit')
                for self.epoch in self.epochs:
                    for self.iter in range(0, len(self.xb), 8):
                        self.batch = self.xb[self.iter:self.iter + 8], self.yb[self.iter:self.iter + 8]
                        self.callback('before_batch')
                        self.preds = self.model(self.batch[0])
                        self.loss = self.loss_func(self.preds, self.batch[1])
                        self.loss.backward()
                        self.opt.step()
                        self.opt.zero_grad()
                        self.callback('after_batch')
            except CancelFitException:
                pass
            finally:
                self.callback('after_fit')

    class MetricsCB(Callback):
        def before_fit(self): self.losses, self.accs = [], []
        def after_batch(self):
            self.losses.append(self.learn.loss.item())
            self.accs.append((self.learn.preds.argmax(dim=1) == self.learn.batch[1]).float().mean().item())

    class ActivationStats(Callback):
        order = 1
        def before_fit(self): self.hooks = Hooks([b[1] for b in list(self.learn.model)[:3]], append_stats)
        def after_fit(self): self.hooks.remove()

    class StopAfter(Callback):
        def __init__(self, n): self.n = n
        def after_batch(self):
            if self.learn.iter // 8 + 4 * self.learn.epoch >= self.n: raise CancelFitException()

    metrics, astats = MetricsCB(), ActivationStats()
    learn = Learner(model, xb, yb, F.cross_entropy, 0.2, [metrics, astats, StopAfter(6)])
    learn.fit(3)
    hists = [torch.stack(h.stats[2]) for h in astats.hooks]
    return {"lsuv": [(round(a, 2), round(b, 2)) for a, b, _ in lsuv], "losses": metrics.losses, "accs": metrics.accs,
            "means": [torch.stack(h.stats[0]) for h in astats.hooks], "stds": [torch.stack(h.stats[1]) for h in astats.hooks],
            "hists": hists, "dead": [get_min(h) for h in astats.hooks],
            "params": [p.detach() for p in model.parameters()]}


def test_fastai_miniai_hooks_lsuv_and_learner():
    ours, _ = run_both(miniai_hooks_lsuv_learner, rtol=2e-4, atol=2e-5)
    assert all(abs(mean) <= 0.05 and abs(std - 1) <= 0.02 for mean, std in ours["lsuv"])  # (8 rounds: near, not at)
    assert len(ours["losses"]) == 7  # the callback cancelled the fit after its seventh batch
    for h in ours["hists"]:
        assert h.shape == (7, 40) and (h.sum(1) <= 8 * 16 * 16).all()


# ----------------------------------------------------------------------------------------------
# fast.ai part 2: a hand-written BatchNorm in ResBlocks, trained with OneCycleLR
# ----------------------------------------------------------------------------------------------


def make_resnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class BatchNorm(nn.Module):
        def __init__(self, nf, mom=0.1, eps=1e-5):
            super().__init__()
            self.mom, self.eps = mom, eps
            self.mults = nn.Parameter(torch.ones(nf, 1, 1))
            self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
            self.register_buffer('vars', torch.ones(1, nf, 1, 1))
            self.register_buffer('means', torch.zeros(1, nf, 1, 1))

        def update_stats(self, x):
            m = x.mean((0, 2, 3), keepdim=True)
            v = x.var((0, 2, 3), keepdim=True)
            self.means.lerp_(m, self.mom)
            self.vars.lerp_(v, self.mom)
            return m, v

        def forward(self, x):
            if self.training:
                with torch.no_grad(): m, v = self.update_stats(x)
            else: m, v = self.means, self.vars
            x = (x - m) / (v + self.eps).sqrt()
            return x * self.mults + self.adds

    def conv(ni, nf, ks=3, stride=1, act=nn.ReLU, norm=None, bias=None):
        if bias is None: bias = not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
        layers = [nn.Conv2d(ni, nf, stride=stride, kernel_size=ks, padding=ks // 2, bias=bias)]
        if norm: layers.append(norm(nf))
        if act: layers.append(act())
        return nn.Sequential(*layers)

    def _conv_block(ni, nf, stride, act=nn.ReLU, norm=None, ks=3):
        return nn.Sequential(conv(ni, nf, stride=1, act=act, norm=norm, ks=ks),
                             conv(nf, nf, stride=stride, act=None, norm=norm, ks=ks))

    class ResBlock(nn.Module):
        def __init__(self, ni, nf, stride=1, ks=3, act=nn.ReLU, norm=None):
            super().__init__()
            self.convs = _conv_block(ni, nf, stride, act=act, ks=ks, norm=norm)
            self.idconv = nn.Identity() if ni == nf else conv(ni, nf, ks=1, stride=1, act=None)
            self.pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, ceil_mode=True)
            self.act = act()

        def forward(self, x): return self.act(self.convs(x) + self.idconv(self.pool(x)))

    return nn.Sequential(ResBlock(1, 4, norm=BatchNorm), ResBlock(4, 8, stride=2, norm=BatchNorm),
                         ResBlock(8, 8, stride=2, norm=nn.BatchNorm2d),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4, bias=False), nn.BatchNorm1d(4))


def resnet_one_cycle(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_resnet(m), weights_of(make_resnet))
    x_np, y_np = image_data(n=32, side=7)
    xb, yb = torch.tensor(x_np), torch.tensor(y_np)
    # (SGD: the conv biases before nn.BatchNorm2d get a gradient of rounding noise only, which Adam
    # would scale up to full steps)
    opt = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-2)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=9)
    losses, lrs, moms = [], [], []
    for epoch in range(2):
        model.train()
        for i in range(0, 32, 8):
            loss = F.cross_entropy(model(xb[i:i + 8]), yb[i:i + 8])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            lrs.append(sched.get_last_lr()[0])
            moms.append(opt.param_groups[0]['momentum'])
    model.eval()
    with torch.no_grad():
        preds = model(xb)
    acc = (preds.argmax(dim=1) == yb).float().mean()
    return {"losses": losses, "lrs": lrs, "moms": moms, "preds": preds, "acc": acc,
            "state": {k: v for k, v in model.state_dict().items()}}


def test_fastai_running_batchnorm_resblocks_one_cycle():
    ours, _ = run_both(resnet_one_cycle, rtol=2e-4, atol=2e-5)
    state = ours["state"]
    assert state["0.convs.0.1.means"].shape == (1, 4, 1, 1)  # the hand-written BatchNorm's buffers are saved
    assert "2.convs.0.1.num_batches_tracked" in state and int(state["2.convs.0.1.num_batches_tracked"]) == 8
    assert ours["lrs"][-1] < 1e-4 and max(ours["lrs"]) == pytest.approx(0.2, rel=0.05)
    assert min(ours["moms"]) == pytest.approx(0.85, abs=0.01)


# ----------------------------------------------------------------------------------------------
# fast.ai part 2: DDPM (noise schedule, training step, sampling loop)
# ----------------------------------------------------------------------------------------------


def make_denoiser(m):
    nn = m.nn

    class Denoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.net = nn.Sequential(nn.Linear(2 + 8, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 2))

        def forward(self, x, t):
            return self.net(m.torch.cat([x, self.emb(t)], dim=-1))

    return Denoiser()


def ddpm(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    n_steps, betamin, betamax = 20, 0.0001, 0.2
    beta = torch.linspace(betamin, betamax, n_steps)
    alpha = 1. - beta
    alphabar = alpha.cumprod(dim=0)
    sigma = beta.sqrt()
    rng = np.random.default_rng(5)
    x0_all = torch.tensor(np.concatenate([rng.normal(-2, 0.3, (32, 2)), rng.normal(2, 0.3, (32, 2))]).astype(np.float32))
    ts = torch.tensor(rng.integers(0, n_steps, (4, 64)))
    noises = torch.tensor(rng.standard_normal((4, 64, 2)).astype(np.float32))

    def noisify(x0, t, eps):
        ab_t = alphabar[t].reshape(-1, 1)
        xt = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
        return xt, t, eps

    model = load(m, make_denoiser(m), weights_of(make_denoiser))
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(4):
        xt, t, eps = noisify(x0_all, ts[step], noises[step])
        loss = F.mse_loss(model(xt, t), eps)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())

    @torch.no_grad()
    def sample(model, sz, z_all):
        x_t = z_all[0]
        preds = []
        for t in reversed(range(n_steps)):
            t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long)
            z = z_all[t + 1] if t > 0 else torch.zeros(x_t.shape)
            ab_t = alphabar[t]
            ab_t1 = alphabar[t - 1] if t > 0 else torch.tensor(1)
            b_t = 1 - ab_t / ab_t1
            x_0_hat = ((x_t - (1 - ab_t).sqrt() * model(x_t, t_batch)) / ab_t.sqrt()).clamp(-4, 4)
            x_t = x_0_hat * ab_t1.sqrt() * (1 - ab_t / ab_t1) / (1 - ab_t) + x_t * (ab_t / ab_t1).sqrt() * (1 - ab_t1) / (1 - ab_t) + b_t.sqrt() * z
            preds.append(x_t.cpu())
        return preds

    z_all = torch.tensor(rng.standard_normal((n_steps + 1, 6, 2)).astype(np.float32))
    preds = sample(model, (6, 2), z_all)
    # the generator-driven noise programs write: both libraries' own streams, so only its statistics
    g = torch.Generator().manual_seed(42)
    noise = torch.randn_like(x0_all, generator=g) if _randn_like_takes_generator(m) else torch.randn(x0_all.shape, generator=g)
    g2 = torch.Generator().manual_seed(42)
    again = torch.randn(x0_all.shape, generator=g2)
    return {"beta": beta, "alphabar": alphabar, "sigma": sigma, "losses": losses, "final": preds[-1],
            "mid": preds[n_steps // 2], "reproducible": bool((noise == again).all()) if noise.shape == again.shape else False}


def _randn_like_takes_generator(m):
    import inspect
    try:
        return 'generator' in inspect.signature(m.torch.randn_like).parameters
    except (TypeError, ValueError):
        return True


def test_fastai_ddpm_schedule_training_and_sampling():
    ours, _ = run_both(ddpm, rtol=2e-4, atol=2e-5)
    beta = np.linspace(0.0001, 0.2, 20)
    np.testing.assert_allclose(ours["alphabar"], np.cumprod(1 - beta), rtol=1e-5)
    assert ours["reproducible"] is True
