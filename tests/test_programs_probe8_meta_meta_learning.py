# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Meta-learning and higher-order programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights, comparing losses, parameters and gradients (float64 where the program allows, to about 1e-10). MAML
on sine waves with fast weights held in a list and a ``forward(x, vars)`` network (the MAML-Pytorch layout:
``F.linear`` on explicit weights, ``autograd.grad(..., create_graph=True)``, a meta batch summed and stepped by Adam)
and its first-order variant; functorch's MAML regression with ``torch.func`` (``grad`` of a ``functional_call``
inside ``vmap`` over tasks, equal to a loop over tasks); a learned optimizer (Andrychowicz et al.'s coordinatewise
two-layer ``LSTMCell`` with the gradient preprocessing, unrolled and truncated, with ``retain_grad`` on the non-leaf
optimizee parameters)."""

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
