# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Recommender-system and ranking programs (see tests/pytorch_programs.py), each trained a few steps from the same
weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients, parameters and metrics (float64
to about 1e-10; the float32 DLRM bit for bit where PyTorch's kernels allow), and checked against NumPy by hand where
a formula is short. tests/test_programs_probe11_tabular_*.py has the first round (NeuMF, DeepFM, DLRM in float64,
GRU4Rec, SASRec, two-tower, LightGCN): these go past it. Learning to rank: RankNet by ``margin_ranking_loss`` and by
pairwise ``BCEWithLogits``, ListNet (soft ``cross_entropy`` targets), ListMLE (``logcumsumexp`` over ``gather``-ed
scores), LambdaRank's |ΔNDCG| weights from ``argsort(argsort)``, hinge on in-list pairs; offline metrics with
tensors: recall@k, NDCG@k, MRR, AUC (by ranks, by ``cumsum`` and ``trapz``), GAUC per user (``unique(return_inverse,
return_counts)``, ``scatter_reduce('amax'|'mean', include_self=False)``, ``bincount(weights)``,
``unique_consecutive``), each against NumPy by hand."""

import numpy as np
import pytest

from .probe13_recsys_common import grads_of, params_of
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Learning to rank: RankNet, ListNet, ListMLE, LambdaRank, hinge; NDCG by sorting
# ----------------------------------------------------------------------------------------------


def ltr_data(seed=7):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((6, 10, 5))  # 6 queries, 10 documents each
    relevance = np.clip(np.round(features[..., 0] + rng.normal(0, 0.7, (6, 10))), 0, 3)  # graded 0-3, ties
    return features, relevance


def make_scorer(m):
    nn = m.nn
    # no output bias: every loss here is invariant to a shift of a list's scores, so its gradient would be
    # rounding noise, which Adam's normalisation turns into steps of size lr
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 1, bias=False))


def ndcg_at(torch, scores, relevance, k):
    order = torch.argsort(scores, dim=1, descending=True)
    gains = (2 ** torch.gather(relevance, 1, order) - 1)[:, :k]
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=scores.dtype))
    dcg = (gains * discounts).sum(1)
    ideal = (2 ** torch.sort(relevance, dim=1, descending=True).values - 1)[:, :k]
    idcg = (ideal * discounts).sum(1)
    return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg))


def learning_to_rank(m, weights, loss_name):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_scorer(m), weights).double()
    features, relevance = (torch.from_numpy(a) for a in ltr_data())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    i, j = torch.triu_indices(10, 10, offset=1)
    losses = []
    for step in range(4):
        s = model(features).squeeze(-1)
        if loss_name == "ranknet":
            s_i, s_j, r_i, r_j = s[:, i], s[:, j], relevance[:, i], relevance[:, j]
            sign = torch.sign(r_i - r_j)
            keep = sign != 0
            loss = F.margin_ranking_loss(s_i[keep], s_j[keep], sign[keep], margin=0.1) \
                + F.binary_cross_entropy_with_logits(s_i - s_j, (sign + 1) / 2, weight=keep.double())
        elif loss_name == "listnet":
            loss = F.cross_entropy(s, F.softmax(relevance, dim=1))
        elif loss_name == "listmle":
            order = torch.argsort(relevance, dim=1, descending=True, stable=True)
            ranked = torch.gather(s, 1, order)
            # log-likelihood of the ideal permutation: logcumsumexp from the bottom
            loss = (torch.logcumsumexp(ranked.flip(1), dim=1).flip(1) - ranked).sum(1).mean()
        elif loss_name == "lambdarank":
            ranks = torch.argsort(torch.argsort(s.detach(), dim=1, descending=True), dim=1)
            discount = 1.0 / torch.log2(ranks.double() + 2)
            gain = 2 ** relevance - 1
            ideal = ((2 ** torch.sort(relevance, 1, descending=True).values - 1)
                     / torch.log2(torch.arange(10, dtype=torch.float64) + 2)).sum(1, keepdim=True)
            delta = (gain[:, :, None] - gain[:, None, :]).abs() * (discount[:, :, None] - discount[:, None, :]).abs()
            delta = delta / ideal[:, :, None]
            better = relevance[:, :, None] > relevance[:, None, :]
            pair_logits = s[:, :, None] - s[:, None, :]
            loss = (F.softplus(-pair_logits) * delta * better).sum() / better.sum()
        else:  # hinge on pairs within each list
            diff = s[:, :, None] - s[:, None, :]
            better = (relevance[:, :, None] > relevance[:, None, :]).double()
            loss = (torch.clamp(1.0 - diff, min=0) * better).sum() / better.sum()
        optimizer.zero_grad()
        loss.backward()
        grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        s = model(features).squeeze(-1)
    return {"losses": losses, "grads": grads, "params": params_of(model), "scores": s,
            "ndcg@5": ndcg_at(torch, s, relevance, 5), "ndcg@10": ndcg_at(torch, s, relevance, 10)}


@pytest.mark.parametrize("loss_name", ["ranknet", "listnet", "listmle", "lambdarank", "hinge"])
def test_learning_to_rank(loss_name):
    ours, _ = run_both(learning_to_rank, weights_of(make_scorer), loss_name, rtol=1e-9, atol=1e-12)
    # NDCG@k by hand from the final scores
    features, relevance = ltr_data()
    s = ours["scores"]
    for k in (5, 10):
        order = np.argsort(-s, axis=1, kind="stable")
        gains = (2 ** np.take_along_axis(relevance, order, 1) - 1)[:, :k]
        disc = 1 / np.log2(np.arange(2, k + 2))
        ideal = ((2 ** -np.sort(-relevance, axis=1) - 1)[:, :k] * disc).sum(1)
        expected = np.where(ideal > 0, (gains * disc).sum(1) / np.maximum(ideal, 1e-12), 0)
        np.testing.assert_allclose(ours[f"ndcg@{k}"], expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Offline metrics with tensors, against NumPy by hand
# ----------------------------------------------------------------------------------------------


def eval_logs(seed=8):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.standard_normal((7, 15)), 1)  # rounded: ties in the rankings
    labels = rng.random((7, 15)) < 0.25
    labels[3] = False  # a user without positives
    impressions_user = np.sort(rng.integers(0, 6, 60))
    impressions_score = np.round(rng.standard_normal(60), 1)
    impressions_click = rng.random(60) < 0.4
    return scores, labels, impressions_user, impressions_score, impressions_click


def metrics(m, k=5):
    torch = m.torch
    scores, labels, imp_user, imp_score, imp_click = (torch.from_numpy(a) for a in eval_logs())
    n_pos = labels.sum(1)
    topk = torch.topk(scores, k, dim=1).indices
    hits = torch.gather(labels, 1, topk)
    recall = hits.sum(1) / n_pos.clamp(min=1)
    precision = hits.double().mean(1)
    discounts = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2)
    dcg = (hits * discounts).sum(1)
    ideal_hits = torch.arange(k)[None, :] < n_pos[:, None]
    idcg = (ideal_hits * discounts).sum(1)
    ndcg = torch.nan_to_num(dcg / idcg)
    ranked = torch.gather(labels, 1, torch.argsort(scores, dim=1, descending=True, stable=True))
    first_hit = torch.argmax(ranked.int(), dim=1)
    mrr = torch.where(ranked.any(1), 1.0 / (first_hit + 1).double(), torch.zeros(7, dtype=torch.float64))
    # AUC over all impressions: average ranks of ties (the Mann-Whitney U)
    values, inverse, counts = torch.unique(imp_score, return_inverse=True, return_counts=True)
    first_rank = torch.cumsum(counts, 0) - counts + 1
    avg_rank = first_rank.double() + (counts.double() - 1) / 2
    ranks = avg_rank[inverse]
    pos = imp_click.sum()
    neg = len(imp_click) - pos
    auc = (ranks[imp_click].sum() - pos * (pos + 1) / 2) / (pos * neg)
    # ROC curve by cumsum over the distinct thresholds, and its area by trapz
    order = torch.argsort(imp_score, descending=True, stable=True)
    clicks = imp_click[order].double()
    distinct = torch.cat([torch.diff(imp_score[order]) != 0, torch.tensor([True])])
    tps = torch.cumsum(clicks, 0)[distinct]
    fps = torch.cumsum(1 - clicks, 0)[distinct]
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tps / tps[-1]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fps / fps[-1]])
    auc_trapz = torch.trapz(tpr, fpr)
    # GAUC: per user (the logs come grouped by user), weighted by impressions
    users, user_of, per_user = torch.unique_consecutive(imp_user, return_inverse=True, return_counts=True)
    n_users = len(users)
    best = torch.full((n_users,), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, user_of, imp_score, reduce="amax", include_self=False)
    mean_score = torch.zeros(n_users, dtype=torch.float64).scatter_reduce(
        0, user_of, imp_score, reduce="mean", include_self=False)
    clicks_per_user = torch.bincount(user_of, weights=imp_click.double(), minlength=n_users)
    user_auc = []
    for u in range(n_users):
        sel = user_of == u
        s_u, c_u = imp_score[sel], imp_click[sel]
        p, q = c_u.sum(), (~c_u).sum()
        if p == 0 or q == 0:
            user_auc.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        greater = (s_u[c_u][:, None] > s_u[~c_u][None, :]).double()
        ties = (s_u[c_u][:, None] == s_u[~c_u][None, :]).double()
        user_auc.append((greater + 0.5 * ties).mean())
    user_auc = torch.stack(user_auc)
    valid = ~torch.isnan(user_auc)
    gauc = (user_auc[valid] * per_user[valid]).sum() / per_user[valid].sum()
    coverage = torch.unique(topk).numel() / scores.shape[1]
    popular = torch.isin(topk, torch.topk(labels.sum(0), 3).indices).double().mean()
    return {"recall": recall, "precision": precision, "ndcg": ndcg, "mrr": mrr, "auc": auc, "auc_trapz": auc_trapz,
            "best": best, "mean_score": mean_score, "clicks_per_user": clicks_per_user, "per_user": per_user,
            "user_auc": user_auc, "gauc": gauc, "coverage": coverage, "popular": popular, "topk": topk}


def test_offline_metrics():
    ours, _ = run_both(metrics, rtol=1e-12, atol=1e-14)
    scores, labels, imp_user, imp_score, imp_click = eval_logs()
    # AUC by pairs, ties half
    p, n = imp_score[imp_click], imp_score[~imp_click]
    pairs = ((p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])).mean()
    np.testing.assert_allclose(ours["auc"], pairs, rtol=1e-12)
    np.testing.assert_allclose(ours["auc_trapz"], pairs, rtol=1e-12)
    # per-user reductions
    for u in np.unique(imp_user):
        sel = imp_user == u
        j = list(np.unique(imp_user)).index(u)
        assert ours["best"][j] == imp_score[sel].max()
        np.testing.assert_allclose(ours["mean_score"][j], imp_score[sel].mean(), rtol=1e-12)
        assert ours["clicks_per_user"][j] == imp_click[sel].sum()
    # the metrics at 5 from the top-5 chosen (ties: PyTorch's topk picks, which chainrule reproduces)
    top = ours["topk"]
    hits = np.take_along_axis(labels, top, 1)
    np.testing.assert_allclose(ours["recall"], hits.sum(1) / np.maximum(labels.sum(1), 1), rtol=1e-7)  # float32
    assert ours["ndcg"][3] == 0 and ours["mrr"][3] == 0
