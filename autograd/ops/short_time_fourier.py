"""The short-time Fourier transform and its inverse (``autograd.stft``, ``autograd.istft``), made of
differentiable ops: frames, a window, the transforms of ops/fourier.py, and an overlap-add.

    X[ω, m] = Σ_k w[k] x[m·hop + k] e^(-2πi ωk/n_fft)

for frame m (hop samples apart) and frequency ω. istft inverts it: the inverse transform of each
frame, times the window, added where the frames overlap, divided by the sum of the squared window
over the same places (Σ_m w²[t - m·hop], which must not vanish: the "NOLA" condition).
With ``center`` the signal is padded by n_fft // 2 at both ends first (``pad_mode``), so frame m
is centred on sample m·hop.
"""

import warnings

from ..backend import xp
from ..graph import program_stacklevel
from ..tensor import Tensor
from .conjugation import view_as_real
from .fourier import FFT, InverseRealFFT, RealFFT
from .joins import cat
from .names import names
from .padding import copying_pad


def _padded(x, amount, mode):
    """x padded by ``amount`` samples at both ends of its last dim: 'reflect' (mirrored about the end
    samples), 'replicate', 'circular' or 'constant' (zeros)."""
    n = x.shape[-1]
    if mode == "constant":
        zeros = _zeros(x, amount)
        return cat([zeros, x, zeros], -1)
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if mode == "reflect" and amount >= n:
        raise RuntimeError(f"stft: reflect padding of {amount} samples needs a signal longer than {amount}, "
                           f"got {n} samples")
    return copying_pad(x, [(0, 0)] * (x.ndim - 1) + [(amount, amount)], mode)


def _zeros(x, amount):
    """``amount`` zeros to put at an end of x's last dim."""
    return Tensor._make(xp.zeros(x.shape[:-1] + (amount,), dtype=x._data.dtype))


def _window(window, win_length, n_fft, dtype, op="stft"):
    """The window (ones when None) centred in n_fft samples, zeros around it."""
    if window is None:
        window = Tensor._make(xp.ones(win_length, dtype=dtype))
    elif window.ndim != 1 or window.shape[0] != win_length:
        if op == "istft":
            raise RuntimeError("istft: Invalid window shape. window has to be 1D and length of `win_length`")
        raise RuntimeError(f"stft: expected a 1D window tensor of size equal to win_length={win_length}, but got "
                           f"window with size {list(window.shape)}")
    left = (n_fft - win_length) // 2
    if left == 0 and win_length == n_fft:
        return window
    zeros = Tensor._make(xp.zeros(left, dtype=window._data.dtype))
    rest = Tensor._make(xp.zeros(n_fft - win_length - left, dtype=window._data.dtype))
    return cat([zeros, window, rest])


@names("stft")
def stft(input, n_fft, hop_length=None, win_length=None, window=None, center=True, pad_mode="reflect",
         normalized=False, onesided=None, return_complex=None, align_to_window=None):
    """The spectrum of each frame of n_fft samples, hop_length (n_fft // 4) apart: shape
    (batch?, n_fft // 2 + 1 or n_fft frequencies, frames), complex. Without ``center``,
    ``align_to_window`` starts each frame where its window (of win_length < n_fft) starts, not
    (n_fft - win_length) // 2 samples before it."""
    hop = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    if input.ndim not in (1, 2):
        raise RuntimeError(f"stft: expected a 1D or 2D tensor, got shape {tuple(input.shape)}")
    complex_input = input.dtype.kind == "c" or (window is not None and window.dtype.kind == "c")
    if return_complex is None:
        if not complex_input:
            raise RuntimeError("stft requires the return_complex parameter be given for real inputs, and will "
                               "further require that return_complex=True in a future PyTorch release.")
        return_complex = True
    if not return_complex:
        warnings.warn("stft with return_complex=False is deprecated. In a future pytorch release, stft will return "
                      "complex tensors for all inputs, and return_complex=False will raise an error.", UserWarning,
                      stacklevel=program_stacklevel())
    if window is None:
        warnings.warn("A window was not provided. A rectangular window will be applied, which is known to cause "
                      "spectral leakage. Other windows such as hann_window or hamming_window are recommended to "
                      "reduce spectral leakage.", UserWarning, stacklevel=program_stacklevel())
    if center and align_to_window is not None:
        raise RuntimeError("stft align_to_window should only be set when center = false")
    if input.dtype.kind not in "fc":
        raise RuntimeError(f"stft: expected a tensor of floating point or complex values, got {input.dtype}")
    if input.dtype == xp.float16:
        raise RuntimeError("MKL FFT doesn't support tensors of type: Half")
    x = input
    if center:
        x = _padded(x, n_fft // 2, pad_mode)
    elif align_to_window and 0 < win_length < n_fft:
        # each frame starts where its window starts (the window sits (n_fft - win_length) // 2 points into the
        # frame): zeros before and after, which the window's zeros cover
        left = (n_fft - win_length) // 2
        x = cat([_zeros(x, left), x, _zeros(x, n_fft - win_length - left)], -1)
    length = x.shape[-1]
    if not 0 < n_fft <= length:
        raise RuntimeError(f"stft: expected 0 < n_fft < {length}, but got n_fft={n_fft}")
    if hop <= 0:
        raise RuntimeError(f"stft: expected hop_length > 0, but got hop_length={hop}")
    if not 0 < win_length <= n_fft:
        raise RuntimeError(f"stft: expected 0 < win_length <= n_fft, but got win_length={win_length}")
    onesided = not complex_input if onesided is None else onesided
    if onesided and complex_input:
        raise RuntimeError("Cannot have onesided output if window or input is complex")
    frames = x.unfold(-1, n_fft, hop) * _window(window, win_length, n_fft, xp.finfo(x.dtype).dtype)
    last, norm = frames.ndim - 1, "ortho" if normalized else "backward"
    transform = RealFFT if onesided else FFT
    spectrum = transform.apply(frames, dims=(last,), sizes=(n_fft,), norm=norm, **({} if onesided else
                                                                                   {"inverse": False}))
    spectrum = spectrum.transpose(-1, -2)
    return spectrum if return_complex else view_as_real(spectrum)


@names("istft")
def istft(input, n_fft, hop_length=None, win_length=None, window=None, center=True, normalized=False, onesided=None,
          length=None, return_complex=False):
    """The signal whose stft is ``input`` (batch?, frequencies, frames): each frame's inverse transform,
    windowed, overlap-added and divided by the overlap-added squared window."""
    hop = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    if input.dtype.kind != "c":
        raise RuntimeError("istft requires a complex-valued input tensor matching the output from stft with "
                           "return_complex=True.")
    if input.ndim not in (2, 3):
        raise RuntimeError(f"istft: expected a tensor with 2 or 3 dimensions of complex numbers, got shape "
                           f"{tuple(input.shape)}")
    if not 0 < hop <= win_length:  # (a hop past the window leaves samples no frame covers)
        raise RuntimeError(f"istft: expected 0 < hop_length <= win_length, but got hop_length={hop} and "
                           f"win_length={win_length}")
    if not 0 < win_length <= n_fft:
        raise RuntimeError(f"istft: expected 0 < win_length <= n_fft, but got win_length={win_length}")
    frequencies = input.shape[-2]
    onesided = frequencies != n_fft if onesided is None else onesided
    if onesided and frequencies != n_fft // 2 + 1:
        raise RuntimeError(f"istft: expected the frequency dimension (3rd to the last) of the input tensor to match "
                           f"n_fft / 2 + 1 when onesided=True, but got {frequencies}")
    if not onesided and frequencies != n_fft:
        raise RuntimeError(f"istft: expected the frequency dimension (3rd to the last) of the input tensor to match "
                           f"n_fft when onesided=False, but got {frequencies}")
    if return_complex and onesided:
        raise RuntimeError("Cannot have onesided output if window or input is complex")
    if window is not None and window.dtype.kind == "c" and not return_complex:
        raise RuntimeError("Complex windows are incompatible with return_complex=False")
    if window is None:
        warnings.warn("A window was not provided. A rectangular window will be applied. Please provide the same "
                      "window used by stft to make the inversion lossless.", UserWarning,
                      stacklevel=program_stacklevel())
    w = _window(window, win_length, n_fft, xp.finfo(input.dtype).dtype, "istft")
    spectra = input.transpose(-1, -2)  # (batch?, frames, frequencies)
    last, norm = spectra.ndim - 1, "ortho" if normalized else "backward"
    if return_complex:
        frames = FFT.apply(spectra, dims=(last,), sizes=(n_fft,), norm=norm, inverse=True)
    else:  # a real signal from the first n_fft // 2 + 1 frequencies, as PyTorch reads even a two-sided spectrum
        frames = InverseRealFFT.apply(spectra[..., :n_fft // 2 + 1], dims=(last,), sizes=(n_fft,), norm=norm)
    frames = frames * w
    count = frames.shape[-2]
    full = n_fft + hop * (count - 1)
    places = (xp.arange(count)[:, None] * hop + xp.arange(n_fft)).reshape(-1)  # where each sample lands
    signal = Tensor._make(xp.zeros(frames.shape[:-2] + (full,), dtype=frames._data.dtype))
    signal = signal.index_add(-1, Tensor._make(places), frames.reshape(*frames.shape[:-2], -1))
    squares = (w * w).repeat(count)  # (differentiable: a window that requires grad gets its gradient)
    envelope = Tensor._make(xp.zeros(full, dtype=squares._data.dtype)).index_add(0, Tensor._make(places), squares)
    start = n_fft // 2 if center else 0
    end = (full - (n_fft // 2 if center else 0)) if length is None else min(start + length, full)
    envelope = envelope[start:end]
    if not envelope.numel():  # (no sample left: PyTorch's check of the envelope's minimum finds none)
        raise RuntimeError("min(): Expected reduction dim to be specified for input.numel() == 0. Specify the "
                           "reduction dim with the 'dim' argument.")
    smallest = float(xp.abs(envelope._data).min())
    if smallest < 1e-11:
        raise RuntimeError(f"istft: window overlap add min: {smallest:g} (the window's squares must not sum to zero "
                           "anywhere: choose a window and hop_length that overlap)")
    signal = signal[..., start:end] / envelope
    if length is not None and signal.shape[-1] < length:
        warnings.warn("The length of signal is shorter than the length parameter. Result is being padded with zeros "
                      "in the tail. Please check your center and hop_length settings.", UserWarning,
                      stacklevel=program_stacklevel())
        signal = cat([signal, _zeros(signal, length - signal.shape[-1])], -1)
    return signal
