# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Language-model code as it is written today, run as tests/probe10_llm_common.py says. GPT-2 (Conv1D by ``addmm``, a
causal bool buffer and ``torch.where`` against ``finfo.min``, gelu_new, tied ``lm_head``, left padding with
``cumsum`` positions, a tuple KV cache), with a checkpoint recording its dtype; BLOOM (ALiBi slopes, ``baddbmm``)."""

import io
import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Hugging Face's GPT-2 (modeling_gpt2.py): Conv1D by addmm on an (in, out) weight, c_attn split, a causal
# bool buffer registered persistent=False, torch.where against finfo.min, gelu_new, tied lm_head,
# left padding through the attention mask and position_ids from its cumsum, a tuple KV cache
# ----------------------------------------------------------------------------------------------

G_V, G_D, G_H, G_L, G_POS = 17, 12, 3, 2, 16


def make_gpt2(m):
    torch, nn = m.torch, m.nn

    class Conv1D(nn.Module):
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.empty(nx, nf))
            self.bias = nn.Parameter(torch.zeros(nf))
            nn.init.normal_(self.weight, std=0.02)

        def forward(self, x):
            size_out = x.size()[:-1] + (self.nf,)
            x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            x = x.view(size_out)
            return x

    class NewGELUActivation(nn.Module):
        def forward(self, input):
            return 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                                   * (input + 0.044715 * torch.pow(input, 3.0))))

    class GPT2Attention(nn.Module):
        def __init__(self):
            super().__init__()
            max_positions = G_POS
            self.register_buffer(
                "bias",
                torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                    1, 1, max_positions, max_positions),
                persistent=False)
            self.register_buffer("masked_bias", torch.tensor(-1e4), persistent=False)
            self.embed_dim = G_D
            self.num_heads = G_H
            self.head_dim = self.embed_dim // self.num_heads
            self.split_size = self.embed_dim
            self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
            self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
            self.attn_dropout = nn.Dropout(0.1)
            self.resid_dropout = nn.Dropout(0.1)

        def _attn(self, query, key, value, attention_mask=None):
            attn_weights = torch.matmul(query, key.transpose(-1, -2))
            attn_weights = attn_weights / torch.full(
                [], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device)
            query_length, key_length = query.size(-2), key.size(-2)
            causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
            mask_value = torch.finfo(attn_weights.dtype).min
            mask_value = torch.full([], mask_value, dtype=attn_weights.dtype, device=attn_weights.device)
            attn_weights = torch.where(causal_mask, attn_weights.to(attn_weights.dtype), mask_value)
            if attention_mask is not None:
                attn_weights = attn_weights + attention_mask
            attn_weights = nn.functional.softmax(attn_weights, dim=-1)
            attn_weights = attn_weights.type(value.dtype)
            attn_weights = self.attn_dropout(attn_weights)
            attn_output = torch.matmul(attn_weights, value)
            return attn_output, attn_weights

        def _split_heads(self, tensor, num_heads, attn_head_size):
            new_shape = tensor.size()[:-1] + (num_heads, attn_head_size)
            tensor = tensor.view(new_shape)
            return tensor.permute(0, 2, 1, 3)

        def _merge_heads(self, tensor, num_heads, attn_head_size):
            tensor = tensor.permute(0, 2, 1, 3).contiguous()
            new_shape = tensor.size()[:-2] + (num_heads * attn_head_size,)
            return tensor.view(new_shape)

        def forward(self, hidden_states, layer_past=None, attention_mask=None, use_cache=False):
            query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
            query = self._split_heads(query, self.num_heads, self.head_dim)
            key = self._split_heads(key, self.num_heads, self.head_dim)
            value = self._split_heads(value, self.num_heads, self.head_dim)
            if layer_past is not None:
                past_key, past_value = layer_past
                key = torch.cat((past_key, key), dim=-2)
                value = torch.cat((past_value, value), dim=-2)
            present = (key, value) if use_cache is True else None
            attn_output, attn_weights = self._attn(query, key, value, attention_mask)
            attn_output = self._merge_heads(attn_output, self.num_heads, self.head_dim)
            attn_output = self.c_proj(attn_output)
            attn_output = self.resid_dropout(attn_output)
            return attn_output, present

    class GPT2MLP(nn.Module):
        def __init__(self, intermediate_size):
            super().__init__()
            self.c_fc = Conv1D(intermediate_size, G_D)
            self.c_proj = Conv1D(G_D, intermediate_size)
            self.act = NewGELUActivation()
            self.dropout = nn.Dropout(0.1)

        def forward(self, hidden_states):
            return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))

    class GPT2Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(G_D, eps=1e-5)
            self.attn = GPT2Attention()
            self.ln_2 = nn.LayerNorm(G_D, eps=1e-5)
            self.mlp = GPT2MLP(4 * G_D)

        def forward(self, hidden_states, layer_past=None, attention_mask=None, use_cache=False):
            residual = hidden_states
            attn_output, present = self.attn(self.ln_1(hidden_states), layer_past=layer_past,
                                             attention_mask=attention_mask, use_cache=use_cache)
            hidden_states = attn_output + residual
            residual = hidden_states
            feed_forward_hidden_states = self.mlp(self.ln_2(hidden_states))
            hidden_states = residual + feed_forward_hidden_states
            return hidden_states, present

    class GPT2LMHeadModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(G_V, G_D)
            self.wpe = nn.Embedding(G_POS, G_D)
            self.drop = nn.Dropout(0.1)
            self.h = nn.ModuleList([GPT2Block() for _ in range(G_L)])
            self.ln_f = nn.LayerNorm(G_D, eps=1e-5)
            self.lm_head = nn.Linear(G_D, G_V, bias=False)
            self.lm_head.weight = self.wte.weight  # tie_weights
            self.apply(self._init_weights)

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, Conv1D)):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)
            for name, p in module.named_parameters():
                if name == "c_proj.weight":
                    p.data.normal_(mean=0.0, std=(0.02 / math.sqrt(2 * G_L)))

        def forward(self, input_ids, past_key_values=None, attention_mask=None, position_ids=None, labels=None,
                    use_cache=False):
            input_shape = input_ids.size()
            input_ids = input_ids.view(-1, input_shape[-1])
            batch_size = input_ids.shape[0]
            if past_key_values is None:
                past_length = 0
                past_key_values = tuple([None] * len(self.h))
            else:
                past_length = past_key_values[0][0].size(-2)
            if position_ids is None:
                position_ids = torch.arange(past_length, input_shape[-1] + past_length, dtype=torch.long)
                position_ids = position_ids.unsqueeze(0)
            if attention_mask is not None:
                attention_mask = attention_mask.view(batch_size, -1)
                attention_mask = attention_mask[:, None, None, :]
                attention_mask = attention_mask.to(dtype=self.wte.weight.dtype)  # fp16 compatibility
                attention_mask = (1.0 - attention_mask) * torch.finfo(self.wte.weight.dtype).min
            hidden_states = self.wte(input_ids) + self.wpe(position_ids)
            hidden_states = self.drop(hidden_states)
            output_shape = (-1,) + input_shape[1:] + (hidden_states.size(-1),)
            presents = () if use_cache else None
            for i, (block, layer_past) in enumerate(zip(self.h, past_key_values)):
                hidden_states, present = block(hidden_states, layer_past=layer_past, attention_mask=attention_mask,
                                               use_cache=use_cache)
                if use_cache is True:
                    presents = presents + (present,)
            hidden_states = self.ln_f(hidden_states).view(output_shape)
            lm_logits = self.lm_head(hidden_states)
            loss = None
            if labels is not None:
                shift_logits = lm_logits[..., :-1, :].contiguous()
                shift_labels = labels[..., 1:].contiguous()
                loss_fct = nn.CrossEntropyLoss()
                loss = loss_fct(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
            return loss, lm_logits, presents

    return GPT2LMHeadModel()


def gpt2_program(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_gpt2(m), weights)
    assert model.lm_head.weight is model.wte.weight
    assert set(model.state_dict()) == set(weights) and "h.0.attn.bias" not in weights
    # left-padded batch (pad id 0): labels -100 at the padding, positions counted from the first real token
    input_ids = torch.tensor([[0, 0, 4, 9, 3, 8, 2], [5, 1, 7, 7, 3, 6, 11]])
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    # the whole decoder's gelu_new is F.gelu(approximate="tanh")
    x = torch.linspace(-4, 4, 9)
    gelu_gap = (model.h[0].mlp.act(x) - F.gelu(x, approximate="tanh")).abs().max()
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    model.train()
    torch.manual_seed(0)
    model.drop.p = 0.0  # dropout off but the modules in training mode: the libraries' streams differ
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    losses = []
    for step in range(steps):
        loss, logits, _ = model(input_ids, attention_mask=attention_mask, position_ids=position_ids, labels=labels)
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        grad_wte = model.wte.weight.grad.clone()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        _, full, _ = model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        _, alone_logits, _ = model(input_ids[:1, 2:])
        # incremental decoding with the tuple cache: prompt of 4, then one token at a time
        _, prefix_logits, past = model(input_ids[:, :4], attention_mask=attention_mask[:, :4],
                                       position_ids=position_ids[:, :4], use_cache=True)
        steps_logits = [prefix_logits[:, -1]]
        for t in range(4, 7):
            _, lg, past = model(input_ids[:, t:t + 1], past_key_values=past, attention_mask=attention_mask[:, :t + 1],
                                position_ids=position_ids[:, t:t + 1], use_cache=True)
            steps_logits.append(lg[:, -1])
    return (losses, grad_wte, [p.detach() for p in model.parameters()], full, alone_logits,
            torch.stack(steps_logits, 1), gelu_gap, past[0][0].shape)


def test_gpt2_hf_conv1d_padding_and_cache():
    weights = weights_of(make_gpt2)
    ours, _ = run_both(gpt2_program, weights, rtol=1e-4, atol=1e-5)
    losses, grad_wte, params, full, alone, steps_logits, gelu_gap, past_shape = ours
    assert losses[-1] < losses[0] and gelu_gap < 1e-6
    assert tuple(past_shape) == (2, G_H, 7, G_D // G_H)
    # the left-padded row gives the logits of the same tokens unpadded; the cache gives the full pass's
    np.testing.assert_allclose(full[0, 2:], alone[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(steps_logits, full[:, 3:], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Hugging Face's BLOOM (modeling_bloom.py): ALiBi slopes by torch.pow of a float 0-d tensor to int32
# powers, positions from the attention mask's cumsum, scores by alibi.baddbmm(beta, alpha), a boolean
# mask (padding | causal) through masked_fill with finfo.min, softmax(dtype=float32), dropout_add
# ----------------------------------------------------------------------------------------------

BL_V, BL_D, BL_H = 13, 12, 6


def build_alibi_tensor(m, attention_mask, num_heads, dtype):
    torch = m.torch
    batch_size, seq_length = attention_mask.shape
    closest_power_of_2 = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest_power_of_2) - 3))), device=attention_mask.device,
                        dtype=torch.float32)
    powers = torch.arange(1, 1 + closest_power_of_2, device=attention_mask.device, dtype=torch.int32)
    slopes = torch.pow(base, powers)
    if closest_power_of_2 != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest_power_of_2) - 3))),
                                  device=attention_mask.device, dtype=torch.float32)
        num_remaining_heads = min(closest_power_of_2, num_heads - closest_power_of_2)
        extra_powers = torch.arange(1, 1 + 2 * num_remaining_heads, 2, device=attention_mask.device,
                                    dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
    arange_tensor = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]
    alibi = slopes[..., None] * arange_tensor
    return alibi.reshape(batch_size * num_heads, 1, seq_length).to(dtype)


def get_slopes(n):  # Ofir Press's reference
    def get_slopes_power_of_2(n):
        start = (2 ** (-2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio ** i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return get_slopes_power_of_2(closest_power_of_2) + get_slopes(2 * closest_power_of_2)[0::2][:n - closest_power_of_2]


def make_bloom(m):
    torch, nn, F = m.torch, m.nn, m.F

    def dropout_add(x, residual, prob, training):
        out = F.dropout(x, p=prob, training=training)
        out = residual + out
        return out

    def bloom_gelu_forward(x):
        return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))

    class BloomAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads = BL_H
            self.head_dim = BL_D // BL_H
            self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
            self.beta = 1.0
            self.query_key_value = nn.Linear(BL_D, 3 * BL_D, bias=True)
            self.dense = nn.Linear(BL_D, BL_D)
            self.attention_dropout = nn.Dropout(0.0)

        def _split_heads(self, fused_qkv):
            batch_size, seq_length, three_times_hidden_size = fused_qkv.shape
            fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads, 3, self.head_dim)
            return fused_qkv[..., 0, :], fused_qkv[..., 1, :], fused_qkv[..., 2, :]

        def _merge_heads(self, x):
            batch_size_and_num_heads, seq_length, _ = x.shape
            batch_size = batch_size_and_num_heads // self.num_heads
            x = x.view(batch_size, self.num_heads, seq_length, self.head_dim)
            x = x.permute(0, 2, 1, 3)
            return x.reshape(batch_size, seq_length, self.num_heads * self.head_dim)

        def forward(self, hidden_states, residual, alibi, attention_mask):
            fused_qkv = self.query_key_value(hidden_states)
            (query_layer, key_layer, value_layer) = self._split_heads(fused_qkv)
            batch_size, q_length, _, _ = query_layer.shape
            query_layer = query_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
            key_layer = key_layer.permute(0, 2, 3, 1).reshape(batch_size * self.num_heads, self.head_dim, q_length)
            value_layer = value_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
            kv_length = key_layer.shape[-1]
            matmul_result = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=self.beta,
                                          alpha=self.inv_norm_factor)
            attention_scores = matmul_result.view(batch_size, self.num_heads, q_length, kv_length)
            input_dtype = attention_scores.dtype
            attn_weights = torch.masked_fill(attention_scores, attention_mask, torch.finfo(attention_scores.dtype).min)
            attention_probs = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(input_dtype)
            attention_probs = self.attention_dropout(attention_probs)
            attention_probs_reshaped = attention_probs.view(batch_size * self.num_heads, q_length, kv_length)
            context_layer = torch.bmm(attention_probs_reshaped, value_layer)
            context_layer = self._merge_heads(context_layer)
            output_tensor = self.dense(context_layer)
            return dropout_add(output_tensor, residual, 0.0, self.training)

    class BloomBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = nn.LayerNorm(BL_D, eps=1e-5)
            self.self_attention = BloomAttention()
            self.post_attention_layernorm = nn.LayerNorm(BL_D, eps=1e-5)
            self.dense_h_to_4h = nn.Linear(BL_D, 4 * BL_D)
            self.dense_4h_to_h = nn.Linear(4 * BL_D, BL_D)

        def forward(self, hidden_states, alibi, attention_mask):
            layernorm_output = self.input_layernorm(hidden_states)
            attention_output = self.self_attention(layernorm_output, hidden_states, alibi, attention_mask)
            layernorm_output = self.post_attention_layernorm(attention_output)
            intermediate = bloom_gelu_forward(self.dense_h_to_4h(layernorm_output))
            return dropout_add(self.dense_4h_to_h(intermediate), attention_output, 0.0, self.training)

    class BloomForCausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(BL_V, BL_D)
            self.word_embeddings_layernorm = nn.LayerNorm(BL_D, eps=1e-5)
            self.h = nn.ModuleList([BloomBlock() for _ in range(2)])
            self.ln_f = nn.LayerNorm(BL_D, eps=1e-5)

        def _prepare_attn_mask(self, attention_mask, input_shape):
            batch_size, target_length = input_shape
            mask = torch.empty((target_length, target_length), dtype=torch.bool)
            seq_ids = torch.arange(target_length)
            mask[:, 0:] = seq_ids[:, None] < seq_ids[None, :]
            causal_mask = mask[None, None, :, :].expand(batch_size, 1, target_length, target_length)
            expanded_mask = ~(attention_mask[:, None, None, :].to(torch.bool))
            expanded_attn_mask = expanded_mask.expand(batch_size, 1, target_length, target_length)
            return expanded_attn_mask | causal_mask

        def forward(self, input_ids, attention_mask, labels=None):
            hidden_states = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
            alibi = build_alibi_tensor(m, attention_mask, BL_H, dtype=hidden_states.dtype)
            causal_mask = self._prepare_attn_mask(attention_mask, input_ids.shape)
            for block in self.h:
                hidden_states = block(hidden_states, alibi, causal_mask)
            lm_logits = F.linear(self.ln_f(hidden_states), self.word_embeddings.weight)
            loss = None
            if labels is not None:
                shift_logits = lm_logits[..., :-1, :].contiguous()
                shift_labels = labels[..., 1:].contiguous()
                batch_size, seq_length, vocab_size = shift_logits.shape
                loss = F.cross_entropy(shift_logits.view(batch_size * seq_length, vocab_size),
                                       shift_labels.view(batch_size * seq_length))
            return loss, lm_logits, alibi

    return BloomForCausalLM()


def bloom_program(m, weights, steps=3):
    torch = m.torch
    model = load(m, make_bloom(m), weights)
    input_ids = torch.tensor([[0, 0, 3, 4, 9, 2], [5, 6, 7, 8, 1, 12]])
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        loss, logits, alibi = model(input_ids, attention_mask, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        _, padded, _ = model(input_ids, attention_mask)
        _, alone, _ = model(input_ids[:1, 2:], attention_mask[:1, 2:])
    return losses, alibi, padded, alone, model.h[0].self_attention.query_key_value.weight


def test_bloom_alibi_baddbmm():
    weights = weights_of(make_bloom)
    ours, _ = run_both(bloom_program, weights, rtol=1e-4, atol=1e-5)
    losses, alibi, padded, alone, qkv = ours
    assert alibi.dtype == np.float32 and alibi.shape == (2 * BL_H, 1, 6)
    slopes = np.array(get_slopes(BL_H), dtype=np.float32)
    np.testing.assert_allclose(alibi[BL_H:, 0], slopes[:, None] * np.arange(6), rtol=1e-6)
    np.testing.assert_allclose(alibi[:BL_H, 0], slopes[:, None] * np.array([0, 0, 0, 1, 2, 3]), rtol=1e-6)
    np.testing.assert_allclose(padded[0, 2:], alone[0], rtol=1e-4, atol=1e-5)  # ALiBi counts from the first token
    assert losses[-1] < losses[0]


def checkpoint_with_dtype(m, weights):
    """A checkpoint that records the dtype the weights were trained in, as training scripts do."""
    torch = m.torch
    model = load(m, make_gpt2(m), weights).half()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "dtype": next(model.parameters()).dtype, "iter_num": 5}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    fresh = make_gpt2(m).to(checkpoint["dtype"])
    fresh.load_state_dict(checkpoint["model"])
    return checkpoint["dtype"] == torch.float16, [p.float() for p in fresh.parameters()]


def test_checkpoint_records_its_dtype():
    weights = weights_of(make_gpt2)
    (same_dtype, params), _ = run_both(checkpoint_with_dtype, weights)
    assert same_dtype
