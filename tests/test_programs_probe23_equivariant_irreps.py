# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Geometric and equivariant graph networks written in plain PyTorch, without PyG (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch from the same seed and data, comparing values and gradients, and checking the
symmetries they are built to have (rotation and translation invariance or equivariance, forces summing to zero,
attention summing to one) where PyTorch is missing. The library bugs these programs found are tested in
tests/test_probe23_equivariant_fixes.py. Spherical harmonics to l = 2 by hand (their rotation matrix found by
``lstsq`` is orthogonal) and a tensor product by ``einsum`` over the Levi-Civita tensor with a sinusoidal radial
basis, forces and their loss; DimeNet: triplets k→j→i from the edge list, angles by ``atan2(|a × b|, a · b)`` and by
``acos`` of a clamped cosine, a Bessel basis with its polynomial envelope; a NequIP-like model trained on energies
and forces with ``jit.script`` cutoffs, AMSGrad and ReduceLROnPlateau, MACE-like symmetric contractions by
``einsum``, Wigner matrices by ``matrix_exp``."""

import math

import numpy as np
import pytest

from .probe23_equivariant_common import random_rotation
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# spherical harmonics, tensor products, DimeNet's angles
# ----------------------------------------------------------------------------------------------


def spherical_harmonics(torch, vec):
    """Real spherical harmonics l = 0, 1, 2 of unit vectors (e3nn's 'component' normalisation)."""
    vec = vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    x, y, z = vec.unbind(-1)
    s15, s5 = math.sqrt(15.0), math.sqrt(5.0)
    l2 = torch.stack([s15 * x * z, s15 * x * y, s5 * (y ** 2 - 0.5 * (x ** 2 + z ** 2)), s15 * y * z,
                      s15 / 2 * (z ** 2 - x ** 2)], -1)
    return torch.cat([torch.ones_like(x)[..., None], math.sqrt(3.0) * torch.stack([x, y, z], -1), l2], -1)


def harmonics_under_rotation(m):
    torch = m.torch
    g = torch.Generator().manual_seed(5)
    v = torch.randn(50, 3, generator=g, dtype=torch.float64)
    Q = random_rotation(torch, seed=6, dtype=torch.float64)
    Y, YR = spherical_harmonics(torch, v), spherical_harmonics(torch, v @ Q.T)
    D = torch.linalg.lstsq(Y, YR).solution  # Y(Rv) = Y(v) D: the Wigner matrices, block diagonal
    return {"Y": Y, "D": D, "residual": (Y @ D - YR).abs().max(), "Q": Q}


def test_spherical_harmonics_rotate_by_an_orthogonal_block_diagonal_matrix():
    ours, _ = run_both(harmonics_under_rotation, rtol=1e-9, atol=1e-10)
    D = ours["D"]
    assert ours["residual"] < 1e-10
    np.testing.assert_allclose(D.T @ D, np.eye(9), atol=1e-10)
    np.testing.assert_allclose(D[1:4, 1:4], ours["Q"].T, atol=1e-10)  # l = 1 rotates as the vector itself
    assert np.abs(D[0, 1:]).max() < 1e-10 and np.abs(D[1:4, 4:]).max() < 1e-10  # no mixing of degrees
    np.testing.assert_allclose((ours["Y"] ** 2)[:, 1:4].sum(1), 3.0)  # component normalisation


def tensor_product(m, dtype="float64"):
    torch, nn = m.torch, m.nn
    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, k = 7, 3
    pos = torch.tensor(rng.standard_normal((n, 3)), dtype=dt, requires_grad=True)
    knn = torch.cdist(pos, pos).topk(k + 1, largest=False).indices[:, 1:]
    row, col = torch.arange(n).repeat_interleave(k), knn.reshape(-1)
    vec = pos[col] - pos[row]
    Y = spherical_harmonics(torch, vec)
    eps = torch.zeros(3, 3, 3, dtype=dt)
    eps[0, 1, 2] = eps[1, 2, 0] = eps[2, 0, 1] = 1
    eps[0, 2, 1] = eps[2, 1, 0] = eps[1, 0, 2] = -1
    feats = torch.tensor(rng.standard_normal((n, 4, 3)), dtype=dt)  # 4 channels of vectors
    W = nn.Parameter(torch.randn(4, 4, dtype=dt) / 2)
    f_j, y1 = feats[col], Y[:, 1:4]
    out0 = torch.einsum("eci,ei->ec", f_j, y1)  # 1 ⊗ 1 → 0
    out1 = torch.einsum("cd,edi->eci", W, torch.einsum("ijk,ecj,ek->eci", eps, f_j, y1))  # 1 ⊗ 1 → 1
    r = vec.norm(dim=-1)
    radial = torch.sin(math.pi * r[:, None] * torch.arange(1, 5, dtype=dt) / 3.0) / r[:, None]
    agg1 = torch.zeros(n, 4, 3, dtype=dt).index_add_(0, row, out1 * radial[:, :, None])
    agg0 = torch.zeros(n, 4, dtype=dt).index_add_(0, row, out0 * radial)
    E = (agg0 ** 2).sum() + agg1.norm(dim=-1).sum()
    forces = torch.autograd.grad(E, pos, create_graph=True)[0]
    forces.pow(2).sum().backward()
    return {"knn": knn, "E": E, "forces": forces, "W": W.grad, "pos": pos.grad}


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [("float32", 1e-4, 1e-5), ("float64", 1e-9, 1e-10)])
def test_tensor_product_by_einsum_with_forces(dtype, rtol, atol):
    ours, _ = run_both(tensor_product, dtype, rtol=rtol, atol=atol)
    np.testing.assert_allclose(ours["forces"].sum(0), 0.0, atol=1e-3 if dtype == "float32" else 1e-10)
    assert ours["knn"].shape == (7, 3) and (ours["knn"] != np.arange(7)[:, None]).all()


def dimenet_angles(m, dtype="float64"):
    torch, F = m.torch, m.F
    dt = getattr(torch, dtype)
    rng = np.random.default_rng(4)
    pos = torch.tensor(rng.standard_normal((6, 3)), dtype=dt, requires_grad=True)
    n, cutoff = 6, 3.0
    adj = (torch.cdist(pos, pos) < cutoff) & ~torch.eye(n, dtype=torch.bool)
    row, col = adj.nonzero(as_tuple=True)  # edge j → i as (row = i, col = j)
    # triplets k → j → i: edge (i, j) and edge (j, k), with k ≠ i
    e_ji, e_kj = ((col[:, None] == row[None, :]) & (row[:, None] != col[None, :])).nonzero(as_tuple=True)
    i, j, k = row[e_ji], col[e_ji], col[e_kj]
    pos_ji, pos_kj = pos[i] - pos[j], pos[k] - pos[j]
    angle = torch.atan2(torch.cross(pos_ji, pos_kj, dim=-1).norm(dim=-1), (pos_ji * pos_kj).sum(-1))
    angle2 = torch.acos(F.cosine_similarity(pos_ji, pos_kj, dim=-1).clamp(-1 + 1e-7, 1 - 1e-7))
    dist = (pos[row] - pos[col]).pow(2).sum(-1).sqrt()
    x, p = dist / cutoff, 6
    envelope = 1 / x - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    rbf = envelope[:, None] * torch.sin(torch.arange(1, 5, dtype=dt) * math.pi * x[:, None])
    cbf = torch.stack([torch.cos(l * angle) for l in range(3)], -1)
    agg = torch.zeros(row.numel(), 4, 3, dtype=dt).index_add_(0, e_ji, rbf[e_kj][:, :, None] * cbf[:, None, :])
    E = agg.sum() + rbf.sum()
    forces = torch.autograd.grad(E, pos, create_graph=True)[0]
    forces.square().sum().backward()
    return {"angle": angle, "angle2": angle2, "E": E, "forces": forces, "grad": pos.grad, "ijk": torch.stack([i, j, k])}


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [("float32", 1e-4, 1e-4), ("float64", 1e-9, 1e-10)])
def test_dimenet_triplet_angles(dtype, rtol, atol):
    ours, _ = run_both(dimenet_angles, dtype, rtol=rtol, atol=atol)
    np.testing.assert_allclose(ours["angle"], ours["angle2"], atol=1e-3 if dtype == "float32" else 1e-6)
    assert ((ours["angle"] >= 0) & (ours["angle"] <= math.pi)).all()
    i, j, k = ours["ijk"]
    assert (i != k).all() and (i != j).all() and (j != k).all() and len(i) > 0


# ----------------------------------------------------------------------------------------------
# a NequIP-like model trained on energies and forces; MACE's contractions; Wigner matrices
# ----------------------------------------------------------------------------------------------


def nequip_like(m, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def cosine_cutoff(r: torch.Tensor, r_max: float) -> torch.Tensor:
        return 0.5 * (torch.cos(math.pi * r / r_max) + 1.0) * (r < r_max).float()

    def poly_cutoff(x: torch.Tensor, factor: float, p: float = 6.0) -> torch.Tensor:
        x = x * factor
        out = 1.0
        out = out - (((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(x, p))
        out = out + (p * (p + 2.0) * torch.pow(x, p + 1.0))
        out = out - ((p * (p + 1.0) / 2) * torch.pow(x, p + 2.0))
        return out * (x < 1.0)

    class BesselBasis(nn.Module):
        def __init__(self, r_max, num_basis=8):
            super().__init__()
            self.r_max, self.prefactor = float(r_max), 2.0 / r_max
            self.bessel_weights = nn.Parameter(torch.linspace(1.0, num_basis, num_basis) * math.pi)

        def forward(self, x):
            return self.prefactor * torch.sin(self.bessel_weights * x.unsqueeze(-1) / self.r_max) / x.unsqueeze(-1)

    class Interaction(nn.Module):
        def __init__(self, mul, nb):
            super().__init__()
            self.radial = nn.Sequential(nn.Linear(nb, 16), nn.SiLU(), nn.Linear(16, 3 * mul))
            self.lin0 = nn.Linear(mul, mul, bias=False)
            self.lin1 = nn.Parameter(torch.randn(mul, mul) / math.sqrt(mul))
            self.mul = mul

        def forward(self, h0, h1, src, dst, Y, rbf, cut):
            w00, w01, w10 = (self.radial(rbf) * cut[:, None]).split(self.mul, dim=-1)
            m0 = w00 * h0[src] * Y[:, :1] + w10 * torch.einsum("eci,ei->ec", h1[src], Y[:, 1:4]) / math.sqrt(3)
            m1 = w01[:, :, None] * h0[src][:, :, None] * Y[:, None, 1:4]
            a0 = torch.zeros_like(h0).index_add_(0, dst, m0)
            a1 = torch.zeros_like(h1).index_add_(0, dst, m1)
            h0 = h0 + F.silu(self.lin0(a0))
            return h0, h1 + torch.einsum("cd,ndi->nci", self.lin1, a1) * torch.sigmoid(h0)[:, :, None]

    class Model(nn.Module):
        def __init__(self, mul=6, nb=8, r_max=2.5):
            super().__init__()
            self.embed = nn.Embedding(5, mul)
            self.basis = BesselBasis(r_max, nb)
            self.layers = nn.ModuleList([Interaction(mul, nb) for _ in range(2)])
            self.readout = nn.Linear(mul, 1)
            self.r_max = r_max
            self.register_buffer("scale", torch.tensor(1.7))
            self.register_buffer("shift", torch.tensor(-0.3))

        def forward(self, data):
            pos, z, batch, edge_index = data["pos"], data["z"], data["batch"], data["edge_index"]
            vec = pos[edge_index[1]] - pos[edge_index[0]]
            r = torch.linalg.norm(vec, dim=-1)
            cut = poly_cutoff(r, 1.0 / self.r_max) * cosine_cutoff(r, self.r_max)
            unit = F.normalize(vec, dim=-1)
            Y = torch.cat([torch.ones_like(unit[:, :1]), math.sqrt(3) * unit[:, [1, 2, 0]]], dim=-1)  # e3nn's y, z, x
            h0 = self.embed(z)
            h1 = torch.zeros(h0.shape[0], h0.shape[1], 3, dtype=pos.dtype)
            for layer in self.layers:
                h0, h1 = layer(h0, h1, edge_index[0], edge_index[1], Y, self.basis(r), cut)
            e_atom = self.readout(h0).squeeze(-1) * self.scale + self.shift
            return torch.zeros(int(batch.max()) + 1, dtype=pos.dtype).scatter_add(0, batch, e_atom)

    rng = np.random.default_rng(7)
    pos = torch.tensor(rng.standard_normal((9, 3)), dtype=torch.float32)
    z = torch.tensor(rng.integers(0, 5, 9))
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([4, 5]))
    d = torch.cdist(pos, pos)
    edge_index = torch.stack(torch.nonzero((batch[:, None] == batch[None, :]) & (d < 2.5) & (d > 0), as_tuple=True))
    E_ref, F_ref = torch.tensor([1.0, -2.0]), torch.tensor(rng.standard_normal((9, 3)) * 0.1, dtype=torch.float32)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    losses = []
    for step in range(steps):
        p = pos.clone().requires_grad_(True)
        E = model({"pos": p, "z": z, "batch": batch, "edge_index": edge_index})
        forces = -torch.autograd.grad(E.sum(), p, create_graph=True)[0]
        loss = F.mse_loss(E, E_ref) + 10 * F.mse_loss(forces, F_ref)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step(loss.item())
        losses.append(loss.detach())
    return {"losses": losses, "params": [p.detach() for p in model.parameters()], "lr": opt.param_groups[0]["lr"],
            "edges": edge_index.shape[1]}


def test_nequip_like_training_on_energies_and_forces():
    ours, _ = run_both(nequip_like, rtol=2e-4, atol=2e-5)
    assert ours["losses"][-1] < ours["losses"][0] and ours["edges"] > 0 and ours["lr"] in (1e-2, 5e-3)


def mace_contractions(m, dtype="float64"):
    torch, nn, F = m.torch, m.nn, m.F
    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    n, c, elements = 6, 4, 3
    A = torch.randn(n, c, 9, dtype=dt, requires_grad=True)  # l = 0, 1, 2 features: 1 + 3 + 5
    onehot = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), elements).to(dt)
    U2, U3 = torch.randn(9, 9, 3, dtype=dt), torch.randn(9, 9, 9, 2, dtype=dt)
    W2, W3 = nn.Parameter(torch.randn(elements, 3, c, dtype=dt)), nn.Parameter(torch.randn(elements, 2, c, dtype=dt))
    out = torch.einsum("bcijk,bck->bcij", torch.einsum("ijkp,epc,be->bcijk", U3, W3, onehot), A)
    out = out + torch.einsum("ijp,epc,be->bcij", U2, W2, onehot)
    B = torch.einsum("bci,bci->bc", torch.einsum("bcij,bcj->bci", out, A), A)
    e1 = torch.einsum("...i,...i", A, A)
    e2 = torch.einsum("b...i,i->b...", A, torch.arange(9, dtype=dt))
    e3 = torch.einsum(A, [0, 1, 2], A, [0, 1, 3], [0, 2, 3])
    (B.pow(2).sum() + e1.sum() + e2.sum() + e3.sum()).backward()
    return {"B": B, "e1": e1, "e2": e2, "e3": e3, "trace": torch.einsum("ii", U2[:, :, 0]),
            "diag": torch.einsum("iij->ij", U2), "A": A.detach(), "U2": U2, "grads": [A.grad, W2.grad, W3.grad]}


def test_mace_symmetric_contractions_by_einsum():
    ours, _ = run_both(mace_contractions, rtol=1e-9, atol=1e-8)
    A, U2 = ours["A"], ours["U2"]
    np.testing.assert_allclose(ours["e1"], (A * A).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(ours["e3"], np.einsum("bci,bcj->bij", A, A), rtol=1e-10)
    assert ours["trace"] == pytest.approx(np.trace(U2[:, :, 0]))
    np.testing.assert_allclose(ours["diag"], np.einsum("iij->ij", U2))


def wigner_by_matrix_exp(m):
    torch = m.torch
    Jy = torch.tensor([[0.0, 0, 1], [0, 0, 0], [-1, 0, 0]], dtype=torch.float64)
    Jz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    angles = torch.tensor([[0.3, 1.2, 2.0], [1e-8, 0.4, math.pi]], dtype=torch.float64, requires_grad=True)
    a, b, c = angles.unbind(-1)
    R = (torch.linalg.matrix_exp(a[:, None, None] * Jz) @ torch.linalg.matrix_exp(b[:, None, None] * Jy)
         @ torch.linalg.matrix_exp(c[:, None, None] * Jz))
    beta = torch.acos(R[:, 2, 2].clamp(-1, 1))
    alpha = torch.atan2(R[:, 1, 2], R[:, 0, 2])
    L = (R @ torch.tensor([0.3, 0.4, 0.5], dtype=torch.float64)).pow(3).sum() + beta.sum() + alpha.sum()
    g = torch.autograd.grad(L, angles, create_graph=True)[0]
    return {"R": R, "det": torch.linalg.det(R), "beta": beta, "alpha": alpha, "g": g,
            "gg": torch.autograd.grad(g.pow(2).sum(), angles)[0]}


def test_wigner_matrices_by_matrix_exp_and_their_euler_angles():
    ours, _ = run_both(wigner_by_matrix_exp, rtol=1e-7, atol=1e-9)
    R = ours["R"]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(ours["det"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(ours["beta"], [1.2, 0.4], rtol=1e-10)  # ZYZ Euler angles read back
    np.testing.assert_allclose(ours["alpha"], [0.3, 1e-8], rtol=1e-6, atol=1e-12)
