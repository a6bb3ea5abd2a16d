"""Embedding, EmbeddingBag and the normalisation layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm),
ported from PyTorch's test/test_nn.py and test/nn/test_embedding.py (CPU, dense): padding_idx,
max_norm renormalising the weight in place, from_pretrained, running statistics with momentum and
momentum=None, track_running_stats, eval mode, and the errors. Each test runs on chainrule's `nn` and,
where it is installed, on PyTorch's."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


# -- Embedding ------------------------------------------------------------------------------------

def test_embedding_padding_idx(T, nn):
    embedding = nn.Embedding(10, 20, padding_idx=0)
    input = T.tensor([[0, 2, 4, 5], [4, 3, 0, 9]])
    output = embedding(input)
    same(output[0][0], np.zeros(20, np.float32))
    same(output[1][2], np.zeros(20, np.float32))

    embedding = nn.Embedding(10, 20, padding_idx=0, sparse=False)
    output = embedding(input)
    same(output[0][0], np.zeros(20, np.float32))

    # negative indexing check for padding_idx
    # padding_idx=-2, num_embeddings=10 ==> index 8 padded
    embedding = nn.Embedding(10, 20, padding_idx=-2)
    assert embedding.padding_idx == 8
    input = T.tensor([[0, 2, 8, 5], [4, 8, 0, 9]])
    output = embedding(input)
    same(output[0][2], np.zeros(20, np.float32))
    same(output[1][1], np.zeros(20, np.float32))

    # out of bounds check for padding_idx
    raises(AssertionError, "Padding_idx must be within num_embeddings", nn.Embedding, num_embeddings=10,
           embedding_dim=20, padding_idx=25)
    raises(AssertionError, "Padding_idx must be within num_embeddings", nn.Embedding, num_embeddings=10,
           embedding_dim=20, padding_idx=-25)

    padding_idx = 0
    embedding = nn.Embedding(5, 2, padding_idx=padding_idx)
    for n in (1, 2, 1000):  # Need large N to trigger SIMD version
        for other_indices in ([], [1, 3], [2]):
            indices = T.tensor(other_indices + [padding_idx] * n, dtype=T.long)
            pre = values(embedding.weight[padding_idx]).copy()
            embedding(indices).sum().backward()
            after = values(embedding.weight + embedding.weight.grad)[padding_idx]
            embedding.zero_grad()
            same(after, pre)      # the padding row gets no gradient


def test_embedding_padding_idx_row_is_zeroed_at_init_and_kept_by_user(T, nn):
    e = nn.Embedding(4, 3, padding_idx=1)
    same(e.weight[1], np.zeros(3, np.float32))
    with T.no_grad():
        e.weight[1] = T.ones(3)
    same(e(T.tensor([1])), np.ones((1, 3), np.float32))     # the row is looked up as it now is


def test_embedding_max_norm(T, nn):
    embedding = nn.Embedding(22, 5, max_norm=1.0)
    input = T.tensor([2, 8, 8, 6], dtype=T.long)
    output = embedding(input)
    same(output[1], values(output[2]))
    assert (values(output.norm(p=2, dim=1)) <= 1 + 1e-6).all()


def test_embedding_max_norm_renormalises_the_weight_in_place(T, nn):
    w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0], [1.0, 0.0]], np.float32)
    emb = nn.Embedding(4, 2, max_norm=2.0)
    with T.no_grad():
        emb.weight.copy_(T.tensor(w))
    version = emb.weight._version
    out = emb(T.tensor([0, 1, 0]))
    scale = 2.0 / (5.0 + 1e-7)
    close(emb.weight, [[3 * scale, 4 * scale], [0.3, 0.4], [6.0, 8.0], [1.0, 0.0]], rtol=1e-6)  # rows 0 only
    close(out, [[3 * scale, 4 * scale], [0.3, 0.4], [3 * scale, 4 * scale]], rtol=1e-6)
    assert emb.weight._version > version
    # norm_type=1: the L1 norm
    emb = nn.Embedding(4, 2, max_norm=1.0, norm_type=1.0)
    with T.no_grad():
        emb.weight.copy_(T.tensor(w))
    emb(T.tensor([2]))
    close(emb.weight[2], [6.0 / (14 + 1e-7), 8.0 / (14 + 1e-7)], rtol=1e-6)


def test_embedding_max_norm_unsorted_repeating_indices(T, nn):
    def create_embedding():
        T.manual_seed(0)
        return nn.Embedding(num_embeddings=20, embedding_dim=64, max_norm=1.0)

    ref_embedding = create_embedding()
    num_indices = 200
    indices = T.randint(0, 20, (num_indices,))
    out = ref_embedding(indices)
    norms = np.linalg.norm(values(ref_embedding.weight), axis=1)
    used = np.unique(values(indices))
    assert (norms[used] <= 1 + 1e-5).all()
    assert tuple(out.shape) == (200, 64)


def test_embedding_max_norm_backward(T, nn):
    emb = nn.Embedding(5, 3, max_norm=1.0)
    with T.no_grad():
        emb.weight.mul_(10)
    emb(T.tensor([0, 1, 1])).sum().backward()
    same(emb.weight.grad, np.array([[1, 1, 1], [2, 2, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]], np.float32))


def test_embedding_from_pretrained(T, nn):
    a = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    embedding = nn.Embedding.from_pretrained(a)
    same(embedding.weight, values(a))
    assert not embedding.weight.requires_grad
    input = T.tensor([0, 1], dtype=T.long)
    output = embedding(input)
    same(output, values(a))
    assert nn.Embedding.from_pretrained(a, freeze=False).weight.requires_grad
    raises(AssertionError, "Embeddings parameter is expected to be 2-dimensional", nn.Embedding.from_pretrained,
           T.ones(3))


def test_embedding_from_pretrained_padding_idx(T, nn):
    padding_idx = 2
    padding_vec = T.ones(3) * 7
    embeddings = T.rand(4, 3, requires_grad=True)
    with T.no_grad():
        embeddings[padding_idx] = padding_vec
    embedding_nn = nn.Embedding.from_pretrained(embeddings, padding_idx=padding_idx)
    same(embedding_nn.weight[padding_idx], values(padding_vec))      # not zeroed
    assert embedding_nn.padding_idx == 2


def test_embedding_from_pretrained_options(T, nn):
    a = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    opts = {"max_norm": 2.0, "norm_type": 0.5, "scale_grad_by_freq": False, "sparse": False}
    embedding = nn.Embedding.from_pretrained(a, **opts)
    input = T.tensor([[0, 1]], dtype=T.long)
    output = embedding(input)
    # test output and that weight matrix was renormalized
    same(a, values(output)[0])
    assert (values(output.data.norm(p=opts["norm_type"], dim=-1)) <= opts["max_norm"] + 1e-5).all()
    assert (values(a.norm(p=opts["norm_type"], dim=-1)) <= opts["max_norm"] + 1e-5).all()   # a shares it


def test_embedding_functional(T, nn, F):
    a = T.tensor([[1, 3, 2], [0, 2, 1]], dtype=T.long)
    embeddings = T.rand(4, 3, requires_grad=True)
    embed_old = nn.Embedding(4, 3)
    embed_old.weight.data = embeddings.data
    # A silly test for eager, this test is useful for when we run under PYTORCH_TEST_WITH_DYNAMO=1
    # as it ensures that setattr correctly works.
    same(embed_old.weight.data, values(embeddings))
    res_old = embed_old(a)
    res_F = F.embedding(a, embeddings)
    same(res_old, values(res_F))

    embed_old = nn.Embedding(4, 3)
    embed_old = embed_old.from_pretrained(embeddings, padding_idx=2)
    res_old = embed_old(a)
    res_F = F.embedding(a, embeddings, padding_idx=2)
    same(res_old, values(res_F))


def test_embedding_padding_idx_gradient_in_functional(T, F):
    w = T.rand(4, 3, requires_grad=True)
    F.embedding(T.tensor([0, 2, 2, 3]), w, padding_idx=2).sum().backward()
    same(w.grad, np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0], [1, 1, 1]], np.float32))


def test_embedding_scale_grad_by_freq(T, F):
    w = T.rand(4, 2, requires_grad=True)
    F.embedding(T.tensor([[0, 1, 1], [1, 3, 0]]), w, scale_grad_by_freq=True).sum().backward()
    # each row's summed gradient divided by how often the row was looked up in the batch
    same(w.grad, np.array([[1, 1], [1, 1], [0, 0], [1, 1]], np.float32))


def test_embedding_dense_grad_accumulates(T, nn):
    emb = nn.Embedding(5, 2)
    idx = T.tensor([[0, 4, 4], [1, 0, 0]])
    (emb(idx) * T.tensor([1.0, 2.0])).sum().backward()
    same(emb.weight.grad, np.array([[3, 6], [1, 2], [0, 0], [0, 0], [2, 4]], np.float32))


def test_embedding_errors(T, F, nn):
    w = T.randn(3, 2)
    raises(IndexError, "index out of range in self", F.embedding, T.tensor([5]), w)
    raises(IndexError, "index out of range in self", F.embedding, T.tensor([-1]), w)
    raises(RuntimeError, "Expected tensor for argument #1 'indices' to have one of the following scalar types: "
           "Long, Int", F.embedding, T.tensor([1.0]), w)
    assert tuple(F.embedding(T.tensor([[1]], dtype=T.int32), w).shape) == (1, 1, 2)
    assert repr(nn.Embedding(10, 3, padding_idx=0, max_norm=1.0)) == \
        "Embedding(10, 3, padding_idx=0, max_norm=1.0)"
    assert repr(nn.Embedding(10, 3)) == "Embedding(10, 3)"


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_modes(T, nn, F, mode):
    w = np.arange(12, dtype=np.float32).reshape(6, 2) * np.array([1, -1], np.float32)
    idx = np.array([1, 2, 4, 5, 4, 3, 2, 0])
    offsets = np.array([0, 2, 5, 5])
    bags = [idx[0:2], idx[2:5], idx[5:5], idx[5:]]
    reducer = {"sum": lambda r: r.sum(0), "mean": lambda r: r.mean(0), "max": lambda r: r.max(0)}[mode]
    expected = np.stack([reducer(w[b]) if len(b) else np.zeros(2, np.float32) for b in bags])
    out = F.embedding_bag(T.tensor(idx), T.tensor(w), T.tensor(offsets), mode=mode)
    close(out, expected)
    bag = nn.EmbeddingBag.from_pretrained(T.tensor(w), mode=mode)
    close(bag(T.tensor(idx), T.tensor(offsets)), expected)
    # a 2-D input: one bag per row, no offsets
    two_d = np.array([[1, 2], [4, 5]])
    close(F.embedding_bag(T.tensor(two_d), T.tensor(w), mode=mode), np.stack([reducer(w[r]) for r in two_d]))
    # include_last_offset: the last offset closes the last bag
    close(F.embedding_bag(T.tensor(idx), T.tensor(w), T.tensor([0, 2, 5, 5, 8]), mode=mode,
                          include_last_offset=True), expected)


def test_embedding_bag_per_sample_weights_and_padding(T, F):
    w = np.arange(10, dtype=np.float64).reshape(5, 2)
    idx = np.array([0, 1, 1, 4])
    psw = np.array([0.5, 2.0, -1.0, 3.0])
    offsets = np.array([0, 2])
    out = F.embedding_bag(T.tensor(idx), T.tensor(w), T.tensor(offsets), mode="sum",
                          per_sample_weights=T.tensor(psw))
    close(out, [0.5 * w[0] + 2 * w[1], -w[1] + 3 * w[4]], rtol=1e-12)
    raises((NotImplementedError, ValueError, RuntimeError), "per_sample_weights",
           F.embedding_bag, T.tensor(idx), T.tensor(w), T.tensor(offsets), mode="mean",
           per_sample_weights=T.tensor(psw))
    out = F.embedding_bag(T.tensor(idx), T.tensor(w), T.tensor(offsets), mode="mean", padding_idx=1)
    close(out, [w[0], w[4]], rtol=1e-12)          # the padding entries are left out of the mean's count


def test_embedding_bag_offsets_errors(T, F):
    w = T.randn(5, 2)
    raises(ValueError, "if input is 2D, then offsets has to be None", F.embedding_bag, T.tensor([[0, 1]]), w,
           T.tensor([0]))
    raises(ValueError, "offsets has to be a 1D Tensor", F.embedding_bag, T.tensor([0, 1]), w, None)


def test_embedding_bag_2d_offsets(T, F, request):
    raises(ValueError, "offsets has to be a 1D Tensor", F.embedding_bag, T.tensor([0, 1]), T.randn(5, 2),
           T.tensor([[0]]))


# -- BatchNorm ------------------------------------------------------------------------------------

def test_batchnorm_running_stats_momentum(T, nn):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    bn = nn.BatchNorm1d(3, momentum=0.3)
    out = bn(T.tensor(x))
    mean, var = x.mean(0), x.var(0)
    close(out, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    close(bn.running_mean, 0.3 * mean, rtol=1e-5, atol=1e-7)
    close(bn.running_var, 0.7 + 0.3 * x.var(0, ddof=1), rtol=1e-5)    # unbiased in the running var
    same(bn.num_batches_tracked, 1, dtype="int64")
    bn(T.tensor(x))
    same(bn.num_batches_tracked, 2)
    close(bn.running_mean, 0.3 * mean + 0.7 * 0.3 * mean, rtol=1e-5, atol=1e-7)
    # eval: the running statistics
    bn.eval()
    rm, rv = values(bn.running_mean), values(bn.running_var)
    close(bn(T.tensor(x)), (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)
    same(bn.num_batches_tracked, 2)


def test_batchnorm_momentum_none_is_a_cumulative_average(T, nn):
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((4, 2, 3)).astype(np.float32) for _ in range(3)]
    bn = nn.BatchNorm1d(2, momentum=None)
    for b in batches:
        bn(T.tensor(b))
    means = [b.mean((0, 2)) for b in batches]
    variances = [b.var((0, 2), ddof=1) for b in batches]
    close(bn.running_mean, np.mean(means, 0), rtol=1e-5, atol=1e-6)
    close(bn.running_var, _cumulative(np.ones(2), variances), rtol=1e-5)
    same(bn.num_batches_tracked, 3)


def _cumulative(start, items):
    """The running average with factor 1/n at the n-th update, starting from ``start``."""
    r = start
    for n, x in enumerate(items, 1):
        r = r + (x - r) / n
    return r


def test_batchnorm_track_running_stats_false(T, nn):
    bn = nn.BatchNorm2d(3, track_running_stats=False)
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    assert list(bn.state_dict()) == ["weight", "bias"]
    x = T.randn(4, 3, 2, 2) * 3 + 1
    bn.eval()                                 # no running statistics: eval normalises with the batch's
    xv = values(x)
    mean = xv.mean((0, 2, 3), keepdims=True)
    var = xv.var((0, 2, 3), keepdims=True)
    close(bn(x), (xv - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_batchnorm_buffer_update_when_stats_are_not_tracked(T, nn):
    input_size = (32, 4)
    bn = nn.BatchNorm1d(input_size[1], track_running_stats=True)
    bn.track_running_stats = False
    num_batches = bn.num_batches_tracked.clone()
    running_mean = bn.running_mean.clone()
    running_var = bn.running_var.clone()
    bn(T.rand(input_size))
    same(num_batches, values(bn.num_batches_tracked))
    same(running_mean, values(bn.running_mean))
    same(running_var, values(bn.running_var))


def test_batchnorm_no_affine(T, nn):
    bn = nn.BatchNorm1d(2, affine=False)
    assert bn.weight is None and bn.bias is None
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    assert repr(bn) == "BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=True)"


def test_batchnorm_raises_error_if_less_than_one_value_per_channel(T, nn):
    x = T.rand(10)[None, :, None]
    raises(ValueError, r"Expected more than 1 value per channel when training, got input size "
           r"(torch.Size\(\[1, 10, 1\]\)|\(1, 10, 1\))", nn.BatchNorm1d(10), x)
    nn.BatchNorm1d(10).eval()(x)                   # fine in eval


def test_batchnorm_raises_error_if_running_mean_is_not_same_size_as_input(T, F):
    input = T.rand(2, 10)
    running_var = T.rand(10)
    wrong_sizes = [9, 11]
    for size in wrong_sizes:
        raises(RuntimeError, "", F.batch_norm, input, T.rand(size), running_var, training=True)
        raises(RuntimeError, "", F.batch_norm, input, running_var, T.rand(size), training=True)
        raises(RuntimeError, "", F.batch_norm, input, T.rand(10), running_var, weight=T.rand(size))


def test_batchnorm_input_dims(T, nn):
    # chainrule's message: "BatchNorm1d(3) expects input of 2 or 3 dims with 3 channels in dim 1, got shape ..."
    raises(ValueError, r"expected 2D or 3D input \(got 4D input\)|expects input of 2 or 3 dims", nn.BatchNorm1d(3),
           T.rand(2, 3, 4, 5))
    raises(ValueError, r"expected 4D input \(got 3D input\)|expects input of 4 dims", nn.BatchNorm2d(3),
           T.rand(2, 3, 4))
    raises(ValueError, r"expected 5D input \(got 4D input\)|expects input of 5 dims", nn.BatchNorm3d(3),
           T.rand(2, 3, 4, 5))
    raises(RuntimeError, "", nn.BatchNorm1d(3), T.rand(2, 4))       # the wrong number of channels


def test_batchnorm_functional_eval_and_grad(T, F):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3))
    rm, rv = np.array([0.1, -0.2, 0.3]), np.array([1.5, 0.5, 2.0])
    w, b = np.array([1.0, 2.0, -1.0]), np.array([0.0, 0.5, 1.0])
    xt = T.tensor(x, requires_grad=True)
    out = F.batch_norm(xt, T.tensor(rm), T.tensor(rv), T.tensor(w), T.tensor(b), training=False, eps=1e-3)
    close(out, (x - rm) / np.sqrt(rv + 1e-3) * w + b, rtol=1e-12)
    out.sum().backward()
    close(xt.grad, np.broadcast_to(w / np.sqrt(rv + 1e-3), (5, 3)), rtol=1e-12)


def test_batchnorm_load_state_dict_without_num_batches_tracked(T, nn):
    bn = nn.BatchNorm1d(2)
    sd = bn.state_dict()
    del sd["num_batches_tracked"]
    sd._metadata = {"": {"version": 1}}          # a checkpoint from before num_batches_tracked
    bn.load_state_dict(sd)
    same(bn.num_batches_tracked, 0)


def test_batchnorm_reset_running_stats(T, nn):
    bn = nn.BatchNorm1d(2)
    bn(T.randn(4, 2))
    bn.reset_running_stats()
    same(bn.running_mean, [0.0, 0.0])
    same(bn.running_var, [1.0, 1.0])
    same(bn.num_batches_tracked, 0)


# -- LayerNorm, GroupNorm, InstanceNorm -----------------------------------------------------------

def test_layer_norm(T, nn, F):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4))
    for shape in ((4,), (3, 4)):
        axes = tuple(range(-len(shape), 0))
        mean = x.mean(axes, keepdims=True)
        var = x.var(axes, keepdims=True)
        w = rng.standard_normal(shape)
        b = rng.standard_normal(shape)
        close(F.layer_norm(T.tensor(x), shape, T.tensor(w), T.tensor(b), eps=1e-5),
              (x - mean) / np.sqrt(var + 1e-5) * w + b, rtol=1e-10)
        ln = nn.LayerNorm(shape, dtype=T.float64)
        same(ln.weight, np.ones(shape)) and same(ln.bias, np.zeros(shape))
        close(ln(T.tensor(x)), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-10)
    ln = nn.LayerNorm(4, elementwise_affine=False)
    assert ln.weight is None and ln.bias is None and list(ln.state_dict()) == []
    ln = nn.LayerNorm(4, bias=False)
    assert ln.bias is None and ln.weight is not None
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert nn.LayerNorm([3, 4]).normalized_shape == (3, 4)


def test_layer_norm_shape_error(T, nn):
    raises(RuntimeError, r"Given normalized_shape=\[5\], expected input with shape \[\*, 5\], but got input of "
           r"size\s?\[2, 3\]|input of shape \(2, 3\) does not end in \(5,\)", nn.LayerNorm(5), T.rand(2, 3))


def test_group_norm(T, nn, F):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 5))
    g = x.reshape(2, 3, 10)
    normed = ((g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + 1e-5)).reshape(2, 6, 5)
    w = rng.standard_normal(6)
    b = rng.standard_normal(6)
    close(F.group_norm(T.tensor(x), 3, T.tensor(w), T.tensor(b)), normed * w[:, None] + b[:, None], rtol=1e-10)
    gn = nn.GroupNorm(3, 6, dtype=T.float64)
    close(gn(T.tensor(x)), normed, rtol=1e-10)
    assert repr(gn) == "GroupNorm(3, 6, eps=1e-05, affine=True, bias=True)"
    raises(ValueError, r"num_channels (\(6\) )?must be divisible by num_groups", nn.GroupNorm, 4, 6)
    raises(RuntimeError, r"Expected number of channels in input to be divisible by num_groups, but got input of "
           r"shape \[2, 5, 3\] and num_groups=2|5 channels cannot be split into 2 groups", F.group_norm,
           T.rand(2, 5, 3), 2)


def test_group_norm_one_group_is_layer_norm_over_all_but_batch(T, F):
    x = T.randn(3, 4, 5, dtype=T.float64)
    close(F.group_norm(x, 1), values(F.layer_norm(x, (4, 5))), rtol=1e-10, atol=1e-12)


def test_instance_norm(T, nn, F):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6))
    normed = (x - x.mean(2, keepdims=True)) / np.sqrt(x.var(2, keepdims=True) + 1e-5)
    close(F.instance_norm(T.tensor(x)), normed, rtol=1e-10)
    m = nn.InstanceNorm1d(3, dtype=T.float64)
    assert m.weight is None and m.running_mean is None     # affine and track_running_stats default to False
    close(m(T.tensor(x)), normed, rtol=1e-10)
    m = nn.InstanceNorm1d(3, track_running_stats=True, momentum=0.5, dtype=T.float64)
    m(T.tensor(x))
    close(m.running_mean, 0.5 * x.mean(2).mean(0), rtol=1e-10)
    close(m.running_var, 0.5 + 0.5 * x.var(2, ddof=1).mean(0), rtol=1e-10)
    raises(ValueError, r"Expected more than 1 spatial element when training, got input size "
           r"(torch.Size\()?\[2, 3, 1\]", nn.InstanceNorm1d(3), T.rand(2, 3, 1))


def test_local_response_norm(T, F):
    x = np.arange(1.0, 13.0).reshape(1, 4, 3)
    size, alpha, beta, k = 3, 1e-2, 0.75, 2.0
    sq = np.pad(x ** 2, ((0, 0), (1, 1), (0, 0)))
    div = (k + alpha / size * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:])) ** beta
    close(F.local_response_norm(T.tensor(x), size, alpha, beta, k), x / div, rtol=1e-10)


def test_norms_of_an_empty_batch(T, F, nn, request):
    assert tuple(F.layer_norm(T.randn(0, 3), (3,)).shape) == (0, 3)
    assert tuple(nn.BatchNorm1d(3)(T.randn(0, 3)).shape) == (0, 3)
    assert tuple(F.group_norm(T.randn(0, 4, 3), 2).shape) == (0, 4, 3)


def test_embedding_bag_mode_and_repr(T, nn):
    raises(ValueError, "mode has to be one of sum, mean or max", nn.EmbeddingBag(3, 2, mode="garbage"),
           T.tensor([[0, 1]]))
    assert repr(nn.EmbeddingBag(5, 2, mode="max", padding_idx=0)) == "EmbeddingBag(5, 2, mode='max', padding_idx=0)"
    w = T.arange(10.0).reshape(5, 2)
    same(nn.EmbeddingBag.from_pretrained(w, mode="sum", padding_idx=1)(T.tensor([[0, 1], [1, 1]])),
         [[0.0, 1.0], [0.0, 0.0]])
    raises(AssertionError, "Shape of weight does not match num_embeddings and embedding_dim", nn.Embedding, 5, 2,
           _weight=T.ones(4, 2))


def test_embedding_bag_argument_errors(T, F, request):
    w = T.arange(10.0).reshape(5, 2)
    raises(ValueError, r"If per_sample_weights \((torch.Size\(\[2\]\)|\(2,\))\) is not None, then it must have the "
           "same shape as the input", F.embedding_bag, T.tensor([0, 1, 2]), w, T.tensor([0]), mode="sum",
           per_sample_weights=T.ones(2))
    raises(RuntimeError, "offsets\\[0\\] has to be 0, i.e., the first sequence in the mini-batch has to start from "
           "position 0. However, got 1", F.embedding_bag, T.tensor([0, 1, 2]), w, T.tensor([1, 2]))
    raises(RuntimeError, r"Index 1 of input takes value 7 which is not in the valid range \[0, 5\)", F.embedding_bag,
           T.tensor([0, 7]), w, T.tensor([0]))
