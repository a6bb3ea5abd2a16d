# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Architectures from papers' reference code (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights, comparing outputs, losses, gradients and parameters. Neural collaborative filtering
(guoyang9/NCF's NeuMF with its own initialisation, ``BCEWithLogitsLoss(pos_weight=...)``, hit ratio and NDCG by
``topk`` and ``torch.take``)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Neural collaborative filtering
# ----------------------------------------------------------------------------------------------

USERS, ITEMS = 12, 20


def ncf_model(m, dropout=0.0):
    torch, nn = m.torch, m.nn

    class NCF(nn.Module):
        def __init__(self, user_num, item_num, factor_num, num_layers, dropout, model):
            super(NCF, self).__init__()
            self.dropout = dropout
            self.model = model
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
            if self.model in ['MLP', 'GMF']:
                predict_size = factor_num
            else:
                predict_size = factor_num * 2
            self.predict_layer = nn.Linear(predict_size, 1)
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

    return NCF(USERS, ITEMS, 4, 2, dropout, "NeuMF-end")


def ncf(m, weights, epochs=5, top_k=5, lr=0.01):
    torch, nn = m.torch, m.nn
    model = load(m, ncf_model(m), weights)
    rng = np.random.default_rng(12)
    pos = {u: set(rng.choice(ITEMS, 3, replace=False).tolist()) for u in range(USERS)}
    users, items, labels = [], [], []
    for u in range(USERS):
        for i in range(ITEMS):
            users.append(u)
            items.append(i)
            labels.append(float(i in pos[u]))
    dataset = m.data.TensorDataset(torch.tensor(users), torch.tensor(items), torch.tensor(labels))
    loader = m.data.DataLoader(dataset, batch_size=64, shuffle=False)
    n_pos = sum(labels)
    loss_function = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - n_pos) / n_pos))
    optimizer = m.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for user, item, label in loader:
            model.zero_grad()
            prediction = model(user, item)
            loss = loss_function(prediction, label)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total)

    def hit(gt_item, pred_items):
        return 1 if gt_item in pred_items else 0

    def ndcg(gt_item, pred_items):
        if gt_item in pred_items:
            index = pred_items.index(gt_item)
            return np.reciprocal(np.log2(index + 2))
        return 0

    model.eval()
    HR, NDCG = [], []
    with torch.no_grad():
        for u in range(USERS):
            item = torch.arange(ITEMS)
            user = torch.full((ITEMS,), u, dtype=torch.long)
            predictions = model(user, item)
            _, indices = torch.topk(predictions, top_k)
            recommends = torch.take(item, indices).cpu().numpy().tolist()
            gt_item = min(pos[u])
            HR.append(hit(gt_item, recommends))
            NDCG.append(ndcg(gt_item, recommends))
    return {"losses": losses, "HR": float(np.mean(HR)), "NDCG": float(np.mean(NDCG)),
            "params": [p.detach() for p in model.parameters()], "pos_weight": loss_function.pos_weight,
            "buffers": sorted(dict(loss_function.named_buffers()))}


def test_neural_collaborative_filtering():
    weights = weights_of(ncf_model)
    ours, _ = run_both(ncf, weights, rtol=1e-4, atol=1e-5)
    # chance is 5 / 20
    assert ours["losses"][-1] < ours["losses"][0] and ours["HR"] > 0.4 and 0 < ours["NDCG"] <= ours["HR"]
    assert np.isclose(ours["pos_weight"], 17 / 3) and ours["buffers"] == ["pos_weight"]
