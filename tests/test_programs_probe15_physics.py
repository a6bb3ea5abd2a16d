# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and
checked by hand (closed forms, NumPy, finite differences) where PyTorch is missing.

Mechanics: a Lagrangian neural network (accelerations from ``autograd.functional.hessian``/``jacobian
(create_graph=True)`` and ``linalg.pinv``, again by ``torch.func.vmap(hessian)`` and ``linalg.solve``); the
Jacobian of a Stormer-Verlet step by ``jacrev``/``jacfwd``/``functional.jacobian`` (symplectic, ``slogdet`` 0);
Hamiltonian Monte Carlo by leapfrog with ``autograd.grad`` and a Laplace approximation
(``MultivariateNormal``); a differentiable mass-spring body with penalty ground contact (SGD nesterov).
Molecules: a SchNet-like potential (Gaussian radial basis, cosine cutoff, ``index_add`` convolutions) and an
E(n)-equivariant network trained by force matching through ``-grad(E, pos, create_graph=True)``; Lennard-Jones in
a periodic box (minimum image by ``round``, L-BFGS relaxation, virial stress by a strain, ``eigvalsh`` of the
Hessian); a 1-D Kohn-Sham SCF unrolled through ``linalg.eigh`` (forces, a mixed second derivative).
PDEs: PINNs for Allen-Cahn (sine), KdV (third derivatives) and the wave equation (SiLU), Adam then L-BFGS; PINN
loss balancing by gradient statistics, self-adaptive weights (``maximize=True``) and causal weights
(``cumsum``); Levenberg-Marquardt training (``parameters_to_vector``, ``jacrev`` of vmapped input Hessians); a
physics-informed DeepONet (``einsum``); a pseudo-spectral Burgers solver (``rfft``/``irfft``, ``fftfreq``, ``1j*k``);
an FNO layer with ``view_as_complex`` weights and ``rfftn(norm='ortho')``; implicit diffusion with
``lu_factor``/``lu_solve`` fitted by L-BFGS; backward Euler whose Newton solve is an ``autograd.Function``
(``setup_context``, ``generate_vmap_rule``, implicit-function backward). Others: variational Monte Carlo
(Laplacian of log psi by ``vmap(jacrev(jacrev))``); heat capacities as the second derivative of ln Z with
``logcumsumexp`` over levels, trained through a third derivative; a deep equilibrium layer with an adjoint
fixed-point hook; deep Koopman with DMD (``svd``, complex ``eig``); a phi^4 lattice normalizing flow (circular
convolutions, ``roll``); a neural SDE (Euler-Maruyama); two-qubit tomography with a complex leaf under L-BFGS."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Lagrangian neural network (Cranmer, Greydanus, Hoyer et al. 2020) on a pair of coupled oscillators
# ----------------------------------------------------------------------------------------------


def make_lnn(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Softplus(), nn.Linear(16, 16), nn.Softplus(),
                         nn.Linear(16, 1)).double()


def oscillator_data(n=12):
    rng = np.random.default_rng(3)
    q = rng.uniform(-1, 1, (n, 2))
    qdot = rng.uniform(-1, 1, (n, 2))
    # L = 1/2 |q'|^2 - 1/2 |q|^2 - 1/2 k (q1 - q2)^2 with k = 0.5
    qddot = np.stack([-q[:, 0] - 0.5 * (q[:, 0] - q[:, 1]), -q[:, 1] + 0.5 * (q[:, 0] - q[:, 1])], 1)
    return np.concatenate([q, qdot], 1), qddot


def lnn(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    net = load(m, make_lnn(m), weights)
    x_np, qddot_np = oscillator_data()
    x, qddot_true = torch.tensor(x_np), torch.tensor(qddot_np)

    def lagrangian(state):
        return net(state).squeeze(-1)

    def equation_of_motion(lagrangian, state):
        n = state.shape[0] // 2
        q_t = state[n:]
        H = torch.autograd.functional.hessian(lagrangian, state, create_graph=True)
        J = torch.autograd.functional.jacobian(lagrangian, state, create_graph=True)
        A = J[:n]
        B = H[n:, n:]
        C = H[n:, :n]
        q_tt = torch.linalg.pinv(B) @ (A - C @ q_t)
        return torch.cat([q_t, q_tt])

    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        pred = torch.stack([equation_of_motion(lagrangian, xi)[2:] for xi in x])
        loss = ((pred - qddot_true) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]

    # the same accelerations batched with torch.func
    from_func = torch.func
    params = {k: v.detach() for k, v in net.named_parameters()}

    def L(params, state):
        return from_func.functional_call(net, params, (state,)).squeeze(-1)

    def accel(params, state):
        H = from_func.hessian(L, argnums=1)(params, state)
        g = from_func.jacrev(L, argnums=1)(params, state)
        return torch.linalg.solve(H[2:, 2:], g[:2] - H[2:, :2] @ state[2:])

    batched = from_func.vmap(accel, in_dims=(None, 0))(params, x)
    looped = torch.stack([equation_of_motion(lagrangian, xi)[2:] for xi in x]).detach()

    # the analytic Lagrangian: the same machinery must recover its equations of motion exactly
    def true_lagrangian(state):
        q, q_t = state[:2], state[2:]
        return 0.5 * (q_t ** 2).sum() - 0.5 * (q ** 2).sum() - 0.25 * (q[0] - q[1]) ** 2

    exact = torch.stack([equation_of_motion(true_lagrangian, xi)[2:] for xi in x])
    return {"history": history, "grads": grads, "batched": batched, "looped": looped, "exact": exact}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_lagrangian_neural_network():
    weights = weights_of(make_lnn)
    ours, _ = run_both(lnn, weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["exact"], oscillator_data()[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["batched"], ours["looped"], rtol=1e-7, atol=1e-9)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# SchNet-like potential trained by force matching (schnetpack's building blocks, written out)
# ----------------------------------------------------------------------------------------------


def make_schnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    def shifted_softplus(x):
        return F.softplus(x) - math.log(2.0)

    class GaussianRBF(nn.Module):
        def __init__(self, n_rbf, cutoff, start=0.0):
            super().__init__()
            offset = torch.linspace(start, cutoff, n_rbf, dtype=torch.float64)
            widths = torch.abs(offset[1] - offset[0]) * torch.ones_like(offset)
            self.register_buffer("widths", widths)
            self.register_buffer("offsets", offset)

        def forward(self, inputs):
            coeff = -0.5 / torch.pow(self.widths, 2)
            diff = inputs[..., None] - self.offsets
            return torch.exp(coeff * torch.pow(diff, 2))

    class CosineCutoff(nn.Module):
        def __init__(self, cutoff):
            super().__init__()
            self.register_buffer("cutoff", torch.tensor(cutoff, dtype=torch.float64))

        def forward(self, d):
            f = 0.5 * (torch.cos(d * math.pi / self.cutoff) + 1.0)
            return f * (d < self.cutoff).float()

    class Interaction(nn.Module):
        def __init__(self, n_atom_basis, n_rbf, n_filters):
            super().__init__()
            self.in2f = nn.Linear(n_atom_basis, n_filters, bias=False)
            self.f2out = nn.Sequential(nn.Linear(n_filters, n_atom_basis), nn.SiLU(),
                                       nn.Linear(n_atom_basis, n_atom_basis))
            self.filter_network = nn.Sequential(nn.Linear(n_rbf, n_filters), nn.Softplus(),
                                                nn.Linear(n_filters, n_filters))

        def forward(self, x, f_ij, idx_i, idx_j, rcut_ij):
            x = self.in2f(x)
            Wij = self.filter_network(f_ij) * rcut_ij[:, None]
            x_j = x[idx_j]
            x_ij = x_j * Wij
            x = torch.zeros_like(x).index_add(0, idx_i, x_ij)
            return self.f2out(x)

    class SchNet(nn.Module):
        def __init__(self, n_atom_basis=8, n_rbf=6, cutoff=3.0, n_interactions=2, max_z=4):
            super().__init__()
            self.embedding = nn.Embedding(max_z, n_atom_basis, padding_idx=0)
            self.radial_basis = GaussianRBF(n_rbf, cutoff)
            self.cutoff_fn = CosineCutoff(cutoff)
            self.interactions = nn.ModuleList(
                [Interaction(n_atom_basis, n_rbf, n_atom_basis) for _ in range(n_interactions)])
            self.out = nn.Sequential(nn.Linear(n_atom_basis, 8), nn.Softplus(), nn.Linear(8, 1))

        def forward(self, Z, R, idx_i, idx_j):
            r_ij = R[idx_j] - R[idx_i]
            d_ij = torch.norm(r_ij, dim=1)
            f_ij = self.radial_basis(d_ij)
            rcut_ij = self.cutoff_fn(d_ij)
            x = self.embedding(Z)
            for interaction in self.interactions:
                x = x + shifted_softplus(interaction(x, f_ij, idx_i, idx_j, rcut_ij))
            return self.out(x).sum()

    return SchNet().double()


def molecules(n_mol=3, n_atoms=5):
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n_mol):
        R = rng.uniform(0, 2.5, (n_atoms, 3))
        Z = rng.integers(1, 4, n_atoms)
        # forces of a harmonic pair potential as the "reference calculation"
        diff = R[:, None] - R[None]
        d = np.linalg.norm(diff + np.eye(n_atoms)[..., None], axis=-1)
        coef = -2 * (d - 1.2) / d * (1 - np.eye(n_atoms))
        forces = (coef[..., None] * diff).sum(1)
        energy = 0.5 * (((d - 1.2) ** 2) * (1 - np.eye(n_atoms))).sum()
        out.append((Z, R, energy, forces))
    return out


def schnet(m, weights, epochs=3, rho=0.1):
    torch, optim = m.torch, m.optim
    model = load(m, make_schnet(m), weights)
    data = molecules()
    n = 5
    idx_i, idx_j = torch.nonzero(~torch.eye(n, dtype=torch.bool), as_tuple=True)
    optimizer = optim.AdamW(model.parameters(), lr=5e-3)
    history = []
    for epoch in range(epochs):
        for Z, R, E, F_ref in data:
            R = torch.tensor(R, requires_grad=True)
            energy = model(torch.tensor(Z), R, idx_i, idx_j)
            forces = -torch.autograd.grad(energy, R, grad_outputs=torch.ones_like(energy), create_graph=True,
                                          retain_graph=True)[0]
            loss = rho * (energy - E) ** 2 + (1 - rho) * ((forces - torch.tensor(F_ref)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append((loss.item(), energy.item()))
    Z, R, _, _ = data[0]
    R = torch.tensor(R, requires_grad=True)
    energy = model(torch.tensor(Z), R, idx_i, idx_j)
    forces = -torch.autograd.grad(energy, R, create_graph=True)[0]
    # the Hessian-vector product of the learnt surface (a force derivative along a displacement)
    v = torch.ones_like(R) / 3.0
    hvp = torch.autograd.grad(forces, R, grad_outputs=v)[0]
    return {"history": history, "forces": forces, "hvp": hvp, "grads": [p.grad for p in model.parameters()],
            "net_force": forces.sum(0)}


def test_schnet_force_matching():
    weights = weights_of(make_schnet)
    ours, _ = run_both(schnet, weights, rtol=1e-8, atol=1e-10)
    # an energy of distances only: no net force, and the translation direction is a zero mode of the Hessian
    np.testing.assert_allclose(ours["net_force"], 0.0, atol=1e-12)
    np.testing.assert_allclose(ours["hvp"].sum(0), 0.0, atol=1e-10)
    losses = [loss for loss, _ in ours["history"]]
    assert losses[-1] < losses[0]


def test_schnet_forces_by_finite_differences():
    torch = OURS.torch
    model = make_schnet(OURS)
    Z, R0, _, _ = molecules()[1]
    idx_i, idx_j = torch.nonzero(~torch.eye(5, dtype=torch.bool), as_tuple=True)
    R = torch.tensor(R0, requires_grad=True)
    forces = -torch.autograd.grad(model(torch.tensor(Z), R, idx_i, idx_j), R)[0]
    h = 1e-6
    for a, c in [(0, 0), (2, 1), (4, 2)]:
        plus, minus = R0.copy(), R0.copy()
        plus[a, c] += h
        minus[a, c] -= h
        with torch.no_grad():
            fd = (model(torch.tensor(Z), torch.tensor(plus), idx_i, idx_j)
                  - model(torch.tensor(Z), torch.tensor(minus), idx_i, idx_j)).item() / (2 * h)
        assert forces[a, c].item() == pytest.approx(-fd, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Lennard-Jones clusters in a periodic box: relaxation, virial stress, normal modes
# ----------------------------------------------------------------------------------------------


def lj_positions(n=8, box=3.0):
    rng = np.random.default_rng(7)
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * 1.5 + 0.3
    return grid + 0.05 * rng.standard_normal((n, 3)), box


def lennard_jones(m):
    torch, optim = m.torch, m.optim
    pos_np, box = lj_positions()
    n = pos_np.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)

    def energy(pos, strain=None, epsilon=1.0, sigma=1.0):
        if strain is not None:
            pos = pos @ (torch.eye(3, dtype=pos.dtype) + strain)
            L = box * (torch.eye(3, dtype=pos.dtype) + strain).diagonal()
        else:
            L = box
        dr = pos[i] - pos[j]
        dr = dr - L * torch.round(dr / L)  # minimum image
        r2 = (dr ** 2).sum(-1)
        sr6 = (sigma ** 2 / r2) ** 3
        return (4 * epsilon * (sr6 ** 2 - sr6)).sum()

    pos = torch.tensor(pos_np, requires_grad=True)
    E0 = energy(pos)
    F0 = -torch.autograd.grad(E0, pos)[0]

    # the virial stress: derivative of E with respect to a symmetric strain at zero
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    stress = torch.autograd.grad(energy(pos.detach(), strain), strain)[0] / box ** 3

    # relaxation by L-BFGS on the positions themselves
    x = torch.tensor(pos_np, requires_grad=True)
    optimizer = optim.LBFGS([x], lr=1, max_iter=40, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        optimizer.zero_grad()
        e = energy(x)
        e.backward()
        return e

    optimizer.step(closure)
    E_min = energy(x)
    state = optimizer.state[optimizer._params[0]]
    # normal modes at the relaxed geometry
    H = torch.autograd.functional.hessian(lambda flat: energy(flat.view(n, 3)), x.detach().reshape(-1))
    modes = torch.linalg.eigvalsh(H)
    return {"E0": E0, "F0": F0, "stress": stress, "E_min": E_min, "x": x.detach(), "modes": modes,
            "n_iter": state["n_iter"], "func_evals": state["func_evals"], "H": H}


def test_lennard_jones_in_a_periodic_box():
    ours, _ = run_both(lennard_jones, rtol=1e-7, atol=1e-9)
    pos, box = lj_positions()
    n = pos.shape[0]

    def E(p, L=box):
        total = 0.0
        for a in range(n):
            for b in range(a + 1, n):
                d = p[a] - p[b]
                d = d - L * np.round(d / L)
                total += 4 * ((d @ d) ** -6 - (d @ d) ** -3)
        return total

    assert ours["E0"] == pytest.approx(E(pos), rel=1e-12)
    h = 1e-6
    plus, minus = pos.copy(), pos.copy()
    plus[3, 1] += h
    minus[3, 1] -= h
    assert ours["F0"][3, 1] == pytest.approx(-(E(plus) - E(minus)) / (2 * h), rel=1e-6)
    s = 1e-6
    stretch = lambda e: E(pos * np.array([1 + e, 1, 1]), np.array([box * (1 + e), box, box]))
    assert ours["stress"][0, 0] == pytest.approx((stretch(s) - stretch(-s)) / (2 * s) / box ** 3, rel=1e-5)
    assert ours["E_min"] < ours["E0"]
    # translations are the three zero modes of a periodic system, and only they
    modes = np.sort(np.abs(ours["modes"]))
    assert np.all(modes[:3] < 1e-8) and np.all(modes[3:] > 1e-2)
    np.testing.assert_allclose(ours["H"], ours["H"].T, atol=1e-10)
    np.testing.assert_allclose(np.sort(ours["modes"]), np.linalg.eigvalsh(ours["H"]), rtol=1e-10, atol=1e-10)
    x = ours["x"]
    h = 1e-4
    column = []
    for k in range(3 * n):
        plus, minus = x.reshape(-1).copy(), x.reshape(-1).copy()
        plus[k] += h
        plus[4] += h
        minus[k] -= h
        minus[4] -= h
        column.append(E(plus.reshape(n, 3)) + E(minus.reshape(n, 3)))
    # d2E/dx_4 dx_k along the diagonal direction e_4 + e_k, checked where k != 4 by the polarisation identity
    e0 = E(x)
    shifted = lambda k, sign: E((x.reshape(-1) + sign * h * np.eye(3 * n)[k]).reshape(n, 3))
    second = lambda k: (shifted(k, 1) - 2 * e0 + shifted(k, -1)) / h ** 2
    for k in (0, 7, 20):
        along = (column[k] - 2 * e0) / h ** 2
        assert ours["H"][4, k] == pytest.approx((along - second(k) - second(4)) / 2, rel=1e-4, abs=1e-4)


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
# A pseudo-spectral Burgers solver differentiated with respect to its initial condition
# ----------------------------------------------------------------------------------------------


def spectral_burgers(m, steps=30):
    torch, optim = m.torch, m.optim
    n, nu, dt = 32, 0.05, 0.01
    x = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    k = torch.fft.rfftfreq(n, d=1.0 / n).to(torch.float64)
    k_full = torch.fft.fftfreq(n, d=1.0 / n)
    dealias = (k.abs() < (2.0 / 3.0) * (n // 2)).to(torch.float64)

    def rhs(u):
        u_hat = torch.fft.rfft(u)
        u_x = torch.fft.irfft(1j * k * u_hat, n=n)
        u_xx = torch.fft.irfft(-(k ** 2) * u_hat, n=n)
        nonlinear = torch.fft.irfft(dealias * torch.fft.rfft(u * u_x), n=n)
        return -nonlinear + nu * u_xx

    def solve(u):
        for _ in range(steps):
            k1 = rhs(u)
            k2 = rhs(u + 0.5 * dt * k1)
            k3 = rhs(u + 0.5 * dt * k2)
            k4 = rhs(u + dt * k3)
            u = u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return u

    with torch.no_grad():
        target = solve(torch.sin(x) + 0.5 * torch.cos(2 * x))
    coeffs = torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64, requires_grad=True)

    def initial(c):
        return c[0] * torch.sin(x) + c[1] * torch.cos(x) + c[2] * torch.sin(2 * x) + c[3] * torch.cos(2 * x)

    optimizer = optim.Adam([coeffs], lr=0.1)
    history = []
    for it in range(6):
        optimizer.zero_grad()
        loss = ((solve(initial(coeffs)) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), coeffs.detach().clone()))
    # the spectral derivative with the complex fft as well, and its gradient
    u = torch.sin(3 * x).requires_grad_(True)
    u_x_full = torch.fft.ifft(1j * k_full * torch.fft.fft(u)).real
    energy = (u_x_full ** 2).sum()
    (g,) = torch.autograd.grad(energy, u)
    return {"history": history, "target": target, "u_x": u_x_full, "energy_grad": g, "k": k_full}


def test_pseudo_spectral_burgers():
    ours, _ = run_both(spectral_burgers, rtol=1e-8, atol=1e-10)
    x = np.arange(32) * 2 * np.pi / 32
    np.testing.assert_allclose(ours["u_x"], 3 * np.cos(3 * x), atol=1e-12)
    # d/du sum (D u)^2 = 2 D^T D u = -2 D^2 u = 2 * 9 sin(3x) for the spectral derivative D
    np.testing.assert_allclose(ours["energy_grad"], 18 * np.sin(3 * x), atol=1e-10)
    losses = [loss for loss, _ in ours["history"]]
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------
# An FNO layer whose complex weights are real parameters seen through view_as_complex
# ----------------------------------------------------------------------------------------------


def make_fno_vac(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SpectralConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1, modes2):
            super().__init__()
            self.modes1, self.modes2, self.out_channels = modes1, modes2, out_channels
            scale = 1 / (in_channels * out_channels)
            self.weight = nn.Parameter(scale * torch.randn(2, in_channels, out_channels, modes1, modes2, 2))

        def forward(self, x):
            B, C, H, W = x.shape
            x_ft = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")
            weight = torch.view_as_complex(self.weight)
            out_ft = torch.zeros(B, self.out_channels, H, W // 2 + 1, dtype=x_ft.dtype, device=x.device)
            out_ft[..., :self.modes1, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[..., :self.modes1, :self.modes2], weight[0])
            out_ft[..., -self.modes1:, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[..., -self.modes1:, :self.modes2], weight[1])
            return torch.fft.irfftn(out_ft, s=(H, W), dim=(-2, -1), norm="ortho")

    class Block(nn.Module):
        def __init__(self, width, modes):
            super().__init__()
            self.spectral = SpectralConv2d(width, width, modes, modes)
            self.skip = nn.Conv2d(width, width, 1)
            self.norm = nn.InstanceNorm2d(width)

        def forward(self, x):
            return F.gelu(self.norm(self.spectral(x) + self.skip(x)))

    return nn.Sequential(nn.Conv2d(1, 4, 1), Block(4, 3), Block(4, 3), nn.Conv2d(4, 1, 1))


def fno_vac(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_fno_vac(m), weights)
    rng = np.random.default_rng(9)
    a = torch.tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    u = torch.tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    optimizer = optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        out = model(a)
        loss = torch.linalg.vector_norm(out - u) / torch.linalg.vector_norm(u)
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    spectral = [p for n, p in model.named_parameters() if "spectral" in n]
    return {"history": history, "out": out, "spectral_grads": [p.grad for p in spectral],
            "grads": [p.grad for n, p in model.named_parameters() if "spectral" not in n]}


def test_fno_with_view_as_complex_weights():
    weights = weights_of(make_fno_vac)
    ours, _ = run_both(fno_vac, weights, rtol=2e-4, atol=2e-5)
    assert all(g.dtype == np.float32 and g.shape[-1] == 2 for g in ours["spectral_grads"])
    assert ours["history"][-1] < ours["history"][0]


def test_view_as_complex_gradient_by_finite_differences():
    torch = OURS.torch
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.standard_normal((1, 1, 6, 6)))
    w0 = rng.standard_normal((2, 2, 2))

    def loss(w):
        x_ft = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        out = torch.zeros_like(x_ft)
        out[..., :2, :2] = x_ft[..., :2, :2] * torch.view_as_complex(w)
        return torch.fft.irfftn(out, s=(6, 6), dim=(-2, -1), norm="ortho").pow(2).sum()

    w = torch.tensor(w0, requires_grad=True)
    loss(w).backward()
    h = 1e-6
    for idx in [(0, 0, 0), (0, 1, 1), (1, 1, 0)]:
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += h
        minus[idx] -= h
        fd = (loss(torch.tensor(plus)).item() - loss(torch.tensor(minus)).item()) / (2 * h)
        assert w.grad[idx].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Variational Monte Carlo for the 2-D harmonic oscillator: the local energy by vmap(jacrev(jacrev))
# ----------------------------------------------------------------------------------------------


def make_wavefunction(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 1)).double()


def vmc(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    from_func = torch.func
    model = load(m, make_wavefunction(m), weights)
    rng = np.random.default_rng(13)
    walkers = torch.tensor(rng.standard_normal((64, 2)))

    def log_psi(params, r):
        # a Gaussian envelope times a learnt correction
        return from_func.functional_call(model, params, (r,)).squeeze(-1) - 0.4 * (r ** 2).sum(-1)

    def local_energy(params, r):
        g = from_func.jacrev(log_psi, argnums=1)(params, r)
        H = from_func.jacrev(from_func.jacrev(log_psi, argnums=1), argnums=1)(params, r)
        kinetic = -0.5 * (torch.trace(H) + (g ** 2).sum())
        return kinetic + 0.5 * (r ** 2).sum()

    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    optimizer = optim.Adam(params.values(), lr=1e-2)
    history = []
    for step in range(steps):
        e_loc = from_func.vmap(local_energy, in_dims=(None, 0))(params, walkers)
        lp = from_func.vmap(log_psi, in_dims=(None, 0))(params, walkers)
        e_mean = e_loc.mean()
        # the usual VMC gradient estimator: 2 <(E_L - <E_L>) d log psi>
        loss = 2 * ((e_loc - e_mean).detach() * lp).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((e_mean.item(), e_loc.var().item()))
    # the same Laplacian by autograd.grad loops over the batch
    r = walkers[:8].clone().requires_grad_(True)
    lp = log_psi(params, r)
    g = torch.autograd.grad(lp.sum(), r, create_graph=True)[0]
    lap = sum(torch.autograd.grad(g[:, i].sum(), r, retain_graph=True)[0][:, i] for i in range(2))
    by_loop = -0.5 * (lap + (g ** 2).sum(-1)) + 0.5 * (r ** 2).sum(-1)
    by_vmap = from_func.vmap(local_energy, in_dims=(None, 0))(params, walkers[:8])
    # the exact ground state psi = exp(-|r|^2 / 2): local energy 1 everywhere
    exact = {k: torch.zeros_like(v) for k, v in params.items()}
    exact_params = dict(exact)
    e_exact = from_func.vmap(lambda r: local_energy(exact_params, r) - 0.1 * (r ** 2).sum() * 0)(walkers[:8])
    return {"history": history, "by_loop": by_loop.detach(), "by_vmap": by_vmap.detach(), "e_exact": e_exact,
            "grads": [p.grad for p in params.values()]}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_variational_monte_carlo():
    weights = weights_of(make_wavefunction)
    ours, _ = run_both(vmc, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["by_vmap"], ours["by_loop"], rtol=1e-10, atol=1e-12)
    # psi = exp(-0.4 |r|^2) (zero network): E_L = 0.8 + 0.5 * 0.36 |r|^2 ... checked in closed form
    r = np.random.default_rng(13).standard_normal((64, 2))[:8]
    np.testing.assert_allclose(ours["e_exact"], 0.8 + 0.5 * (1 - 0.64) * (r ** 2).sum(-1), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# An E(n)-equivariant graph network (Satorras et al. 2021) predicting forces, checked for equivariance
# ----------------------------------------------------------------------------------------------


def make_egnn(m):
    torch, nn = m.torch, m.nn

    class E_GCL(nn.Module):
        def __init__(self, hidden_nf, act_fn=nn.SiLU()):
            super().__init__()
            self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden_nf + 1, hidden_nf), act_fn,
                                          nn.Linear(hidden_nf, hidden_nf), act_fn)
            self.node_mlp = nn.Sequential(nn.Linear(2 * hidden_nf, hidden_nf), act_fn,
                                          nn.Linear(hidden_nf, hidden_nf))
            layer = nn.Linear(hidden_nf, 1, bias=False)
            self.coord_mlp = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), act_fn, layer, nn.Tanh())

        def coord2radial(self, edge_index, coord):
            row, col = edge_index
            coord_diff = coord[row] - coord[col]
            radial = torch.sum(coord_diff ** 2, 1).unsqueeze(1)
            return radial, coord_diff

        def forward(self, h, edge_index, coord):
            row, col = edge_index
            radial, coord_diff = self.coord2radial(edge_index, coord)
            edge_feat = self.edge_mlp(torch.cat([h[row], h[col], radial], dim=1))
            trans = coord_diff * self.coord_mlp(edge_feat)
            agg = torch.zeros(coord.size(0), trans.size(1), dtype=trans.dtype).index_add_(0, row, trans)
            count = torch.zeros(coord.size(0), 1, dtype=trans.dtype).index_add_(
                0, row, torch.ones(row.size(0), 1, dtype=trans.dtype)).clamp(min=1)
            coord = coord + agg / count
            agg_h = torch.zeros(h.size(0), edge_feat.size(1), dtype=h.dtype).index_add_(0, row, edge_feat)
            h = h + self.node_mlp(torch.cat([h, agg_h], dim=1))
            return h, coord

    class EGNN(nn.Module):
        def __init__(self, in_node_nf=3, hidden_nf=8, n_layers=2):
            super().__init__()
            self.embedding_in = nn.Linear(in_node_nf, hidden_nf)
            self.layers = nn.ModuleList([E_GCL(hidden_nf) for _ in range(n_layers)])
            self.energy = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, 1))

        def forward(self, h, x, edges):
            h = self.embedding_in(h)
            for layer in self.layers:
                h, x = layer(h, edges, x)
            return self.energy(h).sum(), x

    return EGNN().double()


def egnn(m, weights, epochs=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_egnn(m), weights)
    data = molecules(n_mol=2)
    n = 5
    edges = torch.nonzero(~torch.eye(n, dtype=torch.bool)).T
    optimizer = optim.Adam(model.parameters(), lr=3e-3, amsgrad=True)
    history = []
    for epoch in range(epochs):
        for Z, R, E, F_ref in data:
            h = m.F.one_hot(torch.tensor(Z) - 1, 3).double()
            pos = torch.tensor(R).requires_grad_()
            energy, x_out = model(h, pos, edges)
            forces = -torch.autograd.grad(energy, pos, create_graph=True)[0]
            loss = ((forces - torch.tensor(F_ref)) ** 2).mean() + 0.01 * (energy - E) ** 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    # equivariance: rotate and translate the input; energy invariant, forces and coordinates rotate
    rng = np.random.default_rng(14)
    Q, _ = torch.linalg.qr(torch.tensor(rng.standard_normal((3, 3))))
    shift = torch.tensor(rng.standard_normal(3))
    Z, R, _, _ = data[0]
    h = m.F.one_hot(torch.tensor(Z) - 1, 3).double()
    results = []
    for pos in (torch.tensor(R), torch.tensor(R) @ Q.T + shift):
        pos = pos.requires_grad_()
        energy, x_out = model(h, pos, edges)
        forces = -torch.autograd.grad(energy, pos)[0]
        results.append((energy.detach(), forces, x_out.detach()))
    return {"history": history, "results": results, "Q": Q, "shift": shift}


def test_egnn_force_field():
    weights = weights_of(make_egnn)
    ours, _ = run_both(egnn, weights, rtol=1e-8, atol=1e-10)
    (e0, f0, x0), (e1, f1, x1) = ours["results"]
    Q, shift = ours["Q"], ours["shift"]
    assert e1 == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(f1, f0 @ Q.T, atol=1e-10)
    np.testing.assert_allclose(x1, x0 @ Q.T + shift, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo for a damped oscillator's parameters (leapfrog by autograd.grad)
# ----------------------------------------------------------------------------------------------


def oscillator_observations():
    rng = np.random.default_rng(15)
    t = np.linspace(0, 4, 21)
    y = np.exp(-0.3 * t) * np.cos(2.0 * t) + 0.05 * rng.standard_normal(21)
    return t, y


def hmc(m, n_samples=12, n_leapfrog=10, step_size=0.003):
    torch = m.torch
    D = torch.distributions
    t_np, y_np = oscillator_observations()
    t, y = torch.tensor(t_np), torch.tensor(y_np)
    prior = D.Normal(torch.tensor([0.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64))
    noise = D.HalfNormal(torch.tensor(0.1, dtype=torch.float64))

    def simulate(theta):
        gamma, log_omega = theta[0].exp(), theta[1]
        omega = log_omega.exp()
        return torch.exp(-gamma * t) * torch.cos(omega * t)

    def log_prob(theta):
        mean = simulate(theta)
        return D.Normal(mean, 0.05).log_prob(y).sum() + prior.log_prob(theta).sum()

    def potential_grad(theta):
        theta = theta.detach().requires_grad_(True)
        U = -log_prob(theta)
        (g,) = torch.autograd.grad(U, theta)
        return U.detach(), g

    rng = np.random.default_rng(16)
    theta = torch.tensor([math.log(0.3), math.log(2.0)], dtype=torch.float64)
    samples, accepts, energies = [], [], []
    for i in range(n_samples):
        p0 = torch.tensor(rng.standard_normal(2))
        U0, g = potential_grad(theta)
        q, p = theta.clone(), p0.clone()
        p = p - 0.5 * step_size * g
        for k in range(n_leapfrog):
            q = q + step_size * p
            U, g = potential_grad(q)
            if k != n_leapfrog - 1:
                p = p - step_size * g
        p = p - 0.5 * step_size * g
        H0 = U0 + 0.5 * (p0 ** 2).sum()
        H1 = U + 0.5 * (p ** 2).sum()
        accept = bool(math.log(rng.uniform()) < (H0 - H1).item())
        if accept:
            theta = q
        samples.append(theta.clone())
        accepts.append(accept)
        energies.append((H1 - H0).item())
    # the posterior's curvature at the last sample: a Laplace approximation's covariance
    H = torch.autograd.functional.hessian(lambda th: -log_prob(th), theta)
    cov = torch.linalg.inv(H)
    laplace = D.MultivariateNormal(theta, covariance_matrix=cov)
    return {"samples": torch.stack(samples), "accepts": accepts, "energy_errors": energies, "hessian": H,
            "entropy": laplace.entropy(), "lp": laplace.log_prob(theta + 0.01)}


def test_hamiltonian_monte_carlo():
    ours, _ = run_both(hmc, rtol=1e-8, atol=1e-10)
    # leapfrog nearly conserves H (so nearly all proposals are accepted) and the posterior is near the truth
    assert max(abs(e) for e in ours["energy_errors"]) < 1.0 and sum(ours["accepts"]) >= 8
    assert abs(np.exp(ours["samples"][-1, 1]) - 2.0) < 0.1
    H = ours["hessian"]
    np.testing.assert_allclose(H, H.T, rtol=1e-10)
    assert np.all(np.linalg.eigvalsh(H) > 0)
    assert ours["entropy"] == pytest.approx(1 + np.log(2 * np.pi) - 0.5 * np.log(np.linalg.det(H)), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# The Jacobian of a symplectic integrator step (Stormer-Verlet) by torch.func: J^T Omega J = Omega
# ----------------------------------------------------------------------------------------------


def make_potential(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 12), nn.Softplus(), nn.Linear(12, 1)).double()


def symplectic(m, weights):
    torch = m.torch
    from_func = torch.func
    V = load(m, make_potential(m), weights)

    def force(q):
        return -torch.autograd.grad(V(q).sum(), q, create_graph=True)[0]

    def verlet(z, dt=0.1):
        q, p = z[:2], z[2:]
        q = q if q.requires_grad else q.requires_grad_(True)
        p = p + 0.5 * dt * force(q)
        q = q + dt * p
        p = p + 0.5 * dt * force(q)
        return torch.cat([q, p])

    def verlet_func(z, dt=0.1):
        grad_V = from_func.grad(lambda q: V(q).sum())
        q, p = z[:2], z[2:]
        p = p - 0.5 * dt * grad_V(q)
        q = q + dt * p
        p = p - 0.5 * dt * grad_V(q)
        return torch.cat([q, p])

    z0 = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    J_func = from_func.jacrev(verlet_func)(z0)
    J_fwd = from_func.jacfwd(verlet_func)(z0)
    J_auto = torch.autograd.functional.jacobian(verlet, z0.clone().requires_grad_(True))
    Omega = torch.zeros(4, 4, dtype=torch.float64)
    Omega[:2, 2:] = torch.eye(2, dtype=torch.float64)
    Omega[2:, :2] = -torch.eye(2, dtype=torch.float64)
    sign, logdet = torch.linalg.slogdet(J_func)
    # many steps: a trajectory, and the gradient of its end point's energy with respect to the weights
    z = z0.clone().requires_grad_(True)
    zs = [z]
    for _ in range(10):
        z = verlet(z)
        zs.append(z)
    traj = torch.stack(zs)
    energy = V(z[:2]).sum() + 0.5 * (z[2:] ** 2).sum()
    grads = torch.autograd.grad(energy, list(V.parameters()) + [zs[0]])
    return {"J": J_func, "J_fwd": J_fwd, "J_auto": J_auto, "symplectic": J_func.T @ Omega @ J_func,
            "Omega": Omega, "logdet": logdet, "sign": sign, "traj": traj.detach(), "grads": grads}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_symplectic_integrator_jacobian():
    weights = weights_of(make_potential)
    ours, _ = run_both(symplectic, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["symplectic"], ours["Omega"], atol=1e-12)
    np.testing.assert_allclose(ours["J_fwd"], ours["J"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["J_auto"], ours["J"], rtol=1e-12, atol=1e-14)
    assert ours["sign"] == 1.0 and abs(ours["logdet"]) < 1e-12  # volume preserving


# ----------------------------------------------------------------------------------------------
# Heat capacities from a partition function: the second derivative of ln Z(beta) by autograd, with the
# truncation of the sum over levels followed by logcumsumexp
# ----------------------------------------------------------------------------------------------


def heat_capacity(m, n_levels=40, steps=5, anharmonicity=0.1, third_derivatives=True):
    torch, optim = m.torch, m.optim
    beta = torch.linspace(0.5, 3.0, 6, dtype=torch.float64).requires_grad_(True)
    n = torch.arange(n_levels, dtype=torch.float64)

    def thermodynamics(log_omega, anharmonicity):
        omega = log_omega.exp()
        levels = omega * (n + 0.5) - anharmonicity * (n + 0.5) ** 2 / n_levels
        log_Z = torch.logcumsumexp(-beta[:, None] * levels, dim=1)  # ln Z with the first 1, 2, ... levels
        (dlogZ,) = torch.autograd.grad(log_Z[:, -1].sum(), beta, create_graph=True)
        U_all = []
        for k in (4, 12, n_levels - 1):
            (U_k,) = torch.autograd.grad(-log_Z[:, k].sum(), beta, create_graph=True)
            U_all.append(U_k)
        (d2logZ,) = torch.autograd.grad(dlogZ.sum(), beta, create_graph=True)
        return log_Z, -dlogZ, beta ** 2 * d2logZ, torch.stack(U_all)

    log_omega = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    anharmonicity = torch.tensor(anharmonicity, dtype=torch.float64, requires_grad=True)
    log_Z, U, C, U_trunc = thermodynamics(log_omega, anharmonicity)
    # learn the level spacing from a measured heat capacity curve (that of omega = 1.5)
    b = beta.detach()
    target = (1.5 * b / 2) ** 2 / torch.sinh(1.5 * b / 2) ** 2
    optimizer = optim.Adam([log_omega], lr=0.1)
    history = []
    for step in range(steps):
        _, _, C_fit, _ = thermodynamics(log_omega, torch.zeros((), dtype=torch.float64))
        loss = ((C_fit - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        history.append((loss.item(), log_omega.item(), log_omega.grad.item()))
        optimizer.step()
    out = {"log_Z": log_Z, "U": U, "C": C, "U_trunc": U_trunc, "history": history, "beta_grad": beta.grad}
    if third_derivatives:
        out["anharmonicity_grad"] = torch.autograd.grad(C.sum(), anharmonicity, retain_graph=True)[0]
    return out


def harmonic_heat_capacity_loss(log_omega):
    b = np.linspace(0.5, 3.0, 6)
    levels = np.exp(log_omega) * (np.arange(40) + 0.5)
    p = np.exp(-b[:, None] * levels)
    p /= p.sum(1, keepdims=True)
    C = b ** 2 * ((p * levels ** 2).sum(1) - (p * levels).sum(1) ** 2)
    return ((C - (1.5 * b / 2) ** 2 / np.sinh(1.5 * b / 2) ** 2) ** 2).mean()


def test_heat_capacity_from_the_partition_function():
    ours, _ = run_both(heat_capacity, steps=0, third_derivatives=False, rtol=1e-9, atol=1e-11)
    assert ours["beta_grad"] is None  # beta was differentiated with autograd.grad only
    # training the level spacing through C differentiates logcumsumexp three times, where PyTorch's third
    # derivative is NaN (every step of its training comes out NaN): checked by hand instead
    trained = heat_capacity(OURS)
    history = trained["history"]
    losses = [loss for loss, _, _ in history]
    assert losses[-1] < losses[0]
    h = 1e-5
    for loss, log_omega, grad in history[:3]:
        assert loss == pytest.approx(harmonic_heat_capacity_loss(log_omega), rel=1e-10)
        fd = (harmonic_heat_capacity_loss(log_omega + h) - harmonic_heat_capacity_loss(log_omega - h)) / (2 * h)
        assert grad == pytest.approx(fd, rel=1e-6)
    # ln Z, U = <E> and C = beta^2 Var(E) over the levels, by NumPy
    b = np.linspace(0.5, 3.0, 6)[:, None]
    n = np.arange(40) + 0.5
    levels = n - 0.1 * n ** 2 / 40
    p = np.exp(-b * levels)
    np.testing.assert_allclose(ours["log_Z"], np.log(np.cumsum(p, 1)), rtol=1e-12)
    p /= p.sum(1, keepdims=True)
    mean = (p * levels).sum(1)
    np.testing.assert_allclose(ours["U"], mean, rtol=1e-10)
    np.testing.assert_allclose(ours["C"], b[:, 0] ** 2 * ((p * levels ** 2).sum(1) - mean ** 2), rtol=1e-9)
    a, h = 0.1, 1e-5
    C_of = lambda a: (b[:, 0] ** 2 * (lambda l, w: (w * l ** 2).sum(1) / w.sum(1) - ((w * l).sum(1) / w.sum(1)) ** 2)(
        n - a * n ** 2 / 40, np.exp(-b * (n - a * n ** 2 / 40)))).sum()
    assert trained["anharmonicity_grad"] == pytest.approx((C_of(a + h) - C_of(a - h)) / (2 * h), rel=1e-6)
    q = np.exp(-b * levels[:5])
    np.testing.assert_allclose(ours["U_trunc"][0], (q * levels[:5]).sum(1) / q.sum(1), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# A deep equilibrium layer (implicit-layers tutorial, ch. 4): the fixed point found without a graph,
# its backward by a hook that solves the adjoint fixed point with autograd.grad
# ----------------------------------------------------------------------------------------------


def make_deq(m):
    torch, nn = m.torch, m.nn

    class TanhFixedPointLayer(nn.Module):
        def __init__(self, out_features, tol=1e-10, max_iter=200):
            super().__init__()
            self.linear = nn.Linear(out_features, out_features, bias=False)
            self.tol = tol
            self.max_iter = max_iter

        def forward(self, x):
            return torch.tanh(self.linear(x) + x)

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

            self.hook = z.register_hook(backward_hook)
            return z

    class Layer(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.lin = nn.Linear(n, n)
            self.inj = nn.Linear(n, n)
            with torch.no_grad():
                self.lin.weight.mul_(0.3)

        def forward(self, z, x):
            return torch.tanh(self.lin(z) + self.inj(x))

    def forward_iteration(f, x0, max_iter=200, tol=1e-11):
        f0 = f(x0)
        res = []
        for k in range(max_iter):
            x = f0
            f0 = f(x)
            res.append((f0 - x).norm().item() / (1e-5 + f0.norm().item()))
            if res[-1] < tol:
                break
        return f0, res

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.deq = DEQFixedPoint(Layer(6), forward_iteration, tol=1e-11, max_iter=200)
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            return self.head(self.deq(x))

    return Model().double()


def deq(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_deq(m), weights)
    rng = np.random.default_rng(19)
    x = torch.tensor(rng.standard_normal((8, 6)))
    y = torch.tensor(rng.standard_normal((8, 1)))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), len(model.deq.forward_res), len(model.deq.backward_res)))
    grads = [p.grad.clone() for p in model.parameters()]
    # the implicit gradient against unrolling the fixed-point iteration with a graph
    z = torch.zeros_like(x)
    for k in range(200):
        z = model.deq.f(z, x)
    unrolled = ((model.head(z) - y) ** 2).mean()
    optimizer.zero_grad()
    unrolled_grads = torch.autograd.grad(unrolled, list(model.parameters()))
    implicit = ((model(x) - y) ** 2).mean()
    implicit.backward()
    return {"history": history, "grads": grads, "unrolled": unrolled_grads,
            "implicit": [p.grad for p in model.parameters()]}


def test_deep_equilibrium_layer():
    weights = weights_of(make_deq)
    ours, _ = run_both(deq, weights, rtol=1e-8, atol=1e-10)
    for a, b in zip(ours["implicit"], ours["unrolled"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]


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
# A normalizing flow for phi^4 lattice field theory (Albergo, Kanwar & Shanahan's tutorial): checkerboard
# affine couplings over circular-padded convolutions, the action by torch.roll, trained by reverse KL
# ----------------------------------------------------------------------------------------------


def lattice_flow(m, n_era=4, batch_size=16, L=4):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)

    class ScalarPhi4Action:
        def __init__(self, M2, lam):
            self.M2 = M2
            self.lam = lam

        def __call__(self, cfgs):
            # potential term
            action_density = self.M2 * cfgs ** 2 + self.lam * cfgs ** 4
            # kinetic term (discrete Laplacian)
            Nd = len(cfgs.shape) - 1
            dims = range(1, Nd + 1)
            for mu in dims:
                action_density += 2 * cfgs ** 2
                action_density -= cfgs * torch.roll(cfgs, -1, mu)
                action_density -= cfgs * torch.roll(cfgs, 1, mu)
            return torch.sum(action_density, dim=tuple(dims))

    class SimpleNormal:
        def __init__(self, loc, var):
            self.dist = torch.distributions.normal.Normal(torch.flatten(loc), torch.flatten(var))
            self.shape = loc.shape

        def log_prob(self, x):
            logp = self.dist.log_prob(x.reshape(x.shape[0], -1))
            return torch.sum(logp, dim=1)

        def sample_n(self, batch_size):
            x = self.dist.sample((batch_size,))
            return x.reshape(batch_size, *self.shape)

    def make_checker_mask(shape, parity):
        checker = torch.ones(shape, dtype=torch.uint8) - parity
        checker[::2, ::2] = parity
        checker[1::2, 1::2] = parity
        return checker

    class AffineCoupling(nn.Module):
        def __init__(self, net, *, mask_shape, mask_parity):
            super().__init__()
            self.mask = make_checker_mask(mask_shape, mask_parity)
            self.net = net

        def forward(self, x):
            x_frozen = self.mask * x
            x_active = (1 - self.mask) * x
            net_out = self.net(x_frozen.unsqueeze(1))
            s, t = net_out[:, 0], net_out[:, 1]
            fx = (1 - self.mask) * t + x_active * torch.exp(s) + x_frozen
            axes = range(1, len(s.size()))
            logJ = torch.sum((1 - self.mask) * s, dim=tuple(axes))
            return fx, logJ

    def make_conv_net(*, hidden_sizes, kernel_size, in_channels, out_channels, use_final_tanh):
        sizes = [in_channels] + hidden_sizes + [out_channels]
        padding_size = (kernel_size // 2)
        net = []
        for i in range(len(sizes) - 1):
            net.append(nn.Conv2d(sizes[i], sizes[i + 1], kernel_size, padding=padding_size, stride=1,
                                 padding_mode='circular'))
            if i != len(sizes) - 2:
                net.append(nn.LeakyReLU())
            else:
                if use_final_tanh:
                    net.append(nn.Tanh())
        return nn.Sequential(*net)

    def make_phi4_affine_layers(*, n_layers, lattice_shape, hidden_sizes, kernel_size):
        layers = []
        for i in range(n_layers):
            parity = i % 2
            net = make_conv_net(in_channels=1, out_channels=2, hidden_sizes=hidden_sizes, kernel_size=kernel_size,
                                use_final_tanh=True)
            coupling = AffineCoupling(net, mask_shape=lattice_shape, mask_parity=parity)
            layers.append(coupling)
        return nn.ModuleList(layers)

    def apply_flow_to_prior(prior, coupling_layers, *, batch_size):
        x = prior.sample_n(batch_size)
        logq = prior.log_prob(x)
        for layer in coupling_layers:
            x, logJ = layer.forward(x)
            logq = logq - logJ
        return x, logq

    def calc_dkl(logp, logq):
        return (logq - logp).mean()

    def compute_ess(logp, logq):
        logw = logp - logq
        log_ess = 2 * torch.logsumexp(logw, dim=0) - torch.logsumexp(2 * logw, dim=0)
        ess_per_cfg = torch.exp(log_ess) / len(logw)
        return ess_per_cfg

    lattice_shape = (L, L)
    phi4_action = ScalarPhi4Action(M2=-4.0, lam=8.0)
    prior = SimpleNormal(torch.zeros(lattice_shape), torch.ones(lattice_shape))
    layers = make_phi4_affine_layers(lattice_shape=lattice_shape, n_layers=4, hidden_sizes=[4, 4], kernel_size=3)
    model = {'layers': layers, 'prior': prior}
    optimizer = optim.Adam(model['layers'].parameters(), lr=0.001)
    history = []
    for era in range(n_era):
        optimizer.zero_grad()
        x, logq = apply_flow_to_prior(prior, layers, batch_size=batch_size)
        logp = -phi4_action(x)
        loss = calc_dkl(logp, logq)
        loss.backward()
        optimizer.step()
        history.append((loss.item(), compute_ess(logp, logq).item()))
    # the force of the action (for HMC on the lattice) against its closed form
    phi = x.detach().requires_grad_(True)
    force = -torch.autograd.grad(phi4_action(phi).sum(), phi)[0]
    return {"history": history, "x": x.detach(), "force": force, "grads": [p.grad for p in layers.parameters()]}


def test_phi4_lattice_normalizing_flow():
    # (the prior's draws are the same on both: chainrule's generator reproduces PyTorch's normal_; float32
    # gradients of an action with phi^4 terms of ~50 agree to a few 1e-4)
    ours, _ = run_both(lattice_flow, rtol=5e-4, atol=5e-5)
    phi = ours["x"].astype(np.float64)
    lap = sum(np.roll(phi, 1, a) + np.roll(phi, -1, a) - 2 * phi for a in (1, 2))
    np.testing.assert_allclose(ours["force"], -(2 * -4.0 * phi + 4 * 8.0 * phi ** 3 - 2 * lap), rtol=1e-4, atol=1e-4)
    assert all(0 < ess <= 1 for _, ess in ours["history"])


# ----------------------------------------------------------------------------------------------
# Implicit (backward Euler) diffusion with a learnt conductivity field: the system matrix factorised once
# per solve by lu_factor and reused by lu_solve, fitted by L-BFGS
# ----------------------------------------------------------------------------------------------


def implicit_diffusion(m, steps=8):
    torch, optim = m.torch, m.optim
    n, dt = 12, 0.01
    dx = 1.0 / (n + 1)
    xs = torch.linspace(dx, 1 - dx, n, dtype=torch.float64)
    u0 = torch.sin(math.pi * xs) + 0.5 * torch.sin(3 * math.pi * xs)

    def system(log_k):
        k = log_k.exp()  # conductivity at the n + 1 cell faces
        main = (k[:-1] + k[1:]) / dx ** 2
        off = -k[1:-1] / dx ** 2
        K = torch.diag(main) + torch.diag(off, 1) + torch.diag(off, -1)
        return torch.eye(n, dtype=torch.float64) + dt * K

    def solve(log_k):
        LU, pivots = torch.linalg.lu_factor(system(log_k))
        u, out = u0[:, None], []
        for _ in range(steps):
            u = torch.linalg.lu_solve(LU, pivots, u)
            out.append(u[:, 0])
        return torch.stack(out)

    true_log_k = torch.log(1.0 + 0.5 * torch.linspace(0, 1, n + 1, dtype=torch.float64))
    with torch.no_grad():
        observed = solve(true_log_k)
    log_k = torch.zeros(n + 1, dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([log_k], lr=1, max_iter=15, line_search_fn="strong_wolfe")
    history = []

    def closure():
        optimizer.zero_grad()
        loss = ((solve(log_k) - observed) ** 2).sum() * 1e3 + 1e-4 * (log_k.diff() ** 2).sum()
        loss.backward()
        history.append(loss.item())
        return loss

    optimizer.step(closure)
    # the same trajectory by torch.linalg.solve, and its gradient
    k_probe = true_log_k.clone().requires_grad_(True)
    by_lu = solve(k_probe)
    u, by_solve = u0, []
    A = system(k_probe)
    for _ in range(steps):
        u = torch.linalg.solve(A, u)
        by_solve.append(u)
    by_solve = torch.stack(by_solve)
    g_lu = torch.autograd.grad(by_lu.pow(2).sum(), k_probe)[0]
    g_solve = torch.autograd.grad(by_solve.pow(2).sum(), k_probe)[0]
    return {"history": history, "log_k": log_k.detach(), "observed": observed, "by_lu": by_lu.detach(),
            "by_solve": by_solve.detach(), "g_lu": g_lu, "g_solve": g_solve}


def test_implicit_diffusion_with_lu_factor():
    ours, _ = run_both(implicit_diffusion, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["by_lu"], ours["by_solve"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["g_lu"], ours["g_solve"], rtol=1e-10, atol=1e-12)
    assert ours["history"][-1] < 1e-2 * ours["history"][0]
    # backward Euler by NumPy
    n, dt = 12, 0.01
    dx = 1 / 13
    x = np.linspace(dx, 1 - dx, n)
    k = 1 + 0.5 * np.linspace(0, 1, n + 1)
    A = np.eye(n) + dt * (np.diag((k[:-1] + k[1:]) / dx ** 2) - np.diag(k[1:-1] / dx ** 2, 1)
                          - np.diag(k[1:-1] / dx ** 2, -1))
    u = np.sin(np.pi * x) + 0.5 * np.sin(3 * np.pi * x)
    for _ in range(8):
        u = np.linalg.solve(A, u)
    np.testing.assert_allclose(ours["observed"][-1], u, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Deep Koopman with dynamic mode decomposition in the loss: truncated SVD, the reduced operator's
# complex eigenvalues by torch.linalg.eig, differentiated back to the encoder
# ----------------------------------------------------------------------------------------------


def make_koopman(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 4)).double()


def koopman(m, weights, steps=4, rank=3):
    torch, optim = m.torch, m.optim
    encoder = load(m, make_koopman(m), weights)
    # a Duffing oscillator's trajectory by RK4
    def f(z):
        return np.array([z[1], -0.1 * z[1] - z[0] - 0.5 * z[0] ** 3])

    z, traj = np.array([1.0, 0.0]), []
    for i in range(30):
        traj.append(z)
        k1 = f(z)
        k2 = f(z + 0.05 * k1)
        k3 = f(z + 0.05 * k2)
        k4 = f(z + 0.1 * k3)
        z = z + 0.1 / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    data = torch.tensor(np.array(traj))
    optimizer = optim.Adam(encoder.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        g = encoder(data).T  # observables x time
        X, Y = g[:, :-1], g[:, 1:]
        U, S, Vh = torch.linalg.svd(X, full_matrices=False)
        U_r, S_r, V_r = U[:, :rank], S[:rank], Vh[:rank].T
        A_tilde = U_r.T @ Y @ V_r @ torch.diag(1 / S_r)
        eigvals, W = torch.linalg.eig(A_tilde)
        # DMD modes and the one-step prediction by the rank-r Koopman operator
        Phi = Y.to(torch.complex128) @ (V_r @ torch.diag(1 / S_r)).to(torch.complex128) @ W
        pred = U_r @ A_tilde @ U_r.T @ X
        loss = ((pred - Y) ** 2).mean() + 0.1 * (eigvals.abs() - 1).clamp(min=0).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), eigvals.abs().max().item()))
    spectrum = torch.sort(eigvals.detach().abs()).values
    return {"history": history, "spectrum": spectrum, "mode_norms": torch.sort(Phi.detach().abs().sum(0)).values,
            "grads": [p.grad for p in encoder.parameters()]}


def test_deep_koopman_dmd():
    weights = weights_of(make_koopman)
    ours, _ = run_both(koopman, weights, rtol=1e-7, atol=1e-9)
    assert ours["history"][-1][0] < ours["history"][0][0]
    assert ours["spectrum"].shape == (3,)


# ----------------------------------------------------------------------------------------------
# A differentiable mass-spring system with ground contact (DiffTaichi-style): the initial velocity
# optimised by backpropagation through 60 semi-implicit Euler steps with a penalty contact force
# ----------------------------------------------------------------------------------------------


def mass_spring(m, iters=5, n_steps=60, v_start=(1.0, 1.0)):
    torch, optim = m.torch, m.optim
    dt, k_spring, k_ground, damping, gravity = 0.01, 200.0, 1e4, 0.5, torch.tensor([0.0, -9.8], dtype=torch.float64)
    x0 = torch.tensor([[0.0, 0.3], [0.1, 0.3], [0.0, 0.4], [0.1, 0.4]], dtype=torch.float64)
    springs = torch.tensor([[0, 1], [0, 2], [1, 3], [2, 3], [0, 3], [1, 2]])
    rest = (x0[springs[:, 0]] - x0[springs[:, 1]]).norm(dim=1)
    target = torch.tensor([0.6, 0.2], dtype=torch.float64)

    def simulate(v_init):
        x, v = x0.clone(), v_init.expand(4, 2)
        heights = []
        for step in range(n_steps):
            d = x[springs[:, 0]] - x[springs[:, 1]]
            length = d.norm(dim=1, keepdim=True)
            f_spring = -k_spring * (length - rest[:, None]) * d / length
            force = torch.zeros_like(x).index_add(0, springs[:, 0], f_spring).index_add(0, springs[:, 1], -f_spring)
            penetration = torch.relu(-x[:, 1:2])
            contact = torch.cat([-50.0 * v[:, :1] * (penetration > 0), k_ground * penetration], dim=1)
            v = v + dt * (force + contact + gravity - damping * v)
            x = x + dt * v
            heights.append(x[:, 1].min())
        return x, torch.stack(heights)

    v_init = torch.tensor([v_start], dtype=torch.float64, requires_grad=True)
    optimizer = optim.SGD([v_init], lr=2.0, momentum=0.5, nesterov=True)
    history = []
    for it in range(iters):
        x, heights = simulate(v_init)
        loss = ((x.mean(0) - target) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        history.append((loss.item(), v_init.detach().clone(), v_init.grad.clone(), heights.min().item()))
        optimizer.step()
    return {"history": history}


def test_differentiable_mass_spring_with_contact():
    ours, _ = run_both(mass_spring, rtol=1e-7, atol=1e-9)
    losses = [h[0] for h in ours["history"]]
    assert losses[-1] < losses[0]
    assert min(h[3] for h in ours["history"]) < 0  # the body did touch the ground
    # the gradient at the first iterate by central differences through the same simulator
    loss_at = lambda v: mass_spring(OURS, iters=1, v_start=v)["history"][0][0]
    grad = ours["history"][0][2][0]
    h = 1e-6
    for c in range(2):
        plus, minus = [1.0, 1.0], [1.0, 1.0]
        plus[c] += h
        minus[c] -= h
        assert grad[c] == pytest.approx((loss_at(plus) - loss_at(minus)) / (2 * h), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# A 1-D Kohn-Sham self-consistent field (soft-Coulomb nuclei, Hartree, LDA exchange) unrolled through
# torch.linalg.eigh: the forces on the nuclei by autograd through every SCF iteration
# ----------------------------------------------------------------------------------------------


def kohn_sham(m, n_scf=12, R0=(-0.7, 0.8)):
    torch = m.torch
    n, L = 32, 8.0
    x = torch.linspace(-L / 2, L / 2, n, dtype=torch.float64)
    h = (x[1] - x[0]).item()
    ones = torch.ones(n - 1, dtype=torch.float64)
    lap = (torch.diag(-2.0 * torch.ones(n, dtype=torch.float64)) + torch.diag(ones, 1) + torch.diag(ones, -1)) / h ** 2
    T = -0.5 * lap
    interaction = 1.0 / torch.sqrt((x[:, None] - x[None, :]) ** 2 + 1.0)

    def energy(R, Z=(1.0, 1.0), n_occ=1):
        v_ext = -sum(z / torch.sqrt((x - r) ** 2 + 1.0) for z, r in zip(Z, R))
        density = torch.full((n,), 2.0 * n_occ / (n * h), dtype=torch.float64)
        for it in range(n_scf):
            v_h = interaction @ density * h
            v_x = -(3.0 / math.pi * density) ** (1.0 / 3.0)
            H = T + torch.diag(v_ext + v_h + v_x)
            eps, psi = torch.linalg.eigh(H)
            psi = psi[:, :n_occ] / math.sqrt(h)
            new_density = 2.0 * (psi ** 2).sum(1)
            density = 0.5 * density + 0.5 * new_density
        e_band = 2.0 * eps[:n_occ].sum()
        e_h = 0.5 * density @ interaction @ density * h * h
        e_x = -0.75 * (3.0 / math.pi) ** (1.0 / 3.0) * (density ** (4.0 / 3.0)).sum() * h
        e_nn = Z[0] * Z[1] / torch.sqrt((R[0] - R[1]) ** 2 + 1.0)
        # (the band energy double counts the Hartree and exchange potentials' energies)
        e_dc = -(v_h * density).sum() * h - (v_x * density).sum() * h
        return e_band + e_h + e_x + e_dc + e_nn, density, eps

    R = torch.tensor(R0, dtype=torch.float64, requires_grad=True)
    E, density, eps = energy(R)
    (dE_dR,) = torch.autograd.grad(E, R, create_graph=True)
    (curvature,) = torch.autograd.grad(dE_dR[0] - dE_dR[1], R)
    return {"E": E, "forces": -dE_dR, "density": density, "eps": eps, "electrons": density.sum() * h,
            "curvature": curvature}


def test_kohn_sham_scf_forces():
    ours, _ = run_both(kohn_sham, rtol=1e-8, atol=1e-10)
    assert ours["electrons"] == pytest.approx(2.0, rel=1e-12)
    assert np.all(np.diff(ours["eps"]) > 0)
    # the forces are the derivative of the unrolled SCF energy: checked by central differences
    h = 1e-5
    for i in range(2):
        plus, minus = [-0.7, 0.8], [-0.7, 0.8]
        plus[i] += h
        minus[i] -= h
        fd = (kohn_sham(OURS, R0=plus)["E"] - kohn_sham(OURS, R0=minus)["E"]).item() / (2 * h)
        assert ours["forces"][i] == pytest.approx(-fd, rel=1e-6, abs=1e-9)


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


# ----------------------------------------------------------------------------------------------
# A stiff ODE by backward Euler whose Newton solve is an autograd.Function differentiated by the implicit
# function theorem (setup_context, generate_vmap_rule: vmapped over initial states, jacrev through it)
# ----------------------------------------------------------------------------------------------


def make_stiff_rhs(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 2)).double()


def implicit_euler(m, weights, steps=3, h=0.2, n_steps=5):
    torch, optim = m.torch, m.optim
    from_func = torch.func
    net = load(m, make_stiff_rhs(m), weights)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    stiffness = torch.tensor([[-20.0, 1.0], [0.0, -0.5]], dtype=torch.float64)

    def rhs(p, y):
        return y @ stiffness.T + 0.3 * from_func.functional_call(net, p, (y,))

    def residual(y_next, y_prev, p):
        return y_next - y_prev - h * rhs(p, y_next)

    class BackwardEulerStep(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(y_prev, flat):
            p = unflatten(flat)
            y = y_prev.clone()
            for _ in range(6):  # Newton (quadratic: converged to rounding well before)
                J = from_func.jacrev(residual, argnums=0)(y, y_prev, p)
                y = y - torch.linalg.solve(J, residual(y, y_prev, p))
            return y

        @staticmethod
        def setup_context(ctx, inputs, output):
            y_prev, flat = inputs
            ctx.save_for_backward(y_prev, flat, output)

        @staticmethod
        def backward(ctx, grad_y):
            y_prev, flat, y = ctx.saved_tensors
            with torch.enable_grad():
                J = from_func.jacrev(residual, argnums=0)(y, y_prev, unflatten(flat))
                lam = torch.linalg.solve(J.T, grad_y)  # dL/dy_prev, dL/dp by the adjoint of F(y, y_prev, p) = 0
                _, vjp_fn = from_func.vjp(lambda yp, fl: residual(y, yp, unflatten(fl)), y_prev, flat)
                g_prev, g_flat = vjp_fn(-lam)
            return g_prev, g_flat

    names = list(params)
    shapes = [params[k].shape for k in names]

    def unflatten(flat):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[i:i + math.prod(shape)].view(shape)
            i += math.prod(shape)
        return out

    def solve(y0, flat, step=BackwardEulerStep.apply):
        ys, y = [], y0
        for _ in range(n_steps):
            y = step(y, flat)
            ys.append(y)
        return torch.stack(ys)

    def unrolled_step(y_prev, flat):
        p, y = unflatten(flat), y_prev.clone()
        for _ in range(6):
            J = torch.autograd.functional.jacobian(lambda z: residual(z, y_prev, p), y, create_graph=True)
            y = y - torch.linalg.solve(J, residual(y, y_prev, p))
        return y

    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    target = torch.tensor([0.0, 0.3], dtype=torch.float64)
    flat = torch.cat([params[k].flatten() for k in names]).detach().requires_grad_(True)
    optimizer = optim.Adam([flat], lr=1e-2)
    history = []
    for it in range(steps):
        path = solve(y0, flat)
        loss = ((path[-1] - target) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        history.append((loss.item(), flat.grad.clone()))
        optimizer.step()
    y0_req = y0.clone().requires_grad_(True)
    implicit = torch.autograd.grad(solve(y0_req, flat)[-1].sum(), (y0_req, flat))
    unrolled = torch.autograd.grad(solve(y0_req, flat, unrolled_step)[-1].sum(), (y0_req, flat))
    batch = torch.stack([y0, 2 * y0, -y0])
    vmapped = from_func.vmap(lambda y: solve(y, flat.detach()))(batch)
    J = from_func.jacrev(lambda y: solve(y, flat.detach())[-1])(y0)
    return {"history": history, "implicit": implicit, "unrolled": unrolled, "vmapped": vmapped, "J": J,
            "residual": residual(vmapped[0, 0], y0, unflatten(flat.detach()))}


def test_backward_euler_with_an_implicit_function():
    weights = weights_of(make_stiff_rhs)
    ours, _ = run_both(implicit_euler, weights, rtol=1e-8, atol=1e-10)
    for a, b in zip(ours["implicit"], ours["unrolled"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["residual"], 0.0, atol=1e-12)
    np.testing.assert_allclose(ours["J"].sum(0), ours["implicit"][0], rtol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# A neural SDE (Euler-Maruyama, noise from the seeded global generator) fitted to the moments and the
# likelihood of an Ornstein-Uhlenbeck process, gradients through the reparameterised paths
# ----------------------------------------------------------------------------------------------


def make_sde(m):
    nn = m.nn

    class SDE(nn.Module):
        def __init__(self):
            super().__init__()
            self.drift = nn.Sequential(nn.Linear(2, 12), nn.SiLU(), nn.Linear(12, 1))
            self.log_sigma = nn.Parameter(m.torch.tensor([-1.0]))

        def f(self, t, x):
            return self.drift(m.torch.cat([x, t.expand_as(x)], 1))

        def g(self, t, x):
            return self.log_sigma.exp().expand_as(x)

    return SDE().double()


def neural_sde(m, weights, epochs=4, n_paths=32, n_steps=20):
    torch, optim = m.torch, m.optim
    torch.manual_seed(1)
    sde = load(m, make_sde(m), weights)
    dt = 1.0 / n_steps
    # observations of an OU process dx = -2 (x - 0.5) dt + 0.3 dW at t = 1, drawn with NumPy
    rng = np.random.default_rng(23)
    x_np = np.zeros(200)
    for k in range(n_steps):
        x_np = x_np - 2 * (x_np - 0.5) * dt + 0.3 * np.sqrt(dt) * rng.standard_normal(200)
    observed = torch.tensor(x_np)

    def sdeint(x0):
        x, t = x0, torch.zeros(1, 1, dtype=torch.float64)
        for k in range(n_steps):
            dW = torch.randn_like(x) * math.sqrt(dt)
            x = x + sde.f(t, x) * dt + sde.g(t, x) * dW
            t = t + dt
        return x

    optimizer = optim.Adam(sde.parameters(), lr=2e-2)
    history = []
    for epoch in range(epochs):
        x_T = sdeint(torch.zeros(n_paths, 1, dtype=torch.float64)).squeeze(1)
        fitted = torch.distributions.Normal(x_T.mean(), x_T.std())
        nll = -fitted.log_prob(observed).mean()
        moments = (x_T.mean() - observed.mean()) ** 2 + (x_T.var() - observed.var()) ** 2
        loss = nll + 10 * moments
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), sde.log_sigma.exp().item(), x_T.mean().item()))
    return {"history": history, "x_T": x_T.detach(), "grads": [p.grad for p in sde.parameters()]}


def test_neural_sde_euler_maruyama():
    weights = weights_of(make_sde)
    ours, _ = run_both(neural_sde, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]
    assert ours["x_T"].shape == (32,)


# ----------------------------------------------------------------------------------------------
# Two-qubit state tomography: a complex amplitude vector (a complex leaf) fitted by L-BFGS to the
# outcome frequencies of Pauli measurements (torch.kron of basis changes, |U psi|^2)
# ----------------------------------------------------------------------------------------------


def tomography(m, max_iter=25):
    torch, optim = m.torch, m.optim
    c = torch.complex128
    I = torch.eye(2, dtype=c)
    H = torch.tensor([[1, 1], [1, -1]], dtype=c) / math.sqrt(2)  # Z basis -> X basis
    S_dag = torch.tensor([[1, 0], [0, -1j]], dtype=c)
    bases = {"Z": I, "X": H, "Y": H @ S_dag}
    settings = [(a, b) for a in "XYZ" for b in "XYZ"]
    rotations = torch.stack([torch.kron(bases[a], bases[b]) for a, b in settings])
    psi_true = torch.tensor([1.0, 0.3j, -0.2, 0.5 + 0.5j], dtype=c)
    psi_true = psi_true / torch.linalg.vector_norm(psi_true)
    with torch.no_grad():
        frequencies = (rotations @ psi_true).abs() ** 2
    psi = torch.tensor([1.0, 0.1, 0.1j, 0.1], dtype=c, requires_grad=True)
    optimizer = optim.LBFGS([psi], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
    history = []

    def closure():
        optimizer.zero_grad()
        amplitudes = rotations @ (psi / torch.linalg.vector_norm(psi))
        probs = amplitudes.real ** 2 + amplitudes.imag ** 2
        loss = ((probs - frequencies) ** 2).sum()
        loss.backward()
        history.append(loss.item())
        return loss

    optimizer.step(closure)
    estimate = psi.detach() / torch.linalg.vector_norm(psi.detach())
    fidelity = torch.abs(torch.vdot(psi_true, estimate)) ** 2
    rho = torch.outer(estimate, estimate.conj())
    return {"history": history, "fidelity": fidelity, "purity": torch.trace(rho @ rho).real,
            "frequencies": frequencies, "grad": psi.grad}


def test_two_qubit_state_tomography():
    ours, _ = run_both(tomography, rtol=1e-7, atol=1e-9)
    assert ours["history"][-1] < 1e-6 * ours["history"][0]
    assert ours["fidelity"] == pytest.approx(1.0, abs=1e-6)
    assert ours["purity"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(ours["frequencies"].reshape(9, 4).sum(1), 1.0, rtol=1e-12)
    assert ours["grad"].dtype == np.complex128
