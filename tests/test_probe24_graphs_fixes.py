"""Fixes found by running graph neural network programs (tests/test_programs_probe24_graphs.py) on chainrule and
PyTorch: an advanced index (a boolean mask or an index tensor after a ``:``) gives a row-major tensor, as PyTorch's
gather does, so a view of it shares its memory (``edge_index[:, keep].view(-1)`` was a copy here: a write through it
was lost). Each test runs on chainrule and on PyTorch (the ``T`` fixture) against the same literals."""

import pytest

EDGES = [[0, 1, 2, 3], [1, 2, 3, 0]]
KEEP = [True, False, True, True]


def test_a_masked_edge_list_is_row_major(T):
    kept = T.tensor(EDGES)[:, T.tensor(KEEP)]
    assert kept.is_contiguous()
    assert kept.stride() == (3, 1)
    assert kept.tolist() == [[0, 2, 3], [1, 3, 0]]


def test_a_write_through_a_view_of_a_masked_edge_list_reaches_it(T):
    kept = T.tensor(EDGES)[:, T.tensor(KEEP)]
    kept.view(-1)[0] = 9
    assert kept.tolist() == [[9, 2, 3], [1, 3, 0]]


@pytest.mark.parametrize("index", ["list after :", "tensor after :", "tensor of pairs"])
def test_a_gather_of_a_row_major_tensor_is_row_major(T, index):
    x = T.arange(24.0).reshape(2, 3, 4)
    y = {"list after :": lambda: x[:, [0, 2]],
         "tensor after :": lambda: x[:, T.tensor([2, 0]), 1:],
         "tensor of pairs": lambda: x[0][T.tensor([[0, 1], [1, 2]])]}[index]()
    expected = {"list after :": (8, 4, 1), "tensor after :": (6, 3, 1), "tensor of pairs": (8, 4, 1)}[index]
    assert y.stride() == expected
    assert y.is_contiguous()


def test_a_gather_of_a_transpose_is_row_major_and_its_gradient_lands_back(T):
    w = T.arange(12.0).reshape(3, 4).requires_grad_()
    y = w.t()[:, T.tensor([True, False, True])]
    assert y.stride() == (2, 1)
    assert y.tolist() == [[0.0, 8.0], [1.0, 9.0], [2.0, 10.0], [3.0, 11.0]]
    flat = y.view(-1)
    assert flat.grad_fn.name() == "ViewBackward0"
    (flat * T.arange(8.0)).sum().backward()
    assert w.grad.tolist() == [[0.0, 2.0, 4.0, 6.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 5.0, 7.0]]


# -- gaps left (each names what PyTorch does; they fail here until the library does it) -------------------------

def test_a_csr_adjacency_multiplies_a_dense_matrix():
    import autograd
    dense = autograd.tensor([[1.0, 0, 2], [0, 0, 3], [4, 5, 0]])
    adjacency = dense.to_sparse_csr()
    assert adjacency.crow_indices().tolist() == [0, 2, 3, 5]
    assert (adjacency @ autograd.ones(3, 1)).view(-1).tolist() == [3.0, 3.0, 9.0]


def test_sgd_steps_a_sparse_leaf():
    import autograd
    import optim
    S = autograd.sparse_coo_tensor(autograd.tensor([[0, 1, 1], [1, 0, 1]]), autograd.tensor([1.0, 2.0, 3.0]),
                                   (2, 2), requires_grad=True)
    step = optim.SGD([S], lr=0.1)
    autograd.sparse.mm(S, autograd.tensor([[1.0, 2.0], [3.0, 4.0]])).pow(2).sum().backward()
    step.step()
    assert S.detach().coalesce().values().tolist() == pytest.approx([-4.0, -6.6, -16.4])


def test_the_entries_gradient_of_an_uncoalesced_leaf_is_uncoalesced():
    import autograd
    S = autograd.sparse_coo_tensor(autograd.tensor([[0, 1, 1], [1, 0, 1]]), autograd.tensor([1.0, 2.0, 3.0]),
                                   (2, 2), requires_grad=True)
    autograd.sparse.mm(S, autograd.ones(2, 1)).sum().backward()
    assert S.grad.to_dense().tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert not S.grad.is_coalesced()


# -- autograd.grad and backward(inputs=...) take a sparse leaf, as .grad does -------------------------------------

X = [[1.0, 2.0], [3.0, 4.0]]


def _sparse_leaf(T):
    return T.sparse_coo_tensor(T.tensor([[0, 1, 1], [1, 0, 1]]), T.tensor([1.0, 2.0, 3.0]), (2, 2),
                               requires_grad=True)


def test_autograd_grad_of_a_sparse_leaf_through_sparse_mm_is_its_entries(T):
    S, x = _sparse_leaf(T), T.tensor(X, requires_grad=True)
    dS, dx = T.autograd.grad(T.sparse.mm(S, x).sum(), [S, x])
    assert dS.is_sparse
    assert dS.to_dense().tolist() == [[0.0, 7.0], [3.0, 7.0]]  # dL/dA = ones @ xᵀ at S's entries
    assert dx.tolist() == [[2.0, 2.0], [4.0, 4.0]]


def test_autograd_grad_of_a_sparse_leaf_alone_through_both_products(T):
    S, x = _sparse_leaf(T), T.tensor(X)
    dS, = T.autograd.grad(T.sparse.mm(S, x).sum() + (S @ x).sum(), S)  # (one tensor, not its rows)
    assert not dS.is_sparse  # @ passes the whole dense gradient
    assert dS.tolist() == [[3.0, 14.0], [6.0, 14.0]]


def test_autograd_grad_of_a_sparse_leaf_keeps_a_graph_when_asked(T):
    S, x = _sparse_leaf(T), T.tensor(X, requires_grad=True)
    dS, dx = T.autograd.grad(T.sparse.mm(S, x).sum(), [S, x], create_graph=True)
    assert dS.requires_grad and dx.requires_grad
    assert T.autograd.grad(x.sum(), [S, x], allow_unused=True)[0] is None


@pytest.mark.parametrize("product", ["sparse.mm", "@"])
def test_backward_into_a_sparse_leaf_only(T, product):
    S, x = _sparse_leaf(T), T.tensor(X, requires_grad=True)
    y = T.sparse.mm(S, x) if product == "sparse.mm" else S @ x
    y.sum().backward(inputs=S if product == "@" else [S])
    assert x.grad is None
    grad = S.grad.to_dense() if S.grad.is_sparse else S.grad
    assert grad.tolist() == ([[0.0, 7.0], [3.0, 7.0]] if product == "sparse.mm" else [[3.0, 7.0], [3.0, 7.0]])
