# ruff: noqa: E731, N806  (the programs are kept as their authors write them)
"""Speech and sequence-transduction programs (see tests/pytorch_programs.py), written by hand as ESPnet, WeNet,
NeMo, torchaudio's recipes and the papers' reference code write them, run on chainrule and on PyTorch from the
same seeds, comparing values and gradients, and checked without PyTorch by NumPy and by invariants.

``F.ctc_loss`` in all its forms (every reduction, ``zero_infinity``, a blank that is not 0, padded 2-d and
concatenated 1-d targets, int32 and int64 lengths, tuples of lengths, float64, unbatched, the top-level
``ctc_loss``, log-probabilities transposed from a batch-first model, -inf log-probabilities of a masked class);
an RNN-T loss written three ways (a (T, U) lattice of ``logsumexp``, ``logaddexp`` rows, anti-diagonal
wavefronts indexed by tensors) with its joint network and prediction LSTM trained; Tacotron 2's location-sensitive
attention; WaveNet's gated causal stack with incremental generation from rolled queues, and mu-law companding; a
CRNN for OCR trained by CTC with greedy decoding; batched beam search (``topk``, ``index_select``, ``scatter``)
and CTC prefix beam search; SpecAugment; Kaldi's fbank framing by ``as_strided``; a Conformer block with
ESPnet's relative positions; FastSpeech's length regulator and VITS's path and monotonic alignment search;
VITS's rational-quadratic spline; WaveGlow's invertible 1x1 convolution; ESPnet's and WeNet's masks; windows,
FFT helpers, ties in ``topk``/``sort``, LSTM with ``proj_size`` on packed sequences; writes through views;
wav2vec 2.0's positional convolution (weight norm over dim 2) and Gumbel vector quantizer."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both


def np_log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_ctc_nll(log_probs, target, blank=0):
    """-ln p(target | log_probs (T, C)) by the α recursion, in plain Python floats over NumPy rows."""
    ext = [blank]
    for label in target:
        ext += [label, blank]
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = log_probs[0, blank]
    if len(ext) > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, len(log_probs)):
        previous = alpha.copy()
        for s in range(len(ext)):
            terms = [previous[s]] + ([previous[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                terms.append(previous[s - 2])
            alpha[s] = np.logaddexp.reduce(terms) + log_probs[t, ext[s]]
    return -np.logaddexp.reduce(alpha[-2:] if len(ext) > 1 else alpha[-1:])


# ----------------------------------------------------------------------------------------------
# CTC in all its forms
# ----------------------------------------------------------------------------------------------


def ctc_forms_program(m):
    torch, F, nn = m.torch, m.F, m.nn
    torch.manual_seed(0)
    T, N, C = 12, 3, 6
    out = {}
    for dt in (torch.float32, torch.float64):
        for ldt in (torch.int32, torch.int64):
            key = f"{str(dt)[-7:]}_{str(ldt)[-5:]}"
            logits = torch.randn(T, N, C, dtype=dt, requires_grad=True)
            lp = F.log_softmax(logits, dim=-1)
            tgt = torch.randint(1, C, (N, 5), dtype=ldt)
            il = torch.tensor([12, 10, 7], dtype=ldt)
            tl = torch.tensor([5, 3, 2], dtype=ldt)
            for red in ("none", "mean", "sum"):
                for zi in (False, True):
                    loss = F.ctc_loss(lp, tgt, il, tl, blank=0, reduction=red, zero_infinity=zi)
                    out[f"{key}_{red}_{zi}"] = loss
                    out[f"{key}_{red}_{zi}_dtype"] = str(loss.dtype).split(".")[-1]
            (out[f"{key}_grad"],) = torch.autograd.grad(F.ctc_loss(lp, tgt, il, tl), logits)
            # concatenated targets, blank the last class, through the layer
            flat = torch.cat([tgt[i, : tl[i]] for i in range(N)]) - 1
            criterion = nn.CTCLoss(blank=C - 1, reduction="sum", zero_infinity=True)
            concatenated = criterion(F.log_softmax(logits, dim=-1), flat, il, tl)
            concatenated.backward()
            out[f"{key}_concatenated"] = concatenated
            out[f"{key}_concatenated_grad"] = logits.grad
            out[f"{key}_targets"] = tgt
    # a batch-first model's output transposed (not contiguous), lengths as tuples
    x = torch.randn(2, 9, 5, requires_grad=True)
    loss = F.ctc_loss(x.log_softmax(2).transpose(0, 1), torch.tensor([[1, 1, 2], [3, 4, 0]]), (9, 8), (3, 2))
    loss.backward()
    out["transposed"], out["transposed_grad"] = loss, x.grad
    # one sample (T, C) with a 1-d target, lengths as lists; the top-level op with an integer reduction
    x = torch.randn(7, 5, requires_grad=True)
    loss = F.ctc_loss(x.log_softmax(-1), torch.tensor([1, 2, 2]), [7], [3])
    loss.backward()
    out["unbatched"], out["unbatched_grad"], out["unbatched_logits"] = loss, x.grad, x
    out["top_level"] = torch.ctc_loss(x.log_softmax(-1).unsqueeze(1), torch.tensor([[1, 2, 2]]), [7], [3])
    out["top_level_sum"] = torch.ctc_loss(x.log_softmax(-1).unsqueeze(1), torch.tensor([[1, 2, 2]]),
                                          torch.tensor([7]), torch.tensor([3]), 0, 2, False)
    # an impossible target (three repeats in four frames), with and without zero_infinity
    x = torch.randn(4, 2, 5, requires_grad=True)
    out["impossible"] = F.ctc_loss(x.log_softmax(-1), torch.tensor([[1, 1, 1], [2, 3, 0]]), [4, 2], [3, 2],
                                   reduction="none")
    loss = F.ctc_loss(x.log_softmax(-1), torch.tensor([[1, 1, 1], [2, 3, 0]]), [4, 2], [3, 2], reduction="mean",
                      zero_infinity=True)
    loss.backward()
    out["impossible_zeroed"], out["impossible_zeroed_grad"] = loss, x.grad
    # empty targets in a target tensor of width 0; a weighted backward of reduction='none'
    y = torch.randn(5, 2, 3, requires_grad=True)
    loss = F.ctc_loss(y.log_softmax(-1), torch.zeros(2, 0, dtype=torch.long), [5, 3], [0, 0])
    loss.backward()
    out["empty"], out["empty_grad"] = loss, y.grad
    z = torch.randn(7, 3, 5, requires_grad=True)
    loss = F.ctc_loss(z.log_softmax(-1), torch.tensor([1, 2, 3, 3, 4, 1]), torch.tensor([7, 7, 6]),
                      torch.tensor([2, 2, 2]), reduction="none")
    loss.backward(torch.tensor([1.0, 0.0, 2.0]))
    out["weighted"], out["weighted_grad"] = loss, z.grad
    return out


def test_ctc_loss_forms():
    ours, _ = run_both(ctc_forms_program, rtol=2e-5, atol=2e-6)
    lp = np_log_softmax(ours["unbatched_logits"].astype(np.float64))
    np.testing.assert_allclose(ours["unbatched"], np_ctc_nll(lp, [1, 2, 2]) / 3, rtol=1e-5)
    np.testing.assert_allclose(ours["top_level"], [np_ctc_nll(lp, [1, 2, 2])], rtol=1e-5)
    np.testing.assert_allclose(ours["top_level_sum"], np_ctc_nll(lp, [1, 2, 2]), rtol=1e-5)
    for key in ("float32_int32", "float64_int64"):
        none, lengths = ours[f"{key}_none_False"], np.array([5, 3, 2])
        np.testing.assert_allclose(ours[f"{key}_mean_False"], np.mean(none / lengths), rtol=1e-6)
        np.testing.assert_allclose(ours[f"{key}_sum_False"], none.sum(), rtol=1e-6)
        assert ours[f"{key}_none_False_dtype"] == key[:7]
        # the gradient through log_softmax sums to 0 over the classes of each frame, and is 0 past the input
        np.testing.assert_allclose(ours[f"{key}_grad"].sum(-1), 0, atol=1e-6)
        assert (ours[f"{key}_grad"][7:, 2] == 0).all() and (ours[f"{key}_grad"][10:, 1] == 0).all()
    assert np.isinf(ours["impossible"][0]) and np.isfinite(ours["impossible"][1])
    assert (ours["impossible_zeroed_grad"][:, 0] == 0).all()
    assert (ours["weighted_grad"][:, 1] == 0).all()


def ctc_masked_class_program(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    T, N, C = 60, 3, 8
    logits = (torch.randn(T, N, C) * 8).requires_grad_()
    lp = logits.masked_fill(torch.arange(C) == C - 1, float("-inf")).log_softmax(-1)  # a class never allowed
    targets = torch.randint(1, C - 1, (N, 20))
    out = {red: F.ctc_loss(lp, targets, torch.tensor([60, 55, 41]), torch.tensor([20, 17, 9]), reduction=red)
           for red in ("none", "sum", "mean")}
    out["sum"].backward()
    out["grad"] = logits.grad
    return out


def test_ctc_loss_with_a_class_masked_to_minus_infinity():
    # PyTorch's backward, exp(x) - posterior with x = -inf, makes NaN of every gradient on those frames (e^(-inf+inf));
    # chainrule's is the exact derivative (README), so the gradient is compared where PyTorch's is a number
    ours, theirs = run_both(ctc_masked_class_program, compare=False)
    if theirs is not None:
        for red in ("none", "sum", "mean"):
            np.testing.assert_allclose(ours[red], theirs[red], rtol=2e-5)
        finite = np.isfinite(theirs["grad"])
        np.testing.assert_allclose(ours["grad"][finite], theirs["grad"][finite], rtol=2e-5, atol=1e-6)
    assert np.isfinite(ours["grad"]).all() and (ours["grad"][..., -1] == 0).all()
    np.testing.assert_allclose(ours["grad"].sum(-1), 0, atol=1e-5)
    assert (ours["grad"][41:, 2] == 0).all()


# ----------------------------------------------------------------------------------------------
# RNN-T (Graves 2012): the loss by hand over the (T, U) lattice, its joint network, three ways
# ----------------------------------------------------------------------------------------------


def rnnt_training_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    B, T, U, V, H = 2, 5, 3, 5, 6
    blank = 0

    class Joint(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(H, H)
            self.pred = nn.Linear(H, H, bias=False)
            self.out = nn.Linear(H, V)

        def forward(self, f, g):
            return self.out(torch.tanh(self.enc(f).unsqueeze(2) + self.pred(g).unsqueeze(1)))

    class Predictor(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, H, padding_idx=blank)
            self.rnn = nn.LSTM(H, H, batch_first=True)

        def forward(self, y):
            out, _ = self.rnn(self.emb(F.pad(y, (1, 0), value=blank)))
            return out

    def rnnt_loss(logits, y, f_len, y_len):
        lp = logits.log_softmax(dim=-1)  # B, T, U+1, V
        blank_lp = lp[..., blank]
        emit_lp = torch.gather(lp[:, :, :-1, :], 3, y[:, None, :, None].expand(-1, lp.shape[1], -1, -1)).squeeze(3)
        alphas = [[None] * (U + 1) for _ in range(T)]
        for t in range(T):
            for u in range(U + 1):
                if t == 0 and u == 0:
                    alphas[t][u] = torch.zeros(B)
                    continue
                candidates = []
                if t > 0:
                    candidates.append(alphas[t - 1][u] + blank_lp[:, t - 1, u])
                if u > 0:
                    candidates.append(alphas[t][u - 1] + emit_lp[:, t, u - 1])
                alphas[t][u] = torch.logsumexp(torch.stack(candidates), dim=0)
        alpha = torch.stack([torch.stack(row, dim=1) for row in alphas], dim=1)  # B, T, U+1
        b = torch.arange(B)
        log_likelihood = alpha[b, f_len.long() - 1, y_len.long()] + blank_lp[b, f_len.long() - 1, y_len.long()]
        return -log_likelihood, alpha, lp

    encoder, predictor, joint = nn.GRU(4, H, batch_first=True), Predictor(), Joint()
    params = list(encoder.parameters()) + list(predictor.parameters()) + list(joint.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.randn(B, T, 4)
    y = torch.randint(1, V, (B, U))
    f_len = torch.tensor([5, 3], dtype=torch.int32)
    y_len = torch.tensor([3, 2], dtype=torch.int32)
    out = {}
    for step in range(3):
        f, _ = encoder(x)
        nll, alpha, lp = rnnt_loss(joint(f, predictor(y)), y, f_len, y_len)
        loss = (nll / y_len).mean()
        opt.zero_grad()
        loss.backward()
        out[f"norm{step}"] = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        out[f"loss{step}"] = loss
    out.update(alpha=alpha, log_probs=lp, nll=nll, y=y, w=joint.out.weight, emb=predictor.emb.weight)
    return out


def test_rnnt_loss_by_hand_trains_a_transducer():
    ours, _ = run_both(rnnt_training_program, rtol=1e-4, atol=1e-5)
    lp, y = ours["log_probs"].astype(np.float64), ours["y"]
    for b, (frames, labels) in enumerate([(5, 3), (3, 2)]):  # the lattice again, in NumPy
        alpha = np.full((frames, labels + 1), -np.inf)
        for t in range(frames):
            for u in range(labels + 1):
                terms = [0.0] if t == u == 0 else []
                if t > 0:
                    terms.append(alpha[t - 1, u] + lp[b, t - 1, u, 0])
                if u > 0:
                    terms.append(alpha[t, u - 1] + lp[b, t, u - 1, y[b, u - 1]])
                alpha[t, u] = np.logaddexp.reduce(terms)
        np.testing.assert_allclose(ours["alpha"][b, :frames, :labels + 1], alpha, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours["nll"][b], -(alpha[-1, -1] + lp[b, frames - 1, labels, 0]), rtol=1e-5)
    assert (ours["emb"][0] == 0).all()  # padding_idx keeps its row at zero through Adam
    assert ours["loss2"] < ours["loss0"]


def rnnt_vectorised_program(m):
    """The same loss by rows of logaddexp and by anti-diagonal wavefronts (the lattice indexed by tensors)."""
    torch = m.torch
    torch.manual_seed(2)
    B, T, U1, V = 2, 5, 4, 5
    logits = torch.randn(B, T, U1, V, dtype=torch.float64, requires_grad=True)
    y = torch.randint(1, V, (B, U1 - 1))
    lp = logits.log_softmax(-1)
    blank = lp[..., 0]
    emit = torch.cat([lp[:, :, :-1].gather(3, y[:, None, :, None].expand(B, T, U1 - 1, 1)).squeeze(-1),
                      torch.full((B, T, 1), float("-inf"), dtype=lp.dtype)], dim=2)
    # rows: α_t(u) = logaddexp(α_{t-1}(u) + blank, α_t(u-1) + emit), the first row a cumulative sum
    first = lp.new_zeros(B, U1)
    first[:, 1:] = torch.cumsum(emit[:, 0, :-1], dim=1)
    rows = [first]
    for t in range(1, T):
        previous = rows[-1] + blank[:, t - 1]
        new = [previous[:, 0]]
        for u in range(1, U1):
            new.append(torch.logaddexp(previous[:, u], new[-1] + emit[:, t, u - 1]))
        rows.append(torch.stack(new, 1))
    by_rows = -(torch.stack(rows, 1)[:, -1, -1] + blank[:, -1, -1])
    # wavefronts n = t + u, every node of a diagonal at once
    alpha = torch.full((B, T, U1), float("-inf"), dtype=lp.dtype)
    alpha[:, 0, 0] = 0.0
    minus_inf = torch.tensor(float("-inf"), dtype=lp.dtype)
    for n in range(1, T + U1 - 1):
        t = torch.arange(max(0, n - U1 + 1), min(n, T - 1) + 1)
        u = n - t
        from_t = torch.where(t > 0, alpha[:, (t - 1).clamp(min=0), u] + blank[:, (t - 1).clamp(min=0), u], minus_inf)
        from_u = torch.where(u > 0, alpha[:, t, (u - 1).clamp(min=0)] + emit[:, t, (u - 1).clamp(min=0)], minus_inf)
        alpha[:, t, u] = torch.logaddexp(from_t, from_u)
    by_diagonals = -(alpha[:, -1, -1] + blank[:, -1, -1])
    (grad_rows,) = torch.autograd.grad(by_rows.sum(), logits, retain_graph=True)
    by_diagonals.mean().backward()
    return {"by_rows": by_rows, "by_diagonals": by_diagonals, "grad_rows": grad_rows, "grad": logits.grad,
            "alpha": alpha, "lce": torch.logcumsumexp(lp[:, 0, :, 1], dim=1),
            "diagonal": torch.diagonal(lp[..., 0], offset=1, dim1=1, dim2=2),
            "strided": lp[..., 0].contiguous().as_strided((B, 2, 2), (T * U1, U1 + 1, 1))}


def test_rnnt_loss_vectorised_two_ways():
    ours, _ = run_both(rnnt_vectorised_program, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["by_rows"], ours["by_diagonals"], rtol=1e-12)
    np.testing.assert_allclose(ours["grad"], ours["grad_rows"] / 2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["grad"].sum(-1), 0, atol=1e-12)  # through log_softmax
    assert ours["alpha"][0, 0, 0] == 0 and (ours["alpha"] <= 0).all()


# ----------------------------------------------------------------------------------------------
# Tacotron 2: location-sensitive attention (a conv1d over the previous and cumulative weights)
# ----------------------------------------------------------------------------------------------


def location_attention_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class LocationLayer(nn.Module):
        def __init__(self, n_filters, kernel, dim):
            super().__init__()
            self.location_conv = nn.Conv1d(2, n_filters, kernel_size=kernel, padding=(kernel - 1) // 2, bias=False)
            self.location_dense = nn.Linear(n_filters, dim, bias=False)
            nn.init.xavier_uniform_(self.location_dense.weight, gain=nn.init.calculate_gain("tanh"))

        def forward(self, weights_cat):
            return self.location_dense(self.location_conv(weights_cat).transpose(1, 2))

    class Attention(nn.Module):
        def __init__(self, rnn_dim=12, emb_dim=10, att_dim=8):
            super().__init__()
            self.query_layer = nn.Linear(rnn_dim, att_dim, bias=False)
            self.memory_layer = nn.Linear(emb_dim, att_dim, bias=False)
            self.v = nn.Linear(att_dim, 1, bias=False)
            self.location_layer = LocationLayer(4, 5, att_dim)
            self.score_mask_value = -float("inf")

        def forward(self, h, memory, processed_memory, weights_cat, mask):
            energies = self.v(torch.tanh(self.query_layer(h.unsqueeze(1)) + self.location_layer(weights_cat)
                                         + processed_memory)).squeeze(-1)
            if mask is not None:
                energies.data.masked_fill_(mask, self.score_mask_value)
            weights = F.softmax(energies, dim=1)
            return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights

    attention, cell, proj = Attention(), nn.LSTMCell(10 + 3, 12), nn.Linear(12 + 10, 3)
    opt = torch.optim.SGD(list(attention.parameters()) + list(cell.parameters()) + list(proj.parameters()), lr=0.1,
                          momentum=0.9)
    B, L, D = 2, 7, 10
    memory = torch.randn(B, L, D)
    lengths = torch.tensor([7, 5])
    ids = torch.arange(0, lengths.max(), out=torch.LongTensor(lengths.max().item()))
    mask = ~(ids < lengths.unsqueeze(1)).bool()
    target = torch.randn(B, 6, 3)
    out = {}
    for step in range(2):
        h, c = torch.zeros(B, 12), torch.zeros(B, 12)
        weights, cumulative, context = torch.zeros(B, L), torch.zeros(B, L), torch.zeros(B, D)
        processed = attention.memory_layer(memory)
        previous = torch.zeros(B, 3)
        frames, alignments = [], []
        for t in range(target.shape[1]):
            h, c = cell(torch.cat((previous, context), -1), (h, c))
            weights_cat = torch.cat((weights.unsqueeze(1), cumulative.unsqueeze(1)), dim=1)
            context, weights = attention(h, memory, processed, weights_cat, mask)
            cumulative += weights
            frames.append(proj(torch.cat((h, context), dim=1)))
            alignments.append(weights)
            previous = target[:, t]
        mel = torch.stack(frames).transpose(0, 1)
        loss = F.mse_loss(mel, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"loss{step}"] = loss
    out.update(alignments=torch.stack(alignments).transpose(0, 1), cumulative=cumulative,
               query=attention.query_layer.weight, conv=attention.location_layer.location_conv.weight)
    return out


def test_tacotron2_location_sensitive_attention():
    ours, _ = run_both(location_attention_program, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["alignments"].sum(-1), 1, rtol=1e-5)
    assert (ours["alignments"][1, :, 5:] == 0).all()  # the padded memory of the second utterance
    np.testing.assert_allclose(ours["cumulative"], ours["alignments"].sum(1), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# WaveNet: gated causal stack, incremental generation from queues; mu-law companding
# ----------------------------------------------------------------------------------------------


def wavenet_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    C, R, layers = 8, 4, 3
    embed = nn.Embedding(C, R)
    convs = nn.ModuleList([nn.Conv1d(R, 2 * R, 2, dilation=2 ** i) for i in range(layers)])
    residual = nn.ModuleList([nn.Conv1d(R, R, 1) for _ in range(layers)])
    skip = nn.ModuleList([nn.Conv1d(R, R, 1) for _ in range(layers)])
    head = nn.Sequential(nn.ReLU(), nn.Conv1d(R, R, 1), nn.ReLU(), nn.Conv1d(R, C, 1))

    def forward(x):
        h = embed(x).transpose(1, 2)
        skips = 0
        for i in range(layers):
            z = convs[i](F.pad(h, (2 ** i, 0)))
            a, b = z.chunk(2, dim=1)
            gated = torch.tanh(a) * torch.sigmoid(b)
            skips = skips + skip[i](gated)
            h = h + residual[i](gated)
        return head(skips)

    x = torch.randint(0, C, (2, 10))
    loss = F.cross_entropy(forward(x)[:, :, :-1], x[:, 1:])
    loss.backward()
    with torch.no_grad():  # generation: one queue of past inputs per layer, rolled left each step
        queues = [torch.zeros(1, R, 2 ** i + 1) for i in range(layers)]
        sample = torch.zeros(1, dtype=torch.long)
        generator = torch.Generator().manual_seed(5)
        generated, step_logits = [], []
        for _ in range(6):
            h = embed(sample).unsqueeze(-1)
            skips = 0
            for i in range(layers):
                queues[i] = torch.roll(queues[i], -1, dims=2)
                queues[i][:, :, -1:] = h
                z = F.conv1d(queues[i][:, :, ::2 ** i][:, :, -2:], convs[i].weight, convs[i].bias)
                a, b = z.chunk(2, dim=1)
                gated = torch.tanh(a) * torch.sigmoid(b)
                skips = skips + skip[i](gated)
                h = h + residual[i](gated)
            logits = head(skips)[:, :, -1]
            step_logits.append(logits)
            sample = torch.multinomial(F.softmax(logits / 0.8, dim=-1), 1, generator=generator).squeeze(1)
            generated.append(sample)
        generated = torch.cat(generated)
        teacher_forced = forward(torch.cat([torch.zeros(1, dtype=torch.long), generated[:-1]]).unsqueeze(0))[0].t()
    return {"loss": loss, "grad": convs[1].weight.grad, "generated": generated,
            "incremental": torch.cat(step_logits), "teacher_forced": teacher_forced}


def test_wavenet_training_and_incremental_generation():
    ours, _ = run_both(wavenet_program)
    np.testing.assert_allclose(ours["incremental"], ours["teacher_forced"], rtol=1e-5, atol=1e-6)
    assert ours["generated"].shape == (6,) and ((ours["generated"] >= 0) & (ours["generated"] < 8)).all()


def mu_law_program(m):
    torch = m.torch
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    mu = 255
    companded = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / math.log1p(mu)
    classes = ((companded + 1) / 2 * mu + 0.5).to(torch.int64)
    y = 2 * (classes.float() / mu) - 1
    expanded = torch.sign(y) * (torch.exp(torch.abs(y) * math.log1p(mu)) - 1.0) / mu
    mu_t = torch.tensor(mu, dtype=x.dtype)
    companded_t = torch.sign(x) * torch.log1p(mu_t * x.abs()) / torch.log1p(mu_t)
    expanded_pow = torch.sign(companded_t) * (torch.pow(1 + mu_t, companded_t.abs()) - 1) / mu_t
    expanded_expm1 = torch.sign(y) * torch.expm1(y.abs() * torch.log1p(mu_t)) / mu_t
    one_hot = torch.nn.functional.one_hot(classes, mu + 1)
    return {"x": x, "companded": companded, "classes": classes, "expanded": expanded, "expanded_pow": expanded_pow,
            "expanded_expm1": expanded_expm1, "expanded_dtype": str(expanded.dtype)[-7:],
            "expm1_dtype": str(expanded_expm1.dtype)[-7:], "one_hot": one_hot.sum(0),
            "one_hot_dtype": str(one_hot.dtype)[-5:],
            "bucketized": torch.bucketize(companded, torch.linspace(-1, 1, mu + 1, dtype=torch.float64))}


def test_mu_law_companding_and_expansion():
    ours, _ = run_both(mu_law_program, rtol=1e-6, atol=1e-6)
    x = ours["x"]  # (PyTorch's linspace: its middle point is -1.1e-16, not 0)
    np.testing.assert_allclose(x, np.linspace(-1, 1, 101), atol=1e-15)
    companded = np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255)
    np.testing.assert_allclose(ours["companded"], companded, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ours["classes"], ((companded + 1) / 2 * 255 + 0.5).astype(np.int64))
    np.testing.assert_allclose(ours["expanded_pow"], x, atol=1e-12)
    np.testing.assert_allclose(ours["expanded"], ours["expanded_expm1"], atol=1e-6)
    assert ours["expanded_dtype"] == "float32" and ours["expm1_dtype"] == "float32"  # classes.float()
    assert ours["one_hot"].sum() == 101 and ours["one_hot_dtype"] == "int64"


# ----------------------------------------------------------------------------------------------
# CRNN for OCR (Shi et al. 2015) trained by CTC, greedy decoding
# ----------------------------------------------------------------------------------------------


def crnn_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class BidirectionalLSTM(nn.Module):
        def __init__(self, n_in, n_hidden, n_out):
            super().__init__()
            self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
            self.embedding = nn.Linear(n_hidden * 2, n_out)

        def forward(self, x):
            recurrent, _ = self.rnn(x)
            T, b, h = recurrent.size()
            return self.embedding(recurrent.view(T * b, h)).view(T, b, -1)

    class CRNN(nn.Module):
        def __init__(self, nc=1, nclass=6, nh=8):
            super().__init__()
            cnn = nn.Sequential()
            cnn.add_module("conv0", nn.Conv2d(nc, 4, 3, 1, 1))
            cnn.add_module("relu0", nn.ReLU(True))
            cnn.add_module("pooling0", nn.MaxPool2d(2, 2))
            cnn.add_module("conv1", nn.Conv2d(4, 8, 3, 1, 1))
            cnn.add_module("batchnorm1", nn.BatchNorm2d(8))
            cnn.add_module("relu1", nn.LeakyReLU(0.2, inplace=True))
            cnn.add_module("pooling1", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
            cnn.add_module("conv2", nn.Conv2d(8, 8, (2, 1), 1, 0))
            self.cnn = cnn
            self.rnn = nn.Sequential(BidirectionalLSTM(8, nh, nh), BidirectionalLSTM(nh, nh, nclass))

        def forward(self, x):
            conv = self.cnn(x)
            b, c, h, w = conv.size()
            assert h == 1, "the height of conv must be 1"
            return F.log_softmax(self.rnn(conv.squeeze(2).permute(2, 0, 1)), dim=2)

    model = CRNN()
    criterion = nn.CTCLoss(zero_infinity=True)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    images = torch.randn(3, 1, 8, 16)
    texts, alphabet = ["abc", "ca", "bbe"], "abcde"
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    out = {}
    for step in range(3):
        preds = model(images)
        length = torch.IntTensor([len(t) for t in texts])
        text = torch.IntTensor([index[ch] for t in texts for ch in t])
        preds_size = torch.IntTensor([preds.size(0)] * images.size(0))
        cost = criterion(preds, text, preds_size, length) / images.size(0)
        model.zero_grad()
        cost.backward()
        opt.step()
        out[f"cost{step}"] = cost
    _, best = preds.max(2)
    best = best.transpose(1, 0).contiguous().view(-1)
    decoded = []
    for i in range(3):
        seq = best[i * preds.size(0):(i + 1) * preds.size(0)]
        chars = [alphabet[seq[j] - 1] for j in range(seq.numel())
                 if seq[j] != 0 and not (j > 0 and seq[j - 1] == seq[j])]
        decoded.append("".join(chars))
    out.update(decoded="|".join(decoded), preds=preds, running_mean=model.cnn.batchnorm1.running_mean)
    model.eval()
    with torch.no_grad():
        out["eval"] = model(images)
    return out


def test_crnn_ocr_with_ctc():
    ours, _ = run_both(crnn_program, rtol=1e-4, atol=1e-5)
    assert ours["preds"].shape == (9, 3, 6)
    np.testing.assert_allclose(np.exp(ours["preds"]).sum(-1), 1, rtol=1e-5)
    best = ours["preds"].argmax(-1).T
    expected = ["".join("abcde"[k - 1] for j, k in enumerate(row) if k and (j == 0 or row[j - 1] != k))
                for row in best]
    assert ours["decoded"] == "|".join(expected)
    assert all(np.isfinite(ours[f"cost{i}"]) for i in range(3))


# ----------------------------------------------------------------------------------------------
# Decoding: batched beam search over a GRU decoder, and CTC prefix beam search
# ----------------------------------------------------------------------------------------------


def beam_search_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    V, H, beam, B = 7, 6, 3, 2
    emb, cell, out_proj = nn.Embedding(V, H), nn.GRUCell(H, H), nn.Linear(H, V)
    sos, eos = 1, 2
    h = torch.randn(B, H).repeat_interleave(beam, dim=0)
    tokens = torch.full((B * beam, 1), sos, dtype=torch.long)
    scores = torch.zeros(B, beam)
    scores[:, 1:] = float("-inf")
    scores = scores.view(-1)
    finished = torch.zeros(B * beam, dtype=torch.bool)
    out = {}
    with torch.no_grad():
        for step in range(5):
            h = cell(emb(tokens[:, -1]), h)
            lp = F.log_softmax(out_proj(h), dim=-1)
            lp = lp.masked_fill(finished.unsqueeze(1), float("-inf"))
            lp[:, eos] = torch.where(finished, torch.zeros_like(lp[:, eos]), lp[:, eos])
            top_scores, top_idx = (scores.unsqueeze(1) + lp).view(B, -1).topk(beam, dim=1, largest=True, sorted=True)
            beam_idx = torch.div(top_idx, V, rounding_mode="floor")
            token_idx = top_idx % V
            selected = (beam_idx + (torch.arange(B) * beam).unsqueeze(1)).view(-1)
            tokens = torch.cat([tokens.index_select(0, selected), token_idx.view(-1, 1)], dim=1)
            h = h[selected]
            finished = finished[selected] | (token_idx.view(-1) == eos)
            scores = top_scores.view(-1)
            out[f"scores{step}"] = scores.clone()
        lengths = (tokens != eos).sum(1).float()
        normalised = scores / lengths.pow(0.6)
        best = normalised.view(B, beam).argmax(1)
        out["best"] = tokens.view(B, beam, -1)[torch.arange(B), best]
        out["tokens"] = tokens
        out["one_hot_last"] = torch.zeros(B * beam, V).scatter_(1, tokens[:, -1:], 1.0)
        out["gathered"] = lp.gather(1, tokens[:, -1:])
        out["scatter_add"] = torch.zeros(B, V).scatter_add_(1, token_idx, top_scores.exp())
        out["sorted"] = torch.sort(normalised, descending=True, stable=True)
    return out


def test_batched_beam_search():
    ours, _ = run_both(beam_search_program)
    for step in range(5):
        scores = ours[f"scores{step}"].reshape(2, 3)
        assert (np.diff(scores, axis=1) <= 0).all()  # topk sorted
    assert (ours["tokens"][:, 0] == 1).all() and ours["tokens"].shape == (6, 6)
    np.testing.assert_array_equal(ours["one_hot_last"].argmax(1), ours["tokens"][:, -1])


def ctc_prefix_beam_program(m):
    torch = m.torch
    torch.manual_seed(3)
    T, C, beam = 8, 4, 3
    log_probs = torch.randn(T, C, dtype=torch.float64).log_softmax(-1)
    lae = lambda *terms: float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0))
    beams = {(): (0.0, float("-inf"))}  # prefix -> (ln p ending in blank, ln p ending in a label)
    for t in range(T):
        following = {}
        top_values, top_classes = log_probs[t].topk(C)
        for prefix, (p_blank, p_label) in beams.items():
            for value, c in zip(top_values.tolist(), top_classes.tolist()):
                if c == 0:
                    b, n = following.get(prefix, (float("-inf"), float("-inf")))
                    following[prefix] = (lae(b, p_blank + value, p_label + value), n)
                    continue
                longer = prefix + (c,)
                b, n = following.get(longer, (float("-inf"), float("-inf")))
                if prefix and prefix[-1] == c:
                    following[longer] = (b, lae(n, p_blank + value))
                    b2, n2 = following.get(prefix, (float("-inf"), float("-inf")))
                    following[prefix] = (b2, lae(n2, p_label + value))
                else:
                    following[longer] = (b, lae(n, p_blank + value, p_label + value))
        ranked = sorted(following.items(), key=lambda kv: -lae(*kv[1]))
        beams = dict(ranked[:beam])
    greedy = torch.unique_consecutive(log_probs.argmax(-1))
    return {"prefixes": [list(p) for p in beams], "scores": [lae(*v) for v in beams.values()],
            "greedy": greedy[greedy != 0], "log_probs": log_probs}


def test_ctc_prefix_beam_search():
    ours, _ = run_both(ctc_prefix_beam_program, rtol=1e-9, atol=1e-10)
    log_probs = ours["log_probs"]
    for prefix, score in zip(ours["prefixes"], ours["scores"]):
        # a pruned beam keeps part of a prefix's alignments: its score is at most ln p(prefix)
        assert score <= -np_ctc_nll(log_probs, prefix) + 1e-9
    assert sorted(ours["scores"], reverse=True) == ours["scores"]


# ----------------------------------------------------------------------------------------------
# Features: SpecAugment, Kaldi's fbank framing by as_strided, log-mel by hand with deltas
# ----------------------------------------------------------------------------------------------


def specaugment_program(m):
    torch, F = m.torch, m.F
    generator = torch.Generator().manual_seed(0)
    spec = torch.randn(2, 20, 30, requires_grad=True)
    x = spec * 1.0
    B, n_freq, n_time = x.shape
    for _ in range(2):  # frequency masks drawn per example (torchaudio's mask_along_axis_iid)
        value = torch.rand(B, generator=generator) * 5
        min_value = torch.rand(B, generator=generator) * (n_freq - value)
        mask_start = min_value.long()[..., None, None]
        mask_end = (min_value.long() + value.long())[..., None, None]
        bins = torch.arange(0, n_freq, dtype=x.dtype)[:, None]
        x = x.masked_fill((bins >= mask_start) & (bins < mask_end), 0.0)
    y = x.clone()
    starts = []
    for b in range(B):  # time masks filled with the mean, in place (ESPnet)
        width = int(torch.randint(0, 6, (1,), generator=generator))
        t0 = int(torch.randint(0, n_time - width, (1,), generator=generator))
        y[b, :, t0:t0 + width] = y[b].mean()
        starts.append([t0, width])
    center, warped = 12, 14  # time warp by bicubic interpolation of both sides
    left = F.interpolate(y[:, None, :, :center], (n_freq, warped), mode="bicubic", align_corners=False)
    right = F.interpolate(y[:, None, :, center:], (n_freq, n_time - warped), mode="bicubic", align_corners=False)
    warped_spec = torch.cat([left, right], dim=-1).squeeze(1)
    (warped_spec ** 2).sum().backward()
    return {"x": x, "y": y, "warped": warped_spec, "grad": spec.grad, "spec": spec, "starts": starts}


def test_specaugment():
    ours, _ = run_both(specaugment_program, rtol=1e-5, atol=1e-5)
    x, spec = ours["x"], ours["spec"]
    masked = x == 0
    assert masked.all(axis=2).any() and ((x == spec) | masked).all()  # whole frequency rows, the rest untouched
    assert (ours["grad"][masked] == 0).all()
    for b, (t0, width) in enumerate(ours["starts"]):
        np.testing.assert_allclose(ours["y"][b, :, t0:t0 + width], x[b].mean(), rtol=1e-6)


def kaldi_fbank_program(m, snip_edges):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    wav = (torch.randn(1, 1200, dtype=torch.float64) * 0.1).requires_grad_()
    waveform = wav[0]
    window_size, window_shift = 200, 80
    eps = torch.tensor(torch.finfo(torch.float).eps)
    num_samples = waveform.size(0)
    strides = (window_shift * waveform.stride(0), waveform.stride(0))
    if snip_edges:
        frames = 1 + (num_samples - window_size) // window_shift
    else:
        reversed_waveform = torch.flip(waveform, [0])
        frames = (num_samples + (window_shift // 2)) // window_shift
        pad = window_size // 2 - window_shift // 2
        waveform = torch.cat((reversed_waveform[-pad:], waveform, reversed_waveform), dim=0)
    strided = waveform.as_strided((frames, window_size), strides)
    strided = strided - torch.mean(strided, dim=1).unsqueeze(1)
    log_energy = torch.max(strided.pow(2).sum(1), eps.to(strided.dtype)).log()
    offset = F.pad(strided.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    strided = strided - 0.97 * offset[:, :-1]
    strided = strided * torch.hann_window(window_size, periodic=False, dtype=strided.dtype).pow(0.85).unsqueeze(0)
    padded_window_size = 2 ** (window_size - 1).bit_length()
    strided = F.pad(strided.unsqueeze(0), (0, padded_window_size - window_size), mode="constant", value=0).squeeze(0)
    spectrum = torch.fft.rfft(strided).abs().pow(2.0)
    mel_energies = torch.max(spectrum[:, :40] @ torch.rand(40, 6, dtype=strided.dtype), eps.to(strided.dtype)).log()
    feats = torch.cat((log_energy.unsqueeze(1), mel_energies), dim=1)
    feats = feats - torch.mean(feats, dim=0).unsqueeze(0)
    (feats * torch.arange(7.0, dtype=feats.dtype)).sum().backward()
    return {"feats": feats, "grad": wav.grad, "wav": wav, "stride": list(strided.stride())}


@pytest.mark.parametrize("snip_edges", [True, False])
def test_kaldi_fbank_framing_by_as_strided(snip_edges):
    ours, _ = run_both(kaldi_fbank_program, snip_edges, rtol=1e-9, atol=1e-10)
    wav = ours["wav"][0].astype(np.float64)
    assert ours["feats"].shape == ((13, 7) if snip_edges else (15, 7))
    if snip_edges:
        frames = np.lib.stride_tricks.sliding_window_view(wav, 200)[::80]
        frames = frames - frames.mean(1, keepdims=True)
        energy = np.log(np.maximum((frames ** 2).sum(1), np.finfo(np.float32).eps))
        np.testing.assert_allclose(ours["feats"][:, 0], energy - energy.mean(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["feats"].mean(0), 0, atol=1e-12)


def logmel_program(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    wav = torch.randn(2, 1600, dtype=torch.float64, requires_grad=True)
    n_fft, hop, n_mels, sr = 400, 160, 10, 16000
    mel = lambda f: 1127.0 * torch.log(1.0 + f / 700.0)
    mel_low, mel_high = mel(torch.tensor(20.0, dtype=torch.float64)), mel(torch.tensor(8000.0, dtype=torch.float64))
    delta = (mel_high - mel_low) / (n_mels + 1)
    b = torch.arange(n_mels).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    freqs = mel(sr / n_fft * torch.arange(n_fft // 2 + 1, dtype=torch.float64))
    bins = torch.max(torch.zeros(1, dtype=torch.float64), torch.min((freqs - left) / (center - left),
                                                                     (right - freqs) / (right - center)))
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), return_complex=True,
                      center=True, pad_mode="reflect")
    power = spec.real ** 2 + spec.imag ** 2
    log_mel = torch.log10(torch.clamp(power.transpose(1, 2) @ bins.T, min=1e-10))
    n = 2  # deltas (torchaudio's compute_deltas), by a replicate pad and by padding='same'
    denom = n * (n + 1) * (2 * n + 1) / 3
    feats = log_mel.transpose(1, 2)
    kernel = torch.arange(-n, n + 1, dtype=feats.dtype).repeat(n_mels, 1, 1)
    deltas = F.conv1d(F.pad(feats, (n, n), mode="replicate"), kernel, groups=n_mels) / denom
    deltas_same = F.conv1d(feats, kernel, groups=n_mels, padding="same") / denom
    (log_mel.mean() + deltas.pow(2).mean() + deltas_same.abs().mean()).backward()
    return {"log_mel": log_mel, "deltas": deltas, "deltas_same": deltas_same, "grad": wav.grad, "bins": bins,
            "wav": wav}


def test_log_mel_by_hand_with_deltas():
    ours, _ = run_both(logmel_program, rtol=1e-7, atol=1e-9)
    wav = ours["wav"].astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wav, ((0, 0), (200, 200)), mode="reflect"), 400,
                                                      -1)[:, ::160]
    power = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], axis=-1)) ** 2
    np.testing.assert_allclose(ours["log_mel"], np.log10(np.maximum(power @ ours["bins"].T, 1e-10)), rtol=1e-9)
    feats = ours["log_mel"].transpose(0, 2, 1)
    padded = np.pad(feats, ((0, 0), (0, 0), (2, 2)), mode="edge")
    by_hand = sum(k * padded[..., 2 + k:padded.shape[-1] - 2 + k] for k in (-2, -1, 1, 2)) / 10
    np.testing.assert_allclose(ours["deltas"], by_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["deltas_same"][..., 2:-2], by_hand[..., 2:-2], rtol=1e-9, atol=1e-12)


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
# Text to speech: FastSpeech's length regulator, VITS's path, monotonic alignment search and spline,
# guided attention (DC-TTS), WaveGlow's invertible 1x1 convolution
# ----------------------------------------------------------------------------------------------


def length_regulator_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    B, L, D = 2, 4, 3
    x = torch.randn(B, L, D, requires_grad=True)
    durations = torch.tensor([[1, 2, 0, 3], [2, 2, 1, 0]])
    expanded = [torch.repeat_interleave(x[i], durations[i], dim=0) for i in range(B)]
    padded = nn.utils.rnn.pad_sequence(expanded, batch_first=True, padding_value=0.0)
    left = nn.utils.rnn.pad_sequence(expanded, batch_first=True, padding_value=-1.0, padding_side="left")
    mel_lengths = torch.LongTensor([e.size(0) for e in expanded])

    def sequence_mask(length, max_length=None):
        if max_length is None:
            max_length = length.max()
        return torch.arange(max_length, dtype=length.dtype, device=length.device).unsqueeze(0) < length.unsqueeze(1)

    T = int(durations.sum(1).max())
    cumulative = torch.cumsum(durations, -1)
    path = sequence_mask(cumulative.view(B * L), T).to(x.dtype).view(B, L, T)
    path = path - F.pad(path, (0, 0, 1, 0, 0, 0))[:, :-1]
    by_path = torch.matmul(path.transpose(1, 2), x)
    token_of_frame = torch.searchsorted(cumulative, torch.arange(T).expand(B, T).contiguous(), right=True)
    ((padded * torch.arange(1.0, D + 1)).sum() + by_path.pow(2).sum() + left.sum()).backward()
    return {"padded": padded, "left": left, "mel_lengths": mel_lengths, "path": path, "by_path": by_path,
            "grad": x.grad, "token_of_frame": token_of_frame, "log_durations": torch.log(durations.float() + 1),
            "x": x}


def test_fastspeech_length_regulator_and_vits_path():
    ours, _ = run_both(length_regulator_program)
    x, durations = ours["x"], np.array([[1, 2, 0, 3], [2, 2, 1, 0]])
    for b in range(2):
        expanded = np.repeat(x[b], durations[b], axis=0)
        np.testing.assert_array_equal(ours["padded"][b, :len(expanded)], expanded)
        np.testing.assert_array_equal(ours["by_path"][b, :len(expanded)], expanded)
        np.testing.assert_array_equal(ours["left"][b, 6 - len(expanded):], expanded)
        np.testing.assert_array_equal(ours["token_of_frame"][b, :len(expanded)], np.repeat(np.arange(4), durations[b]))
    np.testing.assert_array_equal(ours["mel_lengths"], [6, 5])
    np.testing.assert_array_equal(ours["path"].sum(1), [[1] * 6, [1] * 5 + [0]])


def vits_alignment_program(m):
    torch = m.torch
    torch.manual_seed(0)
    B, C, T, Tx = 2, 3, 7, 4
    m_p = torch.randn(B, C, Tx, requires_grad=True)
    logs_p = (torch.randn(B, C, Tx) * 0.1).requires_grad_()
    z_p = torch.randn(B, C, T)
    x_mask = (torch.arange(Tx)[None] < torch.tensor([4, 3])[:, None]).unsqueeze(1).float()
    y_mask = (torch.arange(T)[None] < torch.tensor([7, 5])[:, None]).unsqueeze(1).float()
    with torch.no_grad():
        s_p_sq_r = torch.exp(-2 * logs_p)
        neg_cent = (torch.sum(-0.5 * math.log(2 * math.pi) - logs_p, [1], keepdim=True)
                    + torch.matmul(-0.5 * (z_p ** 2).transpose(1, 2), s_p_sq_r)
                    + torch.matmul(z_p.transpose(1, 2), (m_p * s_p_sq_r))
                    + torch.sum(-0.5 * (m_p ** 2) * s_p_sq_r, [1], keepdim=True))
        attn_mask = torch.unsqueeze(x_mask, 2) * torch.unsqueeze(y_mask, -1)
        # monotonic alignment search in NumPy, as the reference's Cython
        value = (neg_cent * attn_mask.squeeze(1)).cpu().numpy().astype(np.float32)
        path = np.zeros_like(value, dtype=np.int32)
        t_ys = attn_mask.squeeze(1).sum(1)[:, 0].data.cpu().numpy().astype(np.int32)
        t_xs = attn_mask.squeeze(1).sum(2)[:, 0].data.cpu().numpy().astype(np.int32)
        for b in range(B):
            v, t_y, t_x = value[b], t_ys[b], t_xs[b]
            for y in range(t_y):
                for x in range(max(0, t_x + y - t_y), min(t_x, y + 1)):
                    v_cur = -1e9 if x == y else v[y - 1, x]
                    v_prev = (0.0 if y == 0 else -1e9) if x == 0 else v[y - 1, x - 1]
                    v[y, x] += max(v_prev, v_cur)
            index = t_x - 1
            for y in range(t_y - 1, -1, -1):
                path[b, y, index] = 1
                if index != 0 and (index == y or v[y - 1, index] < v[y - 1, index - 1]):
                    index -= 1
        attn = torch.from_numpy(path).unsqueeze(1).to(neg_cent.dtype).detach()
    durations = attn.sum(2)
    m_p_frames = torch.matmul(attn.squeeze(1), m_p.transpose(1, 2)).transpose(1, 2)
    logs_p_frames = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)
    z_q = torch.randn(B, C, T, requires_grad=True)
    kl = logs_p_frames - torch.zeros(B, C, T) - 0.5
    kl += 0.5 * ((z_q - m_p_frames) ** 2) * torch.exp(-2.0 * logs_p_frames)
    kl = torch.sum(kl * y_mask) / torch.sum(y_mask)
    kl.backward()
    return {"path": attn, "log_durations": torch.log(durations + 1e-6) * x_mask, "kl": kl, "grad_m": m_p.grad,
            "grad_logs": logs_p.grad, "grad_z": z_q.grad}


def test_vits_monotonic_alignment_search_and_kl():
    ours, _ = run_both(vits_alignment_program, rtol=1e-5, atol=1e-5)
    path = ours["path"][:, 0]
    for b, (frames, tokens) in enumerate([(7, 4), (5, 3)]):
        assert (path[b, :frames, :tokens].sum(1) == 1).all() and path[b, frames:].sum() == 0
        chosen = path[b, :frames, :tokens].argmax(1)
        assert chosen[0] == 0 and chosen[-1] == tokens - 1 and set(np.diff(chosen)) <= {0, 1}  # monotonic


def rq_spline_program(m):
    torch, F = m.torch, m.F
    min_width = min_height = min_derivative = 1e-3

    def searchsorted(bin_locations, inputs, eps=1e-6):
        bin_locations[..., -1] += eps
        return torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1

    def unconstrained_rational_quadratic_spline(inputs, uw, uh, ud, inverse=False, tail_bound=1.0):
        inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
        outside = ~inside
        outputs, logabsdet = torch.zeros_like(inputs), torch.zeros_like(inputs)
        ud = F.pad(ud, pad=(1, 1))
        constant = np.log(np.exp(1 - min_derivative) - 1)
        ud[..., 0] = constant
        ud[..., -1] = constant
        outputs[outside] = inputs[outside]
        logabsdet[outside] = 0
        outputs[inside], logabsdet[inside] = rational_quadratic_spline(
            inputs[inside], uw[inside, :], uh[inside, :], ud[inside, :], inverse, -tail_bound, tail_bound,
            -tail_bound, tail_bound)
        return outputs, logabsdet

    def rational_quadratic_spline(inputs, uw, uh, ud, inverse, left, right, bottom, top):
        num_bins = uw.shape[-1]
        widths = min_width + (1 - min_width * num_bins) * F.softmax(uw, dim=-1)
        cumwidths = F.pad(torch.cumsum(widths, dim=-1), pad=(1, 0), mode="constant", value=0.0)
        cumwidths = (right - left) * cumwidths + left
        cumwidths[..., 0] = left
        cumwidths[..., -1] = right
        widths = cumwidths[..., 1:] - cumwidths[..., :-1]
        derivatives = min_derivative + F.softplus(ud)
        heights = min_height + (1 - min_height * num_bins) * F.softmax(uh, dim=-1)
        cumheights = F.pad(torch.cumsum(heights, dim=-1), pad=(1, 0), mode="constant", value=0.0)
        cumheights = (top - bottom) * cumheights + bottom
        cumheights[..., 0] = bottom
        cumheights[..., -1] = top
        heights = cumheights[..., 1:] - cumheights[..., :-1]
        bin_idx = searchsorted(cumheights if inverse else cumwidths, inputs)[..., None]
        input_cumwidths = cumwidths.gather(-1, bin_idx)[..., 0]
        input_bin_widths = widths.gather(-1, bin_idx)[..., 0]
        input_cumheights = cumheights.gather(-1, bin_idx)[..., 0]
        delta = heights / widths
        input_delta = delta.gather(-1, bin_idx)[..., 0]
        input_derivatives = derivatives.gather(-1, bin_idx)[..., 0]
        input_derivatives_plus_one = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]
        input_heights = heights.gather(-1, bin_idx)[..., 0]
        slope_sum = input_derivatives + input_derivatives_plus_one - 2 * input_delta
        if inverse:
            a = (inputs - input_cumheights) * slope_sum + input_heights * (input_delta - input_derivatives)
            b = input_heights * input_derivatives - (inputs - input_cumheights) * slope_sum
            c = -input_delta * (inputs - input_cumheights)
            discriminant = b.pow(2) - 4 * a * c
            assert (discriminant >= 0).all()
            theta = (2 * c) / (-b - torch.sqrt(discriminant))
            outputs = theta * input_bin_widths + input_cumwidths
        else:
            theta = (inputs - input_cumwidths) / input_bin_widths
            theta_one_minus_theta = theta * (1 - theta)
            numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
            outputs = input_cumheights + numerator / (input_delta + slope_sum * theta_one_minus_theta)
        theta_one_minus_theta = theta * (1 - theta)
        denominator = input_delta + slope_sum * theta_one_minus_theta
        derivative_numerator = input_delta.pow(2) * (input_derivatives_plus_one * theta.pow(2)
                                                     + 2 * input_delta * theta_one_minus_theta
                                                     + input_derivatives * (1 - theta).pow(2))
        logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)
        return outputs, -logabsdet if inverse else logabsdet

    torch.manual_seed(0)
    K = 4
    x = (torch.randn(2, 3, 5, dtype=torch.float64) * 1.5).requires_grad_()
    h = torch.randn(2, 3, 5, 3 * K - 1, dtype=torch.float64, requires_grad=True)
    uw, uh, ud = h[..., :K] / math.sqrt(8), h[..., K:2 * K] / math.sqrt(8), h[..., 2 * K:]
    y, logdet = unconstrained_rational_quadratic_spline(x, uw, uh, ud, tail_bound=2.0)
    x_back, logdet_back = unconstrained_rational_quadratic_spline(y, uw, uh, ud, inverse=True, tail_bound=2.0)
    (y.sum() + logdet.sum() + x_back.pow(2).sum()).backward()
    return {"x": x, "y": y, "logdet": logdet, "x_back": x_back, "logdet_back": logdet_back, "grad_x": x.grad,
            "grad_h": h.grad}


def test_vits_rational_quadratic_spline_inverts():
    ours, _ = run_both(rq_spline_program, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["x_back"], ours["x"], atol=1e-10)
    np.testing.assert_allclose(ours["logdet"] + ours["logdet_back"], 0, atol=1e-10)
    outside = np.abs(ours["x"]) > 2
    assert outside.any() and (ours["y"][outside] == ours["x"][outside]).all()
    np.testing.assert_allclose(ours["grad_x"][outside], 1 + 2 * ours["x"][outside])  # y and x_back are x there


def guided_attention_program(m):
    torch = m.torch
    ilens, olens, sigma, B = torch.tensor([5, 3]), torch.tensor([8, 6]), 0.4, 2
    weights = torch.zeros(B, 8, 5)
    for i, (ilen, olen) in enumerate(zip(ilens, olens)):
        grid_x, grid_y = torch.meshgrid(torch.arange(olen, device=olen.device), torch.arange(ilen, device=ilen.device),
                                        indexing="ij")
        grid_x, grid_y = grid_x.float(), grid_y.float()
        weights[i, :olen, :ilen] = 1.0 - torch.exp(-((grid_y / ilen - grid_x / olen) ** 2) / (2 * (sigma ** 2)))
    att = torch.softmax(torch.randn(B, 8, 5, generator=torch.Generator().manual_seed(1)), -1).requires_grad_()
    out_masks, in_masks = torch.arange(8)[None] < olens[:, None], torch.arange(5)[None] < ilens[:, None]
    masks = out_masks.unsqueeze(-1) & in_masks.unsqueeze(-2)
    loss = (weights * att).masked_select(masks).mean()
    loss.backward()
    return {"weights": weights, "loss": loss, "grad": att.grad}


def test_guided_attention_loss():
    ours, _ = run_both(guided_attention_program)
    gx, gy = np.meshgrid(np.arange(6), np.arange(3), indexing="ij")
    np.testing.assert_allclose(ours["weights"][1, :6, :3], 1 - np.exp(-((gy / 3 - gx / 6) ** 2) / 0.32), rtol=1e-6)
    assert (ours["weights"][1, 6:] == 0).all()
    np.testing.assert_allclose(ours["grad"][0, :8, :5], ours["weights"][0] / (8 * 5 + 6 * 3), rtol=1e-6)


def waveglow_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class Invertible1x1Conv(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv1d(c, c, kernel_size=1, stride=1, padding=0, bias=False)
            W = torch.linalg.qr(torch.FloatTensor(c, c).normal_())[0]
            if torch.det(W) < 0:
                W[:, 0] = -1 * W[:, 0]
            self.conv.weight.data = W.view(c, c, 1)

        def forward(self, z, reverse=False):
            batch_size, group_size, n_of_groups = z.size()
            W = self.conv.weight.squeeze()
            if reverse:
                return F.conv1d(z, W.float().inverse()[..., None], bias=None, stride=1, padding=0)
            return self.conv(z), batch_size * n_of_groups * torch.logdet(W)

    class Coupling(nn.Module):
        def __init__(self, n_half):
            super().__init__()
            self.start = nn.utils.parametrizations.weight_norm(nn.Conv1d(n_half, 8, 1))
            self.mid = nn.Conv1d(8, 8, 3, padding=1)
            self.end = nn.Conv1d(8, 2 * n_half, 1)
            self.end.weight.data.zero_()
            self.end.bias.data.zero_()

        def forward(self, a):
            return self.end(torch.tanh(self.mid(self.start(a))))

    n_group = 4
    invertible, coupling = Invertible1x1Conv(n_group), Coupling(n_group // 2)
    initial_W = invertible.conv.weight.detach().clone()
    opt = torch.optim.Adam([*invertible.parameters(), *coupling.parameters()], lr=1e-3)
    audio = torch.randn(2, 32)
    out = {}
    for step in range(3):
        squeezed = audio.unfold(1, n_group, n_group).permute(0, 2, 1)
        mixed, log_det_W = invertible(squeezed)
        n_half = int(mixed.size(1) / 2)
        audio_0, audio_1 = mixed[:, :n_half, :], mixed[:, n_half:, :]
        output = coupling(audio_0)
        log_s, b = output[:, n_half:, :], output[:, :n_half, :]
        z = torch.cat([audio_0, torch.exp(log_s) * audio_1 + b], 1)
        loss = (torch.sum(z * z) / 2 - torch.sum(log_s) - log_det_W) / (z.size(0) * z.size(1) * z.size(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"loss{step}"] = loss
    with torch.no_grad():
        out["back"] = invertible(invertible(squeezed)[0], reverse=True)
    sign, logabsdet = torch.linalg.slogdet(invertible.conv.weight.squeeze())
    out.update(squeezed=squeezed, initial_W=initial_W, W=invertible.conv.weight, sign=sign, logabsdet=logabsdet,
               g=coupling.start.parametrizations.weight.original0)
    return out


def test_waveglow_invertible_convolution():
    ours, _ = run_both(waveglow_program, rtol=1e-4, atol=1e-5)
    W0 = ours["initial_W"][..., 0].astype(np.float64)
    np.testing.assert_allclose(W0 @ W0.T, np.eye(4), atol=1e-5)
    assert np.linalg.det(W0) > 0
    np.testing.assert_allclose(ours["back"], ours["squeezed"], atol=1e-5)
    assert ours["sign"] == 1.0


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


# ----------------------------------------------------------------------------------------------
# Small pieces: windows and FFT helpers, ties in topk / sort, LSTMP on packed sequences,
# an IIR filter by a loop, writes through views, random draws
# ----------------------------------------------------------------------------------------------


def windows_program(m):
    torch = m.torch
    out = {}
    for n in (1, 2, 7, 16):
        for periodic in (True, False):
            out[f"hann{n}{periodic}"] = torch.hann_window(n, periodic=periodic)
            out[f"hamming{n}{periodic}"] = torch.hamming_window(n, periodic=periodic, alpha=0.5, beta=0.4)
            out[f"blackman{n}{periodic}"] = torch.blackman_window(n, periodic=periodic, dtype=torch.float64)
            out[f"bartlett{n}{periodic}"] = torch.bartlett_window(n, periodic=periodic)
            out[f"kaiser{n}{periodic}"] = torch.kaiser_window(n, periodic=periodic, beta=8.0)
    windows = torch.signal.windows
    out.update(gaussian=windows.gaussian(9, std=2.0, sym=False), kaiser=windows.kaiser(9, beta=6.0),
               hann=windows.hann(9, sym=False), cosine=windows.cosine(8), exponential=windows.exponential(8, tau=2.0),
               general_hamming=windows.general_hamming(8, alpha=0.6), nuttall=windows.nuttall(8),
               general_cosine=windows.general_cosine(8, a=[0.5, 0.3, 0.2]), i0=torch.special.i0(torch.arange(6.0)),
               sinc=torch.sinc(torch.linspace(-2, 2, 9)))
    return out


def test_windows():
    ours, _ = run_both(windows_program, rtol=2e-6, atol=1e-6)
    n = np.arange(16)
    np.testing.assert_allclose(ours["hann16True"], 0.5 - 0.5 * np.cos(2 * np.pi * n / 16), atol=1e-7)
    np.testing.assert_allclose(ours["hamming16False"], 0.5 - 0.4 * np.cos(2 * np.pi * n / 15), atol=1e-7)
    np.testing.assert_allclose(ours["kaiser16False"], np.kaiser(16, 8.0), rtol=1e-5)
    np.testing.assert_allclose(ours["blackman7False"], np.blackman(7), atol=1e-15)
    np.testing.assert_allclose(ours["bartlett7False"], np.bartlett(7), atol=1e-7)
    assert ours["hann1True"].tolist() == [1.0]
    np.testing.assert_allclose(ours["i0"], np.i0(np.arange(6.0)), rtol=1e-6)


def fft_helpers_program(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(2, 16, dtype=torch.float64, requires_grad=True)
    spectrum = torch.fft.rfft(x, norm="ortho")
    full = torch.fft.fft(x, norm="forward")
    out = {"irfft_n": torch.fft.irfft(spectrum, n=20), "hfft": torch.fft.hfft(spectrum[:, :5], n=8),
           "ihfft": torch.view_as_real(torch.fft.ihfft(x).resolve_conj()), "angle": torch.angle(full),
           "polar": torch.view_as_real(torch.polar(full.abs(), torch.angle(full) + 0.1))}
    phase = torch.atan2(spectrum.imag, spectrum.real)
    out["resynthesised"] = torch.fft.irfft(torch.polar(spectrum.abs(), phase), n=16, norm="ortho")
    out["group_delay"] = -torch.diff(phase, dim=-1)
    out["cummax"], out["cummax_indices"] = torch.cummax(x, dim=1)
    out["quantiles"] = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype), dim=1)
    out["frames"] = x.unfold(1, 4, 3)
    loss = out["resynthesised"].pow(2).sum() + out["irfft_n"].pow(2).sum() + out["hfft"].sum() \
        + out["angle"].sin().sum() + out["group_delay"].sum() + out["quantiles"].sum() + out["frames"].pow(3).sum() \
        + out["cummax"].sum()
    loss.backward()
    out.update(grad=x.grad, x=x, median_index=torch.median(torch.tensor([1.0, 2.0, 2.0, 3.0, 1.0, 2.0]), 0).indices,
               bincount=torch.bincount(torch.tensor([0, 2, 2, 5]), weights=torch.tensor([0.5, 1.0, 2.0, 1.0]),
                                       minlength=7))
    return out


def test_fft_helpers():
    ours, _ = run_both(fft_helpers_program, rtol=1e-9, atol=1e-10)
    x = ours["x"]
    np.testing.assert_allclose(ours["resynthesised"], x, atol=1e-12)
    np.testing.assert_allclose(ours["irfft_n"], np.fft.irfft(np.fft.rfft(x, norm="ortho"), n=20), atol=1e-12)
    np.testing.assert_allclose(ours["quantiles"], np.quantile(x, [0.1, 0.5, 0.9], axis=1), rtol=1e-12)
    np.testing.assert_array_equal(ours["cummax"], np.maximum.accumulate(x, axis=1))
    np.testing.assert_array_equal(ours["bincount"], [0.5, 0, 3.0, 0, 0, 1.0, 0])


def ties_program(m):
    torch = m.torch
    inf = float("-inf")
    x = torch.tensor([[0.0, inf, inf, inf, 1.0, inf], [inf] * 6, [2.0, 2.0, 1.0, 2.0, 1.0, 0.0]])
    out = {}
    for k in (1, 3, 5):
        out[f"top{k}"] = x.topk(k, dim=1).indices
        out[f"low{k}"] = x.topk(k, dim=1, largest=False).indices
        out[f"unsorted{k}"] = x.topk(k, dim=1, sorted=False).values.sort(dim=1).values
    ones_at_five = torch.zeros(2, 40)
    ones_at_five[0, 5] = 1
    out.update(flat=x.view(-1).topk(7).indices, argmax=x.argmax(1), argmin=x.argmin(1), max=x.max(1).indices,
               sort_descending=x.sort(1, descending=True).indices,
               stable=x.sort(dim=1, descending=True, stable=True).indices, argsort=x.argsort(1),
               kth=x.kthvalue(2, 1).indices, zeros=ones_at_five.topk(6, 1).indices,
               long=torch.arange(100.0).remainder(7).topk(10).indices,
               long_smallest=torch.arange(100.0).remainder(7).topk(10, largest=False).indices)
    return out


def test_ties_in_topk_sort_and_argmax():
    ours, _ = run_both(ties_program)
    assert ours["argmax"].tolist() == [4, 0, 0] and ours["argmin"].tolist() == [1, 0, 5]
    np.testing.assert_array_equal(ours["stable"][2], [0, 1, 3, 2, 4, 5])
    assert ours["top1"][0, 0] == 4 and set(ours["top3"][2]) == {0, 1, 3}  # (which tie comes first is PyTorch's)


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


def iir_program(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(2, 30, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.2, 0.3, 0.2], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64, requires_grad=True)
    outputs = []  # (writing y[:, t] in place would change what the next step saved, as PyTorch refuses too)
    for t in range(x.shape[1]):
        acc = b[0] * x[:, t]
        if t >= 1:
            acc = acc + b[1] * x[:, t - 1] - a[1] * outputs[t - 1]
        if t >= 2:
            acc = acc + b[2] * x[:, t - 2] - a[2] * outputs[t - 2]
        outputs.append(acc / a[0])
    y = torch.stack(outputs, dim=1)
    (y ** 2).sum().backward()
    fir = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (2, 0)).unsqueeze(1), b.flip(0).view(1, 1, -1))
    return {"y": y, "grad_x": x.grad, "grad_b": b.grad, "grad_a": a.grad, "fir": fir.squeeze(1), "x": x}


def test_iir_filter_by_a_loop():
    ours, _ = run_both(iir_program, rtol=1e-9, atol=1e-10)
    x, y = ours["x"], np.zeros((2, 30))
    for t in range(30):
        y[:, t] = sum(c * x[:, t - k] for k, c in enumerate([0.2, 0.3, 0.2]) if t >= k) \
            - sum(c * y[:, t - k] for k, c in ((1, -0.5), (2, 0.25)) if t >= k)
    np.testing.assert_allclose(ours["y"], y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["fir"], np.stack([np.convolve(r, [0.2, 0.3, 0.2])[:30] for r in x]), atol=1e-14)


def views_program(m):
    torch = m.torch
    out = {}
    x = torch.arange(12.0)
    x.unfold(0, 4, 2)[1, 0] = -1.0  # frame 1 starts at sample 2
    x.as_strided((3, 3), (3, 1), 1)[0, 0] = -2.0
    out["x"] = x
    c = torch.zeros(2, 3, dtype=torch.complex64)
    torch.view_as_real(c)[..., 1] = 2.0
    c.real[0] = 7.0
    out["complex"] = torch.view_as_real(c).clone()
    y = torch.zeros(4, 6)
    for i, chunk in enumerate(y.chunk(3, dim=1)):
        chunk += i
    for i, row in enumerate(y.unbind(0)):
        row.mul_(i + 1)
    y.narrow(1, 0, 2).neg_()
    y.movedim(0, 1)[0, 0] = 99
    out["y"] = y
    array = np.zeros(5, dtype=np.float32)
    shared = torch.from_numpy(array)
    shared[2] = 3.0
    array[3] = 4.0
    shared.numpy()[0] = -5
    out["shared"], out["array"] = shared.clone(), array.copy()
    spec = torch.zeros(2, 4, 5)
    spec[:, 1:3].masked_fill_(torch.ones(2, 2, 5, dtype=torch.bool), 1.0)
    spec[0, :, 2:4] = spec[0, :, 2:4] + 2
    out["spec"] = spec
    return out


def test_writes_through_views():
    ours, _ = run_both(views_program)
    np.testing.assert_array_equal(ours["x"], [0, -2, -1, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    np.testing.assert_array_equal(ours["complex"][..., 0], [[7, 7, 7], [0, 0, 0]])
    np.testing.assert_array_equal(ours["shared"], [-5, 0, 3, 4, 0])
    np.testing.assert_array_equal(ours["array"], ours["shared"])
    assert ours["y"][0, 0] == 99 and ours["y"][3, 5] == 8 and ours["y"][3, 0] == 0
    assert ours["spec"][0, 1, 2] == 3 and ours["spec"][1, 1, 2] == 1 and ours["spec"][0, 0, 2] == 2


def random_draws_program(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    x = torch.zeros(3, 5)
    x[:, 1:3].normal_()
    return {"gumbel_soft": F.gumbel_softmax(logits, tau=2.0),
            "gumbel_hard": F.gumbel_softmax(logits, tau=0.5, hard=True),
            "exponential": torch.empty(5).exponential_(), "geometric": torch.empty(5).geometric_(0.3),
            "log_normal": torch.empty(5).log_normal_(0.0, 0.5), "cauchy": torch.empty(5).cauchy_(),
            "categorical": torch.distributions.Categorical(logits=logits).sample(),
            "multinomial": torch.multinomial(logits.softmax(-1), 3, replacement=False),
            "bernoulli": torch.bernoulli(torch.full((3, 4), 0.3)), "uniform": torch.empty(6).uniform_(-0.1, 0.1),
            "randint_like": torch.randint_like(logits, 0, 10), "dropout1d": F.dropout1d(torch.ones(2, 4, 3), 0.5),
            "slice_normal": x, "after": torch.randn(2)}


def test_random_draws():
    ours, _ = run_both(random_draws_program)
    np.testing.assert_allclose(ours["gumbel_soft"].sum(-1), 1, rtol=1e-6)
    assert (ours["gumbel_hard"].sum(-1) == 1).all() and set(np.unique(ours["gumbel_hard"])) <= {0.0, 1.0}
    assert (ours["exponential"] > 0).all() and (ours["geometric"] >= 1).all() and (ours["log_normal"] > 0).all()
    assert (np.abs(ours["uniform"]) <= 0.1).all() and (ours["slice_normal"][:, [0, 3, 4]] == 0).all()
    assert all(len(set(row)) == 3 for row in ours["multinomial"].tolist())
    assert set(np.unique(ours["dropout1d"])) <= {0.0, 2.0}
    assert (ours["dropout1d"] == ours["dropout1d"][..., :1]).all()  # whole channels


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
