# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Computational-biology programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, and checked against NumPy by hand where PyTorch is missing. An ESM-style masked protein LM
(``Embedding(padding_idx)``, token-dropout rescaling, ``MultiheadAttention`` with a key padding mask and per-head
weights, ``cross_entropy(ignore_index=-100)``, APC-corrected contacts); an Evoformer block on an MSA in float32 and
float64 (tied row attention with pair bias and column attention by ``einsum`` over 5-D tensors with ``...``,
outer-product mean, outgoing and incoming triangle multiplicative updates, a distogram head trained on ``cdist`` +
``bucketize(right=True)`` bins checked against ``np.digitize``); and triangle attention that adds its pair bias and
mask in place through a view of einsum's logits (which depends on einsum's result laid out as PyTorch's, so that a
view shares memory)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# ESM-style protein masked language model: Embedding(padding_idx), token dropout rescaling, attention with a
# key padding mask, the masked-LM loss with ignore_index
# ----------------------------------------------------------------------------------------------

AMINO = "ACDEFGHIKLMNPQRSTVWY"
PAD, CLS, EOS, MASK = 0, 1, 2, 3  # then the 20 amino acids from 4


def protein_batch(seed=0, n=5, max_len=14):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, max_len - 1, n)
    tokens = np.full((n, max_len), PAD)
    for i, L in enumerate(lengths):
        tokens[i, 0] = CLS
        tokens[i, 1:L + 1] = 4 + rng.integers(0, 20, L)
        tokens[i, L + 1] = EOS
    return tokens


def esm_net(m, vocab=24, dim=16, heads=4):
    torch, nn, F = m.torch, m.nn, m.F

    class ESMLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn_layer_norm = nn.LayerNorm(dim)
            self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.final_layer_norm = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, 2 * dim)
            self.fc2 = nn.Linear(2 * dim, dim)

        def forward(self, x, padding_mask):
            h = self.self_attn_layer_norm(x)
            h, attn = self.self_attn(h, h, h, key_padding_mask=padding_mask, need_weights=True,
                                     average_attn_weights=False)
            x = x + h
            h = self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
            return x + h, attn

    class ESM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, dim, padding_idx=PAD)
            self.embed_positions = nn.Embedding(32, dim)
            self.layers = nn.ModuleList([ESMLayer() for _ in range(2)])
            self.emb_layer_norm_after = nn.LayerNorm(dim)
            self.lm_head = nn.Linear(dim, vocab)

        def forward(self, tokens, token_dropout=True):
            padding_mask = tokens.eq(PAD)
            x = self.embed_tokens(tokens)
            if token_dropout:
                x.masked_fill_((tokens == MASK).unsqueeze(-1), 0.0)
                mask_ratio_train = 0.15 * 0.8
                src_lengths = (~padding_mask).sum(-1)
                mask_ratio_observed = (tokens == MASK).sum(-1).to(x.dtype) / src_lengths
                x = x * (1 - mask_ratio_train) / (1 - mask_ratio_observed)[:, None, None]
            positions = torch.cumsum(~padding_mask, dim=1) * (~padding_mask)
            x = x + self.embed_positions(positions)
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
            attentions = []
            for layer in self.layers:
                x, attn = layer(x, padding_mask)
                attentions.append(attn)
            x = self.emb_layer_norm_after(x)
            return self.lm_head(x), torch.stack(attentions, 1)

    return ESM()


def esm_mlm(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    tokens = torch.from_numpy(protein_batch())
    rng = np.random.default_rng(1)
    choose = torch.from_numpy(rng.random(tokens.shape) < 0.2) & (tokens >= 4)
    masked = tokens.masked_fill(choose, MASK)
    targets = tokens.masked_fill(~choose, -100)
    model = load(m, esm_net(m), weights)
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        logits, attn = model(masked)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    pad_grad = model.embed_tokens.weight.grad[PAD]
    # contact prediction from attention maps (APC-corrected, symmetrised), as ESM's ContactPredictionHead
    a = attn.detach().flatten(1, 2)
    a = a + a.transpose(-1, -2)
    a1, a2 = a.sum(-1, keepdims=True), a.sum(-2, keepdims=True)
    apc = a - a1 * a2 / a.sum((-1, -2), keepdims=True)
    perplexity = torch.exp(torch.tensor(losses[-1]))
    return losses, logits, attn, pad_grad, apc, perplexity, [p.grad for p in model.parameters()]


def test_esm_masked_lm_token_dropout():
    weights = weights_of(esm_net)
    ours, _ = run_both(esm_mlm, weights, rtol=1e-4, atol=1e-5)
    losses, logits, attn, pad_grad = ours[:4]
    assert losses[-1] < losses[0]
    assert np.all(pad_grad == 0)  # padding_idx's row takes no gradient
    tokens = protein_batch()
    # no attention lands on a padded key
    keys_padded = np.broadcast_to((tokens == PAD)[:, None, None, None, :], attn.shape)
    assert np.all(attn[keys_padded] == 0)


# ----------------------------------------------------------------------------------------------
# An Evoformer-like block on an MSA: tied row attention and column attention by einsum over 5-D tensors,
# outer-product-mean into the pair representation, triangle multiplicative updates, pair masks, and a distogram
# head trained with cross_entropy over distance bins from cdist + bucketize
# ----------------------------------------------------------------------------------------------


def evoformer_net(m, c_m=8, c_z=8, heads=2, c_hidden=4, bins=6):
    torch, nn, F = m.torch, m.nn, m.F

    class MSARowAttentionWithPairBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm_m = nn.LayerNorm(c_m)
            self.layer_norm_z = nn.LayerNorm(c_z)
            self.linear_z = nn.Linear(c_z, heads, bias=False)
            self.to_qkv = nn.Linear(c_m, 3 * heads * c_hidden, bias=False)
            self.to_gate = nn.Linear(c_m, heads * c_hidden)
            self.to_out = nn.Linear(heads * c_hidden, c_m)

        def forward(self, msa, pair, msa_mask):
            s, r = msa.shape[-3:-1]
            msa = self.layer_norm_m(msa)
            q, k, v = self.to_qkv(msa).chunk(3, dim=-1)
            q, k, v = (t.unflatten(-1, (heads, c_hidden)) for t in (q, k, v))  # b s i h d
            q = q / math.sqrt(c_hidden) / math.sqrt(s)  # tied attention: logits summed over sequences
            logits = torch.einsum("...sihd,...sjhd->...hij", q, k)
            logits = logits + self.linear_z(self.layer_norm_z(pair)).permute(0, 3, 1, 2)
            col_mask = msa_mask[:, 0]  # b j
            logits = logits.masked_fill(~col_mask[:, None, None, :].bool(), -1e9)
            attn = logits.softmax(-1)
            out = torch.einsum("bhij,bsjhd->bsihd", attn, v)
            gate = torch.sigmoid(self.to_gate(msa)).unflatten(-1, (heads, c_hidden))
            return self.to_out((out * gate).flatten(-2))

    class MSAColumnAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c_m)
            self.to_qkv = nn.Linear(c_m, 3 * heads * c_hidden, bias=False)
            self.to_out = nn.Linear(heads * c_hidden, c_m)

        def forward(self, msa, msa_mask):
            msa = self.layer_norm(msa).transpose(-2, -3)  # b i s c
            q, k, v = (t.unflatten(-1, (heads, c_hidden)) for t in self.to_qkv(msa).chunk(3, -1))
            logits = torch.einsum("bishd,bithd->bhist", q, k) / math.sqrt(c_hidden)
            mask = msa_mask.transpose(-1, -2)  # b i s
            logits = logits + (1e9 * (mask[:, None, :, None, :] - 1))
            out = torch.einsum("bhist,bithd->bishd", logits.softmax(-1), v)
            return self.to_out(out.flatten(-2)).transpose(-2, -3)

    class OuterProductMean(nn.Module):
        def __init__(self, c=4):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c_m)
            self.linear_1 = nn.Linear(c_m, c)
            self.linear_2 = nn.Linear(c_m, c)
            self.linear_out = nn.Linear(c * c, c_z)

        def forward(self, msa, msa_mask):
            msa = self.layer_norm(msa)
            mask = msa_mask.unsqueeze(-1)
            a = self.linear_1(msa) * mask
            b = self.linear_2(msa) * mask
            outer = torch.einsum("bsic,bsjd->bijcd", a, b)
            norm = torch.einsum("...sia,...sjb->...ijab", mask, mask)
            return self.linear_out(outer.flatten(-2)) / (1e-3 + norm.squeeze(-1))

    class TriangleMultiplication(nn.Module):
        def __init__(self, outgoing=True):
            super().__init__()
            self.outgoing = outgoing
            self.norm = nn.LayerNorm(c_z)
            self.left_proj = nn.Linear(c_z, c_z)
            self.right_proj = nn.Linear(c_z, c_z)
            self.left_gate = nn.Linear(c_z, c_z)
            self.right_gate = nn.Linear(c_z, c_z)
            self.out_gate = nn.Linear(c_z, c_z)
            self.to_out_norm = nn.LayerNorm(c_z)
            self.to_out = nn.Linear(c_z, c_z)

        def forward(self, z, pair_mask):
            mask = pair_mask.unsqueeze(-1)
            z = self.norm(z)
            left = self.left_proj(z) * mask * self.left_gate(z).sigmoid()
            right = self.right_proj(z) * mask * self.right_gate(z).sigmoid()
            if self.outgoing:
                out = torch.einsum("bikc,bjkc->bijc", left, right)
            else:
                out = torch.einsum("bkic,bkjc->bijc", left, right)
            return self.to_out(self.to_out_norm(out)) * self.out_gate(z).sigmoid()

    class Evoformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_msa = nn.Embedding(22, c_m, padding_idx=21)
            self.relpos = nn.Embedding(2 * 4 + 1, c_z)
            self.row = MSARowAttentionWithPairBias()
            self.col = MSAColumnAttention()
            self.opm = OuterProductMean()
            self.tri_out = TriangleMultiplication(True)
            self.tri_in = TriangleMultiplication(False)
            self.distogram = nn.Linear(c_z, bins)

        def forward(self, msa_tokens, msa_mask):
            L = msa_tokens.shape[-1]
            m = self.embed_msa(msa_tokens)
            idx = torch.arange(L)
            rel = torch.clamp(idx[None, :] - idx[:, None], -4, 4) + 4
            z = self.relpos(rel).unsqueeze(0).expand(msa_tokens.shape[0], -1, -1, -1)
            pair_mask = msa_mask[:, 0, :, None] * msa_mask[:, 0, None, :]
            m = m + self.row(m, z, msa_mask)
            m = m + self.col(m, msa_mask)
            z = z + self.opm(m, msa_mask)
            z = z + self.tri_out(z, pair_mask)
            z = z + self.tri_in(z, pair_mask)
            logits = self.distogram(z)
            return logits + logits.transpose(-2, -3), pair_mask

    return Evoformer()


def protein_coords(seed=0, b=2, L=7):
    """C-beta-like coordinates along a random walk of 3.8 A steps."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((b, L, 3))
    steps = 3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True)
    return np.cumsum(steps, axis=1)


def evoformer(m, weights, steps=3, dtype="float32"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    rng = np.random.default_rng(4)
    b, s, L = 2, 3, 7
    msa_tokens = torch.from_numpy(rng.integers(0, 21, (b, s, L)))
    msa_mask = torch.ones(b, s, L, dtype=dtype)
    msa_mask[1, :, 5:] = 0  # the second protein is 5 residues long
    msa_tokens = msa_tokens.masked_fill(msa_mask == 0, 21)
    coords = torch.tensor(protein_coords(), dtype=dtype)
    dist = torch.cdist(coords, coords)
    boundaries = torch.linspace(2.0, 12.0, 5, dtype=dtype)
    bins = torch.bucketize(dist, boundaries, right=True)  # a distance on a boundary goes to the upper bin
    model = load(m, evoformer_net(m), weights).to(dtype)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        logits, pair_mask = model(msa_tokens, msa_mask)
        errors = F.cross_entropy(logits.permute(0, 3, 1, 2), bins, reduction="none")
        loss = (errors * pair_mask).sum() / pair_mask.sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    probs = logits.detach().softmax(-1)
    centres = torch.cat([boundaries[:1] - 1, (boundaries[1:] + boundaries[:-1]) / 2, boundaries[-1:] + 1])
    expected_distance = torch.einsum("bijk,k->bij", probs, centres)
    return losses, bins, logits, expected_distance, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evoformer_distogram(dtype):
    weights = weights_of(evoformer_net)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-9, atol=1e-11)
    ours, _ = run_both(evoformer, weights, dtype=dtype, **tol)
    losses, bins = ours[:2]
    assert losses[-1] < losses[0]
    coords = protein_coords()
    dist = np.linalg.norm(coords[:, :, None] - coords[:, None], axis=-1)
    np.testing.assert_array_equal(bins, np.digitize(dist, np.linspace(2.0, 12.0, 5), right=False))


# ----------------------------------------------------------------------------------------------
# Triangle attention around the starting node (AlphaFold2's algorithm 13) in the style that adds the pair bias and
# the mask in place, through a (B·I, H, J·K) view of the einsum's logits
# ----------------------------------------------------------------------------------------------


def triangle_attention_net(m, c_z=8, heads=2, c=4):
    torch, nn = m.torch, m.nn

    class TriangleAttentionStartingNode(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c_z)
            self.linear_q = nn.Linear(c_z, heads * c, bias=False)
            self.linear_k = nn.Linear(c_z, heads * c, bias=False)
            self.linear_v = nn.Linear(c_z, heads * c, bias=False)
            self.linear_b = nn.Linear(c_z, heads, bias=False)
            self.linear_g = nn.Linear(c_z, heads * c)
            self.linear_o = nn.Linear(heads * c, c_z)

        def forward(self, z, pair_mask):
            B, I, J, _ = z.shape
            z = self.layer_norm(z)
            q = self.linear_q(z).view(B, I, J, heads, c) * c ** -0.5
            k = self.linear_k(z).view(B, I, J, heads, c)
            v = self.linear_v(z).view(B, I, J, heads, c)
            logits = torch.einsum("bijhc,bikhc->bihjk", q, k)  # (B, I, H, J, K)
            flat = logits.view(B * I, heads, J * J)  # the (j, k) pairs flattened, as the bias is
            bias = self.linear_b(z).permute(0, 3, 1, 2).reshape(B, heads, J * J)  # b_jk per head
            flat += bias.repeat_interleave(I, dim=0)
            key_mask = pair_mask.bool()[:, None, :].expand(B, J, J).reshape(B, 1, J * J)
            flat.masked_fill_(~key_mask.repeat_interleave(I, dim=0), -1e9)
            attn = logits.softmax(-1)  # (the writes above went through the view into logits)
            o = torch.einsum("bihjk,bikhc->bijhc", attn, v)
            g = torch.sigmoid(self.linear_g(z)).view(B, I, J, heads, c)
            return self.linear_o((g * o).reshape(B, I, J, heads * c)), attn

    return TriangleAttentionStartingNode()


def triangle_attention(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(8)
    z = torch.tensor(rng.standard_normal((2, 5, 5, 8)), dtype=torch.float32)
    target = torch.tensor(rng.standard_normal((2, 5, 5, 8)), dtype=torch.float32)
    pair_mask = torch.ones(2, 5)
    pair_mask[1, 4:] = 0
    model = load(m, triangle_attention_net(m), weights)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        out, attn = model(z, pair_mask)
        loss = ((out - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, out, attn, [p.grad for p in model.parameters()]


def test_triangle_attention_bias_through_a_view_of_einsum_logits():
    weights = weights_of(triangle_attention_net)
    ours, _ = run_both(triangle_attention, weights, rtol=1e-4, atol=1e-5)
    losses, out, attn = ours[:3]
    assert losses[-1] < losses[0]
    assert np.all(attn[1, :, :, :, 4] == 0)  # the masked key (written through the view) takes no attention
