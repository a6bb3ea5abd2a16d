# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Geometric and equivariant graph networks written in plain PyTorch, without PyG (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch from the same seed and data, comparing values and gradients, and checking the
symmetries they are built to have (rotation and translation invariance or equivariance, forces summing to zero,
attention summing to one) where PyTorch is missing. The library bugs these programs found are tested in
tests/test_probe23_equivariant_fixes.py. GAT and GATv2 with a segment softmax by ``scatter_reduce('amax')`` and
``index_add_``, dropout on the attention; GraphSAGE with mean, max, min, product and degree aggregators; GIN with
``BatchNorm1d`` and sum and max pooling."""

import numpy as np
import pytest

from .pytorch_programs import run_both

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
