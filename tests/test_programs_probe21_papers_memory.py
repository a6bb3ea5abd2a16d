"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: transformers with a memory: the Feedback transformer (plain, and with its
``Stack`` ``autograd.Function``), RETRO with MLM masking."""

import math

import numpy as np
import pytest

from .probe21_papers_common import labml_transformers, train_few
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/feedback: the Feedback transformer, and its key/value memory Stack Function
# ----------------------------------------------------------------------------------------------


def make_feedback(m, kv):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class FeedbackAttention(nn.Module):
        def __init__(self, heads, d_model, dropout_prob=0.1, *, is_kv_precomputed=False):
            super().__init__()
            self.d_k = d_model // heads
            self.heads = heads
            self.query = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            if not is_kv_precomputed:
                self.key = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
                self.value = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=True)
            else:
                self.key = None
                self.value = None
            self.output = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(dropout_prob)
            self.scale = 1 / math.sqrt(self.d_k)
            self.softmax = nn.Softmax(dim=0)
            self.P = 2 ** 6
            self.key_pos_embeddings = nn.Parameter(torch.zeros((self.P, heads, self.d_k)), requires_grad=True)
            self.key_pos_bias = nn.Parameter(torch.zeros((self.P, heads)), requires_grad=True)
            self.query_pos_bias = nn.Parameter(torch.zeros((heads, self.d_k)), requires_grad=True)
            self.attn = None

        def get_scores(self, query, key):
            key_pos_emb = self.key_pos_embeddings[-key.shape[0]:]
            query_pos_bias = self.query_pos_bias[None, :, :]
            key_pos_bias = self.key_pos_bias[-key.shape[0]:]
            ac = torch.einsum('bhd,jbhd->jbh', query + query_pos_bias, key)
            bd = torch.einsum('bhd,jhd->jbh', query, key_pos_emb) + key_pos_bias[:, None, :]
            return ac + bd

        def forward(self, *, query, key, value):
            query = self.query(query)
            if self.key:
                key = self.key(key)
            if self.value:
                value = self.value(value)
            scores = self.get_scores(query, key)
            scores *= self.scale
            attn = self.softmax(scores)
            attn = self.dropout(attn)
            x = torch.einsum("jbh,jbhd->bhd", attn, value)
            x = x.reshape(x.shape[0], -1)
            return self.output(x)

    class FeedbackTransformerLayer(nn.Module):
        def __init__(self, *, d_model, attn, feed_forward, dropout_prob):
            super().__init__()
            self.size = d_model
            self.attn = attn
            self.feed_forward = feed_forward
            self.dropout = nn.Dropout(dropout_prob)
            self.norm_self_attn = nn.LayerNorm([d_model])
            self.norm_ff = nn.LayerNorm([d_model])

        def forward(self, *, x, key, value):
            if key is not None:
                z = self.norm_self_attn(x)
                self_attn = self.attn(query=z, key=key, value=value)
                x = x + self.dropout(self_attn)
            z = self.norm_ff(x)
            ff = self.feed_forward(z)
            x = x + self.dropout(ff)
            return x

    class FeedbackTransformer(nn.Module):
        def __init__(self, layer, n_layers):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])
            self.weights = nn.Parameter(torch.ones(n_layers + 1), requires_grad=True)
            self.softmax = nn.Softmax(0)

        def forward(self, x_seq):
            x_seq = torch.unbind(x_seq, dim=0)
            res = []
            mem = []
            for x in x_seq:
                layer_outputs = [x]
                mem_tensor = torch.stack(mem) if mem else None
                for layer in self.layers:
                    x = layer(x=x, key=mem_tensor, value=mem_tensor)
                    layer_outputs.append(x)
                layer_outputs = torch.stack(layer_outputs)
                mem.append(torch.einsum('lbd,l->bd', layer_outputs, self.softmax(self.weights)))
                res.append(x)
            res = torch.stack(res)
            return self.norm(res)

    class StackFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, memory, memory_grad, last, n):
            ctx._mem_grad = memory_grad
            ctx._n = n
            return memory[:n + 1]

        @staticmethod
        def backward(ctx, grad_output):
            n = ctx._n
            memory_grad = ctx._mem_grad
            memory_grad[:n + 1] += grad_output
            return None, None, memory_grad[n], None

    class Stack:
        def __init__(self, max_len):
            self.max_len = max_len
            self.memory = None
            self.memory_grad = None
            self.last = None
            self.n = -1
            self.last_get_n = -1

        def append(self, n, value):
            assert n == 0 or self.last_get_n == n - 1, f"{n}, {self.last_get_n}"
            with torch.no_grad():
                if self.memory is None or self.memory.shape[1:] != value.shape:
                    assert n == 0
                    self.memory = value.new_zeros(self.max_len, *value.shape, requires_grad=False)
                    self.memory_grad = value.new_zeros(self.memory.shape, requires_grad=False)
                elif n == 0:
                    self.memory_grad.fill_(0.)
                self.memory.data[n] = value.detach()
                self.n = n
            self.last = value

        def get(self):
            self.last_get_n = self.n
            return StackFunction.apply(self.memory, self.memory_grad, self.last, self.n)

        def free(self):
            self.memory = None
            self.memory_grad = None
            self.last = None

    class FeedbackTransformerKV(nn.Module):
        def __init__(self, layer, n_layers, d_model, heads):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])
            self.weights = nn.Parameter(torch.ones(n_layers + 1), requires_grad=True)
            self.softmax = nn.Softmax(0)
            d_k = d_model // heads
            self.key = t.PrepareForMultiHeadAttention(d_model, heads, d_k, bias=False)
            self.value = t.PrepareForMultiHeadAttention(d_model, heads, d_k, bias=False)
            self.mem_key = Stack(16)
            self.mem_value = Stack(16)

        def forward(self, x_seq):
            x_seq = torch.unbind(x_seq, dim=0)
            res = []
            for step, x in enumerate(x_seq):
                layer_outputs = [x]
                key_tensor = None
                value_tensor = None
                if step > 0:
                    key_tensor = self.mem_key.get()
                    value_tensor = self.mem_value.get()
                for layer in self.layers:
                    x = layer(x=x, key=key_tensor, value=value_tensor)
                    layer_outputs.append(x)
                layer_outputs = torch.stack(layer_outputs)
                mem = torch.einsum('lbd,l->bd', layer_outputs, self.softmax(self.weights))
                self.mem_key.append(step, self.key(mem))
                self.mem_value.append(step, self.value(mem))
                res.append(x)
            res = torch.stack(res)
            return self.norm(res)

        def free(self):
            self.mem_key.free()
            self.mem_value.free()

    class AutoregressiveModel(nn.Module):
        def __init__(self, n_vocab, d_model, transformer):
            super().__init__()
            self.src_embed = nn.Embedding(n_vocab, d_model)
            self.transformer = transformer
            self.generator = nn.Linear(d_model, n_vocab)

        def forward(self, x):
            x = self.src_embed(x)
            res = self.transformer(x)
            return self.generator(res), None

    d_model, heads = 8, 2
    layer = FeedbackTransformerLayer(d_model=d_model, attn=FeedbackAttention(heads, d_model, 0., is_kv_precomputed=kv),
                                     feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.)
    transformer = FeedbackTransformerKV(layer, 2, d_model, heads) if kv else FeedbackTransformer(layer, 2)
    return AutoregressiveModel(10, d_model, transformer).double()


def feedback_program(m, weights, kv):
    torch = m.torch
    model = load(m, make_feedback(m, kv), weights)
    with torch.no_grad():  # their position parameters start at zero: give them values to differentiate
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.linspace(-0.5, 0.5, p.numel(), dtype=torch.float64).view(p.shape))
    rng = np.random.default_rng(0)
    tokens = torch.tensor(rng.integers(0, 10, (6, 3)))
    target = torch.tensor(rng.integers(0, 10, (6, 3)))

    def loss_fn(model, x, y):
        out, _ = model(x)
        loss = m.F.cross_entropy(out.view(-1, out.shape[-1]), y.view(-1))
        return loss

    losses, grads = train_few(m, model, (tokens, target), loss_fn, steps=3)
    out = {"losses": losses, "grads": grads}
    if kv:
        out["memory"] = model.transformer.mem_key.memory[:6]
        out["memory_grad"] = model.transformer.mem_key.memory_grad[:6]
        model.transformer.free()
    return out


@pytest.mark.parametrize("kv", [False, True], ids=["plain", "kv_stack"])
def test_feedback_transformer(kv):
    weights = weights_of(lambda m: make_feedback(m, kv))
    ours, _ = run_both(feedback_program, weights, kv, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert np.abs(ours["grads"]["transformer.weights"]).max() > 0
    if kv:
        # the memory's last row is never read, so the gradient the Function accumulated stops one short
        assert np.abs(ours["memory_grad"][:5]).max() > 0 and np.all(ours["memory_grad"][5] == 0)
        assert np.abs(ours["grads"]["transformer.key.linear.weight"]).max() > 0


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{retro,mlm}: RETRO's chunked cross-attention, trained with MLM-style masking
# ----------------------------------------------------------------------------------------------


def make_retro(m):
    torch, nn = m.torch, m.nn

    class RotaryPositionalEmbeddings(nn.Module):
        def __init__(self, d, base=10_000):
            super().__init__()
            self.theta = nn.Parameter(1. / (base ** (torch.arange(0, d, 2).float() / d)), requires_grad=False)

        def forward(self, x):
            batch_size, seq_len, n_heads, d = x.shape
            d_2 = d // 2
            seq_idx = torch.arange(seq_len, device=x.device).type_as(self.theta)
            idx_theta = torch.einsum('n,d->nd', seq_idx, self.theta)
            idx_theta2 = torch.cat([idx_theta, idx_theta], dim=1)
            neg_half_x = torch.cat([-x[:, :, :, d_2:], x[:, :, :, :d_2]], dim=-1)
            rx = (x * idx_theta2.cos()[None, :, None, :]) + (neg_half_x * idx_theta2.sin()[None, :, None, :])
            return rx

    class SelfAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k, is_causal):
            super().__init__()
            self.is_causal = is_causal
            self.n_heads = n_heads
            self.d_k = d_k
            self.scale = 1 / math.sqrt(self.d_k)
            self.query = nn.Linear(d_model, n_heads * d_k)
            self.key = nn.Linear(d_model, n_heads * d_k)
            self.value = nn.Linear(d_model, n_heads * d_k)
            self.norm = nn.LayerNorm(d_model)
            self.softmax = nn.Softmax(dim=-1)
            self.rotary_pe = RotaryPositionalEmbeddings(self.d_k)
            self.output = nn.Linear(n_heads * d_k, d_model)

        def mask_attention(self, attn):
            if not self.is_causal:
                return attn
            mask = torch.tril(attn.new_ones(attn.shape[-2:]))
            return attn.masked_fill(mask == 0, float('-inf'))

        def forward(self, h):
            h_res = h
            h = self.norm(h)
            mh_shape = (*h.shape[:-1], self.n_heads, self.d_k)
            q = self.query(h).view(mh_shape)
            k = self.key(h).view(mh_shape)
            v = self.value(h).view(mh_shape)
            q = self.rotary_pe(q)
            k = self.rotary_pe(k)
            attn = torch.einsum('bihd,bjhd->bhij', q, k)
            attn = attn * self.scale
            attn = self.mask_attention(attn)
            attn = self.softmax(attn)
            h = torch.einsum("bhij,bjhd->bihd", attn, v)
            h = h.reshape(*h.shape[:-2], -1)
            h = self.output(h)
            return h + h_res

    class CrossAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k):
            super().__init__()
            self.n_heads = n_heads
            self.d_k = d_k
            self.scale = 1 / math.sqrt(self.d_k)
            self.query = nn.Linear(d_model, n_heads * d_k)
            self.key = nn.Linear(d_model, n_heads * d_k)
            self.value = nn.Linear(d_model, n_heads * d_k)
            self.norm = nn.LayerNorm(d_model)
            self.softmax = nn.Softmax(dim=-1)
            self.output = nn.Linear(n_heads * d_k, d_model)

        def forward(self, e, h):
            e_res = e
            e = self.norm(e)
            q = self.query(e).view(*e.shape[:-1], self.n_heads, self.d_k)
            k = self.key(h).view(*h.shape[:-1], self.n_heads, self.d_k)
            v = self.value(h).view(*h.shape[:-1], self.n_heads, self.d_k)
            attn = torch.einsum('bcnihd,bcjhd->bcnhij', q, k)
            attn = attn * self.scale
            attn = self.softmax(attn)
            e = torch.einsum("bcnhij,bcjhd->bcnihd", attn, v)
            e = e.reshape(*e.shape[:-2], -1)
            e = self.output(e)
            return e + e_res

    class ChunkedCrossAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k, chunk_len):
            super().__init__()
            self.chunk_len = chunk_len
            self.n_heads = n_heads
            self.d_k = d_k
            self.scale = 1 / math.sqrt(self.d_k)
            self.query = nn.Linear(d_model, n_heads * d_k)
            self.key = nn.Linear(d_model, n_heads * d_k)
            self.value = nn.Linear(d_model, n_heads * d_k)
            self.norm = nn.LayerNorm(d_model)
            self.softmax = nn.Softmax(dim=-1)
            self.output = nn.Linear(n_heads * d_k, d_model)

        def forward(self, h, e):
            batch_size, chunks, neighbors, neighbor_len, d_model = e.shape
            if chunks == 0:
                return h
            h_res = h
            h = h[:, self.chunk_len - 1:]
            h = self.norm(h)
            if h.shape[1] < chunks * self.chunk_len:
                h = torch.cat((h, h.new_zeros(batch_size, chunks * self.chunk_len - h.shape[1], d_model)), dim=1)
            h = h.reshape(batch_size, chunks, self.chunk_len, d_model)
            q = self.query(h).view(*h.shape[:-1], self.n_heads, self.d_k)
            k = self.key(e).view(*e.shape[:-1], self.n_heads, self.d_k)
            v = self.value(e).view(*e.shape[:-1], self.n_heads, self.d_k)
            attn = torch.einsum('bcihd,bcnjhd->bchinj', q, k)
            attn = attn * self.scale
            attn = self.softmax(attn.view(*attn.shape[:-2], -1)).view(attn.shape)
            h = torch.einsum("bchinj,bcnjhd->bcihd", attn, v)
            h = h.reshape(batch_size, chunks * self.chunk_len, -1)
            h = self.output(h)
            h = torch.cat((h.new_zeros(batch_size, self.chunk_len - 1, d_model), h), dim=1)
            return h[:, :h_res.shape[1]] + h_res

    class FeedForward(nn.Module):
        def __init__(self, d_model, d_ff):
            super().__init__()
            self.lin1 = nn.Linear(d_model, d_ff)
            self.lin2 = nn.Linear(d_ff, d_model)
            self.act = nn.ReLU()
            self.norm = nn.LayerNorm(d_model)

        def forward(self, h):
            h_res = h
            h = self.norm(h)
            h = self.lin1(h)
            h = self.act(h)
            h = self.lin2(h)
            return h + h_res

    class NearestNeighborEncoder(nn.Module):
        def __init__(self, chunk_len, n_layers, ca_layers, d_model, n_heads, d_k, d_ff):
            super().__init__()
            self.ca_layers = ca_layers
            self.chunk_len = chunk_len
            self.ca = nn.ModuleList([CrossAttention(d_model, n_heads, d_k) for _ in range(len(ca_layers))])
            self.attn = nn.ModuleList([SelfAttention(d_model, n_heads, d_k, is_causal=False) for _ in range(n_layers)])
            self.ffw = nn.ModuleList([FeedForward(d_model, d_ff) for _ in range(n_layers)])
            self.norm_h = nn.LayerNorm(d_model)

        def forward(self, e, h):
            batch_size, chunks, neighbors, neighbor_len, d_model = e.shape
            h_split = h[:, :self.chunk_len * chunks, :].reshape(batch_size, chunks, self.chunk_len, d_model)
            h_split = self.norm_h(h_split)
            p_ca = 0
            for p in range(len(self.attn)):
                e = self.attn[p](e.view(-1, neighbor_len, d_model)).view(e.shape)
                if p in self.ca_layers:
                    e = self.ca[p_ca](e, h_split)
                    p_ca += 1
                e = self.ffw[p](e)
            return e

    class RetroModel(nn.Module):
        def __init__(self, n_vocab, d_model, n_layers, ca_layers, chunk_len, n_heads, d_k, d_ff, encoder):
            super().__init__()
            self.ca_layers = ca_layers
            self.encoder = encoder
            self.emb = nn.Embedding(n_vocab, d_model)
            self.cca = nn.ModuleList(
                [ChunkedCrossAttention(d_model, n_heads, d_k, chunk_len) for _ in range(len(ca_layers))])
            self.attn = nn.ModuleList([SelfAttention(d_model, n_heads, d_k, is_causal=True) for _ in range(n_layers)])
            self.ffw = nn.ModuleList([FeedForward(d_model, d_ff) for _ in range(n_layers)])
            self.read = nn.Linear(d_model, n_vocab)
            self.norm_e = nn.LayerNorm(d_model)

        def forward(self, x, ret):
            h = self.emb(x)
            ret_emb = self.emb(ret)
            p_ca = 0
            for p in range(len(self.attn)):
                h = self.attn[p](h)
                if self.ca_layers and p == min(self.ca_layers):
                    e = self.encoder(ret_emb, h)
                    e = self.norm_e(e)
                if p in self.ca_layers:
                    h = self.cca[p_ca](h, e)
                    p_ca += 1
                h = self.ffw[p](h)
            return self.read(h)

    chunk_len, d_model, d_ff, n_heads, d_k = 4, 8, 16, 2, 4
    return RetroModel(7, d_model, 4, {1, 3}, chunk_len, n_heads, d_k, d_ff,
                      encoder=NearestNeighborEncoder(chunk_len, 2, {1}, d_model, n_heads, d_k, d_ff)).double()


def retro_mlm_program(m, weights):
    torch = m.torch

    class MLM:
        def __init__(self, *, padding_token, mask_token, no_mask_tokens, n_tokens, masking_prob=0.15,
                     randomize_prob=0.1, no_change_prob=0.1):
            self.n_tokens = n_tokens
            self.no_change_prob = no_change_prob
            self.randomize_prob = randomize_prob
            self.masking_prob = masking_prob
            self.no_mask_tokens = no_mask_tokens + [padding_token, mask_token]
            self.padding_token = padding_token
            self.mask_token = mask_token

        def __call__(self, x):
            full_mask = torch.rand(x.shape, device=x.device) < self.masking_prob
            for t in self.no_mask_tokens:
                full_mask &= x != t
            unchanged = full_mask & (torch.rand(x.shape, device=x.device) < self.no_change_prob)
            random_token_mask = full_mask & (torch.rand(x.shape, device=x.device) < self.randomize_prob)
            random_token_idx = torch.nonzero(random_token_mask, as_tuple=True)
            random_tokens = torch.randint(0, self.n_tokens, (len(random_token_idx[0]),), device=x.device)
            mask = full_mask & ~random_token_mask & ~unchanged
            y = x.clone()
            x.masked_fill_(mask, self.mask_token)
            x[random_token_idx] = random_tokens
            y.masked_fill_(~full_mask, self.padding_token)
            return x, y

    model = load(m, make_retro(m), weights)
    rng = np.random.default_rng(19)
    x = torch.tensor(rng.integers(2, 7, (3, 10)))
    ret = torch.tensor(rng.integers(2, 7, (3, 2, 2, 6)))  # (batch, chunks, neighbors, neighbor_len)
    torch.manual_seed(5)
    mlm = MLM(padding_token=0, mask_token=1, no_mask_tokens=[6], n_tokens=7, masking_prob=0.4,
              randomize_prob=0.3, no_change_prob=0.2)
    masked, target = mlm(x.clone())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        logits = model(masked, ret)
        loss = m.F.cross_entropy(logits.view(-1, 7), target.view(-1), ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    logits = model(x, ret)
    emb_grad = torch.autograd.grad(logits[:, 2].sum(), model.emb.weight)[0]
    return {"masked": masked, "target": target, "losses": losses, "logits": logits, "emb_grad": emb_grad, "x": x}


def test_retro_with_mlm_masking():
    weights = weights_of(make_retro)
    ours, _ = run_both(retro_mlm_program, weights, rtol=1e-8, atol=1e-10)
    x, masked, target = ours["x"], ours["masked"], ours["target"]
    full = target != 0
    assert full.any() and np.all(target[full] == x[full]) and np.all(x[full] != 6)
    assert np.all(masked[~full] == x[~full])
    assert ours["losses"][-1] < ours["losses"][0]
