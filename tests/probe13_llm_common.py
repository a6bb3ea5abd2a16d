"""What the files of session 13's language-model probe (tests/test_programs_probe13_llm_*.py, one idea each) share:
the tiny Qwen3-style decoder (Hugging Face's modeling_qwen3.py: q/k/v biases, QK-norm by ``nn.RMSNorm`` over the head
dimension, Llama 3.1's rotary frequency smoothing by ``torch.where``, a sliding-window float mask built from
``cache_position`` as Hugging Face builds it, with ``_unmask_unattended``, left padding, SDPA with ``enable_gqa`` and
``scale=``, tied embeddings), its batches and its weights (a module-scoped fixture, bound by name where tests take
it), which most programs run; and the small GPT the speculative decoding, GRPO and half-precision programs run.

The programs (see tests/pytorch_programs.py) go beyond what test_programs_probe10_llm_*.py, test_programs_nanogpt.py
and test_programs_probe4_sequence.py hold; each runs on chainrule and on PyTorch from the same weights, comparing
losses, logits, gradients and generated tokens, and checks what it can by hand."""

import math

import numpy as np
import pytest

from .pytorch_programs import weights_of

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


@pytest.fixture(scope="module")
def qwen_weights():
    return weights_of(make_qwen)


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
