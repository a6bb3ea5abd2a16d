# ruff: noqa: B007, E731, F841, UP008, UP031, UP034  (the programs are kept as their authors wrote them)
"""Audio and signal-processing programs, written by hand as torchaudio's and the speech papers' authors write them,
run as tests/probe12_audio_common.py says. Speech recognition and its front-ends: wav2vec 2.0's conv feature encoder
(``GroupNorm`` over channels and ``GELU``, and the layer-norm variant); a CTC speech model (``Conv1d`` + packed
bidirectional GRU / LSTM + ``log_softmax`` + ``nn.CTCLoss`` over varied lengths, every reduction, ``zero_infinity``)
with greedy decoding (``unique_consecutive``); a Conformer (Transformer-XL's ``rel_shift``, GLU / depthwise
convolution module) trained by CTC + label-smoothed KL; SincNet's band-pass convolution with trainable PCEN."""

import math

import numpy as np
import pytest

from .probe12_audio_common import waveform
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# wav2vec 2.0's convolutional feature encoder (fairseq's ConvFeatureExtractionModel)
# ----------------------------------------------------------------------------------------------


def wav2vec_program(m, audio, mode, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    class Fp32GroupNorm(nn.GroupNorm):
        def forward(self, input):
            output = F.group_norm(input.float(), self.num_groups, self.weight.float() if self.weight is not None
                                  else None, self.bias.float() if self.bias is not None else None, self.eps)
            return output.type_as(input)

    class Fp32LayerNorm(nn.LayerNorm):
        def forward(self, input):
            output = F.layer_norm(input.float(), self.normalized_shape, self.weight.float() if self.weight is not None
                                  else None, self.bias.float() if self.bias is not None else None, self.eps)
            return output.type_as(input)

    class TransposeLast(nn.Module):
        def forward(self, x):
            return x.transpose(-2, -1)

    class ConvFeatureExtractionModel(nn.Module):
        def __init__(self, conv_layers, dropout=0.0, mode="default", conv_bias=False):
            super().__init__()
            assert mode in {"default", "layer_norm"}

            def block(n_in, n_out, k, stride, is_layer_norm=False, is_group_norm=False, conv_bias=False):
                def make_conv():
                    conv = nn.Conv1d(n_in, n_out, k, stride=stride, bias=conv_bias)
                    nn.init.kaiming_normal_(conv.weight)
                    return conv

                assert (is_layer_norm and is_group_norm) is False, "layer norm and group norm are exclusive"
                if is_layer_norm:
                    return nn.Sequential(make_conv(), nn.Dropout(p=dropout),
                                         nn.Sequential(TransposeLast(), Fp32LayerNorm(dim, elementwise_affine=True),
                                                       TransposeLast()), nn.GELU())
                elif is_group_norm:
                    return nn.Sequential(make_conv(), nn.Dropout(p=dropout), Fp32GroupNorm(dim, dim, affine=True),
                                         nn.GELU())
                else:
                    return nn.Sequential(make_conv(), nn.Dropout(p=dropout), nn.GELU())

            in_d = 1
            self.conv_layers = nn.ModuleList()
            for i, cl in enumerate(conv_layers):
                assert len(cl) == 3, "invalid conv definition: " + str(cl)
                (dim, k, stride) = cl
                self.conv_layers.append(block(in_d, dim, k, stride, is_layer_norm=mode == "layer_norm",
                                              is_group_norm=mode == "default" and i == 0, conv_bias=conv_bias))
                in_d = dim

        def forward(self, x):
            # BxT -> BxCxT
            x = x.unsqueeze(1)
            for conv in self.conv_layers:
                x = conv(x)
            return x

    layers = [(16, 10, 5)] + [(16, 3, 2)] * 3 + [(16, 2, 2)]
    make = lambda: nn.ModuleDict({"fe": ConvFeatureExtractionModel(layers, mode=mode, conv_bias=mode == "layer_norm"),
                                  "ln": nn.LayerNorm(16), "proj": nn.Linear(16, 24)})
    if weights is None:
        return make()
    model = load(m, make(), weights)
    wav = torch.tensor(audio)
    # fairseq normalises each waveform to zero mean, unit variance (F.layer_norm over the whole signal)
    wav = F.layer_norm(wav, wav.shape[-1:])
    features = model["fe"](wav)
    features = features.transpose(1, 2)
    features_pen = features.float().pow(2).mean()
    features = model["ln"](features)
    x = model["proj"](features)
    # output lengths by the conv arithmetic, as fairseq's _get_feat_extract_output_lengths
    lengths = torch.tensor([audio.shape[1], audio.shape[1] - 137])
    for _, k, s in layers:
        lengths = torch.floor((lengths - k).float() / s + 1).long()
    padding_mask = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
    x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
    loss = x.pow(2).sum() / (~padding_mask).sum() + 10 * features_pen
    loss.backward()
    return {"x": x, "lengths": lengths, "mask": padding_mask, "loss": loss,
            "grads": {k: v.grad for k, v in model.named_parameters()}}


@pytest.mark.parametrize("mode", ["default", "layer_norm"])
def test_wav2vec_feature_encoder(mode):
    audio = waveform(2, 800)
    weights = weights_of(lambda m: wav2vec_program(m, audio, mode))
    ours, _ = run_both(wav2vec_program, audio, mode, weights, rtol=1e-4, atol=1e-5)
    assert ours["x"].shape == (2, 9, 24)
    np.testing.assert_array_equal(ours["lengths"], [9, 7])  # 800 -> 159 -> 79 -> 39 -> 19 -> 9; 663 -> ... -> 7
    assert (ours["x"][1, 7:] == 0).all() and (ours["x"][1, :7] != 0).all()


# ----------------------------------------------------------------------------------------------
# A small CTC speech model (DeepSpeech 2-like) with greedy decoding
# ----------------------------------------------------------------------------------------------


def ctc_batch(seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((3, 13, 40)).astype(np.float32)  # (N, n_mfcc, frames)
    feat_lengths = np.array([40, 33, 26])
    target_lengths = np.array([5, 7, 2])
    targets = [rng.integers(1, 6, n) for n in target_lengths]
    return feats, feat_lengths, targets, target_lengths


def ctc_program(m, rnn, reduction, weights=None, padded_targets=True):
    torch, nn, F = m.torch, m.nn, m.F

    class SpeechModel(nn.Module):
        def __init__(self, n_feats=13, hidden=12, n_class=6):
            super().__init__()
            self.cnn = nn.Sequential(nn.Conv1d(n_feats, hidden, 3, stride=2, padding=1, bias=False),
                                     nn.BatchNorm1d(hidden), nn.Hardtanh(0, 20, inplace=True))
            RNN = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn]
            self.rnn = RNN(hidden, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.fc = nn.Sequential(nn.LayerNorm(2 * hidden), nn.Linear(2 * hidden, n_class))

        def forward(self, x, lengths):
            x = self.cnn(x)  # (N, C, T')
            lengths = (lengths + 2 * 1 - 3) // 2 + 1
            x = x.transpose(1, 2)  # (N, T', C)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            return F.log_softmax(self.fc(out), dim=-1), lengths

    if weights is None:
        return SpeechModel()
    model = load(m, SpeechModel(), weights)
    feats, feat_lengths, targets, target_lengths = ctc_batch()
    x = torch.tensor(feats)
    lengths = torch.tensor(feat_lengths)
    if padded_targets:
        y = torch.zeros(3, max(target_lengths), dtype=torch.long)
        for i, t in enumerate(targets):
            y[i, : len(t)] = torch.tensor(t)
    else:
        y = torch.cat([torch.tensor(t) for t in targets]).int()
    y_lengths = torch.tensor(target_lengths)
    criterion = nn.CTCLoss(blank=0, reduction=reduction, zero_infinity=True)
    optimizer = m.optim.AdamW(model.parameters(), lr=5e-3)
    history = []
    model.train()
    for step in range(3):
        log_probs, out_lengths = model(x, lengths)
        loss = criterion(log_probs.transpose(0, 1), y, out_lengths, y_lengths)
        optimizer.zero_grad()
        (loss.sum() if reduction == "none" else loss).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 400)
        optimizer.step()
        history.append(loss.detach())
    grads = {k: v.grad.clone() for k, v in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        log_probs, out_lengths = model(x, lengths)
        # a sample whose target is longer than its frames: infinite loss, zeroed by zero_infinity
        short = F.ctc_loss(log_probs.transpose(0, 1)[:, :1], y[:1] if padded_targets else y[:5],
                           torch.tensor([2]), torch.tensor([5]), reduction="none", zero_infinity=False)
        short_zeroed = F.ctc_loss(log_probs.transpose(0, 1)[:, :1], y[:1] if padded_targets else y[:5],
                                  torch.tensor([2]), torch.tensor([5]), reduction="sum", zero_infinity=True)
    decoded = []
    best = log_probs.argmax(-1)
    for i in range(best.shape[0]):
        path = torch.unique_consecutive(best[i, : out_lengths[i]])
        decoded.append(path[path != 0].tolist())
    return {"history": history, "grads": grads, "weights": {k: v.detach() for k, v in model.state_dict().items()},
            "log_probs": log_probs, "out_lengths": out_lengths,
            "short": short, "short_zeroed": short_zeroed, "decoded": decoded}


@pytest.mark.parametrize("rnn,reduction,padded", [("gru", "mean", True), ("lstm", "sum", False),
                                                  ("gru", "none", False), ("lstm", "mean", True)])
def test_ctc_speech_model(rnn, reduction, padded):
    weights = weights_of(lambda m: ctc_program(m, rnn, reduction))
    ours, _ = run_both(ctc_program, rnn, reduction, weights, padded, rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(ours["out_lengths"], [20, 17, 13])
    assert np.isinf(ours["short"]).all() and ours["short_zeroed"] == 0.0
    best = ours["log_probs"].argmax(-1)
    for i, n in enumerate(ours["out_lengths"]):
        path = [k for j, k in enumerate(best[i, :n]) if j == 0 or k != best[i, j - 1]]
        assert ours["decoded"][i] == [k for k in path if k != 0]
    first, last = (np.sum(h) for h in (ours["history"][0], ours["history"][-1]))
    assert last < first


# ----------------------------------------------------------------------------------------------
# A Conformer encoder (Gulati et al. 2020, as ESPnet writes it, shrunk): Conv2d subsampling, relative
# positional self-attention with Transformer-XL's rel_shift (pad, view, slice), the convolution module
# (pointwise, GLU, depthwise, BatchNorm, Swish), macaron feed-forwards; trained by CTC + label-smoothed KL
# ----------------------------------------------------------------------------------------------


def conformer_program(m, feats, feat_lengths, targets, target_lengths, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    class Conv2dSubsampling(nn.Module):
        def __init__(self, idim, odim):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(1, odim, 3, 2), nn.ReLU(), nn.Conv2d(odim, odim, 3, 2), nn.ReLU())
            self.out = nn.Linear(odim * (((idim - 1) // 2 - 1) // 2), odim)

        def forward(self, x, x_mask):
            x = x.unsqueeze(1)  # (b, c, t, f)
            x = self.conv(x)
            b, c, t, f = x.size()
            x = self.out(x.transpose(1, 2).contiguous().view(b, t, c * f))
            return x, x_mask[:, :, :-2:2][:, :, :-2:2]

    class RelPositionalEncoding(nn.Module):
        def __init__(self, d_model, max_len=64):
            super().__init__()
            self.d_model = d_model
            self.xscale = math.sqrt(self.d_model)
            self.pe = None
            self.extend_pe(torch.tensor(0.0).expand(1, max_len))

        def extend_pe(self, x):
            pe_positive = torch.zeros(x.size(1), self.d_model)
            pe_negative = torch.zeros(x.size(1), self.d_model)
            position = torch.arange(0, x.size(1), dtype=torch.float32).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32)
                                 * -(math.log(10000.0) / self.d_model))
            pe_positive[:, 0::2] = torch.sin(position * div_term)
            pe_positive[:, 1::2] = torch.cos(position * div_term)
            pe_negative[:, 0::2] = torch.sin(-1 * position * div_term)
            pe_negative[:, 1::2] = torch.cos(-1 * position * div_term)
            pe_positive = torch.flip(pe_positive, [0]).unsqueeze(0)
            pe_negative = pe_negative[1:].unsqueeze(0)
            pe = torch.cat([pe_positive, pe_negative], dim=1)
            self.pe = pe.to(device=x.device, dtype=x.dtype)

        def forward(self, x):
            x = x * self.xscale
            pos_emb = self.pe[:, self.pe.size(1) // 2 - x.size(1) + 1: self.pe.size(1) // 2 + x.size(1)]
            return x, pos_emb

    class RelPositionMultiHeadedAttention(nn.Module):
        def __init__(self, n_head, n_feat):
            super().__init__()
            self.d_k = n_feat // n_head
            self.h = n_head
            self.linear_q = nn.Linear(n_feat, n_feat)
            self.linear_k = nn.Linear(n_feat, n_feat)
            self.linear_v = nn.Linear(n_feat, n_feat)
            self.linear_out = nn.Linear(n_feat, n_feat)
            self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
            self.pos_bias_u = nn.Parameter(torch.Tensor(self.h, self.d_k))
            self.pos_bias_v = nn.Parameter(torch.Tensor(self.h, self.d_k))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

        def rel_shift(self, x):
            zero_pad = torch.zeros((*x.size()[:3], 1), device=x.device, dtype=x.dtype)
            x_padded = torch.cat([zero_pad, x], dim=-1)
            x_padded = x_padded.view(*x.size()[:2], x.size(3) + 1, x.size(2))
            x = x_padded[:, :, 1:].view_as(x)[:, :, :, : x.size(-1) // 2 + 1]  # only keep the positions from 0 to time2
            return x

        def forward(self, query, key, value, pos_emb, mask):
            n_batch = query.size(0)
            q = self.linear_q(query).view(n_batch, -1, self.h, self.d_k)
            k = self.linear_k(key).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
            v = self.linear_v(value).view(n_batch, -1, self.h, self.d_k).transpose(1, 2)
            n_batch_pos = pos_emb.size(0)
            p = self.linear_pos(pos_emb).view(n_batch_pos, -1, self.h, self.d_k).transpose(1, 2)
            q_with_bias_u = (q + self.pos_bias_u).transpose(1, 2)
            q_with_bias_v = (q + self.pos_bias_v).transpose(1, 2)
            matrix_ac = torch.matmul(q_with_bias_u, k.transpose(-2, -1))
            matrix_bd = torch.matmul(q_with_bias_v, p.transpose(-2, -1))
            matrix_bd = self.rel_shift(matrix_bd)
            scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)
            mask = mask.unsqueeze(1).eq(0)  # (batch, 1, *, time2)
            min_value = torch.finfo(scores.dtype).min
            scores = scores.masked_fill(mask, min_value)
            attn = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
            x = torch.matmul(attn, v)
            x = x.transpose(1, 2).contiguous().view(n_batch, -1, self.h * self.d_k)
            return self.linear_out(x), attn

    class ConvolutionModule(nn.Module):
        def __init__(self, channels, kernel_size):
            super().__init__()
            self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
            self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2,
                                            groups=channels)
            self.norm = nn.BatchNorm1d(channels)
            self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)
            self.activation = nn.SiLU()

        def forward(self, x, mask_pad):
            x = x.transpose(1, 2)  # (batch, channels, time)
            x = x.masked_fill(~mask_pad, 0.0)
            x = self.pointwise_conv1(x)
            x = nn.functional.glu(x, dim=1)
            x = self.depthwise_conv(x)
            x = self.activation(self.norm(x))
            x = self.pointwise_conv2(x)
            return x.transpose(1, 2)

    class FeedForward(nn.Module):
        def __init__(self, d, hidden):
            super().__init__()
            self.w_1, self.w_2, self.activation = nn.Linear(d, hidden), nn.Linear(hidden, d), nn.SiLU()

        def forward(self, x):
            return self.w_2(self.activation(self.w_1(x)))

    class ConformerBlock(nn.Module):
        def __init__(self, d, heads=2, kernel=5):
            super().__init__()
            self.ff_macaron, self.ff = FeedForward(d, 2 * d), FeedForward(d, 2 * d)
            self.attn = RelPositionMultiHeadedAttention(heads, d)
            self.conv = ConvolutionModule(d, kernel)
            self.norm_ff_macaron, self.norm_mha, self.norm_conv, self.norm_ff, self.norm_final = (
                nn.LayerNorm(d, eps=1e-12) for _ in range(5))

        def forward(self, x, pos_emb, mask):
            x = x + 0.5 * self.ff_macaron(self.norm_ff_macaron(x))
            xn = self.norm_mha(x)
            x = x + self.attn(xn, xn, xn, pos_emb, mask)[0]
            x = x + self.conv(self.norm_conv(x), mask)
            x = x + 0.5 * self.ff(self.norm_ff(x))
            return self.norm_final(x)

    class Conformer(nn.Module):
        def __init__(self, idim=20, d=16, vocab=7, blocks=2):
            super().__init__()
            self.embed = Conv2dSubsampling(idim, d)
            self.pos_enc = RelPositionalEncoding(d)
            self.blocks = nn.ModuleList([ConformerBlock(d) for _ in range(blocks)])
            self.ctc_lo = nn.Linear(d, vocab)

        def forward(self, xs, ilens):
            masks = (torch.arange(xs.size(1))[None, :] < ilens[:, None]).unsqueeze(1)  # (B, 1, T)
            xs, masks = self.embed(xs, masks)
            xs, pos_emb = self.pos_enc(xs)
            for block in self.blocks:
                xs = block(xs, pos_emb, masks)
            return xs, masks.squeeze(1).sum(1)

    if weights is None:
        return Conformer()
    model = load(m, Conformer(), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    xs, ilens = torch.tensor(feats), torch.tensor(feat_lengths)
    ys, olens = torch.tensor(targets), torch.tensor(target_lengths)
    history = []
    for step in range(2):
        hs, hlens = model(xs, ilens)
        logits = model.ctc_lo(hs)
        loss_ctc = F.ctc_loss(logits.log_softmax(2).transpose(0, 1), ys, hlens, olens, reduction="sum",
                              zero_infinity=True) / xs.size(0)
        # a label-smoothed KL on the frame posteriors' average (ESPnet's LabelSmoothingLoss, on the CTC head)
        size, smoothing, padding_idx = logits.size(-1), 0.1, -1
        frame_targets = ys[:, :1].expand(-1, logits.size(1))
        true_dist = logits.clone().detach().fill_(smoothing / (size - 1))
        ignore = torch.arange(logits.size(1))[None, :] >= hlens[:, None]
        target = frame_targets.masked_fill(ignore, 0)
        true_dist.scatter_(2, target.unsqueeze(2), 1 - smoothing)
        kl = nn.KLDivLoss(reduction="none")(torch.log_softmax(logits, dim=-1), true_dist)
        loss_att = kl.masked_fill(ignore.unsqueeze(2), 0).sum() / xs.size(0)
        loss = 0.3 * loss_ctc + 0.7 * loss_att
        optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        history.append([loss_ctc.item(), loss_att.item(), grad_norm.item()])
    return {"history": history, "hlens": hlens, "hs": hs, "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_conformer_ctc_training():
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((2, 40, 20)).astype(np.float32)
    feat_lengths = np.array([40, 31])
    targets = np.array([[1, 3, 3, 5], [2, 6, 0, 0]])
    target_lengths = np.array([4, 2])
    weights = weights_of(lambda m: conformer_program(m, feats, feat_lengths, targets, target_lengths))
    ours, _ = run_both(conformer_program, feats, feat_lengths, targets, target_lengths, weights, rtol=2e-4,
                       atol=2e-5)
    np.testing.assert_array_equal(ours["hlens"], [9, 8])  # the mask sliced [:-2:2] twice: 40 -> 19 -> 9; 31 -> 16 -> 8
    assert ours["hs"].shape == (2, 9, 16)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# Learnable front-ends: SincNet's band-pass convolution (Ravanelli & Bengio 2018, SincConv_fast as
# written) and trainable PCEN (per-channel energy normalisation, its IIR smoother stepped in a loop)
# ----------------------------------------------------------------------------------------------


def sincnet_pcen_program(m, audio, labels, weights=None, legacy_constructor=True):
    torch, nn, F = m.torch, m.nn, m.F
    # SincConv_fast makes its parameters by torch.Tensor(float64 array); speechbrain's port by .float()
    Tensor = torch.Tensor if legacy_constructor else (lambda array: torch.from_numpy(array).float())

    class SincConv_fast(nn.Module):
        @staticmethod
        def to_mel(hz):
            return 2595 * np.log10(1 + hz / 700)

        @staticmethod
        def to_hz(mel):
            return 700 * (10 ** (mel / 2595) - 1)

        def __init__(self, out_channels, kernel_size, sample_rate=16000, in_channels=1, stride=1, padding=0,
                     dilation=1, bias=False, groups=1, min_low_hz=50, min_band_hz=50):
            super(SincConv_fast, self).__init__()
            if in_channels != 1:
                msg = "SincConv only support one input channel (here, in_channels = {%i})" % (in_channels)
                raise ValueError(msg)
            self.out_channels = out_channels
            self.kernel_size = kernel_size
            # Forcing the filters to be odd (i.e, perfectly symmetrics)
            if kernel_size % 2 == 0:
                self.kernel_size = self.kernel_size + 1
            self.stride, self.padding, self.dilation = stride, padding, dilation
            self.sample_rate = sample_rate
            self.min_low_hz = min_low_hz
            self.min_band_hz = min_band_hz
            # initialize filterbanks such that they are equally spaced in Mel scale
            low_hz = 30
            high_hz = self.sample_rate / 2 - (self.min_low_hz + self.min_band_hz)
            mel = np.linspace(self.to_mel(low_hz), self.to_mel(high_hz), self.out_channels + 1)
            hz = self.to_hz(mel)
            # filter lower frequency (out_channels, 1)
            self.low_hz_ = nn.Parameter(Tensor(hz[:-1]).view(-1, 1))
            # filter frequency band (out_channels, 1)
            self.band_hz_ = nn.Parameter(Tensor(np.diff(hz)).view(-1, 1))
            # Hamming window
            n_lin = torch.linspace(0, (self.kernel_size / 2) - 1, steps=int((self.kernel_size / 2)))
            self.window_ = 0.54 - 0.46 * torch.cos(2 * math.pi * n_lin / self.kernel_size)
            n = (self.kernel_size - 1) / 2.0
            self.n_ = 2 * math.pi * torch.arange(-n, 0).view(1, -1) / self.sample_rate

        def forward(self, waveforms):
            self.n_ = self.n_.to(waveforms.device)
            self.window_ = self.window_.to(waveforms.device)
            low = self.min_low_hz + torch.abs(self.low_hz_)
            high = torch.clamp(low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, self.sample_rate / 2)
            band = (high - low)[:, 0]
            f_times_t_low = torch.matmul(low, self.n_)
            f_times_t_high = torch.matmul(high, self.n_)
            band_pass_left = ((torch.sin(f_times_t_high) - torch.sin(f_times_t_low)) / (self.n_ / 2)) * self.window_
            band_pass_center = 2 * band.view(-1, 1)
            band_pass_right = torch.flip(band_pass_left, dims=[1])
            band_pass = torch.cat([band_pass_left, band_pass_center, band_pass_right], dim=1)
            band_pass = band_pass / (2 * band[:, None])
            self.filters = (band_pass).view(self.out_channels, 1, self.kernel_size)
            return F.conv1d(waveforms, self.filters, stride=self.stride, padding=self.padding,
                            dilation=self.dilation, bias=None, groups=1)

    class PCEN(nn.Module):
        def __init__(self, n_bands, s=0.04, alpha=0.96, delta=2.0, r=0.5, eps=1e-6):
            super().__init__()
            self.log_s = nn.Parameter(torch.full((n_bands, 1), math.log(s)))
            self.log_alpha = nn.Parameter(torch.full((n_bands, 1), math.log(alpha)))
            self.log_delta = nn.Parameter(torch.full((n_bands, 1), math.log(delta)))
            self.log_r = nn.Parameter(torch.full((n_bands, 1), math.log(r)))
            self.eps = eps

        def forward(self, E):  # (batch, bands, time)
            s = self.log_s.exp().squeeze(-1)
            M = [E[..., 0]]
            for t in range(1, E.shape[-1]):
                M.append((1 - s) * M[-1] + s * E[..., t])
            M = torch.stack(M, dim=-1)
            alpha, delta, r = self.log_alpha.exp(), self.log_delta.exp(), self.log_r.exp()
            return (E / (self.eps + M) ** alpha + delta) ** r - delta ** r

    class Frontend(nn.Module):
        def __init__(self, bands=8, classes=3):
            super().__init__()
            self.sinc = SincConv_fast(bands, 32, sample_rate=8000, stride=2)
            self.pool = nn.AvgPool1d(8, 8)
            self.pcen = PCEN(bands)
            self.head = nn.Linear(bands, classes)

        def forward(self, x):
            energy = self.pool(self.sinc(x.unsqueeze(1)) ** 2)  # (batch, bands, frames)
            feats = self.pcen(energy)
            return self.head(feats.mean(-1)), feats

    if weights is None:
        return Frontend()
    model = load(m, Frontend(), weights)
    optimizer = m.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.95, eps=1e-8)
    x, y = torch.tensor(audio), torch.tensor(labels)
    history = []
    for step in range(3):
        logits, feats = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "feats": feats, "filters": model.sinc.filters,
            "grads": {k: v.grad for k, v in model.named_parameters()}}


@pytest.mark.parametrize("legacy_constructor", [
    pytest.param(True, marks=pytest.mark.xfail(strict=True, raises=RuntimeError, reason=(
        "core (autograd/tensor.py): torch.Tensor(a float64 NumPy array) keeps float64 here (README's deliberate "
        "'Tensor(array)' rule) where PyTorch's legacy constructor makes float32, so SincConv_fast's band "
        "parameters are float64 and its matmul with the float32 time grid is refused"))),
    False])
def test_sincnet_and_pcen_frontend(legacy_constructor):
    audio = waveform(3, 400, seed=4)
    labels = np.array([0, 2, 1])
    weights = weights_of(lambda m: sincnet_pcen_program(m, audio, labels, legacy_constructor=legacy_constructor))
    ours, _ = run_both(sincnet_pcen_program, audio, labels, weights, legacy_constructor=legacy_constructor,
                       rtol=2e-4, atol=2e-6)
    assert ours["filters"].shape == (8, 1, 33)
    np.testing.assert_allclose(ours["filters"][:, 0, :16], ours["filters"][:, 0, :16:-1], rtol=1e-6)  # symmetric
    assert ours["history"][-1] < ours["history"][0]
