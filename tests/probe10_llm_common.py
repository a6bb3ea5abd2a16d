"""What the files of session 10's probe of language-model code (tests/test_programs_probe10_llm_*.py, one family of
models or tools each) share: a tiny Hugging Face LLaMA (its sizes, the model as modeling_llama.py writes it, its
batches and weights), which the LoRA, training-utility and Mamba programs build on too.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights,
comparing losses, logits, gradients and generated tokens (nanoGPT and Meta's LLaMA reference are in
test_programs_nanogpt.py / test_programs_probe4_sequence.py)."""

import numpy as np
import pytest

from .pytorch_programs import weights_of

V, D, H, KV, L, HD = 13, 16, 4, 2, 2, 4


def make_llama(m, attn="eager"):
    torch, nn, F = m.torch, m.nn, m.F

    class LlamaRMSNorm(nn.Module):
        def __init__(self, hidden_size, eps=1e-6):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(hidden_size))
            self.variance_epsilon = eps

        def forward(self, hidden_states):
            input_dtype = hidden_states.dtype
            hidden_states = hidden_states.to(torch.float32)
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * hidden_states.to(input_dtype)

    class LlamaRotaryEmbedding(nn.Module):
        def __init__(self, dim, base=10000.0):
            super().__init__()
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

        @torch.no_grad()
        def forward(self, x, position_ids):
            inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
            position_ids_expanded = position_ids[:, None, :].float()
            freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos()
            sin = emb.sin()
            return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        cos = cos.unsqueeze(unsqueeze_dim)
        sin = sin.unsqueeze(unsqueeze_dim)
        q_embed = (q * cos) + (rotate_half(q) * sin)
        k_embed = (k * cos) + (rotate_half(k) * sin)
        return q_embed, k_embed

    def repeat_kv(hidden_states, n_rep):
        batch, num_key_value_heads, slen, head_dim = hidden_states.shape
        if n_rep == 1:
            return hidden_states
        hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
        return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)

    class LlamaAttention(nn.Module):
        def __init__(self, layer_idx):
            super().__init__()
            self.layer_idx = layer_idx
            self.head_dim = HD
            self.num_key_value_groups = H // KV
            self.scaling = self.head_dim ** -0.5
            self.q_proj = nn.Linear(D, H * HD, bias=False)
            self.k_proj = nn.Linear(D, KV * HD, bias=False)
            self.v_proj = nn.Linear(D, KV * HD, bias=False)
            self.o_proj = nn.Linear(H * HD, D, bias=False)

        def forward(self, hidden_states, position_embeddings, attention_mask, past_key_value=None):
            input_shape = hidden_states.shape[:-1]
            hidden_shape = (*input_shape, -1, self.head_dim)
            query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
            if past_key_value is not None:
                if self.layer_idx in past_key_value:
                    past_k, past_v = past_key_value[self.layer_idx]
                    key_states = torch.cat([past_k, key_states], dim=-2)
                    value_states = torch.cat([past_v, value_states], dim=-2)
                past_key_value[self.layer_idx] = (key_states, value_states)
            if attn == "eager":
                key_states = repeat_kv(key_states, self.num_key_value_groups)
                value_states = repeat_kv(value_states, self.num_key_value_groups)
                attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
                if attention_mask is not None:
                    causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
                    attn_weights = attn_weights + causal_mask
                attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
                attn_output = torch.matmul(attn_weights, value_states)
            elif attn == "sdpa_gqa":  # the key/value heads repeated by SDPA itself
                attn_output = F.scaled_dot_product_attention(
                    query_states, key_states, value_states, attn_mask=attention_mask, dropout_p=0.0,
                    scale=self.scaling, enable_gqa=True)
            else:  # "sdpa_causal": no mask tensor, is_causal=True when there is more than one query
                key_states = repeat_kv(key_states, self.num_key_value_groups).contiguous()
                value_states = repeat_kv(value_states, self.num_key_value_groups).contiguous()
                is_causal = query_states.shape[2] > 1
                attn_output = F.scaled_dot_product_attention(query_states, key_states, value_states,
                                                             dropout_p=0.0, is_causal=is_causal)
            attn_output = attn_output.transpose(1, 2).contiguous()
            attn_output = attn_output.reshape(*input_shape, -1).contiguous()
            return self.o_proj(attn_output)

    class LlamaMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(D, 2 * D, bias=False)
            self.up_proj = nn.Linear(D, 2 * D, bias=False)
            self.down_proj = nn.Linear(2 * D, D, bias=False)
            self.act_fn = nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    class LlamaDecoderLayer(nn.Module):
        def __init__(self, layer_idx):
            super().__init__()
            self.self_attn = LlamaAttention(layer_idx)
            self.mlp = LlamaMLP()
            self.input_layernorm = LlamaRMSNorm(D, eps=1e-6)
            self.post_attention_layernorm = nn.RMSNorm(D, eps=1e-6)  # the built-in beside the hand-written one

        def forward(self, hidden_states, attention_mask, position_embeddings, past_key_value=None):
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
            hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask, past_key_value)
            hidden_states = residual + hidden_states
            residual = hidden_states
            hidden_states = self.post_attention_layernorm(hidden_states)
            hidden_states = self.mlp(hidden_states)
            return residual + hidden_states

    class LlamaForCausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(V, D)
            self.layers = nn.ModuleList([LlamaDecoderLayer(i) for i in range(L)])
            self.norm = LlamaRMSNorm(D, eps=1e-6)
            self.rotary_emb = LlamaRotaryEmbedding(HD)
            self.lm_head = nn.Linear(D, V, bias=False)

        def forward(self, input_ids, labels=None, past_key_values=None, position_ids=None):
            inputs_embeds = self.embed_tokens(input_ids)
            past_seen = 0 if not past_key_values else past_key_values[0][0].shape[-2]
            seq = input_ids.shape[1]
            cache_position = torch.arange(past_seen, past_seen + seq, device=inputs_embeds.device)
            if position_ids is None:
                position_ids = cache_position.unsqueeze(0)
            min_dtype = torch.finfo(inputs_embeds.dtype).min
            causal_mask = torch.full((seq, past_seen + seq), fill_value=min_dtype, dtype=inputs_embeds.dtype)
            causal_mask = torch.triu(causal_mask, diagonal=1 + past_seen)
            causal_mask = causal_mask[None, None, :, :].expand(input_ids.shape[0], 1, -1, -1)
            if attn == "sdpa_gqa":  # a boolean mask: True where a query may attend
                causal_mask = causal_mask == 0
            hidden_states = inputs_embeds
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
            for decoder_layer in self.layers:
                hidden_states = decoder_layer(hidden_states, causal_mask, position_embeddings, past_key_values)
            hidden_states = self.norm(hidden_states)
            logits = self.lm_head(hidden_states)
            loss = None
            if labels is not None:
                logits_f = logits.float()
                shift_logits = logits_f[..., :-1, :].contiguous()
                shift_labels = labels[..., 1:].contiguous()
                loss = nn.functional.cross_entropy(shift_logits.view(-1, V), shift_labels.view(-1), ignore_index=-100)
            return loss, logits

    return LlamaForCausalLM()


def llama_batches():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (4, 9))
    labels = ids.copy()
    labels[1, 6:] = -100  # padding positions left out of the loss
    return ids, labels


@pytest.fixture(scope="module")
def llama_weights():
    return weights_of(make_llama)
