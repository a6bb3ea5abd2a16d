# ruff: noqa: E731, E741, F841, N806  (the programs are kept as their authors write them)
"""Graph networks on a sparse adjacency and embeddings with sparse gradients, written as PyTorch programs are written
without PyG (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data.

Graphs: a GCN on D^-1/2 (A + I) D^-1/2 built from an edge list with repeats (``coalesce``, ``torch.sparse.sum``,
the values scaled by the degrees), trained with Adam; pygcn's scipy-free row normalisation (legacy
``torch.sparse.FloatTensor``, ``torch.spmm``, in-place ``mul_``); SGC's precomputed A^k X; APPNP's propagation;
GraphSAGE's mean aggregation; LightGCN (``to_sparse`` of a normalised bipartite adjacency, BPR loss); a two-head GAT
whose attention is ``torch.sparse.softmax`` of edge scores; a graph auto-encoder for link prediction with negative
edges. The sparse API those programs touch (nnz, indices of coalesced and summed tensors, ``t``, products on either
side, ``sparse.addmm``, conversions, printing, the errors for what has no sparse kernel).

Sparse gradients: word2vec's skip-gram with ``nn.Embedding(sparse=True)`` trained by SGD (momentum, Nesterov),
Adagrad and SparseAdam, with gradients accumulated over several backward calls and ``zero_grad(set_to_none=False)``
(the sparse .grad's entries compared too); fastText's ``EmbeddingBag(sparse=True)`` with SparseAdam for the bag and
Adam for the classifier, SparseAdam resumed from its state_dict; ``clip_grad_norm_`` refusing a sparse gradient.

Without PyTorch (CI) each program still checks itself against NumPy."""

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch, run_both

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor.*is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]



@pytest.fixture(autouse=True)
def _pytorch_warns_always():
    """PyTorch warns of torch.sparse.FloatTensor's deprecation once a process: warned always here, so that the once
    is left to tests/test_sparse.py, which asserts the warning."""
    torch_modules = pytorch()
    if torch_modules is None:
        yield
        return
    before = torch_modules.torch.is_warn_always_enabled()
    torch_modules.torch.set_warn_always(True)
    yield
    torch_modules.torch.set_warn_always(before)


N, FEATURES, CLASSES = 14, 6, 3
_rng = np.random.default_rng(0)
SRC, DST = _rng.integers(0, N, 32), _rng.integers(0, N, 32)  # repeats and self-loops among them
X0 = _rng.standard_normal((N, FEATURES)).astype(np.float32)
LABELS = _rng.integers(0, CLASSES, N)
W1 = (_rng.standard_normal((FEATURES, 8)) * 0.4).astype(np.float32)
W2 = (_rng.standard_normal((8, CLASSES)) * 0.4).astype(np.float32)


def dense_adjacency(loops=True, symmetric=True):
    A = np.zeros((N, N))
    np.add.at(A, (SRC, DST), 1.0)
    if symmetric:
        np.add.at(A, (DST, SRC), 1.0)
    if loops:
        A += np.eye(N)
    return A


def normalized_adjacency(m):
    """D^-1/2 (A + I) D^-1/2 from the edge list, as people write it with torch ops."""
    torch = m.torch
    edge_index = torch.tensor(np.stack([SRC, DST]))
    edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    self_loops = torch.arange(N).unsqueeze(0).repeat(2, 1)
    edge_index = torch.cat([edge_index, self_loops], dim=1)
    adj = torch.sparse_coo_tensor(edge_index, torch.ones(edge_index.size(1)), (N, N)).coalesce()
    deg = torch.sparse.sum(adj, dim=1).to_dense()
    deg_inv_sqrt = deg.pow(-0.5)
    deg_inv_sqrt[torch.isinf(deg_inv_sqrt)] = 0
    row, col = adj.indices()
    values = deg_inv_sqrt[row] * adj.values() * deg_inv_sqrt[col]
    return torch.sparse_coo_tensor(adj.indices(), values, adj.shape)


def numpy_normalized():
    A = dense_adjacency()
    d = A.sum(1) ** -0.5
    return d[:, None] * A * d[None, :]


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
# the sparse API the programs touch
# ----------------------------------------------------------------------------------------------


def sparse_api(m):
    torch = m.torch
    S = torch.sparse_coo_tensor(torch.tensor(np.stack([SRC[:10], DST[:10]])), torch.arange(1.0, 11.0), (N, N))
    C = S.coalesce()
    summed = S + S.t()  # uncoalesced: PyTorch's entries (see tests/test_probe13_sparse_fixes.py)
    dense = torch.tensor(X0[:, :3].copy())
    scaled = C * torch.arange(float(N)).unsqueeze(1)  # row scales
    return dict(
        nnz=[S._nnz(), C._nnz(), summed._nnz(), (C + C.t())._nnz()],
        coalesced=[S.is_coalesced(), C.is_coalesced(), summed.is_coalesced(), (C + C.t()).is_coalesced()],
        indices=[C.indices(), C.values(), summed._indices(), summed._values()],
        transposed=C.t().to_dense(),
        products=[S @ dense, dense.t() @ S, torch.sparse.addmm(dense, S, dense, beta=0.5, alpha=2.0),
                  torch.mm(S, dense), torch.matmul(S, dense), torch.mv(S, dense[:, 0]), (S @ S).to_dense()],
        sums=[torch.sparse.sum(S), torch.sparse.sum(S, dim=0).to_dense(), S.sum(), scaled.to_dense(),
              torch.sparse.sum(S, dim=(0, 1))],
        conversions=[S.double().to_dense(), S.to(torch.float64).dtype == torch.float64, C.type(),
                     (S / 2).to_dense(), (-S).to_dense(), (S - S).to_dense(), S.select(0, int(SRC[0])).to_dense(),
                     C[int(SRC[1])].to_dense(), C.norm()],
        repr=repr(torch.sparse_coo_tensor(torch.tensor([[0, 1, 1], [2, 0, 2]]), torch.tensor([3.0, 4.0, 5.0]),
                                          (2, 3))),
    )


def test_the_sparse_api_as_pytorchs():
    ours, _ = run_both(sparse_api, rtol=1e-5, atol=1e-5)
    S = np.zeros((N, N))
    np.add.at(S, (SRC[:10], DST[:10]), np.arange(1.0, 11.0))
    np.testing.assert_allclose(ours["products"][0], S @ X0[:, :3], rtol=1e-5, atol=1e-6)
    assert ours["nnz"][1] == np.count_nonzero(S) and ours["coalesced"] == [False, True, False, False]  # (C.t() is not)


def sparse_errors(m):
    torch = m.torch
    S = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), (2, 2))
    attempts = dict(
        exp=lambda: S.exp(), view=lambda: S.view(4), values=lambda: (S + S.t()).values(),
        sparse_plus_dense=lambda: S + torch.ones(2, 2), max=lambda: S.max(),
        out_of_range=lambda: torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.ones(2), (2,),
                                                     check_invariants=True),
        negative=lambda: torch.sparse_coo_tensor(torch.tensor([[0, -1]]), torch.ones(2), (2,),
                                                 check_invariants=True),
        nnz_mismatch=lambda: torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(3), (2,)),
        norm_dim=lambda: S.norm(dim=1),
        leaf_in_place=lambda: torch.sparse_coo_tensor(torch.tensor([[0], [1]]),
                                                      torch.ones(1), (2, 2), requires_grad=True).mul_(2),
    )
    raised = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            raised[name] = "nothing"
        except Exception as error:  # noqa: BLE001 (the kind of error is what is compared)
            raised[name] = type(error).__name__
    return raised


def test_errors_for_what_has_no_sparse_kernel_or_breaks_the_invariants():
    ours, _ = run_both(sparse_errors)
    assert ours["exp"] == "NotImplementedError" and ours["out_of_range"] == "RuntimeError"


# ----------------------------------------------------------------------------------------------
# word2vec skip-gram with sparse embeddings: SGD, Adagrad, SparseAdam; accumulation; zero_grad
# ----------------------------------------------------------------------------------------------

VOCAB, EMBED = 24, 5
_w2v = np.random.default_rng(2)
U0 = (_w2v.standard_normal((VOCAB, EMBED)) * 0.3).astype(np.float32)
V0 = (_w2v.standard_normal((VOCAB, EMBED)) * 0.3).astype(np.float32)
BATCHES = [(_w2v.integers(0, VOCAB, 8), _w2v.integers(0, VOCAB, 8), _w2v.integers(0, VOCAB, (8, 4)))
           for _ in range(6)]


def skipgram_model(m):
    nn, F = m.nn, m.F

    class SkipGramModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.u_embeddings = nn.Embedding(VOCAB, EMBED, sparse=True)
            self.v_embeddings = nn.Embedding(VOCAB, EMBED, sparse=True)
            self.u_embeddings.weight.data.copy_(m.torch.tensor(U0))
            self.v_embeddings.weight.data.copy_(m.torch.tensor(V0))

        def forward(self, pos_u, pos_v, neg_v):
            emb_u = self.u_embeddings(pos_u)
            emb_v = self.v_embeddings(pos_v)
            emb_neg_v = self.v_embeddings(neg_v)
            score = F.logsigmoid(torch_clamp(m, (emb_u * emb_v).sum(dim=1)))
            neg_score = F.logsigmoid(-torch_clamp(m, m.torch.bmm(emb_neg_v, emb_u.unsqueeze(2)).squeeze()))
            return -(score + neg_score.sum(dim=1)).mean()

    return SkipGramModel()


def torch_clamp(m, x):
    return m.torch.clamp(x, max=10, min=-10)


def train_skipgram(m, make_optimizer, accumulate=1, set_to_none=True):
    torch = m.torch
    model = skipgram_model(m)
    optimizer = make_optimizer(m, model)
    losses, structure = [], []
    for k, (u, v, neg) in enumerate(BATCHES):
        loss = model(torch.tensor(u), torch.tensor(v), torch.tensor(neg)) / accumulate
        loss.backward()
        losses.append(loss.item())
        if (k + 1) % accumulate == 0:
            grad = model.v_embeddings.weight.grad
            structure.append([grad._nnz(), grad._indices(), grad.to_dense()])
            optimizer.step()
            optimizer.zero_grad(set_to_none=set_to_none)
    return losses, model.u_embeddings.weight, model.v_embeddings.weight, structure


OPTIMIZERS = {
    "sgd": lambda m, model: m.optim.SGD(model.parameters(), lr=0.5),
    "sgd_momentum": lambda m, model: m.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
    "sgd_nesterov": lambda m, model: m.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True),
    "adagrad": lambda m, model: m.optim.Adagrad(model.parameters(), lr=0.3, lr_decay=0.01,
                                                initial_accumulator_value=0.1),
    "sparse_adam": lambda m, model: m.optim.SparseAdam(list(model.parameters()), lr=0.05),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("accumulate,set_to_none", [(1, True), (2, False)])
def test_skipgram_trains_with_sparse_gradients(name, accumulate, set_to_none):
    (losses, *_), _ = run_both(train_skipgram, OPTIMIZERS[name], accumulate, set_to_none, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(losses))


def sparse_gradient_by_hand():
    """dL/dV of the first batch, by the chain rule in NumPy (float64)."""
    u, v, neg = BATCHES[0]
    sig = lambda x: 1 / (1 + np.exp(-x))
    U, V = U0.astype(np.float64), V0.astype(np.float64)
    eu, ev, en = U[u], V[v], V[neg]
    grad = np.zeros_like(V)
    pos = (eu * ev).sum(1)
    np.add.at(grad, v, -(1 - sig(pos))[:, None] * eu / len(u))
    negs = np.einsum("bkd,bd->bk", en, eu)
    np.add.at(grad, neg.reshape(-1), (sig(negs)[..., None] * eu[:, None, :] / len(u)).reshape(-1, EMBED))
    return grad


def test_the_sparse_gradient_by_hand():
    (_, _, _, structure), _ = run_both(train_skipgram, OPTIMIZERS["sgd"], 1, True)
    nnz, indices, dense = structure[0]
    np.testing.assert_allclose(dense, sparse_gradient_by_hand(), rtol=1e-4, atol=1e-6)
    assert nnz <= 8 + 32 and set(indices[0]) == set(BATCHES[0][1]) | set(BATCHES[0][2].reshape(-1))


def clip_sparse(m):
    torch = m.torch
    model = skipgram_model(m)
    u, v, neg = BATCHES[0]
    model(torch.tensor(u), torch.tensor(v), torch.tensor(neg)).backward()
    try:
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return "clipped"
    except NotImplementedError as error:
        return "linalg_vector_norm" in str(error) and "SparseCPU" in str(error)


def test_clip_grad_norm_refuses_sparse_gradients():
    ours, _ = run_both(clip_sparse)
    assert ours is True


# ----------------------------------------------------------------------------------------------
# fastText: EmbeddingBag(sparse=True) with SparseAdam, the classifier with Adam; SparseAdam resumed
# ----------------------------------------------------------------------------------------------


def fasttext(m, resume_at=None, mode="mean"):
    torch, nn, F = m.torch, m.nn, m.F

    class TextClassificationModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.EmbeddingBag(VOCAB, EMBED, mode=mode, sparse=True)
            self.fc = nn.Linear(EMBED, CLASSES)
            self.embedding.weight.data.copy_(torch.tensor(U0))
            self.fc.weight.data.copy_(torch.tensor(V0[:CLASSES]))
            self.fc.bias.data.zero_()

        def forward(self, text, offsets, per_sample_weights=None):
            return self.fc(self.embedding(text, offsets, per_sample_weights=per_sample_weights))

    model = TextClassificationModel()
    sparse_optimizer = m.optim.SparseAdam(list(model.embedding.parameters()), lr=0.05)
    dense_optimizer = m.optim.Adam(model.fc.parameters(), lr=0.05)
    losses = []
    for k, (u, _, neg) in enumerate(BATCHES):
        if k == resume_at:
            saved = sparse_optimizer.state_dict()
            sparse_optimizer = m.optim.SparseAdam(list(model.embedding.parameters()), lr=0.05)
            sparse_optimizer.load_state_dict(saved)
        text = torch.tensor(neg.reshape(-1))
        offsets = torch.tensor([0, 3, 10, 11, 20, 26])
        weights = torch.tensor(np.linspace(0.2, 1.0, 32).astype(np.float32)) if mode == "sum" else None
        sparse_optimizer.zero_grad()
        dense_optimizer.zero_grad()
        loss = F.cross_entropy(model(text, offsets, weights), torch.tensor(u[:6] % CLASSES))
        loss.backward()
        sparse_optimizer.step()
        dense_optimizer.step()
        losses.append(loss.item())
    state = sparse_optimizer.state_dict()["state"][0]
    return losses, model.embedding.weight, model.fc.weight, state["exp_avg_sq"], state["step"]


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_fasttext_with_sparse_adam_and_adam(mode):
    (losses, *_, step), _ = run_both(fasttext, None, mode, rtol=1e-5, atol=1e-6)
    assert step == len(BATCHES)


def test_sparse_adam_resumed_from_its_state_dict_gives_the_same_weights():
    straight, _ = run_both(fasttext, None)
    resumed, _ = run_both(fasttext, 3)
    np.testing.assert_array_equal(resumed[1], straight[1])
    assert resumed[4] == straight[4] == len(BATCHES)


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
# what differs: PyTorch's dense gradient through a sparse factor of torch.mm / @ / matmul / spmm
# ----------------------------------------------------------------------------------------------

def learned_adjacency(m):
    torch = m.torch
    weights = m.nn.Parameter(torch.tensor(numpy_normalized().astype(np.float32)))  # learnt edge weights
    out = weights.to_sparse() @ torch.tensor(X0)  # made sparse for the product
    (out ** 2).sum().backward()
    return out, weights.grad


def test_a_dense_matrix_made_sparse_gets_pytorchs_dense_gradient_through_matmul():
    (out, grad), theirs = run_both(learned_adjacency, rtol=1e-5, atol=1e-5)
    expected = 2 * out @ X0.T  # the full dL/dW = 2 Y X^T: nonzero where W is 0 too
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def saved_adjacency(m, path):
    torch = m.torch
    adj = normalized_adjacency(m).coalesce()
    torch.save({"adj": adj, "features": torch.tensor(X0)}, path)
    loaded = torch.load(path)
    return loaded["adj"].to_dense(), loaded["adj"].is_coalesced(), torch.spmm(loaded["adj"], loaded["features"])


def test_a_saved_sparse_adjacency_loads_back(tmp_path):
    (dense, coalesced, product), _ = run_both(saved_adjacency, str(tmp_path / "graph.pt"))
    np.testing.assert_allclose(dense, numpy_normalized(), rtol=1e-6)
    assert coalesced


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


def printed_graph_tensor(m):
    torch = m.torch
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)
    scores = torch.sparse_coo_tensor(torch.tensor([[0, 1, 1, 2, 0, 2], [1, 0, 2, 1, 1, 2]]), values, (3, 3))
    return repr(scores.coalesce())


def test_a_sparse_tensor_with_a_graph_prints_as_pytorchs():
    ours, _ = run_both(printed_graph_tensor)
    assert ours.endswith("size=(3, 3), nnz=5, layout=torch.sparse_coo, grad_fn=<CoalesceBackward0>)")


def hooked_sparse_embedding(m):
    torch = m.torch
    model = skipgram_model(m)
    model.u_embeddings.weight.register_hook(lambda grad: grad * 0.5)  # a gradient scaled by a tensor hook
    optimizer = m.optim.SparseAdam(list(model.parameters()), lr=0.05)
    for u, v, neg in BATCHES[:3]:
        optimizer.zero_grad()
        model(torch.tensor(u), torch.tensor(v), torch.tensor(neg)).backward()
        optimizer.step()
    return model.u_embeddings.weight, model.u_embeddings.weight.grad.is_sparse


def test_a_hook_on_a_sparse_embedding_sees_the_sparse_gradient():
    (weight, sparse), _ = run_both(hooked_sparse_embedding)
    assert sparse


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
