# ruff: noqa: B007, B008, F841  (the programs are kept as their authors wrote them)
"""Language-model code as it is written today, run as tests/probe10_llm_common.py says. lit-gpt (partial rotary,
``index_copy_`` KV cache, chunked cross-entropy, its sampler asking dynamo); Hugging Face's logits processors and the
Trainer's label smoother."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Lightning's lit-gpt (litgpt/model.py, generate/base.py): a fused qkv split per query group with
# expand for grouped-query attention, partial rotary embeddings (build_rope_cache with repeat(1, 2),
# apply_rope on a slice), a bool mask cache read by index_select, SDPA with attn_mask, scale and
# is_causal=mask is None, a KV cache written by index_copy_ on buffers, input_pos[-1:].add_(1),
# chunked_cross_entropy, and the sampler (topk then scatter_ into full_like(-inf), top-p, and the
# exponential_ trick lit-gpt uses under compilation)
# ----------------------------------------------------------------------------------------------

LG_V, LG_D, LG_H, LG_G, LG_HS, LG_ROPE, LG_MAX = 19, 16, 4, 2, 4, 2, 12


def make_litgpt(m):
    torch, nn = m.torch, m.nn

    def build_rope_cache(seq_len, n_elem, device=None, base=10000, condense_ratio=1):
        theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, device=device).float() / n_elem))
        seq_idx = torch.arange(seq_len, device=device) / condense_ratio
        idx_theta = torch.outer(seq_idx, theta).repeat(1, 2)
        return torch.cos(idx_theta), torch.sin(idx_theta)

    def apply_rope(x, cos, sin):
        head_size = x.size(-1)
        x1 = x[..., : head_size // 2]
        x2 = x[..., head_size // 2:]
        rotated = torch.cat((-x2, x1), dim=-1)
        roped = (x * cos) + (rotated * sin)
        return roped.to(dtype=x.dtype)

    class KVCache(nn.Module):
        def __init__(self, k_shape, v_shape, device=None, dtype=None):
            super().__init__()
            self.register_buffer("k", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)
            self.register_buffer("v", torch.zeros(v_shape, device=device, dtype=dtype), persistent=False)

        def forward(self, input_pos, k, v):
            self.k = self.k.to(k.dtype)
            self.v = self.v.to(v.dtype)
            k = self.k.index_copy_(2, input_pos, k)
            v = self.v.index_copy_(2, input_pos, v)
            return k, v

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            shape = (LG_H + 2 * LG_G) * LG_HS
            self.attn = nn.Linear(LG_D, shape, bias=False)
            self.proj = nn.Linear(LG_H * LG_HS, LG_D, bias=False)
            self.kv_cache = None

        def forward(self, x, cos, sin, mask=None, input_pos=None):
            B, T, C = x.size()
            qkv = self.attn(x)
            q_per_kv = LG_H // LG_G
            total_qkv = q_per_kv + 2
            qkv = qkv.view(B, T, LG_G, total_qkv, LG_HS)
            qkv = qkv.permute(0, 2, 3, 1, 4)
            q, k, v = qkv.split((q_per_kv, 1, 1), dim=2)
            if LG_G != LG_H and (input_pos is None or LG_G != 1):
                k = k.expand(B, LG_G, q_per_kv, T, LG_HS)
                v = v.expand(B, LG_G, q_per_kv, T, LG_HS)
            q = q.reshape(B, -1, T, LG_HS)
            k = k.reshape(B, -1, T, LG_HS)
            v = v.reshape(B, -1, T, LG_HS)
            q_roped = apply_rope(q[..., :LG_ROPE], cos, sin)
            k_roped = apply_rope(k[..., :LG_ROPE], cos, sin)
            q = torch.cat((q_roped, q[..., LG_ROPE:]), dim=-1)
            k = torch.cat((k_roped, k[..., LG_ROPE:]), dim=-1)
            if input_pos is not None:
                if not isinstance(self.kv_cache, KVCache):
                    raise TypeError("You need to call `gpt.set_kv_cache()`")
                k, v = self.kv_cache(input_pos, k, v)
            y = self.scaled_dot_product_attention(q, k, v, mask)
            y = y.reshape(B, T, LG_HS * LG_H)
            return self.proj(y)

        def scaled_dot_product_attention(self, q, k, v, mask=None):
            scale = 1.0 / math.sqrt(LG_HS)
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scale,
                                                           is_causal=mask is None)
            return y.transpose(1, 2)

    class LLaMAMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_1 = nn.Linear(LG_D, 24, bias=False)
            self.fc_2 = nn.Linear(LG_D, 24, bias=False)
            self.proj = nn.Linear(24, LG_D, bias=False)

        def forward(self, x):
            x_fc_1 = self.fc_1(x)
            x_fc_2 = self.fc_2(x)
            x = nn.functional.silu(x_fc_1) * x_fc_2
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_1 = nn.RMSNorm(LG_D, eps=1e-5)
            self.attn = CausalSelfAttention()
            self.norm_2 = nn.RMSNorm(LG_D, eps=1e-5)
            self.mlp = LLaMAMLP()

        def forward(self, x, cos, sin, mask=None, input_pos=None):
            x = self.attn(self.norm_1(x), cos, sin, mask, input_pos) + x
            return self.mlp(self.norm_2(x)) + x

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm_head = nn.Linear(LG_D, LG_V, bias=False)
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(LG_V, LG_D),
                h=nn.ModuleList(Block() for _ in range(2)),
                ln_f=nn.RMSNorm(LG_D, eps=1e-5)))
            self.max_seq_length = LG_MAX
            cos, sin = build_rope_cache(LG_MAX, LG_ROPE)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
            self.mask_cache = None

        def set_kv_cache(self, batch_size):
            for block in self.transformer.h:
                shape = (batch_size, LG_H, LG_MAX, LG_HS)
                block.attn.kv_cache = KVCache(shape, shape)
            ones = torch.ones((LG_MAX, LG_MAX), dtype=torch.bool)
            self.mask_cache = torch.tril(ones).unsqueeze(0).unsqueeze(0)

        def clear_kv_cache(self):
            self.mask_cache = None
            for block in self.transformer.h:
                block.attn.kv_cache = None

        def forward(self, idx, input_pos=None):
            T = idx.size(1)
            if input_pos is not None:
                cos = self.cos.index_select(0, input_pos)
                sin = self.sin.index_select(0, input_pos)
                if self.mask_cache is None:
                    raise TypeError("You need to call `gpt.set_kv_cache()`")
                mask = self.mask_cache.index_select(2, input_pos)
            else:
                cos = self.cos[:T]
                sin = self.sin[:T]
                mask = None
            x = self.transformer.wte(idx)
            for block in self.transformer.h:
                x = block(x, cos, sin, mask, input_pos)
            x = self.transformer.ln_f(x)
            return self.lm_head(x)

    return GPT()


def chunked_cross_entropy(m, logits, targets, chunk_size=128, ignore_index=-100):
    torch = m.torch
    if isinstance(logits, list):
        if chunk_size == 0:
            logits = torch.cat(logits, dim=1)
            logits = logits.reshape(-1, logits.size(-1))
            targets = targets.reshape(-1)
            return m.F.cross_entropy(logits, targets, ignore_index=ignore_index)
        logit_chunks = [logit_chunk.reshape(-1, logit_chunk.size(-1)) for logit_chunk in logits]
        target_chunks = [target_chunk.reshape(-1) for target_chunk in targets.split(logits[0].size(1), dim=1)]
        loss_chunks = [
            m.F.cross_entropy(logit_chunk, target_chunk, ignore_index=ignore_index, reduction="none")
            for logit_chunk, target_chunk in zip(logit_chunks, target_chunks)]
        non_masked_elems = (targets != ignore_index).sum()
        return torch.cat(loss_chunks).sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))
    logits = logits.reshape(-1, logits.size(-1))
    targets = targets.reshape(-1)
    if chunk_size == 0:
        return m.F.cross_entropy(logits, targets, ignore_index=ignore_index)
    logit_chunks = logits.split(chunk_size)
    target_chunks = targets.split(chunk_size)
    loss_chunks = [
        m.F.cross_entropy(logit_chunk, target_chunk, ignore_index=ignore_index, reduction="none")
        for logit_chunk, target_chunk in zip(logit_chunks, target_chunks)]
    non_masked_elems = (targets != ignore_index).sum()
    return torch.cat(loss_chunks).sum() / non_masked_elems.maximum(torch.ones_like(non_masked_elems))


def litgpt_program(m, weights, steps=3):
    torch = m.torch
    model = load(m, make_litgpt(m), weights)
    rng = np.random.default_rng(4)
    input_ids = torch.tensor(rng.integers(0, LG_V, (2, 9)))
    targets = input_ids[:, 1:].clone()
    targets[1, -3:] = -100
    optimizer = m.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.02, betas=(0.9, 0.95))
    losses = []
    for step in range(steps):
        logits = model(input_ids[:, :-1])
        loss = chunked_cross_entropy(m, logits, targets, chunk_size=5)
        whole = chunked_cross_entropy(m, logits, targets, chunk_size=0)
        as_list = chunked_cross_entropy(m, list(logits.split(4, dim=1)), targets, chunk_size=4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append([loss.item(), whole.item(), as_list.item()])
    model.eval()

    def sample_top_p(logits, top_p):
        sorted_logits, sorted_indices = torch.sort(logits, descending=False)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_indices_to_remove = cumulative_probs <= (1 - top_p)
        sorted_indices_to_remove[-1:] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(0, sorted_indices, sorted_indices_to_remove)
        logits = logits.masked_fill(indices_to_remove, float("-inf"))
        return logits

    def filtered(logits, temperature=1.0, top_k=None, top_p=1.0):
        logits = logits[0, -1]
        if top_k is not None:
            v, i = torch.topk(logits, min(top_k, logits.size(-1)))
            logits = torch.full_like(logits, float("-inf")).scatter_(-1, i, v)
        if temperature > 0.0:
            logits = logits / temperature
        if top_p < 1.0:
            logits = sample_top_p(logits, top_p)
        return logits

    def exponential_sample(probs, generator):  # what lit-gpt's multinomial_num_samples_1 does when compiling
        distribution = torch.empty_like(probs).exponential_(1, generator=generator)
        return torch.argmax(probs / distribution, dim=-1, keepdim=True)

    @torch.inference_mode()
    def generate(prompt, max_returned_tokens):
        T = prompt.size(0)
        model.set_kv_cache(batch_size=1)
        input_pos = torch.arange(0, T)
        tokens, step_logits = [prompt], []
        token = prompt
        for _ in range(max_returned_tokens - T):
            logits = model(token.view(1, -1), input_pos)
            step_logits.append(logits[0, -1])
            token = torch.argmax(logits[0, -1], dim=-1, keepdim=True)
            input_pos = input_pos[-1:].add_(1)
            tokens.append(token)
        model.clear_kv_cache()
        return torch.cat(tokens), torch.stack(step_logits)

    prompt = input_ids[0, :4]
    generated, step_logits = generate(prompt, 9)
    with torch.no_grad():
        full = model(generated[None, :-1])[0, 3:]
        kept = filtered(full[None, -1:], temperature=0.8, top_k=6, top_p=0.7)
        g = torch.Generator().manual_seed(3)
        draws = torch.stack([exponential_sample(m.F.softmax(kept, dim=-1), g) for _ in range(20)])
    return losses, generated, step_logits, full, kept, draws


def test_litgpt_partial_rope_kv_cache_and_chunked_loss():
    weights = weights_of(make_litgpt)
    ours, theirs = run_both(litgpt_program, weights, compare=False)
    losses, generated, step_logits, full, kept, draws = ours
    np.testing.assert_allclose([l[1] for l in losses], [l[0] for l in losses], rtol=1e-6)
    np.testing.assert_allclose([l[2] for l in losses], [l[0] for l in losses], rtol=1e-6)
    assert losses[-1][0] < losses[0][0]
    np.testing.assert_allclose(step_logits, full, rtol=1e-4, atol=1e-5)  # the KV cache gives the full pass
    assert np.isfinite(kept).sum() >= 1 and np.isfinite(kept[draws.ravel()]).all()
    if theirs is not None:
        for a, b in zip(ours[:5], theirs[:5]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Hugging Face's generation utilities: logits processors and warpers (repetition penalty by gather /
# where / scatter, min-length by masking the EOS column, suppress-tokens by torch.isin, typical decoding
# by nansum of the entropy, min-p, eta sampling on Categorical(logits=...).entropy()), stopping on EOS
# with unfinished_sequences arithmetic; the Trainer's LabelSmoother beside cross_entropy(label_smoothing)
# ----------------------------------------------------------------------------------------------


def logits_processors(m):
    torch, F = m.torch, m.F
    filter_value = -float("Inf")

    def repetition_penalty(input_ids, scores, penalty=1.3):
        score = torch.gather(scores, 1, input_ids)
        score = torch.where(score < 0, score * penalty, score / penalty)
        return scores.scatter(1, input_ids, score)

    def min_length(input_ids, scores, min_length=6, eos_token_id=torch.tensor([2])):
        vocab_tensor = torch.arange(scores.shape[-1], device=scores.device)
        eos_token_mask = torch.isin(vocab_tensor, eos_token_id)
        scores_processed = scores.clone()
        if input_ids.shape[-1] < min_length:
            scores_processed = torch.where(eos_token_mask, -math.inf, scores)
        return scores_processed

    def suppress_tokens(input_ids, scores, suppress=torch.tensor([0, 5])):
        vocab_tensor = torch.arange(scores.shape[-1], device=scores.device)
        suppress_token_mask = torch.isin(vocab_tensor, suppress)
        return torch.where(suppress_token_mask, -float("inf"), scores)

    def typical(input_ids, scores, mass=0.9, min_tokens_to_keep=1):
        normalized = F.log_softmax(scores, dim=-1)
        p = torch.exp(normalized)
        ent = -(normalized * p).nansum(-1, keepdim=True)
        shifted_scores = torch.abs((-normalized) - ent)
        sorted_scores, sorted_indices = torch.sort(shifted_scores, descending=False)
        sorted_logits = scores.gather(-1, sorted_indices)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        last_ind = (cumulative_probs < mass).sum(dim=1)
        last_ind.clamp_(max=sorted_scores.shape[-1] - 1)
        sorted_indices_to_remove = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
        sorted_indices_to_remove[..., :min_tokens_to_keep] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, filter_value)

    def min_p(input_ids, scores, min_p=0.1, min_tokens_to_keep=1):
        probs = torch.softmax(scores, dim=-1)
        top_probs, _ = probs.max(dim=-1, keepdim=True)
        scaled_min_p = min_p * top_probs
        tokens_to_remove = probs < scaled_min_p
        sorted_indices = torch.argsort(scores, descending=True, dim=-1)
        sorted_indices_to_remove = torch.gather(tokens_to_remove, dim=-1, index=sorted_indices)
        sorted_indices_to_remove[..., :min_tokens_to_keep] = False
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, filter_value)

    def eta(input_ids, scores, epsilon=torch.tensor(0.02), min_tokens_to_keep=1):
        probabilities = scores.softmax(dim=-1)
        entropy = torch.distributions.Categorical(logits=scores).entropy()
        eta = torch.min(epsilon, torch.sqrt(epsilon) * torch.exp(-entropy))[..., None]
        indices_to_remove = probabilities < eta
        top_k = min(min_tokens_to_keep, scores.size(-1))
        indices_to_remove = indices_to_remove & (scores < torch.topk(scores, top_k)[0][..., -1, None])
        return scores.masked_fill(indices_to_remove, filter_value)

    return [repetition_penalty, min_length, suppress_tokens, typical, min_p, eta]


def generation_utilities(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(6)
    table = torch.tensor(rng.standard_normal((10, 10)).astype(np.float32) * 2)  # a bigram "model"
    processors = logits_processors(m)
    input_ids = torch.tensor([[1, 3], [4, 4]])
    pad_token_id, eos_token_id = 0, torch.tensor([2, 7])
    unfinished_sequences = torch.ones(input_ids.shape[0], dtype=torch.long)
    each = []
    this_peer_finished = False
    while not this_peer_finished and input_ids.shape[1] < 12:
        scores = table[input_ids[:, -1]]
        for processor in processors:
            each.append(processor(input_ids, scores))
        for processor in processors[:3]:
            scores = processor(input_ids, scores)
        next_tokens = torch.argmax(scores, dim=-1)
        next_tokens = next_tokens * unfinished_sequences + pad_token_id * (1 - unfinished_sequences)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        is_done = torch.isin(input_ids[:, -1], eos_token_id)
        unfinished_sequences = unfinished_sequences & ~is_done
        this_peer_finished = unfinished_sequences.max() == 0
    return input_ids, each


def test_generation_logits_processors():
    ours, _ = run_both(generation_utilities, rtol=1e-5, atol=1e-6)
    input_ids, each = ours
    scores = each[2]  # suppress_tokens
    assert np.isneginf(scores[:, [0, 5]]).all()
    assert np.isneginf(each[1][:, 2]).all()  # min length: no EOS yet
    for kept in each[3:]:
        assert (np.isfinite(kept).sum(-1) >= 1).all()


def label_smoother(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(10)
    logits = torch.tensor(rng.standard_normal((2, 5, 7)).astype(np.float32), requires_grad=True)
    labels = torch.tensor([[1, 2, -100, 4, 6], [-100, -100, 0, 3, 3]])

    class LabelSmoother:
        epsilon: float = 0.1
        ignore_index: int = -100

        def __call__(self, logits, labels, shift_labels=False):
            if shift_labels:
                logits = logits[..., :-1, :].contiguous()
                labels = labels[..., 1:].contiguous()
            log_probs = -nn.functional.log_softmax(logits, dim=-1)
            if labels.dim() == log_probs.dim() - 1:
                labels = labels.unsqueeze(-1)
            padding_mask = labels.eq(self.ignore_index)
            labels = torch.clamp(labels, min=0)
            nll_loss = log_probs.gather(dim=-1, index=labels)
            smoothed_loss = log_probs.sum(dim=-1, keepdim=True, dtype=torch.float32)
            nll_loss.masked_fill_(padding_mask, 0.0)
            smoothed_loss.masked_fill_(padding_mask, 0.0)
            num_active_elements = padding_mask.numel() - padding_mask.long().sum()
            nll_loss = nll_loss.sum() / num_active_elements
            smoothed_loss = smoothed_loss.sum() / (num_active_elements * log_probs.shape[-1])
            return (1 - self.epsilon) * nll_loss + self.epsilon * smoothed_loss

    smoothed = LabelSmoother()(logits, labels)
    grad, = torch.autograd.grad(smoothed, logits)
    builtin = F.cross_entropy(logits.view(-1, 7), labels.view(-1), ignore_index=-100, label_smoothing=0.1)
    grad_builtin, = torch.autograd.grad(builtin, logits)
    shifted = LabelSmoother()(logits, labels, shift_labels=True)
    return smoothed, builtin, grad, grad_builtin, shifted


def test_trainer_label_smoother():
    ours, _ = run_both(label_smoother, rtol=1e-5, atol=1e-7)
    smoothed, builtin, grad, grad_builtin, shifted = ours
    assert smoothed == pytest.approx(builtin, rel=1e-6)
    np.testing.assert_allclose(grad, grad_builtin, rtol=1e-5, atol=1e-7)


def litgpt_sampler(m):
    """lit-gpt's sampling (generate/base.py): torch._dynamo.is_compiling() picks the exponential_ trick when
    compiled and torch.multinomial otherwise."""
    torch = m.torch

    def multinomial_num_samples_1(probs):
        if torch._dynamo.is_compiling():
            distribution = torch.empty_like(probs).exponential_(1)
            return torch.argmax(probs / distribution, dim=-1, keepdim=True)
        return torch.multinomial(probs, num_samples=1)

    probs = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return multinomial_num_samples_1(probs)


def test_litgpt_sampler_asks_dynamo():
    ours, _ = run_both(litgpt_sampler)
    assert ours.tolist() == [[1], [2]]
