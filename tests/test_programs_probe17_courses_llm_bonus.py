"""Course and book programs, run as tests/probe17_courses_common.py says. Sebastian Raschka's "Build a Large Language
Model (From Scratch)", the bonus material: the KV cache (``register_buffer(name, None, persistent=False)`` later
assigned a tensor, a position pointer slicing the causal mask) against uncached generation; seven multi-head
attentions given one set of weights (combined QKV by ``unbind``, einsum, SDPA with ``is_causal`` and a bool mask,
``nn.MultiheadAttention`` with ``add_bias_kv``) and memory-efficient loading (``torch.load(mmap=True,
weights_only=True)``; from the meta device a strict xfail: chainrule has none)."""

import math

import numpy as np

from .probe17_courses_common import GPT2_CONFIG, GPT2_IDS, GPT_CONFIG, llm_modules
from .pytorch_programs import run_both


def cached_gpt_class(m):
    """The KV-cache bonus: MultiHeadAttention with cache buffers registered as None, GPTModel keeping a position."""
    torch, nn = m.torch, m.nn
    _, LayerNorm, GELU, _ = llm_modules(m)

    class MultiHeadAttention(nn.Module):
        def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
            super().__init__()
            self.d_out = d_out
            self.num_heads = num_heads
            self.head_dim = d_out // num_heads
            self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.out_proj = nn.Linear(d_out, d_out)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1),
                                 persistent=False)
            self.register_buffer("cache_k", None, persistent=False)
            self.register_buffer("cache_v", None, persistent=False)
            self.ptr_current_pos = 0

        def forward(self, x, use_cache=False):
            b, num_tokens, d_in = x.shape
            keys_new = self.W_key(x)
            values_new = self.W_value(x)
            queries = self.W_query(x)
            keys_new = keys_new.view(b, num_tokens, self.num_heads, self.head_dim)
            values_new = values_new.view(b, num_tokens, self.num_heads, self.head_dim)
            queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)
            if use_cache:
                if self.cache_k is None:
                    self.cache_k, self.cache_v = keys_new, values_new
                else:
                    self.cache_k = torch.cat([self.cache_k, keys_new], dim=1)
                    self.cache_v = torch.cat([self.cache_v, values_new], dim=1)
                keys, values = self.cache_k, self.cache_v
            else:
                keys, values = keys_new, values_new
            keys = keys.transpose(1, 2)
            queries = queries.transpose(1, 2)
            values = values.transpose(1, 2)
            attn_scores = queries @ keys.transpose(2, 3)
            num_tokens_Q = queries.shape[-2]
            num_tokens_K = keys.shape[-2]
            if use_cache:
                mask_bool = self.mask.bool()[self.ptr_current_pos:self.ptr_current_pos + num_tokens_Q, :num_tokens_K]
                self.ptr_current_pos += num_tokens_Q
            else:
                mask_bool = self.mask.bool()[:num_tokens_Q, :num_tokens_K]
            attn_scores.masked_fill_(mask_bool, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context_vec = (attn_weights @ values).transpose(1, 2)
            context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
            return self.out_proj(context_vec)

        def reset_cache(self):
            self.cache_k, self.cache_v = None, None
            self.ptr_current_pos = 0

    class TransformerBlock(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.att = MultiHeadAttention(
                d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
                num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"])
            self.ff = nn.Sequential(nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]), GELU(),
                                    nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]))
            self.norm1 = LayerNorm(cfg["emb_dim"])
            self.norm2 = LayerNorm(cfg["emb_dim"])
            self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

        def forward(self, x, use_cache=False):
            shortcut = x
            x = self.norm1(x)
            x = self.att(x, use_cache=use_cache)
            x = self.drop_shortcut(x)
            x = x + shortcut
            shortcut = x
            x = self.norm2(x)
            x = self.ff(x)
            x = self.drop_shortcut(x)
            return x + shortcut

    class GPTModel(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
            self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
            self.drop_emb = nn.Dropout(cfg["drop_rate"])
            self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
            self.current_pos = 0
            self.final_norm = LayerNorm(cfg["emb_dim"])
            self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

        def forward(self, in_idx, use_cache=False):
            batch_size, seq_len = in_idx.shape
            tok_embeds = self.tok_emb(in_idx)
            if use_cache:
                pos_ids = torch.arange(self.current_pos, self.current_pos + seq_len, device=in_idx.device,
                                       dtype=torch.long)
                self.current_pos += seq_len
            else:
                pos_ids = torch.arange(0, seq_len, device=in_idx.device, dtype=torch.long)
            pos_embeds = self.pos_emb(pos_ids).unsqueeze(0)
            x = tok_embeds + pos_embeds
            x = self.drop_emb(x)
            for blk in self.trf_blocks:
                x = blk(x, use_cache=use_cache)
            x = self.final_norm(x)
            return self.out_head(x)

        def reset_kv_cache(self):
            for blk in self.trf_blocks:
                blk.att.reset_cache()
            self.current_pos = 0

    return GPTModel


def kv_cache_generation(m):
    torch = m.torch
    GPTModel = cached_gpt_class(m)
    cfg = dict(GPT_CONFIG, context_length=24)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    model.eval()

    def generate_text_simple_cached(model, idx, max_new_tokens, context_size=None, use_cache=True):
        model.eval()
        ctx_len = context_size or model.pos_emb.num_embeddings
        last_logits = []
        with torch.no_grad():
            if use_cache:
                model.reset_kv_cache()
                logits = model(idx[:, -ctx_len:], use_cache=True)
                for _ in range(max_new_tokens):
                    next_idx = logits[:, -1].argmax(dim=-1, keepdim=True)
                    last_logits.append(logits[:, -1])
                    idx = torch.cat([idx, next_idx], dim=1)
                    logits = model(next_idx, use_cache=True)
            else:
                for _ in range(max_new_tokens):
                    logits = model(idx[:, -ctx_len:], use_cache=False)
                    next_idx = logits[:, -1].argmax(dim=-1, keepdim=True)
                    last_logits.append(logits[:, -1])
                    idx = torch.cat([idx, next_idx], dim=1)
        return idx, torch.stack(last_logits)

    start = torch.tensor([[3, 14, 15, 9, 2], [6, 5, 35, 8, 9]])
    cached, cached_logits = generate_text_simple_cached(model, start, 12)
    buffers_after = sorted(name for name, _ in model.named_buffers())
    cache_shape = tuple(model.trf_blocks[0].att.cache_k.shape)
    state_keys = sorted(model.state_dict())
    uncached, uncached_logits = generate_text_simple_cached(model, start, 12, use_cache=False)
    model.reset_kv_cache()
    buffers_reset = sorted(name for name, _ in model.named_buffers())
    return {"cached": cached, "uncached": uncached, "cached_logits": cached_logits,
            "uncached_logits": uncached_logits, "buffers_after": buffers_after, "cache_shape": cache_shape,
            "state_keys": state_keys, "buffers_reset": buffers_reset}


def test_llms_from_scratch_kv_cache():
    ours, _ = run_both(kv_cache_generation, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours["cached"], ours["uncached"])
    np.testing.assert_allclose(ours["cached_logits"], ours["uncached_logits"], rtol=1e-4, atol=1e-5)
    assert "trf_blocks.0.att.cache_k" in ours["buffers_after"]
    assert "trf_blocks.0.att.cache_k" not in ours["buffers_reset"]  # a buffer set to None is not listed
    assert ours["cache_shape"] == (2, 17, 4, 4)  # the last token went through the cache too
    assert not any("cache" in k or "mask" in k for k in ours["state_keys"])


# ----------------------------------------------------------------------------------------------
# LLMs from scratch, bonus material: the efficient multi-head attention implementations compared
# ----------------------------------------------------------------------------------------------


def efficient_mha(m):
    """Chapter 3's bonus notebook: seven multi-head attentions given the same weights (combined QKV unbound by
    ``unbind``, einsum over ``kaiming_uniform_`` Parameters, SDPA with ``is_causal`` and with a bool mask,
    ``nn.MultiheadAttention`` with ``add_bias_kv`` and a causal bool ``attn_mask``) against chapter 3's module."""
    torch, nn = m.torch, m.nn
    MultiHeadAttention = llm_modules(m)[0]
    batch_size, context_len, embed_dim, num_heads = 2, 6, 8, 2

    class MultiHeadAttentionCombinedQKV(nn.Module):
        def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
            super().__init__()
            assert d_out % num_heads == 0, "embed_dim is indivisible by num_heads"
            self.num_heads = num_heads
            self.context_length = context_length
            self.head_dim = d_out // num_heads
            self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
            self.proj = nn.Linear(d_out, d_out)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

        def forward(self, x):
            batch_size, num_tokens, embed_dim = x.shape
            qkv = self.qkv(x)
            qkv = qkv.view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            queries, keys, values = qkv.unbind(0)
            attn_scores = queries @ keys.transpose(-2, -1)
            attn_scores = attn_scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context_vec = attn_weights @ values
            context_vec = context_vec.transpose(1, 2)
            context_vec = context_vec.contiguous().view(batch_size, num_tokens, embed_dim)
            context_vec = self.proj(context_vec)
            return context_vec

    class MHAEinsum(nn.Module):
        def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
            super().__init__()
            assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
            self.d_out = d_out
            self.num_heads = num_heads
            self.head_dim = d_out // num_heads
            self.W_query = nn.Parameter(torch.randn(d_out, d_in))
            self.W_key = nn.Parameter(torch.randn(d_out, d_in))
            self.W_value = nn.Parameter(torch.randn(d_out, d_in))
            if qkv_bias:
                self.bias_q = nn.Parameter(torch.zeros(d_out))
                self.bias_k = nn.Parameter(torch.zeros(d_out))
                self.bias_v = nn.Parameter(torch.zeros(d_out))
            else:
                self.register_parameter("bias_q", None)
                self.register_parameter("bias_k", None)
                self.register_parameter("bias_v", None)
            self.out_proj = nn.Linear(d_out, d_out)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.kaiming_uniform_(self.W_query, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.W_key, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.W_value, a=math.sqrt(5))
            if self.bias_q is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.W_query)
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias_q, -bound, bound)
                nn.init.uniform_(self.bias_k, -bound, bound)
                nn.init.uniform_(self.bias_v, -bound, bound)

        def forward(self, x):
            b, n, _ = x.shape
            Q = torch.einsum("bnd,id->bni", x, self.W_query)
            K = torch.einsum("bnd,id->bni", x, self.W_key)
            V = torch.einsum("bnd,id->bni", x, self.W_value)
            if self.bias_q is not None:
                Q += self.bias_q
                K += self.bias_k
                V += self.bias_v
            Q = Q.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            K = K.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            V = V.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            scores = torch.einsum("bhnd,bhmd->bhnm", Q, K) / (self.head_dim ** 0.5)
            mask = self.mask[:n, :n].unsqueeze(0).unsqueeze(1).expand(b, self.num_heads, n, n)
            scores = scores.masked_fill(mask.bool(), -torch.inf)
            attn_weights = torch.softmax(scores, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context_vec = torch.einsum("bhnm,bhmd->bhnd", attn_weights, V)
            context_vec = context_vec.transpose(1, 2).reshape(b, n, self.d_out)
            context_vec = self.out_proj(context_vec)
            return context_vec

    class MHAPyTorchScaledDotProduct(nn.Module):
        def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
            super().__init__()
            assert d_out % num_heads == 0, "embed_dim is indivisible by num_heads"
            self.num_heads = num_heads
            self.context_length = context_length
            self.head_dim = d_out // num_heads
            self.d_out = d_out
            self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
            self.proj = nn.Linear(d_out, d_out)
            self.dropout = dropout

        def forward(self, x):
            batch_size, num_tokens, embed_dim = x.shape
            qkv = self.qkv(x)
            qkv = qkv.view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            queries, keys, values = qkv
            use_dropout = 0. if not self.training else self.dropout
            context_vec = nn.functional.scaled_dot_product_attention(
                queries, keys, values, attn_mask=None, dropout_p=use_dropout, is_causal=True)
            context_vec = context_vec.transpose(1, 2).contiguous().view(batch_size, num_tokens, self.d_out)
            context_vec = self.proj(context_vec)
            return context_vec

    class MHAPyTorchSDPAWithoutFlash(MHAPyTorchScaledDotProduct):
        def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False):
            super().__init__(d_in, d_out, num_heads, context_length, dropout, qkv_bias)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

        def forward(self, x):
            batch_size, num_tokens, embed_dim = x.shape
            qkv = self.qkv(x)
            qkv = qkv.view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            queries, keys, values = qkv
            use_dropout = 0. if not self.training else self.dropout
            if self.context_length >= num_tokens:
                attn_mask = self.mask[:num_tokens, :num_tokens]
            else:
                attn_mask = self.mask[:self.context_length, :self.context_length]
            context_vec = nn.functional.scaled_dot_product_attention(
                queries, keys, values, attn_mask=~attn_mask, dropout_p=use_dropout, is_causal=False)
            context_vec = context_vec.transpose(1, 2).contiguous().view(batch_size, num_tokens, self.d_out)
            context_vec = self.proj(context_vec)
            return context_vec

    class MHAPyTorchClass(nn.Module):
        def __init__(self, d_in, d_out, num_heads, context_length, dropout=0.0, qkv_bias=False, need_weights=True):
            super().__init__()
            self.context_length = context_length
            self.multihead_attn = nn.MultiheadAttention(
                embed_dim=d_out, num_heads=num_heads, dropout=dropout, bias=qkv_bias, add_bias_kv=qkv_bias,
                batch_first=True)
            self.need_weights = need_weights
            self.proj = nn.Linear(d_out, d_out)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

        def forward(self, x):
            batch_size, num_tokens, _ = x.shape
            if self.context_length >= num_tokens:
                attn_mask = self.mask[:num_tokens, :num_tokens]
            else:
                attn_mask = self.mask[:self.context_length, :self.context_length]
            attn_output, _ = self.multihead_attn(x, x, x, attn_mask=attn_mask, need_weights=self.need_weights)
            output = self.proj(attn_output)
            return output

    torch.manual_seed(123)
    embeddings = torch.randn((batch_size, context_len, embed_dim))
    mha_ch03 = MultiHeadAttention(embed_dim, embed_dim, context_len, 0.0, num_heads, qkv_bias=True)
    Wq, Wk, Wv = mha_ch03.W_query, mha_ch03.W_key, mha_ch03.W_value
    qkv_weight = torch.cat([Wq.weight, Wk.weight, Wv.weight])
    qkv_bias = torch.cat([Wq.bias, Wk.bias, Wv.bias])
    out_w, out_b = mha_ch03.out_proj.weight, mha_ch03.out_proj.bias

    mha_combined = MultiHeadAttentionCombinedQKV(embed_dim, embed_dim, num_heads, context_len, qkv_bias=True)
    mha_sdpa = MHAPyTorchScaledDotProduct(embed_dim, embed_dim, num_heads, context_len, qkv_bias=True)
    mha_sdpa_mask = MHAPyTorchSDPAWithoutFlash(embed_dim, embed_dim, num_heads, context_len, qkv_bias=True)
    with torch.no_grad():
        for mha in (mha_combined, mha_sdpa, mha_sdpa_mask):
            mha.qkv.weight.copy_(qkv_weight)
            mha.qkv.bias.copy_(qkv_bias)
            mha.proj.weight.copy_(out_w)
            mha.proj.bias.copy_(out_b)
    mha_einsum = MHAEinsum(embed_dim, embed_dim, context_len, 0.0, num_heads, qkv_bias=True)
    with torch.no_grad():
        mha_einsum.W_query.copy_(Wq.weight)
        mha_einsum.W_key.copy_(Wk.weight)
        mha_einsum.W_value.copy_(Wv.weight)
        mha_einsum.bias_q.copy_(Wq.bias)
        mha_einsum.bias_k.copy_(Wk.bias)
        mha_einsum.bias_v.copy_(Wv.bias)
        mha_einsum.out_proj.load_state_dict(mha_ch03.out_proj.state_dict())
    # nn.MultiheadAttention without biases (and an identity projection after its own), against chapter 3's
    # module without biases
    mha_ch03_no_bias = MultiHeadAttention(embed_dim, embed_dim, context_len, 0.0, num_heads, qkv_bias=False)
    mha_class = MHAPyTorchClass(embed_dim, embed_dim, num_heads, context_len, qkv_bias=False, need_weights=False)
    with torch.no_grad():
        mha_ch03_no_bias.W_query.weight.copy_(Wq.weight)
        mha_ch03_no_bias.W_key.weight.copy_(Wk.weight)
        mha_ch03_no_bias.W_value.weight.copy_(Wv.weight)
        mha_ch03_no_bias.out_proj.weight.copy_(out_w)
        mha_ch03_no_bias.out_proj.bias.zero_()
        mha_class.multihead_attn.in_proj_weight.copy_(qkv_weight)
        mha_class.multihead_attn.out_proj.weight.copy_(out_w)
        mha_class.proj.weight.copy_(torch.eye(embed_dim))
        mha_class.proj.bias.zero_()
    mha_class_bias_kv = MHAPyTorchClass(embed_dim, embed_dim, num_heads, context_len, qkv_bias=True)
    params_bias_kv = sorted(n for n, _ in mha_class_bias_kv.named_parameters())
    outs, grads = {}, {}
    for name, mha in [("ch03", mha_ch03), ("combined", mha_combined), ("einsum", mha_einsum), ("sdpa", mha_sdpa),
                      ("sdpa_mask", mha_sdpa_mask), ("ch03_no_bias", mha_ch03_no_bias), ("class", mha_class),
                      ("class_bias_kv", mha_class_bias_kv)]:
        x = embeddings.clone().requires_grad_()
        out = mha(x)
        out.pow(2).sum().backward()
        outs[name], grads[name] = out, x.grad
    return {"outs": outs, "grads": grads, "params_bias_kv": params_bias_kv,
            "bias_k_grad": mha_class_bias_kv.multihead_attn.bias_k.grad,
            "in_proj_grad_einsum": mha_einsum.W_query.grad}


def test_llms_from_scratch_efficient_mha():
    ours, _ = run_both(efficient_mha, rtol=1e-4, atol=1e-5)
    outs, grads = ours["outs"], ours["grads"]
    for name in ["combined", "einsum", "sdpa", "sdpa_mask"]:
        np.testing.assert_allclose(outs[name], outs["ch03"], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(grads[name], grads["ch03"], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(outs["class"], outs["ch03_no_bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["class"], grads["ch03_no_bias"], rtol=1e-4, atol=1e-5)
    assert ours["params_bias_kv"] == ["multihead_attn.bias_k", "multihead_attn.bias_v", "multihead_attn.in_proj_bias",
                                      "multihead_attn.in_proj_weight", "multihead_attn.out_proj.bias",
                                      "multihead_attn.out_proj.weight", "proj.bias", "proj.weight"]
    assert np.abs(ours["bias_k_grad"]).sum() > 0


def memory_efficient_loading(m, directory, meta=True):
    """Chapter 5's bonus on memory-efficient weight loading: a state dict saved, then loaded plainly, into a
    model built under ``torch.device("meta")`` and materialised by ``to_empty`` (copied parameter by parameter),
    by ``load_state_dict(..., assign=True)`` from ``torch.load(mmap=True, weights_only=True)``, and from one
    file per parameter."""
    import os

    torch = m.torch
    GPTModel = llm_modules(m)[3]
    directory = os.path.join(directory, torch.__name__)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "model.pth")
    torch.manual_seed(123)
    model = GPTModel(GPT2_CONFIG)
    torch.save(model.state_dict(), path)
    idx = torch.tensor(GPT2_IDS)
    model.eval()
    with torch.no_grad():
        reference = model(idx)

    # 1) plain
    model = GPTModel(GPT2_CONFIG).to("cpu")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    with torch.no_grad():
        plain = model(idx)

    # 4) mmap=True into a model built as usual
    model = GPTModel(GPT2_CONFIG)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    model.eval()
    with torch.no_grad():
        mmapped = model(idx)
    results = {"reference": reference, "plain": plain, "mmapped": mmapped}
    if not meta:
        return results

    # 2) sequential, from the meta device
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIG)
    meta_device = str(model.tok_emb.weight.device)
    model = model.to_empty(device="cpu")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in state_dict:
                param.copy_(state_dict[name].to("cpu"))
        for name, buf in model.named_buffers():  # (to_empty leaves the causal masks uninitialised)
            buf.copy_(state_dict[name])
    model.eval()
    with torch.no_grad():
        sequential = model(idx)

    # 3) meta device and assign=True
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIG)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True), assign=True)
    assigned_device = str(model.trf_blocks[0].att.mask.device)
    model.eval()
    with torch.no_grad():
        assigned = model(idx)
    is_param = isinstance(model.out_head.weight, torch.nn.Parameter)
    loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    loss.backward()
    assigned_grad = model.out_head.weight.grad

    # 5) one file per parameter
    state_dict = torch.load(path, weights_only=True)
    os.makedirs(os.path.join(directory, "model_parameters"), exist_ok=True)
    for name, param in state_dict.items():
        torch.save(param.cpu(), os.path.join(directory, "model_parameters", f"{name}.pt"))

    def load_individual_weights(model, dir):
        with torch.no_grad():
            for name, param in model.named_parameters():
                weight_path = os.path.join(dir, f"{name}.pt")
                if os.path.exists(weight_path):
                    param_data = torch.load(weight_path, map_location="cpu", weights_only=True)
                    param.copy_(param_data)

    torch.manual_seed(7)
    model = GPTModel(GPT2_CONFIG)
    load_individual_weights(model, os.path.join(directory, "model_parameters"))
    model.eval()
    with torch.no_grad():
        individual = model(idx)
    return dict(results, sequential=sequential, assigned=assigned, individual=individual, meta_device=meta_device,
                assigned_device=assigned_device, is_param=is_param, assigned_grad=assigned_grad)


def test_llms_from_scratch_weight_loading_plain_and_mmap(tmp_path):
    ours, _ = run_both(memory_efficient_loading, str(tmp_path), meta=False)
    for name in ["plain", "mmapped"]:
        np.testing.assert_array_equal(ours[name], ours["reference"], err_msg=name)


def test_llms_from_scratch_memory_efficient_loading_from_meta(tmp_path):
    ours, _ = run_both(memory_efficient_loading, str(tmp_path))
    for name in ["plain", "mmapped", "sequential", "assigned", "individual"]:
        np.testing.assert_array_equal(ours[name], ours["reference"], err_msg=name)
    assert ours["meta_device"] == "meta" and ours["assigned_device"] == "cpu"
    assert ours["is_param"] is True
