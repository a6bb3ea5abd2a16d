# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Sequence-to-sequence training and decoding as PyTorch users write them (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy, brute force and
invariants; what tests/test_programs_probe4_sequence.py does not already cover. Decoding and its losses: batched beam
search (a -1e9 start, finished beams forced to EOS, ``index_select`` of states, a GNMT length penalty); greedy
decoding with an early-stop mask; label smoothing with ``ignore_index`` and weights (and the Annotated Transformer's
``KLDivLoss`` version); a pointer-generator's ``scatter_add`` over an extended vocabulary; HuggingFace's logits
processors."""

import numpy as np

from .pytorch_programs import run_both


def _log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


# ----------------------------------------------------------------------------------------------
# Batched beam search: -1e9 start, finished beams forced to EOS, index_select of states, GNMT length penalty
# ----------------------------------------------------------------------------------------------


def beam_search(m, beam_size=3, max_len=6, alpha=0.7):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    V, H, B = 7, 5, 2
    emb, cell, proj = nn.Embedding(V, H), nn.GRUCell(H, H), nn.Linear(H, V)
    bos, eos = 1, 2
    h = h_start = torch.randn(B, H)
    h = h.unsqueeze(1).expand(B, beam_size, H).reshape(B * beam_size, H)
    tokens = torch.full((B * beam_size, 1), bos, dtype=torch.long)
    scores = torch.zeros(B, beam_size)
    scores[:, 1:] = -1e9
    scores = scores.view(-1)
    finished = torch.zeros(B * beam_size, dtype=torch.bool)
    with torch.no_grad():
        for t in range(max_len):
            h = cell(emb(tokens[:, -1]), h)
            logp = F.log_softmax(proj(h), dim=-1)
            logp[finished] = -float("inf")
            logp[finished, eos] = 0.0
            cand = (scores.unsqueeze(1) + logp).view(B, -1)
            top_scores, top_idx = cand.topk(beam_size, dim=1)
            beam_idx = top_idx // V
            tok_idx = top_idx % V
            base = (torch.arange(B) * beam_size).unsqueeze(1)
            flat = (base + beam_idx).view(-1)
            tokens = torch.cat([tokens.index_select(0, flat), tok_idx.view(-1, 1)], dim=1)
            h = h.index_select(0, flat)
            finished = finished[flat] | (tok_idx.view(-1) == eos)
            scores = top_scores.view(-1)
            if finished.all():
                break
        lengths = (tokens != eos).sum(1).float()
        lp = ((5 + lengths) / 6) ** alpha
        normed = (scores / lp).view(B, beam_size)
        best = normed.argmax(1)
        best_tokens = tokens.view(B, beam_size, -1)[torch.arange(B), best]
    return tokens, scores, normed, best, best_tokens, finished, (h_start, emb, cell, proj)


def _beam_program(m):
    torch = m.torch
    tokens, scores, normed, best, best_tokens, finished, (h_start, emb, cell, proj) = beam_search(m)
    # replay: the sum of each kept beam's step log-probabilities, up to and including its first EOS
    h = h_start.repeat_interleave(3, dim=0)
    replay = torch.zeros(6)
    with torch.no_grad():
        done = torch.zeros(6, dtype=torch.bool)
        for t in range(1, tokens.size(1)):
            h = cell(emb(tokens[:, t - 1]), h)
            logp = m.F.log_softmax(proj(h), -1).gather(1, tokens[:, t:t + 1]).squeeze(1)
            replay += torch.where(done, torch.zeros(6), logp)
            done = done | (tokens[:, t] == 2)
    return tokens, scores, normed, best, best_tokens, finished, replay


def test_batched_beam_search_with_length_penalty():
    (tokens, scores, normed, best, best_tokens, finished, replay), _ = run_both(_beam_program)
    assert (tokens[:, 0] == 1).all()
    for row in tokens:  # after a beam's first EOS it only repeats EOS
        ends = np.flatnonzero(row == 2)
        assert len(ends) == 0 or (row[ends[0]:] == 2).all()
    per_batch = scores.reshape(2, 3)
    assert (np.diff(per_batch, axis=1) <= 0).all()  # topk keeps them sorted
    np.testing.assert_allclose(scores, replay, rtol=1e-5, atol=1e-5)
    lengths = (tokens != 2).sum(1)
    np.testing.assert_allclose(normed.ravel(), scores / ((5 + lengths) / 6) ** 0.7, rtol=1e-6)
    np.testing.assert_array_equal(best_tokens, tokens.reshape(2, 3, -1)[[0, 1], best])


# ----------------------------------------------------------------------------------------------
# Greedy decoding with an early-stop mask; label smoothing with ignore_index
# ----------------------------------------------------------------------------------------------


def greedy_early_stop(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    B, V, H, eos, pad = 4, 5, 6, 0, 4
    emb, rnn, out = nn.Embedding(V, H), nn.GRU(H, H, batch_first=True), nn.Linear(H, V)
    x = torch.full((B, 1), 1, dtype=torch.long)
    hidden = None
    done = torch.zeros(B, dtype=torch.bool)
    logps = []
    for t in range(8):
        o, hidden = rnn(emb(x[:, -1:]), hidden)
        logits = out(o[:, -1])
        nxt = logits.argmax(-1).masked_fill(done, pad)
        logps.append(F.log_softmax(logits, -1).gather(1, nxt.unsqueeze(1)).squeeze(1) * (~done).float())
        x = torch.cat([x, nxt[:, None]], 1)
        done = done | (nxt == eos)
        if done.all():
            break
    seq_logp = torch.stack(logps, 1).sum(1)
    seq_logp.sum().backward()
    return x, seq_logp, emb.weight.grad, out.bias.grad


def test_greedy_decoding_with_early_stop_mask():
    (x, seq_logp, emb_grad, bias_grad), _ = run_both(greedy_early_stop)
    assert (seq_logp <= 0).all() and x.shape[1] <= 9
    for row in x:
        ends = np.flatnonzero(row[1:] == 0)
        if len(ends):
            assert (row[1 + ends[0] + 1:] == 4).all()  # padded after EOS
    # d(sum of chosen log-probs)/d(bias) = (#times chosen) - (sum of softmaxes): the entries sum to 0
    np.testing.assert_allclose(bias_grad.sum(), 0.0, atol=1e-5)


def label_smoothing(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    tgt = torch.randint(0, 7, (3, 5))
    tgt[0, 3:] = -100
    tgt[2, 1] = -100
    l_seq = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, label_smoothing=0.1)
    l_none = F.cross_entropy(logits.view(-1, 7), tgt.view(-1), label_smoothing=0.1, reduction="none")
    w = torch.rand(7)
    l_weighted = F.cross_entropy(logits.view(-1, 7), tgt.view(-1), weight=w, label_smoothing=0.15)
    tgt_pad = tgt.clone()
    tgt_pad[tgt_pad == -100] = 0
    l_pad = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)(logits.reshape(-1, 7), tgt_pad.reshape(-1))

    class LabelSmoothing(nn.Module):  # the Annotated Transformer's
        def __init__(self, size, padding_idx, smoothing=0.0):
            super(LabelSmoothing, self).__init__()
            self.criterion = nn.KLDivLoss(reduction="sum")
            self.padding_idx = padding_idx
            self.confidence = 1.0 - smoothing
            self.smoothing = smoothing
            self.size = size
            self.true_dist = None

        def forward(self, x, target):
            assert x.size(1) == self.size
            true_dist = x.data.clone()
            true_dist.fill_(self.smoothing / (self.size - 2))
            true_dist.scatter_(1, target.data.unsqueeze(1), self.confidence)
            true_dist[:, self.padding_idx] = 0
            mask = torch.nonzero(target.data == self.padding_idx)
            if mask.dim() > 0:
                true_dist.index_fill_(0, mask.squeeze(), 0.0)
            self.true_dist = true_dist
            return self.criterion(x, true_dist.clone().detach())

    crit = LabelSmoothing(7, 0, 0.1)
    l_kl = crit(logits.view(-1, 7).log_softmax(-1), tgt_pad.view(-1))
    (l_seq + l_none.sum() + l_weighted + l_pad + l_kl).backward()
    return logits, tgt, w, l_seq, l_none, l_weighted, l_pad, l_kl, logits.grad, crit.true_dist


def test_label_smoothing_with_ignore_index():
    (logits, tgt, w, l_seq, l_none, l_weighted, l_pad, l_kl, grad, true_dist), _ = run_both(label_smoothing)
    lp = _log_softmax(logits.reshape(-1, 7))
    t = tgt.reshape(-1)
    kept = t != -100
    nll = np.where(kept, -lp[np.arange(15), np.where(kept, t, 0)], 0)
    smooth = np.where(kept, -lp.mean(1), 0)
    np.testing.assert_allclose(l_none, 0.9 * nll + 0.1 * smooth, rtol=1e-5)
    np.testing.assert_allclose(l_seq, l_none.sum() / kept.sum(), rtol=1e-5)
    # with weights: PyTorch's smoothing term weighs each class by its own weight, and the mean divides by the
    # targets' weights
    tw = np.where(kept, w[np.where(kept, t, 0)], 0)
    weighted = 0.85 * tw * nll + 0.15 * np.where(kept, -(lp * w).sum(1) / 7, 0)
    np.testing.assert_allclose(l_weighted, weighted.sum() / tw.sum(), rtol=1e-5)
    assert (true_dist[t <= 0] == 0).all() and np.allclose(true_dist[t > 0].sum(1), 0.9 + 5 * 0.1 / 5)
    assert np.isfinite(grad).all() and float(l_pad) > 0 and float(l_kl) > 0


# ----------------------------------------------------------------------------------------------
# A pointer-generator's final distribution; HuggingFace's logits processors
# ----------------------------------------------------------------------------------------------


def pointer_generator(m):
    torch, F = m.torch, m.F
    torch.manual_seed(2)
    B, S, V, OOV = 2, 5, 6, 3
    vocab_logits = torch.randn(B, V, requires_grad=True)
    attn_logits = torch.randn(B, S, requires_grad=True)
    p_gen_logit = torch.randn(B, 1, requires_grad=True)
    vocab_dist = F.softmax(vocab_logits, -1)
    enc_padding_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]).float()
    attn_dist = F.softmax(attn_logits, -1) * enc_padding_mask
    attn_dist = attn_dist / attn_dist.sum(1, keepdim=True)
    p_gen = torch.sigmoid(p_gen_logit)
    vocab_dist_ = p_gen * vocab_dist
    attn_dist_ = (1 - p_gen) * attn_dist
    extra_zeros = torch.zeros((B, OOV))
    vocab_dist_ = torch.cat([vocab_dist_, extra_zeros], 1)
    enc_batch_extend_vocab = torch.tensor([[0, 6, 3, 7, 0], [8, 8, 1, 0, 0]])
    final_dist = vocab_dist_.scatter_add(1, enc_batch_extend_vocab, attn_dist_)
    target = torch.tensor([6, 8])
    gold_probs = torch.gather(final_dist, 1, target.unsqueeze(1)).squeeze()
    loss = -torch.log(gold_probs + 1e-12).mean()
    coverage = attn_dist.detach() * 0.5
    cov_loss = torch.sum(torch.min(attn_dist, coverage), 1).mean()
    (loss + cov_loss).backward()
    return final_dist, p_gen, attn_dist, loss, cov_loss, attn_logits.grad, vocab_logits.grad, p_gen_logit.grad


def test_pointer_generator_scatter_add():
    (final, p_gen, attn, loss, cov_loss, attn_grad, vocab_grad, p_gen_grad), _ = run_both(pointer_generator)
    np.testing.assert_allclose(final.sum(1), 1.0, rtol=1e-6)
    # out-of-vocabulary word 6 is copied from source position 1 only, word 8 from positions 0 and 1
    np.testing.assert_allclose(final[0, 6], (1 - p_gen[0, 0]) * attn[0, 1], rtol=1e-6)
    np.testing.assert_allclose(final[1, 8], (1 - p_gen[1, 0]) * attn[1, :2].sum(), rtol=1e-6)
    np.testing.assert_allclose(cov_loss, 0.5, rtol=1e-6)  # min(a, a/2) summed over each distribution
    np.testing.assert_allclose(attn_grad.sum(1), 0, atol=1e-6)  # a softmax's logits: shifts change nothing
    np.testing.assert_allclose(vocab_grad.sum(1), 0, atol=1e-6)


def hf_logits_processors(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    B, V = 3, 10
    logits = torch.randn(B, V)
    input_ids = torch.randint(0, V, (B, 5))
    penalty = 1.3  # RepetitionPenaltyLogitsProcessor
    score = torch.gather(logits, 1, input_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    scores = logits.scatter(1, input_ids, score) / 0.7  # then TemperatureLogitsWarper
    top_k = 4  # TopKLogitsWarper
    indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
    scores_k = scores.masked_fill(indices_to_remove, -float("Inf"))
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)  # TopPLogitsWarper
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - 0.8)
    sorted_indices_to_remove[..., -1:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    scores_p = scores.masked_fill(indices_to_remove, -float("Inf"))
    next_tokens = torch.multinomial(F.softmax(scores_p, dim=-1), num_samples=1).squeeze(1)
    eos_mask = torch.isin(torch.arange(V), torch.tensor([2, 3]))  # MinLengthLogitsProcessor
    scores_min = torch.where(eos_mask, -float("inf"), scores)
    probs_k = F.softmax(scores_k, -1)  # beam sampling: 2 of each row, ordered by probability
    nt = torch.multinomial(probs_k, num_samples=2, replacement=False)
    nt_scores, _idx = torch.sort(torch.gather(probs_k, -1, nt), descending=True, dim=1)
    nt = torch.gather(nt, -1, _idx)
    unfinished = torch.ones(B, dtype=torch.long)
    unfinished = unfinished & ~(next_tokens == 3)
    return logits, input_ids, scores, scores_k, scores_p, next_tokens, scores_min, nt, nt_scores, unfinished


def test_huggingface_logits_processors():
    (logits, input_ids, scores, scores_k, scores_p, next_tokens, scores_min, nt, nt_scores, unfinished), _ = run_both(
        hf_logits_processors)
    for b in range(3):
        seen = set(input_ids[b].tolist())
        for v in range(10):
            expected = (logits[b, v] * 1.3 if logits[b, v] < 0 else logits[b, v] / 1.3) if v in seen else logits[b, v]
            np.testing.assert_allclose(scores[b, v], expected / 0.7, rtol=1e-6)
        assert np.isfinite(scores_k[b]).sum() == 4
        kept = np.isfinite(scores_p[b])
        p = np.exp(_log_softmax(scores[b]))
        assert p[kept].sum() >= 0.8 - 1e-6 and p[kept].min() >= p[~kept].max(initial=0)
        assert kept[next_tokens[b]] and np.isfinite(scores_k[b, nt[b]]).all()
    assert np.isneginf(scores_min[:, [2, 3]]).all() and (np.diff(nt_scores, axis=1) <= 0).all()
    np.testing.assert_array_equal(unfinished, next_tokens != 3)
