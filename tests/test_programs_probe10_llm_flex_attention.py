# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Language-model code as it is written today, run as tests/probe10_llm_common.py says. FlexAttention with document
masking and an ALiBi score_mod, and gpt-fast's FlexAttention decoding (sliced BlockMasks, a static KV cache)."""

import math

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# FlexAttention as gpt-fast / torchtitan / attention-gym write it: documents packed into one sequence,
# masked by and_masks(causal, same document) through create_block_mask, a soft-capping score_mod and an
# ALiBi one capturing a slopes tensor, grouped-query heads by enable_gqa. PyTorch's CPU kernel has no
# backward, so PyTorch's side gives the forward pass, and the training is checked against the same model
# written with SDPA and the mask spelt out, on both libraries
# ----------------------------------------------------------------------------------------------

FX_V, FX_D, FX_H, FX_KV, FX_T = 11, 8, 4, 2, 8


def make_flex_lm(m, attn="flex"):
    import importlib

    torch, nn = m.torch, m.nn
    flex = importlib.import_module(nn.__name__ + ".attention.flex_attention")
    flex_attention, create_block_mask, and_masks = flex.flex_attention, flex.create_block_mask, flex.and_masks
    document_id = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    slopes = torch.tensor([2 ** -(i + 1) for i in range(FX_H)])

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def document_mask(b, h, q_idx, kv_idx):
        return document_id[q_idx] == document_id[kv_idx]

    def alibi_softcap(score, b, h, q_idx, kv_idx):
        score = score - slopes[h] * (q_idx - kv_idx)
        return 20.0 * torch.tanh(score / 20.0)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.wqkv = nn.Linear(FX_D, (FX_H + 2 * FX_KV) * (FX_D // FX_H), bias=False)
            self.wo = nn.Linear(FX_D, FX_D, bias=False)

        def forward(self, x, block_mask):
            bsz, seqlen, _ = x.shape
            head_dim = FX_D // FX_H
            kv_size = FX_KV * head_dim
            q, k, v = self.wqkv(x).split([FX_D, kv_size, kv_size], dim=-1)
            q = q.view(bsz, seqlen, FX_H, head_dim).transpose(1, 2)
            k = k.view(bsz, seqlen, FX_KV, head_dim).transpose(1, 2)
            v = v.view(bsz, seqlen, FX_KV, head_dim).transpose(1, 2)
            if attn == "flex":
                y = flex_attention(q, k, v, score_mod=alibi_softcap, block_mask=block_mask, enable_gqa=True)
            else:  # the same attention, spelt out for SDPA
                i = torch.arange(seqlen)
                rel = (i[:, None] - i[None, :]).float()
                scores = q @ k.repeat_interleave(2, dim=1).transpose(-2, -1) / math.sqrt(head_dim)
                scores = 20.0 * torch.tanh((scores - slopes[:, None, None] * rel) / 20.0)
                keep = (i[:, None] >= i[None, :]) & (document_id[:, None] == document_id[None, :])
                scores = scores.masked_fill(~keep, float("-inf"))
                y = torch.softmax(scores, dim=-1) @ v.repeat_interleave(2, dim=1)
            y = y.transpose(1, 2).contiguous().view(bsz, seqlen, FX_D)
            return self.wo(y)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(FX_V, FX_D)
            self.norm = nn.RMSNorm(FX_D)
            self.attention = Attention()
            self.output = nn.Linear(FX_D, FX_V, bias=False)

        def forward(self, idx):
            block_mask = create_block_mask(and_masks(causal, document_mask), None, None, FX_T, FX_T, device="cpu",
                                           BLOCK_SIZE=4)
            h = self.tok_embeddings(idx)
            h = h + self.attention(self.norm(h), block_mask)
            return self.output(h), block_mask

    return Model()


def flex_tokens(m):
    return m.torch.tensor(np.random.default_rng(12).integers(0, FX_V, (2, FX_T + 1)))


def flex_forward(m, weights):
    import warnings

    torch = m.torch
    model = load(m, make_flex_lm(m), weights)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's note that it runs uncompiled
        logits, block_mask = model(flex_tokens(m)[:, :-1])
    return logits, block_mask.kv_num_blocks, block_mask.full_kv_num_blocks, block_mask.to_dense(), \
        block_mask.sparsity()


def flex_training(m, weights, attn, steps=3):
    F = m.F
    model = load(m, make_flex_lm(m, attn), weights)
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = flex_tokens(m)
    losses = []
    for step in range(steps):
        logits, _ = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, FX_V), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach() for p in model.parameters()]


def test_flex_attention_document_masking():
    weights = weights_of(make_flex_lm)
    (logits, partial, full, dense, sparsity), _ = run_both(flex_forward, weights, rtol=1e-5, atol=1e-6)
    assert dense.tolist() == [[[[1, 0], [1, 1]]]] and full.tolist() == [[[0, 0]]] and sparsity == 25.0
    by_sdpa, _ = run_both(flex_training, weights, "sdpa", rtol=1e-4, atol=1e-5)
    by_flex = flex_training(OURS, weights, "flex")  # (PyTorch's CPU FlexAttention refuses backward)
    np.testing.assert_allclose(by_flex[0], by_sdpa[0], rtol=1e-5)
    for a, b in zip(by_flex[1], by_sdpa[1]):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-5)
    assert by_flex[0][-1] < by_flex[0][0]


# ----------------------------------------------------------------------------------------------
# gpt-fast's FlexAttention decoding (generate.py / model.py): the prefill mask from create_block_mask, the
# decoding mask cut from a max_seq_length x max_seq_length one by block_mask[:, :, input_pos // BLOCK_SIZE]
# with its mask_mod set again and offset by input_pos[0] and seq_lengths set to (1, max_seq_length), a static
# KV cache written by index assignment, sampling by exponential_ (multinomial_sample_one_no_sync)
# ----------------------------------------------------------------------------------------------

GF_V, GF_D, GF_H, GF_KV, GF_MAX = 13, 8, 2, 1, 8


def make_gpt_fast(m):
    import importlib

    torch, nn = m.torch, m.nn
    flex_attention = importlib.import_module(nn.__name__ + ".attention.flex_attention").flex_attention

    class KVCache(nn.Module):
        def __init__(self, max_batch_size, max_seq_length, n_heads, head_dim, dtype=torch.float32):
            super().__init__()
            cache_shape = (max_batch_size, n_heads, max_seq_length, head_dim)
            self.register_buffer("k_cache", torch.zeros(cache_shape, dtype=dtype))
            self.register_buffer("v_cache", torch.zeros(cache_shape, dtype=dtype))

        def update(self, input_pos, k_val, v_val):
            assert input_pos.shape[0] == k_val.shape[2]
            k_out = self.k_cache
            v_out = self.v_cache
            k_out[:, :, input_pos] = k_val
            v_out[:, :, input_pos] = v_val
            return k_out, v_out

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.head_dim = GF_D // GF_H
            self.wqkv = nn.Linear(GF_D, (GF_H + 2 * GF_KV) * self.head_dim, bias=False)
            self.wo = nn.Linear(GF_D, GF_D, bias=False)
            self.kv_cache = None

        def forward(self, x, mask, input_pos=None):
            bsz, seqlen, _ = x.shape
            kv_size = GF_KV * self.head_dim
            q, k, v = self.wqkv(x).split([GF_D, kv_size, kv_size], dim=-1)
            q = q.view(bsz, seqlen, GF_H, self.head_dim)
            k = k.view(bsz, seqlen, GF_KV, self.head_dim)
            v = v.view(bsz, seqlen, GF_KV, self.head_dim)
            q, k, v = map(lambda x: x.transpose(1, 2), (q, k, v))
            if self.kv_cache is not None:
                k, v = self.kv_cache.update(input_pos, k, v)
            y = flex_attention(q, k, v, block_mask=mask, enable_gqa=(GF_H != GF_KV))
            y = y.transpose(1, 2).contiguous().view(bsz, seqlen, GF_D)
            return self.wo(y)

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(GF_V, GF_D)
            self.pos_embeddings = nn.Embedding(GF_MAX, GF_D)
            self.attention = Attention()
            self.norm = nn.RMSNorm(GF_D, eps=1e-5)
            self.output = nn.Linear(GF_D, GF_V, bias=False)
            self.max_seq_length = -1

        def setup_caches(self, max_batch_size, max_seq_length):
            self.max_seq_length = max_seq_length
            self.attention.kv_cache = KVCache(max_batch_size, max_seq_length, GF_KV, GF_D // GF_H)

        def get_mask_mod(self, mask_mod, offset):
            def _mask_mod(b, h, q, kv):
                return mask_mod(b, h, q + offset, kv)

            return _mask_mod

        def forward(self, mask, idx, input_pos=None):
            mask.mask_mod = self.get_mask_mod(mask.mask_mod, input_pos[0])
            x = self.tok_embeddings(idx) + self.pos_embeddings(input_pos)
            x = x + self.attention(x, mask, input_pos)
            return self.output(self.norm(x))

    return Transformer()


def gpt_fast_generate(m, weights):
    import importlib
    import warnings

    torch, nn = m.torch, m.nn
    flex = importlib.import_module(nn.__name__ + ".attention.flex_attention")
    create_block_mask = flex.create_block_mask
    model = load(m, make_gpt_fast(m), weights).eval()

    def causal_mask(b, h, q, kv):
        return q >= kv

    def multinomial_sample_one_no_sync(probs_sort):
        q = torch.empty_like(probs_sort).exponential_(1)
        return torch.argmax(probs_sort / q, dim=-1, keepdim=True).to(dtype=torch.int)

    def logits_to_probs(logits, temperature=1.0, top_k=None):
        logits = logits / max(temperature, 1e-5)
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            pivot = v.select(-1, -1).unsqueeze(-1)
            logits = torch.where(logits < pivot, -float("Inf"), logits)
        return nn.functional.softmax(logits, dim=-1)

    def sample(logits, temperature=1.0, top_k=None):
        probs = logits_to_probs(logits[:, -1], temperature, top_k)
        idx_next = multinomial_sample_one_no_sync(probs)
        return idx_next, probs

    def prefill(model, x, input_pos, **sampling_kwargs):
        mask = create_block_mask(causal_mask, 1, 1, input_pos.shape[0], model.max_seq_length, device=x.device,
                                 BLOCK_SIZE=2)
        logits = model(mask, x, input_pos)
        return sample(logits, **sampling_kwargs)[0], logits

    def decode_one_token(model, x, input_pos, block_mask, **sampling_kwargs):
        assert input_pos.shape[-1] == 1
        block_index = input_pos // block_mask.BLOCK_SIZE[0]
        mask = block_mask[:, :, block_index]
        mask.mask_mod = block_mask.mask_mod
        mask.seq_lengths = (1, model.max_seq_length)
        logits = model(mask, x, input_pos)
        return sample(logits, **sampling_kwargs), logits

    prompt = torch.tensor([3, 1, 4], dtype=torch.int)
    T = prompt.size(0)
    with torch.device("cpu"):
        model.setup_caches(max_batch_size=1, max_seq_length=GF_MAX)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's note that it runs uncompiled
        input_pos = torch.arange(0, T)
        next_token, prefill_logits = prefill(model, prompt.view(1, -1), input_pos, temperature=0.0)
        block_mask = create_block_mask(causal_mask, 1, 1, model.max_seq_length, model.max_seq_length, BLOCK_SIZE=2)
        input_pos = torch.tensor([T], dtype=torch.int)
        cur_token, new_tokens, step_logits = next_token.view(1, -1), [next_token.clone()], []
        for i in range(3):
            (next_token, next_prob), logits = decode_one_token(model, cur_token, input_pos, block_mask,
                                                               temperature=0.0)
            input_pos += 1
            new_tokens.append(next_token.clone())
            step_logits.append(logits[:, -1])
            cur_token = next_token.clone()
        sequence = torch.cat([prompt, torch.cat(new_tokens).view(-1)])
        # the whole sequence at once, for the same logits
        model.setup_caches(max_batch_size=1, max_seq_length=GF_MAX)
        full_mask = create_block_mask(causal_mask, 1, 1, 6, GF_MAX, BLOCK_SIZE=2)
        full = model(full_mask, sequence[:6].view(1, -1), torch.arange(0, 6))
    return sequence, prefill_logits, torch.stack(step_logits, 1), full, block_mask[:, :, 1].kv_num_blocks


def test_gpt_fast_flex_decoding():
    weights = weights_of(make_gpt_fast)
    ours, _ = run_both(gpt_fast_generate, weights, rtol=1e-4, atol=1e-5)
    sequence, prefill_logits, step_logits, full, sliced = ours
    np.testing.assert_allclose(step_logits[0], full[0, 3:6], rtol=1e-4, atol=1e-5)  # the cache and the sliced masks
    np.testing.assert_allclose(prefill_logits[0], full[0, :3], rtol=1e-4, atol=1e-5)
    assert sequence.dtype == np.int32 and sliced.shape == (1, 1, 1)
