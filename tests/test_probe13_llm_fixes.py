"""Fixes found by the language-model programs of tests/test_programs_probe13_llm_*.py, each checked on chainrule
and on PyTorch (the ``T`` fixture)."""

import importlib
import warnings

import numpy as np
import pytest

from tests import ported_nn

nn = ported_nn.nn  # the fixtures
F = ported_nn.F


def attention_bias(nn):
    return importlib.import_module(nn.__name__ + ".attention.bias")


def test_causal_biases_materialise_as_documented(T, nn):
    bias = attention_bias(nn)
    upper, lower = bias.causal_upper_left(3, 4), bias.causal_lower_right(3, 4)
    assert upper.variant == bias.CausalVariant.UPPER_LEFT and lower.variant == bias.CausalVariant.LOWER_RIGHT
    assert (lower.seq_len_q, lower.seq_len_kv) == (3, 4)
    np.testing.assert_array_equal(upper._materialize().numpy(), [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(lower._materialize().numpy(), [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert lower._materialize().dtype == T.bool
    with pytest.raises(AssertionError, match="only supports 2D"):
        bias.causal_lower_right(2, 3, 4)
    with pytest.warns(UserWarning, match="Lower right causal bias will produce NaNs"):
        bias.causal_lower_right(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bias.causal_upper_left(4, 3)


def test_sdpa_takes_a_causal_bias_as_its_mask(T, nn, F):
    """Decoding 3 queries after 2 cached keys: the lower-right bias is the shifted triangle, the upper-left one
    is_causal; values and gradients as with the explicit boolean masks."""
    bias = attention_bias(nn)
    g = T.Generator().manual_seed(0)
    q = T.randn(2, 4, 3, 8, generator=g, dtype=T.float64, requires_grad=True)
    k = T.randn(2, 2, 5, 8, generator=g, dtype=T.float64, requires_grad=True)
    v = T.randn(2, 2, 5, 8, generator=g, dtype=T.float64, requires_grad=True)
    for factory, diagonal in ((bias.causal_lower_right, 2), (bias.causal_upper_left, 0)):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=factory(3, 5), scale=0.4, enable_gqa=True)
        mask = T.ones(3, 5, dtype=T.bool).tril(diagonal)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.4, enable_gqa=True)
        np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
        grads = T.autograd.grad(out.sin().sum(), (q, k, v))
        expected_grads = T.autograd.grad(expected.sin().sum(), (q, k, v))
        for a, b in zip(grads, expected_grads):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    square = F.scaled_dot_product_attention(q, q, q, attn_mask=bias.causal_lower_right(3, 3))
    np.testing.assert_allclose(square.detach().numpy(), F.scaled_dot_product_attention(
        q, q, q, is_causal=True).detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="CausalBias should not be used with causal=True"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=bias.causal_lower_right(3, 3), is_causal=True)


def _half_batch(T):
    g = T.Generator().manual_seed(0)
    x = (T.randn(64, 8, generator=g) * 3).half()
    w = T.randn(8, generator=g) * 1.7 + 0.1
    b = T.randn(8, generator=g)
    return x, w, b


def test_float16_norms_are_computed_in_float32_and_rounded_once(T, F):
    """PyTorch's layer_norm / rms_norm / group_norm kernels normalise a float16 input and apply its float16
    weight in float32, rounding the output once (rounding the normalised values first differs by an ulp in a
    quarter of the elements)."""
    x, w, b = _half_batch(T)
    xf, wh, bh = x.float(), w.half(), b.half()
    centred = xf - xf.mean(-1, keepdim=True)
    by_hand = (centred * (centred.pow(2).mean(-1, keepdim=True) + 1e-5).rsqrt() * wh.float() + bh.float()).half()
    np.testing.assert_array_equal(F.layer_norm(x, (8,), wh, bh, 1e-5).numpy(), by_hand.numpy())
    by_hand = (xf * (xf.pow(2).mean(-1, keepdim=True) + 1e-6).rsqrt() * wh.float()).half()
    np.testing.assert_array_equal(F.rms_norm(x, (8,), wh, 1e-6).numpy(), by_hand.numpy())
    grouped = F.group_norm(x.view(8, 8, 8), 2, wh, bh)
    expected = F.group_norm(x.view(8, 8, 8).float(), 2, wh.float(), bh.float()).half()
    np.testing.assert_array_equal(grouped.numpy(), expected.numpy())


def test_float16_input_with_float32_norm_parameters(T, F, nn):
    """Mixed precision keeps the norms in float32 in a half model: PyTorch takes float32 parameters with a
    float16 input (the output float16, the gradients each in its tensor's dtype); other mixes are refused, but
    rms_norm takes any weight and gives the input's dtype."""
    x, w, b = _half_batch(T)
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    xf = x.detach().float()
    centred = xf - xf.mean(-1, keepdim=True)
    normalized = centred * (centred.pow(2).mean(-1, keepdim=True) + 1e-5).rsqrt()
    y = F.layer_norm(x, (8,), w, b, 1e-5)
    assert y.dtype == T.float16
    np.testing.assert_array_equal(y.detach().numpy(), (normalized * w.detach() + b.detach()).half().numpy())
    y.float().sum().backward()
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (T.float16, T.float32, T.float32)
    # (PyTorch's mixed-dtype backward kernel sums the weight's gradient less exactly: to about 1e-3)
    np.testing.assert_allclose(w.grad.numpy(), normalized.sum(0).numpy(), rtol=5e-3, atol=1e-3)
    norm = nn.RMSNorm(8)  # float32 weight, eps None
    assert norm(x).dtype == T.float16
    assert F.rms_norm(x.detach().float(), (8,), w.detach().double()).dtype == T.float32
    assert F.group_norm(x.view(8, 8, 8), 2, w, b).dtype == T.float16
    with pytest.raises(RuntimeError):
        F.layer_norm(x.detach().float(), (8,), w.detach().half())
    with pytest.raises(RuntimeError):
        F.layer_norm(x.detach().double(), (8,), w.detach())


def test_rms_norm_default_eps_of_a_float16_input_is_float32s(T, nn):
    """eps=None (nn.RMSNorm's default) is the machine epsilon of the dtype it computes in: float32's for a
    float16 input, not float16's (which would shrink small activations by half)."""
    x = T.tensor([[0.01, 0.02, -0.015, 0.03]]).half()
    xf = x.float()
    expected = (xf * (xf.pow(2).mean(-1, keepdim=True) + T.finfo(T.float32).eps).rsqrt()).half()
    np.testing.assert_array_equal(nn.RMSNorm(4).half()(x).detach().numpy(), expected.numpy())
    np.testing.assert_array_equal(nn.functional.rms_norm(x, (4,)).numpy(), expected.numpy())


def test_float16_attention_is_computed_in_float32(T, F, nn):
    """PyTorch's math kernel computes float16 attention (and its backward) in float32, rounding once: rounding
    each step in float16 put half the outputs and three quarters of the gradients an ulp or more off."""
    attention = importlib.import_module(nn.__name__ + ".attention")
    g = T.Generator().manual_seed(0)
    q, k, v = (T.randn(2, h, 16, 32, generator=g).half().requires_grad_() for h in (4, 2, 2))
    mask = T.zeros(16, 16).masked_fill(~T.ones(16, 16, dtype=T.bool).tril(), float("-inf")).half()
    with attention.sdpa_kernel(attention.SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert out.dtype == T.float16
    grads = T.autograd.grad(out.float().pow(2).sum(), (q, k, v))
    wide = [t.detach().float().requires_grad_() for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*wide, attn_mask=mask.float(), enable_gqa=True)
    expected_grads = T.autograd.grad(expected.half().float().pow(2).sum(), wide)
    pairs = [(out, expected.half())] + [(a, b.half()) for a, b in zip(grads, expected_grads)]
    for ours, rounded_once in pairs:
        assert ours.dtype == T.float16
        assert (ours == rounded_once).float().mean().item() > 0.9  # (PyTorch: 95% of one gradient, ours 99%)
        np.testing.assert_allclose(ours.detach().float().numpy(), rounded_once.detach().float().numpy(), rtol=1e-3,
                                   atol=1e-3)


def rounded_alike(ours, expected):
    ours, expected = np.asarray(ours, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert (ours == expected).mean() > 0.99
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=1e-2)


def test_float16_addmm_baddbmm_and_contiguous_linear_round_once(T, F):
    """PyTorch's addmm and baddbmm add float16's scaled product in float32 and round once, and F.linear runs a
    contiguous input (any number of dims) with a bias through addmm; a non-contiguous one takes matmul then add,
    rounded twice. (Equal but where float32 sums in another order: rounding twice left a quarter an ulp off.)"""
    g = T.Generator().manual_seed(0)
    x = T.randn(4, 64, 256, generator=g).half()
    w, b = T.randn(48, 256, generator=g).half(), T.randn(48, generator=g).half()
    c = T.randn(64, 48, generator=g).half()

    def f(t):
        return t.float()

    once = (f(x) @ f(w).t() + f(b)).half()
    rounded_alike(F.linear(x, w, b).numpy(), once.numpy())
    rounded_alike(F.linear(x[0], w, b).numpy(), once[0].numpy())
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    rounded_alike(F.linear(strided, w, b).numpy(), ((x @ w.t()) + b).numpy())
    rounded_alike(T.addmm(c, x[0], w.t(), beta=0.5, alpha=0.25).numpy(),
                                  (0.5 * f(c) + 0.25 * (f(x[0]) @ f(w).t())).half().numpy())
    batched = T.baddbmm(c, x, w.t().expand(4, -1, -1), alpha=0.5)
    rounded_alike(batched.numpy(), (f(c) + 0.5 * (f(x) @ f(w).t())).half().numpy())
    assert batched.dtype == T.float16


def test_sdpa_refuses_masks_of_other_dtypes(T, F):
    """An attn_mask is bool, float32 or the query's dtype: an integer 0/1 mask would otherwise be added to the
    scores as a bias (PyTorch refuses it, and a float64 mask for a float32 query); query, key and value share
    one dtype (a float16 query is not computed in float32 with float32 keys)."""
    q = T.randn(1, 2, 4, 8)
    for query, key in ((q.half(), q), (q, q.double())):
        with pytest.raises(RuntimeError, match="Expected query, key, and value to have the same dtype"):
            F.scaled_dot_product_attention(query, key, key)
    for mask in (T.ones(4, 4, dtype=T.long), T.zeros(4, 4, dtype=T.float64), T.zeros(4, 4).half()):
        with pytest.raises(RuntimeError, match="Expected attn_mask dtype to be bool or float or to match query dtype"):
            F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    assert F.scaled_dot_product_attention(q.double(), q.double(), q.double(), attn_mask=T.zeros(4, 4)).dtype == \
        T.float64
    assert F.scaled_dot_product_attention(q.half(), q.half(), q.half(), attn_mask=T.zeros(4, 4)).dtype == T.float16


def test_compiled_module_writes_attributes_and_training_through(T, nn):
    """torch.compile(module)'s wrapper reads and writes attributes on the module (a flag set on the compiled
    model is the module's, as forward reads it), its training flag is the module's, and what it registers
    itself (a buffer) stays its own."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
    compiled = T.compile(model, backend="eager")
    assert not compiled.training
    model.train()
    assert compiled.training  # the module's flag, not a copy taken when compiling
    compiled.training = False
    assert not model.training and model[1].training  # (the flag alone, as an assignment is)
    compiled.eval()
    assert not model[1].training
    compiled.use_cache = True
    assert model.use_cache is True and "use_cache" not in compiled.__dict__
    compiled.head = nn.Linear(2, 3)
    assert model.head.out_features == 3 and "_orig_mod.head.weight" in compiled.state_dict()
    del compiled.use_cache
    assert not hasattr(model, "use_cache")
    compiled.register_buffer("step", T.zeros(1))
    assert "step" in dict(compiled.named_buffers()) and not hasattr(model, "step")
