"""Focused tests of the library fixes found porting PyTorch's test_sparse.py (tests/test_ported_sparse.py): each runs
on chainrule's `autograd` and, where installed, on PyTorch (fixture `T`), asserting values written out by hand."""

import numpy as np
import pytest

import autograd

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")]


def hybrid(T, values=None):
    values = T.tensor([[1., 2], [3, 4], [5, 6]]) if values is None else values
    return T.sparse_coo_tensor(T.tensor([[0, 1, 1], [2, 0, 2]]), values, (2, 3, 2))


def test_a_dense_tensor_times_a_sparse_one_is_sparse_and_its_gradient_reaches_both(T):
    values = T.tensor([1., 2, 3], requires_grad=True)
    dense = T.tensor([[1., 2, 3], [4, 5, 6]], requires_grad=True)
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 1], [2, 0, 2]]), values, (2, 3))
    product = dense * x
    assert product.is_sparse and product.to_dense().tolist() == [[0, 0, 3], [8, 0, 18]]
    T.sparse.sum(product).backward()
    assert values.grad.tolist() == [3, 4, 6]
    assert dense.grad.to_dense().tolist() == [[0, 0, 1], [2, 0, 3]]  # (PyTorch's: sparse, at x's entries)


def test_to_dense_is_pytorchs_node_and_passes_each_entry_its_gradient(T):
    values = T.tensor([1., 2, 3], requires_grad=True)
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 0]]), values, (2,))
    dense = x.to_dense()
    assert dense.grad_fn.name() == "ToDenseBackward0" and dense.tolist() == [4, 2]
    (dense * T.tensor([10., 100])).sum().backward()
    assert values.grad.tolist() == [10, 100, 10]


def test_a_dense_dim_selected_passes_the_gradient_to_those_values():
    values = autograd.tensor([[1., 2], [3, 4], [5, 6]], requires_grad=True)
    x = hybrid(autograd, values)
    picked = x.index_select(2, autograd.tensor([1, 1]))
    assert picked.to_dense().tolist() == [[[0, 0], [0, 0], [2, 2]], [[4, 4], [0, 0], [6, 6]]]
    autograd.sparse.sum(picked).backward()
    np.testing.assert_array_equal(values.grad.numpy(), [[0, 2], [0, 2], [0, 2]])
    values.grad = None
    autograd.sparse.sum(x.select(2, 0) * 3).backward()
    np.testing.assert_array_equal(values.grad.numpy(), [[3, 0], [3, 0], [3, 0]])


def test_narrow_copy_passes_the_gradient_to_the_entries_it_keeps():
    # (PyTorch has no derivative of a sparse narrow_copy; here it is index_select's of the values)
    values = autograd.tensor([1., 2, 3], requires_grad=True)
    x = autograd.sparse_coo_tensor(autograd.tensor([[0, 1, 1], [2, 0, 2]]), values, (2, 3))
    part = x.narrow_copy(1, 1, 2)
    assert part.to_dense().tolist() == [[0, 1], [0, 3]]
    autograd.sparse.sum(part * 2).backward()
    assert values.grad.tolist() == [2, 0, 2]


def test_permute_keeps_the_values_in_the_graph(T):
    values = T.tensor([[1., 2], [3, 4], [5, 6]], requires_grad=True)
    moved = hybrid(T, values).permute(1, 0, 2)
    (moved.to_dense() * T.arange(12.).reshape(3, 2, 2)).sum().backward()
    # entry (0, 2) lands at (2, 0), (1, 0) at (0, 1), (1, 2) at (2, 1) of the (3, 2) sparse grid
    assert values.grad.tolist() == [[8, 9], [2, 3], [10, 11]]


def test_unsqueeze_keeps_the_values_in_the_graph():
    # (PyTorch has no derivative of a sparse unsqueeze: its backward raises for as_strided)
    values = autograd.tensor([[1., 2], [3, 4], [5, 6]], requires_grad=True)
    moved = hybrid(autograd, values).unsqueeze(0).unsqueeze(4)
    assert tuple(moved.shape) == (1, 2, 3, 2, 1) and (moved.sparse_dim(), moved.dense_dim()) == (3, 2)
    (moved.to_dense() * autograd.arange(12.).reshape(1, 2, 3, 2, 1)).sum().backward()
    assert values.grad.tolist() == [[4, 5], [6, 7], [10, 11]]


def test_a_sparse_leaf_made_by_size_takes_gradients(T):
    x = T.zeros(2, 2, layout=T.sparse_coo, requires_grad=True)
    assert x.requires_grad and x.is_leaf and x._nnz() == 0
    T.sparse.mm(x, T.ones(2, 1)).sum().backward()
    assert x.grad.is_sparse and x.grad._nnz() == 0 and x.grad.to_dense().tolist() == [[0, 0], [0, 0]]


def test_cat_along_a_dense_dim_passes_each_one_its_gradient():
    values = autograd.tensor([[1., 2], [3, 4]], requires_grad=True)
    x = autograd.sparse_coo_tensor(autograd.tensor([[0, 1]]), values, (3, 2))
    y = autograd.sparse_coo_tensor(autograd.tensor([[2]]), autograd.tensor([[5.]]), (3, 1))
    joined = autograd.cat([x, y], 1)
    (joined.to_dense() * autograd.arange(9.).reshape(3, 3)).sum().backward()
    assert values.grad.tolist() == [[0, 1], [3, 4]]
