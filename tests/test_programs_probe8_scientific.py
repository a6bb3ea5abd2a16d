# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Scientific programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch in float64,
comparing values, hyperparameters and gradients to about 1e-10, and checked against NumPy by hand.

Gaussian-process regression with its marginal likelihood (``torch.linalg.cholesky``,
``torch.cholesky_solve``, ``torch.linalg.solve_triangular``, ``logdet``, ``MultivariateNormal(
scale_tril=L)``, hyperparameters learnt by Adam then L-BFGS); a Hamiltonian neural network (Greydanus et
al.: the symplectic gradient of a learnt energy by ``autograd.grad(create_graph=True)``, integrated under
``enable_grad`` by RK4); molecular dynamics with a learnt pair potential (``triu_indices`` pairs, forces
as minus the position gradient, force matching that differentiates through it, velocity Verlet); a
Kalman filter whose log-likelihood is differentiated with respect to its noise levels
(``torch.linalg.solve``, ``slogdet``); and the heat equation's diffusivity recovered through a
differentiable finite-difference solver (``F.conv1d`` with a Laplacian stencil and ``torch.roll``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Gaussian-process regression (exact inference, hyperparameters by the marginal likelihood)
# ----------------------------------------------------------------------------------------------


def gp_data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, (25, 1))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(25)
    Xs = np.linspace(-3.5, 3.5, 7)[:, None]
    return X, y, Xs


def gp(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    X, y, Xs = (torch.from_numpy(a) for a in gp_data())

    class ExactGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_lengthscale = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_outputscale = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_noise = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))

        def kernel(self, x1, x2):
            sqdist = torch.cdist(x1 / self.log_lengthscale.exp(), x2 / self.log_lengthscale.exp()).pow(2)
            return self.log_outputscale.exp() * torch.exp(-0.5 * sqdist)

        def nll(self, X, y):
            n = X.shape[0]
            K = self.kernel(X, X) + self.log_noise.exp() * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            return 0.5 * (y.unsqueeze(-1) * alpha).sum() + L.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)

        def predict(self, X, y, Xs):
            n = X.shape[0]
            K = self.kernel(X, X) + self.log_noise.exp() * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            Ks = self.kernel(X, Xs)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            mean = (Ks.T @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, Ks, upper=False)
            var = self.kernel(Xs, Xs).diagonal() - (v ** 2).sum(0)
            return mean, var

    model = ExactGP()
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    history = []
    for i in range(10):
        optimizer.zero_grad()
        loss = model.nll(X, y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    lbfgs = optim.LBFGS(model.parameters(), lr=1, max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = model.nll(X, y)
        loss.backward()
        return loss

    lbfgs.step(closure)
    with torch.no_grad():
        mean, var = model.predict(X, y, Xs)
        K = model.kernel(X, X) + model.log_noise.exp() * torch.eye(25, dtype=torch.float64)
        mvn = torch.distributions.MultivariateNormal(torch.zeros(25, dtype=torch.float64),
                                                     scale_tril=torch.linalg.cholesky(K))
        by_distribution = -mvn.log_prob(y)
        by_logdet = 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.logdet(K) + 12.5 * math.log(2 * math.pi)
        K_inv = torch.cholesky_inverse(torch.linalg.cholesky(K))
    loss = model.nll(X, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return {"history": history, "hyper": [p.detach() for p in model.parameters()], "nll": loss, "grads": grads,
            "mean": mean, "var": var, "by_distribution": by_distribution, "by_logdet": by_logdet, "K_inv": K_inv}


def test_gaussian_process_regression():
    ours, _ = run_both(gp, rtol=1e-8, atol=1e-10)
    X, y, Xs = gp_data()
    ell, sf2, sn2 = np.exp(ours["hyper"])
    k = lambda a, b: sf2 * np.exp(-0.5 * (a - b.T) ** 2 / ell ** 2)
    K = k(X, X) + sn2 * np.eye(25)
    nll = 0.5 * y @ np.linalg.solve(K, y) + 0.5 * np.linalg.slogdet(K)[1] + 12.5 * np.log(2 * np.pi)
    assert ours["nll"] == pytest.approx(nll, rel=1e-10)
    assert ours["by_distribution"] == pytest.approx(nll, rel=1e-10)
    assert ours["by_logdet"] == pytest.approx(nll, rel=1e-10)
    np.testing.assert_allclose(ours["mean"], k(X, Xs).T @ np.linalg.solve(K, y), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["var"], sf2 - np.einsum("ij,ij->j", k(X, Xs), np.linalg.solve(K, k(X, Xs))),
                               rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours["K_inv"], np.linalg.inv(K), rtol=1e-7, atol=1e-8)
    assert max(abs(g) for g in ours["grads"]) < 1e-4  # L-BFGS found the optimum
    assert ours["history"][-1] < ours["history"][0]
    # the gradient of the marginal likelihood by hand: 0.5 tr((alpha alpha^T - K^-1) dK/dtheta)
    alpha = np.linalg.solve(K, y)
    W = np.outer(alpha, alpha) - np.linalg.inv(K)
    dK_dnoise = sn2 * np.eye(25)
    assert ours["grads"][2] == pytest.approx(-0.5 * np.trace(W @ dK_dnoise), abs=1e-9)


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
# A Kalman filter's log-likelihood, differentiated with respect to its noise levels
# ----------------------------------------------------------------------------------------------


def kalman_data():
    rng = np.random.default_rng(3)
    T = 25
    A = np.array([[1.0, 0.1], [0.0, 1.0]])
    x = np.zeros(2)
    ys = []
    for t in range(T):
        x = A @ x + np.array([0.0, 0.05]) * rng.standard_normal()
        ys.append(x[:1] + 0.3 * rng.standard_normal(1))
    return A, np.array(ys)


def kalman(m):
    torch, optim = m.torch, m.optim
    A_np, ys_np = kalman_data()
    A = torch.tensor(A_np)
    H = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ys = torch.tensor(ys_np)
    log_q = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    log_r = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)

    def log_likelihood(log_q, log_r):
        Q = torch.diag(torch.stack([torch.zeros((), dtype=torch.float64), log_q.exp()]))
        R = log_r.exp().reshape(1, 1)
        x = torch.zeros(2, dtype=torch.float64)
        P = torch.eye(2, dtype=torch.float64)
        ll = 0
        for y in ys:
            x = A @ x
            P = A @ P @ A.T + Q
            S = H @ P @ H.T + R
            innovation = y - H @ x
            ll = ll - 0.5 * (innovation @ torch.linalg.solve(S, innovation) + torch.slogdet(2 * math.pi * S)[1])
            K = P @ H.T @ torch.linalg.inv(S)
            x = x + K @ innovation
            P = (torch.eye(2, dtype=torch.float64) - K @ H) @ P
        return ll

    ll = log_likelihood(log_q, log_r)
    g_q, g_r = torch.autograd.grad(ll, (log_q, log_r), create_graph=True)
    h_qr = torch.autograd.grad(g_q, log_r)[0]
    optimizer = optim.Adam([log_q, log_r], lr=0.05)
    history = []
    for step in range(5):
        optimizer.zero_grad()
        loss = -log_likelihood(log_q, log_r)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"ll": ll, "grads": (g_q, g_r), "h_qr": h_qr, "history": history, "params": (log_q, log_r)}


def test_kalman_filter_likelihood_gradients():
    ours, _ = run_both(kalman, rtol=1e-9, atol=1e-11)
    A, ys = kalman_data()

    def ll(log_q, log_r):
        Q, R = np.diag([0.0, np.exp(log_q)]), np.exp(log_r)
        x, P, total = np.zeros(2), np.eye(2), 0.0
        for y in ys[:, 0]:
            x, P = A @ x, A @ P @ A.T + Q
            S = P[0, 0] + R
            v = y - x[0]
            total -= 0.5 * (v * v / S + np.log(2 * np.pi * S))
            K = P[:, 0] / S
            x, P = x + K * v, P - np.outer(K, P[0])
        return total

    assert ours["ll"] == pytest.approx(ll(-3.0, -1.0), rel=1e-12)
    h = 1e-6
    assert ours["grads"][0] == pytest.approx((ll(-3.0 + h, -1.0) - ll(-3.0 - h, -1.0)) / (2 * h), rel=1e-6)
    assert ours["grads"][1] == pytest.approx((ll(-3.0, -1.0 + h) - ll(-3.0, -1.0 - h)) / (2 * h), rel=1e-6)
    h = 1e-4
    mixed = (ll(-3 + h, -1 + h) - ll(-3 + h, -1 - h) - ll(-3 - h, -1 + h) + ll(-3 - h, -1 - h)) / (4 * h * h)
    assert ours["h_qr"] == pytest.approx(mixed, rel=1e-4)


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


# ----------------------------------------------------------------------------------------------
# Fourier neural operators (neuraloperator's fourier_1d.py / fourier_2d.py): complex weights in rfft modes
# ----------------------------------------------------------------------------------------------


def make_fno(m, two_d=False):
    torch, nn, F = m.torch, m.nn, m.F

    class SpectralConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1):
            super(SpectralConv1d, self).__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.modes1 = modes1
            self.scale = (1 / (in_channels * out_channels))
            self.weights1 = nn.Parameter(self.scale * torch.rand(in_channels, out_channels, self.modes1,
                                                                 dtype=torch.cfloat))

        def compl_mul1d(self, input, weights):
            return torch.einsum("bix,iox->box", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-1) // 2 + 1, device=x.device, dtype=torch.cfloat)
            out_ft[:, :, :self.modes1] = self.compl_mul1d(x_ft[:, :, :self.modes1], self.weights1)
            x = torch.fft.irfft(out_ft, n=x.size(-1))
            return x

    class SpectralConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1, modes2):
            super(SpectralConv2d, self).__init__()
            self.in_channels, self.out_channels, self.modes1, self.modes2 = in_channels, out_channels, modes1, modes2
            self.scale = (1 / (in_channels * out_channels))
            self.weights1 = nn.Parameter(
                self.scale * torch.rand(in_channels, out_channels, self.modes1, self.modes2, dtype=torch.cfloat))
            self.weights2 = nn.Parameter(
                self.scale * torch.rand(in_channels, out_channels, self.modes1, self.modes2, dtype=torch.cfloat))

        def compl_mul2d(self, input, weights):
            return torch.einsum("bixy,ioxy->boxy", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft2(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-2), x.size(-1) // 2 + 1, dtype=torch.cfloat,
                                 device=x.device)
            out_ft[:, :, :self.modes1, :self.modes2] = \
                self.compl_mul2d(x_ft[:, :, :self.modes1, :self.modes2], self.weights1)
            out_ft[:, :, -self.modes1:, :self.modes2] = \
                self.compl_mul2d(x_ft[:, :, -self.modes1:, :self.modes2], self.weights2)
            x = torch.fft.irfft2(out_ft, s=(x.size(-2), x.size(-1)))
            return x

    class FNO1d(nn.Module):
        def __init__(self, modes, width):
            super(FNO1d, self).__init__()
            self.modes1 = modes
            self.width = width
            self.padding = 2
            self.fc0 = nn.Linear(2, self.width)
            self.conv0 = SpectralConv1d(self.width, self.width, self.modes1)
            self.conv1 = SpectralConv1d(self.width, self.width, self.modes1)
            self.w0 = nn.Conv1d(self.width, self.width, 1)
            self.w1 = nn.Conv1d(self.width, self.width, 1)
            self.fc1 = nn.Linear(self.width, 16)
            self.fc2 = nn.Linear(16, 1)

        def forward(self, x):
            grid = self.get_grid(x.shape, x.device)
            x = torch.cat((x, grid), dim=-1)
            x = self.fc0(x)
            x = x.permute(0, 2, 1)
            x = F.pad(x, [0, self.padding])  # pad the domain if input is non-periodic
            x1 = self.conv0(x)
            x2 = self.w0(x)
            x = x1 + x2
            x = F.gelu(x)
            x1 = self.conv1(x)
            x2 = self.w1(x)
            x = x1 + x2
            x = x[..., :-self.padding]
            x = x.permute(0, 2, 1)
            x = self.fc1(x)
            x = F.gelu(x)
            x = self.fc2(x)
            return x

        def get_grid(self, shape, device):
            batchsize, size_x = shape[0], shape[1]
            gridx = torch.tensor(np.linspace(0, 1, size_x), dtype=torch.float)
            gridx = gridx.reshape(1, size_x, 1).repeat([batchsize, 1, 1])
            return gridx.to(device)

    class FNO2d(nn.Module):
        def __init__(self, modes1, modes2, width):
            super(FNO2d, self).__init__()
            self.width = width
            self.fc0 = nn.Linear(3, self.width)
            self.conv0 = SpectralConv2d(self.width, self.width, modes1, modes2)
            self.w0 = nn.Conv2d(self.width, self.width, 1)
            self.fc1 = nn.Linear(self.width, 8)
            self.fc2 = nn.Linear(8, 1)

        def forward(self, x):
            grid = self.get_grid(x.shape, x.device)
            x = torch.cat((x, grid), dim=-1)
            x = self.fc0(x)
            x = x.permute(0, 3, 1, 2)
            x = F.gelu(self.conv0(x) + self.w0(x))
            x = x.permute(0, 2, 3, 1)
            x = self.fc2(F.gelu(self.fc1(x)))
            return x

        def get_grid(self, shape, device):
            batchsize, size_x, size_y = shape[0], shape[1], shape[2]
            gridx = torch.tensor(np.linspace(0, 1, size_x), dtype=torch.float)
            gridx = gridx.reshape(1, size_x, 1, 1).repeat([batchsize, 1, size_y, 1])
            gridy = torch.tensor(np.linspace(0, 1, size_y), dtype=torch.float)
            gridy = gridy.reshape(1, 1, size_y, 1).repeat([batchsize, size_x, 1, 1])
            return torch.cat((gridx, gridy), dim=-1).to(device)

    return FNO2d(3, 3, 4) if two_d else FNO1d(4, 8)


class LpLoss(object):
    def __init__(self, d=2, p=2, size_average=True, reduction=True):
        super(LpLoss, self).__init__()
        self.d, self.p, self.reduction, self.size_average = d, p, reduction, size_average

    def rel(self, x, y):
        num_examples = x.size()[0]
        diff_norms = (x.reshape(num_examples, -1) - y.reshape(num_examples, -1)).norm(self.p, 1)
        y_norms = y.reshape(num_examples, -1).norm(self.p, 1)
        if self.reduction:
            if self.size_average:
                return (diff_norms / y_norms).mean()
            else:
                return (diff_norms / y_norms).sum()
        return diff_norms / y_norms

    def __call__(self, x, y):
        return self.rel(x, y)


def fno(m, weights, two_d=False, epochs=3):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(17)
    shape = (4, 8, 8, 1) if two_d else (4, 16, 1)
    x = torch.tensor(rng.standard_normal(shape).astype(np.float32))
    y = torch.tensor(rng.standard_normal(shape).astype(np.float32))
    model = load(m, make_fno(m, two_d), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.001, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    myloss = LpLoss(size_average=False)
    history = []
    for ep in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(x)
        l2 = myloss(out.view(4, -1), y.view(4, -1))
        l2.backward()
        optimizer.step()
        scheduler.step()
        history.append(l2.item())
    spectral = [p for n, p in model.named_parameters() if "weights" in n]
    return {"history": history, "out": out, "spectral": [p.detach() for p in spectral],
            "spectral_grads": [p.grad for p in spectral], "dtypes": sorted({str(p.dtype)[-9:] for p in spectral}),
            "grads": [p.grad for n, p in model.named_parameters() if "weights" not in n]}


@pytest.mark.parametrize("two_d", [False, True])
def test_fourier_neural_operator(two_d):
    weights = weights_of(lambda m: make_fno(m, two_d))
    ours, _ = run_both(fno, weights, two_d=two_d, rtol=5e-5, atol=5e-6)
    assert all(g.dtype == np.complex64 for g in ours["spectral_grads"])
    assert ours["history"][-1] < ours["history"][0]


def test_spectral_convolution_gradient_by_hand():
    """d/dW of sum(c * irfft(pad(W * rfft(x)))) for one mode, float64: the conjugate-convention gradient
    PyTorch gives (dL/dRe W + i dL/dIm W), checked by finite differences on the real and imaginary parts."""
    torch = OURS.torch
    rng = np.random.default_rng(18)
    x = torch.tensor(rng.standard_normal((1, 1, 8)))
    c = torch.tensor(rng.standard_normal((1, 1, 8)))
    w0 = rng.standard_normal(2) + 1j * rng.standard_normal(2)

    def loss(w):
        x_ft = torch.fft.rfft(x)
        out_ft = torch.zeros(1, 1, 5, dtype=torch.complex128)
        out_ft[:, :, :2] = x_ft[:, :, :2] * w
        return (torch.fft.irfft(out_ft, n=8) * c).sum()

    w = torch.tensor(w0, requires_grad=True)
    loss(w).backward()
    h = 1e-6
    for k in range(2):
        for part, unit in ((0, 1.0), (1, 1j)):
            plus, minus = w0.copy(), w0.copy()
            plus[k] += h * unit
            minus[k] -= h * unit
            fd = (loss(torch.tensor(plus)).item() - loss(torch.tensor(minus)).item()) / (2 * h)
            got = w.grad[k].item().real if part == 0 else w.grad[k].item().imag
            assert got == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# SIREN (Sitzmann et al.): sine layers with their initialisation, fit through the Laplacian
# (diff_operators.py's gradient / divergence / laplace: third derivatives reach the weights)
# ----------------------------------------------------------------------------------------------


def make_siren(m):
    torch, nn = m.torch, m.nn

    class SineLayer(nn.Module):
        def __init__(self, in_features, out_features, bias=True, is_first=False, omega_0=30):
            super().__init__()
            self.omega_0 = omega_0
            self.is_first = is_first
            self.in_features = in_features
            self.linear = nn.Linear(in_features, out_features, bias=bias)
            self.init_weights()

        def init_weights(self):
            with torch.no_grad():
                if self.is_first:
                    self.linear.weight.uniform_(-1 / self.in_features, 1 / self.in_features)
                else:
                    self.linear.weight.uniform_(-np.sqrt(6 / self.in_features) / self.omega_0,
                                                np.sqrt(6 / self.in_features) / self.omega_0)

        def forward(self, input):
            return torch.sin(self.omega_0 * self.linear(input))

    class Siren(nn.Module):
        def __init__(self, in_features, hidden_features, hidden_layers, out_features, outermost_linear=False,
                     first_omega_0=30, hidden_omega_0=30.):
            super().__init__()
            self.net = []
            self.net.append(SineLayer(in_features, hidden_features, is_first=True, omega_0=first_omega_0))
            for i in range(hidden_layers):
                self.net.append(SineLayer(hidden_features, hidden_features, is_first=False, omega_0=hidden_omega_0))
            if outermost_linear:
                final_linear = nn.Linear(hidden_features, out_features)
                with torch.no_grad():
                    final_linear.weight.uniform_(-np.sqrt(6 / hidden_features) / hidden_omega_0,
                                                 np.sqrt(6 / hidden_features) / hidden_omega_0)
                self.net.append(final_linear)
            else:
                self.net.append(SineLayer(hidden_features, out_features, is_first=False, omega_0=hidden_omega_0))
            self.net = nn.Sequential(*self.net)

        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)  # allows to take derivative w.r.t. input
            output = self.net(coords)
            return output, coords

    return Siren(in_features=2, out_features=1, hidden_features=16, hidden_layers=2, outermost_linear=True)


def siren(m, weights, steps=4):
    torch, optim = m.torch, m.optim

    def gradient(y, x, grad_outputs=None):
        if grad_outputs is None:
            grad_outputs = torch.ones_like(y)
        grad = torch.autograd.grad(y, [x], grad_outputs=grad_outputs, create_graph=True)[0]
        return grad

    def divergence(y, x):
        div = 0.
        for i in range(y.shape[-1]):
            div += torch.autograd.grad(y[..., i], x, torch.ones_like(y[..., i]), create_graph=True)[0][..., i:i + 1]
        return div

    def laplace(y, x):
        grad = gradient(y, x)
        return divergence(grad, x)

    def get_mgrid(sidelen, dim=2):
        tensors = tuple(dim * [torch.linspace(-1, 1, steps=sidelen)])
        mgrid = torch.stack(torch.meshgrid(*tensors, indexing='ij'), dim=-1)
        mgrid = mgrid.reshape(-1, dim)
        return mgrid

    model = load(m, make_siren(m), weights).double()
    coords = get_mgrid(6).double().unsqueeze(0)
    target_lap = torch.sin(3 * coords[..., :1]) * torch.cos(2 * coords[..., 1:])
    optim_ = optim.Adam(lr=1e-4, params=model.parameters())
    history = []
    for step in range(steps):
        model_output, coords_ = model(coords)
        lap = laplace(model_output, coords_)
        loss = ((lap - target_lap) ** 2).mean()
        optim_.zero_grad()
        loss.backward()
        optim_.step()
        history.append(loss.item())
    model_output, coords_ = model(coords)
    grad = gradient(model_output, coords_)
    return {"history": history, "grad": grad, "lap": laplace(model_output, coords_),
            "grads": [p.grad for p in model.parameters()]}


def test_siren_fit_through_the_laplacian():
    weights = weights_of(make_siren)
    ours, _ = run_both(siren, weights, rtol=1e-8, atol=1e-10)
    assert ours["grad"].shape == (1, 36, 2) and ours["lap"].shape == (1, 36, 1)
    assert ours["history"][-1] < ours["history"][0]


def test_siren_laplacian_by_hand():
    """A one-unit SIREN u = w2 sin(w0 (a x + b y + c)) + d: its Laplacian is -w2 w0^2 (a^2 + b^2) sin(.)."""
    torch = OURS.torch
    model = make_siren(OURS)
    model.net = OURS.nn.Sequential(model.net[0])
    layer = model.net[0]
    with torch.no_grad():
        layer.linear = OURS.nn.Linear(2, 1)
        layer.linear.weight.copy_(torch.tensor([[0.3, -0.2]]))
        layer.linear.bias.fill_(0.1)
    coords = torch.tensor([[0.5, -0.25], [0.0, 1.0]])
    out, x = model(coords)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    arg = 30 * (0.3 * coords[:, 0].numpy() - 0.2 * coords[:, 1].numpy() + 0.1)
    np.testing.assert_allclose(lap.numpy(), -900 * 0.13 * np.sin(arg), rtol=1e-4)
