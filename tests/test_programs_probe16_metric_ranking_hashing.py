# ruff: noqa: B007, E501, E731, UP008  (the programs are kept as their authors wrote them)
"""Metric-learning and retrieval programs, run as tests/probe16_metric_common.py says. Ranking and hashing: pml's
random triplets per anchor and its distance-weighted miner (``multinomial``), MarginLoss with a learnt beta per
class, PNP, the dynamic soft margin (a running CDF by ``scatter_add``, ``fill_diagonal_(inf)``), ranked-list loss and
Smooth-AP (sigmoid ranks over 3-D and 4-D differences, ``bmm``); deep supervised hashing (DPSH: a code table written
per sample index, the nn triplet losses with ``swap=True`` and custom distance functions) evaluated by Hamming
ranking against NumPy."""

import numpy as np
import pytest

from .probe16_metric_common import clustered, embedder, pml
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Sampled triplets and rank-based losses: pml's random triplets per anchor (``randint`` over an ``expand``ed,
# ``~eye``-masked index table) and its distance-weighted miner (``multinomial`` over the inverse density of
# distances on the sphere), MarginLoss with a learnt beta per class (a divisor reduction), PNP (all variants),
# the dynamic soft margin (a running CDF by ``scatter_add`` of ``frac`` weights, ``fill_diagonal_(inf)``),
# ranked-list loss (boolean products as masks) and Smooth-AP (Brown et al.: sigmoid ranks over 3-D and
# 4-D differences, ``bmm``)
# ----------------------------------------------------------------------------------------------


def ranking_losses_model(m, num_classes=4):
    torch, nn = m.torch, m.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = embedder(m)
            self.beta = nn.Parameter(torch.ones(num_classes) * torch.tensor([1.2]))  # MarginLoss(learn_beta=True)

    return Net()


def ranking_losses(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    P = pml(m)
    torch.manual_seed(0)

    def get_random_triplet_indices(labels, ref_labels=None, t_per_anchor=None, weights=None):
        a_idx, p_idx, n_idx = [], [], []
        labels_device = labels.device
        ref_labels = labels if ref_labels is None else ref_labels
        unique_labels = torch.unique(labels)
        for label in unique_labels:
            # Get indices of positive samples for this label.
            p_inds = torch.where(ref_labels == label)[0]
            if ref_labels is labels:
                a_inds = p_inds
            else:
                a_inds = torch.where(labels == label)[0]
            n_inds = torch.where(ref_labels != label)[0]
            n_a = len(a_inds)
            n_p = len(p_inds)
            min_required_p = 2 if ref_labels is labels else 1
            if (n_p < min_required_p) or (len(n_inds) < 1):
                continue
            k = n_p if t_per_anchor is None else t_per_anchor
            num_triplets = n_a * k
            p_inds_ = p_inds.expand((n_a, n_p))
            # Remove anchors from list of possible positive samples.
            if ref_labels is labels:
                p_inds_ = p_inds_[~torch.eye(n_a).bool()].view((n_a, n_a - 1))
            # Get indices of indices of k random positive samples for each anchor.
            p_ = torch.randint(0, p_inds_.shape[1], (num_triplets,))
            # Get indices of indices of corresponding anchors.
            a_ = torch.arange(n_a).view(-1, 1).repeat(1, k).view(num_triplets)
            p = p_inds_[a_, p_]
            a = a_inds[a_]
            # Get indices of negative samples for this label.
            if weights is not None:
                w = weights[:, n_inds][a]
                non_zero_rows = torch.where(torch.sum(w, dim=1) > 0)[0]
                if len(non_zero_rows) == 0:
                    continue
                w = w[non_zero_rows]
                a = a[non_zero_rows]
                p = p[non_zero_rows]
                # Sample the negative indices according to the weights.
                if w.dtype == torch.float16:
                    w = w.type(torch.float32)
                n_ = torch.multinomial(w, 1, replacement=True).flatten()
            else:
                # Sample the negative indices uniformly.
                n_ = torch.randint(0, len(n_inds), (num_triplets,))
            n = n_inds[n_]
            a_idx.append(a)
            p_idx.append(p)
            n_idx.append(n)
        if len(a_idx) > 0:
            a_idx = torch.cat(a_idx).to(device=labels_device, dtype=torch.long)
            p_idx = torch.cat(p_idx).to(device=labels_device, dtype=torch.long)
            n_idx = torch.cat(n_idx).to(device=labels_device, dtype=torch.long)
            assert len(a_idx) == len(p_idx) == len(n_idx)
            return a_idx, p_idx, n_idx
        else:
            empty = torch.tensor([], device=labels_device, dtype=torch.long)
            return empty.clone(), empty.clone(), empty.clone()

    def distance_weighted_mine(embeddings, labels, cutoff=0.5, nonzero_loss_cutoff=1.4):
        distance = P.LpDistance()
        dtype = embeddings.dtype
        d = float(embeddings.size(1))
        mat = distance(embeddings, embeddings)
        # Cut off to avoid high variance.
        mat = torch.clamp(mat, min=cutoff)
        # See the first equation from Section 4 of the paper
        log_weights = (2.0 - d) * torch.log(mat) - ((d - 3) / 2) * torch.log(1.0 - 0.25 * (mat**2.0))
        inf_or_nan = torch.isinf(log_weights) | torch.isnan(log_weights)
        # Sample only negative examples by setting weights of the same-class examples to 0.
        mask = torch.ones_like(log_weights)
        same_class = labels.unsqueeze(1) == labels.unsqueeze(0)
        mask[same_class] = 0
        log_weights = log_weights * mask
        # Subtract max(log(distance)) for stability.
        weights = torch.exp(log_weights - torch.max(log_weights[~inf_or_nan]))
        weights = weights * mask * (P.to_dtype(mat < nonzero_loss_cutoff, dtype=dtype))
        weights[inf_or_nan] = 0
        weights = weights / torch.sum(weights, dim=1, keepdim=True)
        return get_random_triplet_indices(labels, ref_labels=labels, weights=weights)

    def margin_loss(embeddings, labels, beta_param, indices_tuple, margin=0.2, nu=0.01):
        anchor_idx, positive_idx, negative_idx = indices_tuple
        beta = beta_param[labels[anchor_idx]]
        beta = beta.to(device=embeddings.device, dtype=embeddings.dtype)
        mat = P.LpDistance()(embeddings)
        d_ap = mat[anchor_idx, positive_idx]
        d_an = mat[anchor_idx, negative_idx]
        pos_loss = F.relu(d_ap - beta + margin)
        neg_loss = F.relu(beta - d_an + margin)
        num_pos_pairs = torch.sum(pos_loss > 0.0)
        num_neg_pairs = torch.sum(neg_loss > 0.0)
        divisor = num_pos_pairs + num_neg_pairs
        margin_loss = pos_loss + neg_loss
        # DivisorReducer: the sums over the divisor
        return torch.sum(margin_loss) / divisor + torch.sum(beta * nu) / divisor

    def sigmoid(tensor, temp=1.0):
        """temperature controlled sigmoid"""
        exponent = -tensor / temp
        # clamp the input tensor for stability
        exponent = torch.clamp(exponent, min=-50, max=50)
        y = 1.0 / (1.0 + torch.exp(exponent))
        return y

    def pnp_loss(embeddings, labels, variant, b=2, alpha=1, anneal=0.01):
        dtype, device = embeddings.dtype, embeddings.device
        N = labels.size(0)
        a1_idx, p_idx, a2_idx, n_idx = P.get_all_pairs_indices(labels)
        I_pos = torch.zeros(N, N, dtype=dtype, device=device)
        I_neg = torch.zeros(N, N, dtype=dtype, device=device)
        I_pos[a1_idx, p_idx] = 1
        I_pos[a1_idx, a1_idx] = 1
        I_neg[a2_idx, n_idx] = 1
        N_pos = torch.sum(I_pos, dim=1)
        safe_N = N_pos > 0
        sim_all = P.CosineSimilarity()(embeddings)
        mask = I_neg.unsqueeze(dim=0).repeat(N, 1, 1)
        sim_all_repeat = sim_all.unsqueeze(dim=1).repeat(1, N, 1)
        sim_diff = sim_all_repeat - sim_all_repeat.permute(0, 2, 1)
        sim_sg = sigmoid(sim_diff, temp=anneal) * mask
        sim_all_rk = torch.sum(sim_sg, dim=-1)
        if variant == "Ds":
            sim_all_rk = torch.log(1 + sim_all_rk)
        elif variant == "Dq":
            sim_all_rk = 1 / (1 + sim_all_rk) ** (alpha)
        elif variant == "Iu":
            sim_all_rk = (1 + sim_all_rk) * torch.log(1 + sim_all_rk)
        elif variant == "Ib":
            sim_all_rk = 1 / b**2 * (b * sim_all_rk - torch.log(1 + b * sim_all_rk))
        loss = torch.sum(sim_all_rk * I_pos, dim=-1)[safe_N] / N_pos[safe_N].reshape(-1)
        loss = torch.sum(loss) / torch.sum(safe_N)
        if variant == "Dq":
            loss = 1 - loss
        return loss

    class DynamicSoftMargin:
        def __init__(self, min_val=-2.0, num_bins=10, momentum=0.01):
            self.min_val = min_val
            self.num_bins = int(num_bins)
            self.delta = 2 * abs(min_val) / num_bins
            self.momentum = momentum
            self.hist_ = torch.zeros((num_bins,))

        def __call__(self, embeddings, labels=None):
            mat = P.LpDistance()(embeddings)
            if labels is None:  # pairs (2i, 2i + 1): anchors against positives
                mat = P.LpDistance()(embeddings[0::2], embeddings[1::2])
                r, c = mat.size()
                d_pos = torch.zeros(max(r, c))
                d_pos[: min(r, c)] = mat.diag()
                mat = mat.clone()  # (pml fills cdist's saved output in place: PyTorch's backward refuses that)
                mat.fill_diagonal_(np.inf)
                min_a, min_p = torch.zeros(max(r, c)), torch.zeros(max(r, c))
                min_a[:c], _ = torch.min(mat, dim=0)
                min_p[:r], _ = torch.min(mat, dim=1)
                loss = d_pos - torch.min(min_a, min_p)
            else:
                anchor_idx, positive_idx, negative_idx = P.get_all_triplets_indices(labels)
                loss = mat[anchor_idx, positive_idx] - mat[anchor_idx, negative_idx]
            self.update_histogram(loss.detach())  # (pml's keeps the batch's graph in hist_: a second step's backward
            return self.weigh_loss(loss).mean()   # then fails on PyTorch as here, through the freed graph)

        def update_histogram(self, data):
            idx, alpha = torch.floor((data - self.min_val) / self.delta).to(dtype=torch.long), torch.frac(
                (data - self.min_val) / self.delta)
            momentum = self.momentum if self.hist_.sum() != 0 else 1.0
            self.hist_ = torch.scatter_add((1.0 - momentum) * self.hist_, 0, idx, momentum * (1 - alpha))
            self.hist_ = torch.scatter_add(self.hist_, 0, idx + 1, momentum * alpha)
            self.hist_ /= self.hist_.sum()

        def weigh_loss(self, data):
            CDF = torch.cumsum(self.hist_, 0)
            idx = torch.floor((data - self.min_val) / self.delta).to(dtype=torch.long)
            return CDF[idx] * data

    def ranked_list_loss(embeddings, labels, margin=0.4, Tn=1.0, imbalance=0.5, Tp=0.5):
        alpha = 1 + margin / 2
        mat = P.LpDistance()(embeddings, embeddings)
        mat = mat - mat * torch.eye(len(mat), device=embeddings.device)
        y = labels.unsqueeze(1) == labels.unsqueeze(0)
        P_star = torch.zeros_like(mat)
        N_star = torch.zeros_like(mat)
        w_p = torch.zeros_like(mat)
        w_n = torch.zeros_like(mat)
        N_star[(~y) * (mat < alpha)] = mat[(~y) * (mat < alpha)]
        y.fill_diagonal_(False)
        P_star[y * (mat > (alpha - margin))] = mat[y * (mat > (alpha - margin))]
        w_p[P_star > 0] = torch.exp(Tp * (P_star[P_star > 0] - (alpha - margin)))
        w_n[N_star > 0] = torch.exp(Tn * (alpha - N_star[N_star > 0]))
        loss_P = torch.sum(w_p * (P_star - (alpha - margin)), dim=1) / torch.sum(w_p + 1e-5, dim=1)
        loss_N = torch.sum(w_n * (alpha - N_star), dim=1) / torch.sum(w_n + 1e-5, dim=1)
        loss_RLL = (1 - imbalance) * loss_P + imbalance * loss_N
        return loss_RLL.mean()

    def compute_aff(x):
        """computes the affinity matrix between an input vector and itself"""
        return torch.mm(x, x.t())

    class SmoothAP(nn.Module):
        def __init__(self, anneal, batch_size, num_id, feat_dims):
            super(SmoothAP, self).__init__()
            assert (batch_size % num_id == 0)
            self.anneal = anneal
            self.batch_size = batch_size
            self.num_id = num_id
            self.feat_dims = feat_dims

        def forward(self, preds):
            # ------ differentiable ranking of all retrieval set ------
            # compute the mask which ignores the relevance score of the query to itself
            mask = 1.0 - torch.eye(self.batch_size)
            mask = mask.unsqueeze(dim=0).repeat(self.batch_size, 1, 1)
            # compute the relevance scores via cosine similarity of the CNN-produced embedding vectors
            sim_all = compute_aff(preds)
            sim_all_repeat = sim_all.unsqueeze(dim=1).repeat(1, self.batch_size, 1)
            # compute the difference matrix
            sim_diff = sim_all_repeat - sim_all_repeat.permute(0, 2, 1)
            # pass through the sigmoid
            sim_sg = sigmoid(sim_diff, temp=self.anneal) * mask
            # compute the rankings
            sim_all_rk = torch.sum(sim_sg, dim=-1) + 1
            # ------ differentiable ranking of only positive set in retrieval set ------
            # compute the mask which only gives non-zero weights to the positive set
            xs = preds.view(self.num_id, int(self.batch_size / self.num_id), self.feat_dims)
            pos_mask = 1.0 - torch.eye(int(self.batch_size / self.num_id))
            pos_mask = pos_mask.unsqueeze(dim=0).unsqueeze(dim=0).repeat(self.num_id, int(self.batch_size / self.num_id), 1, 1)
            # compute the relevance scores
            sim_pos = torch.bmm(xs, xs.permute(0, 2, 1))
            sim_pos_repeat = sim_pos.unsqueeze(dim=2).repeat(1, 1, int(self.batch_size / self.num_id), 1)
            # compute the difference matrix
            sim_pos_diff = sim_pos_repeat - sim_pos_repeat.permute(0, 1, 3, 2)
            # pass through the sigmoid
            sim_pos_sg = sigmoid(sim_pos_diff, temp=self.anneal) * pos_mask
            # compute the rankings of the positive set
            sim_pos_rk = torch.sum(sim_pos_sg, dim=-1) + 1
            # sum the values of the Smooth-AP for all instances in the mini-batch
            ap = torch.zeros(1)
            group = int(self.batch_size / self.num_id)
            for ind in range(self.num_id):
                pos_divide = torch.sum(sim_pos_rk[ind] / (sim_all_rk[(ind * group):((ind + 1) * group), (ind * group):((ind + 1) * group)]))
                ap = ap + ((pos_divide / group) / self.batch_size)
            return (1 - ap)

    net = load(m, ranking_losses_model(m), weights)
    optimizer = optim.Adam(net.parameters(), lr=0.01)
    x_np, y_np = clustered(n_classes=4, per_class=4, spread=1.0, seed=2)
    x, labels = torch.tensor(x_np), torch.tensor(y_np)
    triplet = P.TripletMarginLoss(margin=0.3)
    smooth_ap = SmoothAP(anneal=0.05, batch_size=16, num_id=4, feat_dims=8)
    dsm_labels, dsm_pairs = DynamicSoftMargin(), DynamicSoftMargin(num_bins=8)
    history, sampled = [], []
    for step in range(steps):
        optimizer.zero_grad()
        emb = net.backbone(x)
        random_triplets = get_random_triplet_indices(labels, t_per_anchor=2)
        weighted_triplets = distance_weighted_mine(emb.detach(), labels)
        sampled.append([t.tolist() for t in random_triplets + weighted_triplets])
        losses = {
            "triplet_random": triplet(emb, labels, random_triplets),
            "margin_weighted": margin_loss(emb, labels, net.beta, weighted_triplets),
            **{f"pnp_{v}": pnp_loss(emb, labels, v) for v in ["Ds", "Dq", "Iu", "Ib", "O"]},
            "dsm_labels": dsm_labels(emb, labels), "dsm_pairs": dsm_pairs(emb),
            "ranked_list": ranked_list_loss(emb, labels),
            "smooth_ap": smooth_ap(F.normalize(emb, dim=1)).squeeze(),
        }
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    return {"history": history, "sampled": sampled, "params": dict(net.named_parameters()),
            "hist": [dsm_labels.hist_, dsm_pairs.hist_], "after": torch.rand(3)}


def test_sampled_triplets_and_rank_based_losses():
    weights = weights_of(ranking_losses_model)
    ours, _ = run_both(ranking_losses, weights, rtol=1e-4, atol=1e-5)
    _, labels = clustered(n_classes=4, per_class=4, spread=1.0, seed=2)
    for a, p, n, wa, wp, wn in ours["sampled"]:
        assert len(a) == 16 * 2
        assert all(labels[i] == labels[j] and i != j and labels[i] != labels[k] for i, j, k in zip(a, p, n))
        assert all(labels[i] == labels[j] and i != j and labels[i] != labels[k] for i, j, k in zip(wa, wp, wn))
    for hist in ours["hist"]:
        assert hist.sum() == pytest.approx(1, rel=1e-5) and (hist >= 0).all()
    for record in ours["history"]:
        assert 0 < record["smooth_ap"] < 1 and all(np.isfinite(v) for v in record.values())


def test_filling_the_diagonal_of_cdist_output_refuses_backward_alike():
    """pml's DynamicSoftMarginLoss without labels fills cdist's result (saved for backward) in place: both refuse."""

    def prog(m):
        torch, F = m.torch, m.F
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 4, generator=g, requires_grad=True)
        results = []
        for mode in ["use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"]:
            mat = torch.cdist(F.normalize(x[0::2]), F.normalize(x[1::2]), compute_mode=mode)
            d_pos = mat.diag()
            mat.fill_diagonal_(np.inf)
            try:
                (d_pos - torch.min(mat, dim=0)[0]).sum().backward()
                results.append("ran")
            except RuntimeError as error:
                results.append("modified by an inplace operation" in str(error))
        return results

    ours, _ = run_both(prog)
    assert ours == [True, True, True]


# ----------------------------------------------------------------------------------------------
# Deep supervised hashing (jiangqy/DPSH-pytorch: a code table written per sample index under the loader's
# shuffle, the log-trick likelihood with a broadcast binary max, ``sign`` codes) with a triplet ranking term by
# nn.TripletMarginWithDistanceLoss over a Hamming-like distance (swap=True) and nn.TripletMarginLoss(swap=True,
# p=1); evaluated by Hamming ranking (a stable argsort over tied integer distances, mAP by ``linspace`` over the
# ranks of the hits) and checked against NumPy
# ----------------------------------------------------------------------------------------------


def hashing_model(m, bits=12):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, bits), nn.Tanh())


def dpsh(m, weights, epochs=3, bits=12, lamda=0.1):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    x_np, y_np = clustered(n_classes=4, per_class=6, spread=1.0, seed=8)
    num_train = len(y_np)

    class IndexedDataset(m.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = torch.tensor(x), F.one_hot(torch.tensor(y), 4).float()

        def __getitem__(self, index):
            return self.x[index], self.y[index], index

        def __len__(self):
            return len(self.x)

    def calc_sim(database_label, train_label):
        S = (database_label.mm(train_label.t()) > 0).type(torch.FloatTensor)
        return S

    def Logtrick(x):
        lt = torch.log(1 + torch.exp(-torch.abs(x))) + torch.max(x, torch.FloatTensor([0.]))
        return lt

    def calc_loss(V, U, S, lamda):
        theta = U.mm(V.t()) / 2
        t1 = (theta * theta).sum() / (num_train * num_train)
        l1 = (- theta * S + torch.log(1 + torch.exp(theta))).sum() / (num_train * num_train)
        l2 = (U - V).pow(2).sum() / (num_train * num_train)  # (with V = sign(U))
        return l1 + lamda * l2, t1

    dataset = IndexedDataset(x_np, y_np)
    loader = m.data.DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(2))
    model = load(m, hashing_model(m, bits), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-5)
    B = torch.zeros(num_train, bits)
    U = torch.zeros(num_train, bits)
    train_labels = dataset.y
    hamming = lambda x, y: 0.5 * (x.size(-1) - (x * y).sum(-1))
    ranking = nn.TripletMarginWithDistanceLoss(distance_function=hamming, margin=2.0, swap=True)
    ranking_l1 = nn.TripletMarginLoss(margin=1.0, p=1, swap=True, reduction="sum")
    log = []
    for epoch in range(epochs):
        epoch_loss = 0.0
        for iter, (train_input, train_label, batch_ind) in enumerate(loader):
            S = calc_sim(train_label, train_labels)
            model.zero_grad()
            train_outputs = model(train_input)
            for i, ind in enumerate(batch_ind):
                U[ind, :] = train_outputs.data[i]
                B[ind, :] = torch.sign(train_outputs.data[i])
            Bbatch = torch.sign(train_outputs)
            theta_x = train_outputs.mm(U.t()) / 2
            logloss = (S * theta_x - Logtrick(theta_x)).sum() / (num_train * len(train_label))
            regterm = (Bbatch - train_outputs).pow(2).sum() / (num_train * len(train_label))
            # triplets inside the batch: each anchor's first positive and first negative (when it has them)
            cls = train_label.argmax(1)
            same = cls.unsqueeze(0) == cls.unsqueeze(1)
            same.fill_diagonal_(False)
            has = same.any(1) & (~same).any(1) & (cls.unsqueeze(0) != cls.unsqueeze(1)).any(1)
            pos = same.float().argmax(1)
            neg = (cls.unsqueeze(0) != cls.unsqueeze(1)).float().argmax(1)
            a = train_outputs[has]
            tri = ranking(a, train_outputs[pos[has]], train_outputs[neg[has]])
            tri_l1 = ranking_l1(a, train_outputs[pos[has]], train_outputs[neg[has]])
            loss = - logloss + lamda * regterm + 0.1 * tri + 0.01 * tri_l1
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        l, t1 = calc_loss(B, U, calc_sim(train_labels, train_labels), lamda)
        log.append([epoch_loss, l.item(), t1.item(), tri.item(), tri_l1.item()])
    # retrieval by Hamming ranking: every third sample as a query against the rest
    model.eval()
    with torch.no_grad():
        codes = torch.sign(model(dataset.x))
    is_query = torch.arange(num_train) % 3 == 0
    qB, rB, query_L, retrieval_L = codes[is_query], codes[~is_query], train_labels[is_query], train_labels[~is_query]
    num_query = query_L.shape[0]
    maps, orders = [], []
    for it in range(num_query):
        gnd = (query_L[it, :] @ retrieval_L.t() > 0).float()
        tsum = int(torch.sum(gnd))
        if tsum == 0:
            continue
        hamm = 0.5 * (rB.shape[1] - qB[it, :] @ rB.t())
        ind = torch.argsort(hamm, stable=True)
        orders.append(ind)
        gnd = gnd[ind]
        count = torch.linspace(1, tsum, tsum)
        tindex = torch.where(gnd == 1)[0] + 1.0
        maps.append(torch.mean(count / tindex))
    return {"log": log, "U": U, "B": B, "codes": codes, "orders": orders, "mAP": torch.stack(maps).mean(),
            "params": [p.detach() for p in model.parameters()]}


def test_deep_supervised_hashing_with_hamming_ranking():
    weights = weights_of(hashing_model)
    ours, _ = run_both(dpsh, weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ours["B"], np.sign(ours["U"]))  # every index visited each epoch
    codes = ours["codes"]
    _, y = clustered(n_classes=4, per_class=6, spread=1.0, seed=8)
    aps = []
    query = np.arange(len(y)) % 3 == 0
    for q, (code, label) in enumerate(zip(codes[query], y[query])):
        hamm = 0.5 * (codes.shape[1] - codes[~query] @ code)
        order = np.argsort(hamm, kind="stable")
        np.testing.assert_array_equal(ours["orders"][q], order)
        hits = (y[~query][order] == label).astype(float)
        aps.append(np.mean(np.arange(1, hits.sum() + 1) / (np.where(hits)[0] + 1)))
    assert ours["mAP"] == pytest.approx(np.mean(aps), rel=1e-6)
