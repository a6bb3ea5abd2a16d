# ruff: noqa: B007, B008, E501, E731  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: fine-tuning large models' layers: GPT-NeoX layers (partition merging through
``.data`` slices, KV cache, bias fine-tuning), LoRA."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# labml_nn/lora: LoRA linear and embedding layers over frozen weights
# ----------------------------------------------------------------------------------------------


def lora_program(m):
    torch, nn = m.torch, m.nn

    class Linear(nn.Module):
        def __init__(self, in_features, out_features, bias, r, alpha=None):
            super().__init__()
            if alpha is None:
                alpha = r
            self.weight = nn.Parameter(torch.empty((out_features, in_features)))
            self.weight.requires_grad = False
            if bias:
                self.bias = nn.Parameter(torch.empty(out_features))
                self.bias.requires_grad = False
            else:
                self.bias = None
            self.scaling = alpha / r
            self.lora_a = nn.Parameter(torch.empty((r, in_features)))
            self.lora_b = nn.Parameter(torch.empty((out_features, r)))
            with torch.no_grad():
                nn.init.kaiming_uniform_(self.lora_a, a=5 ** 0.5)
                nn.init.zeros_(self.lora_b)

        def forward(self, x):
            result = nn.functional.linear(x, self.weight, bias=self.bias)
            result += (x @ self.lora_a.T @ self.lora_b.T) * self.scaling
            return result

    class Embedding(nn.Module):
        def __init__(self, num_embeddings, embedding_dim, r, alpha=None):
            super().__init__()
            if alpha is None:
                alpha = r
            self.weight = nn.Parameter(torch.empty((num_embeddings, embedding_dim)))
            self.weight.requires_grad = False
            self.scaling = alpha / r
            self.lora_a = nn.Parameter(torch.empty((r, num_embeddings)))
            self.lora_b = nn.Parameter(torch.empty((embedding_dim, r)))
            with torch.no_grad():
                nn.init.normal_(self.lora_a)
                nn.init.zeros_(self.lora_b)

        def forward(self, x):
            result = nn.functional.embedding(x, self.weight)
            result += (nn.functional.embedding(x, self.lora_a.T) @ self.lora_b.T) * self.scaling
            return result

    class GPT2Ish(nn.Module):  # labml_nn/lora/gpt2.py's shape, one block, with LoRA on every projection
        def __init__(self, n_vocab=13, d_model=8, r=4):
            super().__init__()
            self.token_embedding = Embedding(n_vocab, d_model, r=r)
            self.position_embedding = Embedding(6, d_model, r=r)
            self.ln = nn.LayerNorm(d_model)
            self.c_att = Linear(d_model, d_model * 3, r=r, bias=True)
            self.c_proj = Linear(d_model, d_model, r=r, bias=True)
            self.lm_head = Linear(d_model, n_vocab, r=r, bias=False, alpha=8)

        def forward(self, input_ids):
            batch_size, seq_length = input_ids.shape
            token_embeddings = self.token_embedding(input_ids)
            position_ids = torch.arange(seq_length, device=input_ids.device)
            position_embeddings = self.position_embedding(position_ids[None, :])
            hidden_states = token_embeddings + position_embeddings
            q, k, v = self.c_att(self.ln(hidden_states)).split(8, dim=-1)
            attn = nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=True)
            hidden_states = hidden_states + self.c_proj(attn[:, 0])
            return self.lm_head(hidden_states)

    torch.manual_seed(0)
    model = GPT2Ish()
    rng = np.random.default_rng(10)
    with torch.no_grad():  # the "pre-trained" weights, and LoRA's B away from zero to test its gradient paths
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(rng.standard_normal(p.shape) * 0.3, dtype=torch.float32))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    ids = torch.tensor(rng.integers(0, 13, (3, 6)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 13), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    unchanged = all(torch.equal(frozen[n], p) for n, p in model.named_parameters() if n in frozen)
    return {"losses": losses, "trainable": trainable, "unchanged": unchanged,
            "grads_of_frozen": [p.grad is None for n, p in model.named_parameters() if n in frozen],
            "lora": {n: p for n, p in model.named_parameters() if "lora" in n}}


def test_lora():
    ours, _ = run_both(lora_program, rtol=1e-5, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0] and ours["unchanged"] and all(ours["grads_of_frozen"])
    assert [n for n in ours["trainable"] if "lora" not in n] == ["ln.weight", "ln.bias"] and len(ours["trainable"]) == 12


# ----------------------------------------------------------------------------------------------
# labml_nn/neox: GPT-NeoX layers built by a LayerGenerator, weights merged from two model-parallel
# partitions through .data slices, generation with a key/value cache, and bias-only fine-tuning
# ----------------------------------------------------------------------------------------------


def neox_program(m, partitions):
    torch, nn = m.torch, m.nn
    autocast = m.torch.cuda.amp.autocast

    class Cache:
        def __init__(self):
            self._cache = {}

        def clear_all(self):
            self._cache = {}

        def push(self, name, value):
            if name not in self._cache:
                self._cache[name] = []
            self._cache[name].append(value)

        def pop(self, name):
            return self._cache[name].pop(0)

        def set(self, key, value):
            self._cache[key] = value

        def get(self, key, default=None):
            return self._cache.get(key, default)

    _cache = Cache()

    def get_cache():
        return _cache

    def merge_params_dim_0(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        param.data[:w1.shape[0]] = w1
        param.data[w1.shape[0]:] = w2

    def merge_params_dim_1(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        param.data[:, :w1.shape[1]] = w1
        param.data[:, w1.shape[1]:] = w2

    def merge_params_duplicate(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        diff = sum((w1 - w2) ** 2).item()
        assert diff < 1e-4, f'The partitions do not match: {key}'
        param.data[:] = (w1 + w2) / 2.

    def merge_params_sum(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        param.data[:] = w1 + w2

    class NeoXModule(nn.Module):
        def load_state(self, p1, p2):
            pass

    class Embedding(NeoXModule):
        def __init__(self, n_vocab=50_432, n_hidden=6_144):
            super().__init__()
            self.emb = nn.Embedding(n_vocab, n_hidden)

        def forward(self, x):
            return self.emb(x)

        def load_state(self, p1, p2):
            merge_params_dim_0(self.emb.weight, 'word_embeddings.weight', p1, p2)

    class RoPE(nn.Module):
        def __init__(self, d_rope, base=10_000.):
            super().__init__()
            self.theta = None
            self.cos_cached = None
            self.sin_cached = None
            self.base = base
            self.d_rope = d_rope

        @staticmethod
        def rotate_half(x):
            x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
            return torch.cat((-x2, x1), dim=-1)

        def forward(self, x, offset=0):
            seq_len = x.shape[-3] + offset
            if self.theta is None:
                theta = 1.0 / (self.base ** (torch.arange(0, self.d_rope, 2).float() / self.d_rope))
                self.theta = theta.to(x.device).to(x.dtype)
            if (self.cos_cached is None or seq_len > self.cos_cached.shape[1] or
                    self.cos_cached.device != x.device or self.cos_cached.dtype != x.dtype):
                seq_idx = torch.arange(seq_len, device=x.device).type_as(self.theta)
                idx_theta = torch.einsum("s,d->sd", seq_idx, self.theta)
                idx_theta2 = torch.cat((idx_theta, idx_theta), dim=-1).to(x.device)
                with autocast(enabled=False):
                    idx_theta2 = idx_theta2.float()
                    self.cos_cached = idx_theta2.cos()[:, None, :]
                    self.sin_cached = idx_theta2.sin()[:, None, :]
                self.cos_cached = self.cos_cached.to(x.dtype)
                self.sin_cached = self.sin_cached.to(x.dtype)
            x_rope, x_pass = x[..., :self.d_rope], x[..., self.d_rope:]
            cos, sin = self.cos_cached[offset: seq_len], self.sin_cached[offset: seq_len]
            x_rope = (x_rope * cos) + (self.rotate_half(x_rope) * sin)
            return torch.cat((x_rope, x_pass), dim=-1)

    class AttentionLayer(nn.Module):
        def __init__(self, n_hidden=6_144, n_heads=64, rope_percentage=0.25, mask_fill=-10_000.0):
            super().__init__()
            self.n_heads = n_heads
            self.mask_fill = mask_fill
            self.qkv_lin = nn.Linear(n_hidden, n_hidden * 3)
            self.output = nn.Linear(n_hidden, n_hidden)
            d_k = n_hidden // n_heads
            self.rope = RoPE(int(d_k * rope_percentage))
            self.scale = 1 / math.sqrt(d_k)
            self.causal_mask = None
            self.softmax = nn.Softmax(dim=-2)

        def _get_mask(self, attn):
            nq, nk = attn.shape[1:3]
            if (self.causal_mask is None or self.causal_mask.shape[0] != nq or self.causal_mask.shape[1] != nk or
                    self.causal_mask.device != attn.device):
                self.causal_mask = torch.triu(attn.new_ones([nq, nk], dtype=torch.bool), 1 + nk - nq)
            return self.causal_mask[None, :, :, None]

        def forward(self, x):
            qkv = self.qkv_lin(x)
            qkv = qkv.view(*qkv.shape[:-1], self.n_heads, -1)
            q, k, v = torch.split(qkv, qkv.shape[-1] // 3, dim=-1)
            if get_cache().get('use_cache', False):
                prev_state_id, next_state_id = get_cache().get('state_ids')
                if prev_state_id is not None:
                    k_past, v_past = get_cache().pop(f'attn_kv_{prev_state_id}')
                    offset = k_past.shape[1]
                    q = self.rope(q, offset=offset)
                    k = self.rope(k, offset=offset)
                    k = torch.cat([k_past, k], dim=1)
                    v = torch.cat([v_past, v], dim=1)
                else:
                    q = self.rope(q)
                    k = self.rope(k)
                get_cache().push(f'attn_kv_{next_state_id}', (k, v))
            else:
                q = self.rope(q)
                k = self.rope(k)
            output = self.compute_attention(q, k, v)
            output = output.reshape(*x.shape)
            return self.output(output)

        def compute_attention(self, q, k, v):
            with autocast(enabled=False):
                if q.dtype == torch.float16:
                    attn = torch.einsum('bihk,bjhk->bijh', q.float(), k.float())
                else:
                    attn = torch.einsum('bihk,bjhk->bijh', q, k)
                attn = attn * self.scale
                mask = self._get_mask(attn)
                attn.masked_fill_(mask, self.mask_fill)
                attn = self.softmax(attn)
            output = torch.einsum('bijh,bjhk->bihk', attn.to(v.dtype), v)
            return output

    class FFNLayer(nn.Module):
        def __init__(self, n_hidden=6_144, d_ff=0):
            super().__init__()
            if not d_ff:
                d_ff = n_hidden * 4
            self.dense_h_h4 = nn.Linear(n_hidden, d_ff)
            self.activation = nn.GELU()
            self.dense_h4_h = nn.Linear(d_ff, n_hidden)

        def forward(self, x):
            x = self.dense_h_h4(x)
            x = self.activation(x)
            x = self.dense_h4_h(x)
            return x

    class TransformerLayer(NeoXModule):
        def __init__(self, n_hidden=6_144, n_heads=64):
            super().__init__()
            self.pre_ln_attn = nn.LayerNorm(n_hidden)
            self.pre_ln_ffn = nn.LayerNorm(n_hidden)
            self.attention = AttentionLayer(n_hidden, n_heads)
            self.ffn = FFNLayer(n_hidden)

        def forward(self, x):
            residual = x
            attn = self.attention(self.pre_ln_attn(x))
            ffn = self.ffn(self.pre_ln_ffn(x))
            return attn + ffn + residual

        def load_state(self, p1, p2):
            merge_params_sum(self.attention.output.bias, 'attention.dense.bias', p1, p2)
            merge_params_dim_1(self.attention.output.weight, 'attention.dense.weight', p1, p2)
            merge_params_dim_0(self.attention.qkv_lin.bias, 'attention.query_key_value.bias', p1, p2)
            merge_params_dim_0(self.attention.qkv_lin.weight, 'attention.query_key_value.weight', p1, p2)
            merge_params_duplicate(self.pre_ln_attn.bias, 'input_layernorm.bias', p1, p2)
            merge_params_duplicate(self.pre_ln_attn.weight, 'input_layernorm.weight', p1, p2)
            merge_params_dim_0(self.ffn.dense_h_h4.bias, 'mlp.dense_h_to_4h.bias', p1, p2)
            merge_params_dim_0(self.ffn.dense_h_h4.weight, 'mlp.dense_h_to_4h.weight', p1, p2)
            merge_params_sum(self.ffn.dense_h4_h.bias, 'mlp.dense_4h_to_h.bias', p1, p2)
            merge_params_dim_1(self.ffn.dense_h4_h.weight, 'mlp.dense_4h_to_h.weight', p1, p2)
            merge_params_duplicate(self.pre_ln_ffn.bias, 'post_attention_layernorm.bias', p1, p2)
            merge_params_duplicate(self.pre_ln_ffn.weight, 'post_attention_layernorm.weight', p1, p2)

    class FinalNorm(NeoXModule):
        def __init__(self, n_hidden=6_144):
            super().__init__()
            self.ln = nn.LayerNorm(n_hidden)

        def forward(self, x):
            return self.ln(x)

        def load_state(self, p1, p2):
            merge_params_duplicate(self.ln.bias, 'norm.bias', p1, p2)
            merge_params_duplicate(self.ln.weight, 'norm.weight', p1, p2)

    class ReadoutLayer(NeoXModule):
        def __init__(self, n_hidden=6_144, n_vocab=50_432):
            super().__init__()
            self.linear = nn.Linear(n_hidden, n_vocab, bias=False)

        def forward(self, x):
            return self.linear(x)

        def load_state(self, p1, p2):
            merge_params_dim_0(self.linear.weight, 'final_linear.weight', p1, p2)

    class LayerGenerator:
        def __init__(self, *, n_vocab=50_432, n_hidden=6_144, n_layers=44, n_heads=64, filter_layers=None,
                     is_clone_layers=True, dtype=torch.float, device=torch.device('cpu')):
            if filter_layers is None:
                filter_layers = set(range(n_layers + 3))
            self.n_vocab = n_vocab
            self.n_hidden = n_hidden
            self.n_layers = n_layers
            self.n_heads = n_heads
            self.filter_layers = filter_layers
            self.is_clone_layers = is_clone_layers
            self.dtype = dtype
            self.device = device
            self.pre_created_layers = dict(transformer_layer=None)

        def _prepare_layer(self, layer):
            return layer.to(self.device, self.dtype)

        def _create_and_cache_layer(self, name, creator):
            if not self.is_clone_layers:
                return self._prepare_layer(creator())
            if self.pre_created_layers[name] is None:
                self.pre_created_layers[name] = self._prepare_layer(creator())
            layer = copy.deepcopy(self.pre_created_layers[name])
            return layer

        @torch.no_grad()
        def get_layers(self):
            if 0 in self.filter_layers:
                yield self._prepare_layer(Embedding(self.n_vocab, self.n_hidden)), 0
            for i in range(self.n_layers):
                if i + 1 in self.filter_layers:
                    yield self._create_and_cache_layer(
                        'transformer_layer', lambda: TransformerLayer(self.n_hidden, self.n_heads)), i + 2
            if self.n_layers + 1 in self.filter_layers:
                yield self._prepare_layer(FinalNorm(self.n_hidden)), 47
            if self.n_layers + 2 in self.filter_layers:
                yield self._prepare_layer(ReadoutLayer(self.n_hidden, self.n_vocab)), 48
            for k in self.pre_created_layers.keys():
                self.pre_created_layers[k] = None

        @torch.no_grad()
        def load(self):
            for i, (layer, checkpoint) in enumerate(self.get_layers()):
                p1, p2 = ({k: torch.tensor(v) for k, v in p[checkpoint].items()} for p in partitions)
                layer.load_state(p1, p2)
                yield layer

    class FineTuneBiases:
        def __init__(self, layers):
            self.layers = layers

        def get_trainable_params(self):
            params = {}
            for i, layer in enumerate(self.layers):
                if isinstance(layer, TransformerLayer):
                    params[f'layer_{i :02d}.attention.output.bias'] = layer.attention.output.bias
                    params[f'layer_{i :02d}.attention.qkv_lin.bias'] = layer.attention.qkv_lin.bias
                    params[f'layer_{i :02d}.ffn.dense_h_h4.bias'] = layer.ffn.dense_h_h4.bias
            return params

        def set_trainable_params(self):
            for layer in self.layers:
                layer.requires_grad_(False)
                for p in self.get_trainable_params().values():
                    p.requires_grad_(True)

        def state_dict(self):
            return {n: p.data.cpu() for n, p in self.get_trainable_params().items()}

        def load_state_dict(self, state_dict):
            params = self.get_trainable_params()
            for n, p in params.items():
                p.data[:] = state_dict[n].to(p.data.device)
            for n in state_dict.keys():
                assert n in params, n

    generator = LayerGenerator(n_vocab=13, n_hidden=16, n_layers=2, n_heads=2, dtype=torch.float64)
    layers = list(generator.load())
    model = nn.Sequential(*layers)
    out = {"requires_grad": [p.requires_grad for p in model.parameters()],
           "weights": {k: v for k, v in model.state_dict().items()}}
    rng = np.random.default_rng(16)
    ids = torch.tensor(rng.integers(0, 13, (2, 7)))
    with torch.no_grad():
        full = model(ids)
        # generation with the key/value cache: the prompt, then one token at a time
        get_cache().set('use_cache', True)
        get_cache().set('state_ids', (None, 0))
        prompt_logits = model(ids[:, :5])
        steps = []
        for i, token in enumerate((ids[:, 5:6], ids[:, 6:7])):
            get_cache().set('state_ids', (i, i + 1))
            steps.append(model(token))
        get_cache().clear_all()
    out["full"], out["cached"] = full, torch.cat([prompt_logits] + steps, dim=1)
    fine_tuner = FineTuneBiases(layers)
    fine_tuner.set_trainable_params()
    params = fine_tuner.get_trainable_params()
    optimizer = torch.optim.Adam(params.values(), lr=1e-2)
    losses = []
    for _ in range(3):
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 13), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    out["losses"] = losses
    out["trainable"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    out["frozen_grads"] = [p.grad is None for p in model.parameters() if not p.requires_grad]
    saved = fine_tuner.state_dict()
    fine_tuner.load_state_dict({n: v * 0 for n, v in saved.items()})
    out["zeroed"] = [p.abs().sum() for p in params.values()]
    fine_tuner.load_state_dict(saved)
    out["restored"] = model(ids)
    return out


def neox_partitions():
    """Two model-parallel halves of a tiny NeoX checkpoint: sharded rows/columns, duplicated norms, summed biases."""
    rng = np.random.default_rng(17)
    r = lambda *s: rng.standard_normal(s) * 0.3
    halves = ({}, {})
    halves[0][0], halves[1][0] = {'word_embeddings.weight': r(7, 16)}, {'word_embeddings.weight': r(6, 16)}
    for layer in (2, 3):
        ln = {k: r(16) for k in ('input_layernorm.bias', 'input_layernorm.weight', 'post_attention_layernorm.bias',
                                   'post_attention_layernorm.weight')}
        for half in halves:
            half[layer] = {'attention.dense.bias': r(16), 'attention.dense.weight': r(16, 8),
                           'attention.query_key_value.bias': r(24), 'attention.query_key_value.weight': r(24, 16),
                           'mlp.dense_h_to_4h.bias': r(32), 'mlp.dense_h_to_4h.weight': r(32, 16),
                           'mlp.dense_4h_to_h.bias': r(16), 'mlp.dense_4h_to_h.weight': r(16, 32), **ln}
    norm = {'norm.bias': r(16), 'norm.weight': 1 + r(16)}
    halves[0][47], halves[1][47] = norm, dict(norm)
    halves[0][48], halves[1][48] = {'final_linear.weight': r(7, 16)}, {'final_linear.weight': r(6, 16)}
    return halves


@pytest.mark.filterwarnings("ignore:`(torch|autograd).cuda.amp.autocast:FutureWarning")
def test_neox_layers():
    halves = neox_partitions()
    # (NeoX's RoPE computes its cos/sin cache in float32, where cos may differ by an ulp)
    ours, _ = run_both(neox_program, halves, rtol=1e-6, atol=1e-9)
    w = ours["weights"]
    np.testing.assert_array_equal(w["0.emb.weight"], np.concatenate([halves[0][0]['word_embeddings.weight'],
                                                                     halves[1][0]['word_embeddings.weight']]))
    np.testing.assert_array_equal(w["1.attention.output.weight"], np.concatenate(
        [halves[0][2]['attention.dense.weight'], halves[1][2]['attention.dense.weight']], axis=1))
    np.testing.assert_allclose(w["2.ffn.dense_h4_h.bias"], halves[0][3]['mlp.dense_4h_to_h.bias'] + halves[1][3]['mlp.dense_4h_to_h.bias'])
    assert all(ours["requires_grad"])  # built and loaded under no_grad, its parameters still require grad
    # the cache gives the same logits as the whole sequence at once
    np.testing.assert_allclose(ours["cached"], ours["full"], rtol=1e-9, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0] and all(ours["frozen_grads"])
    assert len(ours["trainable"]) == 6 and all(z == 0 for z in ours["zeroed"])
