# ruff: noqa: B007, E702, F841  (the programs are kept as their authors wrote them)
"""The model infrastructure of Hugging Face transformers-style code, written in plain PyTorch (see
tests/pytorch_programs.py): each program runs on chainrule and on PyTorch and the results must agree; what can be is
also checked by hand, so that the tests assert something where PyTorch is not installed. Attention masks: extended
padding masks ``(1 - mask) * finfo.min`` in float16 and float32, ``_expand_mask`` and ``_make_causal_mask`` with a
past, a sliding window, the 4-D mask from ``cache_position`` (``*=`` by a boolean tensor, which leaves -0.0),
position ids from ``cumsum`` under left padding, SDPA with boolean, float and ``is_causal`` masks, a decoder passing
its padding mask with ``is_causal=True``, a MultiheadAttention subclass canonicalising its masks by
``F._canonical_mask``."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Attention masks
# ----------------------------------------------------------------------------------------------


def masks_fp16(m):
    torch = m.torch
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = {}
    for dtype in (torch.float16, torch.float32):
        mn = torch.finfo(dtype).min
        ext = mask[:, None, None, :].to(dtype=dtype)
        ext = (1.0 - ext) * mn
        causal = torch.triu(torch.full((4, 4), mn, dtype=dtype), diagonal=1)
        comb = ext + causal[None, None]
        out[str(dtype).split(".")[-1]] = (ext.float(), comb.float(), comb.dtype == dtype, torch.isinf(comb).sum())
        scores = torch.zeros(2, 1, 4, 4, dtype=dtype) + comb
        out[str(dtype).split(".")[-1] + "_softmax"] = scores.float().softmax(-1)
        out[str(dtype).split(".")[-1] + "_softmax_float32"] = torch.softmax(scores, dim=-1, dtype=torch.float32)
    return out

def expand_mask(m):
    torch = m.torch
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    dtype = torch.float16
    bsz, src_len = mask.size()
    tgt_len = 3
    expanded_mask = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted_mask = 1.0 - expanded_mask
    r = inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.finfo(dtype).min)
    # _make_causal_mask
    input_ids_shape = (2, 3); past_key_values_length = 2
    mask2 = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min)
    mask_cond = torch.arange(mask2.size(-1))
    mask2.masked_fill_(mask_cond < (mask_cond + 1).view(mask2.size(-1), 1), 0)
    mask2 = mask2.to(dtype)
    mask2 = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype), mask2], dim=-1)
    causal = mask2[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)
    comb = causal.masked_fill(r.bool(), torch.finfo(dtype).min)
    # sliding window
    diagonal = past_key_values_length - 2 + 1
    context_mask = torch.tril(torch.ones_like(mask2, dtype=torch.bool), diagonal=diagonal)
    mask3 = mask2.masked_fill(context_mask, torch.finfo(dtype).min)
    return (r, causal, comb, mask3, r.dtype == dtype, str(torch.finfo(dtype).min), torch.finfo(dtype).eps,
            torch.finfo(torch.bfloat16).tiny)

def position_ids_program(m):
    torch = m.torch
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]])
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    cache_position = torch.arange(2, 5)
    p2 = position_ids[:, -3:]
    return position_ids, p2, position_ids.dtype == torch.int64, attention_mask.cumsum(-1).dtype == torch.int64

def sdpa_masks(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 4, 3, generator=g)
    k = torch.randn(2, 2, 6, 3, generator=g)
    v = torch.randn(2, 2, 6, 3, generator=g)
    pad = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]).bool()
    b = pad[:, None, None, :]
    causal = torch.ones(4, 6, dtype=torch.bool).tril(diagonal=2)
    both = b & causal
    fl = torch.zeros(2, 1, 4, 6).masked_fill(~both, float("-inf"))
    o1 = F.scaled_dot_product_attention(q, k, v, attn_mask=both)
    o2 = F.scaled_dot_product_attention(q, k, v, attn_mask=fl)
    o3 = F.scaled_dot_product_attention(q, k[:, :, :4], v[:, :, :4], is_causal=True)
    o4 = F.scaled_dot_product_attention(q, k, v, attn_mask=both, scale=0.3)
    # float mask with finfo.min, fully masked row
    fm = torch.zeros(2, 1, 4, 6).masked_fill(~both, torch.finfo(torch.float32).min)
    fm[0, 0, 0] = torch.finfo(torch.float32).min
    o5 = F.scaled_dot_product_attention(q, k, v, attn_mask=fm)
    # 2D bool mask broadcast
    o6 = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
    return o1, o2, o3, o4, o5, o6



def test_extended_and_causal_masks_in_float16_and_float32():
    ours, _ = run_both(masks_fp16)
    for name, lowest in (("float16", -65504.0), ("float32", float(np.finfo(np.float32).min))):
        ext, comb, kept_dtype, infinities = ours[name]
        np.testing.assert_array_equal(ext[:, 0, 0], [[0, 0, 0, lowest], [0, 0, 0, 0]])
        assert kept_dtype and infinities == 3  # finfo.min + finfo.min overflows: the padded key above the diagonal
        assert np.isneginf(comb[0, 0, :3, 3]).all() and comb[0, 0, 3, 3] == lowest and comb[0, 0, 0, 1] == lowest
        np.testing.assert_allclose(ours[name + "_softmax"][1, 0, 1], [0.5, 0.5, 0, 0], atol=1e-6)
        np.testing.assert_allclose(ours[name + "_softmax_float32"][0, 0, 3], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-6)


def test_expand_mask_causal_mask_with_a_past_and_a_sliding_window():
    r, causal, comb, window, kept, lowest, eps, tiny = run_both(expand_mask)[0]
    assert kept and lowest == "-65504.0" and eps == pytest.approx(2 ** -10) and tiny == pytest.approx(2 ** -126)
    np.testing.assert_array_equal(r[0, 0, 0] == 0, [False, False, True, True, True])
    np.testing.assert_array_equal(causal[0, 0] == 0, np.tril(np.ones((3, 5), bool), 2))
    np.testing.assert_array_equal(comb[0, 0] == 0, np.tril(np.ones((3, 5), bool), 2) & [0, 0, 1, 1, 1])


def test_position_ids_under_left_padding():
    position_ids, last, is_long, cumsum_long = run_both(position_ids_program)[0]
    np.testing.assert_array_equal(position_ids, [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4], [1, 0, 1, 1, 2]])
    assert is_long and cumsum_long


def test_sdpa_with_boolean_float_and_causal_masks():
    o1, o2, o3, o4, o5, o6 = run_both(sdpa_masks)[0]
    np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-7)  # a boolean mask is a float mask of 0 and -inf
    assert np.isfinite(o5).all() and o3.shape == o1.shape == o6.shape


def hf_causal_cache_position(m):
    torch = m.torch
    out = {}
    for dtype in (torch.float16, torch.float32):
        min_dtype = torch.finfo(dtype).min
        sequence_length, target_length, batch_size = 3, 6, 2
        cache_position = torch.arange(2, 5)
        attention_mask = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
        causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
        if sequence_length != 1:
            causal_mask = torch.triu(causal_mask, diagonal=1)
        causal_mask *= torch.arange(target_length) > cache_position.reshape(-1, 1)
        cm0 = causal_mask.clone()
        signbits = torch.signbit(causal_mask)
        causal_mask = causal_mask[None, None, :, :].expand(batch_size, 1, -1, -1)
        causal_mask = causal_mask.clone()
        mask_length = attention_mask.shape[-1]
        padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :]
        pdt = padding_mask.dtype == dtype
        padding_mask = padding_mask == 0
        causal_mask[:, :, :, :mask_length] = causal_mask[:, :, :, :mask_length].masked_fill(padding_mask, min_dtype)
        out[str(dtype).split(".")[-1]] = (cm0.float(), signbits, pdt, causal_mask.float(), padding_mask)
    return out



def test_causal_mask_from_cache_position_as_transformers_builds_it():
    ours, _ = run_both(hf_causal_cache_position)
    for name, lowest in (("float16", -65504.0), ("float32", float(np.finfo(np.float32).min))):
        before, signbits, kept_dtype, mask, padding = ours[name]
        future = np.arange(6) > np.arange(2, 5)[:, None]
        np.testing.assert_array_equal(before, np.where(future, lowest, 0.0))
        np.testing.assert_array_equal(signbits, np.triu(np.ones((3, 6), bool), 1))  # -0.0 where finfo.min * False
        assert kept_dtype
        masked = future | (np.array([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]) == 0)[:, None]
        np.testing.assert_array_equal(mask[:, 0] == lowest, masked)
        np.testing.assert_array_equal(padding[:, 0], ~future[None] & masked)



def causal_lm_padding_mask_with_is_causal(m, combine):
    """A decoder whose attention passes the padding mask and is_causal=True together (PyTorch's CPU flash kernel
    applies both), trained one step; ``combine`` builds the one mask by hand instead."""
    torch, nn, F = m.torch, m.nn, m.F

    class SelfAttention(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)

        def forward(self, x, padding_mask):
            B, T, C = x.shape
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            keep = padding_mask[:, None, None, :].bool()
            if combine:
                causal = torch.ones(T, T, dtype=torch.bool).tril()
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep & causal)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, is_causal=True)
            return self.out(y.transpose(1, 2).reshape(B, T, C))

    torch.manual_seed(0)
    emb, attn, head = nn.Embedding(10, 8), SelfAttention(), nn.Linear(8, 10)
    params = [*emb.parameters(), *attn.parameters(), *head.parameters()]
    optimizer = m.optim.SGD(params, lr=0.5)
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])
    padding_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = ids.masked_fill(padding_mask == 0, -100)
    losses = []
    for step in range(2):
        optimizer.zero_grad()
        logits = head(attn(emb(ids), padding_mask))
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 10), labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        losses.append(loss)
    return losses, [p.detach().clone() for p in params]


def test_sdpa_with_a_padding_mask_and_is_causal_together():
    ours, _ = run_both(causal_lm_padding_mask_with_is_causal, False)
    by_hand, _ = run_both(causal_lm_padding_mask_with_is_causal, True)
    for a, b in zip(ours[0] + ours[1], by_hand[0] + by_hand[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def mha_subclass_replicating_mask_canonicalisation(m):
    """An nn.MultiheadAttention subclass whose forward replicates the upstream mask canonicalisation
    (``F._canonical_mask`` with ``F._none_or_dtype``) before adding a learnt per-key bias."""
    torch, nn, F = m.torch, m.nn, m.F

    class BiasedAttention(nn.MultiheadAttention):
        def __init__(self, embed_dim, num_heads, src_len):
            super().__init__(embed_dim, num_heads, batch_first=True)
            self.key_bias = nn.Parameter(torch.linspace(-0.5, 0.5, src_len))

        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            key_padding_mask = F._canonical_mask(
                mask=key_padding_mask,
                mask_name="key_padding_mask",
                other_type=F._none_or_dtype(attn_mask),
                other_name="attn_mask",
                target_type=query.dtype,
            )
            attn_mask = F._canonical_mask(
                mask=attn_mask,
                mask_name="attn_mask",
                other_type=None,
                other_name="",
                target_type=query.dtype,
                check_other=False,
            )
            attn_mask = attn_mask + self.key_bias
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                   need_weights=True)

    torch.manual_seed(0)
    attention = BiasedAttention(4, 2, 3)
    x = torch.randn(2, 3, 4)
    causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
    padding = torch.tensor([[False, False, True], [False, False, False]])
    out, weights = attention(x, x, x, key_padding_mask=padding, attn_mask=causal)
    out.sum().backward()
    return out, weights, attention.key_bias.grad


def test_multihead_attention_subclass_canonicalising_its_masks():
    out, weights, grad = run_both(mha_subclass_replicating_mask_canonicalisation)[0]
    assert (weights[:, np.triu_indices(3, 1)[0], np.triu_indices(3, 1)[1]] == 0).all()  # causal
    assert (weights[0, :, 2] == 0).all() and np.allclose(weights.sum(-1), 1)  # the padded key
    assert np.isfinite(grad).all() and grad[2] != 0
