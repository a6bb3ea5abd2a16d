# ruff: noqa: B007, B023, E741, E731, F841, UP004, UP008, UP031, UP032  (the programs are kept as their authors wrote them)
"""Graph neural networks written by hand (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients.

Kipf's pygcn (a dense adjacency built by index assignment, row normalisation by ``torch.diag(r_inv)``,
``torch.spmm`` and ``torch.mm``, ``log_softmax`` + ``nll_loss`` on index sets, ``uniform_`` init through
``.data``); PyG's own helpers rewritten without PyG (``scatter`` by ``new_zeros(...).scatter_add_`` and
``scatter_reduce_('amax'/'mean', include_self=False)``, the edge ``softmax`` by ``index_select``) under a
GIN and a GAT for batched graph classification (``repeat_interleave`` batch vectors, ``cumsum``
offsets, ``index_add_`` with ``alpha``, ``index_put_`` with ``accumulate``); a graph autoencoder (an
inner-product decoder, ``binary_cross_entropy_with_logits`` on positive and negative edges); and
Gilmer's MPNN (an edge network through ``bmm``, a ``GRU`` update, a Set2Set readout)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (1, 5), (5, 6), (6, 7), (7, 5), (2, 8), (8, 9), (3, 9)]


def undirected(edges):
    return edges + [(j, i) for i, j in edges]


# ----------------------------------------------------------------------------------------------
# pygcn (Kipf & Welling): a dense normalised adjacency and two GraphConvolution layers
# ----------------------------------------------------------------------------------------------


def make_pygcn(m):
    torch, nn, F = m.torch, m.nn, m.F
    Parameter = nn.Parameter

    class GraphConvolution(nn.Module):
        def __init__(self, in_features, out_features, bias=True):
            super(GraphConvolution, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.weight = Parameter(torch.FloatTensor(in_features, out_features))
            if bias:
                self.bias = Parameter(torch.FloatTensor(out_features))
            else:
                self.register_parameter('bias', None)
            self.reset_parameters()

        def reset_parameters(self):
            stdv = 1. / math.sqrt(self.weight.size(1))
            self.weight.data.uniform_(-stdv, stdv)
            if self.bias is not None:
                self.bias.data.uniform_(-stdv, stdv)

        def forward(self, input, adj):
            support = torch.mm(input, self.weight)
            output = torch.spmm(adj, support)
            if self.bias is not None:
                return output + self.bias
            else:
                return output

        def __repr__(self):
            return self.__class__.__name__ + ' (' + str(self.in_features) + ' -> ' + str(self.out_features) + ')'

    class GCN(nn.Module):
        def __init__(self, nfeat, nhid, nclass, dropout):
            super(GCN, self).__init__()
            self.gc1 = GraphConvolution(nfeat, nhid)
            self.gc2 = GraphConvolution(nhid, nclass)
            self.dropout = dropout

        def forward(self, x, adj):
            x = F.relu(self.gc1(x, adj))
            x = F.dropout(x, self.dropout, training=self.training)
            x = self.gc2(x, adj)
            return F.log_softmax(x, dim=1)

    return GCN(nfeat=6, nhid=8, nclass=3, dropout=0.5)


def pygcn(m, weights, epochs=8):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(3)
    n = 10
    features = torch.FloatTensor(rng.standard_normal((n, 6)).astype(np.float32))
    labels = torch.LongTensor(rng.integers(0, 3, n))
    edges = torch.tensor(EDGES)
    adj = torch.zeros(n, n)
    adj[edges[:, 0], edges[:, 1]] = 1
    adj = adj + adj.T * (adj.T > adj).float() - adj * (adj.T > adj).float()  # build symmetric adjacency

    def normalize(mx):
        rowsum = mx.sum(1)
        r_inv = rowsum.pow(-1).flatten()
        r_inv[torch.isinf(r_inv)] = 0.
        r_mat_inv = torch.diag(r_inv)
        mx = r_mat_inv.mm(mx)
        return mx

    features = normalize(features.double().abs() + 0.1)  # float64 first: float32 row sums round by order
    adj = normalize(adj + torch.eye(adj.shape[0]))
    idx_train = torch.LongTensor(range(6))
    idx_val = torch.LongTensor(range(6, 10))

    def accuracy(output, labels):
        preds = output.max(1)[1].type_as(labels)
        correct = preds.eq(labels).double()
        correct = correct.sum()
        return correct / len(labels)

    model = load(m, make_pygcn(m), weights).double()
    features, adj = features.double(), adj.double()
    optimizer = optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    history = []
    for epoch in range(epochs):
        model.train()
        model.dropout = 0.0  # keep both libraries on the same network
        optimizer.zero_grad()
        output = model(features, adj)
        loss_train = F.nll_loss(output[idx_train], labels[idx_train])
        acc_train = accuracy(output[idx_train], labels[idx_train])
        loss_train.backward()
        optimizer.step()
        model.eval()
        output = model(features, adj)
        loss_val = F.nll_loss(output[idx_val], labels[idx_val])
        acc_val = accuracy(output[idx_val], labels[idx_val])
        history.append((loss_train.item(), acc_train.item(), loss_val.item(), acc_val.item()))
    return {"history": history, "adj": adj, "features": features, "repr": repr(model.gc1),
            "params": [p.detach() for p in model.parameters()], "grads": [p.grad for p in model.parameters()],
            "acc_is_double": acc_val.dtype == torch.float64}


def test_pygcn_dense_adjacency():
    weights = weights_of(make_pygcn)
    ours, _ = run_both(pygcn, weights, rtol=1e-10, atol=1e-12)
    adj = ours["adj"]
    np.testing.assert_allclose(adj.sum(1), 1.0, rtol=1e-7)  # row-normalised (in float32), self loops included
    assert adj[0, 0] == pytest.approx(1 / 3) and adj[1, 5] == pytest.approx(1 / 4) and adj[9, 3] == pytest.approx(1 / 3)
    assert ours["repr"] == "GraphConvolution (6 -> 8)" and ours["acc_is_double"]
    losses = [h[0] for h in ours["history"]]
    assert losses[-1] < losses[0]
    assert all(p.dtype == np.float64 for p in ours["params"])


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
# A graph autoencoder (Kipf & Welling 2016): GCN encoder, inner-product decoder, negative edges
# ----------------------------------------------------------------------------------------------


def make_gae(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GCNLayer(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.linear = nn.Linear(i, o, bias=False)

        def forward(self, x, edge_index, edge_weight):
            n = x.size(0)
            row, col = edge_index
            deg = torch.zeros(n, dtype=x.dtype).scatter_add_(0, col, edge_weight)
            deg_inv_sqrt = deg.pow_(-0.5)
            deg_inv_sqrt.masked_fill_(deg_inv_sqrt == float('inf'), 0)
            norm = deg_inv_sqrt[row] * edge_weight * deg_inv_sqrt[col]
            h = self.linear(x)
            return torch.zeros_like(h).index_add_(0, col, h[row] * norm.view(-1, 1))

    class GAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GCNLayer(5, 12)
            self.conv_mu = GCNLayer(12, 4)

        def encode(self, x, edge_index, edge_weight):
            return self.conv_mu(self.conv1(x, edge_index, edge_weight).relu(), edge_index, edge_weight)

        def decode(self, z, edge_index, sigmoid=True):
            value = (z[edge_index[0]] * z[edge_index[1]]).sum(dim=1)
            return torch.sigmoid(value) if sigmoid else value

        def decode_all(self, z):
            return torch.sigmoid(torch.matmul(z, z.t()))

    return GAE()


def gae(m, weights, epochs=6):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(5)
    n = 10
    x = torch.tensor(rng.standard_normal((n, 5)))
    pos = torch.tensor(undirected(EDGES)).t()
    loops = torch.arange(n).unsqueeze(0).repeat(2, 1)
    edge_index = torch.cat([pos, loops], dim=1)
    edge_weight = torch.ones(edge_index.size(1), dtype=torch.float64)
    dense = torch.zeros(n, n, dtype=torch.bool)
    dense[pos[0], pos[1]] = True
    neg_candidates = (~dense & ~torch.eye(n, dtype=torch.bool)).nonzero(as_tuple=False).t()
    neg = neg_candidates[:, torch.tensor(rng.permutation(neg_candidates.size(1))[:pos.size(1)])]
    model = load(m, make_gae(m), weights).double()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        z = model.encode(x, edge_index, edge_weight)
        pos_out = model.decode(z, pos, sigmoid=False)
        neg_out = model.decode(z, neg, sigmoid=False)
        loss = F.binary_cross_entropy_with_logits(pos_out, torch.ones_like(pos_out)) + \
            F.binary_cross_entropy_with_logits(neg_out, torch.zeros_like(neg_out))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        z = model.encode(x, edge_index, edge_weight)
        probs = model.decode_all(z)
        pos_pred, neg_pred = model.decode(z, pos), model.decode(z, neg)
        auc = (pos_pred.unsqueeze(1) > neg_pred.unsqueeze(0)).float().mean()
    return {"losses": losses, "probs": probs, "auc": auc, "neg": neg,
            "grads": [p.grad for p in model.parameters()]}


def test_graph_autoencoder_with_negative_edges():
    weights = weights_of(make_gae)
    ours, _ = run_both(gae, weights, rtol=1e-9, atol=1e-11)
    probs = ours["probs"]
    np.testing.assert_allclose(probs, probs.T, rtol=1e-12)
    assert ours["neg"].shape == (2, 24) and ours["losses"][-1] < ours["losses"][0]
    assert 0 <= ours["auc"] <= 1


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


# ----------------------------------------------------------------------------------------------
# pyGAT (Diego999/pyGAT): dense attention masked by torch.where(adj > 0, e, -9e15), multi-head concat
# ----------------------------------------------------------------------------------------------


def make_pygat(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GraphAttentionLayer(nn.Module):
        def __init__(self, in_features, out_features, dropout, alpha, concat=True):
            super(GraphAttentionLayer, self).__init__()
            self.dropout = dropout
            self.in_features = in_features
            self.out_features = out_features
            self.alpha = alpha
            self.concat = concat

            self.W = nn.Parameter(torch.empty(size=(in_features, out_features)))
            nn.init.xavier_uniform_(self.W.data, gain=1.414)
            self.a = nn.Parameter(torch.empty(size=(2 * out_features, 1)))
            nn.init.xavier_uniform_(self.a.data, gain=1.414)

            self.leakyrelu = nn.LeakyReLU(self.alpha)

        def forward(self, h, adj):
            Wh = torch.mm(h, self.W)  # h.shape: (N, in_features), Wh.shape: (N, out_features)
            e = self._prepare_attentional_mechanism_input(Wh)

            zero_vec = -9e15 * torch.ones_like(e)
            attention = torch.where(adj > 0, e, zero_vec)
            attention = F.softmax(attention, dim=1)
            attention = F.dropout(attention, self.dropout, training=self.training)
            h_prime = torch.matmul(attention, Wh)

            if self.concat:
                return F.elu(h_prime)
            else:
                return h_prime

        def _prepare_attentional_mechanism_input(self, Wh):
            Wh1 = torch.matmul(Wh, self.a[:self.out_features, :])
            Wh2 = torch.matmul(Wh, self.a[self.out_features:, :])
            # broadcast add
            e = Wh1 + Wh2.T
            return self.leakyrelu(e)

        def __repr__(self):
            return self.__class__.__name__ + ' (' + str(self.in_features) + ' -> ' + str(self.out_features) + ')'

    class GAT(nn.Module):
        def __init__(self, nfeat, nhid, nclass, dropout, alpha, nheads):
            super(GAT, self).__init__()
            self.dropout = dropout

            self.attentions = [GraphAttentionLayer(nfeat, nhid, dropout=dropout, alpha=alpha, concat=True)
                               for _ in range(nheads)]
            for i, attention in enumerate(self.attentions):
                self.add_module('attention_{}'.format(i), attention)

            self.out_att = GraphAttentionLayer(nhid * nheads, nclass, dropout=dropout, alpha=alpha, concat=False)

        def forward(self, x, adj):
            x = F.dropout(x, self.dropout, training=self.training)
            x = torch.cat([att(x, adj) for att in self.attentions], dim=1)
            x = F.dropout(x, self.dropout, training=self.training)
            x = F.elu(self.out_att(x, adj))
            return F.log_softmax(x, dim=1)

    return GAT(nfeat=6, nhid=4, nclass=3, dropout=0.6, alpha=0.2, nheads=3)


def pygat(m, weights, epochs=5):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(9)
    n = 10
    features = torch.FloatTensor(rng.standard_normal((n, 6)).astype(np.float32))
    labels = torch.LongTensor(rng.integers(0, 3, n))
    adj = torch.eye(n)
    for i, j in undirected(EDGES):
        adj[i, j] = 1.0
    model = make_pygat(m)
    # strict: the plain list self.attentions is an ordinary attribute in both (its heads are registered by
    # add_module alone), so the state_dicts hold the same keys
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    optimizer = optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
    idx_train = torch.LongTensor(range(7))
    history = []
    model.eval()  # dropout off: both libraries see the same network
    for epoch in range(epochs):
        optimizer.zero_grad()
        output = model(features, adj)
        loss_train = F.nll_loss(output[idx_train], labels[idx_train])
        loss_train.backward()
        optimizer.step()
        history.append(loss_train.data.item())
    return {"history": history, "output": model(features, adj), "n_params": len(list(model.parameters())),
            "grads": [p.grad for p in model.parameters()], "out_att": repr(model.out_att)}


def test_pygat_dense_attention():
    weights = weights_of(make_pygat)
    ours, _ = run_both(pygat, weights, rtol=2e-5, atol=2e-6)
    assert ours["n_params"] == 8  # each head's W and a once, though reachable under two names here
    assert ours["out_att"] == "GraphAttentionLayer (12 -> 3)"
    np.testing.assert_allclose(np.exp(ours["output"]).sum(1), 1.0, rtol=1e-5)
