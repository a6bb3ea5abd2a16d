# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Time-series programs, run as tests/probe14_timeseries_common.py says. Data, metrics and distributions: sliding
windows three ways (``Tensor.unfold`` with a step on a batch, ``as_strided`` on a view with a storage offset,
``torch.stack`` of slices) with gradients through the overlaps; the metrics as forecasting repositories write them
(MASE against the seasonal naive forecast, sMAPE and MAPE with zero guards by ``torch.where``, ``nanmean``, a
multi-quantile pinball loss by broadcasting, ``torch.quantile``); probabilistic heads (``StudentT``,
``MixtureSameFamily`` of ``Independent`` Normals, ``LowRankMultivariateNormal``, the Gaussian CRPS in closed form and
by samples, ``icdf`` quantiles); Chronos's tokenizer (``bucketize``, ``nansum``, NaN masks) and series operations
(``diff(prepend=)``, ``cummax``, ``linalg.lstsq``, ``corrcoef``, ``cov``) with FITS's complex ``Linear`` on a
low-passed ``rfft``; dict windows through ``default_collate`` with a ``WeightedRandomSampler``."""

import math

import numpy as np
import pytest

from .probe14_timeseries_common import grads_of, multiseries, params_of
from .pytorch_programs import load, run_both, weights_of

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
