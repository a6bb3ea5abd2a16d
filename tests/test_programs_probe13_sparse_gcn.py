"""Graph networks on a sparse adjacency and embeddings with sparse gradients, written as PyTorch programs are written
without PyG (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data;
without PyTorch (CI) each program still checks itself against NumPy. GCNs: a GCN on D^-1/2 (A + I) D^-1/2 built from
an edge list with repeats (``coalesce``, ``torch.sparse.sum``, the values scaled by the degrees), trained with Adam,
and its gradients by hand; pygcn's scipy-free row normalisation (legacy ``torch.sparse.FloatTensor``, ``torch.spmm``,
in-place ``mul_``); SGC's precomputed A^k X; APPNP's propagation; GraphSAGE's mean aggregation over an uncoalesced
adjacency; minibatches of rows by ``index_select``; the normalisation by products with a sparse diagonal
(``spdiags``) with the invariant checks on; the adjacency as a module's buffer; R-GCN on stacked relation adjacencies
(``torch.bmm``)."""

import numpy as np
import pytest

from . import probe13_sparse_common
from .probe13_sparse_common import (
    CLASSES,
    DST,
    FEATURES,
    LABELS,
    SRC,
    W1,
    W2,
    X0,
    N,
    dense_adjacency,
    normalized_adjacency,
    numpy_normalized,
)
from .pytorch_programs import run_both

_pytorch_warns_always = probe13_sparse_common._pytorch_warns_always  # the fixture (autouse)

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor.*is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]


# ----------------------------------------------------------------------------------------------
# GCN (Kipf & Welling) on the symmetric normalisation, trained with Adam
# ----------------------------------------------------------------------------------------------


def gcn(m, steps=15):
    torch, nn, F = m.torch, m.nn, m.F

    class GraphConvolution(nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor(weight))
            self.bias = nn.Parameter(torch.zeros(weight.shape[1]))

        def forward(self, x, adj):
            return torch.sparse.mm(adj, x @ self.weight) + self.bias

    class GCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.gc1, self.gc2 = GraphConvolution(W1), GraphConvolution(W2)

        def forward(self, x, adj):
            return F.log_softmax(self.gc2(F.relu(self.gc1(x, adj)), adj), dim=1)

    adj = normalized_adjacency(m)
    x, y = torch.tensor(X0), torch.tensor(LABELS)
    model = GCN()
    optimizer = m.optim.Adam(model.parameters(), lr=0.05, weight_decay=5e-4)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.nll_loss(model(x, adj)[:10], y[:10])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model.gc1.weight, model.gc2.weight, model.gc2.bias, adj.to_dense()


def test_gcn_on_the_symmetric_normalisation():
    ours, _ = run_both(gcn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[-1], numpy_normalized(), rtol=1e-6)
    assert ours[0][-1] < ours[0][0]


def gcn_one_step_gradients(m):
    torch = m.torch
    adj = normalized_adjacency(m)
    x = torch.tensor(X0, requires_grad=True)
    w = torch.tensor(W1, requires_grad=True)
    out = torch.spmm(adj, x @ w)
    (out ** 2).sum().backward()
    return out, x.grad, w.grad


def test_gcn_gradients_by_hand():
    (out, grad_x, grad_w), _ = run_both(gcn_one_step_gradients, rtol=1e-5, atol=1e-5)
    A = numpy_normalized()
    X, W = X0.astype(np.float64), W1.astype(np.float64)
    expected = A @ X @ W
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_w, X.T @ A.T @ (2 * expected), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_x, A.T @ (2 * expected) @ W.T, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# pygcn's row normalisation without scipy, legacy constructor, in-place scaling
# ----------------------------------------------------------------------------------------------


def pygcn_rownorm(m):
    torch = m.torch
    indices = torch.LongTensor(np.stack([np.concatenate([SRC, np.arange(N)]), np.concatenate([DST, np.arange(N)])]))
    adj = torch.sparse.FloatTensor(indices, torch.ones(indices.shape[1]), torch.Size([N, N]))
    adj = adj.coalesce()
    rowsum = torch.sparse.sum(adj, 1).to_dense()
    r_inv = rowsum.pow(-1)
    r_inv[torch.isinf(r_inv)] = 0.0
    adj = torch.sparse_coo_tensor(adj.indices(), adj.values() * r_inv[adj.indices()[0]], adj.size())
    adj.mul_(0.5)  # (a damping applied in place)
    h = torch.spmm(adj, torch.tensor(X0))
    return h, adj.to_dense(), adj._nnz(), adj.is_coalesced(), adj.type()


def test_pygcn_row_normalisation_without_scipy():
    (h, dense, nnz, coalesced, kind), _ = run_both(pygcn_rownorm)
    A = dense_adjacency(symmetric=False)
    expected = 0.5 * A / A.sum(1, keepdims=True)
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    np.testing.assert_allclose(h, expected @ X0, rtol=1e-5, atol=1e-6)
    assert nnz == np.count_nonzero(A) and kind == "torch.sparse.FloatTensor"


# ----------------------------------------------------------------------------------------------
# SGC, APPNP, GraphSAGE mean aggregation
# ----------------------------------------------------------------------------------------------


def sgc(m, K=2, steps=20):
    torch, nn, F = m.torch, m.nn, m.F
    adj = normalized_adjacency(m)
    features = torch.tensor(X0)
    for _ in range(K):
        features = torch.spmm(adj, features)
    model = nn.Linear(FEATURES, CLASSES)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W2.T[:, :FEATURES]))
        model.bias.zero_()
    optimizer = m.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(features), torch.tensor(LABELS))
        loss.backward()
        optimizer.step()
    return features, loss, model.weight


def test_sgc_precomputes_the_propagated_features():
    (features, loss, _), _ = run_both(sgc, rtol=1e-4, atol=1e-5)
    A = numpy_normalized()
    np.testing.assert_allclose(features, A @ A @ X0, rtol=1e-5, atol=1e-5)


def appnp(m, alpha=0.1, K=6):
    torch = m.torch
    adj = normalized_adjacency(m)
    h = torch.tensor(X0, requires_grad=True)
    z = h
    for _ in range(K):
        z = (1 - alpha) * torch.sparse.mm(adj, z) + alpha * h
    (z * torch.tensor(X0)).sum().backward()
    return z, h.grad


def test_appnp_propagation_and_its_gradient():
    (z, grad), _ = run_both(appnp, rtol=1e-5, atol=1e-5)
    A, expected = numpy_normalized(), X0.astype(np.float64)
    for _ in range(6):
        expected = 0.9 * A @ expected + 0.1 * X0
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)


def sage_mean(m, steps=10):
    torch, nn, F = m.torch, m.nn, m.F

    class SAGEConv(nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.lin_self = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
            self.lin_neigh = nn.Linear(weight.shape[0], weight.shape[1])
            with torch.no_grad():
                self.lin_self.weight.copy_(torch.tensor(weight.T))
                self.lin_neigh.weight.copy_(torch.tensor(weight.T[::-1].copy()))
                self.lin_neigh.bias.zero_()

        def forward(self, x, adj):
            deg = torch.sparse.sum(adj, dim=1).to_dense().clamp(min=1).unsqueeze(-1)
            neigh = torch.sparse.mm(adj, x) / deg
            return self.lin_self(x) + self.lin_neigh(neigh)

    edge_index = torch.tensor(np.stack([DST, SRC]))  # messages flow src -> dst
    adj = torch.sparse_coo_tensor(edge_index, torch.ones(edge_index.shape[1]), (N, N))  # uncoalesced: repeats count
    conv1, conv2 = SAGEConv(W1), SAGEConv(W2)
    optimizer = m.optim.Adam(list(conv1.parameters()) + list(conv2.parameters()), lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        out = conv2(F.relu(conv1(torch.tensor(X0), adj)), adj)
        loss = F.cross_entropy(out, torch.tensor(LABELS))
        loss.backward()
        optimizer.step()
    return loss, out, conv1.lin_neigh.weight.grad, conv2.lin_self.weight


def test_graphsage_mean_aggregation_over_an_uncoalesced_adjacency():
    (loss, out, _, _), _ = run_both(sage_mean, rtol=1e-4, atol=1e-5)
    assert np.isfinite(loss) and out.shape == (N, CLASSES)


# ----------------------------------------------------------------------------------------------
# minibatches of rows: adj.index_select(0, batch) @ features (the full graph's neighbours of a batch)
# ----------------------------------------------------------------------------------------------


def minibatch_gcn(m, steps=6):
    torch, nn, F = m.torch, m.nn, m.F
    adj = normalized_adjacency(m).coalesce()
    linear = nn.Linear(FEATURES, CLASSES)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(W2.T[:, :FEATURES]))
        linear.bias.zero_()
    optimizer = m.optim.SGD(linear.parameters(), lr=0.1)
    batches = np.random.default_rng(7).integers(0, N, (steps, 5))
    features = torch.tensor(X0)
    for batch in batches:
        batch = torch.tensor(batch)
        rows = adj.index_select(0, batch)
        loss = F.cross_entropy(linear(torch.sparse.mm(rows, features)), torch.tensor(LABELS)[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss, linear.weight, rows._indices(), rows._values()


def test_minibatches_of_rows_by_index_select():
    (loss, _, indices, values), _ = run_both(minibatch_gcn, rtol=1e-5, atol=1e-6)
    last = np.random.default_rng(7).integers(0, N, (6, 5))[-1]
    rows = numpy_normalized()[last]
    assert len(values) == np.count_nonzero(rows)


# ----------------------------------------------------------------------------------------------
# D^-1/2 A D^-1/2 by products with a diagonal spdiags matrix, with the invariant checks turned on
# ----------------------------------------------------------------------------------------------


def spdiags_normalisation(m):
    torch = m.torch
    torch.sparse.check_sparse_tensor_invariants.enable()  # (what silences PyTorch's warning)
    try:
        adj = torch.tensor(dense_adjacency().astype(np.float32)).to_sparse()
        deg_inv_sqrt = torch.sparse.sum(adj, dim=1).to_dense().pow(-0.5)
        D = torch.sparse.spdiags(deg_inv_sqrt.unsqueeze(0), torch.tensor([0]), (N, N))
        normalized = torch.sparse.mm(D, torch.sparse.mm(adj, D.to_dense()))
        return normalized, D._nnz(), torch.sparse.check_sparse_tensor_invariants.is_enabled()
    finally:
        torch.sparse.check_sparse_tensor_invariants.disable()


def test_normalisation_by_a_sparse_diagonal():
    (normalized, nnz, enabled), _ = run_both(spdiags_normalisation)
    np.testing.assert_allclose(normalized, numpy_normalized(), rtol=1e-6)
    assert nnz == N and enabled


# ----------------------------------------------------------------------------------------------
# the adjacency kept as a module's buffer: moved and cast with the model, saved in its state dict
# ----------------------------------------------------------------------------------------------


def gcn_with_adjacency_buffer(m, steps=5):
    torch, nn, F = m.torch, m.nn, m.F

    class GCN(nn.Module):
        def __init__(self, adj):
            super().__init__()
            self.register_buffer("adj", adj)
            self.w1 = nn.Parameter(torch.tensor(W1))
            self.w2 = nn.Parameter(torch.tensor(W2))

        def forward(self, x):
            h = F.relu(torch.sparse.mm(self.adj, x @ self.w1))
            return torch.sparse.mm(self.adj, h @ self.w2)

    model = GCN(normalized_adjacency(m).coalesce()).double().to("cpu")
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.tensor(X0).double()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), torch.tensor(LABELS))
        loss.backward()
        optimizer.step()
    restored = GCN(torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (N, N))).double()
    restored.load_state_dict(model.state_dict())
    return loss, model.w1, restored(x), restored.adj.dtype == torch.float64, sorted(model.state_dict())


def test_gcn_with_its_adjacency_as_a_buffer():
    (loss, _, out, is_double, keys), _ = run_both(gcn_with_adjacency_buffer, rtol=1e-10, atol=1e-12)
    assert is_double and keys == ["adj", "w1", "w2"] and out.dtype == np.float64


# ----------------------------------------------------------------------------------------------
# R-GCN: one adjacency per relation, stacked into a relation x node x node sparse tensor, torch.bmm
# ----------------------------------------------------------------------------------------------

RELATIONS = 3


def rgcn(m, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(9)
    adjacencies = []
    for _ in range(RELATIONS):
        src, dst = rng.integers(0, N, 10), rng.integers(0, N, 10)
        adj = torch.sparse_coo_tensor(torch.tensor(np.stack([dst, src])), torch.ones(10), (N, N)).coalesce()
        deg = torch.sparse.sum(adj, dim=1).to_dense().clamp(min=1)
        adjacencies.append(torch.sparse_coo_tensor(adj.indices(), adj.values() / deg[adj.indices()[0]], (N, N)))
    A = torch.stack(adjacencies)  # (relations, N, N)
    weights = nn.Parameter(torch.tensor((rng.standard_normal((RELATIONS, FEATURES, CLASSES)) * 0.3)
                                        .astype(np.float32)))
    self_loop = nn.Linear(FEATURES, CLASSES)
    optimizer = m.optim.Adam([weights, *self_loop.parameters()], lr=0.05)
    x = torch.tensor(X0)
    for _ in range(steps):
        messages = torch.bmm(A, torch.stack([x @ weights[r] for r in range(RELATIONS)]))  # (relations, N, classes)
        out = messages.sum(0) + self_loop(x)
        loss = F.cross_entropy(out, torch.tensor(LABELS))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss, weights, A._nnz(), list(A.shape)


def test_rgcn_on_stacked_relation_adjacencies():
    (loss, _, nnz, shape), _ = run_both(rgcn, rtol=1e-5, atol=1e-6)
    assert shape == [RELATIONS, N, N] and np.isfinite(loss)
