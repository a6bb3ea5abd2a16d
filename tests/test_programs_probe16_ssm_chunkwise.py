# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Sequence models beyond attention (see tests/pytorch_programs.py), as PyTorch users write them in pure PyTorch,
each run on chainrule and on PyTorch and compared (values and gradients, float32 and float64), and every scan,
parallel or chunkwise form checked against its loop form. Parallel, recurrent and chunkwise forms: RetNet retention,
and a RetNet trained in the parallel form; xLSTM's mLSTM (and the in-place squeeze_ that makes both libraries refuse
backward) and the sLSTM cell with its stabiliser; causal and gated linear attention quadratic, cumsum and chunkwise."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RetNet retention (torchscale's retnet): multi-scale decays log(1 - 2^(-5 - h)), xPos-style rotation by
# rotate_every_two (strided ::2 slices, stack, flatten), the decay mask built by masked_fill with inf,
# exp, nan_to_num and a row normalisation by its square-rooted sum; the parallel, recurrent and chunkwise
# forms of retention against each other (values and gradients, float64), and a small RetNet trained a few
# steps in the parallel form (retention scores divided by their detached absolute row sums, per-head RMS
# group norm, swish gate)
# ----------------------------------------------------------------------------------------------

RN_V, RN_D, RN_H = 12, 8, 2


def rotate_every_two(m, x):
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    x = m.torch.stack((-x2, x1), dim=-1)
    return x.flatten(-2)  # in einsum notation: rearrange(x, '... d j -> ... (d j)')


def theta_shift(m, x, sin, cos):
    return (x * cos) + (rotate_every_two(m, x) * sin)


def retnet_rel_pos(m, slen, embed_dim, num_heads, dtype):
    torch = m.torch
    angle = 1.0 / (10000 ** torch.linspace(0, 1, embed_dim // num_heads // 2, dtype=dtype))
    angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
    decay = torch.log(1 - 2 ** (-5 - torch.arange(num_heads, dtype=dtype)))
    index = torch.arange(slen).to(decay)
    sin = torch.sin(index[:, None] * angle[None, :])
    cos = torch.cos(index[:, None] * angle[None, :])
    mask = torch.tril(torch.ones(slen, slen).to(decay))
    mask = torch.masked_fill(index[:, None] - index[None, :], ~mask.bool(), float("inf"))
    mask = torch.exp(mask * decay[:, None, None])
    mask = torch.nan_to_num(mask)
    return (sin, cos), mask, decay


def retention_three_forms(m, chunk):
    torch = m.torch
    rng = np.random.default_rng(12)
    b, h, T, dk, dv = 2, 3, 12, 4, 5
    q = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    v = torch.tensor(rng.standard_normal((b, h, T, dv)), requires_grad=True)
    (sin, cos), mask, decay = retnet_rel_pos(m, T, h * dk, h, torch.float64)
    gamma = torch.exp(decay)  # (h)

    def rotated():
        return theta_shift(m, q, sin, cos), theta_shift(m, k, sin, cos)

    # parallel
    qr, kr = rotated()
    parallel = (qr @ kr.transpose(-1, -2) * mask) @ v
    # recurrent: S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n
    qr, kr = rotated()
    S = torch.zeros(b, h, dk, dv, dtype=torch.float64)
    outs = []
    for t in range(T):
        S = gamma.view(1, h, 1, 1) * S + kr[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", qr[:, :, t], S))
    recurrent = torch.stack(outs, dim=2)
    # chunkwise: inside a chunk the parallel form, across chunks the state R decayed by gamma^B
    qr, kr = rotated()
    inner_mask = mask[:, :chunk, :chunk]
    idx = torch.arange(1, chunk + 1, dtype=torch.float64)
    cross_decay = gamma.view(h, 1) ** idx  # xi: decay from the chunk's start to each position
    value_decay = gamma.view(h, 1) ** (chunk - idx)  # zeta: decay from each position to the chunk's end
    R = torch.zeros(b, h, dk, dv, dtype=torch.float64)
    pieces = []
    for start in range(0, T, chunk):
        qc, kc, vc = (t_[:, :, start:start + chunk] for t_ in (qr, kr, v))
        inner = (qc @ kc.transpose(-1, -2) * inner_mask) @ vc
        cross = (qc @ R) * cross_decay.view(1, h, chunk, 1)
        pieces.append(inner + cross)
        R = kc.transpose(-1, -2) @ (vc * value_decay.view(1, h, chunk, 1)) + R * (gamma ** chunk).view(1, h, 1, 1)
    chunkwise = torch.cat(pieces, dim=2)
    w = torch.tensor(rng.standard_normal((b, h, T, dv)))
    grads = [torch.autograd.grad((o * w).sum(), (q, k, v)) for o in (parallel, recurrent, chunkwise)]
    return [parallel, recurrent, chunkwise], grads


@pytest.mark.parametrize("chunk", [3, 4])
def test_retention_parallel_recurrent_and_chunkwise_agree(chunk):
    (outs, grads), _ = run_both(retention_three_forms, chunk, rtol=1e-9, atol=1e-11)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-9, atol=1e-11)
    for gs in grads[1:]:
        for a, b in zip(gs, grads[0]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def make_retnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MultiScaleRetention(nn.Module):
        def __init__(self, embed_dim, value_dim, num_heads):
            super().__init__()
            self.embed_dim = embed_dim
            self.num_heads = num_heads
            self.head_dim = value_dim // num_heads
            self.key_dim = embed_dim // num_heads
            self.scaling = self.key_dim ** -0.5
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.v_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.g_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.out_proj = nn.Linear(value_dim, embed_dim, bias=False)
            self.group_norm = nn.RMSNorm(self.head_dim, eps=1e-6, elementwise_affine=False)
            nn.init.xavier_uniform_(self.q_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.k_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.v_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.g_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.out_proj.weight, gain=2 ** -1)

        def parallel_forward(self, qr, kr, v, mask):
            bsz, tgt_len, embed_dim = v.size()
            vr = v.view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)
            qk_mat = qr @ kr.transpose(-1, -2)  # bsz * m * tgt_len * tgt_len
            qk_mat = qk_mat * mask
            # invariant after normalization
            qk_mat = qk_mat / qk_mat.detach().abs().sum(dim=-1, keepdim=True).clamp(min=1, max=5e4)
            output = torch.matmul(qk_mat, vr)
            output = output.transpose(1, 2)
            return output

        def forward(self, x, rel_pos):
            bsz, tgt_len, _ = x.size()
            (sin, cos), inner_mask = rel_pos
            q = self.q_proj(x)
            k = self.k_proj(x)
            v = self.v_proj(x)
            g = self.g_proj(x)
            k *= self.scaling
            q = q.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            k = k.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            qr = theta_shift(m, q, sin, cos)
            kr = theta_shift(m, k, sin, cos)
            output = self.parallel_forward(qr, kr, v, inner_mask)
            output = self.group_norm(output).reshape(bsz, tgt_len, self.head_dim * self.num_heads)
            output = F.silu(g) * output
            return self.out_proj(output)

    class RetNetLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.retention = MultiScaleRetention(RN_D, 2 * RN_D, RN_H)
            self.retention_layer_norm = nn.LayerNorm(RN_D)
            self.ffn = nn.Sequential(nn.Linear(RN_D, 2 * RN_D), nn.GELU(), nn.Linear(2 * RN_D, RN_D))
            self.final_layer_norm = nn.LayerNorm(RN_D)

        def forward(self, x, rel_pos):
            x = x + self.retention(self.retention_layer_norm(x), rel_pos)
            return x + self.ffn(self.final_layer_norm(x))

    class RetNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(RN_V, RN_D)
            self.layers = nn.ModuleList([RetNetLayer() for _ in range(2)])
            self.layer_norm = nn.LayerNorm(RN_D)
            self.output_projection = nn.Linear(RN_D, RN_V, bias=False)

        def forward(self, tokens):
            x = self.embed_tokens(tokens)
            (sin, cos), mask, _ = retnet_rel_pos(m, tokens.size(1), RN_D, RN_H, x.dtype)
            mask = mask / mask.sum(dim=-1, keepdim=True).sqrt()
            for layer in self.layers:
                x = layer(x, ((sin, cos), mask))
            return self.output_projection(self.layer_norm(x))

    return RetNet()


def retnet_training(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_retnet(m), weights)
    tokens = torch.tensor(np.random.default_rng(13).integers(0, RN_V, (3, 9)))
    optimizer = m.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.05)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens)
        prefix = model(tokens[:, :5])
    return losses, full, prefix


def test_retnet_trains_in_its_parallel_form():
    weights = weights_of(make_retnet)
    (losses, full, prefix), _ = run_both(retnet_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(prefix, full[:, :5], rtol=1e-4, atol=1e-5)  # causal


# ----------------------------------------------------------------------------------------------
# xLSTM (NX-AI/xlstm): the mLSTM cell in its stabilised parallel form (logsigmoid forget gates, cumsum,
# repeat and transpose into a log gate matrix, torch.where with -inf, a row max subtracted before exp, the
# normaliser max(|row sum|, exp(-max))), its recurrent step (squeeze_ in place on the step's slices, a running
# stabiliser state m) and its chunkwise form (states written by index into zero tensors, triu of inf); the
# three against each other in float64, values and gradients; and the sLSTM pointwise cell with exponential
# gating, its stabiliser and the torch.all(n == 0) first step, run over a sequence
# ----------------------------------------------------------------------------------------------


def mlstm_forms(m, chunk_size, squeeze_in_place=False):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(21)
    B, NH, S, DH = 2, 2, 8, 4
    eps = 1e-6
    leaves = [torch.tensor(rng.standard_normal(shape) * scale, requires_grad=True)
              for shape, scale in [((B, NH, S, DH), 1.0)] * 3 + [((B, NH, S, 1), 2.0), ((B, NH, S, 1), 2.0)]]
    leaves[4].data.add_(3.0)  # forget gates mostly open, as their bias init makes them

    def inputs():
        return [x * 1.0 for x in leaves]  # non-leaf copies (projections in the model)

    # parallel
    queries, keys, values, igate_preact, fgate_preact = inputs()
    log_fgates = F.logsigmoid(fgate_preact)
    ltr = torch.tril(torch.ones((S, S), dtype=torch.bool))
    log_fgates_cumsum = torch.cat([torch.zeros((B, NH, 1, 1), dtype=torch.float64),
                                   torch.cumsum(log_fgates, dim=-2)], dim=-2)
    rep_log_fgates_cumsum = log_fgates_cumsum.repeat(1, 1, 1, S + 1)
    _log_fg_matrix = rep_log_fgates_cumsum - rep_log_fgates_cumsum.transpose(-2, -1)
    log_fg_matrix = torch.where(ltr, _log_fg_matrix[:, :, 1:, 1:], -float("inf"))
    log_D_matrix = log_fg_matrix + igate_preact.transpose(-2, -1)
    max_log_D, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)
    D_matrix = torch.exp(log_D_matrix - max_log_D)
    keys_scaled = keys / math.sqrt(DH)
    C_matrix = (queries @ keys_scaled.transpose(-2, -1)) * D_matrix
    normalizer = torch.maximum(C_matrix.sum(dim=-1, keepdim=True).abs(), torch.exp(-max_log_D))
    parallel = (C_matrix / (normalizer + eps)) @ values

    # recurrent, from m = -inf (no state yet), which is what the parallel form assumes
    queries, keys, values, igate_preact, fgate_preact = inputs()
    c_state = torch.zeros(B, NH, DH, DH, dtype=torch.float64)
    n_state = torch.zeros(B, NH, DH, 1, dtype=torch.float64)
    m_state = torch.full((B, NH, 1, 1), -float("inf"), dtype=torch.float64)
    hs = []
    for t in range(S):
        q, k, v = (x[:, :, t:t + 1] for x in (queries, keys, values))
        if squeeze_in_place:  # as the library's inference step does: squeeze_ bumps the shared version
            q, k, v = q.squeeze_(2).unsqueeze(-1), k.squeeze_(2).unsqueeze(-1), v.squeeze_(2).unsqueeze(-1)
        else:
            q, k, v = q.squeeze(2).unsqueeze(-1), k.squeeze(2).unsqueeze(-1), v.squeeze(2).unsqueeze(-1)
        i_t, f_t = igate_preact[:, :, t:t + 1], fgate_preact[:, :, t:t + 1]
        log_fg_act = F.logsigmoid(f_t)
        m_state_new = torch.max(log_fg_act + m_state, i_t)
        fg_act = torch.exp(log_fg_act + m_state - m_state_new)
        ig_act = torch.exp(i_t - m_state_new)
        k_scaled = k / math.sqrt(DH)
        c_state = fg_act * c_state + ig_act * (k_scaled @ v.transpose(-1, -2))
        n_state = fg_act * n_state + ig_act * k_scaled
        h_num = q.transpose(-1, -2) @ c_state
        qn_dotproduct = q.transpose(-1, -2) @ n_state
        h_denom = torch.maximum(qn_dotproduct.abs(), torch.exp(-m_state_new)) + eps
        hs.append(h_num / h_denom)
        m_state = m_state_new
    recurrent = torch.cat(hs, dim=2)

    # chunkwise, its initial stabiliser also -inf
    queries, keys, values, igate_preact, fgate_preact = inputs()
    igate_preact, fgate_preact = igate_preact.squeeze(-1), fgate_preact.squeeze(-1)
    NS, CS = S // chunk_size, chunk_size
    q = queries.view(B, NH, NS, CS, DH) / math.sqrt(DH)
    k = keys.view(B, NH, NS, CS, DH)
    v = values.view(B, NH, NS, CS, DH)
    log_fgates = F.logsigmoid(fgate_preact).view(B, NH, NS, CS)
    log_fgates_acc = log_fgates.cumsum(dim=3)
    igate_preact = igate_preact.view(B, NH, NS, CS)
    loggates = (igate_preact - log_fgates_acc)[:, :, :, :, None]
    m_loc, _ = torch.max(loggates + log_fgates_acc[:, :, :, -1, None, None], dim=3, keepdim=True)
    loggates = loggates + log_fgates_acc[:, :, :, -1, None, None] - m_loc
    kv = k.transpose(-1, -2) @ (v * (loggates).exp())
    ksum = (k * (loggates).exp()).sum(dim=-2)
    C = torch.zeros((B, NH, NS + 1, DH, DH), dtype=kv.dtype)
    n = torch.zeros((B, NH, NS + 1, DH), dtype=kv.dtype)
    mm = torch.zeros((B, NH, NS + 1, 1, 1), dtype=kv.dtype)
    mm[:, :, 0] = torch.full((B, NH, 1, 1), -float("inf"), dtype=kv.dtype)
    for i in range(1, NS + 1):
        mm[:, :, i] = torch.maximum(log_fgates_acc[:, :, i - 1, -1, None, None] + mm[:, :, i - 1], m_loc[:, :, i - 1])
        C[:, :, i] = (C[:, :, i - 1].clone() * (log_fgates_acc[:, :, i - 1, -1, None, None] + mm[:, :, i - 1]
                                                - mm[:, :, i]).exp()
                      + kv[:, :, i - 1] * (m_loc[:, :, i - 1] - mm[:, :, i]).exp())
        n[:, :, i] = (n[:, :, i - 1].clone() * (log_fgates_acc[:, :, i - 1, -1, None] + mm[:, :, i - 1, 0]
                                                - mm[:, :, i, 0]).exp()
                      + ksum[:, :, i - 1] * (m_loc[:, :, i - 1, 0] - mm[:, :, i, 0]).exp())
    log_fgates_rep = log_fgates_acc[:, :, :, :, None].repeat(1, 1, 1, 1, CS)
    log_fg_matrix = (log_fgates_rep - log_fgates_rep.transpose(-1, -2)
                     - torch.triu(float("inf") * torch.ones([1, 1, 1, CS, CS]).to(q), diagonal=1))
    log_D_matrix = log_fg_matrix + igate_preact[:, :, :, :, None].transpose(-2, -1)
    D_max, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)
    stab = torch.maximum(D_max, mm[:, :, :-1, :] + log_fgates_acc[:, :, :, :, None])
    inter_C = (q * (mm[:, :, :-1, :] + log_fgates_acc[:, :, :, :, None] - stab).exp()) @ C[:, :, :-1]
    inter_n = (q * (mm[:, :, :-1, :] + log_fgates_acc[:, :, :, :, None] - stab).exp()) @ n[:, :, :-1, :, None]
    E_matrix = (q @ k.transpose(-2, -1)) * torch.exp(log_D_matrix - stab)
    normalizer = torch.maximum((E_matrix.sum(dim=-1, keepdim=True) + inter_n).abs(), torch.exp(-stab))
    intra = (E_matrix / (normalizer + eps)) @ v
    inter = inter_C / (normalizer + eps)
    chunkwise = (intra + inter).view((B, NH, S, DH))

    w = torch.tensor(rng.standard_normal((B, NH, S, DH)))
    grads = [torch.autograd.grad((h * w).sum(), leaves) for h in (parallel, recurrent, chunkwise)]
    return [parallel, recurrent, chunkwise], grads


@pytest.mark.parametrize("chunk_size", [2, 4])
def test_mlstm_parallel_recurrent_and_chunkwise_agree(chunk_size):
    (outs, grads), _ = run_both(mlstm_forms, chunk_size, rtol=1e-9, atol=1e-11)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-9, atol=1e-11)
    for gs in grads[1:]:
        for a, b in zip(gs, grads[0]):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert all(np.isfinite(g).all() for gs in grads for g in gs)


def test_mlstm_recurrent_step_squeezing_in_place_refuses_backward_as_pytorch():
    """The library's recurrent step squeezes its slices in place (q.squeeze_(2)): each squeeze_ counts as a
    change of the sequence they are cut from, which an earlier step's matmul saved, so backward refuses on
    both libraries (the step is meant for inference)."""
    from .pytorch_programs import pytorch
    for modules in (OURS, pytorch()):
        if modules is None:
            continue
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            mlstm_forms(modules, 4, squeeze_in_place=True)


def slstm_sequence(m, dtype_name):
    torch, nn, F = m.torch, m.nn, m.F
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(22)
    B, H, T, D = 3, 4, 6, 5
    W = nn.Linear(D, 4 * H, bias=False).to(dtype)
    R = nn.Linear(H, 4 * H, bias=False).to(dtype)  # block-diagonal per head in xLSTM; dense here
    with torch.no_grad():
        W.weight.copy_(torch.tensor(rng.standard_normal((4 * H, D)) * 0.5))
        R.weight.copy_(torch.tensor(rng.standard_normal((4 * H, H)) * 0.5))
    b = nn.Parameter(torch.tensor(np.concatenate([np.zeros(H), np.linspace(3, 6, H), np.zeros(2 * H)])[None],
                                  dtype=dtype))
    x = torch.tensor(rng.standard_normal((T, B, D)) * 2, dtype=dtype, requires_grad=True)

    def slstm_forward_pointwise(Wx, Ry, b, states):
        raw = Wx + Ry + b
        y, c, n, m_ = torch.unbind(states.view(4, states.shape[1], -1), dim=0)
        iraw, fraw, zraw, oraw = torch.unbind(raw.view(raw.shape[0], 4, -1), dim=1)
        logfplusm = m_ + F.logsigmoid(fraw)
        if torch.all(n == 0.0):
            mnew = iraw
        else:
            mnew = torch.max(iraw, logfplusm)
        ogate = torch.sigmoid(oraw)
        igate = torch.exp(iraw - mnew)
        fgate = torch.exp(logfplusm - mnew)
        cnew = fgate * c + igate * torch.tanh(zraw)
        nnew = fgate * n + igate
        ynew = ogate * cnew / nnew
        return torch.stack((ynew, cnew, nnew, mnew), dim=0), torch.stack((igate, fgate, zraw, ogate), dim=0)

    states = torch.zeros(4, B, H, dtype=dtype)
    ys, gates = [], []
    for t in range(T):
        states, g = slstm_forward_pointwise(W(x[t]), R(states[0]), b, states)
        ys.append(states[0])
        gates.append(g)
    y = torch.stack(ys)
    loss = (y ** 2).sum() + states[2].log().sum()
    loss.backward()
    return y, states, torch.stack(gates), x.grad, W.weight.grad, R.weight.grad, b.grad


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float32", 1e-5, 1e-5), ("float64", 1e-10, 1e-12)])
def test_slstm_exponential_gating_with_its_stabiliser(dtype_name, rtol, atol):
    (y, states, gates, *grads), _ = run_both(slstm_sequence, dtype_name, rtol=rtol, atol=atol)
    assert np.all(np.abs(y) < 1) and np.all(states[2] > 0)  # |c| <= n: the normaliser bounds the output
    # stabilised gates stay <= 1 (after the first step, whose forget gate multiplies empty states)
    assert np.all(gates[:, 0] <= 1 + 1e-6) and np.all(gates[1:, 1] <= 1 + 1e-6)


# ----------------------------------------------------------------------------------------------
# Causal linear attention (Katharopoulos et al.) with the elu + 1 feature map, three ways: the masked
# quadratic form, the cumsum of outer products (einsum, cumsum over the length), and gated linear attention's
# chunkwise form with per-step decays (cumsum of log-sigmoid gates inside a chunk, a carried state between
# chunks, torch.split into chunks); values and gradients in float64
# ----------------------------------------------------------------------------------------------


def linear_attention_forms(m, chunk):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(60)
    b, h, T, dk, dv = 2, 2, 10, 3, 4
    q = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    v = torch.tensor(rng.standard_normal((b, h, T, dv)), requires_grad=True)
    gate = torch.tensor(rng.standard_normal((b, h, T)) + 2, requires_grad=True)
    leaves = (q, k, v, gate)
    phi = lambda x: F.elu(x) + 1
    eps = 1e-6

    def normalised(num, den):
        return num / (den.unsqueeze(-1) + eps)

    # quadratic, with decay: A_ts = phi(q_t) . phi(k_s) * prod_{s < r <= t} gate_r, s <= t
    Q, K = phi(q), phi(k)
    log_g = F.logsigmoid(gate)
    cum = log_g.cumsum(-1)
    decay = torch.exp((cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(
        ~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf")))
    A = (Q @ K.transpose(-1, -2)) * decay
    quadratic = normalised(A @ v, A.sum(-1))
    # recurrent by cumsum, without decay (plain linear attention) and the quadratic form without it, to check
    KV = torch.einsum("bhtd,bhte->bhtde", K, v).cumsum(2)
    Ksum = K.cumsum(2)
    plain_cumsum = normalised(torch.einsum("bhtd,bhtde->bhte", Q, KV), (Q * Ksum).sum(-1))
    A0 = (Q @ K.transpose(-1, -2)).tril()
    plain_quadratic = normalised(A0 @ v, A0.sum(-1))
    # chunkwise with decay
    S = torch.zeros(b, h, dk, dv, dtype=torch.float64)
    z = torch.zeros(b, h, dk, dtype=torch.float64)
    outs = []
    for Qc, Kc, vc, lg in zip(Q.split(chunk, 2), K.split(chunk, 2), v.split(chunk, 2), log_g.split(chunk, -1)):
        C = Qc.shape[2]
        c = lg.cumsum(-1)  # decay from the chunk's start to each step
        inner = torch.exp((c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(
            ~torch.tril(torch.ones(C, C, dtype=torch.bool)), float("-inf")))
        Ac = (Qc @ Kc.transpose(-1, -2)) * inner
        into = torch.exp(c).unsqueeze(-1)  # the carried state, decayed to each step
        num = Ac @ vc + (Qc * into) @ S
        den = Ac.sum(-1) + ((Qc * into) * z.unsqueeze(2)).sum(-1)
        outs.append(normalised(num, den))
        to_end = torch.exp(c[..., -1:] - c).unsqueeze(-1)  # each step's key, decayed to the chunk's end
        S = S * torch.exp(c[..., -1]).view(b, h, 1, 1) + (Kc * to_end).transpose(-1, -2) @ vc
        z = z * torch.exp(c[..., -1]).unsqueeze(-1) + (Kc * to_end).sum(2)
    chunkwise = torch.cat(outs, dim=2)
    w = torch.tensor(rng.standard_normal((b, h, T, dv)))
    grads = [torch.autograd.grad((o * w).sum(), leaves, retain_graph=True) for o in (quadratic, chunkwise)]
    return quadratic, chunkwise, plain_cumsum, plain_quadratic, grads


@pytest.mark.parametrize("chunk", [3, 5])
def test_linear_attention_quadratic_cumsum_and_chunkwise_agree(chunk):
    (quadratic, chunkwise, plain_cumsum, plain_quadratic, grads), _ = run_both(
        linear_attention_forms, chunk, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(plain_cumsum, plain_quadratic, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunkwise, quadratic, rtol=1e-10, atol=1e-12)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
