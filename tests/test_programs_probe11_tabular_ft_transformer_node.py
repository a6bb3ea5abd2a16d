# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Tabular: FT-Transformer's tokenizers (per-feature weights by broadcasting,
categorical offsets by ``cumsum``, a CLS token by ``cat`` with ``expand``) with periodic numerical embeddings; NODE's
oblivious trees (bin codes by ``//`` and ``%``, a product over depth, data-aware initialisation through
``.data[...]``)."""

import math

import numpy as np
import pytest

from .probe11_tabular_common import params_of, tabnet_functions, train
from .pytorch_programs import load, run_both, weights_of

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
