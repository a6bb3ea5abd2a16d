"""Embedding and EmbeddingBag, ported from PyTorch's test/nn/test_embedding.py (CPU, dense and sparse
gradients) beyond tests/test_ported_nn_embedding_norm.py and tests/test_sparse_gradients.py: sparse gradients of
empty and zero-width tables, from_pretrained over dtypes and options, max_norm with norm_type 0.5, padding_idx
bounds of embedding_bag, include_last_offset with padding, gradients of every mode with int32 and int64 indices
(float64, against NumPy), sparse bag gradients' entries, per_sample_weights' gradients, empty bags, double
backward and the errors. Each test runs on chainrule's `autograd` and, where installed, on PyTorch."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, dtype_name, raises, same, values, xfail_ours

nn = ported_nn.nn  # the fixtures
F = ported_nn.F

W = np.arange(12.0).reshape(6, 2) * np.array([1.0, -1.0]) / 3  # a float64 table: 6 rows of 2
INDICES = np.array([1, 2, 4, 5, 4, 3, 2, 0])
OFFSETS = np.array([0, 2, 5, 5])  # bags [1 2] [4 5 4] [] [3 2 0]
BAGS = [INDICES[0:2], INDICES[2:5], INDICES[5:5], INDICES[5:]]
UPSTREAM = np.arange(8.0).reshape(4, 2)  # dL/d(bag output)


# -- Embedding ------------------------------------------------------------------------------------

def test_embedding_sparse_basic(T, nn):
    embedding = nn.Embedding(10, 20, sparse=True)
    embedding(T.tensor([[0, 2, 4, 5], [4, 3, 0, 9]])).sum().backward()
    grad = embedding.weight.grad
    assert grad.is_sparse and tuple(grad.shape) == (10, 20)
    same(grad._indices(), [[0, 2, 4, 5, 4, 3, 0, 9]])  # one entry per lookup, in order
    counts = np.bincount([0, 2, 4, 5, 4, 3, 0, 9], minlength=10).astype(np.float32)
    same(grad.to_dense(), np.repeat(counts[:, None], 20, 1))


def test_embedding_sparse_empty_tensor(T, nn):
    embedding = nn.Embedding(0, 0, sparse=True)
    embedding(T.tensor([], dtype=T.int64)).sum().backward()
    assert embedding.weight.grad.is_sparse and tuple(embedding.weight.grad.shape) == (0, 0)
    embedding = nn.Embedding(10, 0, sparse=True)
    embedding(T.tensor([[0, 2, 4, 5], [4, 3, 0, 9]])).sum().backward()
    grad = embedding.weight.grad
    assert grad.is_sparse and tuple(grad.shape) == (10, 0)
    assert tuple(grad._indices().shape) == (1, 0) and tuple(grad._values().shape) == (0, 0)  # no entries


def test_move_sparse_half_embedding(T, nn):
    embedding = nn.Embedding(10, 3, sparse=True)
    assert dtype_name(embedding.weight) == "float32"
    embedding.to(T.float16)
    assert dtype_name(embedding.weight) == "float16"
    assert (embedding.embedding_dim, embedding.num_embeddings) == (3, 10)


def test_embedding_init_draws_pytorchs_normals_and_zeroes_the_padding_row(T, nn):
    T.manual_seed(0)
    close(nn.Embedding(3, 2, padding_idx=1).weight, [[1.5409961, -0.2934289], [0, 0], [-1.0845224, -1.3985955]],
          rtol=1e-6)
    T.manual_seed(0)
    close(nn.EmbeddingBag(3, 2).weight, [[1.5409961, -0.2934289], [-2.1787894, 0.5684313], [-1.0845224, -1.3985955]],
          rtol=1e-6)


def _renormed(rows, max_norm, norm_type):
    """PyTorch's embedding_renorm_ by hand: a row of norm above max_norm is scaled by max_norm / (norm + 1e-7)."""
    norms = (np.abs(rows) ** norm_type).sum(1) ** (1 / norm_type)
    return np.where((norms > max_norm)[:, None], rows * (max_norm / (norms + 1e-7))[:, None], rows)


def test_embedding_max_norm(T, nn):
    weight = np.arange(22 * 5, dtype=np.float32).reshape(22, 5) / 10
    embedding = nn.Embedding.from_pretrained(T.tensor(weight), max_norm=1.0)
    output = embedding(T.tensor([2, 8, 8, 6]))
    same(output[1], values(output[2]))
    assert (np.linalg.norm(values(output), axis=1) <= 1 + 1e-6).all()
    close(output, _renormed(weight[[2, 8, 8, 6]], 1.0, 2.0))
    close(embedding.weight[[0, 1]], weight[[0, 1]])  # rows not looked up keep their values


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64"])
def test_embedding_from_pretrained(T, nn, dtype):
    a = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=getattr(T, dtype))
    embedding = nn.Embedding.from_pretrained(a)
    same(embedding.weight, values(a), dtype=dtype)
    same(embedding(T.tensor([0, 1])), [[1, 2, 3], [4, 5, 6]], dtype=dtype)
    assert not embedding.weight.requires_grad  # freeze=True


def test_embedding_bag_from_pretrained(T, nn):
    a = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    embedding = nn.EmbeddingBag.from_pretrained(a)
    same(embedding.weight, values(a))
    same(embedding(T.tensor([0, 1]), T.arange(2)), [[1, 2, 3], [4, 5, 6]])
    same(embedding(T.tensor([[0, 1]])), [[2.5, 3.5, 4.5]])  # mean, the default mode
    embedding = nn.EmbeddingBag.from_pretrained(a, padding_idx=1)
    same(embedding.weight, values(a))  # from_pretrained leaves the padding row as it is given


def test_embedding_from_pretrained_options(T, nn):
    a = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=T.float64)
    embedding = nn.Embedding.from_pretrained(a, max_norm=2.0, norm_type=0.5, scale_grad_by_freq=False, sparse=True)
    output = embedding(T.tensor([0, 1]))
    expected = _renormed(np.array([[1.0, 2, 3], [4, 5, 6]]), 2.0, 0.5)
    close(output, expected, rtol=1e-12)
    close(a, expected, rtol=1e-12)  # the pretrained tensor itself, renormalised in place
    assert ((np.sqrt(np.abs(values(output))).sum(1)) ** 2 <= 2.0 + 1e-9).all()


def test_embedding_bag_from_pretrained_options(T, nn):
    a = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=T.float64)
    bag = nn.EmbeddingBag.from_pretrained(a, max_norm=2.0, norm_type=0.5, mode="max", sparse=False)
    expected = _renormed(np.array([[1.0, 2, 3], [4, 5, 6]]), 2.0, 0.5)
    close(bag(T.tensor([[0, 1]])), expected.max(0, keepdims=True), rtol=1e-12)
    close(a, expected, rtol=1e-12)


def test_embedding_functional_matches_the_module(T, nn, F):
    a = T.tensor([[1, 3, 2], [0, 2, 1]])
    embeddings = T.tensor(W[:4])
    module = nn.Embedding.from_pretrained(embeddings, padding_idx=2)
    same(module(a), values(F.embedding(a, embeddings, padding_idx=2)))
    same(F.embedding(a, embeddings), W[:4][[[1, 3, 2], [0, 2, 1]]])
    bag = nn.EmbeddingBag.from_pretrained(embeddings, padding_idx=2)
    close(bag(a), [W[[1, 3]].mean(0), W[[0, 1]].mean(0)], rtol=1e-12)  # padding left out of the mean
    same(bag(a), values(F.embedding_bag(a, embeddings, padding_idx=2)))


def test_embedding_bag_padding_idx_error(T, nn, F):
    a = T.tensor([[1, 3, 2], [0, 2, 1]])
    embeddings = T.rand(4, 3)
    for padding_idx in range(-6, 6):
        if not -4 <= padding_idx < 4:
            raises(RuntimeError, "padding_idx must be within the number of embeddings", F.embedding_bag, a,
                   embeddings, padding_idx=padding_idx)
            raises(AssertionError, "padding_idx must be within num_embeddings", nn.EmbeddingBag, 4, 3,
                   padding_idx=padding_idx)
        else:
            F.embedding_bag(a, embeddings, padding_idx=padding_idx)
            nn.EmbeddingBag(4, 3, padding_idx=padding_idx)


def test_embedding_bag_include_last_offset_with_padding(T, nn):
    weight = np.arange(300.0).reshape(100, 3)
    bag = nn.EmbeddingBag.from_pretrained(T.tensor(weight), include_last_offset=True, padding_idx=61)
    input = T.tensor([0, 1, 2, 3])
    expected = [weight[0:3].mean(0), weight[3]]  # the last bag runs to the end of the input either way
    same(bag(input, T.tensor([0, 3, 3])), expected)
    same(bag(input, T.tensor([0, 3, 4])), expected)


def test_embedding_scalar_weight_error(T, F):
    for weight in (T.tensor(1.0), T.tensor(1.0).reshape(1, 1, 1)):
        raises(RuntimeError, "'weight' must be 2-D", F.embedding, T.zeros(2, 2, dtype=T.long), weight)


def test_embedding_backward_sparse_accumulates(T, nn):
    embedding = nn.Embedding(10, 3, sparse=True).to(dtype=T.float64)
    lookups = T.tensor([7, 1, 3])
    embedding(lookups).sum().backward()
    same(embedding.weight.grad._indices(), [[7, 1, 3]])
    same(embedding.weight.grad._values(), np.ones((3, 3)), dtype="float64")
    embedding(lookups).sum().backward()
    embedding(T.tensor([8, 1, 3])).sum().backward()
    expected = np.zeros((10, 3))
    expected[[1, 3, 7, 8]] = np.array([[3.0], [3], [2], [1]])  # rows 1 and 3 three times, 7 twice, 8 once
    same(embedding.weight.grad.to_dense(), expected)
    coalesced = embedding.weight.grad.coalesce()
    same(coalesced._indices(), [[1, 3, 7, 8]])
    same(coalesced._values(), np.array([[3.0] * 3, [3] * 3, [2] * 3, [1] * 3]))


@xfail_ours("a sum of sparse gradients whose values are views of an expanded gradient (.sum()'s) concatenates their "
            "entries in PyTorch (add_out_sparse_non_contiguous); the engine hands on materialised gradients, so "
            "its sum merges equal positions (add_out_sparse_contiguous's walk)")
def test_embedding_backward_sparse_gradients_concatenate_their_entries(T, nn):
    embedding = nn.Embedding(10, 3, sparse=True).to(dtype=T.float64)
    lookups = T.tensor([[7, 1, 3]])
    embedding(lookups[0]).sum().backward()
    embedding(lookups[0]).sum().backward()
    same(embedding.weight.grad._indices(), [[7, 1, 3, 7, 1, 3]])
    same(embedding.weight.grad._values(), np.ones((6, 3)))


def test_embedding_max_norm_backward(T, F):
    weight = (T.tensor(W[:4] * 3, dtype=T.float32) * 2).requires_grad_()
    F.embedding(T.tensor([0, 1, 2, 2]), weight, max_norm=1.0).sum().backward()
    # renormalisation is outside autograd: each row's gradient is how often it was looked up
    same(weight.grad, np.repeat(np.array([[1.0], [1.0], [2.0], [0.0]], np.float32), 2, 1))
    close(weight, np.concatenate([_renormed(W[:3] * 6, 1.0, 2.0), W[3:4] * 6]).astype(np.float32))


def test_embedding_scale_grad_by_freq_with_padding(T, F):
    weight = T.tensor(W, requires_grad=True)
    F.embedding(T.tensor([[0, 1, 1], [1, 5, 0]]), weight, scale_grad_by_freq=True, padding_idx=1).sum().backward()
    same(weight.grad, [[1, 1], [0, 0], [0, 0], [0, 0], [0, 0], [1, 1]])


def test_embedding_double_backward(T, F):
    weight = T.tensor(W, requires_grad=True)
    output = F.embedding(T.tensor([0, 1, 1]), weight)
    (grad,) = T.autograd.grad((output ** 2).sum(), weight, create_graph=True)
    counts = np.bincount([0, 1, 1], minlength=6)[:, None]
    close(grad, 2 * counts * W, rtol=1e-12)  # dL/dW_r = 2 count_r W_r
    grad.sum().backward()
    close(weight.grad, np.repeat(2.0 * counts, 2, 1), rtol=1e-12)


def test_embedding_output_dtypes(T, F):
    for dtype in ("float16", "float32", "float64"):
        table = T.ones(2, 2, dtype=getattr(T, dtype))
        assert dtype_name(F.embedding(T.tensor([0]), table)) == dtype
        assert dtype_name(F.embedding_bag(T.tensor([0]), table, T.tensor([0]))) == dtype


def test_embedding_of_a_0d_index(T, F):
    weight = T.tensor(W, requires_grad=True)
    output = F.embedding(T.tensor(3), weight)
    same(output, W[3])
    output.sum().backward()
    same(weight.grad, np.eye(6)[3][:, None].repeat(2, 1))


# -- EmbeddingBag ---------------------------------------------------------------------------------

def _bag_gradient(mode):
    """dL/dW of the bags of INDICES / OFFSETS under UPSTREAM, by hand."""
    grad = np.zeros_like(W)
    for b, bag in enumerate(BAGS):
        if not len(bag):
            continue
        if mode == "max":
            for d in range(2):
                grad[bag[np.argmax(W[bag, d])], d] += UPSTREAM[b, d]
        else:
            for r in bag:
                grad[r] += UPSTREAM[b] / (len(bag) if mode == "mean" else 1)
    return grad


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_gradients(T, F, mode, index_dtype):
    weight = T.tensor(W, requires_grad=True)
    dtype = getattr(T, index_dtype)
    output = F.embedding_bag(T.tensor(INDICES, dtype=dtype), weight, T.tensor(OFFSETS, dtype=dtype), mode=mode)
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[mode]
    close(output, [reduce(W[bag], 0) if len(bag) else np.zeros(2) for bag in BAGS], rtol=1e-12)
    assert dtype_name(output) == "float64"
    (output * T.tensor(UPSTREAM)).sum().backward()
    close(weight.grad, _bag_gradient(mode), rtol=1e-12)


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_sparse_gradient_entries(T, F, mode, index_dtype):
    weight = T.tensor(W, requires_grad=True)
    dtype = getattr(T, index_dtype)
    output = F.embedding_bag(T.tensor(INDICES, dtype=dtype), weight, T.tensor(OFFSETS, dtype=dtype), mode=mode,
                             sparse=True)
    (output * T.tensor(UPSTREAM)).sum().backward()
    grad = weight.grad
    assert grad.is_sparse and dtype_name(grad._indices()) == "int64"
    same(grad._indices(), [INDICES])  # one entry per lookup, in the input's order
    sizes = np.array([len(bag) for bag in BAGS])
    bag_of = np.repeat(np.arange(4), sizes)
    shares = UPSTREAM[bag_of] / (sizes[bag_of][:, None] if mode == "mean" else 1)
    close(grad._values(), shares, rtol=1e-12)
    close(grad.to_dense(), _bag_gradient(mode), rtol=1e-12)


def test_embedding_bag_per_sample_weights_gradients_with_padding(T, F):
    weight = T.tensor(W, requires_grad=True)
    sample_weights = T.tensor([0.5, 2.0, -1.0, 3.0, 1.5], dtype=T.float64, requires_grad=True)
    input = np.array([0, 1, 1, 4, 5])
    output = F.embedding_bag(T.tensor(input), weight, T.tensor([0, 2, 2]), mode="sum",
                             per_sample_weights=sample_weights, padding_idx=4)
    upstream = np.array([[1.0, 2], [3, 4], [5, 6]])
    psw = np.array([0.5, 2.0, -1.0, 0.0, 1.5])  # the padding lookup counts for nothing
    bag_of = np.array([0, 0, 2, 2, 2])
    expected = np.zeros((3, 2))
    np.add.at(expected, bag_of, psw[:, None] * W[input])
    close(output, expected, rtol=1e-12)
    (output * T.tensor(upstream)).sum().backward()
    grad_weight = np.zeros_like(W)
    np.add.at(grad_weight, input, psw[:, None] * upstream[bag_of])
    close(weight.grad, grad_weight, rtol=1e-12)
    close(sample_weights.grad, (W[input] * upstream[bag_of]).sum(1) * (input != 4), rtol=1e-12)


def test_embedding_bag_per_sample_weights_of_a_2d_input(T, F):
    weight = T.tensor(W, requires_grad=True)
    sample_weights = T.tensor([[0.5, 2.0], [-1.0, 3.0]], dtype=T.float64, requires_grad=True)
    output = F.embedding_bag(T.tensor([[0, 1], [1, 4]]), weight, mode="sum", per_sample_weights=sample_weights)
    close(output, [0.5 * W[0] + 2 * W[1], -W[1] + 3 * W[4]], rtol=1e-12)
    output.sum().backward()
    close(sample_weights.grad, W[[[0, 1], [1, 4]]].sum(-1), rtol=1e-12)
    close(weight.grad[[0, 1, 4]], [[0.5, 0.5], [1, 1], [3, 3]], rtol=1e-12)


def test_embedding_bag_per_sample_weights_failures(T, F):
    table = T.tensor(W)
    raises(RuntimeError, "to have the same type as tensor for argument #1 'per_sample_weights'", F.embedding_bag,
           T.tensor([0, 1]), table, T.tensor([0]), mode="sum", per_sample_weights=T.ones(2))
    for mode in ("mean", "max"):
        raises(NotImplementedError, "per_sample_weights is only supported for mode='sum'", F.embedding_bag,
               T.tensor([0, 1]), table, T.tensor([0]), mode=mode, per_sample_weights=T.ones(2, dtype=T.float64))
    raises(ValueError, "max mode does not support sparse weights", F.embedding_bag, T.tensor([0, 1]), table,
           T.tensor([0]), mode="max", sparse=True)


def test_embedding_bag_empty_input(T, F):
    for mode in ("sum", "mean", "max"):
        weight = T.tensor(W, requires_grad=True)
        output = F.embedding_bag(T.tensor([], dtype=T.long), weight, T.tensor([0, 0, 0, 0, 0]), mode=mode)
        same(output, np.zeros((5, 2)))
        assert output.requires_grad
        output.sum().backward()
        same(weight.grad, np.zeros((6, 2)))
    weight = T.tensor(W, requires_grad=True)
    F.embedding_bag(T.tensor([], dtype=T.long), weight, T.tensor([0, 0]), mode="sum", sparse=True).sum().backward()
    assert weight.grad.is_sparse and tuple(weight.grad._indices().shape) == (1, 0)
    same(weight.grad.to_dense(), np.zeros((6, 2)))


def test_embedding_bag_all_padding_sparse_gradient_is_empty(T, F):
    weight = T.tensor(W, requires_grad=True)
    F.embedding_bag(T.tensor([1, 1]), weight, T.tensor([0, 0]), sparse=True, mode="sum", padding_idx=1).sum() \
        .backward()
    assert weight.grad.is_sparse and tuple(weight.grad._values().shape) == (0, 2)


def test_embedding_bag_non_contiguous_weight(T, F):
    table = T.arange(24.0).reshape(4, 6).double()
    strided = table[:, ::2]
    same(F.embedding_bag(T.tensor([0, 3, 1]), strided, T.tensor([0, 1])), [[0, 2, 4], [12, 14, 16]])
    same(F.embedding_bag(T.tensor([0, 3, 1]), strided, T.tensor([0, 1]), mode="max"), [[0, 2, 4], [18, 20, 22]])


def test_embedding_bag_max_mode_with_padding_gradient(T, F):
    weight = T.tensor(W * 3, requires_grad=True)
    output = F.embedding_bag(T.tensor([0, 1, 1, 2]), weight, T.tensor([0, 2]), mode="max", padding_idx=1)
    same(output, [W[0] * 3, W[2] * 3])  # the padding row takes no part in a max
    output.sum().backward()
    same(weight.grad, [[1, 1], [0, 0], [1, 1], [0, 0], [0, 0], [0, 0]])


def test_embedding_bag_max_norm_with_per_sample_weights(T, F):
    table = T.tensor(W * 3)
    output = F.embedding_bag(T.tensor([0, 5]), table, T.tensor([0]), mode="sum", max_norm=1.0,
                             per_sample_weights=T.tensor([2.0, -1.0], dtype=T.float64))
    renormed = _renormed(W * 3, 1.0, 2.0)
    close(output, [2 * renormed[0] - renormed[5]], rtol=1e-12)
    close(table, np.concatenate([renormed[:1], W[1:5] * 3, renormed[5:]]), rtol=1e-12)  # the looked-up rows only


def test_embedding_bag_mixed_index_and_offset_dtypes(T, F):
    same(F.embedding_bag(T.tensor([0, 1], dtype=T.int32), T.tensor(W), T.tensor([0], dtype=T.int64), mode="sum"),
         [W[0] + W[1]])


@pytest.mark.parametrize("table_dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_index_out_of_range_errors(T, F, mode, table_dtype):
    table = T.tensor(W, dtype=getattr(T, table_dtype))
    fast = mode != "max" and table_dtype != "float64"  # PyTorch's fast kernel names the position, the other not
    for input, position, value in (([0, -1], 1, -1), ([0, 9, -1], 1, 9)):
        words = (rf"Index {position} of input takes value {value} which is not in the valid range \[0, 6\)" if fast
                 else f"embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be {value}")
        raises(RuntimeError, words, F.embedding_bag, T.tensor(input), table, T.tensor([0]), mode=mode)
    if mode != "max":  # with padding, PyTorch's generic kernel at any dtype
        raises(RuntimeError, "found idx to be 9", F.embedding_bag, T.tensor([0, 9]), table, T.tensor([0]), mode=mode,
               padding_idx=0)


def _reference_bags(input, weight, starts, ends, mode, per_sample_weights, padding_idx):
    """Bags by hand, NumPy: the rows of input[start:end], padding left out (and out of the mean's count), zeros
    for a bag left empty; and dL/dW, dL/d(per-sample weights) under an upstream of ones."""
    psw = np.ones(len(input)) if per_sample_weights is None else per_sample_weights
    output, grad_weight, grad_psw = np.zeros((len(starts), weight.shape[1])), np.zeros_like(weight), np.zeros(len(psw))
    for b, (start, end) in enumerate(zip(starts, ends)):
        kept = [k for k in range(start, end) if input[k] != padding_idx]
        if not kept:
            continue
        rows = weight[input[kept]] * psw[kept][:, None]
        if mode == "max":
            output[b] = rows.max(0)
            for d in range(weight.shape[1]):
                grad_weight[input[kept][np.argmax(rows[:, d])], d] += 1
            continue
        output[b] = rows.sum(0) / (len(kept) if mode == "mean" else 1)
        for k in kept:
            grad_weight[input[k]] += psw[k] / (len(kept) if mode == "mean" else 1)
            grad_psw[k] = weight[input[k]].sum()
    return output, grad_weight, grad_psw


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_1d_padding_idx_matches_the_2d_input(T, F, mode):
    rng = np.random.default_rng(7)
    sizes = [3, 0, 5, 1, 4]  # one bag empty, one of the most lookups
    starts = np.cumsum([0] + sizes[:-1])
    ends = starts + sizes
    for sparse, include_last_offset, all_padding in [(s, i, a) for s in (False, True) for i in (False, True)
                                                     for a in (False, True) if not (s and mode == "max")]:
        input = np.ones(sum(sizes), np.int64) if all_padding else rng.integers(0, 8, sum(sizes))
        offsets = np.append(starts, len(input)) if include_last_offset else starts
        for padding_idx in sorted(set(input.tolist()))[:2] + [None]:
            weight = rng.standard_normal((9, 3))
            padding_2d = 8 if padding_idx is None else padding_idx  # row 8 is never looked up
            input_2d = np.full((len(sizes), max(sizes)), padding_2d)
            for b, (start, end) in enumerate(zip(starts, ends)):
                input_2d[b, :end - start] = input[start:end]
            w1, w2 = T.tensor(weight, requires_grad=True), T.tensor(weight, requires_grad=True)
            bag = F.embedding_bag(T.tensor(input), w1, T.tensor(offsets), padding_idx=padding_idx, mode=mode,
                                  sparse=sparse, include_last_offset=include_last_offset)
            bag_2d = F.embedding_bag(T.tensor(input_2d), w2, padding_idx=padding_2d, mode=mode, sparse=sparse)
            expected, grad, _ = _reference_bags(input, weight, starts, ends, mode, None, padding_idx)
            close(bag, expected, rtol=1e-12, atol=1e-12)
            close(bag_2d, expected, rtol=1e-12, atol=1e-12)
            bag.sum().backward()
            bag_2d.sum().backward()
            dense = (lambda g: g.to_dense()) if sparse else (lambda g: g)
            close(dense(w1.grad), grad, rtol=1e-12, atol=1e-12)
            close(dense(w2.grad), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("index_dtypes", [("int32", "int32"), ("int32", "int64"), ("int64", "int32"),
                                          ("int64", "int64")])
def test_embedding_bag_per_sample_weights_and_new_offsets(T, nn, index_dtypes):
    input = np.array([3, 1, 1, 1, 4, 0])
    psw = np.array([0.5, -1.0, 2.0, 3.0, 1.5, -2.0])
    for include_last_offset in (False, True):
        bag = nn.EmbeddingBag(5, 2, mode="sum", include_last_offset=include_last_offset).double()
        with T.no_grad():
            bag.weight.copy_(T.arange(1, 11).view(5, 2).double())
        offsets = [0, 0, 3, 3, 6] + ([6] if include_last_offset else [])
        sample_weights = T.tensor(psw, requires_grad=True)
        output = bag(T.tensor(input, dtype=getattr(T, index_dtypes[0])),
                     T.tensor(offsets, dtype=getattr(T, index_dtypes[1])), sample_weights)
        starts = [0, 0, 3, 3, 6]
        ends = starts[1:] + [6]
        weight = np.arange(1.0, 11).reshape(5, 2)
        expected, grad_weight, grad_psw = _reference_bags(input, weight, starts, ends, "sum", psw, None)
        close(output, expected, rtol=1e-12)
        output.sum().backward()
        close(bag.weight.grad, grad_weight, rtol=1e-12)
        close(sample_weights.grad, grad_psw, rtol=1e-12)


def test_embedding_bag_empty_per_sample_weights_and_offsets(T, nn):
    bag = nn.EmbeddingBag(5, 2, mode="sum").double()
    sample_weights = T.tensor([], dtype=T.float64, requires_grad=True)
    output = bag(T.tensor([], dtype=T.int32), T.tensor([0, 0, 0, 0, 0]), sample_weights)
    same(output, np.zeros((5, 2)))
    output.backward(T.ones(5, 2, dtype=T.float64))
    same(bag.weight.grad, np.zeros((5, 2)))
    assert tuple(sample_weights.grad.shape) == (0,)


def test_embedding_padding_idx_gets_no_gradient_in_double_backward(T, nn):
    embedding = nn.Embedding(5, 2, padding_idx=0).double()
    before = values(embedding.weight[0]).copy()
    total = embedding(T.tensor([1, 3, 0, 0])).sum()
    (grad,) = T.autograd.grad(total, list(embedding.parameters()), retain_graph=True)
    (grad.sum() + total).backward()  # the first gradient is a constant here: only total's reaches W
    same(embedding.weight.grad, [[0, 0], [1, 1], [0, 0], [1, 1], [0, 0]])
    same(values(embedding.weight + embedding.weight.grad)[0], before)
    sparse = nn.Embedding(5, 2, padding_idx=0, sparse=True).double()
    total = sparse(T.tensor([1, 3, 0, 0])).sum()
    (grad,) = T.autograd.grad(total, list(sparse.parameters()), create_graph=True)
    assert grad.is_sparse  # autograd.grad hands back the sparse form, without the padding row's entries
    same(grad._indices(), [[1, 3]])
    same(grad.to_dense(), [[0, 0], [1, 1], [0, 0], [1, 1], [0, 0]])


@pytest.mark.parametrize("mode, sparse", [("sum", False), ("mean", False), ("max", False), ("sum", True),
                                          ("mean", True)])
@pytest.mark.parametrize("index_dtypes", [("int32", "int64"), ("int64", "int32"), ("int64", "int64")])
def test_embedding_bag_known_example(T, nn, mode, sparse, index_dtypes):
    """PyTorch's _test_EmbeddingBag: a known example, 1-D with empty bags, the same as 2-D, and all bags empty."""
    bag = nn.EmbeddingBag(5, 2, mode=mode, sparse=sparse).double()
    with T.no_grad():
        bag.weight.copy_(T.arange(1, 11).view(5, 2).double())  # rows [1 2] [3 4] [5 6] [7 8] [9 10]
    index_dtype, offset_dtype = (getattr(T, name) for name in index_dtypes)
    input = T.tensor([3, 1, 1, 1, 4, 0], dtype=index_dtype)
    denominator = 3 if mode == "mean" else 1
    if mode == "max":
        expected, expected_grad = np.array([[7.0, 8], [9, 10]]), np.array([[0.0, 0], [0, 0], [0, 0], [1, 2], [3, 4]])
    else:
        expected = np.array([[13.0, 16], [13, 16]]) / denominator
        expected_grad = np.array([[3.0, 4], [5, 8], [0, 0], [1, 2], [3, 4]]) / denominator
    output = bag(input, T.tensor([0, 0, 3, 3, 6], dtype=offset_dtype))
    output.backward(T.tensor([[99.0, 99], [1, 2], [99, 99], [3, 4], [99, 99]], dtype=T.float64))
    dense = (lambda g: g.to_dense()) if sparse else (lambda g: g)
    close(output, [[0, 0], expected[0], [0, 0], expected[1], [0, 0]], rtol=1e-12)
    close(dense(bag.weight.grad), expected_grad, rtol=1e-12)
    bag.zero_grad()
    output = bag(input.view(2, -1))
    output.backward(T.tensor([[1.0, 2], [3, 4]], dtype=T.float64))
    close(output, expected, rtol=1e-12)
    close(dense(bag.weight.grad), expected_grad, rtol=1e-12)
    bag.zero_grad()
    bag(T.tensor([], dtype=index_dtype), T.tensor([0, 0, 0, 0], dtype=offset_dtype)).sum().backward()
    same(dense(bag.weight.grad), np.zeros((5, 2)))
    # illegal combinations
    bag = nn.EmbeddingBag(10, 20, mode=mode, sparse=sparse)
    ones = T.ones(3, 4, dtype=index_dtype)
    raises(ValueError, "offsets has to be None", bag, ones, T.arange(0, 3, dtype=offset_dtype))
    raises(ValueError, "offsets has to be a 1D Tensor but got None", bag, ones.view(-1))
    raises(RuntimeError, "offsets\\[0\\] has to be 0", bag, ones.view(-1), T.tensor([1, 1, 2], dtype=offset_dtype))
    raises(RuntimeError, "offsets\\[-1\\] can not be greater than input's length 12 but got offsets\\[-1\\] of 100",
           bag, ones.view(-1), T.tensor([0, 1, 100], dtype=offset_dtype))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("max_norm", [None, 3.0])
def test_embedding_bag_vs_embedding(T, nn, mode, max_norm):
    """PyTorch's _test_EmbeddingBag_vs_Embedding: bags of a constant length L are Embedding then a reduction."""
    rng = np.random.default_rng(3)
    num, dim, batch, length = 7, 4, 5, 3
    table = rng.standard_normal((num, dim)) * 2
    bag = nn.EmbeddingBag.from_pretrained(T.tensor(table), freeze=False, mode=mode, max_norm=max_norm)
    embedding = nn.Embedding.from_pretrained(T.tensor(table), freeze=False, max_norm=max_norm)
    input = rng.integers(0, num, (batch, length))
    upstream = rng.random((batch, dim))
    output = bag(T.tensor(input.reshape(-1)), T.arange(0, batch * length, length))
    lookups = embedding(T.tensor(input))
    reference = {"sum": lookups.sum(1), "mean": lookups.mean(1), "max": lookups.max(1)[0]}[mode]
    rows = table if max_norm is None else _renormed(table, max_norm, 2.0)
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[mode]
    close(output, reduce(rows[input], 1), rtol=1e-12)
    close(output, values(reference), rtol=1e-12)
    output.backward(T.tensor(upstream))
    reference.backward(T.tensor(upstream))
    close(bag.weight.grad, values(embedding.weight.grad), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bag_use_grad, per_sample_weights_use_grad", [(True, True), (True, False), (False, True),
                                                                        (False, False)])
def test_embedding_bag_per_sample_weights_grad(T, nn, F, bag_use_grad, per_sample_weights_use_grad):
    bag = nn.EmbeddingBag(6, 3, mode="sum")
    bag.requires_grad_(bag_use_grad)
    x = T.arange(1, 5).expand(3, -1)
    w = T.tensor(np.arange(12.0).reshape(3, 4) / 10, dtype=T.float32, requires_grad=per_sample_weights_use_grad)
    output = bag(x, per_sample_weights=F.softmax(w, dim=-1))
    assert output.requires_grad == (bag_use_grad or per_sample_weights_use_grad)
    e = np.exp(np.arange(12.0).reshape(3, 4) / 10)
    close(output, (e / e.sum(1, keepdims=True)) @ values(bag.weight)[1:5], rtol=1e-5)
    if output.requires_grad:
        output.sum().backward()
        assert (w.grad is not None) == per_sample_weights_use_grad
