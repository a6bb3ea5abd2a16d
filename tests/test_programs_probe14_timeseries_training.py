# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Time-series programs, run as tests/probe14_timeseries_common.py says. Training loops and learnt smoothing: a GRU
encoder-decoder trained with scheduled sampling (``torch.rand`` after ``manual_seed``) from a shuffled ``DataLoader``
over a ``TensorDataset`` with a seeded ``Generator``, ``clip_grad_norm_``, ``ReduceLROnPlateau`` and early stopping
by ``copy.deepcopy(model.state_dict())``; the LTSF harness (DLinear with individual heads written into a zeros
tensor, an ``EarlyStopping`` class saving a checkpoint file, ``adjust_learning_rate`` through ``param_groups``,
``np.average`` over loss tensors, the NumPy metrics of ``utils/metrics.py``); series of different lengths through
``pad_sequence``, a GRU and ``unpad_sequence`` (which transposes its argument in place); an autoregressive forecaster
tuned by evolution strategies on a flat vector whose slices ``vector_to_parameters`` makes the parameters;
Holt-Winters smoothing learnt through a registered parametrization (``right_inverse``) and a straight-through
rounding ``autograd.Function``."""

import copy

import numpy as np

from .probe14_timeseries_common import grads_of, multiseries, params_of
from .pytorch_programs import load, run_both, weights_of

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
