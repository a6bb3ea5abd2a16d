# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Geometric and equivariant graph networks written in plain PyTorch, without PyG (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch from the same seed and data, comparing values and gradients, and checking the
symmetries they are built to have (rotation and translation invariance or equivariance, forces summing to zero,
attention summing to one) where PyTorch is missing. The library bugs these programs found are tested in
tests/test_probe23_equivariant_fixes.py. EGNN (Satorras et al.): E(n)-equivariant coordinate updates by
``index_add_`` over a complete graph from ``nonzero``, an energy's forces by ``autograd.grad(create_graph=True)`` and
a loss on the forces; SchNet: Gaussian RBFs, a cosine cutoff, continuous filters, ``cdist`` radius graphs masked by
the batch vector (``repeat_interleave``, ``fill_diagonal_``), energies pooled by ``scatter_add_``, a force-matching
loss; where PyTorch has no number: a force field through ``‖x_i - x_j‖`` over all pairs (i = j too) gives NaN
gradients of its force loss, and forces from ``cdist`` of under 26 atoms cannot be differentiated again; radius and
kNN graphs (``cdist``, ``topk``, ``argsort(stable=True)``, ``searchsorted``, ``bincount``, ``segment_reduce``) with
batch vectors; the programs run without PyTorch too; message passing over a CSR adjacency."""

import math

import numpy as np
import pytest

from .probe23_equivariant_common import random_rotation
from .pytorch_programs import OURS, pytorch, run_both

# ----------------------------------------------------------------------------------------------
# EGNN
# ----------------------------------------------------------------------------------------------


def egnn(m, dtype="float32"):
    torch, nn, F = m.torch, m.nn, m.F
    dt = getattr(torch, dtype)
    torch.manual_seed(0)

    class EGCL(nn.Module):
        def __init__(self, h, hid):
            super().__init__()
            self.edge_mlp = nn.Sequential(nn.Linear(2 * h + 1, hid), nn.SiLU(), nn.Linear(hid, hid), nn.SiLU())
            self.node_mlp = nn.Sequential(nn.Linear(h + hid, hid), nn.SiLU(), nn.Linear(hid, h))
            layer = nn.Linear(hid, 1, bias=False)
            torch.nn.init.xavier_uniform_(layer.weight, gain=0.001)
            self.coord_mlp = nn.Sequential(nn.Linear(hid, hid), nn.SiLU(), layer)

        def forward(self, h, x, row, col):
            diff = x[row] - x[col]
            radial = torch.sum(diff ** 2, 1).unsqueeze(1)
            e = self.edge_mlp(torch.cat([h[row], h[col], radial], dim=1))
            trans = diff * self.coord_mlp(e)
            agg = torch.zeros(x.size(0), 3, dtype=x.dtype).index_add_(0, row, trans)
            cnt = torch.zeros(x.size(0), 3, dtype=x.dtype).index_add_(0, row, torch.ones_like(trans)).clamp(min=1)
            x = x + agg / cnt
            aggh = h.new_zeros(h.size(0), e.size(1)).scatter_add_(0, row.unsqueeze(1).expand(-1, e.size(1)), e)
            h = h + self.node_mlp(torch.cat([h, aggh], 1))
            return h, x

    layers = nn.ModuleList([EGCL(4, 16), EGCL(4, 16)]).to(dt)
    rng = np.random.default_rng(0)
    pos = torch.tensor(rng.standard_normal((6, 3)), dtype=dt)
    h = torch.tensor(rng.standard_normal((6, 4)), dtype=dt)
    n = pos.shape[0]
    adj = torch.ones(n, n) - torch.eye(n)
    row, col = adj.nonzero(as_tuple=True)

    def energy(pos, h):
        x = pos
        for layer in layers:
            h, x = layer(h, x, row, col)
        return h.sum() + ((x - pos) ** 2).sum(), h, x

    pos.requires_grad_(True)
    E, h_out, x_out = energy(pos, h)
    forces = -torch.autograd.grad(E, pos, create_graph=True)[0]
    loss = (forces ** 2).sum()
    loss.backward()
    Q = random_rotation(torch, dtype=dt)
    t = torch.tensor([0.3, -1.0, 2.0], dtype=dt)
    with torch.no_grad():
        _, h_moved, x_moved = energy(pos @ Q.T + t, h)
    return {"E": E, "forces": forces, "loss": loss, "Q": Q, "det": torch.linalg.det(Q),
            "grads": [None if p.grad is None else p.grad.clone() for p in layers.parameters()],
            "invariance": (h_moved - h_out).abs().max(), "equivariance": (x_moved - (x_out @ Q.T + t)).abs().max(),
            "rotated_forces": (forces.detach() @ Q.T), "net_force": forces.detach().sum(0)}


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [("float32", 2e-4, 2e-5), ("float64", 1e-9, 1e-11)])
def test_egnn_forces_and_equivariance(dtype, rtol, atol):
    ours, _ = run_both(egnn, dtype, rtol=rtol, atol=atol)
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert ours["det"] == pytest.approx(1.0, abs=tol) and np.allclose(ours["Q"] @ ours["Q"].T, np.eye(3), atol=tol)
    assert ours["invariance"] < tol and ours["equivariance"] < tol
    np.testing.assert_allclose(ours["net_force"], 0.0, atol=tol * 10)  # translation invariance: Σ F = 0
    # the second layer's node MLP's last bias moves no force: its gradient is None, as PyTorch's (11 per layer)
    assert [i for i, g in enumerate(ours["grads"]) if g is None] == [11 + 7]
    assert ours["loss"] == pytest.approx(float((ours["forces"] ** 2).sum()), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# SchNet
# ----------------------------------------------------------------------------------------------


def schnet(m, dtype="float32"):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    sizes = [5, 3, 4]
    pos = torch.tensor(rng.standard_normal((sum(sizes), 3)) * 1.2, dtype=getattr(torch, dtype))
    z = torch.tensor(rng.integers(1, 5, sum(sizes)))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    cutoff = 2.5

    class GaussianSmearing(nn.Module):
        def __init__(self, start=0.0, stop=5.0, num_gaussians=12):
            super().__init__()
            offset = torch.linspace(start, stop, num_gaussians)
            self.coeff = -0.5 / (offset[1] - offset[0]).item() ** 2
            self.register_buffer("offset", offset)

        def forward(self, dist):
            dist = dist.view(-1, 1) - self.offset.view(1, -1)
            return torch.exp(self.coeff * torch.pow(dist, 2))

    class ShiftedSoftplus(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = torch.log(torch.tensor(2.0)).item()

        def forward(self, x):
            return F.softplus(x) - self.shift

    class CFConv(nn.Module):
        def __init__(self, h, f, g):
            super().__init__()
            self.lin1 = nn.Linear(h, f, bias=False)
            self.lin2 = nn.Linear(f, h)
            self.mlp = nn.Sequential(nn.Linear(g, f), ShiftedSoftplus(), nn.Linear(f, f))

        def forward(self, x, edge_index, edge_weight, edge_attr):
            C = 0.5 * (torch.cos(edge_weight * math.pi / cutoff) + 1.0)
            C = C * (edge_weight < cutoff).to(edge_weight.dtype)
            W = self.mlp(edge_attr) * C.view(-1, 1)
            x = self.lin1(x)
            out = torch.zeros_like(x).index_add(0, edge_index[1], x[edge_index[0]] * W)
            return self.lin2(out)

    class SchNet(nn.Module):
        def __init__(self, h=16, f=16, g=12):
            super().__init__()
            self.embedding = nn.Embedding(10, h)
            self.distance_expansion = GaussianSmearing(0.0, cutoff, g)
            self.interactions = nn.ModuleList([CFConv(h, f, g) for _ in range(2)])
            self.act = ShiftedSoftplus()
            self.lin1, self.lin2 = nn.Linear(h, h // 2), nn.Linear(h // 2, 1)

        def forward(self, z, pos, batch):
            h = self.embedding(z)
            d = torch.cdist(pos, pos)
            mask = (d < cutoff) & (batch[:, None] == batch[None, :])
            mask.fill_diagonal_(False)
            edge_index = mask.nonzero().t()
            edge_weight = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
            edge_attr = self.distance_expansion(edge_weight)
            for interaction in self.interactions:
                h = h + interaction(self.act(h), edge_index, edge_weight, edge_attr)
            h = self.lin2(self.act(self.lin1(h)))
            E = torch.zeros(int(batch.max()) + 1, 1, dtype=h.dtype).scatter_add_(0, batch.view(-1, 1), h)
            return E.squeeze(-1), edge_index

    model = SchNet().to(pos.dtype)
    pos.requires_grad_(True)
    E, edge_index = model(z, pos, batch)
    forces = -torch.autograd.grad(E.sum(), pos, create_graph=True)[0]
    loss = F.mse_loss(forces, torch.zeros_like(forces)) + E.pow(2).mean()
    loss.backward()
    return {"E": E, "edge_index": edge_index, "forces": forces, "loss": loss, "counts": torch.bincount(batch),
            "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None}}


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [("float32", 2e-4, 1e-5), ("float64", 1e-9, 1e-11)])
def test_schnet_cfconv_forces(dtype, rtol, atol):
    ours, _ = run_both(schnet, dtype, rtol=rtol, atol=atol)
    assert ours["counts"].tolist() == [5, 3, 4]
    src, dst = ours["edge_index"]
    assert (src != dst).all() and ours["edge_index"].dtype == np.int64
    groups = np.repeat([0, 1, 2], [5, 3, 4])
    assert (groups[src] == groups[dst]).all()  # no edge between molecules
    for k in range(3):  # translation invariance per molecule: its forces sum to zero
        np.testing.assert_allclose(ours["forces"][groups == k].sum(0), 0.0, atol=1e-4)
    assert len(ours["grads"]) == 19 and (ours["grads"]["embedding.weight"][0] == 0).all()  # (no atom of type 0)


# ----------------------------------------------------------------------------------------------
# radius and kNN graphs, batching
# ----------------------------------------------------------------------------------------------


def radius_and_knn_graphs(m):
    torch = m.torch
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(12, 3, generator=g) * 3
    batch = torch.tensor([0] * 5 + [1] * 7)
    counts = torch.bincount(batch, minlength=3)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(torch.bincount(batch), 0)])
    d = torch.cdist(pos, pos)
    same = batch.unsqueeze(0) == batch.unsqueeze(1)
    row, col = torch.where((d <= 1.5) & same & ~torch.eye(12, dtype=torch.bool))
    order = torch.argsort(row * 100 + d[row, col], stable=True)  # by source, then by distance
    row, col = row[order], col[order]
    degree = torch.bincount(row, minlength=12)
    rank = torch.arange(row.numel()) - (torch.cumsum(degree, 0) - degree)[row]
    keep = rank < 4  # at most 4 neighbours each
    dm = d.masked_fill(~same, float("inf"))
    dm.fill_diagonal_(float("inf"))
    knn_d, knn = dm.topk(3, dim=1, largest=False, sorted=True)
    centred = torch.cat([s - s.mean(0, keepdim=True) for s in torch.split(pos, counts.tolist()[:2])])
    mean_pool = torch.zeros(2, 3).index_add_(0, batch, pos) / torch.bincount(batch).unsqueeze(1)
    return {"row": row[keep], "col": col[keep], "knn": knn, "knn_d": knn_d, "counts": counts, "ptr": ptr,
            "centred": centred, "mean_pool": mean_pool, "pos": pos,
            "segment_mean": torch.segment_reduce(pos, "mean", lengths=torch.bincount(batch)),
            "batch_again": torch.searchsorted(ptr[1:], torch.arange(12), right=True)}


def test_radius_and_knn_graphs_with_batch_vectors():
    ours, _ = run_both(radius_and_knn_graphs)
    assert ours["counts"].tolist() == [5, 7, 0] and ours["ptr"].tolist() == [0, 5, 12]
    assert ours["batch_again"].tolist() == [0] * 5 + [1] * 7
    np.testing.assert_allclose(ours["segment_mean"], ours["mean_pool"], rtol=1e-6)
    np.testing.assert_allclose(ours["centred"][:5].sum(0), 0.0, atol=1e-5)
    pos, row, col = ours["pos"], ours["row"], ours["col"]
    assert (np.linalg.norm(pos[row] - pos[col], axis=1) <= 1.5 + 1e-6).all() and (np.bincount(row) <= 4).all()
    assert ((ours["knn"] < 5) == (np.arange(12) < 5)[:, None]).all()  # neighbours from the node's own graph
    assert (np.diff(ours["knn_d"], axis=1) >= 0).all()


# ----------------------------------------------------------------------------------------------
# where PyTorch gives no number: NaN and NotImplementedError
# ----------------------------------------------------------------------------------------------


def dense_pair_force_field(m, kind):
    """A pair potential over every (i, j), the diagonal's zero distances masked out only after the norm:
    the forces are finite, and their loss's gradient NaN in PyTorch (the norm's second derivative at 0)."""
    torch, F = m.torch, m.F
    pos = torch.tensor([[0.0, 0, 0], [1, 2, 2], [0.5, -1, 1]], dtype=torch.float64, requires_grad=True)
    diff = pos[:, None] - pos[None]
    if kind == "norm":
        r = diff.norm(dim=-1)
    elif kind == "vector_norm":
        r = torch.linalg.vector_norm(diff, dim=-1)
    else:  # unit vectors by F.normalize: their second derivative at 0 too
        r = (F.normalize(diff, dim=-1) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum(-1)
    off = ~torch.eye(3, dtype=torch.bool)
    E = torch.where(off, torch.exp(-r), torch.zeros_like(r)).sum()
    forces = -torch.autograd.grad(E, pos, create_graph=True)[0]
    (forces ** 2).sum().backward()
    return {"forces": forces, "grad": pos.grad}


@pytest.mark.parametrize("kind", ["norm", "vector_norm", "normalize"])
def test_dense_pair_force_field_second_derivative_is_nan_at_zero_distance(kind):
    ours, _ = run_both(dense_pair_force_field, kind, rtol=1e-10, atol=1e-12)
    assert np.isfinite(ours["forces"]).all() and np.isnan(ours["grad"]).all()
    if kind != "normalize":  # the forces themselves are the pair sums, by hand
        pos = np.array([[0.0, 0, 0], [1, 2, 2], [0.5, -1, 1]])
        diff = pos[:, None] - pos[None]
        r = np.linalg.norm(diff, axis=-1) + np.eye(3)
        expected = (2 * np.exp(-r)[..., None] * diff / r[..., None] * (1 - np.eye(3))[..., None]).sum(1)
        np.testing.assert_allclose(ours["forces"], expected, rtol=1e-12)


def cdist_force_loss(m, atoms):
    torch = m.torch
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(atoms, 3, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.cdist(pos, pos) + torch.eye(atoms, dtype=torch.float64)
    E = (torch.exp(-r) * (1 - torch.eye(atoms, dtype=torch.float64))).sum()
    forces = -torch.autograd.grad(E, pos, create_graph=True)[0]
    try:
        (forces ** 2).sum().backward()
    except NotImplementedError as error:
        return {"forces": forces, "error": str(error)}
    return {"forces": forces, "grad": pos.grad}


def test_cdist_forces_have_no_second_derivative_below_26_atoms():
    ours, _ = run_both(cdist_force_loss, 5)
    assert ours["error"] == "the derivative for '_cdist_backward' is not implemented."
    np.testing.assert_allclose(ours["forces"].sum(0), 0.0, atol=1e-12)
    # from 26 atoms on, cdist takes its matrix-product path, which PyTorch differentiates twice
    ours, _ = run_both(cdist_force_loss, 30, rtol=1e-6, atol=1e-8)
    assert "grad" in ours and np.isfinite(ours["grad"]).all()


def test_programs_run_without_pytorch_too():
    """The helper the programs share runs on chainrule alone (as on CI, where PyTorch is missing)."""
    ours = radius_and_knn_graphs(OURS)
    assert ours["ptr"].tolist() == [0, 5, 12]
    if pytorch() is None:
        pytest.skip("PyTorch is not installed: the comparisons above ran on chainrule only")


def csr_message_passing(m):
    """Message passing by a CSR adjacency (PyTorch's compressed sparse rows), gradients to its values."""
    torch = m.torch
    values = torch.tensor([1.0, 2, 3, 4, 5], requires_grad=True)
    A = torch.sparse_csr_tensor(torch.tensor([0, 2, 3, 5]), torch.tensor([0, 2, 1, 0, 2]), values, (3, 3))
    X = torch.arange(6.0).view(3, 2).requires_grad_()
    Y = A @ X
    Y.pow(2).sum().backward()
    return {"Y": Y, "values": values.grad, "X": X.grad, "dense": A.to_dense()}


def test_csr_adjacency_message_passing():
    ours, _ = run_both(csr_message_passing)
    np.testing.assert_allclose(ours["dense"], [[1, 0, 2], [0, 3, 0], [4, 0, 5]])
