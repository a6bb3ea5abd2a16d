# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Recommender-system and ranking programs (see tests/pytorch_programs.py), each trained a few steps from the same
weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients, parameters and metrics (float64
to about 1e-10; the float32 DLRM bit for bit where PyTorch's kernels allow), and checked against NumPy by hand where
a formula is short. tests/test_programs_probe11_tabular_*.py has the first round (NeuMF, DeepFM, DLRM in float64,
GRU4Rec, SASRec, two-tower, LightGCN): these go past it. Click-through models: DLRM in float32, the default dtype
(``nn.EmbeddingBag`` tables (sum, mean, sum with per-sample weights) whose bags and float32 gradients are PyTorch's
to the bit (fused products, the gradient's terms in the order of PyTorch's sort of the indices),
``torch.tril_indices`` gathers of the dot interaction, ``max_norm`` renormalising a table in place (the padding row
too), SGD); Wide & Deep (hashed cross features (``%``, ``*``, ``bitwise_xor``), continuous features in buckets by
``torch.bucketize`` (``right=True``) and ``searchsorted``, ``F.one_hot``, a multi-hot field by
``EmbeddingBag(mode='mean', padding_idx=0, include_last_offset=True)``, ``BCEWithLogitsLoss(pos_weight)``, Adagrad on
the wide part and Adam on the deep part); DeepFM on a multi-hot field with ``per_sample_weights`` and on one-hot
fields with offsets, the FM square-of-sum trick against the sum over ``triu_indices`` pairs."""

import numpy as np
import pytest

from .probe13_recsys_common import grads_of, params_of
from .pytorch_programs import load, run_both, weights_of

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
