# ruff: noqa: B006, B007, B023, E712, E731, E741, F841, UP004, UP008, UP031, UP034  (the programs are kept as their authors wrote them)
"""Audio and signal-processing programs (see tests/pytorch_programs.py), written by hand as torchaudio's
and the speech papers' authors write them, run on chainrule and on PyTorch from the same weights and data,
comparing values and gradients, and checked against NumPy by hand.

STFT/ISTFT round trips (hann/hamming windows, center, normalized, onesided, ``length=``) differentiated
through; a mel filterbank built by hand (torchaudio's ``melscale_fbanks``) on a power spectrogram with
log / dB compression (``amplitude_to_DB``'s ``top_db``), MFCCs by a DCT-II matrix and deltas by a grouped
``conv1d``; the multi-resolution STFT loss of Parallel WaveGAN training a small generator; a WaveNet
(dilated causal ``Conv1d`` by left ``F.pad``, gated tanh·sigmoid units, residual and skip connections,
local conditioning) on mu-law classes (``sign``, ``log1p``); wav2vec 2.0's conv feature encoder
(``GroupNorm`` over channels and ``GELU``, and the layer-norm variant); a CTC speech model (``Conv1d`` +
packed bidirectional GRU / LSTM + ``log_softmax`` + ``nn.CTCLoss`` over varied lengths, every reduction,
``zero_infinity``) with greedy decoding (``unique_consecutive``); SpecAugment's masks (``masked_fill``);
``torch.fft`` filters (``rfft``/``irfft``/``fftfreq``/``rfftfreq``/``fftshift``, the analytic signal) and
FFT convolution against ``F.conv1d``; pre-emphasis, ``F.pad`` reflect / replicate / circular on 1-D
signals, framing by ``unfold``; overlap-add by ``F.fold`` against ``istft``; Griffin-Lim; HiFi-GAN
(``weight_norm``, ``spectral_norm``, transposed convolutions, the period and scale discriminators and
their losses); Conv-TasNet trained by permutation-invariant SI-SNR; torchaudio's phase vocoder (``F.pad``
of a complex spectrogram, ``polar``) and sinc resampling; a Conformer (Transformer-XL's ``rel_shift``,
GLU / depthwise convolution module) trained by CTC + label-smoothed KL; Tacotron 2's decoder
(location-sensitive attention masked through ``.data.masked_fill_``, ``LSTMCell`` loop, postnet);
DDSP's harmonic-plus-noise synthesiser; SincNet's band-pass convolution with trainable PCEN; and voice
activity post-processing on quantised levels, where ``kthvalue``, ``topk`` and ``mode`` select among ties."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def waveform(n=2, length=800, seed=0):
    """Chirps with noise: a little speech-like energy spread over the band."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 8000.0
    x = np.stack([np.sin(2 * np.pi * (200 + 300 * i + 1500 * t) * t) for i in range(n)])
    return (0.5 * x + 0.05 * rng.standard_normal((n, length))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# STFT / ISTFT round trips, differentiated
# ----------------------------------------------------------------------------------------------


def stft_round_trips(m, x):
    torch = m.torch
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = {}
    configs = [
        dict(n_fft=64, hop_length=16, window=torch.hann_window(64, dtype=torch.float64)),
        dict(n_fft=64, hop_length=32, win_length=48, window=torch.hamming_window(48, dtype=torch.float64)),
        dict(n_fft=32, hop_length=8, window=torch.hann_window(32, dtype=torch.float64), normalized=True),
        dict(n_fft=32, hop_length=8, window=torch.hann_window(32, periodic=False, dtype=torch.float64) + 0.01,
             center=False),
        dict(n_fft=32, hop_length=8, window=torch.hann_window(32, dtype=torch.float64), onesided=False),
        dict(n_fft=50, hop_length=10, window=torch.hamming_window(50, dtype=torch.float64), pad_mode="constant"),
    ]
    total = 0
    for i, c in enumerate(configs):
        pad_mode = c.pop("pad_mode", "reflect")
        spec = torch.stft(x, return_complex=True, pad_mode=pad_mode, **c)
        y = torch.istft(spec, length=x.shape[-1], **c)
        out[f"spec{i}"] = torch.view_as_real(spec)
        out[f"y{i}"] = y
        total = total + (y * torch.cos(torch.arange(x.shape[-1], dtype=torch.float64) / 7)).sum() \
            + spec.abs().pow(2).mean()
    total.backward()
    out["grad"] = x.grad
    return out


def test_stft_istft_round_trips():
    x = waveform(2, 400).astype(np.float64)
    ours, _ = run_both(stft_round_trips, x, rtol=1e-9, atol=1e-10)
    for i in range(6):
        if i == 3:  # center=False: the last samples fall outside every frame
            np.testing.assert_allclose(ours["y3"][:, :384], x[:, :384], atol=1e-10)
        else:
            np.testing.assert_allclose(ours[f"y{i}"], x, atol=1e-10)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (32, 32)), mode="reflect"), 64, -1)[:, ::16]
    by_hand = np.fft.rfft(frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)), axis=-1)
    np.testing.assert_allclose(ours["spec0"][..., 0] + 1j * ours["spec0"][..., 1], by_hand.transpose(0, 2, 1),
                               atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Mel spectrogram and MFCC (torchaudio.functional.melscale_fbanks and create_dct, by hand)
# ----------------------------------------------------------------------------------------------


def hz_to_mel(freq):
    return 2595.0 * math.log10(1.0 + (freq / 700.0))


def mfcc_program(m, x):
    torch, F = m.torch, m.F

    def melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm=None):
        all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
        m_min = hz_to_mel(f_min)
        m_max = hz_to_mel(f_max)
        m_pts = torch.linspace(m_min, m_max, n_mels + 2)
        f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
        f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1)
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
        zero = torch.zeros(1)
        down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]  # (n_freqs, n_mels)
        up_slopes = slopes[:, 2:] / f_diff[1:]  # (n_freqs, n_mels)
        fb = torch.max(zero, torch.min(down_slopes, up_slopes))
        if norm is not None and norm == "slaney":
            enorm = 2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels])
            fb *= enorm.unsqueeze(0)
        return fb

    def create_dct(n_mfcc, n_mels, norm):
        n = torch.arange(float(n_mels))
        k = torch.arange(float(n_mfcc)).unsqueeze(1)
        dct = torch.cos(math.pi / float(n_mels) * (n + 0.5) * k)  # size (n_mfcc, n_mels)
        if norm is None:
            dct *= 2.0
        else:
            dct[0] *= 1.0 / math.sqrt(2.0)
            dct *= math.sqrt(2.0 / float(n_mels))
        return dct.t()

    def amplitude_to_DB(x, multiplier, amin, db_multiplier, top_db=None):
        x_db = multiplier * torch.log10(torch.clamp(x, min=amin))
        x_db -= multiplier * db_multiplier
        if top_db is not None:
            shape = x_db.size()
            packed_channels = shape[-3] if x_db.dim() > 2 else 1
            x_db = x_db.reshape(-1, packed_channels, shape[-2], shape[-1])
            x_db = torch.max(x_db, (x_db.amax(dim=(-3, -2, -1)) - top_db).view(-1, 1, 1, 1))
            x_db = x_db.reshape(shape)
        return x_db

    waveform = torch.tensor(x, requires_grad=True)
    n_fft, hop, n_mels, n_mfcc, sr = 128, 32, 24, 13, 8000
    window = torch.hann_window(n_fft)
    spec_f = torch.stft(waveform, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                        pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = spec_f.abs().pow(2.0)
    fb = melscale_fbanks(n_fft // 2 + 1, 0.0, sr / 2.0, n_mels, sr)
    fb_slaney = melscale_fbanks(n_fft // 2 + 1, 20.0, 3800.0, n_mels, sr, norm="slaney")
    mel = torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)
    mel_slaney = torch.matmul(spec.transpose(-1, -2), fb_slaney).transpose(-1, -2)
    log_mel = torch.log(mel + 1e-6)
    mel_db = amplitude_to_DB(mel, 10.0, 1e-10, 0.0, top_db=80.0)
    dct_mat = create_dct(n_mfcc, n_mels, "ortho")
    mfcc = torch.matmul(mel_db.transpose(-1, -2), dct_mat).transpose(-1, -2)
    # cepstral mean and variance normalisation, then deltas by a conv1d as torchaudio.functional.compute_deltas
    cmvn = (mfcc - mfcc.mean(-1, keepdim=True)) / (mfcc.std(-1, keepdim=True) + 1e-5)
    win = 2
    denom = 2 * sum(i ** 2 for i in range(1, win + 1))
    specgram = F.pad(cmvn.reshape(1, -1, cmvn.shape[-1]), (win, win), mode="replicate")
    kernel = torch.arange(-win, win + 1, 1, dtype=specgram.dtype).repeat(specgram.shape[1], 1, 1)
    deltas = F.conv1d(specgram, kernel, groups=specgram.shape[1]) / denom
    deltas = deltas.reshape(cmvn.shape)
    loss = log_mel.mean() + 0.01 * mel_db.mean() + (mfcc[:, 1:] ** 2).mean() * 1e-3 + deltas.pow(2).mean() \
        + mel_slaney.sqrt().mean()
    loss.backward()
    return {"fb": fb, "fb_slaney": fb_slaney, "mel": mel, "log_mel": log_mel, "mel_db": mel_db, "dct": dct_mat,
            "mfcc": mfcc, "deltas": deltas, "loss": loss, "grad": waveform.grad}


def test_mel_spectrogram_and_mfcc():
    x = waveform(2, 800)
    ours, _ = run_both(mfcc_program, x, rtol=2e-4, atol=2e-5)
    fb = ours["fb"]
    assert fb.shape == (65, 24) and (fb >= 0).all() and fb.max() <= 1.0 + 1e-6
    dct = ours["dct"].astype(np.float64)
    np.testing.assert_allclose(dct.T @ dct, np.eye(13), atol=1e-5)  # orthonormal columns
    assert (ours["mel_db"] >= ours["mel_db"].max(axis=(-2, -1), keepdims=True) - 80.0 - 1e-4).all()
    spec = np.abs(np.fft.rfft(np.lib.stride_tricks.sliding_window_view(
        np.pad(x.astype(np.float64), ((0, 0), (64, 64)), mode="reflect"), 128, -1)[:, ::32]
        * np.hanning(129)[:-1], axis=-1)) ** 2
    np.testing.assert_allclose(ours["mel"], (spec @ fb.astype(np.float64)).transpose(0, 2, 1), rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Multi-resolution STFT loss (Parallel WaveGAN, Yamamoto et al. 2020), training a small generator
# ----------------------------------------------------------------------------------------------


def mr_stft_program(m, target, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    def stft(x, fft_size, hop_size, win_length, window):
        x_stft = torch.stft(x, fft_size, hop_size, win_length, window, return_complex=True)
        real = x_stft.real
        imag = x_stft.imag
        # NOTE(kan-bayashi): clamp is needed to avoid nan or inf
        return torch.sqrt(torch.clamp(real ** 2 + imag ** 2, min=1e-7)).transpose(2, 1)

    class SpectralConvergenceLoss(nn.Module):
        def forward(self, x_mag, y_mag):
            return torch.norm(y_mag - x_mag, p="fro") / torch.norm(y_mag, p="fro")

    class LogSTFTMagnitudeLoss(nn.Module):
        def forward(self, x_mag, y_mag):
            return F.l1_loss(torch.log(y_mag), torch.log(x_mag))

    class STFTLoss(nn.Module):
        def __init__(self, fft_size=1024, shift_size=120, win_length=600, window="hann_window"):
            super().__init__()
            self.fft_size = fft_size
            self.shift_size = shift_size
            self.win_length = win_length
            self.register_buffer("window", getattr(torch, window)(win_length))
            self.spectral_convergence_loss = SpectralConvergenceLoss()
            self.log_stft_magnitude_loss = LogSTFTMagnitudeLoss()

        def forward(self, x, y):
            x_mag = stft(x, self.fft_size, self.shift_size, self.win_length, self.window)
            y_mag = stft(y, self.fft_size, self.shift_size, self.win_length, self.window)
            sc_loss = self.spectral_convergence_loss(x_mag, y_mag)
            mag_loss = self.log_stft_magnitude_loss(x_mag, y_mag)
            return sc_loss, mag_loss

    class MultiResolutionSTFTLoss(nn.Module):
        def __init__(self, fft_sizes=[128, 64, 32], hop_sizes=[32, 16, 8], win_lengths=[96, 48, 24],
                     window="hann_window"):
            super().__init__()
            assert len(fft_sizes) == len(hop_sizes) == len(win_lengths)
            self.stft_losses = nn.ModuleList()
            for fs, ss, wl in zip(fft_sizes, hop_sizes, win_lengths):
                self.stft_losses += [STFTLoss(fs, ss, wl, window)]

        def forward(self, x, y):
            if len(x.shape) == 3:
                x = x.view(-1, x.size(2))  # (B, C, T) -> (B x C, T)
                y = y.view(-1, y.size(2))
            sc_loss = 0.0
            mag_loss = 0.0
            for f in self.stft_losses:
                sc_l, mag_l = f(x, y)
                sc_loss += sc_l
                mag_loss += mag_l
            sc_loss /= len(self.stft_losses)
            mag_loss /= len(self.stft_losses)
            return sc_loss, mag_loss

    make = lambda: nn.Sequential(nn.Conv1d(1, 8, 7, padding=3), nn.LeakyReLU(0.2),
                                 nn.Conv1d(8, 8, 5, padding=4, dilation=2), nn.LeakyReLU(0.2),
                                 nn.Conv1d(8, 1, 7, padding=3), nn.Tanh())
    if weights is None:
        return make()
    generator = load(m, make(), weights).double()  # float64: float32 rounding is amplified through log |X|
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the windows too (PyTorch's float32 cos differs from NumPy's by an ulp)
    criterion = MultiResolutionSTFTLoss(window="hamming_window")
    torch.set_default_dtype(previous)
    optimizer = m.optim.RAdam(generator.parameters(), lr=1e-3)
    y = torch.tensor(target).unsqueeze(1)
    noise = torch.tensor(np.random.default_rng(1).standard_normal(target.shape).astype(target.dtype)).unsqueeze(1)
    history = []
    for step in range(4):
        y_ = generator(noise)
        sc_loss, mag_loss = criterion(y_, y)
        loss = sc_loss + mag_loss
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), 10.0)
        optimizer.step()
        history.append((sc_loss.item(), mag_loss.item()))
    return {"history": history, "weights": [p.detach() for p in generator.parameters()],
            "grads": [p.grad for p in generator.parameters()]}


def test_multi_resolution_stft_loss_trains_a_generator():
    target = waveform(2, 512)
    weights = weights_of(lambda m: mr_stft_program(m, target))
    ours, _ = run_both(mr_stft_program, target.astype(np.float64), weights, rtol=1e-8, atol=1e-10)
    assert all(np.isfinite(h).all() for h in ours["history"])
    assert ours["history"][-1][1] < ours["history"][0][1]


# ----------------------------------------------------------------------------------------------
# WaveNet (van den Oord et al. 2016) on mu-law classes
# ----------------------------------------------------------------------------------------------


def mu_law_encoding(torch, x, quantization_channels):
    mu = quantization_channels - 1.0
    if not x.is_floating_point():
        x = x.to(torch.float)
    mu = torch.tensor(mu, dtype=x.dtype)
    x_mu = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / torch.log1p(mu)
    x_mu = ((x_mu + 1) / 2 * mu + 0.5).to(torch.int64)
    return x_mu


def mu_law_decoding(torch, x_mu, quantization_channels):
    mu = quantization_channels - 1.0
    if not x_mu.is_floating_point():
        x_mu = x_mu.to(torch.float)
    mu = torch.tensor(mu, dtype=x_mu.dtype)
    x = ((x_mu) / mu) * 2 - 1.0
    x = torch.sign(x) * (torch.exp(torch.abs(x) * torch.log1p(mu)) - 1.0) / mu
    return x


def wavenet_program(m, audio, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    class CausalConv1d(nn.Conv1d):
        def __init__(self, in_channels, out_channels, kernel_size, dilation=1, **kwargs):
            super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, **kwargs)
            self.left_padding = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left_padding, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, residual_channels, gate_channels, skip_channels, dilation, cond_channels):
            super().__init__()
            self.dilated = CausalConv1d(residual_channels, gate_channels, 2, dilation=dilation)
            self.cond = nn.Conv1d(cond_channels, gate_channels, 1, bias=False)
            self.res = nn.Conv1d(gate_channels // 2, residual_channels, 1)
            self.skip = nn.Conv1d(gate_channels // 2, skip_channels, 1)

        def forward(self, x, c):
            h = self.dilated(x) + self.cond(c)
            xa, xb = h.split(h.size(1) // 2, dim=1)
            z = torch.tanh(xa) * torch.sigmoid(xb)
            s = self.skip(z)
            x = (self.res(z) + x) * math.sqrt(0.5)
            return x, s

    class WaveNet(nn.Module):
        def __init__(self, classes=32, residual=8, gate=16, skip=12, layers=6, stacks=2, cond_channels=4):
            super().__init__()
            self.embed = nn.Embedding(classes, residual)
            self.first = CausalConv1d(residual, residual, 2)
            self.blocks = nn.ModuleList([ResidualBlock(residual, gate, skip, 2 ** (i % (layers // stacks)),
                                                       cond_channels) for i in range(layers)])
            self.last = nn.Sequential(nn.ReLU(inplace=True), nn.Conv1d(skip, skip, 1), nn.ReLU(inplace=True),
                                      nn.Conv1d(skip, classes, 1))

        def receptive_field(self):
            return sum(b.dilated.left_padding for b in self.blocks) + 2

        def forward(self, x, c):
            x = self.first(self.embed(x).transpose(1, 2))
            skips = 0
            for block in self.blocks:
                x, h = block(x, c)
                skips = skips + h
            skips *= math.sqrt(1.0 / len(self.blocks))
            return self.last(skips)

    if weights is None:
        return WaveNet()
    model = load(m, WaveNet(), weights)
    x = torch.tensor(audio)
    q = mu_law_encoding(torch, x, 32)
    decoded = mu_law_decoding(torch, q, 32)
    # local conditioning: frame features upsampled to the sample rate by repeat_interleave
    frames = torch.tensor(np.random.default_rng(2).standard_normal((x.shape[0], 4, x.shape[1] // 16)),
                          dtype=torch.float32)
    c = torch.repeat_interleave(frames, 16, dim=2)
    optimizer = m.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for step in range(3):
        logits = model(q[:, :-1], c[:, :, 1:])
        loss = F.cross_entropy(logits, q[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        history.append(loss.item())
        optimizer.step()
    # causality: changing a later sample must not change an earlier output
    with torch.no_grad():
        q2 = q.clone()
        q2[:, 100] = (q2[:, 100] + 7) % 32
        out1, out2 = model(q, c), model(q2, c)
        leak = (out1[:, :, :100] - out2[:, :, :100]).abs().max()
        changed = (out1[:, :, 100:] - out2[:, :, 100:]).abs().amax(1)
    # sampling one step from the softmax, deterministically by the argmax
    probs = F.softmax(logits[:, :, -1], dim=1)
    return {"q": q, "decoded": decoded, "history": history, "grads": [p.grad for p in model.parameters()],
            "probs": probs, "leak": leak, "changed": changed, "rf": model.receptive_field(),
            "next": probs.argmax(1)}


def test_wavenet_on_mu_law_classes():
    audio = waveform(2, 160)
    weights = weights_of(lambda m: wavenet_program(m, audio))
    ours, _ = run_both(wavenet_program, audio, weights, rtol=2e-4, atol=2e-6)
    mu = 31.0
    by_hand = ((np.sign(audio) * np.log1p(mu * np.abs(audio)) / np.log1p(mu) + 1) / 2 * mu + 0.5).astype(np.int64)
    np.testing.assert_array_equal(ours["q"], by_hand)
    np.testing.assert_allclose(ours["decoded"], audio, atol=0.08)  # quantisation error of 32 levels
    assert ours["leak"] == 0.0
    assert (ours["changed"][:, 0] > 0).all()  # sample 100's own output depends on it
    assert ours["rf"] == 1 + 2 * (1 + 2 + 4) + 1
    assert ours["history"][-1] < ours["history"][0]


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
# SpecAugment (Park et al. 2019): time and frequency masks, as torchaudio's mask_along_axis(_iid)
# ----------------------------------------------------------------------------------------------


def specaugment_program(m, spec, draws):
    torch = m.torch

    def mask_along_axis_iid(specgrams, mask_param, mask_value, axis, value, min_value):
        # value / min_value stand for torch.rand draws, given so both libraries mask the same bins
        value = value * mask_param
        min_value = min_value * (specgrams.size(axis) - value)
        mask_start = min_value.long()[..., None, None]
        mask_end = (min_value.long() + value.long())[..., None, None]
        mask = torch.arange(0, specgrams.size(axis), device=specgrams.device, dtype=specgrams.dtype)
        # Per batch example masking
        specgrams = specgrams.transpose(axis, -1)
        specgrams = specgrams.masked_fill((mask >= mask_start) & (mask < mask_end), mask_value)
        specgrams = specgrams.transpose(axis, -1)
        return specgrams

    def time_warp_free_mask(specgram, mask_param, mask_value, axis, value, min_value):
        mask_start = (min_value * (specgram.size(axis) - value * mask_param)).long()
        mask_end = mask_start + (value * mask_param).long()
        mask = torch.arange(0, specgram.shape[axis], device=specgram.device, dtype=specgram.dtype)
        mask = (mask >= mask_start) & (mask < mask_end)
        if axis == 1:
            mask = mask.unsqueeze(-1)
        specgram = specgram.masked_fill(mask, mask_value)
        return specgram

    x = torch.tensor(spec, requires_grad=True)  # (batch, channel, freq, time)
    v = torch.tensor(draws)
    y = mask_along_axis_iid(x, 6, 0.0, 2, v[:, :, 0], v[:, :, 1])  # frequency mask
    y = mask_along_axis_iid(y, 10, y.mean(), 3, v[:, :, 2], v[:, :, 3])  # time mask, filled with the mean
    single = time_warp_free_mask(x[0], 8, -1.0, 2, v[0, 0, 2], v[0, 0, 3])
    single = time_warp_free_mask(single, 4, 0.0, 1, v[0, 0, 0], v[0, 0, 1])
    loss = (y * torch.linspace(0, 1, y.shape[-1])).sum() + single.pow(2).sum()
    loss.backward()
    return {"y": y, "single": single, "grad": x.grad}


def test_specaugment_masks():
    rng = np.random.default_rng(3)
    spec = rng.standard_normal((2, 2, 16, 30)).astype(np.float32)
    draws = rng.uniform(0.2, 1, (2, 2, 4)).astype(np.float32)
    ours, _ = run_both(specaugment_program, spec, draws)
    assert ours["y"][0, 0, 0, 0] == spec[0, 0, 0, 0]
    for b in range(2):
        for c in range(2):
            f0 = int(draws[b, c, 1] * (16 - draws[b, c, 0] * 6))
            f1 = f0 + int(draws[b, c, 0] * 6)
            t0 = int(draws[b, c, 3] * (30 - draws[b, c, 2] * 10))
            t1 = t0 + int(draws[b, c, 2] * 10)
            outside = np.r_[0:t0, t1:30]  # (the time mask's fill overwrites the frequency mask)
            y, kept = ours["y"][b, c][:, outside], spec[b, c][:, outside]
            assert (y[f0:f1] == 0).all() and f1 > f0
            assert (y[np.r_[0:f0, f1:16]] == kept[np.r_[0:f0, f1:16]]).all()
            assert np.allclose(ours["y"][b, c, :, t0:t1], ours["y"][b, c, :, t0:t1].flat[0])
            if b == 1:  # (the first example feeds `single` too)
                assert (ours["grad"][b, c, f0:f1] == 0).all()  # frequency masked: the time mask's mean sees zeros


# ----------------------------------------------------------------------------------------------
# torch.fft filters: a learnable frequency response, FFT convolution against F.conv1d, the analytic signal
# ----------------------------------------------------------------------------------------------


def fft_filters_program(m, x, h):
    torch, F = m.torch, m.F
    sr = 8000
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    n = x.shape[-1]
    # an ideal band-pass by masking rfft bins, with a learnable gain per bin
    X = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(n, d=1.0 / sr)
    band = ((freqs >= 300) & (freqs <= 1200)).to(x.dtype)
    gain = torch.linspace(0.5, 1.5, X.shape[-1], dtype=torch.float64, requires_grad=True)
    y = torch.fft.irfft(X * band * gain, n=n)
    # linear convolution by zero-padded FFTs against F.conv1d (which correlates: flip the kernel)
    L = n + h.shape[-1] - 1
    n_fft = 1 << (L - 1).bit_length()
    conv_fft = torch.fft.irfft(torch.fft.rfft(x, n=n_fft) * torch.fft.rfft(h, n=n_fft), n=n_fft)[..., :L]
    conv_direct = F.conv1d(F.pad(x.unsqueeze(1), (h.shape[-1] - 1, h.shape[-1] - 1)),
                           h.flip(-1).view(1, 1, -1)).squeeze(1)
    # the analytic signal (scipy.signal.hilbert): zero the negative frequencies, double the positive
    Xf = torch.fft.fft(x, dim=-1)
    hil = torch.zeros(n, dtype=torch.float64)
    hil[0] = 1
    hil[1: n // 2] = 2
    hil[n // 2] = 1
    analytic = torch.fft.ifft(Xf * hil, dim=-1)
    envelope = analytic.abs()
    inst_phase = torch.angle(analytic)
    # a centred spectrum for plotting: fftshift of the full spectrum and its frequencies
    full = torch.fft.fftshift(torch.fft.fft(x, norm="ortho"), dim=-1)
    full_freqs = torch.fft.fftshift(torch.fft.fftfreq(n, d=1.0 / sr))
    unshifted = torch.fft.ifftshift(full, dim=-1)
    centroid = (freqs * X.abs()).sum(-1) / X.abs().sum(-1)
    # a minimum-phase-free FIR design by the window method: sinc low-pass times a Blackman window
    taps = 31
    t = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    fc = 1000 / sr
    fir = 2 * fc * torch.sinc(2 * fc * t) * torch.blackman_window(taps, periodic=False, dtype=torch.float64)
    fir = fir / fir.sum()
    lowpassed = F.conv1d(x.unsqueeze(1), fir.view(1, 1, -1), padding=taps // 2).squeeze(1)
    loss = y.pow(2).sum() + (conv_fft * torch.cos(torch.arange(L, dtype=torch.float64))).sum() \
        + envelope.mean() + inst_phase.sin().sum() * 1e-2 + centroid.sum() * 1e-3 + lowpassed.abs().sum()
    loss.backward()
    return {"y": y, "freqs": freqs, "conv_fft": conv_fft, "conv_direct": conv_direct, "analytic": analytic,
            "full": full, "full_freqs": full_freqs, "unshifted": unshifted, "centroid": centroid, "fir": fir,
            "lowpassed": lowpassed, "grads": [x.grad, h.grad, gain.grad]}


def test_fft_filters_and_fft_convolution():
    x = waveform(2, 250).astype(np.float64)
    h = np.random.default_rng(4).standard_normal(17)
    ours, _ = run_both(fft_filters_program, x, h, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["conv_fft"], ours["conv_direct"], atol=1e-10)
    np.testing.assert_allclose(ours["conv_fft"], np.stack([np.convolve(r, h) for r in x]), atol=1e-10)
    np.testing.assert_allclose(ours["analytic"].real, x, atol=1e-12)
    np.testing.assert_allclose(ours["unshifted"], np.fft.fft(x, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(ours["full_freqs"], np.fft.fftshift(np.fft.fftfreq(250, 1 / 8000)))
    np.testing.assert_allclose(ours["fir"].sum(), 1.0)


# ----------------------------------------------------------------------------------------------
# Front-end preprocessing: pre-emphasis, F.pad modes on 1-D signals, framing by unfold, IIR by a loop
# ----------------------------------------------------------------------------------------------


def preprocessing_program(m, x):
    torch, F = m.torch, m.F
    x = torch.tensor(x, requires_grad=True)  # (batch, time)
    # pre-emphasis, two ways: slicing and a two-tap conv1d
    emphasized = torch.cat([x[:, :1], x[:, 1:] - 0.97 * x[:, :-1]], dim=1)
    kernel = torch.tensor([[[-0.97, 1.0]]])
    by_conv = F.conv1d(F.pad(x.unsqueeze(1), (1, 0)), kernel).squeeze(1)
    # de-emphasis by the recursion y[t] = x[t] + 0.97 y[t-1] (a Python loop, as torchaudio's lfilter fallback)
    outs = [emphasized[:, 0]]
    for t in range(1, emphasized.shape[1]):
        outs.append(emphasized[:, t] + 0.97 * outs[-1])
    deemphasized = torch.stack(outs, dim=1)
    # padding modes on (batch, channel, time) and on an unbatched (channel, time) signal
    padded = {mode: F.pad(emphasized.unsqueeze(1), (5, 3), mode=mode) for mode in ("reflect", "replicate", "circular")}
    padded["constant"] = F.pad(emphasized.unsqueeze(1), (5, 3), mode="constant", value=-0.5)
    unbatched = F.pad(x, (4, 4), mode="reflect")
    # frames by Tensor.unfold with a Hamming window (the Kaldi-style front end) and their log energy
    frames = padded["reflect"].squeeze(1).unfold(-1, 25, 10)
    frames = frames - frames.mean(-1, keepdim=True)  # remove DC offset
    frames = frames * torch.hamming_window(25, periodic=False)
    log_energy = torch.log(frames.pow(2).sum(-1).clamp_min(torch.finfo(torch.float32).eps))
    # dither-free power spectrum of zero-padded frames
    power = torch.fft.rfft(frames, n=32).abs().pow(2)
    loss = sum((p * torch.linspace(-1, 1, p.shape[-1])).pow(2).sum() for p in padded.values()) \
        + deemphasized.sin().sum() + log_energy.sum() + power.sqrt().sum() * 1e-2 + unbatched.pow(3).sum()
    loss.backward()
    return {"emphasized": emphasized, "by_conv": by_conv, "deemphasized": deemphasized, "padded": padded,
            "unbatched": unbatched, "frames": frames, "log_energy": log_energy, "power": power, "grad": x.grad}


def test_preemphasis_padding_and_framing():
    x = waveform(2, 120)
    ours, _ = run_both(preprocessing_program, x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["by_conv"], ours["emphasized"], atol=1e-6)
    np.testing.assert_allclose(ours["deemphasized"], x, atol=1e-5)
    e = ours["emphasized"][:, None]
    for mode, np_mode in (("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")):
        np.testing.assert_array_equal(ours["padded"][mode], np.pad(e, ((0, 0), (0, 0), (5, 3)), mode=np_mode))
    np.testing.assert_array_equal(ours["unbatched"], np.pad(x, ((0, 0), (4, 4)), mode="reflect"))
    assert ours["frames"].shape == (2, 11, 25)


# ----------------------------------------------------------------------------------------------
# Overlap-add by F.fold (a synthesis filterbank) against torch.istft, and Griffin-Lim
# ----------------------------------------------------------------------------------------------


def overlap_add_program(m, spec_parts, length):
    torch, F = m.torch, m.F
    n_fft, hop = 32, 8
    spec = torch.complex(torch.tensor(spec_parts[0]), torch.tensor(spec_parts[1])).requires_grad_()
    window = torch.hann_window(n_fft, dtype=torch.float64)
    # inverse FFT of each frame, windowed, then overlap-added by fold: (B, n_fft, frames) -> (B, 1, 1, T)
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window.view(1, -1, 1)
    n_frames = frames.shape[-1]
    expected_len = n_fft + hop * (n_frames - 1)
    y = F.fold(frames, output_size=(1, expected_len), kernel_size=(1, n_fft), stride=(1, hop)).squeeze(1).squeeze(1)
    # the window envelope, by the same fold
    win_sq = window.pow(2).view(1, -1, 1).expand(1, n_fft, n_frames)
    envelope = F.fold(win_sq, output_size=(1, expected_len), kernel_size=(1, n_fft), stride=(1, hop)).squeeze()
    start, end = n_fft // 2, n_fft // 2 + length
    y = y[:, start:end] / envelope[start:end]
    reference = torch.istft(spec, n_fft, hop_length=hop, window=window, length=length)
    # F.unfold is fold's adjoint: frames of the signal again
    unfolded = F.unfold(y.view(y.shape[0], 1, 1, -1), kernel_size=(1, n_fft), stride=(1, hop))
    (y.pow(2).sum() + unfolded.sum()).backward()
    return {"y": y, "reference": reference, "envelope": envelope, "unfolded": unfolded,
            "grad": torch.view_as_real(spec.grad)}


def test_overlap_add_by_fold_matches_istft():
    x = waveform(2, 200).astype(np.float64)
    import numpy.lib.stride_tricks as st
    padded = np.pad(x, ((0, 0), (16, 16)), mode="reflect")
    frames = st.sliding_window_view(padded, 32, -1)[:, ::8] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(32) / 32))
    spec = np.fft.rfft(frames, axis=-1).transpose(0, 2, 1)
    ours, _ = run_both(overlap_add_program, (spec.real, spec.imag), 200, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["y"], ours["reference"], atol=1e-10)
    np.testing.assert_allclose(ours["y"], x, atol=1e-10)


def griffin_lim_program(m, x):
    torch = m.torch
    n_fft, hop = 64, 16
    window = torch.hann_window(n_fft, dtype=torch.float64)
    x = torch.tensor(x)
    specgram = torch.stft(x, n_fft, hop, window=window, return_complex=True).abs()
    # torchaudio.functional.griffinlim with momentum, from a fixed (not random) initial phase
    momentum = 0.99 / (1 + 0.99)
    angles = torch.polar(torch.ones_like(specgram), torch.zeros_like(specgram) + 0.3)
    tprev = torch.tensor(0.0, dtype=angles.dtype)
    errors = []
    for _ in range(8):
        inverse = torch.istft(specgram * angles, n_fft=n_fft, hop_length=hop, window=window, length=x.shape[-1])
        rebuilt = torch.stft(input=inverse, n_fft=n_fft, hop_length=hop, window=window, center=True,
                             pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        angles = rebuilt
        if momentum:
            angles = angles - tprev.mul_(momentum)
        angles = angles.div(angles.abs().add(1e-16))
        tprev = rebuilt
        errors.append(((rebuilt.abs() - specgram).pow(2).sum() / specgram.pow(2).sum()).sqrt())
    waveform = torch.istft(specgram * angles, n_fft=n_fft, hop_length=hop, window=window, length=x.shape[-1])
    return {"waveform": waveform, "errors": torch.stack(errors), "angle": torch.view_as_real(angles)}


def test_griffin_lim():
    x = waveform(1, 300).astype(np.float64)
    ours, _ = run_both(griffin_lim_program, x, rtol=1e-7, atol=1e-9)
    assert ours["errors"][-1] < ours["errors"][0]


# ----------------------------------------------------------------------------------------------
# HiFi-GAN (Kong et al. 2020, jik876/hifi-gan's models.py, shrunk): weight_norm'd convolutions, transposed
# convolution upsampling, the multi-period and multi-scale discriminators (spectral_norm), and the losses
# (`torch.nn.Module` spelled `nn.Module`: chainrule does not reach nn through autograd, see its README)
# ----------------------------------------------------------------------------------------------

LRELU_SLOPE = 0.1


def get_padding(kernel_size, dilation=1):
    return int((kernel_size * dilation - dilation) / 2)


def hifigan_modules(m):
    torch, nn, F = m.torch, m.nn, m.F
    from_utils = nn.utils
    weight_norm, remove_weight_norm, spectral_norm = from_utils.weight_norm, from_utils.remove_weight_norm, \
        from_utils.spectral_norm
    Conv1d, ConvTranspose1d, Conv2d, AvgPool1d = nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.AvgPool1d

    def init_weights(m, mean=0.0, std=0.01):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            m.weight.data.normal_(mean, std)

    class ResBlock1(nn.Module):
        def __init__(self, channels, kernel_size=3, dilation=(1, 3, 5)):
            super(ResBlock1, self).__init__()
            self.convs1 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
                for d in dilation])
            self.convs1.apply(init_weights)
            self.convs2 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=get_padding(kernel_size, 1)))
                for _ in dilation])
            self.convs2.apply(init_weights)

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                xt = F.leaky_relu(x, LRELU_SLOPE)
                xt = c1(xt)
                xt = F.leaky_relu(xt, LRELU_SLOPE)
                xt = c2(xt)
                x = xt + x
            return x

        def remove_weight_norm(self):
            for l in self.convs1:
                remove_weight_norm(l)
            for l in self.convs2:
                remove_weight_norm(l)

    class Generator(nn.Module):
        def __init__(self, n_mels=8, upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8), initial_channel=16,
                     resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3), (1, 3))):
            super(Generator, self).__init__()
            self.num_kernels = len(resblock_kernel_sizes)
            self.num_upsamples = len(upsample_rates)
            self.conv_pre = weight_norm(Conv1d(n_mels, initial_channel, 7, 1, padding=3))
            self.ups = nn.ModuleList()
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
                self.ups.append(weight_norm(ConvTranspose1d(initial_channel // (2 ** i),
                                                            initial_channel // (2 ** (i + 1)), k, u,
                                                            padding=(k - u) // 2)))
            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                ch = initial_channel // (2 ** (i + 1))
                for j, (k, d) in enumerate(zip(resblock_kernel_sizes, resblock_dilation_sizes)):
                    self.resblocks.append(ResBlock1(ch, k, d))
            self.conv_post = weight_norm(Conv1d(ch, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
            self.conv_post.apply(init_weights)

        def forward(self, x):
            x = self.conv_pre(x)
            for i in range(self.num_upsamples):
                x = F.leaky_relu(x, LRELU_SLOPE)
                x = self.ups[i](x)
                xs = None
                for j in range(self.num_kernels):
                    if xs is None:
                        xs = self.resblocks[i * self.num_kernels + j](x)
                    else:
                        xs += self.resblocks[i * self.num_kernels + j](x)
                x = xs / self.num_kernels
            x = F.leaky_relu(x)
            x = self.conv_post(x)
            x = torch.tanh(x)
            return x

        def remove_weight_norm(self):
            for l in self.ups:
                remove_weight_norm(l)
            for l in self.resblocks:
                l.remove_weight_norm()
            remove_weight_norm(self.conv_pre)
            remove_weight_norm(self.conv_post)

    class DiscriminatorP(nn.Module):
        def __init__(self, period, kernel_size=5, stride=3, use_spectral_norm=False):
            super(DiscriminatorP, self).__init__()
            self.period = period
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm
            self.convs = nn.ModuleList([
                norm_f(Conv2d(1, 8, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(8, 16, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(16, 16, (kernel_size, 1), 1, padding=(2, 0))),
            ])
            self.conv_post = norm_f(Conv2d(16, 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []
            # 1d to 2d
            b, c, t = x.shape
            if t % self.period != 0:  # pad first
                n_pad = self.period - (t % self.period)
                x = F.pad(x, (0, n_pad), "reflect")
                t = t + n_pad
            x = x.view(b, c, t // self.period, self.period)
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)
            return x, fmap

    class MultiPeriodDiscriminator(nn.Module):
        def __init__(self):
            super(MultiPeriodDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([DiscriminatorP(2), DiscriminatorP(3), DiscriminatorP(5)])

        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for i, d in enumerate(self.discriminators):
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    class DiscriminatorS(nn.Module):
        def __init__(self, use_spectral_norm=False):
            super(DiscriminatorS, self).__init__()
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm
            self.convs = nn.ModuleList([
                norm_f(Conv1d(1, 8, 15, 1, padding=7)),
                norm_f(Conv1d(8, 16, 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(16, 16, 41, 4, groups=16, padding=20)),
                norm_f(Conv1d(16, 16, 5, 1, padding=2)),
            ])
            self.conv_post = norm_f(Conv1d(16, 1, 3, 1, padding=1))

        def forward(self, x):
            fmap = []
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)
            return x, fmap

    class MultiScaleDiscriminator(nn.Module):
        def __init__(self):
            super(MultiScaleDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([DiscriminatorS(use_spectral_norm=True), DiscriminatorS(),
                                                 DiscriminatorS()])
            self.meanpools = nn.ModuleList([AvgPool1d(4, 2, padding=2), AvgPool1d(4, 2, padding=2)])

        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for i, d in enumerate(self.discriminators):
                if i != 0:
                    y = self.meanpools[i - 1](y)
                    y_hat = self.meanpools[i - 1](y_hat)
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))
        return loss * 2

    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        r_losses = []
        g_losses = []
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            r_loss = torch.mean((1 - dr) ** 2)
            g_loss = torch.mean(dg ** 2)
            loss += (r_loss + g_loss)
            r_losses.append(r_loss.item())
            g_losses.append(g_loss.item())
        return loss, r_losses, g_losses

    def generator_loss(disc_outputs):
        loss = 0
        gen_losses = []
        for dg in disc_outputs:
            l = torch.mean((1 - dg) ** 2)
            gen_losses.append(l)
            loss += l
        return loss, gen_losses

    return Generator, MultiPeriodDiscriminator, MultiScaleDiscriminator, feature_loss, discriminator_loss, \
        generator_loss


def hifigan_program(m, mel, audio, weights=None):
    torch, nn, F = m.torch, m.nn, m.F
    Generator, MPD, MSD, feature_loss, discriminator_loss, generator_loss = hifigan_modules(m)
    make = lambda: nn.ModuleDict({"generator": Generator(), "mpd": MPD(), "msd": MSD()})
    if weights is None:
        return make()
    models = load(m, make(), weights)
    generator, mpd, msd = models["generator"], models["mpd"], models["msd"]
    optim_g = m.optim.AdamW(generator.parameters(), 2e-4, betas=(0.8, 0.99))
    optim_d = m.optim.AdamW(list(msd.parameters()) + list(mpd.parameters()), 2e-4, betas=(0.8, 0.99))
    x, y = torch.tensor(mel), torch.tensor(audio).unsqueeze(1)
    history = []
    for step in range(2):
        y_g_hat = generator(x)
        optim_d.zero_grad()
        # MPD
        y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
        loss_disc_f, losses_disc_f_r, losses_disc_f_g = discriminator_loss(y_df_hat_r, y_df_hat_g)
        # MSD
        y_ds_hat_r, y_ds_hat_g, _, _ = msd(y, y_g_hat.detach())
        loss_disc_s, losses_disc_s_r, losses_disc_s_g = discriminator_loss(y_ds_hat_r, y_ds_hat_g)
        loss_disc_all = loss_disc_s + loss_disc_f
        loss_disc_all.backward()
        optim_d.step()
        # Generator
        optim_g.zero_grad()
        loss_wave = F.l1_loss(y, y_g_hat) * 45
        y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
        y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = msd(y, y_g_hat)
        loss_fm_f = feature_loss(fmap_f_r, fmap_f_g)
        loss_fm_s = feature_loss(fmap_s_r, fmap_s_g)
        loss_gen_f, losses_gen_f = generator_loss(y_df_hat_g)
        loss_gen_s, losses_gen_s = generator_loss(y_ds_hat_g)
        loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_wave
        loss_gen_all.backward()
        optim_g.step()
        history.append([loss_disc_all.item(), loss_gen_all.item(), loss_wave.item()] + losses_disc_f_r)
    grads = {k: p.grad for k, p in models.named_parameters()}
    generator.eval()
    generator.remove_weight_norm()
    with torch.no_grad():
        y_g_hat = generator(x)
    return {"history": history, "grads": grads, "audio": y_g_hat,
            "state": {k: v for k, v in generator.state_dict().items()}}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_hifigan_training_steps():
    rng = np.random.default_rng(5)
    mel = rng.standard_normal((2, 8, 10)).astype(np.float32)
    audio = waveform(2, 160)
    weights = weights_of(lambda m: hifigan_program(m, mel, audio))
    ours, _ = run_both(hifigan_program, mel, audio, weights, rtol=2e-4, atol=2e-6)
    assert ours["audio"].shape == (2, 1, 160)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in ours["state"])


# ----------------------------------------------------------------------------------------------
# Conv-TasNet (Luo & Mesgarani 2019, shrunk) trained by SI-SNR with permutation-invariant training
# ----------------------------------------------------------------------------------------------


def convtasnet_program(m, mixture, sources, weights=None):
    import itertools

    torch, nn, F = m.torch, m.nn, m.F
    EPS = 1e-8

    class GlobalLayerNorm(nn.Module):
        """gLN: normalise over channels and time together."""

        def __init__(self, channel_size):
            super().__init__()
            self.gamma = nn.Parameter(torch.Tensor(1, channel_size, 1))
            self.beta = nn.Parameter(torch.Tensor(1, channel_size, 1))
            self.reset_parameters()

        def reset_parameters(self):
            self.gamma.data.fill_(1)
            self.beta.data.zero_()

        def forward(self, y):
            mean = y.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)
            var = (torch.pow(y - mean, 2)).mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)
            return self.gamma * (y - mean) / torch.pow(var + EPS, 0.5) + self.beta

    class DepthwiseSeparableConv(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
            super().__init__()
            depthwise_conv = nn.Conv1d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                       dilation=dilation, groups=in_channels, bias=False)
            prelu = nn.PReLU()
            norm = GlobalLayerNorm(in_channels)
            pointwise_conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            self.net = nn.Sequential(depthwise_conv, prelu, norm, pointwise_conv)

        def forward(self, x):
            return self.net(x)

    class TemporalBlock(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
            super().__init__()
            conv1x1 = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            prelu = nn.PReLU()
            norm = GlobalLayerNorm(out_channels)
            dsconv = DepthwiseSeparableConv(out_channels, in_channels, kernel_size, stride, padding, dilation)
            self.net = nn.Sequential(conv1x1, prelu, norm, dsconv)

        def forward(self, x):
            residual = x
            out = self.net(x)
            return out + residual

    class ConvTasNet(nn.Module):
        def __init__(self, N=16, L=8, B=8, H=16, P=3, X=3, R=1, C=2):
            super().__init__()
            self.N, self.L, self.C = N, L, C
            self.encoder = nn.Conv1d(1, N, kernel_size=L, stride=L // 2, bias=False)
            blocks = []
            for r in range(R):
                for x in range(X):
                    dilation = 2 ** x
                    padding = (P - 1) * dilation // 2
                    blocks += [TemporalBlock(B, H, P, stride=1, padding=padding, dilation=dilation)]
            self.separator = nn.Sequential(GlobalLayerNorm(N), nn.Conv1d(N, B, 1, bias=False), *blocks,
                                           nn.Conv1d(B, C * N, 1, bias=False))
            self.decoder = nn.ConvTranspose1d(N, 1, kernel_size=L, stride=L // 2, bias=False)

        def forward(self, mixture):
            mixture_w = F.relu(self.encoder(mixture.unsqueeze(1)))  # [M, N, K]
            M, N, K = mixture_w.size()
            score = self.separator(mixture_w).view(M, self.C, N, K)
            est_mask = F.relu(score)
            source_w = mixture_w.unsqueeze(1) * est_mask  # [M, C, N, K]
            est_source = self.decoder(source_w.view(M * self.C, N, K)).view(M, self.C, -1)
            T_origin = mixture.size(-1)
            return F.pad(est_source, (0, T_origin - est_source.size(-1)))

    def si_snr(est, ref):
        est = est - est.mean(dim=-1, keepdim=True)
        ref = ref - ref.mean(dim=-1, keepdim=True)
        s_target = (est * ref).sum(-1, keepdim=True) * ref / (ref.pow(2).sum(-1, keepdim=True) + EPS)
        e_noise = est - s_target
        return 10 * torch.log10(s_target.pow(2).sum(-1) / (e_noise.pow(2).sum(-1) + EPS) + EPS)

    def pit_loss(est, ref):
        C = est.shape[1]
        perms = list(itertools.permutations(range(C)))
        scores = torch.stack([si_snr(est[:, list(p)], ref).mean(-1) for p in perms], dim=1)  # [M, perms]
        best, best_idx = scores.max(dim=1)
        return -best.mean(), best_idx

    if weights is None:
        return ConvTasNet()
    model = load(m, ConvTasNet(), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    mix, src = torch.tensor(mixture), torch.tensor(sources)
    history = []
    for step in range(3):
        est = model(mix)
        loss, perm = pit_loss(est, src)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "perm": perm, "est": est, "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_convtasnet_pit_si_snr():
    rng = np.random.default_rng(6)
    t = np.arange(202) / 8000
    sources = np.stack([np.sin(2 * np.pi * 440 * t + rng.uniform(0, 6, (3, 1))),
                        np.sign(np.sin(2 * np.pi * 130 * t + rng.uniform(0, 6, (3, 1))))], 1).astype(np.float32)
    mixture = sources.sum(1)
    weights = weights_of(lambda m: convtasnet_program(m, mixture, sources))
    ours, _ = run_both(convtasnet_program, mixture, sources, weights, rtol=2e-4, atol=2e-6)
    assert ours["est"].shape == (3, 2, 202)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# torchaudio's phase vocoder (time stretching a complex spectrogram) and sinc-interpolation resampling
# ----------------------------------------------------------------------------------------------


def phase_vocoder_program(m, x, rate):
    torch, F = m.torch, m.F
    n_fft, hop = 64, 16
    window = torch.hann_window(n_fft, dtype=torch.float64)
    x = torch.tensor(x, requires_grad=True)
    complex_specgrams = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * hop, n_fft // 2 + 1, dtype=torch.float64)[..., None]
    # torchaudio.functional.phase_vocoder
    shape = complex_specgrams.size()
    complex_specgrams = complex_specgrams.reshape([-1] + list(shape[-2:]))
    time_steps = torch.arange(0, complex_specgrams.size(-1), rate, device=complex_specgrams.device,
                              dtype=phase_advance.dtype)
    alphas = time_steps % 1.0
    phase_0 = complex_specgrams[..., :1].angle()
    # Time Padding
    complex_specgrams = F.pad(complex_specgrams, [0, 2])
    complex_specgrams_0 = complex_specgrams.index_select(-1, time_steps.long())
    complex_specgrams_1 = complex_specgrams.index_select(-1, (time_steps + 1).long())
    angle_0 = complex_specgrams_0.angle()
    angle_1 = complex_specgrams_1.angle()
    norm_0 = complex_specgrams_0.abs()
    norm_1 = complex_specgrams_1.abs()
    phase = angle_1 - angle_0 - phase_advance
    phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi))
    # Compute Phase Accum
    phase = phase + phase_advance
    phase = torch.cat([phase_0, phase[..., :-1]], dim=-1)
    phase_acc = torch.cumsum(phase, -1)
    mag = alphas * norm_1 + (1 - alphas) * norm_0
    complex_specgrams_stretch = torch.polar(mag, phase_acc)
    complex_specgrams_stretch = complex_specgrams_stretch.reshape(shape[:-2] + complex_specgrams_stretch.shape[1:])
    stretched = torch.istft(complex_specgrams_stretch, n_fft, hop, window=window)
    (stretched.pow(2).sum() + mag.sum()).backward()
    return {"stretched": stretched, "spec": torch.view_as_real(complex_specgrams_stretch), "grad": x.grad,
            "steps": time_steps}


def test_phase_vocoder():
    x = waveform(2, 320).astype(np.float64)
    ours, _ = run_both(phase_vocoder_program, x, 1.3, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["steps"], np.arange(0, 21, 1.3))  # 320 / 16 + 1 frames


def sinc_resample_program(m, x, orig_freq, new_freq):
    torch, F = m.torch, m.F
    lowpass_filter_width, rolloff = 6, 0.99
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig_freq, new_freq = int(orig_freq) // gcd, int(new_freq) // gcd
    waveform = torch.tensor(x, requires_grad=True)
    dtype = waveform.dtype
    # torchaudio.functional._get_sinc_resample_kernel (hann window)
    base_freq = min(orig_freq, new_freq)
    base_freq *= rolloff
    width = math.ceil(lowpass_filter_width * orig_freq / base_freq)
    idx = torch.arange(-width, width + orig_freq, dtype=dtype)[None, None] / orig_freq
    t = torch.arange(0, -new_freq, -1, dtype=dtype)[:, None, None] / new_freq + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base_freq / orig_freq
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    # _apply_sinc_resample_kernel
    shape = waveform.size()
    wav = waveform.view(-1, shape[-1])
    num_wavs, length = wav.shape
    wav = F.pad(wav, (width, width + orig_freq))
    resampled = F.conv1d(wav[:, None], kernels, stride=orig_freq)
    resampled = resampled.transpose(1, 2).reshape(num_wavs, -1)
    target_length = torch.ceil(torch.as_tensor(new_freq * length / orig_freq)).long()
    resampled = resampled[..., :target_length]
    resampled = resampled.view(shape[:-1] + resampled.shape[-1:])
    (resampled * torch.arange(resampled.shape[-1], dtype=dtype).cos()).sum().backward()
    return {"resampled": resampled, "kernels": kernels, "grad": waveform.grad}


def test_sinc_resampling():
    t = np.arange(400) / 16000
    x = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 1000 * t)])
    ours, _ = run_both(sinc_resample_program, x, 16000, 12000, rtol=1e-9, atol=1e-10)
    assert ours["resampled"].shape == (2, 300)
    t2 = np.arange(300) / 12000
    np.testing.assert_allclose(ours["resampled"][:, 20:280], np.stack([np.sin(2 * np.pi * 300 * t2),
                                                                     np.sin(2 * np.pi * 1000 * t2)])[:, 20:280],
                               atol=2e-2)


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
# Tacotron 2's decoder (NVIDIA/tacotron2's model.py, shrunk): location-sensitive attention over a padded
# encoder output, masked by ``alignment.data.masked_fill_``, LSTMCells stepped in a Python loop (teacher
# forcing), the postnet, and the masked mel + gate losses
# ----------------------------------------------------------------------------------------------


def tacotron2_program(m, text, text_lengths, mels, mel_lengths, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    def get_mask_from_lengths(lengths):
        max_len = torch.max(lengths).item()
        ids = torch.arange(0, max_len, out=torch.LongTensor(max_len))
        mask = (ids < lengths.unsqueeze(1)).bool()
        return mask

    class LinearNorm(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, w_init_gain="linear"):
            super(LinearNorm, self).__init__()
            self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
            nn.init.xavier_uniform_(self.linear_layer.weight, gain=nn.init.calculate_gain(w_init_gain))

        def forward(self, x):
            return self.linear_layer(x)

    class ConvNorm(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=None, dilation=1, bias=True,
                     w_init_gain="linear"):
            super(ConvNorm, self).__init__()
            if padding is None:
                assert (kernel_size % 2 == 1)
                padding = int(dilation * (kernel_size - 1) / 2)
            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, bias=bias)
            nn.init.xavier_uniform_(self.conv.weight, gain=nn.init.calculate_gain(w_init_gain))

        def forward(self, signal):
            return self.conv(signal)

    class LocationLayer(nn.Module):
        def __init__(self, attention_n_filters, attention_kernel_size, attention_dim):
            super(LocationLayer, self).__init__()
            padding = int((attention_kernel_size - 1) / 2)
            self.location_conv = ConvNorm(2, attention_n_filters, kernel_size=attention_kernel_size, padding=padding,
                                          bias=False, stride=1, dilation=1)
            self.location_dense = LinearNorm(attention_n_filters, attention_dim, bias=False, w_init_gain="tanh")

        def forward(self, attention_weights_cat):
            processed_attention = self.location_conv(attention_weights_cat)
            processed_attention = processed_attention.transpose(1, 2)
            processed_attention = self.location_dense(processed_attention)
            return processed_attention

    class Attention(nn.Module):
        def __init__(self, attention_rnn_dim, embedding_dim, attention_dim, attention_location_n_filters,
                     attention_location_kernel_size):
            super(Attention, self).__init__()
            self.query_layer = LinearNorm(attention_rnn_dim, attention_dim, bias=False, w_init_gain="tanh")
            self.memory_layer = LinearNorm(embedding_dim, attention_dim, bias=False, w_init_gain="tanh")
            self.v = LinearNorm(attention_dim, 1, bias=False)
            self.location_layer = LocationLayer(attention_location_n_filters, attention_location_kernel_size,
                                                attention_dim)
            self.score_mask_value = -float("inf")

        def get_alignment_energies(self, query, processed_memory, attention_weights_cat):
            processed_query = self.query_layer(query.unsqueeze(1))
            processed_attention_weights = self.location_layer(attention_weights_cat)
            energies = self.v(torch.tanh(processed_query + processed_attention_weights + processed_memory))
            energies = energies.squeeze(-1)
            return energies

        def forward(self, attention_hidden_state, memory, processed_memory, attention_weights_cat, mask):
            alignment = self.get_alignment_energies(attention_hidden_state, processed_memory, attention_weights_cat)
            if mask is not None:
                alignment.data.masked_fill_(mask, self.score_mask_value)
            attention_weights = F.softmax(alignment, dim=1)
            attention_context = torch.bmm(attention_weights.unsqueeze(1), memory)
            attention_context = attention_context.squeeze(1)
            return attention_context, attention_weights

    class Prenet(nn.Module):
        def __init__(self, in_dim, sizes):
            super(Prenet, self).__init__()
            in_sizes = [in_dim] + sizes[:-1]
            self.layers = nn.ModuleList([LinearNorm(in_size, out_size, bias=False)
                                         for (in_size, out_size) in zip(in_sizes, sizes)])

        def forward(self, x):
            for linear in self.layers:
                x = F.dropout(F.relu(linear(x)), p=0.5, training=False)  # (training=True in the original)
            return x

    class Postnet(nn.Module):
        def __init__(self, n_mel, emb, k=5, n=3):
            super(Postnet, self).__init__()
            self.convolutions = nn.ModuleList()
            chans = [n_mel] + [emb] * (n - 1) + [n_mel]
            for i in range(n):
                self.convolutions.append(nn.Sequential(
                    ConvNorm(chans[i], chans[i + 1], kernel_size=k, stride=1, padding=int((k - 1) / 2), dilation=1,
                             w_init_gain="tanh" if i < n - 1 else "linear"),
                    nn.BatchNorm1d(chans[i + 1])))

        def forward(self, x):
            for i in range(len(self.convolutions) - 1):
                x = F.dropout(torch.tanh(self.convolutions[i](x)), 0.5, self.training and False)
            x = F.dropout(self.convolutions[-1](x), 0.5, False)
            return x

    class Tacotron2(nn.Module):
        def __init__(self, n_symbols=12, emb=16, n_mel=6, rnn=16, att=8):
            super(Tacotron2, self).__init__()
            self.n_mel, self.rnn, self.emb = n_mel, rnn, emb
            self.embedding = nn.Embedding(n_symbols, emb, padding_idx=0)
            std = math.sqrt(2.0 / (n_symbols + emb))
            val = math.sqrt(3.0) * std  # uniform bounds for std
            self.embedding.weight.data.uniform_(-val, val)
            self.encoder_lstm = nn.LSTM(emb, emb // 2, 1, batch_first=True, bidirectional=True)
            self.prenet = Prenet(n_mel, [8, 8])
            self.attention_rnn = nn.LSTMCell(8 + emb, rnn)
            self.attention_layer = Attention(rnn, emb, att, 4, 5)
            self.decoder_rnn = nn.LSTMCell(rnn + emb, rnn, 1)
            self.linear_projection = LinearNorm(rnn + emb, n_mel)
            self.gate_layer = LinearNorm(rnn + emb, 1, bias=True, w_init_gain="sigmoid")
            self.postnet = Postnet(n_mel, 8)

        def forward(self, text, text_lengths, mels):
            embedded = self.embedding(text)
            packed = nn.utils.rnn.pack_padded_sequence(embedded, text_lengths, batch_first=True)
            memory, _ = self.encoder_lstm(packed)
            memory, _ = nn.utils.rnn.pad_packed_sequence(memory, batch_first=True)
            B, T_in = memory.size(0), memory.size(1)
            mask = ~get_mask_from_lengths(text_lengths)
            go = memory.new_zeros(1, B, self.n_mel)
            decoder_inputs = torch.cat((go, mels.permute(2, 0, 1)), dim=0)
            decoder_inputs = self.prenet(decoder_inputs)
            attention_hidden = memory.new_zeros(B, self.rnn)
            attention_cell = memory.new_zeros(B, self.rnn)
            decoder_hidden = memory.new_zeros(B, self.rnn)
            decoder_cell = memory.new_zeros(B, self.rnn)
            attention_weights = memory.new_zeros(B, T_in)
            attention_weights_cum = memory.new_zeros(B, T_in)
            attention_context = memory.new_zeros(B, self.emb)
            processed_memory = self.attention_layer.memory_layer(memory)
            mel_outputs, gate_outputs, alignments = [], [], []
            while len(mel_outputs) < decoder_inputs.size(0) - 1:
                decoder_input = decoder_inputs[len(mel_outputs)]
                cell_input = torch.cat((decoder_input, attention_context), -1)
                attention_hidden, attention_cell = self.attention_rnn(cell_input, (attention_hidden, attention_cell))
                attention_weights_cat = torch.cat((attention_weights.unsqueeze(1),
                                                   attention_weights_cum.unsqueeze(1)), dim=1)
                attention_context, attention_weights = self.attention_layer(
                    attention_hidden, memory, processed_memory, attention_weights_cat, mask)
                attention_weights_cum += attention_weights
                decoder_input = torch.cat((attention_hidden, attention_context), -1)
                decoder_hidden, decoder_cell = self.decoder_rnn(decoder_input, (decoder_hidden, decoder_cell))
                decoder_hidden_attention_context = torch.cat((decoder_hidden, attention_context), dim=1)
                mel_outputs += [self.linear_projection(decoder_hidden_attention_context).squeeze(1)]
                gate_outputs += [self.gate_layer(decoder_hidden_attention_context).squeeze(1)]
                alignments += [attention_weights]
            alignments = torch.stack(alignments).transpose(0, 1)
            gate_outputs = torch.stack(gate_outputs).transpose(0, 1).contiguous()
            mel_outputs = torch.stack(mel_outputs).transpose(0, 1).contiguous().transpose(1, 2)
            mel_outputs_postnet = mel_outputs + self.postnet(mel_outputs)
            return mel_outputs, mel_outputs_postnet, gate_outputs, alignments

    if weights is None:
        return Tacotron2()
    model = load(m, Tacotron2(), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    text, text_lengths = torch.tensor(text), torch.tensor(text_lengths)
    mels, mel_lengths = torch.tensor(mels), torch.tensor(mel_lengths)
    gate_target = torch.zeros(mels.size(0), mels.size(2))
    for i, n in enumerate(mel_lengths.tolist()):
        gate_target[i, n - 1:] = 1
    history = []
    for step in range(2):
        mel_out, mel_out_postnet, gate_out, alignments = model(text, text_lengths, mels)
        mask = ~get_mask_from_lengths(mel_lengths)
        mask = mask.expand(model.n_mel, mask.size(0), mask.size(1)).permute(1, 0, 2)
        mel_out = mel_out.masked_fill(mask, 0.0)
        mel_out_postnet = mel_out_postnet.masked_fill(mask, 0.0)
        gate_out = gate_out.masked_fill(mask[:, 0, :], 1e3)
        mel_loss = nn.MSELoss()(mel_out, mels) + nn.MSELoss()(mel_out_postnet, mels)
        gate_loss = nn.BCEWithLogitsLoss()(gate_out.view(-1, 1), gate_target.view(-1, 1))
        loss = mel_loss + gate_loss
        model.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append([mel_loss.item(), gate_loss.item(), grad_norm.item()])
    return {"history": history, "alignments": alignments, "mel": mel_out_postnet,
            "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_tacotron2_decoder_training():
    rng = np.random.default_rng(8)
    text = np.array([[3, 5, 7, 2, 9, 4, 1], [6, 2, 8, 3, 0, 0, 0]])
    text_lengths = np.array([7, 4])
    mels = rng.standard_normal((2, 6, 9)).astype(np.float32)
    mel_lengths = np.array([9, 6])
    mels[1, :, 6:] = 0
    weights = weights_of(lambda m: tacotron2_program(m, text, text_lengths, mels, mel_lengths))
    ours, _ = run_both(tacotron2_program, text, text_lengths, mels, mel_lengths, weights, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(ours["alignments"].sum(-1), 1.0, rtol=1e-5)
    assert (ours["alignments"][1, :, 4:] == 0).all()  # masked by .data.masked_fill_(mask, -inf)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# DDSP (Engel et al. 2020, shrunk): a harmonic oscillator bank driven by f0 (phase by cumsum), amplitudes
# upsampled by F.interpolate, filtered noise from learnt magnitudes (irfft, roll, hann window, FFT
# convolution), trained a few steps by a multi-scale spectral loss
# ----------------------------------------------------------------------------------------------


def ddsp_program(m, f0_hz, loudness, target, weights=None):
    torch, nn, F = m.torch, m.nn, m.F
    sr, block, n_harm, n_bands = 8000, 32, 8, 9

    def upsample(x, factor):
        x = x.permute(0, 2, 1)
        x = F.interpolate(x, size=x.shape[-1] * factor, mode="linear", align_corners=False)
        return x.permute(0, 2, 1)

    def remove_above_nyquist(amplitudes, pitch, sampling_rate):
        n_harm = amplitudes.shape[-1]
        pitches = pitch * torch.arange(1, n_harm + 1).to(pitch)
        aa = (pitches < sampling_rate / 2).float() + 1e-4
        return amplitudes * aa

    def scale_function(x):
        return 2 * torch.sigmoid(x) ** (math.log(10)) + 1e-7

    def amp_to_impulse_response(amp, target_size):
        amp = torch.stack([amp, torch.zeros_like(amp)], -1)
        amp = torch.view_as_complex(amp)
        amp = torch.fft.irfft(amp)
        filter_size = amp.shape[-1]
        amp = torch.roll(amp, filter_size // 2, -1)
        win = torch.hann_window(filter_size, dtype=amp.dtype, device=amp.device)
        amp = amp * win
        amp = F.pad(amp, (0, int(target_size) - int(filter_size)))
        amp = torch.roll(amp, -filter_size // 2, -1)
        return amp

    def fft_convolve(signal, kernel):
        signal = F.pad(signal, (0, signal.shape[-1]))
        kernel = F.pad(kernel, (kernel.shape[-1], 0))
        output = torch.fft.irfft(torch.fft.rfft(signal) * torch.fft.rfft(kernel))
        output = output[..., output.shape[-1] // 2:]
        return output

    def harmonic_synth(pitch, amplitudes, sampling_rate):
        n_harmonic = amplitudes.shape[-1]
        omega = torch.cumsum(2 * math.pi * pitch / sampling_rate, 1)
        omegas = omega * torch.arange(1, n_harmonic + 1).to(omega)
        signal = (torch.sin(omegas) * amplitudes).sum(-1, keepdim=True)
        return signal

    class DDSP(nn.Module):
        def __init__(self, hidden=16):
            super().__init__()
            self.in_mlp = nn.Sequential(nn.Linear(2, hidden), nn.LayerNorm(hidden), nn.LeakyReLU())
            self.gru = nn.GRU(hidden, hidden, batch_first=True)
            self.proj = nn.Linear(hidden, 1 + n_harm + n_bands)

        def forward(self, pitch, loudness):
            hidden = self.in_mlp(torch.cat([pitch / 500, loudness], -1))
            hidden = self.gru(hidden)[0]
            param = scale_function(self.proj(hidden))
            total_amp = param[..., :1]
            amplitudes = param[..., 1:1 + n_harm]
            amplitudes = remove_above_nyquist(amplitudes, pitch, sr)
            amplitudes /= amplitudes.sum(-1, keepdim=True)
            amplitudes *= total_amp
            amplitudes = upsample(amplitudes, block)
            pitch = upsample(pitch, block)
            harmonic = harmonic_synth(pitch, amplitudes, sr)
            param = scale_function(self.proj(hidden) - 5)[..., 1 + n_harm:]
            impulse = amp_to_impulse_response(param, block)
            noise = torch.tensor(np.random.default_rng(3).uniform(-1, 1, (impulse.shape[0], impulse.shape[1],
                                                                           block)), dtype=impulse.dtype)
            noise = fft_convolve(noise, impulse).contiguous()
            noise = noise.reshape(noise.shape[0], -1, 1)
            return harmonic + noise

    def multiscale_fft(signal, scales=(64, 32), overlap=0.75):
        stfts = []
        for s in scales:
            S = torch.stft(signal, s, int(s * (1 - overlap)), s, torch.hann_window(s, dtype=signal.dtype), True,
                           normalized=True, return_complex=True).abs()
            stfts.append(S)
        return stfts

    def safe_log(x):
        return torch.log(x + 1e-7)

    if weights is None:
        return DDSP()
    model = load(m, DDSP(), weights).double()  # float64: the phase sums up to hundreds of radians
    optimizer = m.optim.Adam(model.parameters(), lr=3e-3)
    pitch = torch.tensor(f0_hz)[..., None]
    loud = torch.tensor(loudness)[..., None]
    y = torch.tensor(target)
    history = []
    for step in range(3):
        signal = model(pitch, loud).squeeze(-1)
        ori_stft = multiscale_fft(y)
        rec_stft = multiscale_fft(signal)
        loss = 0
        for s_x, s_y in zip(ori_stft, rec_stft):
            lin_loss = (s_x - s_y).abs().mean()
            log_loss = (safe_log(s_x) - safe_log(s_y)).abs().mean()
            loss = loss + lin_loss + log_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "signal": signal, "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_ddsp_harmonic_plus_noise():
    frames = 10
    f0 = np.linspace(180, 260, frames)[None].repeat(2, 0)
    f0[1] *= 1.5
    loudness = np.linspace(-1, 0, frames)[None].repeat(2, 0)
    target = waveform(2, frames * 32).astype(np.float64)
    weights = weights_of(lambda m: ddsp_program(m, f0, loudness, target))
    # (in float32 the upsampled f0 differs from PyTorch's by an ulp, which the phase accumulates)
    ours, _ = run_both(ddsp_program, f0, loudness, target, weights, rtol=1e-7, atol=1e-9)
    assert ours["signal"].shape == (2, 320)
    assert ours["history"][-1] < ours["history"][0]


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


# ----------------------------------------------------------------------------------------------
# Voice-activity post-processing on quantised features, where ties are the rule: a noise floor by
# kthvalue, the loudest frames by topk (sorted and not), a median filter (unfold + median) and a majority
# vote over 20-frame windows (mode), with gradients through the selected values
# ----------------------------------------------------------------------------------------------


def vad_program(m, audio):
    torch, F = m.torch, m.F
    x = torch.tensor(audio, requires_grad=True)
    frames = x.unfold(-1, 32, 16)  # (batch, n_frames, 32)
    energy = frames.pow(2).mean(-1)
    level = torch.round(10 * torch.log10(energy + 1e-6))  # dB in whole steps: many equal values
    floor, floor_at = level.kthvalue(max(1, level.shape[-1] // 10), dim=-1, keepdim=True)
    loud, loud_at = level.topk(5, dim=-1)
    loud_unsorted, unsorted_at = level.topk(12, dim=-1, sorted=False)
    active = (level > floor + 6).long()
    padded = F.pad(active.unsqueeze(1).float(), (2, 2), mode="replicate").squeeze(1).long()
    smoothed = padded.unfold(-1, 5, 1).median(-1).values
    votes = F.pad(smoothed.unsqueeze(1).float(), (10, 9), mode="replicate").squeeze(1).long().unfold(-1, 20, 1)
    majority, majority_at = votes.mode(-1)
    weights = torch.linspace(1, 2, level.shape[-1], dtype=level.dtype)
    score = (floor.squeeze(-1) * 3).sum() + loud.sum() + (loud_unsorted * torch.arange(12.0)).sum() \
        + (level * weights).sum()
    score.backward()
    return {"level": level, "floor": floor, "floor_at": floor_at, "loud": loud, "loud_at": loud_at,
            "unsorted": loud_unsorted, "unsorted_at": unsorted_at, "smoothed": smoothed, "majority": majority,
            "majority_at": majority_at, "grad": x.grad}


def test_vad_post_processing_with_ties():
    rng = np.random.default_rng(9)
    t = np.arange(1600) / 8000
    gate = (np.sin(2 * np.pi * 3 * t) > 0).astype(float)
    audio = gate * np.sin(2 * np.pi * 300 * t) + 0.01 * rng.standard_normal(1600)
    audio = np.stack([audio, audio[::-1].copy()])
    ours, _ = run_both(vad_program, audio, rtol=1e-9, atol=1e-12)
    level = ours["level"]
    assert len(np.unique(level[0])) < level.shape[-1] // 2  # the selections do run over ties
    np.testing.assert_array_equal(np.take_along_axis(level, ours["loud_at"], -1), ours["loud"])
    np.testing.assert_array_equal(np.sort(ours["unsorted"], -1), np.sort(level, -1)[:, ::-1][:, :12][:, ::-1])
    assert (np.take_along_axis(level, ours["floor_at"], -1) == ours["floor"]).all()
