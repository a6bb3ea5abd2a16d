"""Speech and sequence-transduction programs (see tests/pytorch_programs.py), written by hand as ESPnet, WeNet, NeMo,
torchaudio's recipes and the papers' reference code write them, run on chainrule and on PyTorch from the same seeds,
comparing values and gradients, and checked without PyTorch by NumPy and by invariants. Encoders and their masks: a
Conformer block with ESPnet's relative positions (``rel_shift``); ESPnet's and WeNet's masks and target preparation,
NeMo's length arithmetic; LSTM with ``proj_size`` on packed sequences; wav2vec 2.0's positional convolution (weight
norm over dim 2) and Gumbel vector quantizer."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Conformer (Gulati et al. 2020) with ESPnet's relative positional encoding and rel_shift
# ----------------------------------------------------------------------------------------------


def conformer_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    d, heads, T, B = 8, 2, 6, 2

    class RelPositionalEncoding(nn.Module):
        def __init__(self, d_model, max_len=50):
            super().__init__()
            self.d_model, self.xscale = d_model, math.sqrt(d_model)
            self.extend_pe(torch.tensor(0.0).expand(1, max_len))

        def extend_pe(self, x):
            pe_positive = torch.zeros(x.size(1), self.d_model)
            pe_negative = torch.zeros(x.size(1), self.d_model)
            position = torch.arange(0, x.size(1), dtype=torch.float32).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32)
                                 * -(math.log(10000.0) / self.d_model))
            pe_positive[:, 0::2] = torch.sin(position * div_term)
            pe_positive[:, 1::2] = torch.cos(position * div_term)
            pe_negative[:, 0::2] = torch.sin(-1 * position * div_term)
            pe_negative[:, 1::2] = torch.cos(-1 * position * div_term)
            pe_positive = torch.flip(pe_positive, [0]).unsqueeze(0)
            self.pe = torch.cat([pe_positive, pe_negative[1:].unsqueeze(0)], dim=1).to(device=x.device, dtype=x.dtype)

        def forward(self, x):
            return x * self.xscale, self.pe[:, self.pe.size(1) // 2 - x.size(1) + 1: self.pe.size(1) // 2 + x.size(1)]

    class RelPositionMultiHeadedAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.d_k = d // heads
            self.linear_q, self.linear_k, self.linear_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.linear_out = nn.Linear(d, d)
            self.linear_pos = nn.Linear(d, d, bias=False)
            self.pos_bias_u = nn.Parameter(torch.Tensor(heads, self.d_k))
            self.pos_bias_v = nn.Parameter(torch.Tensor(heads, self.d_k))
            torch.nn.init.xavier_uniform_(self.pos_bias_u)
            torch.nn.init.xavier_uniform_(self.pos_bias_v)

        def rel_shift(self, x):
            zero_pad = torch.zeros((*x.size()[:3], 1), device=x.device, dtype=x.dtype)
            x_padded = torch.cat([zero_pad, x], dim=-1).view(*x.size()[:2], x.size(3) + 1, x.size(2))
            return x_padded[:, :, 1:].view_as(x)[:, :, :, : x.size(-1) // 2 + 1]

        def forward(self, x, pos_emb, mask):
            n = x.size(0)
            q = self.linear_q(x).view(n, -1, heads, self.d_k)
            k = self.linear_k(x).view(n, -1, heads, self.d_k).transpose(1, 2)
            v = self.linear_v(x).view(n, -1, heads, self.d_k).transpose(1, 2)
            p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, heads, self.d_k).transpose(1, 2)
            matrix_ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
            matrix_bd_unshifted = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
            matrix_bd = self.rel_shift(matrix_bd_unshifted)
            scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
            mask = mask.unsqueeze(1).eq(0)
            scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
            self.shifted, self.unshifted = matrix_bd, matrix_bd_unshifted
            return self.linear_out(torch.matmul(attn, v).transpose(1, 2).contiguous().view(n, -1, heads * self.d_k))

    class ConvolutionModule(nn.Module):
        def __init__(self, kernel=3):
            super().__init__()
            self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1)
            self.depthwise_conv = nn.Conv1d(d, d, kernel, padding=(kernel - 1) // 2, groups=d)
            self.norm = nn.BatchNorm1d(d)
            self.pointwise_conv2 = nn.Conv1d(d, d, 1)

        def forward(self, x, mask_pad):
            x = x.transpose(1, 2).masked_fill(~mask_pad, 0.0)
            x = self.depthwise_conv(F.glu(self.pointwise_conv1(x), dim=1))
            x = self.pointwise_conv2(F.silu(self.norm(x)))
            return x.masked_fill(~mask_pad, 0.0).transpose(1, 2)

    positions, attention, conv = RelPositionalEncoding(d), RelPositionMultiHeadedAttention(), ConvolutionModule()
    feed_forward = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 16), nn.SiLU(), nn.Dropout(0.0), nn.Linear(16, d))
    norm = nn.LayerNorm(d)
    params = [*attention.parameters(), *conv.parameters(), *feed_forward.parameters(), *norm.parameters()]
    # (ESPnet's eps is 1e-9: the keys' bias, the bias before BatchNorm and the slowest positions' weights have gradients
    # of 0 up to float32 rounding, which so small an eps turns into full steps that differ between the two libraries)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) ** -0.5, (s + 1) * 10 ** -1.5))
    x0 = torch.randn(B, T, d)
    mask = (torch.arange(T)[None, :] < torch.tensor([6, 4])[:, None]).unsqueeze(1)  # B, 1, T
    out = {}
    for step in range(3):
        x, pos_emb = positions(x0)
        x = x + 0.5 * feed_forward(x)
        x = x + attention(norm(x), pos_emb, mask)
        x = x + conv(x, mask)
        loss = (x ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        out[f"loss{step}"] = loss
    out.update(pos_emb=pos_emb, x=x, bias_u=attention.pos_bias_u, lr=sched.get_last_lr()[0],
               shifted=attention.shifted, unshifted=attention.unshifted, running_var=conv.norm.running_var)
    return out


def test_conformer_block_with_relative_positions():
    ours, _ = run_both(conformer_program, rtol=1e-4, atol=1e-5)
    T = 6
    assert ours["pos_emb"].shape == (1, 2 * T - 1, 8)
    np.testing.assert_allclose(ours["pos_emb"][0, T - 1, 1::2], 1.0)  # relative position 0: cos 0
    # rel_shift keeps, for query i and key j, the score of relative position i - j (column T-1 - i + j)
    i, j = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    np.testing.assert_allclose(ours["shifted"], ours["unshifted"][..., i, T - 1 - i + j], rtol=1e-6)
    assert ours["lr"] == pytest.approx(1e-3 * min(4 ** -0.5, 4 * 10 ** -1.5))


# ----------------------------------------------------------------------------------------------
# ESPnet's and WeNet's masks and target preparation; NeMo's length arithmetic; label smoothing
# ----------------------------------------------------------------------------------------------


def masks_program(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    lengths = torch.tensor([13, 9, 4])
    bs, maxlen = 3, 13
    seq_range_expand = torch.arange(0, maxlen, dtype=torch.int64).unsqueeze(0).expand(bs, maxlen)
    pad_mask = seq_range_expand >= seq_range_expand.new(lengths).unsqueeze(-1)  # ESPnet's make_pad_mask
    x_mask = (~pad_mask).unsqueeze(1)
    subsampled_mask = x_mask[:, :, :-2:2][:, :, :-2:2]  # Conv2dSubsampling's
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, 2), nn.ReLU(), nn.Conv2d(2, 2, 3, 2), nn.ReLU())
    out_linear = nn.Linear(2 * 1, 4)
    feats = torch.randn(bs, maxlen, 7, requires_grad=True)
    x = conv(feats.unsqueeze(1))
    b, c, t, f = x.size()
    y = out_linear(x.transpose(1, 2).contiguous().view(b, t, c * f)).masked_fill(~subsampled_mask.transpose(1, 2), 0.0)
    y.sum().backward()
    nemo_lengths = lengths.clone()
    for _ in range(2):
        nemo_lengths = (nemo_lengths + 2 * 0 - 1 * (3 - 1) - 1) // 2 + 1

    def subsequent_chunk_mask(size, chunk_size, num_left_chunks=-1):  # WeNet's
        ret = torch.zeros(size, size, dtype=torch.bool)
        for i in range(size):
            start = 0 if num_left_chunks < 0 else max((i // chunk_size - num_left_chunks) * chunk_size, 0)
            ret[i, start:min((i // chunk_size + 1) * chunk_size, size)] = True
        return ret

    chunk_masks = x_mask & subsequent_chunk_mask(13, 3, 1).unsqueeze(0)
    # add_sos_eos and the label-smoothing loss
    ys_pad = torch.tensor([[4, 5, 6, -1], [7, 8, -1, -1], [3, 3, 3, 3]])
    sos = eos = 9
    ignore_id = -1
    ys = [y[y != ignore_id] for y in ys_pad]
    _sos, _eos = ys[0].new([sos]), ys[0].new([eos])
    ys_in_pad = nn.utils.rnn.pad_sequence([torch.cat([_sos, y], dim=0) for y in ys], batch_first=True,
                                         padding_value=eos)
    ys_out_pad = nn.utils.rnn.pad_sequence([torch.cat([y, _eos], dim=0) for y in ys], batch_first=True,
                                          padding_value=ignore_id)
    reversed_pad = nn.utils.rnn.pad_sequence([torch.flip(y.int(), [0]) for y in ys], True, float(ignore_id))
    logits = torch.randn(3, ys_out_pad.size(1), 10, requires_grad=True)
    size, smoothing = 10, 0.1
    flat, target = logits.view(-1, size), ys_out_pad.view(-1)
    true_dist = torch.zeros_like(flat)
    true_dist.fill_(smoothing / (size - 1))
    ignore = target == ignore_id
    total = len(target) - ignore.sum().item()
    true_dist.scatter_(1, target.masked_fill(ignore, 0).unsqueeze(1), 1.0 - smoothing)
    kl = nn.KLDivLoss(reduction="none")(torch.log_softmax(flat, dim=1), true_dist)
    loss = kl.masked_fill(ignore.unsqueeze(1), 0).sum() / total
    loss.backward()
    pred = logits.argmax(2)
    accuracy = float(torch.sum(pred.masked_select(ys_out_pad != -1) == ys_out_pad.masked_select(ys_out_pad != -1))) \
        / float(torch.sum(ys_out_pad != -1))
    return {"pad_mask": pad_mask, "subsampled_mask": subsampled_mask, "y": y, "grad": feats.grad,
            "nemo_lengths": nemo_lengths, "floor": torch.div(lengths - 3, 2, rounding_mode="floor") + 1,
            "chunk_masks": chunk_masks, "ys_in": ys_in_pad, "ys_out": ys_out_pad, "reversed": reversed_pad,
            "reversed_dtype": str(reversed_pad.dtype)[-5:], "loss": loss, "logits_grad": logits.grad,
            "accuracy": accuracy, "new_dtype": str(_sos.dtype)[-5:],
            "label_smoothed_ce": torch.nn.functional.cross_entropy(flat, target, ignore_index=-1, label_smoothing=0.1)}


def test_espnet_and_wenet_masks_and_targets():
    ours, _ = run_both(masks_program)
    np.testing.assert_array_equal(ours["pad_mask"].sum(1), [0, 4, 9])
    np.testing.assert_array_equal(ours["subsampled_mask"][:, 0], [[True, True], [True, True], [True, False]])
    assert (ours["y"][2, 1] == 0).all() and ours["new_dtype"] == "int64" and ours["reversed_dtype"] == "int32"
    np.testing.assert_array_equal(ours["nemo_lengths"], [2, 1, 0])
    np.testing.assert_array_equal(ours["floor"], [6, 4, 1])
    np.testing.assert_array_equal(ours["ys_in"], [[9, 4, 5, 6, 9], [9, 7, 8, 9, 9], [9, 3, 3, 3, 3]])
    np.testing.assert_array_equal(ours["ys_out"], [[4, 5, 6, 9, -1], [7, 8, 9, -1, -1], [3, 3, 3, 3, 9]])
    np.testing.assert_array_equal(ours["reversed"], [[6, 5, 4, -1], [8, 7, -1, -1], [3, 3, 3, 3]])
    expected_chunk = np.zeros((13, 13), bool)
    for i in range(13):
        expected_chunk[i, max((i // 3 - 1) * 3, 0):(i // 3 + 1) * 3] = True
    np.testing.assert_array_equal(ours["chunk_masks"][1], expected_chunk & (np.arange(13) < 9))
    np.testing.assert_allclose(ours["logits_grad"][1, 3:], 0, atol=1e-7)  # the ignored positions


def lstmp_program(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, num_layers=2, proj_size=3, bidirectional=True, batch_first=True)
    x = torch.randn(3, 5, 4, requires_grad=True)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 2, 4]), batch_first=True, enforce_sorted=False)
    y, (h, c) = lstm(packed)
    padded, lengths = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, padding_value=-1.0, total_length=6)
    (padded.sum() + h.pow(2).sum() + c.sum()).backward()
    sequence = nn.utils.rnn.pack_sequence([torch.ones(3, 2), torch.ones(1, 2), torch.ones(2, 2)], enforce_sorted=False)
    return {"padded": padded, "lengths": lengths, "h": h, "c": c, "grad": x.grad,
            "names": "|".join(n for n, _ in lstm.named_parameters()), "w_hr_grad": lstm.weight_hr_l0_reverse.grad,
            "batch_sizes": sequence.batch_sizes, "sorted_indices": sequence.sorted_indices,
            "unsorted_indices": sequence.unsorted_indices}


def test_lstm_with_projections_on_packed_sequences():
    ours, _ = run_both(lstmp_program)
    assert ours["padded"].shape == (3, 6, 6) and ours["h"].shape == (4, 3, 3) and ours["c"].shape == (4, 3, 6)
    assert (ours["padded"][1, 2:] == -1).all() and (ours["padded"][:, 5] == -1).all()
    assert (ours["grad"][1, 2:] == 0).all()
    assert "weight_hr_l1_reverse" in ours["names"].split("|")
    np.testing.assert_array_equal(ours["batch_sizes"], [3, 2, 1])


def wav2vec2_program(m):
    """wav2vec 2.0's convolutional positions (weight norm over dim 2, SamePad) and Gumbel vector quantizer."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    C, K, G = 8, 4, 2
    conv = nn.Conv1d(C, C, kernel_size=K, padding=K // 2, groups=G)
    nn.init.normal_(conv.weight, mean=0, std=(4 / (K * C)) ** 0.5)
    nn.init.constant_(conv.bias, 0)
    conv = nn.utils.weight_norm(conv, name="weight", dim=2)
    conv2 = nn.utils.parametrizations.weight_norm(nn.Conv1d(C, C, K, padding=K // 2, groups=G), name="weight",
                                                  dim=2)
    x = torch.randn(2, 10, C, requires_grad=True)
    h = conv(x.transpose(1, 2))
    h = h[:, :, :-1]  # SamePad for an even kernel
    h2 = conv2(x.transpose(1, 2))[:, :, :-1]
    y = x + F.gelu(h).transpose(1, 2) + F.gelu(h2, approximate="tanh").transpose(1, 2)
    # Gumbel vector quantizer
    num_vars, groups, vq_dim = 5, 2, 6
    codevectors = nn.Parameter(torch.FloatTensor(1, groups * num_vars, vq_dim // groups))
    nn.init.uniform_(codevectors)
    weight_proj = nn.Linear(C, groups * num_vars)
    nn.init.normal_(weight_proj.weight, mean=0, std=1)
    nn.init.zeros_(weight_proj.bias)
    bsz, tsz, fsz = y.shape
    logits = weight_proj(y.reshape(-1, fsz)).view(bsz * tsz * groups, -1)
    _, k = logits.max(-1)
    hard_x = logits.new_zeros(*logits.shape).scatter_(-1, k.view(-1, 1), 1.0).view(bsz * tsz, groups, -1)
    hard_probs = torch.mean(hard_x.float(), dim=0)
    code_perplexity = torch.exp(-torch.sum(hard_probs * torch.log(hard_probs + 1e-7), dim=-1)).sum()
    avg_probs = torch.softmax(logits.view(bsz * tsz, groups, -1).float(), dim=-1).mean(dim=0)
    prob_perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-7), dim=-1)).sum()
    q = F.gumbel_softmax(logits.float(), tau=2.0, hard=True).type_as(logits)
    q = q.view(bsz * tsz, -1)
    q = q.unsqueeze(-1) * codevectors
    q = q.view(bsz * tsz, groups, num_vars, -1).sum(-2).view(bsz, tsz, -1)
    loss = q.pow(2).sum() + (num_vars * groups - prob_perplexity) / (num_vars * groups) + y.sum()
    loss.backward()
    return {"h": h, "q": q, "cp": code_perplexity, "pp": prob_perplexity, "gx": x.grad, "gc": codevectors.grad,
            "gv": conv.weight_v.grad, "gg": conv.weight_g.grad, "g_shape": list(conv.weight_g.shape),
            "g2": conv2.parametrizations.weight.original0.grad}


@pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")  # (wav2vec 2.0's code predates it)
def test_wav2vec2_positional_convolution_and_quantizer():
    ours, _ = run_both(wav2vec2_program)
    assert ours["g_shape"] == [1, 1, 4] and ours["h"].shape == (2, 8, 10)
    assert 1 <= ours["cp"] <= 10 and 1 <= ours["pp"] <= 10
    assert ours["q"].shape == (2, 10, 6)
