"""Audio and signal-processing programs, written by hand as torchaudio's and the speech papers' authors write them,
run as tests/probe12_audio_common.py says. Spectral processing: STFT/ISTFT round trips (hann/hamming windows, center,
normalized, onesided, ``length=``) differentiated through; a mel filterbank built by hand (torchaudio's
``melscale_fbanks``) on a power spectrogram with log / dB compression (``amplitude_to_DB``'s ``top_db``), MFCCs by a
DCT-II matrix and deltas by a grouped ``conv1d``; SpecAugment's masks (``masked_fill``); ``torch.fft`` filters
(``rfft``/``irfft``/``fftfreq``/``rfftfreq``/``fftshift``, the analytic signal) and FFT convolution against
``F.conv1d``; pre-emphasis, ``F.pad`` reflect / replicate / circular on 1-D signals, framing by ``unfold``;
overlap-add by ``F.fold`` against ``istft``; Griffin-Lim; torchaudio's phase vocoder (``F.pad`` of a complex
spectrogram, ``polar``) and sinc resampling; voice activity post-processing on quantised levels, where ``kthvalue``,
``topk`` and ``mode`` select among ties."""

import math

import numpy as np

from .probe12_audio_common import waveform
from .pytorch_programs import run_both

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
