# ruff: noqa: B007, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Recommenders learning from interactions: neural collaborative filtering (NeuMF:
GMF and MLP towers, ``BCEWithLogitsLoss``); BPR matrix factorisation (``F.logsigmoid``); SASRec (causal
``MultiheadAttention``, ``*=`` by a bool mask, indexing by ``np.where``); GRU4Rec (session-parallel batches, hidden
reset, TOP1 / BPR(-max)); two-tower retrieval (in-batch softmax, logQ, masked hits); LightGCN."""

import math

import numpy as np
import pytest

from .probe11_tabular_common import params_of, train
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
