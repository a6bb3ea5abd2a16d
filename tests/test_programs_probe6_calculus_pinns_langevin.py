# ruff: noqa: B007, F841, UP008, UP031, UP039  (the programs are kept as their authors wrote them)
"""Programs that differentiate with respect to their inputs (see tests/pytorch_programs.py), each run on chainrule
and on PyTorch from the same weights, comparing losses, derivatives and parameters. A physics-informed network for
Burgers' equation as Raissi's PyTorch ports write it (x and t as separate columns that require grad, ``u_t``,
``u_x``, ``u_xx`` by ``torch.autograd.grad(..., create_graph=True)``, the PDE's two coefficients learnt as
parameters, float64, an Adam phase then L-BFGS with a closure); a 2-D Poisson residual by the Laplacian of a network
of (N, 2) inputs; a PINN written with torch.func (``functional_call``, ``vmap`` over ``grad``/``hessian`` of a scalar
network); an energy-based model sampled by Langevin dynamics as JEM and IGEBM write it (``Variable(x,
requires_grad=True)``, ``x_k.data += step * grad + sigma * noise``, ``clamp_``, a replay buffer written by index,
``requires_grad_()`` on the data for a score-matching term)."""

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
