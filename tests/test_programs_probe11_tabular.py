# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, UP039  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs (see tests/pytorch_programs.py), as their reference
repositories write them, each trained a few steps from the same weights on synthetic data on chainrule and
on PyTorch, comparing losses, gradients and parameters (float64 to about 1e-10 unless said), and checked
against NumPy by hand where a formula is short.

Recommenders: neural collaborative filtering (NeuMF: GMF and MLP towers, ``BCEWithLogitsLoss``);
factorization machines and DeepFM (the square-of-sum minus sum-of-squares trick, field offsets); FFM, PNN,
AFM, NFM, FiBiNET (SENET, bilinear interactions), xDeepFM's CIN and AutoInt; DCN's cross network
(``x0 * (x @ w) + b + x``) and DCN-V2's; DLRM with ``nn.EmbeddingBag(mode='sum'|'mean'|'max')`` on offsets
and ``per_sample_weights`` and the dot interaction; ``nn.Embedding(sparse=True)`` under SGD, Nesterov and
Adagrad and SparseAdam; ``padding_idx`` and ``max_norm`` renormalising
in place; BPR matrix factorisation (``F.logsigmoid``); SASRec (causal ``MultiheadAttention``, ``*=`` by a
bool mask, indexing by ``np.where``); GRU4Rec (session-parallel batches, hidden reset, TOP1 / BPR(-max));
DIN (Dice, masked attention pooling); two-tower retrieval (in-batch softmax, logQ, masked hits); LightGCN.

Tabular: TabNet's sparsemax and entmax-1.5 by hand (sort, cumsum, gather of the threshold) as
``autograd.Function``s (one writing ``input -= max`` into its caller's tensor), entmax-bisect with a learnt
alpha, ghost batch norm by ``chunk``, the GLU feature transformer and the attentive transformer's prior;
FT-Transformer's tokenizers (per-feature weights by broadcasting, categorical offsets by ``cumsum``, a CLS
token by ``cat`` with ``expand``) with periodic numerical embeddings; NODE's oblivious trees (bin codes by
``//`` and ``%``, a product over depth, data-aware initialisation through ``.data[...]``).

Time series: N-BEATS (trend, seasonality and generic blocks); a TCN (``weight_norm`` and its
parametrization, chomp or ``F.pad``); DeepAR with Gaussian and NegativeBinomial likelihoods (mean scaling,
seeded ancestral sampling); pinball, ``PoissonNLLLoss``, ``GaussianNLLLoss``, ``HuberLoss``; RevIN around
DLinear on a sliding-window dataset by ``unfold``; a seq2seq LSTM with teacher forcing; Autoformer's
auto-correlation (``rfft``/``irfft``, ``roll`` and ``gather`` delay aggregation) with Informer's embeddings
and distilling (the ``torch.__version__ >= '1.5.0'`` check); PatchTST; TimesNet; the Temporal
Fusion Transformer's gated residual networks, variable selection and interpretable attention."""

import itertools
import math
import random

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Synthetic interactions (users x items, implicit feedback)
# ----------------------------------------------------------------------------------------------

N_USERS, N_ITEMS = 12, 20


def interactions(n=64, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, n)
    items = rng.integers(0, N_ITEMS, n)
    labels = ((users + items) % 3 == 0).astype(np.float64)
    return users, items, labels


def train(m, model, loss_of, optimizer, steps):
    """The usual loop: returns the losses, and the gradients of the last step."""
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_of(model)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        losses.append(loss.item())
    return losses, grads


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------------------------
# Neural collaborative filtering (He et al. 2017, NeuMF = GMF + MLP)
# ----------------------------------------------------------------------------------------------


def make_neumf(m, factor_num=8, num_layers=2):
    nn = m.nn
    torch = m.torch

    class NCF(nn.Module):
        def __init__(self, user_num, item_num, factor_num, num_layers, dropout):
            super(NCF, self).__init__()
            self.dropout = dropout
            self.embed_user_GMF = nn.Embedding(user_num, factor_num)
            self.embed_item_GMF = nn.Embedding(item_num, factor_num)
            self.embed_user_MLP = nn.Embedding(user_num, factor_num * (2 ** (num_layers - 1)))
            self.embed_item_MLP = nn.Embedding(item_num, factor_num * (2 ** (num_layers - 1)))
            MLP_modules = []
            for i in range(num_layers):
                input_size = factor_num * (2 ** (num_layers - i))
                MLP_modules.append(nn.Dropout(p=self.dropout))
                MLP_modules.append(nn.Linear(input_size, input_size // 2))
                MLP_modules.append(nn.ReLU())
            self.MLP_layers = nn.Sequential(*MLP_modules)
            self.predict_layer = nn.Linear(factor_num * 2, 1)
            self._init_weight_()

        def _init_weight_(self):
            nn.init.normal_(self.embed_user_GMF.weight, std=0.01)
            nn.init.normal_(self.embed_user_MLP.weight, std=0.01)
            nn.init.normal_(self.embed_item_GMF.weight, std=0.01)
            nn.init.normal_(self.embed_item_MLP.weight, std=0.01)
            for m in self.MLP_layers:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
            nn.init.kaiming_uniform_(self.predict_layer.weight, a=1, nonlinearity='sigmoid')
            for m in self.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.data.zero_()

        def forward(self, user, item):
            embed_user_GMF = self.embed_user_GMF(user)
            embed_item_GMF = self.embed_item_GMF(item)
            output_GMF = embed_user_GMF * embed_item_GMF
            embed_user_MLP = self.embed_user_MLP(user)
            embed_item_MLP = self.embed_item_MLP(item)
            interaction = torch.cat((embed_user_MLP, embed_item_MLP), -1)
            output_MLP = self.MLP_layers(interaction)
            concat = torch.cat((output_GMF, output_MLP), -1)
            prediction = self.predict_layer(concat)
            return prediction.view(-1)

    return NCF(N_USERS, N_ITEMS, factor_num, num_layers, 0.0)


def neumf(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_neumf(m), weights).double()
    users, items, labels = (torch.from_numpy(a) for a in interactions())
    loss_function = nn.BCEWithLogitsLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses, grads = train(m, model, lambda model: loss_function(model(users, items), labels), optimizer, 4)
    with torch.no_grad():
        scores = model(torch.tensor([0, 0, 0]), torch.tensor([1, 2, 3]))
        _, top = torch.topk(model(torch.zeros(N_ITEMS, dtype=torch.long), torch.arange(N_ITEMS)), 5)
    return {"losses": losses, "grads": grads, "params": params_of(model), "scores": scores, "top": top}


def test_neural_collaborative_filtering():
    ours, _ = run_both(neumf, weights_of(make_neumf), rtol=1e-9, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
    # an item that no interaction names gets no gradient in its embedding rows
    users, items, _ = interactions()
    unseen = sorted(set(range(N_ITEMS)) - set(items))
    for row in unseen:
        assert not ours["grads"]["embed_item_GMF.weight"][row].any()


# ----------------------------------------------------------------------------------------------
# Factorization machines and DeepFM (rixwew/pytorch-fm's layers)
# ----------------------------------------------------------------------------------------------

FIELD_DIMS = [4, 6, 3, 5]


def fm_data(n=48, seed=1):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.integers(0, d, n) for d in FIELD_DIMS], 1)
    y = (x[:, 0] + x[:, 2] > 3).astype(np.float64)
    return x, y


def make_deepfm(m, embed_dim=4, mlp_dims=(16, 8), dropout=0.0):
    torch, nn = m.torch, m.nn

    class FeaturesLinear(nn.Module):
        def __init__(self, field_dims, output_dim=1):
            super().__init__()
            self.fc = nn.Embedding(sum(field_dims), output_dim)
            self.bias = nn.Parameter(torch.zeros((output_dim,)))
            self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)

        def forward(self, x):
            x = x + x.new_tensor(self.offsets).unsqueeze(0)
            return torch.sum(self.fc(x), dim=1) + self.bias

    class FeaturesEmbedding(nn.Module):
        def __init__(self, field_dims, embed_dim):
            super().__init__()
            self.embedding = nn.Embedding(sum(field_dims), embed_dim)
            self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)
            nn.init.xavier_uniform_(self.embedding.weight.data)

        def forward(self, x):
            x = x + x.new_tensor(self.offsets).unsqueeze(0)
            return self.embedding(x)

    class FactorizationMachine(nn.Module):
        def __init__(self, reduce_sum=True):
            super().__init__()
            self.reduce_sum = reduce_sum

        def forward(self, x):
            square_of_sum = torch.sum(x, dim=1) ** 2
            sum_of_square = torch.sum(x ** 2, dim=1)
            ix = square_of_sum - sum_of_square
            if self.reduce_sum:
                ix = torch.sum(ix, dim=1, keepdim=True)
            return 0.5 * ix

    class MultiLayerPerceptron(nn.Module):
        def __init__(self, input_dim, embed_dims, dropout, output_layer=True):
            super().__init__()
            layers = list()
            for embed_dim in embed_dims:
                layers.append(nn.Linear(input_dim, embed_dim))
                layers.append(nn.BatchNorm1d(embed_dim))
                layers.append(nn.ReLU())
                layers.append(nn.Dropout(p=dropout))
                input_dim = embed_dim
            if output_layer:
                layers.append(nn.Linear(input_dim, 1))
            self.mlp = nn.Sequential(*layers)

        def forward(self, x):
            return self.mlp(x)

    class DeepFactorizationMachineModel(nn.Module):
        def __init__(self, field_dims, embed_dim, mlp_dims, dropout):
            super().__init__()
            self.linear = FeaturesLinear(field_dims)
            self.fm = FactorizationMachine(reduce_sum=True)
            self.embedding = FeaturesEmbedding(field_dims, embed_dim)
            self.embed_output_dim = len(field_dims) * embed_dim
            self.mlp = MultiLayerPerceptron(self.embed_output_dim, mlp_dims, dropout)

        def forward(self, x):
            embed_x = self.embedding(x)
            x = self.linear(x) + self.fm(embed_x) + self.mlp(embed_x.view(-1, self.embed_output_dim))
            return torch.sigmoid(x.squeeze(1))

    return DeepFactorizationMachineModel(FIELD_DIMS, embed_dim, mlp_dims, dropout)


def deepfm(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_deepfm(m), weights).double()
    x, y = (torch.from_numpy(a) for a in fm_data())
    criterion = nn.BCELoss()
    optimizer = optim.Adam(params=model.parameters(), lr=0.01, weight_decay=1e-6)
    losses, grads = train(m, model, lambda model: criterion(model(x), y.float().double()), optimizer, 4)
    model.eval()
    with torch.no_grad():
        predictions = model(x[:6])
        # the FM trick against the sum over pairs it stands for
        e = model.embedding(x[:6])
        pairs = sum((e[:, i] * e[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4))
        trick = model.fm(e).squeeze(1)
    return {"losses": losses, "grads": grads, "params": params_of(model), "predictions": predictions,
            "running_mean": model.mlp.mlp[1].running_mean, "pairs": pairs, "trick": trick}


def test_deepfm():
    # atol: the Linear biases before BatchNorm get gradients of rounding noise only, which Adam scales up
    ours, _ = run_both(deepfm, weights_of(make_deepfm), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["trick"], ours["pairs"], rtol=1e-12, atol=1e-14)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# Deep & Cross Network (Wang et al. 2017) and DCN-V2's cross layer
# ----------------------------------------------------------------------------------------------


def make_dcn(m, input_dim=6, num_layers=3, v2=False):
    torch, nn = m.torch, m.nn

    class CrossNetwork(nn.Module):
        def __init__(self, input_dim, num_layers):
            super().__init__()
            self.num_layers = num_layers
            self.w = nn.ParameterList([nn.Parameter(torch.randn(input_dim, 1) * 0.1) for _ in range(num_layers)])
            self.b = nn.ParameterList([nn.Parameter(torch.zeros((input_dim,))) for _ in range(num_layers)])

        def forward(self, x):
            x0 = x
            for i in range(self.num_layers):
                xw = x @ self.w[i]
                x = x0 * xw + self.b[i] + x
            return x

    class CrossNetV2(nn.Module):
        def __init__(self, input_dim, num_layers):
            super().__init__()
            self.cross_layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

        def forward(self, X_0):
            X_i = X_0
            for layer in self.cross_layers:
                X_i = X_i + X_0 * layer(X_i)
            return X_i

    class DCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.cn = (CrossNetV2 if v2 else CrossNetwork)(input_dim, num_layers)
            self.mlp = nn.Sequential(nn.Linear(input_dim, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
            self.linear = nn.Linear(8 + input_dim, 1)

        def forward(self, x):
            x_l1 = self.cn(x)
            h_l2 = self.mlp(x)
            x_stack = torch.cat([x_l1, h_l2], dim=1)
            return self.linear(x_stack).squeeze(1)

    return DCN()


@pytest.mark.parametrize("v2", [False, True], ids=["dcn", "dcn_v2"])
def test_deep_and_cross_network(v2):
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_dcn(m, v2=v2), weights).double()
        rng = np.random.default_rng(2)
        x = torch.from_numpy(rng.standard_normal((32, 6)))
        y = torch.from_numpy((rng.random(32) < 0.4).astype(np.float64))
        criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.5, dtype=torch.float64))
        optimizer = optim.AdamW(model.parameters(), lr=0.01)
        losses, grads = train(m, model, lambda model: criterion(model(x), y), optimizer, 4)
        cross = model.cn(x[:3])
        return {"losses": losses, "grads": grads, "params": params_of(model), "cross": cross}

    ours, _ = run_both(program, weights_of(lambda m: make_dcn(m, v2=v2)), rtol=1e-9, atol=1e-12)
    if not v2:  # one cross layer by hand: x1 = x0 (x0 . w) + b + x0
        rng = np.random.default_rng(2)
        x0 = rng.standard_normal((32, 6))[:3]
        p = ours["params"]
        x = x0
        for i in range(3):
            x = x0 * (x @ p[f"cn.w.{i}"]) + p[f"cn.b.{i}"] + x
        np.testing.assert_allclose(ours["cross"], x, rtol=1e-12)


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
# Matrix factorisation with BPR loss (Rendle et al. 2009)
# ----------------------------------------------------------------------------------------------


def make_bpr(m):
    nn = m.nn

    class BPR(nn.Module):
        def __init__(self, user_num, item_num, factor_num):
            super(BPR, self).__init__()
            self.embed_user = nn.Embedding(user_num, factor_num)
            self.embed_item = nn.Embedding(item_num, factor_num)
            nn.init.normal_(self.embed_user.weight, std=0.01)
            nn.init.normal_(self.embed_item.weight, std=0.01)

        def forward(self, user, item_i, item_j):
            user = self.embed_user(user)
            item_i = self.embed_item(item_i)
            item_j = self.embed_item(item_j)
            prediction_i = (user * item_i).sum(dim=-1)
            prediction_j = (user * item_j).sum(dim=-1)
            return prediction_i, prediction_j

    return BPR(N_USERS, N_ITEMS, 6)


def bpr(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_bpr(m), weights).double()
    rng = np.random.default_rng(8)
    user = torch.from_numpy(rng.integers(0, N_USERS, 40))
    item_i = torch.from_numpy(rng.integers(0, N_ITEMS, 40))
    item_j = torch.from_numpy(rng.integers(0, N_ITEMS, 40))
    optimizer = optim.SGD(model.parameters(), lr=0.5, weight_decay=0.001)

    def loss_of(model):
        prediction_i, prediction_j = model(user, item_i, item_j)
        loss = -F.logsigmoid(prediction_i - prediction_j).sum() / len(user)
        reg = 1e-3 * (model.embed_user(user).norm(2).pow(2) + model.embed_item(item_i).norm(2).pow(2))
        return loss + reg

    losses, grads = train(m, model, loss_of, optimizer, 5)
    with torch.no_grad():
        pi, pj = model(user, item_i, item_j)
        auc = (pi > pj).float().mean()
    return {"losses": losses, "grads": grads, "params": params_of(model), "auc": auc}


def test_bpr_matrix_factorisation():
    ours, _ = run_both(bpr, weights_of(make_bpr), rtol=1e-9, atol=1e-13)
    assert math.isclose(ours["losses"][0], math.log(2), rel_tol=1e-3)  # tiny initial factors: sigmoid(0)


# ----------------------------------------------------------------------------------------------
# TabNet (Arik & Pfister 2019, dreamquark-ai/tabnet): sparsemax / entmax by hand, ghost batch norm
# ----------------------------------------------------------------------------------------------


def tabnet_functions(m):
    torch = m.torch
    Function = torch.autograd.Function

    def _make_ix_like(input, dim=0):
        d = input.size(dim)
        rho = torch.arange(1, d + 1, device=input.device, dtype=input.dtype)
        view = [1] * input.dim()
        view[0] = -1
        return rho.view(view).transpose(0, dim)

    class SparsemaxFunction(Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input -= max_val  # same numerical stability trick as for softmax
            tau, supp_size = SparsemaxFunction._threshold_and_support(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0

            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            input_srt, _ = torch.sort(input, descending=True, dim=dim)
            input_cumsum = input_srt.cumsum(dim) - 1
            rhos = _make_ix_like(input, dim)
            support = rhos * input_srt > input_cumsum

            support_size = support.sum(dim=dim).unsqueeze(dim)
            tau = input_cumsum.gather(dim, support_size - 1)
            tau /= support_size.to(input.dtype)
            return tau, support_size

    class Entmax15Function(Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input = input - max_val  # same numerical stability trick as for softmax
            input = input / 2  # divide by 2 to solve actual Entmax
            tau_star, _ = Entmax15Function._threshold_and_support(input, dim)
            output = torch.clamp(input - tau_star, min=0) ** 2
            ctx.save_for_backward(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            Y, = ctx.saved_tensors
            gppr = Y.sqrt()  # = 1 / g'' (Y)
            dX = grad_output * gppr
            q = dX.sum(ctx.dim) / gppr.sum(ctx.dim)
            q = q.unsqueeze(ctx.dim)
            dX -= q * gppr
            return dX, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            Xsrt, _ = torch.sort(input, descending=True, dim=dim)
            rho = _make_ix_like(input, dim)
            mean = Xsrt.cumsum(dim) / rho
            mean_sq = (Xsrt ** 2).cumsum(dim) / rho
            ss = rho * (mean_sq - mean ** 2)
            delta = (1 - ss) / rho
            delta_nz = torch.clamp(delta, 0)
            tau = mean - torch.sqrt(delta_nz)
            support_size = (tau <= Xsrt).sum(dim).unsqueeze(dim)
            tau_star = tau.gather(dim, support_size - 1)
            return tau_star, support_size

    return SparsemaxFunction, Entmax15Function


def sparse_maps(m):
    torch = m.torch
    Sparsemax, Entmax15 = tabnet_functions(m)
    rng = np.random.default_rng(9)
    z = torch.from_numpy(rng.standard_normal((5, 7)) * 2)
    # the Function (its hand-written backward), and the same maths left to autograd
    x1 = z.clone().requires_grad_(True)
    a = x1 * 1.0
    p = Sparsemax.apply(a, -1)
    w = torch.from_numpy(rng.standard_normal((5, 7)))
    (p * w).sum().backward()
    x2 = z.clone().requires_grad_(True)
    shifted = x2 - x2.max(dim=-1, keepdim=True)[0]
    tau, _ = Sparsemax._threshold_and_support(shifted, dim=-1)
    (torch.clamp(shifted - tau, min=0) * w).sum().backward()
    # entmax over dim 0 of a 3-D input
    x3 = torch.from_numpy(rng.standard_normal((6, 2, 3)) * 3).requires_grad_(True)
    e = Entmax15.apply(x3, 0)
    (e * torch.from_numpy(rng.standard_normal((6, 2, 3)))).sum().backward()
    return {"sparsemax": p, "shifted_in_place": a.detach(), "grad": x1.grad, "grad_autograd": x2.grad,
            "entmax": e, "entmax_grad": x3.grad}


def test_sparsemax_and_entmax():
    ours, _ = run_both(sparse_maps, rtol=1e-10, atol=1e-12)
    p = ours["sparsemax"]
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-12)
    assert (p == 0).any() and (p >= 0).all()
    # forward wrote ``input -= max_val`` into the caller's tensor, as PyTorch's Function does
    z = np.random.default_rng(9).standard_normal((5, 7)) * 2
    np.testing.assert_allclose(ours["shifted_in_place"], z - z.max(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(ours["grad"], ours["grad_autograd"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["entmax"].sum(0), 1, rtol=1e-12)


def entmax_bisect(m):
    """entmax's EntmaxBisectFunction (deep-spin/entmax): classmethod forward / backward, a learnt alpha
    whose gradient comes back in the expanded shape (reduced to alpha's own by autograd), in-place bisection."""
    torch = m.torch
    Function = torch.autograd.Function

    class EntmaxBisectFunction(Function):
        @classmethod
        def _gp(cls, x, alpha): return x ** (alpha - 1)
        @classmethod
        def _gp_inv(cls, y, alpha): return y ** (1 / (alpha - 1))
        @classmethod
        def _p(cls, X, alpha): return cls._gp_inv(torch.clamp(X, min=0), alpha)
        @classmethod
        def forward(cls, ctx, X, alpha=1.5, dim=-1, n_iter=50, ensure_sum_one=True):
            if not isinstance(alpha, torch.Tensor):
                alpha = torch.tensor(alpha, dtype=X.dtype, device=X.device)
            alpha_shape = list(X.shape)
            alpha_shape[dim] = 1
            alpha = alpha.expand(*alpha_shape)
            ctx.alpha = alpha
            ctx.dim = dim
            d = X.shape[dim]
            X = X * (alpha - 1)
            max_val, _ = X.max(dim=dim, keepdim=True)
            tau_lo = max_val - cls._gp(1, alpha)
            tau_hi = max_val - cls._gp(1 / d, alpha)
            f_lo = cls._p(X - tau_lo, alpha).sum(dim) - 1
            dm = tau_hi - tau_lo
            for it in range(n_iter):
                dm /= 2
                tau_m = tau_lo + dm
                p_m = cls._p(X - tau_m, alpha)
                f_m = p_m.sum(dim) - 1
                mask = (f_m * f_lo >= 0).unsqueeze(dim)
                tau_lo = torch.where(mask, tau_m, tau_lo)
            if ensure_sum_one:
                p_m /= p_m.sum(dim=dim).unsqueeze(dim=dim)
            ctx.save_for_backward(p_m)
            return p_m
        @classmethod
        def backward(cls, ctx, dY):
            Y, = ctx.saved_tensors
            gppr = torch.where(Y > 0, Y ** (2 - ctx.alpha), Y.new_zeros(1))
            dX = dY * gppr
            q = dX.sum(ctx.dim) / gppr.sum(ctx.dim)
            q = q.unsqueeze(ctx.dim)
            dX -= q * gppr
            d_alpha = None
            if ctx.needs_input_grad[1]:
                S = torch.where(Y > 0, Y * torch.log(Y), Y.new_zeros(1))
                ent = S.sum(ctx.dim).unsqueeze(ctx.dim)
                Y_skewed = gppr / gppr.sum(ctx.dim).unsqueeze(ctx.dim)
                d_alpha = dY * (Y - Y_skewed) / ((ctx.alpha - 1) ** 2)
                d_alpha -= dY * (S - Y_skewed * ent) / (ctx.alpha - 1)
                d_alpha = d_alpha.sum(ctx.dim).unsqueeze(ctx.dim)
            return dX, d_alpha, None, None, None
    out = {}
    X = torch.tensor(np.random.default_rng(0).standard_normal((3, 6)), requires_grad=True)
    w = torch.tensor(np.random.default_rng(1).standard_normal((3, 6)))
    for name, alpha in (("scalar", torch.tensor(1.3, dtype=torch.float64, requires_grad=True)),
                        ("one", torch.tensor([1.7], dtype=torch.float64, requires_grad=True)),
                        ("rows", torch.tensor([[1.2], [1.5], [2.0]], dtype=torch.float64, requires_grad=True)),
                        ("number", 1.5)):
        y = EntmaxBisectFunction.apply(X, alpha, -1, 30)
        inputs = [X] + ([alpha] if isinstance(alpha, torch.Tensor) else [])
        out[name] = [y, *torch.autograd.grad((y * w).sum(), inputs)]
    return out


def test_entmax_bisect_learnt_alpha():
    ours, _ = run_both(entmax_bisect, rtol=1e-9, atol=1e-12)
    for name, (y, *grads) in ours.items():
        np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-12)
    assert ours["scalar"][2].shape == () and ours["one"][2].shape == (1,) and ours["rows"][2].shape == (3, 1)
    # alpha = 2 is sparsemax: the bisection's answer for the third row
    z = np.random.default_rng(0).standard_normal((3, 6))[2]
    s = np.sort(z)[::-1]
    k = np.arange(1, 7)
    support = 1 + k * s > np.cumsum(s)
    tau = (np.cumsum(s)[support][-1] - 1) / k[support][-1]
    np.testing.assert_allclose(ours["rows"][0][2], np.maximum(z - tau, 0), atol=1e-8)


def make_tabnet(m, input_dim=6, output_dim=3, n_d=4, n_a=4, n_steps=2, gamma=1.3, virtual_batch_size=8,
                mask_type="sparsemax"):
    torch, nn = m.torch, m.nn
    Sparsemax, Entmax15 = tabnet_functions(m)

    def initialize_non_glu(module, input_dim, output_dim):
        gain_value = np.sqrt((input_dim + output_dim) / np.sqrt(4 * input_dim))
        nn.init.xavier_normal_(module.weight, gain=gain_value)

    def initialize_glu(module, input_dim, output_dim):
        gain_value = np.sqrt((input_dim + output_dim) / np.sqrt(input_dim))
        nn.init.xavier_normal_(module.weight, gain=gain_value)

    class GBN(nn.Module):
        def __init__(self, input_dim, virtual_batch_size=128, momentum=0.01):
            super(GBN, self).__init__()
            self.input_dim = input_dim
            self.virtual_batch_size = virtual_batch_size
            self.bn = nn.BatchNorm1d(self.input_dim, momentum=momentum)

        def forward(self, x):
            chunks = x.chunk(int(np.ceil(x.shape[0] / self.virtual_batch_size)), 0)
            res = [self.bn(x_) for x_ in chunks]
            return torch.cat(res, dim=0)

    class GLU_Layer(nn.Module):
        def __init__(self, input_dim, output_dim, fc=None, virtual_batch_size=128, momentum=0.02):
            super(GLU_Layer, self).__init__()
            self.output_dim = output_dim
            if fc:
                self.fc = fc
            else:
                self.fc = nn.Linear(input_dim, 2 * output_dim, bias=False)
            initialize_glu(self.fc, input_dim, 2 * output_dim)
            self.bn = GBN(2 * output_dim, virtual_batch_size=virtual_batch_size, momentum=momentum)

        def forward(self, x):
            x = self.fc(x)
            x = self.bn(x)
            out = torch.mul(x[:, : self.output_dim], torch.sigmoid(x[:, self.output_dim:]))
            return out

    class GLU_Block(nn.Module):
        def __init__(self, input_dim, output_dim, n_glu=2, first=False, shared_layers=None,
                     virtual_batch_size=128, momentum=0.02):
            super(GLU_Block, self).__init__()
            self.first = first
            self.shared_layers = shared_layers
            self.n_glu = n_glu
            self.glu_layers = nn.ModuleList()
            params = {"virtual_batch_size": virtual_batch_size, "momentum": momentum}
            fc = shared_layers[0] if shared_layers else None
            self.glu_layers.append(GLU_Layer(input_dim, output_dim, fc=fc, **params))
            for glu_id in range(1, self.n_glu):
                fc = shared_layers[glu_id] if shared_layers else None
                self.glu_layers.append(GLU_Layer(output_dim, output_dim, fc=fc, **params))

        def forward(self, x):
            scale = torch.sqrt(torch.FloatTensor([0.5]).to(x.device))
            if self.first:  # the first layer of the block has no scale multiplication
                x = self.glu_layers[0](x)
                layers_left = range(1, self.n_glu)
            else:
                layers_left = range(self.n_glu)
            for glu_id in layers_left:
                x = torch.add(x, self.glu_layers[glu_id](x))
                x = x * scale
            return x

    class FeatTransformer(nn.Module):
        def __init__(self, input_dim, output_dim, shared_layers, n_glu_independent, virtual_batch_size=128,
                     momentum=0.02):
            super(FeatTransformer, self).__init__()
            params = {"n_glu": len(shared_layers), "virtual_batch_size": virtual_batch_size, "momentum": momentum}
            self.shared = GLU_Block(input_dim, output_dim, first=True, shared_layers=shared_layers, **params)
            params["n_glu"] = n_glu_independent
            self.specifics = GLU_Block(output_dim, output_dim, first=False, **params)

        def forward(self, x):
            x = self.shared(x)
            x = self.specifics(x)
            return x

    class AttentiveTransformer(nn.Module):
        def __init__(self, input_dim, group_dim, virtual_batch_size=128, momentum=0.02, mask_type="sparsemax"):
            super(AttentiveTransformer, self).__init__()
            self.fc = nn.Linear(input_dim, group_dim, bias=False)
            initialize_non_glu(self.fc, input_dim, group_dim)
            self.bn = GBN(group_dim, virtual_batch_size=virtual_batch_size, momentum=momentum)
            self.mask_type = mask_type

        def forward(self, priors, processed_feat):
            x = self.fc(processed_feat)
            x = self.bn(x)
            x = torch.mul(x, priors)
            if self.mask_type == "sparsemax":
                x = Sparsemax.apply(x, -1)
            else:
                x = Entmax15.apply(x, -1)
            return x

    class TabNetEncoder(nn.Module):
        def __init__(self):
            super(TabNetEncoder, self).__init__()
            self.n_d, self.n_a, self.n_steps, self.gamma = n_d, n_a, n_steps, gamma
            self.epsilon = 1e-15
            self.initial_bn = nn.BatchNorm1d(input_dim, momentum=0.01)
            shared_feat_transform = nn.ModuleList()
            for i in range(2):
                if i == 0:
                    shared_feat_transform.append(nn.Linear(input_dim, 2 * (n_d + n_a), bias=False))
                else:
                    shared_feat_transform.append(nn.Linear(n_d + n_a, 2 * (n_d + n_a), bias=False))
            self.initial_splitter = FeatTransformer(input_dim, n_d + n_a, shared_feat_transform, 2,
                                                    virtual_batch_size, 0.02)
            self.feat_transformers = nn.ModuleList()
            self.att_transformers = nn.ModuleList()
            for step in range(n_steps):
                self.feat_transformers.append(FeatTransformer(input_dim, n_d + n_a, shared_feat_transform, 2,
                                                              virtual_batch_size, 0.02))
                self.att_transformers.append(AttentiveTransformer(n_a, input_dim, virtual_batch_size, 0.02,
                                                                  mask_type))

        def forward(self, x, prior=None):
            x = self.initial_bn(x)
            bs = x.shape[0]
            if prior is None:
                prior = torch.ones((bs, input_dim)).to(x.device).to(x.dtype)
            M_loss = 0
            att = self.initial_splitter(x)[:, self.n_d:]
            steps_output = []
            for step in range(self.n_steps):
                M = self.att_transformers[step](prior, att)
                M_loss += torch.mean(torch.sum(torch.mul(M, torch.log(M + self.epsilon)), dim=1))
                prior = torch.mul(self.gamma - M, prior)
                masked_x = torch.mul(M, x)
                out = self.feat_transformers[step](masked_x)
                d = nn.ReLU()(out[:, : self.n_d])
                steps_output.append(d)
                att = out[:, self.n_d:]
            M_loss /= self.n_steps
            return steps_output, M_loss

    class TabNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = TabNetEncoder()
            self.final_mapping = nn.Linear(n_d, output_dim, bias=False)
            initialize_non_glu(self.final_mapping, n_d, output_dim)

        def forward(self, x):
            steps_output, M_loss = self.encoder(x)
            res = torch.sum(torch.stack(steps_output, dim=0), dim=0)
            return self.final_mapping(res), M_loss

    return TabNet()


@pytest.mark.parametrize("mask_type", ["sparsemax", "entmax"])
def test_tabnet(mask_type):
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_tabnet(m, mask_type=mask_type), weights).double()
        rng = np.random.default_rng(10)
        X = torch.from_numpy(rng.standard_normal((20, 6)))  # 20 rows: ghost batches of 7, 7 and 6
        y = torch.from_numpy(rng.integers(0, 3, 20))
        optimizer = optim.Adam(model.parameters(), lr=2e-2)
        lambda_sparse = 1e-3
        losses = []
        for step in range(3):
            optimizer.zero_grad()
            output, M_loss = model(X)
            loss = nn.functional.cross_entropy(output, y) - lambda_sparse * M_loss
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            out, _ = model(X[:5])
        return {"losses": losses, "grads": grads, "params": params_of(model), "eval": out,
                "buffers": {k: v for k, v in model.state_dict().items() if "running" in k}}

    run_both(program, weights_of(lambda m: make_tabnet(m, mask_type=mask_type)), rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# FT-Transformer (Gorishniy et al. 2021, yandex-research/rtdl) and periodic numerical embeddings
# ----------------------------------------------------------------------------------------------

CARDINALITIES = [3, 5, 2]


def tabular_data(n=16, n_num=4, seed=11):
    rng = np.random.default_rng(seed)
    x_num = rng.standard_normal((n, n_num))
    x_cat = np.stack([rng.integers(0, c, n) for c in CARDINALITIES], 1)
    y = x_num[:, 0] - 0.5 * x_num[:, 1] + (x_cat[:, 0] == 1) + 0.1 * rng.standard_normal(n)
    return x_num, x_cat, y


def make_ft_transformer(m, n_num=4, d_token=8, n_blocks=2, periodic=False):
    torch, nn = m.torch, m.nn
    Tensor = torch.Tensor

    def _initialize(t, d):
        d_sqrt_inv = 1 / math.sqrt(d)
        nn.init.uniform_(t, a=-d_sqrt_inv, b=d_sqrt_inv)

    class NumericalFeatureTokenizer(nn.Module):
        def __init__(self, n_features, d_token, bias):
            super().__init__()
            self.weight = nn.Parameter(Tensor(n_features, d_token))
            self.bias = nn.Parameter(Tensor(n_features, d_token)) if bias else None
            for parameter in [self.weight, self.bias]:
                if parameter is not None:
                    _initialize(parameter, d_token)

        def forward(self, x):
            x = self.weight[None] * x[..., None]
            if self.bias is not None:
                x = x + self.bias[None]
            return x

    class CategoricalFeatureTokenizer(nn.Module):
        def __init__(self, cardinalities, d_token, bias):
            super().__init__()
            category_offsets = torch.tensor([0] + cardinalities[:-1]).cumsum(0)
            self.register_buffer('category_offsets', category_offsets, persistent=False)
            self.embeddings = nn.Embedding(sum(cardinalities), d_token)
            self.bias = nn.Parameter(Tensor(len(cardinalities), d_token)) if bias else None
            for parameter in [self.embeddings.weight, self.bias]:
                if parameter is not None:
                    _initialize(parameter, d_token)

        def forward(self, x):
            x = self.embeddings(x + self.category_offsets[None])
            if self.bias is not None:
                x = x + self.bias[None]
            return x

    class PeriodicEmbeddings(nn.Module):
        """rtdl_num_embeddings: sin/cos of 2 pi c x with per-feature frequencies, then a per-feature linear."""

        def __init__(self, n_features, d_embedding, n_frequencies=3, frequency_init_scale=0.5):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n_features, n_frequencies))
            nn.init.trunc_normal_(self.weight, 0.0, frequency_init_scale, a=-3 * frequency_init_scale,
                                  b=3 * frequency_init_scale)
            self.linear_weight = nn.Parameter(torch.empty(n_features, 2 * n_frequencies, d_embedding))
            self.linear_bias = nn.Parameter(torch.empty(n_features, d_embedding))
            _initialize(self.linear_weight, 2 * n_frequencies)
            _initialize(self.linear_bias, 2 * n_frequencies)

        def forward(self, x):
            x = 2 * math.pi * self.weight * x[..., None]
            x = torch.cat([torch.cos(x), torch.sin(x)], -1)
            x = (x[..., None, :] @ self.linear_weight).squeeze(-2)
            x = x + self.linear_bias
            return torch.relu(x)

    class CLSToken(nn.Module):
        def __init__(self, d_token):
            super().__init__()
            self.weight = nn.Parameter(Tensor(d_token))
            _initialize(self.weight, d_token)

        def expand(self, *leading_dimensions):
            if not leading_dimensions:
                return self.weight
            new_dims = (1,) * (len(leading_dimensions) - 1)
            return self.weight.view(*new_dims, -1).expand(*leading_dimensions, -1)

        def forward(self, x):
            return torch.cat([x, self.expand(len(x), 1)], dim=1)

    class FTTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_tokenizer = (PeriodicEmbeddings(n_num, d_token) if periodic
                                  else NumericalFeatureTokenizer(n_num, d_token, True))
            self.cat_tokenizer = CategoricalFeatureTokenizer(CARDINALITIES, d_token, True)
            self.cls_token = CLSToken(d_token)
            layer = nn.TransformerEncoderLayer(d_token, nhead=2, dim_feedforward=16, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, n_blocks, enable_nested_tensor=False)
            self.head = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU(), nn.Linear(d_token, 1))

        def forward(self, x_num, x_cat):
            x = torch.cat([self.num_tokenizer(x_num), self.cat_tokenizer(x_cat)], dim=1)
            x = self.cls_token(x)
            x = self.transformer(x)
            return self.head(x[:, -1]).squeeze(-1)

    return FTTransformer()


@pytest.mark.parametrize("periodic", [False, True], ids=["linear_tokens", "periodic"])
def test_ft_transformer(periodic):
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_ft_transformer(m, periodic=periodic), weights).double()
        x_num, x_cat, y = tabular_data()
        x_num, x_cat, y = torch.from_numpy(x_num), torch.from_numpy(x_cat), torch.from_numpy(y)

        def needs_wd(name):
            return all(x not in name for x in ['tokenizer', '.norm', '.bias', 'cls_token'])

        parameters_with_wd = [v for k, v in model.named_parameters() if needs_wd(k)]
        parameters_without_wd = [v for k, v in model.named_parameters() if not needs_wd(k)]
        optimizer = optim.AdamW([{'params': parameters_with_wd}, {'params': parameters_without_wd,
                                                                  'weight_decay': 0.0}], lr=1e-2, weight_decay=1e-2)
        losses, grads = train(m, model, lambda model: nn.functional.mse_loss(model(x_num, x_cat), y), optimizer, 3)
        tokens = model.cat_tokenizer(x_cat[:2])
        return {"losses": losses, "grads": grads, "params": params_of(model), "tokens": tokens,
                "offsets": model.cat_tokenizer.category_offsets,
                "state_keys": sorted(model.state_dict().keys())}

    ours, _ = run_both(program, weights_of(lambda m: make_ft_transformer(m, periodic=periodic)), rtol=1e-8,
                       atol=1e-10)
    np.testing.assert_array_equal(ours["offsets"], [0, 3, 8])
    assert "cat_tokenizer.category_offsets" not in ours["state_keys"]  # persistent=False


# ----------------------------------------------------------------------------------------------
# Synthetic series
# ----------------------------------------------------------------------------------------------


def series(n=80, seed=12):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 5 + 0.05 * t + np.sin(2 * np.pi * t / 12) + 0.2 * rng.standard_normal(n)


def windows(m, x, backcast_length, forecast_length, step=1):
    """A sliding-window dataset: every (history, future) pair of a 1-D series, by ``unfold``."""
    torch = m.torch
    w = torch.as_tensor(x).unfold(0, backcast_length + forecast_length, step)
    return w[:, :backcast_length], w[:, backcast_length:]


# ----------------------------------------------------------------------------------------------
# N-BEATS (Oreshkin et al. 2020; philipperemy/n-beats): generic, trend and seasonality blocks
# ----------------------------------------------------------------------------------------------


def make_nbeats(m, backcast_length=12, forecast_length=4, units=16, thetas_dim=(3, 6)):
    torch, nn, F = m.torch, m.nn, m.F

    def linear_space(backcast_length, forecast_length, is_forecast=True):
        horizon = forecast_length if is_forecast else backcast_length
        return np.arange(0, horizon) / horizon

    def seasonality_model(thetas, t):
        p = thetas.size()[-1]
        assert p <= thetas.shape[1], 'thetas_dim is too big.'
        p1, p2 = (p // 2, p // 2) if p % 2 == 0 else (p // 2, p // 2 + 1)
        s1 = torch.tensor(np.array([np.cos(2 * np.pi * i * t) for i in range(p1)])).to(thetas.dtype)
        s2 = torch.tensor(np.array([np.sin(2 * np.pi * i * t) for i in range(p2)])).to(thetas.dtype)
        S = torch.cat([s1, s2])
        return thetas.mm(S)

    def trend_model(thetas, t):
        p = thetas.size()[-1]
        assert p <= 4, 'thetas_dim is too big.'
        T = torch.tensor(np.array([t ** i for i in range(p)])).to(thetas.dtype)
        return thetas.mm(T)

    class Block(nn.Module):
        def __init__(self, units, thetas_dim, backcast_length=10, forecast_length=5, share_thetas=False):
            super(Block, self).__init__()
            self.units = units
            self.thetas_dim = thetas_dim
            self.backcast_length = backcast_length
            self.forecast_length = forecast_length
            self.share_thetas = share_thetas
            self.fc1 = nn.Linear(backcast_length, units)
            self.fc2 = nn.Linear(units, units)
            self.fc3 = nn.Linear(units, units)
            self.fc4 = nn.Linear(units, units)
            self.backcast_linspace = linear_space(backcast_length, forecast_length, is_forecast=False)
            self.forecast_linspace = linear_space(backcast_length, forecast_length, is_forecast=True)
            if share_thetas:
                self.theta_f_fc = self.theta_b_fc = nn.Linear(units, thetas_dim, bias=False)
            else:
                self.theta_b_fc = nn.Linear(units, thetas_dim, bias=False)
                self.theta_f_fc = nn.Linear(units, thetas_dim, bias=False)

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = F.relu(self.fc3(x))
            x = F.relu(self.fc4(x))
            return x

    class SeasonalityBlock(Block):
        def __init__(self, units, thetas_dim, backcast_length=10, forecast_length=5):
            super(SeasonalityBlock, self).__init__(units, forecast_length, backcast_length, forecast_length,
                                                   share_thetas=True)

        def forward(self, x):
            x = super(SeasonalityBlock, self).forward(x)
            backcast = seasonality_model(self.theta_b_fc(x), self.backcast_linspace)
            forecast = seasonality_model(self.theta_f_fc(x), self.forecast_linspace)
            return backcast, forecast

    class TrendBlock(Block):
        def __init__(self, units, thetas_dim, backcast_length=10, forecast_length=5):
            super(TrendBlock, self).__init__(units, thetas_dim, backcast_length, forecast_length, share_thetas=True)

        def forward(self, x):
            x = super(TrendBlock, self).forward(x)
            backcast = trend_model(self.theta_b_fc(x), self.backcast_linspace)
            forecast = trend_model(self.theta_f_fc(x), self.forecast_linspace)
            return backcast, forecast

    class GenericBlock(Block):
        def __init__(self, units, thetas_dim, backcast_length=10, forecast_length=5):
            super(GenericBlock, self).__init__(units, thetas_dim, backcast_length, forecast_length)
            self.backcast_fc = nn.Linear(thetas_dim, backcast_length)
            self.forecast_fc = nn.Linear(thetas_dim, forecast_length)

        def forward(self, x):
            x = super(GenericBlock, self).forward(x)
            theta_b = self.theta_b_fc(x)
            theta_f = self.theta_f_fc(x)
            backcast = self.backcast_fc(theta_b)
            forecast = self.forecast_fc(theta_f)
            return backcast, forecast

    class NBeatsNet(nn.Module):
        def __init__(self):
            super(NBeatsNet, self).__init__()
            self.forecast_length = forecast_length
            self.backcast_length = backcast_length
            self.stacks = nn.ModuleList()
            for block_type, thetas in zip([TrendBlock, SeasonalityBlock, GenericBlock], [*thetas_dim, 4]):
                self.stacks.append(nn.ModuleList([block_type(units, thetas, backcast_length, forecast_length)
                                                  for _ in range(2)]))

        def forward(self, backcast):
            backcast = backcast.squeeze(-1) if backcast.dim() == 3 else backcast
            forecast = torch.zeros(size=(backcast.size()[0], self.forecast_length,)).to(backcast.dtype)
            for stack_id in range(len(self.stacks)):
                for block_id in range(len(self.stacks[stack_id])):
                    b, f = self.stacks[stack_id][block_id](backcast)
                    backcast = backcast.to(backcast.device) - b
                    forecast = forecast.to(backcast.device) + f
            return backcast, forecast

    return NBeatsNet()


def nbeats(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_nbeats(m), weights).double()
    x, y = windows(m, series(), 12, 4, step=2)
    scale = x.abs().max(dim=1, keepdim=True)[0]  # each window scaled by its history's maximum
    x, y = x / scale, y / scale
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(4):
        optimizer.zero_grad()
        backcast, forecast = model(x.clone().detach())
        loss = F.mse_loss(forecast, y)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        losses.append(loss.item())
    return {"windows": (x, y), "no_grad": [n for n, p in model.named_parameters() if p.grad is None],
            "losses": losses, "grads": grads, "params": params_of(model),
            "residual": backcast.detach()}


def test_nbeats():
    ours, _ = run_both(nbeats, weights_of(make_nbeats), rtol=1e-9, atol=1e-12)
    s = series()
    x, y = ours["windows"]
    assert x.shape == (33, 12) and y.shape == (33, 4)
    np.testing.assert_allclose(x[3] * np.abs(s[6:18]).max(), s[6:18], rtol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
    # the last block's backcast reaches no loss
    assert ours["no_grad"] == ["stacks.2.1.theta_b_fc.weight", "stacks.2.1.backcast_fc.weight",
                               "stacks.2.1.backcast_fc.bias"]


# ----------------------------------------------------------------------------------------------
# TCN (Bai et al. 2018, locuslab/TCN): weight-normed causal dilated convolutions
# ----------------------------------------------------------------------------------------------


def make_tcn(m, num_inputs=2, num_channels=(4, 4, 3), kernel_size=3, padding_by="chomp", parametrization=False):
    torch, nn, F = m.torch, m.nn, m.F
    weight_norm = nn.utils.parametrizations.weight_norm if parametrization else nn.utils.weight_norm

    class Chomp1d(nn.Module):
        def __init__(self, chomp_size):
            super(Chomp1d, self).__init__()
            self.chomp_size = chomp_size

        def forward(self, x):
            return x[:, :, :-self.chomp_size].contiguous()

    class CausalConv1d(nn.Conv1d):
        """The other spelling: pad on the left only by F.pad, no chomp."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, padding=0, **kwargs)
            self.left = (self.kernel_size[0] - 1) * self.dilation[0]

        def forward(self, x):
            return super().forward(F.pad(x, (self.left, 0)))

    class TemporalBlock(nn.Module):
        def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.2):
            super(TemporalBlock, self).__init__()
            if padding_by == "chomp":
                self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride,
                                                   padding=padding, dilation=dilation))
                self.chomp1 = Chomp1d(padding)
                self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride,
                                                   padding=padding, dilation=dilation))
                self.chomp2 = Chomp1d(padding)
            else:
                self.conv1 = weight_norm(CausalConv1d(n_inputs, n_outputs, kernel_size, dilation=dilation))
                self.chomp1 = nn.Identity()
                self.conv2 = weight_norm(CausalConv1d(n_outputs, n_outputs, kernel_size, dilation=dilation))
                self.chomp2 = nn.Identity()
            self.relu1 = nn.ReLU()
            self.dropout1 = nn.Dropout(dropout)
            self.relu2 = nn.ReLU()
            self.dropout2 = nn.Dropout(dropout)
            self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                     self.conv2, self.chomp2, self.relu2, self.dropout2)
            self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
            self.relu = nn.ReLU()

        def forward(self, x):
            out = self.net(x)
            res = x if self.downsample is None else self.downsample(x)
            return self.relu(out + res)

    class TemporalConvNet(nn.Module):
        def __init__(self, num_inputs, num_channels, kernel_size=2, dropout=0.2):
            super(TemporalConvNet, self).__init__()
            layers = []
            num_levels = len(num_channels)
            for i in range(num_levels):
                dilation_size = 2 ** i
                in_channels = num_inputs if i == 0 else num_channels[i - 1]
                out_channels = num_channels[i]
                layers += [TemporalBlock(in_channels, out_channels, kernel_size, stride=1, dilation=dilation_size,
                                         padding=(kernel_size - 1) * dilation_size, dropout=dropout)]
            self.network = nn.Sequential(*layers)

        def forward(self, x):
            return self.network(x)

    class TCN(nn.Module):
        def __init__(self):
            super(TCN, self).__init__()
            self.tcn = TemporalConvNet(num_inputs, num_channels, kernel_size=kernel_size, dropout=0.0)
            self.linear = nn.Linear(num_channels[-1], 1)

        def forward(self, x):
            y1 = self.tcn(x)
            return self.linear(y1.transpose(1, 2)).squeeze(-1)  # one forecast per time step

    return TCN()


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("padding_by,parametrization", [("chomp", False), ("pad", False), ("chomp", True)],
                         ids=["chomp_weight_norm", "pad_weight_norm", "chomp_parametrizations"])
def test_tcn(padding_by, parametrization):
    make = lambda m: make_tcn(m, padding_by=padding_by, parametrization=parametrization)

    def program(m, weights):
        torch, F, optim = m.torch, m.F, m.optim
        model = load(m, make(m), weights).double()
        s = torch.from_numpy(series(60))
        x = torch.stack([s[:-1], torch.sin(torch.arange(59, dtype=torch.float64) / 5)]).unsqueeze(0)
        x = torch.cat([x, x.flip(-1)])  # two series of 59 steps, two channels
        target = torch.stack([s[1:], s[1:].flip(0)])
        optimizer = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        losses, grads = train(m, model, lambda model: F.l1_loss(model(x), target), optimizer, 3)
        # causality: the output at t does not change when the input after t does
        y1 = model(x)
        x2 = x.clone()
        x2[:, :, 30:] += 1.0
        y2 = model(x2)
        return {"losses": losses, "grads": grads, "params": params_of(model),
                "state": sorted(model.state_dict().keys()), "same_before": y1[:, :30] - y2[:, :30]}

    ours, _ = run_both(program, weights_of(make), rtol=1e-9, atol=1e-12)
    assert not ours["same_before"].any()


# ----------------------------------------------------------------------------------------------
# DeepAR (Salinas et al. 2020; zhykoties/TimeSeries' model): Gaussian and NegativeBinomial likelihoods
# ----------------------------------------------------------------------------------------------


def count_series(n_series=3, length=20, seed=13):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    rate = 3 + 2 * np.sin(2 * np.pi * t / 7)[None] + np.arange(n_series)[:, None]
    return rng.poisson(rate).astype(np.float64)  # (series, time)


def make_deepar(m, likelihood="gaussian", num_class=3, embedding_dim=2, cov_dim=1, hidden=6, layers=2):
    torch, nn = m.torch, m.nn

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.likelihood = likelihood
            self.embedding = nn.Embedding(num_class, embedding_dim)
            self.lstm = nn.LSTM(input_size=1 + cov_dim + embedding_dim, hidden_size=hidden, num_layers=layers,
                                bias=True, batch_first=False, dropout=0.0)
            # initialize LSTM forget gate bias to be 1 as recommanded by Jozefowicz et al.
            for names in self.lstm._all_weights:
                for name in filter(lambda n: "bias" in n, names):
                    bias = getattr(self.lstm, name)
                    n = bias.size(0)
                    start, end = n // 4, n // 2
                    bias.data[start:end].fill_(1.)
            self.relu = nn.ReLU()
            self.distribution_mu = nn.Linear(hidden * layers, 1)
            self.distribution_presigma = nn.Linear(hidden * layers, 1)
            self.distribution_sigma = nn.Softplus()

        def forward(self, x, idx, hidden, cell):
            onehot_embed = self.embedding(idx)
            lstm_input = torch.cat((x, onehot_embed), dim=2)
            output, (hidden, cell) = self.lstm(lstm_input, (hidden, cell))
            # use h from all three layers to calculate mu and sigma
            hidden_permute = hidden.permute(1, 2, 0).contiguous().view(hidden.shape[1], -1)
            pre_sigma = self.distribution_presigma(hidden_permute)
            mu = self.distribution_mu(hidden_permute)
            sigma = self.distribution_sigma(pre_sigma)  # softplus to make sure standard deviation is positive
            if self.likelihood == "negative_binomial":
                mu = nn.functional.softplus(mu)  # a positive mean for counts; sigma is the shape alpha
            return torch.squeeze(mu), torch.squeeze(sigma), hidden, cell

        def init_hidden(self, input_size):
            return torch.zeros(layers, input_size, hidden, dtype=torch.float64)

    return Net()


def deepar_distribution(m, likelihood, mu, sigma, v):
    """The likelihood at scale v (mean scaling): Normal(v mu, v sigma), or GluonTS's NegativeBinomial with
    mean v mu and shape alpha / sqrt(v), as total_count r = 1 / alpha and probs = mean / (mean + r)."""
    D = m.torch.distributions
    if likelihood == "gaussian":
        return D.normal.Normal(mu * v, sigma * v)
    mean, alpha = mu * v, sigma / v.sqrt()
    r = 1.0 / alpha
    return D.NegativeBinomial(total_count=r, probs=mean / (mean + r))


def deepar(m, weights, likelihood):
    torch, optim = m.torch, m.optim
    model = load(m, make_deepar(m, likelihood), weights).double()
    z = torch.from_numpy(count_series())  # (series, time)
    n_series, length = z.shape
    idx = torch.arange(n_series).unsqueeze(0)  # (1, batch): one series id per time step
    covariate = torch.sin(torch.arange(length, dtype=torch.float64) / 3)
    context = 14
    v = 1 + z[:, :context].mean(dim=1)  # mean scaling, as the paper's v_i = 1 + mean z
    train_batch = torch.stack([torch.cat([torch.zeros(n_series, 1, dtype=torch.float64), z[:, :-1]], 1) / v[:, None],
                               covariate.expand(n_series, length)], -1).permute(1, 0, 2)  # (time, batch, 2)
    labels = z.t()  # (time, batch)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        loss = torch.zeros(1, dtype=torch.float64)
        hidden = model.init_hidden(n_series)
        cell = model.init_hidden(n_series)
        for t in range(context):
            mu, sigma, hidden, cell = model(train_batch[t].unsqueeze_(0).clone(), idx, hidden, cell)
            distribution = deepar_distribution(m, likelihood, mu, sigma, v)
            loss = loss - distribution.log_prob(labels[t]).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item() / context)
    # ancestral sampling over the horizon: each draw fed back as the next input
    with torch.no_grad():
        hidden, cell = model.init_hidden(n_series), model.init_hidden(n_series)
        for t in range(context):
            mu, sigma, hidden, cell = model(train_batch[t].unsqueeze(0), idx, hidden, cell)
        torch.manual_seed(0)
        samples, means = [], []
        last = z[:, context - 1]
        for t in range(context, length):
            x = torch.stack([last / v, covariate[t].expand(n_series)], -1).unsqueeze(0)
            mu, sigma, hidden, cell = model(x, idx, hidden, cell)
            distribution = deepar_distribution(m, likelihood, mu, sigma, v)
            last = distribution.sample()
            samples.append(last)
            means.append(distribution.mean)
        samples = torch.stack(samples, 1)
        many = distribution.sample((4000,))
    return {"losses": losses, "grads": grads, "params": params_of(model), "first_mean": means[0],
            "samples": samples, "many_mean": many.mean(0), "many_var": many.var(0),
            "variance": distribution.variance, "last_mean": distribution.mean}


@pytest.mark.parametrize("likelihood", ["gaussian", "negative_binomial"])
def test_deepar(likelihood):
    make = lambda m: make_deepar(m, likelihood)
    ours, theirs = run_both(deepar, weights_of(make), likelihood, compare=False)
    again, _ = run_both(deepar, weights_of(make), likelihood, compare=False)
    np.testing.assert_array_equal(again["samples"], ours["samples"])  # a seed draws the same samples
    if theirs is not None:  # the draws are each library's own (and what follows them): the rest is compared
        drawn = ("samples", "many_mean", "many_var", "variance", "last_mean")
        for key in drawn:
            assert ours[key].shape == theirs[key].shape
        assert_same({k: v for k, v in ours.items() if k not in drawn},
                    {k: v for k, v in theirs.items() if k not in drawn}, 1e-9, 1e-12)
    # the draws follow the distribution: the mean of 4000 within 5 standard errors
    se = np.sqrt(ours["variance"] / 4000)
    assert (np.abs(ours["many_mean"] - ours["last_mean"]) < 5 * se).all()
    np.testing.assert_allclose(ours["many_var"], ours["variance"], rtol=0.2)
    if likelihood == "negative_binomial":
        assert (ours["samples"] == np.round(ours["samples"])).all() and (ours["samples"] >= 0).all()


def test_deepar_likelihoods_by_hand():
    """Normal and NegativeBinomial log-likelihoods and their gradients in mu and alpha, against the formulas."""
    def program(m):
        torch = m.torch
        mu = torch.tensor([1.5, 4.0, 0.3], dtype=torch.float64, requires_grad=True)
        alpha = torch.tensor([0.5, 0.1, 2.0], dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0.0, 6.0, 2.0], dtype=torch.float64)
        v = torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64)
        nb = deepar_distribution(m, "negative_binomial", mu, alpha, v).log_prob(y)
        nb.sum().backward()
        sigma = alpha.detach().clone().requires_grad_(True)
        normal = deepar_distribution(m, "gaussian", mu.detach(), sigma, v).log_prob(y)
        normal.sum().backward()
        return {"nb": nb, "mu_grad": mu.grad, "alpha_grad": alpha.grad, "normal": normal, "sigma_grad": sigma.grad}

    ours, _ = run_both(program, rtol=1e-10, atol=1e-12)
    mu, alpha, y, v = np.array([1.5, 4.0, 0.3]), np.array([0.5, 0.1, 2.0]), np.array([0.0, 6.0, 2.0]), \
        np.array([2.0, 1.0, 4.0])
    m_, a_ = mu * v, alpha / np.sqrt(v)
    r = 1 / a_
    lg = np.vectorize(math.lgamma)
    expected = lg(y + r) - lg(r) - lg(y + 1) + r * np.log(r / (r + m_)) + y * np.log(m_ / (r + m_))
    np.testing.assert_allclose(ours["nb"], expected, rtol=1e-10)
    s = alpha * v
    np.testing.assert_allclose(ours["normal"], -0.5 * ((y - mu * v) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi),
                               rtol=1e-12)
    np.testing.assert_allclose(ours["mu_grad"], v * (y / m_ - (y + r) / (r + m_)), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Forecasting losses: quantile (pinball), PoissonNLLLoss, GaussianNLLLoss, HuberLoss
# ----------------------------------------------------------------------------------------------


def forecast_losses(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(14)
    target = torch.from_numpy(np.round(rng.uniform(0, 6, (4, 5))))
    pred = torch.from_numpy(rng.uniform(0, 6, (4, 5, 3)))
    pred[0, 0, :] = target[0, 0]  # exact ties: errors of 0 in every quantile
    pred[1, 2, 1] = target[1, 2]
    pred.requires_grad_(True)
    quantiles = [0.1, 0.5, 0.9]
    out = {}
    grad = lambda loss: torch.autograd.grad(loss, pred, retain_graph=True)[0]  # the losses share a graph

    # pytorch-forecasting's QuantileLoss.loss: torch.max of the two slopes
    losses = []
    for i, q in enumerate(quantiles):
        errors = target - pred[..., i]
        losses.append(torch.max((q - 1) * errors, q * errors).unsqueeze(-1))
    quantile = 2 * torch.cat(losses, dim=2)
    out["pinball_max"] = quantile
    out["pinball_max_grad"] = grad(quantile.mean())
    # the torch.where spelling (Temporal Fusion Transformer implementations)
    q = torch.tensor(quantiles, dtype=torch.float64)
    errors = target.unsqueeze(-1) - pred
    pinball = torch.where(errors >= 0, q * errors, (q - 1) * errors)
    out["pinball_where_grad"] = grad(pinball.sum(dim=-1).mean())
    # and the relu spelling
    relu_form = (q * F.relu(errors) + (1 - q) * F.relu(-errors)).mean()
    out["pinball_relu_grad"] = grad(relu_form)

    rate = pred[..., 1]
    for log_input in (True, False):
        for full in (False, True):
            loss = nn.PoissonNLLLoss(log_input=log_input, full=full)(rate if log_input else rate.abs() + 0.1, target)
            out[f"poisson_{log_input}_{full}"] = (loss, grad(loss))
    none = F.poisson_nll_loss(rate, target, log_input=True, full=True, reduction="none")
    out["poisson_none"] = none

    mean, var = pred[..., 0], pred[..., 2].abs() * 0.1
    tiny = torch.ones_like(var)
    tiny[0, 1] = 1e-10
    var = var * tiny  # one variance below eps: clamped in value, the gradient passing as through the identity
    for name, v in {"same": var, "last_dim_one": var[:, :1] * 0 + var[:, :1], "broadcast_rows": var[0]}.items():
        if name == "broadcast_rows":
            loss = nn.GaussianNLLLoss(full=True, eps=1e-6, reduction="sum")(mean.t(), target.t(), v)
        else:
            loss = nn.GaussianNLLLoss(full=True, eps=1e-6)(mean, target, v)
        out[f"gaussian_{name}"] = (loss, grad(loss))

    for delta in (1.0, 0.5):
        for reduction in ("mean", "sum"):
            loss = nn.HuberLoss(reduction=reduction, delta=delta)(pred[..., 0], target)
            out[f"huber_{delta}_{reduction}"] = (loss, grad(loss))
    out["smooth_l1_beta"] = F.smooth_l1_loss(pred[..., 0], target, beta=0.5)
    return out


def test_forecasting_losses():
    ours, _ = run_both(forecast_losses, rtol=1e-12, atol=1e-14)
    # at an exact tie max() splits the gradient between its two equal arguments: -2 * (q - 1/2) / n
    n = 4 * 5 * 3
    np.testing.assert_allclose(ours["pinball_max_grad"][0, 0], -2 * (np.array([0.1, 0.5, 0.9]) - 0.5) / n,
                               rtol=1e-12)
    np.testing.assert_allclose(ours["pinball_where_grad"][0, 0], -np.array([0.1, 0.5, 0.9]) / 20, rtol=1e-12)
    assert ours["pinball_relu_grad"][0, 0].tolist() == [0, 0, 0]  # relu'(0) = 0 on both sides
    # the variance clamped to eps: PyTorch clamps a clone in place under no_grad, so the gradient is the
    # loss's slope at eps, carried back through var = 1e-11 |p| as if unclamped
    rng = np.random.default_rng(14)
    target = np.round(rng.uniform(0, 6, (4, 5)))
    pred = rng.uniform(0, 6, (4, 5, 3))
    pred[0, 0, :] = target[0, 0]
    pred[1, 2, 1] = target[1, 2]
    eps, d = 1e-6, pred[0, 1, 0] - target[0, 1]
    expected = 0.5 * (1 / eps - d ** 2 / eps ** 2) / 20 * 1e-11
    assert ours["gaussian_same"][1][0, 1, 2] == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# RevIN (Kim et al. 2022) around DLinear (Zeng et al. 2023) on a sliding-window dataset by unfold
# ----------------------------------------------------------------------------------------------


def multivariate(length=60, channels=3, seed=15):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    return (np.arange(channels) * 3 + 0.1 * t + np.sin(2 * np.pi * t / (8 + np.arange(channels)))
            + 0.1 * rng.standard_normal((length, channels)))


def make_dlinear(m, seq_len=16, pred_len=4, channels=3, kernel_size=5):
    torch, nn = m.torch, m.nn

    class RevIN(nn.Module):
        def __init__(self, num_features: int, eps=1e-5, affine=True, subtract_last=False):
            super(RevIN, self).__init__()
            self.num_features = num_features
            self.eps = eps
            self.affine = affine
            self.subtract_last = subtract_last
            if self.affine:
                self._init_params()

        def forward(self, x, mode: str):
            if mode == 'norm':
                self._get_statistics(x)
                x = self._normalize(x)
            elif mode == 'denorm':
                x = self._denormalize(x)
            else:
                raise NotImplementedError
            return x

        def _init_params(self):
            self.affine_weight = nn.Parameter(torch.ones(self.num_features))
            self.affine_bias = nn.Parameter(torch.zeros(self.num_features))

        def _get_statistics(self, x):
            dim2reduce = tuple(range(1, x.ndim - 1))
            if self.subtract_last:
                self.last = x[:, -1, :].unsqueeze(1)
            else:
                self.mean = torch.mean(x, dim=dim2reduce, keepdim=True).detach()
            self.stdev = torch.sqrt(torch.var(x, dim=dim2reduce, keepdim=True, unbiased=False) + self.eps).detach()

        def _normalize(self, x):
            if self.subtract_last:
                x = x - self.last
            else:
                x = x - self.mean
            x = x / self.stdev
            if self.affine:
                x = x * self.affine_weight
                x = x + self.affine_bias
            return x

        def _denormalize(self, x):
            if self.affine:
                x = x - self.affine_bias
                x = x / (self.affine_weight + self.eps * self.eps)
            x = x * self.stdev
            if self.subtract_last:
                x = x + self.last
            else:
                x = x + self.mean
            return x

    class moving_avg(nn.Module):
        def __init__(self, kernel_size, stride):
            super(moving_avg, self).__init__()
            self.kernel_size = kernel_size
            self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=stride, padding=0)

        def forward(self, x):
            # padding on the both ends of time series
            front = x[:, 0:1, :].repeat(1, (self.kernel_size - 1) // 2, 1)
            end = x[:, -1:, :].repeat(1, (self.kernel_size - 1) // 2, 1)
            x = torch.cat([front, x, end], dim=1)
            x = self.avg(x.permute(0, 2, 1))
            x = x.permute(0, 2, 1)
            return x

    class series_decomp(nn.Module):
        def __init__(self, kernel_size):
            super(series_decomp, self).__init__()
            self.moving_avg = moving_avg(kernel_size, stride=1)

        def forward(self, x):
            moving_mean = self.moving_avg(x)
            res = x - moving_mean
            return res, moving_mean

    class Model(nn.Module):
        def __init__(self, subtract_last=False):
            super(Model, self).__init__()
            self.seq_len = seq_len
            self.pred_len = pred_len
            self.decompsition = series_decomp(kernel_size)
            self.channels = channels
            self.revin = RevIN(channels, subtract_last=subtract_last)
            self.Linear_Seasonal = nn.ModuleList()
            self.Linear_Trend = nn.ModuleList()
            for i in range(self.channels):
                self.Linear_Seasonal.append(nn.Linear(self.seq_len, self.pred_len))
                self.Linear_Trend.append(nn.Linear(self.seq_len, self.pred_len))

        def forward(self, x):
            # x: [Batch, Input length, Channel]
            x = self.revin(x, 'norm')
            seasonal_init, trend_init = self.decompsition(x)
            seasonal_init, trend_init = seasonal_init.permute(0, 2, 1), trend_init.permute(0, 2, 1)
            seasonal_output = torch.zeros([seasonal_init.size(0), seasonal_init.size(1), self.pred_len],
                                          dtype=seasonal_init.dtype).to(seasonal_init.device)
            trend_output = torch.zeros([trend_init.size(0), trend_init.size(1), self.pred_len],
                                       dtype=trend_init.dtype).to(trend_init.device)
            for i in range(self.channels):
                seasonal_output[:, i, :] = self.Linear_Seasonal[i](seasonal_init[:, i, :])
                trend_output[:, i, :] = self.Linear_Trend[i](trend_init[:, i, :])
            x = seasonal_output + trend_output
            x = self.revin(x.permute(0, 2, 1), 'denorm')
            return x  # to [Batch, Output length, Channel]

    return Model()


def dlinear_revin(m, weights):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    model = load(m, make_dlinear(m), weights).double()

    class Dataset_Custom(data.Dataset):
        """Windows of a (time, channels) array, as the LTSF repositories cut them, here by unfold."""

        def __init__(self, values, seq_len, pred_len):
            self.seq_len, self.pred_len = seq_len, pred_len
            self.windows = torch.from_numpy(values).unfold(0, seq_len + pred_len, 1).permute(0, 2, 1)

        def __getitem__(self, index):
            w = self.windows[index]
            return w[:self.seq_len], w[self.seq_len:]

        def __len__(self):
            return len(self.windows)

    dataset = Dataset_Custom(multivariate(), 16, 4)
    loader = data.DataLoader(dataset, batch_size=16, shuffle=False, drop_last=True)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.MSELoss()
    losses = []
    for batch_x, batch_y in loader:
        optimizer.zero_grad()
        outputs = model(batch_x)
        loss = criterion(outputs, batch_y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    # the round trip: norm then denorm gives the input back
    x = dataset.windows[:3, :16]
    round_trip = model.revin(model.revin(x, "norm"), "denorm")
    return {"n": len(dataset), "first": dataset[1], "losses": losses, "grads": grads, "params": params_of(model),
            "round_trip": round_trip, "stdev": model.revin.stdev}


def test_dlinear_revin_unfold_windows():
    ours, _ = run_both(dlinear_revin, weights_of(make_dlinear), rtol=1e-9, atol=1e-12)
    values = multivariate()
    assert ours["n"] == 60 - 20 + 1
    np.testing.assert_array_equal(ours["first"][0], values[1:17])
    np.testing.assert_array_equal(ours["first"][1], values[17:21])
    assert len(ours["losses"]) == 2  # 41 windows, batches of 16, the last dropped
    np.testing.assert_allclose(ours["round_trip"], np.stack([values[i:i + 16] for i in range(3)]), rtol=1e-6)
    np.testing.assert_allclose(ours["stdev"][:, 0], np.sqrt(np.stack([values[i:i + 16] for i in range(3)]).var(1)
                                                            + 1e-5), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A seq2seq LSTM forecaster with teacher forcing
# ----------------------------------------------------------------------------------------------


def make_seq2seq(m, input_size=2, hidden_size=8, num_layers=2, horizon=5):
    torch, nn = m.torch, m.nn

    class Encoder(nn.Module):
        def __init__(self, input_size, hidden_size, num_layers):
            super(Encoder, self).__init__()
            self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)

        def forward(self, x):
            outputs, (hidden, cell) = self.lstm(x)
            return hidden, cell

    class Decoder(nn.Module):
        def __init__(self, output_size, hidden_size, num_layers):
            super(Decoder, self).__init__()
            self.lstm = nn.LSTM(output_size, hidden_size, num_layers, batch_first=True)
            self.fc = nn.Linear(hidden_size, output_size)

        def forward(self, x, hidden, cell):
            output, (hidden, cell) = self.lstm(x.unsqueeze(1), (hidden, cell))
            prediction = self.fc(output.squeeze(1))
            return prediction, hidden, cell

    class Seq2Seq(nn.Module):
        def __init__(self):
            super(Seq2Seq, self).__init__()
            self.encoder = Encoder(input_size, hidden_size, num_layers)
            self.decoder = Decoder(1, hidden_size, num_layers)

        def forward(self, source, target, teacher_forcing_ratio=0.5):
            batch_size = source.shape[0]
            target_len = target.shape[1]
            outputs = torch.zeros(batch_size, target_len, 1, dtype=source.dtype)
            hidden, cell = self.encoder(source)
            decoder_input = source[:, -1, :1]
            for t in range(target_len):
                output, hidden, cell = self.decoder(decoder_input, hidden, cell)
                outputs[:, t] = output
                teacher_force = random.random() < teacher_forcing_ratio
                decoder_input = target[:, t] if teacher_force else output
            return outputs

    return Seq2Seq()


def seq2seq(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_seq2seq(m), weights).double()
    s = series(70)
    x, y = windows(m, torch.from_numpy(s), 12, 5, step=3)
    exog = torch.from_numpy(np.cos(np.arange(70) / 4)).unfold(0, 17, 3)[:, :12]
    source = torch.stack([x, exog], -1)  # (batch, 12, 2)
    target = y.unsqueeze(-1)  # (batch, 5, 1)
    mean, std = source[..., :1].mean(), source[..., :1].std()
    source = torch.cat([(source[..., :1] - mean) / std, source[..., 1:]], -1)
    target = (target - mean) / std
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    criterion = nn.MSELoss()
    random.seed(0)  # the teacher-forcing coin flips: the same in both runs
    losses = []
    for epoch in range(3):
        optimizer.zero_grad()
        output = model(source, target, teacher_forcing_ratio=0.5)
        loss = criterion(output, target)
        loss.backward()
        total_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        forecast = model(source[:2], target[:2], teacher_forcing_ratio=0.0)
    return {"losses": losses, "grads": grads, "params": params_of(model), "total_norm": total_norm,
            "forecast": forecast * std + mean}


def test_seq2seq_teacher_forcing():
    ours, _ = run_both(seq2seq, weights_of(make_seq2seq), rtol=1e-9, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# SASRec (Kang & McAuley 2018; pmixer/SASRec.pytorch): causal self-attention over item sequences
# ----------------------------------------------------------------------------------------------


def make_sasrec(m, item_num=15, maxlen=6, hidden_units=8, num_blocks=2, num_heads=2, old_masking=False):
    torch = m.torch

    class PointWiseFeedForward(m.nn.Module):
        def __init__(self, hidden_units, dropout_rate):
            super(PointWiseFeedForward, self).__init__()
            self.conv1 = m.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
            self.dropout1 = m.nn.Dropout(p=dropout_rate)
            self.relu = m.nn.ReLU()
            self.conv2 = m.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
            self.dropout2 = m.nn.Dropout(p=dropout_rate)

        def forward(self, inputs):
            outputs = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(inputs.transpose(-1, -2))))))
            outputs = outputs.transpose(-1, -2)  # as Conv1D requires (N, C, Length)
            outputs += inputs
            return outputs

    class SASRec(m.nn.Module):
        def __init__(self, user_num, item_num):
            super(SASRec, self).__init__()
            self.user_num = user_num
            self.item_num = item_num
            self.item_emb = m.nn.Embedding(self.item_num + 1, hidden_units, padding_idx=0)
            self.pos_emb = m.nn.Embedding(maxlen + 1, hidden_units, padding_idx=0)
            self.emb_dropout = m.nn.Dropout(p=0.0)
            self.attention_layernorms = m.nn.ModuleList()
            self.attention_layers = m.nn.ModuleList()
            self.forward_layernorms = m.nn.ModuleList()
            self.forward_layers = m.nn.ModuleList()
            self.last_layernorm = m.nn.LayerNorm(hidden_units, eps=1e-8)
            for _ in range(num_blocks):
                new_attn_layernorm = m.nn.LayerNorm(hidden_units, eps=1e-8)
                self.attention_layernorms.append(new_attn_layernorm)
                new_attn_layer = m.nn.MultiheadAttention(hidden_units, num_heads, 0.0)
                self.attention_layers.append(new_attn_layer)
                new_fwd_layernorm = m.nn.LayerNorm(hidden_units, eps=1e-8)
                self.forward_layernorms.append(new_fwd_layernorm)
                new_fwd_layer = PointWiseFeedForward(hidden_units, 0.0)
                self.forward_layers.append(new_fwd_layer)

        def log2feats(self, log_seqs):
            seqs = self.item_emb(torch.LongTensor(log_seqs))
            seqs *= self.item_emb.embedding_dim ** 0.5
            poss = np.tile(np.arange(1, log_seqs.shape[1] + 1), [log_seqs.shape[0], 1])
            poss *= (log_seqs != 0)
            seqs += self.pos_emb(torch.LongTensor(poss))
            seqs = self.emb_dropout(seqs)
            if old_masking:
                timeline_mask = torch.BoolTensor(log_seqs == 0)
                seqs *= ~timeline_mask.unsqueeze(-1)  # broadcast in last dim
            tl = seqs.shape[1]  # time dim len for enforce causality
            attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool))
            for i in range(len(self.attention_layers)):
                seqs = torch.transpose(seqs, 0, 1)
                Q = self.attention_layernorms[i](seqs)
                mha_outputs, _ = self.attention_layers[i](Q, seqs, seqs, attn_mask=attention_mask)
                seqs = Q + mha_outputs
                seqs = torch.transpose(seqs, 0, 1)
                seqs = self.forward_layernorms[i](seqs)
                seqs = self.forward_layers[i](seqs)
                if old_masking:
                    seqs *= ~timeline_mask.unsqueeze(-1)
            log_feats = self.last_layernorm(seqs)  # (U, T, C) -> (U, -1, C)
            return log_feats

        def forward(self, user_ids, log_seqs, pos_seqs, neg_seqs):
            log_feats = self.log2feats(log_seqs)
            pos_embs = self.item_emb(torch.LongTensor(pos_seqs))
            neg_embs = self.item_emb(torch.LongTensor(neg_seqs))
            pos_logits = (log_feats * pos_embs).sum(dim=-1)
            neg_logits = (log_feats * neg_embs).sum(dim=-1)
            return pos_logits, neg_logits

        def predict(self, user_ids, log_seqs, item_indices):
            log_feats = self.log2feats(log_seqs)
            final_feat = log_feats[:, -1, :]
            item_embs = self.item_emb(torch.LongTensor(item_indices))
            logits = item_embs.matmul(final_feat.unsqueeze(-1)).squeeze(-1)
            return logits

    model = SASRec(5, item_num)
    for name, param in model.named_parameters():
        try:
            m.nn.init.xavier_normal_(param.data)
        except Exception:
            pass  # just ignore those failed init layers (the 1-D ones)
    model.pos_emb.weight.data[0, :] = 0
    model.item_emb.weight.data[0, :] = 0
    return model


def sasrec_batch(seed=16, users=4, maxlen=6, item_num=15):
    rng = np.random.default_rng(seed)
    seq = np.zeros((users, maxlen), dtype=np.int64)
    pos = np.zeros((users, maxlen), dtype=np.int64)
    neg = np.zeros((users, maxlen), dtype=np.int64)
    for u in range(users):
        n = rng.integers(2, maxlen + 1)
        items = rng.integers(1, item_num + 1, n + 1)
        seq[u, maxlen - n:] = items[:-1]  # left-padded with 0
        pos[u, maxlen - n:] = items[1:]
        neg[u, maxlen - n:] = rng.integers(1, item_num + 1, n)
    return np.arange(users), seq, pos, neg


@pytest.mark.parametrize("old_masking", [False, True], ids=["causal_only", "timeline_mask"])
def test_sasrec(old_masking):
    make = lambda m: make_sasrec(m, old_masking=old_masking)

    def program(m, weights):
        torch = m.torch
        model = load(m, make(m), weights).double()
        u, seq, pos, neg = sasrec_batch()
        bce_criterion = m.nn.BCEWithLogitsLoss()
        adam_optimizer = m.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.98))
        losses = []
        for step in range(3):
            pos_logits, neg_logits = model(u, seq, pos, neg)
            pos_labels, neg_labels = torch.ones(pos_logits.shape), torch.zeros(neg_logits.shape)
            adam_optimizer.zero_grad()
            indices = np.where(pos != 0)
            loss = bce_criterion(pos_logits[indices], pos_labels[indices].double())
            loss += bce_criterion(neg_logits[indices], neg_labels[indices].double())
            for param in model.item_emb.parameters():
                loss += 1e-3 * torch.norm(param)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            adam_optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            scores = model.predict(u, seq, np.array([[1, 2, 3, 4]] * 4))
        return {"losses": losses, "grads": grads, "params": params_of(model), "scores": scores}

    ours, theirs = run_both(program, weights_of(make), compare=False)
    if theirs is not None:
        # the attention's key biases get a gradient that is zero in exact arithmetic (softmax does not see a score
        # shifted alike for every key): both libraries' are rounding noise, which Adam scales up to steps of
        # 1e-12: checked negligible, and left out of the comparison
        for result in (ours, theirs):
            for name, value in result["params"].items():
                if name.endswith("in_proj_bias"):
                    assert np.abs(value[8:16]).max() < 1e-10
                    result["params"][name] = np.concatenate([value[:8], value[16:]])
        assert_same(ours, theirs, 1e-8, 1e-11)
    assert not ours["grads"]["item_emb.weight"][0].any() and not ours["grads"]["pos_emb.weight"][0].any()


# ----------------------------------------------------------------------------------------------
# GRU4Rec (Hidasi et al. 2016): session-parallel mini-batches, hidden reset, TOP1 / BPR(-max) losses
# ----------------------------------------------------------------------------------------------


def make_gru4rec(m, n_items=12, hidden_size=6, embedding_dim=5):
    nn = m.nn

    class GRU4REC(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, num_layers=1, final_act='tanh', embedding_dim=-1):
            super(GRU4REC, self).__init__()
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.output_size = output_size
            self.num_layers = num_layers
            self.embedding_dim = embedding_dim
            self.h2o = nn.Linear(hidden_size, output_size)
            self.final_activation = nn.Tanh()
            self.look_up = nn.Embedding(input_size, self.embedding_dim)
            self.gru = nn.GRU(self.embedding_dim, self.hidden_size, self.num_layers, dropout=0.0)

        def forward(self, input, hidden):
            embedded = input.unsqueeze(0)
            embedded = self.look_up(embedded)
            output, hidden = self.gru(embedded, hidden)  # (num_layer, B, H)
            output = output.view(-1, output.size(-1))  # (B,H)
            logit = self.final_activation(self.h2o(output))
            return logit, hidden

    return GRU4REC(n_items, hidden_size, n_items, embedding_dim=embedding_dim)


def gru4rec_losses(m):
    torch, F = m.torch, m.F

    def top1(logit):
        diff = -(logit.diag().view(-1, 1).expand_as(logit) - logit)
        return torch.sigmoid(diff).mean() + torch.sigmoid(logit ** 2).mean()

    def bpr(logit):
        diff = logit.diag().view(-1, 1).expand_as(logit) - logit
        return -torch.mean(F.logsigmoid(diff))

    def top1_max(logit):
        logit_softmax = F.softmax(logit, dim=1)
        diff = -(logit.diag().view(-1, 1).expand_as(logit) - logit)
        return torch.mean(logit_softmax * (torch.sigmoid(diff) + torch.sigmoid(logit ** 2)))

    def bpr_max(logit):
        logit_softmax = F.softmax(logit, dim=1)
        diff = logit.diag().view(-1, 1).expand_as(logit) - logit
        return -torch.log(torch.mean(logit_softmax * torch.sigmoid(diff)))

    return {"TOP1": top1, "BPR": bpr, "TOP1-max": top1_max, "BPR-max": bpr_max}


@pytest.mark.parametrize("loss_type", ["TOP1", "BPR", "TOP1-max", "BPR-max"])
def test_gru4rec_session_parallel(loss_type):
    def program(m, weights):
        torch, optim = m.torch, m.optim
        model = load(m, make_gru4rec(m), weights).double()
        loss_func = gru4rec_losses(m)[loss_type]
        optimizer = optim.Adagrad(model.parameters(), lr=0.05)
        # session-parallel mini-batches: (input, target, sessions that ended before this step)
        rng = np.random.default_rng(17)
        steps = [(rng.integers(0, 12, 4), rng.integers(0, 12, 4), np.array(mask, dtype=np.int64))
                 for mask in ([], [1], [], [0, 3], [2])]
        hidden = torch.zeros(1, 4, 6, dtype=torch.float64)
        losses = []
        for input, target, mask in steps:
            input, target = torch.LongTensor(input), torch.LongTensor(target)
            if len(mask) != 0:
                hidden[:, mask, :] = 0  # reset the hidden state of the sessions that ended
            hidden = hidden.detach()
            optimizer.zero_grad()
            logit, hidden = model(input, hidden)
            logit_sampled = logit[:, target.view(-1)]  # the batch's own targets as negatives
            loss = loss_func(logit_sampled)
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
        return {"losses": losses, "params": params_of(model), "hidden": hidden}

    run_both(program, weights_of(make_gru4rec), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# xDeepFM's compressed interaction network and AutoInt (rixwew/pytorch-fm)
# ----------------------------------------------------------------------------------------------


def make_xdeepfm_autoint(m, embed_dim=4, cross_layer_sizes=(6, 4), atten_embed_dim=4, num_heads=2, num_layers=2):
    torch, nn, F = m.torch, m.nn, m.F
    num_fields = len(FIELD_DIMS)

    class CompressedInteractionNetwork(nn.Module):
        def __init__(self, input_dim, cross_layer_sizes, split_half=True):
            super().__init__()
            self.num_layers = len(cross_layer_sizes)
            self.split_half = split_half
            self.conv_layers = nn.ModuleList()
            prev_dim, fc_input_dim = input_dim, 0
            for i in range(self.num_layers):
                cross_layer_size = cross_layer_sizes[i]
                self.conv_layers.append(nn.Conv1d(input_dim * prev_dim, cross_layer_size, 1, stride=1, dilation=1,
                                                  bias=True))
                if self.split_half and i != self.num_layers - 1:
                    cross_layer_size //= 2
                prev_dim = cross_layer_size
                fc_input_dim += prev_dim
            self.fc = nn.Linear(fc_input_dim, 1)

        def forward(self, x):
            xs = list()
            x0, h = x.unsqueeze(2), x
            for i in range(self.num_layers):
                x = x0 * h.unsqueeze(1)
                batch_size, f0_dim, fin_dim, embed_dim = x.shape
                x = x.view(batch_size, f0_dim * fin_dim, embed_dim)
                x = F.relu(self.conv_layers[i](x))
                if self.split_half and i != self.num_layers - 1:
                    x, h = torch.split(x, x.shape[1] // 2, dim=1)
                else:
                    h = x
                xs.append(x)
            return self.fc(torch.sum(torch.cat(xs, dim=1), 2))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(sum(FIELD_DIMS), embed_dim)
            self.offsets = np.array((0, *np.cumsum(FIELD_DIMS)[:-1]), dtype=np.int64)
            self.linear = nn.Embedding(sum(FIELD_DIMS), 1)
            self.cin = CompressedInteractionNetwork(num_fields, list(cross_layer_sizes), split_half=True)
            self.atten_output_dim = num_fields * atten_embed_dim
            self.atten_embedding = nn.Linear(embed_dim, atten_embed_dim)
            self.self_attns = nn.ModuleList([nn.MultiheadAttention(atten_embed_dim, num_heads, dropout=0.0)
                                             for _ in range(num_layers)])
            self.attn_fc = nn.Linear(self.atten_output_dim, 1)
            self.V_res_embedding = nn.Linear(embed_dim, atten_embed_dim)

        def forward(self, x):
            x = x + x.new_tensor(self.offsets).unsqueeze(0)
            embed_x = self.embedding(x)
            atten_x = self.atten_embedding(embed_x)
            cross_term = atten_x.transpose(0, 1)
            for self_attn in self.self_attns:
                cross_term, _ = self_attn(cross_term, cross_term, cross_term)
            cross_term = cross_term.transpose(0, 1)
            V_res = self.V_res_embedding(embed_x)
            cross_term += V_res
            cross_term = F.relu(cross_term).contiguous().view(-1, self.atten_output_dim)
            x = self.linear(x).sum(1) + self.attn_fc(cross_term) + self.cin(embed_x)
            return torch.sigmoid(x.squeeze(1))

    return Model()


def test_xdeepfm_cin_and_autoint():
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_xdeepfm_autoint(m), weights).double()
        x, y = (torch.from_numpy(a) for a in fm_data())
        criterion = nn.BCELoss()
        optimizer = optim.Adam(params=model.parameters(), lr=0.01, weight_decay=1e-6)
        losses, grads = train(m, model, lambda model: criterion(model(x), y), optimizer, 3)
        return {"losses": losses, "grads": grads, "params": params_of(model)}

    run_both(program, weights_of(make_xdeepfm_autoint), rtol=1e-8, atol=1e-11)


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


# ----------------------------------------------------------------------------------------------
# Two-tower retrieval: in-batch softmax with logQ correction and masked accidental hits
# ----------------------------------------------------------------------------------------------


def make_two_tower(m, n_users=10, n_items=16, dim=6):
    nn = m.nn

    class Tower(nn.Module):
        def __init__(self, n, dim):
            super().__init__()
            self.emb = nn.Embedding(n, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 12), nn.ReLU(), nn.Linear(12, dim))

        def forward(self, ids):
            return nn.functional.normalize(self.mlp(self.emb(ids)), p=2, dim=-1)

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.query = Tower(n_users, dim)
            self.candidate = Tower(n_items, dim)
            self.log_temperature = nn.Parameter(m.torch.tensor(math.log(0.1)))

        def forward(self, users, items, item_log_q):
            q, c = self.query(users), self.candidate(items)
            logits = q @ c.T / self.log_temperature.exp()
            logits = logits - item_log_q[items]  # logQ correction of the in-batch sampling
            hits = (items.unsqueeze(0) == items.unsqueeze(1)) & ~m.torch.eye(len(items), dtype=m.torch.bool)
            return logits.masked_fill(hits, float("-inf"))

    return TwoTower()


def test_two_tower_in_batch_softmax():
    def program(m, weights):
        torch, F, optim = m.torch, m.F, m.optim
        model = load(m, make_two_tower(m), weights).double()
        rng = np.random.default_rng(19)
        users = torch.from_numpy(rng.integers(0, 10, 12))
        items = torch.from_numpy(rng.integers(0, 16, 12))  # some items repeat: accidental hits
        counts = torch.bincount(items, minlength=16).double() + 1
        item_log_q = torch.log(counts / counts.sum())
        optimizer = optim.Adam(model.parameters(), lr=0.01)

        def loss_of(model):
            logits = model(users, items, item_log_q)
            return F.cross_entropy(logits, torch.arange(len(items)), label_smoothing=0.0)

        losses, grads = train(m, model, loss_of, optimizer, 3)
        with torch.no_grad():
            logits = model(users, items, item_log_q)
            recall = (logits.topk(3, dim=1).indices == torch.arange(12)[:, None]).any(1).double().mean()
        return {"losses": losses, "grads": grads, "params": params_of(model), "recall": recall,
                "masked": torch.isinf(logits).sum()}

    ours, _ = run_both(program, weights_of(make_two_tower), rtol=1e-9, atol=1e-12)
    rng = np.random.default_rng(19)
    users, items = rng.integers(0, 10, 12), rng.integers(0, 16, 12)
    assert ours["masked"] == (items[:, None] == items[None]).sum() - 12


# ----------------------------------------------------------------------------------------------
# LightGCN (He et al. 2020): propagation over the normalised bipartite adjacency
# ----------------------------------------------------------------------------------------------


def make_lightgcn(m, n_users=6, n_items=8, dim=4):
    nn = m.nn

    class LightGCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_users, self.num_items, self.n_layers = n_users, n_items, 3
            self.embedding_user = nn.Embedding(num_embeddings=self.num_users, embedding_dim=dim)
            self.embedding_item = nn.Embedding(num_embeddings=self.num_items, embedding_dim=dim)
            nn.init.normal_(self.embedding_user.weight, std=0.1)
            nn.init.normal_(self.embedding_item.weight, std=0.1)

        def computer(self, Graph):
            users_emb = self.embedding_user.weight
            items_emb = self.embedding_item.weight
            all_emb = m.torch.cat([users_emb, items_emb])
            embs = [all_emb]
            for layer in range(self.n_layers):
                all_emb = m.torch.mm(Graph, all_emb)  # torch.sparse.mm in the repository (a dense adjacency here)
                embs.append(all_emb)
            embs = m.torch.stack(embs, dim=1)
            light_out = m.torch.mean(embs, dim=1)
            users, items = m.torch.split(light_out, [self.num_users, self.num_items])
            return users, items

        def bpr_loss(self, Graph, users, pos, neg):
            all_users, all_items = self.computer(Graph)
            users_emb, pos_emb, neg_emb = all_users[users], all_items[pos], all_items[neg]
            userEmb0, posEmb0, negEmb0 = self.embedding_user(users), self.embedding_item(pos), self.embedding_item(neg)
            reg_loss = (1 / 2) * (userEmb0.norm(2).pow(2) + posEmb0.norm(2).pow(2) +
                                  negEmb0.norm(2).pow(2)) / float(len(users))
            pos_scores = m.torch.mul(users_emb, pos_emb).sum(dim=1)
            neg_scores = m.torch.mul(users_emb, neg_emb).sum(dim=1)
            loss = m.torch.mean(nn.functional.softplus(neg_scores - pos_scores))
            return loss, reg_loss

    return LightGCN()


def normalised_adjacency(m, n_users=6, n_items=8, seed=20):
    torch = m.torch
    rng = np.random.default_rng(seed)
    R = torch.from_numpy((rng.random((n_users, n_items)) < 0.3).astype(np.float64))
    R[:, -1] = 0  # an item no one interacted with: degree 0
    n = n_users + n_items
    adj_mat = torch.zeros(n, n, dtype=torch.float64)
    adj_mat[:n_users, n_users:] = R
    adj_mat[n_users:, :n_users] = R.T
    rowsum = adj_mat.sum(dim=1)
    d_inv = rowsum.pow(-0.5)
    d_inv[torch.isinf(d_inv)] = 0.
    return d_inv[:, None] * adj_mat * d_inv[None, :], R


def test_lightgcn():
    def program(m, weights):
        torch, optim = m.torch, m.optim
        model = load(m, make_lightgcn(m), weights).double()
        Graph, R = normalised_adjacency(m)
        users, pos = R.nonzero(as_tuple=True)
        neg = torch.from_numpy(np.random.default_rng(21).integers(0, 8, len(users)))
        opt = optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for step in range(3):
            loss, reg_loss = model.bpr_loss(Graph, users, pos, neg)
            loss = loss + reg_loss * 1e-4
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        rating = torch.sigmoid(torch.matmul(*[t.detach() for t in model.computer(Graph)][:1],
                                            model.computer(Graph)[1].detach().t()))
        rating[R.bool()] = -(1 << 10)  # exclude the training interactions
        _, rating_K = torch.topk(rating, k=3)
        return {"losses": losses, "params": params_of(model), "graph": Graph, "topk": rating_K,
                "grad": model.embedding_item.weight.grad}

    ours, _ = run_both(program, weights_of(make_lightgcn), rtol=1e-9, atol=1e-12)
    assert not ours["graph"][:, -1].any()  # the isolated item: its degree's inf^-0.5 was zeroed


# ----------------------------------------------------------------------------------------------
# Autoformer (Wu et al. 2021, thuml/Autoformer): auto-correlation by rfft / irfft, time-delay aggregation
# by roll (training) and gather (inference), series decomposition; Informer's embeddings and distilling
# ----------------------------------------------------------------------------------------------


def make_autoformer(m, enc_in=2, d_model=8, n_heads=2, seq_len=16, label_len=8, pred_len=4, factor=1,
                    version_check=False):
    torch, nn, F = m.torch, m.nn, m.F

    class PositionalEmbedding(nn.Module):
        def __init__(self, d_model, max_len=5000):
            super(PositionalEmbedding, self).__init__()
            # Compute the positional encodings once in log space.
            pe = torch.zeros(max_len, d_model).float()
            pe.require_grad = False
            position = torch.arange(0, max_len).float().unsqueeze(1)
            div_term = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0)
            self.register_buffer('pe', pe)

        def forward(self, x):
            return self.pe[:, :x.size(1)]

    class TokenEmbedding(nn.Module):
        def __init__(self, c_in, d_model):
            super(TokenEmbedding, self).__init__()
            padding = (1 if torch.__version__ >= '1.5.0' else 2) if version_check else 1
            self.tokenConv = nn.Conv1d(in_channels=c_in, out_channels=d_model,
                                       kernel_size=3, padding=padding, padding_mode='circular', bias=False)
            for m_ in self.modules():
                if isinstance(m_, nn.Conv1d):
                    nn.init.kaiming_normal_(m_.weight, mode='fan_in', nonlinearity='leaky_relu')

        def forward(self, x):
            x = self.tokenConv(x.permute(0, 2, 1)).transpose(1, 2)
            return x

    class TimeFeatureEmbedding(nn.Module):
        def __init__(self, d_model, d_inp=3):
            super(TimeFeatureEmbedding, self).__init__()
            self.embed = nn.Linear(d_inp, d_model, bias=False)

        def forward(self, x):
            return self.embed(x)

    class DataEmbedding(nn.Module):
        def __init__(self, c_in, d_model, dropout=0.0):
            super(DataEmbedding, self).__init__()
            self.value_embedding = TokenEmbedding(c_in=c_in, d_model=d_model)
            self.position_embedding = PositionalEmbedding(d_model=d_model)
            self.temporal_embedding = TimeFeatureEmbedding(d_model=d_model)
            self.dropout = nn.Dropout(p=dropout)

        def forward(self, x, x_mark):
            x = self.value_embedding(x) + self.temporal_embedding(x_mark) + self.position_embedding(x)
            return self.dropout(x)

    class moving_avg(nn.Module):
        def __init__(self, kernel_size, stride):
            super(moving_avg, self).__init__()
            self.kernel_size = kernel_size
            self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=stride, padding=0)

        def forward(self, x):
            front = x[:, 0:1, :].repeat(1, (self.kernel_size - 1) // 2, 1)
            end = x[:, -1:, :].repeat(1, (self.kernel_size - 1) // 2, 1)
            x = torch.cat([front, x, end], dim=1)
            x = self.avg(x.permute(0, 2, 1))
            x = x.permute(0, 2, 1)
            return x

    class series_decomp(nn.Module):
        def __init__(self, kernel_size):
            super(series_decomp, self).__init__()
            self.moving_avg = moving_avg(kernel_size, stride=1)

        def forward(self, x):
            moving_mean = self.moving_avg(x)
            res = x - moving_mean
            return res, moving_mean

    class my_Layernorm(nn.Module):
        def __init__(self, channels):
            super(my_Layernorm, self).__init__()
            self.layernorm = nn.LayerNorm(channels)

        def forward(self, x):
            x_hat = self.layernorm(x)
            bias = torch.mean(x_hat, dim=1).unsqueeze(1).repeat(1, x.shape[1], 1)
            return x_hat - bias

    class AutoCorrelation(nn.Module):
        def __init__(self, mask_flag=True, factor=1, scale=None, attention_dropout=0.0, output_attention=False):
            super(AutoCorrelation, self).__init__()
            self.factor = factor
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)

        def time_delay_agg_training(self, values, corr):
            head = values.shape[1]
            channel = values.shape[2]
            length = values.shape[3]
            # find top k
            top_k = int(self.factor * math.log(length))
            mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
            index = torch.topk(torch.mean(mean_value, dim=0), top_k, dim=-1)[1]
            weights = torch.stack([mean_value[:, index[i]] for i in range(top_k)], dim=-1)
            # update corr
            tmp_corr = torch.softmax(weights, dim=-1)
            # aggregation
            tmp_values = values
            delays_agg = torch.zeros_like(values).float()
            for i in range(top_k):
                pattern = torch.roll(tmp_values, -int(index[i]), -1)
                delays_agg = delays_agg + pattern * \
                    (tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length))
            return delays_agg

        def time_delay_agg_inference(self, values, corr):
            batch = values.shape[0]
            head = values.shape[1]
            channel = values.shape[2]
            length = values.shape[3]
            # index init
            init_index = torch.arange(length).unsqueeze(0).unsqueeze(0).unsqueeze(0).repeat(batch, head, channel, 1)
            # find top k
            top_k = int(self.factor * math.log(length))
            mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
            weights, delay = torch.topk(mean_value, top_k, dim=-1)
            # update corr
            tmp_corr = torch.softmax(weights, dim=-1)
            # aggregation
            tmp_values = values.repeat(1, 1, 1, 2)
            delays_agg = torch.zeros_like(values).float()
            for i in range(top_k):
                tmp_delay = init_index + delay[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel,
                                                                                                   length)
                pattern = torch.gather(tmp_values, dim=-1, index=tmp_delay)
                delays_agg = delays_agg + pattern * \
                    (tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length))
            return delays_agg

        def forward(self, queries, keys, values, attn_mask):
            B, L, H, E = queries.shape
            _, S, _, D = values.shape
            if L > S:
                zeros = torch.zeros_like(queries[:, :(L - S), :]).float()
                values = torch.cat([values, zeros], dim=1)
                keys = torch.cat([keys, zeros], dim=1)
            else:
                values = values[:, :L, :, :]
                keys = keys[:, :L, :, :]
            # period-based dependencies
            q_fft = torch.fft.rfft(queries.permute(0, 2, 3, 1).contiguous(), dim=-1)
            k_fft = torch.fft.rfft(keys.permute(0, 2, 3, 1).contiguous(), dim=-1)
            res = q_fft * torch.conj(k_fft)
            corr = torch.fft.irfft(res, n=L, dim=-1)
            # time delay agg
            if self.training:
                V = self.time_delay_agg_training(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)
            else:
                V = self.time_delay_agg_inference(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)
            if self.output_attention:
                return (V.contiguous(), corr.permute(0, 3, 1, 2))
            else:
                return (V.contiguous(), None)

    class AutoCorrelationLayer(nn.Module):
        def __init__(self, correlation, d_model, n_heads, d_keys=None, d_values=None):
            super(AutoCorrelationLayer, self).__init__()
            d_keys = d_keys or (d_model // n_heads)
            d_values = d_values or (d_model // n_heads)
            self.inner_correlation = correlation
            self.query_projection = nn.Linear(d_model, d_keys * n_heads)
            self.key_projection = nn.Linear(d_model, d_keys * n_heads)
            self.value_projection = nn.Linear(d_model, d_values * n_heads)
            self.out_projection = nn.Linear(d_values * n_heads, d_model)
            self.n_heads = n_heads

        def forward(self, queries, keys, values, attn_mask):
            B, L, _ = queries.shape
            _, S, _ = keys.shape
            H = self.n_heads
            queries = self.query_projection(queries).view(B, L, H, -1)
            keys = self.key_projection(keys).view(B, S, H, -1)
            values = self.value_projection(values).view(B, S, H, -1)
            out, attn = self.inner_correlation(queries, keys, values, attn_mask)
            out = out.view(B, L, -1)
            return self.out_projection(out), attn

    class EncoderLayer(nn.Module):
        def __init__(self, attention, d_model, d_ff=None, moving_avg=5, dropout=0.0, activation="relu"):
            super(EncoderLayer, self).__init__()
            d_ff = d_ff or 4 * d_model
            self.attention = attention
            self.conv1 = nn.Conv1d(in_channels=d_model, out_channels=d_ff, kernel_size=1, bias=False)
            self.conv2 = nn.Conv1d(in_channels=d_ff, out_channels=d_model, kernel_size=1, bias=False)
            self.decomp1 = series_decomp(moving_avg)
            self.decomp2 = series_decomp(moving_avg)
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu if activation == "relu" else F.gelu

        def forward(self, x, attn_mask=None):
            new_x, attn = self.attention(x, x, x, attn_mask=attn_mask)
            x = x + self.dropout(new_x)
            x, _ = self.decomp1(x)
            y = x
            y = self.dropout(self.activation(self.conv1(y.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            res, _ = self.decomp2(x + y)
            return res, attn

    class ConvLayer(nn.Module):
        """Informer's distilling layer: circular Conv1d, BatchNorm, ELU, MaxPool1d(3, 2, 1)."""

        def __init__(self, c_in):
            super(ConvLayer, self).__init__()
            self.downConv = nn.Conv1d(in_channels=c_in, out_channels=c_in, kernel_size=3, padding=1,
                                      padding_mode='circular')
            self.norm = nn.BatchNorm1d(c_in)
            self.activation = nn.ELU()
            self.maxPool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

        def forward(self, x):
            x = self.downConv(x.permute(0, 2, 1))
            x = self.norm(x)
            x = self.activation(x)
            x = self.maxPool(x)
            x = x.transpose(1, 2)
            return x

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
            self.decomp = series_decomp(5)
            self.enc_embedding = DataEmbedding(enc_in, d_model)
            self.encoder_layers = nn.ModuleList([EncoderLayer(AutoCorrelationLayer(
                AutoCorrelation(False, factor), d_model, n_heads), d_model, 16, moving_avg=5)])
            self.distil = ConvLayer(d_model)
            self.norm = my_Layernorm(d_model)
            self.projection = nn.Linear(d_model * (seq_len // 2), pred_len * enc_in)

        def forward(self, x_enc, x_mark_enc):
            seasonal_init, trend_init = self.decomp(x_enc)
            enc_out = self.enc_embedding(seasonal_init, x_mark_enc)
            for layer in self.encoder_layers:
                enc_out, attns = layer(enc_out)
            enc_out = self.norm(self.distil(enc_out))
            out = self.projection(enc_out.flatten(1)).view(-1, self.pred_len, x_enc.shape[-1])
            return out + trend_init[:, -1:, :]

    return Model()


def autoformer_data(batch=3, seq_len=16, pred_len=4, seed=22):
    values = multivariate(60, 2, seed)
    starts = [0, 13, 30][:batch]
    x = np.stack([values[s:s + seq_len] for s in starts])
    y = np.stack([values[s + seq_len:s + seq_len + pred_len] for s in starts])
    t = np.arange(60)
    marks = np.stack([np.sin(2 * np.pi * t / 7), np.cos(2 * np.pi * t / 7), t / 60 - 0.5], 1)
    x_mark = np.stack([marks[s:s + seq_len] for s in starts])
    return x, x_mark, y


def autoformer(m, weights, version_check=False):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_autoformer(m, version_check=version_check), weights).double()
    x, x_mark, y = (torch.from_numpy(a) for a in autoformer_data())
    model_optim = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.MSELoss()
    losses, grads = train(m, model, lambda model: criterion(model(x, x_mark), y), model_optim, 3)
    model.eval()
    with torch.no_grad():
        inference = model(x, x_mark)  # the gather form of the time-delay aggregation
        q = model.encoder_layers[0].attention
        _, corr = q.inner_correlation.__class__(False, 1, output_attention=True)(
            *(t.view(3, 16, 2, 4) for t in (x_mark.repeat(1, 1, 3)[..., :8],) * 3), None)
    return {"losses": losses, "grads": grads, "params": params_of(model), "inference": inference, "corr": corr,
            "pe": model.enc_embedding.position_embedding.pe[0, :4]}


def test_autoformer():
    # atol: the distilling conv's bias, before BatchNorm, gets gradients of rounding noise only
    ours, _ = run_both(autoformer, weights_of(make_autoformer), rtol=1e-8, atol=1e-10)
    # the correlation by FFT is the circular cross-correlation: corr[tau] = sum_t q[t + tau] k[t]
    x, x_mark, y = autoformer_data()
    q = np.concatenate([x_mark] * 3, -1)[..., :8].reshape(3, 16, 2, 4)
    expected = np.stack([(np.roll(q, -tau, axis=1) * q).sum(1) for tau in range(16)], 1)
    np.testing.assert_allclose(ours["corr"], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["pe"][1, 0::2], np.sin(np.exp(np.arange(0, 8, 2) * -(math.log(1e4) / 8))),
                               rtol=1e-6)


def test_autoformer_token_embedding_version_check():
    # torch.__version__ >= '1.5.0' takes the padding=1 branch on both (autograd.__version__ is 2.13.0+chainrule...);
    # atol: the distilling conv's bias, before BatchNorm, gets gradients of rounding noise only (as above)
    run_both(autoformer, weights_of(make_autoformer), version_check=True, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# PatchTST (Nie et al. 2023, yuqinie98/PatchTST): patches by ReplicationPad1d + unfold, channel
# independence, BatchNorm in a transformer encoder, RevIN with subtract_last
# ----------------------------------------------------------------------------------------------


def make_patchtst(m, c_in=3, context_window=16, target_window=4, patch_len=4, stride=2, d_model=8, n_heads=2,
                  d_ff=16, n_layers=2):
    torch, nn, F = m.torch, m.nn, m.F
    patch_num = int((context_window - patch_len) / stride + 1) + 1  # padding_patch == 'end'

    class Transpose(nn.Module):
        def __init__(self, *dims, contiguous=False):
            super().__init__()
            self.dims, self.contiguous = dims, contiguous

        def forward(self, x):
            if self.contiguous:
                return x.transpose(*self.dims).contiguous()
            else:
                return x.transpose(*self.dims)

    class _ScaledDotProductAttention(nn.Module):
        def __init__(self, d_model, n_heads, attn_dropout=0., res_attention=False, lsa=False):
            super().__init__()
            self.attn_dropout = nn.Dropout(attn_dropout)
            self.res_attention = res_attention
            head_dim = d_model // n_heads
            self.scale = nn.Parameter(torch.tensor(head_dim ** -0.5), requires_grad=lsa)
            self.lsa = lsa

        def forward(self, q, k, v, prev=None, key_padding_mask=None, attn_mask=None):
            attn_scores = torch.matmul(q, k) * self.scale  # attn_scores : [bs x n_heads x max_q_len x q_len]
            if prev is not None:
                attn_scores = attn_scores + prev
            attn_weights = F.softmax(attn_scores, dim=-1)
            attn_weights = self.attn_dropout(attn_weights)
            output = torch.matmul(attn_weights, v)
            if self.res_attention:
                return output, attn_weights, attn_scores
            else:
                return output, attn_weights

    class _MultiheadAttention(nn.Module):
        def __init__(self, d_model, n_heads, res_attention=False, qkv_bias=True, lsa=False):
            super().__init__()
            d_k = d_v = d_model // n_heads
            self.n_heads, self.d_k, self.d_v = n_heads, d_k, d_v
            self.W_Q = nn.Linear(d_model, d_k * n_heads, bias=qkv_bias)
            self.W_K = nn.Linear(d_model, d_k * n_heads, bias=qkv_bias)
            self.W_V = nn.Linear(d_model, d_v * n_heads, bias=qkv_bias)
            self.res_attention = res_attention
            self.sdp_attn = _ScaledDotProductAttention(d_model, n_heads, res_attention=self.res_attention, lsa=lsa)
            self.to_out = nn.Sequential(nn.Linear(n_heads * d_v, d_model), nn.Dropout(0.0))

        def forward(self, Q, K=None, V=None, prev=None):
            bs = Q.size(0)
            if K is None:
                K = Q
            if V is None:
                V = Q
            q_s = self.W_Q(Q).view(bs, -1, self.n_heads, self.d_k).transpose(1, 2)
            k_s = self.W_K(K).view(bs, -1, self.n_heads, self.d_k).permute(0, 2, 3, 1)
            v_s = self.W_V(V).view(bs, -1, self.n_heads, self.d_v).transpose(1, 2)
            if self.res_attention:
                output, attn_weights, attn_scores = self.sdp_attn(q_s, k_s, v_s, prev=prev)
            else:
                output, attn_weights = self.sdp_attn(q_s, k_s, v_s)
            output = output.transpose(1, 2).contiguous().view(bs, -1, self.n_heads * self.d_v)
            output = self.to_out(output)
            if self.res_attention:
                return output, attn_weights, attn_scores
            else:
                return output, attn_weights

    class TSTEncoderLayer(nn.Module):
        def __init__(self, res_attention=True):
            super().__init__()
            self.res_attention = res_attention
            self.self_attn = _MultiheadAttention(d_model, n_heads, res_attention=res_attention, lsa=True)
            self.dropout_attn = nn.Dropout(0.0)
            self.norm_attn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))
            self.ff = nn.Sequential(nn.Linear(d_model, d_ff, bias=True), nn.GELU(), nn.Dropout(0.0),
                                    nn.Linear(d_ff, d_model, bias=True))
            self.dropout_ffn = nn.Dropout(0.0)
            self.norm_ffn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))

        def forward(self, src, prev=None):
            if self.res_attention:
                src2, attn, scores = self.self_attn(src, src, src, prev)
            else:
                src2, attn = self.self_attn(src, src, src)
            src = src + self.dropout_attn(src2)  # Add: residual connection with residual dropout
            src = self.norm_attn(src)
            src2 = self.ff(src)
            src = src + self.dropout_ffn(src2)
            src = self.norm_ffn(src)
            if self.res_attention:
                return src, scores
            else:
                return src

    class TSTiEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_P = nn.Linear(patch_len, d_model)
            self.W_pos = nn.Parameter(torch.empty((patch_num, d_model)).uniform_(-0.02, 0.02))
            self.dropout = nn.Dropout(0.0)
            self.layers = nn.ModuleList([TSTEncoderLayer() for i in range(n_layers)])

        def forward(self, x):
            n_vars = x.shape[1]
            x = x.permute(0, 1, 3, 2)  # x: [bs x nvars x patch_num x patch_len]
            x = self.W_P(x)  # x: [bs x nvars x patch_num x d_model]
            u = torch.reshape(x, (x.shape[0] * x.shape[1], x.shape[2], x.shape[3]))
            u = self.dropout(u + self.W_pos)
            scores = None
            for mod in self.layers:
                u, scores = mod(u, prev=scores)
            z = torch.reshape(u, (-1, n_vars, u.shape[-2], u.shape[-1]))
            z = z.permute(0, 1, 3, 2)  # z: [bs x nvars x d_model x patch_num]
            return z

    class PatchTST_backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.revin_layer = make_dlinear(m, channels=c_in).revin.__class__(c_in, affine=True, subtract_last=True)
            self.padding_patch_layer = nn.ReplicationPad1d((0, stride))
            self.backbone = TSTiEncoder()
            self.head = nn.Sequential(nn.Flatten(start_dim=-2), nn.Linear(d_model * patch_num, target_window))

        def forward(self, z):  # z: [bs x nvars x seq_len]
            z = z.permute(0, 2, 1)
            z = self.revin_layer(z, 'norm')
            z = z.permute(0, 2, 1)
            z = self.padding_patch_layer(z)
            z = z.unfold(dimension=-1, size=patch_len, step=stride)  # z: [bs x nvars x patch_num x patch_len]
            z = z.permute(0, 1, 3, 2)  # z: [bs x nvars x patch_len x patch_num]
            z = self.backbone(z)
            z = self.head(z)  # z: [bs x nvars x target_window]
            z = z.permute(0, 2, 1)
            z = self.revin_layer(z, 'denorm')
            z = z.permute(0, 2, 1)
            return z

    return PatchTST_backbone()


def test_patchtst():
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_patchtst(m), weights).double()
        values = torch.from_numpy(multivariate(40, 3, 23))
        w = values.unfold(0, 20, 4)  # (windows, channels, 20)
        x, y = w[..., :16], w[..., 16:]
        optimizer = optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=3, pct_start=0.3)
        losses = []
        for step in range(3):
            optimizer.zero_grad()
            loss = nn.MSELoss()(model(x), y)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        return {"losses": losses, "grads": grads, "params": params_of(model), "lr": scheduler.get_last_lr(),
                "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}

    ours, _ = run_both(program, weights_of(make_patchtst), rtol=1e-8, atol=1e-10)
    assert ours["frozen"] == []  # lsa=True: the attention scale is learnt


# ----------------------------------------------------------------------------------------------
# TimesNet (Wu et al. 2023): periods by the FFT's top amplitudes, 1-D series folded to 2-D for Conv2d
# ----------------------------------------------------------------------------------------------


def make_timesnet(m, seq_len=12, pred_len=0, d_model=4, d_ff=6, num_kernels=3, top_k=2):
    torch, nn, F = m.torch, m.nn, m.F

    def FFT_for_Period(x, k=2):
        # [B, T, C]
        xf = torch.fft.rfft(x, dim=1)
        # find period by amplitudes
        frequency_list = abs(xf).mean(0).mean(-1)
        frequency_list[0] = 0
        _, top_list = torch.topk(frequency_list, k)
        top_list = top_list.detach().cpu().numpy()
        period = x.shape[1] // top_list
        return period, abs(xf).mean(-1)[:, top_list]

    class Inception_Block_V1(nn.Module):
        def __init__(self, in_channels, out_channels, num_kernels=6, init_weight=True):
            super(Inception_Block_V1, self).__init__()
            self.num_kernels = num_kernels
            kernels = []
            for i in range(self.num_kernels):
                kernels.append(nn.Conv2d(in_channels, out_channels, kernel_size=2 * i + 1, padding=i))
            self.kernels = nn.ModuleList(kernels)
            if init_weight:
                self._initialize_weights()

        def _initialize_weights(self):
            for m_ in self.modules():
                if isinstance(m_, nn.Conv2d):
                    nn.init.kaiming_normal_(m_.weight, mode='fan_out', nonlinearity='relu')
                    if m_.bias is not None:
                        nn.init.constant_(m_.bias, 0)

        def forward(self, x):
            res_list = []
            for i in range(self.num_kernels):
                res_list.append(self.kernels[i](x))
            res = torch.stack(res_list, dim=-1).mean(-1)
            return res

    class TimesBlock(nn.Module):
        def __init__(self):
            super(TimesBlock, self).__init__()
            self.seq_len = seq_len
            self.pred_len = pred_len
            self.k = top_k
            self.conv = nn.Sequential(Inception_Block_V1(d_model, d_ff, num_kernels=num_kernels), nn.GELU(),
                                      Inception_Block_V1(d_ff, d_model, num_kernels=num_kernels))

        def forward(self, x):
            B, T, N = x.size()
            period_list, period_weight = FFT_for_Period(x, self.k)
            res = []
            for i in range(self.k):
                period = period_list[i]
                # padding
                if (self.seq_len + self.pred_len) % period != 0:
                    length = (((self.seq_len + self.pred_len) // period) + 1) * period
                    padding = torch.zeros([x.shape[0], (length - (self.seq_len + self.pred_len)), x.shape[2]]).to(
                        x.device)
                    out = torch.cat([x, padding], dim=1)
                else:
                    length = (self.seq_len + self.pred_len)
                    out = x
                # reshape
                out = out.reshape(B, length // period, period, N).permute(0, 3, 1, 2).contiguous()
                # 2D conv: from 1d Variation to 2d Variation
                out = self.conv(out)
                # reshape back
                out = out.permute(0, 2, 3, 1).reshape(B, -1, N)
                res.append(out[:, :(self.seq_len + self.pred_len), :])
            res = torch.stack(res, dim=-1)
            # adaptive aggregation
            period_weight = F.softmax(period_weight, dim=1)
            period_weight = period_weight.unsqueeze(1).unsqueeze(1).repeat(1, T, N, 1)
            res = torch.sum(res * period_weight, -1)
            # residual connection
            res = res + x
            return res, period_list

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(2, d_model)
            self.block = TimesBlock()
            self.layer_norm = nn.LayerNorm(d_model)
            self.projection = nn.Linear(d_model * seq_len, 3)

        def forward(self, x):
            h = self.embed(x)
            h, periods = self.block(h)
            h = self.layer_norm(h)
            return self.projection(F.gelu(h).reshape(h.shape[0], -1)), periods

    return Model()


def test_timesnet_classification():
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_timesnet(m), weights).double()
        rng = np.random.default_rng(24)
        t = np.arange(12)
        labels = rng.integers(0, 3, 8)
        x = np.stack([np.stack([np.sin(2 * np.pi * t / (3 + l)), np.cos(2 * np.pi * t / 4)], 1) for l in labels])
        x = torch.from_numpy(x + 0.1 * rng.standard_normal(x.shape))
        y = torch.from_numpy(labels)
        optimizer = optim.RAdam(model.parameters(), lr=1e-3)
        losses = []
        for step in range(3):
            optimizer.zero_grad()
            out, periods = model(x)
            loss = nn.CrossEntropyLoss()(out, y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=4.0)
            optimizer.step()
            losses.append(loss.item())
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return {"losses": losses, "grads": grads, "params": params_of(model), "periods": periods}

    run_both(program, weights_of(make_timesnet), rtol=1e-8, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# Temporal Fusion Transformer (Lim et al. 2021; pytorch-forecasting's sub-modules): GLU gates, gated
# residual networks with interpolated skips, variable selection, interpretable multi-head attention
# ----------------------------------------------------------------------------------------------


def make_tft(m, num_inputs=3, input_size=2, hidden_size=6, n_head=2, context_size=4):
    torch, nn, F = m.torch, m.nn, m.F

    class TimeDistributedInterpolation(nn.Module):
        def __init__(self, output_size, batch_first=False, trainable=False):
            super().__init__()
            self.output_size = output_size
            self.batch_first = batch_first
            self.trainable = trainable
            if self.trainable:
                self.mask = nn.Parameter(torch.zeros(self.output_size, dtype=torch.float32))
                self.gate = nn.Sigmoid()

        def interpolate(self, x):
            upsampled = F.interpolate(x.unsqueeze(1), self.output_size, mode="linear", align_corners=True).squeeze(1)
            if self.trainable:
                upsampled = upsampled * self.gate(self.mask.unsqueeze(0)) * 2.0
            return upsampled

        def forward(self, x):
            if len(x.size()) <= 2:
                return self.interpolate(x)
            x_reshape = x.contiguous().view(-1, x.size(-1))
            y = self.interpolate(x_reshape)
            if self.batch_first:
                y = y.contiguous().view(x.size(0), -1, y.size(-1))
            else:
                y = y.view(-1, x.size(1), y.size(-1))
            return y

    class GatedLinearUnit(nn.Module):
        def __init__(self, input_size, hidden_size=None, dropout=None):
            super().__init__()
            self.dropout = nn.Dropout(dropout) if dropout is not None else dropout
            self.hidden_size = hidden_size or input_size
            self.fc = nn.Linear(input_size, self.hidden_size * 2)
            for n, p in self.named_parameters():
                if "bias" in n:
                    nn.init.zeros_(p)
                elif "fc" in n:
                    nn.init.xavier_uniform_(p)

        def forward(self, x):
            if self.dropout is not None:
                x = self.dropout(x)
            x = self.fc(x)
            x = F.glu(x, dim=-1)
            return x

    class AddNorm(nn.Module):
        def __init__(self, input_size, skip_size=None, trainable_add=True):
            super().__init__()
            self.input_size = input_size
            self.trainable_add = trainable_add
            self.skip_size = skip_size or input_size
            if self.input_size != self.skip_size:
                self.resample = TimeDistributedInterpolation(self.input_size, batch_first=True, trainable=False)
            if self.trainable_add:
                self.mask = nn.Parameter(torch.zeros(self.input_size, dtype=torch.float))
                self.gate = nn.Sigmoid()
            self.norm = nn.LayerNorm(self.input_size)

        def forward(self, x, skip):
            if self.input_size != self.skip_size:
                skip = self.resample(skip)
            if self.trainable_add:
                skip = skip * self.gate(self.mask) * 2.0
            output = self.norm(x + skip)
            return output

    class GateAddNorm(nn.Module):
        def __init__(self, input_size, hidden_size=None, skip_size=None, trainable_add=False, dropout=None):
            super().__init__()
            self.hidden_size = hidden_size or input_size
            self.skip_size = skip_size or self.hidden_size
            self.glu = GatedLinearUnit(input_size, hidden_size=self.hidden_size, dropout=dropout)
            self.add_norm = AddNorm(self.hidden_size, skip_size=self.skip_size, trainable_add=trainable_add)

        def forward(self, x, skip):
            output = self.glu(x)
            output = self.add_norm(output, skip)
            return output

    class ResampleNorm(nn.Module):
        def __init__(self, input_size, output_size=None, trainable_add=True):
            super().__init__()
            self.input_size = input_size
            self.trainable_add = trainable_add
            self.output_size = output_size or input_size
            if self.input_size != self.output_size:
                self.resample = TimeDistributedInterpolation(self.output_size, batch_first=True, trainable=False)
            if self.trainable_add:
                self.mask = nn.Parameter(torch.zeros(self.output_size, dtype=torch.float))
                self.gate = nn.Sigmoid()
            self.norm = nn.LayerNorm(self.output_size)

        def forward(self, x):
            if self.input_size != self.output_size:
                x = self.resample(x)
            if self.trainable_add:
                x = x * self.gate(self.mask) * 2.0
            output = self.norm(x)
            return output

    class GatedResidualNetwork(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, dropout=0.1, context_size=None, residual=False):
            super().__init__()
            self.input_size = input_size
            self.output_size = output_size
            self.context_size = context_size
            self.hidden_size = hidden_size
            self.dropout = dropout
            self.residual = residual
            if self.input_size != self.output_size and not self.residual:
                residual_size = self.input_size
            else:
                residual_size = self.output_size
            if self.output_size != residual_size:
                self.resample_norm = ResampleNorm(residual_size, self.output_size)
            self.fc1 = nn.Linear(self.input_size, self.hidden_size)
            self.elu = nn.ELU()
            if self.context_size is not None:
                self.context = nn.Linear(self.context_size, self.hidden_size, bias=False)
            self.fc2 = nn.Linear(self.hidden_size, self.hidden_size)
            self.init_weights()
            self.gate_norm = GateAddNorm(input_size=self.hidden_size, skip_size=self.output_size,
                                         hidden_size=self.output_size, dropout=self.dropout, trainable_add=False)

        def init_weights(self):
            for name, p in self.named_parameters():
                if "bias" in name:
                    nn.init.zeros_(p)
                elif "fc1" in name or "fc2" in name:
                    nn.init.kaiming_normal_(p, a=0, mode="fan_in", nonlinearity="leaky_relu")
                elif "context" in name:
                    nn.init.xavier_uniform_(p)

        def forward(self, x, context=None, residual=None):
            if residual is None:
                residual = x
            if self.input_size != self.output_size and not self.residual:
                residual = self.resample_norm(residual)
            x = self.fc1(x)
            if context is not None:
                context = self.context(context)
                x = x + context
            x = self.elu(x)
            x = self.fc2(x)
            x = self.gate_norm(x, residual)
            return x

    class VariableSelectionNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_size = hidden_size
            self.input_sizes = {f"x{i}": input_size for i in range(num_inputs)}
            self.flattened_grn = GatedResidualNetwork(input_size * num_inputs, min(hidden_size, num_inputs),
                                                      num_inputs, 0.0, context_size, residual=False)
            self.single_variable_grns = nn.ModuleDict()
            for name, size in self.input_sizes.items():
                self.single_variable_grns[name] = GatedResidualNetwork(size, min(size, hidden_size), hidden_size,
                                                                       0.0)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x, context=None):
            var_outputs = []
            weight_inputs = []
            for name in self.input_sizes.keys():
                variable_embedding = x[name]
                weight_inputs.append(variable_embedding)
                var_outputs.append(self.single_variable_grns[name](variable_embedding))
            var_outputs = torch.stack(var_outputs, dim=-1)
            flat_embedding = torch.cat(weight_inputs, dim=-1)
            sparse_weights = self.flattened_grn(flat_embedding, context)
            sparse_weights = self.softmax(sparse_weights).unsqueeze(-2)
            outputs = var_outputs * sparse_weights
            outputs = outputs.sum(dim=-1)
            return outputs, sparse_weights

    class ScaledDotProductAttention(nn.Module):
        def __init__(self, dropout=None, scale=True):
            super(ScaledDotProductAttention, self).__init__()
            self.softmax = nn.Softmax(dim=2)
            self.scale = scale

        def forward(self, q, k, v, mask=None):
            attn = torch.bmm(q, k.permute(0, 2, 1))  # query-key overlap
            if self.scale:
                dimension = torch.as_tensor(k.size(-1), dtype=attn.dtype, device=attn.device).sqrt()
                attn = attn / dimension
            if mask is not None:
                attn = attn.masked_fill(mask, -1e9)
            attn = self.softmax(attn)
            output = torch.bmm(attn, v)
            return output, attn

    class InterpretableMultiHeadAttention(nn.Module):
        def __init__(self, n_head, d_model, dropout=0.0):
            super(InterpretableMultiHeadAttention, self).__init__()
            self.n_head = n_head
            self.d_model = d_model
            self.d_k = self.d_q = self.d_v = d_model // n_head
            self.dropout = nn.Dropout(p=dropout)
            self.v_layer = nn.Linear(self.d_model, self.d_v)
            self.q_layers = nn.ModuleList([nn.Linear(self.d_model, self.d_q) for _ in range(self.n_head)])
            self.k_layers = nn.ModuleList([nn.Linear(self.d_model, self.d_k) for _ in range(self.n_head)])
            self.attention = ScaledDotProductAttention()
            self.w_h = nn.Linear(self.d_v, self.d_model, bias=False)

        def forward(self, q, k, v, mask=None):
            heads = []
            attns = []
            vs = self.v_layer(v)
            for i in range(self.n_head):
                qs = self.q_layers[i](q)
                ks = self.k_layers[i](k)
                head, attn = self.attention(qs, ks, vs, mask)
                head_dropout = self.dropout(head)
                heads.append(head_dropout)
                attns.append(attn)
            head = torch.stack(heads, dim=2) if self.n_head > 1 else heads[0]
            attn = torch.stack(attns, dim=2)
            outputs = torch.mean(head, dim=2) if self.n_head > 1 else head
            outputs = self.w_h(outputs)
            outputs = self.dropout(outputs)
            return outputs, attn

    class TFT(nn.Module):
        def __init__(self):
            super().__init__()
            self.static_context = nn.Linear(1, context_size)
            self.vsn = VariableSelectionNetwork()
            self.lstm = nn.LSTM(hidden_size, hidden_size, batch_first=True)
            self.post_lstm_gate = GateAddNorm(hidden_size, dropout=0.0)
            self.attention = InterpretableMultiHeadAttention(n_head, hidden_size)
            self.post_attn_gate = GateAddNorm(hidden_size, dropout=0.0, trainable_add=True)
            self.output_layer = nn.Linear(hidden_size, 3)  # three quantiles

        def forward(self, x, static):
            context = self.static_context(static).unsqueeze(1).expand(-1, x["x0"].size(1), -1)
            embeddings, weights = self.vsn(x, context)
            lstm_out, _ = self.lstm(embeddings)
            h = self.post_lstm_gate(lstm_out, embeddings)
            T = h.size(1)
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1).unsqueeze(0).expand(h.size(0), -1, -1)
            attn_out, attn = self.attention(h, h, h, mask=mask)
            out = self.post_attn_gate(attn_out, h)
            return self.output_layer(out), weights, attn

    return TFT()


def test_temporal_fusion_transformer():
    def program(m, weights):
        torch, optim = m.torch, m.optim
        model = load(m, make_tft(m), weights).double()
        rng = np.random.default_rng(25)
        x = {f"x{i}": torch.from_numpy(rng.standard_normal((4, 7, 2))) for i in range(3)}
        static = torch.from_numpy(rng.standard_normal((4, 1)))
        target = torch.from_numpy(rng.standard_normal((4, 7)))
        quantiles = [0.1, 0.5, 0.9]
        optimizer = optim.Adam(model.parameters(), lr=3e-3)

        def loss_of(model):
            prediction, _, _ = model(x, static)
            losses = []
            for i, q in enumerate(quantiles):
                errors = target - prediction[..., i]
                losses.append(torch.max((q - 1) * errors, q * errors).unsqueeze(-1))
            return 2 * torch.cat(losses, dim=2).mean()

        losses, grads = train(m, model, loss_of, optimizer, 3)
        with torch.no_grad():
            _, selection, attn = model(x, static)
        return {"losses": losses, "grads": grads, "params": params_of(model), "selection": selection, "attn": attn}

    ours, _ = run_both(program, weights_of(make_tft), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["selection"].sum(-1), 1, rtol=1e-12)
    assert np.abs(np.triu(np.moveaxis(ours["attn"], 2, 1), 1)).max() == 0  # causal


# ----------------------------------------------------------------------------------------------
# NODE (Popov et al. 2020, Qwicen/node): oblivious decision trees with sparsemax feature choice, sparsemoid /
# entmoid bins, bin codes by integer // and %, a product over depth, data-aware initialisation
# ----------------------------------------------------------------------------------------------


def make_node(m, in_features=5, num_trees=3, depth=3, tree_dim=2, bin_function="sparsemoid"):
    torch, nn, F = m.torch, m.nn, m.F
    Sparsemax, _ = tabnet_functions(m)

    def sparsemax(input, dim=-1):
        return Sparsemax.apply(input, dim)

    def sparsemoid(input):
        return (0.5 * input + 0.5).clamp_(0, 1)

    class Entmoid15(torch.autograd.Function):
        """A highly optimized equivalent of labda x: Entmax15([x, 0])"""

        @staticmethod
        def forward(ctx, input):
            output = Entmoid15._forward(input)
            ctx.save_for_backward(output)
            return output

        @staticmethod
        def _forward(input):
            input, is_pos = abs(input), input >= 0
            tau = (input + torch.sqrt(F.relu(8 - input ** 2))) / 2
            tau.masked_fill_(tau <= input, 2.0)
            y_neg = 0.25 * F.relu(tau - input, inplace=True) ** 2
            return torch.where(is_pos, 1 - y_neg, y_neg)

        @staticmethod
        def backward(ctx, grad_output):
            return Entmoid15._backward(ctx.saved_tensors[0], grad_output)

        @staticmethod
        def _backward(output, grad_output):
            gppr0, gppr1 = output.sqrt(), (1 - output).sqrt()
            grad_input = grad_output * gppr0
            q = grad_input / (gppr0 + gppr1)
            grad_input -= q * gppr0
            return grad_input

    bins = {"sparsemoid": sparsemoid, "entmoid15": Entmoid15.apply}[bin_function]

    class ODST(nn.Module):
        def __init__(self, in_features, num_trees, depth=6, tree_dim=1, flatten_output=True,
                     choice_function=sparsemax, bin_function=sparsemoid,
                     initialize_response_=nn.init.normal_, initialize_selection_logits_=nn.init.uniform_,
                     threshold_init_beta=1.0, threshold_init_cutoff=1.0):
            super().__init__()
            self.depth, self.num_trees, self.tree_dim, self.flatten_output = depth, num_trees, tree_dim, flatten_output
            self.choice_function, self.bin_function = choice_function, bin_function
            self.threshold_init_beta, self.threshold_init_cutoff = threshold_init_beta, threshold_init_cutoff

            self.response = nn.Parameter(torch.zeros([num_trees, tree_dim, 2 ** depth]), requires_grad=True)
            initialize_response_(self.response)

            self.feature_selection_logits = nn.Parameter(
                torch.zeros([in_features, num_trees, depth]), requires_grad=True
            )
            initialize_selection_logits_(self.feature_selection_logits)

            self.feature_thresholds = nn.Parameter(
                torch.full([num_trees, depth], float('nan'), dtype=torch.float32), requires_grad=True
            )  # nan values will be initialized on first batch (data-aware init)

            self.log_temperatures = nn.Parameter(
                torch.full([num_trees, depth], float('nan'), dtype=torch.float32), requires_grad=True
            )

            # binary codes for mapping between 1-hot vectors and bin indices
            with torch.no_grad():
                indices = torch.arange(2 ** self.depth)
                offsets = 2 ** torch.arange(self.depth)
                bin_codes = (indices.view(1, -1) // offsets.view(-1, 1) % 2).to(torch.float32)
                bin_codes_1hot = torch.stack([bin_codes, 1.0 - bin_codes], dim=-1)
                self.bin_codes_1hot = nn.Parameter(bin_codes_1hot, requires_grad=False)
                # ^-- [depth, 2 ** depth, 2]

        def forward(self, input):
            assert len(input.shape) >= 2
            if len(input.shape) > 2:
                return self.forward(input.view(-1, input.shape[-1])).view(*input.shape[:-1], -1)
            feature_logits = self.feature_selection_logits
            feature_selectors = self.choice_function(feature_logits, dim=0)
            # ^--[in_features, num_trees, depth]
            feature_values = torch.einsum('bi,ind->bnd', input, feature_selectors)
            # ^--[batch_size, num_trees, depth]
            threshold_logits = (feature_values - self.feature_thresholds) * torch.exp(-self.log_temperatures)
            threshold_logits = torch.stack([-threshold_logits, threshold_logits], dim=-1)
            # ^--[batch_size, num_trees, depth, 2]
            bins = self.bin_function(threshold_logits)
            # ^--[batch_size, num_trees, depth, 2], approximately binary
            bin_matches = torch.einsum('btds,dcs->btdc', bins, self.bin_codes_1hot)
            # ^--[batch_size, num_trees, depth, 2 ** depth]
            response_weights = torch.prod(bin_matches, dim=-2)
            # ^-- [batch_size, num_trees, 2 ** depth]
            response = torch.einsum('bnd,ncd->bnc', response_weights, self.response)
            # ^-- [batch_size, num_trees, tree_dim]
            return response.flatten(1, 2) if self.flatten_output else response

        def initialize(self, input, eps=1e-6):
            # data-aware initializer
            assert len(input.shape) == 2
            with torch.no_grad():
                feature_selectors = self.choice_function(self.feature_selection_logits, dim=0)
                # ^--[in_features, num_trees, depth]
                feature_values = torch.einsum('bi,ind->bnd', input, feature_selectors)
                # ^--[batch_size, num_trees, depth]
                # initialize thresholds: sample random percentiles of data
                percentiles_q = 100 * np.random.RandomState(0).beta(self.threshold_init_beta,
                                                                    self.threshold_init_beta,
                                                                    size=[self.num_trees, self.depth])
                self.feature_thresholds.data[...] = torch.as_tensor(
                    list(map(np.percentile, feature_values.flatten(1, 2).t().detach().cpu().numpy(),
                             percentiles_q.flatten())),
                    dtype=feature_values.dtype, device=feature_values.device
                ).view(self.num_trees, self.depth)
                # init temperatures: make sure enough data points are in the linear region of sparse-sigmoid
                temperatures = np.percentile(
                    abs(feature_values - self.feature_thresholds).detach().cpu().numpy(),
                    q=100 * min(1.0, self.threshold_init_cutoff), axis=0)
                # if threshold_init_cutoff > 1, scale everything down by it
                temperatures /= max(1.0, self.threshold_init_cutoff)
                self.log_temperatures.data[...] = torch.log(torch.as_tensor(temperatures) + eps)

    class DenseBlock(nn.Sequential):
        def __init__(self, input_dim, layer_dim, num_layers, tree_dim=1, max_features=None, flatten_output=True,
                     **kwargs):
            layers = []
            for i in range(num_layers):
                oddt = ODST(input_dim, layer_dim, tree_dim=tree_dim, flatten_output=True, **kwargs)
                input_dim = min(input_dim + layer_dim * tree_dim, max_features or float('inf'))
                layers.append(oddt)
            super().__init__(*layers)
            self.num_layers, self.layer_dim, self.tree_dim = num_layers, layer_dim, tree_dim
            self.max_features, self.flatten_output = max_features, flatten_output

        def forward(self, x):
            initial_features = x.shape[-1]
            for layer in self:
                layer_inp = x
                h = layer(layer_inp)
                x = torch.cat([x, h], dim=-1)
            outputs = x[..., initial_features:]
            if not self.flatten_output:
                outputs = outputs.view(*outputs.shape[:-1], self.num_layers * self.layer_dim, self.tree_dim)
            return outputs

    return nn.Sequential(DenseBlock(in_features, num_trees, num_layers=2, tree_dim=tree_dim, depth=depth,
                                    flatten_output=False, choice_function=sparsemax, bin_function=bins))


@pytest.mark.parametrize("bin_function", ["sparsemoid", "entmoid15"])
def test_node_oblivious_trees(bin_function):
    def program(m):
        torch, optim = m.torch, m.optim
        torch.manual_seed(0)
        model = make_node(m, bin_function=bin_function)
        with torch.no_grad():  # the same random starting weights in both libraries
            rng = np.random.default_rng(26)
            for name, p in model.named_parameters():
                if p.requires_grad and not name.endswith(("thresholds", "temperatures")):
                    p.copy_(torch.from_numpy(rng.uniform(0, 1, p.shape) if "selection" in name
                                             else rng.standard_normal(p.shape)))
        model = model.double()
        rng = np.random.default_rng(27)
        X = torch.from_numpy(rng.standard_normal((24, 5)))
        y = torch.from_numpy(X.numpy()[:, 0] * 2 - X.numpy()[:, 1] ** 2)
        x = X
        for layer in model[0]:  # data-aware initialisation of each layer on the first batch
            layer.initialize(x)
            x = torch.cat([x, layer(x)], -1)
        init = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

        def loss_of(model):
            return ((model(X)[..., 0].mean(-1) - y) ** 2).mean()

        losses, grads = train(m, model, loss_of, optimizer, 3)
        return {"init": init, "losses": losses, "grads": grads, "params": params_of(model)}

    ours, _ = run_both(program, rtol=1e-8, atol=1e-11)
    codes = ours["init"]["0.0.bin_codes_1hot"]
    np.testing.assert_array_equal(codes[..., 0], [[0, 1, 0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 0, 0, 1, 1],
                                                  [0, 0, 0, 0, 1, 1, 1, 1]])
    assert "0.0.bin_codes_1hot" not in ours["grads"]


# ----------------------------------------------------------------------------------------------
# More CTR models of rixwew/pytorch-fm and DeepCTR-Torch: FFM, PNN, AFM, NFM and FiBiNET
# ----------------------------------------------------------------------------------------------


def make_ctr(m, name, embed_dim=4):
    torch, nn, F = m.torch, m.nn, m.F
    num_fields = len(FIELD_DIMS)
    offsets = np.array((0, *np.cumsum(FIELD_DIMS)[:-1]), dtype=np.int64)

    class FieldAwareFactorizationMachine(nn.Module):
        def __init__(self, field_dims, embed_dim):
            super().__init__()
            self.num_fields = len(field_dims)
            self.embeddings = nn.ModuleList([
                nn.Embedding(sum(field_dims), embed_dim) for _ in range(self.num_fields)
            ])
            for embedding in self.embeddings:
                nn.init.xavier_uniform_(embedding.weight.data)

        def forward(self, x):
            xs = [self.embeddings[i](x) for i in range(self.num_fields)]
            ix = list()
            for i in range(self.num_fields - 1):
                for j in range(i + 1, self.num_fields):
                    ix.append(xs[j][:, i] * xs[i][:, j])
            ix = torch.stack(ix, dim=1)
            return ix

    class InnerProductNetwork(nn.Module):
        def forward(self, x):
            num_fields = x.shape[1]
            row, col = list(), list()
            for i in range(num_fields - 1):
                for j in range(i + 1, num_fields):
                    row.append(i), col.append(j)
            return torch.sum(x[:, row] * x[:, col], dim=2)

    class OuterProductNetwork(nn.Module):
        def __init__(self, num_fields, embed_dim, kernel_type='mat'):
            super().__init__()
            num_ix = num_fields * (num_fields - 1) // 2
            kernel_shape = embed_dim, num_ix, embed_dim
            self.kernel_type = kernel_type
            self.kernel = nn.Parameter(torch.zeros(kernel_shape))
            nn.init.xavier_uniform_(self.kernel.data)

        def forward(self, x):
            num_fields = x.shape[1]
            row, col = list(), list()
            for i in range(num_fields - 1):
                for j in range(i + 1, num_fields):
                    row.append(i), col.append(j)
            p, q = x[:, row], x[:, col]
            kp = torch.sum(p.unsqueeze(1) * self.kernel, dim=-1).permute(0, 2, 1)
            return torch.sum(kp * q, -1)

    class AttentionalFactorizationMachine(nn.Module):
        def __init__(self, embed_dim, attn_size, dropouts):
            super().__init__()
            self.attention = nn.Linear(embed_dim, attn_size)
            self.projection = nn.Linear(attn_size, 1)
            self.fc = nn.Linear(embed_dim, 1)
            self.dropouts = dropouts

        def forward(self, x):
            num_fields = x.shape[1]
            row, col = list(), list()
            for i in range(num_fields - 1):
                for j in range(i + 1, num_fields):
                    row.append(i), col.append(j)
            p, q = x[:, row], x[:, col]
            inner_product = p * q
            attn_scores = F.relu(self.attention(inner_product))
            attn_scores = F.softmax(self.projection(attn_scores), dim=1)
            attn_scores = F.dropout(attn_scores, p=self.dropouts[0], training=self.training)
            attn_output = torch.sum(attn_scores * inner_product, dim=1)
            attn_output = F.dropout(attn_output, p=self.dropouts[1], training=self.training)
            return self.fc(attn_output)

    class SENETLayer(nn.Module):
        def __init__(self, filed_size, reduction_ratio=3):
            super(SENETLayer, self).__init__()
            self.filed_size = filed_size
            self.reduction_size = max(1, filed_size // reduction_ratio)
            self.excitation = nn.Sequential(
                nn.Linear(self.filed_size, self.reduction_size, bias=False),
                nn.ReLU(),
                nn.Linear(self.reduction_size, self.filed_size, bias=False),
                nn.ReLU()
            )

        def forward(self, inputs):
            Z = torch.mean(inputs, dim=-1, out=None)
            A = self.excitation(Z)
            V = torch.mul(inputs, torch.unsqueeze(A, dim=2))
            return V

    class BilinearInteraction(nn.Module):
        def __init__(self, filed_size, embedding_size, bilinear_type="interaction"):
            super(BilinearInteraction, self).__init__()
            self.bilinear_type = bilinear_type
            self.bilinear = nn.ModuleList()
            if self.bilinear_type == "all":
                self.bilinear = nn.Linear(embedding_size, embedding_size, bias=False)
            elif self.bilinear_type == "each":
                for _ in range(filed_size):
                    self.bilinear.append(nn.Linear(embedding_size, embedding_size, bias=False))
            elif self.bilinear_type == "interaction":
                for _, _ in itertools.combinations(range(filed_size), 2):
                    self.bilinear.append(nn.Linear(embedding_size, embedding_size, bias=False))

        def forward(self, inputs):
            inputs = torch.split(inputs, 1, dim=1)
            if self.bilinear_type == "all":
                p = [torch.mul(self.bilinear(v_i), v_j) for v_i, v_j in itertools.combinations(inputs, 2)]
            elif self.bilinear_type == "each":
                p = [torch.mul(self.bilinear[i](inputs[i]), inputs[j])
                     for i, j in itertools.combinations(range(len(inputs)), 2)]
            elif self.bilinear_type == "interaction":
                p = [torch.mul(bilinear(v[0]), v[1])
                     for v, bilinear in zip(itertools.combinations(inputs, 2), self.bilinear)]
            return torch.cat(p, dim=1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Embedding(sum(FIELD_DIMS), 1)
            self.bias = nn.Parameter(torch.zeros((1,)))
            num_ix = num_fields * (num_fields - 1) // 2
            if name == "ffm":
                self.ffm = FieldAwareFactorizationMachine(FIELD_DIMS, embed_dim)
                return
            self.embedding = nn.Embedding(sum(FIELD_DIMS), embed_dim)
            if name in ("ipnn", "opnn"):
                self.pn = InnerProductNetwork() if name == "ipnn" else OuterProductNetwork(num_fields, embed_dim)
                self.mlp = nn.Sequential(nn.Linear(num_ix + num_fields * embed_dim, 8), nn.ReLU(), nn.Linear(8, 1))
            elif name == "afm":
                self.afm = AttentionalFactorizationMachine(embed_dim, 5, (0.0, 0.0))
            elif name == "nfm":
                self.fm = nn.Sequential(nn.BatchNorm1d(embed_dim), nn.Dropout(0.0))
                self.mlp = nn.Sequential(nn.Linear(embed_dim, 8), nn.ReLU(), nn.Linear(8, 1))
            elif name.startswith("fibinet"):
                self.se = SENETLayer(num_fields, 3)
                self.bi = BilinearInteraction(num_fields, embed_dim, name.split("_")[1])
                self.mlp = nn.Sequential(nn.Linear(2 * num_ix * embed_dim, 8), nn.ReLU(), nn.Linear(8, 1))

        def forward(self, x):
            x = x + x.new_tensor(offsets).unsqueeze(0)
            linear = torch.sum(self.linear(x), dim=1) + self.bias
            if name == "ffm":
                ffm_term = torch.sum(torch.sum(self.ffm(x), dim=1), dim=1, keepdim=True)
                return torch.sigmoid((linear + ffm_term).squeeze(1))
            embed_x = self.embedding(x)
            if name in ("ipnn", "opnn"):
                cross_term = self.pn(embed_x)
                out = self.mlp(torch.cat([embed_x.view(-1, num_fields * embed_dim), cross_term], dim=1))
            elif name == "afm":
                out = self.afm(embed_x)
            elif name == "nfm":
                cross_term = 0.5 * (torch.sum(embed_x, dim=1) ** 2 - torch.sum(embed_x ** 2, dim=1))
                out = self.mlp(self.fm(cross_term))
            else:
                senet = self.se(embed_x)
                bilinear = torch.cat([self.bi(embed_x), self.bi(senet)], dim=1)
                out = self.mlp(torch.flatten(bilinear, start_dim=1))
            return torch.sigmoid((linear + out).squeeze(1))

    return Model()


@pytest.mark.parametrize("name", ["ffm", "ipnn", "opnn", "afm", "nfm", "fibinet_all", "fibinet_each",
                                  "fibinet_interaction"])
def test_ctr_models(name):
    make = lambda m: make_ctr(m, name)

    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make(m), weights).double()
        x, y = (torch.from_numpy(a) for a in fm_data())
        criterion = nn.BCELoss()
        optimizer = optim.Adam(params=model.parameters(), lr=0.01, weight_decay=1e-6)
        losses, grads = train(m, model, lambda model: criterion(model(x), y), optimizer, 3)
        return {"losses": losses, "grads": grads, "params": params_of(model)}

    run_both(program, weights_of(make), rtol=1e-8, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# Informer's ProbSparse self-attention (Zhou et al. 2021, zhouhaoyi/Informer2020): sampled keys by advanced
# indexing of an expanded tensor, the top queries by a sparsity measure, context rows written by index
# ----------------------------------------------------------------------------------------------


def make_prob_attention(m, d_model=8, n_heads=2, factor=2):
    torch, nn = m.torch, m.nn

    class ProbMask():
        def __init__(self, B, H, L, index, scores, device="cpu"):
            _mask = torch.ones(L, scores.shape[-1], dtype=torch.bool).to(device).triu(1)
            _mask_ex = _mask[None, None, :].expand(B, H, L, scores.shape[-1])
            indicator = _mask_ex[torch.arange(B)[:, None, None],
                                 torch.arange(H)[None, :, None],
                                 index, :].to(device)
            self._mask = indicator.view(scores.shape).to(device)

        @property
        def mask(self):
            return self._mask

    class ProbAttention(nn.Module):
        def __init__(self, mask_flag=True, factor=5, scale=None, attention_dropout=0.0, output_attention=False):
            super(ProbAttention, self).__init__()
            self.factor = factor
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)
            self.index_sample = None  # the sampled keys: drawn by the caller here, so both libraries share them

        def _prob_QK(self, Q, K, sample_k, n_top):  # n_top: c*ln(L_q)
            # Q [B, H, L, D]
            B, H, L_K, E = K.shape
            _, _, L_Q, _ = Q.shape
            # calculate the sampled Q_K
            K_expand = K.unsqueeze(-3).expand(B, H, L_Q, L_K, E)
            index_sample = self.index_sample  # torch.randint(L_K, (L_Q, sample_k)) in the repository
            K_sample = K_expand[:, :, torch.arange(L_Q).unsqueeze(1), index_sample, :]
            Q_K_sample = torch.matmul(Q.unsqueeze(-2), K_sample.transpose(-2, -1)).squeeze(-2)
            # find the Top_k query with sparisty measurement
            M = Q_K_sample.max(-1)[0] - torch.div(Q_K_sample.sum(-1), L_K)
            M_top = M.topk(n_top, sorted=False)[1]
            # use the reduced Q to calculate Q_K
            Q_reduce = Q[torch.arange(B)[:, None, None],
                         torch.arange(H)[None, :, None],
                         M_top, :]  # factor*ln(L_q)
            Q_K = torch.matmul(Q_reduce, K.transpose(-2, -1))  # factor*ln(L_q)*L_k
            return Q_K, M_top

        def _get_initial_context(self, V, L_Q):
            B, H, L_V, D = V.shape
            if not self.mask_flag:
                V_sum = V.mean(dim=-2)
                contex = V_sum.unsqueeze(-2).expand(B, H, L_Q, V_sum.shape[-1]).clone()
            else:  # use mask
                assert (L_Q == L_V)  # requires that L_Q == L_V, i.e. for self-attention only
                contex = V.cumsum(dim=-2)
            return contex

        def _update_context(self, context_in, V, scores, index, L_Q, attn_mask):
            B, H, L_V, D = V.shape
            if self.mask_flag:
                attn_mask = ProbMask(B, H, L_Q, index, scores, device=V.device)
                scores.masked_fill_(attn_mask.mask, -np.inf)
            attn = torch.softmax(scores, dim=-1)  # nn.Softmax(dim=-1)(scores)
            context_in[torch.arange(B)[:, None, None],
                       torch.arange(H)[None, :, None],
                       index, :] = torch.matmul(attn, V).type_as(context_in)
            if self.output_attention:
                attns = (torch.ones([B, H, L_V, L_V]) / L_V).type_as(attn).to(attn.device)
                attns[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], index, :] = attn
                return (context_in, attns)
            else:
                return (context_in, None)

        def forward(self, queries, keys, values, attn_mask):
            B, L_Q, H, D = queries.shape
            _, L_K, _, _ = keys.shape
            queries = queries.transpose(2, 1)
            keys = keys.transpose(2, 1)
            values = values.transpose(2, 1)
            U_part = self.factor * np.ceil(np.log(L_K)).astype('int').item()  # c*ln(L_k)
            u = self.factor * np.ceil(np.log(L_Q)).astype('int').item()  # c*ln(L_q)
            U_part = U_part if U_part < L_K else L_K
            u = u if u < L_Q else L_Q
            scores_top, index = self._prob_QK(queries, keys, sample_k=U_part, n_top=u)
            # add scale factor
            scale = self.scale or 1. / math.sqrt(D)
            if scale is not None:
                scores_top = scores_top * scale
            # get the context
            context = self._get_initial_context(values, L_Q)
            # update the context with selected top_k queries
            context, attn = self._update_context(context, values, scores_top, index, L_Q, attn_mask)
            return context.transpose(2, 1).contiguous(), attn

    class AttentionLayer(nn.Module):
        def __init__(self, attention, d_model, n_heads, mix=False):
            super(AttentionLayer, self).__init__()
            d_keys = d_model // n_heads
            d_values = d_model // n_heads
            self.inner_attention = attention
            self.query_projection = nn.Linear(d_model, d_keys * n_heads)
            self.key_projection = nn.Linear(d_model, d_keys * n_heads)
            self.value_projection = nn.Linear(d_model, d_values * n_heads)
            self.out_projection = nn.Linear(d_values * n_heads, d_model)
            self.n_heads = n_heads
            self.mix = mix

        def forward(self, queries, keys, values, attn_mask):
            B, L, _ = queries.shape
            _, S, _ = keys.shape
            H = self.n_heads
            queries = self.query_projection(queries).view(B, L, H, -1)
            keys = self.key_projection(keys).view(B, S, H, -1)
            values = self.value_projection(values).view(B, S, H, -1)
            out, attn = self.inner_attention(queries, keys, values, attn_mask)
            if self.mix:
                out = out.transpose(2, 1).contiguous()
            out = out.view(B, L, -1)
            return self.out_projection(out), attn

    return nn.ModuleList([AttentionLayer(ProbAttention(False, factor), d_model, n_heads),
                          AttentionLayer(ProbAttention(True, factor, output_attention=True), d_model, n_heads,
                                         mix=True)])


def test_informer_prob_sparse_attention():
    def program(m, weights):
        torch, optim = m.torch, m.optim
        layers = load(m, make_prob_attention(m), weights).double()
        rng = np.random.default_rng(28)
        x = torch.from_numpy(rng.standard_normal((2, 12, 8)))
        target = torch.from_numpy(rng.standard_normal((2, 12, 8)))
        for layer in layers:
            layer.inner_attention.index_sample = torch.from_numpy(rng.integers(0, 12, (12, 6)))
        optimizer = optim.Adam(layers.parameters(), lr=1e-3)

        def loss_of(layers):
            enc, _ = layers[0](x, x, x, None)  # encoder: unmasked, mean-of-V initial context
            dec, attn = layers[1](enc, enc, enc, None)  # decoder: masked, cumsum initial context
            return ((dec - target) ** 2).mean()

        losses, grads = train(m, layers, loss_of, optimizer, 3)
        with torch.no_grad():
            _, attn = layers[1](x, x, x, None)
        return {"losses": losses, "grads": grads, "params": params_of(layers), "attn": attn}

    ours, _ = run_both(program, weights_of(make_prob_attention), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["attn"].sum(-1), 1, rtol=1e-7)  # (the unselected rows: float32 1/12s)
    assert (ours["attn"] == np.float32(1 / 12)).all(-1).sum() == 2 * 2 * (12 - 2 * 3)  # 6 queries of 12 selected
