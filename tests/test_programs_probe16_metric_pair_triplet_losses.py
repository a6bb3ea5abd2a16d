# ruff: noqa: B007, B008, E501, F841, UP008  (the programs are kept as their authors wrote them)
"""Metric-learning and retrieval programs, run as tests/probe16_metric_common.py says. Pair and triplet losses:
pytorch-metric-learning's contrastive, triplet (smooth, swap), circle, lifted-structure, generalized
lifted-structure, NT-Xent, FastAP (a triangular histogram by ``linspace`` and ``cumsum``) and histogram
(``scatter_add_`` of floored bins, ``unique(dim=1)`` pairs indexed by a list) losses with its miners; more of its
pieces (the per-anchor, class-weighted and threshold reducers, the tuplet-margin, intra-pair-variance and
signal-to-noise-ratio contrastive losses, SelfSupervisedLoss's two views); an m-per-class batch sampler drawn by
``randperm(generator=)`` feeding Moindrot's batch-all triplet loss, batch-hard by ``torch.where`` and re-ID's
soft-margin version; open-reid's batch-hard TripletLoss as written for PyTorch 0.3/1.x (the deprecated ``addmm_(1,
-2, ...)``, ``Variable``, ``.data.new().resize_as_().fill_(1)``)."""

import warnings

import numpy as np

from .probe16_metric_common import clustered, embedder, in_float64, pml
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# pytorch-metric-learning's machinery, as its sources write it (distances, reducers, lmu, losses)
# ----------------------------------------------------------------------------------------------


def pml_losses(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    P = pml(m)
    model = load(m, embedder(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    x_np, y_np = clustered()
    x, labels = torch.tensor(x_np), torch.tensor(y_np)
    losses = {
        "contrastive": P.ContrastiveLoss(pos_margin=0.1, neg_margin=2.0),
        "contrastive_cos": P.ContrastiveLoss(pos_margin=1, neg_margin=0, distance=P.CosineSimilarity()),
        "triplet": P.TripletMarginLoss(margin=0.5),
        "triplet_smooth_swap": P.TripletMarginLoss(margin=0.2, swap=True, smooth_loss=True,
                                                   distance=P.CosineSimilarity()),
        "circle": P.CircleLoss(m=0.25, gamma=16),
        "lifted": P.LiftedStructureLoss(neg_margin=1.5),
        "generalized_lifted": P.GeneralizedLiftedStructureLoss(neg_margin=1.5, distance=P.LpDistance(
            normalize_embeddings=False)),
        "ntxent": P.NTXentLoss(temperature=0.2),
        "ntxent_lp": P.NTXentLoss(temperature=0.5, distance=P.LpDistance()),
        "fastap": P.FastAPLoss(num_bins=6),
        "histogram": P.HistogramLoss(n_bins=8),
    }
    batch_hard = P.BatchHardMiner()
    semihard = P.TripletMarginMiner(margin=0.4, type_of_triplets="semihard")
    hard_cos = P.TripletMarginMiner(margin=0.1, type_of_triplets="hard", distance=P.CosineSimilarity())
    history, mined = [], []
    for step in range(steps):
        optimizer.zero_grad()
        embeddings = model(x)
        per_loss = {name: fn(embeddings, labels) for name, fn in losses.items()}
        hard_triplets = batch_hard(embeddings, labels)
        semihard_triplets = semihard(embeddings, labels)
        hard_cos_triplets = hard_cos(embeddings, labels)
        per_loss["triplet_batch_hard"] = losses["triplet"](embeddings, labels, hard_triplets)
        per_loss["circle_semihard"] = losses["circle"](embeddings, labels, semihard_triplets)
        per_loss["fastap_weighted"] = losses["fastap"](embeddings, labels, hard_cos_triplets)
        mined.append([t.tolist() for t in hard_triplets + semihard_triplets + hard_cos_triplets])
        loss = sum(per_loss.values())
        loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in per_loss.items()})
    pairs = P.get_all_pairs_indices(labels)
    triplets = P.get_all_triplets_indices(labels)
    return {"history": history, "mined": mined, "params": [p.detach() for p in model.parameters()],
            "grads": [p.grad for p in model.parameters()], "pairs": pairs, "triplets": triplets,
            "lse": P.logsumexp(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
                               keep_mask=torch.tensor([[True, False, True], [False, False, False]]))}


def test_pytorch_metric_learning_losses_and_miners():
    weights = weights_of(embedder)
    ours, _ = run_both(pml_losses, weights, rtol=2e-4, atol=1e-5)
    _, labels = clustered()
    n = len(labels)
    same = labels[:, None] == labels[None]
    a1, p, a2, nn_ = ours["pairs"]
    assert len(a1) == (same.sum() - n) and len(a2) == (~same).sum()
    assert all(same[i, j] and i != j for i, j in zip(a1, p))
    a, pp, ng = ours["triplets"]
    assert len(a) == sum((same[i].sum() - 1) * (~same[i]).sum() for i in range(n))
    assert all(same[i, j] and not same[i, k] and i != j for i, j, k in zip(a, pp, ng))
    np.testing.assert_allclose(ours["lse"], [[np.log(np.exp(1) + np.exp(3) + 1)], [0.0]], rtol=1e-6)  # add_one: a zero column
    for record in ours["history"]:
        assert all(np.isfinite(v) for v in record.values())
        assert record["contrastive"] > 0 and record["fastap"] > 0 and record["histogram"] >= 0


# ----------------------------------------------------------------------------------------------
# An m-per-class batch sampler drawn by ``randperm``/``randint`` with a generator (as a ``batch_sampler``) feeding
# Moindrot's batch-all triplet loss (NegatioN/OnlineMiningTripletLoss: a 3-D validity mask from ``eye`` and label
# equality, the fraction of positive triplets), batch-hard by ``torch.where`` over -inf/+inf fills, and re-ID's
# soft-margin version (``dist_an.new().resize_as_(dist_an).fill_(1)`` targets for ``nn.SoftMarginLoss``)
# ----------------------------------------------------------------------------------------------


def m_per_class_training(m, weights, epochs=2, margin=0.3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class MPerClassSampler(m.data.Sampler):
        def __init__(self, labels, m, batch_size, generator=None):
            self.labels = torch.as_tensor(labels)
            self.m = m
            self.batch_size = batch_size
            self.classes = torch.unique(self.labels)
            self.generator = generator
            self.num_batches = len(self.labels) // batch_size

        def __iter__(self):
            for _ in range(self.num_batches):
                perm = torch.randperm(len(self.classes), generator=self.generator)
                chosen = self.classes[perm[: self.batch_size // self.m]]
                batch = []
                for c in chosen:
                    idx = torch.nonzero(self.labels == c, as_tuple=True)[0]
                    if len(idx) >= self.m:
                        pick = idx[torch.randperm(len(idx), generator=self.generator)[: self.m]]
                    else:  # too few: with replacement
                        pick = idx[torch.randint(len(idx), (self.m,), generator=self.generator)]
                    batch.extend(pick.tolist())
                yield batch

        def __len__(self):
            return self.num_batches

    def _pairwise_distances(embeddings, squared=False):
        dot_product = torch.matmul(embeddings, embeddings.t())
        square_norm = torch.diag(dot_product)
        distances = square_norm.unsqueeze(0) - 2.0 * dot_product + square_norm.unsqueeze(1)
        distances[distances < 0] = 0
        if not squared:
            mask = distances.eq(0).float()
            distances = distances + mask * 1e-16
            distances = (1.0 - mask) * torch.sqrt(distances)
        return distances

    def _get_triplet_mask(labels):
        indices_equal = torch.eye(labels.size(0), device=labels.device).bool()
        indices_not_equal = ~indices_equal
        i_not_equal_j = indices_not_equal.unsqueeze(2)
        i_not_equal_k = indices_not_equal.unsqueeze(1)
        j_not_equal_k = indices_not_equal.unsqueeze(0)
        distinct_indices = (i_not_equal_j & i_not_equal_k) & j_not_equal_k
        label_equal = labels.unsqueeze(0) == labels.unsqueeze(1)
        i_equal_j = label_equal.unsqueeze(2)
        i_equal_k = label_equal.unsqueeze(1)
        valid_labels = ~i_equal_k & i_equal_j
        return valid_labels & distinct_indices

    def batch_all_triplet_loss(labels, embeddings, margin, squared=False):
        pairwise_dist = _pairwise_distances(embeddings, squared=squared)
        anchor_positive_dist = pairwise_dist.unsqueeze(2)
        anchor_negative_dist = pairwise_dist.unsqueeze(1)
        triplet_loss = anchor_positive_dist - anchor_negative_dist + margin
        mask = _get_triplet_mask(labels)
        triplet_loss = mask.float() * triplet_loss
        triplet_loss = F.relu(triplet_loss)
        valid_triplets = triplet_loss[triplet_loss > 1e-16]
        num_positive_triplets = valid_triplets.size(0)
        num_valid_triplets = mask.sum()
        fraction_positive_triplets = num_positive_triplets / (num_valid_triplets.float() + 1e-16)
        triplet_loss = triplet_loss.sum() / (num_positive_triplets + 1e-16)
        return triplet_loss, fraction_positive_triplets

    def batch_hard_where(dist, labels, margin):
        same = labels.unsqueeze(0).eq(labels.unsqueeze(1))
        eye = torch.eye(len(labels), dtype=torch.bool)
        pos_mask = same & ~eye
        neg_mask = same.logical_not()
        hardest_pos = torch.where(pos_mask, dist, torch.full_like(dist, float("-inf"))).max(dim=1).values
        hardest_neg = torch.where(neg_mask, dist, torch.tensor(float("inf"))).min(dim=1)[0]
        return F.relu(hardest_pos - hardest_neg + margin).mean(), hardest_pos, hardest_neg

    x_np, y_np = clustered(n_classes=6, per_class=5, spread=1.0, seed=5)
    y_np = y_np.copy()
    y_np[y_np == 5] = 4
    y_np[-1] = 5  # a class of one: drawn with replacement
    dataset = m.data.TensorDataset(torch.tensor(x_np), torch.tensor(y_np))
    generator = torch.Generator().manual_seed(0)
    sampler = MPerClassSampler(y_np, m=3, batch_size=9, generator=generator)
    loader = m.data.DataLoader(dataset, batch_sampler=sampler)
    model = load(m, embedder(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    ranking_loss = nn.SoftMarginLoss()
    log, batches = [], []
    for epoch in range(epochs):
        for x, labels in loader:
            batches.append(labels)
            optimizer.zero_grad()
            emb = model(x)
            loss_all, fraction = batch_all_triplet_loss(labels, emb, margin)
            loss_all_sq, _ = batch_all_triplet_loss(labels, emb, margin, squared=True)
            dist = _pairwise_distances(emb)
            loss_hard, dist_ap, dist_an = batch_hard_where(dist, labels, margin)
            y = dist_an.new().resize_as_(dist_an).fill_(1)
            loss_soft = ranking_loss(dist_an - dist_ap, y)
            loss = loss_all + 0.5 * loss_all_sq + loss_hard + loss_soft
            loss.backward()
            optimizer.step()
            log.append([loss_all.item(), fraction.item(), loss_all_sq.item(), loss_hard.item(), loss_soft.item()])
    return {"log": log, "batches": batches, "params": [p.detach() for p in model.parameters()],
            "grads": [p.grad for p in model.parameters()]}


def test_m_per_class_sampler_and_batch_all_triplets():
    weights = weights_of(embedder)
    ours, _ = run_both(m_per_class_training, weights, rtol=1e-4, atol=1e-6)
    assert len(ours["batches"]) == 2 * (30 // 9)
    for labels in ours["batches"]:
        values, counts = np.unique(labels, return_counts=True)
        assert len(labels) == 9 and (counts % 3 == 0).all()
    assert all(0 < fraction <= 1 for _, fraction, *_ in ours["log"])


def test_batch_all_triplet_mask_against_loops():
    torch = OURS.torch
    labels = np.array([0, 1, 0, 2, 1, 0])
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)

    def prog(m):
        torch = m.torch
        t = torch.tensor(labels)
        indices_not_equal = ~torch.eye(6).bool()
        distinct = (indices_not_equal.unsqueeze(2) & indices_not_equal.unsqueeze(1)) & indices_not_equal.unsqueeze(0)
        label_equal = t.unsqueeze(0) == t.unsqueeze(1)
        return (~label_equal.unsqueeze(1) & label_equal.unsqueeze(2)) & distinct

    mask, _ = run_both(prog)
    expected = np.array([[[i != j and labels[i] == labels[j] and labels[i] != labels[k] for k in range(6)]
                          for j in range(6)] for i in range(6)])
    np.testing.assert_array_equal(mask, expected)


# ----------------------------------------------------------------------------------------------
# More of pml's pieces: the per-anchor reducer (a finfo.max-filled table written by index, averaged per row),
# class-weighted and threshold (low and high) reducers, the tuplet-margin, intra-pair-variance and
# signal-to-noise-ratio contrastive losses (variances of broadcast differences), and SelfSupervisedLoss's two
# views (symmetric, or a reference set with its own labels)
# ----------------------------------------------------------------------------------------------


def pml_reducers_and_more(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    P = pml(m)

    def aggregation_func(x, num_per_row):
        zero_denom = num_per_row == 0
        x = torch.sum(x, dim=1) / num_per_row
        x[zero_denom] = 0
        return x

    def per_anchor(losses, loss_indices, embeddings):
        batch_size = embeddings.shape[0]
        device, dtype = losses.device, losses.dtype
        new_array = torch.zeros(batch_size, batch_size, device=device, dtype=dtype)
        pos_inf = P.pos_inf(dtype)
        new_array += pos_inf
        anchors, others = loss_indices
        new_array[anchors, others] = losses
        pos_inf_mask = new_array == pos_inf
        num_inf = torch.sum(pos_inf_mask, dim=1)
        new_array[pos_inf_mask] = 0
        num_per_row = batch_size - num_inf
        output = aggregation_func(new_array, num_per_row)
        return torch.mean(output)

    def class_weighted(losses, indices, labels, class_weights):
        class_weights = class_weights.to(losses.device, dtype=losses.dtype)
        return torch.mean(losses * class_weights[labels[indices]])

    def threshold(losses, low=None, high=None):
        if low is not None:
            losses = losses[losses > low]
        if high is not None:
            losses = losses[losses < high]
        return torch.mean(losses) if len(losses) >= 1 else torch.sum(losses * 0)

    class SNRDistance(P.BaseDistance):
        def compute_mat(self, query_emb, ref_emb):
            anchor_variances = torch.var(query_emb, dim=1)
            pairwise_diffs = query_emb.unsqueeze(1) - ref_emb
            pairwise_variances = torch.var(pairwise_diffs, dim=2)
            return pairwise_variances / (anchor_variances.unsqueeze(1))

    def tuplet_margin(embeddings, labels, margin=np.radians(5.73), scale=16.0):
        a1, p, a2, _ = P.get_all_pairs_indices(labels)
        mat = P.CosineSimilarity()(embeddings)
        pos_pairs, neg_pairs = mat[a1, p], mat[a2, _]
        pos_angles = torch.acos(pos_pairs.clamp(-1 + 1e-6, 1 - 1e-6))
        pos_pairs = torch.cos(pos_angles - margin)
        pos_pairs = pos_pairs.unsqueeze(1)
        neg_pairs = neg_pairs.repeat(pos_pairs.size(0), 1)
        inside_exp = scale * (neg_pairs - pos_pairs)
        keep_mask = a2.unsqueeze(0) == a1.unsqueeze(1)
        return P.logsumexp(inside_exp, keep_mask=keep_mask, add_one=True, dim=1), (a1, p)

    def intra_pair_variance(embeddings, labels, pos_eps=0.01, neg_eps=0.01):
        a1, p, a2, n = P.get_all_pairs_indices(labels)
        mat = P.CosineSimilarity()(embeddings)
        pos_pairs, neg_pairs = mat[a1, p], mat[a2, n]
        mean_pos_sim = torch.mean(pos_pairs)
        pos_var = (1 - pos_eps) * mean_pos_sim - pos_pairs
        pos_loss = F.relu(pos_var) ** 2
        mean_neg_sim = torch.mean(neg_pairs)
        neg_var = neg_pairs - (1 + neg_eps) * mean_neg_sim
        neg_loss = F.relu(neg_var) ** 2
        return threshold(pos_loss, low=0) + threshold(neg_loss, low=0)

    class SelfSupervisedLoss(nn.Module):
        def __init__(self, loss, symmetric=True):
            super().__init__()
            self.loss = loss
            self.symmetric = symmetric

        def forward(self, embeddings, ref_emb):
            labels = torch.arange(embeddings.shape[0])
            if self.symmetric:
                embeddings = torch.cat([embeddings, ref_emb], dim=0)
                labels = torch.cat([labels, labels], dim=0)
                return self.loss(embeddings, labels)
            return self.loss(embeddings=embeddings, labels=labels, ref_emb=ref_emb, ref_labels=labels.clone())

    model = load(m, embedder(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    x_np, y_np = clustered(n_classes=4, per_class=4, spread=0.9, seed=6)
    x, labels = torch.tensor(x_np), torch.tensor(y_np)
    rng = np.random.default_rng(0)
    views = [torch.tensor((x_np + 0.1 * rng.standard_normal(x_np.shape)).astype(np.float32)) for _ in range(2)]
    snr = P.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9, distance=SNRDistance(normalize_embeddings=False))
    ntxent_views = SelfSupervisedLoss(P.NTXentLoss(temperature=0.3))
    triplet_views = SelfSupervisedLoss(P.TripletMarginLoss(margin=0.2), symmetric=False)
    class_weights = torch.tensor([1.0, 2.0, 0.5, 1.5])
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        emb = model(x)
        contrastive_losses = P.ContrastiveLoss(pos_margin=0.2, neg_margin=1.0).compute_loss(emb, labels, None, None, None)
        tuplet, tuplet_idx = tuplet_margin(emb, labels)
        losses = {
            "per_anchor_pos": per_anchor(contrastive_losses["pos_loss"]["losses"], contrastive_losses["pos_loss"]["indices"], emb),
            "per_anchor_neg": per_anchor(contrastive_losses["neg_loss"]["losses"], contrastive_losses["neg_loss"]["indices"], emb),
            "class_weighted": class_weighted(contrastive_losses["neg_loss"]["losses"], contrastive_losses["neg_loss"]["indices"][0], labels, class_weights),
            "threshold_band": threshold(contrastive_losses["neg_loss"]["losses"], low=0.05, high=0.6),
            "tuplet": per_anchor(tuplet.squeeze(1), tuplet_idx, emb),
            "intra_pair_variance": intra_pair_variance(emb, labels),
            "snr": snr(emb, labels),
            "views_ntxent": ntxent_views(model(views[0]), model(views[1])),
            "views_triplet": triplet_views(model(views[0]), model(views[1])),
        }
        sum(losses.values()).backward()
        optimizer.step()
        log.append({k: v.item() for k, v in losses.items()})
    return {"log": log, "params": [p.detach() for p in model.parameters()], "snr_mat": SNRDistance(normalize_embeddings=False)(emb.detach())}


def test_pml_reducers_tuplet_snr_and_self_supervised_wrapper():
    weights = weights_of(embedder)
    ours, _ = run_both(pml_reducers_and_more, weights, rtol=1e-4, atol=1e-6)
    snr = ours["snr_mat"].astype(np.float64)
    assert np.allclose(np.diag(snr), 0, atol=1e-6) and (snr >= 0).all()
    assert all(np.isfinite(v) for record in ours["log"] for v in record.values())


# ----------------------------------------------------------------------------------------------
# open-reid's batch-hard TripletLoss as written for PyTorch 0.3/1.x: distances by the deprecated
# ``dist.addmm_(1, -2, inputs, inputs.t())`` (beta and alpha first), ``Variable``, targets by
# ``.data.new().resize_as_().fill_(1)`` for MarginRankingLoss, and precision from ``.data`` comparisons
# ----------------------------------------------------------------------------------------------


def open_reid_triplet(m, weights, steps=4, margin=0.5):
    torch, nn, optim = m.torch, m.nn, m.optim
    Variable = torch.autograd.Variable

    class TripletLoss(nn.Module):
        def __init__(self, margin=0):
            super(TripletLoss, self).__init__()
            self.margin = margin
            self.ranking_loss = nn.MarginRankingLoss(margin=margin)

        def forward(self, inputs, targets):
            n = inputs.size(0)
            # Compute pairwise distance, replace by the official when merged
            dist = torch.pow(inputs, 2).sum(dim=1, keepdim=True).expand(n, n)
            dist = dist + dist.t()
            dist.addmm_(1, -2, inputs, inputs.t())
            dist = dist.clamp(min=1e-12).sqrt()  # for numerical stability
            # For each anchor, find the hardest positive and negative
            mask = targets.expand(n, n).eq(targets.expand(n, n).t())
            dist_ap, dist_an = [], []
            for i in range(n):
                dist_ap.append(dist[i][mask[i]].max().unsqueeze(0))
                dist_an.append(dist[i][mask[i] == 0].min().unsqueeze(0))
            dist_ap = torch.cat(dist_ap)
            dist_an = torch.cat(dist_an)
            # Compute ranking hinge loss
            y = dist_an.data.new()
            y.resize_as_(dist_an.data)
            y.fill_(1)
            y = Variable(y)
            loss = self.ranking_loss(dist_an, dist_ap, y)
            prec = (dist_an.data > dist_ap.data).sum() * 1. / y.size(0)
            return loss, prec

    model = load(m, embedder(m), weights)
    criterion = TripletLoss(margin=margin)
    optimizer = optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    x_np, y_np = clustered(n_classes=4, per_class=4, spread=1.2, seed=12)
    inputs, targets = Variable(torch.tensor(x_np, dtype=torch.get_default_dtype())), Variable(torch.tensor(y_np))
    log = []
    for step in range(steps):
        outputs = model(inputs)
        loss, prec = criterion(outputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append([loss.item(), float(prec)])
    return {"log": log, "params": [p.detach() for p in model.parameters()]}


def test_open_reid_triplet_loss_with_pytorch1_addmm():
    weights = weights_of(embedder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This overload of addmm_? is deprecated")
        # (float64: distances do not move with the last bias, whose gradient is rounding noise that Adam scales)
        ours, _ = run_both(in_float64(open_reid_triplet), weights, rtol=1e-8, atol=1e-10)
    assert ours["log"][-1][0] < ours["log"][0][0] and ours["params"][0].dtype == np.float64
