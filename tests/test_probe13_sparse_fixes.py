"""Fixes found by the sparse-tensor programs (tests/test_programs_probe13_sparse_*.py), each checked against values
computed by hand, on chainrule and (where installed) PyTorch: sparse + sparse walks both entry lists as PyTorch's
does (the nnz and order of summed sparse gradients), SparseAdam's step loads as an int, a sparse tensor times a
dense one that broadcasts, the in-place arithmetic, ``autograd.add``/``mul`` of sparse tensors, ``type()``,
``norm()`` and ``mv``."""

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


def sparse(T, indices, values, size=(3, 3)):
    return T.sparse_coo_tensor(T.tensor(indices), T.tensor(values), size)


def test_adding_uncoalesced_tensors_walks_both_entry_lists_as_if_sorted(T):
    """Entries taken smaller position first, equal positions met side by side summed into one: PyTorch's
    add_out_sparse_contiguous (9 entries here, not the 12 of both lists nor the 5 positions)."""
    a = sparse(T, [[0, 1, 1, 2, 0, 2], [1, 0, 2, 1, 1, 2]], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    total = a + a.t()
    assert not total.is_coalesced()
    assert total._indices().tolist() == [[0, 1, 0, 1, 2, 0, 1, 1, 2], [1, 0, 1, 2, 1, 1, 2, 0, 2]]
    assert total._values().tolist() == [1.0, 3.0, 2.0, 3.0, 7.0, 5.0, 4.0, 5.0, 12.0]
    np.testing.assert_array_equal(total.to_dense().numpy(), a.to_dense().numpy() + a.to_dense().numpy().T)
    assert (a + a)._nnz() == 6  # the same list twice: every entry met by its twin
    empty = sparse(T, [[], []], [])
    assert (empty + a)._indices().tolist() == a._indices().tolist() and not (empty + a).is_coalesced()


def test_an_embeddings_gradients_summed_over_passes_have_pytorchs_entries(T):
    if T.__name__ == "torch":
        import torch.nn as nn
    else:
        import nn
    embedding = nn.Embedding(6, 1, sparse=True)
    # (squared: a gradient of its own; PyTorch concatenates instead where the values are .sum()'s expanded ones)
    (embedding(T.tensor([4, 1, 4])) ** 2).sum().backward()
    (embedding(T.tensor([1, 3])) ** 2).sum().backward()  # stored + new, walked: (4 vs 1) 1, (4 vs 3) 3, 4, 1, 4
    grad = embedding.weight.grad
    assert grad._indices().tolist() == [[1, 3, 4, 1, 4]] and grad._nnz() == 5


def test_sparse_adam_resumed_from_its_state_dict_steps_as_if_never_stopped(T):
    if T.__name__ == "torch":
        import torch.nn as nn
        import torch.optim as optim
    else:
        import nn
        import optim

    def run(resume):
        T.manual_seed(0)
        embedding = nn.Embedding(5, 3, sparse=True)
        optimizer = optim.SparseAdam(embedding.parameters(), lr=0.1)
        for step, batch in enumerate(([0, 2], [2, 3], [0, 3, 3])):
            if resume and step == 2:
                state = optimizer.state_dict()
                optimizer = optim.SparseAdam(embedding.parameters(), lr=0.1)
                optimizer.load_state_dict(state)
            optimizer.zero_grad()
            (embedding(T.tensor(batch)) ** 3).sum().backward()
            optimizer.step()
        return embedding.weight.detach().numpy(), optimizer.state[embedding.weight]["step"]

    (kept, kept_step), (resumed, resumed_step) = run(False), run(True)
    np.testing.assert_array_equal(resumed, kept)
    assert type(resumed_step) is int and resumed_step == kept_step == 3


def test_a_sparse_tensor_times_a_dense_one_that_broadcasts(T):
    a = sparse(T, [[0, 1, 2], [2, 0, 1]], [1.0, 2.0, 3.0])
    row = T.tensor([10.0, 20.0, 30.0])
    np.testing.assert_array_equal((a * row).to_dense().numpy(), a.to_dense().numpy() * [10, 20, 30])
    column = row.reshape(3, 1)
    assert (a * column).is_sparse and (a * column)._values().tolist() == [10.0, 40.0, 90.0]
    with pytest.raises(RuntimeError):
        a * T.ones(2)


def test_in_place_arithmetic_and_the_functions_of_sparse_tensors(T):
    a = sparse(T, [[0, 1, 1], [2, 0, 0]], [1.0, 2.0, 3.0])
    same = a.mul_(2)
    assert same is a and a._values().tolist() == [2.0, 4.0, 6.0]
    a.div_(4).add_(sparse(T, [[2], [2]], [5.0]))
    np.testing.assert_array_equal(a.to_dense().numpy(), [[0, 0, 0.5], [2.5, 0, 0], [0, 0, 5]])
    leaf = T.sparse_coo_tensor(T.tensor([[0], [0]]), T.tensor([1.0]), (3, 3), requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        leaf.mul_(2)
    b = sparse(T, [[0, 1], [1, 1]], [3.0, 4.0])
    np.testing.assert_array_equal(T.mul(b, 2).to_dense().numpy(), 2 * b.to_dense().numpy())
    np.testing.assert_array_equal(T.add(b, b, alpha=2).to_dense().numpy(), 3 * b.to_dense().numpy())
    np.testing.assert_array_equal(T.div(b, 2).to_dense().numpy(), b.to_dense().numpy() / 2)
    assert b.type() == "torch.sparse.FloatTensor" and b.double().type() == "torch.sparse.DoubleTensor"
    assert b.norm().item() == 5.0 and b.norm(1).item() == 7.0
    with pytest.raises(RuntimeError, match="only supports full reductions"):
        b.norm(dim=1)
    assert b.mv(T.tensor([1.0, 2.0, 3.0])).tolist() == [6.0, 8.0, 0.0]


def test_index_select_along_a_sparse_dim_keeps_the_order_asked_for(T):
    """A minibatch of rows: for each index asked (repeats too) the entries there, in their own order."""
    a = sparse(T, [[2, 0, 1, 2, 0], [0, 1, 2, 2, 0]], [1.0, 2.0, 3.0, 4.0, 5.0])
    rows = a.index_select(0, T.tensor([2, 0, 2]))
    assert rows._indices().tolist() == [[0, 0, 1, 1, 2, 2], [0, 2, 1, 0, 0, 2]]
    assert rows._values().tolist() == [1.0, 4.0, 2.0, 5.0, 1.0, 4.0] and not rows.is_coalesced()
    np.testing.assert_array_equal(rows.to_dense().numpy(), a.to_dense().numpy()[[2, 0, 2]])
    columns = a.index_select(1, T.tensor([-1]))
    assert list(columns.shape) == [3, 1] and columns._values().tolist() == [3.0, 4.0]
    assert a.index_select(0, T.tensor([], dtype=T.long)).is_coalesced()
    with pytest.raises(IndexError, match="index contains 3 that is out of range"):
        a.index_select(0, T.tensor([3]))


def test_sparse_mask_reads_a_dense_tensor_at_a_sparse_ones_positions(T):
    x = T.tensor(np.arange(9.0).reshape(3, 3), requires_grad=True)
    mask = sparse(T, [[2, 0, 1, 2, 0], [0, 1, 2, 2, 0]], [1.0, 2.0, 3.0, 4.0, 5.0])
    masked = x.sparse_mask(mask)  # (uncoalesced: one value per entry of the mask, in its order)
    assert masked._indices().tolist() == mask._indices().tolist() and masked._values().tolist() == [6, 1, 5, 8, 0]
    coalesced = x.sparse_mask(mask.coalesce())
    assert coalesced.is_coalesced() and coalesced.values().tolist() == [0.0, 1.0, 5.0, 6.0, 8.0]
    T.sparse.sum(coalesced * 2).backward()
    assert x.grad.tolist() == [[2, 2, 0], [0, 0, 2], [2, 0, 2]]
    assert coalesced.grad_fn.name() == "SparseMaskBackward0"
    with pytest.raises(RuntimeError, match="operands have incompatible sizes"):
        T.ones(2, 2).sparse_mask(mask)


def test_an_optimizers_text_has_a_blank_line_between_groups_and_a_sparse_grad_has_data(T):
    if T.__name__ == "torch":
        import torch.nn as nn
        import torch.optim as optim
    else:
        import nn
        import optim
    first, second = nn.Embedding(3, 2, sparse=True), nn.Embedding(3, 2, sparse=True)
    optimizer = optim.SparseAdam([{"params": first.parameters(), "lr": 0.1}, {"params": [second.weight]}], lr=0.01)
    assert repr(optimizer) == ("SparseAdam (\nParameter Group 0\n    betas: (0.9, 0.999)\n    eps: 1e-08\n    lr: 0.1\n"
                               "    maximize: False\n\nParameter Group 1\n    betas: (0.9, 0.999)\n    eps: 1e-08\n"
                               "    lr: 0.01\n    maximize: False\n)")
    (first(T.tensor([1, 1])) ** 2).sum().backward()
    before = first.weight.detach().clone()
    for p in first.parameters():  # an old program's manual step
        p.data.add_(p.grad.data, alpha=-0.5)
    np.testing.assert_allclose(first.weight.detach().numpy(), before.numpy() * [[1], [-1], [1]], rtol=1e-6)


def test_softmax_of_a_hybrid_tensor_normalises_each_column_of_its_values(T):
    """Values (nnz, heads): a softmax along a sparse dim normalises each head over the entries of a row; along the
    dense dim, each entry's heads."""
    indices = T.tensor([[0, 0, 1, 2, 2], [0, 2, 1, 0, 2]])
    values = np.arange(10.0).reshape(5, 2)
    scores = T.sparse_coo_tensor(indices, T.tensor(values), (3, 3, 2))
    rows = T.sparse.softmax(scores, 1)._values().numpy()
    expected = np.empty_like(values)
    for members in ([0, 1], [2], [3, 4]):
        e = np.exp(values[members])
        expected[members] = e / e.sum(0)
    np.testing.assert_allclose(rows, expected, rtol=1e-12)
    heads = T.sparse.log_softmax(scores, -1)._values().numpy()
    np.testing.assert_allclose(heads, values - np.log(np.exp(values).sum(1, keepdims=True)), rtol=1e-12)


def test_bmm_of_a_batch_of_sparse_matrices(T):
    indices = T.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 1], [1, 0, 1, 1, 1]])
    values = T.tensor([1.0, 2.0, 3.0, 4.0, 5.0], requires_grad=True)
    batch = T.sparse_coo_tensor(indices, values, (2, 2, 2))
    dense = T.arange(12.0).reshape(2, 2, 3).requires_grad_()
    out = T.bmm(batch, dense)
    expected = np.zeros((2, 2, 2))
    np.add.at(expected, tuple(indices.numpy()), [1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(out.detach().numpy(), expected @ np.arange(12.0).reshape(2, 2, 3))
    out.sum().backward()
    np.testing.assert_allclose(dense.grad.numpy(), expected.transpose(0, 2, 1) @ np.ones((2, 2, 3)))
    b, i, k = indices.numpy()
    np.testing.assert_allclose(values.grad.numpy(), np.arange(12.0).reshape(2, 2, 3)[b, k].sum(-1))


def test_adding_sparse_tensors_of_two_dtypes_promotes(T):
    a = T.sparse_coo_tensor(T.tensor([[2, 0, 2], [1, 1, 0]]), T.tensor([1.0, 2.0, 3.0]), (3, 3))
    b = a.t().double()
    for total in (a + b, a.coalesce() + b.coalesce(), b + a):
        assert total.dtype == T.float64
        np.testing.assert_array_equal(total.to_dense().numpy(), a.to_dense().numpy() + b.to_dense().numpy())
    counts = T.sparse_coo_tensor(T.tensor([[0, 1]]), T.tensor([1, 2]), (3,))
    halves = T.sparse_coo_tensor(T.tensor([[1, 2]]), T.tensor([0.5, 0.25]), (3,))
    assert (counts + halves).dtype == T.float32 and (counts + halves).to_dense().tolist() == [1.0, 2.5, 0.25]


def test_functional_relu_of_a_sparse_tensor(T):
    if T.__name__ == "torch":
        import torch.nn.functional as F
    else:
        import nn.functional as F
    values = T.tensor([1.0, -2.0, 3.0], requires_grad=True)
    scores = T.sparse_coo_tensor(T.tensor([[0, 1, 2], [1, 0, 2]]), values, (3, 3))
    activated = F.relu(scores)
    assert activated.is_sparse and activated._values().tolist() == [1.0, 0.0, 3.0]
    T.sparse.sum(activated).backward()
    assert values.grad.tolist() == [1.0, 0.0, 1.0]


def test_spdiags_places_each_diagonal_by_its_column(T):
    diagonals = T.arange(1.0, 13.0).reshape(3, 4)
    matrix = T.sparse.spdiags(diagonals, T.tensor([0, -1, 2]), (4, 4))
    assert matrix._indices().tolist() == [[0, 1, 2, 3, 1, 2, 3, 0, 1], [0, 1, 2, 3, 0, 1, 2, 2, 3]]
    assert matrix._values().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 11.0, 12.0]
    wide = T.sparse.spdiags(diagonals, T.tensor([0, -3, 1]), (4, 6))
    expected = np.zeros((4, 6))
    for row in range(4):
        expected[row, row] = row + 1
        if row + 1 < 4:
            expected[row, row + 1] = 9 + row + 1
    expected[3, 0] = 5
    np.testing.assert_array_equal(wide.to_dense().numpy(), expected)
    with pytest.raises(RuntimeError, match="Offset tensor contains duplicate values"):
        T.sparse.spdiags(diagonals, T.tensor([0, 0, 1]), (4, 4))


def test_the_invariant_checks_switch(T):
    check = T.sparse.check_sparse_tensor_invariants
    assert not check.is_enabled()
    with check():
        assert check.is_enabled()
    assert not check.is_enabled()

    @check(enable=True)
    def inside():
        return check.is_enabled()

    assert inside() and not check.is_enabled()


def test_a_sparse_adjacency_as_a_modules_buffer(T):
    """registered, cast with the module, saved in its state dict and loaded back into another (copy_), as
    PyTorch's; a loaded adjacency of another size is refused."""
    if T.__name__ == "torch":
        import torch.nn as nn
    else:
        import nn

    class GraphConvolution(nn.Module):
        def __init__(self, scale, size=3):
            super().__init__()
            indices = T.tensor([[0, 1, 2, 0], [1, 2, 0, 0]])
            self.register_buffer("adj", T.sparse_coo_tensor(indices, T.ones(4) * scale, (size, size)))
            self.linear = nn.Linear(2, 2)

        def forward(self, x):
            return T.sparse.mm(self.adj, self.linear(x))

    saved = GraphConvolution(2.0).double()
    assert saved.adj.is_sparse and saved.adj.dtype == T.float64 and "adj" in saved.state_dict()
    loaded = GraphConvolution(5.0).double()
    loaded.load_state_dict(saved.state_dict())
    assert loaded.adj.to_dense().tolist() == [[2, 2, 0], [0, 0, 2], [2, 0, 0]]
    assert loaded(T.ones(3, 2, dtype=T.float64)).shape == (3, 2)
    with pytest.raises(RuntimeError, match="size mismatch for adj"):
        GraphConvolution(1.0, size=4).double().load_state_dict(saved.state_dict())


def test_cat_and_stack_of_sparse_tensors(T):
    a = T.sparse_coo_tensor(T.tensor([[1, 0], [0, 1]]), T.tensor([1.0, 2.0]), (2, 2))
    b = T.sparse_coo_tensor(T.tensor([[0, 1, 1], [0, 0, 1]]), T.tensor([3.0, 4.0, 5.0]), (2, 3))
    side_by_side = T.cat([a, b], 1)
    assert side_by_side._indices().tolist() == [[1, 0, 0, 1, 1], [0, 1, 2, 2, 3]] and list(side_by_side.shape) == [2, 5]
    np.testing.assert_array_equal(side_by_side.to_dense().numpy(),
                                  np.concatenate([a.to_dense().numpy(), b.to_dense().numpy()], 1))
    stacked = T.stack([a, a * 2], 1)
    assert stacked._indices().tolist() == [[1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1]] and not stacked.is_coalesced()
    dense = a.to_dense().numpy()
    np.testing.assert_array_equal(stacked.to_dense().numpy(), np.stack([dense, 2 * dense], 1))
    with pytest.raises(RuntimeError, match="a dense tensor was found at position 1"):
        T.cat([a, T.ones(2, 2)])
    with pytest.raises(RuntimeError, match="All tensors must have the same shape"):
        T.cat([a, b], 0)
