# ruff: noqa: B007, UP004, UP008  (the programs are kept as their authors wrote them)
"""Programs that differentiate with respect to their inputs (see tests/pytorch_programs.py), each run on chainrule
and on PyTorch from the same weights, comparing losses, derivatives and parameters. A neural ODE trained as
torchdiffeq's ode_demo.py trains one, through a hand-written RK4 ``odeint``; the adjoint method as the "Neural ODEs"
tutorials write it (a Function whose backward integrates the adjoint system)."""

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A neural ODE: torchdiffeq's ode_demo.py with a hand-written RK4 solver
# ----------------------------------------------------------------------------------------------


def odeint(m, func, y0, t):
    """Fixed-step classical Runge-Kutta on the grid t (one step per interval)."""
    torch = m.torch

    def rk4_step(func, t0, dt, y):
        k1 = func(t0, y)
        k2 = func(t0 + dt / 2, y + dt * k1 / 2)
        k3 = func(t0 + dt / 2, y + dt * k2 / 2)
        k4 = func(t0 + dt, y + dt * k3)
        return y + dt * (k1 + 2 * k2 + 2 * k3 + k4) / 6

    ys = [y0]
    y = y0
    for t0, t1 in zip(t[:-1], t[1:]):
        y = rk4_step(func, t0, t1 - t0, y)
        ys.append(y)
    return torch.stack(ys)


def ode_func(m):
    nn = m.nn

    class ODEFunc(nn.Module):
        def __init__(self):
            super(ODEFunc, self).__init__()
            self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
            for mod in self.net.modules():
                if isinstance(mod, nn.Linear):
                    nn.init.normal_(mod.weight, mean=0, std=0.1)
                    nn.init.constant_(mod.bias, val=0)
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            return self.net(y ** 3)

    return ODEFunc()


def neural_ode(m, weights, niters=6, data_size=60, batch_time=6, batch_size=8):
    torch, nn, optim = m.torch, m.nn, m.optim
    true_y0 = torch.tensor([[2., 0.]])
    t = torch.linspace(0., 6., data_size)
    true_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])

    class Lambda(nn.Module):
        def forward(self, t, y):
            return torch.mm(y ** 3, true_A)

    with torch.no_grad():
        true_y = odeint(m, Lambda(), true_y0, t)
    choice = np.random.default_rng(0)

    def get_batch():
        s = torch.from_numpy(choice.choice(np.arange(data_size - batch_time, dtype=np.int64), batch_size,
                                           replace=False))
        batch_y0 = true_y[s]  # (M, D)
        batch_t = t[:batch_time]  # (T)
        batch_y = torch.stack([true_y[s + i] for i in range(batch_time)], dim=0)  # (T, M, D)
        return batch_y0, batch_t, batch_y

    class RunningAverageMeter(object):
        """Computes and stores the average and current value"""

        def __init__(self, momentum=0.99):
            self.momentum = momentum
            self.reset()

        def reset(self):
            self.val = None
            self.avg = 0

        def update(self, val):
            if self.val is None:
                self.avg = val
            else:
                self.avg = self.avg * self.momentum + val * (1 - self.momentum)
            self.val = val

    func = load(m, ode_func(m), weights)
    optimizer = optim.RMSprop(func.parameters(), lr=1e-2)
    loss_meter = RunningAverageMeter(0.97)
    losses = []
    for itr in range(1, niters + 1):
        optimizer.zero_grad()
        batch_y0, batch_t, batch_y = get_batch()
        pred_y = odeint(m, func, batch_y0, batch_t)
        loss = torch.mean(torch.abs(pred_y - batch_y))
        loss.backward()
        optimizer.step()
        loss_meter.update(loss.item())
        losses.append(loss.item())
    with torch.no_grad():
        pred_y = odeint(m, func, true_y0, t)
        loss = torch.mean(torch.abs(pred_y - true_y))
    return {"losses": losses, "avg": loss_meter.avg, "test": loss, "true_y": true_y, "pred": pred_y,
            "nfe": func.nfe, "params": [p.detach() for p in func.parameters()]}


def test_neural_ode_with_rk4():
    weights = weights_of(ode_func)
    # float32 over 59 steps after six training steps: rounding, which differs between machines (their BLAS
    # kernels), grows to about 1e-4 at the last steps
    ours, _ = run_both(neural_ode, weights, rtol=1e-4, atol=3e-4)
    assert ours["true_y"].shape == (60, 1, 2) and ours["pred"].shape == (60, 1, 2)
    assert ours["nfe"] == 6 * 4 * 5 + 4 * 59  # four evaluations a step
    assert ours["losses"][-1] < ours["losses"][0]


def test_rk4_solves_a_linear_ode():
    """Without torch: y' = -y from 1 over [0, 2] in 20 steps is e^-t to RK4's accuracy, and the
    gradient of y(2) with respect to the rate k of y' = -k y at k = 1 is -t e^-t."""
    torch = OURS.torch
    k = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 21, dtype=torch.float64)
    ys = odeint(OURS, lambda t0, y: -k * y, torch.ones((), dtype=torch.float64), t)
    np.testing.assert_allclose(ys.detach().numpy(), np.exp(-t.numpy()), rtol=5e-6)  # RK4: O(h^4)
    ys[-1].backward()
    assert np.isclose(k.grad.item(), -2 * np.exp(-2), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# The adjoint method (as the "Neural ODEs" tutorials write it): a Function whose backward integrates
# the adjoint state back in time, calling torch.autograd.grad on the dynamics inside
# ----------------------------------------------------------------------------------------------


def adjoint_program(m, weights, steps=3):
    torch, nn = m.torch, m.nn

    class ODEF(nn.Module):
        def forward_with_grad(self, z, t, grad_outputs):
            """f(z, t) and the vector-Jacobian products a^T df/dz, a^T df/dt, a^T df/dp."""
            batch_size = z.shape[0]
            out = self.forward(z, t)
            a = grad_outputs
            adfdz, adfdt, *adfdp = torch.autograd.grad((out,), (z, t) + tuple(self.parameters()), grad_outputs=(a),
                                                       allow_unused=True, retain_graph=True)
            if adfdp is not None:
                adfdp = torch.cat([p_grad.flatten() for p_grad in adfdp]).unsqueeze(0)
                adfdp = adfdp.expand(batch_size, -1) / batch_size
            if adfdt is not None:
                adfdt = adfdt.expand(batch_size, 1) / batch_size
            return out, adfdz, adfdt, adfdp

        def flatten_parameters(self):
            p_shapes = []
            flat_parameters = []
            for p in self.parameters():
                p_shapes.append(p.size())
                flat_parameters.append(p.flatten())
            return torch.cat(flat_parameters)

    class LinearODEF(ODEF):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(x) * (1 + 0.1 * t)

    def rk4(z0, t0, t1, f, n_steps=4):
        h = (t1 - t0) / n_steps
        t, z = t0, z0
        for _ in range(n_steps):
            k1 = f(z, t)
            k2 = f(z + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(z + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(z + h * k3, t + h)
            z = z + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
            t = t + h
        return z

    class ODEAdjoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z0, t, flat_parameters, func):
            assert isinstance(func, ODEF)
            bs, *z_shape = z0.size()
            time_len = t.size(0)
            with torch.no_grad():
                z = torch.zeros(time_len, bs, *z_shape).to(z0)
                z[0] = z0
                for i_t in range(time_len - 1):
                    z0 = rk4(z0, t[i_t], t[i_t + 1], func)
                    z[i_t + 1] = z0
            ctx.func = func
            ctx.save_for_backward(t, z.clone(), flat_parameters)
            return z

        @staticmethod
        def backward(ctx, dLdz):
            func = ctx.func
            t, z, flat_parameters = ctx.saved_tensors
            time_len, bs, n_dim = z.size()
            n_params = flat_parameters.size(0)

            def augmented_dynamics(aug_z_i, t_i):
                z_i, a = aug_z_i[:, :n_dim], aug_z_i[:, n_dim:2 * n_dim]
                with torch.set_grad_enabled(True):
                    t_i = t_i.detach().requires_grad_(True)
                    z_i = z_i.detach().requires_grad_(True)
                    func_eval, adfdz, adfdt, adfdp = func.forward_with_grad(z_i, t_i, grad_outputs=a)
                    adfdz = adfdz.to(z_i) if adfdz is not None else torch.zeros(bs, n_dim).to(z_i)
                    adfdp = adfdp.to(z_i) if adfdp is not None else torch.zeros(bs, n_params).to(z_i)
                    adfdt = adfdt.to(z_i) if adfdt is not None else torch.zeros(bs, 1).to(z_i)
                return torch.cat((func_eval, -adfdz, -adfdp, -adfdt), dim=1)

            with torch.no_grad():
                adj_z = torch.zeros(bs, n_dim).to(dLdz)
                adj_p = torch.zeros(bs, n_params).to(dLdz)
                adj_t = torch.zeros(time_len, bs, 1).to(dLdz)
                for i_t in range(time_len - 1, 0, -1):
                    z_i = z[i_t]
                    t_i = t[i_t]
                    f_i = func(z_i, t_i).view(bs, n_dim)
                    dLdz_i = dLdz[i_t]
                    dLdt_i = torch.bmm(torch.transpose(dLdz_i.unsqueeze(-1), 1, 2), f_i.unsqueeze(-1))[:, 0]
                    adj_z += dLdz_i
                    adj_t[i_t] = adj_t[i_t] - dLdt_i
                    aug_z = torch.cat((z_i.view(bs, n_dim), adj_z, torch.zeros(bs, n_params).to(z), adj_t[i_t]),
                                      dim=-1)
                    aug_ans = rk4(aug_z, t_i, t[i_t - 1], augmented_dynamics)
                    adj_z[:] = aug_ans[:, n_dim:2 * n_dim]
                    adj_p[:] += aug_ans[:, 2 * n_dim:2 * n_dim + n_params]
                    adj_t[i_t - 1] = aug_ans[:, 2 * n_dim + n_params:]
                    del aug_z, aug_ans
                dLdz_0 = dLdz[0]
                dLdt_0 = torch.bmm(torch.transpose(dLdz_0.unsqueeze(-1), 1, 2), f_i.unsqueeze(-1))[:, 0]
                adj_z += dLdz_0
                adj_t[0] = adj_t[0] - dLdt_0
            return adj_z.view(bs, *z.shape[2:]), adj_t, adj_p.sum(0), None

    class NeuralODE(nn.Module):
        def __init__(self, func):
            super().__init__()
            self.func = func

        def forward(self, z0, t):
            return ODEAdjoint.apply(z0, t, self.func.flatten_parameters(), self.func)

    ode = NeuralODE(LinearODEF(load(m, ode_net(m), weights)))
    optimizer = m.optim.Adam(ode.parameters(), lr=0.01)
    rng = np.random.default_rng(21)
    z0 = torch.tensor(rng.standard_normal((4, 2)).astype(np.float64))
    t = torch.tensor(np.linspace(0.0, 1.0, 4))
    target = torch.tensor(rng.standard_normal((4, 4, 2)).astype(np.float64))
    losses, grads = [], []
    for step in range(steps):
        z = ode(z0, t)
        loss = ((z - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        grads.append([p.grad.clone() for p in ode.parameters()])
        optimizer.step()
        losses.append(loss.item())
    # the adjoint's gradient against backpropagation through the same solver
    params = [p.detach().clone().requires_grad_(True) for p in ode.parameters()]
    for p, q in zip(ode.parameters(), params):
        p.data = q.data
    z0_direct = z0.clone().requires_grad_(True)
    zs, zi = [z0_direct], z0_direct
    for i in range(3):
        zi = rk4(zi, t[i], t[i + 1], ode.func)
        zs.append(zi)
    direct = ((torch.stack(zs) - target) ** 2).mean()
    *direct_grads, z0_direct_grad = torch.autograd.grad(direct, list(ode.parameters()) + [z0_direct])
    z0_adj = z0.clone().requires_grad_(True)
    adjoint = ((ode(z0_adj, t) - target) ** 2).mean()
    adjoint_grads = torch.autograd.grad(adjoint, list(ode.parameters()) + [z0_adj])
    return {"losses": losses, "grads": grads, "direct": list(direct_grads), "adjoint": list(adjoint_grads[:-1]),
            "z0_grad": adjoint_grads[-1], "z0_direct": z0_direct_grad}


def ode_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def test_neural_ode_adjoint_method():
    weights = weights_of(ode_net)
    ours, _ = run_both(adjoint_program, weights, rtol=1e-6, atol=1e-9)
    assert ours["losses"][-1] < ours["losses"][0]
    # the adjoint integrated back by RK4 agrees with backpropagation through RK4 to the solver's accuracy
    for a, d in zip(ours["adjoint"], ours["direct"]):
        np.testing.assert_allclose(a, d, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(ours["z0_grad"], ours["z0_direct"], rtol=1e-3, atol=1e-5)
