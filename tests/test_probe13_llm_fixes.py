"""Fixes found by the language-model programs of tests/test_programs_probe13_llm.py, each checked on chainrule
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
