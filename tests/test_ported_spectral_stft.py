"""The short-time Fourier transform and its inverse ported from PyTorch's test/test_spectral_ops.py (TestFFT, its
stft/istft part: values against a reference, round trips with windows, centring and pad modes, onesided and
complex signals and windows, return_complex, the warnings and errors) and the gradients of the stft/istft
OpInfos (gradcheck in float64/complex128).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`). PyTorch's test
compares with librosa; here the reference is the definition computed with NumPy (`stft_reference`,
`istft_reference`), which PyTorch itself must match.
"""

import itertools
import math
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, values

PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _window(window, n_fft, win_length):
    """The window (ones when None) in the middle of n_fft points, zeros around it."""
    w = np.ones(win_length) if window is None else np.asarray(window)
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left))


def stft_reference(x, n_fft, hop_length=None, win_length=None, window=None, center=True, pad_mode="reflect",
                   normalized=False, onesided=True):
    """X[..., ω, m] = Σ_k w[k] x[m·hop + k] e^(-2πi ωk/n_fft), x padded by n_fft // 2 at both ends when centred."""
    hop = n_fft // 4 if hop_length is None else hop_length
    w = _window(window, n_fft, n_fft if win_length is None else win_length)
    if center:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode=PAD_MODES[pad_mode])
    count = 1 + (x.shape[-1] - n_fft) // hop
    frames = np.stack([x[..., m * hop:m * hop + n_fft] * w for m in range(count)], -1)
    spectrum = np.fft.fft(frames, axis=-2, norm="ortho" if normalized else None)
    return spectrum[..., :n_fft // 2 + 1, :] if onesided else spectrum


def istft_reference(spectrum, n_fft, hop_length=None, win_length=None, window=None, center=True, normalized=False,
                    onesided=True, length=None, return_complex=False):
    """Each frame's inverse transform, windowed, overlap-added, divided by the overlap-added squared window."""
    hop = n_fft // 4 if hop_length is None else hop_length
    w = _window(window, n_fft, n_fft if win_length is None else win_length)
    norm = "ortho" if normalized else None
    if onesided:
        frames = np.fft.irfft(spectrum, n=n_fft, axis=-2, norm=norm)
    else:
        frames = np.fft.ifft(spectrum, axis=-2, norm=norm)
        frames = frames if return_complex else frames.real
    count = spectrum.shape[-1]
    full = n_fft + hop * (count - 1)
    signal = np.zeros(spectrum.shape[:-2] + (full,), dtype=frames.dtype)
    envelope = np.zeros(full, dtype=w.dtype)
    for m in range(count):
        signal[..., m * hop:m * hop + n_fft] += frames[..., :, m] * w
        envelope[m * hop:m * hop + n_fft] += w * w
    start = n_fft // 2 if center else 0
    end = full - start if length is None else min(start + length, full)
    signal = signal[..., start:end] / envelope[start:end]
    if length is not None and signal.shape[-1] < length:
        signal = np.concatenate([signal, np.zeros(signal.shape[:-1] + (length - signal.shape[-1],))], -1)
    return signal


@pytest.fixture(autouse=True)
def _quiet():
    """The missing-window and return_complex=False warnings, which the tests below check where they mean to."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "A window was not provided")
        warnings.filterwarnings("ignore", "stft with return_complex=False is deprecated")
        warnings.filterwarnings("ignore", "The length of signal is shorter than the length parameter")
        yield


@pytest.mark.parametrize("center", [True, False])
def test_stft(T, center):
    rng = np.random.default_rng(0)
    cases = [((10,), 7, None, None, None), ((10, 4000), 1024, None, None, None), ((10,), 7, 2, None, None),
             ((10, 4000), 1024, 512, None, None), ((10,), 7, 2, None, (7,)), ((10, 4000), 1024, 512, None, (1024,)),
             ((10,), 7, 2, 5, None), ((10, 4000), 1024, 512, 100, None)]  # (the last two: spectral oversample)
    for sizes, n_fft, hop, win_length, win_sizes in cases:
        a = rng.standard_normal(sizes)
        w = None if win_sizes is None else rng.standard_normal(win_sizes)
        window = None if w is None else T.tensor(w)
        expected = stft_reference(a, n_fft, hop, win_length, w, center)
        result = T.tensor(a).stft(n_fft, hop, win_length, window, center=center, return_complex=False)
        close(result, np.stack([expected.real, expected.imag], -1), rtol=1e-7, atol=1e-7)
        assert dtype_name(result) == "float64"
        result_complex = T.tensor(a).stft(n_fft, hop, win_length, window, center=center, return_complex=True)
        close(result_complex, expected, rtol=1e-7, atol=1e-7)
        assert dtype_name(result_complex) == "complex128"


def test_stft_errors(T):
    rng = np.random.default_rng(1)

    def call(sizes, n_fft, hop_length=None, win_length=None, win_sizes=None, center=True):
        window = None if win_sizes is None else T.tensor(rng.standard_normal(win_sizes))
        x = T.tensor(rng.standard_normal(sizes))
        return x.stft(n_fft, hop_length, win_length, window, center=center, return_complex=True)

    raises(RuntimeError, None, call, (10, 4, 2), 1, 1)  # a 3-d signal
    raises(RuntimeError, None, call, (10,), 11, 1, center=False)  # n_fft longer than the signal
    raises(RuntimeError, None, call, (10,), -1, 1)
    raises(RuntimeError, None, call, (10,), 3, win_length=5)  # win_length > n_fft
    raises(RuntimeError, None, call, (10,), 5, 4, win_sizes=(11,))  # window of the wrong length
    raises(RuntimeError, None, call, (10,), 5, 4, win_sizes=(1, 1))  # a 2-d window


@pytest.mark.parametrize("center", [True, False])
def test_istft_against_reference(T, center):
    rng = np.random.default_rng(2)
    cases = [(10, 7, None, None), (4000, 1024, None, None), (4000, 1024, None, 4000), (10, 7, 2, None),
             (4000, 1024, 512, None), (4000, 1024, 512, 4000)]
    for size, n_fft, hop, length in cases:
        for window in (None, rng.uniform(0.5, 1.5, n_fft)):  # (a window that cannot vanish in the overlap-add)
            spectrum = stft_reference(rng.standard_normal(size), n_fft, hop, None, window, center)
            w = None if window is None else T.tensor(window)
            result = T.tensor(spectrum).istft(n_fft, hop, None, w, length=length, center=center)
            close(result, istft_reference(spectrum, n_fft, hop, None, window, center, length=length), rtol=1e-7,
                  atol=1e-7)
            assert dtype_name(result) == "float64"


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_complex_stft_roundtrip(T, dtype):
    rng = np.random.default_rng(3)
    signals = [rng.standard_normal(600), rng.standard_normal(807), rng.standard_normal((12, 60))]
    if dtype == "complex128":
        signals = [s + 1j * rng.standard_normal(s.shape) for s in signals]
    for a, n_fft, hop, pad_mode, normalized, onesided in itertools.product(
            signals, (50, 27), (None, 10), ("constant", "reflect", "circular"), (True, False),
            (True, False) if dtype == "float64" else (False,)):
        common = dict(n_fft=n_fft, hop_length=hop, center=True, normalized=normalized, onesided=onesided)
        x = T.tensor(a)
        spectrum = T.stft(x, pad_mode=pad_mode, return_complex=True, **common)
        back = T.istft(spectrum, return_complex=dtype == "complex128", length=a.shape[-1], **common)
        close(back, a, rtol=1e-7, atol=1e-7)
        assert dtype_name(back) == dtype
        spectrum = x.stft(pad_mode=pad_mode, return_complex=True, **common)  # the method
        close(T.istft(spectrum, return_complex=dtype == "complex128", length=a.shape[-1], **common), a, rtol=1e-7,
              atol=1e-7)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_stft_roundtrip_complex_window(T, dtype):
    rng = np.random.default_rng(4)
    signals = [rng.standard_normal(600), rng.standard_normal(807), rng.standard_normal((12, 60))]
    if dtype == "complex128":
        signals = [s + 1j * rng.standard_normal(s.shape) for s in signals]
    for a, n_fft, hop, pad_mode, normalized in itertools.product(
            signals, (50, 27), (None, 10), ("constant", "reflect", "replicate", "circular"), (True, False)):
        w = rng.uniform(size=n_fft) + 1j * rng.uniform(size=n_fft)
        window = T.tensor(w)
        spectrum = T.stft(T.tensor(a), n_fft=n_fft, hop_length=hop, window=window, center=True, pad_mode=pad_mode,
                          normalized=normalized)
        assert dtype_name(spectrum) == "complex128"
        assert spectrum.shape[-2] == n_fft  # not onesided
        close(spectrum, stft_reference(a, n_fft, hop, None, w, True, pad_mode, normalized, onesided=False),
              rtol=1e-7, atol=1e-7)
        back = T.istft(spectrum, n_fft=n_fft, hop_length=hop, window=window, center=True, normalized=normalized,
                       length=a.shape[-1], return_complex=True)
        close(back, a.astype(np.complex128), rtol=1e-7, atol=1e-7)


def test_complex_stft_definition(T):
    rng = np.random.default_rng(5)
    for size, n_fft, hop in itertools.product((600, 807), (50, 27), (10, 15)):
        a = rng.standard_normal(size) + 1j * rng.standard_normal(size)
        w = rng.standard_normal(n_fft) + 1j * rng.standard_normal(n_fft)
        # X[ω, m] = Σ_k w[k] x[m·hop + k] e^(-2πi ωk/n_fft), frame by frame
        count = (size - n_fft + hop) // hop
        expected = np.stack([np.fft.fft(a[m * hop:m * hop + n_fft] * w) for m in range(count)], -1)
        close(T.stft(T.tensor(a), n_fft, hop, window=T.tensor(w), center=False), expected, rtol=1e-7, atol=1e-7)


def test_complex_stft_real_equiv(T):
    """The stft of a complex signal is that of its real part plus i times that of its imaginary part."""
    rng = np.random.default_rng(6)
    signals = [rng.uniform(size=s) + 1j * rng.uniform(size=s) for s in (600, 807, (14, 50), (6, 51))]
    for a, n_fft, hop, win_length, center, pad_mode, normalized in itertools.product(
            signals, (50, 27), (None, 10), (None, 20), (False, True), ("constant", "reflect", "circular"),
            (True, False)):
        kwargs = dict(hop_length=hop, win_length=win_length, pad_mode=pad_mode, center=center, normalized=normalized)
        real = T.stft(T.tensor(a.real), n_fft, return_complex=True, onesided=False, **kwargs)
        imaginary = T.stft(T.tensor(a.imag), n_fft, return_complex=True, onesided=False, **kwargs)
        expected = values(real) + 1j * values(imaginary)
        close(T.stft(T.tensor(a), n_fft, **kwargs), expected, rtol=1e-7, atol=1e-7)


def _hermitian_conjugate(x, dim):
    """H(x)[i] = conj(x[-i]) along dim."""
    return np.conj(np.take(x, -np.arange(x.shape[dim]) % x.shape[dim], axis=dim))


def test_complex_istft_real_equiv(T):
    """The istft of any spectrum is that of its Hermitian part (a real signal) plus i times that of its
    anti-Hermitian part over i."""
    rng = np.random.default_rng(7)
    spectra = [rng.uniform(size=s) + 1j * rng.uniform(size=s) for s in ((40, 20), (25, 1), (4, 20, 10))]
    for x, hop, center, normalized in itertools.product(spectra, (None, 10), (False, True), (True, False)):
        n_fft = x.shape[-2]
        hermitian_conj = _hermitian_conjugate(x, -2)
        half = (Ellipsis, slice(None, n_fft // 2 + 1), slice(None))
        kwargs = dict(hop_length=hop, center=center, normalized=normalized)
        real = T.istft(T.tensor(((x + hermitian_conj) / 2)[half]), n_fft, onesided=True, **kwargs)
        imaginary = T.istft(T.tensor((-1j * (x - hermitian_conj) / 2)[half]), n_fft, onesided=True, **kwargs)
        expected = values(real) + 1j * values(imaginary)
        close(T.istft(T.tensor(x), n_fft, return_complex=True, **kwargs), expected, rtol=1e-7, atol=1e-7)


def test_complex_stft_onesided(T):
    rng = np.random.default_rng(8)
    for x_dtype, window_dtype in itertools.product(("float64", "complex128"), repeat=2):
        x = T.tensor(rng.uniform(size=100).astype(x_dtype))
        window = T.tensor(rng.uniform(size=10).astype(window_dtype))
        if "complex128" in (x_dtype, window_dtype):
            raises(RuntimeError, "complex", x.stft, 10, window=window, pad_mode="constant", onesided=True)
        else:
            y = x.stft(10, window=window, pad_mode="constant", onesided=True, return_complex=True)
            assert dtype_name(y) == "complex128"
            assert tuple(y.shape) == (6, 51)
    x = T.tensor(rng.uniform(size=100).astype("complex128"))
    raises(RuntimeError, "complex", x.stft, 10, pad_mode="constant", onesided=True)


def test_stft_requires_complex(T):
    raises(RuntimeError, "stft requires the return_complex parameter", T.rand(100).stft, 10, pad_mode="constant")


def test_stft_align_to_window_only_requires_non_center(T):
    for align_to_window in (True, False):
        raises(RuntimeError, "stft align_to_window should only be set when center = false", T.rand(100).stft, 10,
               center=True, return_complex=True, align_to_window=align_to_window)


def test_stft_align_to_window(T):
    """(beyond PyTorch's test) align_to_window=True starts each frame where its window starts: frame m holds
    x[m·hop : m·hop + win_length] times the window, at the window's place in the n_fft points."""
    rng = np.random.default_rng(9)
    a, w = rng.standard_normal(40), rng.standard_normal(6)
    n_fft, hop, win_length = 10, 3, 6
    left = (n_fft - win_length) // 2
    count = 1 + (40 - win_length) // hop
    expected = np.stack([np.fft.rfft(np.pad(a[m * hop:m * hop + win_length] * w, (left, n_fft - win_length - left)))
                         for m in range(count)], -1)
    result = T.stft(T.tensor(a), n_fft, hop, win_length, T.tensor(w), center=False, return_complex=True,
                    align_to_window=True)
    close(result, expected, rtol=1e-9, atol=1e-9)
    result = T.stft(T.tensor(a), n_fft, hop, win_length, T.tensor(w), center=False, return_complex=True,
                    align_to_window=False)
    close(result, stft_reference(a, n_fft, hop, win_length, w, center=False), rtol=1e-9, atol=1e-9)


def test_stft_requires_window(T, warn_always):
    with pytest.warns(UserWarning, match="A window was not provided"):
        T.rand(100).stft(10, pad_mode="constant", return_complex=True)


def test_istft_requires_window(T, warn_always):
    stft = T.rand((51, 5), dtype=T.complex128)  # 51 = n_fft / 2 + 1, 5 frames
    with pytest.warns(UserWarning, match="A window was not provided"):
        T.istft(stft, n_fft=100, length=100)


def test_istft_round_trip_simple_cases(T):
    for a in (np.ones(4), np.zeros(4)):
        stft = T.stft(T.tensor(a), n_fft=4, return_complex=True)
        inverse = T.istft(stft, n_fft=4, length=4)
        close(inverse, a, rtol=1e-7, atol=1e-7)
        assert dtype_name(inverse) == "float64"


def _windows(T):
    return {"hann12": T.hann_window(12, dtype=T.float64), "hann8": T.hann_window(8, dtype=T.float64),
            "hamming11": T.hamming_window(11, dtype=T.float64), "hamming5": T.hamming_window(5, dtype=T.float64),
            "hamming3": T.hamming_window(3, dtype=T.float64), "hamming256": T.hamming_window(256, dtype=T.float64),
            "hamming12": T.hamming_window(12, dtype=T.float64)}


def test_istft_round_trip_various_params(T):
    rng = np.random.default_rng(10)
    windows = _windows(T)
    patterns = [dict(n_fft=12, hop_length=4, win_length=12, window="hann12", pad_mode="reflect", normalized=True,
                     onesided=True),
                dict(n_fft=12, hop_length=2, win_length=8, window="hann8", pad_mode="reflect", normalized=False,
                     onesided=False),
                dict(n_fft=15, hop_length=3, win_length=11, window="hamming11", pad_mode="constant", normalized=True,
                     onesided=False),
                dict(n_fft=5, hop_length=2, win_length=5, window="hamming5", pad_mode="constant", normalized=False,
                     onesided=True)]
    for pattern in patterns:
        kwargs = dict(pattern, window=windows[pattern["window"]], center=True)
        pad_mode = kwargs.pop("pad_mode")
        for sizes in ((2, 20), (3, 15), (4, 10)):
            for _ in range(5):
                a = rng.standard_normal(sizes)
                stft = T.stft(T.tensor(a), return_complex=True, pad_mode=pad_mode, **kwargs)
                inverse = T.istft(stft, length=sizes[1], **kwargs)
                close(inverse, a, rtol=0, atol=7e-6)
                assert dtype_name(inverse) == "float64"


def test_istft_round_trip_with_padding(T, warn_always):
    """A long hop or no centring leaves the end of the signal out of every frame: istft pads it with zeros."""
    rng = np.random.default_rng(11)
    windows = _windows(T)
    patterns = [((2, 20), dict(n_fft=3, hop_length=2, win_length=3, window="hamming3", center=False,
                               pad_mode="reflect", normalized=False, onesided=False)),
                ((2, 500), dict(n_fft=256, hop_length=254, win_length=256, window="hamming256", center=True,
                                pad_mode="constant", normalized=False, onesided=True))]
    for sizes, pattern in patterns:
        kwargs = dict(pattern, window=windows[pattern["window"]])
        pad_mode = kwargs.pop("pad_mode")
        for _ in range(5):
            a = rng.standard_normal(sizes)
            stft = T.stft(T.tensor(a), return_complex=True, pad_mode=pad_mode, **kwargs)
            with pytest.warns(UserWarning, match="The length of signal is shorter than the length parameter."):
                inverse = T.istft(stft, length=sizes[-1], **kwargs)
            frames = stft.shape[-1]
            kept = (kwargs["n_fft"] // 2 if kwargs["center"] else kwargs["n_fft"]) + kwargs["hop_length"] * (frames - 1)
            close(inverse[..., kept:], np.zeros(sizes[:-1] + (sizes[-1] - kept,)), rtol=0, atol=7e-6)
            close(inverse[..., :kept], a[..., :kept], rtol=0, atol=7e-6)


def test_istft_throws(T):
    stft = T.zeros((3, 5, 2))
    # a window of one point hopping 20: gaps that no frame covers
    raises(RuntimeError, None, T.istft, stft, n_fft=4, hop_length=20, win_length=1, window=T.ones(1))
    raises(RuntimeError, None, T.istft, stft, n_fft=4, win_length=4, window=T.zeros(4))  # zeros fail NOLA
    raises(RuntimeError, None, T.istft, T.zeros((3, 0, 2)), 2)  # empty inputs
    raises(RuntimeError, None, T.istft, T.zeros((0, 3, 2)), 2)


def test_istft_of_sine(T):
    """The one-frame spectrum of amplitude · sin(2π n x / L) has ∓i·amplitude·L/2 at bins n and L - n."""
    for amplitude, L, n in ((123, 5, 1), (150, 5, 2), (111, 5, 3), (160, 7, 4), (145, 8, 5), (80, 9, 6), (99, 10, 7)):
        x = np.arange(2 * L + 1, dtype=np.float64)
        original = amplitude * np.sin(2 * math.pi / L * x * n)
        spectrum = np.zeros((L // 2 + 1, 2), dtype=np.complex128)
        largest = amplitude * L / 2.0
        if n < spectrum.shape[0]:
            spectrum[n] = -1j * largest
        if 0 <= L - n < spectrum.shape[0]:
            spectrum[L - n] = 1j * largest  # symmetric about L // 2
        inverse = T.istft(T.tensor(spectrum), L, hop_length=L, win_length=L, window=T.ones(L, dtype=T.float64),
                          center=False, normalized=False)
        close(inverse, original[:inverse.shape[-1]], rtol=0, atol=1e-3)


def test_istft_linearity(T):
    rng = np.random.default_rng(12)
    windows = _windows(T)
    patterns = [((2, 7, 7), dict(n_fft=12, window="hann12", center=True, normalized=True, onesided=True)),
                ((2, 12, 7), dict(n_fft=12, window="hann12", center=True, normalized=False, onesided=False)),
                ((2, 12, 7), dict(n_fft=12, window="hamming12", center=True, normalized=True, onesided=False)),
                ((2, 7, 3), dict(n_fft=12, window="hamming12", center=False, normalized=False, onesided=True))]
    for size, pattern in patterns:
        kwargs = dict(pattern, window=windows[pattern["window"]])
        for _ in range(5):
            first = T.tensor(rng.standard_normal(size) + 1j * rng.standard_normal(size))
            second = T.tensor(rng.standard_normal(size) + 1j * rng.standard_normal(size))
            a, b = rng.uniform(size=2)
            expected = a * values(first.istft(**kwargs)) + b * values(second.istft(**kwargs))
            close(T.istft(a * first + b * second, **kwargs), expected, rtol=0, atol=1e-5)


def test_batch_istft(T):
    original = T.tensor([[4.0, 4.0, 4.0, 4.0, 4.0], [0.0] * 5, [0.0] * 5], dtype=T.complex64)
    single, multi = original.repeat(1, 1, 1), original.repeat(4, 1, 1)
    i_original = T.istft(original, n_fft=4, length=4)
    close(T.istft(single, n_fft=4, length=4), values(i_original.repeat(1, 1)), rtol=0, atol=1e-6)
    close(T.istft(multi, n_fft=4, length=4), values(i_original.repeat(4, 1)), rtol=0, atol=1e-6)
    assert dtype_name(i_original) == "float32"
    close(i_original, [1.0, 1.0, 1.0, 1.0], rtol=0, atol=1e-6)


GRAD_CASES = [dict(n_fft=6, hop_length=2), dict(n_fft=5, hop_length=2, center=False),
              dict(n_fft=6, hop_length=3, win_length=4, pad_mode="constant"), dict(n_fft=6, normalized=True),
              dict(n_fft=6, hop_length=2, onesided=False, pad_mode="circular")]


@pytest.mark.parametrize("kwargs", GRAD_CASES, ids=str)
def test_stft_gradcheck(T, kwargs):
    rng = np.random.default_rng(13)
    x = T.tensor(rng.standard_normal(14), requires_grad=True)
    w = T.tensor(rng.uniform(0.5, 1.5, kwargs.get("win_length", kwargs["n_fft"])), requires_grad=True)
    assert T.autograd.gradcheck(lambda x, w: T.stft(x, window=w, return_complex=True, **kwargs), (x, w))
    c = T.tensor(rng.standard_normal((2, 14)) + 1j * rng.standard_normal((2, 14)), requires_grad=True)
    complex_kwargs = dict(kwargs, onesided=False)
    assert T.autograd.gradcheck(lambda c: T.stft(c, window=w.detach(), **complex_kwargs), (c,))
    v = T.tensor(values(w) * np.exp(1j * rng.uniform(0, 6, w.shape[0])), requires_grad=True)  # a complex window
    assert T.autograd.gradcheck(lambda x, v: T.stft(x, window=v, **complex_kwargs), (x, v))


@pytest.mark.parametrize("kwargs", GRAD_CASES, ids=str)
def test_istft_gradcheck(T, kwargs):
    rng = np.random.default_rng(14)
    kwargs = dict(kwargs)
    kwargs.pop("pad_mode", None)
    w = T.tensor(rng.uniform(0.5, 1.5, kwargs.get("win_length", kwargs["n_fft"])), requires_grad=True)
    frequencies = kwargs["n_fft"] if kwargs.get("onesided") is False else kwargs["n_fft"] // 2 + 1
    spectrum = rng.standard_normal((frequencies, 5)) + 1j * rng.standard_normal((frequencies, 5))
    s = T.tensor(spectrum, requires_grad=True)
    return_complex = kwargs.get("onesided") is False
    assert T.autograd.gradcheck(lambda s, w: T.istft(s, window=w, return_complex=return_complex, **kwargs), (s, w))
    if kwargs.get("onesided") is False:  # a real signal from a two-sided spectrum: its first half's gradient
        assert T.autograd.gradcheck(lambda s, w: T.istft(s, window=w, **kwargs), (s, w))


def test_istft_of_a_two_sided_spectrum_as_a_real_signal(T):
    """(beyond PyTorch's test) return_complex=False reads only the first n_fft // 2 + 1 frequencies of a two-sided
    spectrum, as a onesided one: not the real part of the full inverse, where the spectrum is not Hermitian."""
    rng = np.random.default_rng(15)
    spectrum = rng.standard_normal((2, 8, 9)) + 1j * rng.standard_normal((2, 8, 9))
    w = rng.uniform(0.5, 1.0, 8)
    result = T.istft(T.tensor(spectrum), 8, window=T.tensor(w), onesided=False)
    expected = istft_reference(spectrum[:, :5], 8, window=w, onesided=True)
    close(result, expected, rtol=1e-9, atol=1e-9)
    assert dtype_name(result) == "float64"
    full = istft_reference(spectrum, 8, window=w, onesided=False, return_complex=True)
    close(T.istft(T.tensor(spectrum), 8, window=T.tensor(w), onesided=False, return_complex=True), full, rtol=1e-9,
          atol=1e-9)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_stft_and_istft_argument_errors(T):
    """(beyond PyTorch's test) the dtypes and arguments PyTorch refuses, which chainrule once took."""
    x = T.tensor(np.random.default_rng(16).standard_normal(20))
    raises(RuntimeError, "expected a tensor of floating point or complex values", T.stft, x.long(), 8,
           return_complex=True)
    raises(RuntimeError, "doesn't support tensors of type: Half", T.stft, x.half(), 8, window=T.ones(8).half(),
           return_complex=True)
    raises(NotImplementedError, "Unrecognised padding mode bogus", T.stft, x, 8, pad_mode="bogus",
           return_complex=True)
    spectrum = T.stft(x, 8, window=T.ones(8, dtype=T.float64), return_complex=True)
    raises(RuntimeError, "Complex windows are incompatible with return_complex=False", T.istft, spectrum, 8,
           window=T.ones(8, dtype=T.complex128))
    raises(RuntimeError, "Cannot have onesided output if window or input is complex", T.istft, spectrum, 8,
           return_complex=True)
    raises(RuntimeError, "expected 0 < hop_length <= win_length", T.istft, spectrum, 8, hop_length=0)
    raises(RuntimeError, "expected 0 < hop_length <= win_length", T.istft, spectrum, 8, hop_length=5, win_length=4)
    raises(RuntimeError, "expected 0 < win_length <= n_fft", T.istft, spectrum, 8, win_length=9)
    raises(RuntimeError, "Invalid window shape", T.istft, spectrum, 8, window=T.ones(7))
    raises(RuntimeError, "expected the frequency dimension .* n_fft / 2 \\+ 1 when onesided=True, but got 5",
           T.istft, spectrum, 10)
    raises(RuntimeError, "expected the frequency dimension .* n_fft when onesided=False, but got 5", T.istft,
           spectrum, 8, onesided=False)
    raises(RuntimeError, "window overlap add min", T.istft, spectrum, 8, window=T.zeros(8))
    # one centred frame leaves no sample after n_fft // 2 are cut from both ends
    raises(RuntimeError, "min\\(\\): Expected reduction dim", T.istft, spectrum[:, :1], 8)
