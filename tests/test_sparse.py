"""Sparse COO tensors (autograd.sparse, PyTorch's torch.sparse): construction and its checks, coalescing,
to_dense, the sparse-dense product and its gradients, sums, softmaxes over the entries present, the
zero-preserving functions, printing, and two graph networks written as PyTorch programs write them
(pygcn's GCN on a normalised sparse adjacency, a GAT whose attention is a sparse softmax).

Each test asserts values computed by hand with NumPy, so it means something on CI without PyTorch;
the ``T`` tests also run on PyTorch where it is installed, and the programs compare with it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd

from .pytorch_programs import run_both

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor.*is deprecated:UserWarning")]

INDICES = [[1, 0, 1, 0, 1], [2, 1, 2, 0, 0]]  # (1, 2) twice: an uncoalesced tensor
VALUES = [1.0, 2.0, 3.0, 4.0, -5.0]


def by_hand(indices, values, size):
    dense = np.zeros(size)
    np.add.at(dense, tuple(np.asarray(indices)), np.asarray(values))
    return dense


def example(T, dtype=None, **kwargs):
    return T.sparse_coo_tensor(T.tensor(INDICES), T.tensor(VALUES, dtype=dtype or T.float64), (2, 3), **kwargs)


def test_to_dense_adds_the_values_at_repeated_positions(T):
    S = example(T)
    assert S.is_sparse and S.layout == T.sparse_coo and S.shape == (2, 3) and S._nnz() == 5
    assert not S.is_coalesced() and S.sparse_dim() == 2 and S.dense_dim() == 0
    np.testing.assert_array_equal(S.to_dense().numpy(), by_hand(INDICES, VALUES, (2, 3)))
    assert S.to_dense().numpy()[1, 2] == 4.0


def test_coalesce_sorts_the_indices_and_sums_repeats(T):
    S = example(T)
    with pytest.raises(RuntimeError, match="Cannot get indices on an uncoalesced tensor"):
        S.indices()
    with pytest.raises(RuntimeError, match="Cannot get values on an uncoalesced tensor"):
        S.values()
    C = S.coalesce()
    assert C.is_coalesced() and C._nnz() == 4
    assert C.indices().tolist() == [[0, 0, 1, 1], [0, 1, 0, 2]]
    assert C.values().tolist() == [4.0, 2.0, -5.0, 4.0]
    assert C.coalesce() is C


def test_the_product_with_a_dense_matrix_and_its_gradients(T):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 4))
    G = rng.standard_normal((2, 4))
    values = T.tensor(VALUES, dtype=T.float64, requires_grad=True)
    x = T.tensor(X, requires_grad=True)
    S = T.sparse_coo_tensor(T.tensor(INDICES), values, (2, 3))
    Y = T.sparse.mm(S, x)
    A = by_hand(INDICES, VALUES, (2, 3))
    np.testing.assert_allclose(Y.detach().numpy(), A @ X, rtol=1e-12)
    (Y * T.tensor(G)).sum().backward()
    rows, columns = np.asarray(INDICES)
    np.testing.assert_allclose(values.grad.numpy(), (G[rows] * X[columns]).sum(1), rtol=1e-12)  # G[i_e]·X[k_e]
    np.testing.assert_allclose(x.grad.numpy(), A.T @ G, rtol=1e-12)  # Aᵀ G
    for product in (T.spmm(S, x), T.mm(S, x), T.matmul(S, x), S @ x, S.mm(x)):
        np.testing.assert_allclose(product.detach().numpy(), A @ X, rtol=1e-12)
    np.testing.assert_allclose((S @ x[:, 0]).detach().numpy(), A @ X[:, 0], rtol=1e-12)
    dense_times_sparse = T.tensor(G[:, :2].T) @ S
    np.testing.assert_allclose(dense_times_sparse.detach().numpy(), G[:, :2].T @ A, rtol=1e-12)
    np.testing.assert_allclose(T.sparse.addmm(T.ones(2, 4, dtype=T.float64), S, x, beta=0.5, alpha=2).detach()
                               .numpy(), 0.5 + 2 * A @ X, rtol=1e-12)


def test_a_sparse_leafs_gradient_is_sparse_at_its_indices(T):
    S = example(T, requires_grad=True)
    assert S.is_leaf and S.requires_grad
    X = np.arange(12.0).reshape(3, 4)
    T.sparse.mm(S, T.tensor(X)).sum().backward()
    # dL/dA (A the dense matrix) at the positions S has, coalesced: A = S.to_dense(), Y = A X, dL/dA = 1 Xᵀ
    assert S.grad.is_sparse and S.grad._indices().tolist() == [[0, 0, 1, 1], [0, 1, 0, 2]]
    np.testing.assert_allclose(S.grad._values().numpy(), X.sum(1)[[0, 1, 0, 2]])


def test_sums(T):
    S = example(T)
    A = by_hand(INDICES, VALUES, (2, 3))
    assert float(T.sparse.sum(S)) == A.sum() == float(S.sum())
    by_rows = T.sparse.sum(S, 1)
    assert by_rows.is_sparse and by_rows.is_coalesced()
    np.testing.assert_array_equal(by_rows.to_dense().numpy(), A.sum(1))
    np.testing.assert_array_equal(T.sparse.sum(S, 0).to_dense().numpy(), A.sum(0))
    assert not T.sparse.sum(S, (0, 1)).is_sparse and float(T.sparse.sum(S, (0, 1))) == A.sum()


def test_softmax_runs_over_the_entries_present_in_each_row(T):
    S = example(T).coalesce()
    A = by_hand(INDICES, VALUES, (2, 3))
    present = A != 0  # (no stored zero in this example)
    expected = np.where(present, np.exp(A), 0.0)
    expected /= expected.sum(1, keepdims=True)
    soft = T.sparse.softmax(S, 1)
    assert soft.is_sparse and soft._nnz() == 4
    np.testing.assert_allclose(soft.to_dense().numpy(), expected, rtol=1e-12)
    log_soft = T.sparse.log_softmax(S, 1).to_dense().numpy()
    np.testing.assert_allclose(log_soft[present], np.log(expected[present]), rtol=1e-10)
    by_columns = T.sparse.softmax(S, 0).to_dense().numpy()
    np.testing.assert_allclose(by_columns[:, 0], np.exp([4, -5]) / np.exp([4, -5]).sum(), rtol=1e-12)
    assert by_columns[0, 1] == 1.0 and by_columns[1, 1] == 0.0


def test_functions_of_the_values_keep_the_zeros_and_other_functions_refuse(T):
    S = example(T)
    A = by_hand(INDICES, VALUES, (2, 3))
    np.testing.assert_allclose(S.abs().sqrt().to_dense().numpy(), np.sqrt(np.abs(A)), rtol=1e-12)
    assert S.sqrt().is_coalesced()  # (summed before the root: sqrt(1) + sqrt(3) is not sqrt(4))
    np.testing.assert_allclose((S * 2).to_dense().numpy(), 2 * A)
    np.testing.assert_allclose((3 * S / 2 - S).to_dense().numpy(), 0.5 * A)
    np.testing.assert_allclose((-S).to_dense().numpy(), -A)
    np.testing.assert_allclose((S ** 2).to_dense().numpy(), A ** 2)
    np.testing.assert_allclose((S * T.tensor(A)).to_dense().numpy(), A * A)
    np.testing.assert_allclose((S + S).to_dense().numpy(), 2 * A)
    np.testing.assert_allclose((T.ones(2, 3, dtype=T.float64) + S).numpy(), 1 + A)
    np.testing.assert_allclose(S.t().to_dense().numpy(), A.T)
    np.testing.assert_allclose(S[1].to_dense().numpy(), A[1])
    with pytest.raises(NotImplementedError, match="SparseCPU"):
        S.exp()
    with pytest.raises(NotImplementedError, match="SparseCPU"):
        T.exp(S)
    with pytest.raises(RuntimeError, match=r"add\(sparse, dense\) is not supported"):
        S + T.ones(2, 3, dtype=T.float64)


def test_construction_checks(T, warn_always):  # (the legacy constructor warns once a process)
    indices = T.tensor([[0, 1, 1], [2, 0, 2]])
    values = T.tensor([3.0, 4.0, 5.0])
    with pytest.raises(RuntimeError, match="for dim 1, size is 2 but found index 2"):
        T.sparse_coo_tensor(indices, values, (2, 2), check_invariants=True)
    with pytest.raises(RuntimeError, match="found negative index -1 for dim 0"):
        T.sparse_coo_tensor(-indices, values, (2, 3), check_invariants=True)
    with pytest.raises(RuntimeError, match="nnz from indices: 3, nnz from values: 2"):
        T.sparse_coo_tensor(indices, values[:2], (2, 3))
    S = T.sparse_coo_tensor(indices, values, (2, 3))
    with pytest.raises(RuntimeError, match="Expected dim 0 size 3, got 4"):
        T.sparse.mm(S, T.ones(4, 2))
    with pytest.raises(RuntimeError, match="expected scalar type Float but found Double"):
        T.sparse.mm(S, T.ones(3, 2, dtype=T.float64))
    assert T.sparse_coo_tensor(indices, values).shape == (2, 3)  # (the size the indices need)
    assert T.sparse_coo_tensor(indices.int(), values, (2, 3)).to_dense().tolist() == [[0, 0, 3], [4, 0, 5]]
    assert T.sparse_coo_tensor(indices, [1, 2, 3], (2, 3)).dtype == T.int64
    with pytest.warns(UserWarning, match="is deprecated"):
        legacy = T.sparse.FloatTensor(indices, values, T.Size([2, 3]))
    assert legacy.dtype == T.float32 and legacy.to_dense().tolist() == [[0, 0, 3], [4, 0, 5]]


def test_saving_and_loading_a_sparse_tensor(T, tmp_path):
    """A sparse tensor saved beside dense ones loads back with its indices, values, size and coalesced flag; a
    file torch.save wrote reads too. Loading checks the indices, as constructing does."""
    adjacency = T.sparse_coo_tensor(T.tensor([[1, 0, 1], [0, 1, 1]]), T.tensor([2.0, 3.0, 4.0]), (2, 2))
    path = str(tmp_path / "graph.pt")
    T.save({"raw": adjacency, "coalesced": adjacency.coalesce(), "features": T.ones(2)}, path)
    loaded = T.load(path)
    assert loaded["raw"].is_sparse and not loaded["raw"].is_coalesced() and loaded["coalesced"].is_coalesced()
    assert loaded["raw"]._indices().tolist() == [[1, 0, 1], [0, 1, 1]]
    np.testing.assert_array_equal(loaded["coalesced"].to_dense().numpy(), [[0, 3], [2, 4]])
    np.testing.assert_array_equal(loaded["features"].numpy(), [1, 1])
    try:
        import torch
    except ImportError:
        return
    theirs = torch.sparse_coo_tensor(torch.tensor([[1, 0]]), torch.tensor([5.0, 6.0]), (3,))
    torch.save({"adj": theirs, "sorted": theirs.coalesce()}, path)
    loaded = autograd.load(path)
    assert loaded["adj"]._indices().tolist() == [[1, 0]] and loaded["sorted"].is_coalesced()
    np.testing.assert_array_equal(loaded["adj"].to_dense().numpy(), [6, 5, 0])
    outside = torch.sparse_coo_tensor(torch.tensor([[0, 7]]), torch.tensor([1.0, 2.0]), (3,), check_invariants=False)
    torch.save(outside, path)
    with pytest.raises(RuntimeError, match="size is inconsistent with indices"):
        autograd.load(path)


def test_a_coalesced_claim_is_checked():
    with pytest.raises(RuntimeError, match="not sorted and unique"):
        autograd.sparse_coo_tensor([[1, 0]], [1.0, 2.0], (2,), is_coalesced=True)
    assert autograd.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (2,), is_coalesced=True).is_coalesced()


def test_dense_to_sparse(T):
    x = T.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]])
    S = x.to_sparse()
    assert S.is_coalesced() and S.indices().tolist() == [[0, 1, 1], [1, 0, 2]] and S.values().tolist() == [1.5, 2, -1]
    rows = T.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]).to_sparse(1)  # a hybrid tensor: whole rows as values
    assert rows.indices().tolist() == [[1]] and rows.values().tolist() == [[1.0, 0.0]] and rows.dense_dim() == 1
    assert not T.zeros(2).is_sparse and T.zeros(2, 3).to_sparse()._nnz() == 0


def test_printing(T):
    S = T.sparse_coo_tensor(T.tensor([[0, 1, 1], [2, 0, 2]]), T.tensor([3.0, 4.0, 5.0]), (2, 3), requires_grad=True)
    assert repr(S) == ("tensor(indices=tensor([[0, 1, 1],\n"
                       "                       [2, 0, 2]]),\n"
                       "       values=tensor([3., 4., 5.]),\n"
                       "       size=(2, 3), nnz=3, layout=torch.sparse_coo, requires_grad=True)")
    empty = T.sparse_coo_tensor(T.zeros(2, 0, dtype=T.int64), T.zeros(0), (2, 3))
    assert repr(empty) == ("tensor(indices=tensor([], size=(2, 0)),\n       values=tensor([], size=(0,)),\n"
                           "       size=(2, 3), nnz=0, layout=torch.sparse_coo)")


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 4), n=st.integers(1, 4), k=st.integers(1, 3), nnz=st.integers(0, 7), seed=st.integers(0, 99))
def test_gradients_agree_with_finite_differences(m, n, k, nnz, seed):
    rng = np.random.default_rng(seed)
    indices = autograd.tensor(np.stack([rng.integers(0, m, nnz), rng.integers(0, n, nnz)]))
    values = autograd.tensor(rng.standard_normal(nnz), requires_grad=True)
    x = autograd.tensor(rng.standard_normal((n, k)), requires_grad=True)

    def product(values, x):
        return autograd.sparse.mm(autograd.sparse_coo_tensor(indices, values, (m, n)), x)

    def softmax_then_dense(values):
        S = autograd.sparse_coo_tensor(indices, values, (m, n))
        return autograd.sparse.softmax(S, 1).to_dense() * 2 + autograd.sparse.log_softmax(S, 0).to_dense()

    def sums(values):
        S = autograd.sparse_coo_tensor(indices, values, (m, n))
        return autograd.sparse.sum(S.coalesce() * 3, 0).to_dense() + S.t().to_dense().sum(1)

    assert autograd.gradcheck(product, (values, x))
    assert autograd.gradgradcheck(product, (values, x))
    if nnz:
        assert autograd.gradcheck(softmax_then_dense, (values,))
        assert autograd.gradcheck(sums, (values,))


# -- programs ----------------------------------------------------------------------------------------------


def _graph(nodes=24, classes=3, features=6, seed=0):
    """A random graph with self-loops and its pygcn normalisation D^-1 (A + I), features and labels."""
    rng = np.random.default_rng(seed)
    edges = {(i, i) for i in range(nodes)}
    for _ in range(3 * nodes):
        i, j = rng.integers(0, nodes, 2)
        edges |= {(i, j), (j, i)}
    edges = np.array(sorted(edges)).T
    degree = np.bincount(edges[0], minlength=nodes)
    weights = (1.0 / degree[edges[0]]).astype(np.float32)
    labels = rng.integers(0, classes, nodes)
    features = (np.eye(classes)[labels] @ rng.standard_normal((classes, features)) +
                rng.standard_normal((nodes, features))).astype(np.float32)
    return edges, weights, features, labels


def gcn_program(m, edges, weights, features, labels, steps=25, dense=False):
    """pygcn (Kipf's GCN): GraphConvolution layers computing adj @ (x W) with torch.spmm on a sparse adjacency
    built with the legacy torch.sparse.FloatTensor, trained with Adam and weight decay."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class GraphConvolution(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(in_features, out_features))
            self.bias = nn.Parameter(torch.empty(out_features))
            stdv = 1.0 / self.weight.size(1) ** 0.5
            with torch.no_grad():
                self.weight.copy_(torch.linspace(-stdv, stdv, in_features * out_features).reshape(
                    in_features, out_features).flip(0))
                self.bias.fill_(0.01)

        def forward(self, input, adj):
            support = torch.mm(input, self.weight)
            return torch.spmm(adj, support) + self.bias

    class GCN(nn.Module):
        def __init__(self, nfeat, nhid, nclass):
            super().__init__()
            self.gc1 = GraphConvolution(nfeat, nhid)
            self.gc2 = GraphConvolution(nhid, nclass)

        def forward(self, x, adj):
            x = F.relu(self.gc1(x, adj))
            return F.log_softmax(self.gc2(x, adj), dim=1)

    nodes = features.shape[0]
    adj = torch.sparse.FloatTensor(torch.LongTensor(edges), torch.FloatTensor(weights), torch.Size([nodes, nodes]))
    if dense:
        adj = adj.to_dense()
    x, y = torch.tensor(features), torch.tensor(labels)
    model = GCN(features.shape[1], 8, int(labels.max()) + 1)
    optimizer = m.optim.Adam(model.parameters(), lr=0.05, weight_decay=5e-4)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.nll_loss(model(x, adj)[:16], y[:16])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    accuracy = (model(x, adj).argmax(1) == y).float().mean()
    return losses, accuracy, model.gc1.weight, model.gc2.bias


def test_pygcn_trains_on_a_sparse_adjacency_as_pytorchs():
    graph = _graph()
    (losses, accuracy, weight, bias), _ = run_both(gcn_program, *graph, rtol=1e-4, atol=1e-5)
    assert losses[-1] < 0.6 * losses[0] and accuracy > 0.6
    # the same network on the dense adjacency: the sparse product is the dense one
    dense_losses = run_both(gcn_program, *graph, dense=True, compare=False)[0][0]
    np.testing.assert_allclose(dense_losses, losses, rtol=1e-4)


def gat_program(m, edges, weights, features, labels):
    """A one-head graph attention layer (GAT) in the sparse style: e_ij = LeakyReLU(aᵀ[W h_i ‖ W h_j]) on the edges,
    attention by torch.sparse.softmax over each node's neighbours, then torch.sparse.mm with W h."""
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    nodes = features.shape[0]
    W = torch.linspace(-0.5, 0.5, features.shape[1] * 4).reshape(features.shape[1], 4).requires_grad_()
    a = torch.linspace(-1.0, 1.0, 8).requires_grad_()
    x = torch.tensor(features)
    index = torch.tensor(edges)
    h = x @ W
    scores = F.leaky_relu(torch.cat([h[index[0]], h[index[1]]], 1) @ a, 0.2)
    attention = torch.sparse.softmax(torch.sparse_coo_tensor(index, scores, (nodes, nodes)), dim=1)
    out = torch.sparse.mm(attention, h)
    loss = F.cross_entropy(out[:, :3], torch.tensor(labels))
    loss.backward()
    return loss, out, W.grad, a.grad


def test_a_graph_attention_layer_with_a_sparse_softmax_as_pytorchs():
    edges, weights, features, labels = _graph(nodes=12, seed=3)
    (loss, out, grad_W, grad_a), _ = run_both(gat_program, edges, weights, features, labels, rtol=1e-4, atol=1e-5)
    # by hand: softmax of the edge scores over each row's neighbours
    h = features @ np.linspace(-0.5, 0.5, features.shape[1] * 4, dtype=np.float32).reshape(-1, 4)
    scores = np.concatenate([h[edges[0]], h[edges[1]]], 1) @ np.linspace(-1, 1, 8)
    scores = np.where(scores > 0, scores, 0.2 * scores)
    dense = np.full((12, 12), -np.inf)
    dense[edges[0], edges[1]] = scores
    attention = np.exp(dense - dense.max(1, keepdims=True))
    attention /= attention.sum(1, keepdims=True)
    np.testing.assert_allclose(out, attention @ h, rtol=1e-4, atol=1e-5)
    assert np.abs(grad_a).sum() > 0 and np.abs(grad_W).sum() > 0
