# ruff: noqa: B007, F841, UP034  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today, run as tests/probe13_llm_common.py says. Attention and
its alternatives: DeepSeek's multi-head latent attention (YaRN ``torch.polar`` frequencies, complex rotary
embeddings, naive against absorbed ``einsum`` forms); FlashAttention's online softmax and ring attention's
``logaddexp`` merge against SDPA; the Differential Transformer's attention (two softmax maps subtracted with a learnt
λ, ``nan_to_num``, an affine-free ``nn.RMSNorm`` per head); Mamba-2's chunked state-space duality (``segsum`` by
``cumsum`` and a -inf triangle, five-operand ``einsum``) against its recurrence."""

import math

import numpy as np
import pytest

from .probe13_llm_common import Q_V
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DeepSeek-V3's multi-head latent attention (model.py): YaRN frequencies with a linear ramp, complex rotary
# embeddings on the decoupled rope dimensions (view_as_complex / view_as_real), a low-rank KV with its own
# RMSNorm; trained in the naive form, then the "absorb" form (wkv_b folded into the query and the output by
# einsum) must give the same outputs; plus FlashAttention's online softmax written in PyTorch (blocks,
# running max and logsumexp, -inf guarded by torch.where) against SDPA, forward and backward, and two
# partial attentions merged by logaddexp as ring attention merges them
# ----------------------------------------------------------------------------------------------

A_D, A_H, A_NOPE, A_ROPE, A_V, A_KV_RANK, A_Q_RANK, A_SEQ, A_ORIG = 16, 2, 8, 4, 6, 6, 10, 12, 4


def yarn_freqs_cis(m, qk_rope_head_dim=A_ROPE, seqlen=A_SEQ, rope_theta=10000.0, rope_factor=4.0,
                   original_seq_len=A_ORIG, beta_fast=32, beta_slow=1):
    torch = m.torch
    dim = qk_rope_head_dim
    base = rope_theta
    factor = rope_factor

    def find_correction_dim(num_rotations, dim, base, max_seq_len):
        return dim * math.log(max_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    def find_correction_range(low_rot, high_rot, dim, base, max_seq_len):
        low = math.floor(find_correction_dim(low_rot, dim, base, max_seq_len))
        high = math.ceil(find_correction_dim(high_rot, dim, base, max_seq_len))
        return max(low, 0), min(high, dim - 1)

    def linear_ramp_factor(min, max, dim):
        if min == max:
            max += 0.001
        linear_func = (torch.arange(dim, dtype=torch.float32) - min) / (max - min)
        ramp_func = torch.clamp(linear_func, 0, 1)
        return ramp_func

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if seqlen > original_seq_len:
        low, high = find_correction_range(beta_fast, beta_slow, dim, base, original_seq_len)
        smooth = 1 - linear_ramp_factor(low, high, dim // 2)
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    t = torch.arange(seqlen)
    freqs = torch.outer(t, freqs)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    return freqs_cis


def make_mla(m):
    torch, nn, F = m.torch, m.nn, m.F

    def apply_rotary_emb(x, freqs_cis):
        dtype = x.dtype
        x = torch.view_as_complex(x.float().view(*x.shape[:-1], -1, 2))
        freqs_cis = freqs_cis.view(1, x.size(1), 1, x.size(-1))
        y = torch.view_as_real(x * freqs_cis).flatten(3)
        return y.to(dtype)

    class MLA(nn.Module):
        def __init__(self):
            super().__init__()
            self.qk_head_dim = A_NOPE + A_ROPE
            self.wq_a = nn.Linear(A_D, A_Q_RANK, bias=False)
            self.q_norm = nn.RMSNorm(A_Q_RANK)
            self.wq_b = nn.Linear(A_Q_RANK, A_H * self.qk_head_dim, bias=False)
            self.wkv_a = nn.Linear(A_D, A_KV_RANK + A_ROPE, bias=False)
            self.kv_norm = nn.RMSNorm(A_KV_RANK)
            self.wkv_b = nn.Linear(A_KV_RANK, A_H * (A_NOPE + A_V), bias=False)
            self.wo = nn.Linear(A_H * A_V, A_D, bias=False)
            mscale = 0.1 * 1.0 * math.log(4.0) + 1.0
            self.softmax_scale = self.qk_head_dim ** -0.5 * mscale * mscale

        def forward(self, x, freqs_cis, mask, attn_impl="naive"):
            bsz, seqlen, _ = x.size()
            q = self.wq_b(self.q_norm(self.wq_a(x)))
            q = q.view(bsz, seqlen, A_H, self.qk_head_dim)
            q_nope, q_pe = torch.split(q, [A_NOPE, A_ROPE], dim=-1)
            q_pe = apply_rotary_emb(q_pe, freqs_cis)
            kv = self.wkv_a(x)
            kv, k_pe = torch.split(kv, [A_KV_RANK, A_ROPE], dim=-1)
            k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis)
            if attn_impl == "naive":
                q = torch.cat([q_nope, q_pe], dim=-1)
                kv = self.wkv_b(self.kv_norm(kv))
                kv = kv.view(bsz, seqlen, A_H, A_NOPE + A_V)
                k_nope, v = torch.split(kv, [A_NOPE, A_V], dim=-1)
                k = torch.cat([k_nope, k_pe.expand(-1, -1, A_H, -1)], dim=-1)
                scores = torch.einsum("bshd,bthd->bsht", q, k) * self.softmax_scale
            else:
                wkv_b = self.wkv_b.weight.view(A_H, -1, A_KV_RANK)
                q_nope = torch.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :A_NOPE])
                kv_cache = self.kv_norm(kv)
                pe_cache = k_pe.squeeze(2)
                scores = (torch.einsum("bshc,btc->bsht", q_nope, kv_cache) +
                          torch.einsum("bshr,btr->bsht", q_pe, pe_cache)) * self.softmax_scale
            if mask is not None:
                scores += mask.unsqueeze(1)
            scores = scores.softmax(dim=-1, dtype=torch.float32).type_as(x)
            if attn_impl == "naive":
                x = torch.einsum("bsht,bthd->bshd", scores, v)
            else:
                x = torch.einsum("bsht,btc->bshc", scores, kv_cache)
                x = torch.einsum("bshc,hdc->bshd", x, wkv_b[:, -A_V:])
            return self.wo(x.flatten(2))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(Q_V, A_D)
            self.attn_norm = nn.RMSNorm(A_D)
            self.attn = MLA()
            self.norm = nn.RMSNorm(A_D)
            self.head = nn.Linear(A_D, Q_V, bias=False)
            self.register_buffer("freqs_cis", yarn_freqs_cis(m), persistent=False)

        def forward(self, tokens, attn_impl="naive"):
            seqlen = tokens.size(1)
            h = self.embed(tokens)
            freqs_cis = self.freqs_cis[:seqlen]
            mask = torch.full((seqlen, seqlen), float("-inf")).triu_(1) if seqlen > 1 else None
            h = h + self.attn(self.attn_norm(h), freqs_cis, mask, attn_impl)
            return self.head(self.norm(h))

    return Model()


def mla_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_mla(m), weights)
    tokens = torch.tensor(np.random.default_rng(8).integers(0, Q_V, (3, A_SEQ)))
    optimizer = m.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad for n, p in model.named_parameters()}
    with torch.inference_mode():
        naive = model(tokens)
        absorbed = model(tokens, attn_impl="absorb")
    return losses, grads, naive, absorbed, model.freqs_cis


def test_deepseek_mla_yarn_naive_and_absorbed():
    weights = weights_of(make_mla)
    (losses, grads, naive, absorbed, freqs_cis), _ = run_both(mla_program, weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(absorbed, naive, rtol=1e-4, atol=1e-5)
    assert freqs_cis.dtype == np.complex64 and np.allclose(np.abs(freqs_cis), 1.0)
    # YaRN: with these settings the fastest frequency is kept and the slowest divided by the factor
    np.testing.assert_allclose(np.angle(freqs_cis[1]), [1.0, 0.01 / 4.0], rtol=1e-5)
    assert losses[-1] < losses[0]


def flash_attention_program(m, window=None, block_q=4, block_k=3):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(7)
    B, H, S, Dh = 2, 2, 10, 8
    q, k, v = (torch.randn(B, H, S, Dh, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    scale = Dh ** -0.5

    def flash_forward(q, k, v, causal=True, window=None):
        """Tiled attention with an online softmax (FlashAttention-2's forward, in PyTorch)."""
        out = torch.zeros_like(q)
        lse_out = torch.empty(q.shape[:-1], dtype=q.dtype)
        for qs in range(0, S, block_q):
            qi = q[:, :, qs:qs + block_q]
            rows = torch.arange(qs, min(qs + block_q, S))
            m_i = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
            l_i = torch.zeros(qi.shape[:-1], dtype=q.dtype)
            acc = torch.zeros_like(qi)
            for ks in range(0, S, block_k):
                cols = torch.arange(ks, min(ks + block_k, S))
                s = qi @ k[:, :, ks:ks + block_k].transpose(-2, -1) * scale
                allowed = torch.ones(len(rows), len(cols), dtype=torch.bool)
                if causal:
                    allowed &= cols[None, :] <= rows[:, None]
                if window is not None:
                    allowed &= cols[None, :] > rows[:, None] - window
                if not allowed.any():
                    continue
                s = s.masked_fill(~allowed, float("-inf"))
                m_new = torch.maximum(m_i, s.amax(dim=-1))
                m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with no key yet
                p = torch.exp(s - m_safe.unsqueeze(-1))
                alpha = torch.exp(m_i - m_safe)
                l_i = alpha * l_i + p.sum(dim=-1)
                acc = acc * alpha.unsqueeze(-1) + p @ v[:, :, ks:ks + block_k]
                m_i = m_new
            out[:, :, qs:qs + block_q] = acc / l_i.unsqueeze(-1)
            lse_out[:, :, qs:qs + block_q] = m_i + torch.log(l_i)
        return out, lse_out

    def merge(o1, lse1, o2, lse2):
        """Ring attention's merge of two partial attentions over disjoint keys."""
        lse = torch.logaddexp(lse1, lse2)
        return o1 * torch.exp(lse1 - lse).unsqueeze(-1) + o2 * torch.exp(lse2 - lse).unsqueeze(-1), lse

    rows, cols = torch.arange(S)[:, None], torch.arange(S)[None, :]
    mask = cols <= rows
    if window is not None:
        mask = mask & (cols > rows - window)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    flash, lse = flash_forward(q, k, v, window=window)
    dout = torch.randn(B, H, S, Dh, generator=g, dtype=torch.float64)
    grads_flash = torch.autograd.grad(flash, (q, k, v), dout)
    grads_reference = torch.autograd.grad(reference, (q, k, v), dout)
    # the two halves of the keys attended separately (bidirectional: no row is empty) and merged
    half = S // 2
    o1 = F.scaled_dot_product_attention(q, k[:, :, :half], v[:, :, :half])
    o2 = F.scaled_dot_product_attention(q, k[:, :, half:], v[:, :, half:])
    lse1 = torch.logsumexp(q @ k[:, :, :half].transpose(-2, -1) * scale, dim=-1)
    lse2 = torch.logsumexp(q @ k[:, :, half:].transpose(-2, -1) * scale, dim=-1)
    merged, merged_lse = merge(o1, lse1, o2, lse2)
    full = F.scaled_dot_product_attention(q, k, v)
    grad_merged = torch.autograd.grad(merged.pow(2).sum(), q)[0]
    grad_full = torch.autograd.grad(full.pow(2).sum(), q)[0]
    return flash, reference, lse, grads_flash, grads_reference, merged, full, grad_merged, grad_full


@pytest.mark.parametrize("window", [None, 3])
def test_flash_attention_online_softmax_and_ring_merge(window):
    (flash, reference, lse, grads_flash, grads_reference, merged, full, grad_merged, grad_full), _ = run_both(
        flash_attention_program, window, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(flash, reference, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_flash, grads_reference):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(merged, full, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_merged, grad_full, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# The Differential Transformer's attention (microsoft/unilm's multihead_diffattn.py): two softmax maps per head
# subtracted with a learnt λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init, nan_to_num on the scores, a per-head
# RMSNorm without affine weights, rotary embeddings by the complex form; trained with AdamW
# ----------------------------------------------------------------------------------------------

DIFF_D, DIFF_H, DIFF_V = 16, 2, 11


def make_diff_transformer(m, depth=1):
    torch, nn, F = m.torch, m.nn, m.F

    def lambda_init_fn(depth):
        return 0.8 - 0.6 * math.exp(-0.3 * depth)

    def apply_rotary_emb(x, freqs_cis):
        x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(x_ * freqs_cis[None, :, None, :]).flatten(3).type_as(x)

    class MultiheadDiffAttn(nn.Module):
        def __init__(self, embed_dim, depth, num_heads):
            super().__init__()
            self.embed_dim = embed_dim
            self.num_heads = num_heads
            self.head_dim = embed_dim // num_heads // 2
            self.scaling = self.head_dim ** -0.5
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.v_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.out_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.lambda_init = lambda_init_fn(depth)
            self.lambda_q1 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.lambda_k1 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.lambda_q2 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.lambda_k2 = nn.Parameter(torch.zeros(self.head_dim, dtype=torch.float32).normal_(mean=0, std=0.1))
            self.subln = nn.RMSNorm(2 * self.head_dim, eps=1e-5, elementwise_affine=False)

        def forward(self, x, rel_pos, attn_mask=None):
            bsz, tgt_len, embed_dim = x.size()
            src_len = tgt_len
            q = self.q_proj(x).view(bsz, tgt_len, 2 * self.num_heads, self.head_dim)
            k = self.k_proj(x).view(bsz, src_len, 2 * self.num_heads, self.head_dim)
            v = self.v_proj(x).view(bsz, src_len, self.num_heads, 2 * self.head_dim)
            q = apply_rotary_emb(q, rel_pos)
            k = apply_rotary_emb(k, rel_pos)
            q = q.transpose(1, 2) * self.scaling
            k = k.transpose(1, 2)
            v = v.transpose(1, 2)
            attn_weights = torch.matmul(q, k.transpose(-1, -2))
            if attn_mask is None:
                attn_mask = torch.triu(torch.zeros([tgt_len, src_len]).float().fill_(float("-inf")).type_as(
                    attn_weights), 1 + src_len - tgt_len)
            attn_weights = torch.nan_to_num(attn_weights)
            attn_weights += attn_mask
            attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).type_as(attn_weights)
            lambda_1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float()).type_as(q)
            lambda_2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float()).type_as(q)
            lambda_full = lambda_1 - lambda_2 + self.lambda_init
            attn_weights = attn_weights.view(bsz, self.num_heads, 2, tgt_len, src_len)
            attn_weights = attn_weights[:, :, 0] - lambda_full * attn_weights[:, :, 1]
            attn = torch.matmul(attn_weights, v)
            attn = self.subln(attn)
            attn = attn * (1 - self.lambda_init)
            attn = attn.transpose(1, 2).reshape(bsz, tgt_len, self.num_heads * 2 * self.head_dim)
            return self.out_proj(attn)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(DIFF_V, DIFF_D)
            self.norm = nn.RMSNorm(DIFF_D)
            self.attn = MultiheadDiffAttn(DIFF_D, depth, DIFF_H)
            self.head = nn.Linear(DIFF_D, DIFF_V, bias=False)
            head_dim = DIFF_D // DIFF_H // 2
            freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
            angles = torch.outer(torch.arange(16).float(), freqs)
            self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles), persistent=False)

        def forward(self, ids):
            h = self.embed(ids)
            h = h + self.attn(self.norm(h), self.freqs_cis[:ids.shape[1]])
            return self.head(h)

    return Model()


def diff_transformer_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_diff_transformer(m), weights)
    ids = torch.tensor(np.random.default_rng(12).integers(0, DIFF_V, (3, 9)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    losses = []
    for step in range(steps):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    lambdas = [model.attn.lambda_q1.grad, model.attn.lambda_k2.grad]
    return losses, lambdas, [p.detach() for p in model.parameters()]


def test_differential_transformer_attention():
    weights = weights_of(make_diff_transformer)
    (losses, lambda_grads, params), _ = run_both(diff_transformer_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    assert all(np.abs(g).sum() > 0 for g in lambda_grads)  # λ is learnt through both maps


# ----------------------------------------------------------------------------------------------
# Mamba-2's state-space duality (ssd_minimal.py): the chunked SSD by segsum (cumsum, a -inf upper triangle,
# exp) and einsum chains, against the sequential recurrence h_t = exp(A dt_t) h_{t-1} + dt_t B_t x_t, forward
# and gradients
# ----------------------------------------------------------------------------------------------


def ssd_program(m, block_len=4):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(21)
    b, l, h, p, n = 2, 12, 3, 4, 5  # batch, length, heads, head dim, state size
    X = torch.randn(b, l, h, p, generator=g, dtype=torch.float64, requires_grad=True)
    dt = F.softplus(torch.randn(b, l, h, generator=g, dtype=torch.float64)).requires_grad_()
    A = (-torch.exp(torch.randn(h, generator=g, dtype=torch.float64))).requires_grad_()
    B = torch.randn(b, l, h, n, generator=g, dtype=torch.float64, requires_grad=True)
    C = torch.randn(b, l, h, n, generator=g, dtype=torch.float64, requires_grad=True)

    def segsum(x):
        """More stable segment sum calculation."""
        T = x.size(-1)
        x = x[..., None].repeat(*([1] * x.ndim), T)  # "... d -> ... d e"
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)
        x = x.masked_fill(~mask, 0)
        x_segsum = torch.cumsum(x, dim=-2)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=0)
        x_segsum = x_segsum.masked_fill(~mask, -torch.inf)
        return x_segsum

    def ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None):
        # rearrange into blocks/chunks: "b (c l) ... -> b c l ..."
        X, A, B, C = [x.reshape(x.shape[0], -1, block_len, *x.shape[2:]) for x in (X, A, B, C)]
        A = A.permute(0, 3, 1, 2)  # "b c l h -> b h c l"
        A_cumsum = torch.cumsum(A, dim=-1)
        # 1. the diagonal blocks (intra-chunk)
        L = torch.exp(segsum(A))
        Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, L, X)
        # 2. the state of each chunk
        decay_states = torch.exp((A_cumsum[:, :, :, -1:] - A_cumsum))
        states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)
        # 3. the inter-chunk recurrence
        if initial_states is None:
            initial_states = torch.zeros_like(states[:, :1])
        states = torch.cat([initial_states, states], dim=1)
        decay_chunk = torch.exp(segsum(F.pad(A_cumsum[:, :, :, -1], (1, 0))))
        new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
        states, final_state = new_states[:, :-1], new_states[:, -1]
        # 4. state -> output
        state_decay_out = torch.exp(A_cumsum)
        Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, state_decay_out)
        Y = Y_diag + Y_off
        return Y.reshape(Y.shape[0], -1, *Y.shape[3:]), final_state

    Y, final_state = ssd_minimal_discrete(X * dt.unsqueeze(-1), A * dt, B, C, block_len)
    # the recurrence, step by step
    state = torch.zeros(b, h, p, n, dtype=torch.float64)
    ys = []
    for t in range(l):
        decay = torch.exp(A * dt[:, t])  # (b, h)
        state = state * decay[..., None, None] + torch.einsum("bhp,bhn->bhpn", X[:, t] * dt[:, t, :, None], B[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    Y_scan = torch.stack(ys, dim=1)
    leaves = (X, dt, A, B, C)
    grads = torch.autograd.grad((Y * Y.detach().sin()).sum() + final_state.sum(), leaves)
    grads_scan = torch.autograd.grad((Y_scan * Y.detach().sin()).sum() + state.sum(), leaves)
    return Y, Y_scan, final_state, state, grads, grads_scan


@pytest.mark.parametrize("block_len", [4, 6])
def test_mamba2_ssd_chunked_against_the_recurrence(block_len):
    (Y, Y_scan, final_state, state, grads, grads_scan), _ = run_both(ssd_program, block_len, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(Y, Y_scan, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(final_state, state, rtol=1e-9, atol=1e-11)
    for a, b in zip(grads, grads_scan):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
