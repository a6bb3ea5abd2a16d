# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Time series: RevIN around DLinear on a sliding-window dataset by ``unfold``;
PatchTST; TimesNet."""

import numpy as np

from .probe11_tabular_common import multivariate, params_of
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RevIN (Kim et al. 2022) around DLinear (Zeng et al. 2023) on a sliding-window dataset by unfold
# ----------------------------------------------------------------------------------------------


def make_dlinear(m, seq_len=16, pred_len=4, channels=3, kernel_size=5):
    torch, nn = m.torch, m.nn

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

    class moving_avg(nn.Module):
        def __init__(self, kernel_size, stride):
            super(moving_avg, self).__init__()
            self.kernel_size = kernel_size
            self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=stride, padding=0)

        def forward(self, x):
            # padding on the both ends of time series
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
        def __init__(self, subtract_last=False):
            super(Model, self).__init__()
            self.seq_len = seq_len
            self.pred_len = pred_len
            self.decompsition = series_decomp(kernel_size)
            self.channels = channels
            self.revin = RevIN(channels, subtract_last=subtract_last)
            self.Linear_Seasonal = nn.ModuleList()
            self.Linear_Trend = nn.ModuleList()
            for i in range(self.channels):
                self.Linear_Seasonal.append(nn.Linear(self.seq_len, self.pred_len))
                self.Linear_Trend.append(nn.Linear(self.seq_len, self.pred_len))

        def forward(self, x):
            # x: [Batch, Input length, Channel]
            x = self.revin(x, 'norm')
            seasonal_init, trend_init = self.decompsition(x)
            seasonal_init, trend_init = seasonal_init.permute(0, 2, 1), trend_init.permute(0, 2, 1)
            seasonal_output = torch.zeros([seasonal_init.size(0), seasonal_init.size(1), self.pred_len],
                                          dtype=seasonal_init.dtype).to(seasonal_init.device)
            trend_output = torch.zeros([trend_init.size(0), trend_init.size(1), self.pred_len],
                                       dtype=trend_init.dtype).to(trend_init.device)
            for i in range(self.channels):
                seasonal_output[:, i, :] = self.Linear_Seasonal[i](seasonal_init[:, i, :])
                trend_output[:, i, :] = self.Linear_Trend[i](trend_init[:, i, :])
            x = seasonal_output + trend_output
            x = self.revin(x.permute(0, 2, 1), 'denorm')
            return x  # to [Batch, Output length, Channel]

    return Model()


def dlinear_revin(m, weights):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    model = load(m, make_dlinear(m), weights).double()

    class Dataset_Custom(data.Dataset):
        """Windows of a (time, channels) array, as the LTSF repositories cut them, here by unfold."""

        def __init__(self, values, seq_len, pred_len):
            self.seq_len, self.pred_len = seq_len, pred_len
            self.windows = torch.from_numpy(values).unfold(0, seq_len + pred_len, 1).permute(0, 2, 1)

        def __getitem__(self, index):
            w = self.windows[index]
            return w[:self.seq_len], w[self.seq_len:]

        def __len__(self):
            return len(self.windows)

    dataset = Dataset_Custom(multivariate(), 16, 4)
    loader = data.DataLoader(dataset, batch_size=16, shuffle=False, drop_last=True)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.MSELoss()
    losses = []
    for batch_x, batch_y in loader:
        optimizer.zero_grad()
        outputs = model(batch_x)
        loss = criterion(outputs, batch_y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    # the round trip: norm then denorm gives the input back
    x = dataset.windows[:3, :16]
    round_trip = model.revin(model.revin(x, "norm"), "denorm")
    return {"n": len(dataset), "first": dataset[1], "losses": losses, "grads": grads, "params": params_of(model),
            "round_trip": round_trip, "stdev": model.revin.stdev}


def test_dlinear_revin_unfold_windows():
    ours, _ = run_both(dlinear_revin, weights_of(make_dlinear), rtol=1e-9, atol=1e-12)
    values = multivariate()
    assert ours["n"] == 60 - 20 + 1
    np.testing.assert_array_equal(ours["first"][0], values[1:17])
    np.testing.assert_array_equal(ours["first"][1], values[17:21])
    assert len(ours["losses"]) == 2  # 41 windows, batches of 16, the last dropped
    np.testing.assert_allclose(ours["round_trip"], np.stack([values[i:i + 16] for i in range(3)]), rtol=1e-6)
    np.testing.assert_allclose(ours["stdev"][:, 0], np.sqrt(np.stack([values[i:i + 16] for i in range(3)]).var(1)
                                                            + 1e-5), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# PatchTST (Nie et al. 2023, yuqinie98/PatchTST): patches by ReplicationPad1d + unfold, channel
# independence, BatchNorm in a transformer encoder, RevIN with subtract_last
# ----------------------------------------------------------------------------------------------


def make_patchtst(m, c_in=3, context_window=16, target_window=4, patch_len=4, stride=2, d_model=8, n_heads=2,
                  d_ff=16, n_layers=2):
    torch, nn, F = m.torch, m.nn, m.F
    patch_num = int((context_window - patch_len) / stride + 1) + 1  # padding_patch == 'end'

    class Transpose(nn.Module):
        def __init__(self, *dims, contiguous=False):
            super().__init__()
            self.dims, self.contiguous = dims, contiguous

        def forward(self, x):
            if self.contiguous:
                return x.transpose(*self.dims).contiguous()
            else:
                return x.transpose(*self.dims)

    class _ScaledDotProductAttention(nn.Module):
        def __init__(self, d_model, n_heads, attn_dropout=0., res_attention=False, lsa=False):
            super().__init__()
            self.attn_dropout = nn.Dropout(attn_dropout)
            self.res_attention = res_attention
            head_dim = d_model // n_heads
            self.scale = nn.Parameter(torch.tensor(head_dim ** -0.5), requires_grad=lsa)
            self.lsa = lsa

        def forward(self, q, k, v, prev=None, key_padding_mask=None, attn_mask=None):
            attn_scores = torch.matmul(q, k) * self.scale  # attn_scores : [bs x n_heads x max_q_len x q_len]
            if prev is not None:
                attn_scores = attn_scores + prev
            attn_weights = F.softmax(attn_scores, dim=-1)
            attn_weights = self.attn_dropout(attn_weights)
            output = torch.matmul(attn_weights, v)
            if self.res_attention:
                return output, attn_weights, attn_scores
            else:
                return output, attn_weights

    class _MultiheadAttention(nn.Module):
        def __init__(self, d_model, n_heads, res_attention=False, qkv_bias=True, lsa=False):
            super().__init__()
            d_k = d_v = d_model // n_heads
            self.n_heads, self.d_k, self.d_v = n_heads, d_k, d_v
            self.W_Q = nn.Linear(d_model, d_k * n_heads, bias=qkv_bias)
            self.W_K = nn.Linear(d_model, d_k * n_heads, bias=qkv_bias)
            self.W_V = nn.Linear(d_model, d_v * n_heads, bias=qkv_bias)
            self.res_attention = res_attention
            self.sdp_attn = _ScaledDotProductAttention(d_model, n_heads, res_attention=self.res_attention, lsa=lsa)
            self.to_out = nn.Sequential(nn.Linear(n_heads * d_v, d_model), nn.Dropout(0.0))

        def forward(self, Q, K=None, V=None, prev=None):
            bs = Q.size(0)
            if K is None:
                K = Q
            if V is None:
                V = Q
            q_s = self.W_Q(Q).view(bs, -1, self.n_heads, self.d_k).transpose(1, 2)
            k_s = self.W_K(K).view(bs, -1, self.n_heads, self.d_k).permute(0, 2, 3, 1)
            v_s = self.W_V(V).view(bs, -1, self.n_heads, self.d_v).transpose(1, 2)
            if self.res_attention:
                output, attn_weights, attn_scores = self.sdp_attn(q_s, k_s, v_s, prev=prev)
            else:
                output, attn_weights = self.sdp_attn(q_s, k_s, v_s)
            output = output.transpose(1, 2).contiguous().view(bs, -1, self.n_heads * self.d_v)
            output = self.to_out(output)
            if self.res_attention:
                return output, attn_weights, attn_scores
            else:
                return output, attn_weights

    class TSTEncoderLayer(nn.Module):
        def __init__(self, res_attention=True):
            super().__init__()
            self.res_attention = res_attention
            self.self_attn = _MultiheadAttention(d_model, n_heads, res_attention=res_attention, lsa=True)
            self.dropout_attn = nn.Dropout(0.0)
            self.norm_attn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))
            self.ff = nn.Sequential(nn.Linear(d_model, d_ff, bias=True), nn.GELU(), nn.Dropout(0.0),
                                    nn.Linear(d_ff, d_model, bias=True))
            self.dropout_ffn = nn.Dropout(0.0)
            self.norm_ffn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))

        def forward(self, src, prev=None):
            if self.res_attention:
                src2, attn, scores = self.self_attn(src, src, src, prev)
            else:
                src2, attn = self.self_attn(src, src, src)
            src = src + self.dropout_attn(src2)  # Add: residual connection with residual dropout
            src = self.norm_attn(src)
            src2 = self.ff(src)
            src = src + self.dropout_ffn(src2)
            src = self.norm_ffn(src)
            if self.res_attention:
                return src, scores
            else:
                return src

    class TSTiEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_P = nn.Linear(patch_len, d_model)
            self.W_pos = nn.Parameter(torch.empty((patch_num, d_model)).uniform_(-0.02, 0.02))
            self.dropout = nn.Dropout(0.0)
            self.layers = nn.ModuleList([TSTEncoderLayer() for i in range(n_layers)])

        def forward(self, x):
            n_vars = x.shape[1]
            x = x.permute(0, 1, 3, 2)  # x: [bs x nvars x patch_num x patch_len]
            x = self.W_P(x)  # x: [bs x nvars x patch_num x d_model]
            u = torch.reshape(x, (x.shape[0] * x.shape[1], x.shape[2], x.shape[3]))
            u = self.dropout(u + self.W_pos)
            scores = None
            for mod in self.layers:
                u, scores = mod(u, prev=scores)
            z = torch.reshape(u, (-1, n_vars, u.shape[-2], u.shape[-1]))
            z = z.permute(0, 1, 3, 2)  # z: [bs x nvars x d_model x patch_num]
            return z

    class PatchTST_backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.revin_layer = make_dlinear(m, channels=c_in).revin.__class__(c_in, affine=True, subtract_last=True)
            self.padding_patch_layer = nn.ReplicationPad1d((0, stride))
            self.backbone = TSTiEncoder()
            self.head = nn.Sequential(nn.Flatten(start_dim=-2), nn.Linear(d_model * patch_num, target_window))

        def forward(self, z):  # z: [bs x nvars x seq_len]
            z = z.permute(0, 2, 1)
            z = self.revin_layer(z, 'norm')
            z = z.permute(0, 2, 1)
            z = self.padding_patch_layer(z)
            z = z.unfold(dimension=-1, size=patch_len, step=stride)  # z: [bs x nvars x patch_num x patch_len]
            z = z.permute(0, 1, 3, 2)  # z: [bs x nvars x patch_len x patch_num]
            z = self.backbone(z)
            z = self.head(z)  # z: [bs x nvars x target_window]
            z = z.permute(0, 2, 1)
            z = self.revin_layer(z, 'denorm')
            z = z.permute(0, 2, 1)
            return z

    return PatchTST_backbone()


def test_patchtst():
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_patchtst(m), weights).double()
        values = torch.from_numpy(multivariate(40, 3, 23))
        w = values.unfold(0, 20, 4)  # (windows, channels, 20)
        x, y = w[..., :16], w[..., 16:]
        optimizer = optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=3, pct_start=0.3)
        losses = []
        for step in range(3):
            optimizer.zero_grad()
            loss = nn.MSELoss()(model(x), y)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        return {"losses": losses, "grads": grads, "params": params_of(model), "lr": scheduler.get_last_lr(),
                "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}

    ours, _ = run_both(program, weights_of(make_patchtst), rtol=1e-8, atol=1e-10)
    assert ours["frozen"] == []  # lsa=True: the attention scale is learnt


# ----------------------------------------------------------------------------------------------
# TimesNet (Wu et al. 2023): periods by the FFT's top amplitudes, 1-D series folded to 2-D for Conv2d
# ----------------------------------------------------------------------------------------------


def make_timesnet(m, seq_len=12, pred_len=0, d_model=4, d_ff=6, num_kernels=3, top_k=2):
    torch, nn, F = m.torch, m.nn, m.F

    def FFT_for_Period(x, k=2):
        # [B, T, C]
        xf = torch.fft.rfft(x, dim=1)
        # find period by amplitudes
        frequency_list = abs(xf).mean(0).mean(-1)
        frequency_list[0] = 0
        _, top_list = torch.topk(frequency_list, k)
        top_list = top_list.detach().cpu().numpy()
        period = x.shape[1] // top_list
        return period, abs(xf).mean(-1)[:, top_list]

    class Inception_Block_V1(nn.Module):
        def __init__(self, in_channels, out_channels, num_kernels=6, init_weight=True):
            super(Inception_Block_V1, self).__init__()
            self.num_kernels = num_kernels
            kernels = []
            for i in range(self.num_kernels):
                kernels.append(nn.Conv2d(in_channels, out_channels, kernel_size=2 * i + 1, padding=i))
            self.kernels = nn.ModuleList(kernels)
            if init_weight:
                self._initialize_weights()

        def _initialize_weights(self):
            for m_ in self.modules():
                if isinstance(m_, nn.Conv2d):
                    nn.init.kaiming_normal_(m_.weight, mode='fan_out', nonlinearity='relu')
                    if m_.bias is not None:
                        nn.init.constant_(m_.bias, 0)

        def forward(self, x):
            res_list = []
            for i in range(self.num_kernels):
                res_list.append(self.kernels[i](x))
            res = torch.stack(res_list, dim=-1).mean(-1)
            return res

    class TimesBlock(nn.Module):
        def __init__(self):
            super(TimesBlock, self).__init__()
            self.seq_len = seq_len
            self.pred_len = pred_len
            self.k = top_k
            self.conv = nn.Sequential(Inception_Block_V1(d_model, d_ff, num_kernels=num_kernels), nn.GELU(),
                                      Inception_Block_V1(d_ff, d_model, num_kernels=num_kernels))

        def forward(self, x):
            B, T, N = x.size()
            period_list, period_weight = FFT_for_Period(x, self.k)
            res = []
            for i in range(self.k):
                period = period_list[i]
                # padding
                if (self.seq_len + self.pred_len) % period != 0:
                    length = (((self.seq_len + self.pred_len) // period) + 1) * period
                    padding = torch.zeros([x.shape[0], (length - (self.seq_len + self.pred_len)), x.shape[2]]).to(
                        x.device)
                    out = torch.cat([x, padding], dim=1)
                else:
                    length = (self.seq_len + self.pred_len)
                    out = x
                # reshape
                out = out.reshape(B, length // period, period, N).permute(0, 3, 1, 2).contiguous()
                # 2D conv: from 1d Variation to 2d Variation
                out = self.conv(out)
                # reshape back
                out = out.permute(0, 2, 3, 1).reshape(B, -1, N)
                res.append(out[:, :(self.seq_len + self.pred_len), :])
            res = torch.stack(res, dim=-1)
            # adaptive aggregation
            period_weight = F.softmax(period_weight, dim=1)
            period_weight = period_weight.unsqueeze(1).unsqueeze(1).repeat(1, T, N, 1)
            res = torch.sum(res * period_weight, -1)
            # residual connection
            res = res + x
            return res, period_list

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(2, d_model)
            self.block = TimesBlock()
            self.layer_norm = nn.LayerNorm(d_model)
            self.projection = nn.Linear(d_model * seq_len, 3)

        def forward(self, x):
            h = self.embed(x)
            h, periods = self.block(h)
            h = self.layer_norm(h)
            return self.projection(F.gelu(h).reshape(h.shape[0], -1)), periods

    return Model()


def test_timesnet_classification():
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_timesnet(m), weights).double()
        rng = np.random.default_rng(24)
        t = np.arange(12)
        labels = rng.integers(0, 3, 8)
        x = np.stack([np.stack([np.sin(2 * np.pi * t / (3 + l)), np.cos(2 * np.pi * t / 4)], 1) for l in labels])
        x = torch.from_numpy(x + 0.1 * rng.standard_normal(x.shape))
        y = torch.from_numpy(labels)
        optimizer = optim.RAdam(model.parameters(), lr=1e-3)
        losses = []
        for step in range(3):
            optimizer.zero_grad()
            out, periods = model(x)
            loss = nn.CrossEntropyLoss()(out, y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=4.0)
            optimizer.step()
            losses.append(loss.item())
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return {"losses": losses, "grads": grads, "params": params_of(model), "periods": periods}

    run_both(program, weights_of(make_timesnet), rtol=1e-8, atol=1e-11)
