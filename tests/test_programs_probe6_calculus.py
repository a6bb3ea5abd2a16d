# ruff: noqa: B007, B023, E741, E731, F841, UP004, UP008, UP031, UP039  (the programs are kept as their authors wrote them)
"""Programs that differentiate with respect to their inputs (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same weights, comparing losses, derivatives and parameters.

A physics-informed network for Burgers' equation as Raissi's PyTorch ports write it (x and t as
separate columns that require grad, ``u_t``, ``u_x``, ``u_xx`` by ``torch.autograd.grad(...,
create_graph=True)``, the PDE's two coefficients learnt as parameters, float64, an Adam phase then
L-BFGS with a closure); a 2-D Poisson residual by the Laplacian of a network of (N, 2) inputs; a neural
ODE trained as torchdiffeq's ode_demo.py trains one, through a hand-written RK4 ``odeint``; and an
energy-based model sampled by Langevin dynamics as JEM and IGEBM write it (``Variable(x,
requires_grad=True)``, ``x_k.data += step * grad + sigma * noise``, ``clamp_``, a replay buffer written by
index, ``requires_grad_()`` on the data for a score-matching term)."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# PINN: Burgers' equation, u_t + l1 u u_x - l2 u_xx = 0, with l1 and l2 learnt
# ----------------------------------------------------------------------------------------------


def burgers_net(m):
    torch, nn = m.torch, m.nn

    class DNN(nn.Module):
        def __init__(self, layers):
            super(DNN, self).__init__()
            self.depth = len(layers) - 1
            self.activation = nn.Tanh
            layer_list = list()
            for i in range(self.depth - 1):
                layer_list.append(('layer_%d' % i, nn.Linear(layers[i], layers[i + 1])))
                layer_list.append(('activation_%d' % i, self.activation()))
            layer_list.append(('layer_%d' % (self.depth - 1), nn.Linear(layers[-2], layers[-1])))
            from collections import OrderedDict
            layerDict = OrderedDict(layer_list)
            self.layers = nn.Sequential(layerDict)

        def forward(self, x):
            out = self.layers(x)
            return out

    return DNN([2, 12, 12, 1])


def burgers(m, weights, adam_steps=6, lbfgs_iter=8):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(0)
    X = np.stack([rng.uniform(-1, 1, 40), rng.uniform(0, 1, 40)], 1)
    u_true = -np.sin(np.pi * X[:, 0:1]) * np.exp(-X[:, 1:2])  # data to fit, not a solution

    class PhysicsInformedNN():
        def __init__(self, X, u, layers):
            self.lambda_1 = torch.tensor([0.0], requires_grad=True)
            self.lambda_2 = torch.tensor([-6.0], requires_grad=True)
            self.lambda_1 = nn.Parameter(self.lambda_1)  # torch.nn.Parameter in the original
            self.lambda_2 = nn.Parameter(self.lambda_2)
            self.x = torch.tensor(X[:, 0:1], requires_grad=True).double()
            self.t = torch.tensor(X[:, 1:2], requires_grad=True).double()
            self.u = torch.tensor(u).double()
            self.dnn = load(m, burgers_net(m), weights).double()
            self.dnn.register_parameter('lambda_1', self.lambda_1)
            self.dnn.register_parameter('lambda_2', self.lambda_2)
            self.optimizer = m.optim.LBFGS(
                self.dnn.parameters(), lr=1.0, max_iter=lbfgs_iter, max_eval=lbfgs_iter, history_size=50,
                tolerance_grad=1e-5, tolerance_change=1.0 * np.finfo(float).eps, line_search_fn="strong_wolfe")
            self.optimizer_Adam = m.optim.Adam(self.dnn.parameters())
            self.iter = 0
            self.history = []

        def net_u(self, x, t):
            u = self.dnn(torch.cat([x, t], dim=1))
            return u

        def net_f(self, x, t):
            """ The pytorch autograd version of calculating residual """
            lambda_1 = self.lambda_1
            lambda_2 = torch.exp(self.lambda_2)
            u = self.net_u(x, t)
            u_t = torch.autograd.grad(u, t, grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)[0]
            u_x = torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)[0]
            u_xx = torch.autograd.grad(u_x, x, grad_outputs=torch.ones_like(u_x), retain_graph=True,
                                       create_graph=True)[0]
            f = u_t + lambda_1 * u * u_x - lambda_2 * u_xx
            return f

        def loss_func(self):
            u_pred = self.net_u(self.x, self.t)
            f_pred = self.net_f(self.x, self.t)
            loss = torch.mean((self.u - u_pred) ** 2) + torch.mean(f_pred ** 2)
            self.optimizer.zero_grad()
            loss.backward()
            self.iter += 1
            self.history.append((loss.item(), self.lambda_1.item(), torch.exp(self.lambda_2.detach()).item()))
            return loss

        def train(self, nIter):
            self.dnn.train()
            for epoch in range(nIter):
                u_pred = self.net_u(self.x, self.t)
                f_pred = self.net_f(self.x, self.t)
                loss = torch.mean((self.u - u_pred) ** 2) + torch.mean(f_pred ** 2)
                self.optimizer_Adam.zero_grad()
                loss.backward()
                self.optimizer_Adam.step()
                self.history.append((loss.item(), self.lambda_1.item(), torch.exp(self.lambda_2).item()))
            self.optimizer.step(self.loss_func)

        def predict(self, X):
            x = torch.tensor(X[:, 0:1], requires_grad=True).double()
            t = torch.tensor(X[:, 1:2], requires_grad=True).double()
            self.dnn.eval()
            u = self.net_u(x, t)
            f = self.net_f(x, t)
            u = u.detach().cpu().numpy()
            f = f.detach().cpu().numpy()
            return u, f

    model = PhysicsInformedNN(X, u_true, None)
    model.train(adam_steps)
    u_pred, f_pred = model.predict(X[:8])
    names = [n for n, _ in model.dnn.named_parameters()]
    return {"history": model.history, "u": u_pred, "f": f_pred, "names": names, "iters": model.iter,
            "grads": [p.grad for p in model.dnn.parameters()]}


def test_pinn_burgers_inverse_problem():
    weights = weights_of(burgers_net)
    ours, _ = run_both(burgers, weights, rtol=1e-7, atol=1e-9)
    history = ours["history"]
    assert history[-1][0] < history[0][0] and ours["names"][:2] == ["lambda_1", "lambda_2"]
    assert ours["u"].dtype == np.float64 and ours["iters"] >= 2
    assert all(g.dtype == np.float64 for g in ours["grads"][2:])  # the lambdas stay float32, as made


def laplacian_residual(m, weights):
    """A 2-D Poisson residual: the trace of the Hessian of u(x, y), column by column, as DeepXDE does."""
    torch = m.torch
    net = load(m, burgers_net(m), weights).double()
    rng = np.random.default_rng(1)
    X = torch.tensor(rng.uniform(0, 1, (16, 2)), requires_grad=True)

    def jacobian(y, x, i=0, j=0):
        return torch.autograd.grad(y[:, i:i + 1], x, grad_outputs=torch.ones_like(y[:, i:i + 1]),
                                   create_graph=True)[0][:, j:j + 1]

    u = net(X)
    du_X = torch.autograd.grad(u, X, torch.ones_like(u), create_graph=True)[0]
    u_xx = torch.autograd.grad(du_X[:, 0:1], X, torch.ones_like(du_X[:, 0:1]), create_graph=True)[0][:, 0:1]
    u_yy = jacobian(du_X, X, i=1, j=1)
    x, y = X[:, 0:1], X[:, 1:2]
    f = 2 * np.pi ** 2 * torch.sin(np.pi * x) * torch.sin(np.pi * y)
    residual = u_xx + u_yy + f
    hessian_0 = [[torch.autograd.grad(du_X[0, a], X, retain_graph=True)[0][0, b].item() for b in range(2)]
                 for a in range(2)]
    loss = (residual ** 2).mean()
    loss.backward()
    return loss, u_xx, u_yy, hessian_0, [p.grad for p in net.parameters()], X.grad


def test_poisson_residual_by_the_laplacian():
    weights = weights_of(burgers_net)
    ours, _ = run_both(laplacian_residual, weights, rtol=1e-9, atol=1e-11)
    loss, u_xx, u_yy, hessian_0, grads, x_grad = ours
    np.testing.assert_allclose([u_xx[0, 0], u_yy[0, 0]], np.diag(hessian_0), rtol=1e-10)
    assert np.isclose(hessian_0[0][1], hessian_0[1][0], rtol=1e-10)  # a symmetric Hessian
    assert x_grad.shape == (16, 2) and all(g is not None for g in grads[:-1])
    assert grads[-1] is None  # the last bias adds a constant to u: no second derivative sees it


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
# An energy-based model sampled by Langevin dynamics (JEM, IGEBM)
# ----------------------------------------------------------------------------------------------


def energy_net(m):
    nn = m.nn

    class F(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))

        def forward(self, x, y=None):
            return self.f(x).squeeze()

    return F()


def ebm(m, weights, steps=4, n_steps=5, step_size=0.1, sigma=0.05, bs=16, buffer_size=64, alpha=0.1):
    torch, nn = m.torch, m.nn
    Variable = m.torch.autograd.Variable
    rng = np.random.default_rng(4)
    f = load(m, energy_net(m), weights)
    optimizer = m.optim.Adam(f.parameters(), lr=1e-3, betas=(0.0, 0.999))
    replay_buffer = torch.FloatTensor(buffer_size, 2).uniform_(-1, 1)
    replay_buffer.copy_(torch.from_numpy(rng.uniform(-1, 1, (buffer_size, 2)).astype(np.float32)))  # same draws
    noises = rng.standard_normal((steps, n_steps, bs, 2)).astype(np.float32)

    def sample_p_0(replay_buffer, bs):
        buffer_inds = torch.tensor(rng.integers(0, buffer_size, bs))
        buffer_samples = replay_buffer[buffer_inds]
        return buffer_samples, buffer_inds

    def sample_q(f, replay_buffer, noise, n_steps=n_steps):
        f.eval()
        init_sample, buffer_inds = sample_p_0(replay_buffer, bs=bs)
        x_k = Variable(init_sample, requires_grad=True)
        for k in range(n_steps):
            f_prime = torch.autograd.grad(f(x_k).sum(), [x_k], retain_graph=True)[0]
            x_k.data += step_size * f_prime + sigma * torch.tensor(noise[k])
            x_k.data.clamp_(-1.5, 1.5)
        f.train()
        final_samples = x_k.detach()
        replay_buffer[buffer_inds] = final_samples.cpu()
        return final_samples

    theta = rng.uniform(0, 2 * np.pi, (steps, bs))
    losses, grads = [], []
    for it in range(steps):
        x_p = torch.tensor(np.stack([np.cos(theta[it]), np.sin(theta[it])], 1).astype(np.float32))
        x_q = sample_q(f, replay_buffer, noises[it])
        x_p.requires_grad_()
        fp, fq = f(x_p), f(x_q)
        # the energies' gradient on the data (a score-matching-like smoothness term)
        score = torch.autograd.grad(fp.sum(), x_p, create_graph=True)[0]
        loss = -(fp.mean() - fq.mean()) + alpha * (fp ** 2 + fq ** 2).mean() + 0.01 * (score ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        grads.append([p.grad.clone() for p in f.parameters()])
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "buffer": replay_buffer, "x_p_grad": x_p.grad,
            "params": [p.detach() for p in f.parameters()]}


def test_ebm_langevin_sampling_with_a_replay_buffer():
    weights = weights_of(energy_net)
    ours, _ = run_both(ebm, weights, rtol=1e-4, atol=1e-6)
    assert np.abs(ours["buffer"]).max() <= 1.5 and ours["x_p_grad"].shape == (16, 2)
    assert np.isfinite(ours["losses"]).all()


def test_langevin_dynamics_samples_a_gaussian():
    """Without torch: Langevin steps on log p(x) = -x^2 / 2 (step e, noise sqrt(2e)) leave a standard
    normal; 4000 chains from 3.0 after 300 steps have mean ~0 and variance ~1."""
    torch = OURS.torch
    gen = torch.Generator().manual_seed(0)
    x = torch.full((4000,), 3.0)
    eps = 0.05
    for _ in range(300):
        x.requires_grad_()
        log_p = -(x ** 2 / 2).sum()
        grad = torch.autograd.grad(log_p, x)[0]
        x = (x + eps * grad + np.sqrt(2 * eps) * torch.randn(x.shape, generator=gen)).detach()
    assert abs(x.mean().item()) < 0.08 and abs(x.var().item() - 1) < 0.1


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


# ----------------------------------------------------------------------------------------------
# A PINN written with torch.func: functional_call, vmap over grad/hessian of a scalar network
# ----------------------------------------------------------------------------------------------


def func_pinn_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 1)).double()


def func_pinn(m, weights, steps=4):
    torch = m.torch
    from_func = torch.func
    model = load(m, func_pinn_net(m), weights)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}

    def u(params, x):
        return from_func.functional_call(model, params, (x.reshape(1, 1),)).squeeze()

    u_x = from_func.grad(u, argnums=1)
    u_xx = from_func.grad(u_x, argnums=1)
    x = torch.linspace(0, 1, 9, dtype=torch.float64)
    boundary = torch.tensor([0.0, 1.0], dtype=torch.float64)
    optimizer = m.optim.Adam(params.values(), lr=1e-2)
    losses = []
    for step in range(steps):
        residual = from_func.vmap(u_xx, in_dims=(None, 0))(params, x) + np.pi ** 2 * torch.sin(np.pi * x)
        edges = from_func.vmap(u, in_dims=(None, 0))(params, boundary)
        loss = (residual ** 2).mean() + (edges ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the same second derivative three ways
    by_hessian = from_func.vmap(from_func.hessian(u, argnums=1), in_dims=(None, 0))(params, x)
    by_vmap = from_func.vmap(u_xx, in_dims=(None, 0))(params, x)
    xs = x.clone().requires_grad_(True)
    out = from_func.functional_call(model, params, (xs.reshape(-1, 1),))
    first = torch.autograd.grad(out.sum(), xs, create_graph=True)[0]
    by_autograd = torch.autograd.grad(first.sum(), xs)[0]
    return {"losses": losses, "hessian": by_hessian, "vmap": by_vmap, "autograd": by_autograd,
            "grads": [p.grad for p in params.values()]}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_pinn_with_torch_func():
    weights = weights_of(func_pinn_net)
    ours, _ = run_both(func_pinn, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["hessian"], ours["autograd"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["vmap"], ours["autograd"], rtol=1e-10, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
