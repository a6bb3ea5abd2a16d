# ruff: noqa: B006, B007, B008, B020, B023, E501, E701, E712, E741, E731, F841, UP004, UP008, UP031, UP039  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same weights and data, comparing values and gradients.

fast.ai part 2 ("from the foundations", miniai): matmul from scratch by loops, broadcasting and einsum;
hand-written Linear/ReLU/MSE modules whose backward stores ``.g`` on the tensors, checked against
autograd; Kaiming-init statistics through layers; a Learner with callbacks and forward hooks
collecting means, stds and ``.abs().histc`` histograms over a GeneralRelu (``sub_``,
``clamp_max_``) network, LSUV initialisation; a hand-written running BatchNorm (``register_buffer``,
``lerp_``) in a ResBlock CNN trained under OneCycleLR; a DDPM noise schedule (``linspace``,
``cumprod``) with a training step and its sampling loop; optimisers from scratch keeping their state
on the parameters, and an LR finder.
CS231n (PyTorch versions): a two-layer net; softmax loss by loops and vectorised, with a numerical
gradient check; a naive convolution and max-pool by loops against ``F.conv2d``/``F.max_pool2d``;
batch and layer norm backward by hand; inverted dropout's mask statistics; saliency maps, class
visualisation by gradient ascent with jitter (``torch.roll``) and blur, FGSM; style transfer's Gram
matrix and total-variation losses; RNN and attention-LSTM captioning with a temporal softmax loss under
a mask; SimCLR's NT-Xent loss by loops and vectorised; a captioning transformer with hand-written
multi-head attention. Grad-CAM with module hooks (``register_backward_hook`` on a conv followed by an
in-place ReLU) and with tensor hooks, and guided backpropagation.
UvA DL notebooks: a GCN layer by adjacency matmul and a GAT layer, an energy-based model's Langevin
sampler (``torch.autograd.grad``, grad mode switched inside ``no_grad``), a RealNVP-style coupling
flow with dequantisation, PixelCNN (masked dilated convolutions, a 5-d cross-entropy, the receptive
field by input gradients), activation functions as modules and dead neurons, an optimizer template
keyed by parameters, a custom ``_LRScheduler``, SimCLR's InfoNCE with ranking metrics.
Stanford CS224n: NMT with a packed bidirectional LSTM, attention masked through ``.data.masked_fill_``
and beam search. Stanford CS330: second-order MAML through a functional conv net, prototypical networks. MIT 6.5940:
pruning and linear/k-means quantisation with integer-only layers. Berkeley CS285: Gaussian, tanh-squashed
and categorical policies. Deep Learning with PyTorch (the
book): the thermometer model trained by hand under ``torch.no_grad()``."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# fast.ai part 2, lesson 1: matrix multiplication from the foundations
# ----------------------------------------------------------------------------------------------


def matmul_from_foundations(m):
    torch = m.torch
    rng = np.random.default_rng(0)
    m1 = torch.tensor(rng.standard_normal((5, 4)).astype(np.float32))
    m2 = torch.tensor(rng.standard_normal((4, 3)).astype(np.float32))

    def matmul_loops(a, b):
        (ar, ac), (br, bc) = a.shape, b.shape
        c = torch.zeros(ar, bc)
        for i in range(ar):
            for j in range(bc):
                for k in range(ac):
                    c[i, j] += a[i, k] * b[k, j]
        return c

    def matmul_dot(a, b):
        (ar, ac), (br, bc) = a.shape, b.shape
        c = torch.zeros(ar, bc)
        for i in range(ar):
            for j in range(bc):
                c[i, j] = (a[i, :] * b[:, j]).sum()
        return c

    def matmul_broadcast(a, b):
        (ar, ac), (br, bc) = a.shape, b.shape
        c = torch.zeros(ar, bc)
        for i in range(ar):
            c[i] = (a[i, :, None] * b).sum(dim=0)
        return c

    def matmul_einsum(a, b):
        return torch.einsum('ik,kj->ij', a, b)

    def matmul_full_broadcast(a, b):
        return (a[..., None] * b[None]).sum(1)

    c = torch.tensor([10., 20, 30])
    broadcast_demo = [c + 1, m1[:3, :3] + c, c[None, :].expand_as(m1[:3, :3]), c[:, None] * c[None],
                      c.unsqueeze(1).shape == c[:, None].shape]
    outer = torch.einsum('i,j->ij', c, c)
    batched = torch.einsum('bik,bkj->bij', m1[None].expand(2, 5, 4), m2[None].expand(2, 4, 3))
    trace = torch.einsum('ii', m1[:4, :4])
    # gradients through the broadcast version
    a = m1.clone().requires_grad_()
    b = m2.clone().requires_grad_()
    matmul_broadcast(a, b).pow(2).sum().backward()
    return {"loops": matmul_loops(m1, m2), "dot": matmul_dot(m1, m2), "broadcast": matmul_broadcast(m1, m2),
            "einsum": matmul_einsum(m1, m2), "full": matmul_full_broadcast(m1, m2), "at": m1 @ m2,
            "demo": broadcast_demo[:4], "same_shape": broadcast_demo[4],
            "outer": outer, "batched": batched, "trace": trace, "a_grad": a.grad, "b_grad": b.grad}


def test_fastai_matmul_from_foundations():
    ours, _ = run_both(matmul_from_foundations, rtol=1e-5, atol=1e-5)
    want = ours["at"]
    for k in ("loops", "dot", "broadcast", "einsum", "full"):
        np.testing.assert_allclose(ours[k], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["batched"][1], want, rtol=1e-5, atol=1e-5)
    assert ours["same_shape"] is True


# ----------------------------------------------------------------------------------------------
# fast.ai part 2, lesson 3: the forward and backward passes by hand, then as modules
# ----------------------------------------------------------------------------------------------


def fastai_data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = (x[:, :2].sum(1) + 0.1 * rng.standard_normal(16)).astype(np.float32)
    return x, y


def backprop_by_hand(m):
    torch = m.torch
    x_np, y_np = fastai_data()
    x_train, y_train = torch.tensor(x_np), torch.tensor(y_np)
    n, nin = x_train.shape
    nh = 5
    rng = np.random.default_rng(2)
    w1 = torch.tensor(rng.standard_normal((nin, nh)).astype(np.float32)) * math.sqrt(2 / nin)
    b1 = torch.zeros(nh)
    w2 = torch.tensor(rng.standard_normal((nh, 1)).astype(np.float32)) / math.sqrt(nh)
    b2 = torch.zeros(1)

    def lin(x, w, b): return x @ w + b
    def relu(x): return x.clamp_min(0.)
    def mse(output, targ): return (output[:, 0] - targ).pow(2).mean()

    def lin_grad(inp, out, w, b):
        # grad of matmul with respect to input
        inp.g = out.g @ w.t()
        w.g = (inp.unsqueeze(-1) * out.g.unsqueeze(1)).sum(0)
        b.g = out.g.sum(0)

    def forward_and_backward(inp, targ):
        # forward pass:
        l1 = lin(inp, w1, b1)
        l2 = relu(l1)
        out = lin(l2, w2, b2)
        diff = out[:, 0] - targ
        loss = diff.pow(2).mean()
        # backward pass:
        out.g = 2. * diff[:, None] / inp.shape[0]
        lin_grad(l2, out, w2, b2)
        l1.g = (l1 > 0).float() * l2.g
        lin_grad(inp, l1, w1, b1)
        return loss

    loss = forward_and_backward(x_train, y_train)
    by_hand = [w1.g, b1.g, w2.g, b2.g, x_train.g]

    # the same, checked against autograd
    ptgrads = [w1, b1, w2, b2, x_train]
    for p in ptgrads:
        p.requires_grad_()
    out = lin(relu(lin(x_train, w1, b1)), w2, b2)
    loss2 = mse(out, y_train)
    loss2.backward()
    by_autograd = [p.grad for p in ptgrads]

    # refactored as modules with __call__ and backward
    class Relu():
        def __call__(self, inp):
            self.inp = inp
            self.out = inp.clamp_min(0.)
            return self.out

        def backward(self): self.inp.g = (self.inp > 0).float() * self.out.g

    class Lin():
        def __init__(self, w, b): self.w, self.b = w, b

        def __call__(self, inp):
            self.inp = inp
            self.out = lin(inp, self.w, self.b)
            return self.out

        def backward(self):
            self.inp.g = self.out.g @ self.w.t()
            self.w.g = self.inp.t() @ self.out.g
            self.b.g = self.out.g.sum(0)

    class Mse():
        def __call__(self, inp, targ):
            self.inp, self.targ = inp, targ
            self.out = mse(inp, targ)
            return self.out

        def backward(self):
            self.inp.g = 2. * (self.inp.squeeze() - self.targ).unsqueeze(-1) / self.targ.shape[0]

    class Model():
        def __init__(self, w1, b1, w2, b2):
            self.layers = [Lin(w1, b1), Relu(), Lin(w2, b2)]
            self.loss = Mse()

        def __call__(self, x, targ):
            for l in self.layers:
                x = l(x)
            return self.loss(x, targ)

        def backward(self):
            self.loss.backward()
            for l in reversed(self.layers):
                l.backward()

    with torch.no_grad():
        ws = [t.detach().clone() for t in (w1, b1, w2, b2)]
        xt = x_train.detach().clone()
        model = Model(*ws)
        loss3 = model(xt, y_train)
        model.backward()
    by_module = [ws[0].g, ws[1].g, ws[2].g, ws[3].g, xt.g]

    # and as an autograd.Function-free nn.Module with its own backward through a custom Function
    class LinFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inp, w, b):
            ctx.save_for_backward(inp, w)
            return inp @ w + b

        @staticmethod
        def backward(ctx, g):
            inp, w = ctx.saved_tensors
            return g @ w.t(), inp.t() @ g, g.sum(0)

    p = [t.detach().clone().requires_grad_() for t in (x_train, w1, b1, w2, b2)]
    h = LinFn.apply(p[0], p[1], p[2]).clamp_min(0.)
    loss4 = mse(LinFn.apply(h, p[3], p[4]), y_train)
    loss4.backward()
    return {"loss": [loss, loss2, loss3, loss4], "hand": by_hand, "autograd": by_autograd, "module": by_module,
            "function": [t.grad for t in p[1:] + p[:1]]}


def test_fastai_backprop_by_hand_and_as_modules():
    ours, _ = run_both(backprop_by_hand, rtol=1e-5, atol=1e-6)
    for k in ("hand", "module", "function"):
        for a, b in zip(ours[k], ours["autograd"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len({round(float(l), 6) for l in ours["loss"]}) == 1


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


# ----------------------------------------------------------------------------------------------
# CS231n: softmax loss by loops and vectorised, a two-layer net, numerical gradient checks
# ----------------------------------------------------------------------------------------------


def cs231n_softmax_two_layer(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(6)
    N, D, H, C = 10, 7, 6, 4
    X = torch.tensor(rng.standard_normal((N, D)), dtype=torch.float64)
    y = torch.tensor(rng.integers(0, C, N))
    W = torch.tensor(0.1 * rng.standard_normal((D, C)), dtype=torch.float64)
    reg = 0.05

    def softmax_loss_naive(W, X, y, reg):
        loss = 0.0
        dW = torch.zeros_like(W)
        num_train = X.shape[0]
        num_classes = W.shape[1]
        for i in range(num_train):
            scores = X[i].matmul(W)
            scores -= scores.max()
            correct_class_score = scores[y[i]]
            exp_sum = torch.exp(scores).sum()
            loss += torch.log(exp_sum) - correct_class_score
            for j in range(num_classes):
                if j == y[i]:
                    dW[:, j] += (torch.exp(scores[j]) / exp_sum - 1) * X[i]
                else:
                    dW[:, j] += torch.exp(scores[j]) / exp_sum * X[i]
        loss /= num_train
        dW /= num_train
        loss += reg * torch.sum(W * W)
        dW += 2 * reg * W
        return loss, dW

    def softmax_loss_vectorized(W, X, y, reg):
        num_train = X.shape[0]
        scores = X.mm(W)
        scores = scores - scores.max(dim=1, keepdim=True).values
        probs = scores.exp() / scores.exp().sum(dim=1, keepdim=True)
        loss = -probs[torch.arange(num_train), y].log().sum() / num_train + reg * torch.sum(W * W)
        dscores = probs.clone()
        dscores[range(num_train), y] -= 1
        dW = X.t().mm(dscores) / num_train + 2 * reg * W
        return loss, dW

    def grad_check_sparse(f, x, analytic_grad, num_checks=6, h=1e-5):
        errs = []
        g = torch.Generator().manual_seed(0)
        for i in range(num_checks):
            ix = tuple([torch.randint(high=s, size=(1,), generator=g).item() for s in x.shape])
            oldval = x[ix].item()
            x[ix] = oldval + h
            fxph = f(x).item()
            x[ix] = oldval - h
            fxmh = f(x).item()
            x[ix] = oldval
            grad_numerical = (fxph - fxmh) / (2 * h)
            grad_analytic = analytic_grad[ix].item()
            errs.append(abs(grad_numerical - grad_analytic) / (abs(grad_numerical) + abs(grad_analytic) + 1e-12))
        return errs

    loss_naive, grad_naive = softmax_loss_naive(W, X, y, reg)
    loss_vec, grad_vec = softmax_loss_vectorized(W, X, y, reg)
    errs = grad_check_sparse(lambda w: softmax_loss_vectorized(w, X, y, reg)[0], W, grad_vec)
    Wg = W.clone().requires_grad_(True)
    loss_autograd = F.cross_entropy(X @ Wg, y) + reg * (Wg ** 2).sum()
    loss_autograd.backward()

    # the two-layer net with hand-written backward, then its gradients by autograd
    params = {'W1': torch.tensor(1e-1 * rng.standard_normal((D, H)), dtype=torch.float64), 'b1': torch.zeros(H, dtype=torch.float64),
              'W2': torch.tensor(1e-1 * rng.standard_normal((H, C)), dtype=torch.float64), 'b2': torch.zeros(C, dtype=torch.float64)}

    def two_layer_loss(params, X, y, reg):
        W1, b1, W2, b2 = params['W1'], params['b1'], params['W2'], params['b2']
        hidden = (X.mm(W1) + b1).clamp(min=0)
        scores = hidden.mm(W2) + b2
        shifted = scores - scores.max(dim=1, keepdim=True)[0]
        log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
        probs = log_probs.exp()
        N = X.shape[0]
        loss = -log_probs[torch.arange(N), y].mean() + reg * (torch.sum(W1 * W1) + torch.sum(W2 * W2))
        grads = {}
        dscores = probs.clone()
        dscores[torch.arange(N), y] -= 1
        dscores /= N
        grads['W2'] = hidden.t().mm(dscores) + 2 * reg * W2
        grads['b2'] = dscores.sum(dim=0)
        dhidden = dscores.mm(W2.t())
        dhidden[hidden <= 0] = 0
        grads['W1'] = X.t().mm(dhidden) + 2 * reg * W1
        grads['b1'] = dhidden.sum(dim=0)
        return loss, grads

    loss2, grads2 = two_layer_loss(params, X, y, reg)
    auto = {k: v.clone().requires_grad_() for k, v in params.items()}
    two_layer_loss(auto, X, y, reg)[0].backward()
    # training with SGD and learning-rate decay, prediction by argmax
    history = []
    for it in range(30):
        loss_it, g = two_layer_loss(params, X, y, 1e-3)
        for k in params:
            params[k] -= 0.5 * (0.95 ** (it // 10)) * g[k]
        history.append(loss_it.item())
    y_pred = torch.argmax((X.mm(params['W1']) + params['b1']).clamp(min=0).mm(params['W2']) + params['b2'], dim=1)
    return {"naive": (loss_naive, grad_naive), "vec": (loss_vec, grad_vec), "errs_small": max(errs) < 1e-7,  # (each library's own generator picks the entries)
            "autograd": (loss_autograd, Wg.grad), "two_layer": (loss2, [grads2[k] for k in sorted(grads2)]),
            "two_layer_autograd": [auto[k].grad for k in sorted(auto)], "history": history, "acc": (y_pred == y).double().mean()}


def test_cs231n_softmax_and_two_layer_net():
    ours, theirs = run_both(cs231n_softmax_two_layer, rtol=1e-9, atol=1e-11)
    for k in ("vec", "autograd"):
        assert float(ours[k][0]) == pytest.approx(float(ours["naive"][0]), rel=1e-12)
        np.testing.assert_allclose(ours[k][1], ours["naive"][1], rtol=1e-10, atol=1e-12)
    assert ours["errs_small"] is True
    for a, b in zip(ours["two_layer"][1], ours["two_layer_autograd"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert ours["history"][-1] < 0.5 * ours["history"][0]


# ----------------------------------------------------------------------------------------------
# CS231n: convolution and max-pooling by loops, batch and layer norm backward by hand, dropout
# ----------------------------------------------------------------------------------------------


def cs231n_layers(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.standard_normal((2, 3, 5, 5)), dtype=torch.float64)
    w = torch.tensor(rng.standard_normal((4, 3, 3, 3)), dtype=torch.float64)
    b = torch.tensor(rng.standard_normal(4), dtype=torch.float64)
    conv_param = {'stride': 2, 'pad': 1}

    def conv_forward_naive(x, w, b, conv_param):
        stride, pad = conv_param['stride'], conv_param['pad']
        N, C, H, W = x.shape
        F_, _, HH, WW = w.shape
        x_pad = F.pad(x, (pad, pad, pad, pad))
        H_out = 1 + (H + 2 * pad - HH) // stride
        W_out = 1 + (W + 2 * pad - WW) // stride
        out = torch.zeros((N, F_, H_out, W_out), dtype=x.dtype)
        for n in range(N):
            for f in range(F_):
                for i in range(H_out):
                    for j in range(W_out):
                        window = x_pad[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                        out[n, f, i, j] = (window * w[f]).sum() + b[f]
        return out

    def max_pool_forward_naive(x, pool_param):
        N, C, H, W = x.shape
        ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
        out = x.new_zeros((N, C, 1 + (H - ph) // s, 1 + (W - pw) // s))
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].amax(dim=(-1, -2))
        return out

    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    out_naive = conv_forward_naive(xg, wg, bg, conv_param)
    dout = torch.tensor(rng.standard_normal(out_naive.shape), dtype=torch.float64)
    grads_naive = torch.autograd.grad(out_naive, (xg, wg, bg), dout)
    out_fast = F.conv2d(xg, wg, bg, stride=2, padding=1)
    grads_fast = torch.autograd.grad(out_fast, (xg, wg, bg), dout)
    pool_naive = max_pool_forward_naive(xg, {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    pool_fast = F.max_pool2d(xg, 2, 2)
    dpool = torch.autograd.grad(pool_naive.sum(), xg)[0]
    dpool_fast = torch.autograd.grad(pool_fast.sum(), xg)[0]

    # batchnorm backward, the simplified formula, against autograd
    X = torch.tensor(rng.standard_normal((8, 5)) * 3 + 2, dtype=torch.float64)
    gamma = torch.tensor(rng.standard_normal(5), dtype=torch.float64)
    beta = torch.tensor(rng.standard_normal(5), dtype=torch.float64)
    dout2 = torch.tensor(rng.standard_normal((8, 5)), dtype=torch.float64)
    eps = 1e-5

    def batchnorm_backward_alt(dout, x, gamma, eps, dim):
        mu = x.mean(dim=dim, keepdim=True)
        var = x.var(dim=dim, unbiased=False, keepdim=True)
        std = torch.sqrt(var + eps)
        x_hat = (x - mu) / std
        N = x.shape[dim]
        dx_hat = dout * gamma
        dx = (N * dx_hat - dx_hat.sum(dim=dim, keepdim=True) - x_hat * (dx_hat * x_hat).sum(dim=dim, keepdim=True)) / (N * std)
        return dx, (dout * x_hat).sum(dim=0), dout.sum(dim=0)

    bn_hand = batchnorm_backward_alt(dout2, X, gamma, eps, 0)
    Xg, gg, bg2 = (t.clone().requires_grad_() for t in (X, gamma, beta))
    bn_out = F.batch_norm(Xg, None, None, gg, bg2, training=True, eps=eps)
    bn_auto = torch.autograd.grad(bn_out, (Xg, gg, bg2), dout2)
    ln_hand = batchnorm_backward_alt(dout2, X, gamma, eps, 1)
    ln_out = F.layer_norm(Xg, (5,), gg, bg2, eps=eps)
    ln_auto = torch.autograd.grad(ln_out, (Xg, gg, bg2), dout2)

    # spatial batchnorm as the assignment writes it: transpose, reshape, call the vanilla one
    def spatial_batchnorm(x, gamma, beta):
        N, C, H, W = x.shape
        x_flat = x.permute(0, 2, 3, 1).reshape(-1, C)
        out = F.batch_norm(x_flat, None, None, gamma, beta, training=True, eps=eps)
        return out.reshape(N, H, W, C).permute(0, 3, 1, 2)

    sg, sb = torch.ones(3, dtype=torch.float64, requires_grad=True), torch.zeros(3, dtype=torch.float64, requires_grad=True)
    sbn = spatial_batchnorm(xg, sg, sb)
    ref = F.batch_norm(xg, None, None, sg, sb, training=True, eps=eps)
    sbn_grads = torch.autograd.grad((sbn * out_naive.new_ones(1).expand_as(sbn) * x).sum(), (xg, sg, sb))
    # inverted dropout with a fixed seed: only the mask statistics compare across libraries
    torch.manual_seed(231)
    xd = torch.ones(500, 500, dtype=torch.float64) + 9
    stats = {}
    for p in (0.25, 0.4, 0.7):
        mask = (torch.rand(*xd.shape) < p) / p
        out_train = xd * mask
        stats[p] = (out_train.mean().item(), (out_train == 0).double().mean().item())
        dr = F.dropout(xd, 1 - p, training=True)
        stats[p] += (dr.mean().item(), (dr == 0).double().mean().item(), F.dropout(xd, 1 - p, training=False).mean().item())
    return {"conv": (out_naive, out_fast), "conv_grads": (grads_naive, grads_fast), "pool": (pool_naive, pool_fast),
            "dpool": (dpool, dpool_fast), "bn": (bn_hand, bn_auto), "ln": (ln_hand, ln_auto), "sbn": (sbn, ref),
            "sbn_grads": sbn_grads, "dropout": stats}


def test_cs231n_naive_layers_norm_backward_and_dropout():
    ours, theirs = run_both(cs231n_layers, compare=False)
    for k in ("conv", "conv_grads", "pool", "dpool", "bn", "ln", "sbn"):
        mine, fast = ours[k]
        for a, b in zip(mine if isinstance(mine, tuple) else [mine], fast if isinstance(fast, tuple) else [fast]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=k)
    for p, (mean, zeros, dr_mean, dr_zeros, test_mean) in ours["dropout"].items():
        assert mean == pytest.approx(10, rel=0.02) and zeros == pytest.approx(1 - p, abs=0.01)
        assert dr_mean == pytest.approx(10, rel=0.02) and dr_zeros == pytest.approx(1 - p, abs=0.01)
        assert test_mean == 10
    if theirs is not None:
        keys = ("conv", "conv_grads", "pool", "dpool", "bn", "ln", "sbn", "sbn_grads")
        from .pytorch_programs import assert_same
        assert_same({k: ours[k] for k in keys}, {k: theirs[k] for k in keys}, 1e-10, 1e-12)


# ----------------------------------------------------------------------------------------------
# CS231n: saliency maps, fooling images, class visualisation (jitter and blur), FGSM
# ----------------------------------------------------------------------------------------------


def make_tiny_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 5))


def gaussian_blur_1d(X_np, sigma, axis):
    radius = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(X_np, [(radius, radius) if a == axis else (0, 0) for a in range(X_np.ndim)], mode='symmetric')
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode='valid'), axis, padded)


def cs231n_visualisation(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_tiny_cnn(m), weights_of(make_tiny_cnn))
    for param in model.parameters():
        param.requires_grad = False
    model.eval()
    rng = np.random.default_rng(8)
    X = torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = torch.tensor([0, 1, 2, 3])

    def compute_saliency_maps(X, y, model):
        X = X.clone()
        X.requires_grad_()
        scores = model(X)
        scores = scores.gather(1, y.view(-1, 1)).squeeze()
        scores.backward(torch.ones(scores.size()))
        saliency = X.grad.data.abs().max(dim=1)[0]
        return saliency

    def make_fooling_image(X, target_y, model):
        X_fooling = X.clone()
        X_fooling = X_fooling.requires_grad_()
        learning_rate = 1
        for i in range(100):
            scores = model(X_fooling)
            if scores.data.max(1)[1][0] == target_y:
                break
            target_score = scores[0, target_y]
            target_score.backward()
            g = X_fooling.grad.data
            dX = learning_rate * g / g.norm()
            X_fooling.data += dX
            X_fooling.grad.zero_()
        return X_fooling, i

    def jitter(X, ox, oy):
        if ox != 0:
            left = X[:, :, :, :-ox]
            right = X[:, :, :, -ox:]
            X = torch.cat([right, left], dim=3)
        if oy != 0:
            top = X[:, :, :-oy]
            bottom = X[:, :, -oy:]
            X = torch.cat([bottom, top], dim=2)
        return X

    def blur_image(X, sigma=1):
        X_np = X.cpu().clone().numpy()
        X_np = gaussian_blur_1d(X_np, sigma, axis=2)
        X_np = gaussian_blur_1d(X_np, sigma, axis=3)
        X.copy_(torch.Tensor(X_np).type_as(X))
        return X

    def create_class_visualization(target_y, model, img, jitters, l2_reg=1e-3, learning_rate=5, blur_every=3):
        img = img.clone().requires_grad_()
        for t in range(len(jitters)):
            ox, oy = jitters[t]
            img.data.copy_(jitter(img.data, ox, oy))
            score = model(img)[0, target_y] - l2_reg * img.norm() ** 2
            score.backward()
            img.data += learning_rate * img.grad.data / img.grad.data.norm()
            img.grad.data.zero_()
            img.data.copy_(jitter(img.data, -ox, -oy))
            for c in range(3):
                lo, hi = float(-0.5 - c / 10), float(0.5 + c / 10)
                img.data[:, c].clamp_(min=lo, max=hi)
            if t % blur_every == 0:
                blur_image(img.data, sigma=0.5)
        return img.data

    saliency = compute_saliency_maps(X, y, model)
    fooling, iters = make_fooling_image(X[:1], 4, model)
    jitters = [tuple(int(v) for v in rng.integers(0, 3, 2)) for _ in range(7)]
    vis = create_class_visualization(2, model, torch.tensor(0.1 * rng.standard_normal((1, 3, 8, 8)).astype(np.float32)), jitters)
    # the same jitter by torch.roll
    rolled = torch.roll(torch.roll(X, 2, dims=3), 1, dims=2)

    # FGSM on the model's own predictions
    def fgsm_attack(image, epsilon, data_grad):
        sign_data_grad = data_grad.sign()
        perturbed_image = image + epsilon * sign_data_grad
        perturbed_image = torch.clamp(perturbed_image, -2, 2)
        return perturbed_image

    data = X.clone().requires_grad_(True)
    output = F.log_softmax(model(data), dim=1)
    init_pred = output.max(1, keepdim=True)[1]
    loss = F.nll_loss(output, init_pred.view(-1))
    model.zero_grad()
    loss.backward()
    perturbed = fgsm_attack(data, 0.25, data.grad.data)
    final_pred = model(perturbed).max(1, keepdim=True)[1]
    return {"saliency": saliency, "fooling": fooling.detach(), "iters": iters, "vis": vis, "jitter": jitter(X, 2, 1),
            "rolled": rolled, "perturbed": perturbed.detach(), "init_pred": init_pred, "final_pred": final_pred,
            "flipped": (init_pred != final_pred).sum().item()}


def test_cs231n_saliency_fooling_class_visualisation_fgsm():
    ours, _ = run_both(cs231n_visualisation, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["jitter"], ours["rolled"])
    assert ours["saliency"].shape == (4, 8, 8) and (ours["saliency"] >= 0).all()
    assert ours["iters"] < 99  # the fooling image reached class 4
    assert ours["vis"].min() >= -0.7 - 1e-6 and ours["vis"].max() <= 0.7 + 1e-6


# ----------------------------------------------------------------------------------------------
# CS231n: style transfer (content, Gram-matrix style and total-variation losses)
# ----------------------------------------------------------------------------------------------


def make_features(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())


def style_transfer(m):
    torch, nn, F = m.torch, m.nn, m.F
    cnn = load(m, make_features(m), weights_of(make_features))
    for param in cnn.parameters():
        param.requires_grad = False
    rng = np.random.default_rng(9)
    content_img = torch.tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    style_img = torch.tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))

    def extract_features(x, cnn):
        features = []
        prev_feat = x
        for i, module in enumerate(cnn._modules.values()):
            next_feat = module(prev_feat)
            features.append(next_feat)
            prev_feat = next_feat
        return features

    def content_loss(content_weight, content_current, content_original):
        return content_weight * torch.sum((content_current - content_original) ** 2)

    def gram_matrix(features, normalize=True):
        N, C, H, W = features.size()
        features = features.view(N, C, H * W)
        gram = torch.bmm(features, features.permute(0, 2, 1))
        if normalize:
            gram /= float(H * W * C)
        return gram

    def style_loss(feats, style_layers, style_targets, style_weights):
        style_loss = 0
        for i, layer in enumerate(style_layers):
            current_gram = gram_matrix(feats[layer])
            style_loss += style_weights[i] * torch.sum((current_gram - style_targets[i]) ** 2)
        return style_loss

    def tv_loss(img, tv_weight):
        h_variance = torch.sum(torch.pow(img[:, :, :-1, :] - img[:, :, 1:, :], 2))
        w_variance = torch.sum(torch.pow(img[:, :, :, :-1] - img[:, :, :, 1:], 2))
        return tv_weight * (h_variance + w_variance)

    content_layer, style_layers = 3, (1, 3, 6)
    content_weight, style_weights, tv_weight = 5e-2, (2000, 500, 12), 5e-2
    feats = extract_features(content_img, cnn)
    content_target = feats[content_layer].clone()
    feats = extract_features(style_img, cnn)
    style_targets = [gram_matrix(feats[idx].clone()) for idx in style_layers]
    img = content_img.clone()
    img_var = img.requires_grad_()
    initial_lr, decayed_lr, decay_lr_at = 3.0, 0.1, 6
    optimizer = m.optim.Adam([img_var], lr=initial_lr)  # (the assignment spells torch.optim: see nanogpt tests)
    losses = []
    for t in range(10):
        if t < 8:
            img.data.clamp_(-1.5, 1.5)
        optimizer.zero_grad()
        feats = extract_features(img_var, cnn)
        c_loss = content_loss(content_weight, feats[content_layer], content_target)
        s_loss = style_loss(feats, style_layers, style_targets, style_weights)
        t_loss = tv_loss(img_var, tv_weight)
        loss = c_loss + s_loss + t_loss
        loss.backward()
        if t == decay_lr_at:
            optimizer = m.optim.Adam([img_var], lr=decayed_lr)
        optimizer.step()
        losses.append((c_loss.item(), s_loss.item(), t_loss.item()))
    return {"losses": losses, "img": img.detach(), "grams": style_targets}


def test_cs231n_style_transfer():
    ours, _ = run_both(style_transfer, rtol=2e-4, atol=1e-5)
    g = ours["grams"][0][0]
    np.testing.assert_allclose(g, g.T, rtol=1e-6)
    assert sum(ours["losses"][-1]) < sum(ours["losses"][0])


# ----------------------------------------------------------------------------------------------
# CS231n / EECS 498: RNN and attention-LSTM captioning with a temporal softmax loss under a mask
# ----------------------------------------------------------------------------------------------


def captioning(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(10)
    N, T, D, W, H, V = 3, 5, 6, 4, 5, 7
    NULL, START, END = 0, 1, 2
    f64 = torch.float64
    params = {
        'W_proj': rng.standard_normal((D, H)) / math.sqrt(D), 'b_proj': np.zeros(H),
        'W_embed': rng.standard_normal((V, W)) / 100, 'Wx': rng.standard_normal((W, H)) / math.sqrt(W),
        'Wh': rng.standard_normal((H, H)) / math.sqrt(H), 'b': np.zeros(H),
        'W_vocab': rng.standard_normal((H, V)) / math.sqrt(H), 'b_vocab': np.zeros(V),
        'Wx4': rng.standard_normal((W, 4 * H)) / math.sqrt(W), 'Wh4': rng.standard_normal((H, 4 * H)) / math.sqrt(H),
        'Wattn': rng.standard_normal((H, 4 * H)) / math.sqrt(H), 'b4': np.zeros(4 * H)}
    params = {k: torch.tensor(v, dtype=f64, requires_grad=True) for k, v in params.items()}
    features = torch.tensor(rng.standard_normal((N, D)), dtype=f64)
    A = torch.tensor(rng.standard_normal((N, H, 2, 2)), dtype=f64)
    captions = torch.tensor([[START, 3, 4, 5, END, NULL], [START, 6, END, NULL, NULL, NULL], [START, 3, 3, 3, 4, END]])

    def rnn_step_forward(x, prev_h, Wx, Wh, b):
        next_h = torch.tanh(x.mm(Wx) + prev_h.mm(Wh) + b)
        return next_h, (x, prev_h, Wx, Wh, next_h)

    def rnn_step_backward(dnext_h, cache):
        x, prev_h, Wx, Wh, next_h = cache
        dtanh = dnext_h * (1 - next_h ** 2)
        return dtanh.mm(Wx.t()), dtanh.mm(Wh.t()), x.t().mm(dtanh), prev_h.t().mm(dtanh), dtanh.sum(dim=0)

    def rnn_forward(x, h0, Wx, Wh, b):
        N, T, _ = x.shape
        h = torch.zeros((N, T, h0.shape[1]), dtype=x.dtype)
        prev_h = h0
        for t in range(T):
            prev_h, _ = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
            h[:, t, :] = prev_h
        return h

    def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b, attn=None, Wattn=None):
        a = x.mm(Wx) + prev_h.mm(Wh) + b
        if attn is not None:
            a = a + attn.mm(Wattn)
        H = prev_h.shape[1]
        i = torch.sigmoid(a[:, :H])
        f = torch.sigmoid(a[:, H:2 * H])
        o = torch.sigmoid(a[:, 2 * H:3 * H])
        g = torch.tanh(a[:, 3 * H:])
        next_c = f * prev_c + i * g
        next_h = o * torch.tanh(next_c)
        return next_h, next_c

    def dot_product_attention(prev_h, A):
        N, H, D_a, _ = A.shape
        A_flat = A.reshape(N, H, -1)
        M_tilde = torch.bmm(prev_h.unsqueeze(1), A_flat).squeeze(1) / math.sqrt(H)
        M_tilde = F.softmax(M_tilde, dim=1)
        attn = torch.bmm(A_flat, M_tilde.unsqueeze(2)).squeeze(2)
        return attn, M_tilde.reshape(N, D_a, D_a)

    def attention_forward(x, A, Wx, Wh, Wattn, b):
        h0 = A.mean(dim=(2, 3))
        c0 = h0
        N, T, _ = x.shape
        hs, weights = [], []
        prev_h, prev_c = h0, c0
        for t in range(T):
            attn, w = dot_product_attention(prev_h, A)
            prev_h, prev_c = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b, attn, Wattn)
            hs.append(prev_h)
            weights.append(w)
        return torch.stack(hs, dim=1), torch.stack(weights, dim=1)

    def temporal_softmax_loss(x, y, mask):
        N, T, V = x.shape
        x_flat, y_flat, mask_flat = x.reshape(N * T, V), y.reshape(N * T), mask.reshape(N * T)
        probs = torch.exp(x_flat - torch.max(x_flat, dim=1, keepdim=True).values)
        probs = probs / torch.sum(probs, dim=1, keepdim=True)  # (/= would change what exp saved: both raise)
        return -torch.sum(mask_flat * torch.log(probs[torch.arange(N * T), y_flat])) / N

    p = params
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    mask = captions_out != NULL
    h0 = features.mm(p['W_proj']) + p['b_proj']
    x = p['W_embed'][captions_in]
    h = rnn_forward(x, h0, p['Wx'], p['Wh'], p['b'])
    scores = h.matmul(p['W_vocab']) + p['b_vocab']
    loss_mask = temporal_softmax_loss(scores, captions_out, mask)
    loss_ce = F.cross_entropy(scores.reshape(-1, V), captions_out.reshape(-1), ignore_index=NULL, reduction='sum') / N
    loss_ce_t = F.cross_entropy(torch.transpose(scores, 1, 2), captions_out, ignore_index=NULL, reduction='sum') / N
    grads = torch.autograd.grad(loss_mask, [p[k] for k in ('W_proj', 'W_embed', 'Wx', 'Wh', 'b', 'W_vocab')], retain_graph=True)
    # one step by hand against autograd
    x0, h_prev = x[:, 0].detach(), h0.detach()
    next_h, cache = rnn_step_forward(x0, h_prev, p['Wx'].detach(), p['Wh'].detach(), p['b'].detach())
    dnext = torch.tensor(rng.standard_normal(next_h.shape), dtype=f64)
    by_hand = rnn_step_backward(dnext, cache)
    xs, hs_ = x0.clone().requires_grad_(), h_prev.clone().requires_grad_()
    out = torch.tanh(xs.mm(p['Wx']) + hs_.mm(p['Wh']) + p['b'])
    by_autograd = torch.autograd.grad(out, (xs, hs_, p['Wx'], p['Wh'], p['b']), dnext)
    # the embedding as nn.Embedding with padding_idx
    emb = nn.Embedding(V, W, padding_idx=NULL)
    with torch.no_grad():
        emb.weight.copy_(p['W_embed'].to(torch.float32))
        emb.weight[NULL].fill_(0)
    ew = emb(captions_in).pow(2).sum()
    ew.backward()
    # the attention LSTM and greedy sampling
    ha, attn_w = attention_forward(x, A, p['Wx4'], p['Wh4'], p['Wattn'], p['b4'])
    scores_a = ha.matmul(p['W_vocab']) + p['b_vocab']
    loss_a = temporal_softmax_loss(scores_a, captions_out, mask)
    grads_a = torch.autograd.grad(loss_a, [p['Wattn'], p['Wx4'], p['W_embed']])

    def sample(max_length=6):
        sampled = torch.full((N, max_length), NULL, dtype=torch.long)
        words = torch.full((N,), START, dtype=torch.long)
        prev_h = (features.mm(p['W_proj']) + p['b_proj']).detach()
        with torch.no_grad():
            for t in range(max_length):
                xw = p['W_embed'][words]
                prev_h, _ = rnn_step_forward(xw, prev_h, p['Wx'], p['Wh'], p['b'])
                words = (prev_h.mm(p['W_vocab']) + p['b_vocab']).argmax(dim=1)
                sampled[:, t] = words
        return sampled

    return {"losses": (loss_mask, loss_ce, loss_ce_t, loss_a), "grads": grads, "hand": by_hand, "autograd": by_autograd,
            "emb_grad": emb.weight.grad, "attn": attn_w, "grads_a": grads_a, "sampled": sample(), "mask_sum": mask.sum()}


def test_cs231n_rnn_and_attention_captioning():
    ours, _ = run_both(captioning, rtol=1e-9, atol=1e-11)
    lm, lce, lcet, _ = ours["losses"]
    assert float(lm) == pytest.approx(float(lce), rel=1e-12) and float(lce) == pytest.approx(float(lcet), rel=1e-12)
    for a, b in zip(ours["hand"], ours["autograd"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert (ours["emb_grad"][0] == 0).all()
    np.testing.assert_allclose(ours["attn"].sum(axis=(2, 3)), 1, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 7: a GCN layer by adjacency matmul and a multi-head GAT layer
# ----------------------------------------------------------------------------------------------


def make_gnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GCNLayer(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.projection = nn.Linear(c_in, c_out)

        def forward(self, node_feats, adj_matrix):
            num_neighbours = adj_matrix.sum(dim=-1, keepdims=True)
            node_feats = self.projection(node_feats)
            node_feats = torch.bmm(adj_matrix, node_feats)
            node_feats = node_feats / num_neighbours
            return node_feats

    class GATLayer(nn.Module):
        def __init__(self, c_in, c_out, num_heads=1, concat_heads=True, alpha=0.2):
            super().__init__()
            self.num_heads = num_heads
            self.concat_heads = concat_heads
            if self.concat_heads:
                assert c_out % num_heads == 0, "Number of output features must be a multiple of the count of heads."
                c_out = c_out // num_heads
            self.projection = nn.Linear(c_in, c_out * num_heads)
            self.a = nn.Parameter(torch.Tensor(num_heads, 2 * c_out))
            self.leakyrelu = nn.LeakyReLU(alpha)
            nn.init.xavier_uniform_(self.projection.weight.data, gain=1.414)
            nn.init.xavier_uniform_(self.a.data, gain=1.414)

        def forward(self, node_feats, adj_matrix):
            batch_size, num_nodes = node_feats.size(0), node_feats.size(1)
            node_feats = self.projection(node_feats)
            node_feats = node_feats.view(batch_size, num_nodes, self.num_heads, -1)
            edges = adj_matrix.nonzero(as_tuple=False)
            node_feats_flat = node_feats.view(batch_size * num_nodes, self.num_heads, -1)
            edge_indices_row = edges[:, 0] * num_nodes + edges[:, 1]
            edge_indices_col = edges[:, 0] * num_nodes + edges[:, 2]
            a_input = torch.cat([
                torch.index_select(input=node_feats_flat, index=edge_indices_row, dim=0),
                torch.index_select(input=node_feats_flat, index=edge_indices_col, dim=0)
            ], dim=-1)
            attn_logits = torch.einsum('bhc,hc->bh', a_input, self.a)
            attn_logits = self.leakyrelu(attn_logits)
            attn_matrix = attn_logits.new_zeros(adj_matrix.shape + (self.num_heads,)).fill_(-9e15)
            attn_matrix[adj_matrix[..., None].repeat(1, 1, 1, self.num_heads) == 1] = attn_logits.reshape(-1)
            attn_probs = F.softmax(attn_matrix, dim=2)
            node_feats = torch.einsum('bijh,bjhc->bihc', attn_probs, node_feats)
            if self.concat_heads:
                node_feats = node_feats.reshape(batch_size, num_nodes, -1)
            else:
                node_feats = node_feats.mean(dim=2)
            return node_feats, attn_probs

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gcn = GCNLayer(3, 4)
            self.gat = GATLayer(4, 4, num_heads=2)
            self.gat_mean = GATLayer(4, 2, num_heads=2, concat_heads=False)

        def forward(self, x, adj):
            h = F.relu(self.gcn(x, adj))
            h, attn = self.gat(h, adj)
            out, attn2 = self.gat_mean(F.elu(h), adj)
            return out, attn, attn2

    return Net()


def gnn_layers(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_gnn(m), weights_of(make_gnn))
    node_feats = torch.arange(8, dtype=torch.float32).view(1, 4, 2)
    node_feats = torch.cat([node_feats, node_feats.sum(-1, keepdim=True) / 10], dim=-1).repeat(2, 1, 1)
    adj_matrix = torch.Tensor([[[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]],
                               [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]])
    out, attn, attn2 = model(node_feats, adj_matrix)
    loss = out.pow(2).sum() + attn.max()
    loss.backward()
    # the GCN by hand with the symmetric normalisation D^-1/2 (A) D^-1/2
    deg = adj_matrix.sum(-1)
    d_inv_sqrt = deg.pow(-0.5)
    d_inv_sqrt[torch.isinf(d_inv_sqrt)] = 0.
    norm_adj = d_inv_sqrt[..., :, None] * adj_matrix * d_inv_sqrt[..., None, :]
    sym = norm_adj @ model.gcn.projection(node_feats)
    return {"out": out, "attn": attn, "attn2": attn2, "sym": sym,
            "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_uva_gcn_and_gat_layers():
    ours, _ = run_both(gnn_layers, rtol=1e-5, atol=1e-6)
    adj = np.array([[[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]],
                    [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]])
    np.testing.assert_allclose(ours["attn"].sum(2), 1, rtol=1e-6)
    assert (ours["attn"][adj == 0] == 0).all()  # no attention across a missing edge
    assert all(g is not None and np.isfinite(g).all() for g in ours["grads"].values())


# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 8: an energy-based model trained by contrastive divergence with Langevin sampling
# ----------------------------------------------------------------------------------------------


def make_energy_net(m):
    nn = m.nn

    class Swish(nn.Module):
        def forward(self, x):
            return x * m.torch.sigmoid(x)

    class CNNModel(nn.Module):
        def __init__(self, hidden_features=4, out_dim=1):
            super().__init__()
            c_hid1, c_hid2 = hidden_features // 2, hidden_features
            self.cnn_layers = nn.Sequential(
                nn.Conv2d(1, c_hid1, kernel_size=3, stride=2, padding=1), Swish(),
                nn.Conv2d(c_hid1, c_hid2, kernel_size=3, stride=2, padding=1), Swish(),
                nn.Flatten(), nn.Linear(c_hid2 * 2 * 2, c_hid2), Swish(), nn.Linear(c_hid2, out_dim))

        def forward(self, x):
            return self.cnn_layers(x).squeeze(dim=-1)

    return CNNModel()


def energy_based_model(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_energy_net(m), weights_of(make_energy_net))
    rng = np.random.default_rng(11)
    real = torch.tensor(np.tanh(rng.standard_normal((6, 1, 8, 8))).astype(np.float32))
    start = torch.tensor(rng.uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32))
    noises = torch.tensor(0.005 * rng.standard_normal((3, 10, 6, 1, 8, 8)).astype(np.float32))
    small = torch.tensor(0.005 * rng.standard_normal((3, 6, 1, 8, 8)).astype(np.float32))

    def generate_samples(model, inp_imgs, noise_steps, step_size=10):
        is_training = model.training
        model.eval()
        for p in model.parameters():
            p.requires_grad = False
        inp_imgs.requires_grad = True
        had_gradients_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        for noise in noise_steps:
            inp_imgs.data.add_(noise.data)
            inp_imgs.data.clamp_(min=-1.0, max=1.0)
            out_imgs = -model(inp_imgs)
            out_imgs.sum().backward()
            inp_imgs.grad.data.clamp_(-0.03, 0.03)
            inp_imgs.data.add_(-step_size * inp_imgs.grad.data)
            inp_imgs.grad.detach_()
            inp_imgs.grad.zero_()
            inp_imgs.data.clamp_(min=-1.0, max=1.0)
        for p in model.parameters():
            p.requires_grad = True
        model.train(is_training)
        torch.set_grad_enabled(had_gradients_enabled)
        return inp_imgs

    optimizer = optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.999))
    scheduler = optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.97)
    logs = []
    fake_imgs = start
    for step in range(3):
        real_imgs = real + small[step]
        real_imgs.clamp_(min=-1.0, max=1.0)
        with torch.no_grad():  # the sampler turns grad mode back on for itself
            fake_imgs = generate_samples(model, fake_imgs.detach().clone(), noises[step])
            grad_mode_inside = torch.is_grad_enabled()
        inp_imgs = torch.cat([real_imgs, fake_imgs], dim=0)
        real_out, fake_out = model(inp_imgs).chunk(2, dim=0)
        reg_loss = 0.1 * (real_out ** 2 + fake_out ** 2).mean()
        cdiv_loss = fake_out.mean() - real_out.mean()
        loss = reg_loss + cdiv_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        logs.append((loss.item(), reg_loss.item(), cdiv_loss.item(), real_out.mean().item(), fake_out.mean().item()))
    # an energy gradient by torch.autograd.grad, as Langevin samplers without .backward() write it
    x = start.clone().requires_grad_()
    energy = model(x).sum()
    (dx,) = torch.autograd.grad(energy, x)
    return {"logs": logs, "fake": fake_imgs.detach(), "grad_mode_inside": grad_mode_inside, "dx": dx,
            "params": [p.detach() for p in model.parameters()], "param_grads_none": [p.grad is None for p in model.parameters()]}


def test_uva_energy_based_model_langevin():
    ours, _ = run_both(energy_based_model, rtol=2e-4, atol=1e-6)
    assert ours["grad_mode_inside"] is False  # the sampler restored the caller's grad mode
    assert np.abs(ours["fake"]).max() <= 1.0


# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 11: a RealNVP-style flow on images (dequantisation, checkerboard and channel
# masks, squeeze, gated convolutions, bits per dimension)
# ----------------------------------------------------------------------------------------------


def make_flow(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Dequantization(nn.Module):
        def __init__(self, alpha=1e-5, quants=4):
            super().__init__()
            self.alpha = alpha
            self.quants = quants

        def forward(self, z, ldj, reverse=False, noise=None):
            if not reverse:
                z, ldj = self.dequant(z, ldj, noise)
                z, ldj = self.sigmoid(z, ldj, reverse=True)
            else:
                z, ldj = self.sigmoid(z, ldj, reverse=False)
                z = z * self.quants
                ldj += np.log(self.quants) * np.prod(z.shape[1:])
                z = torch.floor(z).clamp(min=0, max=self.quants - 1).to(torch.int32)
            return z, ldj

        def sigmoid(self, z, ldj, reverse=False):
            if not reverse:
                ldj += (-z - 2 * F.softplus(-z)).sum(dim=[1, 2, 3])
                z = torch.sigmoid(z)
            else:
                z = z * (1 - self.alpha) + 0.5 * self.alpha
                ldj += np.log(1 - self.alpha) * np.prod(z.shape[1:])
                ldj += (-torch.log(z) - torch.log(1 - z)).sum(dim=[1, 2, 3])
                z = torch.log(z) - torch.log(1 - z)
            return z, ldj

        def dequant(self, z, ldj, noise):
            z = z.to(torch.float32)
            z = z + noise.detach()
            z = z / self.quants
            ldj -= np.log(self.quants) * np.prod(z.shape[1:])
            return z, ldj

    class ConcatELU(nn.Module):
        def forward(self, x):
            return torch.cat([F.elu(x), F.elu(-x)], dim=1)

    class LayerNormChannels(nn.Module):
        def __init__(self, c_in, eps=1e-5):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(1, c_in, 1, 1))
            self.beta = nn.Parameter(torch.zeros(1, c_in, 1, 1))
            self.eps = eps

        def forward(self, x):
            mean = x.mean(dim=1, keepdim=True)
            var = x.var(dim=1, unbiased=False, keepdim=True)
            y = (x - mean) / torch.sqrt(var + self.eps)
            return y * self.gamma + self.beta

    class GatedConv(nn.Module):
        def __init__(self, c_in, c_hidden):
            super().__init__()
            self.net = nn.Sequential(ConcatELU(), nn.Conv2d(2 * c_in, c_hidden, kernel_size=3, padding=1),
                                     ConcatELU(), nn.Conv2d(2 * c_hidden, 2 * c_in, kernel_size=1))

        def forward(self, x):
            out = self.net(x)
            val, gate = out.chunk(2, dim=1)
            return x + val * torch.sigmoid(gate)

    class GatedConvNet(nn.Module):
        def __init__(self, c_in, c_hidden=4, c_out=-1, num_layers=1):
            super().__init__()
            c_out = c_out if c_out > 0 else 2 * c_in
            layers = [nn.Conv2d(c_in, c_hidden, kernel_size=3, padding=1)]
            for layer_index in range(num_layers):
                layers += [GatedConv(c_hidden, c_hidden), LayerNormChannels(c_hidden)]
            layers += [ConcatELU(), nn.Conv2d(2 * c_hidden, c_out, kernel_size=3, padding=1)]
            self.nn = nn.Sequential(*layers)
            self.nn[-1].weight.data.zero_()
            self.nn[-1].bias.data.zero_()

        def forward(self, x):
            return self.nn(x)

    class CouplingLayer(nn.Module):
        def __init__(self, network, mask, c_in):
            super().__init__()
            self.network = network
            self.scaling_factor = nn.Parameter(torch.zeros(c_in))
            self.register_buffer('mask', mask)

        def forward(self, z, ldj, reverse=False):
            z_in = z * self.mask
            nn_out = self.network(z_in)
            s, t = nn_out.chunk(2, dim=1)
            s_fac = self.scaling_factor.exp().view(1, -1, 1, 1)
            s = torch.tanh(s / s_fac) * s_fac
            s = s * (1 - self.mask)
            t = t * (1 - self.mask)
            if not reverse:
                z = (z + t) * torch.exp(s)
                ldj += s.sum(dim=[1, 2, 3])
            else:
                z = (z * torch.exp(-s)) - t
                ldj -= s.sum(dim=[1, 2, 3])
            return z, ldj

    class SqueezeFlow(nn.Module):
        def forward(self, z, ldj, reverse=False):
            B, C, H, W = z.shape
            if not reverse:
                z = z.reshape(B, C, H // 2, 2, W // 2, 2)
                z = z.permute(0, 1, 3, 5, 2, 4)
                z = z.reshape(B, 4 * C, H // 2, W // 2)
            else:
                z = z.reshape(B, C // 4, 2, 2, H, W)
                z = z.permute(0, 1, 4, 2, 5, 3)
                z = z.reshape(B, C // 4, H * 2, W * 2)
            return z, ldj

    def create_checkerboard_mask(h, w, invert=False):
        x, y = torch.arange(h, dtype=torch.int32), torch.arange(w, dtype=torch.int32)
        xx, yy = torch.meshgrid(x, y, indexing='ij')
        mask = torch.fmod(xx + yy, 2)
        mask = mask.to(torch.float32).view(1, 1, h, w)
        if invert:
            mask = 1 - mask
        return mask

    def create_channel_mask(c_in, invert=False):
        mask = torch.cat([torch.ones(c_in // 2, dtype=torch.float32),
                          torch.zeros(c_in - c_in // 2, dtype=torch.float32)])
        mask = mask.view(1, c_in, 1, 1)
        if invert:
            mask = 1. - mask
        return mask

    flow_layers = [Dequantization()]
    for i in range(2):
        flow_layers += [CouplingLayer(network=GatedConvNet(c_in=1, c_hidden=4),
                                      mask=create_checkerboard_mask(h=6, w=6, invert=(i % 2 == 1)), c_in=1)]
    flow_layers += [SqueezeFlow()]
    for i in range(2):
        flow_layers += [CouplingLayer(network=GatedConvNet(c_in=4, c_hidden=6),
                                      mask=create_channel_mask(c_in=4, invert=(i % 2 == 1)), c_in=4)]
    return nn.ModuleList(flow_layers)


def realnvp_flow(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    flows = load(m, make_flow(m), weights_of(make_flow))
    prior = torch.distributions.normal.Normal(loc=0.0, scale=1.0)
    rng = np.random.default_rng(12)
    imgs = torch.tensor(rng.integers(0, 4, (5, 1, 6, 6)))
    noises = torch.tensor(rng.uniform(0, 1, (4, 5, 1, 6, 6)).astype(np.float32))
    # the final convolutions start at zero; make them non-zero so the couplings do something
    with torch.no_grad():
        for f in flows:
            if hasattr(f, 'network'):
                f.network.nn[-1].weight.add_(0.05)
                f.scaling_factor.fill_(0.3)

    def encode(imgs, noise):
        z, ldj = imgs, torch.zeros(imgs.shape[0])
        for flow in flows:
            if isinstance(flow, type(flows[0])):
                z, ldj = flow(z, ldj, reverse=False, noise=noise)
            else:
                z, ldj = flow(z, ldj, reverse=False)
        return z, ldj

    def _get_likelihood(imgs, noise, return_ll=False):
        z, ldj = encode(imgs, noise)
        log_pz = prior.log_prob(z).sum(dim=[1, 2, 3])
        log_px = ldj + log_pz
        nll = -log_px
        bpd = nll * np.log2(np.exp(1)) / np.prod(imgs.shape[1:])
        return bpd.mean() if not return_ll else log_px

    optimizer = optim.Adam(flows.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.99)
    bpds = []
    for step in range(3):
        loss = _get_likelihood(imgs, noises[step])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        bpds.append(loss.item())
    # invert: the latent back to the image through the reversed flows
    with torch.no_grad():
        z, ldj = encode(imgs, noises[3])
        ll = _get_likelihood(imgs, noises[3], return_ll=True)
        x, ldj_back = z, torch.zeros(imgs.shape[0])
        for flow in reversed(flows):
            x, ldj_back = flow(x, ldj_back, reverse=True)
    grads = {k: v.grad for k, v in flows.named_parameters()}
    return {"bpds": bpds, "z": z, "ldj": ldj, "ll": ll, "x_back": x, "ldj_back": ldj_back, "grads": grads,
            "dtype": str(x.dtype).replace("torch.", "")}


def test_uva_realnvp_flow():
    ours, _ = run_both(realnvp_flow, rtol=2e-4, atol=1e-5)
    imgs = np.random.default_rng(12).integers(0, 4, (5, 1, 6, 6))
    np.testing.assert_array_equal(ours["x_back"], imgs)  # the flow inverts exactly back to the integers
    assert ours["dtype"] == "int32"
    np.testing.assert_allclose(ours["ldj_back"], -ours["ldj"], rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# CS231n (2021+): SimCLR's NT-Xent loss by loops and vectorised, transformer captioning pieces
# ----------------------------------------------------------------------------------------------


def simclr_and_transformer(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(13)
    N, D, tau, device = 4, 5, 0.5, 'cpu'
    out_left = torch.tensor(rng.standard_normal((N, D)), requires_grad=True)
    out_right = torch.tensor(rng.standard_normal((N, D)), requires_grad=True)

    def sim(z_i, z_j):
        return torch.dot(z_i, z_j) / (torch.linalg.norm(z_i) * torch.linalg.norm(z_j))

    def simclr_loss_naive(out_left, out_right, tau):
        N = out_left.shape[0]
        out = torch.cat([out_left, out_right], dim=0)
        total_loss = 0
        for k in range(N):
            z_k, z_k_N = out[k], out[k + N]
            denom_left, denom_right = 0, 0
            for i in range(2 * N):
                if i != k:
                    denom_left += torch.exp(sim(z_k, out[i]) / tau)
                if i != k + N:
                    denom_right += torch.exp(sim(z_k_N, out[i]) / tau)
            loss_left = -torch.log(torch.exp(sim(z_k, z_k_N) / tau) / denom_left)
            loss_right = -torch.log(torch.exp(sim(z_k_N, z_k) / tau) / denom_right)
            total_loss += loss_left + loss_right
        return total_loss / (2 * N)

    def sim_positive_pairs(out_left, out_right):
        left_norm = out_left / torch.linalg.norm(out_left, dim=1, keepdim=True)
        right_norm = out_right / torch.linalg.norm(out_right, dim=1, keepdim=True)
        return torch.sum(left_norm * right_norm, dim=1, keepdim=True)

    def compute_sim_matrix(out):
        out_norm = out / torch.linalg.norm(out, dim=1, keepdim=True)
        return out_norm @ out_norm.T

    def simclr_loss_vectorized(out_left, out_right, tau, device='cuda'):
        N = out_left.shape[0]
        out = torch.cat([out_left, out_right], dim=0)
        sim_matrix = compute_sim_matrix(out)
        exponential = torch.exp(sim_matrix / tau)
        mask = (torch.ones_like(exponential, device=device) - torch.eye(2 * N, device=device)).to(device).bool()
        exponential = exponential.masked_select(mask).view(2 * N, -1)
        denom = torch.sum(exponential, dim=1, keepdim=True)
        sim_pairs = sim_positive_pairs(out_left, out_right).to(device)
        sim_pairs = torch.cat([sim_pairs, sim_pairs], dim=0)
        numerator = torch.exp(sim_pairs / tau)
        return torch.sum(-torch.log(numerator / denom)) / (2 * N)

    naive = simclr_loss_naive(out_left, out_right, tau)
    g_naive = torch.autograd.grad(naive, (out_left, out_right))
    vec = simclr_loss_vectorized(out_left, out_right, tau, device=device)
    g_vec = torch.autograd.grad(vec, (out_left, out_right))
    # the same loss as cross-entropy over the similarity logits (the library version)
    z = F.normalize(torch.cat([out_left, out_right]), dim=1)
    logits = (z @ z.t() / tau).fill_diagonal_(float('-inf'))
    targets = torch.cat([torch.arange(N, 2 * N), torch.arange(N)])
    xent = F.cross_entropy(logits, targets)
    cos = F.cosine_similarity(out_left[:, None, :], out_right[None, :, :], dim=-1)

    return {"naive": naive, "vec": vec, "xent": xent, "g_naive": g_naive, "g_vec": g_vec, "cos": cos}


def make_captioner(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MultiHeadAttention(nn.Module):
        def __init__(self, embed_dim, num_heads, dropout=0.1):
            super().__init__()
            assert embed_dim % num_heads == 0
            self.key = nn.Linear(embed_dim, embed_dim)
            self.query = nn.Linear(embed_dim, embed_dim)
            self.value = nn.Linear(embed_dim, embed_dim)
            self.proj = nn.Linear(embed_dim, embed_dim)
            self.attn_drop = nn.Dropout(dropout)
            self.n_head = num_heads
            self.emd_dim = embed_dim
            self.head_dim = self.emd_dim // self.n_head

        def forward(self, query, key, value, attn_mask=None):
            N, S, E = query.shape
            N, T, E = value.shape
            H = self.n_head
            Q = self.query(query).view(N, S, H, E // H).transpose(1, 2)
            K = self.key(key).view(N, T, H, E // H).transpose(1, 2)
            V = self.value(value).view(N, T, H, E // H).transpose(1, 2)
            Y = torch.matmul(Q, K.transpose(2, 3)) / math.sqrt(E / H)
            if attn_mask is not None:
                Y = Y.masked_fill(attn_mask == 0, float('-inf'))
            Y = self.attn_drop(F.softmax(Y, dim=-1))
            output = torch.matmul(Y, V).transpose(1, 2).reshape(N, S, E)
            return self.proj(output)

    class PositionalEncoding(nn.Module):
        def __init__(self, embed_dim, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            assert embed_dim % 2 == 0
            pe = torch.zeros(1, max_len, embed_dim)
            i = torch.arange(max_len)[:, None]
            pows = torch.pow(10000, -torch.arange(0, embed_dim, 2) / embed_dim)
            pe[0, :, 0::2] = torch.sin(i * pows)
            pe[0, :, 1::2] = torch.cos(i * pows)
            self.register_buffer('pe', pe)

        def forward(self, x):
            N, S, D = x.shape
            output = x + self.pe[:, :S]
            return self.dropout(output)

    class CaptioningTransformer(nn.Module):
        def __init__(self, input_dim=6, wordvec_dim=8, num_heads=2, vocab_size=7, max_length=10):
            super().__init__()
            self.visual_projection = nn.Linear(input_dim, wordvec_dim)
            self.embedding = nn.Embedding(vocab_size, wordvec_dim, padding_idx=0)
            self.positional_encoding = PositionalEncoding(wordvec_dim, max_len=max_length)
            self.self_attn = MultiHeadAttention(wordvec_dim, num_heads)
            self.cross_attn = MultiHeadAttention(wordvec_dim, num_heads)
            self.norm1, self.norm2 = nn.LayerNorm(wordvec_dim), nn.LayerNorm(wordvec_dim)
            self.output = nn.Linear(wordvec_dim, vocab_size)
            self.apply(self._init_weights)

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, features, captions):
            N, T = captions.shape
            caption_embeddings = self.positional_encoding(self.embedding(captions))
            projected_features = self.visual_projection(features).unsqueeze(1)
            tgt_mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            x = self.norm1(caption_embeddings + self.self_attn(caption_embeddings, caption_embeddings, caption_embeddings, tgt_mask))
            x = self.norm2(x + self.cross_attn(x, projected_features, projected_features))
            return self.output(x)

    return CaptioningTransformer()


def transformer_captioning(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_captioner(m), weights_of(make_captioner))
    model.eval()  # (the attention and positional dropout off: each library draws its own masks)
    rng = np.random.default_rng(14)
    features = torch.tensor(rng.standard_normal((3, 6)).astype(np.float32))
    captions = torch.tensor([[1, 3, 4, 5, 2, 0], [1, 6, 2, 0, 0, 0], [1, 3, 3, 3, 4, 2]])
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(3):
        scores = model(features, captions_in)
        loss = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), captions_out.reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the causal mask: changing a later word leaves the earlier scores alone
    with torch.no_grad():
        a = model(features, captions_in)
        changed = captions_in.clone()
        changed[:, -1] = 5
        b = model(features, changed)
    return {"losses": losses, "scores": a, "earlier_same": bool((a[:, :-1] == b[:, :-1]).all()),
            "pe": model.positional_encoding.pe, "pe_dtype": str(model.positional_encoding.pe.dtype).replace("torch.", ""),
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_cs231n_simclr_loss():
    ours, _ = run_both(simclr_and_transformer, rtol=1e-9, atol=1e-11)
    assert float(ours["vec"]) == pytest.approx(float(ours["naive"]), rel=1e-12)
    assert float(ours["xent"]) == pytest.approx(float(ours["naive"]), rel=1e-12)
    for a, b in zip(ours["g_vec"], ours["g_naive"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_cs231n_transformer_captioning():
    ours, _ = run_both(transformer_captioning, rtol=2e-5, atol=2e-6)
    assert ours["pe_dtype"] == "float32" and ours["earlier_same"] is True
    i, k = np.arange(10)[:, None], np.arange(0, 8, 2)
    np.testing.assert_allclose(ours["pe"][0, :, 0::2], np.sin(i * 10000.0 ** (-k / 8)), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# fast.ai part 2, lesson 18: optimisers from scratch (state stored on the parameters) against optim,
# and the LR finder callback with ExponentialLR
# ----------------------------------------------------------------------------------------------


def make_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))


def optimisers_from_scratch(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    x_np, y_np = fastai_data()
    x, y = torch.tensor(x_np), torch.tensor(y_np)[:, None]

    class SGD:
        def __init__(self, params, lr, wd=0.):
            params = list(params)
            self.params, self.lr, self.wd = params, lr, wd
            self.i = 0

        def step(self):
            with torch.no_grad():
                for p in self.params:
                    self.reg_step(p)
                    self.opt_step(p)
            self.i += 1

        def opt_step(self, p): p -= p.grad * self.lr

        def reg_step(self, p):
            if self.wd != 0: p *= 1 - self.lr * self.wd

        def zero_grad(self):
            for p in self.params: p.grad.data.zero_()

    class Momentum(SGD):
        def __init__(self, params, lr, wd=0., mom=0.9):
            super().__init__(params, lr=lr, wd=wd)
            self.mom = mom

        def opt_step(self, p):
            if not hasattr(p, 'grad_avg'): p.grad_avg = torch.zeros_like(p.grad)
            p.grad_avg = p.grad_avg * self.mom + p.grad
            p -= self.lr * p.grad_avg

    class RMSProp(SGD):
        def __init__(self, params, lr, wd=0., sqr_mom=0.99, eps=1e-5):
            super().__init__(params, lr=lr, wd=wd)
            self.sqr_mom, self.eps = sqr_mom, eps

        def opt_step(self, p):
            if not hasattr(p, 'sqr_avg'): p.sqr_avg = p.grad ** 2
            p.sqr_avg = p.sqr_avg * self.sqr_mom + p.grad ** 2 * (1 - self.sqr_mom)
            p -= self.lr * p.grad / (p.sqr_avg.sqrt() + self.eps)

    class Adam(SGD):
        def __init__(self, params, lr, wd=0., beta1=0.9, beta2=0.99, eps=1e-5):
            super().__init__(params, lr=lr, wd=wd)
            self.beta1, self.beta2, self.eps = beta1, beta2, eps

        def opt_step(self, p):
            if not hasattr(p, 'avg'): p.avg = torch.zeros_like(p.grad.data)
            if not hasattr(p, 'sqr_avg'): p.sqr_avg = torch.zeros_like(p.grad.data)
            p.avg = self.beta1 * p.avg + (1 - self.beta1) * p.grad
            unbias_avg = p.avg / (1 - (self.beta1 ** (self.i + 1)))
            p.sqr_avg = self.beta2 * p.sqr_avg + (1 - self.beta2) * (p.grad ** 2)
            unbias_sqr_avg = p.sqr_avg / (1 - (self.beta2 ** (self.i + 1)))
            p -= self.lr * unbias_avg / (unbias_sqr_avg + self.eps).sqrt()

    def train(opt_func, n=5):
        model = load(m, make_mlp(m), weights_of(make_mlp))
        opt = opt_func(model.parameters())
        losses = []
        for i in range(n):
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        return losses, [p.detach().clone() for p in model.parameters()]

    pairs = {
        "sgd": (lambda ps: SGD(ps, 0.1, wd=0.01), lambda ps: optim.SGD(ps, 0.1, weight_decay=0.0)),
        "momentum": (lambda ps: Momentum(ps, 0.05), lambda ps: optim.SGD(ps, 0.05, momentum=0.9)),
        "rmsprop": (lambda ps: RMSProp(ps, 0.01), None),
        "adam": (lambda ps: Adam(ps, 0.01, eps=1e-16),  # (eps inside the sqrt here)
                  lambda ps: optim.Adam(ps, 0.01, betas=(0.9, 0.99), eps=1e-8)),
    }
    results = {k: (train(a), train(b) if b is not None else None) for k, (a, b) in pairs.items()}

    # decoupled weight decay by hand against SGD(weight_decay) (L2 in the gradient): differ on purpose
    # the LR finder as a callback: ExponentialLR until the loss blows up
    model = load(m, make_mlp(m), weights_of(make_mlp))
    opt = optim.SGD(model.parameters(), lr=1e-4)
    sched = optim.lr_scheduler.ExponentialLR(opt, gamma=1.6)
    lrs, losses, best = [], [], math.inf
    for i in range(40):
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        lrs.append(sched.get_last_lr()[0])
        losses.append(loss.item())
        sched.step()
        if loss.item() < best: best = loss.item()
        if math.isnan(loss.item()) or loss.item() > best * 3: break
    return {"results": results, "lrs": lrs, "finder_losses": losses[:-1], "stopped_at": i}


def test_fastai_optimisers_from_scratch():
    ours, _ = run_both(optimisers_from_scratch, rtol=1e-5, atol=1e-6)
    res = ours["results"]
    for k in ("momentum", "adam"):
        (hand_losses, hand_params), (lib_losses, lib_params) = res[k]
        np.testing.assert_allclose(hand_losses, lib_losses, rtol=1e-5, err_msg=k)
        for a, b in zip(hand_params, lib_params):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=k)
    assert ours["stopped_at"] < 39


# ----------------------------------------------------------------------------------------------
# Deep Learning with PyTorch (Stevens, Antiga, Viehmann), chapters 5-6: the thermometer
# ----------------------------------------------------------------------------------------------


def thermometer(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    t_c = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
    t_u = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
    t_c = torch.tensor(t_c)
    t_u = torch.tensor(t_u)

    def model(t_u, w, b):
        return w * t_u + b

    def loss_fn(t_p, t_c):
        squared_diffs = (t_p - t_c) ** 2
        return squared_diffs.mean()

    def dloss_fn(t_p, t_c):
        return 2 * (t_p - t_c) / t_p.size(0)

    def grad_fn(t_u, t_c, t_p, w, b):
        dloss_dtp = dloss_fn(t_p, t_c)
        dloss_dw = dloss_dtp * t_u
        dloss_db = dloss_dtp * 1.0
        return torch.stack([dloss_dw.sum(), dloss_db.sum()])

    def training_loop_by_hand(n_epochs, learning_rate, params, t_u, t_c):
        for epoch in range(1, n_epochs + 1):
            w, b = params
            t_p = model(t_u, w, b)
            loss = loss_fn(t_p, t_c)
            grad = grad_fn(t_u, t_c, t_p, w, b)
            params = params - learning_rate * grad
        return params, loss

    t_un = 0.1 * t_u
    hand, hand_loss = training_loop_by_hand(100, 1e-2, torch.tensor([1.0, 0.0]), t_un, t_c)

    def training_loop_autograd(n_epochs, learning_rate, params, t_u, t_c):
        for epoch in range(1, n_epochs + 1):
            if params.grad is not None:
                params.grad.zero_()
            t_p = model(t_u, *params)
            loss = loss_fn(t_p, t_c)
            loss.backward()
            with torch.no_grad():
                params -= learning_rate * params.grad
        return params, loss

    auto, auto_loss = training_loop_autograd(100, 1e-2, torch.tensor([1.0, 0.0], requires_grad=True), t_un, t_c)

    # the validation split with a fixed permutation, an optimizer, and nn.Linear on unsqueezed data
    n_samples = t_u.shape[0]
    n_val = int(0.2 * n_samples)
    shuffled_indices = torch.tensor([3, 9, 0, 7, 1, 10, 5, 2, 8, 4, 6])
    train_indices, val_indices = shuffled_indices[:-n_val], shuffled_indices[-n_val:]
    t_u_train, t_c_train = t_u[train_indices], t_c[train_indices]
    t_u_val, t_c_val = t_u[val_indices], t_c[val_indices]
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = optim.Adam([params], lr=1e-1)
    history = []
    for epoch in range(1, 200 + 1):
        train_loss = loss_fn(model(0.1 * t_u_train, *params), t_c_train)
        with torch.no_grad():
            val_loss = loss_fn(model(0.1 * t_u_val, *params), t_c_val)
            assert val_loss.requires_grad == False
        optimizer.zero_grad()
        train_loss.backward()
        optimizer.step()
        if epoch % 50 == 0:
            history.append((train_loss.item(), val_loss.item()))

    weights = weights_of(lambda mm: mm.nn.Sequential(mm.nn.Linear(1, 8), mm.nn.Tanh(), mm.nn.Linear(8, 1)))
    seq_model = load(m, nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)), weights)
    named = [name for name, param in seq_model.named_parameters()]
    optimizer = optim.SGD(seq_model.parameters(), lr=1e-3)
    x = (0.1 * t_u).unsqueeze(1)
    for epoch in range(50):
        loss = nn.MSELoss()(seq_model(x), t_c.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"hand": hand, "hand_loss": hand_loss, "auto": auto.detach(), "auto_loss": auto_loss, "history": history,
            "params": params.detach(), "named": named, "seq_loss": loss, "bias_grad": seq_model[0].bias.grad}


def test_deep_learning_with_pytorch_thermometer():
    ours, _ = run_both(thermometer, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["hand"], ours["auto"], rtol=1e-5)
    assert ours["named"] == ['0.weight', '0.bias', '2.weight', '2.bias']
    assert ours["history"][-1][0] < ours["history"][0][0] and 3 < ours["params"][0] < 5.4  # (5.4 after 5000 epochs)


# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 12: PixelCNN (masked and dilated convolutions, gated stacks, a 5-d cross-entropy,
# the receptive field by input gradients, pixel-by-pixel sampling)
# ----------------------------------------------------------------------------------------------


def make_pixelcnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedConvolution(nn.Module):
        def __init__(self, c_in, c_out, mask, **kwargs):
            super().__init__()
            kernel_size = (mask.shape[0], mask.shape[1])
            dilation = 1 if "dilation" not in kwargs else kwargs["dilation"]
            padding = tuple([dilation * (kernel_size[i] - 1) // 2 for i in range(2)])
            self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=padding, **kwargs)
            self.register_buffer('mask', mask[None, None])

        def forward(self, x):
            self.conv.weight.data *= self.mask  # Ensures zero's at masked positions
            return self.conv(x)

    class VerticalStackConvolution(MaskedConvolution):
        def __init__(self, c_in, c_out, kernel_size=3, mask_center=False, **kwargs):
            mask = torch.ones(kernel_size, kernel_size)
            mask[kernel_size // 2 + 1:, :] = 0
            if mask_center:
                mask[kernel_size // 2, :] = 0
            super().__init__(c_in, c_out, mask, **kwargs)

    class HorizontalStackConvolution(MaskedConvolution):
        def __init__(self, c_in, c_out, kernel_size=3, mask_center=False, **kwargs):
            mask = torch.ones(1, kernel_size)
            mask[0, kernel_size // 2 + 1:] = 0
            if mask_center:
                mask[0, kernel_size // 2] = 0
            super().__init__(c_in, c_out, mask, **kwargs)

    class GatedMaskedConv(nn.Module):
        def __init__(self, c_in, **kwargs):
            super().__init__()
            self.conv_vert = VerticalStackConvolution(c_in, c_out=2 * c_in, **kwargs)
            self.conv_horiz = HorizontalStackConvolution(c_in, c_out=2 * c_in, **kwargs)
            self.conv_vert_to_horiz = nn.Conv2d(2 * c_in, 2 * c_in, kernel_size=1, padding=0)
            self.conv_horiz_1x1 = nn.Conv2d(c_in, c_in, kernel_size=1, padding=0)

        def forward(self, v_stack, h_stack):
            v_stack_feat = self.conv_vert(v_stack)
            v_val, v_gate = v_stack_feat.chunk(2, dim=1)
            v_stack_out = torch.tanh(v_val) * torch.sigmoid(v_gate)
            h_stack_feat = self.conv_horiz(h_stack)
            h_stack_feat = h_stack_feat + self.conv_vert_to_horiz(v_stack_feat)
            h_val, h_gate = h_stack_feat.chunk(2, dim=1)
            h_stack_feat = torch.tanh(h_val) * torch.sigmoid(h_gate)
            h_stack_out = self.conv_horiz_1x1(h_stack_feat)
            h_stack_out = h_stack_out + h_stack
            return v_stack_out, h_stack_out

    class PixelCNN(nn.Module):
        def __init__(self, c_in, c_hidden, num_values=8):
            super().__init__()
            self.num_values = num_values
            self.conv_vstack = VerticalStackConvolution(c_in, c_hidden, mask_center=True)
            self.conv_hstack = HorizontalStackConvolution(c_in, c_hidden, mask_center=True)
            self.conv_layers = nn.ModuleList([
                GatedMaskedConv(c_hidden),
                GatedMaskedConv(c_hidden, dilation=2),
                GatedMaskedConv(c_hidden),
            ])
            self.conv_out = nn.Conv2d(c_hidden, c_in * num_values, kernel_size=1, padding=0)

        def forward(self, x):
            x = (x.float() / (self.num_values - 1)) * 2 - 1
            v_stack = self.conv_vstack(x)
            h_stack = self.conv_hstack(x)
            for layer in self.conv_layers:
                v_stack, h_stack = layer(v_stack, h_stack)
            out = self.conv_out(F.elu(h_stack))
            out = out.reshape(out.shape[0], self.num_values, out.shape[1] // self.num_values, out.shape[2], out.shape[3])
            return out

        def calc_likelihood(self, x):
            pred = self.forward(x)
            nll = F.cross_entropy(pred, x, reduction='none')
            bpd = nll.mean(dim=[1, 2, 3]) * np.log2(np.exp(1))
            return bpd.mean()

    return PixelCNN(c_in=1, c_hidden=4)


def pixelcnn(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_pixelcnn(m), weights_of(make_pixelcnn))
    rng = np.random.default_rng(15)
    imgs = torch.tensor(rng.integers(0, 8, (3, 1, 6, 6)))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.99)
    bpds = []
    for step in range(3):
        loss = model.calc_likelihood(imgs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        bpds.append(loss.item())
    # the receptive field of one pixel: the input's gradient
    inp_img = torch.zeros(1, 1, 7, 7)
    inp_img.requires_grad_()
    v_stack = model.conv_vstack(inp_img)
    h_stack = model.conv_hstack(inp_img)
    for layer in model.conv_layers:
        v_stack, h_stack = layer(v_stack, h_stack)
    h_stack[0, :, 3, 3].sum().backward()
    receptive = inp_img.grad.abs() > 0
    # sampling pixel by pixel with the uniforms drawn beforehand (inverse-CDF in place of multinomial)
    u = torch.tensor(rng.uniform(0, 1, (2, 1, 4, 4)).astype(np.float32))
    img = torch.zeros(2, 1, 4, 4, dtype=torch.long) - 1
    with torch.no_grad():
        for h in range(4):
            for w in range(4):
                for c in range(1):
                    if (img[:, c, h, w] != -1).all().item():
                        continue
                    pred = model.forward(img.clamp(min=0)[:, :, :4, :4])
                    probs = F.softmax(pred[:, :, c, h, w], dim=-1)
                    cdf = probs.cumsum(dim=-1)
                    img[:, c, h, w] = (cdf < u[:, c, h, w, None]).sum(dim=-1).clamp(max=7)
    # multinomial itself: only its shape and range compare
    samples = torch.multinomial(F.softmax(torch.zeros(2, 8), dim=-1), num_samples=5, replacement=True)
    return {"bpds": bpds, "receptive": receptive, "img": img, "masks": [b.clone() for n, b in model.named_buffers()],
            "samples_ok": bool(samples.shape == (2, 5)) and bool(((samples >= 0) & (samples < 8)).all()),
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_uva_pixelcnn():
    ours, _ = run_both(pixelcnn, rtol=2e-4, atol=1e-5)
    r = ours["receptive"][0, 0]
    assert not r[4:].any() and not r[3, 4:].any()  # nothing below or to the right of the pixel
    assert r[3, :3].any() and r[:3].any()
    assert ours["samples_ok"] is True and (ours["img"] >= 0).all()


# ----------------------------------------------------------------------------------------------
# UvA DL tutorials 3, 4, 6 and 17: activation functions written as modules and their dead neurons,
# an optimizer template (state in dicts keyed by parameters) on a pathological curve, a custom
# _LRScheduler (cosine warm-up), and SimCLR's InfoNCE loss with its ranking metrics
# ----------------------------------------------------------------------------------------------


def uva_tutorials(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ActivationFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.name = self.__class__.__name__
            self.config = {"name": self.name}

    class Sigmoid(ActivationFunction):
        def forward(self, x):
            return 1 / (1 + torch.exp(-x))

    class LeakyReLU(ActivationFunction):
        def __init__(self, alpha=0.1):
            super().__init__()
            self.config["alpha"] = alpha

        def forward(self, x):
            return torch.where(x > 0, x, self.config["alpha"] * x)

    class ELU(ActivationFunction):
        def forward(self, x):
            return torch.where(x > 0, x, torch.exp(x) - 1)

    class Swish(ActivationFunction):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class ReLU(ActivationFunction):
        def forward(self, x):
            return x * (x > 0).float()

    def get_grads(act_fn, x):
        x = x.clone().requires_grad_()
        out = act_fn(x)
        out.sum().backward()
        return x.grad

    x = torch.linspace(-5, 5, 21)
    act_grads = {cls.__name__: (cls()(x), get_grads(cls(), x)) for cls in (Sigmoid, LeakyReLU, ELU, Swish, ReLU)}

    class BaseNetwork(nn.Module):
        def __init__(self, act_fn, input_size=12, num_classes=3, hidden_sizes=[8, 8, 8]):
            super().__init__()
            layers = []
            layer_sizes = [input_size] + hidden_sizes
            for layer_index in range(1, len(layer_sizes)):
                layers += [nn.Linear(layer_sizes[layer_index - 1], layer_sizes[layer_index]), act_fn]
            layers += [nn.Linear(layer_sizes[-1], num_classes)]
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            x = x.view(x.size(0), -1)
            return self.layers(x)

    net = BaseNetwork(ReLU())
    rng_w = np.random.default_rng(18)
    net.load_state_dict({k: torch.tensor((rng_w.standard_normal(tuple(v.shape)) / math.sqrt(v.shape[-1])).astype(np.float32))
                         for k, v in net.state_dict().items()})
    with torch.no_grad():
        net.layers[2].bias.fill_(-2.0)  # kill some neurons of the second layer
    imgs = torch.tensor(np.random.default_rng(16).standard_normal((20, 3, 2, 2)).astype(np.float32))
    neurons_dead = [torch.ones(layer.weight.shape[0], dtype=torch.bool) for layer in net.layers[:-1] if isinstance(layer, nn.Linear)]
    net.eval()
    with torch.no_grad():
        h = imgs.view(imgs.size(0), -1)
        layer_index = 0
        for layer in net.layers[:-1]:
            h = layer(h)
            if isinstance(layer, ActivationFunction):
                neurons_dead[layer_index] = torch.logical_and(neurons_dead[layer_index], (h == 0).all(dim=0))
                layer_index += 1
    dead = [t.sum().item() for t in neurons_dead]
    loss = F.cross_entropy(net(imgs), torch.arange(20) % 3)
    net.zero_grad()
    loss.backward()
    weight_grads = {name: params.grad.data.view(-1).cpu().clone().numpy() for name, params in net.named_parameters() if "weight" in name}

    class OptimizerTemplate:
        def __init__(self, params, lr):
            self.params = list(params)
            self.lr = lr

        def zero_grad(self):
            for p in self.params:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()

        @torch.no_grad()
        def step(self):
            for p in self.params:
                if p.grad is None:
                    continue
                self.update_param(p)

    class SGDMomentum(OptimizerTemplate):
        def __init__(self, params, lr, momentum=0.0):
            super().__init__(params, lr)
            self.momentum = momentum
            self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}

        def update_param(self, p):
            self.param_momentum[p] = (1 - self.momentum) * p.grad + self.momentum * self.param_momentum[p]
            p_update = -self.lr * self.param_momentum[p]
            p.add_(p_update)

    class Adam(OptimizerTemplate):
        def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
            super().__init__(params, lr)
            self.beta1, self.beta2, self.eps = beta1, beta2, eps
            self.param_step = {p: 0 for p in self.params}
            self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}
            self.param_2nd_momentum = {p: torch.zeros_like(p.data) for p in self.params}

        def update_param(self, p):
            self.param_step[p] += 1
            self.param_momentum[p] = (1 - self.beta1) * p.grad + self.beta1 * self.param_momentum[p]
            self.param_2nd_momentum[p] = (1 - self.beta2) * (p.grad) ** 2 + self.beta2 * self.param_2nd_momentum[p]
            bias_correction_1 = 1 - self.beta1 ** self.param_step[p]
            bias_correction_2 = 1 - self.beta2 ** self.param_step[p]
            p_2nd_mom = self.param_2nd_momentum[p] / bias_correction_2
            p_mom = self.param_momentum[p] / bias_correction_1
            p_lr = self.lr / (torch.sqrt(p_2nd_mom) + self.eps)
            p_update = -p_lr * p_mom
            p.add_(p_update)

    def pathological_curve_loss(w1, w2):
        x1_loss = torch.tanh(w1) ** 2 + 0.01 * torch.abs(w1)
        x2_loss = torch.sigmoid(w2)
        return x1_loss + x2_loss

    def train_curve(optimizer_func, curve_func=pathological_curve_loss, num_updates=12, init=[5, 5]):  # (lr=10 turns chaotic later: float32 rounding grows)
        weights = nn.Parameter(torch.FloatTensor(init), requires_grad=True)
        optimizer = optimizer_func([weights])
        list_points = []
        for _ in range(num_updates):
            loss = curve_func(weights[0], weights[1])
            list_points.append(torch.cat([weights.data.detach(), loss.unsqueeze(dim=0).detach()], dim=0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        points = torch.stack(list_points, dim=0).numpy()
        return points

    curves = {"sgd": train_curve(lambda params: SGDMomentum(params, lr=10)),
              "sgd_mom": train_curve(lambda params: SGDMomentum(params, lr=10, momentum=0.9)),
              "adam": train_curve(lambda params: Adam(params, lr=1)),
              "adam_lib": train_curve(lambda params: optim.Adam(params, lr=1))}

    class CosineWarmupScheduler(optim.lr_scheduler._LRScheduler):
        def __init__(self, optimizer, warmup, max_iters):
            self.warmup = warmup
            self.max_num_iters = max_iters
            super().__init__(optimizer)

        def get_lr(self):
            lr_factor = self.get_lr_factor(epoch=self.last_epoch)
            return [base_lr * lr_factor for base_lr in self.base_lrs]

        def get_lr_factor(self, epoch):
            lr_factor = 0.5 * (1 + np.cos(np.pi * epoch / self.max_num_iters))
            if epoch <= self.warmup:
                lr_factor *= epoch * 1.0 / self.warmup
            return lr_factor

    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.Adam([p], lr=1e-3)
    lr_scheduler = CosineWarmupScheduler(optimizer=opt, warmup=5, max_iters=20)
    lrs = []
    for epoch_iter in range(20):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
        lr_scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])

    # SimCLR (tutorial 17): InfoNCE and the ranking metrics
    feats = torch.tensor(np.random.default_rng(17).standard_normal((6, 4)).astype(np.float32), requires_grad=True)
    cos_sim = F.cosine_similarity(feats[:, None, :], feats[None, :, :], dim=-1)
    self_mask = torch.eye(cos_sim.shape[0], dtype=torch.bool)
    cos_sim.masked_fill_(self_mask, -9e15)
    pos_mask = self_mask.roll(shifts=cos_sim.shape[0] // 2, dims=0)
    cos_sim = cos_sim / 0.07
    nll = -cos_sim[pos_mask] + torch.logsumexp(cos_sim, dim=-1)
    nll = nll.mean()
    comb_sim = torch.cat([cos_sim[pos_mask][:, None], cos_sim.masked_fill(pos_mask, -9e15)], dim=-1)
    sim_argsort = comb_sim.argsort(dim=-1, descending=True).argmin(dim=-1)
    nll.backward()
    metrics = [(sim_argsort == 0).float().mean().item(), (sim_argsort < 5).float().mean().item(), 1 + sim_argsort.float().mean().item()]
    return {"act": act_grads, "dead": dead, "weight_grads": weight_grads, "curves": curves, "lrs": lrs,
            "nll": nll, "feat_grad": feats.grad, "metrics": metrics}


def test_uva_activations_optimizers_scheduler_simclr():
    ours, _ = run_both(uva_tutorials, rtol=1e-5, atol=1e-6)
    x = np.linspace(-5, 5, 21)
    np.testing.assert_allclose(ours["act"]["ELU"][1], np.where(x > 0, 1, np.exp(x)), rtol=1e-6)
    assert ours["dead"][1] > 0
    np.testing.assert_allclose(ours["curves"]["adam"], ours["curves"]["adam_lib"], rtol=1e-5, atol=1e-6)
    factor = lambda e: 0.5 * (1 + np.cos(np.pi * e / 20)) * (e / 5 if e <= 5 else 1)
    np.testing.assert_allclose(ours["lrs"], [1e-3 * factor(e) for e in range(1, 21)], rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# Stanford CS330 (meta-learning): MAML with a functional convolutional network (second order,
# through conv2d, batch_norm and padding='same'), and prototypical networks
# ----------------------------------------------------------------------------------------------


def maml_and_protonet(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    NUM_HIDDEN_CHANNELS, KERNEL_SIZE, NUM_CONV_LAYERS = 3, 3, 2
    N_WAY, K, Q = 3, 2, 2
    rng = np.random.default_rng(19)
    meta_parameters = {}
    in_channels = 1
    for i in range(NUM_CONV_LAYERS):
        meta_parameters[f'conv{i}'] = torch.tensor(
            rng.uniform(-0.5, 0.5, (NUM_HIDDEN_CHANNELS, in_channels, KERNEL_SIZE, KERNEL_SIZE)).astype(np.float32),
            requires_grad=True)
        meta_parameters[f'b{i}'] = nn.init.zeros_(torch.empty(NUM_HIDDEN_CHANNELS, requires_grad=True))
        in_channels = NUM_HIDDEN_CHANNELS
    meta_parameters[f'w{NUM_CONV_LAYERS}'] = torch.tensor(rng.uniform(-0.5, 0.5, (N_WAY, NUM_HIDDEN_CHANNELS)).astype(np.float32), requires_grad=True)
    meta_parameters[f'b{NUM_CONV_LAYERS}'] = nn.init.zeros_(torch.empty(N_WAY, requires_grad=True))
    inner_lrs = {k: torch.tensor(0.4, requires_grad=True) for k in meta_parameters.keys()}

    def _forward(images, parameters):
        x = images
        for i in range(NUM_CONV_LAYERS):
            x = F.conv2d(input=x, weight=parameters[f'conv{i}'], bias=parameters[f'b{i}'], stride=1, padding='same')
            x = F.batch_norm(x, None, None, training=True)
            x = F.relu(x)
        x = torch.mean(x, dim=[2, 3])
        return F.linear(input=x, weight=parameters[f'w{NUM_CONV_LAYERS}'], bias=parameters[f'b{NUM_CONV_LAYERS}'])

    def score(logits, labels):
        y = torch.argmax(logits, dim=-1) == labels
        return y.type(torch.float).mean().item()

    def _inner_loop(images, labels, train, num_inner_steps=2):
        accuracies = []
        parameters = {k: torch.clone(v) for k, v in meta_parameters.items()}
        for _ in range(num_inner_steps):
            logits = _forward(images, parameters)
            loss = F.cross_entropy(logits, labels)
            accuracies.append(score(logits, labels))
            grads = torch.autograd.grad(loss, parameters.values(), create_graph=train)
            for k, g in zip(parameters.keys(), grads):
                parameters[k] = parameters[k] - inner_lrs[k] * g
        accuracies.append(score(_forward(images, parameters), labels))
        return parameters, accuracies

    optimizer = optim.Adam(list(meta_parameters.values()) + list(inner_lrs.values()), lr=1e-2)
    tasks = [(torch.tensor(rng.standard_normal((N_WAY * K, 1, 5, 5)).astype(np.float32)), torch.arange(N_WAY).repeat_interleave(K),
              torch.tensor(rng.standard_normal((N_WAY * Q, 1, 5, 5)).astype(np.float32)), torch.arange(N_WAY).repeat_interleave(Q))
             for _ in range(2)]
    outer_losses = []
    for step in range(2):
        optimizer.zero_grad()
        outer_loss_batch = []
        for images_support, labels_support, images_query, labels_query in tasks:
            adapted, acc = _inner_loop(images_support, labels_support, True)
            outer_loss_batch.append(F.cross_entropy(_forward(images_query, adapted), labels_query))
        outer_loss = torch.mean(torch.stack(outer_loss_batch))
        outer_loss.backward()
        optimizer.step()
        outer_losses.append(outer_loss.item())
    # (the conv biases b0, b1 feed a batch norm, so their gradients are rounding noise, which Adam scales
    # up to full steps: they and their learning rates are left out of the comparison)
    conv_biases = ('b0', 'b1')
    lr_grads = {k: v.grad for k, v in inner_lrs.items() if k not in conv_biases}

    # prototypical networks with the same encoder as a feature extractor
    def encode(x, parameters):
        for i in range(NUM_CONV_LAYERS):
            x = F.relu(F.batch_norm(F.conv2d(x, parameters[f'conv{i}'], parameters[f'b{i}'], padding='same'), None, None, training=True))
        return x.mean(dim=[2, 3])

    images_support, labels_support, images_query, labels_query = tasks[0]
    features_support = encode(images_support, meta_parameters)
    features_query = encode(images_query, meta_parameters)
    prototypes = torch.stack([features_support[labels_support == c].mean(dim=0) for c in range(N_WAY)])
    distances = torch.sum((features_query[:, None, :] - prototypes[None, :, :]) ** 2, dim=-1)
    by_cdist = torch.cdist(features_query, prototypes) ** 2
    proto_loss = F.cross_entropy(-distances, labels_query)
    proto_grads = torch.autograd.grad(proto_loss, [meta_parameters['conv0'], meta_parameters['conv1']])
    return {"outer_losses": outer_losses, "lr_grads": lr_grads, "params": {k: v.detach() for k, v in meta_parameters.items() if k not in conv_biases},
            "inner_lrs": {k: v.detach() for k, v in inner_lrs.items() if k not in conv_biases}, "acc": acc, "distances": distances,
            "by_cdist": by_cdist, "proto_loss": proto_loss, "proto_grads": proto_grads}


def test_cs330_maml_second_order_and_protonets():
    ours, _ = run_both(maml_and_protonet, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(ours["by_cdist"], ours["distances"], rtol=1e-4, atol=1e-5)
    assert all(np.abs(g).sum() > 0 for g in ours["lr_grads"].values())  # the inner learning rates are learnt


# ----------------------------------------------------------------------------------------------
# Visualisation assignments: Grad-CAM (module hooks, as most course notebooks write it, and tensor
# hooks, as pytorch-grad-cam does), guided backpropagation with the deprecated hooks on in-place ReLUs
# ----------------------------------------------------------------------------------------------


def make_vgg_like(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))


def grad_cam(m, guided_hooks=False, hook_kind="register_backward_hook"):
    torch, nn, F = m.torch, m.nn, m.F
    import warnings
    model = load(m, make_vgg_like(m), weights_of(make_vgg_like))
    model.eval()
    x = torch.tensor(np.random.default_rng(20).standard_normal((2, 3, 8, 8)).astype(np.float32))

    class GradCAM:
        def __init__(self, model, target_layer):
            self.model = model
            self.gradients = None
            self.activations = None
            target_layer.register_forward_hook(self.save_activation)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(target_layer, hook_kind)(self.save_gradient)

        def save_activation(self, module, input, output):
            self.activations = output.detach()

        def save_gradient(self, module, grad_input, grad_output):
            self.gradients = grad_output[0].detach()

        def __call__(self, x, class_idx=None):
            output = self.model(x)
            if class_idx is None:
                class_idx = output.argmax(dim=1)
            self.model.zero_grad()
            one_hot = torch.zeros_like(output)
            one_hot.scatter_(1, class_idx.view(-1, 1), 1.0)
            output.backward(gradient=one_hot, retain_graph=True)
            weights = self.gradients.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * self.activations).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[2:], mode='bilinear', align_corners=False)
            cam_min = cam.view(cam.size(0), -1).min(dim=1)[0].view(-1, 1, 1, 1)
            cam_max = cam.view(cam.size(0), -1).max(dim=1)[0].view(-1, 1, 1, 1)
            return (cam - cam_min) / (cam_max - cam_min + 1e-8), class_idx

    forward_relu_outputs = []
    if guided_hooks:
        def relu_backward_hook_function(module, grad_in, grad_out):
            corresponding_forward_output = forward_relu_outputs[-1]
            corresponding_forward_output[corresponding_forward_output > 0] = 1
            modified_grad_out = corresponding_forward_output * torch.clamp(grad_in[0], min=0.0)
            del forward_relu_outputs[-1]
            return (modified_grad_out,)

        def relu_forward_hook_function(module, ten_in, ten_out):
            forward_relu_outputs.append(ten_out)

        for module in model.modules():
            if isinstance(module, nn.ReLU):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    module.register_backward_hook(relu_backward_hook_function)
                module.register_forward_hook(relu_forward_hook_function)

    gradcam = GradCAM(model, model[3])  # the last conv, followed by an in-place ReLU
    cam_module, classes = gradcam(x)
    kept_after_relu = bool((gradcam.activations >= 0).all())  # the in-place ReLU reached what the hook kept
    guided = None
    if guided_hooks:
        xg = x.clone().requires_grad_()
        out = model(xg)
        model.zero_grad()
        out.backward(gradient=F.one_hot(classes, 5).float())
        guided = xg.grad * F.interpolate(cam_module, size=x.shape[2:])
    # pytorch-grad-cam's way: a forward hook on the ReLU keeping the output and a hook on that tensor
    kept = {}

    def fwd(module, inp, out):
        kept['act'] = out.detach()
        out.register_hook(lambda g: kept.__setitem__('grad', g.detach()))

    h = model[4].register_forward_hook(fwd)
    score = model(x).gather(1, classes[:, None]).sum()
    score.backward()
    h.remove()
    w = kept['grad'].mean(dim=(2, 3), keepdim=True)
    cam_tensor = F.relu((w * kept['act']).sum(1, keepdim=True))
    return {"cam_module": cam_module, "classes": classes, "cam_tensor": cam_tensor, "guided": guided,
            "kept_after_relu": kept_after_relu}


def test_grad_cam_with_module_hooks_and_tensor_hooks():
    ours, _ = run_both(grad_cam, rtol=1e-4, atol=1e-6)
    assert ours["kept_after_relu"] is True
    assert ours["cam_module"].shape == (2, 1, 8, 8) and ours["cam_module"].max() == pytest.approx(1, abs=1e-5)
    # with a full backward hook PyTorch refuses the in-place ReLU on the hooked module's output, and so do we
    with pytest.raises(RuntimeError, match="Output 0 of BackwardHookFunction is a view and is being modified inplace"):
        grad_cam(OURS, hook_kind="register_full_backward_hook")


def test_guided_grad_cam_hooks_on_in_place_relus():
    ours, _ = run_both(grad_cam, guided_hooks=True, rtol=1e-4, atol=1e-6)
    assert ours["kept_after_relu"] is True


# ----------------------------------------------------------------------------------------------
# MIT 6.5940 (TinyML and efficient deep learning), labs 1 and 2: fine-grained and channel pruning,
# k-means and linear quantisation, integer-only linear and convolution layers
# ----------------------------------------------------------------------------------------------


def make_small_convnet(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def efficient_ml_labs(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_small_convnet(m), weights_of(make_small_convnet))
    x = torch.tensor(np.random.default_rng(21).standard_normal((4, 1, 6, 6)).astype(np.float32))
    model.eval()
    with torch.no_grad():
        dense_out = model(x)

    def get_num_parameters(model, count_nonzero_only=False):
        num_counted_elements = 0
        for param in model.parameters():
            if count_nonzero_only:
                num_counted_elements += param.count_nonzero()
            else:
                num_counted_elements += param.numel()
        return num_counted_elements

    def fine_grained_prune(tensor, sparsity):
        sparsity = min(max(0.0, sparsity), 1.0)
        if sparsity == 1.0:
            tensor.zero_()
            return torch.zeros_like(tensor)
        elif sparsity == 0.0:
            return torch.ones_like(tensor)
        num_elements = tensor.numel()
        num_zeros = round(num_elements * sparsity)
        importance = tensor.abs()
        threshold = importance.view(-1).kthvalue(num_zeros).values
        mask = torch.gt(importance, threshold)
        tensor.mul_(mask)
        return mask

    class FineGrainedPruner:
        def __init__(self, model, sparsity_dict):
            self.masks = FineGrainedPruner.prune(model, sparsity_dict)

        @torch.no_grad()
        def apply(self, model):
            for name, param in model.named_parameters():
                if name in self.masks:
                    param *= self.masks[name]

        @staticmethod
        @torch.no_grad()
        def prune(model, sparsity_dict):
            masks = dict()
            for name, param in model.named_parameters():
                if param.dim() > 1:
                    masks[name] = fine_grained_prune(param, sparsity_dict[name])
            return masks

    dense_params = get_num_parameters(model)
    pruner = FineGrainedPruner(model, {'0.weight': 0.5, '3.weight': 0.7, '8.weight': 0.3})
    sparse_params = get_num_parameters(model, count_nonzero_only=True)
    with torch.no_grad():
        sparse_out = model(x)
    # a fine-tuning step keeps the zeros by re-applying the masks
    model.train()
    opt = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    pruner.apply(model)
    zeros_kept = all(bool((p[~pruner.masks[n]] == 0).all()) for n, p in model.named_parameters() if n in pruner.masks)
    model.eval()

    # channel pruning: keep the output channels of the first conv by the norm of the next conv's input slices
    def get_input_channel_importance(weight):
        in_channels = weight.shape[1]
        importances = []
        for i_c in range(weight.shape[1]):
            channel_weight = weight.detach()[:, i_c]
            importance = torch.norm(channel_weight)
            importances.append(importance.view(1))
        return torch.cat(importances)

    @torch.no_grad()
    def channel_prune(model, n_keep):
        conv, bn, next_conv = model[0], model[1], model[3]
        importance = get_input_channel_importance(next_conv.weight)
        sort_idx = torch.argsort(importance, descending=True)
        next_conv.weight.copy_(torch.index_select(next_conv.weight.detach(), 1, sort_idx))
        conv.weight.copy_(torch.index_select(conv.weight.detach(), 0, sort_idx))
        for tensor_name in ['weight', 'bias', 'running_mean', 'running_var']:
            tensor_to_apply = getattr(bn, tensor_name)
            tensor_to_apply.copy_(torch.index_select(tensor_to_apply.detach(), 0, sort_idx))
        conv.bias.copy_(torch.index_select(conv.bias.detach(), 0, sort_idx))
        conv.weight = nn.Parameter(conv.weight.detach()[:n_keep])
        conv.bias = nn.Parameter(conv.bias.detach()[:n_keep])
        conv.out_channels = n_keep
        bn.weight = nn.Parameter(bn.weight.detach()[:n_keep])
        bn.bias = nn.Parameter(bn.bias.detach()[:n_keep])
        bn.running_mean = bn.running_mean.detach()[:n_keep]
        bn.running_var = bn.running_var.detach()[:n_keep]
        bn.num_features = n_keep
        next_conv.weight = nn.Parameter(next_conv.weight.detach()[:, :n_keep])
        next_conv.in_channels = n_keep
        return sort_idx

    with torch.no_grad():
        before_channel = model(x)
    sort_idx = channel_prune(model, 3)
    with torch.no_grad():
        after_channel = model(x)

    # k-means quantisation of the last layer's weights (a few Lloyd steps from fixed centroids)
    def k_means_quantize(fp32_tensor, bitwidth=2, n_iter=5):
        n_clusters = 1 << bitwidth
        flat = fp32_tensor.view(-1, 1)
        centroids = torch.linspace(flat.min().item(), flat.max().item(), n_clusters).view(-1, 1)
        for _ in range(n_iter):
            labels = torch.cdist(flat, centroids).argmin(dim=1)
            for k in range(n_clusters):
                members = flat[labels == k]
                if members.numel() > 0:
                    centroids[k] = members.mean(dim=0)
        labels = torch.cdist(flat, centroids).argmin(dim=1)
        fp32_tensor.copy_(centroids[labels].view_as(fp32_tensor))
        return centroids.view(-1), labels

    with torch.no_grad():
        centroids, labels = k_means_quantize(model[8].weight)

    # linear quantisation
    def get_quantized_range(bitwidth):
        quantized_max = (1 << (bitwidth - 1)) - 1
        quantized_min = -(1 << (bitwidth - 1))
        return quantized_min, quantized_max

    def linear_quantize(fp_tensor, bitwidth, scale, zero_point, dtype=torch.int8):
        rounded_tensor = torch.round(fp_tensor / scale)
        rounded_tensor = rounded_tensor.to(dtype)
        shifted_tensor = rounded_tensor + zero_point
        quantized_min, quantized_max = get_quantized_range(bitwidth)
        quantized_tensor = shifted_tensor.clamp_(quantized_min, quantized_max)
        return quantized_tensor

    def get_quantization_scale_and_zero_point(fp_tensor, bitwidth):
        quantized_min, quantized_max = get_quantized_range(bitwidth)
        r_max = fp_tensor.max().item()
        r_min = fp_tensor.min().item()
        scale = (r_max - r_min) / (quantized_max - quantized_min)
        zero_point = quantized_min - r_min / scale
        if zero_point < quantized_min:
            zero_point = quantized_min
        elif zero_point > quantized_max:
            zero_point = quantized_max
        else:
            zero_point = round(zero_point)
        return scale, int(zero_point)

    def get_quantization_scale_for_weight(weight, bitwidth):
        fp_max = max(weight.abs().max().item(), 5e-7)
        _, quantized_max = get_quantized_range(bitwidth)
        return fp_max / quantized_max

    def linear_quantize_weight_per_channel(tensor, bitwidth):
        dim_output_channels = 0
        num_output_channels = tensor.shape[dim_output_channels]
        scale = torch.zeros(num_output_channels, dtype=tensor.dtype)
        for oc in range(num_output_channels):
            _subtensor = tensor.select(dim_output_channels, oc)
            _scale = get_quantization_scale_for_weight(_subtensor, bitwidth)
            scale[oc] = _scale
        scale_shape = [1] * tensor.dim()
        scale_shape[dim_output_channels] = -1
        scale = scale.view(scale_shape)
        quantized_tensor = linear_quantize(tensor, bitwidth, scale, zero_point=0)
        return quantized_tensor, scale, 0

    def quantized_linear(input, weight, bias, feature_bitwidth, weight_bitwidth, input_zero_point, output_zero_point,
                         input_scale, weight_scale, output_scale):
        output = F.linear(input.to(torch.int32), weight.to(torch.int32), None)
        if bias is not None:
            output = output + bias.view(1, -1)
        output = output.float() * (input_scale * weight_scale.view(1, -1) / output_scale)
        output = output + output_zero_point
        output = output.round().clamp(*get_quantized_range(feature_bitwidth)).to(torch.int8)
        return output

    def quantized_conv2d(input, weight, bias, feature_bitwidth, weight_bitwidth, input_zero_point, output_zero_point,
                         input_scale, weight_scale, output_scale, stride, padding, dilation, groups):
        input = F.pad(input, padding, 'constant', input_zero_point)
        output = F.conv2d(input.to(torch.int32), weight.to(torch.int32), None, stride, 0, dilation, groups)
        output = output.to(torch.int32) - input_zero_point * torch.sum(weight.to(torch.int32), dim=(1, 2, 3)).view(1, -1, 1, 1)
        if bias is not None:
            output = output + bias.view(1, -1, 1, 1)
        output = output.float() * (input_scale * weight_scale.view(1, -1, 1, 1) / output_scale)
        output = output + output_zero_point
        output = output.round().clamp(*get_quantized_range(feature_bitwidth)).to(torch.int8)
        return output

    feat = model[0](x).detach()
    in_scale, in_zp = get_quantization_scale_and_zero_point(x, 8)
    q_x = linear_quantize(x, 8, in_scale, in_zp)
    out_scale, out_zp = get_quantization_scale_and_zero_point(feat, 8)
    q_w, w_scale, _ = linear_quantize_weight_per_channel(model[0].weight.detach(), 8)
    q_bias = linear_quantize(model[0].bias.detach(), 32, in_scale * w_scale.view(-1), 0, torch.int32)
    q_conv = quantized_conv2d(q_x, q_w, q_bias, 8, 8, in_zp, out_zp, in_scale, w_scale.view(-1), out_scale,
                              1, (1, 1, 1, 1), 1, 1)
    dequant_conv = (q_conv.float() - out_zp) * out_scale
    fc_in = torch.tensor(np.random.default_rng(22).integers(-128, 128, (2, 6)), dtype=torch.int8)
    q_wfc, wfc_scale, _ = linear_quantize_weight_per_channel(model[8].weight.detach(), 8)
    q_fc = quantized_linear(fc_in, q_wfc, None, 8, 8, 0, 3, 0.05, wfc_scale.view(-1), 0.1)
    return {"dense_out": dense_out, "sparse_out": sparse_out, "dense_params": dense_params,
            "sparse_params": int(sparse_params), "masks": {k: v for k, v in pruner.masks.items()},
            "zeros_kept": zeros_kept,
            "sort_idx": sort_idx, "before_channel": before_channel, "after_channel": after_channel,
            "centroids": centroids, "labels": labels, "q_x": q_x, "q_w": q_w, "q_bias": q_bias, "q_conv": q_conv,
            "dequant_conv": dequant_conv, "feat": feat, "q_fc": q_fc,
            "dtypes": [str(t.dtype).replace("torch.", "") for t in (q_x, q_w, q_bias, q_conv, q_fc)]}


def test_mit_efficient_ml_pruning_and_quantisation():
    ours, _ = run_both(efficient_ml_labs, rtol=1e-4, atol=1e-5)
    assert ours["dtypes"] == ["int8", "int8", "int32", "int8", "int8"]
    assert ours["sparse_params"] < ours["dense_params"]
    assert ours["zeros_kept"] is True
    assert len(np.unique(ours["labels"])) <= 4
    scale = (ours["feat"].max() - ours["feat"].min()) / 255
    assert np.abs(ours["dequant_conv"] - ours["feat"]).max() <= 3 * scale  # the integer conv matches the float one


# ----------------------------------------------------------------------------------------------
# Stanford CS224n, assignment 4: NMT with a packed bidirectional LSTM encoder, an LSTMCell decoder with
# multiplicative attention (masked through ``.data.masked_fill_``), the gathered log-likelihood, and beam
# search (``topk``, ``//`` and ``%`` on hypothesis positions)
# ----------------------------------------------------------------------------------------------


def make_nmt(m):
    torch, nn, F = m.torch, m.nn, m.F

    class NMT(nn.Module):
        def __init__(self, embed_size=4, hidden_size=5, src_vocab=9, tgt_vocab=8, dropout_rate=0.0):
            super().__init__()
            self.hidden_size = hidden_size
            self.source_embedding = nn.Embedding(src_vocab, embed_size, padding_idx=0)
            self.target_embedding = nn.Embedding(tgt_vocab, embed_size, padding_idx=0)
            self.post_embed_cnn = nn.Conv1d(embed_size, embed_size, kernel_size=2, padding="same")
            self.encoder = nn.LSTM(embed_size, hidden_size, bias=True, bidirectional=True)
            self.decoder = nn.LSTMCell(embed_size + hidden_size, hidden_size, bias=True)
            self.h_projection = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.c_projection = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.att_projection = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.combined_output_projection = nn.Linear(3 * hidden_size, hidden_size, bias=False)
            self.target_vocab_projection = nn.Linear(hidden_size, tgt_vocab, bias=False)
            self.dropout = nn.Dropout(dropout_rate)

        def encode(self, source_padded, source_lengths):
            X = self.source_embedding(source_padded)
            X = self.post_embed_cnn(X.permute(1, 2, 0)).permute(2, 0, 1)
            X = nn.utils.rnn.pack_padded_sequence(X, source_lengths)
            enc_hiddens, (last_hidden, last_cell) = self.encoder(X)
            enc_hiddens = nn.utils.rnn.pad_packed_sequence(enc_hiddens)[0].permute(1, 0, 2)
            init_decoder_hidden = self.h_projection(torch.cat((last_hidden[0], last_hidden[1]), 1))
            init_decoder_cell = self.c_projection(torch.cat((last_cell[0], last_cell[1]), 1))
            return enc_hiddens, (init_decoder_hidden, init_decoder_cell)

        def step(self, Ybar_t, dec_state, enc_hiddens, enc_hiddens_proj, enc_masks):
            dec_state = self.decoder(Ybar_t, dec_state)
            dec_hidden, dec_cell = dec_state
            e_t = torch.bmm(enc_hiddens_proj, dec_hidden.unsqueeze(2)).squeeze(2)
            if enc_masks is not None:
                e_t.data.masked_fill_(enc_masks.bool(), -float('inf'))
            alpha_t = F.softmax(e_t, dim=1)
            a_t = torch.bmm(alpha_t.unsqueeze(1), enc_hiddens).squeeze(1)
            U_t = torch.cat((dec_hidden, a_t), 1)
            V_t = self.combined_output_projection(U_t)
            O_t = self.dropout(torch.tanh(V_t))
            return dec_state, O_t, e_t

        def decode(self, enc_hiddens, enc_masks, dec_init_state, target_padded):
            target_padded = target_padded[:-1]
            dec_state = dec_init_state
            batch_size = enc_hiddens.size(0)
            o_prev = torch.zeros(batch_size, self.hidden_size)
            combined_outputs = []
            enc_hiddens_proj = self.att_projection(enc_hiddens)
            Y = self.target_embedding(target_padded)
            for Y_t in torch.split(Y, 1, dim=0):
                Y_t = Y_t.squeeze(0)
                Ybar_t = torch.cat((Y_t, o_prev), dim=1)
                dec_state, o_t, e_t = self.step(Ybar_t, dec_state, enc_hiddens, enc_hiddens_proj, enc_masks)
                combined_outputs.append(o_t)
                o_prev = o_t
            return torch.stack(combined_outputs, dim=0)

        def generate_sent_masks(self, enc_hiddens, source_lengths):
            enc_masks = torch.zeros(enc_hiddens.size(0), enc_hiddens.size(1), dtype=torch.float)
            for e_id, src_len in enumerate(source_lengths):
                enc_masks[e_id, src_len:] = 1
            return enc_masks

        def forward(self, source_padded, source_lengths, target_padded):
            enc_hiddens, dec_init_state = self.encode(source_padded, source_lengths)
            enc_masks = self.generate_sent_masks(enc_hiddens, source_lengths)
            combined_outputs = self.decode(enc_hiddens, enc_masks, dec_init_state, target_padded)
            P = F.log_softmax(self.target_vocab_projection(combined_outputs), dim=-1)
            target_masks = (target_padded != 0).float()
            target_gold_words_log_prob = torch.gather(P, index=target_padded[1:].unsqueeze(-1), dim=-1).squeeze(-1) * target_masks[1:]
            scores = target_gold_words_log_prob.sum(dim=0)
            return scores

    return NMT()


def nmt(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_nmt(m), weights_of(make_nmt))
    # (src_len, batch) sorted by length, as the assignment's to_input_tensor gives them
    source_padded = torch.tensor([[3, 4, 5], [6, 7, 8], [5, 2, 0], [4, 0, 0]])
    source_lengths = [4, 3, 2]
    target_padded = torch.tensor([[1, 1, 1], [3, 4, 5], [6, 2, 2], [2, 0, 0]])  # <s>=1, </s>=2, <pad>=0
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for it in range(3):
        optimizer.zero_grad()
        example_losses = -model(source_padded, source_lengths, target_padded)
        batch_loss = example_losses.sum()
        loss = batch_loss / 3
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append((loss.item(), float(grad_norm)))
    grads = {k: p.grad for k, p in model.named_parameters()}

    # beam search over the trained model
    model.eval()
    tgt_vocab_size, beam_size, max_decoding_time_step = 8, 3, 4
    with torch.no_grad():
        src_sents_var = source_padded[:, :1]
        src_encodings, dec_init_vec = model.encode(src_sents_var, [4])
        src_encodings_att_linear = model.att_projection(src_encodings)
        h_tm1 = dec_init_vec
        att_tm1 = torch.zeros(1, model.hidden_size)
        hypotheses = [[1]]
        completed_hypotheses = []
        hyp_scores = torch.zeros(len(hypotheses), dtype=torch.float)
        t = 0
        while len(completed_hypotheses) < beam_size and t < max_decoding_time_step:
            t += 1
            hyp_num = len(hypotheses)
            exp_src_encodings = src_encodings.expand(hyp_num, src_encodings.size(1), src_encodings.size(2))
            exp_src_encodings_att_linear = src_encodings_att_linear.expand(hyp_num, src_encodings_att_linear.size(1),
                                                                           src_encodings_att_linear.size(2))
            y_tm1 = torch.tensor([hyp[-1] for hyp in hypotheses], dtype=torch.long)
            y_t_embed = model.target_embedding(y_tm1)
            x = torch.cat([y_t_embed, att_tm1], dim=-1)
            (h_t, cell_t), att_t, _ = model.step(x, h_tm1, exp_src_encodings, exp_src_encodings_att_linear, enc_masks=None)
            log_p_t = F.log_softmax(model.target_vocab_projection(att_t), dim=-1)
            live_hyp_num = beam_size - len(completed_hypotheses)
            contiuating_hyp_scores = (hyp_scores.unsqueeze(1).expand_as(log_p_t) + log_p_t).view(-1)
            top_cand_hyp_scores, top_cand_hyp_pos = torch.topk(contiuating_hyp_scores, k=live_hyp_num)
            prev_hyp_ids = torch.div(top_cand_hyp_pos, tgt_vocab_size, rounding_mode='floor')
            hyp_word_ids = top_cand_hyp_pos % tgt_vocab_size
            new_hypotheses, live_hyp_ids, new_hyp_scores = [], [], []
            for prev_hyp_id, hyp_word_id, cand_new_hyp_score in zip(prev_hyp_ids, hyp_word_ids, top_cand_hyp_scores):
                prev_hyp_id = prev_hyp_id.item()
                hyp_word_id = hyp_word_id.item()
                cand_new_hyp_score = cand_new_hyp_score.item()
                new_hyp_sent = hypotheses[prev_hyp_id] + [hyp_word_id]
                if hyp_word_id == 2:
                    completed_hypotheses.append((new_hyp_sent[1:-1], cand_new_hyp_score))
                else:
                    new_hypotheses.append(new_hyp_sent)
                    live_hyp_ids.append(prev_hyp_id)
                    new_hyp_scores.append(cand_new_hyp_score)
            if len(completed_hypotheses) == beam_size:
                break
            live_hyp_ids = torch.tensor(live_hyp_ids, dtype=torch.long)
            h_tm1 = (h_t[live_hyp_ids], cell_t[live_hyp_ids])
            att_tm1 = att_t[live_hyp_ids]
            hypotheses = new_hypotheses
            hyp_scores = torch.tensor(new_hyp_scores, dtype=torch.float)
        if len(completed_hypotheses) == 0:
            completed_hypotheses.append((hypotheses[0][1:], hyp_scores[0].item()))
        completed_hypotheses.sort(key=lambda hyp: hyp[1], reverse=True)
    return {"losses": losses, "grads": grads, "best": [h for h, s in completed_hypotheses],
            "scores": [s for h, s in completed_hypotheses], "enc_shape": tuple(src_encodings.shape)}


def test_cs224n_nmt_with_packed_lstm_attention_and_beam_search():
    ours, _ = run_both(nmt, rtol=2e-4, atol=2e-6)
    assert ours["losses"][-1][0] < ours["losses"][0][0]
    assert ours["enc_shape"] == (1, 4, 10)
    assert ours["scores"] == sorted(ours["scores"], reverse=True)


# ----------------------------------------------------------------------------------------------
# Berkeley CS285 (deep RL): a Gaussian policy as MultivariateNormal with a repeated scale_tril, a
# SAC-style tanh-squashed Normal (TanhTransform(cache_size=1) under Independent), a categorical
# policy, and the policy-gradient loss with an entropy bonus
# ----------------------------------------------------------------------------------------------


def make_policy(m):
    nn = m.nn
    return nn.ModuleDict({"mean_net": nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)),
                          "logits_net": nn.Linear(3, 4)})


def cs285_policies(m):
    torch, nn = m.torch, m.nn
    distributions = torch.distributions
    policy = load(m, make_policy(m), weights_of(make_policy))
    mean_net, logits_net = policy["mean_net"], policy["logits_net"]
    logstd = nn.Parameter(torch.zeros(2, dtype=torch.float32) - 0.5)
    rng = np.random.default_rng(23)

    def from_numpy(*args, **kwargs):
        return torch.from_numpy(*args, **kwargs).float()

    obs = from_numpy(rng.standard_normal((6, 3)))
    acts = from_numpy(np.tanh(rng.standard_normal((6, 2))) * 0.9)
    advantages = from_numpy(rng.standard_normal(6))
    batch_mean = mean_net(obs)
    scale_tril = torch.diag(torch.exp(logstd))
    batch_dim = batch_mean.shape[0]
    batch_scale_tril = scale_tril.repeat(batch_dim, 1, 1)
    action_distribution = distributions.MultivariateNormal(batch_mean, scale_tril=batch_scale_tril)
    log_prob = action_distribution.log_prob(acts)
    base = distributions.Normal(batch_mean, torch.exp(logstd))
    squashed = distributions.TransformedDistribution(base, [distributions.transforms.TanhTransform(cache_size=1)])
    squashed_log_prob = distributions.Independent(squashed, 1).log_prob(acts)
    entropy = action_distribution.entropy()
    loss = -(log_prob * advantages).mean() - (squashed_log_prob * advantages).mean() - 0.01 * entropy.mean()
    loss.backward()
    cat = distributions.Categorical(logits=logits_net(obs))
    discrete_acts = torch.tensor([0, 1, 2, 3, 0, 1])
    discrete_loss = -(cat.log_prob(discrete_acts) * advantages).sum() - cat.entropy().mean()
    discrete_loss.backward()

    # reward-to-go and a normalised advantage, as the homework computes them
    rewards = rng.standard_normal(5)
    rtg = np.array([sum(0.9 ** (k - t) * rewards[k] for k in range(t, 5)) for t in range(5)])
    adv = from_numpy(rtg)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return {"log_prob": log_prob, "squashed_log_prob": squashed_log_prob, "entropy": entropy, "loss": loss,
            "logstd_grad": logstd.grad, "grads": {k: p.grad for k, p in policy.named_parameters()},
            "discrete_loss": discrete_loss, "adv": adv}


def test_cs285_gaussian_squashed_and_categorical_policies():
    ours, _ = run_both(cs285_policies, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["entropy"], 0.5 * 2 * (1 + np.log(2 * np.pi)) - 1.0, rtol=1e-5)
    assert abs(float(ours["adv"].mean())) < 1e-6
