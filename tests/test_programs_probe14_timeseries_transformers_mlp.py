# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Time-series programs, run as tests/probe14_timeseries_common.py says. Attention and MLP forecasters: N-HiTS
(``MaxPool1d``/``AvgPool1d`` with ``ceil_mode=True``, knots by ``F.interpolate`` linear, nearest and bicubic),
iTransformer (variables as tokens), and the Non-stationary Transformer in float32 (tau/delta learners with a circular
``Conv1d`` over time as channels, de-stationary attention by ``einsum``, RevIN with ``subtract_last``)."""

import math

import numpy as np

from .probe14_timeseries_common import grads_of, multiseries, params_of
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# N-HiTS (neuralforecast): MaxPool1d(ceil_mode=True) input pooling, interpolated knots (linear,
# nearest, bicubic), doubly residual stacking on the flipped history
# ----------------------------------------------------------------------------------------------


def make_nhits(m, h=8, input_size=18, pool=(4, 4, 1), freq=(4, 2, 1), modes=("linear", "nearest", "cubic"),
               hidden=16):
    torch, nn, F = m.torch, m.nn, m.F

    class _IdentityBasis(nn.Module):
        def __init__(self, backcast_size, forecast_size, interpolation_mode, out_features=1):
            super().__init__()
            assert (interpolation_mode in ["linear", "nearest"]) or ("cubic" in interpolation_mode)
            self.forecast_size = forecast_size
            self.backcast_size = backcast_size
            self.interpolation_mode = interpolation_mode
            self.out_features = out_features

        def forward(self, theta):
            backcast = theta[:, : self.backcast_size]
            knots = theta[:, self.backcast_size:]
            knots = knots.reshape(len(knots), self.out_features, -1)
            if self.interpolation_mode in ["nearest", "linear"]:
                forecast = F.interpolate(knots, size=self.forecast_size, mode=self.interpolation_mode)
            elif "cubic" in self.interpolation_mode:
                batch_size = len(backcast)
                knots = knots[:, None, :, :]
                forecast = torch.zeros((len(knots), self.forecast_size), dtype=knots.dtype)
                n_batches = int(np.ceil(len(knots) / batch_size))
                for i in range(n_batches):
                    forecast_i = F.interpolate(knots[i * batch_size: (i + 1) * batch_size], size=self.forecast_size,
                                               mode="bicubic")
                    forecast[i * batch_size: (i + 1) * batch_size] += forecast_i[:, 0, 0, :]
                forecast = forecast[:, None, :]
            forecast = forecast.permute(0, 2, 1)
            return backcast, forecast

    class NHITSBlock(nn.Module):
        def __init__(self, input_size, h, n_theta, mlp_units, basis, n_pool_kernel_size, pooling_mode="MaxPool1d"):
            super().__init__()
            pooled_hist_size = int(np.ceil(input_size / n_pool_kernel_size))
            self.pooling_layer = getattr(nn, pooling_mode)(kernel_size=n_pool_kernel_size,
                                                           stride=n_pool_kernel_size, ceil_mode=True)
            hidden_layers = [nn.Linear(in_features=pooled_hist_size, out_features=mlp_units[0][0])]
            for layer in mlp_units:
                hidden_layers.append(nn.Linear(in_features=layer[0], out_features=layer[1]))
                hidden_layers.append(nn.ReLU())
            output_layer = [nn.Linear(in_features=mlp_units[-1][1], out_features=n_theta)]
            self.layers = nn.Sequential(*hidden_layers, *output_layer)
            self.basis = basis

        def forward(self, insample_y):
            insample_y = insample_y.unsqueeze(1)
            insample_y = self.pooling_layer(insample_y)
            insample_y = insample_y.squeeze(1)
            theta = self.layers(insample_y)
            backcast, forecast = self.basis(theta)
            return backcast, forecast

    class NHITS(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = h
            blocks = []
            for i in range(len(pool)):
                n_theta = input_size + max(h // freq[i], 1)
                basis = _IdentityBasis(input_size, h, modes[i])
                blocks.append(NHITSBlock(input_size, h, n_theta, [[hidden, hidden], [hidden, hidden]], basis,
                                         pool[i], pooling_mode="MaxPool1d" if i == 0 else "AvgPool1d"))
            self.blocks = nn.ModuleList(blocks)

        def forward(self, insample_y, insample_mask):
            residuals = insample_y.flip(dims=(-1,))
            insample_mask = insample_mask.flip(dims=(-1,))
            forecast = insample_y[:, -1:, None]  # Level with Naive1
            block_forecasts = [forecast.repeat(1, self.h, 1)]
            for i, block in enumerate(self.blocks):
                backcast, block_forecast = block(insample_y=residuals)
                residuals = (residuals - backcast) * insample_mask
                forecast = forecast + block_forecast
                block_forecasts.append(block_forecast)
            return forecast.squeeze(-1), torch.stack(block_forecasts, dim=-1)

    return NHITS()


def nhits(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_nhits(m), weights).double()
    y = torch.tensor(multiseries(length=60, channels=1)[:, 0])
    w = y.unfold(0, 26, 3)
    x, target = w[:, :18], w[:, 18:]
    mask = torch.ones_like(x)
    mask[:2, :3] = 0  # padded history at the start of the first windows
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    losses = []
    for step in range(4):
        optimizer.zero_grad()
        forecast, parts = model(x, mask)
        loss = (forecast - target).abs().mean()  # MAE
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return dict(losses=losses, grads=grads_of(model), params=params_of(model), parts=parts,
                pooled=nn.MaxPool1d(4, 4, ceil_mode=True)(x[:1, None]),
                averaged=nn.AvgPool1d(4, 4, ceil_mode=True)(x[:1, None]), lr=scheduler.get_last_lr())


def test_nhits():
    ours, _ = run_both(nhits, weights_of(make_nhits), rtol=1e-9, atol=1e-11)
    x = multiseries(length=60, channels=1)[:18, 0]
    np.testing.assert_array_equal(ours["pooled"].ravel(), [x[i:i + 4].max() for i in range(0, 18, 4)])
    assert ours["parts"].shape == (12, 8, 1, 4)
    # the last window of ceil_mode holds the two elements left, and averages over them alone
    np.testing.assert_allclose(ours["averaged"].ravel(), [x[i:i + 4].mean() for i in range(0, 18, 4)], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# iTransformer (thuml/iTransformer): variables as tokens, non-stationary normalisation, time marks
# ----------------------------------------------------------------------------------------------


def make_itransformer(m, seq_len=16, pred_len=4, d_model=8, n_heads=2, e_layers=2, d_ff=16, n_marks=2):
    torch, nn = m.torch, m.nn

    class DataEmbedding_inverted(nn.Module):
        def __init__(self, c_in, d_model, dropout=0.0):
            super(DataEmbedding_inverted, self).__init__()
            self.value_embedding = nn.Linear(c_in, d_model)
            self.dropout = nn.Dropout(p=dropout)

        def forward(self, x, x_mark):
            x = x.permute(0, 2, 1)
            # x: [Batch Variate Time]
            if x_mark is None:
                x = self.value_embedding(x)
            else:
                # the potential to take covariates (e.g. timestamps) as tokens
                x = self.value_embedding(torch.cat([x, x_mark.permute(0, 2, 1)], 1))
            # x: [Batch Variate d_model]
            return self.dropout(x)

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.seq_len = seq_len
            self.pred_len = pred_len
            self.use_norm = True
            self.enc_embedding = DataEmbedding_inverted(seq_len, d_model)
            layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, activation="gelu",
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, e_layers, norm=nn.LayerNorm(d_model),
                                                 enable_nested_tensor=False)
            self.projector = nn.Linear(d_model, pred_len, bias=True)

        def forecast(self, x_enc, x_mark_enc):
            if self.use_norm:
                # Normalization from Non-stationary Transformer
                means = x_enc.mean(1, keepdim=True).detach()
                x_enc = x_enc - means
                stdev = torch.sqrt(torch.var(x_enc, dim=1, keepdim=True, unbiased=False) + 1e-5)
                x_enc /= stdev
            _, _, N = x_enc.shape  # B L N
            enc_out = self.enc_embedding(x_enc, x_mark_enc)  # covariates (e.g timestamp) can be also embedded as tokens
            enc_out = self.encoder(enc_out)
            dec_out = self.projector(enc_out).permute(0, 2, 1)[:, :, :N]  # filter the covariates
            if self.use_norm:
                # De-Normalization from Non-stationary Transformer
                dec_out = dec_out * (stdev[:, 0, :].unsqueeze(1).repeat(1, self.pred_len, 1))
                dec_out = dec_out + (means[:, 0, :].unsqueeze(1).repeat(1, self.pred_len, 1))
            return dec_out

        def forward(self, x_enc, x_mark_enc, mask=None):
            dec_out = self.forecast(x_enc, x_mark_enc)
            return dec_out[:, -self.pred_len:, :]  # [B, L, D]

    return Model()


def itransformer(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_itransformer(m), weights).double()
    values = torch.tensor(multiseries(length=44))
    hours = torch.arange(44, dtype=torch.float64)
    marks = torch.stack([(hours % 24) / 23.0 - 0.5, (hours // 24 % 7) / 6.0 - 0.5], dim=1)  # HourOfDay, DayOfWeek
    idx = torch.arange(0, 44 - 20 + 1, 4)
    x = torch.stack([values[i:i + 16] for i in idx])
    x_mark = torch.stack([marks[i:i + 16] for i in idx])
    y = torch.stack([values[i + 16:i + 20] for i in idx])
    optimizer = optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.MSELoss()
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        outputs = model(x, x_mark)
        loss = criterion(outputs, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return dict(losses=losses, grads=grads_of(model), params=params_of(model), outputs=outputs)


def test_itransformer():
    ours, _ = run_both(itransformer, weights_of(make_itransformer), rtol=1e-9, atol=1e-11)
    assert ours["outputs"].shape == (7, 4, 3)


# ----------------------------------------------------------------------------------------------
# Non-stationary Transformer (thuml/Nonstationary_Transformers): tau/delta learners (a circular
# Conv1d over time as channels), de-stationary attention, RevIN with subtract_last, in float32
# ----------------------------------------------------------------------------------------------


def make_nonstationary(m, enc_in=3, seq_len=16, pred_len=4, d_model=8, n_heads=2, p_hidden_dims=(8, 8)):
    torch, nn, F = m.torch, m.nn, m.F

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

    class Projector(nn.Module):
        """MLP to learn the De-stationary factors"""

        def __init__(self, enc_in, seq_len, hidden_dims, hidden_layers, output_dim, kernel_size=3):
            super(Projector, self).__init__()
            padding = 1 if torch.__version__ >= '1.5.0' else 2
            self.series_conv = nn.Conv1d(in_channels=seq_len, out_channels=1, kernel_size=kernel_size,
                                         padding=padding, padding_mode='circular', bias=False)
            layers = [nn.Linear(2 * enc_in, hidden_dims[0]), nn.ReLU()]
            for i in range(hidden_layers - 1):
                layers += [nn.Linear(hidden_dims[i], hidden_dims[i + 1]), nn.ReLU()]
            layers += [nn.Linear(hidden_dims[-1], output_dim, bias=False)]
            self.backbone = nn.Sequential(*layers)

        def forward(self, x, stats):
            # x:     B x S x E
            # stats: B x 1 x E
            # y:     B x O
            batch_size = x.shape[0]
            x = self.series_conv(x)  # B x 1 x E
            x = torch.cat([x, stats], dim=1)  # B x 2 x E
            x = x.view(batch_size, -1)  # B x 2E
            y = self.backbone(x)  # B x O
            return y

    class DSAttention(nn.Module):
        """De-stationary Attention"""

        def __init__(self, mask_flag=False, scale=None, attention_dropout=0.0):
            super(DSAttention, self).__init__()
            self.scale = scale
            self.mask_flag = mask_flag
            self.dropout = nn.Dropout(attention_dropout)

        def forward(self, queries, keys, values, tau=None, delta=None):
            B, L, H, E = queries.shape
            _, S, _, D = values.shape
            scale = self.scale or 1. / math.sqrt(E)
            tau = 1.0 if tau is None else tau.unsqueeze(1).unsqueeze(1)  # B x 1 x 1 x 1
            delta = 0.0 if delta is None else delta.unsqueeze(1).unsqueeze(1)  # B x 1 x 1 x S
            # De-stationary Attention, rescaling pre-softmax score with learned de-stationary factors
            scores = torch.einsum("blhe,bshe->bhls", queries, keys) * tau + delta
            A = self.dropout(torch.softmax(scale * scores, dim=-1))
            V = torch.einsum("bhls,bshd->blhd", A, values)
            return V.contiguous(), A

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.pred_len = pred_len
            self.revin = RevIN(enc_in, subtract_last=True)
            self.embedding = nn.Linear(enc_in, d_model)
            self.q = nn.Linear(d_model, d_model)
            # (no key bias: softmax ignores it, so its gradient is rounding noise, which Adam scales up to lr)
            self.k = nn.Linear(d_model, d_model, bias=False)
            self.v = nn.Linear(d_model, d_model)
            self.attention = DSAttention()
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(seq_len * d_model, pred_len * enc_in)
            self.tau_learner = Projector(enc_in, seq_len, list(p_hidden_dims), 2, 1)
            self.delta_learner = Projector(enc_in, seq_len, list(p_hidden_dims), 2, seq_len)
            self.n_heads = n_heads

        def forward(self, x_enc):
            x_raw = x_enc.clone().detach()
            mean_enc = x_enc.mean(1, keepdim=True).detach()  # B x 1 x E
            std_enc = torch.sqrt(torch.var(x_enc - mean_enc, dim=1, keepdim=True, unbiased=False) + 1e-5).detach()
            tau = self.tau_learner(x_raw, std_enc).exp()  # B x S x E, B x 1 x E -> B x 1, positive scalar
            delta = self.delta_learner(x_raw, mean_enc)  # B x S x E, B x 1 x E -> B x S
            x = self.revin(x_enc, 'norm')
            h = self.embedding(x)
            B, L, _ = h.shape
            H = self.n_heads
            out, A = self.attention(self.q(h).view(B, L, H, -1), self.k(h).view(B, L, H, -1),
                                    self.v(h).view(B, L, H, -1), tau=tau, delta=delta)
            h = self.norm(h + out.view(B, L, -1))
            y = self.head(h.flatten(1)).view(B, self.pred_len, -1)
            return self.revin(y, 'denorm'), A

    return Model()


def nonstationary(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_nonstationary(m), weights)
    values = torch.tensor(multiseries(length=48) * np.array([1.0, 10.0, 0.1]), dtype=torch.float32)
    w = values.unfold(0, 20, 4).permute(0, 2, 1)
    x, y = w[:, :16], w[:, 16:]
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        pred, A = model(x)
        loss = nn.functional.mse_loss(pred, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return dict(losses=losses, grads=grads_of(model), params=params_of(model), attention=A, last=model.revin.last)


def test_nonstationary_transformer_float32():
    ours, _ = run_both(nonstationary, weights_of(make_nonstationary), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ours["attention"].sum(-1), 1.0, rtol=1e-5)
