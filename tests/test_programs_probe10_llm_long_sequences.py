# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Language-model code as it is written today, run as tests/probe10_llm_common.py says. Longformer's sliding-chunk
attention (as_strided chunks, new_empty filled by slice assignment, masked_fill_ on views) against dense banded
attention; Mamba's selective scan (mamba-minimal)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Longformer's sliding-window attention (Hugging Face's LongformerSelfAttention, local part): overlapping
# chunks by as_strided on a view, einsum per chunk, diagonals turned into columns by pad + view tricks, a
# new_empty score tensor filled by slice assignment, invalid corners masked by masked_fill_ on views of a
# transposed view, values chunked by as_strided of a padded copy; checked against dense banded attention
# ----------------------------------------------------------------------------------------------


def longformer_attention(m):
    torch, nn = m.torch, m.nn

    def _pad_and_transpose_last_two_dims(hidden_states_padded, padding):
        hidden_states_padded = nn.functional.pad(hidden_states_padded, padding)
        hidden_states_padded = hidden_states_padded.view(
            *hidden_states_padded.size()[:-2], hidden_states_padded.size(-1), hidden_states_padded.size(-2))
        return hidden_states_padded

    def _pad_and_diagonalize(chunked_hidden_states):
        total_num_heads, num_chunks, window_overlap, hidden_dim = chunked_hidden_states.size()
        chunked_hidden_states = nn.functional.pad(chunked_hidden_states, (0, window_overlap + 1))
        chunked_hidden_states = chunked_hidden_states.view(total_num_heads, num_chunks, -1)
        chunked_hidden_states = chunked_hidden_states[:, :, :-window_overlap]
        chunked_hidden_states = chunked_hidden_states.view(total_num_heads, num_chunks, window_overlap,
                                                           window_overlap + hidden_dim)
        return chunked_hidden_states[:, :, :, :-1]

    def _chunk(hidden_states, window_overlap):
        hidden_states = hidden_states.view(hidden_states.size(0), hidden_states.size(1) // (window_overlap * 2),
                                           window_overlap * 2, hidden_states.size(2))
        chunk_size = list(hidden_states.size())
        chunk_size[1] = chunk_size[1] * 2 - 1
        chunk_stride = list(hidden_states.stride())
        chunk_stride[1] = chunk_stride[1] // 2
        return hidden_states.as_strided(size=chunk_size, stride=chunk_stride)

    def _mask_invalid_locations(input_tensor, affected_seq_len):
        beginning_mask_2d = input_tensor.new_ones(affected_seq_len, affected_seq_len + 1).tril().flip(dims=[0])
        beginning_mask = beginning_mask_2d[None, :, None, :]
        ending_mask = beginning_mask.flip(dims=(1, 3))
        beginning_input = input_tensor[:, :affected_seq_len, :, : affected_seq_len + 1]
        beginning_mask = beginning_mask.expand(beginning_input.size())
        beginning_input.masked_fill_(beginning_mask == 1, -float("inf"))
        ending_input = input_tensor[:, -affected_seq_len:, :, -(affected_seq_len + 1):]
        ending_mask = ending_mask.expand(ending_input.size())
        ending_input.masked_fill_(ending_mask == 1, -float("inf"))

    def _sliding_chunks_query_key_matmul(query, key, window_overlap):
        batch_size, seq_len, num_heads, head_dim = query.size()
        chunks_count = seq_len // window_overlap - 1
        query = query.transpose(1, 2).reshape(batch_size * num_heads, seq_len, head_dim)
        key = key.transpose(1, 2).reshape(batch_size * num_heads, seq_len, head_dim)
        query = _chunk(query, window_overlap)
        key = _chunk(key, window_overlap)
        diagonal_chunked_attention_scores = torch.einsum("bcxd,bcyd->bcxy", (query, key))
        diagonal_chunked_attention_scores = _pad_and_transpose_last_two_dims(diagonal_chunked_attention_scores,
                                                                             padding=(0, 0, 0, 1))
        diagonal_attention_scores = diagonal_chunked_attention_scores.new_empty(
            (batch_size * num_heads, chunks_count + 1, window_overlap, window_overlap * 2 + 1))
        diagonal_attention_scores[:, :-1, :, window_overlap:] = diagonal_chunked_attention_scores[
            :, :, :window_overlap, : window_overlap + 1]
        diagonal_attention_scores[:, -1, :, window_overlap:] = diagonal_chunked_attention_scores[
            :, -1, window_overlap:, : window_overlap + 1]
        diagonal_attention_scores[:, 1:, :, :window_overlap] = diagonal_chunked_attention_scores[
            :, :, -(window_overlap + 1): -1, window_overlap + 1:]
        diagonal_attention_scores[:, 0, 1:window_overlap, 1:window_overlap] = diagonal_chunked_attention_scores[
            :, 0, : window_overlap - 1, 1 - window_overlap:]
        diagonal_attention_scores = diagonal_attention_scores.view(
            batch_size, num_heads, seq_len, 2 * window_overlap + 1).transpose(2, 1)
        _mask_invalid_locations(diagonal_attention_scores, window_overlap)
        return diagonal_attention_scores

    def _sliding_chunks_matmul_attn_probs_value(attn_probs, value, window_overlap):
        batch_size, seq_len, num_heads, head_dim = value.size()
        chunks_count = seq_len // window_overlap - 1
        chunked_attn_probs = attn_probs.transpose(1, 2).reshape(
            batch_size * num_heads, seq_len // window_overlap, window_overlap, 2 * window_overlap + 1)
        value = value.transpose(1, 2).reshape(batch_size * num_heads, seq_len, head_dim)
        padded_value = nn.functional.pad(value, (0, 0, window_overlap, window_overlap), value=-1)
        chunked_value_size = (batch_size * num_heads, chunks_count + 1, 3 * window_overlap, head_dim)
        chunked_value_stride = padded_value.stride()
        chunked_value_stride = (chunked_value_stride[0], window_overlap * chunked_value_stride[1],
                                chunked_value_stride[1], chunked_value_stride[2])
        chunked_value = padded_value.as_strided(size=chunked_value_size, stride=chunked_value_stride)
        chunked_attn_probs = _pad_and_diagonalize(chunked_attn_probs)
        context = torch.einsum("bcwd,bcdh->bcwh", (chunked_attn_probs, chunked_value))
        return context.view(batch_size, num_heads, seq_len, head_dim).transpose(1, 2)

    def local_attention(query_vectors, key_vectors, value_vectors, window_overlap):
        attn_scores = _sliding_chunks_query_key_matmul(query_vectors, key_vectors, window_overlap)
        attn_probs = nn.functional.softmax(attn_scores, dim=-1, dtype=torch.float32)
        return _sliding_chunks_matmul_attn_probs_value(attn_probs, value_vectors, window_overlap), attn_scores

    return local_attention


def longformer_program(m, w=2):
    torch = m.torch
    local_attention = longformer_attention(m)
    rng = np.random.default_rng(16)
    q, k, v = (torch.tensor(rng.standard_normal((2, 8, 2, 3)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    out, scores = local_attention(q, k, v, w)
    (out * torch.arange(3.0)).sum().backward()
    # the same attention, dense: each position sees w neighbours on each side
    qd, kd, vd = (x.detach().clone().requires_grad_() for x in (q, k, v))
    i = torch.arange(8)
    band = (i[:, None] - i[None, :]).abs() <= w
    dense_scores = torch.einsum("blhd,bshd->bhls", qd, kd).masked_fill(~band, float("-inf"))
    dense = torch.einsum("bhls,bshd->blhd", dense_scores.softmax(-1), vd)
    (dense * torch.arange(3.0)).sum().backward()
    return out, scores, [q.grad, k.grad, v.grad], dense, [qd.grad, kd.grad, vd.grad]


def test_longformer_sliding_chunks():
    ours, _ = run_both(longformer_program, rtol=1e-5, atol=1e-6)
    out, scores, grads, dense, dense_grads = ours
    assert scores.shape == (2, 8, 2, 5) and np.isneginf(scores[:, 0, :, :2]).all()
    np.testing.assert_allclose(out, dense, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, dense_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Mamba as mamba-minimal writes it (einops spelt with permute / einsum): in_proj split into x and the
# gate, a depthwise causal Conv1d (groups=d_inner, padding=d_conv - 1, cut back to the length), the
# selective scan's discretisation (exp of delta * A with A = -exp(A_log), softplus delta) run step by step
# and stacked, a D skip, SiLU gating, RMSNorm residual blocks with a tied head
# ----------------------------------------------------------------------------------------------

MB_V, MB_D, MB_N, MB_CONV = 10, 6, 4, 3


def make_mamba(m):
    torch, nn, F = m.torch, m.nn, m.F
    d_inner, dt_rank = 2 * MB_D, math.ceil(MB_D / 16)

    class MambaBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_proj = nn.Linear(MB_D, d_inner * 2, bias=False)
            self.conv1d = nn.Conv1d(in_channels=d_inner, out_channels=d_inner, bias=True, kernel_size=MB_CONV,
                                    groups=d_inner, padding=MB_CONV - 1)
            self.x_proj = nn.Linear(d_inner, dt_rank + MB_N * 2, bias=False)
            self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
            A = torch.arange(1, MB_N + 1).float().repeat(d_inner, 1)
            self.A_log = nn.Parameter(torch.log(A))
            self.D = nn.Parameter(torch.ones(d_inner))
            self.out_proj = nn.Linear(d_inner, MB_D, bias=False)

        def forward(self, x):
            (b, l, d) = x.shape
            x_and_res = self.in_proj(x)
            (x, res) = x_and_res.split(split_size=[d_inner, d_inner], dim=-1)
            x = x.permute(0, 2, 1)  # rearrange(x, 'b l d_in -> b d_in l')
            x = self.conv1d(x)[:, :, :l]
            x = x.permute(0, 2, 1)
            x = F.silu(x)
            y = self.ssm(x)
            y = y * F.silu(res)
            return self.out_proj(y)

        def ssm(self, x):
            (d_in, n) = self.A_log.shape
            A = -torch.exp(self.A_log.float())
            D = self.D.float()
            x_dbl = self.x_proj(x)
            (delta, B, C) = x_dbl.split(split_size=[dt_rank, n, n], dim=-1)
            delta = F.softplus(self.dt_proj(delta))
            return self.selective_scan(x, delta, A, B, C, D)

        def selective_scan(self, u, delta, A, B, C, D):
            (b, l, d_in) = u.shape
            n = A.shape[1]
            deltaA = torch.exp(torch.einsum("bld,dn->bldn", delta, A))
            deltaB_u = torch.einsum("bld,bln,bld->bldn", delta, B, u)
            x = torch.zeros((b, d_in, n), device=deltaA.device)
            ys = []
            for i in range(l):
                x = deltaA[:, i] * x + deltaB_u[:, i]
                y = torch.einsum("bdn,bn->bd", x, C[:, i, :])
                ys.append(y)
            y = torch.stack(ys, dim=1)
            return y + u * D

    class RMSNorm(nn.Module):
        def __init__(self, d_model, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(d_model))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    class ResidualBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = MambaBlock()
            self.norm = RMSNorm(MB_D)

        def forward(self, x):
            return self.mixer(self.norm(x)) + x

    class Mamba(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(MB_V, MB_D)
            self.layers = nn.ModuleList([ResidualBlock() for _ in range(2)])
            self.norm_f = RMSNorm(MB_D)
            self.lm_head = nn.Linear(MB_D, MB_V, bias=False)
            self.lm_head.weight = self.embedding.weight

        def forward(self, input_ids):
            x = self.embedding(input_ids)
            for layer in self.layers:
                x = layer(x)
            return self.lm_head(self.norm_f(x))

    return Mamba()


def mamba_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_mamba(m), weights)
    tokens = torch.tensor(np.random.default_rng(17).integers(0, MB_V, (2, 9)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, MB_V), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens)
        prefix = model(tokens[:, :5])
    return losses, model.layers[0].mixer.A_log.grad, full, prefix


def test_mamba_selective_scan():
    weights = weights_of(make_mamba)
    ours, _ = run_both(mamba_program, weights, rtol=1e-4, atol=1e-5)
    losses, a_log_grad, full, prefix = ours
    assert losses[-1] < losses[0] and np.abs(a_log_grad).sum() > 0
    np.testing.assert_allclose(prefix, full[:, :5], rtol=1e-5, atol=1e-6)  # causal: the future changes nothing
