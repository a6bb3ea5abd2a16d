# ruff: noqa: B007, E501, UP008, UP032  (the programs are kept as their authors wrote them)
"""Structured prediction and differentiable dynamic programming (see tests/pytorch_programs.py), run on chainrule and
on PyTorch from the same weights and data, comparing losses, decodes and gradients; each model is run in float64
where its authors allow it, and checked besides against enumerating every structure in NumPy, so that the CI run
without PyTorch still asserts the numbers. Relaxed discrete choices: allRank's approxNDCG (``-inf`` padding before
``sort``, an in-place ``diagonal().zero_()`` on a bool mask) and fast-soft-sort's soft rank (PAV in a custom
Function, checked by ``gradcheck``) as a Spearman loss; perturbed top-k (a custom Function reusing its saved noise)
under a Fenchel-Young loss; diffsort's odd-even sorting network (logistic and Cauchy swaps, the relaxed permutation
by matmuls, BCE against argsort's one-hot); the Gumbel Tree-LSTM (straight-through Gumbel selection from the seeded
generator, cumsum masks)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Differentiable ranking: allRank's approxNDCG (ranks by pairwise sigmoids, padded lists masked with
# -inf before sort) and fast-soft-sort's soft rank (Blondel et al. 2020: the projection onto the
# permutahedron by pool-adjacent-violators in NumPy, a custom autograd.Function with its own vjp),
# learnt as a Spearman loss; the Function checked by gradcheck
# ----------------------------------------------------------------------------------------------

PADDED_Y_VALUE, DEFAULT_EPS = -1, 1e-10


def approxNDCGLoss(m, y_pred, y_true, eps=DEFAULT_EPS, padded_value_indicator=PADDED_Y_VALUE, alpha=1.):
    torch = m.torch
    y_pred = y_pred.clone()
    y_true = y_true.clone()

    padded_mask = y_true == padded_value_indicator
    y_pred[padded_mask] = float("-inf")
    y_true[padded_mask] = float("-inf")

    # Here we sort the true and predicted relevancy scores.
    y_pred_sorted, indices_pred = y_pred.sort(descending=True, dim=-1)
    y_true_sorted, _ = y_true.sort(descending=True, dim=-1)

    # After sorting, we can mask out the pairs of indices (i, j) containing index of a padded element.
    true_sorted_by_preds = torch.gather(y_true, dim=1, index=indices_pred)
    true_diffs = true_sorted_by_preds[:, :, None] - true_sorted_by_preds[:, None, :]
    padded_pairs_mask = torch.isfinite(true_diffs)
    padded_pairs_mask.diagonal(dim1=-2, dim2=-1).zero_()

    # Here we find the gains, discounts and ideal DCGs per slate.
    true_sorted_by_preds.clamp_(min=0.)
    y_true_sorted.clamp_(min=0.)

    pos_idxs = torch.arange(1, y_pred.shape[1] + 1)
    D = torch.log2(1. + pos_idxs.float())[None, :]
    maxDCGs = torch.sum((torch.pow(2, y_true_sorted) - 1) / D, dim=-1).clamp(min=eps)
    G = (torch.pow(2, true_sorted_by_preds) - 1) / maxDCGs[:, None]

    # Here we approximate the ranking positions according to Eqs 19-20 and later approximate NDCG (Eq 21)
    scores_diffs = (y_pred_sorted[:, :, None] - y_pred_sorted[:, None, :])
    scores_diffs[~padded_pairs_mask] = 0.
    approx_pos = 1. + torch.sum(padded_pairs_mask.float() * (torch.sigmoid(-alpha * scores_diffs).clamp(min=eps)), dim=-1)
    approx_D = torch.log2(1. + approx_pos)
    approx_NDCG = torch.sum((G / approx_D), dim=-1)

    return -torch.mean(approx_NDCG)


def isotonic_l2(y):
    """Pool adjacent violators: argmin ||v - y||^2 subject to v non-increasing; and its blocks."""
    blocks = []  # [start, end, mean]
    for i, value in enumerate(y):
        blocks.append([i, i + 1, float(value)])
        while len(blocks) > 1 and blocks[-2][2] < blocks[-1][2]:
            s2, e2, v2 = blocks.pop()
            s1, e1, v1 = blocks.pop()
            blocks.append([s1, e2, (v1 * (e1 - s1) + v2 * (e2 - s2)) / (e2 - s1)])
    v = np.empty(len(y))
    for s, e, mean in blocks:
        v[s:e] = mean
    return v, [(s, e) for s, e, _ in blocks]


class SoftRankL2:
    """numpy_ops.SoftRank(values, regularization_strength, regularization="l2") for one vector."""

    def __init__(self, values, regularization_strength=1.0):
        self.values = np.asarray(values, dtype=np.float64)
        self.eps = regularization_strength

    def compute(self):
        n = len(self.values)
        z = -self.values / self.eps
        w = np.arange(n, 0, -1, dtype=np.float64)
        self.perm = np.argsort(-z, kind="stable")
        self.inv = np.argsort(self.perm)
        dual, self.blocks = isotonic_l2(z[self.perm] - w)
        return z - dual[self.inv]

    def vjp(self, g):
        g_sorted = g[self.perm]
        avg = np.empty_like(g_sorted)
        for s, e in self.blocks:
            avg[s:e] = g_sorted[s:e].mean()
        return -(g - avg[self.inv]) / self.eps


def soft_rank_program(m, weights):
    torch, nn = m.torch, m.nn

    class _SoftRank(torch.autograd.Function):
        @staticmethod
        def forward(ctx, values, regularization_strength=1.0):
            ctx.sr = [SoftRankL2(v, regularization_strength) for v in values.detach().numpy()]
            return torch.from_numpy(np.stack([sr.compute() for sr in ctx.sr]))

        @staticmethod
        def backward(ctx, grad_output):
            g = grad_output.detach().numpy()
            return torch.from_numpy(np.stack([sr.vjp(gi) for sr, gi in zip(ctx.sr, g)])), None

    def soft_rank(values, regularization_strength=1.0):
        return _SoftRank.apply(values, regularization_strength)

    def spearman_loss(pred, target, eps=0.5):
        pred = soft_rank(pred, eps)
        target = soft_rank(target, 1e-3)
        pred = pred - pred.mean(-1, keepdim=True)
        pred = pred / pred.norm(dim=-1, keepdim=True)
        target = target - target.mean(-1, keepdim=True)
        target = target / target.norm(dim=-1, keepdim=True)
        return 1 - (pred * target).sum(-1).mean()

    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.standard_normal((4, 6, 5)))
    relevance = torch.from_numpy(rng.integers(0, 4, (4, 6)).astype(np.float64))
    relevance[1, 4:] = PADDED_Y_VALUE  # shorter slates padded
    relevance[3, 5:] = PADDED_Y_VALUE
    model = load(m, nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)), weights).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    ndcg, spear = [], []
    for step in range(6):
        opt.zero_grad()
        scores = model(x).squeeze(-1)
        loss = approxNDCGLoss(m, scores, relevance) if step % 2 == 0 else spearman_loss(scores[:1], relevance[:1])
        loss.backward()
        opt.step()
        (ndcg if step % 2 == 0 else spear).append(loss.item())
    grads = {k: p.grad for k, p in model.named_parameters()}
    theta = torch.tensor([[0.3, -1.2, 2.0, 0.31, 0.9]], dtype=torch.float64, requires_grad=True)
    check = torch.autograd.gradcheck(lambda t: soft_rank(t, 0.4), (theta,), eps=1e-6, atol=1e-6)
    hard = soft_rank(theta, 1e-4)
    scores = model(x).squeeze(-1).detach().requires_grad_(True)
    ndcg_loss = approxNDCGLoss(m, scores, relevance, alpha=10.0)
    score_grad, = torch.autograd.grad(ndcg_loss, scores)
    return {"ndcg": ndcg, "spear": spear, "grads": grads, "check": check, "hard": hard, "sharp_ndcg": ndcg_loss,
            "score_grad": score_grad, "scores": scores, "relevance": relevance}


def test_approx_ndcg_and_fast_soft_rank():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(5, 8), m.nn.ReLU(), m.nn.Linear(8, 1)))
    # allRank's discounts are float32 (pos_idxs.float()), whose log2 NumPy and PyTorch may round an ulp apart
    ours, _ = run_both(soft_rank_program, weights, rtol=1e-6, atol=1e-9)
    assert ours["check"] is True
    np.testing.assert_allclose(ours["hard"], [[4, 5, 1, 3, 2]], atol=1e-9)  # a tiny strength ranks exactly
    assert np.all(ours["score_grad"][1, 4:] == 0) and np.all(ours["score_grad"][3, 5:] == 0)  # padded items
    assert np.all(np.isfinite(ours["score_grad"]))
    # with a steep sigmoid approxNDCG is close to the true NDCG of the predicted order
    ndcgs = []
    for scores, rel in zip(ours["scores"], ours["relevance"]):
        keep = rel != PADDED_Y_VALUE
        scores, rel = scores[keep], rel[keep]
        discount = np.log2(np.arange(2, len(rel) + 2))
        ideal = ((2 ** np.sort(rel)[::-1] - 1) / discount).sum()
        ndcgs.append(((2 ** rel[np.argsort(-scores)] - 1) / discount).sum() / max(ideal, DEFAULT_EPS))
    assert -ours["sharp_ndcg"] == pytest.approx(np.mean(ndcgs), abs=0.05)


# ----------------------------------------------------------------------------------------------
# Latent tree learning: the Gumbel Tree-LSTM (Choi, Yoo & Lee 2018, jihunchoi/unsupervised-treelstm):
# straight-through Gumbel-softmax over which adjacent pair to merge (noise by .data.new().uniform_()
# from the seeded generator), a masked softmax, selection masks by cumsum, states shrinking by one
# each step under a done mask; greedy selection in eval mode
# ----------------------------------------------------------------------------------------------


def gumbel_tree_lstm(m, vocab=9, word_dim=5, hidden_dim=6, n_classes=3):
    torch, nn = m.torch, m.nn
    functional = m.F

    def masked_softmax(logits, mask=None):
        eps = 1e-20
        probs = functional.softmax(logits, dim=1)
        if mask is not None:
            mask = mask.float()
            probs = probs * mask + eps
            probs = probs / probs.sum(1, keepdim=True)
        return probs

    def convert_to_one_hot(indices, num_classes):
        batch_size = indices.size(0)
        indices = indices.unsqueeze(1)
        one_hot = indices.data.new(batch_size, num_classes).zero_().scatter_(1, indices.data, 1)
        return one_hot

    def greedy_select(logits, mask=None):
        probs = masked_softmax(logits=logits, mask=mask)
        one_hot = convert_to_one_hot(indices=probs.max(1)[1], num_classes=logits.size(1))
        return one_hot

    def st_gumbel_softmax(logits, temperature=1.0, mask=None):
        eps = 1e-20
        u = logits.data.new(*logits.size()).uniform_()
        gumbel_noise = -torch.log(-torch.log(u + eps) + eps)
        y = logits + gumbel_noise
        y = masked_softmax(logits=y / temperature, mask=mask)
        y_argmax = y.max(1)[1]
        y_hard = convert_to_one_hot(indices=y_argmax, num_classes=y.size(1)).float()
        y = (y_hard - y).detach() + y
        return y

    def sequence_mask(sequence_length, max_length=None):
        if max_length is None:
            max_length = sequence_length.data.max()
        batch_size = sequence_length.size(0)
        seq_range = torch.arange(0, max_length).long()
        seq_range_expand = seq_range.unsqueeze(0).expand(batch_size, max_length)
        seq_length_expand = sequence_length.unsqueeze(1).expand_as(seq_range_expand)
        return seq_range_expand < seq_length_expand

    def dot_nd(query, candidates):
        cands_size = candidates.size()
        cands_flat = candidates.view(-1, cands_size[-1])
        output_flat = torch.mv(cands_flat, query)
        output = output_flat.view(*cands_size[:-1])
        return output

    class BinaryTreeLSTMLayer(nn.Module):
        def __init__(self, hidden_dim):
            super(BinaryTreeLSTMLayer, self).__init__()
            self.hidden_dim = hidden_dim
            self.comp_linear = nn.Linear(in_features=2 * hidden_dim, out_features=5 * hidden_dim)

        def forward(self, l=None, r=None):
            hl, cl = l
            hr, cr = r
            hlr_cat = torch.cat([hl, hr], dim=2)
            treelstm_vector = self.comp_linear(hlr_cat)
            i, fl, fr, u, o = treelstm_vector.chunk(chunks=5, dim=2)
            c = (cl * (fl + 1).sigmoid() + cr * (fr + 1).sigmoid() + u.tanh() * i.sigmoid())
            h = o.sigmoid() * c.tanh()
            return h, c

    class BinaryTreeLSTM(nn.Module):
        def __init__(self, word_dim, hidden_dim, gumbel_temperature):
            super(BinaryTreeLSTM, self).__init__()
            self.gumbel_temperature = gumbel_temperature
            self.word_linear = nn.Linear(in_features=word_dim, out_features=2 * hidden_dim)
            self.treelstm_layer = BinaryTreeLSTMLayer(hidden_dim)
            self.comp_query = nn.Parameter(torch.FloatTensor(hidden_dim))
            nn.init.normal_(self.comp_query.data, mean=0, std=0.01 * 30)

        @staticmethod
        def update_state(old_state, new_state, done_mask):
            old_h, old_c = old_state
            new_h, new_c = new_state
            done_mask = done_mask.float().unsqueeze(1).unsqueeze(2)
            h = done_mask * new_h + (1 - done_mask) * old_h[:, :-1, :]
            c = done_mask * new_c + (1 - done_mask) * old_c[:, :-1, :]
            return h, c

        def select_composition(self, old_state, new_state, mask):
            new_h, new_c = new_state
            old_h, old_c = old_state
            old_h_left, old_h_right = old_h[:, :-1, :], old_h[:, 1:, :]
            old_c_left, old_c_right = old_c[:, :-1, :], old_c[:, 1:, :]
            comp_weights = dot_nd(query=self.comp_query, candidates=new_h)
            if self.training:
                select_mask = st_gumbel_softmax(logits=comp_weights, temperature=self.gumbel_temperature, mask=mask)
            else:
                select_mask = greedy_select(logits=comp_weights, mask=mask)
                select_mask = select_mask.float()
            select_mask_expand = select_mask.unsqueeze(2).expand_as(new_h)
            select_mask_cumsum = select_mask.cumsum(1)
            left_mask = 1 - select_mask_cumsum
            left_mask_expand = left_mask.unsqueeze(2).expand_as(old_h_left)
            right_mask = select_mask_cumsum - select_mask
            right_mask_expand = right_mask.unsqueeze(2).expand_as(old_h_right)
            new_h = (select_mask_expand * new_h + left_mask_expand * old_h_left + right_mask_expand * old_h_right)
            new_c = (select_mask_expand * new_c + left_mask_expand * old_c_left + right_mask_expand * old_c_right)
            selected_h = (select_mask_expand * new_h).sum(1)
            return new_h, new_c, select_mask, selected_h

        def forward(self, input, length):
            max_depth = input.size(1)
            length_mask = sequence_mask(sequence_length=length, max_length=max_depth)
            select_masks = []
            state = self.word_linear(input)
            state = state.chunk(chunks=2, dim=2)
            for i in range(max_depth - 1):
                h, c = state
                l = (h[:, :-1, :], c[:, :-1, :])
                r = (h[:, 1:, :], c[:, 1:, :])
                new_state = self.treelstm_layer(l=l, r=r)
                if i < max_depth - 2:
                    # We don't need to greedily select the composition in the
                    # last iteration, since it has only one option left.
                    new_h, new_c, select_mask, selected_h = self.select_composition(
                        old_state=state, new_state=new_state, mask=length_mask[:, i + 1:])
                    new_state = (new_h, new_c)
                    select_masks.append(select_mask)
                done_mask = length_mask[:, i + 1]
                state = self.update_state(old_state=state, new_state=new_state, done_mask=done_mask)
            h, c = state
            assert h.size(1) == 1 and c.size(1) == 1
            return h.squeeze(1), c.squeeze(1), select_masks

    class SSTModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embedding = nn.Embedding(vocab, word_dim)
            self.encoder = BinaryTreeLSTM(word_dim, hidden_dim, gumbel_temperature=1.0)
            self.classifier = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_classes))

        def forward(self, words, length):
            h, _, select_masks = self.encoder(self.word_embedding(words), length)
            return self.classifier(h), select_masks

    return SSTModel()


def gumbel_tree_program(m, weights):
    torch, F = m.torch, m.F
    model = load(m, gumbel_tree_lstm(m), weights)
    words = torch.tensor([[1, 4, 2, 6, 3], [5, 2, 8, 0, 0], [3, 1, 7, 7, 0], [2, 2, 0, 0, 0]])
    length = torch.tensor([5, 3, 4, 2])
    labels = torch.tensor([0, 2, 1, 2])
    torch.manual_seed(7)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    history, masks = [], []
    for step in range(5):
        model.train()
        opt.zero_grad()
        logits, select_masks = model(words, length)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5)
        opt.step()
        history.append(loss.item())
        masks.append([s.detach() for s in select_masks])
    model.eval()
    with torch.no_grad():
        logits, greedy = model(words, length)
    return {"history": history, "masks": masks, "logits": logits, "greedy": greedy,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_gumbel_tree_lstm():
    weights = weights_of(gumbel_tree_lstm)
    ours, _ = run_both(gumbel_tree_program, weights, rtol=1e-5, atol=1e-6)
    for step in ours["masks"] + [ours["greedy"]]:  # each selection is one merge among the pairs left
        for mask in step:
            np.testing.assert_allclose(mask.sum(1), 1.0, rtol=1e-6)
            assert set(np.round(mask, 6).ravel()) <= {0.0, 1.0}
    assert np.all(np.isfinite(ours["history"]))


# ----------------------------------------------------------------------------------------------
# Perturbed optimizers (Berthet et al. 2020, google-research/perturbations as ported to PyTorch):
# a top-k selection made differentiable by averaging it under Gaussian noise, a custom Function whose
# backward reuses the saved noise, trained with the Fenchel-Young loss
# ----------------------------------------------------------------------------------------------


def perturbed_topk_program(m, weights, k=2, num_samples=50, sigma=0.5):
    torch, nn = m.torch, m.nn

    def topk_indicator(x):
        idx = torch.topk(x, k, dim=-1).indices
        return torch.zeros_like(x).scatter_(-1, idx, 1.0)

    class PerturbedTopK(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            b, d = x.shape
            noise = torch.normal(mean=0.0, std=1.0, size=(b, num_samples, d), dtype=x.dtype)
            perturbed_x = x[:, None, :] + noise * sigma  # b, nS, d
            indicators = topk_indicator(perturbed_x)
            ctx.save_for_backward(indicators, noise)
            return indicators.mean(dim=1)

        @staticmethod
        def backward(ctx, grad_output):
            indicators, noise = ctx.saved_tensors
            # the expected output times the noise, over sigma: d E[y(x + sigma Z)] / dx
            jac_t = torch.einsum("bnd,bne->bde", indicators, noise) / (num_samples * sigma)
            return torch.einsum("bd,bde->be", grad_output, jac_t)

    model = load(m, nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)), weights).double()
    rng = np.random.default_rng(21)
    feats = torch.from_numpy(rng.standard_normal((4, 5, 3)))
    target_scores = feats[..., 0] - 0.5 * feats[..., 1]
    target = topk_indicator(target_scores)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history, overlap = [], []
    for step in range(8):
        opt.zero_grad()
        theta = model(feats).squeeze(-1)  # (4, 5)
        y_eps = PerturbedTopK.apply(theta)
        # Fenchel-Young: its gradient in theta is y_eps - target (the Function's own gradient is not needed)
        loss = ((y_eps - target).detach() * theta).sum() / 4
        loss.backward()
        opt.step()
        history.append(((y_eps - target) ** 2).sum().item())
        overlap.append((topk_indicator(theta.detach()) * target).sum().item())
    theta = model(feats).squeeze(-1).detach().requires_grad_(True)
    torch.manual_seed(1)
    y = PerturbedTopK.apply(theta)
    (y * torch.arange(5, dtype=theta.dtype)).sum().backward()
    return {"history": history, "overlap": overlap, "y": y, "theta_grad": theta.grad, "target": target,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_perturbed_topk_with_a_fenchel_young_loss():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 6), m.nn.Tanh(), m.nn.Linear(6, 1)))
    ours, _ = run_both(perturbed_topk_program, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["y"].sum(-1), 2.0, rtol=1e-12)  # k units of mass per row
    assert ours["overlap"][-1] >= ours["overlap"][0]
    assert np.all(np.isfinite(ours["theta_grad"]))


# ----------------------------------------------------------------------------------------------
# Differentiable sorting networks (Petersen et al. 2021, diffsort): an odd-even network of relaxed
# conditional swaps (logistic or Cauchy), the relaxed permutation matrix accumulated by matmuls, and
# ranking supervision by BCE against argsort's one-hot permutation
# ----------------------------------------------------------------------------------------------


def odd_even_network(n):
    layers = n
    network = []
    shifted: bool = False
    even: bool = n % 2 == 0
    for layer in range(layers):
        if even:
            k = n // 2 + shifted
        else:
            k = n // 2 + 1
        split_a, split_b = np.zeros((k, n)), np.zeros((k, n))
        combine_min, combine_max = np.zeros((n, k)), np.zeros((n, k))
        count = 0
        # for i in range(n // 2 if not (even and shifted) else n // 2 - 1):
        for i in range(int(shifted), n - 1, 2):
            a, b = i, i + 1
            split_a[count, a], split_b[count, b] = 1, 1
            combine_min[a, count], combine_max[b, count] = 1, 1
            count += 1
        if even and shifted:
            # Make sure that the corner values stay where they are/were:
            a, b = 0, 0
            split_a[count, a], split_b[count, b] = 1, 1
            combine_min[a, count], combine_max[b, count] = .5, .5
            count += 1
            a, b = n - 1, n - 1
            split_a[count, a], split_b[count, b] = 1, 1
            combine_min[a, count], combine_max[b, count] = .5, .5
            count += 1
        elif not even:
            if shifted:
                a, b = 0, 0
            else:
                a, b = n - 1, n - 1
            split_a[count, a], split_b[count, b] = 1, 1
            combine_min[a, count], combine_max[b, count] = .5, .5
            count += 1
        assert count == k
        network.append((split_a, split_b, combine_min, combine_max))
        shifted = not shifted
    return network


def execute_sort(m, sorting_network, vectors, steepness=10., distribution='cauchy'):
    torch = m.torch
    x = vectors
    X = torch.eye(vectors.shape[1], dtype=x.dtype, device=x.device).repeat(x.shape[0], 1, 1)
    for split_a, split_b, combine_min, combine_max in sorting_network:
        split_a = split_a.type(x.dtype)
        split_b = split_b.type(x.dtype)
        combine_min = combine_min.type(x.dtype)
        combine_max = combine_max.type(x.dtype)
        a, b = x @ split_a.T, x @ split_b.T
        # float conversion necessary as PyTorch doesn't support Half for sigmoid as of 25. August 2021
        new_type = torch.float32 if x.dtype == torch.float16 else x.dtype
        if distribution == 'logistic':
            alpha = torch.sigmoid((b - a).type(new_type) * steepness).type(x.dtype)
        elif distribution == 'cauchy':
            v = (b - a).type(new_type)
            alpha = 1 / math.pi * torch.atan(v * steepness) + .5
            alpha = alpha.type(x.dtype)
        else:
            raise NotImplementedError('softmax method `{}` unknown'.format(distribution))
        aX = X @ split_a.T
        bX = X @ split_b.T
        w_min = alpha.unsqueeze(-2) * aX + (1 - alpha).unsqueeze(-2) * bX
        w_max = (1 - alpha).unsqueeze(-2) * aX + alpha.unsqueeze(-2) * bX
        X = (w_max @ combine_max.T.unsqueeze(-3)) + (w_min @ combine_min.T.unsqueeze(-3))
        x = (alpha * a + (1 - alpha) * b) @ combine_min.T + ((1 - alpha) * a + alpha * b) @ combine_max.T
    return x, X


def diffsort_program(m, weights, distribution, n=5):
    torch, nn = m.torch, m.nn
    network = [tuple(torch.from_numpy(t) for t in layer) for layer in odd_even_network(n)]
    model = load(m, nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)), weights)
    rng = np.random.default_rng(31)
    feats = torch.from_numpy(rng.standard_normal((6, n, 2)).astype(np.float32))
    ranks = feats[..., 0] * 2 - feats[..., 1]
    perm_ground_truth = torch.nn.functional.one_hot(torch.argsort(ranks, dim=-1)).transpose(-2, -1).float()
    # SGD, not Adam: sorting ignores a uniform shift of the scores, so the gradient along any parameter that
    # shifts them all (the last bias, an always-active unit) is float32 rounding noise, which Adam's
    # normalisation would turn into full steps of either sign
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    history = []
    for step in range(6):
        opt.zero_grad()
        scores = model(feats).squeeze(-1)
        _, perm_prediction = execute_sort(m, network, scores, steepness=8., distribution=distribution)
        loss = torch.nn.BCELoss()(torch.clamp(perm_prediction, 0, 1), perm_ground_truth)
        loss.backward()
        opt.step()
        history.append(loss.item())
    with torch.no_grad():
        scores = model(feats).squeeze(-1)
        sorted_x, perm = execute_sort(m, network, scores, steepness=1e4, distribution="logistic")
    return {"history": history, "sorted": sorted_x, "perm": perm, "scores": scores,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


@pytest.mark.parametrize("distribution", ["logistic", "cauchy"])
def test_diffsort_odd_even_network(distribution):
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 8), m.nn.ReLU(), m.nn.Linear(8, 1)))
    ours, _ = run_both(diffsort_program, weights, distribution, rtol=1e-5, atol=1e-6)
    assert ours["history"][-1] < ours["history"][0]
    # a very steep network sorts exactly, ascending, and its matrix is a permutation
    np.testing.assert_allclose(ours["sorted"], np.sort(ours["scores"], axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["perm"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours["perm"].sum(-2), 1.0, atol=1e-5)
