# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Graph utilities as PyG writes them, without PyG (see tests/pytorch_programs.py), each run on chainrule
and on PyTorch, comparing values and gradients.

Edge-list housekeeping (``coalesce`` by a linear key with ``torch.unique(..., return_inverse=True)`` and
``scatter_add``, ``remove_self_loops``, ``to_undirected``, ``degree``); CSR pointers by
``torch.searchsorted`` / ``bucketize`` and ``segment_reduce`` over them; ``to_dense_batch`` and
``to_dense_adj`` by index assignment; DiffPool's dense pooling (softmax assignments, ``s^T A s``, the
link-prediction and entropy regularisers); TopK pooling (a per-graph top-k by a stable sort on
``batch`` and score, ``cumsum`` offsets); and Laplacian positional encodings by ``torch.linalg.eigh``."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def utils(m):
    torch = m.torch

    def maybe_num_nodes(edge_index, num_nodes=None):
        return int(edge_index.max()) + 1 if num_nodes is None else num_nodes

    def coalesce(edge_index, edge_attr=None, num_nodes=None, reduce='sum'):
        num_nodes = maybe_num_nodes(edge_index, num_nodes)
        idx = edge_index[0] * num_nodes + edge_index[1]
        unique, inverse = torch.unique(idx, sorted=True, return_inverse=True)
        edge_index = torch.stack([unique // num_nodes, unique % num_nodes], dim=0)
        if edge_attr is not None:
            out = edge_attr.new_zeros((unique.numel(),) + edge_attr.shape[1:])
            out = out.scatter_reduce(0, inverse.view(-1, *([1] * (edge_attr.dim() - 1))).expand_as(edge_attr),
                                     edge_attr, reduce=reduce, include_self=False)
            return edge_index, out
        return edge_index

    def remove_self_loops(edge_index, edge_attr=None):
        mask = edge_index[0] != edge_index[1]
        edge_index = edge_index[:, mask]
        return edge_index if edge_attr is None else (edge_index, edge_attr[mask])

    def to_undirected(edge_index, edge_attr=None, num_nodes=None):
        row, col = edge_index[0], edge_index[1]
        row, col = torch.cat([row, col], dim=0), torch.cat([col, row], dim=0)
        edge_index = torch.stack([row, col], dim=0)
        if edge_attr is not None:
            edge_attr = torch.cat([edge_attr, edge_attr], dim=0)
        return coalesce(edge_index, edge_attr, num_nodes)

    def degree(index, num_nodes=None, dtype=None):
        N = maybe_num_nodes(index.view(1, -1), num_nodes)
        out = torch.zeros((N,), dtype=dtype, device=index.device)
        one = torch.ones((index.size(0),), dtype=out.dtype, device=out.device)
        return out.scatter_add_(0, index, one)

    def index2ptr(index, size):
        return torch.searchsorted(index, torch.arange(size + 1, device=index.device), right=False)

    def to_dense_batch(x, batch, fill_value=0.0, max_num_nodes=None):
        batch_size = int(batch.max()) + 1
        num_nodes = torch.zeros(batch_size, dtype=torch.long).scatter_add_(0, batch, torch.ones_like(batch))
        cum_nodes = torch.cat([batch.new_zeros(1), num_nodes.cumsum(dim=0)])
        if max_num_nodes is None:
            max_num_nodes = int(num_nodes.max())
        idx = torch.arange(batch.size(0), device=x.device)
        idx = (idx - cum_nodes[batch]) + (batch * max_num_nodes)
        size = [batch_size * max_num_nodes] + list(x.size())[1:]
        out = x.new_full(size, fill_value)
        out[idx] = x
        out = out.view([batch_size, max_num_nodes] + list(x.size())[1:])
        mask = torch.zeros(batch_size * max_num_nodes, dtype=torch.bool, device=x.device)
        mask[idx] = 1
        mask = mask.view(batch_size, max_num_nodes)
        return out, mask

    def to_dense_adj(edge_index, batch, edge_attr=None, max_num_nodes=None):
        batch_size = int(batch.max()) + 1
        one = batch.new_ones(batch.size(0))
        num_nodes = torch.zeros(batch_size, dtype=torch.long).scatter_add(0, batch, one)
        cum_nodes = torch.cat([batch.new_zeros(1), num_nodes.cumsum(dim=0)])
        idx0 = batch[edge_index[0]]
        idx1 = edge_index[0] - cum_nodes[batch][edge_index[0]]
        idx2 = edge_index[1] - cum_nodes[batch][edge_index[1]]
        if max_num_nodes is None:
            max_num_nodes = int(num_nodes.max())
        if edge_attr is None:
            edge_attr = torch.ones(idx0.numel(), device=edge_index.device)
        size = [batch_size, max_num_nodes, max_num_nodes] + list(edge_attr.size())[1:]
        flattened_size = batch_size * max_num_nodes * max_num_nodes
        idx = idx0 * max_num_nodes * max_num_nodes + idx1 * max_num_nodes + idx2
        adj = torch.zeros(flattened_size, dtype=edge_attr.dtype).index_add_(0, idx, edge_attr)
        return adj.view(size)

    return dict(coalesce=coalesce, remove_self_loops=remove_self_loops, to_undirected=to_undirected,
                degree=degree, index2ptr=index2ptr, to_dense_batch=to_dense_batch, to_dense_adj=to_dense_adj)


def housekeeping(m):
    torch = m.torch
    u = utils(m)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 0, 1], [1, 0, 2, 2, 1, 4, 4, 0, 2]])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], dtype=torch.float64, requires_grad=True)
    ei, ew = u["remove_self_loops"](edge_index, weight)
    ei_c, ew_sum = u["coalesce"](ei, ew, num_nodes=5)
    _, ew_max = u["coalesce"](ei, ew, num_nodes=5, reduce='amax')
    _, ew_mean = u["coalesce"](ei, ew, num_nodes=5, reduce='mean')
    ei_u, ew_u = u["to_undirected"](ei, ew, num_nodes=5)
    (ew_sum.sum() + (ew_max * torch.arange(ew_max.numel())).sum() + ew_mean.pow(2).sum() + ew_u.prod()).backward()
    deg = u["degree"](ei_u[0], 5)
    ptr = u["index2ptr"](ei_u[0], 5)
    bucket = torch.bucketize(ei_u[0], torch.arange(6), right=True)
    per_row = torch.segment_reduce(ew_u.detach(), 'sum', lengths=ptr[1:] - ptr[:-1])
    per_row_max = torch.segment_reduce(ew_u.detach(), 'max', offsets=ptr)
    values, inverse, counts = torch.unique(ei_u[0], return_inverse=True, return_counts=True)
    consecutive = torch.unique_consecutive(ei_u[0])
    return {"ei_c": ei_c, "ew_sum": ew_sum, "ew_max": ew_max, "ew_mean": ew_mean, "ei_u": ei_u, "ew_u": ew_u,
            "grad": weight.grad, "deg": deg, "ptr": ptr, "bucket": bucket, "per_row": per_row,
            "per_row_max": per_row_max, "counts": counts, "inverse": inverse, "consecutive": consecutive}


def test_edge_list_housekeeping():
    ours, _ = run_both(housekeeping, rtol=1e-12, atol=1e-12)
    assert ours["ei_c"].tolist() == [[0, 1, 1, 2, 3], [1, 0, 2, 1, 4]]
    assert ours["ew_sum"].tolist() == [1.0, 2.0, 12.0, 5.0, 13.0]
    assert ours["ew_max"].tolist() == [1.0, 2.0, 9.0, 5.0, 7.0]
    assert ours["ew_mean"].tolist() == [1.0, 2.0, 6.0, 5.0, 6.5]
    assert ours["ei_u"].tolist() == [[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]
    assert ours["ew_u"].tolist() == [3.0, 3.0, 17.0, 17.0, 13.0, 13.0]
    assert ours["deg"].tolist() == [1.0, 2.0, 1.0, 1.0, 1.0] and ours["deg"].dtype == np.float32
    assert ours["ptr"].tolist() == [0, 1, 3, 4, 5, 6] and ours["bucket"].tolist() == [1, 2, 2, 3, 4, 5]
    assert ours["per_row"].tolist() == [3.0, 20.0, 17.0, 13.0, 13.0]
    assert ours["per_row_max"].tolist() == [3.0, 17.0, 17.0, 13.0, 13.0]
    assert ours["counts"].tolist() == [1, 2, 1, 1, 1] and ours["consecutive"].tolist() == [0, 1, 2, 3, 4]
    assert ours["grad"][3] == 0.0 and ours["grad"][7] == 0.0  # the self loops removed


# ----------------------------------------------------------------------------------------------
# DiffPool (Ying et al. 2018), dense, on to_dense_batch / to_dense_adj
# ----------------------------------------------------------------------------------------------


def make_diffpool(m):
    torch, nn, F = m.torch, m.nn, m.F

    class DenseGCN(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.lin = nn.Linear(i, o, bias=False)
            self.bias = nn.Parameter(torch.zeros(o))

        def forward(self, x, adj, mask=None):
            B, N, _ = adj.size()
            adj = adj.clone()
            idx = torch.arange(N, dtype=torch.long, device=adj.device)
            adj[:, idx, idx] = 1
            out = self.lin(x)
            d_inv_sqrt = adj.sum(dim=-1).clamp(min=1).pow(-0.5)
            adj = d_inv_sqrt.unsqueeze(-1) * adj * d_inv_sqrt.unsqueeze(-2)
            out = torch.matmul(adj, out) + self.bias
            if mask is not None:
                out = out * mask.view(B, N, 1).to(x.dtype)
            return out

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gnn_pool = DenseGCN(3, 2)
            self.gnn_embed = DenseGCN(3, 8)
            self.lin = nn.Linear(8, 2)

        def forward(self, x, adj, mask):
            s = self.gnn_pool(x, adj, mask)
            x = F.relu(self.gnn_embed(x, adj, mask))
            x, adj, link_loss, ent_loss = dense_diff_pool(x, adj, s, mask)
            return F.log_softmax(self.lin(x.mean(dim=1)), dim=-1), link_loss, ent_loss, adj

    def dense_diff_pool(x, adj, s, mask=None, normalize=True):
        x = x.unsqueeze(0) if x.dim() == 2 else x
        adj = adj.unsqueeze(0) if adj.dim() == 2 else adj
        s = s.unsqueeze(0) if s.dim() == 2 else s
        batch_size, num_nodes, _ = x.size()
        s = torch.softmax(s, dim=-1)
        if mask is not None:
            mask = mask.view(batch_size, num_nodes, 1).to(x.dtype)
            x, s = x * mask, s * mask
        out = torch.matmul(s.transpose(1, 2), x)
        out_adj = torch.matmul(torch.matmul(s.transpose(1, 2), adj), s)
        link_loss = adj - torch.matmul(s, s.transpose(1, 2))
        link_loss = torch.norm(link_loss, p=2)
        if normalize is True:
            link_loss = link_loss / adj.numel()
        ent_loss = (-s * torch.log(s + 1e-15)).sum(dim=-1).mean()
        return out, out_adj, link_loss, ent_loss

    return Net()


def diffpool(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    u = utils(m)
    rng = np.random.default_rng(0)
    sizes = [4, 6, 5]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    offsets = np.cumsum([0] + sizes)
    edges = []
    for g, n in enumerate(sizes):
        for a in range(n):
            for b in range(a + 1, n):
                if rng.random() < 0.5:
                    edges += [(a + offsets[g], b + offsets[g]), (b + offsets[g], a + offsets[g])]
    edge_index = torch.tensor(edges).t()
    x = torch.tensor(rng.standard_normal((15, 3)))
    y = torch.tensor([0, 1, 1])
    x_dense, mask = u["to_dense_batch"](x, batch)
    adj = u["to_dense_adj"](edge_index, batch, edge_attr=torch.ones(edge_index.size(1), dtype=torch.float64))
    model = load(m, make_diffpool(m), weights).double()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        out, link_loss, ent_loss, pooled_adj = model(x_dense, adj, mask)
        loss = F.nll_loss(out, y) + link_loss + ent_loss
        loss.backward()
        optimizer.step()
        history.append((loss.item(), link_loss.item(), ent_loss.item()))
    return {"x_dense": x_dense, "mask": mask, "adj": adj, "history": history, "pooled_adj": pooled_adj,
            "grads": [p.grad for p in model.parameters()]}


def test_diffpool():
    weights = weights_of(make_diffpool)
    ours, _ = run_both(diffpool, weights, rtol=1e-10, atol=1e-12)
    assert ours["x_dense"].shape == (3, 6, 3) and ours["mask"].sum(1).tolist() == [4, 6, 5]
    assert (ours["x_dense"][0, 4:] == 0).all() and ours["adj"].shape == (3, 6, 6)
    np.testing.assert_array_equal(ours["adj"], ours["adj"].transpose(0, 2, 1))
    assert ours["pooled_adj"].shape == (3, 2, 2)


# ----------------------------------------------------------------------------------------------
# TopK pooling (Gao & Ji; PyG's topk by a stable sort over (batch, score))
# ----------------------------------------------------------------------------------------------


def make_topk(m):
    torch, nn = m.torch, m.nn

    class TopKPooling(nn.Module):
        def __init__(self, in_channels, ratio=0.5):
            super().__init__()
            self.ratio = ratio
            self.weight = nn.Parameter(torch.empty(1, in_channels))
            nn.init.uniform_(self.weight, -1.0, 1.0)

        def forward(self, x, batch):
            score = (x * self.weight).sum(dim=-1)
            score = torch.tanh(score / self.weight.norm(p=2, dim=-1))
            perm = self.topk(score, self.ratio, batch)
            x = x[perm] * score[perm].view(-1, 1)
            return x, batch[perm], perm, score

        @staticmethod
        def topk(x, ratio, batch):
            num_nodes = torch.zeros(int(batch.max()) + 1, dtype=torch.long).scatter_add_(0, batch,
                                                                                      torch.ones_like(batch))
            k = (ratio * num_nodes.to(x.dtype)).ceil().to(torch.long)
            x, x_perm = torch.sort(x.view(-1), descending=True)
            batch = batch[x_perm]
            batch, batch_perm = torch.sort(batch, descending=False, stable=True)
            arange = torch.arange(x.size(0), dtype=torch.long, device=x.device)
            ptr = torch.cat([num_nodes.new_zeros(1), num_nodes.cumsum(0)])
            batched_arange = arange - ptr[batch]
            mask = batched_arange < k[batch]
            return x_perm[batch_perm[mask]]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 6)
            self.pool = TopKPooling(6, ratio=0.5)
            self.out = nn.Linear(12, 1)

        def forward(self, x, batch):
            x = self.lin(x).relu()
            x, batch, perm, score = self.pool(x, batch)
            B = int(batch.max()) + 1
            gmp = torch.zeros(B, x.size(1), dtype=x.dtype).scatter_reduce(
                0, batch.view(-1, 1).expand_as(x), x, 'amax', include_self=False)
            gap = torch.zeros(B, x.size(1), dtype=x.dtype).index_add(0, batch, x) / \
                torch.bincount(batch, minlength=B).view(-1, 1)
            return self.out(torch.cat([gmp, gap], dim=1)).view(-1), perm, score

    return Net()


def topk_pool(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(1)
    batch = torch.tensor([0] * 5 + [1] * 4 + [2] * 7)
    x = torch.tensor(rng.standard_normal((16, 3)))
    y = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    model = load(m, make_topk(m), weights).double()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        out, perm, score = model(x, batch)
        loss = F.mse_loss(out, y)
        loss.backward()
        optimizer.step()
        history.append((loss.item(), perm.tolist()))
    return {"history": history, "score": score, "grads": [p.grad for p in model.parameters()]}


def test_topk_pooling():
    weights = weights_of(make_topk)
    ours, _ = run_both(topk_pool, weights, rtol=1e-10, atol=1e-12)
    loss, perm = ours["history"][0]
    score = ours["score"]
    assert len(perm) == 3 + 2 + 4  # ceil(0.5 * n) per graph
    for lo, hi, k in ((0, 5, 3), (5, 9, 2), (9, 16, 4)):
        chosen = [p for p in perm if lo <= p < hi]
        assert sorted(chosen) == sorted(np.argsort(-score[lo:hi], kind="stable")[:k] + lo)


# ----------------------------------------------------------------------------------------------
# Laplacian positional encodings (Dwivedi et al.): eigenvectors of the normalised Laplacian
# ----------------------------------------------------------------------------------------------


def lap_pe(m):
    torch = m.torch
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 2], [1, 0, 2, 1, 3, 2, 4, 3, 0, 4, 2, 0]])
    N, k = 5, 3
    A = torch.zeros(N, N, dtype=torch.float64)
    A[edge_index[0], edge_index[1]] = 1.0
    deg = A.sum(1)
    D_inv_sqrt = torch.diag_embed(deg.pow(-0.5))
    L = torch.eye(N, dtype=torch.float64) - D_inv_sqrt @ A @ D_inv_sqrt
    eig_vals, eig_vecs = torch.linalg.eigh(L)
    idx = eig_vals.argsort()
    eig_vals, eig_vecs = eig_vals[idx], eig_vecs[:, idx]
    pe = eig_vecs[:, 1:k + 1]
    sign = -1 + 2 * torch.randint(0, 2, (k,))  # random sign flips, as in training
    sign = torch.tensor([1, -1, 1])
    pe = pe * sign.unsqueeze(0)
    # an eigenvalue's gradient with respect to the edge weights (a simple eigenvalue: v^T dL v)
    w = torch.ones(edge_index.size(1), dtype=torch.float64, requires_grad=True)
    Aw = torch.zeros(N, N, dtype=torch.float64).index_put((edge_index[0], edge_index[1]), w, accumulate=True)
    Lw = torch.diag(Aw.sum(1)) - Aw
    vals = torch.linalg.eigvalsh(Lw)
    vals[-1].backward()
    return {"eig_vals": eig_vals, "pe_abs": pe.abs(), "L": L, "grad": w.grad, "vals": vals}


def test_laplacian_positional_encodings():
    ours, _ = run_both(lap_pe, rtol=1e-10, atol=1e-12)
    L = ours["L"]
    np.testing.assert_allclose(ours["eig_vals"], np.linalg.eigvalsh(L), atol=1e-12)
    assert ours["eig_vals"][0] == pytest.approx(0.0, abs=1e-12) and ours["pe_abs"].shape == (5, 3)
    A = np.zeros((5, 5))
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)]:
        A[a, b] = A[b, a] = 1
    vals, vecs = np.linalg.eigh(np.diag(A.sum(1)) - A)
    v = vecs[:, -1]
    src = [0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 2]
    dst = [1, 0, 2, 1, 3, 2, 4, 3, 0, 4, 2, 0]
    expected = [v[a] * v[a] - v[a] * v[b] for a, b in zip(src, dst)]  # d(v^T (D - A) v) / d w_ab
    np.testing.assert_allclose(ours["grad"], expected, atol=1e-10)
