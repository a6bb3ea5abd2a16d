"""Fixes found by the recommender-system programs (tests/test_programs_probe13_recsys_*.py), each checked on
chainrule and on PyTorch (the ``T`` fixture)."""

import numpy as np
import pytest

from tests import ported_nn

nn = ported_nn.nn  # the fixture


def test_embedding_bag_max_norm_renormalises_the_padding_row_too(T, nn):
    """F.embedding_bag renormalises the rows of every index of its input, the padding index's included (it
    renormalises before the kernel leaves padding out); chainrule left the padding row as it was."""
    rows = np.random.default_rng(0).standard_normal((6, 3)) * 2
    weight = T.tensor(rows)
    out = nn.functional.embedding_bag(T.tensor([0, 1, 2, 1]), weight, T.tensor([0, 2]), max_norm=1.0,
                                      padding_idx=0, mode="sum")
    norms = np.linalg.norm(rows, axis=1)
    expected = rows.copy()
    for r in (0, 1, 2):
        expected[r] = rows[r] * (1.0 / (norms[r] + 1e-7))
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), [expected[1], expected[2] + expected[1]], rtol=1e-12)


def test_embedding_bag_refuses_offsets_past_the_input(T, nn):
    with pytest.raises(RuntimeError, match="^offsets\\[-1\\] can not be greater than input's length 3 but got "
                                           "offsets\\[-1\\] of 5$"):
        nn.functional.embedding_bag(T.tensor([1, 2, 3]), T.randn(4, 2), T.tensor([0, 5]))


def test_embedding_bag_padding_idx_out_of_range_words(T, nn):
    """The layer asserts (lower case, unlike nn.Embedding's 'Padding_idx'), the function raises a RuntimeError
    naming the range."""
    with pytest.raises(AssertionError, match="^padding_idx must be within num_embeddings$"):
        nn.EmbeddingBag(4, 2, padding_idx=7)
    with pytest.raises(RuntimeError, match="^padding_idx must be within the number of embeddings, -4 through 3, "
                                           "but got 9$"):
        nn.functional.embedding_bag(T.tensor([1]), T.randn(4, 2), T.tensor([0]), padding_idx=9)
    assert nn.EmbeddingBag(4, 2, padding_idx=-1).padding_idx == 3


def test_embedding_max_norm_refuses_an_integer_weight(T, nn):
    with pytest.raises(RuntimeError, match="^norm\\(\\): input dtype should be either floating point or complex. "
                                           "Got Long instead.$"):
        nn.functional.embedding(T.tensor([1]), T.ones(3, 2, dtype=T.long), max_norm=1.0)


@pytest.mark.parametrize("function", ["triu_indices", "tril_indices"])
def test_triangle_indices_refuse_negative_sizes(T, function):
    with pytest.raises(RuntimeError, match="^row must be non-negative, got-1$"):
        getattr(T, function)(-1, 3)
    with pytest.raises(RuntimeError, match="^col must be non-negative, got-2$"):
        getattr(T, function)(3, -2)
    assert tuple(getattr(T, function)(0, 0).shape) == (2, 0)


def test_multinomial_without_replacement_orders_zero_weights_as_pytorch(T):
    """Drawing as many samples as categories without replacement takes the zero weights last, in the order
    PyTorch's topk gives equal keys (w / E of a zero weight is 0 for each): a stable argsort put them in index
    order instead. The race runs in the input's dtype (float16 keys tie where float64 ones do not)."""
    g = T.Generator().manual_seed(0)
    for _ in range(3):
        assert T.multinomial(T.tensor([0.5, 0.5, 0.0]), 3, generator=g)[2].item() == 2
    assert T.multinomial(T.tensor([[0.0, 1.0, 0.0, 2.0]]), 4, generator=g).tolist() == [[3, 1, 2, 0]]
    g.manual_seed(5)
    weights = T.tensor(np.r_[np.zeros(150), np.arange(1, 51)] % 7)
    draws = {dtype: T.multinomial(weights.to(dtype), 200, generator=g)[-3:].tolist()
             for dtype in (T.float16, T.float32, T.float64)}
    assert draws == {T.float16: [101, 50, 68], T.float32: [101, 50, 68], T.float64: [101, 50, 68]}


def test_bincount_weights_dtype_and_float32_running_sum(T):
    """PyTorch's bincount returns float32 for float32 weights, summed in float32 one weight after another (a
    float64 sum rounded once was up to 4e-4 off over 5000 weights), and float64 for every other dtype of
    weights (float16 and integers included: chainrule kept float16)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 5000)
    w = rng.random(5000).astype(np.float32)
    counts = T.bincount(T.tensor(x), weights=T.tensor(w))
    running = np.zeros(5, dtype=np.float32)
    for i, v in zip(x, w):
        running[i] += v
    assert counts.dtype == T.float32
    np.testing.assert_array_equal(counts.numpy(), running)
    for dtype in (T.float16, T.int32, T.int64, T.uint8, T.bool):
        weighted = T.bincount(T.tensor([1, 2, 2]), weights=T.ones(3, dtype=dtype), minlength=4)
        assert weighted.dtype == T.float64
        assert weighted.tolist() == [0.0, 1.0, 2.0, 0.0]
    assert T.bincount(T.tensor([], dtype=T.long), weights=T.tensor([], dtype=T.float32), minlength=2).tolist() == [0, 0]


def test_repeat_interleave_of_counts_keeps_their_dtype(T):
    """``repeat_interleave(lengths)``, the segment ids of jagged features: int32 lengths give int32 ids."""
    ids = T.repeat_interleave(T.tensor([2, 0, 3], dtype=T.int32))
    assert ids.dtype == T.int32 and ids.tolist() == [0, 0, 2, 2, 2]
    assert T.repeat_interleave(T.tensor([1, 2])).dtype == T.int64


def test_embedding_bag_sum_gradient_adds_in_pytorchs_sorted_order(T, nn):
    """PyTorch's backward of a sum bag adds each row's float32 terms in the order its (unstable) sort of the
    indices leaves them: chainrule added them in the lookups' order, 7e-5 off over 600 terms a row."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 5, 3000)
    grad = rng.standard_normal((429, 4)).astype(np.float32)
    offsets = np.arange(0, 3000, 7)
    weight = T.zeros(5, 4, requires_grad=True)
    nn.functional.embedding_bag(T.tensor(indices), weight, T.tensor(offsets), mode="sum").backward(T.tensor(grad))
    bag_of = np.searchsorted(offsets, np.arange(3000), side="right") - 1
    order = T.sort(T.tensor(indices)).indices.numpy()  # (PyTorch's tie order: chainrule's sort gives it too)
    expected = np.zeros((5, 4), dtype=np.float32)
    for j in order:
        expected[indices[j]] += grad[bag_of[j]]
    np.testing.assert_array_equal(weight.grad.numpy(), expected)


def test_embedding_bag_index_dtype_words(T, nn):
    with pytest.raises(RuntimeError, match="but got torch.FloatTensor instead \\(while checking arguments for "
                                           "embedding_bag\\)$"):
        nn.functional.embedding_bag(T.tensor([[1.0, 2.0]]), T.ones(4, 2))
    with pytest.raises(RuntimeError, match="but got torch.FloatTensor instead \\(while checking arguments for "
                                           "embedding\\)$"):
        nn.functional.embedding(T.tensor([1.0]), T.ones(4, 2))
    with pytest.raises(RuntimeError, match="^Index 1 of input takes value 5 which is not in the valid range"):
        T.embedding_bag(T.ones(4, 2), T.tensor([1, 5]), T.tensor([0]))


def test_embedding_scale_grad_by_freq_float32_adds_fused(T, nn):
    """PyTorch adds each float32 lookup's gradient times float32(1 / count) into its row as a fused
    multiply-add (one rounding per addition): chainrule rounded the product first, up to 1e-5 relatively off
    over 600 lookups a row. The padding row still gets nothing."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 5, 3000)
    grad = rng.standard_normal((3000, 4)).astype(np.float32)
    weight = T.zeros(5, 4, requires_grad=True)
    nn.functional.embedding(T.tensor(indices), weight, padding_idx=4, scale_grad_by_freq=True).backward(
        T.tensor(grad))
    counts = np.bincount(indices)
    expected = np.zeros((5, 4), dtype=np.float32)
    for i, k in enumerate(indices):
        if k != 4:
            scale = np.float64(np.float32(1.0 / counts[k]))
            expected[k] = (expected[k].astype(np.float64) + grad[i].astype(np.float64) * scale).astype(np.float32)
    np.testing.assert_array_equal(weight.grad.numpy(), expected)
    # and the gradient of the gradient, where asked for, is still there (the unfused sum)
    w = T.ones(5, 2, requires_grad=True)
    out = nn.functional.embedding(T.tensor([1, 1, 3]), w, scale_grad_by_freq=True)
    (g,) = T.autograd.grad((out ** 2).sum(), w, create_graph=True)
    g.sum().backward()
    np.testing.assert_allclose(w.grad.numpy()[[1, 3]], [[2.0, 2.0], [2.0, 2.0]])


def test_embedding_bag_float32_weighted_sums_and_mean_gradients_fused(T, nn):
    """PyTorch's float32 bags with per-sample weights add w_k · row fused (fbgemm), and its backward adds
    s_k · dL/dy_bag fused in its sorted order, s_k = w_k, or 1 / |bag| for the mean: chainrule rounded each
    product first (up to 1e-4 relatively off in the bags, 2e-5 in the gradients)."""
    rng = np.random.default_rng(16)
    rows = rng.standard_normal((50, 16)).astype(np.float32)
    indices = rng.integers(0, 50, 300)
    offsets = np.arange(0, 300, 3)
    psw = rng.random(300).astype(np.float32)
    upstream = rng.standard_normal((100, 16)).astype(np.float32)
    bag_of = np.repeat(np.arange(100), 3)
    order = T.sort(T.tensor(indices)).indices.numpy()  # PyTorch's order of addition (chainrule's sort gives it)

    def fused(into, at, terms, scales, sequence):
        for j in sequence:
            into[at[j]] = (into[at[j]].astype(np.float64) + terms[j].astype(np.float64) * np.float64(scales[j])
                           ).astype(np.float32)
        return into

    weight = T.tensor(rows, requires_grad=True)
    out = nn.functional.embedding_bag(T.tensor(indices), weight, T.tensor(offsets), mode="sum",
                                      per_sample_weights=T.tensor(psw))
    out.backward(T.tensor(upstream))
    np.testing.assert_array_equal(out.detach().numpy(), fused(np.zeros((100, 16), np.float32), bag_of,
                                                              rows[indices], psw, range(300)))
    np.testing.assert_array_equal(weight.grad.numpy(), fused(np.zeros((50, 16), np.float32), indices,
                                                             upstream[bag_of], psw, order))
    weight = T.tensor(rows, requires_grad=True)
    nn.functional.embedding_bag(T.tensor(indices), weight, T.tensor(offsets), mode="mean").backward(
        T.tensor(upstream))
    thirds = np.full(300, np.float32(1 / 3))
    np.testing.assert_array_equal(weight.grad.numpy(), fused(np.zeros((50, 16), np.float32), indices,
                                                             upstream[bag_of], thirds, order))


def test_embedding_bag_float32_weighted_sums_with_a_padding_index_are_not_fused(T, nn):
    """With a padding index, or a weight whose rows are not contiguous, PyTorch's kernel leaves fbgemm for its
    own loop, which rounds w_k · row before adding it: the bags are then those sums (the gradient stays
    fused)."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((40, 16)).astype(np.float32)
    indices = rng.integers(0, 40, 2000)
    psw = rng.random(2000).astype(np.float32)
    out = nn.functional.embedding_bag(T.tensor(indices), T.tensor(rows), T.tensor(np.arange(0, 2000, 5)),
                                      mode="sum", padding_idx=7, per_sample_weights=T.tensor(psw))
    expected = np.zeros((400, 16), np.float32)
    for j, (i, w) in enumerate(zip(indices, psw)):
        if i != 7:
            expected[j // 5] += rows[i] * w
    np.testing.assert_array_equal(out.numpy(), expected)
    transposed = T.tensor(np.ascontiguousarray(rows.T)).t()  # (stride 16 along a row)
    out = nn.functional.embedding_bag(T.tensor(indices), transposed, T.tensor(np.arange(0, 2000, 5)),
                                      mode="sum", per_sample_weights=T.tensor(psw))
    expected = np.zeros((400, 16), np.float32)
    for j, (i, w) in enumerate(zip(indices, psw)):
        expected[j // 5] += rows[i] * w
    np.testing.assert_array_equal(out.numpy(), expected)
