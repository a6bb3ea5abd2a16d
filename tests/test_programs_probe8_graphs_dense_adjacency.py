# ruff: noqa: B007, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Graph neural networks written by hand (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights, comparing losses, parameters and gradients. Kipf's pygcn (a dense adjacency built by index
assignment, row normalisation by ``torch.diag(r_inv)``, ``torch.spmm`` and ``torch.mm``, ``log_softmax`` +
``nll_loss`` on index sets, ``uniform_`` init through ``.data``); a graph autoencoder (an inner-product decoder,
``binary_cross_entropy_with_logits`` on positive and negative edges); pyGAT (Diego999/pyGAT: dense attention masked
by ``torch.where(adj > 0, e, -9e15)``, multi-head concat)."""

import math

import numpy as np
import pytest

from .probe8_graphs_common import undirected
from .pytorch_programs import load, run_both, weights_of

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (1, 5), (5, 6), (6, 7), (7, 5), (2, 8), (8, 9), (3, 9)]


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
