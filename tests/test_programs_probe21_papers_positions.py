"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: positions in attention: RoPE/ALiBi/Transformer-XL, and the Compressive
Transformer built on them."""

import math

import numpy as np

from .probe21_papers_common import labml_transformers
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{rope,alibi,xl}: positions in attention
# ----------------------------------------------------------------------------------------------


def make_positional_attention(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class RotaryPositionalEmbeddings(nn.Module):
        def __init__(self, d, base=10_000):
            super().__init__()
            self.base = base
            self.d = d
            self.cos_cached = None
            self.sin_cached = None

        def _build_cache(self, x):
            if self.cos_cached is not None and x.shape[0] <= self.cos_cached.shape[0]:
                return
            seq_len = x.shape[0]
            theta = 1. / (self.base ** (torch.arange(0, self.d, 2).float() / self.d)).to(x.device)
            seq_idx = torch.arange(seq_len, device=x.device).float().to(x.device)
            idx_theta = torch.einsum('n,d->nd', seq_idx, theta)
            idx_theta2 = torch.cat([idx_theta, idx_theta], dim=1)
            self.cos_cached = idx_theta2.cos()[:, None, None, :]
            self.sin_cached = idx_theta2.sin()[:, None, None, :]

        def _neg_half(self, x):
            d_2 = self.d // 2
            return torch.cat([-x[:, :, :, d_2:], x[:, :, :, :d_2]], dim=-1)

        def forward(self, x):
            self._build_cache(x)
            seq_len = x.shape[0]
            x_rope, x_pass = x[..., :self.d], x[..., self.d:]
            neg_half_x = self._neg_half(x_rope)
            x_rope = (x_rope * self.cos_cached[:seq_len]) + (neg_half_x * self.sin_cached[:seq_len])
            return torch.cat((x_rope, x_pass), dim=-1)

    class RotaryPEMultiHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, rope_percentage=0.5, dropout_prob=0.0):
            super().__init__(heads, d_model, dropout_prob)
            d_rope = int(self.d_k * rope_percentage)
            self.query_rotary_pe = RotaryPositionalEmbeddings(d_rope)
            self.key_rotary_pe = RotaryPositionalEmbeddings(d_rope)

        def get_scores(self, query, key):
            return torch.einsum('ibhd,jbhd->ijbh', self.query_rotary_pe(query), self.key_rotary_pe(key))

    def get_slopes(n_heads):
        n = 2 ** math.floor(math.log2(n_heads))
        m_0 = 2.0 ** (-8.0 / n)
        m = torch.pow(m_0, torch.arange(1, 1 + n))
        if n < n_heads:
            m_hat_0 = 2.0 ** (-4.0 / n)
            m_hat = torch.pow(m_hat_0, torch.arange(1, 1 + 2 * (n_heads - n), 2))
            m = torch.cat([m, m_hat])
        return m

    @torch.no_grad()
    def get_alibi_biases(n_heads, mask):
        m = get_slopes(n_heads).to(mask.device)
        distance = mask.cumsum(dim=-1)
        return distance[:, :, None] * m[None, None, :]

    class AlibiMultiHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, dropout_prob=0.1):
            super().__init__(heads, d_model, dropout_prob)
            self.alibi_biases = None

        def forward(self, *, query, key, value, mask=None):
            assert mask is not None
            assert mask.shape[0] == mask.shape[1] and mask.shape[2] == 1
            seq_len, batch_size, _ = query.shape
            mask = self.prepare_mask(mask, query.shape, key.shape)
            query = self.query(query)
            key = self.key(key)
            value = self.value(value)
            scores = self.get_scores(query, key)
            scores *= self.scale
            if self.alibi_biases is None or self.alibi_biases.shape[1] < seq_len:
                self.alibi_biases = get_alibi_biases(scores.shape[-1], mask[:, :, 0, 0])
            scores += self.alibi_biases[:seq_len, :seq_len, None, :]
            scores = scores.masked_fill(mask == 0, float('-inf'))
            attn = self.softmax(scores)
            attn = self.dropout(attn)
            x = torch.einsum("ijbh,jbhd->ibhd", attn, value)
            x = x.reshape(seq_len, batch_size, -1)
            return self.output(x)

    def shift_right(x):
        zero_pad = x.new_zeros(x.shape[0], 1, *x.shape[2:])
        x_padded = torch.cat([x, zero_pad], dim=1)
        x_padded = x_padded.view(x.shape[1] + 1, x.shape[0], *x.shape[2:])
        x = x_padded[:-1].view_as(x)
        return x

    class RelativeMultiHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, dropout_prob=0.1):
            super().__init__(heads, d_model, dropout_prob, bias=False)
            self.P = 2 ** 5
            self.key_pos_embeddings = nn.Parameter(torch.zeros((self.P * 2, heads, self.d_k)), requires_grad=True)
            self.key_pos_bias = nn.Parameter(torch.zeros((self.P * 2, heads)), requires_grad=True)
            self.query_pos_bias = nn.Parameter(torch.zeros((heads, self.d_k)), requires_grad=True)

        def get_scores(self, query, key):
            key_pos_emb = self.key_pos_embeddings[self.P - key.shape[0]:self.P + query.shape[0]]
            key_pos_bias = self.key_pos_bias[self.P - key.shape[0]:self.P + query.shape[0]]
            query_pos_bias = self.query_pos_bias[None, None, :, :]
            ac = torch.einsum('ibhd,jbhd->ijbh', query + query_pos_bias, key)
            b = torch.einsum('ibhd,jhd->ijbh', query, key_pos_emb)
            d = key_pos_bias[None, :, None, :]
            bd = shift_right(b + d)
            bd = bd[:, -key.shape[0]:]
            return ac + bd

    class Model(nn.Module):
        def __init__(self, d_model=16, heads=4):
            super().__init__()
            self.rope = RotaryPEMultiHeadAttention(heads, d_model, rope_percentage=0.5)
            self.alibi = AlibiMultiHeadAttention(6, 12, dropout_prob=0.)
            self.xl = RelativeMultiHeadAttention(heads, d_model, 0.)
            self.project = nn.Linear(d_model, 12)

    return Model().double(), RotaryPositionalEmbeddings, get_slopes, get_alibi_biases, shift_right


def positional_program(m, weights):
    torch = m.torch
    model, Rotary, get_slopes, get_alibi_biases, shift_right = make_positional_attention(m)
    model = load(m, model, weights)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.linspace(-0.3, 0.3, p.numel(), dtype=torch.float64).view(p.shape))
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((6, 2, 16)))
    mem = torch.tensor(rng.standard_normal((4, 2, 16)))  # Transformer-XL's memory of the previous segment
    mask = torch.tril(torch.ones(6, 6)).to(torch.bool).unsqueeze(-1)
    xl_mask = torch.cat([torch.ones(6, 4, 1, dtype=torch.bool), mask], dim=1)
    out = {}
    rope = model.rope(query=x, key=x, value=x, mask=mask)
    alibi = model.alibi(query=model.project(x), key=model.project(x), value=model.project(x), mask=mask)
    mem_x = torch.cat([mem, x])
    xl = model.xl(query=x, key=mem_x, value=mem_x, mask=xl_mask)
    loss = rope.pow(2).mean() + alibi.pow(2).mean() + xl.pow(2).mean()
    loss.backward()
    out["outputs"] = [rope, alibi, xl]
    out["grads"] = {n: p.grad for n, p in model.named_parameters()}
    # the module-level helpers as the authors' _test functions call them
    r = Rotary(4)
    points = torch.tensor([[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]], dtype=torch.float)[:, None, None, :]
    out["rotary"] = r(points)
    out["slopes"] = [get_slopes(8), get_slopes(12)]
    out["biases"] = get_alibi_biases(12, torch.tril(torch.ones(8, 8)).to(torch.bool))[:, :, 3]
    out["shift"] = shift_right(torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]))
    out["shift4"] = shift_right(torch.arange(1, 6)[None, :, None, None].repeat(3, 1, 1, 1))[:, :, 0, 0]
    return out


def test_rope_alibi_xl_attention():
    weights = weights_of(lambda m: make_positional_attention(m)[0])
    # (RoPE's cos/sin cache is float32, as they write it, and float32 cos may differ by an ulp)
    ours, _ = run_both(positional_program, weights, rtol=2e-6, atol=1e-8)
    # RoPE rotates pairs (i, i + d/2) by position * theta_i; position 0 is unchanged
    p = np.array([[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]], dtype=np.float64)
    theta = 1.0 / 10000 ** (np.arange(0, 4, 2) / 4)
    ang = np.arange(3)[:, None] * theta
    cos, sin = np.cos(ang), np.sin(ang)
    expected = np.concatenate([p[:, :2] * cos - p[:, 2:] * sin, p[:, 2:] * cos + p[:, :2] * sin], axis=1)
    np.testing.assert_allclose(ours["rotary"][:, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(ours["slopes"][0], 2.0 ** (-np.arange(1, 9)), rtol=1e-6)
    assert ours["slopes"][1].shape == (12,)
    assert ours["biases"].shape == (8, 8)
    np.testing.assert_array_equal(ours["shift"], [[1, 2, 3], [0, 4, 5], [6, 0, 7]])
    assert all(np.isfinite(o).all() for o in ours["outputs"])
    assert np.abs(ours["grads"]["xl.key_pos_embeddings"]).max() > 0


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/compressive: the Compressive Transformer over segments, its memories compressed
# by a strided Conv1d and trained by the attention-reconstruction loss (detached weights through F.linear
# and F.layer_norm(x, ln.normalized_shape, ...))
# ----------------------------------------------------------------------------------------------


def make_compressive(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)
    positional = make_positional_attention(m)  # for Transformer-XL's relative attention
    RelativeMultiHeadAttention = type(positional[0].xl)

    class Conv1dCompression(nn.Module):
        def __init__(self, compression_rate, d_model):
            super().__init__()
            self.conv = nn.Conv1d(d_model, d_model, kernel_size=compression_rate, stride=compression_rate)

        def forward(self, mem):
            mem = mem.permute(1, 2, 0)
            c_mem = self.conv(mem)
            return c_mem.permute(2, 0, 1)

    class CompressiveTransformerLayer(nn.Module):
        def __init__(self, *, d_model, self_attn, feed_forward, dropout_prob, compress):
            super().__init__()
            self.compress = compress
            self.size = d_model
            self.self_attn = self_attn
            self.feed_forward = feed_forward
            self.dropout = nn.Dropout(dropout_prob)
            self.norm_self_attn = nn.LayerNorm([d_model])
            self.norm_ff = nn.LayerNorm([d_model])

        def concat_memory(self, z, mem, c_mem):
            if mem is None:
                return z
            if c_mem is not None:
                mem = torch.cat((c_mem, mem), dim=0)
            mem = self.norm_self_attn(mem)
            return torch.cat((mem, z), dim=0)

        def forward(self, *, x, mem, c_mem, mask):
            z = self.norm_self_attn(x)
            m_z = self.concat_memory(z, mem, c_mem)
            self_attn = self.self_attn(query=z, key=m_z, value=m_z, mask=mask)
            x = x + self.dropout(self_attn)
            z = self.norm_ff(x)
            ff = self.feed_forward(z)
            x = x + self.dropout(ff)
            return x

    class CompressiveTransformer(nn.Module):
        def __init__(self, layer, n_layers):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])

        def forward(self, x, mem, c_mem, mask):
            new_mem = []
            for i, layer in enumerate(self.layers):
                new_mem.append(x.detach())
                m = mem[i] if mem else None
                cm = c_mem[i] if c_mem else None
                x = layer(x=x, mem=m, c_mem=cm, mask=mask)
            return self.norm(x), new_mem

    class AutoregressiveModel(nn.Module):
        def __init__(self, n_vocab, d_model, transformer):
            super().__init__()
            self.src_embed = nn.Embedding(n_vocab, d_model)
            self.transformer = transformer
            self.generator = nn.Linear(d_model, n_vocab)
            self.mask_x = None
            self.mask_mem = None

        def forward(self, x, mem, c_mem):
            m_len = (len(mem[0]) if mem else 0) + (len(c_mem[0]) if c_mem else 0)
            if self.mask_x is None or self.mask_x.shape[0] < len(x):
                self.mask_x = t.subsequent_mask(len(x))
            if self.mask_mem is None or self.mask_mem.shape[1] < m_len or self.mask_mem.shape[0] < len(x):
                self.mask_mem = self.mask_x.new_ones(len(x), m_len, 1)
            if m_len:
                mask = torch.cat((self.mask_mem[:len(x), :m_len], self.mask_x[:len(x), :len(x)]), dim=1)
            else:
                mask = self.mask_x[:len(x), :len(x)]
            x = self.src_embed(x)
            res, mem = self.transformer(x, mem, c_mem, mask)
            res = self.generator(res)
            return res, mem

    d_model, heads = 8, 2
    layer = CompressiveTransformerLayer(d_model=d_model, self_attn=RelativeMultiHeadAttention(heads, d_model, 0.),
                                        feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.,
                                        compress=Conv1dCompression(2, d_model))
    return AutoregressiveModel(9, d_model, CompressiveTransformer(layer, 2)).double()


def compressive_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class AttentionReconstructionLoss:
        def __init__(self, layers):
            self.layers = layers
            self.loss_func = nn.MSELoss()

        def prepare_for_attn(self, pmha, x):
            head_shape = x.shape[:-1]
            weight = pmha.linear.weight.detach()
            bias = pmha.linear.bias.detach() if pmha.linear.bias is not None else None
            x = F.linear(x, weight, bias)
            x = x.view(*head_shape, pmha.heads, pmha.d_k)
            return x

        def attn(self, layer, query, key, value):
            query = self.prepare_for_attn(layer.query, query)
            key = self.prepare_for_attn(layer.key, key)
            value = self.prepare_for_attn(layer.value, value)
            scores = torch.einsum('ibhd,jbhd->ijbh', query, key)
            scores *= layer.scale
            attn = layer.softmax(scores)
            return torch.einsum("ijbh,jbhd->ibhd", attn, value)

        def norm(self, ln, x):
            weight = ln.weight.detach() if ln.weight is not None else None
            bias = ln.bias.detach() if ln.bias is not None else None
            return F.layer_norm(x, ln.normalized_shape, weight, bias, ln.eps)

        def calc_loss(self, layer, h, mem):
            h = h.detach()
            mem = mem.detach()
            c_mem = layer.compress(mem)
            h = self.norm(layer.norm_self_attn, h)
            mem = self.norm(layer.norm_self_attn, mem)
            c_mem = self.norm(layer.norm_self_attn, c_mem)
            attn_mem = self.attn(layer.self_attn, h, mem, mem)
            attn_cmem = self.attn(layer.self_attn, h, c_mem, c_mem)
            return self.loss_func(attn_cmem, attn_mem)

        def __call__(self, h, mem):
            losses = [self.calc_loss(layer, h[n], mem[n]) for n, layer in enumerate(self.layers)]
            return sum(losses)

    model = load(m, make_compressive(m), weights)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.linspace(-0.3, 0.3, p.numel(), dtype=torch.float64).view(p.shape))
    reconstruction = AttentionReconstructionLoss(model.transformer.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(22)
    segments = torch.tensor(rng.integers(0, 9, (5, 4, 3)))  # 5 segments of 4 tokens, batch 3
    targets = torch.tensor(rng.integers(0, 9, (5, 4, 3)))
    mem_len, c_mem_len, compression_rate = 4, 4, 2
    mem, c_mem = [], []
    out = {"losses": [], "ar": [], "mem_lens": []}
    for data, target in zip(segments, targets):
        output, new_mem = model(data, mem, c_mem)
        # merge the new memories, compressing what overflows mem_len (their merge_compress_memory)
        if mem:
            mem = [torch.cat((m_, x), dim=0) for m_, x in zip(mem, new_mem)]
        else:
            mem = new_mem
        ar_loss = torch.zeros((), dtype=torch.float64)
        if len(mem[0]) > mem_len:
            n_c_mem = (len(mem[0]) - mem_len + compression_rate - 1) // compression_rate
            n_old = n_c_mem * compression_rate
            mem_to_compress = [m_[:n_old] for m_ in mem]
            mem = [m_[n_old:] for m_ in mem]
            new_c_mem = [layer.compress(m_) for m_, layer in zip(mem_to_compress, model.transformer.layers)]
            c_mem = [torch.cat((c, nc), dim=0)[-c_mem_len:] for c, nc in zip(c_mem, new_c_mem)] if c_mem else new_c_mem
            c_mem = [c.detach() for c in c_mem]
            ar_loss = reconstruction(new_mem, mem_to_compress)
        loss = F.cross_entropy(output.view(-1, 9), target.view(-1)) + ar_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out["losses"].append(loss.item())
        out["ar"].append(ar_loss.item())
        out["mem_lens"].append((len(mem[0]), len(c_mem[0]) if c_mem else 0))
    out["compress_w"] = model.transformer.layers[0].compress.conv.weight
    return out


def test_compressive_transformer():
    weights = weights_of(make_compressive)
    ours, _ = run_both(compressive_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["mem_lens"] == [(4, 0), (4, 2), (4, 4), (4, 4), (4, 4)]
    assert ours["ar"][0] == 0 and all(a > 0 for a in ours["ar"][1:])
