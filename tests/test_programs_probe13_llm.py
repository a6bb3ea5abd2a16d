# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, UP034, UP039  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today (see tests/pytorch_programs.py), beyond what
test_programs_probe10_llm_*.py, test_programs_nanogpt.py and test_programs_probe4_sequence.py hold; each
program runs on chainrule and on PyTorch from the same weights, comparing losses, logits, gradients and
generated tokens, and checks what it can by hand.

A Qwen3-style decoder (q/k/v biases, QK-norm by ``nn.RMSNorm`` over the head dimension, Llama 3.1's rotary
frequency smoothing by ``torch.where``, a sliding-window float mask built from ``cache_position`` as Hugging
Face builds it, with ``_unmask_unattended``, left padding, SDPA with ``enable_gqa`` and ``scale=``, tied
embeddings) trained through ``torch.compile`` with AdamW parameter groups, a warmup-stable-decay ``LambdaLR``,
gradient accumulation normalised by the step's label tokens and ``clip_grad_norm_(foreach=True)``, its compiled
state dict (``_orig_mod.``) loaded into a fresh model; SDPA on rows masked throughout (math backend).
Generation from a static KV cache written by ``index_copy_`` under ``inference_mode``, a ``torch.cat`` cache
and no cache, with repetition / presence / frequency penalties, min-p, typical-p (``nansum``), top-k / top-p,
``multinomial`` and gpt-fast's exponential race on a seeded ``Generator``, eos padding; chunked prefill.
DeepSeek-V3's group-limited sigmoid gate with its bias balancing and ``y[idx] +=`` dispatch; Switch capacity
(``cumsum`` of ``one_hot``) and expert-choice routing on experts stacked in one Parameter. PEFT's LoRA (rsLoRA,
DoRA) injected by ``get_submodule``/``setattr``, merged and unmerged. DeepSeek's multi-head latent attention
(YaRN ``torch.polar`` frequencies, complex rotary embeddings, naive against absorbed ``einsum`` forms);
FlashAttention's online softmax and ring attention's ``logaddexp`` merge against SDPA. Speculative decoding
verified under ``nn.attention.bias.causal_lower_right`` with cache roll-back, and beam search reordering its
cache by ``index_select``. Half-precision inference with float32 norms (``nn.RMSNorm``'s default eps), and
the float16 decoder on SDPA's math kernel giving PyTorch's logits to the bit.
Liger-Kernel's fused linear cross-entropy ``autograd.Function`` (``addmm(out=)``); packed documents with a
block-diagonal mask from ``cu_seqlens`` under ``checkpoint(use_reentrant=False)`` and ``save_on_cpu``; the
optimizer step fused into backward by ``register_post_accumulate_grad_hook``; GRPO as TRL writes it (sampled
groups, eos masks by ``argmax``, group-standardised rewards, ``selective_log_softmax``, k3 KL against a
deep-copied reference, PPO's clipped ratio); the Differential Transformer's attention (two softmax maps
subtracted with a learnt λ, ``nan_to_num``, an affine-free ``nn.RMSNorm`` per head); Mamba-2's chunked
state-space duality (``segsum`` by ``cumsum`` and a -inf triangle, five-operand ``einsum``) against its
recurrence.
gpt-fast's ``torch._dynamo.config`` and ``torch._inductor.config`` settings, imported as modules."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A Qwen3-style decoder (Hugging Face's modeling_qwen3.py, tiny)
# ----------------------------------------------------------------------------------------------

Q_V, Q_D, Q_H, Q_KV, Q_HD, Q_L, Q_FF, Q_WINDOW = 19, 16, 4, 2, 8, 2, 24, 4


def llama3_inv_freq(m, head_dim, base=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    old_context_len=8):
    """_compute_llama3_parameters: long wavelengths are divided by ``factor``, a band between is smoothed."""
    torch = m.torch
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float) / head_dim))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    inv_freq_llama = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    return inv_freq_llama


def sliding_causal_mask(m, attention_mask, sequence_length, target_length, dtype, cache_position, window,
                        unmask_unattended=True):
    """_prepare_4d_causal_attention_mask_with_cache_position, with Mistral's sliding window."""
    torch = m.torch
    min_dtype = torch.finfo(dtype).min
    causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
    diagonal_attend_mask = torch.arange(target_length) > cache_position.reshape(-1, 1)
    sliding_attend_mask = torch.arange(target_length) <= (cache_position.reshape(-1, 1) - window)
    diagonal_attend_mask = diagonal_attend_mask.bitwise_or_(sliding_attend_mask)
    causal_mask *= diagonal_attend_mask
    causal_mask = causal_mask[None, None, :, :].expand(attention_mask.shape[0], 1, -1, -1)
    if attention_mask is not None:
        causal_mask = causal_mask.clone()
        mask_length = attention_mask.shape[-1]
        padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :].to(causal_mask.device)
        padding_mask = padding_mask == 0
        causal_mask[:, :, :, :mask_length] = causal_mask[:, :, :, :mask_length].masked_fill(padding_mask, min_dtype)
    if unmask_unattended:
        # AttentionMaskConverter._unmask_unattended: a left-padded query row masked throughout attends to every key
        # instead (its output is never used; PyTorch's fused SDPA kernels misbehave on rows masked throughout)
        causal_mask = causal_mask.mul(~torch.all(causal_mask == min_dtype, dim=-1, keepdim=True))
    return causal_mask



def make_qwen(m, tie=True):
    torch, nn, F = m.torch, m.nn, m.F

    class RotaryEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("inv_freq", llama3_inv_freq(m, Q_HD), persistent=False)
            self.attention_scaling = 1.0

        @torch.no_grad()
        def forward(self, x, position_ids):
            inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
            position_ids_expanded = position_ids[:, None, :].float()
            freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos() * self.attention_scaling
            sin = emb.sin() * self.attention_scaling
            return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        cos = cos.unsqueeze(unsqueeze_dim)
        sin = sin.unsqueeze(unsqueeze_dim)
        return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)

    class Attention(nn.Module):
        def __init__(self, layer_idx):
            super().__init__()
            self.layer_idx = layer_idx
            self.scaling = Q_HD ** -0.5
            self.q_proj = nn.Linear(Q_D, Q_H * Q_HD, bias=True)
            self.k_proj = nn.Linear(Q_D, Q_KV * Q_HD, bias=True)
            self.v_proj = nn.Linear(Q_D, Q_KV * Q_HD, bias=True)
            self.o_proj = nn.Linear(Q_H * Q_HD, Q_D, bias=False)
            self.q_norm = nn.RMSNorm(Q_HD, eps=1e-6)  # only on the head dimension
            self.k_norm = nn.RMSNorm(Q_HD, eps=1e-6)

        def forward(self, hidden_states, position_embeddings, attention_mask, past_key_value=None, cache_position=None):
            input_shape = hidden_states.shape[:-1]
            hidden_shape = (*input_shape, -1, Q_HD)
            query_states = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
            key_states = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
            value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
            if past_key_value is not None:
                cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
                key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)
            attn_output = F.scaled_dot_product_attention(
                query_states, key_states, value_states, attn_mask=attention_mask, dropout_p=0.0,
                scale=self.scaling, enable_gqa=True)
            attn_output = attn_output.transpose(1, 2).contiguous()
            attn_output = attn_output.reshape(*input_shape, -1).contiguous()
            return self.o_proj(attn_output)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(Q_D, Q_FF, bias=False)
            self.up_proj = nn.Linear(Q_D, Q_FF, bias=False)
            self.down_proj = nn.Linear(Q_FF, Q_D, bias=False)
            self.act_fn = nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    class DecoderLayer(nn.Module):
        def __init__(self, layer_idx):
            super().__init__()
            self.self_attn = Attention(layer_idx)
            self.mlp = MLP()
            self.input_layernorm = nn.RMSNorm(Q_D, eps=1e-6)
            self.post_attention_layernorm = nn.RMSNorm(Q_D, eps=1e-6)

        def forward(self, hidden_states, attention_mask, position_embeddings, past_key_value=None, cache_position=None):
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
            hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, past_key_value,
                                           cache_position)
            hidden_states = residual + hidden_states
            residual = hidden_states
            hidden_states = self.post_attention_layernorm(hidden_states)
            hidden_states = self.mlp(hidden_states)
            return residual + hidden_states

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(Q_V, Q_D)
            self.layers = nn.ModuleList([DecoderLayer(i) for i in range(Q_L)])
            self.norm = nn.RMSNorm(Q_D, eps=1e-6)
            self.rotary_emb = RotaryEmbedding()

        def forward(self, input_ids, attention_mask, position_ids=None, past_key_values=None, cache_position=None):
            inputs_embeds = self.embed_tokens(input_ids)
            if cache_position is None:
                past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
                cache_position = torch.arange(past_seen, past_seen + inputs_embeds.shape[1])
            if position_ids is None:
                position_ids = cache_position.unsqueeze(0)
            target_length = getattr(past_key_values, "max_cache_len", None) or attention_mask.shape[-1]
            mask = sliding_causal_mask(m, attention_mask, inputs_embeds.shape[1], target_length, inputs_embeds.dtype,
                                       cache_position, Q_WINDOW)
            position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
            hidden_states = inputs_embeds
            for layer in self.layers:
                hidden_states = layer(hidden_states, mask, position_embeddings, past_key_values, cache_position)
            return self.norm(hidden_states)

    class ForCausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Model()
            self.lm_head = nn.Linear(Q_D, Q_V, bias=False)
            if tie:
                self.lm_head.weight = self.model.embed_tokens.weight

        def forward(self, input_ids, attention_mask, labels=None, num_items_in_batch=None, **kwargs):
            hidden_states = self.model(input_ids, attention_mask, **kwargs)
            logits = self.lm_head(hidden_states)
            loss = None
            if labels is not None:
                # ForCausalLMLoss: shift by padding the labels, sum and divide by the tokens of the whole step
                logits = logits.float()
                labels = F.pad(labels, (0, 1), value=-100)
                shift_labels = labels[..., 1:].contiguous()
                reduction = "sum" if num_items_in_batch is not None else "mean"
                loss = F.cross_entropy(logits.view(-1, Q_V), shift_labels.view(-1), ignore_index=-100,
                                       reduction=reduction)
                if reduction == "sum":
                    loss = loss / num_items_in_batch
            return loss, logits

    return ForCausalLM()


def qwen_batch():
    rng = np.random.default_rng(5)
    ids = rng.integers(1, Q_V, (4, 10))
    attention_mask = np.ones_like(ids)
    attention_mask[1, :3] = 0  # left padding
    attention_mask[3, :1] = 0
    ids[attention_mask == 0] = 0
    labels = np.where(attention_mask == 1, ids, -100)
    return ids, attention_mask, labels


def wsd_lambda(num_warmup_steps, num_stable_steps, num_decay_steps, min_lr_ratio=0.1):
    """transformers' get_wsd_schedule: linear warmup, a plateau, then a cosine decay to min_lr_ratio."""
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        if current_step < num_warmup_steps + num_stable_steps:
            return 1.0
        if current_step < num_warmup_steps + num_stable_steps + num_decay_steps:
            progress = float(current_step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
            value = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
            return (1.0 - min_lr_ratio) * value + min_lr_ratio
        return min_lr_ratio
    return lr_lambda


def qwen_training(m, weights, steps=4, accumulation=2):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_qwen(m), weights)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    compiled = torch.compile(model, backend="eager")  # (inductor would take seconds to build here)
    param_dict = {pn: p for pn, p in compiled.named_parameters() if p.requires_grad}
    decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
    optimizer = m.optim.AdamW([{"params": decay_params, "weight_decay": 0.1},
                               {"params": nodecay_params, "weight_decay": 0.0}],
                              lr=4e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    scheduler = m.optim.lr_scheduler.LambdaLR(optimizer, wsd_lambda(1, 1, 2))
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    losses, norms, lrs = [], [], []
    compiled.train()
    for step in range(steps):
        # the number of label tokens of the whole step, as the Trainer counts it before the micro-batches
        num_items_in_batch = (labels[:, 1:] != -100).sum()
        for micro in range(accumulation):
            sl = slice(2 * micro, 2 * micro + 2)
            loss, _ = compiled(ids[sl], attention_mask[sl], labels=labels[sl], num_items_in_batch=num_items_in_batch)
            loss.backward()
            losses.append(loss.item())
        norms.append(nn.utils.clip_grad_norm_(compiled.parameters(), max_norm=0.5, foreach=True))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        lrs.append(scheduler.get_last_lr()[0])
    grads_are_none = all(p.grad is None for p in model.parameters())
    state = {k.removeprefix("_orig_mod."): v for k, v in compiled.state_dict().items()}
    fresh = make_qwen(m)
    missing = fresh.load_state_dict(state, strict=True)
    compiled.eval()
    with torch.no_grad():
        _, logits = fresh(ids, attention_mask)
        _, logits_compiled = compiled(ids, attention_mask)
    n_params = sum(p.numel() for p in model.parameters())
    return (losses, norms, lrs, grads_are_none, sorted(state), logits, logits_compiled, n_params,
            [p.detach() for p in model.parameters()])


@pytest.fixture(scope="module")
def qwen_weights():
    return weights_of(make_qwen)


def test_qwen3_qk_norm_sliding_window_tied_compiled_training(qwen_weights):
    (losses, norms, lrs, grads_are_none, keys, logits, logits_compiled, n_params, params), _ = run_both(
        qwen_training, qwen_weights, rtol=1e-4, atol=1e-5)
    assert lrs == pytest.approx([4e-3, 4e-3, 4e-3 * (0.9 * 0.5 + 0.1), 4e-4])
    assert grads_are_none and np.isfinite(losses).all()
    assert "lm_head.weight" in keys and "model.rotary_emb.inv_freq" not in keys
    np.testing.assert_array_equal(logits, logits_compiled)
    # the tied weight is counted once
    assert n_params == sum(v.size for k, v in qwen_weights.items() if k != "lm_head.weight")
    # the two micro-batches' losses are each summed over the step's label tokens: they add to the mean loss
    ids, attention_mask, labels = qwen_batch()
    assert losses[0] + losses[1] == pytest.approx(_qwen_mean_loss(qwen_weights), rel=1e-5)


def _qwen_mean_loss(weights):
    torch = OURS.torch
    model = load(OURS, make_qwen(OURS), weights)
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    loss, _ = model(ids, attention_mask, labels=labels)
    return loss.item()


def qwen_mask_program(m):
    torch = m.torch
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    prefill = sliding_causal_mask(m, attention_mask, 10, 10, torch.float32, torch.arange(10), Q_WINDOW, False)
    unmasked = sliding_causal_mask(m, attention_mask, 10, 10, torch.float32, torch.arange(10), Q_WINDOW)
    decode = sliding_causal_mask(m, attention_mask, 2, 10, torch.float32, torch.arange(8, 10), Q_WINDOW, False)
    return prefill, unmasked, decode


def test_qwen_sliding_window_mask_by_hand():
    """The float mask lets query i see keys j with i - window < j <= i that are not padding."""
    (prefill, unmasked, decode), _ = run_both(qwen_mask_program)
    attention_mask = qwen_batch()[1]
    i, j = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    allowed = (j <= i) & (j > i - Q_WINDOW)
    for b in range(4):
        expected = allowed & (attention_mask[b][None, :] == 1)
        np.testing.assert_array_equal(prefill[b, 0] == 0, expected)
        assert (prefill[b, 0][~expected] == np.finfo(np.float32).min).all()
        np.testing.assert_array_equal(decode[b, 0], prefill[b, 0, 8:])
        masked_throughout = ~expected.any(-1)
        assert masked_throughout.sum() == (attention_mask[b] == 0).sum()  # the padding's own rows
        assert (unmasked[b, 0][masked_throughout] == 0).all()
        np.testing.assert_array_equal(unmasked[b, 0][~masked_throughout], prefill[b, 0][~masked_throughout])


def sdpa_rows_masked_throughout(m):
    """A float mask of finfo.min over a whole query row (left padding without _unmask_unattended): the row's
    softmax is uniform; PyTorch's fused CPU kernel then gives that row's query gradient times the number of keys
    (its backward recomputes the probabilities from a logsumexp that finfo.min swallowed), its math backend the
    true gradient, which chainrule gives."""
    torch, F = m.torch, m.F
    from importlib import import_module
    attention = import_module(m.nn.__name__ + ".attention")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g).requires_grad_()
    k = torch.randn(2, 2, 5, 8, generator=g).requires_grad_()
    v = torch.randn(2, 2, 5, 8, generator=g).requires_grad_()
    min_dtype = torch.finfo(torch.float32).min
    mask = torch.full((5, 5), min_dtype) * (torch.arange(5) > torch.arange(5).reshape(-1, 1))
    mask = mask[None, None].expand(2, 1, -1, -1).clone()
    mask[1, :, :, :2] = min_dtype  # two left-padding keys: queries 0 and 1 of the second sequence see nothing
    with attention.sdpa_kernel(attention.SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3, enable_gqa=True)
    out.pow(2).sum().backward()
    # by hand: the softmax composed of its parts
    scores = q.detach() @ k.detach().repeat_interleave(2, dim=1).transpose(-1, -2) * 0.3 + mask
    by_hand = scores.softmax(-1) @ v.detach().repeat_interleave(2, dim=1)
    return out, by_hand, q.grad, k.grad, v.grad


def test_sdpa_rows_masked_throughout_by_the_math_backend():
    (out, by_hand, *grads), _ = run_both(sdpa_rows_masked_throughout, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1, :, 0], out[1, :, 1], rtol=1e-6)  # both rows average every value


# ----------------------------------------------------------------------------------------------
# Generation: a static KV cache written by index_copy_, a DynamicCache grown by torch.cat, logits processors
# ----------------------------------------------------------------------------------------------


def caches(m):
    torch = m.torch

    class DynamicCache:
        def __init__(self):
            self.key_cache, self.value_cache = [], []

        def get_seq_length(self, layer_idx=0):
            return self.key_cache[layer_idx].shape[-2] if len(self.key_cache) > layer_idx else 0

        def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
            if len(self.key_cache) <= layer_idx:
                self.key_cache.append(key_states)
                self.value_cache.append(value_states)
            else:
                self.key_cache[layer_idx] = torch.cat([self.key_cache[layer_idx], key_states], dim=-2)
                self.value_cache[layer_idx] = torch.cat([self.value_cache[layer_idx], value_states], dim=-2)
            return self.key_cache[layer_idx], self.value_cache[layer_idx]

        def reorder_cache(self, beam_idx):
            for layer_idx in range(len(self.key_cache)):
                self.key_cache[layer_idx] = self.key_cache[layer_idx].index_select(0, beam_idx)
                self.value_cache[layer_idx] = self.value_cache[layer_idx].index_select(0, beam_idx)

    class StaticCache:
        def __init__(self, max_batch_size, max_cache_len, dtype=torch.float32):
            self.max_cache_len = max_cache_len
            cache_shape = (max_batch_size, Q_KV, max_cache_len, Q_HD)
            self.key_cache, self.value_cache = [], []
            for _ in range(Q_L):
                self.key_cache.append(torch.zeros(cache_shape, dtype=dtype))
                self.value_cache.append(torch.zeros(cache_shape, dtype=dtype))

        def get_seq_length(self, layer_idx=0):
            return (self.key_cache[layer_idx][0, 0].any(dim=-1)).sum()

        def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
            cache_position = cache_kwargs.get("cache_position")
            k_out, v_out = self.key_cache[layer_idx], self.value_cache[layer_idx]
            k_out.index_copy_(2, cache_position, key_states)
            v_out.index_copy_(2, cache_position, value_states)
            return k_out, v_out

    return DynamicCache, StaticCache


def logits_warpers(m):
    torch = m.torch

    def repetition_penalty(input_ids, scores, penalty):
        score = torch.gather(scores, 1, input_ids)
        score = torch.where(score < 0, score * penalty, score / penalty)
        return scores.scatter(1, input_ids, score)

    def presence_frequency_penalty(input_ids, scores, presence, frequency):
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)

    def min_p(scores, min_p, min_tokens_to_keep=1):
        probs = torch.softmax(scores, dim=-1)
        top_probs = probs.amax(dim=-1, keepdim=True)
        scaled_min_p = min_p * top_probs
        tokens_to_remove = probs < scaled_min_p
        sorted_indices = torch.argsort(scores, descending=True, dim=-1)
        sorted_indices_to_remove = torch.gather(tokens_to_remove, dim=-1, index=sorted_indices)
        sorted_indices_to_remove[..., :min_tokens_to_keep] = False
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, -float("Inf"))

    def typical(scores, mass, min_tokens_to_keep=1):
        normalized = m.F.log_softmax(scores, dim=-1)  # (HF: torch.nn.functional; see test_torch_dot_nn_spelling)
        p = torch.exp(normalized)
        ent = -(normalized * p).nansum(-1, keepdim=True)  # -inf * 0 where earlier warpers removed tokens
        shifted_scores = torch.abs((-normalized) - ent)
        sorted_scores, sorted_indices = torch.sort(shifted_scores, descending=False)
        sorted_logits = scores.gather(-1, sorted_indices)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        last_ind = (cumulative_probs < mass).sum(dim=1)
        last_ind.clamp_(max=sorted_scores.shape[-1] - 1)
        sorted_indices_to_remove = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
        sorted_indices_to_remove[..., :min_tokens_to_keep] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, -float("Inf"))

    def top_k(scores, k):
        v, _ = torch.topk(scores, min(k, scores.size(-1)))
        return torch.where(scores < v[:, [-1]], -float("Inf"), scores)

    def top_p(scores, p):
        sorted_logits, sorted_indices = torch.sort(scores, descending=True)
        cumulative_probs = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        sorted_indices_to_remove = cumulative_probs > p
        sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
        sorted_indices_to_remove[..., 0] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(dim=1, index=sorted_indices, src=sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, float("-inf"))

    def exponential_race(probs, generator=None):
        """gpt-fast's multinomial_sample_one_no_sync: argmax of p / Exp(1)."""
        q = torch.empty_like(probs).exponential_(1, generator=generator)
        return torch.argmax(probs / q, dim=-1, keepdim=True).to(dtype=torch.int)

    return repetition_penalty, presence_frequency_penalty, min_p, typical, top_k, top_p, exponential_race


def qwen_generate(m, model, input_ids, attention_mask, max_new_tokens, cache="dynamic", sample=None, generator=None,
                  eos_token_id=None, pad_token_id=0):
    torch, F = m.torch, m.F
    DynamicCache, StaticCache = caches(m)
    repetition_penalty, presence_frequency_penalty, min_p, typical, top_k, top_p, exponential_race = logits_warpers(m)
    batch_size, prompt_len = input_ids.shape
    if cache == "static":
        past_key_values = StaticCache(batch_size, prompt_len + max_new_tokens)
    elif cache == "dynamic":
        past_key_values = DynamicCache()
    else:
        past_key_values = None
    unfinished_sequences = torch.ones(batch_size, dtype=torch.long)
    cache_position = torch.arange(prompt_len)
    step_scores = []
    model_input = input_ids
    for step in range(max_new_tokens):
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(attention_mask == 0, 1)
        if past_key_values is not None:
            position_ids = position_ids[:, -model_input.shape[1]:]
        _, logits = model(model_input, attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                          cache_position=cache_position if past_key_values is not None else None)
        next_token_logits = logits[:, -1, :].to(copy=True, dtype=torch.float32)
        scores = next_token_logits
        if sample is None:
            next_tokens = torch.argmax(scores, dim=-1)
        else:
            scores = repetition_penalty(input_ids, scores, sample["repetition_penalty"])
            scores = presence_frequency_penalty(input_ids, scores, 0.3, 0.2)
            scores = scores / sample["temperature"]
            scores = top_k(scores, sample["top_k"])
            scores = top_p(scores, sample["top_p"])
            scores = min_p(scores, sample["min_p"])
            scores = typical(scores, sample["typical_p"])
            probs = F.softmax(scores, dim=-1)
            if sample["draw"] == "multinomial":
                next_tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            else:
                next_tokens = exponential_race(probs, generator).squeeze(1).long()
        step_scores.append(scores)
        if eos_token_id is not None:
            next_tokens = next_tokens * unfinished_sequences + pad_token_id * (1 - unfinished_sequences)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch_size, 1))], dim=-1)
        if eos_token_id is not None:
            unfinished_sequences = unfinished_sequences & ~(next_tokens == eos_token_id)
        if past_key_values is not None:
            model_input = next_tokens[:, None]
            cache_position = cache_position[-1:] + 1
        else:
            model_input = input_ids
        if unfinished_sequences.max() == 0:
            break
    return input_ids, torch.stack(step_scores, 1)


def qwen_generation(m, weights):
    torch = m.torch
    model = load(m, make_qwen(m), weights).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(0.2)  # (tied: the embedding too) flatter next-token distributions to sample
    ids, attention_mask, _ = (torch.tensor(a[:, :6]) for a in qwen_batch())
    out = {}
    with torch.inference_mode():
        for cache in ("none", "dynamic", "static"):
            out[f"greedy_{cache}"] = qwen_generate(m, model, ids, attention_mask, 6, cache=cache)
        settings = dict(repetition_penalty=1.3, temperature=0.8, top_k=12, top_p=0.95, min_p=0.05, typical_p=0.9)
        for draw in ("multinomial", "exponential"):
            g = torch.Generator().manual_seed(1234)
            out[f"sampled_{draw}"] = qwen_generate(m, model, ids, attention_mask, 6, cache="static",
                                                   sample=dict(settings, draw=draw), generator=g)
        out["eos"] = qwen_generate(m, model, ids, attention_mask, 6, cache="dynamic", eos_token_id=int(
            out["greedy_none"][0][2, 6]))
    return out


def test_qwen_generation_static_and_dynamic_caches_and_sampling(qwen_weights):
    out, theirs = run_both(qwen_generation, qwen_weights, rtol=1e-4, atol=1e-5)
    tokens, scores = out["greedy_none"]
    for cache in ("dynamic", "static"):
        np.testing.assert_array_equal(out[f"greedy_{cache}"][0], tokens)
        np.testing.assert_allclose(out[f"greedy_{cache}"][1], scores, rtol=1e-4, atol=1e-5)
    # a sequence stops at its eos, after which it is padded; the others go on as greedy until all have stopped
    eos_tokens, eos = out["eos"][0], tokens[2, 6]
    for row, greedy in zip(eos_tokens, tokens):
        hits = np.flatnonzero(greedy[6:] == eos)
        stop = 6 + hits[0] + 1 if len(hits) else len(greedy)
        np.testing.assert_array_equal(row[:stop], greedy[:stop])
        assert (row[stop:] == 0).all()
    for draw in ("multinomial", "exponential"):
        sampled, warped = out[f"sampled_{draw}"]
        kept = np.isfinite(warped)
        assert (kept.sum(-1) >= 1).all() and (kept.sum(-1) <= 12).all()
        chosen = np.take_along_axis(kept, sampled[:, 6:, None], -1)
        assert chosen.all()  # every drawn token survived the warpers
    # PyTorch's multinomial draws one sample as the exponential race does, from the same generator state
    np.testing.assert_array_equal(out["sampled_multinomial"][0], out["sampled_exponential"][0])
    assert (out["sampled_multinomial"][0] != tokens).any()


# ----------------------------------------------------------------------------------------------
# Mixture-of-experts routing beyond Mixtral's: DeepSeek-V3's gate (sigmoid scores, a bias correcting the
# choice only, group-limited top-k by scatter_ and masked_fill_), ``y[idx] += ...`` dispatch with a shared
# expert, its sequence-wise balance loss by scatter_add_, and the aux-loss-free bias update; Switch's top-1 with
# an expert capacity by cumsum; expert-choice routing (top-k over the tokens); experts as one stacked Parameter
# indexed by the router's choice
# ----------------------------------------------------------------------------------------------

M_D, M_FF, M_E, M_GROUPS, M_TOPK, M_V = 8, 12, 8, 4, 2, 11


def make_deepseek_moe(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.topk, self.n_groups, self.topk_groups, self.route_scale = M_TOPK, M_GROUPS, 2, 2.5
            self.weight = nn.Parameter(torch.randn(M_E, M_D) * M_D ** -0.5)
            self.register_buffer("bias", torch.zeros(M_E))  # e_score_correction_bias: learnt by counting, not SGD

        def forward(self, x):
            scores = F.linear(x, self.weight)
            scores = scores.sigmoid()
            original_scores = scores
            scores = scores + self.bias
            scores = scores.view(x.size(0), self.n_groups, -1)
            group_scores = scores.topk(2, dim=-1)[0].sum(dim=-1)
            indices = group_scores.topk(self.topk_groups, dim=-1)[1]
            mask = scores.new_ones(x.size(0), self.n_groups, dtype=bool).scatter_(1, indices, False)
            scores = scores.masked_fill_(mask.unsqueeze(-1), float("-inf")).flatten(1)
            indices = torch.topk(scores, self.topk, dim=-1)[1]
            weights = original_scores.gather(1, indices)
            weights /= weights.sum(dim=-1, keepdim=True)
            weights *= self.route_scale
            return weights.type_as(x), indices, original_scores

    class Expert(nn.Module):
        def __init__(self, dim, inter_dim):
            super().__init__()
            self.w1 = nn.Linear(dim, inter_dim, bias=False)
            self.w2 = nn.Linear(inter_dim, dim, bias=False)
            self.w3 = nn.Linear(dim, inter_dim, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = Gate()
            self.experts = nn.ModuleList([Expert(M_D, M_FF) for _ in range(M_E)])
            self.shared_experts = Expert(M_D, 2 * M_FF)

        def forward(self, x):
            shape = x.size()
            x = x.view(-1, M_D)
            weights, indices, scores = self.gate(x)
            y = torch.zeros_like(x)
            counts = torch.bincount(indices.flatten(), minlength=M_E).tolist()
            for i in range(M_E):
                if counts[i] == 0:
                    continue
                expert = self.experts[i]
                idx, top = torch.where(indices == i)
                y[idx] += expert(x[idx]) * weights[idx, top, None]
            z = self.shared_experts(x)
            return (y + z).view(shape), indices, scores

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(M_V, M_D)
            self.norm = nn.RMSNorm(M_D)
            self.moe = MoE()
            self.head = nn.Linear(M_D, M_V, bias=False)

        def forward(self, ids):
            h = self.embed(ids)
            out, indices, scores = self.moe(self.norm(h))
            return self.head(h + out), indices, scores

    return Model()


def seq_balance_loss(m, scores, topk_idx, bsz, seq_len, alpha=0.01):
    """DeepSeek-V2/V3's sequence-wise auxiliary loss (modeling_deepseek.py's MoEGate, seq_aux=True)."""
    torch = m.torch
    scores_for_seq_aux = scores.view(bsz, seq_len, -1)
    topk_idx_for_aux_loss = topk_idx.view(bsz, -1)
    ce = torch.zeros(bsz, M_E)
    ce.scatter_add_(1, topk_idx_for_aux_loss, torch.ones(bsz, seq_len * M_TOPK)).div_(seq_len * M_TOPK / M_E)
    scores_for_seq_aux = scores_for_seq_aux / scores_for_seq_aux.sum(dim=-1, keepdim=True)
    return (ce * scores_for_seq_aux.mean(dim=1)).sum(dim=1).mean() * alpha


def deepseek_moe_program(m, weights, steps=4, bias_update_speed=0.01):
    torch, F = m.torch, m.F
    model = load(m, make_deepseek_moe(m), weights)
    ids = torch.tensor(np.random.default_rng(4).integers(0, M_V, (3, 7)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    log, routes, biases = [], [], []
    for step in range(steps):
        logits, indices, scores = model(ids[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, M_V), ids[:, 1:].reshape(-1))
        aux = seq_balance_loss(m, scores, indices, 3, 6)
        loss = ce + aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # auxiliary-loss-free balancing: raise the bias of underloaded experts
            load_ = torch.bincount(indices.flatten(), minlength=M_E).float()
            model.moe.gate.bias += bias_update_speed * torch.sign(load_.mean() - load_)
        log.append([ce.item(), aux.item()])
        routes.append(indices)
        biases.append(model.moe.gate.bias.clone())
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, routes, biases, grads


def test_deepseek_v3_gate_group_limited_routing_and_bias_balancing():
    weights = weights_of(make_deepseek_moe)
    (log, routes, biases, grads), _ = run_both(deepseek_moe_program, weights, rtol=1e-4, atol=1e-6)
    for indices in routes:
        # group-limited: each token's experts lie in at most topk_groups (2) of the 4 groups, and differ
        assert (np.array([len(set(row // (M_E // M_GROUPS))) for row in indices]) <= 2).all()
        assert (indices[:, 0] != indices[:, 1]).all()
    counts = np.bincount(routes[0].ravel(), minlength=M_E)
    np.testing.assert_allclose(biases[0], 0.01 * np.sign(counts.mean() - counts))
    assert grads["moe.gate.weight"] is not None and np.abs(grads["moe.gate.weight"]).sum() > 0
    assert "moe.gate.bias" not in grads


def make_stacked_moe(m, routing):
    torch, nn, F = m.torch, m.nn, m.F

    class StackedExperts(nn.Module):
        """Every expert's weights in one Parameter (torchtitan's GroupedExperts, looped)."""
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.empty(M_E, M_D, M_FF))
            self.w2 = nn.Parameter(torch.empty(M_E, M_FF, M_D))
            self.w3 = nn.Parameter(torch.empty(M_E, M_D, M_FF))
            for w in (self.w1, self.w2, self.w3):
                nn.init.trunc_normal_(w, mean=0.0, std=0.02 * 10)

        def forward(self, x, expert_index):
            # each token's own expert weights, gathered from the stack: (tokens, D, FF)
            w1, w2, w3 = self.w1[expert_index], self.w2[expert_index], self.w3[expert_index]
            h = F.silu(torch.einsum("td,tdf->tf", x, w1)) * torch.einsum("td,tdf->tf", x, w3)
            return torch.einsum("tf,tfd->td", h, w2)

    class SwitchMoE(nn.Module):
        def __init__(self, capacity_factor=1.0):
            super().__init__()
            self.router = nn.Linear(M_D, M_E, bias=False)
            self.experts = StackedExperts()
            self.capacity_factor = capacity_factor

        def forward(self, x):
            tokens = x.shape[0]
            router_probs = F.softmax(self.router(x), dim=-1)
            if routing == "switch":
                expert_index = torch.argmax(router_probs, dim=-1)
                expert_mask = F.one_hot(expert_index, num_classes=M_E)
                capacity = int(self.capacity_factor * tokens / M_E)
                # the position of each token in its expert's queue; tokens past the capacity are dropped
                token_priority = torch.cumsum(expert_mask, dim=-2)
                expert_capacity_mask = token_priority <= capacity
                expert_mask = expert_mask * expert_capacity_mask
                kept = expert_mask.sum(-1).bool()
                gate = torch.max(router_probs, dim=-1).values
                out = torch.zeros_like(x)
                out[kept] = self.experts(x[kept], expert_index[kept]) * gate[kept].unsqueeze(-1)
                # Switch's load-balancing loss on the router's whole choice
                tokens_per_expert = torch.mean(F.one_hot(expert_index, M_E).float(), dim=0)
                aux = M_E * torch.sum(tokens_per_expert * router_probs.mean(0))
                return x + out, aux, kept
            # expert choice: each expert takes its top-capacity tokens (Zhou et al., 2022)
            capacity = int(self.capacity_factor * tokens * 2 / M_E)
            gates, token_index = torch.topk(router_probs.t(), capacity, dim=-1)  # (E, capacity)
            dispatch = F.one_hot(token_index, num_classes=tokens).to(x.dtype)  # (E, capacity, tokens)
            expert_inputs = torch.einsum("ect,td->ecd", dispatch, x)
            expert_ids = torch.arange(M_E).repeat_interleave(capacity)
            expert_outputs = self.experts(expert_inputs.reshape(-1, M_D), expert_ids).view(M_E, capacity, M_D)
            out = torch.einsum("ect,ec,ecd->td", dispatch, gates, expert_outputs)
            chosen = torch.zeros(tokens, dtype=torch.long).index_add_(0, token_index.flatten(),
                                                                     torch.ones(M_E * capacity, dtype=torch.long))
            return x + out, torch.zeros(()), chosen

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(M_V, M_D)
            self.pos = nn.Embedding(8, M_D)  # (equal tokens tie in the expert-choice top-k without it)
            self.moe = SwitchMoE(capacity_factor=1.25)
            self.head = nn.Linear(M_D, M_V)

        def forward(self, ids):
            h = self.embed(ids) + self.pos(torch.arange(ids.shape[1]))
            h, aux, kept = self.moe(h.view(-1, M_D))
            return self.head(h).view(*ids.shape, M_V), aux, kept

    return Model()


def stacked_moe_program(m, weights, routing, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_stacked_moe(m, routing), weights)
    # no token repeats at one position across the batch: equal hidden states would tie in the top-k, and NumPy's
    # BLAS rounds equal rows of a product differently by where they lie, so the ties would break differently
    rng = np.random.default_rng(6)
    ids = torch.tensor(np.stack([rng.choice(M_V, 4, replace=False) for _ in range(6)], 1))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    log, kepts = [], []
    for step in range(steps):
        logits, aux, kept = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, M_V), ids[:, 1:].reshape(-1)) + 0.01 * aux
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        log.append(loss.item())
        kepts.append(kept)
    return log, kepts, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("routing", ["switch", "expert_choice"])
def test_switch_capacity_and_expert_choice_on_stacked_experts(routing):
    weights = weights_of(lambda m: make_stacked_moe(m, routing))
    (log, kepts, grads), _ = run_both(stacked_moe_program, weights, routing, rtol=1e-4, atol=1e-6)
    tokens, capacity = 20, int(1.25 * 20 / M_E)
    if routing == "switch":
        assert all(k.sum() <= M_E * capacity for k in kepts) and not kepts[0].all()
    else:
        assert all(k.sum() == M_E * int(1.25 * 20 * 2 / M_E) for k in kepts)
    per_expert = np.abs(grads["moe.experts.w1"]).sum(axis=(1, 2))
    if routing == "expert_choice":
        assert (per_expert > 0).all()  # every expert takes its tokens, so each slice of the stack learns
    else:
        assert (per_expert > 0).sum() <= len(np.unique(np.flatnonzero(kepts[-1])))  # only the experts that kept tokens
    assert np.isfinite(log).all()


# ----------------------------------------------------------------------------------------------
# PEFT's LoRA layer: rsLoRA scaling, DoRA's magnitude over the column norms of the merged weight, adapters
# injected by replacing modules through get_submodule/setattr, frozen base (requires_grad_(False)),
# merge / unmerge in place, and only the adapter's parameters handed to AdamW
# ----------------------------------------------------------------------------------------------


def peft(m):
    torch, nn, F = m.torch, m.nn, m.F

    class LoraLinear(nn.Module):
        def __init__(self, base_layer, r=4, lora_alpha=8, use_rslora=False, use_dora=False):
            super().__init__()
            self.base_layer = base_layer
            self.r = r
            self.scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
            self.lora_dropout = nn.Identity()
            self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
            self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
            self.use_dora = use_dora
            self.merged = False
            if use_dora:
                weight_norm = self.get_weight_norm(self.base_layer.weight, self.get_delta_weight().detach())
                self.lora_magnitude_vector = nn.Parameter(weight_norm, requires_grad=True)

        def get_delta_weight(self):
            return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

        @staticmethod
        def get_weight_norm(weight, lora_weight, scaling=1.0):
            weight = weight + scaling * lora_weight
            return torch.linalg.norm(weight, dim=1).to(weight.dtype)

        def merge(self):
            if self.merged:
                return
            delta_weight = self.get_delta_weight()
            if not self.use_dora:
                self.base_layer.weight.data += delta_weight
            else:
                weight_norm = self.get_weight_norm(self.base_layer.weight, delta_weight).detach()
                self._cache_weight_norm = weight_norm
                dora_factor = self.lora_magnitude_vector / weight_norm
                new_weight = dora_factor.view(-1, 1) * (self.base_layer.weight.data + delta_weight)
                self.base_layer.weight.data = new_weight
            self.merged = True

        def unmerge(self):
            if not self.merged:
                return
            delta_weight = self.get_delta_weight()
            if not self.use_dora:
                self.base_layer.weight.data -= delta_weight
            else:
                dora_factor = self.lora_magnitude_vector / self._cache_weight_norm
                self.base_layer.weight.data = self.base_layer.weight.data / dora_factor.view(-1, 1) - delta_weight
            self.merged = False

        def forward(self, x):
            result = self.base_layer(x)
            if self.merged:
                return result
            x = self.lora_dropout(x)
            if not self.use_dora:
                return result + self.lora_B(self.lora_A(x)) * self.scaling
            # DoRA (PEFT's DoraLinearLayer): the norm is detached, as in the paper's section 4.3
            lora_weight = self.lora_B.weight @ self.lora_A.weight
            weight_norm = self.get_weight_norm(self.base_layer.weight, lora_weight.detach(), self.scaling).detach()
            mag_norm_scale = (self.lora_magnitude_vector / weight_norm).view(1, -1)
            lora_result = self.lora_B(self.lora_A(x))
            bias = self.base_layer.bias
            base_result = result - bias if bias is not None else result
            result_dora = (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * self.scaling
            return result + result_dora

    def inject(model, target_modules, **kwargs):
        for name, module in list(model.named_modules()):
            if name.split(".")[-1] in target_modules and isinstance(module, nn.Linear):
                parent_name, _, child_name = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                setattr(parent, child_name, LoraLinear(module, **kwargs))
        for n, p in model.named_parameters():
            if "lora_" not in n:
                p.requires_grad_(False)
        return model

    return LoraLinear, inject


def lora_program(m, weights, use_dora, use_rslora, steps=4):
    torch, F = m.torch, m.F
    LoraLinear, inject = peft(m)
    model = load(m, make_qwen(m), weights)
    torch.manual_seed(0)
    model = inject(model, ["q_proj", "v_proj", "down_proj"], r=4, lora_alpha=8, use_dora=use_dora,
                   use_rslora=use_rslora)
    # the same adapter initialisation on both libraries (kaiming draws differ between generators)
    rng = np.random.default_rng(21)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLinear):
                module.lora_A.weight.copy_(torch.tensor(rng.normal(0, 0.3, module.lora_A.weight.shape),
                                                        dtype=torch.float32))
                if use_dora:  # re-derive the magnitude from the new A (B is zero: the base weight's norms)
                    module.lora_magnitude_vector.copy_(module.get_weight_norm(
                        module.base_layer.weight, module.get_delta_weight()))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = m.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=2e-2, weight_decay=0.01)
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    losses = []
    for step in range(steps):
        loss, _ = model(ids, attention_mask, labels=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    frozen_grads = [p.grad for n, p in model.named_parameters() if not p.requires_grad]
    model.eval()
    with torch.no_grad():
        _, unmerged = model(ids, attention_mask)
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.merge()
        _, merged = model(ids, attention_mask)
        merged_weight = model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.unmerge()
        _, unmerged_again = model(ids, attention_mask)
        base_weight = model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    return (losses, trainable, n_trainable, all(g is None for g in frozen_grads), unmerged, merged, unmerged_again,
            merged_weight, base_weight)


@pytest.mark.parametrize("use_dora, use_rslora", [(False, False), (False, True), (True, False)])
def test_peft_lora_rslora_dora_merge_unmerge(qwen_weights, use_dora, use_rslora):
    (losses, trainable, n_trainable, frozen_untouched, unmerged, merged, unmerged_again, merged_weight,
     base_weight), _ = run_both(lora_program, qwen_weights, use_dora, use_rslora, rtol=1e-4, atol=1e-5)
    assert frozen_untouched and losses[-1] < losses[0]
    per_layer = (4 * Q_D + Q_H * Q_HD * 4) + (4 * Q_D + Q_KV * Q_HD * 4) + (4 * Q_FF + Q_D * 4)
    if use_dora:
        per_layer += Q_H * Q_HD + Q_KV * Q_HD + Q_D
    assert n_trainable == Q_L * per_layer and all("lora_" in n for n in trainable)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(unmerged_again, unmerged, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(base_weight, qwen_weights["model.layers.0.self_attn.q_proj.weight"], rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(merged_weight, base_weight)


# ----------------------------------------------------------------------------------------------
# DeepSeek-V3's multi-head latent attention (model.py): YaRN frequencies with a linear ramp, complex rotary
# embeddings on the decoupled rope dimensions (view_as_complex / view_as_real), a low-rank KV with its own
# RMSNorm; trained in the naive form, then the "absorb" form (wkv_b folded into the query and the output by
# einsum) must give the same outputs; plus FlashAttention's online softmax written in PyTorch (blocks,
# running max and logsumexp, -inf guarded by torch.where) against SDPA, forward and backward, and two
# partial attentions merged by logaddexp as ring attention merges them
# ----------------------------------------------------------------------------------------------

A_D, A_H, A_NOPE, A_ROPE, A_V, A_KV_RANK, A_Q_RANK, A_SEQ, A_ORIG = 16, 2, 8, 4, 6, 6, 10, 12, 4


def yarn_freqs_cis(m, qk_rope_head_dim=A_ROPE, seqlen=A_SEQ, rope_theta=10000.0, rope_factor=4.0,
                   original_seq_len=A_ORIG, beta_fast=32, beta_slow=1):
    torch = m.torch
    dim = qk_rope_head_dim
    base = rope_theta
    factor = rope_factor

    def find_correction_dim(num_rotations, dim, base, max_seq_len):
        return dim * math.log(max_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    def find_correction_range(low_rot, high_rot, dim, base, max_seq_len):
        low = math.floor(find_correction_dim(low_rot, dim, base, max_seq_len))
        high = math.ceil(find_correction_dim(high_rot, dim, base, max_seq_len))
        return max(low, 0), min(high, dim - 1)

    def linear_ramp_factor(min, max, dim):
        if min == max:
            max += 0.001
        linear_func = (torch.arange(dim, dtype=torch.float32) - min) / (max - min)
        ramp_func = torch.clamp(linear_func, 0, 1)
        return ramp_func

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if seqlen > original_seq_len:
        low, high = find_correction_range(beta_fast, beta_slow, dim, base, original_seq_len)
        smooth = 1 - linear_ramp_factor(low, high, dim // 2)
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    t = torch.arange(seqlen)
    freqs = torch.outer(t, freqs)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    return freqs_cis


def make_mla(m):
    torch, nn, F = m.torch, m.nn, m.F

    def apply_rotary_emb(x, freqs_cis):
        dtype = x.dtype
        x = torch.view_as_complex(x.float().view(*x.shape[:-1], -1, 2))
        freqs_cis = freqs_cis.view(1, x.size(1), 1, x.size(-1))
        y = torch.view_as_real(x * freqs_cis).flatten(3)
        return y.to(dtype)

    class MLA(nn.Module):
        def __init__(self):
            super().__init__()
            self.qk_head_dim = A_NOPE + A_ROPE
            self.wq_a = nn.Linear(A_D, A_Q_RANK, bias=False)
            self.q_norm = nn.RMSNorm(A_Q_RANK)
            self.wq_b = nn.Linear(A_Q_RANK, A_H * self.qk_head_dim, bias=False)
            self.wkv_a = nn.Linear(A_D, A_KV_RANK + A_ROPE, bias=False)
            self.kv_norm = nn.RMSNorm(A_KV_RANK)
            self.wkv_b = nn.Linear(A_KV_RANK, A_H * (A_NOPE + A_V), bias=False)
            self.wo = nn.Linear(A_H * A_V, A_D, bias=False)
            mscale = 0.1 * 1.0 * math.log(4.0) + 1.0
            self.softmax_scale = self.qk_head_dim ** -0.5 * mscale * mscale

        def forward(self, x, freqs_cis, mask, attn_impl="naive"):
            bsz, seqlen, _ = x.size()
            q = self.wq_b(self.q_norm(self.wq_a(x)))
            q = q.view(bsz, seqlen, A_H, self.qk_head_dim)
            q_nope, q_pe = torch.split(q, [A_NOPE, A_ROPE], dim=-1)
            q_pe = apply_rotary_emb(q_pe, freqs_cis)
            kv = self.wkv_a(x)
            kv, k_pe = torch.split(kv, [A_KV_RANK, A_ROPE], dim=-1)
            k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis)
            if attn_impl == "naive":
                q = torch.cat([q_nope, q_pe], dim=-1)
                kv = self.wkv_b(self.kv_norm(kv))
                kv = kv.view(bsz, seqlen, A_H, A_NOPE + A_V)
                k_nope, v = torch.split(kv, [A_NOPE, A_V], dim=-1)
                k = torch.cat([k_nope, k_pe.expand(-1, -1, A_H, -1)], dim=-1)
                scores = torch.einsum("bshd,bthd->bsht", q, k) * self.softmax_scale
            else:
                wkv_b = self.wkv_b.weight.view(A_H, -1, A_KV_RANK)
                q_nope = torch.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :A_NOPE])
                kv_cache = self.kv_norm(kv)
                pe_cache = k_pe.squeeze(2)
                scores = (torch.einsum("bshc,btc->bsht", q_nope, kv_cache) +
                          torch.einsum("bshr,btr->bsht", q_pe, pe_cache)) * self.softmax_scale
            if mask is not None:
                scores += mask.unsqueeze(1)
            scores = scores.softmax(dim=-1, dtype=torch.float32).type_as(x)
            if attn_impl == "naive":
                x = torch.einsum("bsht,bthd->bshd", scores, v)
            else:
                x = torch.einsum("bsht,btc->bshc", scores, kv_cache)
                x = torch.einsum("bshc,hdc->bshd", x, wkv_b[:, -A_V:])
            return self.wo(x.flatten(2))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(Q_V, A_D)
            self.attn_norm = nn.RMSNorm(A_D)
            self.attn = MLA()
            self.norm = nn.RMSNorm(A_D)
            self.head = nn.Linear(A_D, Q_V, bias=False)
            self.register_buffer("freqs_cis", yarn_freqs_cis(m), persistent=False)

        def forward(self, tokens, attn_impl="naive"):
            seqlen = tokens.size(1)
            h = self.embed(tokens)
            freqs_cis = self.freqs_cis[:seqlen]
            mask = torch.full((seqlen, seqlen), float("-inf")).triu_(1) if seqlen > 1 else None
            h = h + self.attn(self.attn_norm(h), freqs_cis, mask, attn_impl)
            return self.head(self.norm(h))

    return Model()


def mla_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_mla(m), weights)
    tokens = torch.tensor(np.random.default_rng(8).integers(0, Q_V, (3, A_SEQ)))
    optimizer = m.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad for n, p in model.named_parameters()}
    with torch.inference_mode():
        naive = model(tokens)
        absorbed = model(tokens, attn_impl="absorb")
    return losses, grads, naive, absorbed, model.freqs_cis


def test_deepseek_mla_yarn_naive_and_absorbed():
    weights = weights_of(make_mla)
    (losses, grads, naive, absorbed, freqs_cis), _ = run_both(mla_program, weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(absorbed, naive, rtol=1e-4, atol=1e-5)
    assert freqs_cis.dtype == np.complex64 and np.allclose(np.abs(freqs_cis), 1.0)
    # YaRN: with these settings the fastest frequency is kept and the slowest divided by the factor
    np.testing.assert_allclose(np.angle(freqs_cis[1]), [1.0, 0.01 / 4.0], rtol=1e-5)
    assert losses[-1] < losses[0]


def flash_attention_program(m, window=None, block_q=4, block_k=3):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(7)
    B, H, S, Dh = 2, 2, 10, 8
    q, k, v = (torch.randn(B, H, S, Dh, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    scale = Dh ** -0.5

    def flash_forward(q, k, v, causal=True, window=None):
        """Tiled attention with an online softmax (FlashAttention-2's forward, in PyTorch)."""
        out = torch.zeros_like(q)
        lse_out = torch.empty(q.shape[:-1], dtype=q.dtype)
        for qs in range(0, S, block_q):
            qi = q[:, :, qs:qs + block_q]
            rows = torch.arange(qs, min(qs + block_q, S))
            m_i = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
            l_i = torch.zeros(qi.shape[:-1], dtype=q.dtype)
            acc = torch.zeros_like(qi)
            for ks in range(0, S, block_k):
                cols = torch.arange(ks, min(ks + block_k, S))
                s = qi @ k[:, :, ks:ks + block_k].transpose(-2, -1) * scale
                allowed = torch.ones(len(rows), len(cols), dtype=torch.bool)
                if causal:
                    allowed &= cols[None, :] <= rows[:, None]
                if window is not None:
                    allowed &= cols[None, :] > rows[:, None] - window
                if not allowed.any():
                    continue
                s = s.masked_fill(~allowed, float("-inf"))
                m_new = torch.maximum(m_i, s.amax(dim=-1))
                m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with no key yet
                p = torch.exp(s - m_safe.unsqueeze(-1))
                alpha = torch.exp(m_i - m_safe)
                l_i = alpha * l_i + p.sum(dim=-1)
                acc = acc * alpha.unsqueeze(-1) + p @ v[:, :, ks:ks + block_k]
                m_i = m_new
            out[:, :, qs:qs + block_q] = acc / l_i.unsqueeze(-1)
            lse_out[:, :, qs:qs + block_q] = m_i + torch.log(l_i)
        return out, lse_out

    def merge(o1, lse1, o2, lse2):
        """Ring attention's merge of two partial attentions over disjoint keys."""
        lse = torch.logaddexp(lse1, lse2)
        return o1 * torch.exp(lse1 - lse).unsqueeze(-1) + o2 * torch.exp(lse2 - lse).unsqueeze(-1), lse

    rows, cols = torch.arange(S)[:, None], torch.arange(S)[None, :]
    mask = cols <= rows
    if window is not None:
        mask = mask & (cols > rows - window)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    flash, lse = flash_forward(q, k, v, window=window)
    dout = torch.randn(B, H, S, Dh, generator=g, dtype=torch.float64)
    grads_flash = torch.autograd.grad(flash, (q, k, v), dout)
    grads_reference = torch.autograd.grad(reference, (q, k, v), dout)
    # the two halves of the keys attended separately (bidirectional: no row is empty) and merged
    half = S // 2
    o1 = F.scaled_dot_product_attention(q, k[:, :, :half], v[:, :, :half])
    o2 = F.scaled_dot_product_attention(q, k[:, :, half:], v[:, :, half:])
    lse1 = torch.logsumexp(q @ k[:, :, :half].transpose(-2, -1) * scale, dim=-1)
    lse2 = torch.logsumexp(q @ k[:, :, half:].transpose(-2, -1) * scale, dim=-1)
    merged, merged_lse = merge(o1, lse1, o2, lse2)
    full = F.scaled_dot_product_attention(q, k, v)
    grad_merged = torch.autograd.grad(merged.pow(2).sum(), q)[0]
    grad_full = torch.autograd.grad(full.pow(2).sum(), q)[0]
    return flash, reference, lse, grads_flash, grads_reference, merged, full, grad_merged, grad_full


@pytest.mark.parametrize("window", [None, 3])
def test_flash_attention_online_softmax_and_ring_merge(window):
    (flash, reference, lse, grads_flash, grads_reference, merged, full, grad_merged, grad_full), _ = run_both(
        flash_attention_program, window, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(flash, reference, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_flash, grads_reference):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(merged, full, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_merged, grad_full, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# Speculative decoding (Leviathan et al.; gpt-fast's speculative_decode): a draft model proposes k tokens, the
# target scores them in one pass against its KV cache under a lower-right causal bias
# (``torch.nn.attention.bias.causal_lower_right``), accepts each by ``torch.rand`` < q/p and resamples the
# residual ``(q - p)+``; the caches roll back by slicing. Greedy speculation must give the target's own greedy
# tokens. Beam search over the same model, reordering its cache by ``index_select``.
# ----------------------------------------------------------------------------------------------

S_V, S_D, S_H, S_CTX = 13, 16, 2, 24


def make_small_gpt(m, n_layer=2, attn_bias=True):
    torch, nn, F = m.torch, m.nn, m.F
    import importlib
    attention_bias = importlib.import_module(m.nn.__name__ + ".attention.bias")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(S_D)
            self.c_attn = nn.Linear(S_D, 3 * S_D, bias=attn_bias)
            self.c_proj = nn.Linear(S_D, S_D)
            self.ln_2 = nn.LayerNorm(S_D)
            self.mlp = nn.Sequential(nn.Linear(S_D, 4 * S_D), nn.GELU(approximate="tanh"), nn.Linear(4 * S_D, S_D))

        def forward(self, x, layer_cache):
            B, T, C = x.size()
            q, k, v = self.c_attn(self.ln_1(x)).split(S_D, dim=2)
            q, k, v = (t.view(B, T, S_H, C // S_H).transpose(1, 2) for t in (q, k, v))
            if layer_cache is not None:
                if layer_cache:
                    k = torch.cat([layer_cache[0], k], dim=2)
                    v = torch.cat([layer_cache[1], v], dim=2)
                layer_cache[:] = [k, v]
            # T new queries against all S keys: the triangle anchored at the lower right
            mask = attention_bias.causal_lower_right(T, k.size(2))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            x = x + self.c_proj(y)
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(S_V, S_D)
            self.wpe = nn.Embedding(S_CTX, S_D)
            self.h = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(S_D)
            self.lm_head = nn.Linear(S_D, S_V, bias=False)
            self.wte.weight = self.lm_head.weight

        def forward(self, idx, cache=None):
            past = cache[0][0].size(2) if cache is not None and cache[0] else 0
            pos = torch.arange(past, past + idx.size(1), dtype=torch.long)
            x = self.wte(idx) + self.wpe(pos)
            for i, block in enumerate(self.h):
                x = block(x, cache[i] if cache is not None else None)
            return self.lm_head(self.ln_f(x))

    return GPT()


def truncate(cache, length):
    for layer in cache:
        layer[:] = [t[:, :, :length] for t in layer]


def speculative_program(m, target_weights, draft_weights, k=3, new_tokens=8, temperature=0.9):
    torch, F = m.torch, m.F
    target = load(m, make_small_gpt(m), target_weights).eval()
    draft = load(m, make_small_gpt(m, n_layer=1), draft_weights).eval()
    prompt = torch.tensor([[1, 4, 7, 2]])

    def logits_to_probs(logits, greedy):
        if greedy:
            return F.one_hot(logits.argmax(-1), S_V).float()
        return F.softmax(logits / temperature, dim=-1)

    def sample(probs, generator):
        return torch.multinomial(probs, 1, generator=generator)

    def speculative_generate(greedy, generator=None):
        target_cache, draft_cache = [[] for _ in target.h], [[] for _ in draft.h]
        target_logits = target(prompt, target_cache)
        draft(prompt[:, :-1], draft_cache)
        tokens = prompt[0].tolist()
        cur = sample(logits_to_probs(target_logits[0, -1], greedy), generator)  # the first token: the target's
        tokens.append(cur.item())
        # the draft has seen tokens[:-2], the target tokens[:-1]
        accepted_counts = []
        while len(tokens) < prompt.size(1) + new_tokens:
            n_ctx = len(tokens) - 1
            draft_in = torch.tensor([tokens[-2:]])  # the token the draft has not seen, and the newest
            draft_tokens, draft_probs = [], []
            for i in range(k):
                probs = logits_to_probs(draft(draft_in, draft_cache)[0, -1], greedy)
                token = sample(probs, generator) if not greedy else probs.argmax(-1, keepdim=True)
                draft_tokens.append(token)
                draft_probs.append(probs)
                draft_in = token.view(1, 1)
            draft_tokens = torch.cat(draft_tokens)
            draft_probs = torch.stack(draft_probs)
            verify_in = torch.cat([torch.tensor([tokens[-1]]), draft_tokens]).view(1, -1)
            target_probs = logits_to_probs(target(verify_in, target_cache)[0], greedy)  # k + 1 rows
            p = draft_probs[torch.arange(0, k), draft_tokens]
            q = target_probs[torch.arange(0, k), draft_tokens]
            accept_draft_prob = torch.minimum(torch.ones(()), q[:k] / p)
            if greedy:
                rejected_locations = (accept_draft_prob < 1).nonzero()
            else:
                rejected_locations = (torch.rand(k, generator=generator) > accept_draft_prob).nonzero()
            if rejected_locations.shape[0] == 0:
                accept_length = k
                last_token = sample(target_probs[-1], generator) if not greedy else target_probs[-1].argmax(-1,
                                                                                                   keepdim=True)
                new = torch.cat([draft_tokens, last_token])
            else:
                accept_length = rejected_locations[0].item()
                p = draft_probs[accept_length]
                q = target_probs[accept_length]
                new = q - p
                new = torch.where(new > 0, new, 0.0)
                new = new / new.sum()
                next_token = sample(new, generator) if not greedy else new.argmax(-1, keepdim=True)
                new = torch.cat([draft_tokens[:accept_length], next_token])
            accepted_counts.append(accept_length)
            tokens.extend(new.tolist())
            # roll the caches back to the accepted context
            truncate(target_cache, n_ctx + 1 + accept_length)
            truncate(draft_cache, min(n_ctx + 1 + accept_length, draft_cache[0][0].size(2)))
        return tokens[:prompt.size(1) + new_tokens], accepted_counts

    def greedy_generate():
        idx = prompt
        for _ in range(new_tokens):
            idx = torch.cat([idx, target(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return idx[0].tolist()

    with torch.no_grad():
        greedy_tokens = greedy_generate()
        speculative_greedy, greedy_accepted = speculative_generate(True)
        g = torch.Generator().manual_seed(42)
        speculative_sampled, sampled_accepted = speculative_generate(False, g)
    return greedy_tokens, speculative_greedy, greedy_accepted, speculative_sampled, sampled_accepted


def test_speculative_decoding_with_a_lower_right_causal_bias():
    target_weights = weights_of(make_small_gpt, seed=0)
    draft_weights = weights_of(lambda m: make_small_gpt(m, n_layer=1), seed=1)
    # the draft shares the target's (tied) embedding and final norm, and has a block of its own
    draft_weights = {k: (draft_weights[k] if k.startswith("h.") else target_weights[k]) for k in draft_weights}
    (greedy, spec_greedy, greedy_accepted, spec_sampled, sampled_accepted), _ = run_both(
        speculative_program, target_weights, draft_weights)
    assert spec_greedy == greedy
    assert len(spec_sampled) == 12 and all(0 <= t < S_V for t in spec_sampled)
    # drafts partly accepted, rejected and wholly accepted (then the target's own next token is appended)
    assert 0 < sum(greedy_accepted) < 3 * len(greedy_accepted) and 3 in sampled_accepted


def beam_search_program(m, weights, num_beams=3, steps=5):
    torch, F = m.torch, m.F
    model = load(m, make_small_gpt(m), weights).eval()
    prompts = torch.tensor([[1, 4, 7], [3, 3, 9]])
    batch_size = prompts.size(0)
    with torch.no_grad():
        input_ids = prompts.repeat_interleave(num_beams, dim=0)
        cache = [[] for _ in model.h]
        beam_scores = torch.zeros((batch_size, num_beams), dtype=torch.float)
        beam_scores[:, 1:] = -1e9  # the beams start equal: only the first may expand
        beam_scores = beam_scores.view((batch_size * num_beams,))
        model_input = input_ids
        for step in range(steps):
            next_token_logits = model(model_input, cache)[:, -1, :]
            next_token_scores = F.log_softmax(next_token_logits, dim=-1)
            next_token_scores = next_token_scores + beam_scores[:, None].expand_as(next_token_scores)
            vocab_size = next_token_scores.shape[-1]
            next_token_scores = next_token_scores.view(batch_size, num_beams * vocab_size)
            next_token_scores, next_tokens = torch.topk(next_token_scores, 2 * num_beams, dim=1, largest=True,
                                                        sorted=True)
            next_indices = torch.div(next_tokens, vocab_size, rounding_mode="floor")
            next_tokens = next_tokens % vocab_size
            # no end-of-sequence token here: the best num_beams continue
            beam_scores = next_token_scores[:, :num_beams].reshape(-1)
            beam_next_tokens = next_tokens[:, :num_beams].reshape(-1)
            batch_offset = (torch.arange(batch_size) * num_beams).unsqueeze(1)
            beam_idx = (next_indices[:, :num_beams] + batch_offset).view(-1)
            input_ids = torch.cat([input_ids[beam_idx, :], beam_next_tokens.unsqueeze(-1)], dim=-1)
            for layer in cache:  # _reorder_cache
                layer[:] = [past_state.index_select(0, beam_idx) for past_state in layer]
            model_input = beam_next_tokens.unsqueeze(-1)
        # the beams' scores again, teacher-forced through the whole sequence without a cache
        logprobs = F.log_softmax(model(input_ids[:, :-1]), dim=-1)
        rescored = logprobs[:, prompts.size(1) - 1:].gather(-1, input_ids[:, prompts.size(1):, None]).sum((1, 2))
    return input_ids, beam_scores, rescored


def test_beam_search_reorders_its_cache():
    weights = weights_of(make_small_gpt, seed=3)
    (sequences, scores, rescored), _ = run_both(beam_search_program, weights, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, rescored, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores.reshape(2, 3), axis=1) <= 0).all()  # best first
    assert len({tuple(s) for s in sequences[:3]}) == 3  # distinct beams


# ----------------------------------------------------------------------------------------------
# gpt-fast's generate.py sets the compiler's configuration before anything else
# ----------------------------------------------------------------------------------------------


def gpt_fast_compiler_settings(m):
    import importlib
    torch = m.torch
    # import torch._dynamo.config
    # import torch._inductor.config
    importlib.import_module(torch.__name__ + "._dynamo.config")
    importlib.import_module(torch.__name__ + "._inductor.config")
    torch._inductor.config.coordinate_descent_tuning = True
    torch._inductor.config.triton.unique_kernel_names = True
    torch._inductor.config.fx_graph_cache = True  # Experimental feature to reduce compilation times
    torch._dynamo.config.cache_size_limit = 64
    decode_one_token = torch.compile(lambda x: x * 2, mode="reduce-overhead", fullgraph=True)
    return decode_one_token(torch.ones(2)), torch._dynamo.config.cache_size_limit


def test_gpt_fast_compiler_settings():
    (doubled, limit), _ = run_both(gpt_fast_compiler_settings)
    np.testing.assert_array_equal(doubled, [2.0, 2.0])
    assert limit == 64


# ----------------------------------------------------------------------------------------------
# Half-precision inference with the norms kept in float32 (Hugging Face's _keep_in_fp32_modules, CLIP's
# convert_weights): float16 activations through float32 RMSNorm / LayerNorm weights, nn.RMSNorm's default eps
# ----------------------------------------------------------------------------------------------


def half_inference_program(m, qwen_weights, gpt_weights):
    torch, nn = m.torch, m.nn
    qwen = load(m, make_qwen(m), qwen_weights)
    final_norm = nn.RMSNorm(Q_D)  # eps=None: float32's machine epsilon, also for a float16 input
    final_norm.load_state_dict(qwen.model.norm.state_dict())
    qwen.model.norm = final_norm
    gpt = load(m, make_small_gpt(m), gpt_weights)
    for model in (qwen, gpt):
        model.half()
        for module in model.modules():
            if isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                module.float()
    ids, attention_mask, _ = (torch.tensor(a) for a in qwen_batch())
    with torch.no_grad():
        _, qwen_logits = qwen(ids, attention_mask)
        gpt_logits = gpt(ids[:, :8] % S_V)
        tokens, _ = qwen_generate(m, qwen, ids[:, :6], attention_mask[:, :6], 4, cache="dynamic")
    return (qwen_logits.dtype == torch.float16, gpt_logits.dtype == torch.float16, qwen_logits.float(),
            gpt_logits.float(), tokens, qwen.model.norm.weight.dtype == torch.float32)


def test_half_inference_with_float32_norms(qwen_weights):
    gpt_weights = weights_of(make_small_gpt, seed=5)
    (qwen_half, gpt_half, qwen_logits, gpt_logits, tokens, norm_float), _ = run_both(
        half_inference_program, qwen_weights, gpt_weights, rtol=1e-2, atol=2e-2)
    assert qwen_half and gpt_half and norm_float
    # against the float32 model: float16's rounding only
    full = load(OURS, make_qwen(OURS), qwen_weights)
    _, full_logits = full(*(OURS.torch.tensor(a) for a in qwen_batch()[:2]))
    np.testing.assert_allclose(qwen_logits, full_logits.detach().numpy(), rtol=2e-2, atol=5e-2)


def chunked_prefill_program(m, weights):
    """A prompt prefilled in chunks (vLLM / HF's prefill_chunk_size): each chunk's queries attend to the cache
    and to themselves, through the sliding-window mask built from cache_position, into a static or a dynamic
    cache."""
    torch = m.torch
    DynamicCache, StaticCache = caches(m)
    model = load(m, make_qwen(m), weights).eval()
    ids, attention_mask, _ = (torch.tensor(a) for a in qwen_batch())
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    out = {}
    with torch.no_grad():
        _, full = model(ids, attention_mask, position_ids=position_ids)
        for name, cache in (("dynamic", DynamicCache()), ("static", StaticCache(4, 10))):
            chunks = []
            for start, end in ((0, 4), (4, 7), (7, 10)):
                mask = attention_mask if name == "static" else attention_mask[:, :end]
                _, logits = model(ids[:, start:end], mask, position_ids=position_ids[:, start:end],
                                  past_key_values=cache, cache_position=torch.arange(start, end))
                chunks.append(logits)
            out[name] = torch.cat(chunks, dim=1)
    out["full"] = full
    return out


def test_chunked_prefill_matches_the_full_pass(qwen_weights):
    out, _ = run_both(chunked_prefill_program, qwen_weights, rtol=1e-4, atol=1e-5)
    real = qwen_batch()[1] == 1  # (padding rows see all keys when masked throughout: left out)
    for name in ("dynamic", "static"):
        np.testing.assert_allclose(out[name][real], out["full"][real], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Training-memory idioms: Liger-Kernel's fused linear cross-entropy as a torch.autograd.Function (the gradients
# computed chunk by chunk in the forward, addmm_ into a preallocated weight gradient, scaled in the backward);
# packed sequences with position ids restarting per document and a block-diagonal causal mask from cu_seqlens;
# blocks under torch.utils.checkpoint(use_reentrant=False) with activations offloaded by save_on_cpu
# ----------------------------------------------------------------------------------------------


def fused_linear_cross_entropy(m):
    torch, F = m.torch, m.F

    class LigerFusedLinearCrossEntropyFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, _input, weight, target, bias=None, ignore_index=-100, label_smoothing=0.0,
                    reduction="mean"):
            BT, H = _input.shape
            V = weight.shape[0]
            inc_factor = math.ceil(V / H)
            chunk_size = max(1, 2 ** math.ceil(math.log2(math.ceil(BT / inc_factor))) // 2)  # (smaller chunks)
            num_chunks = math.ceil(BT / chunk_size)
            grad_weight = torch.zeros_like(weight)
            grad_input = torch.zeros_like(_input)
            grad_bias = torch.zeros_like(bias) if bias is not None else None
            loss_1d = torch.zeros(BT, dtype=torch.float32)
            target_mask = target != ignore_index
            total_n_non_ignore = target_mask.sum().item()
            for chunk_id in range(num_chunks):
                start_idx = chunk_id * chunk_size
                end_idx = min((chunk_id + 1) * chunk_size, BT)
                _input_chunk = _input[start_idx:end_idx]
                logits_chunk = _input_chunk @ weight.t()
                if bias is not None:
                    logits_chunk = logits_chunk + bias
                target_chunk = target[start_idx:end_idx]
                # the loss and d(loss)/d(logits) of the chunk at once (Liger's Triton kernel, in PyTorch)
                valid = target_chunk != ignore_index
                log_probs = torch.log_softmax(logits_chunk.float(), dim=-1)
                safe_target = target_chunk.masked_fill(~valid, 0)
                nll = -log_probs.gather(-1, safe_target[:, None]).squeeze(-1)
                smooth = -log_probs.mean(-1)
                loss_chunk = ((1 - label_smoothing) * nll + label_smoothing * smooth) * valid
                grad_logits_chunk = log_probs.exp() - label_smoothing / V
                grad_logits_chunk.scatter_add_(1, safe_target[:, None],
                                               torch.full_like(safe_target[:, None], -(1 - label_smoothing),
                                                               dtype=grad_logits_chunk.dtype))
                grad_logits_chunk = grad_logits_chunk * valid[:, None]
                if reduction == "mean":
                    grad_logits_chunk = grad_logits_chunk / total_n_non_ignore
                loss_1d[start_idx:end_idx] = loss_chunk
                grad_logits_chunk = grad_logits_chunk.to(_input.dtype)
                grad_input[start_idx:end_idx] = grad_logits_chunk @ weight
                torch.addmm(input=grad_weight, mat1=grad_logits_chunk.t(), mat2=_input_chunk, out=grad_weight,
                            alpha=1.0, beta=1.0)
                if bias is not None:
                    torch.add(input=grad_bias, other=grad_logits_chunk.sum(dim=0), out=grad_bias, alpha=1.0)
            loss = torch.sum(loss_1d)
            if reduction == "mean":
                loss = loss / total_n_non_ignore
            ctx.save_for_backward(grad_input.detach(), grad_weight.detach(),
                                  grad_bias.detach() if bias is not None else None)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            grad_input, grad_weight, grad_bias = ctx.saved_tensors
            if not torch.equal(grad_output, torch.tensor(1.0, device=grad_output.device)):
                grad_input = grad_input * grad_output
                grad_weight = grad_weight * grad_output
                grad_bias = grad_bias * grad_output if grad_bias is not None else None
            return grad_input, grad_weight, None, grad_bias, None, None, None

    return LigerFusedLinearCrossEntropyFunction


def fused_ce_program(m, label_smoothing):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(26, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(Q_V, 8, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(Q_V, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, Q_V, (26,), generator=g)
    target[[3, 7, 8]] = -100
    fused = fused_linear_cross_entropy(m).apply(hidden, weight, target, bias, -100, label_smoothing)
    (2.5 * fused).backward()  # a grad_output other than 1 is scaled in the backward
    fused_grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    plain_loss = F.cross_entropy(F.linear(hidden, weight, bias), target, ignore_index=-100,
                                 label_smoothing=label_smoothing)
    (2.5 * plain_loss).backward()
    return fused, plain_loss, fused_grads, [t.grad for t in (hidden, weight, bias)]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_liger_fused_linear_cross_entropy_function(label_smoothing):
    (fused, plain_loss, fused_grads, plain_grads), _ = run_both(fused_ce_program, label_smoothing, rtol=1e-6,
                                                                atol=1e-7)
    # (the fused kernel computes its softmax in float32, as Liger's does)
    np.testing.assert_allclose(fused, plain_loss, rtol=1e-6)
    for a, b in zip(fused_grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def packing_program(m, weights):
    torch, F = m.torch, m.F
    from importlib import import_module
    checkpoint = import_module(m.torch.__name__ + ".utils.checkpoint").checkpoint
    model = load(m, make_qwen(m), weights)
    rng = np.random.default_rng(9)
    documents = [torch.tensor(rng.integers(1, Q_V, n)) for n in (4, 3, 5)]
    seqlens = torch.tensor([len(d) for d in documents])
    cu_seqlens = F.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
    packed = torch.cat(documents)[None]
    total = packed.shape[1]
    # position ids restart at each document (DataCollatorWithFlattening)
    position_ids = torch.cat([torch.arange(n) for n in seqlens.tolist()])[None]
    # the block-diagonal causal mask from cu_seqlens, as a float mask over the packed row
    doc_ids = torch.searchsorted(cu_seqlens[1:], torch.arange(total), right=True)
    same_doc = doc_ids[:, None] == doc_ids[None, :]
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    block_diag = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool).tril() for n in seqlens.tolist()])
    float_mask = torch.zeros(1, 1, total, total).masked_fill(~(same_doc & causal), torch.finfo(torch.float32).min)

    def forward(ids, pos, mask):
        hidden = model.model.embed_tokens(ids)
        cos_sin = model.model.rotary_emb(hidden, pos)
        for layer in model.model.layers:
            hidden = checkpoint(layer, hidden, mask, cos_sin, use_reentrant=False)
        return model.lm_head(model.model.norm(hidden))

    with torch.autograd.graph.save_on_cpu(pin_memory=False):
        logits = forward(packed, position_ids, float_mask)
    labels = torch.cat([F.pad(d[1:], (0, 1), value=-100) for d in documents])
    loss = F.cross_entropy(logits[0], labels, ignore_index=-100, reduction="sum")
    loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # each document on its own, without checkpointing: the same logits, loss and gradients
    separate_logits, separate_loss = [], 0.0
    for d in documents:
        n = len(d)
        mask = torch.zeros(1, 1, n, n).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(),
                                                   torch.finfo(torch.float32).min)
        hidden = model.model.embed_tokens(d[None])
        cos_sin = model.model.rotary_emb(hidden, torch.arange(n)[None])
        for layer in model.model.layers:
            hidden = layer(hidden, mask, cos_sin)
        doc_logits = model.lm_head(model.model.norm(hidden))
        separate_logits.append(doc_logits[0])
        separate_loss = separate_loss + F.cross_entropy(doc_logits[0, :-1], d[1:], reduction="sum")
    separate_loss.backward()
    return (logits[0], torch.cat(separate_logits), loss, separate_loss, packed_grads,
            {n: p.grad for n, p in model.named_parameters()}, torch.equal(block_diag, same_doc & causal), cu_seqlens)


def test_packed_documents_with_checkpointing_and_offloading(qwen_weights):
    (logits, separate, loss, separate_loss, packed_grads, separate_grads, masks_agree, cu_seqlens), _ = run_both(
        packing_program, qwen_weights, rtol=1e-4, atol=1e-5)
    assert masks_agree and list(cu_seqlens) == [0, 4, 7, 12]
    np.testing.assert_allclose(logits, separate, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, separate_loss, rtol=1e-5)
    for name in packed_grads:
        np.testing.assert_allclose(packed_grads[name], separate_grads[name], rtol=1e-4, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------------
# The optimizer step fused into the backward pass (PyTorch's tutorial, torchtune's optimizer_in_bwd): one
# AdamW per parameter stepped from register_post_accumulate_grad_hook, once per step also for the tied weight
# ----------------------------------------------------------------------------------------------


def optimizer_in_backward_program(m, weights, fused, steps=3):
    torch = m.torch
    model = load(m, make_qwen(m), weights)
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    calls = []
    if fused:
        optimizer_dict = {p: m.optim.AdamW([p], lr=1e-2, weight_decay=0.1 if p.dim() >= 2 else 0.0)
                          for p in model.parameters()}

        def optimizer_hook(parameter) -> None:
            calls.append(tuple(parameter.shape))
            optimizer_dict[parameter].step()
            optimizer_dict[parameter].zero_grad()

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(optimizer_hook)
    else:
        optimizer = m.optim.AdamW([{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in model.parameters() if p.dim() < 2],
                                    "weight_decay": 0.0}], lr=1e-2)
    losses = []
    for step in range(steps):
        loss, _ = model(ids, attention_mask, labels=labels)
        if not fused:
            optimizer.zero_grad()
        loss.backward()
        if not fused:
            optimizer.step()
        losses.append(loss.item())
    return losses, len(calls), [p.detach() for p in model.parameters()], all(p.grad is None for p in model.parameters())


def test_optimizer_step_in_backward_hooks(qwen_weights):
    (losses, calls, params, grads_freed), _ = run_both(optimizer_in_backward_program, qwen_weights, True, rtol=1e-4,
                                                       atol=1e-5)
    n_params = len(params)
    assert calls == 3 * n_params and grads_freed
    reference = optimizer_in_backward_program(OURS, qwen_weights, False)
    np.testing.assert_allclose(losses, reference[0], rtol=1e-5)
    for a, b in zip(params, reference[2]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# GRPO as TRL writes it: G completions per prompt sampled with a KV cache, a completion mask cut after the
# first eos (argmax of the int mask), rewards standardised within each group (view / repeat_interleave),
# per-token log-probabilities by selective_log_softmax (logsumexp per row), the k3 KL estimate against a
# deep-copied frozen reference, exp(logp - logp.detach()) with PPO's clipped ratio, trained with AdamW
# ----------------------------------------------------------------------------------------------

EOS = 0


def selective_log_softmax(m, logits, index):
    torch = m.torch
    if logits.dtype in [torch.float32, torch.float64]:
        selected_logits = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        # loop to reduce peak memory consumption
        logsumexp_values = torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])
        per_token_logps = selected_logits - logsumexp_values  # log_softmax(x_i) = x_i - logsumexp(x)
    else:
        per_token_logps = []
        for row_logits, row_labels in zip(logits, index):
            row_logps = m.F.log_softmax(row_logits, dim=-1)
            row_per_token_logps = row_logps.gather(dim=-1, index=row_labels.unsqueeze(-1)).squeeze(-1)
            per_token_logps.append(row_per_token_logps)
        per_token_logps = torch.stack(per_token_logps)
    return per_token_logps


def grpo_program(m, weights, num_generations=4, max_completion_length=5, steps=3, beta=0.04, epsilon=0.2):
    import copy
    torch, F = m.torch, m.F
    # (no q/k/v bias: the key bias's gradient is zero but for rounding, which Adam would blow up to steps of lr)
    model = load(m, make_small_gpt(m, attn_bias=False), weights)
    ref_model = copy.deepcopy(model)
    for p in ref_model.parameters():
        p.requires_grad_(False)
    ref_model.eval()
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    prompts = torch.tensor([[3, 5, 7], [2, 2, 9]])
    g = torch.Generator().manual_seed(17)
    log = []

    def reward(completion, mask):  # the number of 4s before the end, less the length
        return ((completion == 4) * mask).sum(-1).float() - 0.1 * mask.sum(-1).float()

    def get_per_token_logps(model, input_ids, logits_to_keep):
        logits = model(input_ids)[:, :-1, :]
        logits = logits[:, -logits_to_keep:]
        return selective_log_softmax(m, logits / 1.0, input_ids[:, -logits_to_keep:])

    for step in range(steps):
        prompt_ids = prompts.repeat_interleave(num_generations, dim=0)
        with torch.no_grad():
            model.eval()
            cache = [[] for _ in model.h]
            logits = model(prompt_ids, cache)[:, -1]
            completion = []
            for _ in range(max_completion_length):
                token = torch.multinomial(F.softmax(logits, -1), 1, generator=g)
                completion.append(token)
                logits = model(token, cache)[:, -1]
            completion_ids = torch.cat(completion, 1)
            model.train()
        is_eos = completion_ids == EOS
        eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long)
        eos_idx[is_eos.any(dim=1)] = is_eos.int().argmax(dim=1)[is_eos.any(dim=1)]
        sequence_indices = torch.arange(is_eos.size(1)).expand(is_eos.size(0), -1)
        completion_mask = (sequence_indices <= eos_idx.unsqueeze(1)).int()
        rewards = reward(completion_ids, completion_mask)
        mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
        std_grouped_rewards = rewards.view(-1, num_generations).std(dim=1)
        mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
        std_grouped_rewards = std_grouped_rewards.repeat_interleave(num_generations, dim=0)
        advantages = (rewards - mean_grouped_rewards) / (std_grouped_rewards + 1e-4)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        logits_to_keep = completion_ids.size(1)
        with torch.no_grad():
            ref_per_token_logps = get_per_token_logps(ref_model, input_ids, logits_to_keep)
        per_token_logps = get_per_token_logps(model, input_ids, logits_to_keep)
        per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
        old_per_token_logps = per_token_logps.detach()
        coef_1 = torch.exp(per_token_logps - old_per_token_logps)
        coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
        per_token_loss1 = coef_1 * advantages.unsqueeze(1)
        per_token_loss2 = coef_2 * advantages.unsqueeze(1)
        per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
        per_token_loss = per_token_loss + beta * per_token_kl
        loss = ((per_token_loss * completion_mask).sum(dim=1) / completion_mask.sum(dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        mean_kl = ((per_token_kl * completion_mask).sum(dim=1) / completion_mask.sum(dim=1)).mean()
        log.append((loss.item(), mean_kl.item(), rewards.mean().item()))
    return log, completion_ids, completion_mask, advantages, [p.detach() for p in model.parameters()]


def test_grpo_group_advantages_kl_and_clipped_ratio():
    weights = weights_of(lambda m: make_small_gpt(m, attn_bias=False), seed=7)
    (log, completion_ids, completion_mask, advantages, params), _ = run_both(grpo_program, weights, rtol=1e-4,
                                                                            atol=1e-5)
    assert log[0][1] == 0.0  # the policy starts as the reference: no KL
    assert log[-1][1] > 0.0
    # the mask keeps each completion up to and with its first eos
    for ids, mask in zip(completion_ids, completion_mask):
        stop = list(ids).index(EOS) + 1 if EOS in ids else len(ids)
        assert list(mask) == [1] * stop + [0] * (len(ids) - stop)
    np.testing.assert_allclose(advantages.reshape(2, 4).mean(1), 0.0, atol=1e-5)  # standardised within groups


# ----------------------------------------------------------------------------------------------
# The Differential Transformer's attention (microsoft/unilm's multihead_diffattn.py): two softmax maps per head
# subtracted with a learnt λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init, nan_to_num on the scores, a per-head
# RMSNorm without affine weights, rotary embeddings by the complex form; trained with AdamW
# ----------------------------------------------------------------------------------------------

DIFF_D, DIFF_H, DIFF_V = 16, 2, 11


def make_diff_transformer(m, depth=1):
    torch, nn, F = m.torch, m.nn, m.F

    def lambda_init_fn(depth):
        return 0.8 - 0.6 * math.exp(-0.3 * depth)

    def apply_rotary_emb(x, freqs_cis):
        x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(x_ * freqs_cis[None, :, None, :]).flatten(3).type_as(x)

    class MultiheadDiffAttn(nn.Module):
        def __init__(self, embed_dim, depth, num_heads):
            super().__init__()
            self.embed_dim = embed_dim
            self.num_heads = num_heads
            self.head_dim = embed_dim // num_heads // 2
            self.scaling = self.head_dim ** -0.5
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.v_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.out_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.lambda_init = lambda_init_fn(depth)
            self.lambda_q1 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.lambda_k1 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.lambda_q2 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.lambda_k2 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.subln = nn.RMSNorm(2 * self.head_dim, eps=1e-5, elementwise_affine=False)

        def forward(self, x, rel_pos, attn_mask=None):
            bsz, tgt_len, embed_dim = x.size()
            src_len = tgt_len
            q = self.q_proj(x).view(bsz, tgt_len, 2 * self.num_heads, self.head_dim)
            k = self.k_proj(x).view(bsz, src_len, 2 * self.num_heads, self.head_dim)
            v = self.v_proj(x).view(bsz, src_len, self.num_heads, 2 * self.head_dim)
            q = apply_rotary_emb(q, rel_pos)
            k = apply_rotary_emb(k, rel_pos)
            q = q.transpose(1, 2) * self.scaling
            k = k.transpose(1, 2)
            v = v.transpose(1, 2)
            attn_weights = torch.matmul(q, k.transpose(-1, -2))
            if attn_mask is None:
                attn_mask = torch.triu(torch.zeros([tgt_len, src_len]).float().fill_(float("-inf")).type_as(
                    attn_weights), 1 + src_len - tgt_len)
            attn_weights = torch.nan_to_num(attn_weights)
            attn_weights += attn_mask
            attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).type_as(attn_weights)
            lambda_1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float()).type_as(q)
            lambda_2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float()).type_as(q)
            lambda_full = lambda_1 - lambda_2 + self.lambda_init
            attn_weights = attn_weights.view(bsz, self.num_heads, 2, tgt_len, src_len)
            attn_weights = attn_weights[:, :, 0] - lambda_full * attn_weights[:, :, 1]
            attn = torch.matmul(attn_weights, v)
            attn = self.subln(attn)
            attn = attn * (1 - self.lambda_init)
            attn = attn.transpose(1, 2).reshape(bsz, tgt_len, self.num_heads * 2 * self.head_dim)
            return self.out_proj(attn)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(DIFF_V, DIFF_D)
            self.norm = nn.RMSNorm(DIFF_D)
            self.attn = MultiheadDiffAttn(DIFF_D, depth, DIFF_H)
            self.head = nn.Linear(DIFF_D, DIFF_V, bias=False)
            head_dim = DIFF_D // DIFF_H // 2
            freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
            angles = torch.outer(torch.arange(16).float(), freqs)
            self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles), persistent=False)

        def forward(self, ids):
            h = self.embed(ids)
            h = h + self.attn(self.norm(h), self.freqs_cis[:ids.shape[1]])
            return self.head(h)

    return Model()


def diff_transformer_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_diff_transformer(m), weights)
    ids = torch.tensor(np.random.default_rng(12).integers(0, DIFF_V, (3, 9)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    losses = []
    for step in range(steps):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    lambdas = [model.attn.lambda_q1.grad, model.attn.lambda_k2.grad]
    return losses, lambdas, [p.detach() for p in model.parameters()]


def test_differential_transformer_attention():
    weights = weights_of(make_diff_transformer)
    (losses, lambda_grads, params), _ = run_both(diff_transformer_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    assert all(np.abs(g).sum() > 0 for g in lambda_grads)  # λ is learnt through both maps


# ----------------------------------------------------------------------------------------------
# Mamba-2's state-space duality (ssd_minimal.py): the chunked SSD by segsum (cumsum, a -inf upper triangle,
# exp) and einsum chains, against the sequential recurrence h_t = exp(A dt_t) h_{t-1} + dt_t B_t x_t, forward
# and gradients
# ----------------------------------------------------------------------------------------------


def ssd_program(m, block_len=4):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(21)
    b, l, h, p, n = 2, 12, 3, 4, 5  # batch, length, heads, head dim, state size
    X = torch.randn(b, l, h, p, generator=g, dtype=torch.float64, requires_grad=True)
    dt = F.softplus(torch.randn(b, l, h, generator=g, dtype=torch.float64)).requires_grad_()
    A = (-torch.exp(torch.randn(h, generator=g, dtype=torch.float64))).requires_grad_()
    B = torch.randn(b, l, h, n, generator=g, dtype=torch.float64, requires_grad=True)
    C = torch.randn(b, l, h, n, generator=g, dtype=torch.float64, requires_grad=True)

    def segsum(x):
        """More stable segment sum calculation."""
        T = x.size(-1)
        x = x[..., None].repeat(*([1] * x.ndim), T)  # "... d -> ... d e"
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
        x = x.masked_fill(~mask, 0)
        x_segsum = torch.cumsum(x, dim=-2)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=0)
        x_segsum = x_segsum.masked_fill(~mask, -torch.inf)
        return x_segsum

    def ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None):
        # rearrange into blocks/chunks: "b (c l) ... -> b c l ..."
        X, A, B, C = [x.reshape(x.shape[0], -1, block_len, *x.shape[2:]) for x in (X, A, B, C)]
        A = A.permute(0, 3, 1, 2)  # "b c l h -> b h c l"
        A_cumsum = torch.cumsum(A, dim=-1)
        # 1. the diagonal blocks (intra-chunk)
        L = torch.exp(segsum(A))
        Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, L, X)
        # 2. the state of each chunk
        decay_states = torch.exp((A_cumsum[:, :, :, -1:] - A_cumsum))
        states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)
        # 3. the inter-chunk recurrence
        if initial_states is None:
            initial_states = torch.zeros_like(states[:, :1])
        states = torch.cat([initial_states, states], dim=1)
        decay_chunk = torch.exp(segsum(F.pad(A_cumsum[:, :, :, -1], (1, 0))))
        new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
        states, final_state = new_states[:, :-1], new_states[:, -1]
        # 4. state -> output
        state_decay_out = torch.exp(A_cumsum)
        Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, state_decay_out)
        Y = Y_diag + Y_off
        return Y.reshape(Y.shape[0], -1, *Y.shape[3:]), final_state

    Y, final_state = ssd_minimal_discrete(X * dt.unsqueeze(-1), A * dt, B, C, block_len)
    # the recurrence, step by step
    state = torch.zeros(b, h, p, n, dtype=torch.float64)
    ys = []
    for t in range(l):
        decay = torch.exp(A * dt[:, t])  # (b, h)
        state = state * decay[..., None, None] + torch.einsum("bhp,bhn->bhpn", X[:, t] * dt[:, t, :, None], B[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    Y_scan = torch.stack(ys, dim=1)
    leaves = (X, dt, A, B, C)
    grads = torch.autograd.grad((Y * Y.detach().sin()).sum() + final_state.sum(), leaves)
    grads_scan = torch.autograd.grad((Y_scan * Y.detach().sin()).sum() + state.sum(), leaves)
    return Y, Y_scan, final_state, state, grads, grads_scan


@pytest.mark.parametrize("block_len", [4, 6])
def test_mamba2_ssd_chunked_against_the_recurrence(block_len):
    (Y, Y_scan, final_state, state, grads, grads_scan), _ = run_both(ssd_program, block_len, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(Y, Y_scan, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(final_state, state, rtol=1e-9, atol=1e-11)
    for a, b in zip(grads, grads_scan):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def half_math_kernel_program(m, weights):
    from importlib import import_module
    torch = m.torch
    attention = import_module(m.nn.__name__ + ".attention")
    model = load(m, make_qwen(m), weights).half()
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    with attention.sdpa_kernel(attention.SDPBackend.MATH):
        loss, logits = model(ids, attention_mask, labels=labels)
    loss.backward()
    return loss, logits, {n: p.grad for n, p in model.named_parameters()}


def test_half_decoder_on_the_math_kernel_to_the_bit(qwen_weights):
    """The whole float16 decoder (RMSNorm, linear layers, rotary embeddings, SDPA's math kernel, SwiGLU,
    cross-entropy) gives PyTorch's float16 logits exactly, and nearly all its gradients: each kernel rounds
    where PyTorch's does."""
    (loss, logits, grads), theirs = run_both(half_math_kernel_program, qwen_weights, rtol=2e-3, atol=1e-4)
    np.testing.assert_array_equal(logits, logits.astype(np.float16))  # (float16 values, made float32 for the loss)
    if theirs is not None:
        np.testing.assert_array_equal(logits, theirs[1])  # (the float32 loss: to its last bit's sum order)
        for name, grad in grads.items():  # the backward's float16 gradients: most to the bit (over 95% where
            # PyTorch's float16 GEMMs add in float32 as NumPy does; on a processor with native float16 they sum in
            # another order, and 62 to 98% are, the rest a unit or two off: within run_both's tolerance above)
            assert grad.dtype == np.float16 and (grad == theirs[2][name]).mean() > 0.6, name
    full = load(OURS, make_qwen(OURS), qwen_weights)
    _, full_logits = full(*(OURS.torch.tensor(a) for a in qwen_batch()[:2]))
    np.testing.assert_allclose(logits, full_logits.detach().numpy(), rtol=2e-2, atol=5e-2)
