# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and checked
by hand (closed forms, NumPy, finite differences) where PyTorch is missing. Physics-informed networks: PINNs for
Allen-Cahn (sine), KdV (third derivatives) and the wave equation (SiLU), Adam then L-BFGS; PINN loss balancing by
gradient statistics, self-adaptive weights (``maximize=True``) and causal weights (``cumsum``); Levenberg-Marquardt
training (``parameters_to_vector``, ``jacrev`` of vmapped input Hessians); a physics-informed DeepONet (``einsum``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# PINNs: Allen-Cahn (sin activations, periodic boundaries), KdV (u_xxx), the wave equation (u_tt)
# ----------------------------------------------------------------------------------------------


def make_pinn(m, activation="sin", width=12):
    torch, nn = m.torch, m.nn

    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    act = {"sin": Sine, "tanh": nn.Tanh, "silu": nn.SiLU}[activation]

    class PINN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, width), act(), nn.Linear(width, width), act(),
                                     nn.Linear(width, 1))

        def forward(self, t, x):
            return self.net(torch.cat([t, x], dim=1))

    return PINN().double()


def pinn(m, weights, equation, adam_steps=5, lbfgs_iter=6):
    torch, optim = m.torch, m.optim
    activation = {"allen_cahn": "sin", "kdv": "tanh", "wave": "silu"}[equation]
    model = load(m, make_pinn(m, activation), weights)
    rng = np.random.default_rng(11)
    t = torch.tensor(rng.uniform(0, 1, (32, 1)), requires_grad=True)
    x = torch.tensor(rng.uniform(-1, 1, (32, 1)), requires_grad=True)
    x0 = torch.tensor(np.linspace(-1, 1, 16)[:, None])
    t_b = torch.tensor(rng.uniform(0, 1, (8, 1)))

    def d(u, v):
        return torch.autograd.grad(u, v, grad_outputs=torch.ones_like(u), create_graph=True)[0]

    def residual():
        u = model(t, x)
        u_t, u_x = d(u, t), d(u, x)
        u_xx = d(u_x, x)
        if equation == "allen_cahn":
            return u_t - 0.0001 * u_xx + 5 * u ** 3 - 5 * u
        if equation == "kdv":
            u_xxx = d(u_xx, x)
            return u_t + u * u_x + 0.0025 * u_xxx
        u_tt = d(u_t, t)
        return u_tt - 4.0 * u_xx

    def boundary():
        zeros = torch.zeros_like(x0)
        if equation == "allen_cahn":
            u0 = x0 ** 2 * torch.cos(math.pi * x0)
        else:
            u0 = torch.sin(math.pi * x0)
        loss = ((model(zeros, x0) - u0) ** 2).mean()
        left = torch.full_like(t_b, -1.0).requires_grad_(True)
        right = torch.full_like(t_b, 1.0).requires_grad_(True)
        u_l, u_r = model(t_b, left), model(t_b, right)
        loss = loss + ((u_l - u_r) ** 2).mean() + ((d(u_l, left) - d(u_r, right)) ** 2).mean()  # periodic
        if equation == "wave":
            t0 = zeros.clone().requires_grad_(True)
            loss = loss + (d(model(t0, x0), t0) ** 2).mean()  # starts at rest
        return loss

    def loss_fn():
        return (residual() ** 2).mean() + 10 * boundary()

    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for step in range(adam_steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    lbfgs = optim.LBFGS(model.parameters(), lr=1.0, max_iter=lbfgs_iter, history_size=10,
                        line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        history.append(loss.item())
        return loss

    lbfgs.step(closure)
    return {"history": history, "residual": residual(), "grads": [p.grad for p in model.parameters()],
            "x_grad": x.grad, "t_grad": t.grad}


@pytest.mark.parametrize("equation", ["allen_cahn", "kdv", "wave"])
def test_pinn_equations(equation):
    activation = {"allen_cahn": "sin", "kdv": "tanh", "wave": "silu"}[equation]
    weights = weights_of(lambda m: make_pinn(m, activation))
    ours, _ = run_both(pinn, weights, equation, rtol=1e-6, atol=1e-8)
    assert min(ours["history"]) < ours["history"][0]
    assert ours["x_grad"] is not None and ours["x_grad"].shape == (32, 1)


def test_third_derivative_of_a_tanh_network_by_hand():
    """u = tanh(a x + b): u''' = a^3 (-2 + 8 u^2 - 6 u^4)... checked in closed form."""
    torch = OURS.torch
    x = torch.tensor([-0.7, 0.1, 0.9], dtype=torch.float64, requires_grad=True)
    a, b = 1.3, -0.2
    u = torch.tanh(a * x + b)
    u_x = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
    u_xx = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0]
    u_xxx = torch.autograd.grad(u_xx.sum(), x)[0]
    s = np.tanh(a * x.detach().numpy() + b)
    np.testing.assert_allclose(u_xxx.numpy(), a ** 3 * (-2 + 8 * s ** 2 - 6 * s ** 4), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A physics-informed DeepONet for the antiderivative operator (Wang, Wang & Perdikaris 2021)
# ----------------------------------------------------------------------------------------------


def make_deeponet(m, n_sensors=10, p=8):
    torch, nn = m.torch, m.nn

    class DeepONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.branch = nn.Sequential(nn.Linear(n_sensors, 16), nn.Tanh(), nn.Linear(16, p))
            self.trunk = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, p), nn.Tanh())
            self.b0 = nn.Parameter(torch.zeros(1, dtype=torch.float64))

        def forward(self, u, y):
            B = self.branch(u)  # (batch, p)
            T = self.trunk(y)  # (batch, n_points, p)
            return torch.einsum("bp,bnp->bn", B, T) + self.b0

    return DeepONet().double()


def deeponet(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    model = load(m, make_deeponet(m), weights)
    rng = np.random.default_rng(20)
    sensors = np.linspace(0, 1, 10)
    coeffs = rng.standard_normal((6, 3))
    u_of = lambda y: sum(coeffs[:, k:k + 1] * np.sin((k + 1) * np.pi * y) for k in range(3))
    u = torch.tensor(u_of(sensors[None, :]))
    y_np = rng.uniform(0, 1, (6, 12))
    y = torch.tensor(y_np[..., None], requires_grad=True)
    u_at_y = torch.tensor(u_of(y_np))
    zero = torch.zeros(6, 1, 1, dtype=torch.float64)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    history = []
    for step in range(steps):
        s = model(u, y)
        (ds_dy,) = torch.autograd.grad(s, y, torch.ones_like(s), create_graph=True)
        loss_ics = (model(u, zero) ** 2).mean()
        loss_res = ((ds_dy.squeeze(-1) - u_at_y) ** 2).mean()
        loss = loss_ics + loss_res
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append((loss.item(), loss_ics.item(), loss_res.item()))
    return {"history": history, "grads": [p.grad for p in model.parameters()], "y_grad": y.grad,
            "lr": scheduler.get_last_lr()}


def test_physics_informed_deeponet():
    weights = weights_of(make_deeponet)
    ours, _ = run_both(deeponet, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]
    assert ours["y_grad"].shape == (6, 12, 1)
    assert ours["lr"][0] == pytest.approx(1e-3 * 0.9 ** 4)


# ----------------------------------------------------------------------------------------------
# PINN training tricks: learning-rate annealing of the loss weights by gradient statistics (Wang, Teng &
# Perdikaris 2021), self-adaptive point weights by gradient ascent (McClenny & Braga-Neto: maximize=True),
# and causal weights over time slabs (Wang, Sankaran & Perdikaris 2022: exp(-eps * cumsum of losses))
# ----------------------------------------------------------------------------------------------


def pinn_tricks(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    model = load(m, make_pinn(m, "tanh"), weights)
    rng = np.random.default_rng(22)
    n_slabs, per_slab = 4, 8
    t = torch.tensor(np.repeat(np.linspace(0.05, 0.95, n_slabs), per_slab)[:, None], requires_grad=True)
    x = torch.tensor(rng.uniform(-1, 1, (n_slabs * per_slab, 1)), requires_grad=True)
    x0 = torch.tensor(np.linspace(-1, 1, 12)[:, None])
    u0 = -torch.sin(math.pi * x0)
    self_adaptive = m.nn.Parameter(torch.tensor(rng.uniform(0, 1, (12, 1))))
    params = list(model.parameters())
    optimizer = optim.Adam(params, lr=5e-3)
    optimizer_sa = optim.Adam([self_adaptive], lr=5e-3, maximize=True)
    lam, alpha, eps = 1.0, 0.9, 1.0
    history = []
    for step in range(steps):
        u = model(t, x)
        u_t = torch.autograd.grad(u, t, torch.ones_like(u), create_graph=True)[0]
        u_x = torch.autograd.grad(u, x, torch.ones_like(u), create_graph=True)[0]
        u_xx = torch.autograd.grad(u_x, x, torch.ones_like(u_x), create_graph=True)[0]
        r = (u_t + u * u_x - 0.01 / math.pi * u_xx) ** 2
        slab_losses = r.view(n_slabs, per_slab).mean(1)
        with torch.no_grad():
            causal = torch.exp(-eps * torch.cumsum(torch.cat([slab_losses.new_zeros(1), slab_losses[:-1]]), 0))
        loss_r = (causal * slab_losses).mean()
        loss_ic = (torch.sigmoid(self_adaptive) * (model(torch.zeros_like(x0), x0) - u0) ** 2).mean()
        # learning-rate annealing: max |grad loss_r| / mean |grad loss_ic|, a moving average
        grad_r = torch.autograd.grad(loss_r, params, retain_graph=True, allow_unused=True)
        grad_ic = torch.autograd.grad(loss_ic, params, retain_graph=True, allow_unused=True)
        max_r = torch.max(torch.stack([g.abs().max() for g in grad_r if g is not None]))
        mean_ic = torch.mean(torch.cat([g.abs().flatten() for g in grad_ic if g is not None]))
        lam = alpha * lam + (1 - alpha) * (max_r / mean_ic).item()
        loss = loss_r + lam * loss_ic
        optimizer.zero_grad()
        optimizer_sa.zero_grad()
        loss.backward()
        optimizer.step()
        optimizer_sa.step()
        history.append((loss.item(), lam, causal.detach().clone()))
    return {"history": history, "self_adaptive": self_adaptive.detach(), "sa_grad": self_adaptive.grad,
            "grads": [p.grad for p in params]}


@pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")  # (PyTorch's)
def test_pinn_training_tricks():
    weights = weights_of(lambda m: make_pinn(m, "tanh"))
    ours, _ = run_both(pinn_tricks, weights, rtol=1e-8, atol=1e-10)
    # gradient ascent: each self-adaptive weight moved up its (positive) gradient
    assert np.all(ours["sa_grad"] > 0)
    start = np.random.default_rng(22)
    start.uniform(-1, 1, (32, 1))
    assert np.all(ours["self_adaptive"] > start.uniform(0, 1, (12, 1)))
    causal = ours["history"][0][2]
    assert causal[0] == 1.0 and np.all(np.diff(causal) <= 0)


# ----------------------------------------------------------------------------------------------
# A PINN trained by Levenberg-Marquardt: the Jacobian of the residual vector with respect to the flat
# parameter vector (parameters_to_vector / vector_to_parameters, functional_call, jacrev, vmap of the
# input Hessian), and the damped normal equations solved by torch.linalg.solve
# ----------------------------------------------------------------------------------------------


def make_lm_pinn(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def levenberg_marquardt(m, weights, iters=8):
    torch, nn = m.torch, m.nn
    from_func = torch.func
    model = load(m, make_lm_pinn(m), weights)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    xs = torch.linspace(0, 1, 12, dtype=torch.float64)

    def unflatten(theta):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            out[name] = theta[i:i + size].view(shape)
            i += size
        return out

    def u(params, x):
        return from_func.functional_call(model, params, (x.reshape(1, 1),)).squeeze()

    def residuals(theta):
        params = unflatten(theta)
        u_xx = from_func.vmap(from_func.hessian(u, argnums=1), in_dims=(None, 0))(params, xs)
        interior = u_xx + math.pi ** 2 * torch.sin(math.pi * xs)
        edges = torch.stack([u(params, xs[0]), u(params, xs[-1])])
        return torch.cat([interior / 10, edges])

    theta = nn.utils.parameters_to_vector(model.parameters()).detach()
    mu = 1e-2
    history = []
    for it in range(iters):
        r = residuals(theta)
        J = from_func.jacrev(residuals)(theta)
        g = J.T @ r
        A = J.T @ J + mu * torch.eye(theta.numel(), dtype=torch.float64)
        delta = torch.linalg.solve(A, -g)
        new_loss = (residuals(theta + delta) ** 2).sum()
        old_loss = (r ** 2).sum()
        if new_loss < old_loss:
            theta, mu = theta + delta, mu / 3
        else:
            mu = mu * 3
        history.append((old_loss.item(), new_loss.item(), mu))
    nn.utils.vector_to_parameters(theta, model.parameters())
    # the Gauss-Newton gradient J^T r against autograd of the loss, at the final parameters
    theta_req = theta.clone().requires_grad_(True)
    loss = 0.5 * (residuals(theta_req) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, theta_req)
    J = from_func.jacrev(residuals)(theta)
    return {"history": history, "theta": theta, "grad": grad, "JTr": J.T @ residuals(theta),
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_pinn_levenberg_marquardt():
    weights = weights_of(make_lm_pinn)
    ours, _ = run_both(levenberg_marquardt, weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["grad"], ours["JTr"], rtol=1e-10, atol=1e-12)
    # rejected steps raise the damping, accepted ones lower it, and the loss falls by an order of magnitude
    assert ours["history"][-1][1] < 0.1 * ours["history"][0][0]
    assert any(new > old for old, new, _ in ours["history"])
    np.testing.assert_array_equal(ours["state"]["0.weight"].reshape(-1), ours["theta"][:8])
