# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Structured prediction and differentiable dynamic programming (see tests/pytorch_programs.py), run on chainrule and
on PyTorch from the same weights and data, comparing losses, decodes and gradients; each model is run in float64
where its authors allow it, and checked besides against enumerating every structure in NumPy, so that the CI run
without PyTorch still asserts the numbers. Trees: a neural PCFG (Kim et al. 2019: the inside algorithm over a span
chart in Python loops, ``-inf`` preterminal slots, span marginals as the gradient of log Z, CKY back-pointers by
``max`` over flattened rules and splits); non-projective dependency parsing by SuPar's MatrixTree (``index_fill``,
``diagonal().copy_``, ``nn.init.eye_(...).repeat().masked_scatter_``, ``slogdet``) with a biaffine scorer and Eisner
decoding; SuPar's CRF constituency parser (``as_strided`` stripes read while ``diagonal().copy_()`` writes the table,
a hook zeroing NaN gradients in place, CKY)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A neural PCFG (Kim, Dyer & Rush 2019): the inside algorithm over a span chart filled in Python
# loops, span marginals as the gradient of log Z, CKY Viterbi with argmax back-pointers
# ----------------------------------------------------------------------------------------------

NT, PT, VOCAB = 3, 2, 6


def neural_pcfg(m, dim=8):
    torch, nn = m.torch, m.nn

    class NeuralPCFG(nn.Module):
        def __init__(self):
            super().__init__()
            self.root_emb = nn.Parameter(torch.randn(1, dim))
            self.nt_emb = nn.Parameter(torch.randn(NT, dim))
            self.t_emb = nn.Parameter(torch.randn(PT, dim))
            self.root_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, NT))
            self.rule_mlp = nn.Linear(dim, (NT + PT) ** 2)
            self.term_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, VOCAB))

        def rules(self):
            root = self.root_mlp(self.root_emb).log_softmax(-1).squeeze(0)  # (NT,)
            rule = self.rule_mlp(self.nt_emb).log_softmax(-1).view(NT, NT + PT, NT + PT)
            term = self.term_mlp(self.t_emb).log_softmax(-1)  # (PT, V)
            return root, rule, term

        def inside(self, x, span_pot=None, semiring="logsumexp"):
            B, n = x.shape
            root, rule, term = self.rules()
            S = NT + PT
            neg_inf = torch.full((B, NT), float("-inf"), dtype=root.dtype)
            chart, back = {}, {}
            for i in range(n):  # preterminals cover single words; nonterminals two or more
                unary = term[:, x[:, i]].t()  # (B, PT)
                chart[i, i + 1] = torch.cat([neg_inf, unary], dim=-1)
                if span_pot is not None:
                    chart[i, i + 1] = chart[i, i + 1] + span_pot[:, i, i + 1, None]
            for w in range(2, n + 1):
                for i in range(n - w + 1):
                    j = i + w
                    per_split = []
                    for k in range(i + 1, j):
                        scores = rule[None] + chart[i, k][:, None, :, None] + chart[k, j][:, None, None, :]
                        per_split.append(scores.reshape(B, NT, S * S))
                    stacked = torch.stack(per_split, dim=-1).reshape(B, NT, -1)  # (B, NT, S*S*splits)
                    if semiring == "logsumexp":
                        inner = torch.logsumexp(stacked, dim=-1)
                    else:
                        inner, arg = stacked.max(dim=-1)
                        back[i, j] = arg
                    chart[i, j] = torch.cat([inner, torch.full((B, PT), float("-inf"), dtype=inner.dtype)], -1)
                    if span_pot is not None:
                        chart[i, j] = chart[i, j] + span_pot[:, i, j, None]
            top = root + chart[0, n][:, :NT]
            if semiring == "logsumexp":
                return torch.logsumexp(top, dim=-1)
            best, arg_root = top.max(dim=-1)
            return best, arg_root, back

        def forward(self, x):
            return -self.inside(x).mean()

    return NeuralPCFG()


def cky_spans(back, arg_root, b, n, splits_of):
    """The labelled spans of sentence b's Viterbi tree, read from the back-pointers."""
    S = NT + PT
    spans = []

    def visit(i, j, label):
        spans.append((i, j, label))
        if j - i == 1:
            return
        flat = int(back[i, j][b, label])
        left_right, split = divmod(flat, splits_of(i, j))
        left, right = divmod(left_right, S)
        k = i + 1 + split
        visit(i, k, left)
        visit(k, j, right)

    visit(0, n, int(arg_root[b]))
    return spans


def pcfg_program(m, weights):
    torch = m.torch
    model = load(m, neural_pcfg(m), weights).double()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, VOCAB, (3, 5)))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for step in range(4):
        opt.zero_grad()
        loss = model(x)
        loss.backward()
        opt.step()
        history.append(loss.item())
    grads = {k: p.grad for k, p in model.named_parameters()}
    # span marginals: the gradient of log Z with respect to a zero potential on every span
    span_pot = torch.zeros(3, 5, 6, dtype=torch.float64, requires_grad=True)
    logZ = model.inside(x, span_pot)
    marginals, = torch.autograd.grad(logZ.sum(), span_pot)
    with torch.no_grad():
        best, arg_root, back = model.inside(x, semiring="max")
    trees = [cky_spans(back, arg_root, b, 5, lambda i, j: j - i - 1) for b in range(3)]
    return {"history": history, "grads": grads, "logZ": logZ, "marginals": marginals, "best": best, "trees": trees}


def test_neural_pcfg_inside_marginals_and_cky():
    weights = weights_of(neural_pcfg)
    ours, _ = run_both(pcfg_program, weights, rtol=1e-9, atol=1e-11)
    assert ours["history"][-1] < ours["history"][0]
    marg = ours["marginals"]
    n = 5
    np.testing.assert_allclose(marg[:, 0, n], 1.0, rtol=1e-10)  # the whole sentence is always a span
    np.testing.assert_allclose([marg[:, i, i + 1] for i in range(n)], 1.0, rtol=1e-10)  # and each word
    internal = sum(marg[:, i, j] for i in range(n) for j in range(i + 2, n + 1))
    np.testing.assert_allclose(internal, n - 1, rtol=1e-10)  # a binary tree over n words has n - 1 of them
    for b, spans in enumerate(ours["trees"]):
        assert len(spans) == 2 * n - 1
        assert all((j - i == 1) == (label >= NT) for i, j, label in spans)
    assert np.all(ours["best"] <= ours["logZ"])


# ----------------------------------------------------------------------------------------------
# Non-projective dependency parsing (Koo et al. 2007) as SuPar's MatrixTree writes it: a biaffine
# scorer, log Z by slogdet of the Laplacian's minor, marginals by autograd; projective decoding by
# Eisner's algorithm
# ----------------------------------------------------------------------------------------------


def biaffine_parser(m, vocab=7, dim=6):
    torch, nn = m.torch, m.nn

    class Biaffine(nn.Module):
        def __init__(self, n_in, bias_x=True, bias_y=False):
            super().__init__()
            self.bias_x, self.bias_y = bias_x, bias_y
            self.weight = nn.Parameter(torch.zeros(n_in + bias_x, n_in + bias_y))
            nn.init.normal_(self.weight, std=0.3)

        def forward(self, x, y):
            if self.bias_x:
                x = torch.cat((x, torch.ones_like(x[..., :1])), -1)
            if self.bias_y:
                y = torch.cat((y, torch.ones_like(y[..., :1])), -1)
            # [batch_size, seq_len, seq_len]
            return torch.einsum('bxi,ij,byj->bxy', x, self.weight, y)

    class Parser(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
            self.mlp_d = nn.Sequential(nn.Linear(2 * dim, dim), nn.LeakyReLU(0.1))
            self.mlp_h = nn.Sequential(nn.Linear(2 * dim, dim), nn.LeakyReLU(0.1))
            self.attn = Biaffine(dim)

        def forward(self, words):
            x, _ = self.lstm(self.embed(words))
            # s_arc[b, dep, head]
            return self.attn(self.mlp_d(x), self.mlp_h(x))

    return Parser()


def matrix_tree_log_partition(m, s_arc, mask):
    torch, nn = m.torch, m.nn
    batch_size, *_ = s_arc.shape
    lens = mask.sum(-1)
    mask = mask.index_fill(1, lens.new_tensor(0), 1)
    s_arc = s_arc.masked_fill(~(mask.unsqueeze(-1) & mask.unsqueeze(-2)), float('-inf'))
    # A(i, j) = exp(s(i, j))
    mx = s_arc.view(batch_size, -1).max(-1)[0]
    A = torch.exp(s_arc - mx.view(-1, 1, 1))
    # Weighted degree matrix: D(i, i) = sum_j A(i, j)
    D = torch.zeros_like(A)
    D.diagonal(0, 1, 2).copy_(A.sum(-1))
    # Laplacian matrix L(i, j) = D(i, j) - A(i, j), the identity where padded
    L = nn.init.eye_(torch.empty_like(A[0])).repeat(batch_size, 1, 1).masked_scatter_(mask.unsqueeze(-1), (D - A)[mask])
    # Z = L^(0, 0), the minor of L w.r.t row 0 and column 0
    return L[:, 1:, 1:].slogdet()[1] + mx * lens


def eisner(m, scores):
    """First-order Eisner over one sentence's scores[dep, head] (position 0 the root): the best projective heads."""
    torch = m.torch
    n = scores.shape[0]
    s = scores.t()  # s[h, d]
    NEG = float("-inf")
    # complete / incomplete spans, direction 0 = head on the right, 1 = head on the left
    C = torch.full((n, n, 2), NEG, dtype=scores.dtype)
    I = torch.full((n, n, 2), NEG, dtype=scores.dtype)
    bC = torch.zeros((n, n, 2), dtype=torch.long)
    bI = torch.zeros((n, n, 2), dtype=torch.long)
    for i in range(n):
        C[i, i, 0] = C[i, i, 1] = 0.0
    for w in range(1, n):
        for i in range(n - w):
            j = i + w
            ks = torch.arange(i, j)
            both = C[i, ks, 1] + C[ks + 1, j, 0]
            val, arg = both.max(0)
            I[i, j, 0] = val + s[j, i]
            I[i, j, 1] = val + s[i, j]
            bI[i, j, 0] = bI[i, j, 1] = ks[arg]
            left = C[i, ks, 0] + I[ks, j, 0]
            val, arg = left.max(0)
            C[i, j, 0], bC[i, j, 0] = val, ks[arg]
            ks1 = torch.arange(i + 1, j + 1)
            right = I[i, ks1, 1] + C[ks1, j, 1]
            val, arg = right.max(0)
            C[i, j, 1], bC[i, j, 1] = val, ks1[arg]
    heads = [0] * n

    def backtrack(i, j, d, complete):
        if i == j:
            return
        if complete:
            k = int(bC[i, j, d])
            if d == 0:
                backtrack(i, k, 0, True)
                backtrack(k, j, 0, False)
            else:
                backtrack(i, k, 1, False)
                backtrack(k, j, 1, True)
        else:
            k = int(bI[i, j, d])
            if d == 0:
                heads[i] = j
            else:
                heads[j] = i
            backtrack(i, k, 1, True)
            backtrack(k + 1, j, 0, True)

    backtrack(0, n - 1, 1, True)
    return C[0, n - 1, 1], heads


def dependency_program(m, weights):
    torch, F = m.torch, m.F
    model = load(m, biaffine_parser(m), weights).double()
    words = torch.tensor([[1, 3, 2, 5, 4], [1, 6, 2, 0, 0], [1, 4, 4, 3, 0]])  # position 0 is <root>
    mask = words.ne(0)
    mask[:, 0] = 0
    gold = torch.tensor([[0, 0, 3, 1, 3], [0, 2, 0, 0, 0], [0, 0, 1, 1, 0]])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for step in range(3):
        opt.zero_grad()
        s_arc = model(words)
        logZ = matrix_tree_log_partition(m, s_arc, mask)
        gold_score = s_arc.gather(-1, gold.unsqueeze(-1)).squeeze(-1)[mask].sum()
        loss = (logZ.sum() - gold_score) / mask.sum()
        loss.backward()
        opt.step()
        history.append(loss.item())
    grads = {k: p.grad for k, p in model.named_parameters()}
    s_arc = model(words).detach().requires_grad_(True)
    logZ = matrix_tree_log_partition(m, s_arc, mask)
    marginals, = torch.autograd.grad(logZ.sum(), s_arc)
    decoded = []
    for b in range(3):
        n = int(mask[b].sum()) + 1
        best, heads = eisner(m, s_arc.detach()[b, :n, :n])
        decoded.append((best, heads))
    return {"history": history, "grads": grads, "logZ": logZ, "marginals": marginals, "scores": s_arc,
            "decoded": decoded}


def all_trees(n, projective_only=False):
    """Every head assignment of words 1..n (0 the root, several root children allowed) that is a tree."""
    import itertools

    def is_tree(heads):
        for d in range(1, n + 1):
            seen, h = set(), d
            while h != 0:
                if h in seen:
                    return False
                seen.add(h)
                h = heads[h - 1]
        return True

    def projective(heads):
        full = [0] + list(heads)
        for d in range(1, n + 1):
            h = full[d]
            for k in range(min(h, d) + 1, max(h, d)):
                a = k
                while a not in (0, h):
                    a = full[a]
                if a != h:
                    return False
        return True

    for heads in itertools.product(range(n + 1), repeat=n):
        if any(h == d + 1 for d, h in enumerate(heads)) or not is_tree(heads):
            continue
        if projective_only and not projective(heads):
            continue
        yield heads


def test_biaffine_matrix_tree_and_eisner():
    weights = weights_of(biaffine_parser)
    ours, _ = run_both(dependency_program, weights, rtol=1e-7, atol=1e-9)  # (Adam divides near-zero gradients)
    assert ours["history"][-1] < ours["history"][0]
    scores, marginals = ours["scores"], ours["marginals"]
    for b, n in enumerate([4, 2, 3]):  # every tree enumerated: log Z, marginals, the best projective tree
        s = scores[b]
        trees = list(all_trees(n))
        tree_scores = np.array([sum(s[d + 1, h] for d, h in enumerate(t)) for t in trees])
        logZ = np.log(np.exp(tree_scores - tree_scores.max()).sum()) + tree_scores.max()
        assert ours["logZ"][b] == pytest.approx(logZ, rel=1e-10)
        p = np.exp(tree_scores - logZ)
        expected = np.zeros_like(s)
        for t, pt in zip(trees, p):
            for d, h in enumerate(t):
                expected[d + 1, h] += pt
        np.testing.assert_allclose(marginals[b], expected, rtol=1e-8, atol=1e-12)
        proj = list(all_trees(n, projective_only=True))
        proj_scores = [sum(s[d + 1, h] for d, h in enumerate(t)) for t in proj]
        best, heads = ours["decoded"][b]
        assert best == pytest.approx(max(proj_scores), rel=1e-10)
        assert tuple(heads[1:]) == proj[int(np.argmax(proj_scores))]


# ----------------------------------------------------------------------------------------------
# SuPar's CRF constituency parser (Zhang et al. 2020): the inside algorithm over a span table read
# through as_strided "stripes" while its diagonals are written by diagonal().copy_(), a hook that
# zeroes NaN gradients in place, span marginals by autograd.grad, and CKY by the same stripes
# ----------------------------------------------------------------------------------------------


def stripe(x, n, w, offset=(0, 0), dim=1):
    r"""Returns a diagonal stripe of the tensor: x[i, offset[1] + i + j] (dim=1) or x[offset[0] + i + j, i + offset[1]]
    (dim=0) for i < n, j < w."""
    x, seq_len = x.contiguous(), x.size(1)
    stride, numel = list(x.stride()), x[0, 0].numel()
    stride[0] = (seq_len + 1) * numel
    stride[1] = (1 if dim == 1 else seq_len) * numel
    return x.as_strided(size=(n, w, *x.shape[2:]),
                        stride=stride,
                        storage_offset=(offset[0] * seq_len + offset[1]) * numel)


def crf_constituency_inside(m, scores, mask):
    torch = m.torch
    lens = mask[:, 0].sum(-1)
    batch_size, seq_len, _ = scores.shape
    # [seq_len, seq_len, batch_size]
    scores, mask = scores.permute(1, 2, 0), mask.permute(1, 2, 0)
    s = torch.full_like(scores, float('-inf'))

    for w in range(1, seq_len):
        # n denotes the number of spans to iterate,
        # from span (0, w) to span (n, n+w) given width w
        n = seq_len - w

        if w == 1:
            s.diagonal(w).copy_(scores.diagonal(w))
            continue
        # [n, w, batch_size]
        s_s = stripe(s, n, w - 1, (0, 1)) + stripe(s, n, w - 1, (1, w), 0)
        # [batch_size, n, w]
        s_s = s_s.permute(2, 0, 1)
        if s_s.requires_grad:
            s_s.register_hook(lambda x: x.masked_fill_(torch.isnan(x), 0))
        s_s = s_s.logsumexp(-1)
        s.diagonal(w).copy_(s_s + scores.diagonal(w))

    return s[0].gather(0, lens.unsqueeze(0)).sum()


def cky(m, scores, mask):
    torch = m.torch
    lens = mask[:, 0].sum(-1)
    scores = scores.permute(1, 2, 0)
    seq_len, seq_len, batch_size = scores.shape
    s = scores.new_zeros(seq_len, seq_len, batch_size)
    p = scores.new_zeros(seq_len, seq_len, batch_size).long()

    for w in range(1, seq_len):
        n = seq_len - w
        starts = p.new_tensor(range(n)).unsqueeze(0)

        if w == 1:
            s.diagonal(w).copy_(scores.diagonal(w))
            continue
        # [n, w, batch_size]
        s_s = stripe(s, n, w - 1, (0, 1)) + stripe(s, n, w - 1, (1, w), 0)
        # [batch_size, n, w]
        s_s = s_s.permute(2, 0, 1)
        # [batch_size, n]
        s_s, p_s = s_s.max(-1)
        s.diagonal(w).copy_(s_s + scores.diagonal(w))
        p.diagonal(w).copy_(p_s + starts + 1)

    def backtrack(p, i, j):
        if j == i + 1:
            return [(i, j)]
        split = p[i][j]
        ltree = backtrack(p, i, split)
        rtree = backtrack(p, split, j)
        return [(i, j)] + ltree + rtree

    p = p.permute(2, 0, 1).tolist()
    trees = [backtrack(p[i], 0, length) for i, length in enumerate(lens.tolist())]
    return s[0].gather(0, lens.unsqueeze(0)).squeeze(0), trees


def span_scorer(m, vocab=8, dim=6):
    torch, nn = m.torch, m.nn

    class SpanScorer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
            self.mlp_l = nn.Linear(2 * dim, dim)
            self.mlp_r = nn.Linear(2 * dim, dim)
            self.W = nn.Parameter(torch.randn(dim + 1, dim) * 0.3)

        def forward(self, words):
            x, _ = self.lstm(self.embed(words))
            # fencepost representations: position i and i + 1's states
            x_f, x_b = x.chunk(2, -1)
            x = torch.cat((x_f[:, :-1], x_b[:, 1:]), -1)
            l, r = self.mlp_l(x), self.mlp_r(x)
            l = torch.cat((l, torch.ones_like(l[..., :1])), -1)
            return torch.einsum('bxi,ij,byj->bxy', l, self.W, r)  # [batch, fence, fence]

    return SpanScorer()


def crf_constituency_program(m, weights):
    torch = m.torch
    model = load(m, span_scorer(m), weights).double()
    # <bos> w1 .. wn <eos>: n + 1 fenceposts
    words = torch.tensor([[1, 3, 4, 2, 5, 7], [1, 6, 2, 7, 0, 0], [1, 5, 5, 3, 7, 0]])
    lens = torch.tensor([4, 2, 3])
    seq_len = words.size(1) - 1
    mask = (torch.arange(seq_len)[None, None, :] <= lens[:, None, None]) & \
        (torch.arange(seq_len)[None, :, None] < torch.arange(seq_len)[None, None, :])
    gold = [[(0, 4), (0, 1), (1, 4), (1, 2), (2, 4), (2, 3), (3, 4)], [(0, 2), (0, 1), (1, 2)],
            [(0, 3), (0, 2), (0, 1), (1, 2), (2, 3)]]
    gold_mask = torch.zeros(3, seq_len, seq_len, dtype=torch.bool)
    for b, spans in enumerate(gold):
        for i, j in spans:
            gold_mask[b, i, j] = True
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for step in range(4):
        opt.zero_grad()
        scores = model(words)
        logZ = crf_constituency_inside(m, scores.requires_grad_(), mask)
        loss = (logZ - scores[gold_mask].sum()) / 3
        loss.backward()
        opt.step()
        history.append(loss.item())
    scores = model(words).detach().requires_grad_(True)
    logZ = crf_constituency_inside(m, scores, mask)
    marginals, = torch.autograd.grad(logZ, scores)
    best, trees = cky(m, scores.detach(), mask)
    grads = {k: p.grad for k, p in model.named_parameters()}
    return {"history": history, "logZ": logZ, "marginals": marginals, "best": best, "trees": trees,
            "scores": scores, "grads": grads}


def binary_trees(i, j):
    if j == i + 1:
        yield [(i, j)]
        return
    for k in range(i + 1, j):
        for left in binary_trees(i, k):
            for right in binary_trees(k, j):
                yield [(i, j)] + left + right


def test_supar_crf_constituency_with_stripes():
    weights = weights_of(span_scorer)
    ours, _ = run_both(crf_constituency_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    s = ours["scores"]
    total = 0.0
    for b, n in enumerate([4, 2, 3]):
        trees = list(binary_trees(0, n))
        tree_scores = np.array([sum(s[b, i, j] for i, j in t) for t in trees])
        logZ = np.log(np.exp(tree_scores).sum())
        total += logZ
        p = np.exp(tree_scores - logZ)
        expected = np.zeros_like(s[b])
        for t, pt in zip(trees, p):
            for i, j in t:
                expected[i, j] += pt
        np.testing.assert_allclose(ours["marginals"][b], expected, rtol=1e-9, atol=1e-12)
        assert ours["best"][b] == pytest.approx(tree_scores.max(), rel=1e-12)
        assert sorted(ours["trees"][b]) == sorted(trees[int(tree_scores.argmax())])
    assert ours["logZ"] == pytest.approx(total, rel=1e-12)
