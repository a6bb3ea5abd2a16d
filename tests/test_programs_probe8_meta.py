# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Meta-learning and higher-order programs (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients (float64 where the program
allows, to about 1e-10).

MAML on sine waves with fast weights held in a list and a ``forward(x, vars)`` network (the
MAML-Pytorch layout: ``F.linear`` on explicit weights, ``autograd.grad(..., create_graph=True)``, a meta
batch summed and stepped by Adam) and its first-order variant; a learned optimizer (Andrychowicz et al.'s
coordinatewise two-layer ``LSTMCell`` with the gradient preprocessing, unrolled and truncated, with
``retain_grad`` on the non-leaf optimizee parameters); a deep equilibrium layer with the implicit-layers
tutorial's backward hook (Anderson acceleration through ``bmm`` and ``torch.linalg.solve``, a hook on
the output that solves the adjoint fixed point with ``autograd.grad``); a hyperparameter's gradient by
the implicit function theorem (conjugate gradient on Hessian-vector products); and PyHessian's power
iteration and Hutchinson trace on a network's parameters."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# MAML on sine waves (MAML-Pytorch's Learner layout: a ParameterList and forward(x, vars))
# ----------------------------------------------------------------------------------------------


def make_learner(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Learner(nn.Module):
        def __init__(self, config):
            super(Learner, self).__init__()
            self.config = config
            self.vars = nn.ParameterList()
            for i, (name, param) in enumerate(self.config):
                if name == 'linear':
                    w = nn.Parameter(torch.ones(*param))
                    nn.init.kaiming_normal_(w)
                    self.vars.append(w)
                    self.vars.append(nn.Parameter(torch.zeros(param[0])))

        def forward(self, x, vars=None):
            if vars is None:
                vars = self.vars
            idx = 0
            for name, param in self.config:
                if name == 'linear':
                    w, b = vars[idx], vars[idx + 1]
                    x = F.linear(x, w, b)
                    idx += 2
                elif name == 'relu':
                    x = F.relu(x, inplace=param[0])
            return x

        def parameters(self):
            return self.vars

    return Learner([('linear', [32, 1]), ('relu', [True]), ('linear', [32, 32]), ('relu', [True]),
                    ('linear', [1, 32])])


def sine_tasks(rng, n_tasks, k):
    amp = rng.uniform(0.1, 5.0, n_tasks)
    phase = rng.uniform(0, np.pi, n_tasks)
    x = rng.uniform(-5, 5, (n_tasks, 2 * k, 1))
    y = amp[:, None, None] * np.sin(x + phase[:, None, None])
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def maml(m, weights, first_order=False, meta_steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    net = load(m, make_learner(m), weights).double()
    meta_optim = optim.Adam(net.parameters(), lr=1e-3)
    update_lr, update_step, task_num = 0.01, 2, 3
    rng = np.random.default_rng(0)
    history = []
    for step in range(meta_steps):
        x_spt, y_spt, x_qry, y_qry = (torch.from_numpy(a) for a in sine_tasks(rng, task_num, 5))
        losses_q = [0 for _ in range(update_step + 1)]
        for i in range(task_num):
            logits = net(x_spt[i], vars=None)
            loss = F.mse_loss(logits, y_spt[i])
            grad = torch.autograd.grad(loss, net.parameters(), create_graph=not first_order)
            fast_weights = list(map(lambda p: p[1] - update_lr * p[0], zip(grad, net.parameters())))
            with torch.no_grad():
                logits_q = net(x_qry[i], net.parameters())
                losses_q[0] += F.mse_loss(logits_q, y_qry[i])
            for k in range(1, update_step):
                logits = net(x_spt[i], fast_weights)
                loss = F.mse_loss(logits, y_spt[i])
                grad = torch.autograd.grad(loss, fast_weights, create_graph=not first_order)
                fast_weights = list(map(lambda p: p[1] - update_lr * p[0], zip(grad, fast_weights)))
            logits_q = net(x_qry[i], fast_weights)
            loss_q = F.mse_loss(logits_q, y_qry[i])
            losses_q[update_step] += loss_q
        loss_q = losses_q[-1] / task_num
        meta_optim.zero_grad()
        loss_q.backward()
        meta_optim.step()
        history.append((losses_q[0].item() / task_num, loss_q.item()))
    return {"history": history, "grads": [p.grad for p in net.parameters()],
            "params": [p.detach() for p in net.parameters()]}


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_sine_fast_weights(first_order):
    weights = weights_of(make_learner)
    ours, _ = run_both(maml, weights, first_order=first_order, rtol=1e-9, atol=1e-11)
    assert len(ours["grads"]) == 6 and all(g.dtype == np.float64 for g in ours["grads"])


def test_maml_second_order_term_is_there():
    """The second-order meta-gradient differs from the first-order one, and on a one-parameter model
    it equals the chain rule by hand: L_q(w - a L_s'(w))' = L_q'(w') (1 - a L_s''(w))."""
    torch = OURS.torch
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    xs, ys, xq, yq = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([0.5, -1.0], dtype=torch.float64), \
        torch.tensor([3.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    a = 0.1
    loss_s = ((w * xs - ys) ** 2).mean()
    (g,) = torch.autograd.grad(loss_s, w, create_graph=True)
    w_fast = w - a * g
    loss_q = ((w_fast * xq - yq) ** 2).mean()
    loss_q.backward()
    xs_, ys_ = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    gs = (2 * (0.7 * xs_ - ys_) * xs_).mean()
    hs = (2 * xs_ ** 2).mean()
    wf = 0.7 - a * gs
    expected = 2 * (wf * 3.0 - 2.0) * 3.0 * (1 - a * hs)
    assert w.grad.item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Learning to learn by gradient descent by gradient descent (a coordinatewise LSTM optimizer)
# ----------------------------------------------------------------------------------------------


def make_opt_net(m):
    torch, nn = m.torch, m.nn

    class Optimizer(nn.Module):
        def __init__(self, preproc=False, hidden_sz=8, preproc_factor=10.0):
            super().__init__()
            self.hidden_sz = hidden_sz
            if preproc:
                self.recurs = nn.LSTMCell(2, hidden_sz)
            else:
                self.recurs = nn.LSTMCell(1, hidden_sz)
            self.recurs2 = nn.LSTMCell(hidden_sz, hidden_sz)
            self.output = nn.Linear(hidden_sz, 1)
            self.preproc = preproc
            self.preproc_factor = preproc_factor
            self.preproc_threshold = np.exp(-preproc_factor)

        def forward(self, inp, hidden, cell):
            if self.preproc:
                inp = inp.data
                inp2 = torch.zeros(inp.size()[0], 2, dtype=inp.dtype)
                keep_grads = (torch.abs(inp) >= self.preproc_threshold).squeeze()
                inp2[:, 0][keep_grads] = (torch.log(torch.abs(inp[keep_grads]) + 1e-8) / self.preproc_factor).squeeze()
                inp2[:, 1][keep_grads] = torch.sign(inp[keep_grads]).squeeze()
                inp2[:, 0][~keep_grads] = -1
                inp2[:, 1][~keep_grads] = (float(np.exp(self.preproc_factor)) * inp[~keep_grads]).squeeze()
                inp = inp2
            hidden0, cell0 = self.recurs(inp, (hidden[0], cell[0]))
            hidden1, cell1 = self.recurs2(hidden0, (hidden[1], cell[1]))
            return self.output(hidden1), (hidden0, hidden1), (cell0, cell1)

    return Optimizer(preproc=True)


def learned_optimizer(m, weights, optim_it=6, unroll=3, out_mul=0.1):
    torch, nn, optim = m.torch, m.nn, m.optim
    opt_net = load(m, make_opt_net(m), weights).double()
    meta_opt = optim.Adam(opt_net.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    W = torch.tensor(rng.standard_normal((6, 6)))
    y = torch.tensor(rng.standard_normal(6))

    class QuadraticLoss:
        def get_loss(self, theta):
            return torch.sum((W.matmul(theta) - y) ** 2)

    class QuadOptimizee(nn.Module):
        def __init__(self, theta=None):
            super().__init__()
            if theta is None:
                self.theta = nn.Parameter(torch.zeros(6, dtype=torch.float64))
            else:
                self.theta = theta

        def forward(self, target):
            return target.get_loss(self.theta)

        def all_named_parameters(self):
            return [('theta', self.theta)]

    target = QuadraticLoss()
    optimizee = QuadOptimizee()
    n_params = 6
    hidden_states = [torch.zeros(n_params, opt_net.hidden_sz, dtype=torch.float64) for _ in range(2)]
    cell_states = [torch.zeros(n_params, opt_net.hidden_sz, dtype=torch.float64) for _ in range(2)]
    all_losses_ever = []
    all_losses = None
    history = []
    kept = []
    for iteration in range(1, optim_it + 1):
        loss = optimizee(target)
        all_losses = loss if all_losses is None else all_losses + loss
        all_losses_ever.append(loss.item())
        loss.backward(retain_graph=True)

        offset = 0
        result_params = {}
        hidden_states2 = [torch.zeros(n_params, opt_net.hidden_sz, dtype=torch.float64) for _ in range(2)]
        cell_states2 = [torch.zeros(n_params, opt_net.hidden_sz, dtype=torch.float64) for _ in range(2)]
        for name, p in optimizee.all_named_parameters():
            cur_sz = int(np.prod(p.size()))
            gradients = p.grad.view(cur_sz, 1).detach()
            updates, new_hidden, new_cell = opt_net(
                gradients, [h[offset:offset + cur_sz] for h in hidden_states],
                [c[offset:offset + cur_sz] for c in cell_states])
            for i in range(len(new_hidden)):
                hidden_states2[i][offset:offset + cur_sz] = new_hidden[i]
                cell_states2[i][offset:offset + cur_sz] = new_cell[i]
            result_params[name] = p + updates.view(*p.size()) * out_mul
            result_params[name].retain_grad()
            offset += cur_sz
        kept.append(result_params["theta"])

        if iteration % unroll == 0:
            meta_opt.zero_grad()
            all_losses.backward()
            meta_opt.step()
            history.append((all_losses.item(), [p.grad.clone() for p in opt_net.parameters()]))
            all_losses = None
            optimizee = QuadOptimizee(**{k: v.detach().requires_grad_() for k, v in result_params.items()})
            hidden_states = [s.detach() for s in hidden_states2]
            cell_states = [s.detach() for s in cell_states2]
        else:
            optimizee = QuadOptimizee(**{k: v for k, v in result_params.items()})
            hidden_states = hidden_states2
            cell_states = cell_states2
    return {"losses": all_losses_ever, "history": history,
            "theta": optimizee.theta.detach(), "theta_grads": [t.grad for t in kept]}


def test_learned_lstm_optimizer():
    weights = weights_of(make_opt_net)
    ours, _ = run_both(learned_optimizer, weights, rtol=1e-9, atol=1e-12)
    assert len(ours["history"]) == 2 and ours["theta"].shape == (6,)
    # retain_grad on the non-leaf parameters: filled by the meta backward of their unroll, except the last
    # of each unroll (no loss of that unroll uses it)
    assert [g is None for g in ours["theta_grads"]] == [False, False, True] * 2


# ----------------------------------------------------------------------------------------------
# A deep equilibrium layer (the implicit-layers tutorial): Anderson acceleration and a backward hook
# ----------------------------------------------------------------------------------------------


def anderson(m, f, x0, m_=5, lam=1e-4, max_iter=50, tol=1e-10, beta=1.0):
    """ Anderson acceleration for fixed point iteration. """
    torch = m.torch
    bsz, d, H = x0.shape
    X = torch.zeros(bsz, m_, d * H, dtype=x0.dtype, device=x0.device)
    F = torch.zeros(bsz, m_, d * H, dtype=x0.dtype, device=x0.device)
    X[:, 0], F[:, 0] = x0.view(bsz, -1), f(x0).view(bsz, -1)
    X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0].view_as(x0)).view(bsz, -1)

    Hm = torch.zeros(bsz, m_ + 1, m_ + 1, dtype=x0.dtype, device=x0.device)
    Hm[:, 0, 1:] = Hm[:, 1:, 0] = 1
    y = torch.zeros(bsz, m_ + 1, 1, dtype=x0.dtype, device=x0.device)
    y[:, 0] = 1

    res = []
    for k in range(2, max_iter):
        n = min(k, m_)
        G = F[:, :n] - X[:, :n]
        Hm[:, 1:n + 1, 1:n + 1] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(n, dtype=x0.dtype,
                                                                                      device=x0.device)[None]
        alpha = torch.linalg.solve(Hm[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]  # (bsz x n)

        X[:, k % m_] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        F[:, k % m_] = f(X[:, k % m_].view_as(x0)).view(bsz, -1)
        res.append((F[:, k % m_] - X[:, k % m_]).norm().item() / (1e-5 + F[:, k % m_].norm().item()))
        if (res[-1] < tol):
            break
    return X[:, k % m_].view_as(x0), res


def make_deq(m):
    torch, nn = m.torch, m.nn

    class TanhFixedPointLayer(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.linear = nn.Linear(n, n, bias=False)

        def forward(self, z, x):
            return torch.tanh(self.linear(z) + x)

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs

        def forward(self, x):
            # compute forward pass and re-engage autograd tape
            with torch.no_grad():
                z, self.forward_res = self.solver(lambda z: self.f(z, x), torch.zeros_like(x), **self.kwargs)
            z = self.f(z, x)

            # set up Jacobian vector product (without additional forward calls)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def backward_hook(grad):
                g, self.backward_res = self.solver(
                    lambda y: torch.autograd.grad(f0, z0, y, retain_graph=True)[0] + grad, grad, **self.kwargs)
                return g

            z.register_hook(backward_hook)
            return z

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 10)
            self.deq = DEQFixedPoint(TanhFixedPointLayer(10), None)
            self.out = nn.Linear(10, 2)

        def forward(self, x):
            return self.out(self.deq(self.inp(x).unsqueeze(-1).transpose(1, 2)).transpose(1, 2).squeeze(-1))

    return Net()


def deq(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_deq(m), weights).double()
    with torch.no_grad():
        model.deq.f.linear.weight.mul_(0.5)  # a contraction, so the fixed point exists
    solver = lambda f, x0, **kw: anderson(m, f, x0, **kw)
    model.deq.solver = solver
    model.deq.kwargs = dict(tol=1e-12, max_iter=60)
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((4, 3)))
    y = torch.tensor(rng.integers(0, 2, 4))
    opt = optim.SGD(model.parameters(), lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        history.append((loss.item(), len(model.deq.forward_res), len(model.deq.backward_res)))
    return {"history": history, "grads": [p.grad for p in model.parameters()]}


def test_deq_with_anderson_and_implicit_backward():
    weights = weights_of(make_deq)
    ours, _ = run_both(deq, weights, rtol=1e-8, atol=1e-10)
    assert all(h[1] < 58 and h[2] < 58 for h in ours["history"])  # both solves converged


def test_deq_implicit_gradient_equals_unrolled_gradient():
    """The hook's implicit gradient equals the gradient through a long unrolled fixed-point iteration."""
    torch = OURS.torch
    weights = weights_of(make_deq)
    implicit = load(OURS, make_deq(OURS), weights).double()
    with torch.no_grad():
        implicit.deq.f.linear.weight.mul_(0.5)
    implicit.deq.solver = lambda f, x0, **kw: anderson(OURS, f, x0, **kw)
    implicit.deq.kwargs = dict(tol=1e-13, max_iter=80)
    x = torch.tensor(np.random.default_rng(3).standard_normal((4, 3)))
    implicit(x).square().sum().backward()
    W = implicit.deq.f.linear.weight
    unrolled_W = W.detach().clone().requires_grad_()
    h = implicit.inp(x).detach().unsqueeze(-1).transpose(1, 2)
    z = torch.zeros_like(h)
    for _ in range(200):
        z = torch.tanh(z @ unrolled_W.T + h)
    implicit.out(z.transpose(1, 2).squeeze(-1)).square().sum().backward()
    np.testing.assert_allclose(W.grad.numpy(), unrolled_W.grad.numpy(), rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# A hyperparameter's gradient by the implicit function theorem (ridge regression's weight decay)
# ----------------------------------------------------------------------------------------------


def implicit_hypergradient(m):
    torch = m.torch
    rng = np.random.default_rng(4)
    Xtr, ytr = torch.tensor(rng.standard_normal((20, 5))), torch.tensor(rng.standard_normal(20))
    Xval, yval = torch.tensor(rng.standard_normal((10, 5))), torch.tensor(rng.standard_normal(10))
    log_lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def train_loss(w, log_lam):
        return ((Xtr @ w - ytr) ** 2).mean() + torch.exp(log_lam) * (w ** 2).sum()

    def val_loss(w):
        return ((Xval @ w - yval) ** 2).mean()

    # inner problem by gradient descent to convergence
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    inner = m.optim.SGD([w], lr=0.05)
    for _ in range(400):
        inner.zero_grad()
        train_loss(w, log_lam.detach()).backward()
        inner.step()

    w = w.detach().requires_grad_()
    v = torch.autograd.grad(val_loss(w), w)[0]
    g = torch.autograd.grad(train_loss(w, log_lam), w, create_graph=True)[0]

    def hvp(vec):
        return torch.autograd.grad(g, w, grad_outputs=vec, retain_graph=True)[0]

    # conjugate gradient for H q = v
    q = torch.zeros_like(v)
    r = v.clone()
    p = r.clone()
    rs = r.dot(r)
    for _ in range(20):
        Ap = hvp(p)
        alpha = rs / p.dot(Ap)
        q = q + alpha * p
        r = r - alpha * Ap
        rs_new = r.dot(r)
        if rs_new.sqrt() < 1e-14:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    hypergrad = -torch.autograd.grad(g, log_lam, grad_outputs=q)[0]
    return {"w": w.detach(), "hypergrad": hypergrad, "q": q}


def test_hypergradient_by_implicit_differentiation():
    ours, _ = run_both(implicit_hypergradient, rtol=1e-8, atol=1e-11)
    rng = np.random.default_rng(4)
    Xtr, ytr = rng.standard_normal((20, 5)), rng.standard_normal(20)
    Xval, yval = rng.standard_normal((10, 5)), rng.standard_normal(10)
    lam = np.exp(0.3)
    A = 2 * Xtr.T @ Xtr / 20 + 2 * lam * np.eye(5)
    w = np.linalg.solve(A, 2 * Xtr.T @ ytr / 20)
    dw = np.linalg.solve(A, -2 * lam * w)  # dw / dlog_lam
    expected = (2 * Xval.T @ (Xval @ w - yval) / 10) @ dw
    np.testing.assert_allclose(ours["w"], w, rtol=1e-9)
    assert ours["hypergrad"] == pytest.approx(expected, rel=1e-7)


# ----------------------------------------------------------------------------------------------
# PyHessian: top eigenvalue by power iteration, trace by Hutchinson, on a network's parameters
# ----------------------------------------------------------------------------------------------


def make_small_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def pyhessian(m, weights):
    torch, F = m.torch, m.F

    def group_product(xs, ys):
        return sum([torch.sum(x * y) for (x, y) in zip(xs, ys)])

    def group_add(params, update, alpha=1):
        for i, p in enumerate(params):
            params[i].data.add_(update[i] * alpha)
        return params

    def normalization(v):
        s = group_product(v, v)
        s = s ** 0.5
        s = s.cpu().item()
        v = [vi / (s + 1e-6) for vi in v]
        return v

    def get_params_grad(model):
        params = []
        grads = []
        for param in model.parameters():
            if not param.requires_grad:
                continue
            params.append(param)
            grads.append(0. if param.grad is None else param.grad + 0.)
        return params, grads

    def hessian_vector_product(gradsH, params, v):
        hv = torch.autograd.grad(gradsH, params, grad_outputs=v, only_inputs=True, retain_graph=True)
        return hv

    model = load(m, make_small_cnn(m), weights).double()
    rng = np.random.default_rng(5)
    inputs = torch.tensor(rng.standard_normal((8, 1, 6, 6)))
    targets = torch.tensor(rng.integers(0, 3, 8))
    outputs = model(inputs)
    loss = F.cross_entropy(outputs, targets)
    loss.backward(create_graph=True)
    params, gradsH = get_params_grad(model)

    # power iteration with a fixed start
    v = [torch.tensor(rng.standard_normal(tuple(p.shape))) for p in params]
    v = normalization(v)
    eigenvalue = None
    maxIter, tol = 300, 1e-10
    for i in range(maxIter):
        model.zero_grad()
        Hv = hessian_vector_product(gradsH, params, v)
        tmp_eigenvalue = group_product(Hv, v).cpu().item()
        v = normalization(Hv)
        if eigenvalue is None:
            eigenvalue = tmp_eigenvalue
        else:
            if abs(eigenvalue - tmp_eigenvalue) / (abs(eigenvalue) + 1e-6) < tol:
                break
            else:
                eigenvalue = tmp_eigenvalue

    # Hutchinson with fixed Rademacher vectors
    iterations = i
    trace_vhv = []
    for i in range(5):
        v = [torch.randint_like(p, high=2) for p in params]
        v = [torch.tensor(rng.integers(0, 2, tuple(p.shape)).astype(np.float64)) for p in params]  # the same draw
        for v_i in v:
            v_i[v_i == 0] = -1
        Hv = hessian_vector_product(gradsH, params, v)
        trace_vhv.append(group_product(Hv, v).cpu().item())
    flat_grad = torch.cat([g.reshape(-1) for g in gradsH])
    return {"eigenvalue": eigenvalue, "iterations": iterations, "trace": np.mean(trace_vhv), "samples": trace_vhv,
            "flat_grad": flat_grad, "n_params": sum(p.numel() for p in params)}


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")  # (PyTorch's)
def test_pyhessian_power_iteration_and_hutchinson():
    weights = weights_of(make_small_cnn)
    ours, _ = run_both(pyhessian, weights, rtol=1e-8, atol=1e-10)
    # against the dense Hessian by autograd.functional.hessian on the flattened parameters
    torch, F = OURS.torch, OURS.F
    model = load(OURS, make_small_cnn(OURS), weights).double()
    rng = np.random.default_rng(5)
    inputs = torch.tensor(rng.standard_normal((8, 1, 6, 6)))
    targets = torch.tensor(rng.integers(0, 3, 8))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector):
        tensors, offset = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            tensors[n] = vector[offset:offset + k].reshape(s)
            offset += k
        return F.cross_entropy(torch.func.functional_call(model, tensors, (inputs,)), targets)

    H = torch.autograd.functional.hessian(loss_of, flat).numpy()
    assert H.shape == (ours["n_params"],) * 2
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(H)
    top = eigenvalues[np.argmax(np.abs(eigenvalues))]
    assert ours["eigenvalue"] == pytest.approx(top, rel=1e-5) and ours["iterations"] < 299
    # each Hutchinson sample is v^T H v of a known +-1 vector: replay the draws
    rng = np.random.default_rng(5)
    rng.standard_normal((8, 1, 6, 6)), rng.integers(0, 3, 8)
    for s in shapes:
        rng.standard_normal(tuple(s))
    for sample in ours["samples"]:
        v = np.concatenate([rng.integers(0, 2, tuple(s)).astype(np.float64).reshape(-1) for s in shapes]) * 2 - 1
        assert sample == pytest.approx(v @ H @ v, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# functorch's MAML regression with torch.func: grad of a functional_call inside vmap over tasks
# ----------------------------------------------------------------------------------------------


def make_three_layer(m):
    nn, F = m.nn, m.F

    class ThreeLayerNet(nn.Module):
        def __init__(self):
            super(ThreeLayerNet, self).__init__()
            self.fc1 = nn.Linear(1, 24)
            self.relu1 = nn.ReLU()
            self.fc2 = nn.Linear(24, 24)
            self.relu2 = nn.ReLU()
            self.fc3 = nn.Linear(24, 1)

        def forward(self, x):
            x = self.fc1(x)
            x = self.relu1(x)
            x = self.fc2(x)
            x = self.relu2(x)
            x = self.fc3(x)
            return x

    return ThreeLayerNet()


def func_maml(m, weights, outer_steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    from functools import partial

    grad, vmap, functional_call = torch.func.grad, torch.func.vmap, torch.func.functional_call
    net = load(m, make_three_layer(m), weights).double()
    params = dict(net.named_parameters())
    opt = optim.Adam(params.values(), lr=1e-3)
    alpha = 1e-1
    rng = np.random.default_rng(15)

    def get_loss_for_task(x1, y1, x2, y2):
        def inner_loss(params, x1, y1):
            f = functional_call(net, params, x1)
            loss = F.mse_loss(f, y1)
            return loss

        grads = grad(inner_loss)(params, x1, y1)
        new_params = {k: params[k] - alpha * grads[k] for k in params}
        v_f = functional_call(net, new_params, x2)
        return F.mse_loss(v_f, y2)

    history = []
    for it in range(outer_steps):
        x1, y1, x2, y2 = (torch.from_numpy(a) for a in sine_tasks(rng, 4, 5))
        opt.zero_grad()
        inner_losses = vmap(partial(get_loss_for_task))(x1, y1, x2, y2)
        loss2 = sum(inner_losses) / len(inner_losses)
        loss2.backward()
        opt.step()
        history.append((loss2.item(), inner_losses.detach()))
    return {"history": history, "grads": [p.grad for p in params.values()],
            "params": [p.detach() for p in params.values()]}


def test_func_maml_vmap_over_tasks():
    weights = weights_of(make_three_layer)
    ours, _ = run_both(func_maml, weights, rtol=1e-9, atol=1e-11)
    assert ours["history"][0][1].shape == (4,)


def test_func_maml_equals_a_loop_over_tasks():
    """vmap over tasks of grad(functional_call) gives the meta-gradient of the per-task loop with
    autograd.grad(create_graph=True)."""
    torch, F = OURS.torch, OURS.F
    weights = weights_of(make_three_layer)
    net = load(OURS, make_three_layer(OURS), weights).double()
    params = dict(net.named_parameters())
    x1, y1, x2, y2 = (torch.from_numpy(a) for a in sine_tasks(np.random.default_rng(16), 3, 5))

    def task_loss(x1, y1, x2, y2):
        grads = torch.func.grad(lambda p: F.mse_loss(torch.func.functional_call(net, p, x1), y1))(params)
        fast = {k: params[k] - 0.1 * grads[k] for k in params}
        return F.mse_loss(torch.func.functional_call(net, fast, x2), y2)

    vmapped = torch.autograd.grad(torch.func.vmap(task_loss)(x1, y1, x2, y2).sum(), list(params.values()))
    total = 0
    for i in range(3):
        g = torch.autograd.grad(F.mse_loss(net(x1[i]), y1[i]), list(params.values()), create_graph=True)
        fast = {k: p - 0.1 * gi for (k, p), gi in zip(params.items(), g)}
        total = total + F.mse_loss(torch.func.functional_call(net, fast, x2[i]), y2[i])
    looped = torch.autograd.grad(total, list(params.values()))
    for a, b in zip(vmapped, looped):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# StyleGAN2's regularisers (rosinality/stylegan2-pytorch): modulated grouped convolutions, R1 penalty
# and path-length regularisation, each a double backward through (transposed, grouped) convolutions
# ----------------------------------------------------------------------------------------------


def make_stylegan(m):
    torch, nn, F = m.torch, m.nn, m.F
    import math

    class EqualLinear(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
            self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
            self.scale = (1 / math.sqrt(in_dim)) * lr_mul
            self.lr_mul = lr_mul

        def forward(self, input):
            return F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)

    class ModulatedConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False):
            super().__init__()
            self.eps = 1e-8
            self.kernel_size = kernel_size
            self.in_channel = in_channel
            self.out_channel = out_channel
            self.upsample = upsample
            fan_in = in_channel * kernel_size ** 2
            self.scale = 1 / math.sqrt(fan_in)
            self.padding = kernel_size // 2
            self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
            self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
            self.demodulate = demodulate

        def forward(self, input, style):
            batch, in_channel, height, width = input.shape
            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
            weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            if self.upsample:
                input = input.view(1, batch * in_channel, height, width)
                weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
                weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size,
                                                        self.kernel_size)
                out = F.conv_transpose2d(input, weight, padding=0, stride=2, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
            else:
                input = input.view(1, batch * in_channel, height, width)
                out = F.conv2d(input, weight, padding=self.padding, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
            return out

    class Generator(nn.Module):
        def __init__(self, style_dim=8):
            super().__init__()
            self.style = nn.Sequential(EqualLinear(style_dim, style_dim, lr_mul=0.01), nn.LeakyReLU(0.2))
            self.input = nn.Parameter(torch.randn(1, 4, 4, 4))
            self.conv1 = ModulatedConv2d(4, 4, 3, style_dim)
            self.up = ModulatedConv2d(4, 4, 3, style_dim, upsample=True)
            self.to_rgb = ModulatedConv2d(4, 1, 1, style_dim, demodulate=False)

        def forward(self, z, return_latents=False):
            latent = self.style(z)
            out = self.input.repeat(z.shape[0], 1, 1, 1)
            out = F.leaky_relu(self.conv1(out, latent), 0.2)
            out = F.leaky_relu(self.up(out, latent), 0.2)
            image = self.to_rgb(out, latent)
            return (image, latent) if return_latents else (image, None)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 3, stride=2),
                                       nn.LeakyReLU(0.2))
            self.final = nn.Linear(8 * 4 * 4, 1)

        def forward(self, x):
            return self.final(self.convs(x).flatten(1))

    return nn.ModuleDict({"g": Generator(), "d": Discriminator()})


def stylegan(m, weights, steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    autograd = torch.autograd
    import math
    nets = load(m, make_stylegan(m), weights).double()
    generator, discriminator = nets["g"], nets["d"]
    g_reg_ratio, d_reg_ratio = 4 / 5, 16 / 17
    g_optim = optim.Adam(generator.parameters(), lr=0.002 * g_reg_ratio, betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = optim.Adam(discriminator.parameters(), lr=0.002 * d_reg_ratio,
                         betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
    rng = np.random.default_rng(21)
    mean_path_length = 0
    history = []

    def d_logistic_loss(real_pred, fake_pred):
        real_loss = F.softplus(-real_pred)
        fake_loss = F.softplus(fake_pred)
        return real_loss.mean() + fake_loss.mean()

    def d_r1_loss(real_pred, real_img):
        grad_real, = autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
        grad_penalty = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
        return grad_penalty

    def g_nonsaturating_loss(fake_pred):
        return F.softplus(-fake_pred).mean()

    def g_path_regularize(fake_img, latents, mean_path_length, noise, decay=0.01):
        grad, = autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
        path_lengths = torch.sqrt(grad.pow(2).sum(1))
        path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
        path_penalty = (path_lengths - path_mean).pow(2).mean()
        return path_penalty, path_mean.detach(), path_lengths

    for i in range(steps):
        real_img = torch.tensor(rng.standard_normal((3, 1, 9, 9)))
        z = torch.tensor(rng.standard_normal((3, 8)))
        fake_img, _ = generator(z)
        d_loss = d_logistic_loss(discriminator(real_img), discriminator(fake_img.detach()))
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()

        real_img.requires_grad = True
        real_pred = discriminator(real_img)
        r1_loss = d_r1_loss(real_pred, real_img)
        discriminator.zero_grad()
        (10 / 2 * r1_loss * 16 + 0 * real_pred[0]).backward()
        d_optim.step()

        fake_img, _ = generator(z)
        g_loss = g_nonsaturating_loss(discriminator(fake_img))
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()

        fake_img, latents = generator(z, return_latents=True)
        noise = torch.tensor(rng.standard_normal(fake_img.shape)) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
        path_loss, mean_path_length, path_lengths = g_path_regularize(fake_img, latents, mean_path_length, noise)
        generator.zero_grad()
        weighted_path_loss = 2 * 4 * path_loss
        weighted_path_loss.backward()
        g_optim.step()
        history.append((d_loss.item(), r1_loss.item(), g_loss.item(), path_loss.item(), mean_path_length.item()))
    return {"history": history, "fake_shape": tuple(fake_img.shape),
            "g_grads": [p.grad for p in generator.parameters()],
            "d_grads": [p.grad for p in discriminator.parameters()]}


def test_stylegan2_r1_and_path_length():
    weights = weights_of(make_stylegan)
    ours, _ = run_both(stylegan, weights, rtol=1e-8, atol=1e-10)
    assert ours["fake_shape"] == (3, 1, 9, 9)  # the transposed convolution upsamples 4 -> 9
    assert all(g is not None for g in ours["g_grads"][1:])


def test_double_backward_through_grouped_transposed_convolution():
    """gradgradcheck of conv_transpose2d with groups and stride, as StyleGAN's upsampling uses it."""
    torch, F = OURS.torch, OURS.F
    rng = np.random.default_rng(22)
    x = torch.tensor(rng.standard_normal((1, 4, 3, 3)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    f = lambda x, w: F.conv_transpose2d(x, w, stride=2, groups=2)
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))
