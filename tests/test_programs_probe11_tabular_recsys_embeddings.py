# ruff: noqa: B007, E731, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Recommenders' embedding tables: DLRM with
``nn.EmbeddingBag(mode='sum'|'mean'|'max')`` on offsets and ``per_sample_weights`` and the dot interaction;
``nn.Embedding(sparse=True)`` under SGD, Nesterov and Adagrad and SparseAdam; ``padding_idx`` and ``max_norm``
renormalising in place; DIN (Dice, masked attention pooling over a history of item embeddings)."""

import numpy as np
import pytest

from .probe11_tabular_common import params_of, train
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DLRM (Naumov et al. 2019): EmbeddingBag tables with offsets, dot interaction
# ----------------------------------------------------------------------------------------------

TABLE_SIZES = [10, 7, 5]


def dlrm_batch(batch=6, seed=3):
    """Multi-hot lookups per table as DLRM's data loaders give them: flat indices and bag offsets."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((batch, 4))
    indices, offsets, weights = [], [], []
    for n in TABLE_SIZES:
        lengths = rng.integers(1, 4, batch)
        offsets.append(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        indices.append(rng.integers(0, n, lengths.sum()).astype(np.int64))
        weights.append(rng.uniform(0.5, 1.5, lengths.sum()))
    y = (rng.random(batch) < 0.5).astype(np.float64)
    return dense, indices, offsets, weights, y


def make_dlrm(m, mode="sum", m_spa=4):
    torch, nn = m.torch, m.nn

    class DLRM_Net(nn.Module):
        def create_mlp(self, ln, sigmoid_layer):
            layers = nn.ModuleList()
            for i in range(0, ln.size - 1):
                n = ln[i]
                mm = ln[i + 1]
                LL = nn.Linear(int(n), int(mm), bias=True)
                mean = 0.0
                std_dev = np.sqrt(2 / (mm + n))
                W = np.random.default_rng(i).normal(mean, std_dev, size=(mm, n)).astype(np.float32)
                std_dev = np.sqrt(1 / mm)
                bt = np.random.default_rng(i + 10).normal(mean, std_dev, size=mm).astype(np.float32)
                LL.weight.data = torch.tensor(W, requires_grad=True)
                LL.bias.data = torch.tensor(bt, requires_grad=True)
                layers.append(LL)
                if i == sigmoid_layer:
                    layers.append(nn.Sigmoid())
                else:
                    layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        def create_emb(self, m, ln):
            emb_l = nn.ModuleList()
            for i in range(0, ln.size):
                n = ln[i]
                EE = nn.EmbeddingBag(n, m, mode=mode, sparse=mode != "max")  # max refuses sparse gradients
                W = np.random.default_rng(20 + i).uniform(
                    low=-np.sqrt(1 / n), high=np.sqrt(1 / n), size=(n, m)
                ).astype(np.float32)
                EE.weight.data = torch.tensor(W, requires_grad=True)
                emb_l.append(EE)
            return emb_l

        def __init__(self, m_spa, ln_emb, ln_bot, ln_top):
            super(DLRM_Net, self).__init__()
            self.emb_l = self.create_emb(m_spa, ln_emb)
            self.bot_l = self.create_mlp(ln_bot, -1)
            self.top_l = self.create_mlp(ln_top, ln_top.size - 2)

        def apply_emb(self, lS_o, lS_i, emb_l, v_W_l):
            ly = []
            for k, sparse_index_group_batch in enumerate(lS_i):
                sparse_offset_group_batch = lS_o[k]
                per_sample_weights = v_W_l[k] if v_W_l is not None else None
                E = emb_l[k]
                V = E(sparse_index_group_batch, sparse_offset_group_batch, per_sample_weights=per_sample_weights)
                ly.append(V)
            return ly

        def interact_features(self, x, ly):
            (batch_size, d) = x.shape
            T = torch.cat([x] + ly, dim=1).view((batch_size, -1, d))
            Z = torch.bmm(T, torch.transpose(T, 1, 2))
            _, ni, nj = Z.shape
            offset = 0
            li = torch.tensor([i for i in range(ni) for j in range(i + offset)])
            lj = torch.tensor([j for i in range(nj) for j in range(i + offset)])
            Zflat = Z[:, li, lj]
            R = torch.cat([x] + [Zflat], dim=1)
            return R

        def forward(self, dense_x, lS_o, lS_i, v_W_l=None):
            x = self.bot_l(dense_x)
            ly = self.apply_emb(lS_o, lS_i, self.emb_l, v_W_l)
            z = self.interact_features(x, ly)
            p = self.top_l(z)
            return p

    ln_emb = np.array(TABLE_SIZES)
    ln_bot = np.array([4, 8, m_spa])
    num_fea = ln_emb.size + 1
    num_int = (num_fea * (num_fea - 1)) // 2 + m_spa
    ln_top = np.array([num_int, 8, 1])
    return DLRM_Net(m_spa, ln_emb, ln_bot, ln_top)


@pytest.mark.parametrize("mode", ["sum", "mean", "max", "sum_weighted"])
def test_dlrm_embedding_bags(mode):
    bag_mode = "sum" if mode == "sum_weighted" else mode

    def program(m):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = make_dlrm(m, bag_mode).double()
        dense, indices, offsets, weights, y = dlrm_batch()
        X = torch.from_numpy(dense)
        lS_i = [torch.from_numpy(i) for i in indices]
        lS_o = [torch.from_numpy(o) for o in offsets]
        v_W_l = [torch.from_numpy(w) for w in weights] if mode == "sum_weighted" else None
        T = torch.from_numpy(y).view(-1, 1)
        loss_fn = nn.BCELoss(reduction="mean")
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for step in range(3):
            Z = model(X, lS_o, lS_i, v_W_l)
            E = loss_fn(Z, T)
            optimizer.zero_grad()
            E.backward()
            emb_grads = [E_.weight.grad.to_dense().clone() for E_ in model.emb_l]
            optimizer.step()
            losses.append(E.item())
        bags = [emb(i, o) for emb, i, o in zip(model.emb_l, lS_i, lS_o)]
        return {"losses": losses, "emb_grads": emb_grads, "bags": bags,
                "params": params_of(model), "sparse": [E_.sparse for E_ in model.emb_l]}

    ours, _ = run_both(program, rtol=1e-9, atol=1e-12)
    assert ours["sparse"] == [bag_mode != "max"] * 3
    # the bags by hand from the trained tables
    dense, indices, offsets, weights, y = dlrm_batch()
    for k in range(3):
        W = ours["params"][f"emb_l.{k}.weight"]
        ends = list(offsets[k][1:]) + [len(indices[k])]
        rows = [W[indices[k][s:e]] for s, e in zip(offsets[k], ends)]
        expected = {"sum": [r.sum(0) for r in rows], "mean": [r.mean(0) for r in rows],
                    "max": [r.max(0) for r in rows], "sum_weighted": [r.sum(0) for r in rows]}[mode]
        np.testing.assert_allclose(ours["bags"][k], np.stack(expected), rtol=1e-12)


def test_embedding_bag_per_sample_weights_include_last_offset():
    """per_sample_weights scale each looked-up row before the sum; include_last_offset closes the last bag
    (torchrec's KeyedJaggedTensor layout), and an empty bag gives zeros."""
    def program(m):
        torch, nn, F = m.torch, m.nn, m.F
        torch.manual_seed(0)
        weight = nn.Parameter(torch.from_numpy(np.random.default_rng(4).standard_normal((8, 3))))
        input = torch.tensor([1, 2, 4, 5, 4, 3, 2, 7])
        offsets = torch.tensor([0, 3, 3, 6, 8])  # the bag [3:3] is empty
        psw = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.25, 3.0, 1.5, 0.75], dtype=torch.float64, requires_grad=True)
        out = F.embedding_bag(input, weight, offsets, mode="sum", per_sample_weights=psw, include_last_offset=True)
        (out * torch.arange(12.0, dtype=torch.float64).view(4, 3)).sum().backward()
        bag = nn.EmbeddingBag.from_pretrained(weight.detach(), mode="mean", include_last_offset=True,
                                              padding_idx=2)
        mean = bag(input, offsets)
        return {"out": out, "weight_grad": weight.grad, "psw_grad": psw.grad, "mean_with_padding": mean}

    ours, _ = run_both(program, rtol=1e-12, atol=1e-14)
    W = np.random.default_rng(4).standard_normal((8, 3))
    idx = [1, 2, 4, 5, 4, 3, 2, 7]
    psw = [0.5, 1.0, 2.0, -1.0, 0.25, 3.0, 1.5, 0.75]
    rows = W[idx] * np.array(psw)[:, None]
    expected = np.stack([rows[0:3].sum(0), np.zeros(3), rows[3:6].sum(0), rows[6:8].sum(0)])
    np.testing.assert_allclose(ours["out"], expected, rtol=1e-12)
    # the padding index is left out of the mean's count
    np.testing.assert_allclose(ours["mean_with_padding"][0], W[[1, 4]].mean(0), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# nn.Embedding(sparse=True) under SGD; padding_idx; max_norm renormalising in place
# ----------------------------------------------------------------------------------------------


def sparse_embedding_sgd(m, optimizer_name):
    torch, nn, optim = m.torch, m.nn, m.optim
    emb = nn.Embedding(10, 3, sparse=True, padding_idx=0).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(np.random.default_rng(5).standard_normal((10, 3))))
        emb.weight[0].fill_(0)
    head = nn.Linear(3, 1).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64))
        head.bias.fill_(0.1)
    params = list(emb.parameters()) + list(head.parameters())
    optimizer = {"sgd": lambda: optim.SGD(params, lr=0.5),
                 "nesterov": lambda: optim.SGD(params, lr=0.5, momentum=0.9, nesterov=True),
                 "adagrad": lambda: optim.Adagrad(params, lr=0.5)}[optimizer_name]()
    x = torch.tensor([[0, 1, 2], [2, 3, 0], [4, 4, 1]])
    target = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    losses, grads = [], []
    for step in range(3):
        optimizer.zero_grad()
        loss = ((head(emb(x).mean(1)).squeeze(1) - target) ** 2).mean()
        loss.backward()
        grads.append(emb.weight.grad.to_dense().clone())
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "weight": emb.weight.detach(), "is_sparse": emb.weight.grad.is_sparse}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled:UserWarning")  # PyTorch's Adagrad
@pytest.mark.parametrize("optimizer_name", ["sgd", "nesterov", "adagrad"])
def test_sparse_embedding(optimizer_name):
    """The optimizers that take PyTorch's sparse gradients: sparse here too, leaving every value as PyTorch's
    sparse update leaves it."""
    ours, theirs = run_both(sparse_embedding_sgd, optimizer_name, rtol=1e-12, atol=1e-14)
    assert ours["is_sparse"] is True
    weight = ours["weight"]
    assert not weight[0].any()  # the padding row: zero, and no gradient moved it
    np.testing.assert_array_equal(weight[5:], np.random.default_rng(5).standard_normal((10, 3))[5:])


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled:UserWarning")
def test_sparse_embedding_sparse_adam():
    """optim.SparseAdam with nn.Embedding(sparse=True), as recommender repositories train their tables."""
    def program(m):
        torch, nn, optim = m.torch, m.nn, m.optim
        emb = nn.Embedding(6, 2, sparse=True).double()
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(np.random.default_rng(6).standard_normal((6, 2))))
        optimizer = optim.SparseAdam(list(emb.parameters()), lr=0.1)
        for x in ([0, 1], [1, 2], [0, 3]):
            optimizer.zero_grad()
            emb(torch.tensor(x)).pow(2).sum().backward()
            optimizer.step()
        return emb.weight.detach()

    run_both(program, rtol=1e-12, atol=1e-14)


def embedding_options(m):
    torch, nn, F = m.torch, m.nn, m.F
    emb = nn.Embedding(8, 4, padding_idx=1, max_norm=1.0).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(np.random.default_rng(7).standard_normal((8, 4))))
        emb.weight[1].fill_(0)
    before = emb.weight.detach().clone()
    x = torch.tensor([[1, 2, 3], [3, 5, 1]])
    out = emb(x)  # rows 2, 3, 5 renormalised in place, before the lookup
    after_lookup = emb.weight.detach().clone()
    (out * torch.linspace(-1, 1, 24, dtype=torch.float64).view(2, 3, 4)).sum().backward()
    # the functional form on a copy, and scale_grad_by_freq
    w = before.clone().requires_grad_(True)
    out2 = F.embedding(x, w, padding_idx=1, scale_grad_by_freq=True)
    out2.pow(2).sum().backward()
    # max_norm with norm_type=1 on a weight that is not a leaf
    w3 = before.clone() * 2
    out3 = F.embedding(torch.tensor([0, 4, 4]), w3, max_norm=0.5, norm_type=1.0)
    return {"before": before, "after_lookup": after_lookup, "out": out, "grad": emb.weight.grad,
            "out2": out2, "grad2": w.grad, "w3": w3, "out3": out3}


def test_embedding_padding_idx_and_max_norm():
    ours, _ = run_both(embedding_options, rtol=1e-12, atol=1e-14)
    before = np.random.default_rng(7).standard_normal((8, 4))
    before[1] = 0
    norms = np.linalg.norm(before, axis=1)
    expected = before.copy()
    for r in (2, 3, 5):
        if norms[r] > 1:
            expected[r] = before[r] * (1.0 / (norms[r] + 1e-7))
    np.testing.assert_allclose(ours["after_lookup"], expected, rtol=1e-12)
    assert not ours["grad"][1].any()  # the padding row gets no gradient
    np.testing.assert_allclose(ours["grad2"][3], 2 * 2 * before[3] / 2)  # looked up twice, scaled by 1/2


# ----------------------------------------------------------------------------------------------
# DIN (Zhou et al. 2018, DeepCTR-Torch): local activation unit, Dice, masked attention pooling
# ----------------------------------------------------------------------------------------------


def make_din(m, n_items=20, emb=4, hidden=(8, 4)):
    torch, nn = m.torch, m.nn

    class Dice(nn.Module):
        def __init__(self, emb_size, dim=2, epsilon=1e-8):
            super(Dice, self).__init__()
            assert dim == 2 or dim == 3
            self.bn = nn.BatchNorm1d(emb_size, eps=epsilon)
            self.sigmoid = nn.Sigmoid()
            self.dim = dim
            if self.dim == 2:
                self.alpha = nn.Parameter(torch.zeros((emb_size,)))
            else:
                self.alpha = nn.Parameter(torch.zeros((emb_size, 1)))

        def forward(self, x):
            assert x.dim() == self.dim
            if self.dim == 2:
                x_p = self.sigmoid(self.bn(x))
                out = self.alpha * (1 - x_p) * x + x_p * x
            else:
                x = torch.transpose(x, 1, 2)
                x_p = self.sigmoid(self.bn(x))
                out = self.alpha * (1 - x_p) * x + x_p * x
                out = torch.transpose(out, 1, 2)
            return out

    class LocalActivationUnit(nn.Module):
        def __init__(self, hidden_units, embedding_dim):
            super(LocalActivationUnit, self).__init__()
            self.fc1 = nn.Linear(4 * embedding_dim, hidden_units[0])
            self.dice = Dice(hidden_units[0], dim=3)
            self.fc2 = nn.Linear(hidden_units[0], hidden_units[1])
            self.dense = nn.Linear(hidden_units[-1], 1)

        def forward(self, query, user_behavior):
            user_behavior_len = user_behavior.size(1)
            queries = query.expand(-1, user_behavior_len, -1)
            attention_input = torch.cat([queries, user_behavior, queries - user_behavior, queries * user_behavior],
                                        dim=-1)
            attention_output = torch.relu(self.fc2(self.dice(self.fc1(attention_input))))
            attention_score = self.dense(attention_output)  # [B, T, 1]
            return attention_score

    class AttentionSequencePoolingLayer(nn.Module):
        def __init__(self, weight_normalization):
            super(AttentionSequencePoolingLayer, self).__init__()
            self.weight_normalization = weight_normalization
            self.local_att = LocalActivationUnit(hidden, emb)

        def forward(self, query, keys, keys_length):
            batch_size, max_length, _ = keys.size()
            keys_masks = torch.arange(max_length, device=keys_length.device, dtype=keys_length.dtype).repeat(
                batch_size, 1)  # [B, T]
            keys_masks = keys_masks < keys_length.view(-1, 1)  # 0, 1 mask
            keys_masks = keys_masks.unsqueeze(1)  # [B, 1, T]
            attention_score = self.local_att(query, keys)  # [B, T, 1]
            outputs = torch.transpose(attention_score, 1, 2)  # [B, 1, T]
            if self.weight_normalization:
                paddings = torch.ones_like(outputs) * (-2 ** 32 + 1)
            else:
                paddings = torch.zeros_like(outputs)
            outputs = torch.where(keys_masks, outputs, paddings)  # [B, 1, T]
            if self.weight_normalization:
                outputs = nn.functional.softmax(outputs, dim=-1)  # [B, 1, T]
            outputs = torch.matmul(outputs, keys)  # [B, 1, E]
            return outputs

    class DIN(nn.Module):
        def __init__(self, weight_normalization):
            super().__init__()
            self.item_emb = nn.Embedding(n_items, emb, padding_idx=0)
            self.attention = AttentionSequencePoolingLayer(weight_normalization)
            self.fc = nn.Linear(2 * emb, 8)
            self.dice = Dice(8, dim=2)
            self.out = nn.Linear(8, 1)

        def forward(self, target_item, history, lengths):
            query = self.item_emb(target_item).unsqueeze(1)
            keys = self.item_emb(history)
            pooled = self.attention(query, keys, lengths).squeeze(1)
            x = self.dice(self.fc(torch.cat([query.squeeze(1), pooled], -1)))
            return self.out(x).squeeze(-1)

    return DIN


@pytest.mark.parametrize("weight_normalization", [False, True])
def test_din(weight_normalization):
    make = lambda m: make_din(m)(weight_normalization)

    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make(m), weights).double()
        with torch.no_grad():  # Dice's alpha starts at zero: give it a value, so its gradient shows everywhere
            for name, p in model.named_parameters():
                if name.endswith("alpha"):
                    p.fill_(0.25)
        rng = np.random.default_rng(18)
        lengths = torch.from_numpy(rng.integers(1, 6, 10))
        history = torch.from_numpy(rng.integers(1, 20, (10, 5))) * (torch.arange(5) < lengths[:, None])
        target_item = torch.from_numpy(rng.integers(1, 20, 10))
        y = torch.from_numpy((rng.random(10) < 0.5).astype(np.float64))
        optimizer = optim.Adagrad(model.parameters(), lr=0.05)
        losses, grads = train(m, model, lambda model: nn.functional.binary_cross_entropy_with_logits(
            model(target_item, history, lengths), y), optimizer, 3)
        params = params_of(model)
        if weight_normalization:
            # the score's bias shifts every logit of a softmax alike: its gradient is rounding noise, which
            # Adagrad scales up to steps of lr; the noise is checked small, the step left uncompared
            params.pop("attention.local_att.dense.bias")
        return {"losses": losses, "grads": grads, "params": params}

    ours, _ = run_both(program, weights_of(make), rtol=1e-8, atol=1e-11)
    if weight_normalization:
        assert abs(ours["grads"]["attention.local_att.dense.bias"]).max() < 1e-14
