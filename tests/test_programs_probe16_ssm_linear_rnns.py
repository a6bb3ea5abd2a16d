# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Sequence models beyond attention (see tests/pytorch_programs.py), as PyTorch users write them in pure PyTorch,
each run on chainrule and on PyTorch and compared (values and gradients, float32 and float64), and every scan,
parallel or chunkwise form checked against its loop form. Linear recurrences: RWKV-4 (ZeroPad2d token shift with a
negative pad, the stable WKV with a running maximum against its parallel softmax form); minGRU's Heinsen scan
(logcumsumexp) against its recurrence and a minGRU LM; Griffin's RG-LRU block (block-diagonal gates, a bounded-sqrt
autograd.Function, document resets as boolean arithmetic)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RWKV-4 (RWKV-LM): token shift by nn.ZeroPad2d((0, 0, 1, -1)) (a negative pad crops the last step),
# time-mixing whose WKV is the numerically stable recurrence with a running maximum (torch.maximum, exp of
# differences), squared-ReLU channel mixing, the parallel WKV by a decay matrix under a tril mask against
# it, and a few AdamW steps with the time_* parameters and LayerNorms in a group without weight decay
# ----------------------------------------------------------------------------------------------

RW_V, RW_D, RW_LAYERS = 11, 8, 2


def make_rwkv(m):
    torch, nn = m.torch, m.nn

    class RWKV_TimeMix(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            ratio_0_to_1 = layer_id / (RW_LAYERS - 1)
            ratio_1_to_almost0 = 1.0 - (layer_id / RW_LAYERS)
            with torch.no_grad():
                decay_speed = torch.ones(RW_D)
                for h in range(RW_D):
                    decay_speed[h] = -5 + 8 * (h / (RW_D - 1)) ** (0.7 + 1.3 * ratio_0_to_1)
                self.time_decay = nn.Parameter(decay_speed)
                zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(RW_D)]) * 0.5
                self.time_first = nn.Parameter(torch.ones(RW_D) * math.log(0.3) + zigzag)
                x = torch.ones(1, 1, RW_D)
                for i in range(RW_D):
                    x[0, 0, i] = i / RW_D
                self.time_mix_k = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
                self.time_mix_v = nn.Parameter(torch.pow(x, ratio_1_to_almost0) + 0.3 * ratio_0_to_1)
                self.time_mix_r = nn.Parameter(torch.pow(x, 0.5 * ratio_1_to_almost0))
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.key = nn.Linear(RW_D, RW_D, bias=False)
            self.value = nn.Linear(RW_D, RW_D, bias=False)
            self.receptance = nn.Linear(RW_D, RW_D, bias=False)
            self.output = nn.Linear(RW_D, RW_D, bias=False)

        def wkv(self, k, v):
            B, T, C = k.shape
            w = -torch.exp(self.time_decay)
            u = self.time_first
            aa = torch.zeros(B, C, dtype=k.dtype)
            bb = torch.zeros(B, C, dtype=k.dtype)
            pp = torch.full((B, C), -1e38, dtype=k.dtype)
            out = []
            for t in range(T):
                kk, vv = k[:, t], v[:, t]
                ww = u + kk
                p = torch.maximum(pp, ww)
                e1 = torch.exp(pp - p)
                e2 = torch.exp(ww - p)
                out.append((e1 * aa + e2 * vv) / (e1 * bb + e2))
                ww = pp + w
                p = torch.maximum(ww, kk)
                e1 = torch.exp(ww - p)
                e2 = torch.exp(kk - p)
                aa = e1 * aa + e2 * vv
                bb = e1 * bb + e2
                pp = p
            return torch.stack(out, dim=1)

        def forward(self, x):
            xx = self.time_shift(x)
            xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
            xv = x * self.time_mix_v + xx * (1 - self.time_mix_v)
            xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
            k = self.key(xk)
            v = self.value(xv)
            sr = torch.sigmoid(self.receptance(xr))
            return self.output(sr * self.wkv(k, v))

    class RWKV_ChannelMix(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            with torch.no_grad():
                ratio_1_to_almost0 = 1.0 - (layer_id / RW_LAYERS)
                x = torch.ones(1, 1, RW_D)
                for i in range(RW_D):
                    x[0, 0, i] = i / RW_D
                self.time_mix_k = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
                self.time_mix_r = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
            self.key = nn.Linear(RW_D, 4 * RW_D, bias=False)
            self.receptance = nn.Linear(RW_D, RW_D, bias=False)
            self.value = nn.Linear(4 * RW_D, RW_D, bias=False)

        def forward(self, x):
            xx = self.time_shift(x)
            xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
            xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
            k = self.key(xk)
            k = torch.square(torch.relu(k))
            kv = self.value(k)
            return torch.sigmoid(self.receptance(xr)) * kv

    class Block(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.ln1 = nn.LayerNorm(RW_D)
            self.ln2 = nn.LayerNorm(RW_D)
            if layer_id == 0:
                self.ln0 = nn.LayerNorm(RW_D)
            self.layer_id = layer_id
            self.att = RWKV_TimeMix(layer_id)
            self.ffn = RWKV_ChannelMix(layer_id)

        def forward(self, x):
            if self.layer_id == 0:
                x = self.ln0(x)
            x = x + self.att(self.ln1(x))
            x = x + self.ffn(self.ln2(x))
            return x

    class RWKV(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(RW_V, RW_D)
            self.blocks = nn.Sequential(*[Block(i) for i in range(RW_LAYERS)])
            self.ln_out = nn.LayerNorm(RW_D)
            self.head = nn.Linear(RW_D, RW_V, bias=False)

        def forward(self, idx):
            return self.head(self.ln_out(self.blocks(self.emb(idx))))

    return RWKV()


def rwkv_training(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_rwkv(m), weights)
    tokens = torch.tensor(np.random.default_rng(8).integers(0, RW_V, (3, 10)))
    no_decay = [p for n, p in model.named_parameters() if "time_" in n or "ln" in n or "emb" in n]
    decay = [p for n, p in model.named_parameters() if not ("time_" in n or "ln" in n or "emb" in n)]
    optimizer = m.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                               {"params": no_decay, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens)
        prefix = model(tokens[:, :4])
    return losses, full, prefix, {n: p for n, p in model.named_parameters() if "time_" in n}


def test_rwkv4_trains_and_stays_causal():
    weights = weights_of(make_rwkv)
    (losses, full, prefix, time_params), _ = run_both(rwkv_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(prefix, full[:, :4], rtol=1e-5, atol=1e-6)


def rwkv_wkv_stable_against_parallel(m, weights):
    torch = m.torch
    model = load(m, make_rwkv(m), weights).double()
    att = model.blocks[1].att
    rng = np.random.default_rng(9)
    B, T, C = 2, 7, RW_D
    k = torch.tensor(rng.standard_normal((B, T, C)) * 3, requires_grad=True)
    v = torch.tensor(rng.standard_normal((B, T, C)), requires_grad=True)
    stable = att.wkv(k, v)
    # parallel: wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (the same with v = 1)
    w = torch.exp(att.time_decay)
    t_idx = torch.arange(T, dtype=torch.float64)
    dist = (t_idx[:, None] - 1 - t_idx[None, :])  # (t, i)
    logits = -dist[None, :, :, None] * w + k[:, None, :, :]  # (B, t, i, C)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)[None, :, :, None]
    logits = logits.masked_fill(~mask, float("-inf"))
    bonus = (att.time_first + k)[:, :, None, :]  # the current token, weighted by u
    all_logits = torch.cat([logits, bonus], dim=2)  # (B, t, i + 1, C)
    all_v = torch.cat([v[:, None].expand(B, T, T, C), v[:, :, None]], dim=2)
    weights_ = torch.softmax(all_logits, dim=2)
    parallel = (weights_ * all_v).sum(2)
    leaves = [k, v, att.time_decay, att.time_first]
    g = torch.tensor(rng.standard_normal((B, T, C)))
    return stable, parallel, torch.autograd.grad((stable * g).sum(), leaves), \
        torch.autograd.grad((parallel * g).sum(), leaves)


def test_rwkv4_stable_wkv_is_the_parallel_softmax():
    weights = weights_of(make_rwkv)
    (stable, parallel, g_stable, g_parallel), _ = run_both(rwkv_wkv_stable_against_parallel, weights,
                                                          rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(stable, parallel, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_stable, g_parallel):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# minGRU (Feng et al., "Were RNNs all we needed?", the log-space parallel form): g / log_g by torch.where of
# two branches (log of relu + 0.5, -softplus(-x)), the Heinsen scan (cumsum of log-coefficients padded by
# F.pad, logcumsumexp of the values, exp), against the sequential recurrence h_t = (1 - z_t) h_{t-1} + z_t
# g(h̃_t), values and gradients in float32 and float64; and a small minGRU language model trained a few
# steps with AdamW, its hidden state carried from a prefix into the continuation
# ----------------------------------------------------------------------------------------------


def make_min_gru_ops(m):
    torch, F = m.torch, m.F

    def g(x):
        return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))

    def log_g(x):
        return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))

    def parallel_scan_log(log_coeffs, log_values):
        # log_coeffs: (batch_size, seq_len, input_size), log_values: (batch_size, seq_len + 1, input_size)
        a_star = F.pad(torch.cumsum(log_coeffs, dim=1), (0, 0, 1, 0))
        log_h0_plus_b_star = torch.logcumsumexp(log_values - a_star, dim=1)
        log_h = a_star + log_h0_plus_b_star
        return torch.exp(log_h)[:, 1:]

    return g, log_g, parallel_scan_log


def make_min_gru_lm(m, vocab=11, dim=8):
    torch, nn, F = m.torch, m.nn, m.F
    g, log_g, parallel_scan_log = make_min_gru_ops(m)

    class MinGRU(nn.Module):
        def __init__(self, dim_in, dim_hidden):
            super().__init__()
            self.linear_z = nn.Linear(dim_in, dim_hidden)
            self.linear_h = nn.Linear(dim_in, dim_hidden)

        def forward(self, x, h_0=None, sequential=False):
            k = self.linear_z(x)
            tilde_h = self.linear_h(x)
            if h_0 is None:
                h_0 = torch.zeros(x.shape[0], 1, k.shape[-1], dtype=x.dtype)
            if sequential:
                z = torch.sigmoid(k)
                h_prev, hs = g(h_0[:, 0]), []
                for t in range(x.shape[1]):
                    h_prev = (1 - z[:, t]) * h_prev + z[:, t] * g(tilde_h[:, t])
                    hs.append(h_prev)
                return torch.stack(hs, dim=1)
            log_z = -F.softplus(-k)
            log_coeffs = -F.softplus(k)
            log_h_0 = log_g(h_0)
            log_tilde_h = log_g(tilde_h)
            return parallel_scan_log(log_coeffs, torch.cat([log_h_0, log_z + log_tilde_h], dim=1))

    class MinGRULM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.layers = nn.ModuleList([MinGRU(dim, dim) for _ in range(2)])
            self.norms = nn.ModuleList([nn.RMSNorm(dim) for _ in range(2)])
            self.head = nn.Linear(dim, vocab, bias=False)

        def forward(self, ids, sequential=False):
            x = self.emb(ids)
            for norm, layer in zip(self.norms, self.layers):
                x = x + layer(norm(x), sequential=sequential)
            return self.head(x)

    return MinGRULM()


def min_gru_scan_against_loop(m, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    g, log_g, parallel_scan_log = make_min_gru_ops(m)
    F = m.F
    rng = np.random.default_rng(50)
    b, L, d = 2, 9, 3
    k = torch.tensor(rng.standard_normal((b, L, d)) * 2, dtype=dtype, requires_grad=True)
    tilde_h = torch.tensor(rng.standard_normal((b, L, d)) * 2, dtype=dtype, requires_grad=True)
    h_0 = torch.tensor(rng.standard_normal((b, 1, d)), dtype=dtype, requires_grad=True)
    parallel = parallel_scan_log(-F.softplus(k), torch.cat([log_g(h_0), -F.softplus(-k) + log_g(tilde_h)], dim=1))
    z = torch.sigmoid(k)
    h, hs = g(h_0[:, 0]), []
    for t in range(L):
        h = (1 - z[:, t]) * h + z[:, t] * g(tilde_h[:, t])
        hs.append(h)
    sequential = torch.stack(hs, dim=1)
    w = torch.tensor(rng.standard_normal((b, L, d)), dtype=dtype)
    leaves = (k, tilde_h, h_0)
    return parallel, sequential, torch.autograd.grad((parallel * w).sum(), leaves), \
        torch.autograd.grad((sequential * w).sum(), leaves)


@pytest.mark.parametrize("dtype_name, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_min_gru_log_space_scan_is_the_recurrence(dtype_name, tol):
    (parallel, sequential, g_par, g_seq), _ = run_both(min_gru_scan_against_loop, dtype_name, rtol=tol * 10,
                                                       atol=tol)
    assert np.all(sequential > 0)  # g keeps the state positive: its logarithm exists
    np.testing.assert_allclose(parallel, sequential, rtol=tol * 10, atol=tol)
    for a, b in zip(g_par, g_seq):
        np.testing.assert_allclose(a, b, rtol=tol * 100, atol=tol * 10)


def min_gru_training(m, weights, steps=4):
    torch, F = m.torch, m.F
    model = load(m, make_min_gru_lm(m), weights)
    tokens = torch.tensor(np.random.default_rng(51).integers(0, 11, (4, 12)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        parallel = model(tokens)
        sequential = model(tokens, sequential=True)
    return losses, parallel, sequential


def test_min_gru_language_model_trains_in_log_space():
    weights = weights_of(make_min_gru_lm)
    (losses, parallel, sequential), _ = run_both(min_gru_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(parallel, sequential, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Griffin's recurrent block (google-deepmind/recurrentgemma, torch/layers.py): the RG-LRU with block-diagonal
# gates (einsum over heads), log a = -8 · gate · softplus(Λ), a custom autograd.Function that bounds sqrt's
# derivative (clip of 4x before the division), resets at document starts as boolean arithmetic
# (reset + ~reset * multiplier, a * ~reset), the scan written into a preallocated zeros_like output, the
# temporal Conv1D as shifted windows with F.pad, and the softplus-inverse rnn_param_init done in place
# (uniform_, log_, mul_, neg_, exp_, sub_); a packed sequence of two documents against each run alone, and a
# few AdamW steps with gradient clipping
# ----------------------------------------------------------------------------------------------

GR_W, GR_H, GR_TW = 6, 2, 3
_MAX_SQRT_GRADIENT = 1000.0


def make_griffin_block(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SqrtBoundDerivative(torch.autograd.Function):
        """Computes a square root with a gradient clipped at `_MAX_SQRT_GRADIENT`."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sqrt(x)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            clipped_x_times_4 = torch.clip(4.0 * x, min=_MAX_SQRT_GRADIENT ** -2)
            return grad_output / torch.sqrt(clipped_x_times_4)

    def rnn_param_init(tensor, min_rad, max_rad, transform="softplus", eps=1e-8):
        with torch.no_grad():
            tensor.uniform_(min_rad ** 2 + eps, max_rad ** 2 + eps)
            tensor.log_().mul_(0.5)
            if transform == "softplus":
                return tensor.neg_().exp_().sub_(1.0).log_()
            return tensor

    class BlockDiagonalLinear(nn.Module):
        def __init__(self, width, num_blocks):
            super().__init__()
            self.num_blocks = num_blocks
            self.block_width = width // num_blocks
            self.w = nn.Parameter(torch.randn([num_blocks, self.block_width, self.block_width])
                                  / math.sqrt(self.block_width))
            self.b = nn.Parameter(torch.zeros([num_blocks, self.block_width]))

        def forward(self, x):
            x = x.reshape(*x.shape[:-1], self.num_blocks, self.block_width)  # "... (h i) -> ... h i"
            y = torch.einsum("... h i, h i j -> ... h j", x, self.w) + self.b
            return y.reshape(*y.shape[:-2], -1)  # "... h j -> ... (h j)"

    def rnn_scan(x, a, reset, h0, acc_dtype=torch.float32):
        a = a * ~reset
        h_t = torch.zeros(x[:, 0].shape, dtype=acc_dtype) if h0 is None else h0
        y = torch.zeros_like(x)
        for t in range(x.shape[1]):
            h_t = a[:, t].type(acc_dtype) * h_t + x[:, t].type(acc_dtype)
            y[:, t] = h_t.type(x.dtype)
        return y, h_t

    class RGLRU(nn.Module):
        def __init__(self, width, num_heads):
            super().__init__()
            self.a_param = nn.Parameter(torch.empty([width]))
            self.input_gate = BlockDiagonalLinear(width, num_heads)
            self.a_gate = BlockDiagonalLinear(width, num_heads)
            rnn_param_init(self.a_param, min_rad=0.9, max_rad=0.999)

        def forward(self, x, segment_pos, prev_h=None):
            reset = segment_pos[:, :, None] == 0
            gate_x = torch.sigmoid(self.input_gate(x))
            gate_a = torch.sigmoid(self.a_gate(x))
            log_a = -8.0 * gate_a * F.softplus(self.a_param)
            a = torch.exp(log_a)
            a_square = torch.exp(2 * log_a)
            gated_x = x * gate_x
            multiplier = SqrtBoundDerivative.apply(1 - a_square)
            multiplier = reset + ~reset * multiplier
            normalized_x = gated_x * multiplier.type(x.dtype)
            return rnn_scan(x=normalized_x, a=a, reset=reset, h0=prev_h)

    class Conv1D(nn.Module):
        def __init__(self, width, temporal_width):
            super().__init__()
            self.temporal_width = temporal_width
            self.w = nn.Parameter(torch.randn([temporal_width, width]) * 0.1)
            self.b = nn.Parameter(torch.zeros([width]))

        def forward(self, x, segment_pos):
            output_len = x.shape[1]
            conv_output = 0.0
            for temporal_shift in range(self.temporal_width):
                x_window = x[:, :output_len - temporal_shift]
                x_window = F.pad(x_window, (0, 0, temporal_shift, 0))  # shift right by temporal_shift
                # no mixing across documents: a token sees only those of its own document
                document_start = (segment_pos >= temporal_shift)[:, :, None]
                w_t = self.w[self.temporal_width - temporal_shift - 1]
                conv_output = conv_output + x_window * w_t[None, None] * document_start
            return conv_output + self.b[None, None]

    class RecurrentBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_y = nn.Linear(GR_W, GR_W)
            self.linear_x = nn.Linear(GR_W, GR_W)
            self.linear_out = nn.Linear(GR_W, GR_W)
            self.conv_1d = Conv1D(GR_W, GR_TW)
            self.rg_lru = RGLRU(GR_W, GR_H)

        def forward(self, x, segment_pos):
            y = F.gelu(self.linear_y(x), approximate="tanh")
            x = self.linear_x(x)
            x = self.conv_1d(x, segment_pos)
            x, last_h = self.rg_lru(x, segment_pos)
            return self.linear_out(x * y), last_h

    return RecurrentBlock()


def griffin_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    block = make_griffin_block(m)
    block.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(90)
    x = torch.tensor(rng.standard_normal((2, 9, GR_W)), dtype=torch.float32)
    # two documents packed in the first row (lengths 4 and 5), one in the second
    segment_pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4], list(range(9))])
    packed, _ = block(x, segment_pos)
    alone_a, _ = block(x[:1, :4], segment_pos[:1, :4])
    alone_b, _ = block(x[:1, 4:], segment_pos[:1, 4:])
    target = torch.tensor(rng.standard_normal((2, 9, GR_W)), dtype=torch.float32)
    optimizer = m.optim.AdamW(block.parameters(), lr=1e-2, weight_decay=0.1)
    losses, norms = [], []
    for step in range(steps):
        optimizer.zero_grad()
        out, _ = block(x, segment_pos)
        loss = F.mse_loss(out, target)
        loss.backward()
        norms.append(m.nn.utils.clip_grad_norm_(block.parameters(), max_norm=0.5))
        optimizer.step()
        losses.append(loss.item())
    # the bounded derivative: at 1 - a² = 0 the gradient is finite, 1 / sqrt(1000^-2) = 1000
    z = torch.zeros(3, requires_grad=True)
    sqrt_grad = torch.autograd.grad(_sqrt_bound(m)(z).sum(), z)[0]
    return packed, alone_a, alone_b, losses, norms, sqrt_grad


def _sqrt_bound(m):
    """The block's SqrtBoundDerivative on its own."""
    torch = m.torch

    class SqrtBoundDerivative(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sqrt(x)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output / torch.sqrt(torch.clip(4.0 * x, min=_MAX_SQRT_GRADIENT ** -2))

    return SqrtBoundDerivative.apply


def test_griffin_recurrent_block_resets_at_document_starts():
    weights = weights_of(make_griffin_block)
    a_param = weights["rg_lru.a_param"]
    a = np.exp(-8 * np.log1p(np.exp(a_param)))  # a at a gate of 1: the init puts it in [0.9, 0.999]^8
    assert np.all((a >= 0.9 ** 8 * 0.999) & (a <= 0.999 ** 8 * 1.001))
    (packed, alone_a, alone_b, losses, norms, sqrt_grad), _ = run_both(griffin_program, weights, rtol=1e-4,
                                                                       atol=1e-5)
    np.testing.assert_allclose(packed[:1, :4], alone_a, rtol=1e-5, atol=1e-6)  # documents do not mix
    np.testing.assert_allclose(packed[:1, 4:], alone_b, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(sqrt_grad, 1000.0, rtol=1e-6)
