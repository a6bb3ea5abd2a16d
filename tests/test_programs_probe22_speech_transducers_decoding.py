# ruff: noqa: E731  (the programs are kept as their authors write them)
"""Speech and sequence-transduction programs (see tests/pytorch_programs.py), written by hand as ESPnet, WeNet, NeMo,
torchaudio's recipes and the papers' reference code write them, run on chainrule and on PyTorch from the same seeds,
comparing values and gradients, and checked without PyTorch by NumPy and by invariants. Transduction losses and
decoding: ``F.ctc_loss`` in all its forms (every reduction, ``zero_infinity``, a blank that is not 0, padded 2-d and
concatenated 1-d targets, int32 and int64 lengths, tuples of lengths, float64, unbatched, the top-level ``ctc_loss``,
log-probabilities transposed from a batch-first model, -inf log-probabilities of a masked class) against NumPy's α
recursion; an RNN-T loss written three ways (a (T, U) lattice of ``logsumexp``, ``logaddexp`` rows, anti-diagonal
wavefronts indexed by tensors) with its joint network and prediction LSTM trained; a CRNN for OCR trained by CTC with
greedy decoding; batched beam search (``topk``, ``index_select``, ``scatter``) and CTC prefix beam search; ties in
``topk``/``sort``."""

import numpy as np

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
