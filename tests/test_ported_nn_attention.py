"""MultiheadAttention, scaled_dot_product_attention and the Transformer layers, ported from PyTorch's
test/test_nn.py and test/nn/test_multihead_attention.py (CPU, the math path): values against a NumPy
reference with key_padding_mask and attn_mask (bool and float), need_weights / average_attn_weights,
batch_first, kdim/vdim, add_bias_kv, add_zero_attn, generate_square_subsequent_mask, padding masks in
the encoder, and the errors. Each test runs on chainrule's `nn` and, where it is installed, on
PyTorch's."""

import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def _softmax(z, axis=-1):
    z = z - z.max(axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis, keepdims=True)


def _mha_np(q, k, v, m, num_heads, key_padding_mask=None, attn_mask=None):
    """(L, N, E) inputs through a MultiheadAttention's weights, in NumPy: (output, per-head weights)."""
    E = q.shape[-1]
    w = values(m.in_proj_weight).astype(np.float64)
    b = values(m.in_proj_bias).astype(np.float64)
    qp = q @ w[:E].T + b[:E]
    kp = k @ w[E:2 * E].T + b[E:2 * E]
    vp = v @ w[2 * E:].T + b[2 * E:]
    L, N, _ = q.shape
    S = k.shape[0]
    hd = E // num_heads

    def heads(x, n):
        return x.reshape(n, N, num_heads, hd).transpose(1, 2, 0, 3)      # (N, H, n, hd)
    scores = heads(qp, L) @ heads(kp, S).transpose(0, 1, 3, 2) / np.sqrt(hd)
    if attn_mask is not None:
        scores = np.where(attn_mask, -np.inf, scores) if attn_mask.dtype == bool else scores + attn_mask
    if key_padding_mask is not None:
        scores = np.where(key_padding_mask[:, None, None, :], -np.inf, scores)
    weights = _softmax(scores)
    out = (weights @ heads(vp, S)).transpose(2, 0, 1, 3).reshape(L, N, E)
    out = out @ values(m.out_proj.weight).astype(np.float64).T + values(m.out_proj.bias).astype(np.float64)
    return out, weights


def _inputs(seed, L=3, S=4, N=2, E=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((L, N, E)), rng.standard_normal((S, N, E)), rng.standard_normal((S, N, E))


def test_multihead_attention_matches_numpy(T, nn):
    T.manual_seed(0)
    m = nn.MultiheadAttention(8, 2, dtype=T.float64)
    q, k, v = _inputs(0)
    out, w = m(T.tensor(q), T.tensor(k), T.tensor(v))
    eo, ew = _mha_np(q, k, v, m, 2)
    close(out, eo, rtol=1e-10, atol=1e-12)
    close(w, ew.mean(1), rtol=1e-10, atol=1e-12)             # averaged over the heads by default
    out, w = m(T.tensor(q), T.tensor(k), T.tensor(v), average_attn_weights=False)
    close(w, ew, rtol=1e-10, atol=1e-12)
    out, w = m(T.tensor(q), T.tensor(k), T.tensor(v), need_weights=False)
    assert w is None
    close(out, eo, rtol=1e-10, atol=1e-12)


def test_multihead_attention_masks(T, nn):
    T.manual_seed(1)
    m = nn.MultiheadAttention(8, 4, dtype=T.float64)
    q, k, v = _inputs(1)
    kpm = np.array([[False, False, True, True], [False, False, False, True]])
    bool_mask = np.array([[False, True, False, False], [False, False, True, False], [True, False, False, False]])
    float_mask = np.where(bool_mask, -1.5, 0.25)
    for key_padding_mask in (None, kpm):
        for attn_mask in (None, bool_mask, float_mask):
            out, w = m(T.tensor(q), T.tensor(k), T.tensor(v),
                       key_padding_mask=None if key_padding_mask is None else T.tensor(key_padding_mask),
                       attn_mask=None if attn_mask is None else T.tensor(attn_mask))
            eo, ew = _mha_np(q, k, v, m, 4, key_padding_mask, attn_mask)
            close(out, eo, rtol=1e-9, atol=1e-12)
            close(w, ew.mean(1), rtol=1e-9, atol=1e-12)
    # a 3-D attn_mask: one per batch element and head, (N·H, L, S)
    mask3 = np.random.default_rng(2).standard_normal((8, 3, 4))
    out, w = m(T.tensor(q), T.tensor(k), T.tensor(v), attn_mask=T.tensor(mask3), average_attn_weights=False)
    eo, ew = _mha_np(q, k, v, m, 4, None, mask3.reshape(2, 4, 3, 4))
    close(out, eo, rtol=1e-9, atol=1e-12)
    close(w, ew, rtol=1e-9, atol=1e-12)


def test_multihead_attention_batch_first_and_unbatched(T, nn):
    T.manual_seed(3)
    m = nn.MultiheadAttention(8, 2, batch_first=True, dtype=T.float64)
    q, k, v = _inputs(3)
    out, w = m(T.tensor(q.transpose(1, 0, 2)), T.tensor(k.transpose(1, 0, 2)), T.tensor(v.transpose(1, 0, 2)))
    eo, ew = _mha_np(q, k, v, m, 2)
    close(out, eo.transpose(1, 0, 2), rtol=1e-10, atol=1e-12)
    out, w = m(T.tensor(q[:, 0]), T.tensor(k[:, 0]), T.tensor(v[:, 0]))          # unbatched (L, E)
    close(out, eo[:, 0], rtol=1e-10, atol=1e-12)
    close(w, ew.mean(1)[0], rtol=1e-10, atol=1e-12)


def test_multihead_attention_kdim_vdim_and_bias_kv(T, nn):
    m = nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    assert m.in_proj_weight is None
    assert tuple(m.k_proj_weight.shape) == (8, 3) and tuple(m.v_proj_weight.shape) == (8, 5)
    assert not m._qkv_same_embed_dim
    out, w = m(T.randn(3, 2, 8), T.randn(4, 2, 3), T.randn(4, 2, 5))
    assert tuple(out.shape) == (3, 2, 8) and tuple(w.shape) == (2, 3, 4)
    m = nn.MultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True)
    assert tuple(m.bias_k.shape) == (1, 1, 8) and tuple(m.bias_v.shape) == (1, 1, 8)
    out, w = m(T.randn(3, 2, 8), T.randn(4, 2, 8), T.randn(4, 2, 8))
    assert tuple(w.shape) == (2, 3, 6)          # one more key for the bias, one for the zero attention
    m = nn.MultiheadAttention(8, 2, bias=False)
    assert m.in_proj_bias is None and m.out_proj.bias is None
    names = [n for n, _ in nn.MultiheadAttention(8, 2).named_parameters()]
    assert names == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]


def test_multihead_attention_errors(T, nn):
    raises(AssertionError, "embed_dim must be divisible by num_heads", nn.MultiheadAttention, 10, 3)
    m = nn.MultiheadAttention(8, 2)
    q = T.randn(3, 2, 8)
    k = T.randn(4, 2, 8)
    raises(RuntimeError, r"The shape of the 2D attn_mask is (torch.Size\(\[3, 3\]\)|\(3, 3\)), but should be "
           r"\(3, 4\).", m, q, k, k, attn_mask=T.zeros(3, 3, dtype=T.bool))
    raises(RuntimeError, r"The shape of the 3D attn_mask is (torch.Size\(\[2, 3, 4\]\)|\(2, 3, 4\)), but should be "
           r"\(4, 3, 4\).",
           m, q, k, k, attn_mask=T.zeros(2, 3, 4))
    raises(AssertionError, "was expecting embedding dimension of 8, but got 6", m, T.randn(3, 2, 6), k, k)
    raises((AssertionError, RuntimeError), r"Expected key_padded_mask.shape\[1\] to be 4, but got 3", m, q, k, k,
           key_padding_mask=T.zeros(2, 3, dtype=T.bool))
    raises(AssertionError, r"key shape (torch.Size\(\[4, 2, 8\]\)|\(4, 2, 8\)) does not match value shape "
           r"(torch.Size\(\[5, 2, 8\]\)|\(5, 2, 8\))", m, q, k, T.randn(5, 2, 8))


def test_multihead_attention_mismatched_mask_types_warn(T, nn):
    m = nn.MultiheadAttention(8, 2)
    q = T.randn(3, 2, 8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m(q, q, q, key_padding_mask=T.zeros(2, 3, dtype=T.bool), attn_mask=T.zeros(3, 3))
    assert any("mismatched key_padding_mask and attn_mask is deprecated" in str(x.message) for x in w)


def test_multihead_attention_fully_masked_row_is_nan(T, nn):
    m = nn.MultiheadAttention(4, 1)
    q = T.randn(2, 1, 4)
    out, w = m(q, q, q, key_padding_mask=T.tensor([[True, True]]))
    assert np.isnan(values(w)).all()


def test_scaled_dot_product_attention(T, F):
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 6, 4)), rng.standard_normal((2, 3, 6, 7))
    scores = q @ k.transpose(0, 1, 3, 2) / 2.0
    close(F.scaled_dot_product_attention(T.tensor(q), T.tensor(k), T.tensor(v)), _softmax(scores) @ v, rtol=1e-10)
    mask = rng.random((5, 6)) > 0.3
    mask[:, 0] = True
    close(F.scaled_dot_product_attention(T.tensor(q), T.tensor(k), T.tensor(v), attn_mask=T.tensor(mask)),
          _softmax(np.where(mask, scores, -np.inf)) @ v, rtol=1e-10)
    fmask = rng.standard_normal((5, 6))
    close(F.scaled_dot_product_attention(T.tensor(q), T.tensor(k), T.tensor(v), attn_mask=T.tensor(fmask)),
          _softmax(scores + fmask) @ v, rtol=1e-10)
    causal = np.tril(np.ones((5, 6), bool))
    close(F.scaled_dot_product_attention(T.tensor(q), T.tensor(k), T.tensor(v), is_causal=True),
          _softmax(np.where(causal, scores, -np.inf)) @ v, rtol=1e-10)
    close(F.scaled_dot_product_attention(T.tensor(q), T.tensor(k), T.tensor(v), scale=0.1),
          _softmax(q @ k.transpose(0, 1, 3, 2) * 0.1) @ v, rtol=1e-10)


def test_generate_square_subsequent_mask(T, nn):
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    same(mask, [[0.0, -np.inf, -np.inf], [0.0, 0.0, -np.inf], [0.0, 0.0, 0.0]])
    assert str(mask.dtype).endswith("float32")
    assert str(nn.Transformer.generate_square_subsequent_mask(2, dtype=T.float64).dtype).endswith("float64")


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_matches_its_parts(T, nn, F, norm_first):
    T.manual_seed(5)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, norm_first=norm_first,
                                       dtype=T.float64)
    x = T.randn(3, 2, 8, dtype=T.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=T.float64)

    def sa(h):
        return layer.self_attn(h, h, h, attn_mask=mask, need_weights=False)[0]

    def ff(h):
        return layer.linear2(F.relu(layer.linear1(h)))
    if norm_first:
        h = x + sa(layer.norm1(x))
        expected = h + ff(layer.norm2(h))
    else:
        h = layer.norm1(x + sa(x))
        expected = layer.norm2(h + ff(h))
    close(layer(x, src_mask=mask), values(expected), rtol=1e-10, atol=1e-12)
    close(layer(x, src_mask=mask, is_causal=True), values(expected), rtol=1e-10, atol=1e-12)


def test_transformer_encoder_padding_mask_does_not_leak(T, nn):
    T.manual_seed(6)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    enc.eval()
    x = T.randn(1, 5, 8)
    pad = T.tensor([[False, False, False, True, True]])
    out = enc(x, src_key_padding_mask=pad)
    x2 = x.clone()
    x2[0, 3:] = 100.0                              # what sits at padded positions does not matter
    out2 = enc(x2, src_key_padding_mask=pad)
    close(out[0, :3], values(out2[0, :3]), rtol=1e-5, atol=1e-6)
    short = enc(x[:, :3])
    close(out[0, :3], values(short[0]), rtol=1e-5, atol=1e-6)
    assert len(enc.layers) == 2 and enc.layers[0] is not enc.layers[1]      # deep copies of the layer


def test_transformer_shapes_and_errors(T, nn):
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                           dropout=0.0)
    src, tgt = T.randn(5, 2, 8), T.randn(4, 2, 8)
    out = model(src, tgt, tgt_mask=model.generate_square_subsequent_mask(4))
    assert tuple(out.shape) == (4, 2, 8)
    raises(RuntimeError, "the batch number of src and tgt must be equal", model, T.randn(5, 3, 8), tgt)
    raises(RuntimeError, "the feature number of src and tgt must be equal to d_model", model, T.randn(5, 2, 6),
           T.randn(4, 2, 6))
    raises(RuntimeError, "activation should be relu/gelu, not garbage", nn.TransformerEncoderLayer, 8, 2,
           activation="garbage")
    dec = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation=F_gelu(nn))
    assert tuple(dec(tgt, src).shape) == (4, 2, 8)


def F_gelu(nn):
    return nn.functional.gelu


def test_transformer_structure_and_hints(T, nn, F):
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    assert [n for n, _ in layer.named_children()] == ["self_attn", "linear1", "dropout", "linear2", "norm1", "norm2",
                                                      "dropout1", "dropout2"]
    assert [n for n, _ in nn.TransformerDecoderLayer(8, 2, 16).named_children()] == [
        "self_attn", "multihead_attn", "linear1", "dropout", "linear2", "norm1", "norm2", "norm3", "dropout1",
        "dropout2", "dropout3"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = nn.Transformer(8, 2, 1, 1, 16)
    assert any("enable_nested_tensor is True, but self.use_nested_tensor is False" in str(x.message) for x in w)
    assert [n for n, _ in model.named_children()] == ["encoder", "decoder"]
    assert sum(p.numel() for p in model.parameters()) == 1536
    enc = nn.TransformerEncoder(layer, 1, norm=nn.LayerNorm(8), enable_nested_tensor=False)
    assert [n for n, _ in enc.named_children()] == ["layers", "norm"]
    assert "(out_proj): NonDynamicallyQuantizableLinear(in_features=8, out_features=8, bias=True)" in \
        repr(nn.MultiheadAttention(8, 2))
    need = "Need attn_mask if specifying the is_causal hint"
    raises(RuntimeError, need, enc, T.randn(3, 2, 8), is_causal=True)
    q = T.randn(3, 2, 8)
    raises(RuntimeError, need, nn.MultiheadAttention(8, 2), q, q, q, is_causal=True)
    raises(RuntimeError, "Explicit attn_mask should not be set when is_causal=True", F.scaled_dot_product_attention,
           T.randn(1, 2, 3), T.randn(1, 2, 3), T.randn(1, 2, 3), attn_mask=T.ones(2, 2, dtype=T.bool), is_causal=True)


def test_scaled_dot_product_attention_grouped_query(T, F):
    q, k, v = T.randn(1, 4, 2, 3, dtype=T.float64), T.randn(1, 2, 2, 3, dtype=T.float64), T.randn(1, 2, 2, 3,
                                                                                              dtype=T.float64)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    # each pair of query heads shares one key/value head
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    close(out, values(expected), rtol=1e-12)
