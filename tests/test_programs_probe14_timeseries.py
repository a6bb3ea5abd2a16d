# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Time-series programs (see tests/pytorch_programs.py) beyond those of test_programs_probe11_tabular_*.py, each
run on chainrule and on PyTorch from the same weights and data, comparing losses, gradients and weights.

Sliding windows three ways (``Tensor.unfold`` with a step on a batch, ``as_strided`` on a view with a
storage offset, ``torch.stack`` of slices) with gradients through the overlaps; the metrics as forecasting
repositories write them (MASE against the seasonal naive forecast, sMAPE and MAPE with zero guards by
``torch.where``, ``nanmean``, a multi-quantile pinball loss by broadcasting, ``torch.quantile``); a GRU
encoder-decoder trained with scheduled sampling (``torch.rand`` after ``manual_seed``) from a shuffled
``DataLoader`` over a ``TensorDataset`` with a seeded ``Generator``, ``clip_grad_norm_``,
``ReduceLROnPlateau`` and early stopping by ``copy.deepcopy(model.state_dict())``; LSTNet (a ``Conv2d``
over time by variables, the skip-GRU by ``view``/``permute``, the highway autoregression) and SCINet's
even/odd splitting (``x[:, ::2]``) with interactive scaling; N-HiTS (``MaxPool1d``/``AvgPool1d`` with
``ceil_mode=True``, knots by ``F.interpolate`` linear, nearest and bicubic) and iTransformer (variables as
tokens); a parametrized weight-norm TCN trained from ``random_split`` by fractions and a
``SubsetRandomSampler`` (``ReduceLROnPlateau(mode='max', threshold_mode='abs', cooldown)`` saved and
restored, a deepcopy'd best model, a ``torch.save`` checkpoint, ``remove_parametrizations``); probabilistic
heads (``StudentT``, ``MixtureSameFamily`` of ``Independent`` Normals, ``LowRankMultivariateNormal``, the
Gaussian CRPS in closed form and by samples, ``icdf`` quantiles); Chronos's tokenizer (``bucketize``,
``nansum``, NaN masks) and series operations (``diff(prepend=)``, ``cummax``, ``linalg.lstsq``,
``corrcoef``, ``cov``) with FITS's complex ``Linear`` on a low-passed ``rfft``; dict windows through
``default_collate`` with a ``WeightedRandomSampler``; weight norm's forms (an old ``weight_g``/``weight_v``
checkpoint loaded into the parametrization, ``dim=None``, ``dim=1``, ``parametrize.cached()``, deepcopy,
``remove_weight_norm``); the Non-stationary Transformer in float32 (tau/delta learners with a circular
``Conv1d`` over time as channels, de-stationary attention by ``einsum``, RevIN with ``subtract_last``); and
the LTSF harness (DLinear with individual heads written into a zeros tensor, an ``EarlyStopping`` class
saving a checkpoint file, ``adjust_learning_rate`` through ``param_groups``, ``np.average`` over loss
tensors, the NumPy metrics of ``utils/metrics.py``); series of different lengths through ``pad_sequence``,
a GRU and ``unpad_sequence`` (which transposes its argument in place); and an autoregressive forecaster
tuned by evolution strategies on a flat vector whose slices ``vector_to_parameters`` makes the parameters;
Holt-Winters smoothing learnt through a registered parametrization (``right_inverse``) and a
straight-through rounding ``autograd.Function``."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def multiseries(length=64, channels=3, seed=140):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    phase = rng.uniform(0, 2 * np.pi, channels)
    return (2 + 0.03 * t + np.sin(2 * np.pi * t / 8 + phase) + 0.1 * rng.standard_normal((length, channels)))


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------------------------
# Sliding windows three ways, and gradients through the overlaps
# ----------------------------------------------------------------------------------------------


def sliding_windows(m):
    torch = m.torch
    values = torch.tensor(multiseries(), requires_grad=True)  # [T, C]
    seq_len, pred_len, step = 12, 4, 3
    total = seq_len + pred_len
    # 1) unfold over time of a batch: [1, T, C] -> [1, n, C, total]
    unfolded = values.unsqueeze(0).unfold(1, total, step).permute(0, 1, 3, 2)[0]  # [n, total, C]
    n = unfolded.shape[0]
    # 2) as_strided on a view starting at row 2 (storage offset)
    shifted = values.detach()[2:]
    T, C = shifted.shape
    n2 = (T - total) // step + 1
    strided = shifted.as_strided((n2, total, C), (step * C, C, 1))
    strided_offset = strided.storage_offset()
    # 3) a stack of slices, as most dataset classes write __getitem__
    stacked = torch.stack([values[i:i + total] for i in range(0, values.shape[0] - total + 1, step)])
    x, y = unfolded[:, :seq_len], unfolded[:, seq_len:]
    weights = torch.linspace(0.5, 1.5, n, dtype=values.dtype).view(-1, 1, 1)
    (x.pow(2) * weights).sum().backward()  # overlapping windows add up in the gradient
    grad_unfold = values.grad.clone()
    values.grad = None
    (stacked[:, :seq_len].pow(2) * weights).sum().backward()
    grad_stack = values.grad.clone()
    # a 1-D series windowed by Tensor.unfold with step and a non-contiguous source (a column)
    column = values.detach()[:, 1].unfold(0, 5, 7)
    return dict(unfolded=unfolded, y=y, strided=strided, strided_offset=strided_offset, stacked=stacked,
                grad_unfold=grad_unfold, grad_stack=grad_stack, column=column,
                strided_contig=strided.is_contiguous(),
                unfold_stride=values.unsqueeze(0).unfold(1, total, step).stride()[1:])


def test_sliding_windows_unfold_as_strided_stack():
    ours, _ = run_both(sliding_windows, rtol=1e-12, atol=1e-12)
    values = multiseries()
    np.testing.assert_array_equal(ours["unfolded"], ours["stacked"])
    np.testing.assert_array_equal(ours["strided"][0], values[2:18])
    np.testing.assert_array_equal(ours["strided"][1], values[5:21])
    np.testing.assert_allclose(ours["grad_unfold"], ours["grad_stack"], rtol=1e-12)
    # by hand: each time step's gradient is 2 x times the weights of every window whose history covers it
    n = ours["unfolded"].shape[0]
    w = np.linspace(0.5, 1.5, n)
    expected = np.zeros_like(values)
    for i in range(n):
        expected[3 * i:3 * i + 12] += 2 * values[3 * i:3 * i + 12] * w[i]
    np.testing.assert_allclose(ours["grad_unfold"], expected, rtol=1e-12)
    np.testing.assert_array_equal(ours["column"], values[:, 1][np.arange(9)[:, None] * 7 + np.arange(5)])


# ----------------------------------------------------------------------------------------------
# Forecasting metrics and losses as the repositories write them
# ----------------------------------------------------------------------------------------------


def forecast_metrics(m):
    torch = m.torch
    rng = np.random.default_rng(141)
    insample = torch.tensor(2 + np.sin(np.arange(40) * 2 * np.pi / 8)[None].repeat(3, 0)
                            + 0.1 * rng.standard_normal((3, 40)))
    target = torch.tensor(2 + 0.2 * rng.standard_normal((3, 6)))
    target[0, 2] = 0.0  # a zero target: MAPE's and sMAPE's guards
    forecast = torch.tensor(2 + 0.3 * rng.standard_normal((3, 6)), requires_grad=True)
    mask = torch.ones_like(target)
    mask[2, 4:] = 0

    def divide_no_nan(a, b):
        result = a / b
        result[result != result] = .0
        result[result == float('inf')] = .0
        return result

    def mape_loss(forecast, target, mask):
        weights = divide_no_nan(mask, target)
        return torch.mean(torch.abs((forecast - target) * weights))

    def smape_2_loss(forecast, target, mask):
        return 200 * torch.mean(divide_no_nan(torch.abs(forecast - target),
                                              torch.abs(forecast.data) + torch.abs(target.data)) * mask)

    def mase_loss(insample, freq, forecast, target, mask):
        masep = torch.mean(torch.abs(insample[:, freq:] - insample[:, :-freq]), dim=1)
        masked_masep_inv = divide_no_nan(mask, masep[:, None])
        return torch.mean(torch.abs(target - forecast) * masked_masep_inv)

    def smape_where(y_hat, y):
        denom = torch.abs(y) + torch.abs(y_hat)
        return torch.where(denom == 0, torch.zeros_like(denom), 2 * torch.abs(y - y_hat) / denom).mean()

    quantiles = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    q_forecast = forecast.unsqueeze(-1) + torch.tensor([-0.3, 0.0, 0.3], dtype=torch.float64)

    def quantile_loss(preds, target, quantiles):
        errors = target.unsqueeze(-1) - preds
        return torch.max((quantiles - 1) * errors, quantiles * errors).mean()

    def pinball_loop(preds, target, quantiles):
        losses = []
        for i, q in enumerate(quantiles):
            errors = target - preds[..., i]
            losses.append(torch.max((q - 1) * errors, q * errors).unsqueeze(-1))
        return torch.mean(torch.sum(torch.cat(losses, dim=-1), dim=-1))

    results, grads = {}, {}
    for name, fn in [("mape", lambda: mape_loss(forecast, target, mask)),
                     ("smape", lambda: smape_2_loss(forecast, target, mask)),
                     ("mase", lambda: mase_loss(insample, 8, forecast, target, mask)),
                     ("smape_where", lambda: smape_where(forecast, target)),
                     ("quantile", lambda: quantile_loss(q_forecast, target, quantiles)),
                     ("pinball_loop", lambda: pinball_loop(q_forecast, target, quantiles))]:
        forecast.grad = None
        loss = fn()
        loss.backward(retain_graph=True)
        results[name], grads[name] = loss, forecast.grad.clone()
    nan_target = target.clone()
    nan_target[1, :2] = float('nan')
    results["nanmean_mae"] = (forecast - nan_target).abs().nanmean()
    results["coverage"] = ((target >= q_forecast[..., 0]) & (target <= q_forecast[..., 2])).float().mean()
    results["empirical_q"] = torch.quantile(forecast.detach(), quantiles, dim=1)
    results["nanquantile"] = torch.nanquantile(nan_target, 0.5, dim=1, keepdim=True)
    return results, grads


def test_forecast_metrics():
    (ours, grads), _ = run_both(forecast_metrics, rtol=1e-11, atol=1e-12)
    rng = np.random.default_rng(141)
    insample = 2 + np.sin(np.arange(40) * 2 * np.pi / 8)[None].repeat(3, 0) + 0.1 * rng.standard_normal((3, 40))
    target = 2 + 0.2 * rng.standard_normal((3, 6))
    target[0, 2] = 0.0
    forecast = 2 + 0.3 * rng.standard_normal((3, 6))
    mask = np.ones_like(target)
    mask[2, 4:] = 0
    scale = np.abs(insample[:, 8:] - insample[:, :-8]).mean(1)[:, None]
    np.testing.assert_allclose(ours["mase"], np.mean(np.abs(target - forecast) * mask / scale), rtol=1e-12)
    denom = np.abs(target) + np.abs(forecast)
    np.testing.assert_allclose(ours["smape_where"], np.mean(2 * np.abs(target - forecast) / denom), rtol=1e-12)
    weights = np.where(target == 0, 0.0, mask / np.where(target == 0, 1, target))
    np.testing.assert_allclose(ours["mape"], np.mean(np.abs((forecast - target) * weights)), rtol=1e-12)
    np.testing.assert_allclose(grads["mape"], np.sign(forecast - target) * np.abs(weights) / 18, rtol=1e-12)
    np.testing.assert_allclose(ours["empirical_q"], np.quantile(forecast, [0.1, 0.5, 0.9], axis=1), rtol=1e-12)
    np.testing.assert_allclose(ours["quantile"] * 3, ours["pinball_loop"], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A GRU encoder-decoder trained as tutorials train forecasters: shuffled DataLoader with a seeded
# Generator, scheduled sampling, gradient clipping, ReduceLROnPlateau, early stopping by deepcopy
# ----------------------------------------------------------------------------------------------


def make_gru_seq2seq(m, n_features=3, hidden=8, horizon=4):
    torch, nn = m.torch, m.nn

    class EncoderDecoder(nn.Module):
        def __init__(self, n_features, hidden, horizon):
            super().__init__()
            self.horizon = horizon
            self.encoder = nn.GRU(n_features, hidden, num_layers=2, batch_first=True, dropout=0.0)
            self.decoder_cell = nn.GRUCell(n_features, hidden)
            self.out = nn.Linear(hidden, n_features)

        def forward(self, src, trg=None, teacher_forcing_ratio=0.5):
            _, h = self.encoder(src)
            hidden = h[-1]
            dec_input = src[:, -1, :]
            outputs = torch.zeros(src.size(0), self.horizon, src.size(2), dtype=src.dtype)
            for t in range(self.horizon):
                hidden = self.decoder_cell(dec_input, hidden)
                pred = self.out(hidden)
                outputs[:, t, :] = pred
                teacher_force = trg is not None and torch.rand(1).item() < teacher_forcing_ratio
                dec_input = trg[:, t, :] if teacher_force else pred.detach()
            return outputs

    return EncoderDecoder(n_features, hidden, horizon)


def gru_training(m, weights):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    model = load(m, make_gru_seq2seq(m), weights).double()
    values = torch.tensor(multiseries(length=80))
    mean, std = values[:56].mean(0, keepdim=True), values[:56].std(0, keepdim=True)
    values = (values - mean) / std
    w = values.unfold(0, 16, 1).transpose(1, 2)  # [n, 16, C]
    X, Y = w[:, :12].contiguous(), w[:, 12:].contiguous()
    train_ds = data.TensorDataset(X[:40], Y[:40])
    val_x, val_y = X[40:], Y[40:]
    g = torch.Generator()
    g.manual_seed(7)
    loader = data.DataLoader(train_ds, batch_size=8, shuffle=True, generator=g)
    optimizer = optim.Adam(model.parameters(), lr=0.02, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='min', factor=0.5, patience=0, threshold=1e-3,
                                                     min_lr=1e-4)
    criterion = nn.MSELoss()
    torch.manual_seed(3)
    best_val, best_state, best_epoch, patience, bad_epochs = float('inf'), None, -1, 3, 0
    history, lrs, norms, orders = [], [], [], []
    for epoch in range(8):
        model.train()
        epoch_loss = 0.0
        tf_ratio = max(0.0, 0.8 - 0.2 * epoch)
        for xb, yb in loader:
            optimizer.zero_grad()
            pred = model(xb, yb, teacher_forcing_ratio=tf_ratio)
            loss = criterion(pred, yb)
            loss.backward()
            norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0))
            optimizer.step()
            epoch_loss += loss.item() * xb.size(0)
        orders.append(xb[:, 0, 0].clone())
        model.eval()
        with torch.no_grad():
            val_loss = criterion(model(val_x), val_y).item()
        scheduler.step(val_loss)
        lrs.append(optimizer.param_groups[0]['lr'])
        history.append((epoch_loss / len(train_ds), val_loss))
        if val_loss < best_val - 1e-4:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
    last = params_of(model)
    model.load_state_dict(best_state)
    with torch.no_grad():
        restored_val = criterion(model(val_x), val_y).item()
        forecast = model(val_x[:2]) * std + mean
    return dict(history=history, lrs=lrs, norms=norms, orders=orders, best_val=best_val, best_epoch=best_epoch,
                restored_val=restored_val, forecast=forecast, last=last, best=params_of(model),
                last_lr=scheduler.get_last_lr(), bad=scheduler.num_bad_epochs)


def test_gru_encoder_decoder_training_loop():
    ours, _ = run_both(gru_training, weights_of(make_gru_seq2seq), rtol=1e-8, atol=1e-10)
    assert ours["restored_val"] == ours["best_val"]
    assert len(ours["history"]) == len(ours["lrs"])
    assert all(lr in (0.02, 0.01, 0.005, 0.0025) for lr in ours["lrs"])


# ----------------------------------------------------------------------------------------------
# LSTNet (laiguokun/LSTNet): Conv2d over (time, variables), GRU, skip-GRU, highway autoregression
# ----------------------------------------------------------------------------------------------


def make_lstnet(m, window=12, n_vars=3, hidRNN=6, hidCNN=5, hidSkip=3, CNN_kernel=4, skip=2, highway_window=3,
                output_fun='sigmoid'):
    torch, nn, F = m.torch, m.nn, m.F

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.P = window
            self.m = n_vars
            self.hidR = hidRNN
            self.hidC = hidCNN
            self.hidS = hidSkip
            self.Ck = CNN_kernel
            self.skip = skip
            self.pt = int((self.P - self.Ck) / self.skip)
            self.hw = highway_window
            self.conv1 = nn.Conv2d(1, self.hidC, kernel_size=(self.Ck, self.m))
            self.GRU1 = nn.GRU(self.hidC, self.hidR)
            self.dropout = nn.Dropout(p=0.0)
            if (self.skip > 0):
                self.GRUskip = nn.GRU(self.hidC, self.hidS)
                self.linear1 = nn.Linear(self.hidR + self.skip * self.hidS, self.m)
            else:
                self.linear1 = nn.Linear(self.hidR, self.m)
            if (self.hw > 0):
                self.highway = nn.Linear(self.hw, 1)
            self.output = None
            if (output_fun == 'sigmoid'):
                self.output = torch.sigmoid
            if (output_fun == 'tanh'):
                self.output = torch.tanh

        def forward(self, x):
            batch_size = x.size(0)
            # CNN
            c = x.view(-1, 1, self.P, self.m)
            c = F.relu(self.conv1(c))
            c = self.dropout(c)
            c = torch.squeeze(c, 3)
            # RNN
            r = c.permute(2, 0, 1).contiguous()
            _, r = self.GRU1(r)
            r = self.dropout(torch.squeeze(r, 0))
            # skip-rnn
            if (self.skip > 0):
                s = c[:, :, int(-self.pt * self.skip):].contiguous()
                s = s.view(batch_size, self.hidC, self.pt, self.skip)
                s = s.permute(2, 0, 3, 1).contiguous()
                s = s.view(self.pt, batch_size * self.skip, self.hidC)
                _, s = self.GRUskip(s)
                s = s.view(batch_size, self.skip * self.hidS)
                s = self.dropout(s)
                r = torch.cat((r, s), 1)
            res = self.linear1(r)
            # highway
            if (self.hw > 0):
                z = x[:, -self.hw:, :]
                z = z.permute(0, 2, 1).contiguous().view(-1, self.hw)
                z = self.highway(z)
                z = z.view(-1, self.m)
                res = res + z
            if (self.output):
                res = self.output(res)
            return res

    return Model()


def lstnet(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_lstnet(m), weights).double()
    raw = multiseries(length=40)
    scale = np.max(np.abs(raw), 0)  # LSTNet's normalize=2: each series by its maximum
    dat = torch.from_numpy(raw / scale)
    idx = range(12, 39)
    X = torch.stack([dat[i - 12:i] for i in idx])
    Y = torch.stack([dat[i] for i in idx])
    criterion = nn.L1Loss(reduction='sum')
    evaluateL2 = nn.MSELoss(reduction='sum')
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(3):
        for i in range(0, len(X), 9):
            bx, by = X[i:i + 9], Y[i:i + 9]
            model.zero_grad()
            output = model(bx)
            loss = criterion(output * torch.from_numpy(scale), by * torch.from_numpy(scale))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.)
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        predict = model(X)
    rse = math.sqrt(evaluateL2(predict, Y).item() / len(Y)) / (Y.std() * np.sqrt((len(Y) - 1.0) / len(Y)))
    sigma_p, sigma_g = predict.std(dim=0), Y.std(dim=0)
    mean_p, mean_g = predict.mean(dim=0), Y.mean(dim=0)
    correlation = ((predict - mean_p) * (Y - mean_g)).mean(dim=0) / (sigma_p * sigma_g)
    return dict(losses=losses, params=params_of(model), grads=grads_of(model), rse=rse, corr=correlation.mean())


def test_lstnet():
    ours, _ = run_both(lstnet, weights_of(make_lstnet), rtol=1e-9, atol=1e-11)
    assert len(ours["losses"]) == 9


# ----------------------------------------------------------------------------------------------
# SCINet (cure-lab/SCINet): even/odd splitting by strided slicing, interactive scaling, zip back
# ----------------------------------------------------------------------------------------------


def make_scinet(m, output_len=4, input_len=16, input_dim=3, hid_size=1, num_levels=2, kernel=5, groups=1):
    torch, nn = m.torch, m.nn

    class Splitting(nn.Module):
        def __init__(self):
            super(Splitting, self).__init__()

        def even(self, x):
            return x[:, ::2, :]

        def odd(self, x):
            return x[:, 1::2, :]

        def forward(self, x):
            return (self.even(x), self.odd(x))

    class Interactor(nn.Module):
        def __init__(self, in_planes, splitting=True, kernel=5, dropout=0.0, groups=1, hidden_size=1, INN=True):
            super(Interactor, self).__init__()
            self.modified = INN
            self.kernel_size = kernel
            self.dilation = 1
            self.dropout = dropout
            self.hidden_size = hidden_size
            self.groups = groups
            if self.kernel_size % 2 == 0:
                pad_l = self.dilation * (self.kernel_size - 2) // 2 + 1
                pad_r = self.dilation * (self.kernel_size) // 2 + 1
            else:
                pad_l = self.dilation * (self.kernel_size - 1) // 2 + 1
                pad_r = self.dilation * (self.kernel_size - 1) // 2 + 1
            self.splitting = splitting
            self.split = Splitting()

            def branch():
                prev_size = 1
                size_hidden = self.hidden_size
                return nn.Sequential(
                    nn.ReplicationPad1d((pad_l, pad_r)),
                    nn.Conv1d(in_planes * prev_size, int(in_planes * size_hidden), kernel_size=self.kernel_size,
                              dilation=self.dilation, stride=1, groups=self.groups),
                    nn.LeakyReLU(negative_slope=0.01, inplace=True),
                    nn.Dropout(self.dropout),
                    nn.Conv1d(int(in_planes * size_hidden), in_planes, kernel_size=3, stride=1, groups=self.groups),
                    nn.Tanh())
            self.phi, self.psi, self.U, self.P = branch(), branch(), branch(), branch()

        def forward(self, x):
            if self.splitting:
                (x_even, x_odd) = self.split(x)
            else:
                (x_even, x_odd) = x
            if self.modified:
                x_even = x_even.permute(0, 2, 1)
                x_odd = x_odd.permute(0, 2, 1)
                d = x_odd.mul(torch.exp(self.phi(x_even)))
                c = x_even.mul(torch.exp(self.psi(x_odd)))
                x_even_update = c + self.U(d)
                x_odd_update = d - self.P(c)
                return (x_even_update, x_odd_update)

    class InteractorLevel(nn.Module):
        def __init__(self, in_planes, kernel, dropout, groups, hidden_size, INN):
            super(InteractorLevel, self).__init__()
            self.level = Interactor(in_planes=in_planes, splitting=True, kernel=kernel, dropout=dropout,
                                    groups=groups, hidden_size=hidden_size, INN=INN)

        def forward(self, x):
            (x_even_update, x_odd_update) = self.level(x)
            return (x_even_update, x_odd_update)

    class LevelSCINet(nn.Module):
        def __init__(self, in_planes, kernel_size, dropout, groups, hidden_size, INN):
            super(LevelSCINet, self).__init__()
            self.interact = InteractorLevel(in_planes=in_planes, kernel=kernel_size, dropout=dropout, groups=groups,
                                            hidden_size=hidden_size, INN=INN)

        def forward(self, x):
            (x_even_update, x_odd_update) = self.interact(x)
            return x_even_update.permute(0, 2, 1), x_odd_update.permute(0, 2, 1)  # even: B, T, D odd: B, T, D

    class SCINet_Tree(nn.Module):
        def __init__(self, in_planes, current_level, kernel_size, dropout, groups, hidden_size, INN):
            super().__init__()
            self.current_level = current_level
            self.workingblock = LevelSCINet(in_planes=in_planes, kernel_size=kernel_size, dropout=dropout,
                                            groups=groups, hidden_size=hidden_size, INN=INN)
            if current_level != 0:
                self.SCINet_Tree_odd = SCINet_Tree(in_planes, current_level - 1, kernel_size, dropout, groups,
                                                   hidden_size, INN)
                self.SCINet_Tree_even = SCINet_Tree(in_planes, current_level - 1, kernel_size, dropout, groups,
                                                    hidden_size, INN)

        def zip_up_the_pants(self, even, odd):
            even = even.permute(1, 0, 2)
            odd = odd.permute(1, 0, 2)  # L, B, D
            even_len = even.shape[0]
            odd_len = odd.shape[0]
            mlen = min((odd_len, even_len))
            _ = []
            for i in range(mlen):
                _.append(even[i].unsqueeze(0))
                _.append(odd[i].unsqueeze(0))
            if odd_len < even_len:
                _.append(even[-1].unsqueeze(0))
            return torch.cat(_, 0).permute(1, 0, 2)  # B, L, D

        def forward(self, x):
            x_even_update, x_odd_update = self.workingblock(x)
            if self.current_level == 0:
                return self.zip_up_the_pants(x_even_update, x_odd_update)
            else:
                return self.zip_up_the_pants(self.SCINet_Tree_even(x_even_update),
                                             self.SCINet_Tree_odd(x_odd_update))

    class SCINet(nn.Module):
        def __init__(self):
            super(SCINet, self).__init__()
            self.blocks1 = SCINet_Tree(in_planes=input_dim, current_level=num_levels - 1, kernel_size=kernel,
                                       dropout=0.0, groups=groups, hidden_size=hid_size, INN=True)
            for m_ in self.modules():
                if isinstance(m_, nn.Conv2d):
                    n = m_.kernel_size[0] * m_.kernel_size[1] * m_.out_channels
                    m_.weight.data.normal_(0, math.sqrt(2. / n))
                elif isinstance(m_, nn.BatchNorm2d):
                    m_.weight.data.fill_(1)
                    m_.bias.data.zero_()
                elif isinstance(m_, nn.Linear):
                    m_.bias.data.zero_()
            self.projection1 = nn.Conv1d(input_len, output_len, kernel_size=1, stride=1, bias=False)

        def forward(self, x):
            res1 = x
            x = self.blocks1(x)
            x += res1
            x = self.projection1(x)
            return x

    return SCINet()


def scinet(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_scinet(m), weights).double()
    values = torch.tensor(multiseries(length=40))
    windows = values.unfold(0, 20, 2).permute(0, 2, 1)  # [n, 20, C]
    x, y = windows[:, :16], windows[:, 16:]
    optimizer = optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.999), weight_decay=1e-5)
    criterion = nn.L1Loss()
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        pred = model(x)
        loss = criterion(pred, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = grads_of(model)
    # the tree's even/odd split and zip are a permutation: a one-level tree on an identity map
    probe = torch.arange(10.).view(1, 10, 1)
    evens, odds = probe[:, ::2, :], probe[:, 1::2, :]
    zipped = torch.stack((evens, odds), 2).reshape(1, 10, 1)
    return dict(losses=losses, grads=grads, params=params_of(model), zipped=zipped, odd_stride=odds.stride()[1:])


def test_scinet():
    ours, _ = run_both(scinet, weights_of(make_scinet), rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(ours["zipped"].ravel(), np.arange(10.0))


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
# A TCN with parametrized weight norm, trained from a random_split by fractions and a
# SubsetRandomSampler, with a deepcopy'd best model, ReduceLROnPlateau(mode='max') saved and restored,
# a checkpoint through torch.save, and the parametrization removed for deployment
# ----------------------------------------------------------------------------------------------


def make_tcn(m, num_inputs=3, channels=(6, 6), kernel_size=3, horizon=2):
    torch, nn = m.torch, m.nn
    weight_norm = nn.utils.parametrizations.weight_norm

    class TemporalBlock(nn.Module):
        def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation):
            super(TemporalBlock, self).__init__()
            self.left_pad = (kernel_size - 1) * dilation
            self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride, dilation=dilation))
            self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, dilation=dilation))
            self.relu = nn.ReLU()
            self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None

        def forward(self, x):
            out = self.relu(self.conv1(nn.functional.pad(x, (self.left_pad, 0))))
            out = self.relu(self.conv2(nn.functional.pad(out, (self.left_pad, 0))))
            res = x if self.downsample is None else self.downsample(x)
            return self.relu(out + res)

    class TCNForecaster(nn.Module):
        def __init__(self):
            super().__init__()
            layers = []
            for i, c in enumerate(channels):
                layers.append(TemporalBlock(num_inputs if i == 0 else channels[i - 1], c, kernel_size, 1, 2 ** i))
            self.tcn = nn.Sequential(*layers)
            self.head = nn.Linear(channels[-1], num_inputs * horizon)
            self.horizon = horizon

        def forward(self, x):  # x: [B, L, C]
            h = self.tcn(x.transpose(1, 2))[:, :, -1]
            return self.head(h).view(x.size(0), self.horizon, -1)

    return TCNForecaster()


def tcn_training(m, weights):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    import io
    model = load(m, make_tcn(m), weights).double()
    values = torch.tensor(multiseries(length=70))
    w = values.unfold(0, 14, 1).permute(0, 2, 1)
    dataset = data.TensorDataset(w[:, :12], w[:, 12:])
    g = torch.Generator().manual_seed(11)
    train_ds, val_ds = data.random_split(dataset, [0.8, 0.2], generator=g)
    sampler = data.SubsetRandomSampler(list(range(0, len(train_ds), 2)), generator=torch.Generator().manual_seed(5))
    loader = data.DataLoader(train_ds, batch_size=6, sampler=sampler)
    val_loader = data.DataLoader(val_ds, batch_size=100)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='max', factor=0.3, patience=0, threshold=0.5,
                                                     threshold_mode='abs', cooldown=1)
    best_score, best_model, scores, lrs, seen = -float('inf'), None, [], [], []
    for epoch in range(5):
        model.train()
        for xb, yb in loader:
            seen.append(xb[:, 0, 0].clone())
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            vx, vy = next(iter(val_loader))
            score = -nn.functional.l1_loss(model(vx), vy).item()  # higher is better
        scores.append(score)
        scheduler.step(score)
        lrs.append(optimizer.param_groups[0]['lr'])
        if score > best_score:
            best_score, best_model = score, copy.deepcopy(model)
    sched_state = scheduler.state_dict()
    scheduler2 = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='max')
    scheduler2.load_state_dict(sched_state)
    buffer = io.BytesIO()
    torch.save({'model': best_model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    restored = make_tcn(m).double()
    restored.load_state_dict(checkpoint['model'])
    keys = sorted(checkpoint['model'].keys())
    with torch.no_grad():
        before = restored(vx)
    for block in restored.tcn:
        nn.utils.parametrize.remove_parametrizations(block.conv1, 'weight')
        nn.utils.parametrize.remove_parametrizations(block.conv2, 'weight')
    with torch.no_grad():
        after = restored(vx)
    return dict(split=(len(train_ds), len(val_ds), list(val_ds.indices)), seen=seen, scores=scores, lrs=lrs,
                best=best_score, keys=keys, params=params_of(model), best_params=params_of(best_model),
                before=before, after=after, plain_keys=sorted(restored.state_dict().keys()),
                sched=(scheduler2.best, scheduler2.num_bad_epochs, scheduler2.cooldown_counter, scheduler2.mode))


def test_tcn_parametrized_weight_norm_training():
    ours, _ = run_both(tcn_training, weights_of(make_tcn), rtol=1e-9, atol=1e-11)
    assert ours["split"][:2] == (46, 11)
    np.testing.assert_allclose(ours["before"], ours["after"], rtol=1e-12)
    assert "tcn.0.conv1.parametrizations.weight.original0" in ours["keys"]
    assert "tcn.0.conv1.weight" in ours["plain_keys"]


# ----------------------------------------------------------------------------------------------
# Probabilistic heads: Student-t and a Gaussian mixture over the horizon (MixtureSameFamily of
# Independent Normals), GPVar's low-rank multivariate Normal across series, the Gaussian CRPS in
# closed form, quantiles by icdf, and the sample-based CRPS with seeded rsample
# ----------------------------------------------------------------------------------------------


def make_prob_head(m, seq_len=12, horizon=4, n_series=3, hidden=10, rank=2, components=2):
    torch, nn = m.torch, m.nn

    class ProbHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(1, hidden, batch_first=True)
            self.student = nn.Linear(hidden, 3 * horizon)
            self.mixture = nn.Linear(hidden, components * (1 + 2 * horizon))
            self.gpvar_mu = nn.Linear(hidden, 1)
            self.gpvar_d = nn.Linear(hidden, 1)
            self.gpvar_v = nn.Linear(hidden, rank)
            self.horizon, self.components = horizon, components

        def forward(self, x):  # x: [B, S, L]
            B, S, L = x.shape
            scale = x.abs().mean(-1, keepdim=True).clamp(min=1e-3)  # DeepAR's mean scaling
            _, (h, _) = self.rnn((x / scale).reshape(B * S, L, 1))
            h = h[-1]  # [B*S, hidden]
            df, loc, sc = self.student(h).view(B * S, 3, self.horizon).unbind(1)
            student = torch.distributions.StudentT(2.0 + nn.functional.softplus(df),
                                                   loc * scale.view(-1, 1),
                                                   nn.functional.softplus(sc) * scale.view(-1, 1) + 1e-6)
            mix = self.mixture(h)
            logits = mix[:, :self.components]
            means, log_sd = mix[:, self.components:].view(B * S, self.components, 2, self.horizon).unbind(2)
            comps = torch.distributions.Independent(
                torch.distributions.Normal(means * scale.view(-1, 1, 1), log_sd.exp() * scale.view(-1, 1, 1)), 1)
            mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), comps)
            hs = h.view(B, S, -1)
            gp = torch.distributions.LowRankMultivariateNormal(
                self.gpvar_mu(hs).squeeze(-1) * scale.squeeze(-1),
                self.gpvar_v(hs) * scale,
                nn.functional.softplus(self.gpvar_d(hs)).squeeze(-1) * scale.squeeze(-1) ** 2 + 1e-4)
            return student, mixture, gp

    return ProbHead()


def gaussian_crps(m, mu, sigma, y):
    torch = m.torch
    z = (y - mu) / sigma
    normal = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    return (sigma * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))).mean()


def prob_forecast(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, make_prob_head(m), weights).double()
    values = torch.tensor(multiseries(length=40)).T  # [S, T]
    w = values.unfold(1, 16, 4).permute(1, 0, 2)  # [B, S, 16]
    x, y = w[..., :12], w[..., 12:]
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        student, mixture, gp = model(x)
        B, S = x.shape[:2]
        nll_t = -student.log_prob(y.reshape(B * S, -1)).mean()
        nll_mix = -mixture.log_prob(y.reshape(B * S, -1)).mean()
        nll_gp = -gp.log_prob(y[..., 0]).mean()
        loss = nll_t + nll_mix + nll_gp
        loss.backward()
        optimizer.step()
        losses.append((nll_t.item(), nll_mix.item(), nll_gp.item()))
    grads = grads_of(model)
    with torch.no_grad():
        student, mixture, gp = model(x)
    mu, sigma = student.loc, student.scale
    crps = gaussian_crps(m, mu, sigma, y.reshape(mu.shape))
    normal = torch.distributions.Normal(mu, sigma)
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).view(-1, 1, 1)
    quantiles = normal.icdf(q)
    torch.manual_seed(0)
    samples = torch.distributions.Normal(mu, sigma).rsample((64,))
    target = y.reshape(mu.shape)
    crps_samples = ((samples - target).abs().mean(0)
                    - 0.5 * (samples.unsqueeze(0) - samples.unsqueeze(1)).abs().mean((0, 1)))
    return dict(losses=losses, grads=grads, params=params_of(model), crps=crps, quantiles=quantiles,
                crps_samples=crps_samples.mean(), student_mean=student.mean, student_var=student.variance,
                mix_mean=mixture.mean, mix_var=mixture.variance, gp_cov=gp.covariance_matrix,
                gp_entropy=gp.entropy(), samples=samples[:2])


def test_probabilistic_heads():
    ours, _ = run_both(prob_forecast, weights_of(make_prob_head), rtol=1e-8, atol=1e-10)
    assert abs(ours["crps_samples"] - ours["crps"]) < 0.1 * abs(ours["crps"]) + 1e-3


# ----------------------------------------------------------------------------------------------
# Chronos's MeanScaleUniformBins tokenizer (NaN context, bucketize(right=True), clamp), and the
# series operations around forecasters: diff with prepend and cumsum back, cummax drawdowns,
# a least-squares trend, median, corrcoef, and FITS (a complex Linear on the low-passed rfft)
# ----------------------------------------------------------------------------------------------


def chronos_tokenizer(m):
    torch = m.torch
    n_tokens, n_special_tokens, pad_token_id, eos_token_id = 20, 2, 0, 1
    low_limit, high_limit = -3.0, 3.0
    centers = torch.linspace(low_limit, high_limit, n_tokens - n_special_tokens - 1)
    boundaries = torch.concat((torch.tensor([-1e20], device=centers.device),
                               (centers[1:] + centers[:-1]) / 2, torch.tensor([1e20], device=centers.device)))
    rng = np.random.default_rng(142)
    context = torch.tensor(rng.standard_normal((3, 10)) * 2 + 1, dtype=torch.float32)
    context[0, :3] = float('nan')  # left padding of a short series
    context[1, 5] = float('nan')
    attention_mask = ~torch.isnan(context)
    scale = torch.nansum(torch.abs(context) * attention_mask, dim=-1) / torch.nansum(attention_mask, dim=-1)
    scale[~(scale > 0)] = 1.0
    scaled_context = context / scale.unsqueeze(dim=-1)
    token_ids = (torch.bucketize(input=scaled_context, boundaries=boundaries, right=True) + n_special_tokens)
    token_ids = token_ids.clamp(min=0, max=n_tokens - 1)
    token_ids[~attention_mask] = pad_token_id
    eos = torch.full((token_ids.shape[0], 1), fill_value=eos_token_id)
    token_ids = torch.concat((token_ids, eos), dim=1)
    # output_transform: tokens back to values
    indices = torch.clamp(token_ids[:, :-1] - n_special_tokens - 1, min=0, max=len(centers) - 1)
    decoded = centers[indices] * scale.unsqueeze(-1)
    left = torch.searchsorted(boundaries, scaled_context.nan_to_num(0.0).contiguous(), right=False)
    return dict(token_ids=token_ids, mask=attention_mask, scale=scale, decoded=decoded, left=left,
                nanmean=context.nanmean(-1), nanmedian=context.nanmedian(-1).values)


def test_chronos_tokenizer():
    ours, _ = run_both(chronos_tokenizer, rtol=1e-6, atol=1e-6)
    assert ours["token_ids"].dtype == np.int64
    assert (ours["token_ids"][0, :3] == 0).all() and (ours["token_ids"][:, -1] == 1).all()


def series_ops(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    values = torch.tensor(multiseries(length=32), requires_grad=True)  # [T, C]
    diffs = torch.diff(values, dim=0, prepend=values[:1])
    rebuilt = diffs.cumsum(0) + values[:1]
    running_max = values.cummax(0).values
    drawdown = (values - running_max) / running_max
    t = torch.arange(32, dtype=values.dtype)
    A = torch.stack([torch.ones_like(t), t], 1)
    trend = torch.linalg.lstsq(A, values).solution  # [2, C]
    detrended = values - A @ trend
    median = detrended.median(0).values
    corr = torch.corrcoef(detrended.T)
    cov = torch.cov(detrended.T, correction=1)
    loss = drawdown.min() + trend[1].sum() * 10 + median.pow(2).sum() + corr.triu(1).sum() + cov.trace() \
        + (rebuilt - values).abs().sum()
    loss.backward()

    class FITS(nn.Module):
        """Frequency interpolation (Xu et al. 2024): a complex Linear on the lowest frequencies."""

        def __init__(self, seq_len=24, pred_len=8, cut_freq=6, channels=3):
            super(FITS, self).__init__()
            self.seq_len, self.pred_len, self.dominance_freq = seq_len, pred_len, cut_freq
            self.length_ratio = (self.seq_len + self.pred_len) / self.seq_len
            self.freq_upsampler = nn.Linear(self.dominance_freq, int(self.dominance_freq * self.length_ratio)).to(
                torch.cdouble)

        def forward(self, x):
            x_mean = torch.mean(x, dim=1, keepdim=True)
            x = x - x_mean
            x_var = torch.var(x, dim=1, keepdim=True) + 1e-5
            x = x / torch.sqrt(x_var)
            low_specx = torch.fft.rfft(x, dim=1)
            low_specx[:, self.dominance_freq:] = 0  # LPF
            low_specx = low_specx[:, 0:self.dominance_freq, :]  # LPF
            low_specxy_ = self.freq_upsampler(low_specx.permute(0, 2, 1)).permute(0, 2, 1)
            low_specxy = torch.zeros([low_specxy_.size(0), int((self.seq_len + self.pred_len) / 2 + 1),
                                      low_specxy_.size(2)], dtype=low_specxy_.dtype).to(low_specxy_.device)
            low_specxy[:, 0:low_specxy_.size(1), :] = low_specxy_  # zero padding
            low_xy = torch.fft.irfft(low_specxy, dim=1)
            low_xy = low_xy * self.length_ratio  # energy compensation for the length change
            xy = (low_xy) * torch.sqrt(x_var) + x_mean
            return xy, low_xy * torch.sqrt(x_var)

    torch.manual_seed(0)
    fits = FITS()  # in double: the DC column's gradient is rounding noise, which Adam in float32 scales up to lr
    rng = np.random.default_rng(143)
    with torch.no_grad():
        fits.freq_upsampler.weight.copy_(torch.tensor(
            (rng.standard_normal((8, 6)) + 1j * rng.standard_normal((8, 6))) / 6, dtype=torch.cdouble))
        fits.freq_upsampler.bias.copy_(torch.tensor((rng.standard_normal(8) + 1j * rng.standard_normal(8)) / 6,
                                                    dtype=torch.cdouble))
    data = torch.tensor(multiseries(length=60)).unfold(0, 32, 4).permute(0, 2, 1)
    x, y = data[:, :24], data[:, 24:]
    optimizer = optim.Adam(fits.parameters(), lr=1e-3)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        xy, _ = fits(x)
        loss = nn.functional.mse_loss(xy[:, -8:], y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return dict(grad=values.grad, trend=trend, median=median, corr=corr, drawdown=drawdown, rebuilt=rebuilt,
                fits_losses=losses, fits_weight=fits.freq_upsampler.weight, fits_grad=fits.freq_upsampler.weight.grad,
                freqs=torch.fft.rfftfreq(24, d=1 / 24), ortho=torch.fft.rfft(x[0, :, 0], norm="ortho"))


@pytest.mark.filterwarnings("ignore:Complex modules are a new feature:UserWarning")
def test_series_ops_and_fits():
    ours, _ = run_both(series_ops, rtol=1e-9, atol=1e-11)
    values = multiseries(length=32)
    t = np.arange(32.0)
    np.testing.assert_allclose(ours["trend"], np.linalg.lstsq(np.stack([np.ones(32), t], 1), values, rcond=None)[0],
                               rtol=1e-10)
    np.testing.assert_allclose(ours["rebuilt"], values, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A GluonTS-style dataset of dict windows (NumPy arrays, Python numbers, strings, bools) through
# default_collate, weighted sampling of series, and a linear model trained on the collated batches
# ----------------------------------------------------------------------------------------------


def dict_windows(m):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    values = np.sin(np.arange(50) / 3.0)[:, None] * np.arange(1, 4)

    class WindowDS(data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return {"past": values[i:i + 12].astype(np.float32), "future": values[i + 12:i + 15],
                    "series_id": i % 3, "scale": float(np.abs(values[i:i + 12]).mean()), "start": np.int64(i),
                    "name": f"s{i % 3}", "mask": np.ones(12, dtype=bool), "weight": np.float32(0.5 + (i % 2))}

    ds = WindowDS()
    sampler = data.WeightedRandomSampler([1.0 + (i % 3) for i in range(len(ds))], num_samples=24, replacement=True,
                                         generator=torch.Generator().manual_seed(2))
    loader = data.DataLoader(ds, batch_size=8, sampler=sampler)
    torch.manual_seed(0)
    model = nn.Linear(12, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.linspace(-0.2, 0.2, 36, dtype=torch.float64).view(3, 12))
        model.bias.zero_()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    dtypes, names, losses, ids = None, [], [], []
    for batch in loader:
        dtypes = {k: str(v.dtype).split(".")[-1] for k, v in batch.items() if not isinstance(v, list)}
        names.append(batch["name"])
        ids.append(batch["start"])
        past = batch["past"].double() / batch["scale"].view(-1, 1, 1)
        pred = model(past.transpose(1, 2)).transpose(1, 2) * batch["scale"].view(-1, 1, 1)
        per_window = ((pred - batch["future"]) ** 2).mean((1, 2)) * batch["weight"]
        loss = per_window.sum() / batch["weight"].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return dict(dtypes=dtypes, names=names, ids=ids, losses=losses, weight=model.weight)


def test_dict_windows_collate_and_weighted_sampler():
    ours, _ = run_both(dict_windows, rtol=1e-6, atol=1e-7)
    assert ours["dtypes"] == {"past": "float32", "future": "float64", "series_id": "int64", "scale": "float64",
                              "start": "int64", "mask": "bool", "weight": "float32"}
    assert all(len(names) == 8 and all(n in ("s0", "s1", "s2") for n in names) for names in ours["names"])


# ----------------------------------------------------------------------------------------------
# Weight norm as TCN checkpoints meet it: an old ``weight_g``/``weight_v`` checkpoint loaded into the
# parametrization, ``dim=None`` and ``dim=1`` (ConvTranspose1d), ``parametrize.cached()``, deepcopy
# of a parametrized module, and ``remove_weight_norm``
# ----------------------------------------------------------------------------------------------


def weight_norm_forms(m):
    torch, nn = m.torch, m.nn
    w = torch.tensor(np.sin(np.arange(24.0)).reshape(4, 2, 3))

    def fill(mod):
        with torch.no_grad():
            for i, (n, p) in enumerate(sorted(mod.named_parameters())):
                p.copy_(torch.cos(torch.arange(p.numel(), dtype=p.dtype) * 0.9 + i).view_as(p) * 0.6 + 0.1)
        return mod

    out = {}
    old = nn.utils.weight_norm(fill(nn.Conv1d(2, 4, 3).double()))
    with torch.no_grad():
        old.weight_v.copy_(w)
        old.weight_g.mul_(0.5)
    sd = old.state_dict()
    new = nn.utils.parametrizations.weight_norm(fill(nn.Conv1d(2, 4, 3).double()))
    new.load_state_dict(sd)  # the parametrization's pre-hook renames weight_g / weight_v
    out["old_to_new"] = (sorted(sd.keys()), new.weight, new.parametrizations.weight.original0,
                         old.weight)  # (stale: the old hook computes it before each forward)
    lin = nn.utils.parametrizations.weight_norm(fill(nn.Linear(3, 4).double()), dim=None)
    out["dim_none"] = (lin.parametrizations.weight.original0, lin.weight)
    ct = nn.utils.parametrizations.weight_norm(fill(nn.ConvTranspose1d(2, 4, 3).double()), dim=1)
    ct(torch.ones(1, 2, 5, dtype=torch.float64)).sum().backward()
    out["dim1"] = (tuple(ct.parametrizations.weight.original0.shape), ct.parametrizations.weight.original0.grad,
                   ct.parametrizations.weight.original1.grad)
    c = nn.utils.parametrizations.weight_norm(fill(nn.Conv1d(2, 4, 3).double()))
    x = torch.linspace(-1, 1, 28, dtype=torch.float64).view(2, 2, 7)
    with nn.utils.parametrize.cached():
        y = c(x).tanh() + c(x.flip(-1))
    y.pow(2).sum().backward()
    out["cached"] = c.parametrizations.weight.original0.grad
    d = copy.deepcopy(c)
    with torch.no_grad():
        c.parametrizations.weight.original0.mul_(2)
    out["deep"] = (d.weight, c.weight, nn.utils.parametrize.is_parametrized(d, "weight"))
    removed = nn.utils.weight_norm(fill(nn.Conv1d(2, 4, 3).double()), name="weight", dim=0)
    with torch.no_grad():
        removed.weight_v.copy_(w)
    nn.utils.remove_weight_norm(removed)
    out["remove_old"] = (removed.weight, sorted(removed.state_dict().keys()))
    return out


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_forms():
    ours, _ = run_both(weight_norm_forms, rtol=1e-12, atol=1e-12)
    w = np.sin(np.arange(24.0)).reshape(4, 2, 3)
    g = ours["old_to_new"][2]
    np.testing.assert_allclose(ours["old_to_new"][1], g * w / np.linalg.norm(w.reshape(4, -1), axis=1)[:, None, None],
                               rtol=1e-12)
    np.testing.assert_allclose(ours["deep"][1], 2 * ours["deep"][0], rtol=1e-12)


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


# ----------------------------------------------------------------------------------------------
# The LTSF harness (Informer / Autoformer / LTSF-Linear's exp_main.py): DLinear with individual
# per-channel heads, EarlyStopping saving a checkpoint file, adjust_learning_rate by hand, vali()
# under no_grad, and the NumPy metrics of utils/metrics.py on .detach().cpu().numpy() predictions
# ----------------------------------------------------------------------------------------------


def make_dlinear_individual(m, seq_len=16, pred_len=4, enc_in=3, kernel_size=5):
    torch, nn = m.torch, m.nn

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

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.seq_len = seq_len
            self.pred_len = pred_len
            self.decompsition = series_decomp(kernel_size)
            self.individual = True
            self.channels = enc_in
            if self.individual:
                self.Linear_Seasonal = nn.ModuleList()
                self.Linear_Trend = nn.ModuleList()
                for i in range(self.channels):
                    self.Linear_Seasonal.append(nn.Linear(self.seq_len, self.pred_len))
                    self.Linear_Trend.append(nn.Linear(self.seq_len, self.pred_len))
                    self.Linear_Seasonal[i].weight = nn.Parameter(
                        (1 / self.seq_len) * torch.ones([self.pred_len, self.seq_len]))
                    self.Linear_Trend[i].weight = nn.Parameter(
                        (1 / self.seq_len) * torch.ones([self.pred_len, self.seq_len]))

        def forward(self, x):
            seasonal_init, trend_init = self.decompsition(x)
            seasonal_init, trend_init = seasonal_init.permute(0, 2, 1), trend_init.permute(0, 2, 1)
            if self.individual:
                seasonal_output = torch.zeros([seasonal_init.size(0), seasonal_init.size(1), self.pred_len],
                                              dtype=seasonal_init.dtype).to(seasonal_init.device)
                trend_output = torch.zeros([trend_init.size(0), trend_init.size(1), self.pred_len],
                                           dtype=trend_init.dtype).to(trend_init.device)
                for i in range(self.channels):
                    seasonal_output[:, i, :] = self.Linear_Seasonal[i](seasonal_init[:, i, :])
                    trend_output[:, i, :] = self.Linear_Trend[i](trend_init[:, i, :])
            x = seasonal_output + trend_output
            return x.permute(0, 2, 1)  # to [Batch, Output length, Channel]

    return Model()


def ltsf_harness(m, weights, checkpoint_dir):
    import os
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data

    class EarlyStopping:
        def __init__(self, patience=7, verbose=False, delta=0):
            self.patience = patience
            self.verbose = verbose
            self.counter = 0
            self.best_score = None
            self.early_stop = False
            self.val_loss_min = np.inf
            self.delta = delta

        def __call__(self, val_loss, model, path):
            score = -val_loss
            if self.best_score is None:
                self.best_score = score
                self.save_checkpoint(val_loss, model, path)
            elif score < self.best_score + self.delta:
                self.counter += 1
                if self.counter >= self.patience:
                    self.early_stop = True
            else:
                self.best_score = score
                self.save_checkpoint(val_loss, model, path)
                self.counter = 0

        def save_checkpoint(self, val_loss, model, path):
            torch.save(model.state_dict(), path + '/' + 'checkpoint.pth')
            self.val_loss_min = val_loss

    def adjust_learning_rate(optimizer, epoch, learning_rate, lradj='type1'):
        if lradj == 'type1':
            lr_adjust = {epoch: learning_rate * (0.5 ** ((epoch - 1) // 1))}
        if epoch in lr_adjust.keys():
            lr = lr_adjust[epoch]
            for param_group in optimizer.param_groups:
                param_group['lr'] = lr

    def metric(pred, true):
        mae = np.mean(np.abs(pred - true))
        mse = np.mean((pred - true) ** 2)
        rmse = np.sqrt(mse)
        mape = np.mean(np.abs((pred - true) / true))
        mspe = np.mean(np.square((pred - true) / true))
        rse = np.sqrt(np.sum((true - pred) ** 2)) / np.sqrt(np.sum((true - true.mean()) ** 2))
        return mae, mse, rmse, mape, mspe, rse

    device = torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    model = load(m, make_dlinear_individual(m), weights).to(device)
    raw = (multiseries(length=90) * np.array([1.0, 3.0, 0.5])).astype(np.float32)
    mean, std = raw[:60].mean(0), raw[:60].std(0)  # StandardScaler fitted on the training part
    values = (raw - mean) / std

    class Dataset_Custom(data.Dataset):
        def __init__(self, data_x, seq_len=16, pred_len=4):
            self.data_x, self.seq_len, self.pred_len = data_x, seq_len, pred_len

        def __getitem__(self, index):
            s_end = index + self.seq_len
            return self.data_x[index:s_end], self.data_x[s_end:s_end + self.pred_len]

        def __len__(self):
            return len(self.data_x) - self.seq_len - self.pred_len + 1

    train_loader = data.DataLoader(Dataset_Custom(values[:60]), batch_size=8, shuffle=True, drop_last=True,
                                   generator=torch.Generator().manual_seed(2021))
    vali_loader = data.DataLoader(Dataset_Custom(values[44:76]), batch_size=8, shuffle=False, drop_last=True)
    test_loader = data.DataLoader(Dataset_Custom(values[60:]), batch_size=1, shuffle=False, drop_last=False)
    model_optim = optim.Adam(model.parameters(), lr=0.005)
    criterion = nn.MSELoss()

    def vali(loader):
        total_loss = []
        model.eval()
        with torch.no_grad():
            for i, (batch_x, batch_y) in enumerate(loader):
                batch_x = batch_x.float().to(device)
                batch_y = batch_y.float()
                outputs = model(batch_x)
                pred = outputs.detach().cpu()
                true = batch_y.detach().cpu()
                loss = criterion(pred, true)
                total_loss.append(loss)
        total_loss = np.average(total_loss)
        model.train()
        return total_loss

    early_stopping = EarlyStopping(patience=2, verbose=True)
    history, lrs = [], []
    for epoch in range(6):
        train_loss = []
        model.train()
        for i, (batch_x, batch_y) in enumerate(train_loader):
            model_optim.zero_grad()
            batch_x = batch_x.float().to(device)
            batch_y = batch_y.float().to(device)
            outputs = model(batch_x)
            loss = criterion(outputs, batch_y)
            train_loss.append(loss.item())
            loss.backward()
            model_optim.step()
        train_loss = np.average(train_loss)
        vali_loss = vali(vali_loader)
        history.append((train_loss, vali_loss))
        early_stopping(vali_loss, model, checkpoint_dir)
        if early_stopping.early_stop:
            break
        adjust_learning_rate(model_optim, epoch + 1, 0.005)
        lrs.append(model_optim.param_groups[0]['lr'])
    best_model_path = checkpoint_dir + '/' + 'checkpoint.pth'
    model.load_state_dict(torch.load(best_model_path))
    preds, trues = [], []
    model.eval()
    with torch.no_grad():
        for batch_x, batch_y in test_loader:
            outputs = model(batch_x.float())
            preds.append(outputs.detach().cpu().numpy())
            trues.append(batch_y.detach().cpu().numpy())
    preds, trues = np.array(preds), np.array(trues)
    preds = preds.reshape(-1, preds.shape[-2], preds.shape[-1])
    trues = trues.reshape(-1, trues.shape[-2], trues.shape[-1])
    os.remove(best_model_path)
    return dict(history=history, lrs=lrs, best=early_stopping.val_loss_min, stopped=early_stopping.early_stop,
                metrics=metric(preds * std + mean, trues * std + mean), shape=preds.shape,
                params=params_of(model))


def test_ltsf_harness(tmp_path):
    ours, theirs = run_both(ltsf_harness, weights_of(make_dlinear_individual), str(tmp_path), rtol=1e-5, atol=1e-6)
    assert ours["shape"] == (90 - 60 - 20 + 1, 4, 3)
    assert ours["lrs"][:3] == [0.005, 0.0025, 0.00125]
    assert ours["best"] == min(v for _, v in ours["history"])


# ----------------------------------------------------------------------------------------------
# Series of different lengths: pad_sequence, a GRU over the padded time-first batch, the outputs cut
# back by unpad_sequence (which transposes its argument in place), a per-step loss on each series
# ----------------------------------------------------------------------------------------------


def make_ragged_gru(m):
    nn = m.nn

    class StepAhead(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(2, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, padded):
            h, _ = self.gru(padded)
            return self.out(h)

    return StepAhead()


def ragged_gru(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_ragged_gru(m), weights).double()
    values = torch.tensor(multiseries(length=30, channels=2))
    lengths = [30, 21, 12, 17]
    series = [values[30 - n:] for n in lengths]
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses, shapes = [], []
    for step in range(3):
        optimizer.zero_grad()
        padded = nn.utils.rnn.pad_sequence([s[:-1] for s in series])  # [T, B, 2], time first
        targets = [s[1:] for s in series]
        out = model(padded)
        pieces = nn.utils.rnn.unpad_sequence(out, torch.tensor([n - 1 for n in lengths]))
        shapes.append(tuple(out.shape))  # batch first now: unpad_sequence transposed it in place
        loss = sum(nn.functional.mse_loss(p, t, reduction='sum') for p, t in zip(pieces, targets)) / sum(lengths)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return dict(losses=losses, shapes=shapes, grads=grads_of(model), params=params_of(model))


def test_ragged_series_pad_and_unpad_sequence():
    ours, _ = run_both(ragged_gru, weights_of(make_ragged_gru), rtol=1e-9, atol=1e-11)
    assert ours["shapes"][0] == (4, 29, 2)


# ----------------------------------------------------------------------------------------------
# An autoregressive forecaster tuned by evolution strategies on a flat parameter vector: after
# vector_to_parameters the model's parameters are views of theta, so theta.add_(noise) perturbs it
# ----------------------------------------------------------------------------------------------


def evolution_strategies(m):
    torch, nn = m.torch, m.nn
    values = torch.tensor(multiseries(length=40, channels=1)[:, 0])
    w = values.unfold(0, 9, 1)
    x, y = w[:, :8], w[:, 8:]
    model = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    theta = torch.linspace(-0.3, 0.3, sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    nn.utils.vector_to_parameters(theta, model.parameters())
    g = torch.Generator().manual_seed(0)
    sigma, lr, pop, history = 0.05, 0.05, 8, []
    for it in range(5):
        eps = torch.randn(pop, theta.numel(), generator=g, dtype=torch.float64)
        rewards = []
        for e in eps:
            theta.add_(sigma * e)  # the model sees it: its parameters are views of theta
            with torch.no_grad():
                rewards.append(-nn.functional.mse_loss(model(x), y))
            theta.sub_(sigma * e)
        rewards = torch.stack(rewards)
        advantage = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
        theta.add_(lr / (pop * sigma) * (advantage @ eps))
        with torch.no_grad():
            history.append(nn.functional.mse_loss(model(x), y).item())
    return dict(history=history, theta=theta, weight=model[0].weight, spread=rewards.std())


def test_evolution_strategies_through_vector_to_parameters():
    ours, _ = run_both(evolution_strategies, rtol=1e-9, atol=1e-11)
    assert ours["spread"] > 0  # the perturbations reached the model
    np.testing.assert_array_equal(ours["weight"].ravel(), ours["theta"][:32])


# ----------------------------------------------------------------------------------------------
# Holt-Winters smoothing learnt by gradient descent (ES-RNN's idea): coefficients kept in (0, 1) by a
# registered parametrization with a right_inverse, a Python loop over time with a seasonal list;
# and a straight-through rounding autograd.Function (quantised forecasts)
# ----------------------------------------------------------------------------------------------


def holt_winters(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    P = nn.utils.parametrize

    class Sigmoid01(nn.Module):
        def forward(self, X):
            return torch.sigmoid(X)

        def right_inverse(self, A):
            return torch.log(A) - torch.log1p(-A)

    class HoltWinters(nn.Module):
        def __init__(self, season=4):
            super().__init__()
            self.alpha = nn.Parameter(torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64))
            self.season = season

        def forward(self, y):
            a, b, g = self.alpha
            level, trend = y[0], y[1] - y[0]
            seas = [y[i] - y[:self.season].mean() for i in range(self.season)]
            fitted = []
            for t in range(len(y)):
                s = seas[t % self.season]
                fitted.append(level + trend + s)
                new_level = a * (y[t] - s) + (1 - a) * (level + trend)
                trend = b * (new_level - level) + (1 - b) * trend
                seas[t % self.season] = g * (y[t] - new_level) + (1 - g) * s
                level = new_level
            return torch.stack(fitted)

    hw = HoltWinters()
    P.register_parametrization(hw, 'alpha', Sigmoid01())  # the stored value becomes logit(alpha)
    y = torch.tensor(2 + np.sin(np.arange(24) * np.pi / 2) + 0.05 * np.arange(24))
    optimizer = optim.Adam(hw.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = ((hw(y)[4:] - y[4:]) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    trained = hw.parametrizations.alpha.original.clone()
    hw.alpha = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)  # through right_inverse

    class STE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, step):
            ctx.save_for_backward(x)
            return torch.round(x / step) * step

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * (x.abs() < 2).to(g.dtype), None

    x = torch.linspace(-3, 3, 9, dtype=torch.float64, requires_grad=True)
    quantised = STE.apply(x, 0.5)
    quantised.pow(2).sum().backward()
    return dict(losses=losses, trained=trained, reset=hw.parametrizations.alpha.original, alpha=hw.alpha,
                quantised=quantised, ste_grad=x.grad, keys=sorted(hw.state_dict().keys()))


def test_holt_winters_parametrized_and_straight_through():
    ours, _ = run_both(holt_winters, rtol=1e-10, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
    np.testing.assert_allclose(ours["reset"], 0.0, atol=1e-15)  # logit(0.5)
    assert ours["keys"] == ["parametrizations.alpha.original"]
    x = np.linspace(-3, 3, 9)
    np.testing.assert_allclose(ours["ste_grad"], 2 * np.round(x / 0.5) * 0.5 * (np.abs(x) < 2), rtol=1e-12)
