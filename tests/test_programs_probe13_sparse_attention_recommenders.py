"""Graph networks on a sparse adjacency and embeddings with sparse gradients, written as PyTorch programs are written
without PyG (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data;
without PyTorch (CI) each program still checks itself against NumPy. Attention and recommenders: LightGCN
(``to_sparse`` of a normalised bipartite adjacency, BPR loss); a two-head GAT whose attention is
``torch.sparse.softmax`` of edge scores, and multi-head attention as one hybrid sparse tensor; a graph auto-encoder
for link prediction with negative edges; pyGAT's sparse version (a custom autograd.Function that saves a sparse
tensor for its backward); NGCF's and LightGCN's edge dropout of the sparse graph."""

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
)
from .pytorch_programs import OURS, run_both

_pytorch_warns_always = probe13_sparse_common._pytorch_warns_always  # the fixture (autouse)

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor.*is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]


# ----------------------------------------------------------------------------------------------
# LightGCN: a normalised bipartite adjacency made sparse with to_sparse, BPR loss
# ----------------------------------------------------------------------------------------------

USERS, ITEMS, DIM = 6, 9, 4
_rec = np.random.default_rng(1)
R0 = (_rec.random((USERS, ITEMS)) < 0.35).astype(np.float32)
EMB0 = (_rec.standard_normal((USERS + ITEMS, DIM)) * 0.1).astype(np.float32)
TRIPLES = [(_rec.integers(0, USERS, 8), _rec.integers(0, ITEMS, 8), _rec.integers(0, ITEMS, 8)) for _ in range(4)]


def lightgcn(m, layers=3):
    torch, nn, F = m.torch, m.nn, m.F
    R = torch.tensor(R0)
    A = torch.zeros(USERS + ITEMS, USERS + ITEMS)
    A[:USERS, USERS:] = R
    A[USERS:, :USERS] = R.t()
    rowsum = A.sum(1)
    d_inv = rowsum.pow(-0.5)
    d_inv[torch.isinf(d_inv)] = 0.0
    D = torch.diag(d_inv)
    graph = (D @ A @ D).to_sparse().coalesce()
    embedding = nn.Embedding(USERS + ITEMS, DIM)
    embedding.weight.data.copy_(torch.tensor(EMB0))
    optimizer = m.optim.Adam(embedding.parameters(), lr=0.01)
    losses = []
    for users, pos, neg in TRIPLES:
        all_emb = embedding.weight
        embs = [all_emb]
        for _ in range(layers):
            all_emb = torch.sparse.mm(graph, all_emb)
            embs.append(all_emb)
        light_out = torch.mean(torch.stack(embs, dim=1), dim=1)
        user_emb, item_emb = torch.split(light_out, [USERS, ITEMS])
        u = user_emb[torch.tensor(users)]
        pos_scores = (u * item_emb[torch.tensor(pos)]).sum(dim=1)
        neg_scores = (u * item_emb[torch.tensor(neg)]).sum(dim=1)
        loss = torch.mean(F.softplus(neg_scores - pos_scores))
        reg = 1e-4 * embedding.weight.norm(2).pow(2) / len(users)
        optimizer.zero_grad()
        (loss + reg).backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, embedding.weight, graph._nnz(), graph.indices(), graph.values()


def test_lightgcn_on_a_sparse_bipartite_graph():
    (losses, _, nnz, indices, values), _ = run_both(lightgcn, rtol=1e-4, atol=1e-6)
    assert nnz == 2 * int(R0.sum())
    A = np.zeros((USERS + ITEMS,) * 2)
    A[:USERS, USERS:], A[USERS:, :USERS] = R0, R0.T
    assert indices.tolist() == [list(a) for a in np.nonzero(A)]


# ----------------------------------------------------------------------------------------------
# GAT with edge scores and torch.sparse.softmax; graph auto-encoder with negative edges
# ----------------------------------------------------------------------------------------------


def sparse_gat(m, heads=2, steps=5):
    torch, nn, F = m.torch, m.nn, m.F
    adj = normalized_adjacency(m).coalesce()
    edge_index = adj.indices()

    class SpGraphAttentionLayer(nn.Module):
        def __init__(self, seed):
            super().__init__()
            rng = np.random.default_rng(seed)
            self.W = nn.Parameter(torch.tensor((rng.standard_normal((FEATURES, 4)) * 0.5).astype(np.float32)))
            self.a = nn.Parameter(torch.tensor((rng.standard_normal(8) * 0.5).astype(np.float32)))

        def forward(self, x):
            h = x @ self.W
            src, dst = edge_index
            scores = F.leaky_relu(h[src] @ self.a[:4] + h[dst] @ self.a[4:], 0.2)
            attention = torch.sparse.softmax(torch.sparse_coo_tensor(edge_index, scores, (N, N)), dim=1)
            return torch.sparse.mm(attention, h)

    layers = nn.ModuleList([SpGraphAttentionLayer(seed) for seed in range(heads)])
    classifier = nn.Linear(4 * heads, CLASSES)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor(np.resize(W2.T, (CLASSES, 4 * heads))))
        classifier.bias.zero_()
    optimizer = m.optim.Adam(list(layers.parameters()) + list(classifier.parameters()), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        h = torch.cat([F.elu(layer(torch.tensor(X0))) for layer in layers], dim=1)
        loss = F.cross_entropy(classifier(h), torch.tensor(LABELS))
        loss.backward()
        optimizer.step()
    return loss, layers[0].W, layers[1].a, classifier.weight


def test_gat_with_a_sparse_softmax_over_edge_scores():
    # (float32 attention gradients through the softmax differ in their last bits: PyTorch's sparse softmax backward
    # is out * (g - Σ g out), here that of the exps and the sums it is built of)
    (loss, *_), _ = run_both(sparse_gat, rtol=1e-4, atol=1e-5)
    assert np.isfinite(loss)


def graph_autoencoder(m, steps=8):
    torch, nn, F = m.torch, m.nn, m.F
    adj = normalized_adjacency(m)
    encoder = nn.Linear(FEATURES, 4, bias=False)
    with torch.no_grad():
        encoder.weight.copy_(torch.tensor(W1[:, :4].T))
    optimizer = m.optim.Adam(encoder.parameters(), lr=0.05)
    pos = torch.tensor(np.stack([SRC[:12], DST[:12]]))
    neg_rng = np.random.default_rng(5)
    for _ in range(steps):
        neg = torch.tensor(neg_rng.integers(0, N, (2, 12)))
        z = torch.sparse.mm(adj, encoder(torch.tensor(X0)))
        pos_logits = (z[pos[0]] * z[pos[1]]).sum(dim=-1)
        neg_logits = (z[neg[0]] * z[neg[1]]).sum(dim=-1)
        logits = torch.cat([pos_logits, neg_logits])
        labels = torch.cat([torch.ones(12), torch.zeros(12)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss, encoder.weight, torch.sigmoid(logits)


def test_link_prediction_with_negative_edges():
    (loss, *_), _ = run_both(graph_autoencoder, rtol=1e-4, atol=1e-5)
    assert np.isfinite(loss)


# ----------------------------------------------------------------------------------------------
# multi-head attention as one hybrid sparse tensor: edge scores (E, heads), a sparse softmax per head
# ----------------------------------------------------------------------------------------------


def multihead_sparse_gat(m, heads=3, out_features=4, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    edge_index = normalized_adjacency(m).coalesce().indices()
    rng = np.random.default_rng(11)
    W = nn.Parameter(torch.tensor((rng.standard_normal((FEATURES, heads * out_features)) * 0.4).astype(np.float32)))
    a_src = nn.Parameter(torch.tensor((rng.standard_normal((heads, out_features)) * 0.4).astype(np.float32)))
    a_dst = nn.Parameter(torch.tensor((rng.standard_normal((heads, out_features)) * 0.4).astype(np.float32)))
    optimizer = m.optim.Adam([W, a_src, a_dst], lr=0.05)
    for _ in range(steps):
        h = (torch.tensor(X0) @ W).view(N, heads, out_features)
        src, dst = edge_index
        e = F.leaky_relu((h[src] * a_src).sum(-1) + (h[dst] * a_dst).sum(-1), 0.2)  # (E, heads)
        attention = torch.sparse.softmax(torch.sparse_coo_tensor(edge_index, e, (N, N, heads)), dim=1)
        alpha = attention.coalesce().values()  # (E, heads)
        out = torch.zeros(N, heads, out_features).index_add(0, src, alpha.unsqueeze(-1) * h[dst])
        loss = F.cross_entropy(out.mean(1)[:, :CLASSES], torch.tensor(LABELS))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss, alpha, W, a_src.grad


def test_multihead_attention_as_a_hybrid_sparse_softmax():
    (loss, alpha, *_), _ = run_both(multihead_sparse_gat, rtol=1e-4, atol=1e-5)
    rows = normalized_adjacency(OURS).coalesce().indices()[0].numpy()
    np.testing.assert_allclose(np.add.reduceat(alpha, np.flatnonzero(np.diff(rows, prepend=-1))), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# pyGAT's sparse version: a custom autograd.Function that saves a sparse tensor for its backward
# ----------------------------------------------------------------------------------------------


def pygat(m, steps=3):
    torch, nn, F = m.torch, m.nn, m.F

    class SpecialSpmmFunction(torch.autograd.Function):
        """Special function for only sparse region backpropataion layer."""

        @staticmethod
        def forward(ctx, indices, values, shape, b):
            assert indices.requires_grad == False  # noqa: E712
            a = torch.sparse_coo_tensor(indices, values, shape)
            ctx.save_for_backward(a, b)
            ctx.N = shape[0]
            return torch.matmul(a, b)

        @staticmethod
        def backward(ctx, grad_output):
            a, b = ctx.saved_tensors
            grad_values = grad_b = None
            if ctx.needs_input_grad[1]:
                grad_a_dense = grad_output.matmul(b.t())
                edge_idx = a._indices()[0, :] * ctx.N + a._indices()[1, :]
                grad_values = grad_a_dense.view(-1)[edge_idx]
            if ctx.needs_input_grad[3]:
                grad_b = a.t().matmul(grad_output)
            return None, grad_values, None, grad_b

    class SpecialSpmm(nn.Module):
        def forward(self, indices, values, shape, b):
            return SpecialSpmmFunction.apply(indices, values, shape, b)

    class SpGraphAttentionLayer(nn.Module):
        def __init__(self, in_features, out_features, alpha, concat=True, seed=0):
            super().__init__()
            self.concat = concat
            rng = np.random.default_rng(seed)
            self.W = nn.Parameter(torch.tensor((rng.standard_normal((in_features, out_features)) * 0.5)
                                               .astype(np.float32)))
            self.a = nn.Parameter(torch.tensor((rng.standard_normal((1, 2 * out_features)) * 0.5).astype(np.float32)))
            self.leakyrelu = nn.LeakyReLU(alpha)
            self.special_spmm = SpecialSpmm()

        def forward(self, input, adj):
            N = input.size()[0]
            edge = adj.nonzero().t()
            h = torch.mm(input, self.W)
            edge_h = torch.cat((h[edge[0, :], :], h[edge[1, :], :]), dim=1).t()
            edge_e = torch.exp(-self.leakyrelu(self.a.mm(edge_h).squeeze()))
            e_rowsum = self.special_spmm(edge, edge_e, torch.Size([N, N]), torch.ones(size=(N, 1)))
            h_prime = self.special_spmm(edge, edge_e, torch.Size([N, N]), h)
            h_prime = h_prime.div(e_rowsum)
            return F.elu(h_prime) if self.concat else h_prime

    adj = torch.tensor((dense_adjacency() > 0).astype(np.float32))
    layer1 = SpGraphAttentionLayer(FEATURES, 4, 0.2, seed=0)
    layer2 = SpGraphAttentionLayer(4, CLASSES, 0.2, concat=False, seed=1)
    optimizer = m.optim.Adam(list(layer1.parameters()) + list(layer2.parameters()), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        output = F.log_softmax(layer2(layer1(torch.tensor(X0), adj), adj), dim=1)
        loss = F.nll_loss(output, torch.tensor(LABELS))
        loss.backward()
        optimizer.step()
    return loss, layer1.W, layer2.a, layer1.a.grad


def test_pygat_saves_a_sparse_tensor_in_a_custom_function():
    (loss, *_), _ = run_both(pygat, rtol=1e-4, atol=1e-5)
    assert np.isfinite(loss)


# ----------------------------------------------------------------------------------------------
# NGCF's and LightGCN's edge dropout of the sparse graph (their repositories' helpers, torch.rand masks)
# ----------------------------------------------------------------------------------------------

_coo = np.random.default_rng(4)
COO_ROW, COO_COL = _coo.integers(0, 10, 30), _coo.integers(0, 10, 30)
COO_DATA = _coo.random(30).astype(np.float32)
EGO0 = _coo.standard_normal((10, 4)).astype(np.float32)


def edge_dropout(m):
    torch = m.torch
    torch.manual_seed(0)

    def _convert_sp_mat_to_sp_tensor():  # (from scipy's coo_matrix in the original)
        row = torch.Tensor(COO_ROW).long()
        col = torch.Tensor(COO_COL).long()
        index = torch.stack([row, col])
        data = torch.FloatTensor(COO_DATA)
        return torch.sparse.FloatTensor(index, data, torch.Size((10, 10)))

    def sparse_dropout(x, rate, noise_shape):  # NGCF
        random_tensor = 1 - rate
        random_tensor += torch.rand(noise_shape)
        dropout_mask = torch.floor(random_tensor).type(torch.bool)
        i = x._indices()
        v = x._values()
        i = i[:, dropout_mask]
        v = v[dropout_mask]
        out = torch.sparse.FloatTensor(i, v, x.shape).to(x.device)
        return out * (1. / (1 - rate))

    def __dropout_x(x, keep_prob):  # LightGCN
        size = x.size()
        index = x.indices().t()
        values = x.values()
        random_index = torch.rand(len(values)) + keep_prob
        random_index = random_index.int().bool()
        index = index[random_index]
        values = values[random_index] / keep_prob
        return torch.sparse.FloatTensor(index.t(), values, size)

    graph = _convert_sp_mat_to_sp_tensor().coalesce()
    ngcf_graph = sparse_dropout(graph, 0.3, graph._nnz())
    lightgcn_graph = __dropout_x(graph, 0.6)
    ego = torch.tensor(EGO0, requires_grad=True)
    side = torch.sparse.mm(ngcf_graph, ego) + torch.sparse.mm(lightgcn_graph, ego)
    side.pow(2).sum().backward()
    return ngcf_graph.to_dense(), lightgcn_graph.to_dense(), side, ego.grad, lightgcn_graph._nnz()


def test_edge_dropout_of_ngcf_and_lightgcn():
    (ngcf_graph, lightgcn_graph, side, grad, nnz), _ = run_both(edge_dropout)
    graph = np.zeros((10, 10), dtype=np.float32)
    np.add.at(graph, (COO_ROW, COO_COL), COO_DATA)
    kept = ngcf_graph != 0
    np.testing.assert_allclose(ngcf_graph[kept], graph[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(side, ngcf_graph @ EGO0 + lightgcn_graph @ EGO0, rtol=1e-5, atol=1e-5)
