# ruff: noqa: B007, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Time series: N-BEATS (trend, seasonality and generic blocks); a TCN
(``weight_norm`` and its parametrization, chomp or ``F.pad``); a seq2seq LSTM with teacher forcing."""

import random

import numpy as np
import pytest

from .probe11_tabular_common import params_of, train
from .pytorch_programs import load, run_both, weights_of

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
