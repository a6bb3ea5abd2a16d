"""autograd.stft and istft: known spectra and the round trip without PyTorch, gradients (signal and
window) against finite differences, and PyTorch's values, gradients and errors."""

import warnings

import numpy as np
import pytest

import autograd
from autograd import Tensor

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(0)
SIGNAL = RNG.standard_normal((2, 40))
COMPLEX_SIGNAL = SIGNAL + 1j * RNG.standard_normal((2, 40))


def test_a_sinusoid_lands_in_its_frequency_bin():
    t = np.arange(64)
    x = autograd.tensor(np.cos(2 * np.pi * 4 * t / 16))  # 4 cycles per 16 samples: bin 4 of n_fft = 16
    spectrum = autograd.stft(x, 16, hop_length=4, window=autograd.hann_window(16, dtype=autograd.float64),
                             return_complex=True)
    assert spectrum.shape == (9, 17) and spectrum.dtype == autograd.complex128
    magnitude = spectrum.abs().numpy()
    assert (magnitude[:, 4:13].argmax(0) == 4).all()  # every frame away from the ends peaks at bin 4
    np.testing.assert_allclose(magnitude[4, 8], 4.0, rtol=1e-12)  # Σ hann · cos · e^(-iωk) = 16/2 · 1/2


@pytest.mark.parametrize("options", [dict(), dict(hop_length=3), dict(center=False), dict(normalized=True)])
def test_istft_inverts_stft(options):
    window = autograd.hann_window(8, dtype=autograd.float64)
    x = autograd.tensor(SIGNAL)
    spectrum = autograd.stft(x, 8, window=window, return_complex=True, **options)
    if options.get("center") is False:  # the periodic Hann window is 0 at the first sample: not invertible there
        with pytest.raises(RuntimeError, match="window overlap add min"):
            autograd.istft(spectrum, 8, window=window, **options)
        return
    back = autograd.istft(spectrum, 8, window=window, length=40, **options)
    np.testing.assert_allclose(back.numpy(), SIGNAL, atol=1e-12)


def test_gradients_of_signal_and_window_match_finite_differences():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = Tensor(RNG.standard_normal(12), requires_grad=True)
        w = Tensor(np.hanning(6) + 0.1, requires_grad=True)
        assert autograd.gradcheck(lambda x, w: autograd.stft(x, 6, hop_length=2, window=w, return_complex=True),
                                  [x, w])
        assert autograd.gradcheck(lambda x: autograd.stft(x, 5, hop_length=2, center=False, return_complex=False,
                                                          pad_mode="constant"), [x])
        spectrum = autograd.stft(Tensor(RNG.standard_normal(12)), 6, hop_length=2, window=w.detach(),
                                 return_complex=True).detach().requires_grad_()
        assert autograd.gradcheck(lambda s, w: autograd.istft(s, 6, hop_length=2, window=w, length=12),
                                  [spectrum, w])


@pytest.mark.filterwarnings("ignore:A window was not provided")
def test_errors_and_warnings():
    x = autograd.tensor(SIGNAL[0])
    with pytest.raises(RuntimeError, match="stft requires the return_complex parameter be given for real inputs"):
        autograd.stft(x, 8, window=autograd.ones(8))
    with pytest.raises(RuntimeError, match="expected a 1D or 2D tensor"):
        autograd.stft(autograd.zeros(2, 3, 20), 8, window=autograd.ones(8), return_complex=True)
    with pytest.raises(RuntimeError, match="expected 0 < n_fft < 40, but got n_fft=50"):
        autograd.stft(x, 50, center=False, window=autograd.ones(50), return_complex=True)
    with pytest.raises(RuntimeError, match="expected hop_length > 0, but got hop_length=0"):
        autograd.stft(x, 8, hop_length=0, window=autograd.ones(8), return_complex=True)
    with pytest.raises(RuntimeError, match="expected 0 < win_length <= n_fft, but got win_length=9"):
        autograd.stft(x, 8, win_length=9, return_complex=True)
    with pytest.raises(RuntimeError, match="window tensor of size equal to win_length=8"):
        autograd.stft(x, 8, window=autograd.ones(6), return_complex=True)
    with pytest.raises(RuntimeError, match="Cannot have onesided output if window or input is complex"):
        autograd.stft(autograd.tensor(COMPLEX_SIGNAL[0]), 8, window=autograd.ones(8), onesided=True)
    with pytest.warns(UserWarning, match="A window was not provided"):
        autograd.stft(x, 8, return_complex=True)
    with pytest.warns(UserWarning, match="return_complex=False is deprecated"):
        assert autograd.stft(x, 8, window=autograd.ones(8), return_complex=False).shape == (5, 21, 2)
    with pytest.raises(RuntimeError, match="requires a complex-valued input"):
        autograd.istft(autograd.zeros(5, 3), 8)
    with pytest.raises(RuntimeError, match="match n_fft / 2 \\+ 1 when onesided=True, but got 4"):
        autograd.istft(autograd.zeros(4, 3, dtype=autograd.complex64), 8, onesided=True)


STFT_OPTIONS = [dict(n_fft=8, return_complex=True),
                dict(n_fft=8, hop_length=3, win_length=6, window="hann", return_complex=True),
                dict(n_fft=8, center=False, return_complex=True, normalized=True),
                dict(n_fft=10, pad_mode="constant", return_complex=True, window="hann"),
                dict(n_fft=8, pad_mode="replicate", return_complex=False),
                dict(n_fft=8, pad_mode="circular", return_complex=True, onesided=False),
                dict(n_fft=7, hop_length=2, return_complex=True)]


def _run(library, function, signal, options, signal_is_spectrum=False):
    options = dict(options)
    if options.get("window") == "hann":
        options["window"] = library.hann_window(options.get("win_length", options["n_fft"]), dtype=library.float64,
                                                requires_grad=True)
    window = options.get("window")
    x = library.tensor(signal, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = function(library)(x, **options)
    complex_output = y.dtype.is_complex if library is torch else y.dtype.kind == "c"
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(tuple(y.shape)) + (1j * rng.standard_normal(tuple(y.shape)) if complex_output else 0)
    product = y * library.tensor(weights)
    (product.real if complex_output else product).sum().backward()
    return (y.detach().resolve_conj().numpy(), x.grad.resolve_conj().numpy(),
            None if window is None else window.grad.numpy())


@needs_torch
@pytest.mark.parametrize("signal", [SIGNAL, COMPLEX_SIGNAL, SIGNAL[0]], ids=["real", "complex", "1-d"])
@pytest.mark.parametrize("options", STFT_OPTIONS)
def test_stft_against_pytorch(signal, options):
    if np.iscomplexobj(signal) and options.get("onesided") is not False:
        options = dict(options, onesided=False)
    ours = _run(autograd, lambda library: library.stft, signal, options)
    theirs = _run(torch, lambda library: library.stft, signal, options)
    for a, b in zip(ours, theirs):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("options", [dict(n_fft=8, window="hann"),
                                     dict(n_fft=8, hop_length=3, window="hann", length=40),
                                     dict(n_fft=8, normalized=True, window="hann"), dict(n_fft=8),
                                     dict(n_fft=8, window="hann", onesided=False, return_complex=True)])
def test_istft_against_pytorch(options):
    stft_options = {k: v for k, v in options.items() if k in ("n_fft", "hop_length", "normalized", "onesided")}
    signal = COMPLEX_SIGNAL if options.get("return_complex") else SIGNAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectrum = torch.stft(torch.tensor(signal), window=torch.hann_window(8, dtype=torch.float64),
                              return_complex=True, **stft_options).numpy()
    ours = _run(autograd, lambda library: library.istft, spectrum, options)
    theirs = _run(torch, lambda library: library.istft, spectrum, options)
    for a, b in zip(ours, theirs):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
