# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Routing, sorting and ranking programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights and data, comparing values, indices (their order among ties), dtypes and gradients, and checked
against NumPy by hand where a formula is short. Ranking: allRank's LambdaLoss with its weighing schemes, ApproxNDCG,
NeuralNDCG (Sinkhorn), NDCG@k and MRR@k on padded slates in float32; torchmetrics-style metrics with ties (average
ranks, tie-averaged NDCG by ``unique(return_inverse, return_counts)`` and ``scatter_add_``, ROC/AUROC, AP, Kendall's
tau-b), and nanmedian's index in a slice of NaN only."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# allRank's listwise losses and metrics (float32, as allRank runs them) on padded slates: LambdaLoss with
# its weighing schemes (sort, gather, log2 discounts, masks of pairs), ApproxNDCG, NeuralNDCG (the masked
# deterministic NeuralSort made doubly stochastic by Sinkhorn scaling), NDCG@k and MRR@k
# ----------------------------------------------------------------------------------------------

PADDED_Y_VALUE = -1
DEFAULT_EPS = 1e-10


def allrank_losses(m):
    torch = m.torch
    dev = torch.device("cpu")

    def lambdaLoss(y_pred, y_true, eps=DEFAULT_EPS, padded_value_indicator=PADDED_Y_VALUE, weighing_scheme=None,
                   k=None, sigma=1., mu=10., reduction="sum", reduction_log="binary"):
        device = y_pred.device
        y_pred = y_pred.clone()
        y_true = y_true.clone()
        padded_mask = y_true == padded_value_indicator
        y_pred[padded_mask] = float("-inf")
        y_true[padded_mask] = float("-inf")
        y_pred_sorted, indices_pred = y_pred.sort(descending=True, dim=-1)
        y_true_sorted, _ = y_true.sort(descending=True, dim=-1)
        true_sorted_by_preds = torch.gather(y_true, dim=1, index=indices_pred)
        true_diffs = true_sorted_by_preds[:, :, None] - true_sorted_by_preds[:, None, :]
        padded_pairs_mask = torch.isfinite(true_diffs)
        if weighing_scheme != "ndcgLoss1_scheme":
            padded_pairs_mask = padded_pairs_mask & (true_diffs > 0)
        ndcg_at_k_mask = torch.zeros((y_pred.shape[1], y_pred.shape[1]), dtype=torch.bool, device=device)
        ndcg_at_k_mask[:k, :k] = 1
        true_sorted_by_preds.clamp_(min=0.)
        y_true_sorted.clamp_(min=0.)
        pos_idxs = torch.arange(1, y_pred.shape[1] + 1).to(device)
        D = torch.log2(1. + pos_idxs.float())[None, :]
        maxDCGs = torch.sum(((torch.pow(2, y_true_sorted) - 1) / D)[:, :k], dim=-1).clamp(min=eps)
        G = (torch.pow(2, true_sorted_by_preds) - 1) / maxDCGs[:, None]
        if weighing_scheme is None:
            weights = 1.
        else:
            weights = schemes[weighing_scheme](G, D, mu, true_sorted_by_preds)
        scores_diffs = (y_pred_sorted[:, :, None] - y_pred_sorted[:, None, :]).clamp(min=-1e8, max=1e8)
        scores_diffs.masked_fill(torch.isnan(scores_diffs), 0.)
        weighted_probas = (torch.sigmoid(sigma * scores_diffs).clamp(min=eps) ** weights).clamp(min=eps)
        if reduction_log == "natural":
            losses = torch.log(weighted_probas)
        elif reduction_log == "binary":
            losses = torch.log2(weighted_probas)
        if reduction == "sum":
            loss = -torch.sum(losses[padded_pairs_mask & ndcg_at_k_mask])
        elif reduction == "mean":
            loss = -torch.mean(losses[padded_pairs_mask & ndcg_at_k_mask])
        return loss

    def ndcgLoss1_scheme(G, D, *args):
        return (G / D)[:, :, None]

    def ndcgLoss2_scheme(G, D, *args):
        pos_idxs = torch.arange(1, G.shape[1] + 1, device=G.device)
        delta_idxs = torch.abs(pos_idxs[:, None] - pos_idxs[None, :])
        deltas = torch.abs(torch.pow(torch.abs(D[0, delta_idxs - 1]), -1.)
                           - torch.pow(torch.abs(D[0, delta_idxs]), -1.))
        deltas.diagonal().zero_()
        return deltas[None, :, :] * torch.abs(G[:, :, None] - G[:, None, :])

    def lambdaRank_scheme(G, D, *args):
        return torch.abs(torch.pow(D[:, :, None], -1.) - torch.pow(D[:, None, :], -1.)) * \
            torch.abs(G[:, :, None] - G[:, None, :])

    def ndcgLoss2PP_scheme(G, D, *args):
        return args[0] * ndcgLoss2_scheme(G, D) + lambdaRank_scheme(G, D)

    def rankNetWeightedByGTDiff_scheme(G, D, *args):
        return torch.abs(args[1][:, :, None] - args[1][:, None, :])

    schemes = {"ndcgLoss1_scheme": ndcgLoss1_scheme, "ndcgLoss2_scheme": ndcgLoss2_scheme,
               "lambdaRank_scheme": lambdaRank_scheme, "ndcgLoss2PP_scheme": ndcgLoss2PP_scheme,
               "rankNetWeightedByGTDiff_scheme": rankNetWeightedByGTDiff_scheme}

    def approxNDCGLoss(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, alpha=1.):
        device = y_pred.device
        y_pred = y_pred.clone()
        y_true = y_true.clone()
        padded_mask = y_true == padded_value_indicator
        y_pred[padded_mask] = float("-inf")
        y_true[padded_mask] = float("-inf")
        y_pred_sorted, indices_pred = y_pred.sort(descending=True, dim=-1)
        y_true_sorted, _ = y_true.sort(descending=True, dim=-1)
        true_sorted_by_preds = torch.gather(y_true, dim=1, index=indices_pred)
        true_diffs = true_sorted_by_preds[:, :, None] - true_sorted_by_preds[:, None, :]
        padded_pairs_mask = torch.isfinite(true_diffs)
        padded_pairs_mask.diagonal(dim1=-2, dim2=-1).zero_()
        true_sorted_by_preds.clamp_(min=0.)
        y_true_sorted.clamp_(min=0.)
        pos_idxs = torch.arange(1, y_pred.shape[1] + 1).to(device)
        D = torch.log2(1. + pos_idxs.float())[None, :]
        maxDCGs = torch.sum((torch.pow(2, y_true_sorted) - 1) / D, dim=-1).clamp(min=DEFAULT_EPS)
        G = (torch.pow(2, true_sorted_by_preds) - 1) / maxDCGs[:, None]
        scores_diffs = (y_pred_sorted[:, :, None] - y_pred_sorted[:, None, :])
        scores_diffs[~padded_pairs_mask] = 0.
        approx_pos = 1. + torch.sum(padded_pairs_mask.float() * (torch.sigmoid(-alpha * scores_diffs)
                                                                 .clamp(min=DEFAULT_EPS)), dim=-1)
        approx_D = torch.log2(1. + approx_pos)
        approx_NDCG = torch.sum((G / approx_D), dim=-1)
        return -torch.mean(approx_NDCG)

    def sinkhorn_scaling(mat, mask=None, tol=1e-6, max_iter=50):
        if mask is not None:
            mat = mat.masked_fill(mask[:, None, :] | mask[:, :, None], 0.0)
            mat = mat.masked_fill(mask[:, None, :] & mask[:, :, None], 1.0)
        for _ in range(max_iter):
            mat = mat / mat.sum(dim=1, keepdim=True).clamp(min=DEFAULT_EPS)
            mat = mat / mat.sum(dim=2, keepdim=True).clamp(min=DEFAULT_EPS)
            if torch.max(torch.abs(mat.sum(dim=2) - 1.)) < tol and torch.max(torch.abs(mat.sum(dim=1) - 1.)) < tol:
                break
        if mask is not None:
            mat = mat.masked_fill(mask[:, None, :] | mask[:, :, None], 0.0)
        return mat

    def deterministic_neural_sort(s, tau, mask):
        n = s.size()[1]
        one = torch.ones((n, 1), dtype=torch.float32, device=dev)
        s = s.masked_fill(mask[:, :, None], -1e8)
        A_s = torch.abs(s - s.permute(0, 2, 1))
        A_s = A_s.masked_fill(mask[:, :, None] | mask[:, None, :], 0.0)
        B = torch.matmul(A_s, torch.matmul(one, torch.transpose(one, 0, 1)))
        temp = [n - m + 1 - 2 * (torch.arange(n - m, device=dev) + 1) for m in mask.squeeze(-1).sum(dim=1)]
        temp = [t.type(torch.float32) for t in temp]
        temp = [torch.cat((t, torch.zeros(n - len(t), device=dev))) for t in temp]
        scaling = torch.stack(temp).type(torch.float32).to(dev)
        s = s.masked_fill(mask[:, :, None], 0.0)
        C = torch.matmul(s, scaling.unsqueeze(-2))
        P_max = (C - B).permute(0, 2, 1)
        P_max = P_max.masked_fill(mask[:, :, None] | mask[:, None, :], -np.inf)
        P_max = P_max.masked_fill(mask[:, :, None] & mask[:, None, :], 1.0)
        sm = m.nn.Softmax(-1)
        P_hat = sm(P_max / tau)
        return P_hat

    def _apply_mask_and_get_true_sorted_by_preds(y_pred, y_true):
        mask = y_true == PADDED_Y_VALUE
        y_pred[mask] = float('-inf')
        y_true[mask] = 0.0
        _, indices = y_pred.sort(descending=True, dim=-1)
        return torch.gather(y_true, dim=1, index=indices)

    def dcg(y_pred, y_true, ats=None, gain_function=lambda x: torch.pow(2, x) - 1):
        y_true = y_true.clone()
        y_pred = y_pred.clone()
        actual_length = y_true.shape[1]
        if ats is None:
            ats = [actual_length]
        ats = [min(at, actual_length) for at in ats]
        true_sorted_by_preds = _apply_mask_and_get_true_sorted_by_preds(y_pred, y_true)
        discounts = (torch.tensor(1) / torch.log2(torch.arange(true_sorted_by_preds.shape[1], dtype=torch.float)
                                                  + 2.0)).to(device=dev)
        gains = gain_function(true_sorted_by_preds)
        discounted_gains = (gains * discounts)[:, :np.max(ats)]
        cum_dcg = torch.cumsum(discounted_gains, dim=1)
        ats_tensor = torch.tensor(ats, dtype=torch.long) - torch.tensor(1)
        return cum_dcg[:, ats_tensor]

    def ndcg(y_pred, y_true, ats=None, gain_function=lambda x: torch.pow(2, x) - 1):
        idcg = dcg(y_true, y_true, ats, gain_function)
        ndcg_ = dcg(y_pred, y_true, ats, gain_function) / idcg
        idcg_mask = idcg == 0
        ndcg_[idcg_mask] = 0.
        return ndcg_

    def mrr(y_pred, y_true, ats=None):
        y_true = y_true.clone()
        y_pred = y_pred.clone()
        if ats is None:
            ats = [y_true.shape[1]]
        true_sorted_by_preds = _apply_mask_and_get_true_sorted_by_preds(y_pred, y_true)
        values, indices = torch.max(true_sorted_by_preds, dim=1)
        indices = indices.type_as(values).unsqueeze(dim=0).t().expand(len(y_true), len(ats))
        ats_rep = torch.tensor(data=ats, device=dev, dtype=torch.float32).expand(len(y_true), len(ats))
        within_at_mask = (indices < ats_rep).type(torch.float32)
        result = torch.tensor(1.0) / (indices + torch.tensor(1.0))
        zero_sum_mask = torch.sum(values) == 0.0
        result[zero_sum_mask] = 0.0
        return result * within_at_mask

    def neuralNDCG(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, temperature=1., powered_relevancies=True,
                   k=None):
        if k is None:
            k = y_true.shape[1]
        mask = (y_true == padded_value_indicator)
        P_hat = deterministic_neural_sort(y_pred.unsqueeze(-1), tau=temperature, mask=mask).unsqueeze(0)
        P_hat = sinkhorn_scaling(P_hat.view(P_hat.shape[0] * P_hat.shape[1], P_hat.shape[2], P_hat.shape[3]),
                                 mask.repeat_interleave(P_hat.shape[0], dim=0), tol=1e-6, max_iter=50)
        P_hat = P_hat.view(int(P_hat.shape[0] / y_pred.shape[0]), y_pred.shape[0], P_hat.shape[1], P_hat.shape[2])
        P_hat = P_hat.masked_fill(mask[None, :, :, None] | mask[None, :, None, :], 0.)
        y_true_masked = y_true.masked_fill(mask, 0.).unsqueeze(-1).unsqueeze(0)
        if powered_relevancies:
            y_true_masked = torch.pow(2., y_true_masked) - 1.
        ground_truth = torch.matmul(P_hat, y_true_masked).squeeze(-1)
        discounts = (torch.tensor(1.) / torch.log2(torch.arange(y_true.shape[-1], dtype=torch.float) + 2.)).to(dev)
        discounted_gains = ground_truth * discounts
        idcg = dcg(y_true, y_true, ats=[k]).permute(1, 0)
        discounted_gains = discounted_gains[:, :, :k]
        ndcg = discounted_gains.sum(dim=-1) / (idcg + DEFAULT_EPS)
        idcg_mask = idcg == 0.
        ndcg = ndcg.masked_fill(idcg_mask.repeat(ndcg.shape[0], 1), 0.)
        if idcg_mask.all():
            return torch.tensor(0.)
        mean_ndcg = ndcg.sum() / ((~idcg_mask).sum() * ndcg.shape[0])
        return -1. * mean_ndcg

    return {"lambdaLoss": lambdaLoss, "approxNDCGLoss": approxNDCGLoss, "neuralNDCG": neuralNDCG, "ndcg": ndcg,
            "mrr": mrr}


def make_slate_scorer(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))


def slates(batch=5, length=8, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, length, 5)).astype(np.float32)
    relevance = np.clip(np.round(x[..., 0] + 0.5 * x[..., 1] + 1), 0, 4).astype(np.float32)
    lengths = [8, 6, 5, 8, 3]
    for i, n in enumerate(lengths):
        relevance[i, n:] = PADDED_Y_VALUE
    relevance[4, :3] = 0.0  # a slate with nothing relevant: its ideal DCG is 0
    return x, relevance


def allrank(m, weights, loss_name, scheme):
    torch, optim = m.torch, m.optim
    losses = allrank_losses(m)
    model = load(m, make_slate_scorer(m), weights)
    x, y_true = (torch.from_numpy(a) for a in slates())
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(4):
        optimizer.zero_grad()
        y_pred = model(x).squeeze(-1)
        if loss_name == "lambdaLoss":
            loss = losses["lambdaLoss"](y_pred, y_true, weighing_scheme=scheme, k=5)
        else:
            loss = losses[loss_name](y_pred, y_true)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        y_pred = model(x).squeeze(-1)
        metrics = {"ndcg": losses["ndcg"](y_pred, y_true, ats=[1, 3, 5]),
                   "mrr": losses["mrr"](y_pred, y_true, ats=[1, 3]),
                   # ties everywhere: every item scored the same
                   "ndcg_ties": losses["ndcg"](torch.zeros_like(y_pred), y_true, ats=[2, 8])}
    return {"history": history, "grads": [p.grad for p in model.parameters()], "metrics": metrics}


def ndcg_by_hand(scores, relevance, at):
    out = []
    for s, r in zip(scores, relevance):
        r = np.where(r == PADDED_Y_VALUE, 0.0, r)
        s = np.where(relevance[len(out)] == PADDED_Y_VALUE, -np.inf, s)
        discounts = 1 / np.log2(np.arange(len(r)) + 2)
        dcg = ((2 ** r[np.argsort(-s, kind="stable")] - 1) * discounts)[:at].sum()
        idcg = ((2 ** np.sort(r)[::-1] - 1) * discounts)[:at].sum()
        out.append(dcg / idcg if idcg > 0 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("loss_name, scheme", [
    ("lambdaLoss", None), ("lambdaLoss", "ndcgLoss1_scheme"), ("lambdaLoss", "ndcgLoss2_scheme"),
    ("lambdaLoss", "lambdaRank_scheme"), ("lambdaLoss", "ndcgLoss2PP_scheme"),
    ("lambdaLoss", "rankNetWeightedByGTDiff_scheme"), ("approxNDCGLoss", None), ("neuralNDCG", None)])
def test_allrank_losses_on_padded_slates(loss_name, scheme):
    weights = weights_of(make_slate_scorer)
    ours, _ = run_both(allrank, weights, loss_name, scheme, rtol=2e-4, atol=1e-6)
    x, relevance = slates()
    np.testing.assert_allclose(ours["metrics"]["ndcg_ties"][:, 1], ndcg_by_hand(np.zeros((5, 8)), relevance, 8),
                               rtol=1e-6)
    assert ours["metrics"]["ndcg"][4].tolist() == [0, 0, 0]
    if scheme is None:  # the weighing schemes' weights change with the ranking: their losses need not fall
        assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Ranking metrics with ties, as torchmetrics computes them: Spearman's rho from average ranks (argsort,
# rank[idx] = arange, repeated values found by sort / nonzero of the changes and averaged by masks), NDCG
# with tied predictions averaged (torch.unique(return_inverse, return_counts), scatter_add_, cumsum,
# diff), the ROC curve and AUROC (argsort descending, nonzero of the distinct thresholds, F.pad, cumsum,
# trapz), average precision, and Kendall's tau-b from pairwise signs
# ----------------------------------------------------------------------------------------------


def ranking_metrics(m, preds, target, relevance):
    torch, F = m.torch, m.F

    def _find_repeats(data):
        temp = data.detach().clone()
        temp = temp.sort()[0]
        change = torch.cat([torch.tensor([True], device=temp.device), temp[1:] != temp[:-1]])
        unique = temp[change]
        change_idx = torch.cat([torch.nonzero(change), torch.tensor([[temp.numel()]], device=temp.device)]).flatten()
        freq = change_idx[1:] - change_idx[:-1]
        atleast2 = freq > 1
        return unique[atleast2]

    def _rank_data(data):
        n = data.numel()
        rank = torch.empty_like(data)
        idx = data.argsort()
        rank[idx[:n]] = torch.arange(1, n + 1, dtype=data.dtype, device=data.device)
        repeats = _find_repeats(data)
        for r in repeats:
            condition = data == r
            rank[condition] = rank[condition].mean()
        return rank

    def spearman_corrcoef(preds, target, eps=1e-6):
        preds, target = _rank_data(preds), _rank_data(target)
        preds_diff = preds - preds.mean(0)
        target_diff = target - target.mean(0)
        cov = (preds_diff * target_diff).mean(0)
        preds_std = torch.sqrt((preds_diff * preds_diff).mean(0))
        target_std = torch.sqrt((target_diff * target_diff).mean(0))
        return torch.clamp(cov / (preds_std * target_std + eps), -1.0, 1.0)

    def _tie_average_dcg(target, preds, discount_cumsum):
        _, inv, counts = torch.unique(-preds, return_inverse=True, return_counts=True)
        ranked = torch.zeros_like(counts, dtype=torch.float32)
        ranked.scatter_add_(0, inv, target.to(dtype=ranked.dtype))
        ranked = ranked / counts
        groups = counts.cumsum(dim=0) - 1
        discount_sums = torch.zeros_like(counts, dtype=torch.float32)
        discount_sums[0] = discount_cumsum[groups[0]]
        discount_sums[1:] = discount_cumsum[groups].diff()
        return (ranked * discount_sums).sum()

    def _dcg_sample_scores(target, preds, top_k, ignore_ties):
        discount = 1.0 / (torch.log2(torch.arange(target.shape[-1], device=target.device) + 2.0))
        discount[top_k:] = 0.0
        if ignore_ties:
            ranking = preds.argsort(descending=True)
            ranked = target[ranking]
            cumulative_gain = (discount * ranked).sum()
        else:
            discount_cumsum = discount.cumsum(dim=-1)
            cumulative_gain = _tie_average_dcg(target, preds, discount_cumsum)
        return cumulative_gain

    def retrieval_normalized_dcg(preds, target, top_k=None):
        top_k = preds.shape[-1] if top_k is None else top_k
        gain = _dcg_sample_scores(target, preds, top_k, ignore_ties=False)
        normalized_gain = _dcg_sample_scores(target, target, top_k, ignore_ties=True)
        all_irrelevant = normalized_gain == 0
        gain[all_irrelevant] = 0
        gain[~all_irrelevant] /= normalized_gain[~all_irrelevant]
        return gain.mean()

    def _binary_clf_curve(preds, target, sample_weights=None, pos_label=1):
        with torch.no_grad():
            if sample_weights is not None and not isinstance(sample_weights, torch.Tensor):
                sample_weights = torch.tensor(sample_weights, device=preds.device, dtype=torch.float)
            # remove class dimension if necessary
            if preds.ndim > target.ndim:
                preds = preds[:, 0]
            desc_score_indices = torch.argsort(preds, descending=True)
            preds = preds[desc_score_indices]
            target = target[desc_score_indices]
            weight = sample_weights[desc_score_indices] if sample_weights is not None else 1.0
            # pred typically has many tied values. Here we extract
            # the indices associated with the distinct values. We also
            # concatenate a value for the end of the curve.
            distinct_value_indices = torch.where(preds[1:] - preds[:-1])[0]
            threshold_idxs = F.pad(distinct_value_indices, [0, 1], value=target.size(0) - 1)
            target = (target == pos_label).to(torch.long)
            tps = torch.cumsum(target * weight, dim=0)[threshold_idxs]
            if sample_weights is not None:
                # express fps as a cumsum to ensure fps is increasing even in
                # the presence of floating point errors
                fps = torch.cumsum((1 - target) * weight, dim=0)[threshold_idxs]
            else:
                fps = 1 + threshold_idxs - tps
            return fps, tps, preds[threshold_idxs]

    def binary_roc(preds, target):
        fps, tps, thresholds = _binary_clf_curve(preds=preds, target=target)
        # Add an extra threshold position to make sure that the curve starts at (0, 0)
        tps = torch.cat([torch.zeros(1, dtype=tps.dtype, device=tps.device), tps])
        fps = torch.cat([torch.zeros(1, dtype=fps.dtype, device=fps.device), fps])
        thresholds = torch.cat([torch.ones(1, dtype=thresholds.dtype, device=thresholds.device), thresholds])
        fpr = fps / fps[-1]
        tpr = tps / tps[-1]
        return fpr, tpr, thresholds

    def binary_average_precision(preds, target):
        fps, tps, thresholds = _binary_clf_curve(preds, target)
        precision = tps / (tps + fps)
        recall = tps / tps[-1]
        # stop when full recall attained and reverse the outputs so recall is decreasing
        last_ind = torch.where(tps == tps[-1])[0][0]
        sl = slice(0, last_ind.item() + 1)
        precision = torch.cat([precision[sl].flip(0), torch.ones(1, dtype=precision.dtype)])
        recall = torch.cat([recall[sl].flip(0), torch.zeros(1, dtype=recall.dtype)])
        return -torch.sum((recall[1:] - recall[:-1]) * precision[:-1])

    def kendall_tau_b(x, y):
        sx = torch.sign(x[:, None] - x[None, :])
        sy = torch.sign(y[:, None] - y[None, :])
        i, j = torch.triu_indices(len(x), len(x), offset=1)
        concordance = (sx[i, j] * sy[i, j]).sum()
        return concordance / torch.sqrt((sx[i, j] != 0).sum() * (sy[i, j] != 0).sum())

    preds, target, relevance = (torch.from_numpy(a) for a in (preds, target, relevance))
    fpr, tpr, thresholds = binary_roc(preds, target)
    return {"spearman": spearman_corrcoef(preds, relevance), "rank": _rank_data(preds),
            "ndcg": retrieval_normalized_dcg(preds, relevance), "ndcg@3": retrieval_normalized_dcg(preds, relevance, 3),
            "fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auroc": torch.trapz(tpr, fpr),
            "ap": binary_average_precision(preds, target), "kendall": kendall_tau_b(preds, relevance)}


def tied_scores(seed=10):
    rng = np.random.default_rng(seed)
    preds = np.round(rng.uniform(0, 1, 16) * 4) / 4  # five distinct values: many ties
    relevance = np.clip(np.round(3 * preds + rng.normal(0, 0.7, 16)), 0, 3)
    target = (relevance >= 2).astype(np.int64)
    return preds.astype(np.float32), target, relevance.astype(np.float32)


def average_ranks(a):
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        ranks[a == v] = ranks[a == v].mean()
    return ranks


def test_ranking_metrics_with_ties():
    preds, target, relevance = tied_scores()
    ours, _ = run_both(ranking_metrics, preds, target, relevance, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours["rank"], average_ranks(preds))
    rho = np.corrcoef(average_ranks(preds), average_ranks(relevance))[0, 1]
    assert ours["spearman"] == pytest.approx(rho, abs=1e-5)
    # AUROC is the Mann-Whitney statistic: pairs (positive, negative) ordered, ties counting a half
    pos, neg = preds[target == 1], preds[target == 0]
    mann_whitney = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert ours["auroc"] == pytest.approx(mann_whitney, rel=1e-6)
    assert len(ours["thresholds"]) == len(np.unique(preds)) + 1
    # NDCG with tied predictions: each tie group's gain averaged over its positions' discounts
    groups = np.unique(-preds)
    discount = 1 / np.log2(np.arange(16) + 2)
    dcg, start = 0.0, 0
    for g in groups:
        members = -preds == g
        dcg += relevance[members].mean() * discount[start:start + members.sum()].sum()
        start += members.sum()
    ideal = (np.sort(relevance)[::-1] * discount).sum()
    assert ours["ndcg"] == pytest.approx(dcg / ideal, rel=1e-5)


def test_nanmedian_of_a_slice_of_nan_only_names_the_index_pytorch_names(T):
    """PyTorch's nanmedian picks by std::nth_element, to which no NaN is less than another: in a slice of NaN
    only, it names whichever its partitioning leaves in front (the third of four); here it named the first.
    The index decides where the gradient goes."""
    nan = float("nan")
    x = T.tensor([[nan, nan, 2.0, nan], [nan, nan, nan, nan], [1.0, nan, 3.0, 1.0]], requires_grad=True)
    values, indices = T.nanmedian(x, 1)
    assert indices.tolist() == [2, 2, 3]
    values.sum().backward()
    assert x.grad[1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert T.nanmedian(T.full((3, 1, 2), nan), 0, keepdim=True).indices.tolist() == [[[0, 0]]]  # up to 3: the first
    assert [T.full((n,), nan).nanmedian(0).indices.item() for n in (4, 5, 8, 17)] == [2, 2, 6, 10]
