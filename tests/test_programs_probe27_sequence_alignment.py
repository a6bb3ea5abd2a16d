# ruff: noqa: B007, B023, UP008  (the programs are kept as their authors wrote them)
"""Sequence-to-sequence training and decoding as PyTorch users write them (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy, brute force and
invariants; what tests/test_programs_probe4_sequence.py does not already cover. Alignments and structured outputs:
CTC training with greedy ``unique_consecutive`` decoding, and the CTC loss against the brute-force sum over
alignments; an RNN-T joint network (a broadcast add to a 4-d tensor, ``log_softmax`` over it) with its
forward-variable lattice; the BiLSTM-CRF tutorial and a batched CRF against enumeration."""

import itertools

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# CTC training and greedy decoding; an RNN-T joint network with its forward-variable lattice
# ----------------------------------------------------------------------------------------------


def ctc_training(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    T, N, C = 12, 3, 6
    lstm = nn.LSTM(4, 8, bidirectional=True)
    fc = nn.Linear(16, C)
    x = torch.randn(T, N, 4)
    out, _ = lstm(x)
    log_probs = fc(out).log_softmax(2)
    input_lengths = torch.tensor([12, 10, 7], dtype=torch.int32)
    target_lengths = torch.tensor([4, 3, 0], dtype=torch.int32)
    targets = torch.randint(1, C, (7,), dtype=torch.int32)
    l_concat = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                          zero_infinity=True)
    padded_targets = torch.zeros(N, 4, dtype=torch.long)
    padded_targets[0, :4] = targets[:4]
    padded_targets[1, :3] = targets[4:7]
    l_sum = nn.CTCLoss(blank=0, reduction="sum")(log_probs, padded_targets, input_lengths.long(),
                                                 target_lengths.long())
    l_none = F.ctc_loss(log_probs, padded_targets, input_lengths.tolist(), target_lengths.tolist(),
                        reduction="none")
    (l_concat + l_sum + l_none.sum()).backward()
    grads = [p.grad for p in fc.parameters()] + [p.grad for p in lstm.parameters()]
    best = log_probs.argmax(-1).transpose(0, 1)
    decoded = []
    for b in range(N):
        seq = torch.unique_consecutive(best[b, : input_lengths[b]])
        decoded.append(seq[seq != 0].tolist())
    u, inv, cnt = torch.unique_consecutive(best[0], return_inverse=True, return_counts=True)
    return log_probs, targets, l_concat, l_sum, l_none, grads, best, decoded, u, inv, cnt


def _ctc_brute_force(log_probs, target, frames):
    """-log Σ over every frame labelling that collapses to ``target`` (3^frames paths at most)."""
    total = -np.inf
    for path in itertools.product(range(log_probs.shape[1]), repeat=frames):
        collapsed = [c for c, _ in itertools.groupby(path) if c != 0]
        if collapsed == list(target):
            total = np.logaddexp(total, sum(log_probs[t, c] for t, c in enumerate(path)))
    return -total


def test_ctc_training_and_greedy_decoding():
    (log_probs, targets, l_concat, l_sum, l_none, grads, best, decoded, u, inv, cnt), _ = run_both(
        ctc_training, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l_none[2], -log_probs[:7, 2, 0].sum(), rtol=1e-5)  # the empty target: all blanks
    np.testing.assert_allclose(l_sum, l_none.sum(), rtol=1e-6)
    np.testing.assert_allclose(l_concat, (l_none / np.maximum([4, 3, 0], 1)).mean(), rtol=1e-6)
    for b, n in enumerate([12, 10, 7]):
        labels = [c for c, _ in itertools.groupby(best[b, :n]) if c != 0]
        assert decoded[b] == labels
    np.testing.assert_array_equal(u[inv], best[0])
    assert cnt.sum() == 12 and (np.diff(u) != 0).all()
    assert all(np.isfinite(g).all() for g in grads)


def ctc_short(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1)
    lp = torch.randn(5, 2, 3, dtype=torch.float64).log_softmax(-1).requires_grad_()
    loss = F.ctc_loss(lp, torch.tensor([[1, 1], [2, 1]]), (5, 4), (2, 2), reduction="none")
    loss.sum().backward()
    return lp, loss


def test_ctc_loss_is_the_brute_force_sum_over_alignments():
    (lp, loss), _ = run_both(ctc_short, compare=True)
    np.testing.assert_allclose(loss[0], _ctc_brute_force(lp[:, 0], [1, 1], 5), rtol=1e-10)
    np.testing.assert_allclose(loss[1], _ctc_brute_force(lp[:4, 1], [2, 1], 4), rtol=1e-10)


def rnnt(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    B, T, U, H, V = 2, 4, 2, 6, 4
    blank = 0

    class Joint(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(H, H)
            self.pred = nn.Linear(H, H)
            self.out = nn.Linear(H, V)

        def forward(self, f, g):
            f = self.enc(f).unsqueeze(2)  # B T 1 H
            g = self.pred(g).unsqueeze(1)  # B 1 U+1 H
            return self.out(torch.tanh(f + g))

    enc = nn.LSTM(3, H, batch_first=True)
    pred_emb, pred_rnn = nn.Embedding(V, H), nn.LSTM(H, H, batch_first=True)
    joint = Joint()
    x = torch.randn(B, T, 3)
    y = torch.randint(1, V, (B, U))
    f, _ = enc(x)
    g, _ = pred_rnn(pred_emb(F.pad(y, (1, 0), value=blank)))
    log_probs = joint(f, g).log_softmax(dim=-1)  # B T U+1 V
    blank_lp = log_probs[..., blank]
    emit_lp = torch.gather(log_probs[:, :, :U], 3, y.unsqueeze(1).expand(B, T, U).unsqueeze(-1)).squeeze(-1)
    alpha = [[None] * (U + 1) for _ in range(T)]
    for t in range(T):
        for u in range(U + 1):
            if t == 0 and u == 0:
                alpha[t][u] = torch.zeros(B)
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + blank_lp[:, t - 1, u])
            if u > 0:
                terms.append(alpha[t][u - 1] + emit_lp[:, t, u - 1])
            alpha[t][u] = torch.logsumexp(torch.stack(terms), dim=0)
    ll = alpha[T - 1][U] + blank_lp[:, T - 1, U]
    loss = -ll.mean()
    loss.backward()
    return (log_probs, y, ll, [p.grad for p in joint.parameters()], [p.grad for p in enc.parameters()],
            pred_emb.weight.grad)


def test_rnnt_joint_network_lattice():
    (log_probs, y, ll, joint_grads, enc_grads, emb_grad), _ = run_both(rnnt, rtol=1e-4, atol=1e-5)
    B, T, U1, V = log_probs.shape
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    for b in range(B):  # every monotone path: T blanks and U labels in any order, the last step a blank
        total = -np.inf
        for emit_at in itertools.combinations(range(T - 1 + U1 - 1), U1 - 1):
            t = u = 0
            score = 0.0
            for step in range(T - 1 + U1 - 1):
                if step in emit_at:
                    score += log_probs[b, t, u, y[b, u]]
                    u += 1
                else:
                    score += log_probs[b, t, u, 0]
                    t += 1
            total = np.logaddexp(total, score + log_probs[b, T - 1, U1 - 1, 0])
        np.testing.assert_allclose(ll[b], total, rtol=1e-5)
    assert all(np.isfinite(g).all() for g in joint_grads + enc_grads)
    assert (emb_grad[[r for r in range(V) if r != 0 and r not in y]] == 0).all()


# ----------------------------------------------------------------------------------------------
# PyTorch's BiLSTM-CRF tutorial (per-tag loops, Viterbi with backpointers) and a batched CRF
# ----------------------------------------------------------------------------------------------


def bilstm_crf(m, epochs=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(1)
    START_TAG, STOP_TAG = "<START>", "<STOP>"

    def argmax(vec):
        _, idx = torch.max(vec, 1)
        return idx.item()

    def prepare_sequence(seq, to_ix):
        return torch.tensor([to_ix[w] for w in seq], dtype=torch.long)

    def log_sum_exp(vec):
        max_score = vec[0, argmax(vec)]
        max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
        return max_score + torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab_size, tag_to_ix, embedding_dim, hidden_dim):
            super(BiLSTM_CRF, self).__init__()
            self.embedding_dim = embedding_dim
            self.hidden_dim = hidden_dim
            self.tag_to_ix = tag_to_ix
            self.tagset_size = len(tag_to_ix)
            self.word_embeds = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=1, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)
            self.transitions = nn.Parameter(torch.randn(self.tagset_size, self.tagset_size))
            self.transitions.data[tag_to_ix[START_TAG], :] = -10000
            self.transitions.data[:, tag_to_ix[STOP_TAG]] = -10000
            self.hidden = self.init_hidden()

        def init_hidden(self):
            return (torch.randn(2, 1, self.hidden_dim // 2), torch.randn(2, 1, self.hidden_dim // 2))

        def _forward_alg(self, feats):
            init_alphas = torch.full((1, self.tagset_size), -10000.)
            init_alphas[0][self.tag_to_ix[START_TAG]] = 0.
            forward_var = init_alphas
            for feat in feats:
                alphas_t = []
                for next_tag in range(self.tagset_size):
                    emit_score = feat[next_tag].view(1, -1).expand(1, self.tagset_size)
                    trans_score = self.transitions[next_tag].view(1, -1)
                    next_tag_var = forward_var + trans_score + emit_score
                    alphas_t.append(log_sum_exp(next_tag_var).view(1))
                forward_var = torch.cat(alphas_t).view(1, -1)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            return log_sum_exp(terminal_var)

        def _get_lstm_features(self, sentence):
            self.hidden = self.init_hidden()
            embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
            lstm_out, self.hidden = self.lstm(embeds, self.hidden)
            lstm_out = lstm_out.view(len(sentence), self.hidden_dim)
            return self.hidden2tag(lstm_out)

        def _score_sentence(self, feats, tags):
            score = torch.zeros(1)
            tags = torch.cat([torch.tensor([self.tag_to_ix[START_TAG]], dtype=torch.long), tags])
            for i, feat in enumerate(feats):
                score = score + self.transitions[tags[i + 1], tags[i]] + feat[tags[i + 1]]
            return score + self.transitions[self.tag_to_ix[STOP_TAG], tags[-1]]

        def _viterbi_decode(self, feats):
            backpointers = []
            init_vvars = torch.full((1, self.tagset_size), -10000.)
            init_vvars[0][self.tag_to_ix[START_TAG]] = 0
            forward_var = init_vvars
            for feat in feats:
                bptrs_t, viterbivars_t = [], []
                for next_tag in range(self.tagset_size):
                    next_tag_var = forward_var + self.transitions[next_tag]
                    best_tag_id = argmax(next_tag_var)
                    bptrs_t.append(best_tag_id)
                    viterbivars_t.append(next_tag_var[0][best_tag_id].view(1))
                forward_var = (torch.cat(viterbivars_t) + feat).view(1, -1)
                backpointers.append(bptrs_t)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            best_tag_id = argmax(terminal_var)
            path_score = terminal_var[0][best_tag_id]
            best_path = [best_tag_id]
            for bptrs_t in reversed(backpointers):
                best_tag_id = bptrs_t[best_tag_id]
                best_path.append(best_tag_id)
            start = best_path.pop()
            assert start == self.tag_to_ix[START_TAG]
            best_path.reverse()
            return path_score, best_path

        def neg_log_likelihood(self, sentence, tags):
            feats = self._get_lstm_features(sentence)
            return self._forward_alg(feats) - self._score_sentence(feats, tags)

        def forward(self, sentence):
            lstm_feats = self._get_lstm_features(sentence)
            return self._viterbi_decode(lstm_feats)

    training_data = [("the wall street journal reported today that apple corporation made money".split(),
                      "B I I I O O O B I O O".split()),
                     ("georgia tech is a university in georgia".split(), "B I O O O O B".split())]
    word_to_ix = {}
    for sentence, tags in training_data:
        for word in sentence:
            if word not in word_to_ix:
                word_to_ix[word] = len(word_to_ix)
    tag_to_ix = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}
    model = BiLSTM_CRF(len(word_to_ix), tag_to_ix, 5, 4)
    optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
    with torch.no_grad():
        precheck_sent = prepare_sequence(training_data[0][0], word_to_ix)
        before = model(precheck_sent)
    losses = []
    for epoch in range(epochs):
        for sentence, tags in training_data:
            model.zero_grad()
            sentence_in = prepare_sequence(sentence, word_to_ix)
            targets = torch.tensor([tag_to_ix[t] for t in tags], dtype=torch.long)
            loss = model.neg_log_likelihood(sentence_in, targets)
            loss.backward()
            optimizer.step()
            losses.append(loss)
    with torch.no_grad():
        after = model(precheck_sent)
    return before, after, losses, model.transitions.grad


def test_bilstm_crf_tutorial():
    (before, after, losses, transitions_grad), _ = run_both(bilstm_crf, rtol=1e-4, atol=1e-5)
    assert all(np.ravel(loss)[0] > 0 for loss in losses)  # the partition function bounds every path's score
    assert len(before[1]) == len(after[1]) == 11 and set(after[1]) <= {0, 1, 2}
    # nothing moves into START nor out of STOP: those transitions' gradients are exactly 0 (e^-10000)
    assert (transitions_grad[3, :] == 0).all() and (transitions_grad[:, 4] == 0).all()


def batched_crf(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(2)
    T, B, K = 4, 3, 3
    emissions = torch.randn(T, B, K, requires_grad=True)
    tags = torch.randint(0, K, (T, B))
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.uint8)
    start = nn.Parameter(torch.empty(K).uniform_(-0.1, 0.1))
    end = nn.Parameter(torch.empty(K).uniform_(-0.1, 0.1))
    trans = nn.Parameter(torch.empty(K, K).uniform_(-0.1, 0.1))
    mask_f = mask.float()
    score = start[tags[0]] + emissions[0, torch.arange(B), tags[0]]
    for i in range(1, T):
        score += trans[tags[i - 1], tags[i]] * mask_f[i]
        score += emissions[i, torch.arange(B), tags[i]] * mask_f[i]
    seq_ends = mask.long().sum(dim=0) - 1
    score += end[tags[seq_ends, torch.arange(B)]]
    part = start + emissions[0]
    for i in range(1, T):
        next_score = torch.logsumexp(part.unsqueeze(2) + trans + emissions[i].unsqueeze(1), dim=1)
        part = torch.where(mask[i].unsqueeze(1).bool(), next_score, part)
    denominator = torch.logsumexp(part + end, dim=1)
    llh = score - denominator
    llh.sum().backward()
    with torch.no_grad():
        sc = start + emissions[0]
        history = []
        for i in range(1, T):
            ns, indices = (sc.unsqueeze(2) + trans + emissions[i].unsqueeze(1)).max(dim=1)
            sc = torch.where(mask[i].unsqueeze(1).bool(), ns, sc)
            history.append(indices)
        sc += end
        best = []
        for idx in range(B):
            _, best_last_tag = sc[idx].max(dim=0)
            best_tags = [best_last_tag.item()]
            for hist in reversed(history[: seq_ends[idx]]):
                best_last_tag = hist[idx][best_tags[-1]]
                best_tags.append(best_last_tag.item())
            best_tags.reverse()
            best.append(best_tags)
    return emissions, tags, start, end, trans, llh, emissions.grad, trans.grad, best


def test_batched_crf_against_enumeration():
    (emissions, tags, start, end, trans, llh, emissions_grad, trans_grad, best), _ = run_both(batched_crf)
    K = 3
    for b, n in enumerate([4, 3, 2]):
        def path_score(path):
            s = start[path[0]] + emissions[0, b, path[0]] + end[path[-1]]
            return s + sum(trans[path[i - 1], path[i]] + emissions[i, b, path[i]] for i in range(1, n))

        scores = {p: path_score(p) for p in itertools.product(range(K), repeat=n)}
        log_z = np.logaddexp.reduce(list(scores.values()))
        np.testing.assert_allclose(llh[b], path_score(tuple(tags[:n, b])) - log_z, rtol=1e-5, atol=1e-5)
        assert tuple(best[b]) == max(scores, key=scores.get)
        # d llh / d emissions = one-hot(gold) - marginals: each frame's row sums to 0; padded frames get none
        np.testing.assert_allclose(emissions_grad[:n, b].sum(-1), 0, atol=1e-6)
        assert (emissions_grad[n:, b] == 0).all()
