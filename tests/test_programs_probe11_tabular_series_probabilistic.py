# ruff: noqa: B007, E731, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Time series, probabilistic and quantile forecasts: DeepAR with Gaussian and
NegativeBinomial likelihoods (mean scaling, seeded ancestral sampling); pinball, ``PoissonNLLLoss``,
``GaussianNLLLoss``, ``HuberLoss``; the Temporal Fusion Transformer's gated residual networks, variable selection and
interpretable attention."""

import math

import numpy as np
import pytest

from .probe11_tabular_common import params_of, train
from .pytorch_programs import assert_same, load, run_both, weights_of

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
