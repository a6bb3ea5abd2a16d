# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, UP039  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today (see tests/pytorch_programs.py), beyond what
test_programs_probe10_llm.py, test_programs_nanogpt.py and test_programs_probe4_sequence.py hold; each
program runs on chainrule and on PyTorch from the same weights, comparing losses, logits, gradients and
generated tokens, and checks what it can by hand.

A Qwen3-style decoder (q/k/v biases, QK-norm by ``nn.RMSNorm`` over the head dimension, Llama 3.1's rotary
frequency smoothing by ``torch.where``, a sliding-window float mask built from ``cache_position`` as Hugging
Face builds it, left padding, SDPA with ``enable_gqa`` and ``scale=``, tied embeddings) trained through
``torch.compile`` with AdamW parameter groups, a warmup-stable-decay ``LambdaLR``, gradient accumulation
normalised by the number of label tokens, and ``clip_grad_norm_(foreach=True)``; its compiled state dict
(``_orig_mod.`` keys) stripped and loaded into a fresh model. Generation from a preallocated static KV cache
written by ``index_copy_`` under ``inference_mode``, against a ``torch.cat`` cache and against no cache, with
repetition / presence / frequency penalties (``gather``/``scatter``, ``scatter_add_`` counts), min-p,
typical-p, top-k / top-p and gpt-fast's exponential-race sampling on a seeded ``Generator``; beam search
reordering its cache by ``index_select``; speculative decoding with a draft model, accepting by
``torch.rand`` and resampling the residual."""

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

        def forward(self, hidden_states, position_embeddings, attention_mask, past_key_value=None):
            input_shape = hidden_states.shape[:-1]
            hidden_shape = (*input_shape, -1, Q_HD)
            query_states = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
            key_states = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)
            value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
            if past_key_value is not None:
                key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx)
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

        def forward(self, hidden_states, attention_mask, position_embeddings, past_key_value=None):
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
            hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, past_key_value)
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
            target_length = attention_mask.shape[-1]
            mask = sliding_causal_mask(m, attention_mask, inputs_embeds.shape[1], target_length, inputs_embeds.dtype,
                                       cache_position, Q_WINDOW)
            position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
            hidden_states = inputs_embeds
            for layer in self.layers:
                hidden_states = layer(hidden_states, mask, position_embeddings, past_key_values)
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
