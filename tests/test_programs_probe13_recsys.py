# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Recommender-system and ranking programs (see tests/pytorch_programs.py), each trained a few steps from the
same weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients, parameters and
metrics (float64 to about 1e-10; the float32 DLRM bit for bit where PyTorch's kernels allow), and checked
against NumPy by hand where a formula is short. tests/test_programs_probe11_tabular_*.py has the first round
(NeuMF, DeepFM, DLRM in float64, GRU4Rec, SASRec, two-tower, LightGCN): these go past it.

- DLRM in float32, the default dtype: ``nn.EmbeddingBag`` tables (sum, mean, sum with per-sample
  weights) whose bags and float32 gradients are PyTorch's to the bit (fused products, the gradient's terms
  in the order of PyTorch's sort of the indices), ``torch.tril_indices`` gathers of the dot interaction,
  ``max_norm`` renormalising a table in place (the padding row too), SGD;
- a two-tower retrieval model: in-batch softmax with a temperature, the logits of the same item masked
  by ``masked_fill(-inf)``, logQ correction from ``bincount`` frequencies, symmetric ``cross_entropy`` with
  ``label_smoothing``, Adam; recall@k by ``topk`` with already-seen items scattered to ``-inf``;
- matrix factorisation with BPR: negatives drawn by a ``Generator`` (``randint`` redrawn where ``isin``
  finds a positive, popularity negatives by ``multinomial`` of counts ** 0.75), ``Adagrad`` with
  ``lr_decay``, ``initial_accumulator_value`` and ``weight_decay``; leave-one-out HR@10 / NDCG@10 / MRR
  over 50 candidates drawn by ``multinomial`` without replacement (zero weights for the positives);
- Wide & Deep: hashed cross features (``%``, ``*``, ``bitwise_xor``), continuous features in buckets by
  ``torch.bucketize`` (``right=True``) and ``searchsorted``, ``F.one_hot``, a multi-hot field by
  ``EmbeddingBag(mode='mean', padding_idx=0, include_last_offset=True)``, ``BCEWithLogitsLoss(pos_weight)``,
  Adagrad on the wide part and Adam on the deep part;
- DeepFM on a multi-hot field with ``per_sample_weights`` and on one-hot fields with offsets; the FM
  square-of-sum trick against the sum over ``triu_indices`` pairs;
- a next-item model: sessions of unequal length by ``pad_sequence`` and ``pack_padded_sequence`` into a
  GRU, ``nn.Embedding(padding_idx=0, max_norm=..., scale_grad_by_freq=True)``, sampled softmax with
  shared negatives from ``randperm``;
- learning to rank: RankNet by ``margin_ranking_loss`` and by pairwise ``BCEWithLogits``, ListNet (soft
  ``cross_entropy`` targets), ListMLE (``logcumsumexp`` over ``gather``-ed scores), LambdaRank's |ΔNDCG|
  weights from ``argsort(argsort)``, hinge on in-list pairs;
- offline metrics with tensors: recall@k, NDCG@k, MRR, AUC (by ranks, by ``cumsum`` and ``trapz``), GAUC
  per user (``unique(return_inverse, return_counts)``, ``scatter_reduce('amax'|'mean', include_self=False)``,
  ``bincount(weights)``, ``unique_consecutive``), each against NumPy by hand;
- sparse-style updates by hand: lazy Adam and row-wise Adagrad on the rows a batch touched
  (``unique``, ``index_select``, ``index_copy_``, ``index_add_``, ``index_put_(accumulate=True)``);
- where PyTorch 2.13 is wrong (its CPU ``embedding_bag`` divides by another index's count under
  ``scale_grad_by_freq``, pytorch/pytorch#190063; ``scatter_reduce('amax', include_self=False)`` counts an
  excluded self equal to the maximum as a tie), chainrule is checked by hand instead."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------------------------
# DLRM in float32 (facebookresearch/dlrm's dlrm_s_pytorch.py, its dot interaction by tril_indices)
# ----------------------------------------------------------------------------------------------

TABLES = [40, 25, 60]


def dlrm_float32_batch(batch=32, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((batch, 8)).astype(np.float32)
    lS_i, lS_o = [], []
    for n in TABLES:
        lengths = rng.integers(0, 5, batch)  # empty bags too
        lS_o.append(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        lS_i.append(rng.integers(0, n, lengths.sum()).astype(np.int64))
    y = (rng.random(batch) < 0.3).astype(np.float32)
    return dense, lS_i, lS_o, y


def make_dlrm_float32(m, m_spa=8, mode="sum"):
    torch, nn = m.torch, m.nn

    class DLRM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb_l = nn.ModuleList([nn.EmbeddingBag(n, m_spa, mode=mode) for n in TABLES])
            self.bot_l = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, m_spa), nn.ReLU())
            n_f = len(TABLES) + 1
            self.top_l = nn.Sequential(nn.Linear(m_spa + n_f * (n_f - 1) // 2, 16), nn.ReLU(), nn.Linear(16, 1))
            li, lj = torch.tril_indices(n_f, n_f, offset=-1)
            self.register_buffer("li", li, persistent=False)
            self.register_buffer("lj", lj, persistent=False)

        def interact_features(self, x, ly):
            (batch_size, d) = x.shape
            T = torch.cat([x] + ly, dim=1).view((batch_size, -1, d))
            Z = torch.bmm(T, torch.transpose(T, 1, 2))
            Zflat = Z[:, self.li, self.lj]
            return torch.cat([x, Zflat], dim=1)

        def forward(self, dense_x, lS_o, lS_i):
            x = self.bot_l(dense_x)
            ly = [E(i, o) for E, i, o in zip(self.emb_l, lS_i, lS_o)]
            return self.top_l(self.interact_features(x, ly)).squeeze(1)

    return DLRM()


def dlrm_float32(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_dlrm_float32(m), weights)
    dense, lS_i, lS_o, y = dlrm_float32_batch()
    X = torch.from_numpy(dense)
    lS_i = [torch.from_numpy(i) for i in lS_i]
    lS_o = [torch.from_numpy(o) for o in lS_o]
    T = torch.from_numpy(y)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        loss = loss_fn(model(X, lS_o, lS_i), T)
        loss.backward()
        grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())
    # the serving path: a table renormalised in place at lookup (max_norm), the padding row too
    table = model.emb_l[1].weight.detach().clone() * 4
    capped = nn.EmbeddingBag.from_pretrained(table, mode="sum", max_norm=1.0, padding_idx=3)
    served = capped(lS_i[1], lS_o[1])
    return {"losses": losses, "grads": grads, "params": params_of(model), "table": capped.weight, "served": served}


def test_dlrm_float32():
    ours, _ = run_both(dlrm_float32, weights_of(make_dlrm_float32), rtol=2e-6, atol=1e-7)
    table = ours["table"]
    assert np.all(np.linalg.norm(table, axis=1)[np.unique(dlrm_float32_batch()[1][1])] <= 1.0 + 1e-6)
    assert ours["losses"][2] < ours["losses"][0]


@pytest.mark.parametrize("mode", ["sum", "mean", "sum_weighted"])
def test_dlrm_float32_embedding_bags_bit_for_bit(mode):
    """The bags and the tables' float32 gradients from the same upstream gradient, each row a sum of many
    bag gradients, exactly as PyTorch's (fused products, the order of the terms its sort's)."""
    bag_mode = "sum" if mode == "sum_weighted" else mode

    def program(m, weights):
        model = load(m, make_dlrm_float32(m, mode=bag_mode), weights)
        dense, lS_i, lS_o, y = dlrm_float32_batch(batch=256, seed=1)
        rng = np.random.default_rng(2)
        bags = []
        for E, i, o in zip(model.emb_l, lS_i, lS_o):
            psw = m.torch.from_numpy(rng.random(len(i)).astype(np.float32)) if mode == "sum_weighted" else None
            V = E(m.torch.from_numpy(i), m.torch.from_numpy(o), per_sample_weights=psw)
            V.backward(m.torch.from_numpy(rng.standard_normal(V.shape).astype(np.float32)))
            bags.append(V)
        return {"bags": bags, "grads": [E.weight.grad for E in model.emb_l]}

    ours, _ = run_both(program, weights_of(lambda m: make_dlrm_float32(m, mode=bag_mode)), rtol=0, atol=0)
    # by hand: each lookup's bag gradient added to its row (to float32 rounding: the order is PyTorch's)
    dense, lS_i, lS_o, y = dlrm_float32_batch(batch=256, seed=1)
    rng = np.random.default_rng(2)
    for k, (i, o) in enumerate(zip(lS_i, lS_o)):
        psw = rng.random(len(i)).astype(np.float32) if mode == "sum_weighted" else np.ones(len(i))
        g = rng.standard_normal((256, 8)).astype(np.float32)
        bag_of = np.searchsorted(o, np.arange(len(i)), side="right") - 1
        scale = psw / np.maximum(np.bincount(bag_of, minlength=256), 1)[bag_of] if mode == "mean" else psw
        expected = np.zeros((TABLES[k], 8))
        np.add.at(expected, i, g[bag_of].astype(np.float64) * scale[:, None])
        np.testing.assert_allclose(ours["grads"][k], expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Two-tower retrieval: in-batch softmax, temperature, duplicate-item mask, logQ correction
# ----------------------------------------------------------------------------------------------

N_USERS, N_ITEMS, DIM = 30, 40, 8


def make_two_tower(m):
    nn, F = m.nn, m.F

    class Tower(nn.Module):
        def __init__(self, n, dim):
            super().__init__()
            self.emb = nn.Embedding(n, 16)
            self.mlp = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, dim))

        def forward(self, ids):
            return F.normalize(self.mlp(self.emb(ids)), dim=-1)

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.user_tower = Tower(N_USERS, DIM)
            self.item_tower = Tower(N_ITEMS, DIM)

    return TwoTower()


def two_tower(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_two_tower(m), weights).double()
    rng = np.random.default_rng(1)
    users = torch.from_numpy(rng.integers(0, N_USERS, (4, 12)))
    items = torch.from_numpy(rng.integers(0, N_ITEMS, (4, 12)))
    item_freq = torch.bincount(items.reshape(-1), minlength=N_ITEMS).double()
    log_q = torch.log(item_freq / item_freq.sum() + 1e-12)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    temperature = 0.1
    losses = []
    for batch_users, batch_items in zip(users, items):
        u = model.user_tower(batch_users)
        v = model.item_tower(batch_items)
        logits = u @ v.T / temperature - log_q[batch_items][None, :]
        same_item = batch_items[:, None] == batch_items[None, :]
        mask = same_item & ~torch.eye(len(batch_items), dtype=torch.bool)
        logits = logits.masked_fill(mask, float("-inf"))
        labels = torch.arange(len(batch_users))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels, label_smoothing=0.1)) / 2
        optimizer.zero_grad()
        loss.backward()
        grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())
    # retrieval: every item scored, the ones seen in training scattered to -inf, recall@5 of held-out pairs
    with torch.no_grad():
        all_items = model.item_tower(torch.arange(N_ITEMS))
        eval_users = torch.tensor([0, 3, 7, 11])
        scores = model.user_tower(eval_users) @ all_items.T
        seen = torch.tensor([[1, 2, 3], [4, 4, 5], [0, 6, 7], [8, 9, 10]])
        scores = scores.scatter(1, seen, float("-inf"))
        top = torch.topk(scores, 5, dim=1).indices
        held_out = torch.tensor([[12], [13], [14], [15]])
        hits = (top == held_out).any(dim=1).double()
    return {"losses": losses, "grads": grads, "params": params_of(model), "top": top, "recall@5": hits.mean(),
            "scores": scores}


def test_two_tower_in_batch_softmax_with_masks():
    ours, _ = run_both(two_tower, weights_of(make_two_tower), rtol=1e-9, atol=1e-11)
    assert np.isneginf(ours["scores"][1, 4]) and np.isneginf(ours["scores"][0, 1])
    assert not np.isin(ours["top"][0], [1, 2, 3]).any()


# ----------------------------------------------------------------------------------------------
# Matrix factorisation with BPR, negatives from a Generator, Adagrad; leave-one-out evaluation
# ----------------------------------------------------------------------------------------------


def implicit_feedback(seed=3):
    """Each user's positives (a few items each); the last one held out for leave-one-out evaluation."""
    rng = np.random.default_rng(seed)
    positives = {u: list(rng.choice(N_ITEMS, size=rng.integers(3, 7), replace=False)) for u in range(N_USERS)}
    train = [(u, i) for u, items in positives.items() for i in items[:-1]]
    held_out = np.array([items[-1] for u, items in positives.items()])
    return positives, np.array(train), held_out


def make_mf(m):
    nn = m.nn

    class MF(nn.Module):
        def __init__(self, n_users, n_items, dim):
            super(MF, self).__init__()
            self.user_emb = nn.Embedding(n_users, dim)
            self.item_emb = nn.Embedding(n_items, dim)
            self.item_bias = nn.Embedding(n_items, 1)
            nn.init.normal_(self.user_emb.weight, std=0.1)
            nn.init.normal_(self.item_emb.weight, std=0.1)
            nn.init.zeros_(self.item_bias.weight)

        def forward(self, u, i):
            return (self.user_emb(u) * self.item_emb(i)).sum(-1) + self.item_bias(i).squeeze(-1)

    return MF(N_USERS, N_ITEMS, DIM)


def bpr_mf(m, weights, popularity_negatives):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_mf(m), weights).double()
    positives, train, held_out = implicit_feedback()
    users, items = torch.from_numpy(train[:, 0]), torch.from_numpy(train[:, 1])
    g = torch.Generator()
    g.manual_seed(2024)
    optimizer = optim.Adagrad(model.parameters(), lr=0.2, lr_decay=0.01, weight_decay=1e-4,
                              initial_accumulator_value=0.1)
    counts = torch.bincount(items, minlength=N_ITEMS).double()
    neg_dist = counts.pow(0.75) + 1e-3
    losses = []
    for epoch in range(3):
        perm = torch.randperm(len(users), generator=g)
        for batch in perm.split(32):
            u, i = users[batch], items[batch]
            if popularity_negatives:
                j = torch.multinomial(neg_dist, len(batch), replacement=True, generator=g)
            else:
                j = torch.randint(0, N_ITEMS, (len(batch),), generator=g)
            # redraw the negatives that are a positive of their user
            pos_of_user = [torch.tensor(positives[int(x)]) for x in u]
            bad = torch.tensor([bool(torch.isin(jj, p)) for jj, p in zip(j, pos_of_user)])
            while bad.any():
                j[bad] = torch.randint(0, N_ITEMS, (int(bad.sum()),), generator=g)
                bad = torch.tensor([bool(torch.isin(jj, p)) for jj, p in zip(j, pos_of_user)])
            loss = -F.logsigmoid(model(u, i) - model(u, j)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    # leave-one-out: the held-out item among 30 negatives drawn without replacement (positives weigh 0)
    eval_users = torch.arange(N_USERS)
    weights_neg = torch.ones(N_USERS, N_ITEMS, dtype=torch.float64)
    for u, items_u in positives.items():
        weights_neg[u, items_u] = 0.0
    negatives = torch.multinomial(weights_neg, 30, replacement=False, generator=g)
    candidates = torch.cat([torch.from_numpy(held_out)[:, None], negatives], dim=1)
    with torch.no_grad():
        scores = model(eval_users[:, None].expand_as(candidates), candidates)
    rank = (scores > scores[:, :1]).sum(dim=1)  # 0-based rank of the held-out item
    hr = (rank < 10).double().mean()
    ndcg = torch.where(rank < 10, 1.0 / torch.log2(rank.double() + 2), torch.zeros(N_USERS, dtype=torch.float64))
    mrr = (1.0 / (rank.double() + 1)).mean()
    return {"losses": losses, "params": params_of(model), "negatives": negatives, "rank": rank, "hr@10": hr,
            "ndcg@10": ndcg.mean(), "mrr": mrr, "state": optimizer.state_dict()["state"][0]}


@pytest.mark.parametrize("popularity_negatives", [False, True])
def test_bpr_matrix_factorisation_with_sampled_negatives(popularity_negatives):
    ours, _ = run_both(bpr_mf, weights_of(make_mf), popularity_negatives, rtol=1e-9, atol=1e-12)
    positives, train, held_out = implicit_feedback()
    for u, row in enumerate(ours["negatives"]):
        assert len(set(row)) == 30 and not set(row) & set(positives[u])
    assert math.isclose(ours["losses"][0], math.log(2), rel_tol=0.05)
    assert ours["losses"][-1] < ours["losses"][0]
    rank = ours["rank"]
    np.testing.assert_allclose(ours["hr@10"], (rank < 10).mean())
    np.testing.assert_allclose(ours["mrr"], (1 / (rank + 1)).mean())


# ----------------------------------------------------------------------------------------------
# Wide & Deep (Cheng et al. 2016): hashed crosses, bucketised continuous features, a multi-hot bag
# ----------------------------------------------------------------------------------------------

HASH_BUCKETS, AGE_BOUNDARIES = 97, [18.0, 25.0, 35.0, 45.0, 55.0, 65.0]


def census_like(n=48, seed=4):
    rng = np.random.default_rng(seed)
    age = np.round(rng.uniform(15, 80, n))  # whole years: some on a boundary
    hours = rng.uniform(10, 60, n)
    occupation = rng.integers(0, 12, n)
    education = rng.integers(0, 8, n)
    lengths = rng.integers(0, 4, n)  # a multi-hot field (interests), padding index 0 mixed in
    interests = rng.integers(0, 10, lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # include_last_offset: n + 1 offsets
    y = ((age > 40) ^ (occupation % 3 == 0)).astype(np.float64)
    return age, hours, occupation, education, interests, offsets, y


def make_wide_deep(m):
    torch, nn = m.torch, m.nn

    class WideDeep(nn.Module):
        def __init__(self):
            super().__init__()
            self.wide = nn.Linear(HASH_BUCKETS + len(AGE_BOUNDARIES) + 1, 1)
            self.occ_emb = nn.Embedding(12, 4)
            self.edu_emb = nn.Embedding(8, 4)
            self.interest_bag = nn.EmbeddingBag(10, 4, mode="mean", padding_idx=0, include_last_offset=True)
            self.deep = nn.Sequential(nn.Linear(4 * 3 + 2, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, age, hours, occupation, education, interests, offsets):
            cross = (occupation * 1000003 + education * 7919) % HASH_BUCKETS
            cross = torch.bitwise_xor(cross, cross >> 3) % HASH_BUCKETS
            age_bucket = torch.bucketize(age, torch.tensor(AGE_BOUNDARIES, dtype=age.dtype), right=True)
            wide_x = torch.cat([nn.functional.one_hot(cross, HASH_BUCKETS),
                                nn.functional.one_hot(age_bucket, len(AGE_BOUNDARIES) + 1)], dim=1).to(age.dtype)
            deep_x = torch.cat([self.occ_emb(occupation), self.edu_emb(education),
                                self.interest_bag(interests, offsets),
                                ((age - 40.0) / 15.0).unsqueeze(1), ((hours - 35.0) / 15.0).unsqueeze(1)], dim=1)
            return (self.wide(wide_x) + self.deep(deep_x)).squeeze(1)

    return WideDeep()


def wide_and_deep(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_wide_deep(m), weights).double()
    age, hours, occupation, education, interests, offsets, y = (torch.from_numpy(a) for a in census_like())
    # the paper trains the wide part by FTRL (here Adagrad) and the deep part by AdaGrad/Adam
    wide_params = list(model.wide.parameters())
    deep_params = [p for n, p in model.named_parameters() if not n.startswith("wide.")]
    opt_wide = optim.Adagrad(wide_params, lr=0.1)
    opt_deep = optim.Adam(deep_params, lr=0.01, betas=(0.9, 0.98), eps=1e-7)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0], dtype=torch.float64))
    losses = []
    for step in range(4):
        logits = model(age, hours, occupation, education, interests, offsets)
        loss = loss_fn(logits, y)
        opt_wide.zero_grad()
        opt_deep.zero_grad()
        loss.backward()
        grads = grads_of(model)
        opt_wide.step()
        opt_deep.step()
        losses.append(loss.item())
    buckets = torch.bucketize(age, torch.tensor(AGE_BOUNDARIES, dtype=age.dtype), right=True)
    searched = torch.searchsorted(torch.tensor(AGE_BOUNDARIES, dtype=age.dtype), age, side="right")
    return {"losses": losses, "grads": grads, "params": params_of(model), "buckets": buckets, "searched": searched,
            "probs": torch.sigmoid(logits.detach())}


def test_wide_and_deep():
    ours, _ = run_both(wide_and_deep, weights_of(make_wide_deep), rtol=1e-9, atol=1e-12)
    age = census_like()[0]
    np.testing.assert_array_equal(ours["buckets"], np.searchsorted(AGE_BOUNDARIES, age, side="right"))
    np.testing.assert_array_equal(ours["searched"], ours["buckets"])
    assert ours["grads"]["interest_bag.weight"][0].tolist() == [0.0] * 4  # the padding row: no gradient


# ----------------------------------------------------------------------------------------------
# DeepFM over one-hot fields (offsets into one table) and a weighted multi-hot field
# ----------------------------------------------------------------------------------------------

FIELD_DIMS = [5, 7, 4]


def make_deepfm(m, k=4):
    torch, nn = m.torch, m.nn

    class DeepFM(nn.Module):
        def __init__(self):
            super().__init__()
            self.offsets = torch.tensor((0, *np.cumsum(FIELD_DIMS)[:-1]))
            self.embedding = nn.Embedding(sum(FIELD_DIMS), k)
            self.linear = nn.Embedding(sum(FIELD_DIMS), 1)
            self.tags = nn.EmbeddingBag(12, k, mode="sum")
            self.tags_linear = nn.EmbeddingBag(12, 1, mode="sum")
            self.bias = nn.Parameter(torch.zeros((1,)))
            self.mlp = nn.Sequential(nn.Linear(k * (len(FIELD_DIMS) + 1), 8), nn.ReLU(), nn.Linear(8, 1))

        def forward(self, x, tags, tag_offsets, tag_weights):
            x = x + self.offsets.unsqueeze(0)
            e = torch.cat([self.embedding(x), self.tags(tags, tag_offsets, per_sample_weights=tag_weights)[:, None]],
                          dim=1)
            linear = self.linear(x).sum(1) + self.tags_linear(tags, tag_offsets, per_sample_weights=tag_weights)
            square_of_sum = torch.sum(e, dim=1) ** 2
            sum_of_square = torch.sum(e ** 2, dim=1)
            fm = 0.5 * torch.sum(square_of_sum - sum_of_square, dim=1, keepdim=True)
            row, col = torch.triu_indices(e.shape[1], e.shape[1], offset=1)
            pairs = (e[:, row] * e[:, col]).sum(dim=(1, 2))
            return (linear + self.bias + fm + self.mlp(e.flatten(1))).squeeze(1), fm.squeeze(1), pairs

    return DeepFM()


def deepfm(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_deepfm(m), weights).double()
    rng = np.random.default_rng(5)
    x = torch.from_numpy(np.stack([rng.integers(0, d, 24) for d in FIELD_DIMS], axis=1))
    lengths = rng.integers(1, 4, 24)
    tags = torch.from_numpy(rng.integers(0, 12, lengths.sum()))
    tag_offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    tag_weights = torch.from_numpy(1.0 / np.repeat(lengths, lengths))  # tf-idf-like weights
    y = torch.from_numpy((rng.random(24) < 0.5).astype(np.float64))
    optimizer = optim.Adam(model.parameters(), lr=0.02, weight_decay=1e-5)
    losses = []
    for step in range(4):
        out, fm, pairs = model(x, tags, tag_offsets, tag_weights)
        loss = nn.functional.binary_cross_entropy_with_logits(out, y)
        optimizer.zero_grad()
        loss.backward()
        grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "params": params_of(model), "fm": fm, "pairs": pairs}


def test_deepfm_weighted_multi_hot():
    ours, _ = run_both(deepfm, weights_of(make_deepfm), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["fm"], ours["pairs"], rtol=1e-10, atol=1e-12)  # the FM identity


# ----------------------------------------------------------------------------------------------
# Next-item prediction over sessions of unequal length: packed GRU, sampled softmax
# ----------------------------------------------------------------------------------------------

N_CATALOG = 25


def sessions(seed=6):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, N_CATALOG, rng.integers(2, 7)) for _ in range(8)]  # 0 is padding


def make_next_item(m):
    nn = m.nn

    class NextItem(nn.Module):
        def __init__(self):
            super().__init__()
            self.item_emb = nn.Embedding(N_CATALOG, 8, padding_idx=0, max_norm=1.5, scale_grad_by_freq=True)
            self.gru = nn.GRU(8, 8, batch_first=True)
            self.out_bias = nn.Parameter(m.torch.zeros(N_CATALOG))

    return NextItem()


def next_item(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_next_item(m), weights).double()
    g = torch.Generator().manual_seed(7)
    seqs = [torch.from_numpy(s) for s in sessions()]
    inputs = nn.utils.rnn.pad_sequence([s[:-1] for s in seqs], batch_first=True, padding_value=0)
    targets = torch.stack([s[-1] for s in seqs])
    lengths = torch.tensor([len(s) - 1 for s in seqs])
    optimizer = optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    losses, renormed = [], []
    for step in range(3):
        x = model.item_emb(inputs)  # rows renormalised in place to norm 1.5 first
        renormed.append(model.item_emb.weight.detach().clone())
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = model.gru(packed)
        h = h[-1]
        # sampled softmax: the targets and 10 shared negatives from a permutation of the catalogue
        negatives = torch.randperm(N_CATALOG - 1, generator=g)[:10] + 1
        candidates = torch.cat([targets, negatives])
        logits = h @ model.item_emb.weight[candidates].T + model.out_bias[candidates]
        # a negative equal to a row's target is masked, and each row's own target is its label
        hit = candidates[None, :] == targets[:, None]
        label = torch.arange(len(targets))
        mask = hit.clone()
        mask[label, label] = False
        logits = logits.masked_fill(mask, -1e9)
        loss = F.cross_entropy(logits, label)
        optimizer.zero_grad()
        loss.backward()
        grads = grads_of(model)
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "params": params_of(model), "renormed": renormed}


def test_next_item_packed_gru_sampled_softmax():
    ours, _ = run_both(next_item, weights_of(make_next_item), rtol=1e-9, atol=1e-12)
    looked_up = np.unique(np.concatenate([s[:-1] for s in sessions()]))
    assert np.all(np.linalg.norm(ours["renormed"][0][looked_up], axis=1) <= 1.5 + 1e-9)
    assert not ours["grads"]["item_emb.weight"][0].any()


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


# ----------------------------------------------------------------------------------------------
# Sparse-style updates by hand: lazy Adam and row-wise Adagrad on the rows a batch touched
# ----------------------------------------------------------------------------------------------


def sparse_updates(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(9)
    table = torch.tensor(rng.standard_normal((20, 4)) * 0.1, requires_grad=True)
    adam_m = torch.zeros(20, 4, dtype=torch.float64)
    adam_v = torch.zeros(20, 4, dtype=torch.float64)
    row_step = torch.zeros(20, dtype=torch.long)
    rowwise_acc = torch.zeros(20, dtype=torch.float64)  # DLRM's row-wise Adagrad: one accumulator a row
    table2 = table.detach().clone().requires_grad_(True)
    lr, beta1, beta2, eps = 0.05, 0.9, 0.999, 1e-8
    batches = [rng.integers(0, 20, 12) for _ in range(4)]
    targets = [rng.standard_normal(12) for _ in range(4)]
    for idx, y in zip(batches, targets):
        idx, y = torch.from_numpy(idx), torch.from_numpy(y)
        for weight in (table, table2):
            weight.grad = None
            loss = ((F.embedding(idx, weight).sum(1) - y) ** 2).mean()
            loss.backward()
        with torch.no_grad():
            rows = torch.unique(idx)
            # lazy Adam: moments and bias corrections of the touched rows only
            g = table.grad.index_select(0, rows)
            row_step[rows] += 1
            m_rows = adam_m.index_select(0, rows) * beta1 + (1 - beta1) * g
            v_rows = adam_v.index_select(0, rows) * beta2 + (1 - beta2) * g * g
            adam_m.index_copy_(0, rows, m_rows)
            adam_v.index_copy_(0, rows, v_rows)
            t = row_step[rows].double().unsqueeze(1)
            m_hat = m_rows / (1 - beta1 ** t)
            v_hat = v_rows / (1 - beta2 ** t)
            table.index_add_(0, rows, -lr * m_hat / (v_hat.sqrt() + eps))
            # row-wise Adagrad on the second table, its update accumulated per lookup (duplicates add up)
            g2 = table2.grad[rows]
            rowwise_acc.index_put_((rows,), g2.pow(2).mean(1), accumulate=True)
            step = -0.1 * g2 / (rowwise_acc[rows].sqrt().unsqueeze(1) + 1e-10)
            table2.index_put_((rows,), step, accumulate=True)
    return {"table": table.detach(), "table2": table2.detach(), "adam_m": adam_m, "adam_v": adam_v,
            "row_step": row_step, "rowwise_acc": rowwise_acc}


def test_sparse_style_updates_by_hand():
    ours, _ = run_both(sparse_updates, rtol=1e-11, atol=1e-13)
    rng = np.random.default_rng(9)
    table = rng.standard_normal((20, 4)) * 0.1
    batches = [rng.integers(0, 20, 12) for _ in range(4)]
    assert ours["row_step"].tolist() == np.bincount(np.concatenate([np.unique(b) for b in batches]),
                                                    minlength=20).tolist()
    untouched = np.setdiff1d(np.arange(20), np.concatenate(batches))
    np.testing.assert_array_equal(ours["table"][untouched], table[untouched])  # lazy: never moved
    np.testing.assert_array_equal(ours["table2"][untouched], table[untouched])


# ----------------------------------------------------------------------------------------------
# Where PyTorch 2.13 is wrong: chainrule checked by hand
# ----------------------------------------------------------------------------------------------


def bag_frequency_scaled(m):
    torch, nn = m.torch, m.nn
    bag = nn.EmbeddingBag(7, 3, mode="sum", scale_grad_by_freq=True).double()
    with torch.no_grad():
        bag.weight.copy_(torch.from_numpy(np.random.default_rng(1).standard_normal((7, 3))))
    inp = torch.tensor([1, 1, 3, 1, 2, 3])
    out = bag(inp, torch.tensor([0, 2, 4]))
    out.backward(torch.ones_like(out))
    emb = nn.Embedding.from_pretrained(bag.weight.detach(), freeze=False, scale_grad_by_freq=True)
    emb(inp).backward(torch.ones(6, 3, dtype=torch.float64))
    return {"out": out, "bag_grad": bag.weight.grad, "embedding_grad": emb.weight.grad}


def test_embedding_bag_scale_grad_by_freq_divides_by_each_rows_count():
    """Each looked-up row's gradient divided by how often its own index occurs, as nn.Embedding's does (and
    PyTorch's CUDA kernel): PyTorch 2.13's CPU embedding_bag divides by the count of another index of its
    sorted indices (pytorch/pytorch#190063, fixed after 2.13), giving rows 2 and 3 a third and two thirds."""
    ours, theirs = run_both(bag_frequency_scaled, compare=False)
    np.testing.assert_array_equal(ours["bag_grad"][:, 0], [0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(ours["bag_grad"], ours["embedding_grad"])
    if theirs is not None:
        np.testing.assert_allclose(ours["out"], theirs["out"], rtol=1e-12)
        np.testing.assert_array_equal(theirs["embedding_grad"], ours["embedding_grad"])
        if not np.array_equal(theirs["bag_grad"], ours["bag_grad"]):  # PyTorch with the bug
            np.testing.assert_allclose(theirs["bag_grad"][:, 0], [0, 1, 1 / 3, 2 / 3, 0, 0, 0], rtol=1e-12)


def scatter_amax_excluded_self(m):
    torch = m.torch
    scores = torch.tensor([[-1.0, 1.6, 0.2, -1.7, -0.1, -1.2]], dtype=torch.float64, requires_grad=True)
    session = torch.tensor([[0, 1, 1, 2, 2, 2]])
    best = torch.full((1, 3), -1.0, dtype=torch.float64).scatter_reduce(1, session, scores, "amax",
                                                                         include_self=False)
    best.sum().backward()
    return {"best": best, "grad": scores.grad}


def test_scatter_reduce_amax_excluded_self_takes_no_share():
    """Session 0's maximum is its one score, -1.0, which happens to equal the excluded initial value: the
    score gets the whole gradient (the function is differentiable there). PyTorch 2.13 counts the excluded
    self as a tie and gives it half (its amax backward builds the tie count before masking self out)."""
    ours, theirs = run_both(scatter_amax_excluded_self, compare=False)
    np.testing.assert_array_equal(ours["best"], [[-1.0, 1.6, -0.1]])
    np.testing.assert_array_equal(ours["grad"], [[1, 1, 0, 0, 1, 0]])
    if theirs is not None:
        np.testing.assert_array_equal(theirs["best"], ours["best"])
        assert theirs["grad"][0, 0] in (0.5, 1.0) and np.array_equal(theirs["grad"][0, 1:], ours["grad"][0, 1:])
