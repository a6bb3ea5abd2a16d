"""F.multi_head_attention_forward and MultiheadAttention, ported from PyTorch's
test/nn/test_multihead_attention.py (TestMultiheadAttentionNN and TestMultiheadAttentionNNDeviceType on
CPU; the module's values, masks, kdim/vdim and errors of test_nn.py are in tests/test_ported_nn_attention.py):
the functional form against a NumPy reference over random sizes with add_bias_kv, add_zero_attn, a key
padding mask, a float attention mask, static (saved) keys and values, separate or packed projection
weights and averaged or per-head weights; a 3-D attention mask against per-sample 2-D ones; bool attention
and key padding masks together in eval mode; no biases; and the rank checks of query, key, value and
the masks with their messages. (The nested-tensor, fast-path mock and CUDA dtype cases have no counterpart
here.) Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import contextlib

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")


def softmax(x):
    with np.errstate(invalid="ignore"):           # a row masked whole is NaN, as the libraries give
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)


def split_heads(x, nheads):
    """(N, S, E) -> (N, H, S, E/H)."""
    n, s, e = x.shape
    return x.reshape(n, s, nheads, e // nheads).transpose(0, 2, 1, 3)


def reference(q, k, v, weights, nheads, attn_mask, key_padding_mask, bias_kv, add_zero_attn, saved_k, saved_v,
              average):
    """NumPy multi-head attention of batch-first (N, L, *) inputs: (output (N, L, E), attention weights).
    ``attn_mask`` (L, S) is 1 where attention is allowed; ``key_padding_mask`` (N, S) True where barred."""
    wq, wk, wv, b_in, w_out, b_out = weights
    d_model = wq.shape[0]
    d_head = d_model // nheads
    qf = q @ wq.T + b_in[:d_model]
    kf = k @ wk.T + b_in[d_model:2 * d_model]
    vf = v @ wv.T + b_in[2 * d_model:]
    n = q.shape[0]
    if bias_kv is not None:
        kf = np.concatenate([kf, np.repeat(bias_kv[0].reshape(1, 1, -1), n, 0)], 1)
        vf = np.concatenate([vf, np.repeat(bias_kv[1].reshape(1, 1, -1), n, 0)], 1)
        attn_mask = np.concatenate([attn_mask, np.ones((attn_mask.shape[0], 1))], 1)
        if key_padding_mask is not None:
            key_padding_mask = np.concatenate([key_padding_mask, np.zeros((n, 1), bool)], 1)
    qs = split_heads(qf, nheads)
    ks = split_heads(kf, nheads) if saved_k is None else saved_k.reshape(n, nheads, -1, d_head)
    vs = split_heads(vf, nheads) if saved_v is None else saved_v.reshape(n, nheads, -1, d_head)
    if add_zero_attn:
        ks = np.concatenate([ks, np.zeros(ks.shape[:2] + (1, d_head))], 2)
        vs = np.concatenate([vs, np.zeros(vs.shape[:2] + (1, d_head))], 2)
        attn_mask = np.concatenate([attn_mask, np.ones((attn_mask.shape[0], 1))], 1)
        if key_padding_mask is not None:
            key_padding_mask = np.concatenate([key_padding_mask, np.zeros((n, 1), bool)], 1)
    scores = qs @ ks.transpose(0, 1, 3, 2) / np.sqrt(d_head)
    scores = np.where(attn_mask[None, None] == 0, -np.inf, scores)
    if key_padding_mask is not None:
        scores = np.where(key_padding_mask[:, None, None, :], -np.inf, scores)
    attention = softmax(scores)
    heads = attention @ vs                                          # (N, H, L, d_head)
    out = heads.transpose(0, 2, 1, 3).reshape(n, q.shape[1], d_model) @ w_out.T + b_out
    return out, (attention.mean(1) if average else attention)


CASES = {   # add_key_padding_mask, add_bias_kv, add_zero_attn, saved_kv, same_embed_dim
    "no_masking": (False, False, False, False, False),
    "add_bias_kv": (False, True, False, False, False),
    "add_zero_attn": (False, False, True, False, False),
    "key_padding_mask": (True, False, False, False, False),
    "saved_kv": (False, False, False, True, False),
    "add_bias_kv_zero_attn": (True, True, True, False, False),
    "all_arguments1": (True, False, True, True, False),
    "all_arguments3": (True, False, True, True, True),
}


@pytest.mark.parametrize("average_attn_weights", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_multi_head_attention_forward(T, nn, F, case, average_attn_weights):
    add_key_padding_mask, add_bias_kv, add_zero_attn, saved_kv, same_embed_dim = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    for _ in range(8):
        batch_sz, seq_len = rng.integers(2, 11, 2)
        d_head = int(rng.integers(3, 11))
        nheads = int(rng.integers(2, 6)) * 2
        d_model = d_head * nheads
        kv_dim = d_model if same_embed_dim else int(rng.integers(5, 21))
        saved_k = rng.random((batch_sz * nheads, seq_len, d_head)) if saved_kv else None
        saved_v = rng.random((batch_sz * nheads, seq_len, d_head)) if saved_kv else None
        key_padding_mask = None
        if add_key_padding_mask:
            key_padding_mask = np.repeat(rng.integers(0, 2, (1, seq_len)), batch_sz, axis=0) == 1
        decoder_state = rng.random((batch_sz, d_model))
        K = rng.random((batch_sz, seq_len, kv_dim))
        attn_mask = rng.integers(0, 2, (1, seq_len))
        attn_mask_tensor = T.tensor(np.where(attn_mask == 0, -np.inf, 0.0))

        m = nn.MultiheadAttention(d_model, nheads, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, kdim=kv_dim,
                                  vdim=kv_dim, dtype=T.float64)
        assert m._qkv_same_embed_dim == same_embed_dim
        query = T.tensor(decoder_state).unsqueeze(0)                 # (1, N, E)
        key = T.tensor(K).transpose(0, 1)                           # (S, N, kdim)
        packed = m.in_proj_weight if same_embed_dim else None
        result, result_weight = F.multi_head_attention_forward(
            query, key, key, d_model, nheads, packed, m.in_proj_bias, m.bias_k, m.bias_v, m.add_zero_attn, m.dropout,
            m.out_proj.weight, m.out_proj.bias, m.training,
            None if key_padding_mask is None else T.tensor(key_padding_mask), True, attn_mask_tensor,
            not same_embed_dim, m.q_proj_weight, m.k_proj_weight, m.v_proj_weight,
            static_k=None if saved_k is None else T.tensor(saved_k),
            static_v=None if saved_v is None else T.tensor(saved_v),
            average_attn_weights=average_attn_weights, is_causal=False)

        if same_embed_dim:
            w = values(m.in_proj_weight)
            wq, wk, wv = w[:d_model], w[d_model:2 * d_model], w[2 * d_model:]
        else:
            wq, wk, wv = values(m.q_proj_weight), values(m.k_proj_weight), values(m.v_proj_weight)
        weights = (wq, wk, wv, values(m.in_proj_bias), values(m.out_proj.weight), values(m.out_proj.bias))
        bias_kv = (values(m.bias_k), values(m.bias_v)) if add_bias_kv else None
        expected, expected_weight = reference(decoder_state[:, None], K, K, weights, nheads, attn_mask,
                                              key_padding_mask, bias_kv, add_zero_attn, saved_k, saved_v,
                                              average_attn_weights)
        assert tuple(result.shape) == (1, batch_sz, d_model)
        close(result.squeeze(0), expected[:, 0], rtol=1e-9, atol=1e-9)
        close(result_weight, expected_weight, rtol=1e-9, atol=1e-9)


def test_multi_head_attention_forward_static_kv_with_bias_kv(T, nn, F):
    # PyTorch's all_arguments2: a bias cannot be added to a static key (nor value)
    m = nn.MultiheadAttention(8, 2, add_bias_kv=True, kdim=5, vdim=5)
    query, key = T.randn(1, 3, 8), T.randn(4, 3, 5)
    static = T.randn(6, 4, 4)
    args = (query, key, key, 8, 2, None, m.in_proj_bias, m.bias_k, m.bias_v, False, 0.0, m.out_proj.weight,
            m.out_proj.bias, True, None, True, None, True, m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
    raises(AssertionError, "bias cannot be added to static key.", F.multi_head_attention_forward, *args,
           static_k=static, static_v=static)
    raises(AssertionError, "bias cannot be added to static value.", F.multi_head_attention_forward, *args,
           static_v=static)
    m = nn.MultiheadAttention(8, 2, kdim=5, vdim=5)
    args = args[:7] + (None, None) + args[9:]
    raises(AssertionError, "expecting static_k.size\\(0\\) of 6, but got 5", F.multi_head_attention_forward, *args,
           static_k=T.randn(5, 4, 4))
    raises(AssertionError, "expecting static_v.size\\(2\\) of 4, but got 3", F.multi_head_attention_forward, *args,
           static_v=T.randn(6, 4, 3))


def test_multihead_attn_3d_attn_mask(T, nn):
    embed_dim, num_heads, batch_size, src_len, tgt_len = 8, 4, 8, 3, 2
    rng = np.random.default_rng(1)
    query = T.tensor(rng.random((batch_size, tgt_len, embed_dim)))
    key = T.tensor(rng.random((batch_size, src_len, embed_dim)))
    allowed = rng.integers(0, 2, (batch_size, tgt_len, src_len))
    allowed[:, :, 0] = 1                                  # (no row masked whole: those are NaN)
    attn_mask = T.tensor(np.where(allowed == 0, -np.inf, 0.0))
    m = nn.MultiheadAttention(embed_dim, num_heads, dtype=T.float64)
    attn_mask_3d = T.repeat_interleave(attn_mask, num_heads, dim=0)      # (N·H, L, S)
    output_3d = m(query.transpose(0, 1), key.transpose(0, 1), key.transpose(0, 1), attn_mask=attn_mask_3d)[0]
    output_3d = values(output_3d.transpose(0, 1))
    for i in range(batch_size):
        output_2d = m(query[i].unsqueeze(0).transpose(0, 1), key[i].unsqueeze(0).transpose(0, 1),
                      key[i].unsqueeze(0).transpose(0, 1), attn_mask=attn_mask[i])[0]
        close(output_2d.transpose(0, 1)[0], output_3d[i], rtol=1e-12, atol=1e-12)


def test_multihead_attn_no_bias(T, nn):
    mha = nn.MultiheadAttention(8, 4, bias=False)
    assert mha.in_proj_bias is None and mha.out_proj.bias is None
    # and it runs: the output is the projections' alone
    mha = nn.MultiheadAttention(2, 2, bias=False, dtype=T.float64)
    query = T.rand(2, 2, 2, dtype=T.float64)
    with T.no_grad():
        out, weights = mha(query, query, query)
    q = values(query).transpose(1, 0, 2)
    w = values(mha.in_proj_weight)
    zeros = np.zeros(6)
    expected, expected_weights = reference(q, q, q, (w[:2], w[2:4], w[4:], zeros, values(mha.out_proj.weight),
                                                     zeros[:2]), 2, np.ones((2, 2)), None, None, False, None, None,
                                           True)
    close(out, expected.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)
    close(weights, expected_weights, rtol=1e-12, atol=1e-12)


def test_multihead_attn_in_proj_weight_none(T, nn):
    # kdim == vdim == 2 != embed_dim: separate projection weights, in_proj_weight None
    mha = nn.MultiheadAttention(4, 4, vdim=2, kdim=2, dtype=T.float64)
    assert mha.in_proj_weight is None
    rng = np.random.default_rng(2)
    query, key = rng.random((4, 4, 4)), rng.random((4, 4, 2))
    with T.no_grad():
        out, weights = mha(T.tensor(query), T.tensor(key), T.tensor(key))
    params = (values(mha.q_proj_weight), values(mha.k_proj_weight), values(mha.v_proj_weight),
              values(mha.in_proj_bias), values(mha.out_proj.weight), values(mha.out_proj.bias))
    expected, expected_weights = reference(query.transpose(1, 0, 2), key.transpose(1, 0, 2), key.transpose(1, 0, 2),
                                           params, 4, np.ones((4, 4)), None, None, False, None, None, True)
    close(out, expected.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)
    close(weights, expected_weights, rtol=1e-12, atol=1e-12)


def test_multihead_self_attn_two_masks(T, nn, F):
    # a bool attention mask and a bool key padding mask together, batch-first, in eval mode, against the
    # functional form and NumPy; rows masked whole are NaN and left out of the comparison
    embed_dim, num_heads, batch_size, src_len = 14, 7, 8, 5
    rng = np.random.default_rng(3)
    x = rng.random((batch_size, src_len, embed_dim))
    attn_mask = rng.integers(0, 2, (src_len, src_len)).astype(bool)
    key_padding_mask = rng.integers(0, 2, (batch_size, src_len)).astype(bool)
    merged = attn_mask[None] | key_padding_mask[:, None, :]                   # (N, L, S)
    masked_rows = merged.all(-1)
    assert masked_rows.any() and not masked_rows.all()
    m = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True, dtype=T.float64).eval()
    query = T.tensor(x)
    with T.no_grad():
        result, _ = m(query, query, query, attn_mask=T.tensor(attn_mask), key_padding_mask=T.tensor(key_padding_mask))
        reference_result, _ = F.multi_head_attention_forward(
            query.transpose(0, 1), query.transpose(0, 1), query.transpose(0, 1), embed_dim, num_heads,
            m.in_proj_weight, m.in_proj_bias, m.bias_k, m.bias_v, m.add_zero_attn, m.dropout, m.out_proj.weight,
            m.out_proj.bias, training=m.training, key_padding_mask=T.tensor(key_padding_mask), need_weights=False,
            attn_mask=T.tensor(attn_mask), use_separate_proj_weight=False, average_attn_weights=False)
    w = values(m.in_proj_weight)
    expected, _ = reference(x, x, x, (w[:embed_dim], w[embed_dim:2 * embed_dim], w[2 * embed_dim:],
                                      values(m.in_proj_bias), values(m.out_proj.weight), values(m.out_proj.bias)),
                            num_heads, (~attn_mask).astype(float), key_padding_mask, None, False, None, None, True)
    keep = ~masked_rows[..., None]
    got = values(result)
    close(np.where(keep, got, 0.0), np.where(keep, expected, 0.0), rtol=1e-10, atol=1e-12)
    close(np.where(keep, values(reference_result.transpose(0, 1)), 0.0), np.where(keep, got, 0.0), rtol=1e-10,
          atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_dtype(T, nn, dtype, batch_first):
    model = nn.MultiheadAttention(16, 4, batch_first=batch_first).to(getattr(T, dtype))
    for training in (True, False):
        model.train(training)
        context = contextlib.nullcontext() if training else T.no_grad()
        with context:
            q, k, v = (T.randn(5, 3, 16, dtype=getattr(T, dtype)) for _ in range(3))
            out, weights = model(q, k, v)
            assert tuple(out.shape) == (5, 3, 16) and str(out.dtype).endswith(dtype)
            assert tuple(weights.shape) == ((5, 3, 3) if batch_first else (3, 5, 5))
            assert str(weights.dtype).endswith(dtype)
            out, weights = model(q, k, v, need_weights=False)
            assert tuple(out.shape) == (5, 3, 16) and weights is None


def check_invalid_shapes(T, mha):
    query = key = value = T.randn(4, 4, 4)
    raises(AssertionError, "expected `key` and `value` to be 3-D but found 2-D and 3-D tensors respectively",
           mha, query, T.randn(4, 4), value)
    raises(AssertionError, "expected `key` and `value` to be 3-D but found 3-D and 2-D tensors respectively",
           mha, query, key, T.randn(4, 4))
    raises(AssertionError, "expected `key_padding_mask` to be `None` or 2-D but found 1-D tensor instead",
           mha, query, key, value, key_padding_mask=T.tensor([False, False, True, True]))
    raises(AssertionError, "expected `attn_mask` to be `None`, 2-D or 3-D but found 1-D tensor instead",
           mha, query, key, value, attn_mask=T.tensor([False, False, True, True]))
    query = key = value = T.randn(4, 4)
    raises(AssertionError, "For unbatched \\(2-D\\) `query`, expected `key` and `value` to be 2-D but found 3-D and "
           "2-D tensors respectively", mha, query, T.randn(4, 4, 4), value)
    raises(AssertionError, "expected `key` and `value` to be 2-D but found 2-D and 3-D tensors respectively",
           mha, query, key, T.randn(4, 4, 4))
    raises(AssertionError, "expected `key_padding_mask` to be `None` or 1-D but found 2-D tensor instead",
           mha, query, key, value, key_padding_mask=T.tensor([[False, False, True, True] * 2]))
    raises(AssertionError, "expected `attn_mask` to be `None`, 2-D or 3-D but found 1-D tensor instead",
           mha, query, key, value, attn_mask=T.tensor([False, False, True, True]))
    raises(AssertionError, r"Expected `attn_mask` shape to be \(4, 4, 4\)", mha, query, key, value,
           attn_mask=T.zeros(5, 4, 4, dtype=T.bool))
    raises(AssertionError, "query should be unbatched 2D or batched 3D tensor but received 1-D query tensor",
           mha, T.randn(4), T.randn(4), T.randn(4))


def test_multihead_attn_invalid_shape(T, nn):
    mha = nn.MultiheadAttention(4, 4)
    check_invalid_shapes(T, mha)
    with T.no_grad():
        check_invalid_shapes(T, mha.eval())


def test_multihead_attn_unbatched_3d_mask_per_head(T, nn):
    # an unbatched query takes a (num_heads, L, S) mask: each head its own
    mha = nn.MultiheadAttention(4, 2, dtype=T.float64)
    query, key = T.randn(3, 4, dtype=T.float64), T.randn(5, 4, dtype=T.float64)
    mask = np.zeros((2, 3, 5), bool)
    mask[0, :, 1:] = True                                   # head 0 sees key 0 only
    _, weights = mha(query, key, key, attn_mask=T.tensor(mask), average_attn_weights=False)
    same(values(weights)[0], np.eye(5)[[0, 0, 0]])
    assert (values(weights)[1] > 0).all()
