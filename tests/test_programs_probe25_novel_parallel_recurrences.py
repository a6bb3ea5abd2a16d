# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Recent and unusual architectures (see tests/pytorch_programs.py) as their reference implementations write them,
each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Recurrences with parallel forms: minGRU's parallel scan in log space against the sequential recurrence; RetNet's
retention (parallel, recurrent and chunkwise, with xPos rotations); xLSTM's sLSTM and mLSTM with stabiliser states;
an xLSTM-style block trained as its repository trains (a causal depthwise convolution, a multi-head layer norm by
``group_norm``, AdamW with decay split by parameter kind, warmup-cosine LambdaLR, clipping, gradient accumulation)
with a Perceiver-IO decoder."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# minGRU / minLSTM: the parallel scan in log space (Heinsen's) against the sequential recurrence
# ----------------------------------------------------------------------------------------------


def min_gru(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def exists(v):
        return v is not None

    def heinsen_associative_scan_log(log_coeffs, log_values):
        a_star = log_coeffs.cumsum(dim=1)
        log_h0_plus_b_star = (log_values - a_star).logcumsumexp(dim=1)
        log_h = a_star + log_h0_plus_b_star
        return log_h.exp()

    def g(x):
        return torch.where(x >= 0, x + 0.5, x.sigmoid())

    def log_g(x):
        return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))

    class minGRU(nn.Module):
        def __init__(self, dim, expansion_factor=1.0):
            super().__init__()
            dim_inner = int(dim * expansion_factor)
            self.to_hidden_and_gate = nn.Linear(dim, dim_inner * 2, bias=False)
            self.to_out = nn.Linear(dim_inner, dim, bias=False) if expansion_factor != 1.0 else nn.Identity()

        def forward(self, x, prev_hidden=None, return_next_prev_hidden=False):
            seq_len = x.shape[1]
            hidden, gate = self.to_hidden_and_gate(x).chunk(2, dim=-1)
            if seq_len == 1:
                hidden = g(hidden)
                gate = gate.sigmoid()
                out = torch.lerp(prev_hidden, hidden, gate) if exists(prev_hidden) else (hidden * gate)
            else:
                log_coeffs = -F.softplus(gate)
                log_z = -F.softplus(-gate)
                log_tilde_h = log_g(hidden)
                log_values = log_z + log_tilde_h
                if exists(prev_hidden):
                    log_values = torch.cat((prev_hidden.log(), log_values), dim=1)
                    log_coeffs = F.pad(log_coeffs, (0, 0, 1, 0))
                out = heinsen_associative_scan_log(log_coeffs, log_values)
                out = out[:, -seq_len:]
            next_prev_hidden = out[:, -1:]
            out = self.to_out(out)
            if not return_next_prev_hidden:
                return out
            return out, next_prev_hidden

    class minLSTM(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.to_hidden_and_f_i_gate = nn.Linear(dim, dim * 3, bias=False)

        def forward(self, x):
            hidden, f_gate, i_gate = self.to_hidden_and_f_i_gate(x).chunk(3, dim=-1)
            diff = F.softplus(-f_gate) - F.softplus(-i_gate)
            log_f = -F.softplus(diff)
            log_i = -F.softplus(-diff)
            log_tilde_h = log_g(hidden)
            return heinsen_associative_scan_log(log_f, log_i + log_tilde_h)

    net = minGRU(6, expansion_factor=1.5)
    x = torch.randn(2, 7, 6, requires_grad=True)
    h0 = torch.rand(2, 1, 9) + 0.1
    out, last = net(x, prev_hidden=h0, return_next_prev_hidden=True)
    # sequential decoding one step at a time gives the same hidden states
    h = h0
    seq = []
    for t in range(7):
        o, h = net(x[:, t:t + 1], prev_hidden=h, return_next_prev_hidden=True)
        seq.append(o)
    seq = torch.cat(seq, dim=1)
    lstm = minLSTM(6)
    y = lstm(x)
    loss = out.sum() + y.pow(2).mean()
    loss.backward()
    return {"out": out, "seq": seq, "last": last, "y": y, "gx": x.grad,
            "gw": net.to_hidden_and_gate.weight.grad, "gl": lstm.to_hidden_and_f_i_gate.weight.grad}


def test_min_gru_parallel_scan_in_log_space():
    ours, _ = run_both(min_gru, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["out"], ours["seq"], rtol=1e-4, atol=1e-5)
    assert np.all(ours["y"] > 0)


# ----------------------------------------------------------------------------------------------
# RetNet: multi-scale retention in its parallel, recurrent and chunkwise forms, with xPos rotations
# ----------------------------------------------------------------------------------------------


def retnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def rotate_every_two(x):
        x1 = x[:, :, :, ::2]
        x2 = x[:, :, :, 1::2]
        x = torch.stack((-x2, x1), dim=-1)
        return x.flatten(-2)

    def theta_shift(x, sin, cos):
        return (x * cos) + (rotate_every_two(x) * sin)

    class RetNetRelPos(nn.Module):
        def __init__(self, embed_dim, num_heads):
            super().__init__()
            angle = 1.0 / (10000 ** torch.linspace(0, 1, embed_dim // num_heads // 2))
            angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
            decay = torch.log(1 - 2 ** (-5 - torch.arange(num_heads, dtype=torch.float)))
            self.register_buffer("angle", angle)
            self.register_buffer("decay", decay)

        def forward(self, slen, chunk_size=None):
            index = torch.arange(slen).to(self.decay)
            sin = torch.sin(index[:, None] * self.angle[None, :])
            cos = torch.cos(index[:, None] * self.angle[None, :])
            mask = torch.tril(torch.ones(slen, slen).to(self.decay))
            mask = torch.masked_fill(index[:, None] - index[None, :], ~mask.bool(), float("inf"))
            mask = torch.exp(mask * self.decay[:, None, None])
            mask = torch.nan_to_num(mask)
            mask = mask / mask.sum(dim=-1, keepdim=True).sqrt()
            return (sin, cos), mask

    class MultiScaleRetention(nn.Module):
        def __init__(self, embed_dim, value_dim, num_heads):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = value_dim // num_heads
            self.key_dim = embed_dim // num_heads
            self.scaling = self.key_dim ** -0.5
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.v_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.g_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.out_proj = nn.Linear(value_dim, embed_dim, bias=False)
            self.group_norm = nn.LayerNorm(self.head_dim, eps=1e-6, elementwise_affine=False)
            nn.init.xavier_uniform_(self.q_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.k_proj.weight, gain=2 ** -2.5)

        def parallel_forward(self, qr, kr, v, mask):
            bsz, tgt_len, embed_dim = v.size()
            vr = v.view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)
            qk_mat = qr @ kr.transpose(-1, -2)
            qk_mat = qk_mat * mask
            qk_mat = qk_mat / qk_mat.detach().abs().sum(dim=-1, keepdim=True).clamp(min=1, max=5e4)
            output = torch.matmul(qk_mat, vr)
            return output.transpose(1, 2)

        def recurrent_forward(self, qr, kr, v, decay, incremental_state):
            bsz = v.size(0)
            v = v.view(bsz, self.num_heads, self.head_dim, 1)
            kv = kr * v
            if "prev_key_value" in incremental_state:
                prev_kv = incremental_state["prev_key_value"]
                prev_scale = incremental_state["scale"]
                scale = prev_scale * decay + 1
                kv = prev_kv * (prev_scale.sqrt() * decay / scale.sqrt()).view(self.num_heads, 1, 1) + kv / scale.sqrt().view(self.num_heads, 1, 1)
            else:
                scale = torch.ones_like(decay)
            incremental_state["prev_key_value"] = kv
            incremental_state["scale"] = scale
            output = torch.sum(qr * kv, dim=3)
            return output

        def forward(self, x, rel_pos, incremental_state=None):
            bsz, tgt_len, _ = x.size()
            (sin, cos), inner_mask = rel_pos
            q = self.q_proj(x)
            k = self.k_proj(x)
            v = self.v_proj(x)
            g = self.g_proj(x)
            k *= self.scaling
            q = q.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            k = k.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            qr = theta_shift(q, sin, cos)
            kr = theta_shift(k, sin, cos)
            if incremental_state is not None:
                output = self.recurrent_forward(qr, kr, v, inner_mask, incremental_state)
            else:
                output = self.parallel_forward(qr, kr, v, inner_mask)
            output = self.group_norm(output).reshape(bsz, tgt_len, self.head_dim * self.num_heads)
            output = F.silu(g) * output
            return self.out_proj(output)

    E, H, T = 16, 2, 6
    relpos = RetNetRelPos(E, H)
    msr = MultiScaleRetention(E, 2 * E, H)
    x = torch.randn(2, T, E, requires_grad=True)
    out = msr(x, relpos(T))
    loss = out.pow(2).mean()
    loss.backward()
    # the unnormalised retention of the paper: parallel D-masked form equals the recurrent S_n = gamma S_{n-1} + k^T v
    gamma = 1 - 2 ** (-5 - torch.arange(H, dtype=torch.float))
    q, k, v = torch.randn(3, 1, H, T, 4).unbind(0)
    n = torch.arange(T)
    D = (gamma.view(H, 1, 1) ** (n[:, None] - n[None, :]).clamp(min=0)) * (n[:, None] >= n[None, :])
    par = (q @ k.transpose(-1, -2) * D) @ v
    S = torch.zeros(1, H, 4, 4)
    rec = []
    for t in range(T):
        S = gamma.view(1, H, 1, 1) * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        rec.append(torch.einsum("bhd,bhde->bhe", q[:, :, t], S))
    rec = torch.stack(rec, 2)
    # chunkwise: inner-chunk parallel plus the cross-chunk state
    B = 3
    chunk = []
    R = torch.zeros(1, H, 4, 4)
    Dc = D[:, :B, :B]
    for c in range(T // B):
        qc, kc, vc = (z[:, :, c * B:(c + 1) * B] for z in (q, k, v))
        inner = (qc @ kc.transpose(-1, -2) * Dc) @ vc
        xi = gamma.view(1, H, 1, 1) ** (torch.arange(B).view(1, 1, B, 1) + 1)
        cross = (qc @ R) * xi
        chunk.append(inner + cross)
        decay_k = gamma.view(1, H, 1, 1) ** (B - 1 - torch.arange(B).view(1, 1, B, 1))
        R = (kc * decay_k).transpose(-1, -2) @ vc + (gamma.view(1, H, 1, 1) ** B) * R
    chunk = torch.cat(chunk, 2)
    return {"out": out, "gx": x.grad, "gq": msr.q_proj.weight.grad, "par": par, "rec": rec, "chunk": chunk,
            "mask": relpos(T)[1]}


def test_retnet_retention_three_forms():
    ours, _ = run_both(retnet, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["par"], ours["rec"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["par"], ours["chunk"], rtol=1e-4, atol=1e-5)
    assert np.all(np.triu(ours["mask"][0], 1) == 0)


# ----------------------------------------------------------------------------------------------
# xLSTM: sLSTM's exponential gating with a stabiliser state, mLSTM's matrix memory in its parallel form
# ----------------------------------------------------------------------------------------------


def xlstm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class sLSTMCell(nn.Module):
        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.W = nn.Linear(input_size, 4 * hidden_size)
            self.R = nn.Linear(hidden_size, 4 * hidden_size, bias=False)

        def forward(self, x, state):
            h, c, n, m_ = state
            i_tilde, f_tilde, z_tilde, o_tilde = (self.W(x) + self.R(h)).chunk(4, dim=-1)
            log_f = F.logsigmoid(f_tilde)
            m_new = torch.max(log_f + m_, i_tilde)
            i = torch.exp(i_tilde - m_new)
            f = torch.exp(log_f + m_ - m_new)
            z = torch.tanh(z_tilde)
            o = torch.sigmoid(o_tilde)
            c = f * c + i * z
            n = f * n + i
            h = o * (c / n)
            return h, (h, c, n, m_new)

    def mlstm_parallel(q, k, v, igate_preact, fgate_preact, eps=1e-6):
        B, NH, S, DH = q.shape
        log_fgates = F.logsigmoid(fgate_preact)
        ltr = torch.tril(torch.ones((S, S), dtype=torch.bool))
        log_fgates_cumsum = torch.cat([torch.zeros((B, NH, 1, 1)), torch.cumsum(log_fgates, dim=-2)], dim=-2)
        rep_log_fgates_cumsum = log_fgates_cumsum.repeat(1, 1, 1, S + 1)
        _log_fg_matrix = rep_log_fgates_cumsum - rep_log_fgates_cumsum.transpose(-2, -1)
        log_fg_matrix = torch.where(ltr, _log_fg_matrix[:, :, 1:, 1:], -float("inf"))
        log_D_matrix = log_fg_matrix + igate_preact.transpose(-2, -1)
        max_log_D, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)
        log_D_matrix_stabilized = log_D_matrix - max_log_D
        D_matrix = torch.exp(log_D_matrix_stabilized)
        keys_scaled = k / math.sqrt(DH)
        qk_matrix = q @ keys_scaled.transpose(-2, -1)
        C_matrix = qk_matrix * D_matrix
        normalizer = torch.maximum(C_matrix.sum(dim=-1, keepdim=True).abs(), torch.exp(-max_log_D))
        C_matrix_normalized = C_matrix / (normalizer + eps)
        return C_matrix_normalized @ v

    def mlstm_recurrent(q, k, v, igate_preact, fgate_preact, eps=1e-6):
        B, NH, S, DH = q.shape
        C = torch.zeros(B, NH, DH, DH)
        n = torch.zeros(B, NH, DH, 1)
        m_ = torch.zeros(B, NH, 1, 1)
        hs = []
        for t in range(S):
            qt, kt, vt = q[:, :, t, :, None], k[:, :, t, :, None] / math.sqrt(DH), v[:, :, t, :, None]
            it, ft = igate_preact[:, :, t, :, None], fgate_preact[:, :, t, :, None]
            log_f = F.logsigmoid(ft)
            m_new = torch.max(log_f + m_, it) if t > 0 else it
            f_act = torch.exp(log_f + m_ - m_new)
            i_act = torch.exp(it - m_new)
            C = f_act * C + i_act * (vt @ kt.transpose(-1, -2))
            n = f_act * n + i_act * kt
            h_num = C @ qt
            h_den = torch.maximum((n.transpose(-1, -2) @ qt).abs(), torch.exp(-m_new))
            hs.append((h_num / (h_den + eps)).squeeze(-1))
            m_ = m_new
        return torch.stack(hs, dim=2)

    cell = sLSTMCell(3, 5)
    xs = torch.randn(4, 2, 3)
    state = (torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5), torch.full((2, 5), -float("inf")))
    state = tuple(s.clone() for s in state[:3]) + (torch.zeros(2, 5),)
    hs = []
    for t in range(4):
        h, state = cell(xs[t], state)
        hs.append(h)
    hs = torch.stack(hs)
    q, k, v = torch.randn(3, 1, 2, 5, 4, requires_grad=True).unbind(0)
    ig = torch.randn(1, 2, 5, 1, requires_grad=True)
    fg = (torch.randn(1, 2, 5, 1) + 3).requires_grad_()
    par = mlstm_parallel(q, k, v, ig, fg)
    rec = mlstm_recurrent(q, k, v, ig, fg)
    loss = hs.pow(2).sum() + par.sum()
    loss.backward()
    return {"hs": hs, "par": par, "rec": rec, "gW": cell.W.weight.grad, "gR": cell.R.weight.grad,
            "gig": ig.grad, "gfg": fg.grad}


def test_xlstm_slstm_and_mlstm():
    ours, _ = run_both(xlstm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["par"], ours["rec"], rtol=1e-3, atol=1e-5)
    assert np.all(np.abs(ours["hs"]) < 1)


# ----------------------------------------------------------------------------------------------
# An xLSTM-style block trained as its repository trains: a causal depthwise convolution, a multi-head layer norm
# by group_norm, small/Wang inits, AdamW with decay split by parameter kind, warmup-cosine LambdaLR, clipping,
# gradient accumulation; a Perceiver-IO decoder through nn.MultiheadAttention with kdim/vdim
# ----------------------------------------------------------------------------------------------


def xlstm_block_training(m, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def small_init_init_(param, dim):
        std = math.sqrt(2 / (5 * dim))
        torch.nn.init.normal_(param, mean=0.0, std=std)
        return param

    def wang_init_(param, dim, num_blocks):
        std = 2 / num_blocks / math.sqrt(dim)
        torch.nn.init.normal_(param, mean=0.0, std=std)
        return param

    class CausalConv1d(nn.Module):
        def __init__(self, feature_dim, kernel_size=4):
            super().__init__()
            self.pad = kernel_size - 1
            self.conv = nn.Conv1d(feature_dim, feature_dim, kernel_size, padding=self.pad, groups=feature_dim)

        def forward(self, x):
            y = self.conv(x.transpose(1, 2))
            return y[:, :, :-self.pad].transpose(1, 2)

    class MultiHeadLayerNorm(nn.Module):
        def __init__(self, ndim, num_heads):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(ndim))
            self.num_heads = num_heads

        def forward(self, x):  # (B, NH, S, DH)
            B, NH, S, DH = x.shape
            gn_in = x.transpose(1, 2).reshape(B * S, NH * DH)
            out = F.group_norm(gn_in, num_groups=NH, weight=1.0 + self.weight, eps=1e-5)
            return out.view(B, S, NH * DH)

    class Block(nn.Module):
        def __init__(self, dim=8, heads=2, vocab=11):
            super().__init__()
            self.heads = heads
            self.emb = nn.Embedding(vocab, dim)
            self.norm = nn.LayerNorm(dim, bias=False)
            self.proj_up = nn.Linear(dim, 2 * dim)
            self.conv = CausalConv1d(dim)
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.igate = nn.Linear(3 * dim, heads)
            self.fgate = nn.Linear(3 * dim, heads)
            self.outnorm = MultiHeadLayerNorm(dim, heads)
            self.proj_down = nn.Linear(dim, dim)
            self.head = nn.Linear(dim, vocab, bias=False)
            small_init_init_(self.proj_up.weight, dim)
            wang_init_(self.proj_down.weight, dim, 1)
            torch.nn.init.zeros_(self.igate.weight)
            torch.nn.init.normal_(self.igate.bias, mean=0.0, std=0.1)
            with torch.no_grad():
                self.fgate.bias.copy_(torch.linspace(3.0, 6.0, heads))

        def forward(self, idx):
            x = self.emb(idx)
            B, S, D = x.shape
            h = self.norm(x)
            x_m, z = self.proj_up(h).split(D, dim=-1)
            c = F.silu(self.conv(x_m))
            q, k, v = self.qkv(c).chunk(3, dim=-1)
            gates_in = torch.cat([q, k, v], dim=-1)
            ig = self.igate(gates_in).transpose(-1, -2).unsqueeze(-1)
            fg = self.fgate(gates_in).transpose(-1, -2).unsqueeze(-1)
            q, k, v = (t.view(B, S, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            log_f = F.logsigmoid(fg)
            cum = torch.cat([torch.zeros(B, self.heads, 1, 1), torch.cumsum(log_f, dim=-2)], dim=-2)
            log_fg = cum[:, :, 1:] - cum[:, :, 1:].transpose(-2, -1)
            log_fg = log_fg.masked_fill(~torch.tril(torch.ones(S, S, dtype=torch.bool)), float("-inf"))
            log_D = log_fg + ig.transpose(-2, -1)
            max_log_D = log_D.amax(dim=-1, keepdim=True)
            Dm = torch.exp(log_D - max_log_D)
            C = (q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])) * Dm
            norm = torch.maximum(C.sum(-1, keepdim=True).abs(), torch.exp(-max_log_D))
            hs = (C / (norm + 1e-6)) @ v
            out = self.outnorm(hs) * F.silu(z)
            x = x + self.proj_down(out)
            return self.head(x)

    model = Block()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or "emb" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    warmup, total = 2, 6

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    data = torch.randint(0, 11, (4, 7))
    losses, norms, lrs = [], [], []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        for micro in data.split(2):
            logits = model(micro[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), micro[:, 1:].reshape(-1)) / 2
            loss.backward()
            losses.append(loss.item())
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5).item())
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())

    # a Perceiver-IO decoder: output queries attend to latents of another width
    torch.manual_seed(1)
    dec = nn.MultiheadAttention(6, 2, kdim=8, vdim=5, batch_first=True)
    queries = torch.randn(2, 3, 6, requires_grad=True)
    latents = torch.randn(2, 4, 8)
    values = torch.randn(2, 4, 5)
    pad = torch.tensor([[False, False, False, True], [False, True, False, False]])
    out, w = dec(queries, latents, values, key_padding_mask=pad, average_attn_weights=False)
    out.pow(2).sum().backward()
    return {"losses": losses, "norms": norms, "lrs": lrs, "up": model.proj_up.weight, "fgate_b": model.fgate.bias,
            "out": out, "w": w, "gq": queries.grad, "g_k": dec.k_proj_weight.grad, "g_v": dec.v_proj_weight.grad}


def test_xlstm_block_training_and_perceiver_io_decoder():
    ours, _ = run_both(xlstm_block_training, rtol=1e-4, atol=1e-6)
    assert len(ours["losses"]) == 6 and all(n > 0 for n in ours["norms"])
    np.testing.assert_allclose([lr[0] for lr in ours["lrs"]], [3e-3, 3e-3, 3e-3 * 0.5 * (1 + math.cos(math.pi / 4))])
    assert np.all(ours["w"][0, :, :, 3] == 0) and np.all(ours["w"][1, :, :, 1] == 0)
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)
