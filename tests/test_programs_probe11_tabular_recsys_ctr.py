# ruff: noqa: E731, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Click-through-rate recommenders: factorization machines and DeepFM (the
square-of-sum minus sum-of-squares trick, field offsets); FFM, PNN, AFM, NFM, FiBiNET (SENET, bilinear interactions),
xDeepFM's CIN and AutoInt; DCN's cross network (``x0 * (x @ w) + b + x``) and DCN-V2's."""

import itertools

import numpy as np
import pytest

from .probe11_tabular_common import params_of, train
from .pytorch_programs import load, run_both, weights_of

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
