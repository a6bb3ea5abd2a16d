"""Window functions for spectral analysis, as PyTorch's factories: hann, hamming, blackman,
bartlett and kaiser windows of ``window_length`` points.

A symmetric window (``periodic=False``) of N points is w[n] for n = 0..N-1 with the formulas
below; a periodic one (the default, for use with an FFT) is the symmetric window of N + 1
points without its last. With M = N - 1:

    hann:      0.5 - 0.5 cos(2πn/M)
    hamming:   α - β cos(2πn/M)                       (α = 0.54, β = 0.46)
    blackman:  0.42 - 0.5 cos(2πn/M) + 0.08 cos(4πn/M)
    bartlett:  1 - |2n/M - 1|
    kaiser:    I0(β √(1 - (2n/M - 1)²)) / I0(β)       (β = 12)

A window of one point is [1]; of none, empty. Computed in float64, returned in ``dtype``.
"""


from ..backend import get_default_dtype, xp
from ..tensor import Tensor
from .axes import int_argument
from .conversion import type_name
from .names import names


def _overload_prefix(name, given):
    """PyTorch's overloads of a window with parameters each take a prefix of (periodic, alpha, beta): a later
    parameter only with every earlier one (``hamming_window(6, alpha=0.5)`` is refused: periodic is missing).
    ``given``: each optional parameter's name and whether it was given, in order."""
    names_given = [name_ for name_, was in given if was]
    if names_given != [name_ for name_, _ in given[:len(names_given)]]:
        raise TypeError(f"{name}() received an invalid combination of arguments - got (int, "
                        f"{', '.join(f'{n}=...' for n in names_given)}): each of {', '.join(n for n, _ in given)} "
                        "is taken only with those before it")


def _window(name, window_length, periodic, dtype, requires_grad, formula):
    window_length = int_argument(window_length, name, "window_length", 1, arrays=False)
    if window_length < 0:
        raise RuntimeError(f"{name} requires non-negative window_length, got window_length={window_length}")
    dtype = dtype or get_default_dtype()
    if xp.dtype(dtype).kind == "c":  # (PyTorch's windows are made from arange, which has no complex kernel)
        raise NotImplementedError(f'"arange_cpu" not implemented for \'{type_name(xp.dtype(dtype))}\'')
    if xp.dtype(dtype).kind != "f":
        raise RuntimeError(f"{name} expects floating point dtypes, got: {xp.dtype(dtype)}")
    if window_length <= 1:
        values = xp.ones(window_length)
    else:
        points = window_length + 1 if periodic else window_length
        n = xp.arange(points, dtype=xp.float64)
        values = formula(n, points - 1)[:window_length]
    return Tensor._make(values.astype(dtype)).requires_grad_(requires_grad)


def _cosines(*coefficients):
    """Σ_k (-1)^k a_k cos(2πkn/M): the hann, hamming and blackman family."""
    def formula(n, m):
        return sum((-1) ** k * a * xp.cos(2 * xp.pi * k * n / m) for k, a in enumerate(coefficients))
    return formula


@names("hann_window", method=False)
def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, pin_memory=False,
                requires_grad=False):
    return _window("hann_window", window_length, periodic, dtype, requires_grad, _cosines(0.5, 0.5))


@names("hamming_window", method=False)
def hamming_window(window_length, periodic=None, alpha=None, beta=None, *, dtype=None, layout=None, device=None,
                   pin_memory=False, requires_grad=False):
    _overload_prefix("hamming_window", [("periodic", periodic is not None), ("alpha", alpha is not None),
                                        ("beta", beta is not None)])
    periodic, alpha, beta = (True if periodic is None else periodic, 0.54 if alpha is None else alpha,
                             0.46 if beta is None else beta)
    return _window("hamming_window", window_length, periodic, dtype, requires_grad, _cosines(alpha, beta))


@names("blackman_window", method=False)
def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, pin_memory=False,
                    requires_grad=False):
    return _window("blackman_window", window_length, periodic, dtype, requires_grad, _cosines(0.42, 0.5, 0.08))


@names("bartlett_window", method=False)
def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, pin_memory=False,
                    requires_grad=False):
    return _window("bartlett_window", window_length, periodic, dtype, requires_grad,
                   lambda n, m: 1 - xp.abs(2 * n / m - 1))


@names("kaiser_window", method=False)
def kaiser_window(window_length, periodic=None, beta=None, *, dtype=None, layout=None, device=None,
                  pin_memory=False, requires_grad=False):
    _overload_prefix("kaiser_window", [("periodic", periodic is not None), ("beta", beta is not None)])
    periodic, beta = True if periodic is None else periodic, 12.0 if beta is None else beta
    return _window("kaiser_window", window_length, periodic, dtype, requires_grad,
                   lambda n, m: xp.i0(beta * xp.sqrt(xp.clip(1 - (2 * n / m - 1) ** 2, 0, None))) / xp.i0(beta))
