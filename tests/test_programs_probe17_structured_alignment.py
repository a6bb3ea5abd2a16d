# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Structured prediction and differentiable dynamic programming (see tests/pytorch_programs.py), run on chainrule and
on PyTorch from the same weights and data, comparing losses, decodes and gradients; each model is run in float64
where its authors allow it, and checked besides against enumerating every structure in NumPy, so that the CI run
without PyTorch still asserts the numbers. Alignments: Glow-TTS's monotonic alignment search (``F.pad`` with a value,
``torch.where``, path back-tracking by advanced-index writes) under its MLE and duration losses; the RAD-TTS aligner
(a beta-binomial prior, the forward-sum loss as ``nn.CTCLoss(zero_infinity=True)`` per utterance after ``F.pad`` with
a blank value, ``.data.masked_fill_``, MAS and the bin loss); CTC's forward algorithm by hand (in-place writes into a
log-alpha table) against ``F.ctc_loss``, greedy decoding by ``unique_consecutive`` and the prefix beam search
rescored by ``F.ctc_loss``; torchaudio's CTC forced alignment (a trellis by ``torch.maximum`` with +-inf borders,
back-tracked into Points and merged Segments) driving Viterbi training."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Monotonic alignment search (Glow-TTS, Kim et al. 2020): the Gaussian log-likelihood of every
# (text, frame) pair by four matmuls, the best monotonic path by a vectorised DP (the TTS repos'
# maximum_path_numpy, in torch), the aligned means by matmul, and the log-duration target
# ----------------------------------------------------------------------------------------------


def maximum_path(m, value, mask, max_neg_val=-1e9):
    """value, mask: [b, t_x, t_y]"""
    torch, F = m.torch, m.F
    value = value * mask
    b, t_x, t_y = value.shape
    direction = torch.zeros(value.shape, dtype=torch.int64)
    v = torch.zeros((b, t_x), dtype=value.dtype)
    x_range = torch.arange(t_x, dtype=value.dtype).view(1, -1)
    for j in range(t_y):
        v0 = F.pad(v, [1, 0, 0, 0], mode="constant", value=max_neg_val)[:, :-1]
        v1 = v
        max_mask = v1 >= v0
        v_max = torch.where(max_mask, v1, v0)
        direction[:, :, j] = max_mask
        index_mask = x_range <= j
        v = torch.where(index_mask, v_max + value[:, :, j], torch.full_like(v, max_neg_val))
    direction = torch.where(mask.bool(), direction, torch.ones_like(direction))
    path = torch.zeros(value.shape, dtype=value.dtype)
    index = mask[:, :, 0].sum(1).long() - 1
    index_range = torch.arange(b)
    for j in reversed(range(t_y)):
        path[index_range, index, j] = 1
        index = index + direction[index_range, index, j] - 1
    path = path * mask
    return path


def glow_tts(m, vocab=6, channels=4, hidden=8):
    torch, nn = m.torch, m.nn

    class TextEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, hidden)
            self.conv = nn.Conv1d(hidden, hidden, 3, padding=1)
            self.proj_m = nn.Conv1d(hidden, channels, 1)
            self.proj_s = nn.Conv1d(hidden, channels, 1)
            self.proj_w = nn.Conv1d(hidden, 1, 1)

        def forward(self, x, x_mask):
            h = self.emb(x).transpose(1, 2) * x_mask  # [b, h, t]
            h = torch.relu(self.conv(h)) * x_mask
            return self.proj_m(h) * x_mask, self.proj_s(h) * x_mask, self.proj_w(h.detach()) * x_mask

    class ActNormFlow(nn.Module):  # the decoder's flow, reduced to one invertible affine layer
        def __init__(self):
            super().__init__()
            self.logs = nn.Parameter(torch.zeros(1, channels, 1))
            self.bias = nn.Parameter(torch.zeros(1, channels, 1))

        def forward(self, y, y_mask):
            z = (self.bias + torch.exp(self.logs) * y) * y_mask
            logdet = torch.sum(self.logs) * torch.sum(y_mask, [1, 2])
            return z, logdet

    class GlowTTS(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = TextEncoder()
            self.decoder = ActNormFlow()

        def forward(self, x, x_lengths, y, y_lengths):
            x_mask = (torch.arange(x.size(1))[None] < x_lengths[:, None]).unsqueeze(1).to(y.dtype)
            y_mask = (torch.arange(y.size(2))[None] < y_lengths[:, None]).unsqueeze(1).to(y.dtype)
            attn_mask = torch.unsqueeze(x_mask, -1) * torch.unsqueeze(y_mask, 2)
            x_m, x_logs, logw = self.encoder(x, x_mask)
            z, logdet = self.decoder(y, y_mask)
            with torch.no_grad():
                x_s_sq_r = torch.exp(-2 * x_logs)
                logp1 = torch.sum(-0.5 * math.log(2 * math.pi) - x_logs, [1]).unsqueeze(-1)  # [b, t, 1]
                logp2 = torch.matmul(x_s_sq_r.transpose(1, 2), -0.5 * (z ** 2))  # [b, t, d] x [b, d, t'] = [b, t, t']
                logp3 = torch.matmul((x_m * x_s_sq_r).transpose(1, 2), z)  # [b, t, d] x [b, d, t'] = [b, t, t']
                logp4 = torch.sum(-0.5 * (x_m ** 2) * x_s_sq_r, [1]).unsqueeze(-1)  # [b, t, 1]
                logp = logp1 + logp2 + logp3 + logp4  # [b, t, t']
                attn = maximum_path(m, logp, attn_mask.squeeze(1)).unsqueeze(1).detach()
            z_m = torch.matmul(attn.squeeze(1).transpose(1, 2), x_m.transpose(1, 2)).transpose(1, 2)  # [b, t', t], [b, t, d] -> [b, d, t']
            z_logs = torch.matmul(attn.squeeze(1).transpose(1, 2), x_logs.transpose(1, 2)).transpose(1, 2)
            logw_ = torch.log(1e-8 + torch.sum(attn, -1)) * x_mask
            return z, z_m, z_logs, logdet, logw, logw_, attn, y_mask, x_mask, logp

    return GlowTTS()


def mle_loss(m, z, m_, logs, logdet, mask):
    torch = m.torch
    l = torch.sum(logs) + 0.5 * torch.sum(torch.exp(-2 * logs) * ((z - m_) ** 2))  # neg normal likelihood w/o the constant term
    l = l - torch.sum(logdet)  # log jacobian determinant
    l = l / torch.sum(torch.ones_like(z) * mask)  # averaging across batch, channel and time axes
    l = l + 0.5 * math.log(2 * math.pi)  # add the remaining constant term
    return l


def glow_tts_program(m, weights):
    torch = m.torch
    model = load(m, glow_tts(m), weights).double()
    rng = np.random.default_rng(3)
    x = torch.tensor([[1, 3, 2, 5], [4, 2, 1, 0]])
    x_lengths = torch.tensor([4, 3])
    y = torch.from_numpy(rng.standard_normal((2, 4, 11)))
    y_lengths = torch.tensor([11, 8])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    history, paths = [], []
    for step in range(4):
        opt.zero_grad()
        z, z_m, z_logs, logdet, logw, logw_, attn, y_mask, x_mask, logp = model(x, x_lengths, y, y_lengths)
        l_mle = mle_loss(m, z, z_m, z_logs, logdet, y_mask)
        l_length = torch.sum((logw - logw_) ** 2) / torch.sum(x_lengths)
        loss = l_mle + l_length
        loss.backward()
        opt.step()
        history.append((l_mle.item(), l_length.item()))
        paths.append(attn.squeeze(1))
    grads = {k: p.grad for k, p in model.named_parameters()}
    return {"history": history, "paths": paths, "grads": grads, "logp": logp, "durations": attn.sum(-1).squeeze(1)}


def monotonic_paths(t_x, t_y):
    """Every monotonic alignment of t_x tokens to t_y frames (each token at least one frame), as durations."""
    if t_x == 1:
        yield (t_y,)
        return
    for d in range(1, t_y - t_x + 2):
        for rest in monotonic_paths(t_x - 1, t_y - d):
            yield (d,) + rest


def test_glow_tts_monotonic_alignment_search():
    weights = weights_of(glow_tts)
    ours, _ = run_both(glow_tts_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]
    logp = ours["logp"]
    for b, (t_x, t_y) in enumerate([(4, 11), (3, 8)]):  # the path found is the best of every monotonic one
        best = max(monotonic_paths(t_x, t_y),
                   key=lambda ds: sum(logp[b, i, f] for i, (s, d) in enumerate(zip(np.cumsum((0,) + ds), ds))
                                      for f in range(s, s + d)))
        np.testing.assert_array_equal(ours["durations"][b, :t_x], best)
        assert ours["durations"][b, t_x:].sum() == 0


# ----------------------------------------------------------------------------------------------
# CTC: the forward algorithm by hand (vadimkantorov/ctc's vectorised form: in-place writes into a
# log-alpha table, torch.where on the skip mask) against F.ctc_loss, values and gradients; greedy
# decoding by unique_consecutive and the prefix beam search, scored by F.ctc_loss
# ----------------------------------------------------------------------------------------------


def logadd(x0, x1, x2, torch):
    # produces nan gradients in backward if -inf log-space zero element is used https://github.com/pytorch/pytorch/issues/31829
    return torch.logsumexp(torch.stack([x0, x1, x2]), dim=0)


def ctc_loss_by_hand(m, log_probs, targets, input_lengths, target_lengths, blank=0):
    torch = m.torch
    input_time_size, batch_size = log_probs.shape[:2]
    B = torch.arange(batch_size, device=input_lengths.device)
    _t_a_r_g_e_t_s_ = torch.cat([targets, targets[:, :1]], dim=-1)
    _t_a_r_g_e_t_s_ = torch.stack([torch.full_like(_t_a_r_g_e_t_s_, blank), _t_a_r_g_e_t_s_], dim=-1).flatten(start_dim=-2)
    diff_labels = torch.cat([torch.as_tensor([[False, False]], device=targets.device).expand(batch_size, -1), _t_a_r_g_e_t_s_[:, 2:] != _t_a_r_g_e_t_s_[:, :-2]], dim=1)
    zero_padding, zero = 2, torch.tensor(torch.finfo(torch.float32).min, device=log_probs.device, dtype=log_probs.dtype)
    log_probs_ = log_probs.gather(-1, _t_a_r_g_e_t_s_.expand(input_time_size, -1, -1))
    log_alpha = torch.full((input_time_size, batch_size, zero_padding + _t_a_r_g_e_t_s_.shape[-1]), zero, device=log_probs.device, dtype=log_probs.dtype)
    log_alpha[0, :, zero_padding + 0] = log_probs[0, :, blank]
    log_alpha[0, :, zero_padding + 1] = log_probs[0, B, _t_a_r_g_e_t_s_[:, 1]]
    for t in range(1, input_time_size):
        log_alpha[t, :, 2:] = log_probs_[t] + logadd(log_alpha[t - 1, :, 2:], log_alpha[t - 1, :, 1:-1], torch.where(diff_labels, log_alpha[t - 1, :, :-2], zero), torch)
    l1l2 = log_alpha[input_lengths - 1, B].gather(-1, torch.stack([zero_padding + target_lengths * 2 - 1, zero_padding + target_lengths * 2], dim=-1))
    loss = -torch.logsumexp(l1l2, dim=-1)
    return loss


NEG_INF = -float("inf")


def np_logsumexp(*args):
    if all(a == NEG_INF for a in args):
        return NEG_INF
    a_max = max(args)
    lsp = math.log(sum(math.exp(a - a_max) for a in args))
    return a_max + lsp


def prefix_beam_search(probs, beam_size=8, blank=0):
    import collections
    T, S = probs.shape
    beam = [(tuple(), (0.0, NEG_INF))]  # (prefix, (log p ending in blank, log p not ending in blank))
    for t in range(T):
        next_beam = collections.defaultdict(lambda: (NEG_INF, NEG_INF))
        for s in range(S):
            p = probs[t, s]
            for prefix, (p_b, p_nb) in beam:
                if s == blank:
                    n_p_b, n_p_nb = next_beam[prefix]
                    n_p_b = np_logsumexp(n_p_b, p_b + p, p_nb + p)
                    next_beam[prefix] = (n_p_b, n_p_nb)
                    continue
                end_t = prefix[-1] if prefix else None
                n_prefix = prefix + (s,)
                n_p_b, n_p_nb = next_beam[n_prefix]
                if s != end_t:
                    n_p_nb = np_logsumexp(n_p_nb, p_b + p, p_nb + p)
                else:
                    n_p_nb = np_logsumexp(n_p_nb, p_b + p)  # a repeat needs a blank between
                next_beam[n_prefix] = (n_p_b, n_p_nb)
                if s == end_t:  # the repeat collapses into the same prefix
                    n_p_b, n_p_nb = next_beam[prefix]
                    n_p_nb = np_logsumexp(n_p_nb, p_nb + p)
                    next_beam[prefix] = (n_p_b, n_p_nb)
        beam = sorted(next_beam.items(), key=lambda x: np_logsumexp(*x[1]), reverse=True)[:beam_size]
    return [(prefix, np_logsumexp(*scores)) for prefix, scores in beam]


def ctc_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)), weights).double()
    rng = np.random.default_rng(5)
    feats = torch.from_numpy(rng.standard_normal((7, 3, 3)))  # (T, N, C)
    targets = torch.tensor([[1, 2, 2], [3, 1, 0], [2, 0, 0]])
    input_lengths = torch.tensor([7, 6, 5])
    target_lengths = torch.tensor([3, 2, 1])
    logits = model(feats)
    log_probs = logits.log_softmax(-1)
    ours = ctc_loss_by_hand(m, log_probs, targets, input_lengths, target_lengths)
    builtin = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction="none")
    g_hand = torch.autograd.grad(ours.sum(), list(model.parameters()), retain_graph=True)
    g_builtin = torch.autograd.grad(builtin.sum(), list(model.parameters()))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for step in range(10):
        opt.zero_grad()
        lp = model(feats).log_softmax(2)
        loss = F.ctc_loss(lp, targets, input_lengths, target_lengths, blank=0, reduction="mean")
        loss.backward()
        opt.step()
        history.append(loss.item())
    with torch.no_grad():
        lp = model(feats).log_softmax(2)
    greedy = []
    for b in range(3):
        best = lp[: input_lengths[b], b].argmax(-1)
        collapsed = torch.unique_consecutive(best)
        greedy.append(collapsed[collapsed != 0].tolist())
    beams = [prefix_beam_search(lp[: input_lengths[b], b].numpy(), beam_size=64) for b in range(3)]
    # each hypothesis's score is its CTC probability: F.ctc_loss of it as a target
    rescored = []
    for b in range(3):
        hyps = [h for h, _ in beams[b][:4] if len(h) > 0]
        n = len(hyps)
        tg = torch.zeros(n, max(len(h) for h in hyps), dtype=torch.long)
        for i, h in enumerate(hyps):
            tg[i, : len(h)] = torch.tensor(h)
        nll = F.ctc_loss(lp[:, b:b + 1].expand(-1, n, -1), tg, input_lengths[b].repeat(n),
                         torch.tensor([len(h) for h in hyps]), reduction="none", zero_infinity=True)
        rescored.append((hyps, -nll))
    return {"by_hand": ours, "builtin": builtin, "g_hand": g_hand, "g_builtin": g_builtin, "history": history,
            "greedy": greedy, "beams": beams, "rescored": rescored}


def test_ctc_by_hand_greedy_and_prefix_beam_search():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 8), m.nn.Tanh(), m.nn.Linear(8, 4)))
    ours, _ = run_both(ctc_program, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["by_hand"], ours["builtin"], rtol=1e-10)
    for a, b in zip(ours["g_hand"], ours["g_builtin"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    assert ours["history"][-1] < ours["history"][0]
    for b in range(3):
        scores = dict(ours["beams"][b])
        hyps, logp = ours["rescored"][b]
        for h, lp in zip(hyps, logp):  # a wide enough beam keeps every prefix's whole probability
            assert scores[tuple(h)] == pytest.approx(lp, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# CTC forced alignment as torchaudio's tutorial writes it (a trellis by torch.maximum over shifted
# rows, a cumsum of blank scores, +-inf borders, back-tracking into Points, repeats merged into
# Segments), then Viterbi training: frame-level cross-entropy on the forced alignment's labels
# ----------------------------------------------------------------------------------------------


def get_trellis(m, emission, tokens, blank_id=0):
    torch = m.torch
    num_frame = emission.size(0)
    num_tokens = len(tokens)

    trellis = torch.zeros((num_frame, num_tokens), dtype=emission.dtype)
    trellis[1:, 0] = torch.cumsum(emission[1:, blank_id], 0)
    trellis[0, 1:] = -float("inf")
    trellis[-num_tokens + 1:, 0] = float("inf")

    for t in range(num_frame - 1):
        trellis[t + 1, 1:] = torch.maximum(
            # Score for staying at the same token
            trellis[t, 1:] + emission[t, blank_id],
            # Score for changing to the next token
            trellis[t, :-1] + emission[t, tokens[1:]],
        )
    return trellis


def forced_align_backtrack(trellis, emission, tokens, blank_id=0):
    from dataclasses import dataclass

    @dataclass
    class Point:
        token_index: int
        time_index: int
        score: float

    t, j = trellis.size(0) - 1, trellis.size(1) - 1

    path = [Point(j, t, emission[t, blank_id].exp().item())]
    while j > 0:
        # Should not happen but just in case
        assert t > 0

        # 1. Figure out if the current position was stay or change
        # Frame-wise score of stay vs change
        p_stay = emission[t - 1, blank_id]
        p_change = emission[t - 1, tokens[j]]

        # Context-aware score for stay vs change
        stayed = trellis[t - 1, j] + p_stay
        changed = trellis[t - 1, j - 1] + p_change

        # Update position
        t -= 1
        if changed > stayed:
            j -= 1

        # Store the path with frame-wise probability.
        prob = (p_change if changed > stayed else p_stay).exp().item()
        path.append(Point(j, t, prob))

    # Now j == 0, which means, it reached the SoS.
    # Fill up the rest for the sake of visualization
    while t > 0:
        prob = emission[t - 1, blank_id].exp().item()
        path.append(Point(j, t - 1, prob))
        t -= 1

    return path[::-1]


def merge_repeats(path, transcript):
    i1, i2 = 0, 0
    segments = []
    while i1 < len(path):
        while i2 < len(path) and path[i1].token_index == path[i2].token_index:
            i2 += 1
        score = sum(path[k].score for k in range(i1, i2)) / (i2 - i1)
        segments.append((transcript[path[i1].token_index], path[i1].time_index, path[i2 - 1].time_index + 1, score))
        i1 = i2
    return segments


def forced_alignment_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    labels = ("-", "|", "A", "B", "C")
    dictionary = {c: i for i, c in enumerate(labels)}
    transcript = "|AB|CA|"
    tokens = [dictionary[c] for c in transcript]
    model = load(m, nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 5, 1)), weights).double()
    rng = np.random.default_rng(29)
    feats = torch.from_numpy(rng.standard_normal((1, 3, 16)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history, all_segments = [], []
    for step in range(4):
        with torch.inference_mode():
            emission = torch.log_softmax(model(feats), dim=1)[0].t()  # (frames, labels)
            trellis = get_trellis(m, emission, tokens)
            path = forced_align_backtrack(trellis, emission, tokens)
        segments = merge_repeats(path, transcript)
        all_segments.append(segments)
        # Viterbi training: each frame's label is the token it aligns to where it changed, else blank
        frame_labels = torch.zeros(emission.size(0), dtype=torch.long)
        for prev, point in zip([None] + path[:-1], path):
            if prev is None or point.token_index != prev.token_index:
                frame_labels[point.time_index] = tokens[point.token_index]
        opt.zero_grad()
        loss = F.cross_entropy(model(feats), frame_labels[None])
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "segments": all_segments, "trellis": trellis, "emission": emission,
            "path": [(p.token_index, p.time_index, p.score) for p in path]}


def test_torchaudio_forced_alignment_and_viterbi_training():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Conv1d(3, 8, 3, padding=1), m.nn.ReLU(), m.nn.Conv1d(8, 5, 1)))
    ours, _ = run_both(forced_alignment_program, weights, rtol=1e-9, atol=1e-11)
    assert ours["history"][-1] < ours["history"][0]
    for segments in ours["segments"]:
        assert "".join(s[0] for s in segments) == "|AB|CA|"
        assert all(a[2] == b[1] for a, b in zip(segments, segments[1:])) and segments[-1][2] == 16
    # the path's token index never decreases and moves at most one a frame
    steps = np.diff([p[0] for p in ours["path"]])
    assert set(steps) <= {0, 1}


# ----------------------------------------------------------------------------------------------
# The unsupervised aligner of RAD-TTS / FastPitch (Badlani et al. 2021): L2 attention between
# text and mel encodings with a beta-binomial prior, the forward-sum loss as nn.CTCLoss(zero_infinity)
# over each utterance's slice (blank logit by F.pad with a value), hard attention by monotonic
# alignment search and the bin loss on the soft attention where it is 1
# ----------------------------------------------------------------------------------------------


def beta_binomial_prior(phoneme_count, mel_count, scaling_factor=1.0):
    P, M = phoneme_count, mel_count
    x = np.arange(0, P)
    mel_text_probs = []
    for i in range(1, M + 1):
        a, b = scaling_factor * i, scaling_factor * (M + 1 - i)
        # the beta-binomial pmf, by log-gamma (scipy.stats.betabinom(P - 1, a, b).pmf(x))
        n = P - 1
        log_pmf = (math.lgamma(n + 1) - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in x])
                   + np.array([math.lgamma(k + a) + math.lgamma(n - k + b) for k in x]) - math.lgamma(n + a + b)
                   - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
        mel_text_probs.append(np.exp(log_pmf))
    return np.array(mel_text_probs)  # (M, P)


def rad_aligner(m, n_mel=4, n_text=5, n_att=6, vocab=7):
    torch, nn = m.torch, m.nn

    class AlignmentEncoder(nn.Module):
        def __init__(self, temperature=0.0005):
            super().__init__()
            self.temperature = temperature
            self.softmax = torch.nn.Softmax(dim=3)
            self.log_softmax = torch.nn.LogSoftmax(dim=3)
            self.embed = nn.Embedding(vocab, n_text)
            self.key_proj = nn.Sequential(nn.Conv1d(n_text, n_text * 2, 3, padding=1), nn.ReLU(), nn.Conv1d(n_text * 2, n_att, 1))
            self.query_proj = nn.Sequential(nn.Conv1d(n_mel, n_mel * 2, 3, padding=1), nn.ReLU(), nn.Conv1d(n_mel * 2, n_att, 1))

        def forward(self, queries, keys, mask=None, attn_prior=None):
            """queries: B x C x T1 (mel), keys: B x C2 x T2 (text); returns B x 1 x T1 x T2"""
            keys_enc = self.key_proj(keys)  # B x n_att_dims x T2
            queries_enc = self.query_proj(queries)
            # Simplistic Gaussian isotopic attention
            attn = (queries_enc[:, :, :, None] - keys_enc[:, :, None]) ** 2  # B x n_attn_dims x T1 x T2
            attn = -self.temperature * 1000 * attn.sum(1, keepdim=True)
            if attn_prior is not None:
                attn = self.log_softmax(attn) + torch.log(attn_prior[:, None] + 1e-8)
            attn_logprob = attn.clone()
            if mask is not None:
                attn.data.masked_fill_(mask.permute(0, 2, 1).unsqueeze(2), -float("inf"))
            attn = self.softmax(attn)  # softmax along T2
            return attn, attn_logprob

    return AlignmentEncoder()


def rad_aligner_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class ForwardSumLoss(torch.nn.Module):
        def __init__(self, blank_logprob=-1):
            super().__init__()
            self.log_softmax = torch.nn.LogSoftmax(dim=3)
            self.ctc_loss = torch.nn.CTCLoss(zero_infinity=True)
            self.blank_logprob = blank_logprob

        def forward(self, attn_logprob, in_lens, out_lens):
            key_lens = in_lens
            query_lens = out_lens
            attn_logprob_padded = F.pad(input=attn_logprob, pad=(1, 0), value=self.blank_logprob)

            total_loss = 0.0
            for bid in range(attn_logprob.shape[0]):
                target_seq = torch.arange(1, key_lens[bid] + 1).unsqueeze(0)
                curr_logprob = attn_logprob_padded[bid].permute(1, 0, 2)[: query_lens[bid], :, : key_lens[bid] + 1]

                curr_logprob = self.log_softmax(curr_logprob[None])[0]
                loss = self.ctc_loss(
                    curr_logprob,
                    target_seq,
                    input_lengths=query_lens[bid: bid + 1],
                    target_lengths=key_lens[bid: bid + 1],
                )
                total_loss += loss

            total_loss /= attn_logprob.shape[0]
            return total_loss

    class BinLoss(torch.nn.Module):
        def forward(self, hard_attention, soft_attention):
            log_sum = torch.log(torch.clamp(soft_attention[hard_attention == 1], min=1e-12)).sum()
            return -log_sum / hard_attention.sum()

    model = load(m, rad_aligner(m), weights).double()
    rng = np.random.default_rng(37)
    text = torch.tensor([[1, 4, 2, 6, 3], [5, 2, 3, 0, 0]])
    text_lens = torch.tensor([5, 3])
    mels = torch.from_numpy(rng.standard_normal((2, 4, 12)))
    mel_lens = torch.tensor([12, 8])
    prior = torch.zeros(2, 12, 5, dtype=torch.float64)
    for b in range(2):
        prior[b, : mel_lens[b], : text_lens[b]] = torch.from_numpy(beta_binomial_prior(int(text_lens[b]), int(mel_lens[b])))
    text_mask = torch.arange(5)[None] >= text_lens[:, None]  # True where padded
    forward_sum, bin_loss = ForwardSumLoss(), BinLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    history, durations = [], []
    for step in range(4):
        opt.zero_grad()
        keys = model.embed(text).transpose(1, 2)
        attn_soft, attn_logprob = model(mels, keys, mask=text_mask.unsqueeze(-1), attn_prior=prior)
        attn_mask = (torch.arange(12)[None, :, None] < mel_lens[:, None, None]) & (~text_mask)[:, None, :]
        with torch.no_grad():  # MAS over (text, frames): transpose to maximum_path's [b, t_x, t_y]
            attn_hard = maximum_path(m, torch.log(attn_soft[:, 0] + 1e-12).transpose(1, 2),
                                     attn_mask.transpose(1, 2).to(attn_soft.dtype)).transpose(1, 2)[:, None]
        l_ctc = forward_sum(attn_logprob, text_lens, mel_lens)
        l_bin = bin_loss(attn_hard, attn_soft)
        loss = l_ctc + (0.5 if step >= 2 else 0.0) * l_bin
        loss.backward()
        opt.step()
        history.append((l_ctc.item(), l_bin.item()))
        durations.append(attn_hard[:, 0].sum(1))
    return {"history": history, "durations": durations, "soft": attn_soft, "prior": prior,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_rad_tts_aligner_forward_sum_and_bin_losses():
    weights = weights_of(rad_aligner)
    ours, _ = run_both(rad_aligner_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]
    for d in ours["durations"]:  # every text token gets at least one frame, and the frames add up
        np.testing.assert_array_equal(d.sum(1), [12, 8])
        assert np.all(d[0] >= 1) and np.all(d[1, :3] >= 1) and np.all(d[1, 3:] == 0)
    np.testing.assert_allclose(ours["prior"][0].sum(1), 1.0, rtol=1e-10)  # each frame's prior is a pmf
    soft = ours["soft"]
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-10)
    assert np.all(soft[1, :, :, 3:] == 0)
