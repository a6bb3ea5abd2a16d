# ruff: noqa: E731  (the programs are kept as their authors write them)
"""Speech and sequence-transduction programs (see tests/pytorch_programs.py), written by hand as ESPnet, WeNet, NeMo,
torchaudio's recipes and the papers' reference code write them, run on chainrule and on PyTorch from the same seeds,
comparing values and gradients, and checked without PyTorch by NumPy and by invariants. Features and signal
processing: SpecAugment; Kaldi's fbank framing by ``as_strided``; log-mel by hand with deltas; windows and FFT
helpers; an IIR filter by a loop; writes through views (``unfold``, ``as_strided``, ``view_as_real``, chunks,
``from_numpy``); random draws (Gumbel softmax, the in-place distributions, ``multinomial``, ``dropout1d``)."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Features: SpecAugment, Kaldi's fbank framing by as_strided, log-mel by hand with deltas
# ----------------------------------------------------------------------------------------------


def specaugment_program(m):
    torch, F = m.torch, m.F
    generator = torch.Generator().manual_seed(0)
    spec = torch.randn(2, 20, 30, requires_grad=True)
    x = spec * 1.0
    B, n_freq, n_time = x.shape
    for _ in range(2):  # frequency masks drawn per example (torchaudio's mask_along_axis_iid)
        value = torch.rand(B, generator=generator) * 5
        min_value = torch.rand(B, generator=generator) * (n_freq - value)
        mask_start = min_value.long()[..., None, None]
        mask_end = (min_value.long() + value.long())[..., None, None]
        bins = torch.arange(0, n_freq, dtype=x.dtype)[:, None]
        x = x.masked_fill((bins >= mask_start) & (bins < mask_end), 0.0)
    y = x.clone()
    starts = []
    for b in range(B):  # time masks filled with the mean, in place (ESPnet)
        width = int(torch.randint(0, 6, (1,), generator=generator))
        t0 = int(torch.randint(0, n_time - width, (1,), generator=generator))
        y[b, :, t0:t0 + width] = y[b].mean()
        starts.append([t0, width])
    center, warped = 12, 14  # time warp by bicubic interpolation of both sides
    left = F.interpolate(y[:, None, :, :center], (n_freq, warped), mode="bicubic", align_corners=False)
    right = F.interpolate(y[:, None, :, center:], (n_freq, n_time - warped), mode="bicubic", align_corners=False)
    warped_spec = torch.cat([left, right], dim=-1).squeeze(1)
    (warped_spec ** 2).sum().backward()
    return {"x": x, "y": y, "warped": warped_spec, "grad": spec.grad, "spec": spec, "starts": starts}


def test_specaugment():
    ours, _ = run_both(specaugment_program, rtol=1e-5, atol=1e-5)
    x, spec = ours["x"], ours["spec"]
    masked = x == 0
    assert masked.all(axis=2).any() and ((x == spec) | masked).all()  # whole frequency rows, the rest untouched
    assert (ours["grad"][masked] == 0).all()
    for b, (t0, width) in enumerate(ours["starts"]):
        np.testing.assert_allclose(ours["y"][b, :, t0:t0 + width], x[b].mean(), rtol=1e-6)


def kaldi_fbank_program(m, snip_edges):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    wav = (torch.randn(1, 1200, dtype=torch.float64) * 0.1).requires_grad_()
    waveform = wav[0]
    window_size, window_shift = 200, 80
    eps = torch.tensor(torch.finfo(torch.float).eps)
    num_samples = waveform.size(0)
    strides = (window_shift * waveform.stride(0), waveform.stride(0))
    if snip_edges:
        frames = 1 + (num_samples - window_size) // window_shift
    else:
        reversed_waveform = torch.flip(waveform, [0])
        frames = (num_samples + (window_shift // 2)) // window_shift
        pad = window_size // 2 - window_shift // 2
        waveform = torch.cat((reversed_waveform[-pad:], waveform, reversed_waveform), dim=0)
    strided = waveform.as_strided((frames, window_size), strides)
    strided = strided - torch.mean(strided, dim=1).unsqueeze(1)
    log_energy = torch.max(strided.pow(2).sum(1), eps.to(strided.dtype)).log()
    offset = F.pad(strided.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    strided = strided - 0.97 * offset[:, :-1]
    strided = strided * torch.hann_window(window_size, periodic=False, dtype=strided.dtype).pow(0.85).unsqueeze(0)
    padded_window_size = 2 ** (window_size - 1).bit_length()
    strided = F.pad(strided.unsqueeze(0), (0, padded_window_size - window_size), mode="constant", value=0).squeeze(0)
    spectrum = torch.fft.rfft(strided).abs().pow(2.0)
    mel_energies = torch.max(spectrum[:, :40] @ torch.rand(40, 6, dtype=strided.dtype), eps.to(strided.dtype)).log()
    feats = torch.cat((log_energy.unsqueeze(1), mel_energies), dim=1)
    feats = feats - torch.mean(feats, dim=0).unsqueeze(0)
    (feats * torch.arange(7.0, dtype=feats.dtype)).sum().backward()
    return {"feats": feats, "grad": wav.grad, "wav": wav, "stride": list(strided.stride())}


@pytest.mark.parametrize("snip_edges", [True, False])
def test_kaldi_fbank_framing_by_as_strided(snip_edges):
    ours, _ = run_both(kaldi_fbank_program, snip_edges, rtol=1e-9, atol=1e-10)
    wav = ours["wav"][0].astype(np.float64)
    assert ours["feats"].shape == ((13, 7) if snip_edges else (15, 7))
    if snip_edges:
        frames = np.lib.stride_tricks.sliding_window_view(wav, 200)[::80]
        frames = frames - frames.mean(1, keepdims=True)
        energy = np.log(np.maximum((frames ** 2).sum(1), np.finfo(np.float32).eps))
        np.testing.assert_allclose(ours["feats"][:, 0], energy - energy.mean(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["feats"].mean(0), 0, atol=1e-12)


def logmel_program(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    wav = torch.randn(2, 1600, dtype=torch.float64, requires_grad=True)
    n_fft, hop, n_mels, sr = 400, 160, 10, 16000
    mel = lambda f: 1127.0 * torch.log(1.0 + f / 700.0)
    mel_low, mel_high = mel(torch.tensor(20.0, dtype=torch.float64)), mel(torch.tensor(8000.0, dtype=torch.float64))
    delta = (mel_high - mel_low) / (n_mels + 1)
    b = torch.arange(n_mels).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    freqs = mel(sr / n_fft * torch.arange(n_fft // 2 + 1, dtype=torch.float64))
    bins = torch.max(torch.zeros(1, dtype=torch.float64), torch.min((freqs - left) / (center - left),
                                                                     (right - freqs) / (right - center)))
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), return_complex=True,
                      center=True, pad_mode="reflect")
    power = spec.real ** 2 + spec.imag ** 2
    log_mel = torch.log10(torch.clamp(power.transpose(1, 2) @ bins.T, min=1e-10))
    n = 2  # deltas (torchaudio's compute_deltas), by a replicate pad and by padding='same'
    denom = n * (n + 1) * (2 * n + 1) / 3
    feats = log_mel.transpose(1, 2)
    kernel = torch.arange(-n, n + 1, dtype=feats.dtype).repeat(n_mels, 1, 1)
    deltas = F.conv1d(F.pad(feats, (n, n), mode="replicate"), kernel, groups=n_mels) / denom
    deltas_same = F.conv1d(feats, kernel, groups=n_mels, padding="same") / denom
    (log_mel.mean() + deltas.pow(2).mean() + deltas_same.abs().mean()).backward()
    return {"log_mel": log_mel, "deltas": deltas, "deltas_same": deltas_same, "grad": wav.grad, "bins": bins,
            "wav": wav}


def test_log_mel_by_hand_with_deltas():
    ours, _ = run_both(logmel_program, rtol=1e-7, atol=1e-9)
    wav = ours["wav"].astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wav, ((0, 0), (200, 200)), mode="reflect"), 400,
                                                      -1)[:, ::160]
    power = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], axis=-1)) ** 2
    np.testing.assert_allclose(ours["log_mel"], np.log10(np.maximum(power @ ours["bins"].T, 1e-10)), rtol=1e-9)
    feats = ours["log_mel"].transpose(0, 2, 1)
    padded = np.pad(feats, ((0, 0), (0, 0), (2, 2)), mode="edge")
    by_hand = sum(k * padded[..., 2 + k:padded.shape[-1] - 2 + k] for k in (-2, -1, 1, 2)) / 10
    np.testing.assert_allclose(ours["deltas"], by_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["deltas_same"][..., 2:-2], by_hand[..., 2:-2], rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Small pieces: windows and FFT helpers, ties in topk / sort, LSTMP on packed sequences,
# an IIR filter by a loop, writes through views, random draws
# ----------------------------------------------------------------------------------------------


def windows_program(m):
    torch = m.torch
    out = {}
    for n in (1, 2, 7, 16):
        for periodic in (True, False):
            out[f"hann{n}{periodic}"] = torch.hann_window(n, periodic=periodic)
            out[f"hamming{n}{periodic}"] = torch.hamming_window(n, periodic=periodic, alpha=0.5, beta=0.4)
            out[f"blackman{n}{periodic}"] = torch.blackman_window(n, periodic=periodic, dtype=torch.float64)
            out[f"bartlett{n}{periodic}"] = torch.bartlett_window(n, periodic=periodic)
            out[f"kaiser{n}{periodic}"] = torch.kaiser_window(n, periodic=periodic, beta=8.0)
    windows = torch.signal.windows
    out.update(gaussian=windows.gaussian(9, std=2.0, sym=False), kaiser=windows.kaiser(9, beta=6.0),
               hann=windows.hann(9, sym=False), cosine=windows.cosine(8), exponential=windows.exponential(8, tau=2.0),
               general_hamming=windows.general_hamming(8, alpha=0.6), nuttall=windows.nuttall(8),
               general_cosine=windows.general_cosine(8, a=[0.5, 0.3, 0.2]), i0=torch.special.i0(torch.arange(6.0)),
               sinc=torch.sinc(torch.linspace(-2, 2, 9)))
    return out


def test_windows():
    ours, _ = run_both(windows_program, rtol=2e-6, atol=1e-6)
    n = np.arange(16)
    np.testing.assert_allclose(ours["hann16True"], 0.5 - 0.5 * np.cos(2 * np.pi * n / 16), atol=1e-7)
    np.testing.assert_allclose(ours["hamming16False"], 0.5 - 0.4 * np.cos(2 * np.pi * n / 15), atol=1e-7)
    np.testing.assert_allclose(ours["kaiser16False"], np.kaiser(16, 8.0), rtol=1e-5)
    np.testing.assert_allclose(ours["blackman7False"], np.blackman(7), atol=1e-15)
    np.testing.assert_allclose(ours["bartlett7False"], np.bartlett(7), atol=1e-7)
    assert ours["hann1True"].tolist() == [1.0]
    np.testing.assert_allclose(ours["i0"], np.i0(np.arange(6.0)), rtol=1e-6)


def fft_helpers_program(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(2, 16, dtype=torch.float64, requires_grad=True)
    spectrum = torch.fft.rfft(x, norm="ortho")
    full = torch.fft.fft(x, norm="forward")
    out = {"irfft_n": torch.fft.irfft(spectrum, n=20), "hfft": torch.fft.hfft(spectrum[:, :5], n=8),
           "ihfft": torch.view_as_real(torch.fft.ihfft(x).resolve_conj()), "angle": torch.angle(full),
           "polar": torch.view_as_real(torch.polar(full.abs(), torch.angle(full) + 0.1))}
    phase = torch.atan2(spectrum.imag, spectrum.real)
    out["resynthesised"] = torch.fft.irfft(torch.polar(spectrum.abs(), phase), n=16, norm="ortho")
    out["group_delay"] = -torch.diff(phase, dim=-1)
    out["cummax"], out["cummax_indices"] = torch.cummax(x, dim=1)
    out["quantiles"] = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype), dim=1)
    out["frames"] = x.unfold(1, 4, 3)
    loss = out["resynthesised"].pow(2).sum() + out["irfft_n"].pow(2).sum() + out["hfft"].sum() \
        + out["angle"].sin().sum() + out["group_delay"].sum() + out["quantiles"].sum() + out["frames"].pow(3).sum() \
        + out["cummax"].sum()
    loss.backward()
    out.update(grad=x.grad, x=x, median_index=torch.median(torch.tensor([1.0, 2.0, 2.0, 3.0, 1.0, 2.0]), 0).indices,
               bincount=torch.bincount(torch.tensor([0, 2, 2, 5]), weights=torch.tensor([0.5, 1.0, 2.0, 1.0]),
                                       minlength=7))
    return out


def test_fft_helpers():
    ours, _ = run_both(fft_helpers_program, rtol=1e-9, atol=1e-10)
    x = ours["x"]
    np.testing.assert_allclose(ours["resynthesised"], x, atol=1e-12)
    np.testing.assert_allclose(ours["irfft_n"], np.fft.irfft(np.fft.rfft(x, norm="ortho"), n=20), atol=1e-12)
    np.testing.assert_allclose(ours["quantiles"], np.quantile(x, [0.1, 0.5, 0.9], axis=1), rtol=1e-12)
    np.testing.assert_array_equal(ours["cummax"], np.maximum.accumulate(x, axis=1))
    np.testing.assert_array_equal(ours["bincount"], [0.5, 0, 3.0, 0, 0, 1.0, 0])


def iir_program(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(2, 30, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.2, 0.3, 0.2], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64, requires_grad=True)
    outputs = []  # (writing y[:, t] in place would change what the next step saved, as PyTorch refuses too)
    for t in range(x.shape[1]):
        acc = b[0] * x[:, t]
        if t >= 1:
            acc = acc + b[1] * x[:, t - 1] - a[1] * outputs[t - 1]
        if t >= 2:
            acc = acc + b[2] * x[:, t - 2] - a[2] * outputs[t - 2]
        outputs.append(acc / a[0])
    y = torch.stack(outputs, dim=1)
    (y ** 2).sum().backward()
    fir = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (2, 0)).unsqueeze(1), b.flip(0).view(1, 1, -1))
    return {"y": y, "grad_x": x.grad, "grad_b": b.grad, "grad_a": a.grad, "fir": fir.squeeze(1), "x": x}


def test_iir_filter_by_a_loop():
    ours, _ = run_both(iir_program, rtol=1e-9, atol=1e-10)
    x, y = ours["x"], np.zeros((2, 30))
    for t in range(30):
        y[:, t] = sum(c * x[:, t - k] for k, c in enumerate([0.2, 0.3, 0.2]) if t >= k) \
            - sum(c * y[:, t - k] for k, c in ((1, -0.5), (2, 0.25)) if t >= k)
    np.testing.assert_allclose(ours["y"], y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["fir"], np.stack([np.convolve(r, [0.2, 0.3, 0.2])[:30] for r in x]), atol=1e-14)


def views_program(m):
    torch = m.torch
    out = {}
    x = torch.arange(12.0)
    x.unfold(0, 4, 2)[1, 0] = -1.0  # frame 1 starts at sample 2
    x.as_strided((3, 3), (3, 1), 1)[0, 0] = -2.0
    out["x"] = x
    c = torch.zeros(2, 3, dtype=torch.complex64)
    torch.view_as_real(c)[..., 1] = 2.0
    c.real[0] = 7.0
    out["complex"] = torch.view_as_real(c).clone()
    y = torch.zeros(4, 6)
    for i, chunk in enumerate(y.chunk(3, dim=1)):
        chunk += i
    for i, row in enumerate(y.unbind(0)):
        row.mul_(i + 1)
    y.narrow(1, 0, 2).neg_()
    y.movedim(0, 1)[0, 0] = 99
    out["y"] = y
    array = np.zeros(5, dtype=np.float32)
    shared = torch.from_numpy(array)
    shared[2] = 3.0
    array[3] = 4.0
    shared.numpy()[0] = -5
    out["shared"], out["array"] = shared.clone(), array.copy()
    spec = torch.zeros(2, 4, 5)
    spec[:, 1:3].masked_fill_(torch.ones(2, 2, 5, dtype=torch.bool), 1.0)
    spec[0, :, 2:4] = spec[0, :, 2:4] + 2
    out["spec"] = spec
    return out


def test_writes_through_views():
    ours, _ = run_both(views_program)
    np.testing.assert_array_equal(ours["x"], [0, -2, -1, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    np.testing.assert_array_equal(ours["complex"][..., 0], [[7, 7, 7], [0, 0, 0]])
    np.testing.assert_array_equal(ours["shared"], [-5, 0, 3, 4, 0])
    np.testing.assert_array_equal(ours["array"], ours["shared"])
    assert ours["y"][0, 0] == 99 and ours["y"][3, 5] == 8 and ours["y"][3, 0] == 0
    assert ours["spec"][0, 1, 2] == 3 and ours["spec"][1, 1, 2] == 1 and ours["spec"][0, 0, 2] == 2


def random_draws_program(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    x = torch.zeros(3, 5)
    x[:, 1:3].normal_()
    return {"gumbel_soft": F.gumbel_softmax(logits, tau=2.0),
            "gumbel_hard": F.gumbel_softmax(logits, tau=0.5, hard=True),
            "exponential": torch.empty(5).exponential_(), "geometric": torch.empty(5).geometric_(0.3),
            "log_normal": torch.empty(5).log_normal_(0.0, 0.5), "cauchy": torch.empty(5).cauchy_(),
            "categorical": torch.distributions.Categorical(logits=logits).sample(),
            "multinomial": torch.multinomial(logits.softmax(-1), 3, replacement=False),
            "bernoulli": torch.bernoulli(torch.full((3, 4), 0.3)), "uniform": torch.empty(6).uniform_(-0.1, 0.1),
            "randint_like": torch.randint_like(logits, 0, 10), "dropout1d": F.dropout1d(torch.ones(2, 4, 3), 0.5),
            "slice_normal": x, "after": torch.randn(2)}


def test_random_draws():
    ours, _ = run_both(random_draws_program)
    np.testing.assert_allclose(ours["gumbel_soft"].sum(-1), 1, rtol=1e-6)
    assert (ours["gumbel_hard"].sum(-1) == 1).all() and set(np.unique(ours["gumbel_hard"])) <= {0.0, 1.0}
    assert (ours["exponential"] > 0).all() and (ours["geometric"] >= 1).all() and (ours["log_normal"] > 0).all()
    assert (np.abs(ours["uniform"]) <= 0.1).all() and (ours["slice_normal"][:, [0, 3, 4]] == 0).all()
    assert all(len(set(row)) == 3 for row in ours["multinomial"].tolist())
    assert set(np.unique(ours["dropout1d"])) <= {0.0, 2.0}
    assert (ours["dropout1d"] == ours["dropout1d"][..., :1]).all()  # whole channels
