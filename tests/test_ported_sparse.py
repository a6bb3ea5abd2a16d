"""Sparse COO tensors, ported from PyTorch's test/test_sparse.py (TestSparse, CPU, COO layout only; CSR/BSR/CSC are
not built here): construction by size and its checks, hybrid tensors (dense dims in each value), empty tensors,
to_sparse with a sparse_dim, transpose/t/t_, narrow_copy, select and index_select along sparse and dense dims,
unsqueeze and permute, sparse_mask, dense + sparse, products with a scalar, a dense and a sparse tensor,
torch.sparse.mm/addmm/@ with their gradients, torch.sparse.sum over dims with its gradient, softmax with no
entries, is_nonzero and pow. What tests/test_sparse.py, test_sparse_gradients.py and the probe13 files cover
(coalesce, printing, saving, nn.Embedding(sparse=True), SparseAdam) is not repeated.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), and asserts values
written out by hand."""

import numpy as np
import pytest

import autograd

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]


def hybrid(T):
    """A (2, 3, 2) tensor with 2 sparse dims and 1 dense dim: rows of two values at (0, 2), (1, 0), (1, 2)."""
    return T.sparse_coo_tensor(T.tensor([[0, 1, 1], [2, 0, 2]]), T.tensor([[1., 2], [3, 4], [5, 6]]), (2, 3, 2))


HYBRID = [[[0, 0], [0, 0], [1, 2]], [[3, 4], [0, 0], [5, 6]]]


def matrix(T, values=None):
    """[[0, 0, 1], [2, 0, 3]] as a (2, 3) sparse matrix."""
    values = T.tensor([1., 2, 3]) if values is None else values
    return T.sparse_coo_tensor(T.tensor([[0, 1, 1], [2, 0, 2]]), values, (2, 3))


def test_a_hybrid_tensor_keeps_a_dense_dim_in_each_value(T):
    x = hybrid(T)
    assert (x.sparse_dim(), x.dense_dim(), x._nnz(), tuple(x.shape)) == (2, 1, 3, (2, 3, 2))
    assert x.to_dense().tolist() == HYBRID
    assert x._indices().tolist() == [[0, 1, 1], [2, 0, 2]] and x._values().shape == (3, 2)


def test_an_empty_sparse_tensor_made_from_its_size(T):
    for x in (T.sparse_coo_tensor((2, 3)), T.sparse_coo_tensor(size=(2, 3)), T.zeros(2, 3, layout=T.sparse_coo),
              T.zeros_like(matrix(T)), T.empty(2, 3, layout=T.sparse_coo)):
        assert x.is_sparse and x._nnz() == 0 and x.is_coalesced() and tuple(x.shape) == (2, 3)
        assert (x.sparse_dim(), x.dense_dim(), x.dtype) == (2, 0, T.float32)
        assert tuple(x._indices().shape) == (2, 0) and tuple(x._values().shape) == (0,)
        assert x.to_dense().tolist() == [[0, 0, 0], [0, 0, 0]]
    assert T.zeros(3, layout=T.sparse_coo, dtype=T.float64).dtype == T.float64
    like = T.zeros_like(hybrid(T))  # (keeps the input's sparse dims)
    assert (like.sparse_dim(), like.dense_dim(), tuple(like._values().shape)) == (2, 1, (0, 2))
    empty = T.sparse_coo_tensor(T.empty(1, 0, dtype=T.long), T.empty(0, 2), (3, 2))
    assert (empty._nnz(), empty.sparse_dim(), empty.dense_dim()) == (0, 1, 1)
    assert empty.to_dense().tolist() == [[0, 0]] * 3


def test_an_empty_tensor_adds_as_zero_and_transposes(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 2]]), T.tensor([1., 2]), (3,))
    zero = T.zeros(3, layout=T.sparse_coo)
    assert (x + zero).to_dense().tolist() == [1, 0, 2] == (zero + x).to_dense().tolist()
    assert (x + zero)._nnz() == 2
    empty = T.sparse_coo_tensor((2, 3))
    assert tuple(empty.t().shape) == (3, 2) and empty.t()._nnz() == 0
    assert empty.t_() is empty and tuple(empty.shape) == (3, 2)


def test_construction_checks_in_pytorchs_order_and_words(T):
    with pytest.raises(RuntimeError, match=r"'len\(size\) == sparse_dim \+ dense_dim' is not satisfied: len\(size\) "
                                           r"= 1, sparse_dim = 1, dense_dim = 1"):
        T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([[2., 3.]]), (2,))
    with pytest.raises(RuntimeError, match="nnz from indices: 2, nnz from values: 1"):
        T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([[2., 3., 4.]]), (2, 3))
    with pytest.raises(RuntimeError, match="nnz from indices: 2, nnz from values: 3"):
        T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([[1., 2], [3, 4], [5, 6]]), (2, 3))
    with pytest.raises(RuntimeError, match=r"values has incorrect size, expected \[2, 3\], got \[2, 2\]"):
        T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([[2., 3.], [1., 1.]]), (2, 3))
    with pytest.raises(RuntimeError, match="size is inconsistent with indices: for dim 1, size is 2 but found index 2"):
        T.sparse_coo_tensor(T.tensor([[0, 1], [2, 0]]), T.tensor([2., 3.]), (2, 2), check_invariants=True)


def test_to_sparse_with_a_number_of_sparse_dims(T):
    dense = T.tensor([[[1., 0], [0, 0]], [[0, 0], [3, 4]]])
    rows = dense.to_sparse(1)  # a row is kept where any of its values is nonzero
    assert rows._indices().tolist() == [[0, 1]] and rows.is_coalesced()
    assert rows._values().tolist() == [[[1, 0], [0, 0]], [[0, 0], [3, 4]]]
    pairs = dense.to_sparse(2)
    assert pairs._indices().tolist() == [[0, 1], [0, 1]] and pairs._values().tolist() == [[1, 0], [3, 4]]
    assert dense.to_sparse()._nnz() == 3 and pairs.to_dense().tolist() == dense.tolist()


def test_transpose_and_t(T):
    x = hybrid(T)
    y = x.transpose(0, 1)
    assert tuple(y.shape) == (3, 2, 2) and y.to_dense().tolist() == np.swapaxes(HYBRID, 0, 1).tolist()
    assert not x.coalesce().transpose(0, 1).is_coalesced()
    with pytest.raises(RuntimeError, match="sparse transpose: transposed dimensions must be sparse Got sparse_dim: 2, "
                                           "d0: 0, d1: 2"):
        x.transpose(0, 2)
    vector = T.sparse_coo_tensor(T.tensor([[0, 2]]), T.tensor([1., 2]), (3,))
    assert vector.t().to_dense().tolist() == [1, 0, 2]
    m = matrix(T)
    assert m.t_() is m and m.to_dense().tolist() == [[0, 2], [0, 0], [1, 3]]


def test_narrow_copy_along_sparse_and_dense_dims(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 2, 1], [2, 0, 2, 1]]), T.tensor([1., 2, 3, 4]), (3, 3))
    assert x.narrow_copy(0, 1, 2).to_dense().tolist() == [[2, 4, 0], [0, 0, 3]]
    assert x.narrow_copy(1, 0, 2).to_dense().tolist() == [[0, 0], [2, 4], [0, 0]]
    assert T.narrow_copy(x, 1, 1, 2).to_dense().tolist() == [[0, 1], [4, 0], [0, 3]]
    assert hybrid(T).narrow_copy(2, 1, 1).to_dense().tolist() == [[[0], [0], [2]], [[4], [0], [6]]]
    with pytest.raises(RuntimeError, match=r"Invalid range to narrow. range\(start, start\+length\) must be a "
                                           r"subset of range\(0, 3\)."):
        x.narrow_copy(0, 2, 2)


def test_select_and_index_select_along_sparse_and_dense_dims(T):
    x = hybrid(T)
    row = x.select(0, 1)
    assert row.is_sparse and row.to_dense().tolist() == HYBRID[1] and x[1].to_dense().tolist() == HYBRID[1]
    first = x.select(2, 0)
    assert first.is_sparse and first.to_dense().tolist() == [[0, 0, 1], [3, 0, 5]]
    assert T.select(x, 1, 2).to_dense().tolist() == [[1, 2], [5, 6]]
    picked = x.index_select(1, T.tensor([2, 2, 0]))
    assert picked.to_dense().tolist() == [[[1, 2], [1, 2], [0, 0]], [[5, 6], [5, 6], [3, 4]]]
    assert x.index_select(2, T.tensor([1])).to_dense().tolist() == [[[0], [0], [2]], [[4], [0], [6]]]
    assert T.index_select(x, 0, T.tensor([1])).to_dense().tolist() == [HYBRID[1]]
    with pytest.raises(IndexError, match=r"select\(\): index 3 out of range for tensor of size \[2, 3, 2\] at "
                                         r"dimension 1"):
        x.select(1, 3)


def test_unsqueeze_and_permute(T):
    m = matrix(T)
    front, back = m.unsqueeze(0), m.unsqueeze(2)
    assert tuple(front.shape) == (1, 2, 3) and front.sparse_dim() == 3
    assert tuple(back.shape) == (2, 3, 1) and back.sparse_dim() == 3
    assert back.to_dense().tolist() == [[[0], [0], [1]], [[2], [0], [3]]]
    past = hybrid(T).unsqueeze(3)  # past the sparse dims: a dense one
    assert (past.sparse_dim(), past.dense_dim(), tuple(past.shape)) == (2, 2, (2, 3, 2, 1))
    swapped = hybrid(T).permute(1, 0, 2)
    assert swapped.to_dense().tolist() == np.transpose(HYBRID, (1, 0, 2)).tolist()
    with pytest.raises(RuntimeError, match="transpositions between sparse and dense dimensions are not allowed"):
        hybrid(T).permute(2, 1, 0)


def test_sparse_mask_of_a_hybrid_tensor(T):
    dense = T.arange(12.).reshape(2, 3, 2)
    masked = dense.sparse_mask(hybrid(T))
    assert masked.is_sparse and masked._values().tolist() == [[4, 5], [6, 7], [10, 11]]
    assert masked.to_dense().tolist() == [[[0, 0], [0, 0], [4, 5]], [[6, 7], [0, 0], [10, 11]]]
    weights = T.arange(6.).reshape(2, 3).requires_grad_()
    weights.sparse_mask(matrix(T)).to_dense().mul(3).sum().backward()
    assert weights.grad.tolist() == [[0, 0, 3], [3, 0, 3]]


def test_dense_plus_sparse(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 2, 0]]), T.tensor([1., 2, 3]), (3,))  # uncoalesced: 4 at 0
    ones = T.ones(3)
    assert T.add(ones, x, alpha=2).tolist() == [9, 1, 5] and (ones - x).tolist() == [-3, 1, -1]
    assert T.add(T.ones(2, 3, 2), hybrid(T), alpha=0.5).tolist() == (1 + np.array(HYBRID) / 2).tolist()
    assert ones.add_(x) is ones and ones.tolist() == [5, 1, 3]
    y = T.sparse_coo_tensor(T.tensor([[0]]), T.tensor([1.]), (4,))
    with pytest.raises(RuntimeError, match=r"add: expected sizes of 'self' and 'other' to match, but \[3\] != \[4\]"):
        x + y


def test_products_with_a_scalar_a_dense_and_a_sparse_tensor(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 0, 2]]), T.tensor([1., 2, 3, 4]), (3,))
    assert (x * 2).to_dense().tolist() == [8, 4, 8] == (2 * x).to_dense().tolist()
    assert (x / 2).to_dense().tolist() == [2, 1, 2] and not (x * 2).is_coalesced()
    for product in (x * T.tensor([2., 3, 4]), T.tensor([2., 3, 4]) * x, T.mul(T.tensor([2., 3, 4]), x)):
        assert product.is_sparse and product.to_dense().tolist() == [8, 6, 16]
    y = T.sparse_coo_tensor(T.tensor([[0, 2]]), T.tensor([5., 6]), (3,))
    both = x * y
    assert both.is_sparse and both.to_dense().tolist() == [20, 0, 24] and both._nnz() == 2
    integers = T.sparse_coo_tensor(T.tensor([[0, 1, 0]]), T.tensor([1, 2, 3]), (3,))
    assert (integers * 2.5).dtype == T.float32 and (integers / 2).to_dense().tolist() == [2, 1, 0]


def test_mm_addmm_and_matmul(T):
    m = matrix(T)
    dense = T.arange(6.).reshape(3, 2)
    product = [[4, 5], [12, 17]]
    for result in (T.sparse.mm(m, dense), T.mm(m, dense), m @ dense, T.matmul(m, dense), T.spmm(m, dense)):
        assert not result.is_sparse and result.tolist() == product
    assert T.addmm(T.ones(2, 2), m, dense, beta=0.5, alpha=2).tolist() == [[8.5, 10.5], [24.5, 34.5]]
    assert T.sparse.addmm(T.ones(2, 2), m, dense, beta=0, alpha=3).tolist() == [[12, 15], [36, 51]]
    assert T.mv(m, T.tensor([1., 2, 3])).tolist() == [3, 11] and (T.ones(4, 2) @ m).tolist() == [[2, 0, 4]] * 4
    square = T.sparse.mm(m, m.t())
    assert square.is_sparse and square.to_dense().tolist() == [[1, 3], [3, 13]]


def test_the_gradients_of_mm_and_addmm(T):
    values = T.tensor([1., 2, 3], requires_grad=True)
    dense = T.arange(6.).reshape(3, 2).requires_grad_()
    bias = T.ones(2, 2, requires_grad=True)
    T.sparse.addmm(bias, matrix(T, values), dense, beta=0.5, alpha=2).pow(2).sum().backward()
    # out = 0.5 + 2 A D = [[8.5, 10.5], [24.5, 34.5]]; dL/dout = 2 out; dL/dA = 2 (2 out) Dᵀ at A's entries
    assert values.grad.tolist() == [4 * (8.5 * 4 + 10.5 * 5), 4 * (24.5 * 0 + 34.5 * 1), 4 * (24.5 * 4 + 34.5 * 5)]
    assert dense.grad.tolist() == [[196, 276], [0, 0], [328, 456]] and bias.grad.tolist() == [[8.5, 10.5], [24.5, 34.5]]
    leaf = matrix(T).requires_grad_()
    T.sparse.mm(leaf, T.arange(6.).reshape(3, 2)).pow(2).sum().backward()
    assert leaf.grad.is_sparse and leaf.grad.coalesce().values().tolist() == [82, 34, 266]


def test_sparse_sum_over_dims_and_its_gradient(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 1, 0], [2, 0, 2, 2]]), T.tensor([[1., 2], [3, 4], [5, 6], [7, 8]]),
                            (2, 3, 2))
    assert T.sparse.sum(x).item() == 36 and x.sum().item() == 36
    over_rows = T.sparse.sum(x, 0)
    assert over_rows.is_sparse and over_rows.to_dense().tolist() == [[3, 4], [0, 0], [13, 16]]
    over_sparse = T.sparse.sum(x, (0, 1))
    assert not over_sparse.is_sparse and over_sparse.tolist() == [16, 20]
    assert T.sparse.sum(x, 2).to_dense().tolist() == [[0, 0, 18], [7, 0, 11]]
    assert T.sparse.sum(x, [1, 2]).to_dense().tolist() == [18, 18]
    integers = T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([1, 2]), (3,))
    assert T.sparse.sum(integers).dtype == T.int64 and T.sparse.sum(integers, dtype=T.float64).dtype == T.float64
    with pytest.raises(RuntimeError, match="dim 0 appears multiple times in the list of dims"):
        T.sparse.sum(integers, [0, 0])
    leaf = x.requires_grad_()
    T.sparse.sum(leaf, 0).to_dense().mul(T.arange(6.).reshape(3, 2)).sum().backward()
    grad = leaf.grad.coalesce()
    assert grad.indices().tolist() == [[0, 1, 1], [2, 0, 2]] and grad.values().tolist() == [[4, 5], [0, 1], [4, 5]]
    values = T.tensor([1., 2, 3], requires_grad=True)
    (T.sparse.sum(matrix(T, values), 1).to_dense() * T.tensor([2., 3])).sum().backward()
    assert values.grad.tolist() == [2, 3, 3]


def test_softmax_with_no_entries_and_a_negative_dim(T):
    nothing = T.sparse_coo_tensor(T.zeros((2, 0), dtype=T.long), T.zeros(0), (3, 3))
    assert T.sparse.softmax(nothing, 1)._nnz() == 0 and T.sparse.log_softmax(nothing, 0)._nnz() == 0
    x = T.sparse_coo_tensor(T.tensor([[0, 1], [1, 1]]), T.tensor([1., 2]), (3, 3))
    assert T.sparse.softmax(x, -1).to_dense().tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert T.sparse.softmax(x, 0, dtype=T.float64).dtype == T.float64


def test_pow_and_is_nonzero(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 0, 2]]), T.tensor([-1., 2, 3, -4]), (3,))
    assert x.pow(2).to_dense().tolist() == [4, 4, 16] and (x ** 2)._nnz() == 3
    with pytest.raises(RuntimeError, match="pow: cannot raise to zeroth power on sparse tensor; it would make the "
                                           "result tensor dense"):
        x.pow(0)
    one = T.sparse_coo_tensor(T.tensor([[0]]), T.tensor([1.]), (1,))
    cancelling = T.sparse_coo_tensor(T.tensor([[0, 0]]), T.tensor([1., -1]), (1,))
    assert one.is_nonzero() and not cancelling.is_nonzero() and not T.zeros(1, layout=T.sparse_coo).is_nonzero()


def test_hspmm_and_smm_keep_the_rows_the_sparse_matrix_has(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 1], [2, 0, 2]]), T.tensor([1., 2, 3]), (3, 3))
    dense = T.arange(6.).reshape(3, 2)
    rows = T.hspmm(x, dense)
    assert (rows.sparse_dim(), rows.dense_dim(), rows.is_coalesced()) == (1, 1, False)
    assert rows._indices().tolist() == [[0, 1]] and rows._values().tolist() == [[4, 5], [12, 17]]
    entries = T.smm(x, dense)
    assert entries._indices().tolist() == [[0, 0, 1, 1], [0, 1, 0, 1]] and entries._values().tolist() == [4, 5, 12, 17]
    assert entries.to_dense().tolist() == [[4, 5], [12, 17], [0, 0]] and tuple(entries.shape) == (3, 2)


def test_rounded_division_coalesces_first(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 0]]), T.tensor([1, 2, 3]), (3,))  # 4 at 0: 4 // 2, not 1 // 2 + 3 // 2
    for result in (x // 2, x.div(2, rounding_mode="floor"), T.div(x, 2, rounding_mode="floor")):
        assert result.is_coalesced() and result._values().tolist() == [2, 1]
    assert x.div(-3, rounding_mode="trunc").to_dense().tolist() == [-1, 0, 0]


def test_the_private_coalesced_flag_and_is_same_size(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 2]]), T.tensor([1., 2]), (3,))
    assert not x.is_coalesced() and x._coalesced_(True) is x and x.is_coalesced()
    assert x.is_same_size(T.sparse_coo_tensor((3,))) and not x.is_same_size(T.sparse_coo_tensor((4,)))


def test_nan_and_inf_tests_and_any_read_the_values(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1, 2]]), T.tensor([float("nan"), 2., float("-inf")]), (4,))
    nan = T.isnan(x)
    assert nan.is_sparse and nan.dtype == T.bool and nan.to_dense().tolist() == [True, False, False, False]
    assert T.isinf(x).to_dense().tolist() == [False, False, True, False]
    assert T.isneginf(x).to_dense().tolist() == [False, False, True, False] and not T.isposinf(x).to_dense().any()
    assert T.any(x).item() and not T.any(T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([0., 0]), (2,))).item()
    assert T.any(T.sparse_coo_tensor(T.tensor([[0, 0]]), T.tensor([1., -1]), (2,))).item()  # (its values as stored)


def test_the_like_factories_and_new_zeros_keep_the_layout(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 2]]), T.tensor([1., 2]), (3,))
    for made in (T.empty_like(x), T.zeros_like(x), T.zeros_like(x, dtype=T.float64), x.new_zeros(2, 2)):
        assert made.is_sparse and made._nnz() == 0
    assert T.zeros_like(x, dtype=T.float64).dtype == T.float64 and tuple(x.new_zeros((2, 2)).shape) == (2, 2)


def test_what_a_sparse_tensor_refuses(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 2]]), T.tensor([1., 2]), (3,))
    with pytest.raises(TypeError, match="can't convert Sparse layout tensor to numpy. Use Tensor.to_dense"):
        x.numpy()
    with pytest.raises(RuntimeError, match=r"Sparse division requires a scalar or zero-dim dense tensor divisor "
                                           r"\(got shape \[3\] for divisor\)"):
        x / T.ones(3)
    assert (x / T.tensor(2.)).to_dense().tolist() == [0.5, 0, 1]


def test_cat_along_a_dense_dim_pads_each_ones_values(T):
    x = T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([[1., 2], [3, 4]]), (3, 2))
    y = T.sparse_coo_tensor(T.tensor([[2]]), T.tensor([[5.]]), (3, 1))
    joined = T.cat([x, y], 1)
    assert joined._indices().tolist() == [[0, 1, 2]] and not joined.is_coalesced() and tuple(joined.shape) == (3, 3)
    assert joined._values().tolist() == [[1, 2, 0], [3, 4, 0], [0, 0, 5]]
    assert T.cat([x, x], 0).to_dense().tolist() == [[1, 2], [3, 4], [0, 0]] * 2
    with pytest.raises(RuntimeError, match="All tensors must have the same shape"):
        T.cat([x, y], 0)


def test_the_sum_method_keeps_the_summed_dims(T):
    x = T.sparse_coo_tensor(T.tensor([[1, 0, 1], [0, 2, 0]]), T.tensor([[1., 2], [3, 4], [5, 6]]), (2, 3, 2))
    kept = x.sum(2, keepdim=True)  # (the size-1 dim is a sparse one, as unsqueeze puts it)
    assert kept.is_sparse and tuple(kept.shape) == (2, 3, 1) and kept.sparse_dim() == 3
    assert kept.to_dense().tolist() == [[[0], [0], [7]], [[14], [0], [0]]]
    both = x.sum((0, 2), keepdim=True)
    assert tuple(both.shape) == (1, 3, 1) and both.to_dense().tolist() == [[[14], [0], [7]]]
    dense = x.sum((0, 1), keepdim=True)
    assert not dense.is_sparse and dense.tolist() == [[[9, 12]]]
    with pytest.raises(RuntimeError, match=r"Invalid range to narrow"):
        x.narrow_copy(1, -2, 2)


def test_a_sparse_leafs_gradient_through_torch_mm_is_dense():
    leaf = matrix(autograd).requires_grad_()
    autograd.mm(leaf, autograd.arange(6.).reshape(3, 2)).pow(2).sum().backward()
    assert not leaf.grad.is_sparse
    assert leaf.grad.tolist() == [[10, 46, 82], [34, 150, 266]]
