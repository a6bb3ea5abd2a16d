# ruff: noqa: UP008, UP039  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Time series: Autoformer's auto-correlation (``rfft``/``irfft``, ``roll`` and
``gather`` delay aggregation) with Informer's embeddings and distilling (the ``torch.__version__ >= '1.5.0'`` check);
Informer's ProbSparse self-attention."""

import math

import numpy as np

from .probe11_tabular_common import multivariate, params_of, train
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Autoformer (Wu et al. 2021, thuml/Autoformer): auto-correlation by rfft / irfft, time-delay aggregation
# by roll (training) and gather (inference), series decomposition; Informer's embeddings and distilling
# ----------------------------------------------------------------------------------------------


def make_autoformer(m, enc_in=2, d_model=8, n_heads=2, seq_len=16, label_len=8, pred_len=4, factor=1,
                    version_check=False):
    torch, nn, F = m.torch, m.nn, m.F

    class PositionalEmbedding(nn.Module):
        def __init__(self, d_model, max_len=5000):
            super(PositionalEmbedding, self).__init__()
            # Compute the positional encodings once in log space.
            pe = torch.zeros(max_len, d_model).float()
            pe.require_grad = False
            position = torch.arange(0, max_len).float().unsqueeze(1)
            div_term = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0)
            self.register_buffer('pe', pe)

        def forward(self, x):
            return self.pe[:, :x.size(1)]

    class TokenEmbedding(nn.Module):
        def __init__(self, c_in, d_model):
            super(TokenEmbedding, self).__init__()
            padding = (1 if torch.__version__ >= '1.5.0' else 2) if version_check else 1
            self.tokenConv = nn.Conv1d(in_channels=c_in, out_channels=d_model,
                                       kernel_size=3, padding=padding, padding_mode='circular', bias=False)
            for m_ in self.modules():
                if isinstance(m_, nn.Conv1d):
                    nn.init.kaiming_normal_(m_.weight, mode='fan_in', nonlinearity='leaky_relu')

        def forward(self, x):
            x = self.tokenConv(x.permute(0, 2, 1)).transpose(1, 2)
            return x

    class TimeFeatureEmbedding(nn.Module):
        def __init__(self, d_model, d_inp=3):
            super(TimeFeatureEmbedding, self).__init__()
            self.embed = nn.Linear(d_inp, d_model, bias=False)

        def forward(self, x):
            return self.embed(x)

    class DataEmbedding(nn.Module):
        def __init__(self, c_in, d_model, dropout=0.0):
            super(DataEmbedding, self).__init__()
            self.value_embedding = TokenEmbedding(c_in=c_in, d_model=d_model)
            self.position_embedding = PositionalEmbedding(d_model=d_model)
            self.temporal_embedding = TimeFeatureEmbedding(d_model=d_model)
            self.dropout = nn.Dropout(p=dropout)

        def forward(self, x, x_mark):
            x = self.value_embedding(x) + self.temporal_embedding(x_mark) + self.position_embedding(x)
            return self.dropout(x)

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

    class my_Layernorm(nn.Module):
        def __init__(self, channels):
            super(my_Layernorm, self).__init__()
            self.layernorm = nn.LayerNorm(channels)

        def forward(self, x):
            x_hat = self.layernorm(x)
            bias = torch.mean(x_hat, dim=1).unsqueeze(1).repeat(1, x.shape[1], 1)
            return x_hat - bias

    class AutoCorrelation(nn.Module):
        def __init__(self, mask_flag=True, factor=1, scale=None, attention_dropout=0.0, output_attention=False):
            super(AutoCorrelation, self).__init__()
            self.factor = factor
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)

        def time_delay_agg_training(self, values, corr):
            head = values.shape[1]
            channel = values.shape[2]
            length = values.shape[3]
            # find top k
            top_k = int(self.factor * math.log(length))
            mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
            index = torch.topk(torch.mean(mean_value, dim=0), top_k, dim=-1)[1]
            weights = torch.stack([mean_value[:, index[i]] for i in range(top_k)], dim=-1)
            # update corr
            tmp_corr = torch.softmax(weights, dim=-1)
            # aggregation
            tmp_values = values
            delays_agg = torch.zeros_like(values).float()
            for i in range(top_k):
                pattern = torch.roll(tmp_values, -int(index[i]), -1)
                delays_agg = delays_agg + pattern * \
                    (tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length))
            return delays_agg

        def time_delay_agg_inference(self, values, corr):
            batch = values.shape[0]
            head = values.shape[1]
            channel = values.shape[2]
            length = values.shape[3]
            # index init
            init_index = torch.arange(length).unsqueeze(0).unsqueeze(0).unsqueeze(0).repeat(batch, head, channel, 1)
            # find top k
            top_k = int(self.factor * math.log(length))
            mean_value = torch.mean(torch.mean(corr, dim=1), dim=1)
            weights, delay = torch.topk(mean_value, top_k, dim=-1)
            # update corr
            tmp_corr = torch.softmax(weights, dim=-1)
            # aggregation
            tmp_values = values.repeat(1, 1, 1, 2)
            delays_agg = torch.zeros_like(values).float()
            for i in range(top_k):
                tmp_delay = init_index + delay[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel,
                                                                                                   length)
                pattern = torch.gather(tmp_values, dim=-1, index=tmp_delay)
                delays_agg = delays_agg + pattern * \
                    (tmp_corr[:, i].unsqueeze(1).unsqueeze(1).unsqueeze(1).repeat(1, head, channel, length))
            return delays_agg

        def forward(self, queries, keys, values, attn_mask):
            B, L, H, E = queries.shape
            _, S, _, D = values.shape
            if L > S:
                zeros = torch.zeros_like(queries[:, :(L - S), :]).float()
                values = torch.cat([values, zeros], dim=1)
                keys = torch.cat([keys, zeros], dim=1)
            else:
                values = values[:, :L, :, :]
                keys = keys[:, :L, :, :]
            # period-based dependencies
            q_fft = torch.fft.rfft(queries.permute(0, 2, 3, 1).contiguous(), dim=-1)
            k_fft = torch.fft.rfft(keys.permute(0, 2, 3, 1).contiguous(), dim=-1)
            res = q_fft * torch.conj(k_fft)
            corr = torch.fft.irfft(res, n=L, dim=-1)
            # time delay agg
            if self.training:
                V = self.time_delay_agg_training(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)
            else:
                V = self.time_delay_agg_inference(values.permute(0, 2, 3, 1).contiguous(), corr).permute(0, 3, 1, 2)
            if self.output_attention:
                return (V.contiguous(), corr.permute(0, 3, 1, 2))
            else:
                return (V.contiguous(), None)

    class AutoCorrelationLayer(nn.Module):
        def __init__(self, correlation, d_model, n_heads, d_keys=None, d_values=None):
            super(AutoCorrelationLayer, self).__init__()
            d_keys = d_keys or (d_model // n_heads)
            d_values = d_values or (d_model // n_heads)
            self.inner_correlation = correlation
            self.query_projection = nn.Linear(d_model, d_keys * n_heads)
            self.key_projection = nn.Linear(d_model, d_keys * n_heads)
            self.value_projection = nn.Linear(d_model, d_values * n_heads)
            self.out_projection = nn.Linear(d_values * n_heads, d_model)
            self.n_heads = n_heads

        def forward(self, queries, keys, values, attn_mask):
            B, L, _ = queries.shape
            _, S, _ = keys.shape
            H = self.n_heads
            queries = self.query_projection(queries).view(B, L, H, -1)
            keys = self.key_projection(keys).view(B, S, H, -1)
            values = self.value_projection(values).view(B, S, H, -1)
            out, attn = self.inner_correlation(queries, keys, values, attn_mask)
            out = out.view(B, L, -1)
            return self.out_projection(out), attn

    class EncoderLayer(nn.Module):
        def __init__(self, attention, d_model, d_ff=None, moving_avg=5, dropout=0.0, activation="relu"):
            super(EncoderLayer, self).__init__()
            d_ff = d_ff or 4 * d_model
            self.attention = attention
            self.conv1 = nn.Conv1d(in_channels=d_model, out_channels=d_ff, kernel_size=1, bias=False)
            self.conv2 = nn.Conv1d(in_channels=d_ff, out_channels=d_model, kernel_size=1, bias=False)
            self.decomp1 = series_decomp(moving_avg)
            self.decomp2 = series_decomp(moving_avg)
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu if activation == "relu" else F.gelu

        def forward(self, x, attn_mask=None):
            new_x, attn = self.attention(x, x, x, attn_mask=attn_mask)
            x = x + self.dropout(new_x)
            x, _ = self.decomp1(x)
            y = x
            y = self.dropout(self.activation(self.conv1(y.transpose(-1, 1))))
            y = self.dropout(self.conv2(y).transpose(-1, 1))
            res, _ = self.decomp2(x + y)
            return res, attn

    class ConvLayer(nn.Module):
        """Informer's distilling layer: circular Conv1d, BatchNorm, ELU, MaxPool1d(3, 2, 1)."""

        def __init__(self, c_in):
            super(ConvLayer, self).__init__()
            self.downConv = nn.Conv1d(in_channels=c_in, out_channels=c_in, kernel_size=3, padding=1,
                                      padding_mode='circular')
            self.norm = nn.BatchNorm1d(c_in)
            self.activation = nn.ELU()
            self.maxPool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

        def forward(self, x):
            x = self.downConv(x.permute(0, 2, 1))
            x = self.norm(x)
            x = self.activation(x)
            x = self.maxPool(x)
            x = x.transpose(1, 2)
            return x

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
            self.decomp = series_decomp(5)
            self.enc_embedding = DataEmbedding(enc_in, d_model)
            self.encoder_layers = nn.ModuleList([EncoderLayer(AutoCorrelationLayer(
                AutoCorrelation(False, factor), d_model, n_heads), d_model, 16, moving_avg=5)])
            self.distil = ConvLayer(d_model)
            self.norm = my_Layernorm(d_model)
            self.projection = nn.Linear(d_model * (seq_len // 2), pred_len * enc_in)

        def forward(self, x_enc, x_mark_enc):
            seasonal_init, trend_init = self.decomp(x_enc)
            enc_out = self.enc_embedding(seasonal_init, x_mark_enc)
            for layer in self.encoder_layers:
                enc_out, attns = layer(enc_out)
            enc_out = self.norm(self.distil(enc_out))
            out = self.projection(enc_out.flatten(1)).view(-1, self.pred_len, x_enc.shape[-1])
            return out + trend_init[:, -1:, :]

    return Model()


def autoformer_data(batch=3, seq_len=16, pred_len=4, seed=22):
    values = multivariate(60, 2, seed)
    starts = [0, 13, 30][:batch]
    x = np.stack([values[s:s + seq_len] for s in starts])
    y = np.stack([values[s + seq_len:s + seq_len + pred_len] for s in starts])
    t = np.arange(60)
    marks = np.stack([np.sin(2 * np.pi * t / 7), np.cos(2 * np.pi * t / 7), t / 60 - 0.5], 1)
    x_mark = np.stack([marks[s:s + seq_len] for s in starts])
    return x, x_mark, y


def autoformer(m, weights, version_check=False):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_autoformer(m, version_check=version_check), weights).double()
    x, x_mark, y = (torch.from_numpy(a) for a in autoformer_data())
    model_optim = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.MSELoss()
    losses, grads = train(m, model, lambda model: criterion(model(x, x_mark), y), model_optim, 3)
    model.eval()
    with torch.no_grad():
        inference = model(x, x_mark)  # the gather form of the time-delay aggregation
        q = model.encoder_layers[0].attention
        _, corr = q.inner_correlation.__class__(False, 1, output_attention=True)(
            *(t.view(3, 16, 2, 4) for t in (x_mark.repeat(1, 1, 3)[..., :8],) * 3), None)
    return {"losses": losses, "grads": grads, "params": params_of(model), "inference": inference, "corr": corr,
            "pe": model.enc_embedding.position_embedding.pe[0, :4]}


def test_autoformer():
    # atol: the distilling conv's bias, before BatchNorm, gets gradients of rounding noise only
    ours, _ = run_both(autoformer, weights_of(make_autoformer), rtol=1e-8, atol=1e-10)
    # the correlation by FFT is the circular cross-correlation: corr[tau] = sum_t q[t + tau] k[t]
    x, x_mark, y = autoformer_data()
    q = np.concatenate([x_mark] * 3, -1)[..., :8].reshape(3, 16, 2, 4)
    expected = np.stack([(np.roll(q, -tau, axis=1) * q).sum(1) for tau in range(16)], 1)
    np.testing.assert_allclose(ours["corr"], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["pe"][1, 0::2], np.sin(np.exp(np.arange(0, 8, 2) * -(math.log(1e4) / 8))),
                               rtol=1e-6)


def test_autoformer_token_embedding_version_check():
    # torch.__version__ >= '1.5.0' takes the padding=1 branch on both (autograd.__version__ is 2.13.0+chainrule...);
    # atol: the distilling conv's bias, before BatchNorm, gets gradients of rounding noise only (as above)
    run_both(autoformer, weights_of(make_autoformer), version_check=True, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Informer's ProbSparse self-attention (Zhou et al. 2021, zhouhaoyi/Informer2020): sampled keys by advanced
# indexing of an expanded tensor, the top queries by a sparsity measure, context rows written by index
# ----------------------------------------------------------------------------------------------


def make_prob_attention(m, d_model=8, n_heads=2, factor=2):
    torch, nn = m.torch, m.nn

    class ProbMask():
        def __init__(self, B, H, L, index, scores, device="cpu"):
            _mask = torch.ones(L, scores.shape[-1], dtype=torch.bool).to(device).triu(1)
            _mask_ex = _mask[None, None, :].expand(B, H, L, scores.shape[-1])
            indicator = _mask_ex[torch.arange(B)[:, None, None],
                                 torch.arange(H)[None, :, None],
                                 index, :].to(device)
            self._mask = indicator.view(scores.shape).to(device)

        @property
        def mask(self):
            return self._mask

    class ProbAttention(nn.Module):
        def __init__(self, mask_flag=True, factor=5, scale=None, attention_dropout=0.0, output_attention=False):
            super(ProbAttention, self).__init__()
            self.factor = factor
            self.scale = scale
            self.mask_flag = mask_flag
            self.output_attention = output_attention
            self.dropout = nn.Dropout(attention_dropout)
            self.index_sample = None  # the sampled keys: drawn by the caller here, so both libraries share them

        def _prob_QK(self, Q, K, sample_k, n_top):  # n_top: c*ln(L_q)
            # Q [B, H, L, D]
            B, H, L_K, E = K.shape
            _, _, L_Q, _ = Q.shape
            # calculate the sampled Q_K
            K_expand = K.unsqueeze(-3).expand(B, H, L_Q, L_K, E)
            index_sample = self.index_sample  # torch.randint(L_K, (L_Q, sample_k)) in the repository
            K_sample = K_expand[:, :, torch.arange(L_Q).unsqueeze(1), index_sample, :]
            Q_K_sample = torch.matmul(Q.unsqueeze(-2), K_sample.transpose(-2, -1)).squeeze(-2)
            # find the Top_k query with sparisty measurement
            M = Q_K_sample.max(-1)[0] - torch.div(Q_K_sample.sum(-1), L_K)
            M_top = M.topk(n_top, sorted=False)[1]
            # use the reduced Q to calculate Q_K
            Q_reduce = Q[torch.arange(B)[:, None, None],
                         torch.arange(H)[None, :, None],
                         M_top, :]  # factor*ln(L_q)
            Q_K = torch.matmul(Q_reduce, K.transpose(-2, -1))  # factor*ln(L_q)*L_k
            return Q_K, M_top

        def _get_initial_context(self, V, L_Q):
            B, H, L_V, D = V.shape
            if not self.mask_flag:
                V_sum = V.mean(dim=-2)
                contex = V_sum.unsqueeze(-2).expand(B, H, L_Q, V_sum.shape[-1]).clone()
            else:  # use mask
                assert (L_Q == L_V)  # requires that L_Q == L_V, i.e. for self-attention only
                contex = V.cumsum(dim=-2)
            return contex

        def _update_context(self, context_in, V, scores, index, L_Q, attn_mask):
            B, H, L_V, D = V.shape
            if self.mask_flag:
                attn_mask = ProbMask(B, H, L_Q, index, scores, device=V.device)
                scores.masked_fill_(attn_mask.mask, -np.inf)
            attn = torch.softmax(scores, dim=-1)  # nn.Softmax(dim=-1)(scores)
            context_in[torch.arange(B)[:, None, None],
                       torch.arange(H)[None, :, None],
                       index, :] = torch.matmul(attn, V).type_as(context_in)
            if self.output_attention:
                attns = (torch.ones([B, H, L_V, L_V]) / L_V).type_as(attn).to(attn.device)
                attns[torch.arange(B)[:, None, None], torch.arange(H)[None, :, None], index, :] = attn
                return (context_in, attns)
            else:
                return (context_in, None)

        def forward(self, queries, keys, values, attn_mask):
            B, L_Q, H, D = queries.shape
            _, L_K, _, _ = keys.shape
            queries = queries.transpose(2, 1)
            keys = keys.transpose(2, 1)
            values = values.transpose(2, 1)
            U_part = self.factor * np.ceil(np.log(L_K)).astype('int').item()  # c*ln(L_k)
            u = self.factor * np.ceil(np.log(L_Q)).astype('int').item()  # c*ln(L_q)
            U_part = U_part if U_part < L_K else L_K
            u = u if u < L_Q else L_Q
            scores_top, index = self._prob_QK(queries, keys, sample_k=U_part, n_top=u)
            # add scale factor
            scale = self.scale or 1. / math.sqrt(D)
            if scale is not None:
                scores_top = scores_top * scale
            # get the context
            context = self._get_initial_context(values, L_Q)
            # update the context with selected top_k queries
            context, attn = self._update_context(context, values, scores_top, index, L_Q, attn_mask)
            return context.transpose(2, 1).contiguous(), attn

    class AttentionLayer(nn.Module):
        def __init__(self, attention, d_model, n_heads, mix=False):
            super(AttentionLayer, self).__init__()
            d_keys = d_model // n_heads
            d_values = d_model // n_heads
            self.inner_attention = attention
            self.query_projection = nn.Linear(d_model, d_keys * n_heads)
            self.key_projection = nn.Linear(d_model, d_keys * n_heads)
            self.value_projection = nn.Linear(d_model, d_values * n_heads)
            self.out_projection = nn.Linear(d_values * n_heads, d_model)
            self.n_heads = n_heads
            self.mix = mix

        def forward(self, queries, keys, values, attn_mask):
            B, L, _ = queries.shape
            _, S, _ = keys.shape
            H = self.n_heads
            queries = self.query_projection(queries).view(B, L, H, -1)
            keys = self.key_projection(keys).view(B, S, H, -1)
            values = self.value_projection(values).view(B, S, H, -1)
            out, attn = self.inner_attention(queries, keys, values, attn_mask)
            if self.mix:
                out = out.transpose(2, 1).contiguous()
            out = out.view(B, L, -1)
            return self.out_projection(out), attn

    return nn.ModuleList([AttentionLayer(ProbAttention(False, factor), d_model, n_heads),
                          AttentionLayer(ProbAttention(True, factor, output_attention=True), d_model, n_heads,
                                         mix=True)])


def test_informer_prob_sparse_attention():
    def program(m, weights):
        torch, optim = m.torch, m.optim
        layers = load(m, make_prob_attention(m), weights).double()
        rng = np.random.default_rng(28)
        x = torch.from_numpy(rng.standard_normal((2, 12, 8)))
        target = torch.from_numpy(rng.standard_normal((2, 12, 8)))
        for layer in layers:
            layer.inner_attention.index_sample = torch.from_numpy(rng.integers(0, 12, (12, 6)))
        optimizer = optim.Adam(layers.parameters(), lr=1e-3)

        def loss_of(layers):
            enc, _ = layers[0](x, x, x, None)  # encoder: unmasked, mean-of-V initial context
            dec, attn = layers[1](enc, enc, enc, None)  # decoder: masked, cumsum initial context
            return ((dec - target) ** 2).mean()

        losses, grads = train(m, layers, loss_of, optimizer, 3)
        with torch.no_grad():
            _, attn = layers[1](x, x, x, None)
        return {"losses": losses, "grads": grads, "params": params_of(layers), "attn": attn}

    ours, _ = run_both(program, weights_of(make_prob_attention), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["attn"].sum(-1), 1, rtol=1e-7)  # (the unselected rows: float32 1/12s)
    assert (ours["attn"] == np.float32(1 / 12)).all(-1).sum() == 2 * 2 * (12 - 2 * 3)  # 6 queries of 12 selected
