"""The rest of PyTorch's test/test_transformers.py that tests/test_ported_transformers.py leaves out, on the CPU's
math path: scaled_dot_product_attention with grouped-query attention (``enable_gqa``), rows whose keys are all
masked (zeros, not NaN, as PyTorch's safe softmax), the causal variants of nn.attention.bias for queries shorter
and longer than the keys, the fused-vs-math comparison (causal or not, with gradients), a scale with dropout;
nn.Transformer's argument checks, its layers' activation check, unbatched inputs, and a decoder stack and a whole
Transformer trained a step with dropout, masks, ``norm_first`` and ``batch_first`` (against PyTorch where it is
installed, and always against PyTorch's numbers written down once, or against NumPy by hand).
Each test runs on chainrule's libraries and, where it is installed, on PyTorch's (fixture `T`).
"""

import importlib
import math
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values
from tests.pytorch_programs import pytorch

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def attention_bias(T):
    return importlib.import_module(("torch.nn" if T.__name__ == "torch" else "nn") + ".attention.bias")


def softmax_attention(q, k, v, bias=0.0, scale=None):
    """The math path by hand in float64: softmax(q k^T * scale + bias) v, a row with every key masked giving 0."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale + bias
    top = scores.max(-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
    total = weights.sum(-1, keepdims=True)
    return np.where(total > 0, weights / np.where(total > 0, total, 1), 0) @ v


def qkv(T, shapes, seed, dtype="float64", requires_grad=False):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    return arrays, [T.tensor(a, requires_grad=requires_grad) for a in arrays]


# --- scaled_dot_product_attention ---

@pytest.mark.parametrize("is_causal", [False, True])
def test_sdpa_enable_gqa(T, F, is_causal):
    """Key and value with fewer heads than the query: each of their heads serves query_heads / kv_heads queries."""
    (q, k, v), (tq, tk, tv) = qkv(T, [(2, 6, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4)], 0, requires_grad=True)
    out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=is_causal, enable_gqa=True)
    bias = np.where(np.tril(np.ones((3, 5), bool)), 0.0, -np.inf) if is_causal else 0.0
    close(out, softmax_attention(q, np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1), bias), rtol=1e-12,
          atol=1e-12)
    grad_out = T.tensor(np.random.default_rng(1).standard_normal(out.shape))
    out.backward(grad_out)
    # the gradients of the same attention over repeated heads, each key/value head summing its three queries'
    rq, rk, rv = (T.tensor(a, requires_grad=True) for a in (q, k, v))
    reference = F.scaled_dot_product_attention(rq, rk.repeat_interleave(3, dim=1), rv.repeat_interleave(3, dim=1),
                                               is_causal=is_causal)
    reference.backward(grad_out)
    for got, expected in ((tq, rq), (tk, rk), (tv, rv)):
        close(got.grad, values(expected.grad), rtol=1e-12, atol=1e-12)


def test_sdpa_enable_gqa_errors(T, F):
    (qa, ka, va, _), (q, k2, v3, k4) = qkv(T, [(2, 6, 3, 4), (2, 2, 5, 4), (2, 3, 5, 4), (2, 4, 5, 4)], 2)
    raises(RuntimeError, "", F.scaled_dot_product_attention, q, k2, k2)  # heads differ, no enable_gqa
    raises(RuntimeError, "Number of heads in key and value must divide the number of heads in",
           F.scaled_dot_product_attention, q, k4, k4, enable_gqa=True)
    # key and value heads may differ, each dividing the query's: each is repeated to the query's
    close(F.scaled_dot_product_attention(q, k2, v3, enable_gqa=True),
          softmax_attention(qa, np.repeat(ka, 3, axis=1), np.repeat(va, 2, axis=1)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bool_mask", [True, False])
def test_sdpa_rows_with_every_key_masked_are_zero(T, F, bool_mask):
    """PyTorch's math path takes a safe softmax: a query that may see no key gets zeros (and zero gradients), not
    NaN (test_scaled_dot_product_attention_fused_kernels_safe_softmax)."""
    (q, k, v), (tq, tk, tv) = qkv(T, [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4)], 3, requires_grad=True)
    allowed = np.ones((3, 5), bool)
    allowed[1] = False
    allowed[2, :2] = False
    mask = T.tensor(allowed) if bool_mask else T.tensor(np.where(allowed, 0.0, -np.inf))
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
    expected = softmax_attention(q, k, v, np.where(allowed, 0.0, -np.inf))
    assert not np.isnan(values(out)).any()
    same(out[:, :, 1], np.zeros((2, 2, 4)))
    close(out, expected, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    same(tq.grad[:, :, 1], np.zeros((2, 2, 4)))
    assert np.isfinite(values(tk.grad)).all() and np.isfinite(values(tv.grad)).all()


@pytest.mark.parametrize("seq_len_q, seq_len_kv", [(3, 5), (5, 5), (5, 3)])
def test_causal_variants(T, F, seq_len_q, seq_len_kv):
    """TestAttnBias.test_causal_variants: the upper-left causal mask lets query i see keys 0..i, the lower-right one
    keys 0..i + (S - L); a query with none to see (lower right, L > S) comes out zero."""
    bias = attention_bias(T)
    (q, k, v), (tq, tk, tv) = qkv(T, [(2, 3, seq_len_q, 8), (2, 3, seq_len_kv, 8), (2, 3, seq_len_kv, 8)], 4,
                                  requires_grad=True)
    for make, diagonal in ((bias.causal_upper_left, 0), (bias.causal_lower_right, seq_len_kv - seq_len_q)):
        allowed = np.tril(np.ones((seq_len_q, seq_len_kv), bool), diagonal)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            causal = make(seq_len_q, seq_len_kv)
        if make is bias.causal_lower_right and seq_len_q > seq_len_kv:
            assert "Lower right causal bias will produce NaNs in the output when seq_len_q > seq_len_kv!" in \
                str(caught[0].message)
        same(causal._materialize(), allowed)
        out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=causal)
        close(out, softmax_attention(q, k, v, np.where(allowed, 0.0, -np.inf)), rtol=1e-12, atol=1e-12)
        grads = T.autograd.grad(out.sum(), (tq, tk, tv))
        dense = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=T.tensor(allowed))
        for got, expected in zip(grads, T.autograd.grad(dense.sum(), (tq, tk, tv))):
            close(got, values(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaled_dot_product_fused_attention_vs_math_cpu(T, F, dtype, causal, train):
    """A packed (batch, seq, 3 * embed) projection split into heads: the attention and its gradients against the
    same attention composed of matmul and softmax (PyTorch's sizes made smaller: batch 2, 17 steps, 3 heads of 8)."""
    batch_size, seq_len, n_head, head_dim = 2, 17, 3, 8
    n_embd = n_head * head_dim
    (packed,), (x,) = qkv(T, [(batch_size, seq_len, 3 * n_embd)], 5, dtype, requires_grad=train)
    x2 = T.tensor(packed, requires_grad=train)

    def heads(t):
        return t.view(batch_size, seq_len, n_head, head_dim).transpose(1, 2)

    q, k, v = (heads(t) for t in x.split(n_embd, dim=2))
    actual = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=causal)
    q2, k2, v2 = (heads(t) for t in x2.split(n_embd, dim=2))
    scores = q2 @ k2.transpose(-2, -1) / math.sqrt(head_dim)
    if causal:
        scores = scores.masked_fill(~T.ones(seq_len, seq_len, dtype=T.bool).tril(), float("-inf"))
    math_ref = T.softmax(scores, dim=-1) @ v2
    tolerance = {"rtol": 5e-6, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    close(actual, values(math_ref), **tolerance)
    arrays = [a.reshape(batch_size, seq_len, n_head, head_dim).transpose(0, 2, 1, 3).astype(np.float64)
              for a in np.split(packed, 3, axis=2)]
    bias = np.where(np.tril(np.ones((seq_len, seq_len), bool)), 0.0, -np.inf) if causal else 0.0
    close(actual, softmax_attention(*arrays, bias), rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)
    if train:
        actual.sum().backward()
        math_ref.sum().backward()
        close(x.grad, values(x2.grad), **tolerance)


def test_sdpa_scale_with_dropout_is_the_composition_under_one_seed(T, F):
    """test_scaled_dot_product_attention's reference with a scale: softmax(q k^T * scale) dropped out by F.dropout
    under the same seed, times v."""
    (q, k, v), (tq, tk, tv) = qkv(T, [(3, 2, 4, 6), (3, 2, 5, 6), (3, 2, 5, 6)], 6, "float32")
    T.manual_seed(7)
    out = F.scaled_dot_product_attention(tq, tk, tv, dropout_p=0.4, scale=0.3)
    T.manual_seed(7)
    weights = F.dropout(T.softmax(tq @ tk.transpose(-2, -1) * 0.3, dim=-1), p=0.4)
    close(out, values(weights @ tv), rtol=1e-6, atol=1e-6)
    kept = values(weights) != 0
    assert 0.4 < 1 - kept.mean() < 0.75  # about p of the weights dropped (0.4 of 120, give or take)
    scores = np.exp(q.astype(np.float64) @ k.swapaxes(-1, -2) * 0.3)
    close(out, (scores / scores.sum(-1, keepdims=True) * kept / 0.6) @ v, rtol=1e-5, atol=1e-5)


@pytest.fixture
def kernel_switches(T):
    """torch.backends.cuda's switches of the attention kernels (global), put back as they were after the test."""
    switches = T.backends.cuda
    names = ("flash", "math", "mem_efficient", "cudnn")
    before = {name: getattr(switches, f"{name}_sdp_enabled")() for name in names}
    yield switches
    for name, enabled in before.items():
        getattr(switches, f"enable_{name}_sdp")(enabled)


def test_attention_kernel_switches(T, F, kernel_switches):
    """test_dispatch_fails_no_backend on the CPU, through the switches a program sets: turning off the math kernel
    and flash attention (the CPU's two) leaves no kernel; sdpa_kernel sets the switches for a block."""
    cuda = kernel_switches
    attention = importlib.import_module(attention_bias(T).__name__.rsplit(".", 1)[0])
    (q, k, v), (tq, tk, tv) = qkv(T, [(1, 2, 3, 8)] * 3, 8, "float32")
    assert (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
            cuda.cudnn_sdp_enabled()) == (True, True, True, True)
    with attention.sdpa_kernel(attention.SDPBackend.MATH):
        assert (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.cudnn_sdp_enabled()) == (True, False, False)
        close(F.scaled_dot_product_attention(tq, tk, tv), softmax_attention(q, k, v), rtol=1e-5, atol=1e-6)
    assert cuda.flash_sdp_enabled()
    cuda.enable_flash_sdp(False)
    close(F.scaled_dot_product_attention(tq, tk, tv), softmax_attention(q, k, v), rtol=1e-5, atol=1e-6)
    cuda.enable_math_sdp(False)
    assert (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled()) == (False, False)
    raises(RuntimeError, "No viable backend for scaled_dot_product_attention was found", F.scaled_dot_product_attention,
           tq, tk, tv)
    cuda.enable_math_sdp(True)
    with pytest.warns(FutureWarning, match=r"`torch.backends.cuda.sdp_kernel\(\)` is deprecated"):
        with cuda.sdp_kernel(enable_flash=True, enable_math=False):
            assert (cuda.flash_sdp_enabled(), cuda.math_sdp_enabled(), cuda.mem_efficient_sdp_enabled()) == \
                (True, False, True)
            close(F.scaled_dot_product_attention(tq, tk, tv), softmax_attention(q, k, v), rtol=1e-5, atol=1e-6)
    assert (cuda.flash_sdp_enabled(), cuda.math_sdp_enabled()) == (False, True)


def test_in_projection_helpers(T, F):
    """F._in_projection_packed and F._in_projection, the helpers of multi_head_attention_forward that custom
    attention code imports: self-attention, encoder-decoder attention and three inputs against NumPy."""
    (x, y, z, w, b), (tx, ty, tz, tw, tb) = qkv(T, [(4, 2, 16), (6, 2, 16), (6, 2, 16), (48, 16), (48,)], 9)
    w_q, w_k, w_v, b_q, b_k, b_v = w[:16], w[16:32], w[32:], b[:16], b[16:32], b[32:]
    for inputs, arrays in (((tx, tx, tx), (x, x, x)), ((tx, ty, ty), (x, y, y)), ((tx, ty, tz), (x, y, z))):
        projected = F._in_projection_packed(*inputs, tw, tb)
        assert len(projected) == 3
        for got, a, weight, bias in zip(projected, arrays, (w_q, w_k, w_v), (b_q, b_k, b_v)):
            close(got, a @ weight.T + bias, rtol=1e-12, atol=1e-12)
            assert got.is_contiguous()
    tw_k, tw_v = T.tensor(w_k[:, :8]), T.tensor(w_v[:, :4])
    projected = F._in_projection(tx, ty[..., :8], tz[..., :4], T.tensor(w_q), tw_k, tw_v, T.tensor(b_q))
    for got, expected in zip(projected, (x @ w_q.T + b_q, y[..., :8] @ w_k[:, :8].T, z[..., :4] @ w_v[:, :4].T)):
        close(got, expected, rtol=1e-12, atol=1e-12)
    raises(AssertionError, r"expecting key weights shape of \(16, 16\), but got .*Size\(\[16, 8\]\)",
           F._in_projection, tx, ty, tz, T.tensor(w_q), tw_k, T.tensor(w_v))


# --- nn.Transformer and its layers ---

def small_transformer(nn, **kwargs):
    options = dict(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16, dropout=0.0)
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (enable_nested_tensor without batch_first)
        return nn.Transformer(**options)


def test_transformer_args_check(T, nn):
    model = small_transformer(nn)
    src, tgt = T.zeros(5, 3, 8), T.zeros(4, 3, 8)
    raises(RuntimeError, "the batch number of src and tgt must be equal", model, src, T.zeros(4, 2, 8))
    raises(RuntimeError, "the feature number of src and tgt must be equal to d_model", model, T.zeros(5, 3, 7),
           T.zeros(4, 3, 7))
    assert tuple(model(src, tgt).shape) == (4, 3, 8)
    for kwargs, message in (({"src_mask": T.zeros(4, 4)}, r"2D attn_mask is .*4, 4.*, but should be \(5, 5\)"),
                            ({"tgt_mask": T.zeros(5, 5)}, r"2D attn_mask is .*5, 5.*, but should be \(4, 4\)"),
                            ({"memory_mask": T.zeros(4, 4)}, r"2D attn_mask is .*4, 4.*, but should be \(4, 5\)")):
        raises(RuntimeError, message, model, src, tgt, **kwargs)
    for kwargs, message in (({"src_key_padding_mask": T.zeros(3, 4, dtype=T.bool)}, "to be 5, but got 4"),
                            ({"tgt_key_padding_mask": T.zeros(3, 5, dtype=T.bool)}, "to be 4, but got 5"),
                            ({"memory_key_padding_mask": T.zeros(3, 4, dtype=T.bool)}, "to be 5, but got 4")):
        raises(AssertionError, "Expected key_padded_mask.shape\\[1\\] " + message, model, src, tgt, **kwargs)


def test_transformer_layer_args_check(T, nn, F):
    for layer in (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer):
        raises(RuntimeError, "activation should be relu/gelu, not abc", layer, 8, 2, activation="abc")
        for activation in ("relu", "gelu", F.gelu, nn.GELU()):
            layer(8, 2, activation=activation)
    raises(AssertionError, "embed_dim must be divisible by num_heads", small_transformer, nn, nhead=3)


def test_transformer_no_batch_dim(T, nn):
    """An unbatched (sequence, feature) input gives the batch of one's output, for the model and each layer."""
    T.manual_seed(0)
    model = small_transformer(nn, num_encoder_layers=2, num_decoder_layers=2).eval()
    src, tgt = T.randn(5, 8), T.randn(4, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    with T.no_grad():
        unbatched = model(src, tgt, tgt_mask=mask)
        close(unbatched, values(model(src[:, None], tgt[:, None], tgt_mask=mask)[:, 0]), rtol=1e-5, atol=1e-6)
        encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
        decoder = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
        padding = T.tensor([False, False, True, False, True])
        close(encoder(src, src_key_padding_mask=padding),
              values(encoder(src[None], src_key_padding_mask=padding[None])[0]), rtol=1e-5, atol=1e-6)
        close(decoder(tgt, src, memory_key_padding_mask=padding),
              values(decoder(tgt[None], src[None], memory_key_padding_mask=padding[None])[0]), rtol=1e-5, atol=1e-6)
    assert tuple(unbatched.shape) == (4, 8)


def test_generate_square_subsequent_mask(T, nn):
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    same(mask, [[0.0, -np.inf, -np.inf], [0.0, 0.0, -np.inf], [0.0, 0.0, 0.0]], dtype="float32")
    assert str(nn.Transformer.generate_square_subsequent_mask(2, dtype=T.float64).dtype).endswith("float64")


def decoder_stack(T, nn):
    """Three norm-first decoder layers and a final norm, with a causal target mask (tgt_is_causal), padding masks
    on the target and the memory: the output and the gradients of a weighted sum."""
    T.manual_seed(0)
    layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, norm_first=True, batch_first=True)
    decoder = nn.TransformerDecoder(layer, 3, norm=nn.LayerNorm(8))
    tgt, memory, weights = T.randn(2, 4, 8, requires_grad=True), T.randn(2, 5, 8), T.randn(2, 4, 8)
    tgt_padding = T.tensor([[False, False, False, True], [False, False, False, False]])
    memory_padding = T.tensor([[False, False, False, True, True], [False] * 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a float causal mask beside bool padding masks: deprecated, warned)
        out = decoder(tgt, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(4), tgt_is_causal=True,
                      tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=memory_padding)
    (out * weights).sum().backward()
    return out, tgt.grad, decoder.layers[2].linear1.weight.grad


DECODER_STACK = ([-0.4967, -0.8099, 0.71908, -1.0038, 1.66135, -0.53541],
                 [0.45152, 0.63488, 0.36761, 0.18001, -0.40089, -1.34976],
                 [0.59264, 0.07526, 0.58426, -0.25074, 0.01037, -0.80347])


def test_transformer_decoder_stack_with_masks_and_norm_first(T, nn):
    results = decoder_stack(T, nn)
    for got, first in zip(results, DECODER_STACK):  # PyTorch's numbers, written down once
        close(values(got).ravel()[:6], first, rtol=0, atol=2e-5)
    reference = pytorch()
    if reference is not None and T.__name__ == "autograd":
        for got, expected in zip(results, decoder_stack(reference.torch, reference.nn)):
            close(got, values(expected), rtol=1e-5, atol=1e-5)


def transformer_step(T, nn, norm_first, batch_first):
    """A whole Transformer in training mode (dropout 0.2, gelu) under one seed: the initial weights and the dropout
    masks are the seed's draws, so the output and the gradients are PyTorch's to the rounding."""
    T.manual_seed(0)
    model = small_transformer(nn, num_encoder_layers=2, num_decoder_layers=2, dropout=0.2, norm_first=norm_first,
                              batch_first=batch_first, activation="gelu")
    src, tgt = T.randn(2, 5, 8), T.randn(2, 4, 8)
    if not batch_first:
        src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
    padding = T.tensor([[False] * 4 + [True], [False] * 5])
    out = model(src, tgt, tgt_mask=model.generate_square_subsequent_mask(4), src_key_padding_mask=padding,
                memory_key_padding_mask=padding, tgt_is_causal=True)
    (out * T.arange(out.numel()).view(out.shape).sin()).sum().backward()
    return out, model.encoder.layers[0].self_attn.in_proj_weight.grad, model.decoder.layers[1].linear2.weight.grad


TRANSFORMER_STEP_OUT = {(False, False): [-0.44779, -0.85817, 0.58124, -0.84143, 2.38764, -0.03638],
                        (False, True): [-0.59392, -1.09383, 1.01458, -0.85752, 1.86093, 0.75811],
                        (True, False): [-0.81991, -1.19593, 0.38142, 0.03653, 2.2318, -0.63816],
                        (True, True): [-0.70906, -1.56733, 0.59171, 0.10629, 2.08416, -0.23828]}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_training_step_with_dropout(T, nn, norm_first, batch_first):
    out, encoder_grad, decoder_grad = transformer_step(T, nn, norm_first, batch_first)
    close(values(out).ravel()[:6], TRANSFORMER_STEP_OUT[norm_first, batch_first], rtol=0, atol=2e-5)
    assert np.abs(values(encoder_grad)).sum() > 0 and np.abs(values(decoder_grad)).sum() > 0
    reference = pytorch()
    if reference is not None and T.__name__ == "autograd":
        for got, expected in zip((out, encoder_grad, decoder_grad), transformer_step(reference.torch, reference.nn,
                                                                                      norm_first, batch_first)):
            close(got, values(expected), rtol=1e-4, atol=1e-5)
