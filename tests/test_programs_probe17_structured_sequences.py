# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Structured prediction and differentiable dynamic programming (see tests/pytorch_programs.py), run on chainrule and
on PyTorch from the same weights and data, comparing losses, decodes and gradients; each model is run in float64
where its authors allow it, and checked besides against enumerating every structure in NumPy, so that the CI run
without PyTorch still asserts the numbers. Sequences and segmentations: a semi-Markov CRF (segment scores by
``cumsum``, forward and Viterbi over segment lengths); a structured SVM tagger (loss-augmented Viterbi,
margin-rescaled hinge, the structured perceptron); a linear-chain CRF over packed BiLSTM features by a sequential
masked scan, a binary-tree reduction of log-semiring matrix products, the backward algorithm on ``flip``-ped
potentials, and Viterbi as the gradient of the max-semiring score; Baum-Welch as backprop (expected counts as
gradients, the M step copied in under ``no_grad``); structured attention by CRF marginals
(``autograd.grad(create_graph=True)`` trained through)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A semi-Markov CRF (Sarawagi & Cohen 2004) for segmentation: segment scores from cumulative sums of
# the emissions plus a length embedding, the forward algorithm over segment lengths, the gold
# segmentation's score, and Viterbi over segments
# ----------------------------------------------------------------------------------------------

SEG_LABELS, MAX_SEG = 3, 3


def semi_crf(m, vocab=8, dim=6):
    torch, nn = m.torch, m.nn

    class SemiCRF(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.gru = nn.GRU(dim, dim, batch_first=True)
            self.emit = nn.Linear(dim, SEG_LABELS)
            self.begin = nn.Linear(dim, SEG_LABELS)  # a segment's first word (no ties between splits)
            self.length_score = nn.Embedding(MAX_SEG + 1, SEG_LABELS)
            self.trans = nn.Parameter(0.1 * torch.randn(SEG_LABELS + 1, SEG_LABELS))  # last row: start

        def segment_scores(self, words):
            h, _ = self.gru(self.embed(words))
            e = self.emit(h)  # (B, n, K)
            c = torch.cat([torch.zeros_like(e[:, :1]), e.cumsum(1)], 1)  # prefix sums (B, n+1, K)
            # score of segment (i, j] labelled y: c[j, y] - c[i, y] + begin[i, y] + length_score[j - i, y]
            return c, self.begin(h)

        def seg(self, c, i, j):
            c, begin = c
            return c[:, j] - c[:, i] + begin[:, i] + self.length_score.weight[j - i]

        def log_partition(self, words):
            c = self.segment_scores(words)
            B, n = words.shape
            alpha = [None] * (n + 1)  # alpha[j]: (B, K) the segmentations of words[:j] ending in label K
            for j in range(1, n + 1):
                terms = []
                for d in range(1, min(MAX_SEG, j) + 1):
                    i = j - d
                    s = self.seg(c, i, j)
                    if i == 0:
                        terms.append(self.trans[-1] + s)
                    else:
                        terms.append(torch.logsumexp(alpha[i].unsqueeze(2) + self.trans[:-1], dim=1) + s)
                alpha[j] = torch.logsumexp(torch.stack(terms), dim=0)
            return torch.logsumexp(alpha[n], dim=-1)

        def score(self, words, segments, c=None):
            c = self.segment_scores(words) if c is None else c
            total = []
            for b, segs in enumerate(segments):
                s, prev = 0.0, -1
                for i, j, y in segs:
                    s = s + self.seg((c[0][b:b + 1], c[1][b:b + 1]), i, j)[0, y] + self.trans[prev, y]
                    prev = y
                total.append(s)
            return torch.stack(total)

        @torch.no_grad()
        def viterbi(self, words):
            c = self.segment_scores(words)
            B, n = words.shape
            delta = [None] * (n + 1)
            back = [None] * (n + 1)
            for j in range(1, n + 1):
                cands, origin = [], []
                for d in range(1, min(MAX_SEG, j) + 1):
                    i = j - d
                    s = self.seg(c, i, j)
                    if i == 0:
                        best, arg = self.trans[-1].expand(B, -1), torch.full((B, SEG_LABELS), -1, dtype=torch.long)
                    else:
                        best, arg = (delta[i].unsqueeze(2) + self.trans[:-1]).max(dim=1)
                    cands.append(best + s)
                    origin.append(arg)
                stacked = torch.stack(cands)  # (D, B, K)
                delta[j], which = stacked.max(dim=0)
                prev_label = torch.stack(origin).gather(0, which.unsqueeze(0)).squeeze(0)
                back[j] = (which + 1, prev_label)  # segment length, previous label
            out = []
            best_score, y = delta[n].max(-1)
            for b in range(B):
                segs, j, label = [], n, int(y[b])
                while j > 0:
                    d, prev = int(back[j][0][b, label]), int(back[j][1][b, label])
                    segs.append((j - d, j, label))
                    j, label = j - d, prev
                out.append(segs[::-1])
            return best_score, out

    return SemiCRF()


def segmentations(n, labels=SEG_LABELS, max_seg=MAX_SEG):
    if n == 0:
        yield []
        return
    for d in range(1, min(max_seg, n) + 1):
        for rest in segmentations(n - d, labels, max_seg):
            for y in range(labels):
                yield rest + [(n - d, n, y)]


def semi_crf_program(m, weights):
    torch = m.torch
    model = load(m, semi_crf(m), weights).double()
    words = torch.tensor([[1, 4, 2, 2, 7], [3, 3, 5, 0, 6]])
    gold = [[(0, 2, 0), (2, 3, 1), (3, 5, 2)], [(0, 1, 1), (1, 4, 0), (4, 5, 1)]]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = []
    for step in range(4):
        opt.zero_grad()
        nll = (model.log_partition(words) - model.score(words, gold)).mean()
        nll.backward()
        opt.step()
        history.append(nll.item())
    grads = {k: p.grad for k, p in model.named_parameters()}
    with torch.no_grad():
        logZ = model.log_partition(words)
        c = model.segment_scores(words)
    best, segs = model.viterbi(words)
    return {"history": history, "grads": grads, "logZ": logZ, "best": best, "segs": segs,
            "prefix_sums": c[0], "begin": c[1], "length_score": model.length_score.weight, "trans": model.trans}


def test_semi_markov_crf():
    weights = weights_of(semi_crf)
    ours, _ = run_both(semi_crf_program, weights, rtol=1e-9, atol=1e-11)
    assert ours["history"][-1] < ours["history"][0]
    c, begin, length, trans = ours["prefix_sums"], ours["begin"], ours["length_score"], ours["trans"]

    def seg_score(b, segs):
        total, prev = 0.0, -1
        for i, j, y in segs:
            total += c[b, j, y] - c[b, i, y] + begin[b, i, y] + length[j - i, y] + trans[prev, y]
            prev = y
        return total

    every = np.array([[seg_score(b, segs) for b in range(2)] for segs in segmentations(5)])  # every segmentation
    top = every.max(0)
    np.testing.assert_allclose(ours["logZ"], np.log(np.exp(every - top).sum(0)) + top, rtol=1e-10)
    np.testing.assert_allclose(ours["best"], top, rtol=1e-10)
    segs = list(segmentations(5))
    for b in range(2):
        assert [tuple(s) for s in ours["segs"][b]] == segs[int(every[:, b].argmax())]


# ----------------------------------------------------------------------------------------------
# A structured SVM tagger (Taskar et al. 2003; Tsochantaridis et al. 2005): loss-augmented Viterbi
# with a Hamming cost, the margin-rescaled structured hinge, subgradients through gather, and the
# structured perceptron's update on the same model
# ----------------------------------------------------------------------------------------------

N_TAGS = 4


def hinge_tagger(m, vocab=9, dim=6):
    torch, nn = m.torch, m.nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim, padding_idx=0)
            self.conv = nn.Conv1d(dim, dim, 3, padding=1)
            self.out = nn.Linear(dim, N_TAGS)
            self.transitions = nn.Parameter(torch.zeros(N_TAGS, N_TAGS))
            self.start = nn.Parameter(torch.zeros(N_TAGS))

        def forward(self, words):
            h = torch.tanh(self.conv(self.embed(words).transpose(1, 2))).transpose(1, 2)
            return self.out(h)  # (B, T, K)

        def path_score(self, emissions, tags, mask):
            B, T, K = emissions.shape
            emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
            trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
            return self.start[tags[:, 0]] + (emit * mask).sum(1) + (trans * mask[:, 1:]).sum(1)

        @torch.no_grad()
        def viterbi(self, emissions, mask):
            B, T, K = emissions.shape
            score = self.start + emissions[:, 0]
            history = []
            for t in range(1, T):
                next_score, indices = (score.unsqueeze(2) + self.transitions).max(dim=1)
                next_score = next_score + emissions[:, t]
                score = torch.where(mask[:, t].unsqueeze(1).bool(), next_score, score)
                history.append(indices)
            best_score, best_last = score.max(dim=1)
            lengths = mask.sum(1).long()
            tags = torch.zeros(B, T, dtype=torch.long)
            for b in range(B):
                tag = best_last[b]
                tags[b, lengths[b] - 1] = tag
                for t in range(int(lengths[b]) - 2, -1, -1):
                    tag = history[t][b][tag]
                    tags[b, t] = tag
            return best_score, tags

    return Tagger()


def structured_hinge_program(m, weights, rule="hinge"):
    torch, F = m.torch, m.F
    model = load(m, hinge_tagger(m), weights).double()
    words = torch.tensor([[1, 5, 3, 8, 2, 4], [6, 2, 7, 0, 0, 0], [3, 3, 1, 5, 0, 0]])
    gold = torch.tensor([[0, 1, 2, 3, 1, 0], [2, 2, 3, 0, 0, 0], [1, 0, 0, 2, 0, 0]])
    mask = (words != 0).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-3)
    history, decodes = [], []
    for epoch in range(6):
        opt.zero_grad()
        emissions = model(words)
        if rule == "hinge":  # loss-augmented decoding: +1 for every tag that is not gold
            cost = 1.0 - F.one_hot(gold, N_TAGS).double()
            _, y_hat = model.viterbi(emissions + cost * mask.unsqueeze(2), mask)
            hamming = ((y_hat != gold).double() * mask).sum(1)
        else:  # the structured perceptron
            _, y_hat = model.viterbi(emissions, mask)
            hamming = torch.zeros(3, dtype=torch.float64)
        margins = model.path_score(emissions, y_hat, mask) + hamming - model.path_score(emissions, gold, mask)
        loss = torch.clamp(margins, min=0).sum() if rule == "hinge" else margins.sum()
        loss.backward()
        opt.step()
        history.append(loss.item())
        decodes.append(y_hat)
    with torch.no_grad():
        emissions = model(words)
        best, tags = model.viterbi(emissions, mask)
    return {"history": history, "decodes": decodes, "best": best, "tags": tags, "emissions": emissions,
            "transitions": model.transitions, "start": model.start,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


@pytest.mark.parametrize("rule", ["hinge", "perceptron"])
def test_structured_hinge_with_loss_augmented_viterbi(rule):
    weights = weights_of(hinge_tagger)
    ours, _ = run_both(structured_hinge_program, weights, rule=rule, rtol=1e-9, atol=1e-11)
    assert ours["history"][-1] < ours["history"][0]
    if rule == "hinge":
        assert all(v >= 0 for v in ours["history"])
    import itertools
    e, A, s0 = ours["emissions"], ours["transitions"], ours["start"]
    for b, n in enumerate([6, 3, 4]):  # Viterbi is the best of every tag sequence
        scored = {p: s0[p[0]] + sum(e[b, t, p[t]] for t in range(n)) + sum(A[p[t], p[t + 1]] for t in range(n - 1))
                  for p in itertools.product(range(N_TAGS), repeat=n)}
        best = max(scored, key=scored.get)
        assert tuple(ours["tags"][b, :n]) == best
        assert ours["best"][b] == pytest.approx(scored[best], rel=1e-12)


# ----------------------------------------------------------------------------------------------
# A linear-chain CRF three ways, as torch-struct and its users write it: log Z by a sequential scan
# under a length mask (torch.where), by a parallel binary-tree reduction of log-semiring matrix
# products padded with the log identity, and by the backward algorithm on flipped potentials;
# marginals as alpha + beta - log Z and as the gradient of log Z; the Viterbi path as the gradient of
# the max-semiring score
# ----------------------------------------------------------------------------------------------

C_TAGS = 3


def chain_crf(m, vocab=7, dim=5):
    torch, nn = m.torch, m.nn

    class ChainCRF(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
            self.emit = nn.Linear(2 * dim, C_TAGS)
            self.trans = nn.Parameter(torch.randn(C_TAGS, C_TAGS) * 0.5)

        def forward(self, words, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.embed(words), lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=words.size(1))
            return self.emit(h)  # (B, T, C)

    return ChainCRF()


def edge_potentials(m, emissions, trans, lengths):
    """edge[b, t, i, j]: tag i at t then tag j at t + 1 (the first edge carries the first emission);
    the log identity past a sequence's end, so a product over every edge covers exactly its length."""
    torch = m.torch
    B, T, C = emissions.shape
    edge = trans.view(1, 1, C, C) + emissions[:, 1:].unsqueeze(2)
    edge = torch.cat([edge[:, :1] + emissions[:, :1].unsqueeze(3), edge[:, 1:]], dim=1)
    log_eye = torch.full((C, C), float("-inf"), dtype=emissions.dtype).fill_diagonal_(0)
    mask = torch.arange(1, T)[None] < lengths[:, None]  # (B, T-1): edge t exists when t + 1 < length
    return torch.where(mask[:, :, None, None], edge, log_eye)


def logbmm(a, b):
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).logsumexp(-2)


def maxbmm(a, b):
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).max(-2)[0]


def tree_reduce(m, edge, product):
    torch = m.torch
    B, N, C, _ = edge.shape
    size = 1 << (N - 1).bit_length()
    log_eye = torch.full((C, C), float("-inf"), dtype=edge.dtype)
    log_eye.diagonal().zero_()
    x = torch.cat([edge, log_eye.expand(B, size - N, C, C)], dim=1)
    while x.shape[1] > 1:
        x = product(x[:, 0::2], x[:, 1::2])
    return x[:, 0]


def chain_crf_program(m, weights):
    torch, F = m.torch, m.F
    model = load(m, chain_crf(m), weights).double()
    words = torch.tensor([[1, 4, 2, 6, 3], [5, 2, 2, 0, 0], [3, 1, 0, 0, 0]])
    lengths = torch.tensor([5, 3, 2])
    gold = torch.tensor([[0, 1, 1, 2, 0], [2, 2, 0, 0, 0], [1, 0, 0, 0, 0]])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for step in range(3):
        opt.zero_grad()
        emissions = model(words, lengths)
        edge = edge_potentials(m, emissions, model.trans, lengths)
        logZ = tree_reduce(m, edge, logbmm).logsumexp(-1).logsumexp(-1)
        # the gold path's score: one edge per step, read by advanced indexing
        B, T = gold.shape
        t = torch.arange(T - 1)
        gold_score = edge[torch.arange(B)[:, None], t, gold[:, :-1], gold[:, 1:]].sum(-1)
        loss = (logZ - gold_score).mean()
        loss.backward()
        opt.step()
        history.append(loss.item())

    emissions = model(words, lengths).detach().requires_grad_(True)
    edge = edge_potentials(m, emissions, model.trans.detach(), lengths)
    B, T, C = emissions.shape
    # sequential forward under the mask
    alpha = emissions[:, 0]
    alphas = [alpha]
    for t in range(1, T):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + model.trans.detach() + emissions[:, t].unsqueeze(1), dim=1)
        alpha = torch.where((t < lengths).unsqueeze(1), nxt, alpha)
        alphas.append(alpha)
    logZ_seq = alpha.logsumexp(-1)
    logZ_tree = tree_reduce(m, edge, logbmm).logsumexp(-1).logsumexp(-1)
    # backward algorithm: the forward scan over flipped, transposed edges
    back_edge = edge.flip(1).transpose(-1, -2)
    beta = torch.zeros(B, C, dtype=emissions.dtype)
    betas = [beta]
    for t in range(T - 1):
        beta = torch.logsumexp(back_edge[:, t] + beta.unsqueeze(2), dim=1)
        betas.append(beta)
    betas = torch.stack(betas[::-1], 1)  # (B, T, C): beta[t] covers edges t..T-2 (edge 0 carries emission 0)
    logZ_back = betas[:, 0].logsumexp(-1)
    alphas = torch.stack(alphas, 1)
    by_grad, = torch.autograd.grad(logZ_tree.sum(), emissions)
    # Viterbi as the gradient of the max-semiring score
    edge_v = edge.detach().requires_grad_(True)
    best = tree_reduce(m, edge_v, maxbmm).flatten(1).max(-1)[0]
    edge_marg, = torch.autograd.grad(best.sum(), edge_v)
    path = torch.cat([edge_marg.sum(-1)[:, :1].argmax(-1), edge_marg.sum(-2).argmax(-1)], dim=1)
    return {"history": history, "logZ_seq": logZ_seq, "logZ_tree": logZ_tree, "logZ_back": logZ_back,
            "by_grad": by_grad, "alphas": alphas, "betas": betas, "best": best, "path": path,
            "emissions": emissions, "trans": model.trans}


def test_linear_chain_crf_scan_tree_flip_and_viterbi_by_gradient():
    weights = weights_of(chain_crf)
    ours, _ = run_both(chain_crf_program, weights, rtol=1e-9, atol=1e-11)
    assert ours["history"][-1] < ours["history"][0]
    np.testing.assert_allclose(ours["logZ_tree"], ours["logZ_seq"], rtol=1e-12)
    np.testing.assert_allclose(ours["logZ_back"], ours["logZ_seq"], rtol=1e-12)
    import itertools
    e, A = ours["emissions"], ours["trans"]
    for b, n in enumerate([5, 3, 2]):
        scored = {p: sum(e[b, t, p[t]] for t in range(n)) + sum(A[p[t], p[t + 1]] for t in range(n - 1))
                  for p in itertools.product(range(C_TAGS), repeat=n)}
        vals = np.array(list(scored.values()))
        assert ours["logZ_seq"][b] == pytest.approx(np.log(np.exp(vals).sum()), rel=1e-12)
        marg = np.zeros((n, C_TAGS))
        for p, v in scored.items():
            marg[np.arange(n), p] += np.exp(v - ours["logZ_seq"][b])
        np.testing.assert_allclose(ours["by_grad"][b, :n], marg, rtol=1e-9, atol=1e-13)
        assert np.all(ours["by_grad"][b, n:] == 0)  # past the end nothing depends on the emissions
        beta = ours["betas"][b, :n].copy()
        beta[0] -= e[b, 0]  # (alpha holds the first emission too)
        fb = np.exp(ours["alphas"][b, :n] + beta - ours["logZ_seq"][b])
        np.testing.assert_allclose(fb, marg, rtol=1e-9, atol=1e-13)
        best = max(scored, key=scored.get)
        assert ours["best"][b] == pytest.approx(scored[best], rel=1e-12)
        assert tuple(ours["path"][b, :n]) == best


# ----------------------------------------------------------------------------------------------
# Baum-Welch as backprop (Eisner 2016): an HMM's log-likelihood by the forward algorithm over padded
# sequences; its expected counts as gradients with respect to the log parameters; the M-step by
# normalising them, copied into the parameters under no_grad; EM never lowers the likelihood
# ----------------------------------------------------------------------------------------------


def hmm_program(m, n_states=3, n_obs=4):
    torch, nn = m.torch, m.nn

    class HMM(nn.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(17)
            self.log_pi = nn.Parameter(torch.from_numpy(np.log(rng.dirichlet(np.ones(n_states)))))
            self.log_A = nn.Parameter(torch.from_numpy(np.log(rng.dirichlet(np.ones(n_states), n_states))))
            self.log_B = nn.Parameter(torch.from_numpy(np.log(rng.dirichlet(np.ones(n_obs), n_states))))

        def forward(self, obs, lengths):
            T = obs.shape[1]
            log_alpha = self.log_pi + self.log_B[:, obs[:, 0]].t()  # (N, S)
            for t in range(1, T):
                step = torch.logsumexp(log_alpha.unsqueeze(-1) + self.log_A, dim=1) + self.log_B[:, obs[:, t]].t()
                log_alpha = torch.where((t < lengths)[:, None], step, log_alpha)
            return torch.logsumexp(log_alpha, dim=-1)

    rng = np.random.default_rng(18)
    lengths = torch.tensor([8, 6, 7, 5])
    obs = torch.from_numpy(rng.integers(0, n_obs, (4, 8)))
    hmm = HMM()
    history = []
    for it in range(6):
        hmm.zero_grad()
        ll = hmm(obs, lengths).sum()
        ll.backward()
        history.append(ll.item())
        with torch.no_grad():  # expected counts are d log L / d log theta: normalise them (the M step)
            start, trans, emit = hmm.log_pi.grad, hmm.log_A.grad, hmm.log_B.grad
            hmm.log_pi.copy_(torch.log(start / start.sum()))
            hmm.log_A.copy_(torch.log(trans / trans.sum(-1, keepdim=True)))
            hmm.log_B.copy_(torch.log(emit / emit.sum(-1, keepdim=True)))
    return {"history": history, "pi": hmm.log_pi.exp(), "A": hmm.log_A.exp(), "B": hmm.log_B.exp(),
            "counts": emit, "obs": obs, "lengths": lengths}


def test_baum_welch_as_backprop():
    ours, _ = run_both(hmm_program, rtol=1e-9, atol=1e-11)
    h = ours["history"]
    assert all(b >= a - 1e-10 for a, b in zip(h, h[1:]))  # EM's guarantee
    np.testing.assert_allclose(ours["A"].sum(-1), 1.0, rtol=1e-12)
    # the expected emission counts add up to the number of observations, and per symbol to its count
    assert ours["counts"].sum() == pytest.approx(26.0, rel=1e-10)
    obs, lengths = ours["obs"], ours["lengths"]
    seen = np.bincount(np.concatenate([o[:n] for o, n in zip(obs, lengths)]), minlength=4)
    np.testing.assert_allclose(ours["counts"].sum(0), seen, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Structured attention networks (Kim, Denton, Hoang & Rush 2017): segmentation attention whose
# weights are a binary linear-chain CRF's marginals, obtained as autograd.grad(log Z, potentials,
# create_graph=True) and trained through (a double backward through logsumexp, where and masks)
# ----------------------------------------------------------------------------------------------


def structured_attention(m, vocab=8, dim=6, n_classes=3):
    torch, nn, F = m.torch, m.nn, m.F

    class SegmentationAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim, padding_idx=0)
            self.enc = nn.GRU(dim, dim, batch_first=True)
            self.query = nn.Parameter(torch.randn(dim) * 0.3)
            self.unary = nn.Linear(dim, 1)
            self.pairwise = nn.Parameter(torch.zeros(2, 2))
            self.out = nn.Linear(dim, n_classes)

        def log_partition(self, unary, mask):
            # unary: (B, T, 2) potentials of z_t in {0, 1}; pairwise: (2, 2)
            alpha = unary[:, 0]
            for t in range(1, unary.size(1)):
                step = torch.logsumexp(alpha.unsqueeze(2) + self.pairwise, dim=1) + unary[:, t]
                alpha = torch.where(mask[:, t, None], step, alpha)
            return torch.logsumexp(alpha, dim=-1)

        def forward(self, words):
            mask = words != 0
            x, _ = self.enc(self.embed(words))
            score = self.unary(x).squeeze(-1) + x @ self.query  # (B, T)
            unary = torch.stack([torch.zeros_like(score), score], dim=-1)
            unary = unary.masked_fill(~mask[..., None], 0.0)
            if not unary.requires_grad:
                unary.requires_grad_()
            logZ = self.log_partition(unary, mask)
            marginals, = torch.autograd.grad(logZ.sum(), unary, create_graph=True)
            attn = marginals[..., 1] * mask  # p(z_t = 1)
            context = (attn.unsqueeze(-1) * x).sum(1) / attn.sum(1, keepdim=True).clamp(min=1e-6)
            return self.out(context), attn

    return SegmentationAttention()


def structured_attention_program(m, weights):
    torch, F = m.torch, m.F
    model = load(m, structured_attention(m), weights).double()
    words = torch.tensor([[1, 4, 2, 6, 3], [5, 2, 7, 0, 0], [3, 1, 7, 7, 0]])
    labels = torch.tensor([0, 2, 1])
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    history = []
    for step in range(4):
        opt.zero_grad()
        logits, attn = model(words)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        history.append(loss.item())
    grads = {k: p.grad for k, p in model.named_parameters()}
    with torch.no_grad():
        x, _ = model.enc(model.embed(words))
    return {"history": history, "attn": attn, "grads": grads, "pairwise": model.pairwise}


def test_structured_attention_by_crf_marginals():
    weights = weights_of(structured_attention)
    ours, _ = run_both(structured_attention_program, weights, rtol=1e-9, atol=1e-11)
    assert ours["history"][-1] < ours["history"][0]
    attn = ours["attn"]
    assert np.all((attn >= 0) & (attn <= 1))
    assert np.all(attn[1, 3:] == 0) and attn[2, 4] == 0
    assert np.abs(ours["grads"]["pairwise"]).sum() > 0  # the pairwise potentials learn through the marginals
