# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. Audio features and DSP: a power spectrogram by
hand (``unfold`` and ``as_strided`` frames, Hann window, ``rfft``) against ``torch.stft`` with each ``pad_mode``; a
mel filterbank, log-mel and MFCC by a DCT matrix, deltas by ``conv1d``; SpecAugment masks by ``masked_fill``; frame
features (windows, pre-emphasis, ZCR, pitch by autocorrelation through ``irfft``, ``quantile`` VAD); windowed-sinc
resampling and Griffin-Lim (``istft``, ``polar``, ``angle``); a magnitude head through ``polar`` and ``irfft``; a
biquad low-pass with a learnt cutoff (an ``lfilter`` loop writing in place, filtfilt by ``flip``)."""

import math

import numpy as np

from .probe10_detect_common import audio_signal
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# A power spectrogram by hand (unfold / as_strided frames, Hann window, rfft) against torch.stft
# ----------------------------------------------------------------------------------------------


def spectrogram_program(m):
    torch, F = m.torch, m.F
    n_fft, hop = 32, 8
    x = torch.tensor(audio_signal(), requires_grad=True)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    # by hand, center=True with reflect padding, as librosa and torchaudio do
    padded = F.pad(x.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect").squeeze(1)
    frames = padded.unfold(-1, n_fft, hop)  # [B, n_frames, n_fft]
    spec = torch.fft.rfft(frames * window, dim=-1)
    power = spec.abs() ** 2
    power = power.transpose(1, 2)  # [B, freq, time]
    # frames by as_strided on a contiguous 1-D signal
    sig = padded[0].contiguous()
    n_frames = 1 + (sig.shape[0] - n_fft) // hop
    strided = sig.as_strided((n_frames, n_fft), (hop, 1))
    power_strided = torch.fft.rfft(strided * window).abs().pow(2).T
    stft = torch.stft(x, n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    stft_power = stft.abs() ** 2
    results = [power, power_strided, stft_power]
    for pad_mode in ("constant", "replicate", "circular"):
        s = torch.stft(x, n_fft, hop_length=hop, win_length=24, window=torch.hann_window(24, dtype=torch.float64),
                       center=True, pad_mode=pad_mode, normalized=True, return_complex=True)
        results.append(s.abs())
    nocenter = torch.stft(x, n_fft, hop_length=hop, window=window, center=False, onesided=True, return_complex=True)
    results.append(torch.view_as_real(nocenter))
    loss = power.log1p().mean() + sum(r.mean() for r in results[3:])
    loss.backward()
    results.append(x.grad)
    return results


def test_spectrogram_by_hand_and_stft_pad_modes():
    results, _ = run_both(spectrogram_program, rtol=1e-9, atol=1e-10)
    power, power_strided, stft_power = results[:3]
    assert power.shape == (2, 17, 26)
    np.testing.assert_allclose(power, stft_power, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(power_strided, stft_power[0], rtol=1e-10, atol=1e-10)
    # the 60 Hz tone's power peaks in the bin nearest 60 / (1000 / 32), the 220 Hz one nearest 7
    assert np.argmax(power[0].mean(1)) == 2 and np.argmax(power[1].mean(1)) == 7


# ----------------------------------------------------------------------------------------------
# A mel filterbank by hand, log-mel by clamp(min=1e-10).log10(), MFCC by a DCT matrix
# ----------------------------------------------------------------------------------------------


def mel_program(m):
    torch = m.torch
    sample_rate, n_fft, n_mels, n_mfcc = 1000, 32, 8, 5

    def hz_to_mel(freq):
        return 2595.0 * math.log10(1.0 + (freq / 700.0))

    def mel_to_hz(mels):
        return 700.0 * (10 ** (mels / 2595.0) - 1.0)

    def melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate):
        all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
        m_min = hz_to_mel(f_min)
        m_max = hz_to_mel(f_max)
        m_pts = torch.linspace(m_min, m_max, n_mels + 2, dtype=torch.float64)
        f_pts = mel_to_hz(m_pts)
        f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1)
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
        zero = torch.zeros(1, dtype=torch.float64)
        down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]  # (n_freqs, n_mels)
        up_slopes = slopes[:, 2:] / f_diff[1:]  # (n_freqs, n_mels)
        fb = torch.max(zero, torch.min(down_slopes, up_slopes))
        # slaney normalisation
        enorm = 2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels])
        return fb * enorm.unsqueeze(0)

    def create_dct(n_mfcc, n_mels, norm="ortho"):
        n = torch.arange(float(n_mels), dtype=torch.float64)
        k = torch.arange(float(n_mfcc), dtype=torch.float64).unsqueeze(1)
        dct = torch.cos(math.pi / float(n_mels) * (n + 0.5) * k)  # size (n_mfcc, n_mels)
        if norm is None:
            dct *= 2.0
        else:
            dct[0] *= 1.0 / math.sqrt(2.0)
            dct *= math.sqrt(2.0 / float(n_mels))
        return dct.t()

    fb = melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
    dct = create_dct(n_mfcc, n_mels)
    x = torch.tensor(audio_signal(), requires_grad=True)
    spec = torch.stft(x, n_fft, hop_length=8, window=torch.hann_window(n_fft, dtype=torch.float64),
                      return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)  # [B, n_mels, time]
    log_mel = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    log_mel = torch.max(log_mel, log_mel.amax(dim=(-2, -1), keepdim=True) - 80.0)  # top_db
    mfcc = torch.matmul(log_mel.transpose(-1, -2), dct).transpose(-1, -2)
    # cepstral mean and variance normalisation, then delta features by a conv1d stencil
    mfcc_n = (mfcc - mfcc.mean(-1, keepdim=True)) / (mfcc.std(-1, keepdim=True) + 1e-5)
    kernel = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 2.0]]], dtype=torch.float64).repeat(n_mfcc, 1, 1) / 10
    delta = m.F.conv1d(m.F.pad(mfcc_n, (2, 2), mode="replicate"), kernel, groups=n_mfcc)
    (mfcc_n.pow(2).mean() + delta.abs().mean()).backward()
    return fb, dct, log_mel, mfcc, delta, x.grad


def test_mel_filterbank_log_mel_and_mfcc():
    (fb, dct, log_mel, mfcc, delta, grad), _ = run_both(mel_program, rtol=1e-8, atol=1e-9)
    assert fb.shape == (17, 8) and (fb >= 0).all()
    np.testing.assert_allclose(dct.T @ dct, np.eye(5), atol=1e-12)  # orthonormal columns
    assert mfcc.shape == (2, 5, 26) and delta.shape == (2, 5, 26) and np.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# SpecAugment: time and frequency masks by masked_fill
# ----------------------------------------------------------------------------------------------


def specaugment_program(m):
    torch = m.torch
    rng = np.random.default_rng(13)
    spec = torch.tensor(rng.standard_normal((3, 10, 20)), dtype=torch.float32, requires_grad=True)

    def mask_along_axis_iid(specgrams, mask_param, mask_value, axis, draws):
        value = torch.tensor(draws[0], dtype=specgrams.dtype) * mask_param
        min_value = torch.tensor(draws[1], dtype=specgrams.dtype) * (specgrams.size(axis) - value)
        mask_start = min_value.long()[..., None, None]
        mask_end = (min_value.long() + value.long())[..., None, None]
        mask = torch.arange(0, specgrams.size(axis), dtype=specgrams.dtype)
        specgrams = specgrams.transpose(axis, -1)
        specgrams = specgrams.masked_fill((mask >= mask_start) & (mask < mask_end), mask_value)
        return specgrams.transpose(axis, -1)

    freq_draws = rng.uniform(0, 1, (2, 3))
    time_draws = rng.uniform(0, 1, (2, 3))
    out = mask_along_axis_iid(spec, 4, 0.0, 1, freq_draws)
    out = mask_along_axis_iid(out, 6, spec.mean().item(), 2, time_draws)
    # the simpler in-place form with python ints, as in many ASR repositories
    aug = spec.detach().clone()
    for b in range(aug.shape[0]):
        f = int(freq_draws[0, b] * 4)
        f0 = int(freq_draws[1, b] * (aug.shape[1] - f))
        aug[b, f0:f0 + f, :] = 0
    (out * torch.arange(20.0)).sum().backward()
    return out, aug, spec.grad, (out == 0).sum(), (spec.grad == 0).all(dim=2)


def test_specaugment_masks():
    (out, aug, grad, n_zero, freq_masked), _ = run_both(specaugment_program)
    assert n_zero > 0 and freq_masked.any()


# ----------------------------------------------------------------------------------------------
# Resampling by a windowed-sinc kernel (torchaudio.functional.resample by hand), Griffin-Lim
# ----------------------------------------------------------------------------------------------


def resample_program(m):
    torch, F = m.torch, m.F

    def _get_sinc_resample_kernel(orig_freq, new_freq, gcd, lowpass_filter_width=6, rolloff=0.99, dtype=None):
        orig_freq = int(orig_freq) // gcd
        new_freq = int(new_freq) // gcd
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
        return kernels, width

    def _apply_sinc_resample_kernel(waveform, orig_freq, new_freq, gcd, kernel, width):
        orig_freq = int(orig_freq) // gcd
        new_freq = int(new_freq) // gcd
        shape = waveform.size()
        waveform = waveform.view(-1, shape[-1])
        num_wavs, length = waveform.shape
        waveform = F.pad(waveform, (width, width + orig_freq))
        resampled = F.conv1d(waveform[:, None], kernel, stride=orig_freq)
        resampled = resampled.transpose(1, 2).reshape(num_wavs, -1)
        target_length = torch.ceil(torch.as_tensor(new_freq * length / orig_freq)).long()
        resampled = resampled[..., :target_length]
        return resampled.view(shape[:-1] + resampled.shape[-1:])

    x = torch.tensor(audio_signal(n=120), requires_grad=True)
    gcd = math.gcd(1000, 600)
    kernel, width = _get_sinc_resample_kernel(1000, 600, gcd, dtype=torch.float64)
    down = _apply_sinc_resample_kernel(x, 1000, 600, gcd, kernel, width)
    kernel_up, width_up = _get_sinc_resample_kernel(600, 1000, gcd, dtype=torch.float64)
    up = _apply_sinc_resample_kernel(down, 600, 1000, gcd, kernel_up, width_up)
    (down.pow(2).sum() + up.sum()).backward()

    # Griffin-Lim: phase recovered from a magnitude by alternating istft / stft with momentum
    n_fft, hop = 32, 8
    window = torch.hann_window(n_fft, dtype=torch.float64)
    target = torch.stft(x.detach(), n_fft, hop, window=window, return_complex=True).abs()
    g = torch.Generator().manual_seed(0)
    angles = torch.tensor(np.exp(2j * np.pi * np.random.default_rng(18).uniform(0, 1, target.shape)))
    tprev = torch.tensor(0.0, dtype=angles.dtype)
    errors = []
    for _ in range(8):
        inverse = torch.istft(target * angles, n_fft=n_fft, hop_length=hop, window=window, length=120)
        rebuilt = torch.stft(inverse, n_fft=n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect",
                             normalized=False, onesided=True, return_complex=True)
        angles = rebuilt
        angles = angles - tprev.mul_(0.99 / (1 + 0.99))
        angles = angles.div(angles.abs().add(1e-16))
        tprev = rebuilt
        errors.append((rebuilt.abs() - target).pow(2).mean().item())
    phase = torch.angle(angles)
    polar = torch.polar(target, phase)
    waveform = torch.istft(polar, n_fft=n_fft, hop_length=hop, window=window, length=120)
    return kernel, down, up, x.grad, errors, waveform, torch.fft.rfftfreq(n_fft, d=1 / 1000)


def test_sinc_resample_and_griffin_lim():
    (kernel, down, up, grad, errors, waveform, freqs), _ = run_both(resample_program, rtol=1e-8, atol=1e-9)
    assert kernel.shape == (3, 1, 27) and down.shape == (2, 72) and up.shape == (2, 120)
    assert errors[-1] < errors[0]
    np.testing.assert_allclose(freqs, np.arange(17) * 1000 / 32)


# ----------------------------------------------------------------------------------------------
# Frame-level audio features: windows, pre-emphasis, energy, ZCR, pitch by autocorrelation, VAD
# ----------------------------------------------------------------------------------------------


def features_program(m):
    torch, F = m.torch, m.F
    sr, frame, hop = 1000, 40, 20
    x = torch.tensor(audio_signal(n=240), dtype=torch.float32, requires_grad=True)
    windows = [torch.hann_window(frame), torch.hann_window(frame, periodic=False), torch.hamming_window(frame),
               torch.hamming_window(frame, periodic=False, alpha=0.5, beta=0.5), torch.blackman_window(frame),
               torch.bartlett_window(frame), torch.kaiser_window(frame, periodic=False, beta=8.0),
               torch.signal.windows.gaussian(frame, std=7.0) if hasattr(torch, "signal") else None]
    windows = [w for w in windows if w is not None]
    emphasized = torch.cat([x[:, :1], x[:, 1:] - 0.97 * x[:, :-1]], dim=1)
    frames = emphasized.unfold(1, frame, hop) * torch.hamming_window(frame)  # [B, n, frame]
    rms = frames.pow(2).mean(-1).sqrt()
    db = 20 * torch.log10(rms.clamp(min=1e-5))
    zcr = (torch.sign(frames[..., 1:]) != torch.sign(frames[..., :-1])).float().mean(-1)
    # autocorrelation by the Wiener-Khinchin theorem, pitch as the best lag between 2 and 20 ms
    spec = torch.fft.rfft(frames, n=2 * frame)
    raw = torch.fft.rfft(x.unfold(1, frame, hop), n=2 * frame)  # pitch from the signal before pre-emphasis
    acf = torch.fft.irfft(raw.abs() ** 2, n=2 * frame)[..., :frame]
    acf = acf / acf[..., :1]
    min_lag, max_lag = 10, 25
    lag = acf[..., min_lag:max_lag].argmax(-1) + min_lag
    pitch = sr / lag.float()
    power = spec.abs().pow(2)
    freqs = torch.fft.rfftfreq(2 * frame, d=1 / sr)
    centroid = (power * freqs).sum(-1) / power.sum(-1)
    rolloff_bin = (power.cumsum(-1) >= 0.85 * power.sum(-1, keepdim=True)).float().argmax(-1)
    floor = torch.quantile(db, 0.2, dim=1, keepdim=True)
    voiced = db > floor + 3
    med = db.median(dim=1)
    twosided = torch.stft(x, 16, hop_length=4, onesided=False, return_complex=True, window=torch.ones(16))
    (db.sum() + centroid.sum() * 1e-3 + twosided.abs().mean()).backward()
    return (windows, rms, db, zcr, lag, pitch, centroid, rolloff_bin, floor, voiced, med, twosided.shape[1],
            x.grad)


def test_frame_features_windows_and_pitch():
    results, _ = run_both(features_program, rtol=1e-5, atol=1e-5)
    windows, lag, pitch, twosided_bins = results[0], results[4], results[5], results[11]
    assert twosided_bins == 16 and lag.dtype == np.int64
    # the 60 Hz signal's pitch lag is about 1000 / 60 = 16.7 samples, the 220 Hz one's 3 periods (13.6)
    assert np.median(lag[0]) in (16, 17) and np.median(lag[1]) == 14
    np.testing.assert_allclose(windows[0].numpy() if hasattr(windows[0], "numpy") else windows[0],
                               0.5 - 0.5 * np.cos(2 * np.pi * np.arange(40) / 40), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# A magnitude-and-phase synthesiser: a linear head predicts magnitudes (negative ones too), torch.polar
# with the phase, then the inverse FFT (polar's magnitude derivative is PyTorch's: sign(r) e^(iθ))
# ----------------------------------------------------------------------------------------------


def polar_synth_program(m, steps=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    rng = np.random.default_rng(30)
    head = nn.Linear(6, 9).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor(rng.standard_normal((9, 6)) * 0.5))
        head.bias.copy_(torch.tensor(rng.standard_normal(9) * 0.2))
    cond = torch.tensor(rng.standard_normal((4, 6)))
    phase = torch.tensor(rng.uniform(-np.pi, np.pi, (4, 9)))
    target = torch.tensor(audio_signal(n=16, batch=2, seed=31).repeat(2, 0))
    opt = optim.SGD(head.parameters(), lr=0.05)
    losses, grads = [], []
    for _ in range(steps):
        magnitude = head(cond)
        magnitude = magnitude.masked_fill(torch.arange(9) == 8, 0.0)  # the Nyquist bin silenced
        spectrum = torch.polar(magnitude, phase)
        frames = torch.fft.irfft(spectrum, n=16)
        loss = F.mse_loss(frames, target)
        opt.zero_grad()
        loss.backward()
        grads.append(head.weight.grad.clone())
        opt.step()
        losses.append(loss.item())
    return losses, grads, head.bias.detach(), (magnitude < 0).sum()


def test_polar_synthesiser_with_negative_magnitudes():
    (losses, grads, bias, negative), _ = run_both(polar_synth_program, rtol=1e-10, atol=1e-12)
    # (PyTorch's gradient points the wrong way for the negative magnitudes, so the loss need not fall)
    assert negative > 0 and np.isfinite(losses).all() and np.abs(grads[0]).sum() > 0


# ----------------------------------------------------------------------------------------------
# Differentiable DSP: a biquad low-pass (torchaudio's coefficients) with a learnt cutoff, run by an
# lfilter loop writing y[..., t] in place, forwards then backwards (filtfilt by flip)
# ----------------------------------------------------------------------------------------------


def biquad_program(m, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    sample_rate = 1000

    def lowpass_coefficients(cutoff_freq, Q=0.707):
        w0 = 2 * math.pi * cutoff_freq / sample_rate
        alpha = torch.sin(w0) / 2 / Q
        b0 = (1 - torch.cos(w0)) / 2
        b1 = 1 - torch.cos(w0)
        b2 = b0
        a0 = 1 + alpha
        a1 = -2 * torch.cos(w0)
        a2 = 1 - alpha
        return torch.stack([b0, b1, b2]) / a0, torch.stack([a0, a1, a2]) / a0

    def lfilter(waveform, b, a):
        n = waveform.shape[-1]
        y = torch.zeros_like(waveform)
        padded = F.pad(waveform, (2, 0))
        y_prev1 = torch.zeros_like(waveform[..., 0])
        y_prev2 = torch.zeros_like(waveform[..., 0])
        for t in range(n):
            x_win = padded[..., t:t + 3].flip(-1)  # x[t], x[t-1], x[t-2]
            out = (x_win * b).sum(-1) - a[1] * y_prev1 - a[2] * y_prev2
            y[..., t] = out
            y_prev2, y_prev1 = y_prev1, out
        return y

    def filtfilt(waveform, b, a):
        forward = lfilter(waveform, b, a)
        return lfilter(forward.flip(-1), b, a).flip(-1)

    x = torch.tensor(audio_signal(n=60), dtype=torch.float64)
    target_b, target_a = lowpass_coefficients(torch.tensor(100.0, dtype=torch.float64))
    target = filtfilt(x, target_b, target_a)

    class LearntLowpass(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_cutoff = nn.Parameter(torch.tensor(math.log(250.0), dtype=torch.float64))

        def forward(self, x):
            b, a = lowpass_coefficients(self.log_cutoff.exp())
            return filtfilt(x, b, a)

    model = LearntLowpass()
    opt = optim.Adam(model.parameters(), lr=0.1)
    history = []
    for _ in range(steps):
        loss = F.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        history.append((loss.item(), model.log_cutoff.grad.item(), model.log_cutoff.exp().item()))
        opt.step()
    return history, target


def test_biquad_lowpass_with_a_learnt_cutoff():
    (history, target), _ = run_both(biquad_program, rtol=1e-8, atol=1e-10)
    assert history[-1][0] < history[0][0] and history[-1][2] < history[0][2]  # the cutoff falls towards 100 Hz
    # the 60 Hz tone passes a 100 Hz low-pass, the 220 Hz one is damped
    assert np.abs(target[0, 20:40]).max() > 3 * np.abs(target[1, 20:40]).max()
