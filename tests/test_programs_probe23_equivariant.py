# ruff: noqa: B007, B023, E731, E741, F841, N806, UP004, UP008  (the programs are kept as their authors wrote them)
"""Geometric and equivariant graph networks written in plain PyTorch, without PyG (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch from the same seed and data, comparing values and gradients, and checking
the symmetries they are built to have (rotation and translation invariance or equivariance, forces summing to
zero, attention summing to one) where PyTorch is missing.

- EGNN (Satorras et al.): E(n)-equivariant coordinate updates by ``index_add_`` over a complete graph from
  ``nonzero``, an energy's forces by ``autograd.grad(create_graph=True)`` and a loss on the forces, a random
  rotation by QR with the sign fix and ``linalg.det``;
- SchNet: Gaussian RBFs, a cosine cutoff, continuous filters, ``cdist`` radius graphs masked by the batch vector
  (``repeat_interleave``, ``fill_diagonal_``), energies pooled by ``scatter_add_``, a force-matching loss;
- GAT and GATv2 with a segment softmax by ``scatter_reduce('amax')`` and ``index_add_``, dropout on the
  attention; GraphSAGE with mean, max, min, product and degree aggregators; GIN with ``BatchNorm1d`` and sum
  and max pooling;
- spherical harmonics to l = 2 by hand (their rotation matrix found by ``lstsq`` is orthogonal) and a tensor
  product by ``einsum`` over the Levi-Civita tensor with a sinusoidal radial basis, forces and their loss;
- DimeNet: triplets k→j→i from the edge list, angles by ``atan2(|a × b|, a · b)`` and by ``acos`` of a clamped
  cosine, a Bessel basis with its polynomial envelope;
- radius and kNN graphs (``cdist``, ``topk``, ``argsort(stable=True)``, ``searchsorted``, ``bincount``,
  ``segment_reduce``), a NequIP-like model trained on energies and forces with ``jit.script`` cutoffs, AMSGrad
  and ReduceLROnPlateau, MACE-like symmetric contractions by ``einsum``, Wigner matrices by ``matrix_exp``;
- where PyTorch has no number: a force field through ``‖x_i - x_j‖`` over all pairs (i = j too) gives NaN
  gradients of its force loss, and forces from ``cdist`` of under 26 atoms cannot be differentiated again.

The library bugs these programs found are tested in tests/test_probe23_equivariant_fixes.py.
"""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch, run_both


def random_rotation(torch, seed=1, dtype=None):
    """A random rotation: QR of a Gaussian matrix, Q's columns signed by R's diagonal, a reflection undone."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(3, 3, generator=g, dtype=dtype or torch.float32)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    if torch.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


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
# GAT, GATv2, GraphSAGE, GIN
# ----------------------------------------------------------------------------------------------


def random_graph(m, n=8, seed=0):
    torch = m.torch
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((n, 5)), dtype=torch.float32)
    edge_index = torch.stack([torch.tensor(rng.integers(0, n, 20)), torch.tensor(rng.integers(0, n, 20))])
    loops = torch.arange(n).repeat(2, 1)
    edge_index = torch.cat([edge_index[:, edge_index[0] != edge_index[1]], loops], dim=1)
    return x, torch.unique(edge_index, dim=1)


def segment_softmax(torch, e, index, n):
    """PyG's softmax over the edges into each node: shifted by the node's max (scatter_reduce amax)."""
    mx = torch.full((n, e.size(1)), float("-inf"), dtype=e.dtype)
    mx = mx.scatter_reduce(0, index.view(-1, 1).expand_as(e), e, reduce="amax", include_self=True)
    ex = (e - mx.index_select(0, index)).exp()
    den = torch.zeros(n, e.size(1), dtype=e.dtype).index_add_(0, index, ex)
    return ex / (den[index] + 1e-16)


def gat(m, v2=False, train=True):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    x, edge_index = random_graph(m)

    class GATConv(nn.Module):
        def __init__(self, fin, heads, out, v2):
            super().__init__()
            self.v2, self.H, self.C = v2, heads, out
            self.lin = nn.Linear(fin, heads * out, bias=False)
            self.lin_r = nn.Linear(fin, heads * out, bias=False) if v2 else None
            self.att_src = nn.Parameter(torch.empty(1, heads, out))
            self.att_dst = nn.Parameter(torch.empty(1, heads, out))
            self.bias = nn.Parameter(torch.zeros(heads * out))
            nn.init.xavier_uniform_(self.att_src)
            nn.init.xavier_uniform_(self.att_dst)

        def forward(self, x, edge_index):
            j, i = edge_index
            xs = self.lin(x).view(-1, self.H, self.C)
            if self.v2:
                e = F.leaky_relu(xs[j] + self.lin_r(x).view(-1, self.H, self.C)[i], 0.2)
                alpha = (e * self.att_src).sum(-1)
            else:
                a_s, a_d = (xs * self.att_src).sum(-1), (xs * self.att_dst).sum(-1)
                alpha = F.leaky_relu(a_s[j] + a_d[i], negative_slope=0.2)
            alpha = segment_softmax(torch, alpha, i, x.size(0))
            alpha = F.dropout(alpha, p=0.3, training=self.training)
            out = torch.zeros(x.size(0), self.H, self.C).index_add_(0, i, xs[j] * alpha.unsqueeze(-1))
            return out.reshape(-1, self.H * self.C) + self.bias, alpha

    conv1, conv2 = GATConv(5, 3, 4, v2), GATConv(12, 1, 2, v2)
    conv1.train(train)
    conv2.train(train)
    h, a1 = conv1(F.dropout(x, 0.2, training=train), edge_index)
    out, a2 = conv2(F.elu(h), edge_index)
    loss = F.cross_entropy(out, torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]))
    loss.backward()
    return {"loss": loss, "out": out, "a1": a1, "edge_index": edge_index,
            "mass": torch.zeros(x.size(0)).index_add_(0, edge_index[1], a2[:, 0]),
            "grads": [p.grad for p in [*conv1.parameters(), *conv2.parameters()]]}


@pytest.mark.parametrize("v2", [False, True], ids=["gat", "gatv2"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gat_segment_softmax(v2, train):
    ours, _ = run_both(gat, v2, train, rtol=1e-5, atol=1e-6)
    if not train:  # the attention into each node sums to 1 (every node has its self loop)
        np.testing.assert_allclose(ours["mass"], 1.0, rtol=1e-6)
    else:  # dropout zeroes some weights and scales the rest by 1 / 0.7
        kept = ours["a1"][ours["a1"] != 0]
        assert 0 < kept.size < ours["a1"].size
    unused = {1, 6} if v2 else set()  # att_dst (own parameters first): GATv2 scores with att_src alone
    assert ours["edge_index"].shape[0] == 2 and all((g is None) == (k in unused) for k, g in enumerate(ours["grads"]))


def sage(m, aggr):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    x, edge_index = random_graph(m, seed=2)
    n = x.size(0)
    lin_l, lin_r = nn.Linear(5, 6), nn.Linear(5, 6, bias=False)
    j, i = edge_index
    msg = x[j]
    idx = i.unsqueeze(-1).expand_as(msg)
    if aggr == "mean":
        agg = torch.zeros(n, 5).scatter_reduce_(0, idx, msg, reduce="mean", include_self=False)
    elif aggr == "max":
        agg = torch.zeros(n, 5).scatter_reduce_(0, idx, msg, reduce="amax", include_self=False)
    elif aggr == "min":
        agg = x.new_zeros(n, 5).scatter_reduce(0, idx, msg, reduce="amin", include_self=False)
    elif aggr == "mul":
        agg = torch.ones(n, 5).scatter_reduce(0, idx, msg, reduce="prod", include_self=True)
    else:
        deg = torch.bincount(i, minlength=n).clamp(min=1).float()
        agg = torch.zeros(n, 5).index_add(0, i, msg) / deg.unsqueeze(-1)
    x.requires_grad_(True)
    out = F.normalize(lin_l(agg) + lin_r(x), p=2.0, dim=-1)
    out.sum().backward()
    return {"agg": agg, "out": out, "x": x, "edge_index": edge_index, "grads": [lin_l.weight.grad, lin_r.weight.grad]}


@pytest.mark.parametrize("aggr", ["mean", "max", "min", "mul", "degree"])
def test_graphsage_aggregators(aggr):
    ours, _ = run_both(sage, aggr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours["out"], axis=-1), 1.0, rtol=1e-6)
    x, (j, i) = ours["x"], ours["edge_index"]
    node = 3
    into = x[j[i == node]]  # by hand, in NumPy
    expected = {"mean": into.mean(0), "max": into.max(0), "min": into.min(0), "mul": into.prod(0),
                "degree": into.sum(0) / len(into)}[aggr]
    np.testing.assert_allclose(ours["agg"][node], expected, rtol=1e-5, atol=1e-6)


def gin(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)
    x, edge_index = random_graph(m, seed=3)
    eps = nn.Parameter(torch.zeros(1))
    mlp = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8))
    agg = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
    h = mlp((1 + eps) * x + agg)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    pooled = torch.zeros(2, 8).index_add_(0, batch, h)
    mx = torch.full((2, 8), -1e9).scatter_reduce(0, batch[:, None].expand(-1, 8), h, "amax")
    loss = pooled.pow(2).mean() + mx.sum()
    loss.backward()
    return {"loss": loss, "h": h, "mx": mx, "eps": eps.grad, "grads": [p.grad for p in mlp.parameters()],
            "running_mean": mlp[1].running_mean}


def test_gin_sum_and_max_pooling():
    ours, _ = run_both(gin, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["mx"], [ours["h"][:3].max(0), ours["h"][3:].max(0)], rtol=1e-6)
    assert ours["eps"].shape == (1,) and not np.allclose(ours["running_mean"], 0)


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
