# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Recommender-system and ranking programs (see tests/pytorch_programs.py), each trained a few steps from the same
weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients, parameters and metrics (float64
to about 1e-10; the float32 DLRM bit for bit where PyTorch's kernels allow), and checked against NumPy by hand where
a formula is short. tests/test_programs_probe11_tabular_*.py has the first round (NeuMF, DeepFM, DLRM in float64,
GRU4Rec, SASRec, two-tower, LightGCN): these go past it. Retrieval: a two-tower model (in-batch softmax with a
temperature, the logits of the same item masked by ``masked_fill(-inf)``, logQ correction from ``bincount``
frequencies, symmetric ``cross_entropy`` with ``label_smoothing``, Adam; recall@k by ``topk`` with already-seen items
scattered to ``-inf``); matrix factorisation with BPR (negatives drawn by a ``Generator``: ``randint`` redrawn where
``isin`` finds a positive, popularity negatives by ``multinomial`` of counts ** 0.75; ``Adagrad`` with ``lr_decay``,
``initial_accumulator_value`` and ``weight_decay``; leave-one-out HR@10 / NDCG@10 / MRR over 50 candidates drawn by
``multinomial`` without replacement, zero weights for the positives); a next-item model (sessions of unequal length
by ``pad_sequence`` and ``pack_padded_sequence`` into a GRU, ``nn.Embedding(padding_idx=0, max_norm=...,
scale_grad_by_freq=True)``, sampled softmax with shared negatives from ``randperm``)."""

import math

import numpy as np
import pytest

from .probe13_recsys_common import grads_of, params_of
from .pytorch_programs import load, run_both, weights_of

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
