# ruff: noqa: B007, B008, E731  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and checked
by hand (closed forms, NumPy, finite differences) where PyTorch is missing. Molecules: a SchNet-like potential
(Gaussian radial basis, cosine cutoff, ``index_add`` convolutions) and an E(n)-equivariant network trained by force
matching through ``-grad(E, pos, create_graph=True)``; Lennard-Jones in a periodic box (minimum image by ``round``,
L-BFGS relaxation, virial stress by a strain, ``eigvalsh`` of the Hessian); a 1-D Kohn-Sham SCF unrolled through
``linalg.eigh`` (forces, a mixed second derivative)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

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
