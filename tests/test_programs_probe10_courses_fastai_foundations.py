# ruff: noqa: B007, E701, E712, F841, UP039  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. Training from the foundations: fast.ai part 2
("from the foundations", miniai): matmul from scratch by loops, broadcasting and einsum; hand-written Linear/ReLU/MSE
modules whose backward stores ``.g`` on the tensors, checked against autograd; optimisers from scratch keeping their
state on the parameters, and an LR finder. Deep Learning with PyTorch (the book): the thermometer model trained by
hand under ``torch.no_grad()``."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
