"""The whole dense gradient PyTorch's dense-facing ops pass to a sparse tensor (autograd/sparse/dense_gradient.py):
torch.mm, @, matmul, spmm, addmm, S.mm, mv, S.sum() give a sparse leaf a dense .grad and the dense tensor behind
``W.to_sparse()`` all of dL/dW; torch.sparse.mm/addmm give the gradient at S's entries only; a sparse tensor made
from values passes its values dL/dA at its indices. Each case is checked against the same function of the dense
matrix (dense ops, its gradient masked where PyTorch masks it) and against PyTorch where it is installed."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd

INDICES = [[0, 1, 1], [2, 0, 2]]
VALUES = [1.0, 2.0, 3.0]
A = np.array([[0.0, 0, 1], [2, 0, 3]])
ENTRIES = A != 0

# name: (f(T, S), whether PyTorch's gradient is the whole dense one)
OPS = {
    "mm": (lambda T, S: T.mm(S, T.arange(6.0, dtype=T.float64).reshape(3, 2)), True),
    "@": (lambda T, S: S @ T.arange(6.0, dtype=T.float64).reshape(3, 2), True),
    "matmul of a vector": (lambda T, S: T.matmul(S, T.tensor([1.0, -2.0, 0.5], dtype=T.float64)), True),
    "spmm": (lambda T, S: T.spmm(S, T.ones(3, 2, dtype=T.float64)), True),
    "addmm": (lambda T, S: T.addmm(T.ones(2, 2, dtype=T.float64), S, T.arange(6.0, dtype=T.float64).reshape(3, 2)),
              True),
    "S.mm": (lambda T, S: S.mm(T.arange(3.0, dtype=T.float64).reshape(3, 1)), True),
    "mv": (lambda T, S: S.mv(T.tensor([2.0, 1.0, -1.0], dtype=T.float64)), True),
    "dense @ S": (lambda T, S: T.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=T.float64) @ S, True),
    "S.sum()": (lambda T, S: S.sum() * 3, True),
    "t then mm": (lambda T, S: T.mm(S.t(), T.tensor([[1.0], [2.0]], dtype=T.float64)), True),
    "transpose then mm": (lambda T, S: T.mm(S.transpose(0, 1), T.tensor([[1.0], [-1.0]], dtype=T.float64)), True),
    "coalesce then mm": (lambda T, S: T.mm(S.coalesce(), T.ones(3, 1, dtype=T.float64)), True),
    "clone then mm": (lambda T, S: T.mm(S.clone(), T.ones(3, 1, dtype=T.float64)), True),
    "negation then mm": (lambda T, S: T.mm(-S, T.ones(3, 1, dtype=T.float64)), True),
    "times a number then mm": (lambda T, S: T.mm(S * 2, T.arange(3.0, dtype=T.float64).reshape(3, 1)), True),
    "a number times then mm": (lambda T, S: T.mm(0.5 * S, T.arange(3.0, dtype=T.float64).reshape(3, 1)), True),
    "over a number then mm": (lambda T, S: T.mm(S / 4, T.arange(3.0, dtype=T.float64).reshape(3, 1)), True),
    "sparse.mm": (lambda T, S: T.sparse.mm(S, T.arange(6.0, dtype=T.float64).reshape(3, 2)), False),
    "sparse.addmm": (lambda T, S: T.sparse.addmm(T.zeros(2, 2, dtype=T.float64), S,
                                                  T.arange(6.0, dtype=T.float64).reshape(3, 2)), False),
    "to_dense": (lambda T, S: S.to_dense(), False),
}


def _made(T, origin):
    """A sparse matrix holding A, made as ``origin`` says, and the tensor whose gradient is asked."""
    if origin == "leaf":
        S = T.sparse_coo_tensor(T.tensor(INDICES), T.tensor(VALUES, dtype=T.float64), (2, 3)).requires_grad_()
        return S, S
    if origin == "to_sparse":
        W = T.tensor(A, requires_grad=True)
        return W.to_sparse(), W
    values = T.tensor(VALUES, dtype=T.float64, requires_grad=True)
    return T.sparse_coo_tensor(T.tensor(INDICES), values, (2, 3)), values


def _loss(y):
    return (y.to_dense() if y.is_sparse else y).pow(2).sum()


def _gradient(T, name, origin):
    S, asked = _made(T, origin)
    _loss(OPS[name][0](T, S)).backward()
    grad = asked.grad
    layout = "sparse" if grad.is_sparse else "dense"
    return layout, (grad.to_dense() if grad.is_sparse else grad).detach().numpy()


DENSE_FORMS = {  # what torch.sparse's own ops and conversions are for a dense matrix
    "sparse.mm": lambda T, A: A @ T.arange(6.0, dtype=T.float64).reshape(3, 2),
    "sparse.addmm": lambda T, A: A @ T.arange(6.0, dtype=T.float64).reshape(3, 2),
    "to_dense": lambda T, A: A,
    "coalesce then mm": lambda T, A: T.mm(A, T.ones(3, 1, dtype=T.float64)),
    "clone then mm": lambda T, A: T.mm(A, T.ones(3, 1, dtype=T.float64)),
}


def _expected(name, origin):
    """The gradient of the same function of the dense matrix A (a dense tensor here), masked where PyTorch
    masks it: a sparse tensor made from values always, the others for torch.sparse's own ops."""
    dense = autograd.tensor(A, requires_grad=True)
    f, whole = OPS[name]
    _loss(DENSE_FORMS.get(name, f)(autograd, dense)).backward()
    full = dense.grad.numpy()
    if origin == "values":
        return "dense", full[ENTRIES]
    if whole:
        return "dense", full
    return ("sparse" if origin == "leaf" else "dense"), np.where(ENTRIES, full, 0.0)


@pytest.mark.parametrize("origin", ["leaf", "to_sparse", "values"])
@pytest.mark.parametrize("name", OPS)
def test_gradient_is_the_dense_functions_where_pytorchs_is(name, origin):
    layout, grad = _gradient(autograd, name, origin)
    expected_layout, expected = _expected(name, origin)
    assert layout == expected_layout
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("origin", ["leaf", "to_sparse", "values"])
@pytest.mark.parametrize("name", OPS)
def test_gradient_as_pytorch(name, origin):
    torch = pytest.importorskip("torch")
    layout, grad = _gradient(autograd, name, origin)
    their_layout, theirs = _gradient(torch, name, origin)
    assert layout == their_layout
    np.testing.assert_allclose(grad, theirs, rtol=1e-12, atol=1e-12)


def test_a_leafs_whole_and_entry_gradients_add_up():
    """torch.mm's dense gradient and torch.sparse.sum's at the entries, of one leaf: their sum, dense."""
    S, _ = _made(autograd, "leaf")
    (autograd.mm(S, autograd.ones(3, 1, dtype=autograd.float64)).sum() + autograd.sparse.sum(S * S)).backward()
    assert not S.grad.is_sparse
    np.testing.assert_array_equal(S.grad.numpy(), [[1, 1, 3], [5, 1, 7]])  # 1 everywhere, + 2 S at the entries
    S.grad = None
    assert S.grad is None
    autograd.sparse.sum(S).backward()
    assert S.grad.is_sparse and S.grad.to_dense().tolist() == [[0, 0, 1], [1, 0, 1]]


def test_a_leafs_dense_gradient_accumulates_over_backward_passes():
    S, _ = _made(autograd, "leaf")
    for _ in range(2):
        autograd.mm(S, autograd.ones(3, 1, dtype=autograd.float64)).sum().backward()
    np.testing.assert_array_equal(S.grad.numpy(), np.full((2, 3), 2.0))


def test_a_source_changed_in_place_keeps_the_sparse_values_and_takes_the_gradient():
    """W.to_sparse() holds W's values of that time (PyTorch's copy); W changed after it still gets dL/dW."""
    W = autograd.tensor(A, requires_grad=True)
    S = W.to_sparse()
    with autograd.no_grad():
        W.add_(10.0)
    y = autograd.mm(S, autograd.ones(3, 1, dtype=autograd.float64))
    np.testing.assert_array_equal(y.detach().numpy(), [[1], [5]])
    y.sum().backward()
    np.testing.assert_array_equal(W.grad.numpy(), np.ones((2, 3)))


def test_nodes_and_no_grad():
    W = autograd.tensor(A, requires_grad=True)
    y = autograd.mm(W.to_sparse(), autograd.ones(3, 1, dtype=autograd.float64))
    assert y.grad_fn.next_functions[0][0].name() == "ToSparseBackward1"
    assert y.grad_fn.next_functions[0][0].next_functions[0][0].variable is W
    with autograd.no_grad():  # no gradient wanted: the sparse product, no dense matrix made
        z = autograd.mm(W.to_sparse(), autograd.ones(3, 1, dtype=autograd.float64))
    assert z.grad_fn is None and z.tolist() == [[1.0], [5.0]]


def test_second_derivative_through_the_stand_in():
    """d/dX of dL/dW = 2 (W X) Xᵀ (create_graph): W made sparse for the product, as W itself gives it."""
    seconds = []
    for sparse in (True, False):
        W = autograd.tensor(A, requires_grad=True)
        X = autograd.tensor([[1.0], [2.0], [-1.0]], dtype=autograd.float64, requires_grad=True)
        (dW,) = autograd.autograd.grad((autograd.mm(W.to_sparse() if sparse else W, X) ** 2).sum(), W,
                                       create_graph=True)
        (dX,) = autograd.autograd.grad(dW.sum(), X)
        seconds.append((dW.detach().numpy(), dX.numpy()))
    for ours, dense in zip(*seconds):
        np.testing.assert_allclose(ours, dense, rtol=1e-12)
    np.testing.assert_allclose(seconds[0][1], [[4.0], [-4.0], [12.0]])  # 2 (colsum(W) ΣX + Σ WX)


def sparse_product_of_a_dense_matrix(W, X):
    """torch.mm(W.to_sparse(), X): the product through the stand-in, differentiated in W (all of it) and X."""
    return autograd.mm(W.to_sparse(), X)


CASES = {"DenseStandIn": sparse_product_of_a_dense_matrix}


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 4), inner=st.integers(1, 4), columns=st.integers(1, 3), seed=st.integers(0, 2**16),
       zeros=st.floats(0.0, 0.9))
def test_matches_finite_differences(rows, inner, columns, seed, zeros):
    """W with zeros at drawn places (where the stand-in's gradient is what the sparse entries have not): a step
    there makes a new entry, and the product is linear in W, so finite differences see the whole dL/dW."""
    generator = np.random.default_rng(seed)
    W = generator.standard_normal((rows, inner)) * (generator.random((rows, inner)) >= zeros)
    X = generator.standard_normal((inner, columns))
    tensors = [autograd.tensor(W, requires_grad=True), autograd.tensor(X, requires_grad=True)]
    assert autograd.gradcheck(sparse_product_of_a_dense_matrix, tensors)
    assert autograd.gradgradcheck(sparse_product_of_a_dense_matrix, tensors)
