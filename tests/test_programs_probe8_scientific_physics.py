# ruff: noqa: B007, E731, UP008  (the programs are kept as their authors wrote them)
"""Scientific programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch in float64, comparing
values, hyperparameters and gradients to about 1e-10, and checked against NumPy by hand. A Hamiltonian neural network
(Greydanus et al.: the symplectic gradient of a learnt energy by ``autograd.grad(create_graph=True)``, integrated
under ``enable_grad`` by RK4); molecular dynamics with a learnt pair potential (``triu_indices`` pairs, forces as
minus the position gradient, force matching that differentiates through it, velocity Verlet); the heat equation's
diffusivity recovered through a differentiable finite-difference solver (``F.conv1d`` with a Laplacian stencil and
``torch.roll``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A Hamiltonian neural network (Greydanus, Dzamba & Yosinski 2019) on a mass-spring system
# ----------------------------------------------------------------------------------------------


def make_hnn(m):
    torch, nn = m.torch, m.nn

    class MLP(nn.Module):
        def __init__(self, input_dim, hidden_dim, output_dim, nonlinearity='tanh'):
            super(MLP, self).__init__()
            self.linear1 = nn.Linear(input_dim, hidden_dim)
            self.linear2 = nn.Linear(hidden_dim, hidden_dim)
            self.linear3 = nn.Linear(hidden_dim, output_dim, bias=None)
            for l in [self.linear1, self.linear2, self.linear3]:
                nn.init.orthogonal_(l.weight)
            self.nonlinearity = torch.tanh

        def forward(self, x, separate_fields=False):
            h = self.nonlinearity(self.linear1(x))
            h = self.nonlinearity(self.linear2(h))
            return self.linear3(h)

    class HNN(nn.Module):
        def __init__(self, input_dim, differentiable_model, field_type='solenoidal'):
            super(HNN, self).__init__()
            self.differentiable_model = differentiable_model
            self.M = self.permutation_tensor(input_dim)
            self.field_type = field_type

        def forward(self, x):
            y = self.differentiable_model(x)
            assert y.dim() == 2 and y.shape[1] == 2, "Output tensor should have shape [batch_size, 2]"
            return y.split(1, 1)

        def time_derivative(self, x, t=None, separate_fields=False):
            F1, F2 = self.forward(x)
            conservative_field = torch.zeros_like(x)
            solenoidal_field = torch.zeros_like(x)
            if self.field_type != 'solenoidal':
                dF1 = torch.autograd.grad(F1.sum(), x, create_graph=True)[0]
                conservative_field = dF1 @ torch.eye(*self.M.shape)
            if self.field_type != 'conservative':
                dF2 = torch.autograd.grad(F2.sum(), x, create_graph=True)[0]
                solenoidal_field = dF2 @ self.M.t()
            return conservative_field + solenoidal_field

        def permutation_tensor(self, n):
            M = torch.eye(n)
            M = torch.cat([M[n // 2:], -M[:n // 2]])
            return M

    return HNN(2, differentiable_model=MLP(2, 16, 2))


def hnn(m, weights, steps=6):
    torch, optim = m.torch, m.optim
    model = load(m, make_hnn(m), weights)
    rng = np.random.default_rng(1)
    q = rng.uniform(-1, 1, (32, 1))
    p = rng.uniform(-1, 1, (32, 1))
    x = torch.tensor(np.concatenate([q, p], 1).astype(np.float32), requires_grad=True)
    dxdt = torch.tensor(np.concatenate([p, -q], 1).astype(np.float32))  # H = (q^2 + p^2) / 2
    optim_ = optim.Adam(model.parameters(), 1e-2, weight_decay=1e-4)
    L2_loss = lambda u, v: (u - v).pow(2).mean()
    history = []
    for step in range(steps):
        dxdt_hat = model.time_derivative(x)
        loss = L2_loss(dxdt, dxdt_hat)
        loss.backward()
        grad = torch.cat([p_.grad.flatten() for p_ in model.parameters()]).clone()
        optim_.step()
        optim_.zero_grad()
        history.append((loss.item(), grad @ grad))

    def integrate(y0, t_span=1.0, n=20):
        h = t_span / n
        y = y0
        ys = [y]
        for i in range(n):
            with torch.enable_grad():
                f = lambda y_: model.time_derivative(y_.detach().requires_grad_()).detach()
                k1 = f(y)
                k2 = f(y + 0.5 * h * k1)
                k3 = f(y + 0.5 * h * k2)
                k4 = f(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            ys.append(y)
        return torch.stack(ys)

    with torch.no_grad():
        path = integrate(torch.tensor([[1.0, 0.0]]))
        energy = model(path.squeeze(1))[1]
    return {"history": history, "path": path, "energy": energy, "M": model.M}


def test_hamiltonian_neural_network():
    weights = weights_of(make_hnn)
    ours, _ = run_both(hnn, weights, rtol=2e-5, atol=2e-6)
    assert ours["M"].tolist() == [[0.0, 1.0], [-1.0, 0.0]]
    assert ours["path"].shape == (21, 1, 2) and ours["energy"].shape == (21, 1)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# Molecular dynamics with a learnt pair potential: forces by autograd, force matching, velocity Verlet
# ----------------------------------------------------------------------------------------------


def make_pair_potential(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 16), nn.Softplus(), nn.Linear(16, 16), nn.Softplus(), nn.Linear(16, 1))


def lennard_jones(r, eps=1.0, sigma=1.0):
    return 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)


def molecular_dynamics(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    net = load(m, make_pair_potential(m), weights).double()
    rng = np.random.default_rng(2)
    n_atoms = 6
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])[:n_atoms] * 1.2
    frames = [grid + 0.05 * rng.standard_normal((n_atoms, 3)) for _ in range(4)]
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)

    def energy(pos, potential):
        rij = pos[i] - pos[j]
        dist = rij.norm(dim=-1)
        return potential(dist).sum()

    def forces(pos, potential, create_graph):
        if not pos.requires_grad:
            pos = pos.requires_grad_()
        E = energy(pos, potential)
        return E, -torch.autograd.grad(E, pos, create_graph=create_graph)[0]

    reference = lambda d: lennard_jones(d)
    learnt = lambda d: net(d.unsqueeze(-1)).squeeze(-1)
    data = []
    for f in frames:
        E, F_ = forces(torch.tensor(f), reference, create_graph=False)
        data.append((torch.tensor(f), E.detach(), F_.detach()))
    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = 0
        for pos, E_ref, F_ref in data:
            E, F_ = forces(pos.clone().requires_grad_(), learnt, create_graph=True)
            loss = loss + 0.01 * (E - E_ref) ** 2 + ((F_ - F_ref) ** 2).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())

    # velocity Verlet under the reference potential
    pos = torch.tensor(frames[0])
    vel = torch.zeros_like(pos)
    dt = 1e-3
    _, acc = forces(pos, reference, create_graph=False)
    energies = []
    for t in range(10):
        pos = (pos + vel * dt + 0.5 * acc * dt ** 2).detach()
        E, new_acc = forces(pos, reference, create_graph=False)
        vel = vel + 0.5 * (acc + new_acc) * dt
        acc = new_acc
        energies.append(E.item() + 0.5 * (vel ** 2).sum().item())
    return {"history": history, "energies": energies, "pairs": torch.stack([i, j]), "data": data,
            "grads": [p.grad for p in net.parameters()]}


def test_molecular_dynamics_force_matching():
    weights = weights_of(make_pair_potential)
    ours, _ = run_both(molecular_dynamics, weights, rtol=1e-9, atol=1e-11)
    assert ours["pairs"].shape == (2, 15) and ours["pairs"][:, :3].tolist() == [[0, 0, 0], [1, 2, 3]]
    # forces by hand for the Lennard-Jones reference: F_a = -sum_b V'(r_ab) (x_a - x_b) / r_ab
    pos, E, F = ours["data"][0]
    expected = np.zeros_like(pos)
    energy = 0.0
    for a in range(6):
        for b in range(a + 1, 6):
            d = pos[a] - pos[b]
            r = np.linalg.norm(d)
            energy += 4 * (r ** -12 - r ** -6)
            dV = 4 * (-12 * r ** -13 + 6 * r ** -7)
            expected[a] -= dV * d / r
            expected[b] += dV * d / r
    assert E == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(F, expected, rtol=1e-10, atol=1e-10)
    energies = np.array(ours["energies"])
    assert np.ptp(energies) < 1e-3 * np.abs(energies).max()  # Verlet conserves the energy
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# The heat equation's diffusivity, recovered through a differentiable finite-difference solver
# ----------------------------------------------------------------------------------------------


def heat(m):
    torch, F, optim = m.torch, m.F, m.optim
    n, dx, dt, steps = 32, 1.0 / 32, 2e-4, 40
    xs = torch.arange(n, dtype=torch.float64) * dx
    u0 = torch.exp(-((xs - 0.5) ** 2) / 0.01)
    stencil = torch.tensor([[[1.0, -2.0, 1.0]]], dtype=torch.float64) / dx ** 2

    def solve(kappa, u):
        for _ in range(steps):
            padded = torch.cat([u[-1:], u, u[:1]]).view(1, 1, -1)  # periodic
            lap = F.conv1d(padded, stencil).view(-1)
            u = u + dt * kappa * lap
        return u

    def solve_roll(kappa, u):
        for _ in range(steps):
            u = u + dt * kappa * (torch.roll(u, 1) - 2 * u + torch.roll(u, -1)) / dx ** 2
        return u

    with torch.no_grad():
        target = solve(torch.tensor(0.7, dtype=torch.float64), u0)
    log_kappa = torch.tensor(math.log(0.2), dtype=torch.float64, requires_grad=True)
    optimizer = optim.Adam([log_kappa], lr=0.2)
    history = []
    for it in range(15):
        optimizer.zero_grad()
        loss = ((solve(log_kappa.exp(), u0) - target) ** 2).sum()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), log_kappa.exp().item()))
    k = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    g_conv = torch.autograd.grad(solve(k, u0).pow(2).sum(), k)[0]
    g_roll = torch.autograd.grad(solve_roll(k, u0).pow(2).sum(), k)[0]
    return {"history": history, "target": target, "g_conv": g_conv, "g_roll": g_roll}


def test_heat_equation_inverse_problem():
    ours, _ = run_both(heat, rtol=1e-9, atol=1e-11)
    assert ours["g_conv"] == pytest.approx(ours["g_roll"], rel=1e-10)
    n, dx, dt = 32, 1.0 / 32, 2e-4
    u = np.exp(-((np.arange(n) * dx - 0.5) ** 2) / 0.01)
    for _ in range(40):
        u = u + dt * 0.7 * (np.roll(u, 1) - 2 * u + np.roll(u, -1)) / dx ** 2
    np.testing.assert_allclose(ours["target"], u, rtol=1e-12, atol=1e-14)
    losses, kappas = zip(*ours["history"])
    assert min(losses) < 1e-2 * losses[0]  # (Adam overshoots the diffusivity 0.7 and comes back)
    assert abs(kappas[5] - 0.7) < 0.1 and abs(kappas[-1] - 0.7) < 0.3
