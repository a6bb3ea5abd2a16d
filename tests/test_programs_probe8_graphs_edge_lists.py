# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Graph neural networks written by hand (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights, comparing losses, parameters and gradients. PyG's own helpers rewritten without PyG (``scatter`` by
``new_zeros(...).scatter_add_`` and ``scatter_reduce_('amax'/'mean', include_self=False)``, the edge ``softmax`` by
``index_select``) under a GIN and a GAT for batched graph classification (``repeat_interleave`` batch vectors,
``cumsum`` offsets, ``index_add_`` with ``alpha``, ``index_put_`` with ``accumulate``), and the edge softmax's
gradients by ``scatter_reduce``; Gilmer's MPNN (an edge network through ``bmm``, a ``GRU`` update, a Set2Set
readout)."""

import numpy as np

from .probe8_graphs_common import undirected
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# PyG's scatter/softmax helpers rewritten by hand, under a GIN and a GAT for batched graphs
# ----------------------------------------------------------------------------------------------


def pyg_helpers(m):
    torch = m.torch

    def broadcast(src, ref, dim):
        size = ((1, ) * dim) + (-1, ) + ((1, ) * (ref.dim() - dim - 1))
        return src.view(size).expand_as(ref)

    def scatter(src, index, dim=0, dim_size=None, reduce='sum'):
        if dim < 0:
            dim = src.dim() + dim
        if dim_size is None:
            dim_size = int(index.max()) + 1 if index.numel() > 0 else 0
        size = src.size()[:dim] + (dim_size, ) + src.size()[dim + 1:]
        if reduce == 'sum' or reduce == 'add':
            index = broadcast(index, src, dim)
            return src.new_zeros(size).scatter_add_(dim, index, src)
        if reduce == 'mean':
            count = src.new_zeros(dim_size)
            count.scatter_add_(0, index, src.new_ones(src.size(dim)))
            count = count.clamp(min=1)
            index = broadcast(index, src, dim)
            out = src.new_zeros(size).scatter_add_(dim, index, src)
            return out / broadcast(count, out, dim)
        if reduce in ['min', 'max', 'amin', 'amax']:
            index = broadcast(index, src, dim)
            return src.new_zeros(size).scatter_reduce_(dim, index, src, reduce=f'a{reduce[-3:]}',
                                                       include_self=False)
        raise ValueError(f"Encountered invalid `reduce` argument '{reduce}'")

    def softmax(src, index, num_nodes, dim=0):
        src_max = scatter(src.detach(), index, dim, dim_size=num_nodes, reduce='max')
        out = src - src_max.index_select(dim, index)
        out = out.exp()
        out_sum = scatter(out, index, dim, dim_size=num_nodes, reduce='sum') + 1e-16
        out_sum = out_sum.index_select(dim, index)
        return out / out_sum

    return scatter, softmax


def make_gin_gat(m):
    torch, nn, F = m.torch, m.nn, m.F
    scatter, softmax = pyg_helpers(m)

    class GINConv(nn.Module):
        def __init__(self, mlp, eps=0.0, train_eps=True):
            super().__init__()
            self.nn = mlp
            self.eps = nn.Parameter(torch.tensor([eps])) if train_eps else eps

        def forward(self, x, edge_index):
            src, dst = edge_index
            aggr = scatter(x.index_select(0, src), dst, dim=0, dim_size=x.size(0), reduce='sum')
            return self.nn((1 + self.eps) * x + aggr)

    class GATConv(nn.Module):
        def __init__(self, in_channels, out_channels, heads=2, negative_slope=0.2):
            super().__init__()
            self.heads, self.out_channels, self.negative_slope = heads, out_channels, negative_slope
            self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
            self.att = nn.Parameter(torch.empty(1, heads, 2 * out_channels))
            self.bias = nn.Parameter(torch.zeros(heads * out_channels))
            nn.init.xavier_uniform_(self.att)

        def forward(self, x, edge_index, return_attention_weights=False):
            H, C = self.heads, self.out_channels
            x = self.lin(x).view(-1, H, C)
            src, dst = edge_index
            x_i, x_j = x.index_select(0, dst), x.index_select(0, src)
            alpha = (torch.cat([x_i, x_j], dim=-1) * self.att).sum(dim=-1)
            alpha = F.leaky_relu(alpha, self.negative_slope)
            alpha = softmax(alpha, dst, num_nodes=x.size(0))
            out = scatter(x_j * alpha.unsqueeze(-1), dst, dim=0, dim_size=x.size(0), reduce='sum')
            out = out.view(-1, H * C) + self.bias
            if return_attention_weights:
                return out, alpha
            return out

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GINConv(nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16)))
            self.conv2 = GATConv(16, 8, heads=2)
            self.lin = nn.Linear(2 * 16, 1)

        def forward(self, x, edge_index, batch, num_graphs):
            h = self.conv1(x, edge_index).relu()
            h, alpha = self.conv2(h, edge_index, return_attention_weights=True)
            h = F.elu(h)
            pooled = torch.cat([scatter(h, batch, 0, num_graphs, 'mean'), scatter(h, batch, 0, num_graphs, 'max')], 1)
            return self.lin(pooled).squeeze(-1), alpha

    return Net()


def batched_graphs(m, rng):
    torch = m.torch
    sizes = [5, 3, 6, 4]
    edge_lists = []
    for n in sizes:
        e = [(i, (i + 1) % n) for i in range(n)] + [(0, n // 2)]
        edge_lists.append(torch.tensor(undirected(e)).t())
    num_nodes = torch.tensor(sizes)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(num_nodes, dim=0)])
    edge_index = torch.cat([e + ptr[i] for i, e in enumerate(edge_lists)], dim=1)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), num_nodes)
    x = torch.tensor(rng.standard_normal((int(num_nodes.sum()), 4)))
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    return x, edge_index, batch, ptr, y


def gin_gat(m, weights, epochs=4):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(4)
    x, edge_index, batch, ptr, y = batched_graphs(m, rng)
    model = load(m, make_gin_gat(m), weights).double()
    optimizer = optim.AdamW(model.parameters(), lr=0.02)
    losses = []
    model.train()
    for epoch in range(epochs):
        optimizer.zero_grad()
        out, alpha = model(x, edge_index, batch, 4)
        loss = F.binary_cross_entropy_with_logits(out, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out, alpha = model(x, edge_index, batch, 4)
    scatter, softmax = pyg_helpers(m)
    attention_mass = scatter(alpha, edge_index[1], 0, x.size(0), 'sum')
    degree = torch.zeros(x.size(0), dtype=torch.long).index_put_((edge_index[1],), torch.ones_like(edge_index[1]),
                                                                 accumulate=True)
    weighted = torch.zeros(x.size(0), 4, dtype=x.dtype).index_add_(0, edge_index[1], x[edge_index[0]], alpha=0.5)
    return {"losses": losses, "out": out, "alpha": alpha, "mass": attention_mass, "degree": degree,
            "weighted": weighted, "ptr": ptr, "batch": batch, "eps": model.conv1.eps.detach(),
            "running_mean": model.conv1.nn[1].running_mean,
            "grads": [p.grad for p in model.parameters()]}


def test_gin_and_gat_with_pyg_style_scatter_and_softmax():
    weights = weights_of(make_gin_gat)
    # with eps = 0 GIN gives nodes 0 and 2 of the 4-cycle with a chord the same sum (in another order):
    # a tie in the max pooling that rounding breaks differently in each library
    weights["conv1.eps"] = np.array([0.1], dtype=np.float32)
    ours, _ = run_both(gin_gat, weights, rtol=1e-9, atol=1e-11)
    assert ours["ptr"].tolist() == [0, 5, 8, 14, 18] and ours["batch"].tolist()[4:6] == [0, 1]
    np.testing.assert_allclose(ours["mass"], 1.0, rtol=1e-12)  # every node receives some edges
    assert ours["degree"].dtype == np.int64 and ours["degree"][0] == 3 and ours["degree"][1] == 2
    losses = ours["losses"]
    assert losses[-1] < losses[0] and ours["eps"].shape == (1,)
    assert all(g is not None and g.dtype == np.float64 for g in ours["grads"])


def test_edge_softmax_by_scatter_reduce_gradients():
    """The edge softmax's gradient, taken through scatter_reduce('amax') on the *un*detached scores, equals
    the detached version's (the max cancels) and the softmax Jacobian computed by NumPy."""
    torch = OURS.torch
    scatter, softmax = pyg_helpers(OURS)
    rng = np.random.default_rng(0)
    dst = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    scores = rng.standard_normal(9)
    scores[1] = scores[0]  # a tie in the max of node 0
    w = rng.standard_normal(9)

    def run(detach):
        e = torch.tensor(scores, requires_grad=True)
        index = torch.tensor(dst)
        e_max = torch.zeros(3, dtype=e.dtype).scatter_reduce(0, index, e.detach() if detach else e, 'amax',
                                                             include_self=False)
        ex = (e - e_max.index_select(0, index)).exp()
        s = torch.zeros(3, dtype=e.dtype).scatter_add(0, index, ex)
        a = ex / s[index]
        (a * torch.tensor(w)).sum().backward()
        return a.detach().numpy(), e.grad.numpy()

    a1, g1 = run(True)
    a2, g2 = run(False)
    expected_a = np.empty(9)
    expected_g = np.empty(9)
    for node in range(3):
        sel = dst == node
        p = np.exp(scores[sel] - scores[sel].max())
        p /= p.sum()
        expected_a[sel] = p
        expected_g[sel] = p * (w[sel] - (p * w[sel]).sum())
    np.testing.assert_allclose(a1, expected_a, rtol=1e-12)
    np.testing.assert_allclose(g1, expected_g, atol=1e-12)
    np.testing.assert_allclose(a2, expected_a, rtol=1e-12)
    np.testing.assert_allclose(g2, expected_g, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Gilmer et al.'s MPNN: an edge network (NNConv) through bmm, a GRU update, a Set2Set readout
# ----------------------------------------------------------------------------------------------


def make_mpnn(m):
    torch, nn, F = m.torch, m.nn, m.F
    scatter, softmax = pyg_helpers(m)

    class NNConv(nn.Module):
        def __init__(self, in_channels, out_channels, edge_nn, aggr='mean'):
            super().__init__()
            self.in_channels, self.out_channels, self.nn, self.aggr = in_channels, out_channels, edge_nn, aggr
            self.root = nn.Linear(in_channels, out_channels)

        def forward(self, x, edge_index, edge_attr):
            src, dst = edge_index
            weight = self.nn(edge_attr).view(-1, self.in_channels, self.out_channels)
            msg = torch.bmm(x[src].unsqueeze(1), weight).squeeze(1)
            return scatter(msg, dst, 0, x.size(0), self.aggr) + self.root(x)

    class Set2Set(nn.Module):
        def __init__(self, in_channels, processing_steps):
            super().__init__()
            self.in_channels, self.out_channels = in_channels, 2 * in_channels
            self.processing_steps = processing_steps
            self.lstm = nn.LSTM(self.out_channels, in_channels, batch_first=True)

        def forward(self, x, batch, dim_size):
            h = (x.new_zeros((1, dim_size, x.size(-1))), x.new_zeros((1, dim_size, x.size(-1))))
            q_star = x.new_zeros(dim_size, self.out_channels)
            for _ in range(self.processing_steps):
                q, h = self.lstm(q_star.unsqueeze(1), h)
                q = q.view(dim_size, self.in_channels)
                e = (x * q[batch]).sum(dim=-1, keepdim=True)
                a = softmax(e, batch, dim_size)
                r = scatter(a * x, batch, 0, dim_size, 'sum')
                q_star = torch.cat([q, r], dim=-1)
            return q_star

    class Net(nn.Module):
        def __init__(self, dim=8):
            super().__init__()
            self.lin0 = nn.Linear(4, dim)
            edge_nn = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, dim * dim))
            self.conv = NNConv(dim, dim, edge_nn, aggr='mean')
            self.gru = nn.GRU(dim, dim)
            self.set2set = Set2Set(dim, processing_steps=2)
            self.lin1 = nn.Linear(2 * dim, dim)
            self.lin2 = nn.Linear(dim, 1)

        def forward(self, x, edge_index, edge_attr, batch, num_graphs):
            out = F.relu(self.lin0(x))
            h = out.unsqueeze(0)
            for i in range(2):
                m_ = F.relu(self.conv(out, edge_index, edge_attr))
                out, h = self.gru(m_.unsqueeze(0), h)
                out = out.squeeze(0)
            out = self.set2set(out, batch, num_graphs)
            out = F.relu(self.lin1(out))
            return self.lin2(out).view(-1)

    return Net()


def mpnn(m, weights, epochs=3):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(6)
    x, edge_index, batch, ptr, _ = batched_graphs(m, rng)
    x = x.float()
    edge_attr = torch.tensor(rng.standard_normal((edge_index.size(1), 3)).astype(np.float32))
    y = torch.tensor(rng.standard_normal(4).astype(np.float32))
    model = load(m, make_mpnn(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='min', factor=0.7, patience=5, min_lr=0.00001)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x, edge_index, edge_attr, batch, 4), y)
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item())
        losses.append(loss.item())
    error = (model(x, edge_index, edge_attr, batch, 4) - y).abs().sum().item()
    return {"losses": losses, "error": error, "params": [p.detach() for p in model.parameters()],
            "grads": [p.grad for p in model.parameters()]}


def test_mpnn_edge_network_gru_set2set():
    weights = weights_of(make_mpnn)
    ours, _ = run_both(mpnn, weights, rtol=2e-5, atol=2e-6)
    assert len(ours["grads"]) == 20 and all(g.dtype == np.float32 for g in ours["grads"])
    assert ours["losses"][-1] < ours["losses"][0]
