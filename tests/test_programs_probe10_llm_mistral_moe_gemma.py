# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Language-model code as it is written today, run as tests/probe10_llm_common.py says. Mistral's reference (banded
mask by ``triu``/``log``, a rotating cache by ``scatter_``); Mixtral / DeepSeek mixture-of-experts dispatch with the
load-balancing and z losses; Gemma 2 with soft-capping, fine-tuned by TRL's DPO against a deep-copied frozen
reference."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Mistral's reference one_file_ref.py: a banded causal mask by tril/triu(diagonal=-window) and log, rotary
# embeddings by polar/view_as_complex indexed by positions, repeat_interleave for the KV heads, and the
# rotating KV cache written by scatter_ on a slice of a buffer, read back after .item()
# ----------------------------------------------------------------------------------------------

M_V, M_D, M_H, M_KV, M_HD, M_WINDOW, M_MAXLEN = 11, 8, 2, 1, 4, 3, 16


def make_mistral(m):
    torch, nn = m.torch, m.nn

    def precompute_freqs_cis(dim, end, theta=10000.0):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
        t = torch.arange(end, device=freqs.device)
        freqs = torch.outer(t, freqs).float()
        return torch.polar(torch.ones_like(freqs), freqs)

    def apply_rotary_emb(xq, xk, freqs_cis):
        xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
        xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
        freqs_cis = freqs_cis[:, None, :]
        xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
        xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
        return xq_out.type_as(xq), xk_out.type_as(xk)

    def repeat_kv(keys, values, repeats):
        keys = torch.repeat_interleave(keys, repeats=repeats, dim=2)
        values = torch.repeat_interleave(values, repeats=repeats, dim=2)
        return keys, values

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_heads, self.n_kv_heads, self.head_dim = M_H, M_KV, M_HD
            self.repeats = self.n_heads // self.n_kv_heads
            self.sliding_window = M_WINDOW
            self.scale = M_HD ** -0.5
            self.wq = nn.Linear(M_D, M_H * M_HD, bias=False)
            self.wk = nn.Linear(M_D, M_KV * M_HD, bias=False)
            self.wv = nn.Linear(M_D, M_KV * M_HD, bias=False)
            self.wo = nn.Linear(M_H * M_HD, M_D, bias=False)
            self.register_buffer("cache_k", torch.empty((2, M_WINDOW, M_KV, M_HD)), persistent=False)
            self.register_buffer("cache_v", torch.empty((2, M_WINDOW, M_KV, M_HD)), persistent=False)

        def forward(self, x, freqs_cis, positions, mask):
            bsz, seqlen, _ = x.shape
            xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
            xq = xq.view(bsz, seqlen, self.n_heads, self.head_dim)
            xk = xk.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
            xv = xv.view(bsz, seqlen, self.n_kv_heads, self.head_dim)
            xq, xk = apply_rotary_emb(xq, xk, freqs_cis=freqs_cis)
            # The cache is a rotating buffer
            scatter_pos = (positions[-self.sliding_window:] % self.sliding_window)[None, :, None, None]
            scatter_pos = scatter_pos.repeat(bsz, 1, self.n_kv_heads, self.head_dim)
            self.cache_k[:bsz].scatter_(dim=1, index=scatter_pos, src=xk[:, -self.sliding_window:].detach())
            self.cache_v[:bsz].scatter_(dim=1, index=scatter_pos, src=xv[:, -self.sliding_window:].detach())
            if positions.shape[0] > 1:
                key, value = repeat_kv(xk, xv, self.repeats)  # prefill
            else:
                cur_pos = positions[-1].item() + 1
                key, value = repeat_kv(self.cache_k[:bsz, :cur_pos, ...], self.cache_v[:bsz, :cur_pos, ...],
                                       self.repeats)
            query = xq.transpose(1, 2)
            key = key.transpose(1, 2)
            value = value.transpose(1, 2)
            scores = torch.matmul(query, key.transpose(2, 3)) * self.scale
            if mask is not None:
                scores += mask[None, None, ...]
            scores = scores.float()
            scores = nn.functional.softmax(scores, dim=-1).type_as(query)
            output = torch.matmul(scores, value)
            output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
            return self.wo(output)

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps=1e-6):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(dim))

        def _norm(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x):
            output = self._norm(x.float()).type_as(x)
            return output * self.weight

    class TransformerBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.feed_forward = nn.ModuleDict({"w1": nn.Linear(M_D, 16, bias=False),
                                               "w2": nn.Linear(16, M_D, bias=False),
                                               "w3": nn.Linear(M_D, 16, bias=False)})
            self.attention_norm = RMSNorm(M_D)
            self.ffn_norm = RMSNorm(M_D)

        def forward(self, x, freqs_cis, positions, mask):
            r = self.attention.forward(self.attention_norm(x), freqs_cis, positions, mask)
            h = x + r
            f = self.feed_forward
            y = self.ffn_norm(h)
            r = f["w2"](nn.functional.silu(f["w1"](y)) * f["w3"](y))
            return h + r

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(M_V, M_D)
            self.layers = nn.ModuleList([TransformerBlock() for _ in range(2)])
            self.norm = RMSNorm(M_D)
            self.output = nn.Linear(M_D, M_V, bias=False)
            self.freqs_cis = precompute_freqs_cis(M_HD, M_MAXLEN)

        def forward(self, input_ids, positions):
            h = self.tok_embeddings(input_ids)
            freqs_cis = self.freqs_cis[positions]
            mask = None
            if input_ids.shape[1] > 1:
                seqlen = input_ids.shape[1]
                tensor = torch.full((seqlen, seqlen), dtype=h.dtype, fill_value=1, device=h.device)
                mask = torch.tril(tensor, diagonal=0).to(h.dtype)
                # make the mask banded to account for sliding window
                mask = torch.triu(mask, diagonal=-M_WINDOW)
                mask = torch.log(mask)
            for layer in self.layers:
                h = layer(h, freqs_cis, positions, mask)
            return self.output(self.norm(h)).float()

    return Transformer()


def mistral_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_mistral(m), weights)
    tokens = torch.tensor(np.random.default_rng(8).integers(0, M_V, (2, 9)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1], torch.arange(0, 8))
        loss = F.cross_entropy(logits.reshape(-1, M_V), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens, torch.arange(0, 9))
        prefill = model(tokens[:, :2], torch.arange(0, 2))
        decoded = [prefill[:, -1]]
        for pos in range(2, 9):
            decoded.append(model(tokens[:, pos:pos + 1], torch.arange(pos, pos + 1))[:, -1])
    return losses, full, torch.stack(decoded, 1), model.layers[0].attention.cache_k


def test_mistral_reference_sliding_window_and_rotating_cache():
    weights = weights_of(make_mistral)
    ours, _ = run_both(mistral_program, weights, rtol=1e-4, atol=1e-5)
    losses, full, decoded, cache_k = ours
    assert losses[-1] < losses[0]
    # while the window still holds every earlier token, the rotating cache decodes as the full pass
    np.testing.assert_allclose(decoded[:, :M_WINDOW - 1], full[:, 1:M_WINDOW], rtol=1e-4, atol=1e-5)
    assert np.isfinite(decoded).all()


# ----------------------------------------------------------------------------------------------
# Mixture of experts: Mixtral's sparse block as Hugging Face writes it (softmax in float, topk,
# renormalised in place, F.one_hot(...).permute, experts indexed by a one-element tensor, torch.where,
# index_add_), its load-balancing loss with an attention mask; DeepSeek's moe_infer (scatter_ of
# counts, argsort of the expert ids, tokens split by counts read back through .cpu().numpy(), put
# back by index assignment, mul_ by the weights); the router z-loss of Switch Transformers
# ----------------------------------------------------------------------------------------------

E_D, E_FF, E_N, E_TOPK = 6, 8, 4, 2


def make_moe(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MixtralBlockSparseTop2MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(E_D, E_FF, bias=False)
            self.w2 = nn.Linear(E_FF, E_D, bias=False)
            self.w3 = nn.Linear(E_D, E_FF, bias=False)
            self.act_fn = nn.SiLU()

        def forward(self, hidden_states):
            current_hidden_states = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)
            return self.w2(current_hidden_states)

    class MixtralSparseMoeBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_dim, self.num_experts, self.top_k = E_D, E_N, E_TOPK
            self.gate = nn.Linear(self.hidden_dim, self.num_experts, bias=False)
            self.experts = nn.ModuleList([MixtralBlockSparseTop2MLP() for _ in range(self.num_experts)])

        def forward(self, hidden_states):
            batch_size, sequence_length, hidden_dim = hidden_states.shape
            hidden_states = hidden_states.view(-1, hidden_dim)
            router_logits = self.gate(hidden_states)
            routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
            routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
            routing_weights = routing_weights.to(hidden_states.dtype)
            final_hidden_states = torch.zeros((batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype,
                                              device=hidden_states.device)
            expert_mask = nn.functional.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
            expert_hitted = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
            for expert_idx in expert_hitted:
                expert_layer = self.experts[expert_idx]
                idx, top_x = torch.where(expert_mask[expert_idx].squeeze(0))
                current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
                current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]
                final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))
            final_hidden_states = final_hidden_states.reshape(batch_size, sequence_length, hidden_dim)
            return final_hidden_states, router_logits

        def moe_infer(self, x, topk_ids, topk_weight):  # DeepSeek-V3's, on the same experts
            cnts = topk_ids.new_zeros((topk_ids.shape[0], len(self.experts)))
            cnts.scatter_(1, topk_ids, 1)
            tokens_per_expert = cnts.sum(dim=0)
            idxs = topk_ids.view(-1).argsort()
            sorted_tokens = x[idxs // topk_ids.shape[1]]
            tokens_per_expert = tokens_per_expert.cpu().numpy()
            outputs = []
            start_idx = 0
            for i, num_tokens in enumerate(tokens_per_expert):
                end_idx = start_idx + num_tokens
                if num_tokens == 0:
                    continue
                expert = self.experts[i]
                tokens_for_this_expert = sorted_tokens[start_idx:end_idx]
                expert_out = expert(tokens_for_this_expert)
                outputs.append(expert_out)
                start_idx = end_idx
            outs = torch.cat(outputs, dim=0) if len(outputs) else sorted_tokens.new_empty(0)
            new_x = torch.empty_like(outs)
            new_x[idxs] = outs
            final_out = (new_x.view(*topk_ids.shape, -1).type(topk_weight.dtype).mul_(topk_weight.unsqueeze(dim=-1))
                         .sum(dim=1).type(new_x.dtype))
            return final_out

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(9, E_D)
            self.moe = nn.ModuleList([MixtralSparseMoeBlock() for _ in range(2)])
            self.head = nn.Linear(E_D, 9)

        def forward(self, ids):
            h = self.embed(ids)
            all_router_logits = ()
            for block in self.moe:
                out, router_logits = block(h)
                h = h + out
                all_router_logits += (router_logits,)
            return self.head(h), all_router_logits

    return Model()


def load_balancing_loss_func(m, gate_logits, num_experts, top_k=2, attention_mask=None):
    torch = m.torch
    compute_device = gate_logits[0].device
    concatenated_gate_logits = torch.cat([layer_gate.to(compute_device) for layer_gate in gate_logits], dim=0)
    routing_weights = m.F.softmax(concatenated_gate_logits, dim=-1)
    _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = m.F.one_hot(selected_experts, num_experts)
    if attention_mask is None:
        tokens_per_expert = torch.mean(expert_mask.float(), dim=0)
        router_prob_per_expert = torch.mean(routing_weights, dim=0)
    else:
        batch_size, sequence_length = attention_mask.shape
        num_hidden_layers = concatenated_gate_logits.shape[0] // (batch_size * sequence_length)
        expert_attention_mask = (
            attention_mask[None, :, :, None, None]
            .expand((num_hidden_layers, batch_size, sequence_length, top_k, num_experts))
            .reshape(-1, top_k, num_experts)
            .to(compute_device))
        tokens_per_expert = torch.sum(expert_mask.float() * expert_attention_mask, dim=0) / torch.sum(
            expert_attention_mask, dim=0)
        router_per_expert_attention_mask = (
            attention_mask[None, :, :, None]
            .expand((num_hidden_layers, batch_size, sequence_length, num_experts))
            .reshape(-1, num_experts)
            .to(compute_device))
        router_prob_per_expert = torch.sum(routing_weights * router_per_expert_attention_mask, dim=0) / torch.sum(
            router_per_expert_attention_mask, dim=0)
    overall_loss = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0))
    return overall_loss * num_experts


def router_z_loss_func(m, router_logits):
    num_groups, tokens_per_group, _ = router_logits.shape
    log_z = m.torch.logsumexp(router_logits, dim=-1)
    z_loss = log_z ** 2
    return m.torch.sum(z_loss) / (num_groups * tokens_per_group)


def moe_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_moe(m), weights)
    ids = torch.tensor(np.random.default_rng(2).integers(0, 9, (3, 5)))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    log = []
    for step in range(steps):
        logits, router_logits = model(ids[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, 9), ids[:, 1:].reshape(-1))
        aux = load_balancing_loss_func(m, router_logits, E_N, E_TOPK, attention_mask[:, :-1])
        aux_unmasked = load_balancing_loss_func(m, router_logits, E_N, E_TOPK)
        z = router_z_loss_func(m, torch.stack(router_logits).view(2, -1, E_N))
        loss = ce + 0.02 * aux + 1e-3 * z
        optimizer.zero_grad()
        loss.backward()
        log.append([ce.item(), aux.item(), aux_unmasked.item(), z.item()])
        gate_grad = model.moe[0].gate.weight.grad.clone()
        optimizer.step()
    block = model.moe[0]
    x = model.embed(ids).view(-1, E_D)
    with torch.no_grad():
        mixtral, router_logits = block(x[None])
        weights_ = F.softmax(router_logits, dim=1, dtype=torch.float)
        topk_weight, topk_ids = torch.topk(weights_, E_TOPK, dim=-1)
        topk_weight /= topk_weight.sum(dim=-1, keepdim=True)
        deepseek = block.moe_infer(x, topk_ids, topk_weight)
        counts = torch.bincount(topk_ids.flatten(), minlength=E_N)
    return log, gate_grad, mixtral[0], deepseek, counts


def test_mixture_of_experts_routing_and_aux_losses():
    weights = weights_of(make_moe)
    ours, _ = run_both(moe_program, weights, rtol=1e-4, atol=1e-6)
    log, gate_grad, mixtral, deepseek, counts = ours
    np.testing.assert_allclose(mixtral, deepseek, rtol=1e-5, atol=1e-6)  # two dispatches, one layer
    assert counts.sum() == 15 * E_TOPK and np.abs(gate_grad).sum() > 0
    assert all(0 < aux_unmasked <= E_N * E_TOPK for _, _, aux_unmasked, _ in log)
    assert log[-1][0] < log[0][0]


# ----------------------------------------------------------------------------------------------
# Gemma 2 as Hugging Face writes it (RMSNorm scaling by 1 + weight in float32, the embedding scaled by
# a sqrt(hidden) tensor, gelu-tanh GeGLU, attention and final-logit soft-capping by tanh, local layers
# whose mask is torch.where(tril(ones_like(mask, bool), diagonal=-window), finfo.min, mask)), fine-tuned
# by TRL's DPO: a reference model by copy.deepcopy + requires_grad_(False) + eval(), chosen/rejected
# padded to one length by torch.cat, get_batch_logps by gather of log_softmax, the sigmoid/hinge/IPO losses
# ----------------------------------------------------------------------------------------------

GM_V, GM_D, GM_H, GM_HD, GM_WINDOW = 12, 8, 2, 4, 2


def make_gemma(m):
    torch, nn = m.torch, m.nn

    class Gemma2RMSNorm(nn.Module):
        def __init__(self, dim, eps=1e-6):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.zeros(dim))

        def _norm(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x):
            output = self._norm(x.float())
            output = output * (1.0 + self.weight.float())
            return output.type_as(x)

    class Gemma2MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(GM_D, 16, bias=False)
            self.up_proj = nn.Linear(GM_D, 16, bias=False)
            self.down_proj = nn.Linear(16, GM_D, bias=False)

        def forward(self, x):
            return self.down_proj(nn.functional.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))

    class Gemma2Attention(nn.Module):
        def __init__(self, layer_idx):
            super().__init__()
            self.scaling = 6 ** -0.5  # query_pre_attn_scalar
            self.attn_logit_softcapping = 50.0
            self.is_sliding = not bool(layer_idx % 2)
            self.q_proj = nn.Linear(GM_D, GM_H * GM_HD, bias=False)
            self.k_proj = nn.Linear(GM_D, GM_H * GM_HD, bias=False)
            self.v_proj = nn.Linear(GM_D, GM_H * GM_HD, bias=False)
            self.o_proj = nn.Linear(GM_H * GM_HD, GM_D, bias=False)

        def forward(self, hidden_states, attention_mask):
            input_shape = hidden_states.shape[:-1]
            hidden_shape = (*input_shape, -1, GM_HD)
            query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
            attn_weights = torch.matmul(query, key.transpose(2, 3)) * self.scaling
            attn_weights = attn_weights / self.attn_logit_softcapping
            attn_weights = torch.tanh(attn_weights)
            attn_weights = attn_weights * self.attn_logit_softcapping
            attn_weights = attn_weights + attention_mask
            attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
            attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
            return self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())

    class Gemma2DecoderLayer(nn.Module):
        def __init__(self, layer_idx):
            super().__init__()
            self.self_attn = Gemma2Attention(layer_idx)
            self.is_sliding = self.self_attn.is_sliding
            self.sliding_window = GM_WINDOW
            self.mlp = Gemma2MLP()
            self.input_layernorm = Gemma2RMSNorm(GM_D)
            self.post_attention_layernorm = Gemma2RMSNorm(GM_D)
            self.pre_feedforward_layernorm = Gemma2RMSNorm(GM_D)
            self.post_feedforward_layernorm = Gemma2RMSNorm(GM_D)

        def forward(self, hidden_states, attention_mask):
            if self.is_sliding and attention_mask is not None:
                min_dtype = torch.finfo(hidden_states.dtype).min
                sliding_window_mask = torch.tril(torch.ones_like(attention_mask, dtype=torch.bool),
                                                 diagonal=-self.sliding_window)
                attention_mask = torch.where(sliding_window_mask, min_dtype, attention_mask)
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
            hidden_states = self.self_attn(hidden_states, attention_mask)
            hidden_states = self.post_attention_layernorm(hidden_states)
            hidden_states = residual + hidden_states
            residual = hidden_states
            hidden_states = self.pre_feedforward_layernorm(hidden_states)
            hidden_states = self.mlp(hidden_states)
            hidden_states = self.post_feedforward_layernorm(hidden_states)
            return residual + hidden_states

    class Gemma2ForCausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(GM_V, GM_D, padding_idx=0)
            self.layers = nn.ModuleList([Gemma2DecoderLayer(i) for i in range(2)])
            self.norm = Gemma2RMSNorm(GM_D)
            self.lm_head = nn.Linear(GM_D, GM_V, bias=False)
            self.lm_head.weight = self.embed_tokens.weight
            self.final_logit_softcapping = 30.0

        def forward(self, input_ids, attention_mask):
            hidden_states = self.embed_tokens(input_ids)
            normalizer = torch.tensor(GM_D ** 0.5, dtype=hidden_states.dtype)
            hidden_states = hidden_states * normalizer
            dtype = hidden_states.dtype
            seq = input_ids.shape[1]
            causal_mask = torch.full((seq, seq), fill_value=torch.finfo(dtype).min, dtype=dtype)
            causal_mask = torch.triu(causal_mask, diagonal=1)[None, None].expand(input_ids.shape[0], 1, -1, -1).clone()
            padding_mask = causal_mask + attention_mask[:, None, None, :]
            padding_mask = padding_mask == 0
            causal_mask = causal_mask.masked_fill(padding_mask, torch.finfo(dtype).min)
            for layer in self.layers:
                hidden_states = layer(hidden_states, causal_mask)
            logits = self.lm_head(self.norm(hidden_states))
            logits = logits / self.final_logit_softcapping
            logits = torch.tanh(logits)
            logits = logits * self.final_logit_softcapping
            return logits

    return Gemma2ForCausalLM()


def dpo_program(m, weights, loss_type="sigmoid", steps=3, beta=0.1, label_smoothing=0.0):
    torch, F = m.torch, m.F
    import copy

    model = load(m, make_gemma(m), weights)
    ref_model = copy.deepcopy(model)
    for param in ref_model.parameters():
        param.requires_grad = False
    ref_model.eval()
    assert ref_model.lm_head.weight is ref_model.embed_tokens.weight and ref_model.lm_head.weight is not \
        model.lm_head.weight

    def pad_to_length(tensor, length, pad_value, dim=-1):
        if tensor.size(dim) >= length:
            return tensor
        pad_size = list(tensor.shape)
        pad_size[dim] = length - tensor.size(dim)
        return torch.cat([tensor, pad_value * torch.ones(*pad_size, dtype=tensor.dtype, device=tensor.device)],
                         dim=dim)

    def get_batch_logps(logits, labels, label_pad_token_id=-100):
        if logits.shape[:-1] != labels.shape:
            raise ValueError("Logits (batch and sequence length dim) and labels must have the same shape.")
        labels = labels[:, 1:].clone()
        logits = logits[:, :-1, :]
        loss_mask = labels != label_pad_token_id
        labels[labels == label_pad_token_id] = 0
        per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
        return (per_token_logps * loss_mask).sum(-1), loss_mask.sum(-1)

    def concatenated_forward(model, batch):
        max_length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
        concatenated = {}
        for k in ("input_ids", "attention_mask", "labels"):
            pad_value = -100 if k == "labels" else 0
            concatenated[k] = torch.cat((pad_to_length(batch[f"chosen_{k}"], max_length, pad_value),
                                         pad_to_length(batch[f"rejected_{k}"], max_length, pad_value)), dim=0)
        all_logits = model(concatenated["input_ids"], attention_mask=concatenated["attention_mask"]).to(torch.float32)
        all_logps, size_completion = get_batch_logps(all_logits, concatenated["labels"])
        len_chosen = batch["chosen_labels"].shape[0]
        return all_logps[:len_chosen], all_logps[len_chosen:], all_logits

    def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        pi_logratios = policy_chosen_logps - policy_rejected_logps
        ref_logratios = reference_chosen_logps - reference_rejected_logps
        logits = pi_logratios - ref_logratios
        if loss_type == "sigmoid":
            losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                      - F.logsigmoid(-beta * logits) * label_smoothing)
        elif loss_type == "hinge":
            losses = torch.relu(1 - beta * logits)
        else:  # "ipo"
            losses = (logits - 1 / (2 * beta)) ** 2
        chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
        rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps).detach()
        return losses, chosen_rewards, rejected_rewards

    prompt = [3, 4, 5]
    chosen = [[*prompt, 6, 7, 2], [*prompt, 9, 2, 0]]
    rejected = [[*prompt, 8, 2], [*prompt, 10, 11]]
    batch = {}
    for name, rows in (("chosen", chosen), ("rejected", rejected)):
        ids = torch.tensor(rows)
        mask = (ids != 0).long()
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :len(prompt)] = -100  # only the completion is scored
        batch.update({f"{name}_input_ids": ids, f"{name}_attention_mask": mask, f"{name}_labels": labels})
    optimizer = m.optim.RMSprop(model.parameters(), lr=5e-3)
    log = []
    for step in range(steps):
        policy_chosen_logps, policy_rejected_logps, _ = concatenated_forward(model, batch)
        with torch.no_grad():
            reference_chosen_logps, reference_rejected_logps, _ = concatenated_forward(ref_model, batch)
        losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen_logps, policy_rejected_logps,
                                                            reference_chosen_logps, reference_rejected_logps)
        reward_accuracies = (chosen_rewards > rejected_rewards).float()
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append([loss.item(), reward_accuracies.mean().item(), (chosen_rewards - rejected_rewards).mean().item()])
    _, _, all_logits = concatenated_forward(model, batch)
    return log, policy_chosen_logps, reference_chosen_logps, all_logits, [p.grad for p in ref_model.parameters()]


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_gemma2_dpo(loss_type):
    weights = weights_of(make_gemma)
    rng = np.random.default_rng(9)  # the norms' weights start at zero: make them matter
    weights = {k: (0.3 * rng.standard_normal(v.shape)).astype(np.float32) if "norm" in k else v
               for k, v in weights.items()}
    ours, _ = run_both(dpo_program, weights, loss_type, rtol=1e-4, atol=1e-4)  # (RMSprop amplifies rounding)
    log, policy_logps, reference_logps, all_logits, ref_grads = ours
    assert ref_grads == [None] * len(ref_grads)
    assert np.abs(all_logits).max() < 30.0  # soft-capped
    assert log[-1][2] > log[0][2]  # the margin between chosen and rejected grows
    if loss_type == "sigmoid":
        assert log[0][0] == pytest.approx(math.log(2), rel=1e-6)  # the policy starts as the reference
