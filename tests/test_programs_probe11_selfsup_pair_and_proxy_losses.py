# ruff: noqa: B007, E501, UP008, UP018  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. Metric learning: TensorFlow's semi-hard mining as PyTorch ports write it;
SupCon by logsumexp over -inf; the siamese losses of nn (CosineEmbeddingLoss, MarginRankingLoss,
TripletMarginWithDistanceLoss, TripletMarginLoss, contrastive); prototypical networks by cdist; the multi-similarity,
Proxy-Anchor and SoftTriple losses; pairwise ranking over tied scores (the hinge's corner) and CosineEmbeddingLoss
given 0/1 labels."""

import numpy as np
import pytest

from .probe11_selfsup_common import embedder, face_data
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# SupCon by log-sum-exp over -inf-masked logits, and the siamese losses of nn
# ----------------------------------------------------------------------------------------------


def supcon_logsumexp(m, weights, steps=3, temperature=0.1):
    torch, F = m.torch, m.F
    model = load(m, embedder(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    log = []
    for step in range(steps):
        x, labels = face_data(m, n=10, seed=40 + step)
        views = torch.cat([x, x + 0.1 * torch.sin(3 * x)])
        labels = labels.repeat(2)
        z = F.normalize(model(views), dim=1)
        logits = z @ z.T / temperature
        self_mask = torch.eye(len(labels), dtype=torch.bool)
        logits_mask = torch.scatter(torch.ones_like(logits), 1, torch.arange(len(labels)).view(-1, 1), 0)
        positives = labels.unsqueeze(0).eq(labels.unsqueeze(1)) & ~self_mask
        # the denominator leaves the anchor out by a -inf logit: its exp is 0, and so is its gradient
        log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float('-inf')), dim=1, keepdim=True)
        mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
        loss = -mean_log_prob_pos.mean()
        # the same by Khosla's logits_mask, multiplying the exponentials
        exp_logits = torch.exp(logits) * logits_mask
        by_mask = -((positives * (logits - torch.log(exp_logits.sum(1, keepdim=True)))).sum(1) /
                    positives.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), by_mask.item()))
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


def test_supcon_by_logsumexp_with_infinite_mask():
    weights = weights_of(embedder)
    ours, _ = run_both(supcon_logsumexp, weights, rtol=1e-4, atol=1e-5)
    for loss, by_mask in ours["log"]:
        assert loss == pytest.approx(by_mask, rel=1e-5)
    assert all(np.isfinite(g).all() for g in ours["grads"])


def siamese(m, weights, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, embedder(m), weights)
    cosine_embedding = nn.CosineEmbeddingLoss(margin=0.2)
    ranking = nn.MarginRankingLoss(margin=0.5, reduction='sum')
    by_pairwise = nn.TripletMarginWithDistanceLoss(distance_function=nn.PairwiseDistance(), margin=1.0)
    by_cosine = nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: 1.0 - F.cosine_similarity(x, y), margin=0.4, swap=True, reduction='none')
    triplet_margin = nn.TripletMarginLoss(margin=1.0, p=2, swap=True)

    def contrastive_loss(output1, output2, label, margin=2.0):
        euclidean_distance = F.pairwise_distance(output1, output2, keepdim=True)
        return torch.mean((1 - label) * torch.pow(euclidean_distance, 2) +
                          label * torch.pow(torch.clamp(margin - euclidean_distance, min=0.0), 2))

    optimizer = m.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=5e-4, momentum=0.9)
    log = []
    for step in range(steps):
        x, labels = face_data(m, n=10, seed=50 + step)
        anchor, positive = x, x + 0.3 * torch.cos(x)
        negative = x.roll(1, 0)
        a, p, n = model(torch.cat([anchor, positive, negative])).chunk(3)
        same = (labels == labels.roll(1, 0)).float()
        target = torch.where(torch.rand(10) >= 0, 1, -1) * 0 + (1 - 2 * same).long() * -1  # 1 similar, -1 not
        losses = {
            "cosine_embedding": cosine_embedding(a, n, target) + cosine_embedding(a, p, torch.ones(10)),
            "ranking": ranking(F.pairwise_distance(a, n), F.pairwise_distance(a, p), torch.ones(10)),
            "pairwise_triplet": by_pairwise(a, p, n),
            "cosine_triplet": by_cosine(a, p, n),
            "triplet": triplet_margin(a, p, n),
            "contrastive": contrastive_loss(a, n, 1 - same.unsqueeze(1)),
        }
        loss = sum(v.mean() for v in losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append({k: v.detach() for k, v in losses.items()})
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


def test_siamese_losses():
    weights = weights_of(embedder)
    ours, _ = run_both(siamese, weights, rtol=1e-4, atol=1e-5)
    assert ours["log"][0]["cosine_triplet"].shape == (10,)


def protonet(m, weights, steps=3, n_way=3, n_shot=2, n_query=2):
    torch, F = m.torch, m.F
    model = load(m, embedder(m), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    log = []
    for step in range(steps):
        x, _ = face_data(m, n=15, seed=150 + step)
        support = x[:n_way * n_shot]  # class c's shots are rows c, c + n_way, ...
        query = torch.cat([x[n_way * n_shot:n_way * n_shot + n_way * n_query], support[:n_way]])
        target = torch.arange(n_way).repeat(n_query + 1)
        z = model(torch.cat([support, query]))
        z_support, z_query = z[:n_way * n_shot], z[n_way * n_shot:]
        z_proto = z_support.view(n_shot, n_way, -1).mean(0)
        dists = torch.cdist(z_query, z_proto)
        log_p_y = F.log_softmax(-dists, dim=1)
        loss = F.nll_loss(log_p_y, target)
        # the nearest support of each query, its distance zero for the repeated ones
        nearest, idx = torch.cdist(z_query, z_support).min(dim=1)
        acc = (log_p_y.argmax(1) == target).float().mean()
        optimizer.zero_grad()
        (loss + nearest.mean()).backward()
        optimizer.step()
        log.append((loss.item(), acc.item(), nearest.detach(), idx))
    return {"log": log, "grads": [p.grad for p in model.parameters()]}


def test_prototypical_network_by_cdist():
    weights = weights_of(embedder)
    ours, _ = run_both(protonet, weights, rtol=1e-4, atol=1e-5)
    for *_, nearest, idx in ours["log"]:
        np.testing.assert_array_equal(nearest[-3:], 0)
        assert idx[-3:].tolist() == [0, 1, 2]
    assert all(np.isfinite(g).all() for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# Multi-similarity loss (MalongTech/research-ms-loss) and Proxy-Anchor (tjddus9597/Proxy-Anchor-CVPR2020)
# ----------------------------------------------------------------------------------------------


def ms_and_proxy_anchor(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F

    class MultiSimilarityLoss(nn.Module):
        def __init__(self):
            super(MultiSimilarityLoss, self).__init__()
            self.thresh = 0.5
            self.margin = 0.1
            self.scale_pos = 2.0
            self.scale_neg = 40.0

        def forward(self, feats, labels):
            assert feats.size(0) == labels.size(0), \
                f"feats.size(0): {feats.size(0)} is not equal to labels.size(0): {labels.size(0)}"
            batch_size = feats.size(0)
            sim_mat = torch.matmul(feats, torch.t(feats))
            epsilon = 1e-5
            loss = list()
            for i in range(batch_size):
                pos_pair_ = sim_mat[i][labels == labels[i]]
                pos_pair_ = pos_pair_[pos_pair_ < 1 - epsilon]
                neg_pair_ = sim_mat[i][labels != labels[i]]
                neg_pair = neg_pair_[neg_pair_ + self.margin > min(pos_pair_)]
                pos_pair = pos_pair_[pos_pair_ - self.margin < max(neg_pair_)]
                if len(neg_pair) < 1 or len(pos_pair) < 1:
                    continue
                # weighting step
                pos_loss = 1.0 / self.scale_pos * torch.log(
                    1 + torch.sum(torch.exp(-self.scale_pos * (pos_pair - self.thresh))))
                neg_loss = 1.0 / self.scale_neg * torch.log(
                    1 + torch.sum(torch.exp(self.scale_neg * (neg_pair - self.thresh))))
                loss.append(pos_loss + neg_loss)
            if len(loss) == 0:
                return torch.zeros([], requires_grad=True)
            loss = sum(loss) / batch_size
            return loss

    def binarize(T, nb_classes):
        T = T.cpu().numpy()
        T = np.eye(nb_classes)[T]  # sklearn.preprocessing.label_binarize
        T = torch.DoubleTensor(T)
        return T

    def l2_norm(input):
        input_size = input.size()
        buffer = torch.pow(input, 2)
        normp = torch.sum(buffer, 1).add_(1e-12)
        norm = torch.sqrt(normp)
        _output = torch.div(input, norm.view(-1, 1).expand_as(input))
        output = _output.view(input_size)
        return output

    class Proxy_Anchor(nn.Module):
        def __init__(self, nb_classes, sz_embed, mrg=0.1, alpha=32):
            nn.Module.__init__(self)
            # Proxy Anchor Initialization
            self.proxies = nn.Parameter(torch.randn(nb_classes, sz_embed))
            nn.init.kaiming_normal_(self.proxies, mode='fan_out')
            self.nb_classes = nb_classes
            self.sz_embed = sz_embed
            self.mrg = mrg
            self.alpha = alpha

        def forward(self, X, T):
            P = self.proxies
            cos = F.linear(l2_norm(X), l2_norm(P))  # Calcluate cosine similarity
            P_one_hot = binarize(T=T, nb_classes=self.nb_classes)
            N_one_hot = 1 - P_one_hot
            pos_exp = torch.exp(-self.alpha * (cos - self.mrg))
            neg_exp = torch.exp(self.alpha * (cos + self.mrg))
            with_pos_proxies = torch.nonzero(P_one_hot.sum(dim=0) != 0).squeeze(dim=1)  # The set of positive proxies of data in the batch
            num_valid_proxies = len(with_pos_proxies)  # The number of positive proxies
            P_sim_sum = torch.where(P_one_hot == 1, pos_exp, torch.zeros_like(pos_exp)).sum(dim=0)
            N_sim_sum = torch.where(N_one_hot == 1, neg_exp, torch.zeros_like(neg_exp)).sum(dim=0)
            pos_term = torch.log(1 + P_sim_sum).sum() / num_valid_proxies
            neg_term = torch.log(1 + N_sim_sum).sum() / self.nb_classes
            loss = pos_term + neg_term
            return loss

    # in float64: exp(40 s) and exp(32 cos), with the proxies' lr of 0.1, blow float32 rounding up to 1e-3 in
    # three steps
    model = load(m, embedder(m), weights).double()
    ms = MultiSimilarityLoss()
    criterion = Proxy_Anchor(nb_classes=6, sz_embed=8).double()
    with torch.no_grad():
        criterion.proxies.copy_(torch.tensor(np.random.default_rng(6).standard_normal((6, 8))))
    param_groups = [{'params': model.parameters(), 'lr': 1e-3},
                    {'params': criterion.parameters(), 'lr': float(1e-3) * 100}]
    opt = m.optim.AdamW(param_groups, lr=float(1e-3), weight_decay=1e-4)
    log = []
    for step in range(steps):
        x, y = face_data(m, n=12, seed=160 + step)
        x = x.double()
        feats = F.normalize(model(x))
        ms_loss = ms(feats, y)
        pa_loss = criterion(model(x), y)  # classes 0..4 only: proxy 5 has no positives
        loss = ms_loss + pa_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 10) if hasattr(torch, "nn") else \
            m.nn.utils.clip_grad_value_(model.parameters(), 10)
        torch.nn.utils.clip_grad_value_(criterion.parameters(), 10) if hasattr(torch, "nn") else \
            m.nn.utils.clip_grad_value_(criterion.parameters(), 10)
        opt.step()
        log.append((ms_loss.item(), pa_loss.item()))
    # every negative far below every positive: no pair is mined
    easy = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [-1.0, -1.0]], dtype=torch.float64)
    empty = ms(F.normalize(easy), torch.tensor([0, 0, 1, 1]))
    return {"log": log, "grads": [p.grad for p in model.parameters()], "proxies": criterion.proxies,
            "proxy_grad": criterion.proxies.grad, "empty": empty, "empty_requires_grad": empty.requires_grad}


def test_multi_similarity_and_proxy_anchor():
    weights = weights_of(embedder)
    ours, _ = run_both(ms_and_proxy_anchor, weights, rtol=1e-9, atol=1e-9)  # (float64 gradients of size ~10)
    assert all(ms > 0 and pa > 0 for ms, pa in ours["log"])
    assert ours["empty"] == 0 and ours["empty_requires_grad"]
    assert np.abs(ours["proxy_grad"][5]).max() > 0  # the proxy without positives is pushed by the negatives


# ----------------------------------------------------------------------------------------------
# Pairwise ranking with MarginRankingLoss(margin=0) over pairs that include duplicated documents (their scores
# tie exactly: the hinge's corner), and CosineEmbeddingLoss given 0/1 labels, a common slip PyTorch runs
# ----------------------------------------------------------------------------------------------


def ranking_with_ties(m, weights, steps=4):
    torch, nn = m.torch, m.nn
    model = load(m, nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)), weights)
    ranking = nn.MarginRankingLoss(margin=0.0)
    cosine = nn.CosineEmbeddingLoss(margin=0.1)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(13)
    docs = torch.tensor(rng.standard_normal((6, 6)).astype(np.float32))
    docs = torch.cat([docs, docs[:2]])  # documents 6 and 7 repeat 0 and 1
    relevance = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0, 1.0, 3.0, 2.0])
    first = torch.tensor([0, 1, 2, 3, 0, 1, 6, 4])
    second = torch.tensor([6, 7, 3, 5, 2, 4, 5, 5])  # (0, 6) and (1, 7) tie
    log = []
    for step in range(steps):
        scores = model(docs).squeeze(-1)
        target = torch.sign(relevance[first] - relevance[second])
        target = torch.where(target == 0, torch.ones_like(target), target)  # ties labelled "first ahead"
        loss = ranking(scores[first], scores[second], target)
        embeddings = model[:2](docs)
        same_label = (relevance[first] == relevance[second]).long()  # 0/1, not -1/+1
        slip = cosine(embeddings[first], embeddings[second], same_label)
        optimizer.zero_grad()
        (loss + slip).backward()
        optimizer.step()
        log.append((loss.item(), slip.item(), scores.detach()))
    return {"log": log, "grads": [p.grad for p in model.parameters()]}


def test_ranking_with_tied_scores():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(6, 8), m.nn.Tanh(), m.nn.Linear(8, 1)))
    ours, _ = run_both(ranking_with_ties, weights, rtol=1e-5, atol=1e-6)
    scores = ours["log"][0][2]
    assert scores[0] == scores[6] and scores[1] == scores[7]


# ----------------------------------------------------------------------------------------------
# SoftTriple (idstcv/SoftTriple): several centres per class from an uninitialised torch.Tensor(dim, cN*K),
# a bool mask filled by slices, margins put by index with arange, a regulariser over masked centre pairs
# ----------------------------------------------------------------------------------------------


def soft_triple(m, weights, steps=4, la=20, gamma=0.1, tau=0.2, margin=0.01, dim=8, cN=5, K=3):
    torch, nn, F = m.torch, m.nn, m.F
    from math import sqrt
    Parameter, init = nn.Parameter, nn.init

    class SoftTriple(nn.Module):
        def __init__(self, la, gamma, tau, margin, dim, cN, K):
            super(SoftTriple, self).__init__()
            self.la = la
            self.gamma = 1. / gamma
            self.tau = tau
            self.margin = margin
            self.cN = cN
            self.K = K
            self.fc = Parameter(torch.Tensor(dim, cN * K))
            self.weight = torch.zeros(cN * K, cN * K, dtype=torch.bool)
            for i in range(0, cN):
                for j in range(0, K):
                    self.weight[i * K + j, i * K + j + 1:(i + 1) * K] = 1
            init.kaiming_uniform_(self.fc, a=sqrt(5))
            return

        def forward(self, input, target):
            centers = F.normalize(self.fc, p=2, dim=0)
            simInd = input.matmul(centers)
            simStruc = simInd.reshape(-1, self.cN, self.K)
            prob = F.softmax(simStruc * self.gamma, dim=2)
            simClass = torch.sum(prob * simStruc, dim=2)
            marginM = torch.zeros(simClass.shape)
            marginM[torch.arange(0, marginM.shape[0]), target] = self.margin
            lossClassify = F.cross_entropy(self.la * (simClass - marginM), target)
            if self.tau > 0 and self.K > 1:
                simCenter = centers.t().matmul(centers)
                reg = torch.sum(torch.sqrt(2.0 + 1e-5 - 2. * simCenter[self.weight])) / (self.cN * self.K * (self.K - 1.))
                return lossClassify + self.tau * reg
            else:
                return lossClassify

    model = load(m, embedder(m), weights)
    criterion = SoftTriple(la, gamma, tau, margin, dim, cN, K)
    with torch.no_grad():
        criterion.fc.copy_(torch.tensor(np.random.default_rng(17).uniform(-0.5, 0.5, (dim, cN * K)).astype(np.float32)))
    optimizer = m.optim.Adam([{"params": model.parameters(), "lr": 1e-3}, {"params": criterion.parameters(), "lr": 1e-2}],
                             eps=0.01)
    log = []
    for step in range(steps):
        x, y = face_data(m, n=10, seed=250 + step)
        output = F.normalize(model(x), p=2, dim=1)
        loss = criterion(output, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    return {"log": log, "mask": criterion.weight, "fc": criterion.fc, "grads": [p.grad for p in model.parameters()]}


def test_soft_triple():
    weights = weights_of(embedder)
    ours, _ = run_both(soft_triple, weights, rtol=1e-4, atol=1e-5)
    assert ours["mask"].sum() == 5 * 3  # each class's three centres: three pairs above the diagonal
    assert all(loss > 0 for loss in ours["log"])


# ----------------------------------------------------------------------------------------------
# Semi-hard triplet mining, TensorFlow's triplet_semihard_loss as PyTorch ports write it: masked maxima and
# minima by products with masks (rows of tied zeros: max/min along a dim give the first), repeat/reshape/t
# tiling, squared cdist with zero distances on the diagonal
# ----------------------------------------------------------------------------------------------


def semihard(m, weights, steps=4, margin=0.5):
    torch = m.torch

    def _masked_maximum(data, mask, dim=1):
        axis_minimums = torch.min(data, dim, keepdim=True)[0]
        masked_maximums = torch.max(torch.mul(data - axis_minimums, mask), dim, keepdim=True)[0] + axis_minimums
        return masked_maximums

    def _masked_minimum(data, mask, dim=1):
        axis_maximums = torch.max(data, dim, keepdim=True)[0]
        masked_minimums = torch.min(torch.mul(data - axis_maximums, mask), dim, keepdim=True)[0] + axis_maximums
        return masked_minimums

    def triplet_semihard_loss(embeddings, labels, margin=1.0):
        labels = labels.view(-1, 1)
        pdist_matrix = torch.cdist(embeddings, embeddings).pow(2)
        adjacency = labels.eq(labels.t())
        adjacency_not = ~adjacency
        batch_size = labels.size(0)
        pdist_matrix_tile = pdist_matrix.repeat(batch_size, 1)
        mask = adjacency_not.repeat(batch_size, 1) & (pdist_matrix_tile > pdist_matrix.t().reshape(-1, 1))
        mask_final = (mask.float().sum(1, keepdim=True) > 0.0).reshape(batch_size, batch_size).t()
        negatives_outside = _masked_minimum(pdist_matrix_tile, mask.float()).reshape(batch_size, batch_size).t()
        negatives_inside = _masked_maximum(pdist_matrix, adjacency_not.float()).repeat(1, batch_size)
        semi_hard_negatives = torch.where(mask_final, negatives_outside, negatives_inside)
        loss_mat = margin + pdist_matrix - semi_hard_negatives
        mask_positives = adjacency.float() - torch.eye(batch_size)
        num_positives = mask_positives.sum()
        triplet_loss = (torch.clamp(loss_mat * mask_positives, min=0.0)).sum() / num_positives
        return triplet_loss

    model = load(m, embedder(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    log = []
    for step in range(steps):
        x, y = face_data(m, n=10, seed=260 + step)
        embeddings = m.F.normalize(model(x), dim=1)
        loss = triplet_semihard_loss(embeddings, y, margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    return {"log": log, "grads": [p.grad for p in model.parameters()]}


def test_semihard_triplet_mining():
    weights = weights_of(embedder)
    ours, _ = run_both(semihard, weights, rtol=1e-4, atol=1e-5)
    assert all(loss >= 0 for loss in ours["log"]) and any(loss > 0 for loss in ours["log"])
