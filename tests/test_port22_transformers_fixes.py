"""Fixes found porting PyTorch's test/test_transformers.py (tests/test_ported_transformers.py): the fused
inference path ("fast path") of MultiheadAttention and TransformerEncoderLayer gives NaN to a query whose every key
is masked, where the training path gives it zero weights; ``autograd.backends.mha`` switches that path off; the
fused MultiheadAttention ignores the is_causal hint; scaled_dot_product_attention refuses inputs of fewer than 2
dimensions with PyTorch's message, after its dtype check and before its mask checks. Values against literals and
NumPy always, and against PyTorch where it is installed."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F

D, H = 8, 4
X = np.random.default_rng(0).standard_normal((2, 4, D))
# query 0 of each sequence may attend no key; query 1 may attend keys 0 and 2; the others every key but 3
ATTN_MASK = np.array([[True] * 4, [False, True, False, True], [False, False, False, True], [False, False, False, True]])
EVERY_KEY_PADDED = np.array([[True] * 4, [False, False, True, True]])


def torch_or_skip():
    return pytest.importorskip("torch")


def _copy_weights(ours, theirs):
    import torch
    with torch.no_grad():
        for name, p in ours.state_dict().items():
            theirs.state_dict()[name].copy_(torch.tensor(p.numpy()))


def _mha():
    autograd.manual_seed(0)
    return nn.MultiheadAttention(D, H, batch_first=True, dtype=autograd.float64)


def _numpy_attention(m, x, barred):
    """The module's attention by hand: an ordinary softmax (NaN where a row bars every key), then out_proj."""
    w, b = m.in_proj_weight.detach().numpy(), m.in_proj_bias.detach().numpy()
    q, k, v = (x @ w[i * D:(i + 1) * D].T + b[i * D:(i + 1) * D] for i in range(3))

    def heads(t):
        return t.reshape(2, 4, H, D // H).transpose(0, 2, 1, 3)
    scores = np.where(barred, -np.inf, heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(D // H))
    with np.errstate(invalid="ignore"):
        e = np.exp(scores - scores.max(-1, keepdims=True))
        weights = e / e.sum(-1, keepdims=True)
    out = (weights @ heads(v)).transpose(0, 2, 1, 3).reshape(2, 4, D)
    return out @ m.out_proj.weight.detach().numpy().T + m.out_proj.bias.detach().numpy()


def test_multihead_attention_fast_path_gives_nan_where_every_key_is_masked():
    m = _mha().eval()
    x = autograd.tensor(X)
    with autograd.no_grad():
        fast = m(x, x, x, attn_mask=autograd.tensor(ATTN_MASK), need_weights=False)
        padded = m(x, x, x, key_padding_mask=autograd.tensor(EVERY_KEY_PADDED), need_weights=False)
    assert fast[1] is None and padded[1] is None
    expected = _numpy_attention(m, X, ATTN_MASK[None, None])
    assert np.isnan(expected[:, 0]).all() and np.isnan(fast[0].numpy()[:, 0]).all()
    np.testing.assert_allclose(fast[0].numpy()[:, 1:], expected[:, 1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(padded[0].numpy(), _numpy_attention(m, X, EVERY_KEY_PADDED[:, None, None]),
                               rtol=1e-12, atol=1e-12)         # (NaN where the numbers are NaN)
    # in training, or with gradients wanted, the same rows get zero weights: the output is the zero out_proj bias
    slow = m.train()(x, x, x, attn_mask=autograd.tensor(ATTN_MASK), need_weights=False)[0].detach().numpy()
    np.testing.assert_array_equal(slow[:, 0], np.zeros((2, D)))
    np.testing.assert_allclose(slow[:, 1:], expected[:, 1:], rtol=1e-12, atol=1e-12)


def test_multihead_attention_fast_path_against_pytorch():
    torch = torch_or_skip()
    ours, theirs = _mha().eval(), torch.nn.MultiheadAttention(D, H, batch_first=True,
                                                                       dtype=torch.float64).eval()
    _copy_weights(ours, theirs)
    for kwargs in (dict(attn_mask=ATTN_MASK), dict(key_padding_mask=EVERY_KEY_PADDED),
                   dict(attn_mask=ATTN_MASK, key_padding_mask=EVERY_KEY_PADDED[::-1].copy())):
        for need_weights in (False, True):
            with autograd.no_grad(), torch.no_grad():
                x, tx = autograd.tensor(X), torch.tensor(X)
                got = ours(x, x, x, need_weights=need_weights, **{k: autograd.tensor(v) for k, v in kwargs.items()})
                want = theirs(tx, tx, tx, need_weights=need_weights, **{k: torch.tensor(v) for k, v in kwargs.items()})
            np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), rtol=1e-12, atol=1e-12)
            assert (got[1] is None) == (want[1] is None)


def test_multihead_attention_fast_path_ignores_the_causal_hint():
    m = _mha().eval()
    x = autograd.tensor(X)
    with autograd.no_grad():
        hinted = m(x, x, x, is_causal=True, need_weights=False)[0].numpy()
    np.testing.assert_allclose(hinted, _numpy_attention(m, X, np.zeros((4, 4), bool)), rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        m.train()(x, x, x, is_causal=True)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_fast_path_gives_nan_where_every_key_is_masked(norm_first):
    autograd.manual_seed(1)
    layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first,
                                       dtype=autograd.float64)
    x = autograd.tensor(X)
    with autograd.no_grad():
        trained = layer(x, src_mask=autograd.tensor(ATTN_MASK)).numpy()
        evaluated = layer.eval()(x, src_mask=autograd.tensor(ATTN_MASK)).numpy()
        padded = layer(x, src_key_padding_mask=autograd.tensor(EVERY_KEY_PADDED)).numpy()
        # a hook on a part turns the fused path off, as in PyTorch
        handle = layer.linear1.register_forward_hook(lambda *args: None)
        hooked = layer(x, src_mask=autograd.tensor(ATTN_MASK)).numpy()
        handle.remove()
    assert np.isfinite(trained).all() and np.isfinite(hooked).all()
    np.testing.assert_allclose(hooked, trained, rtol=1e-12, atol=1e-12)
    assert np.isnan(evaluated[:, 0]).all()
    np.testing.assert_allclose(evaluated[:, 1:], trained[:, 1:], rtol=1e-12, atol=1e-12)
    assert np.isnan(padded[0]).all() and np.isfinite(padded[1]).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_fast_path_against_pytorch(norm_first):
    torch = torch_or_skip()
    layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first,
                                       dtype=autograd.float64).eval()
    x = autograd.tensor(X)
    with autograd.no_grad():
        evaluated = layer(x, src_mask=autograd.tensor(ATTN_MASK)).numpy()
        padded = layer(x, src_key_padding_mask=autograd.tensor(EVERY_KEY_PADDED)).numpy()
    theirs = torch.nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first,
                                              dtype=torch.float64).eval()
    _copy_weights(layer, theirs)
    with torch.no_grad():
        np.testing.assert_allclose(evaluated, theirs(torch.tensor(X), src_mask=torch.tensor(ATTN_MASK)).numpy(),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(padded, theirs(torch.tensor(X), src_key_padding_mask=torch.tensor(
            EVERY_KEY_PADDED)).numpy(), rtol=1e-10, atol=1e-12)


def test_backends_mha_switches_the_fast_path_off():
    m = _mha().eval()
    layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True).eval()
    x = autograd.tensor(X)
    assert autograd.backends.mha.get_fastpath_enabled() is True
    autograd.backends.mha.set_fastpath_enabled(False)
    try:
        with autograd.no_grad():
            out = m(x, x, x, attn_mask=autograd.tensor(ATTN_MASK), need_weights=False)[0].numpy()
            layer_out = layer(x.float(), src_mask=autograd.tensor(ATTN_MASK)).numpy()
    finally:
        autograd.backends.mha.set_fastpath_enabled(True)
    np.testing.assert_array_equal(out[:, 0], np.zeros((2, D)))
    assert np.isfinite(layer_out).all()


def test_sdpa_refuses_fewer_than_two_dims_after_the_dtype_check():
    message = ("Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: 1 key.dim: 2 "
               "and value.dim: 2 instead.")
    q, kv = autograd.randn(4), autograd.randn(3, 4)
    with pytest.raises(RuntimeError, match=message.replace(".", r"\.")):
        F.scaled_dot_product_attention(q, kv, kv)
    with pytest.raises(RuntimeError, match="at least 2 dimensional"):     # before the mask's dtype
        F.scaled_dot_product_attention(q, kv, kv, attn_mask=autograd.ones(1, 3, dtype=autograd.int64))
    with pytest.raises(RuntimeError, match="to have the same dtype"):      # after the inputs' dtypes
        F.scaled_dot_product_attention(q, kv.double(), kv)
    q4 = autograd.randn(1, 1, 3, 4)
    with pytest.raises(RuntimeError, match="Expected attn_mask dtype to be bool or float"):   # before is_causal's
        F.scaled_dot_product_attention(q4, q4, q4, attn_mask=autograd.ones(3, 3, dtype=autograd.int64), is_causal=True)


def test_sdpa_checks_in_pytorch_s_order():
    torch = torch_or_skip()
    message = ("Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: 1 key.dim: 2 "
               "and value.dim: 2 instead.")
    with pytest.raises(RuntimeError, match=message.replace(".", r"\.")):
        torch.nn.functional.scaled_dot_product_attention(torch.randn(4), torch.randn(3, 4), torch.randn(3, 4))
    t4 = torch.randn(1, 1, 3, 4)
    with pytest.raises(RuntimeError, match="Expected attn_mask dtype to be bool or float"):
        torch.nn.functional.scaled_dot_product_attention(t4, t4, t4, attn_mask=torch.ones(3, 3, dtype=torch.int64),
                                                         is_causal=True)


def test_encoder_layer_warns_about_mismatched_masks_by_its_own_argument_name():
    layer = nn.TransformerEncoderLayer(4, 2, 8, 0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    x = autograd.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and src_mask is deprecated"):
        layer(x, src_mask=autograd.zeros(3, 3), src_key_padding_mask=autograd.zeros(2, 3, dtype=autograd.bool))
    with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and mask is deprecated"):
        encoder(x, mask=autograd.zeros(3, 3, dtype=autograd.bool), src_key_padding_mask=autograd.zeros(2, 3))


def test_fused_encoder_layer_reads_a_mask_of_another_float_dtype_in_the_input_s():
    # PyTorch's fused kernel takes a float64 mask for a float32 layer; the slow path refuses it
    autograd.manual_seed(2)
    layer = nn.TransformerEncoderLayer(4, 2, 8, 0.0, batch_first=True).eval()
    x = autograd.randn(2, 3, 4)
    mask = autograd.tensor([[0.0, -1.0, float("-inf")], [0.5, 0.0, -2.0], [0.0, 0.0, 0.0]])
    with autograd.no_grad():
        fused = layer(x, src_mask=mask.double())
        expected = layer(x, src_mask=mask)
    assert fused.dtype == autograd.float32
    np.testing.assert_allclose(fused.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="attn_mask dtype to be bool or float or to match query dtype"):
        layer.train()(x, src_mask=mask.double())


def test_negative_dimension_message_names_the_dimension():
    # (nn.Transformer.generate_square_subsequent_mask(-1) in PyTorch's words)
    for make, message in ((lambda: nn.Transformer.generate_square_subsequent_mask(-1), r"-1: \[-1, -1\]"),
                          (lambda: autograd.ones(3, -1, -2), r"-1: \[3, -1, -2\]"),
                          (lambda: autograd.empty(-2), r"-2: \[-2\]")):
        with pytest.raises(RuntimeError, match="Trying to create tensor with negative dimension " + message):
            make()


def test_encoder_reads_an_unchecked_padding_mask_as_left_aligned():
    """With mask_check=False PyTorch's nested path keeps each sequence's first n tokens, n its count of unpadded
    ones, whatever the mask's pattern: the outputs are those of the first n tokens alone, then zeros."""
    autograd.manual_seed(3)
    layer = nn.TransformerEncoderLayer(4, 2, 8, 0.0, batch_first=True)
    x = autograd.randn(2, 4, 4)
    padding = autograd.tensor([[True, False, True, False], [False, False, False, True]])
    unchecked = nn.TransformerEncoder(layer, 2, mask_check=False).eval()
    checked = nn.TransformerEncoder(layer, 2).eval()
    with autograd.no_grad():
        out = unchecked(x, src_key_padding_mask=padding).numpy()
        first_two = unchecked(x[:1, :2]).numpy()
        first_three = unchecked(x[1:, :3]).numpy()
        as_checked = checked(x, src_key_padding_mask=padding).numpy()       # not left-aligned: the slow path
        slow = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)(x, src_key_padding_mask=padding).numpy()
    np.testing.assert_allclose(out[0, :2], first_two[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1, :3], first_three[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[0, 2:], 0.0)
    np.testing.assert_array_equal(out[1, 3:], 0.0)
    np.testing.assert_allclose(as_checked, slow, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0, 1], as_checked[0, 1])


def test_sdpa_with_no_features_attends_uniformly():
    # E = 0: every score is 0 (PyTorch never multiplies by the infinite 1/√0), so each query averages the values
    autograd.manual_seed(4)
    value = autograd.randn(2, 5, 3)
    out = F.scaled_dot_product_attention(autograd.randn(2, 3, 0), autograd.randn(2, 5, 0), value)
    np.testing.assert_allclose(out.numpy(), np.repeat(value.numpy().mean(1, keepdims=True), 3, 1), rtol=1e-6)
    assert tuple(F.scaled_dot_product_attention(*(autograd.randn(2, 3, 0) for _ in range(3))).shape) == (2, 3, 0)


def test_sdpa_refuses_a_dropout_probability_above_one_as_pytorch():
    q = autograd.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)
    # a negative one drops nothing; 1 drops everything
    np.testing.assert_allclose(F.scaled_dot_product_attention(q, q, q, dropout_p=-0.1).numpy(),
                               F.scaled_dot_product_attention(q, q, q).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, q, q, dropout_p=1.0).numpy(), 0.0)


def test_sdpa_grouped_query_heads_must_divide():
    message = "Number of heads in key and value must divide the number of heads in $"
    for q_heads, k_heads, v_heads in ((3, 2, 2), (2, 4, 4), (4, 2, 3)):
        with pytest.raises(RuntimeError, match=message):
            F.scaled_dot_product_attention(autograd.randn(1, q_heads, 3, 4), autograd.randn(1, k_heads, 5, 4),
                                           autograd.randn(1, v_heads, 5, 4), enable_gqa=True)
    # key and value heads may differ, each dividing the query's
    q, k, v = autograd.randn(1, 4, 3, 4), autograd.randn(1, 2, 5, 4), autograd.randn(1, 1, 5, 4)
    np.testing.assert_allclose(F.scaled_dot_product_attention(q, k, v, enable_gqa=True).numpy(),
                               F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.expand(1, 4, 5, 4))
                               .numpy(), rtol=1e-6)


def test_square_subsequent_mask_on_its_device_and_under_pytorch_s_private_names():
    from nn.modules import transformer

    mask = nn.Transformer.generate_square_subsequent_mask(3, device="meta")
    assert mask.device.type == "meta" and tuple(mask.shape) == (3, 3)
    np.testing.assert_array_equal(transformer._generate_square_subsequent_mask(2, dtype=autograd.float64).numpy(),
                                  [[0.0, -np.inf], [0.0, 0.0]])
    assert transformer._get_seq_len(autograd.zeros(2, 5, 4), True) == 5
    assert transformer._get_seq_len(autograd.zeros(2, 5, 4), False) == 2
    assert transformer._get_seq_len(autograd.zeros(7, 4), True) == 7
