"""``autograd.signal.windows``: PyTorch's ``torch.signal.windows``, SciPy's window functions of M points.

A symmetric window (``sym=True``, the default: for filter design) is w[n], n = 0..M-1, by the formulas
below; a periodic one (``sym=False``: for spectral analysis with an FFT) is the symmetric window of
M + 1 points without its last. With N = M - 1 (of the symmetric window):

    general_cosine:   Σ_k (-1)^k a_k cos(2πkn/N)           (hann: a = ½, ½; blackman: 0.42, 0.5, 0.08)
    general_hamming:  α - (1 - α) cos(2πn/N)               (hamming: α = 0.54; hann: α = ½)
    bartlett:         1 - |2n/N - 1|
    cosine:           sin(π (n + ½) / M)
    gaussian:         exp(-(n - N/2)² / (2σ²))
    exponential:      exp(-|n - c| / τ)                    (c = N/2 unless given, for a periodic window)
    kaiser:           I0(β √(1 - (2n/N - 1)²)) / I0(β)

Computed in float64, returned in ``dtype`` (the default dtype unless given).
"""

import math

from ..backend import get_default_dtype, xp
from ..tensor import Tensor

NUTTALL = (0.3635819, 0.4891775, 0.1365995, 0.0106411)


def _window(M, sym, dtype, requires_grad, formula, name="general_cosine"):
    """The window of M points from ``formula(n, points)``, n = 0..points-1, points = M (sym) or M + 1."""
    if M < 0:
        raise ValueError(f"{name} requires non-negative window length, got M={M}")
    dtype = xp.dtype(dtype or get_default_dtype())
    if dtype not in (xp.dtype(xp.float32), xp.dtype(xp.float64)):
        raise ValueError(f"{name} expects float32 or float64 dtypes, got: {dtype}")
    if M <= 1:
        values = xp.ones(M)
    else:
        points = M if sym else M + 1
        values = formula(xp.arange(points, dtype=xp.float64), points)[:M]
    return Tensor._make(values.astype(dtype)).requires_grad_(requires_grad)


def general_cosine(M, *, a, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """w[n] = Σ_k (-1)^k a_k cos(2πkn/(M-1)) (the sum of cosines a_k, alternating in sign)."""
    if not isinstance(a, (list, tuple)):
        raise TypeError("Coefficients must be a list/tuple")
    return _window(M, sym, dtype, requires_grad, lambda n, points: sum(
        (-1) ** k * c * xp.cos(2 * math.pi * k * n / (points - 1)) for k, c in enumerate(a)))


def general_hamming(M, *, alpha=0.54, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """w[n] = α - (1 - α) cos(2πn/(M-1))."""
    return general_cosine(M, a=[alpha, 1.0 - alpha], sym=sym, dtype=dtype, requires_grad=requires_grad)


def hann(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_hamming(M, alpha=0.5, sym=sym, dtype=dtype, requires_grad=requires_grad)


def hamming(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_hamming(M, sym=sym, dtype=dtype, requires_grad=requires_grad)


def blackman(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    return general_cosine(M, a=[0.42, 0.5, 0.08], sym=sym, dtype=dtype, requires_grad=requires_grad)


def nuttall(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """Nuttall's minimal 4-term Blackman-Harris window."""
    return general_cosine(M, a=list(NUTTALL), sym=sym, dtype=dtype, requires_grad=requires_grad)


def bartlett(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """The triangle: w[n] = 1 - |2n/(M-1) - 1|."""
    return _window(M, sym, dtype, requires_grad, lambda n, points: 1 - xp.abs(2 * n / (points - 1) - 1), "bartlett")


def cosine(M, *, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """The sine window: w[n] = sin(π (n + ½) / M)."""
    return _window(M, sym, dtype, requires_grad, lambda n, points: xp.sin(math.pi * (n + 0.5) / points), "cosine")


def gaussian(M, *, std=1.0, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """w[n] = exp(-(n - (M-1)/2)² / (2σ²)), σ = ``std``."""
    if std <= 0:
        raise ValueError(f"Standard deviation must be positive, got: {std} instead.")
    return _window(M, sym, dtype, requires_grad,
                   lambda n, points: xp.exp(-((n - (points - 1) / 2) ** 2) / (2 * std * std)), "gaussian")


def exponential(M, *, center=None, tau=1.0, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """w[n] = exp(-|n - c| / τ), c = ``center`` (for a periodic window) or the middle."""
    if tau <= 0:
        raise ValueError(f"Tau must be positive, got: {tau} instead.")
    if sym and center is not None:
        raise ValueError("Center must be None for symmetric windows")
    return _window(M, sym, dtype, requires_grad, lambda n, points: xp.exp(
        -xp.abs(n - ((points - 1) / 2 if center is None else center)) / tau), "exponential")


def kaiser(M, *, beta=12.0, sym=True, dtype=None, layout=None, device=None, requires_grad=False):
    """w[n] = I0(β √(1 - (2n/(M-1) - 1)²)) / I0(β)."""
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got: {beta} instead.")
    return _window(M, sym, dtype, requires_grad, lambda n, points: xp.i0(
        beta * xp.sqrt(xp.clip(1 - (2 * n / (points - 1) - 1) ** 2, 0, None))) / xp.i0(beta), "kaiser")
