"""The window functions ported from PyTorch's test/test_tensor_creation_ops.py (TestTensorCreation:
test_signal_window_functions, test_kaiser_window) and the window OpInfos of torch.signal.windows: hann,
hamming, blackman, bartlett and kaiser windows against NumPy's, periodic and symmetric, their dtypes,
requires_grad and errors.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`). PyTorch
compares with scipy.signal.get_window; NumPy's np.hanning etc. are the symmetric windows, and a periodic
window of N points is the symmetric one of N + 1 without its last point (scipy's fftbins=True).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, values

SIZES = [0, 1, 2, 5, 10, 50, 100, 1024, 2048]


def _symmetric(name, n, **kwargs):
    if name == "kaiser":
        return np.kaiser(n, kwargs["beta"])
    if name == "hamming" and kwargs:
        m = np.arange(n)
        return kwargs["alpha"] - kwargs["beta"] * np.cos(2 * np.pi * m / (n - 1)) if n > 1 else np.ones(n)
    return {"hann": np.hanning, "hamming": np.hamming, "blackman": np.blackman, "bartlett": np.bartlett}[name](n)


def reference(name, n, periodic, **kwargs):
    if n <= 1:
        return np.ones(n)
    return _symmetric(name, n + 1, **kwargs)[:-1] if periodic else _symmetric(name, n, **kwargs)


CASES = [("hann", {}), ("hamming", {}), ("bartlett", {}), ("blackman", {}), ("hamming", {"alpha": 0.5, "beta": 0.3}),
         ("kaiser", {"beta": 12.0}), ("kaiser", {"beta": 3.7}), ("kaiser", {"beta": 0.0})]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, kwargs", CASES, ids=str)
def test_signal_window_functions(T, name, kwargs, dtype):
    op = getattr(T, name + "_window")
    for size in SIZES:
        for periodic in (True, False):
            result = op(size, periodic, *kwargs.values(), dtype=getattr(T, dtype))
            close(result, reference(name, size, periodic, **kwargs), rtol=1e-5 if dtype == "float32" else 1e-12,
                  atol=1e-6 if dtype == "float32" else 1e-12)
            assert dtype_name(result) == dtype


@pytest.mark.parametrize("name", ["hann", "hamming", "bartlett", "blackman", "kaiser"])
def test_window_defaults_and_arguments(T, name):
    op = getattr(T, name + "_window")
    result = op(7)
    assert dtype_name(result) == "float32"  # the default dtype
    close(result, reference(name, 7, True, **({"beta": 12.0} if name == "kaiser" else {})), rtol=1e-5, atol=1e-6)
    assert op(3, requires_grad=True).requires_grad
    assert not op(3).requires_grad
    for dtype in (T.int64, T.int32, T.bool):
        raises(RuntimeError, "floating point", op, 3, dtype=dtype)
    raises(RuntimeError, "requires non-negative window_length, got window_length=-1", op, -1)
    raises(NotImplementedError, "not implemented for 'ComplexFloat'", op, 3, dtype=T.complex64)
    for length in (4.0, True):
        raises(TypeError, f"argument 'window_length' \\(position 1\\) must be int, not {type(length).__name__}", op,
               length)
    close(op(T.tensor(4)), values(op(4)))  # an integer 0-d tensor is a length
    close(op(np.int64(4)), values(op(4)))
    half = op(10, dtype=T.float16)
    assert dtype_name(half) == "float16"
    close(half, reference(name, 10, True, **({"beta": 12.0} if name == "kaiser" else {})), rtol=1e-3, atol=1e-3)


def test_kaiser_window(T):
    """PyTorch's test_kaiser_window: betas from 0 to 30, lengths up to 1024."""
    rng = np.random.default_rng(0)
    for size in (0, 1, 2, 5, 32, 50, 100, 1024):
        for periodic in (True, False):
            beta = float(rng.uniform(0, 30))
            close(T.kaiser_window(size, periodic, beta, dtype=T.float64), reference("kaiser", size, periodic,
                                                                                    beta=beta), rtol=1e-10, atol=1e-12)


def test_windows_are_the_stft_window_of_choice(T):
    """A periodic Hann window hopped by a quarter of its length overlap-adds to a constant (2): istft inverts stft."""
    w = T.hann_window(16, dtype=T.float64)
    overlap = np.zeros(16 + 4 * 7)
    for k in range(8):
        overlap[4 * k:4 * k + 16] += values(w)
    close(overlap[12:32], np.full(20, 2.0), rtol=1e-12, atol=1e-12)  # where four windows overlap
    a = np.random.default_rng(1).standard_normal(64)
    spectrum = T.stft(T.tensor(a), 16, hop_length=4, window=w, return_complex=True)
    close(T.istft(spectrum, 16, hop_length=4, window=w, length=64), a, rtol=1e-10, atol=1e-10)


def test_signal_windows_namespace(T):
    windows = T.signal.windows
    close(windows.hann(8, sym=True), np.hanning(8), rtol=1e-6, atol=1e-7)
    close(windows.hann(8, sym=False), np.hanning(9)[:-1], rtol=1e-6, atol=1e-7)
    close(windows.kaiser(9, beta=4.0), np.kaiser(9, 4.0), rtol=1e-6, atol=1e-7)
    n = np.arange(10)
    close(windows.gaussian(10, std=2.0), np.exp(-((n - 4.5) / 2.0) ** 2 / 2), rtol=1e-6, atol=1e-7)
    close(windows.cosine(10), np.sin(np.pi * (n + 0.5) / 10), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "nuttall", "bartlett", "cosine", "gaussian",
                                  "exponential", "kaiser", "general_hamming"])
def test_signal_windows_against_their_formulas(T, name):
    """torch.signal.windows: each window of M points, symmetric and periodic (the symmetric one of M + 1 points
    without its last), as SciPy defines them (checked against the formulas in NumPy)."""
    def formula(n, points):
        m = points - 1
        cosines = {"hann": (0.5, 0.5), "hamming": (0.54, 0.46), "general_hamming": (0.54, 0.46),
                   "blackman": (0.42, 0.5, 0.08), "nuttall": (0.3635819, 0.4891775, 0.1365995, 0.0106411)}
        if name in cosines:
            return sum((-1) ** k * a * np.cos(2 * np.pi * k * n / m) for k, a in enumerate(cosines[name]))
        return {"bartlett": lambda: 1 - np.abs(2 * n / m - 1), "cosine": lambda: np.sin(np.pi * (n + 0.5) / points),
                "gaussian": lambda: np.exp(-((n - m / 2) ** 2) / 2), "exponential": lambda: np.exp(-np.abs(n - m / 2)),
                "kaiser": lambda: np.i0(12 * np.sqrt(np.clip(1 - (2 * n / m - 1) ** 2, 0, None))) / np.i0(12)}[name]()

    window = getattr(T.signal.windows, name)
    for M in (0, 1, 2, 7, 8):
        for sym in (True, False):
            points = M if sym else M + 1
            expected = np.ones(M) if M <= 1 else formula(np.arange(points, dtype=np.float64), points)[:M]
            w = window(M, sym=sym)
            assert dtype_name(w) == "float32"
            close(w, expected, rtol=1e-5, atol=1e-6)
    assert dtype_name(window(4, dtype=T.float64)) == "float64"


def test_signal_windows_refusals(T):
    windows = T.signal.windows
    raises(ValueError, "requires non-negative window length, got M=-1", windows.hann, -1)
    raises(ValueError, "Standard deviation must be positive", windows.gaussian, 5, std=0)
    raises(ValueError, "Tau must be positive", windows.exponential, 5, tau=0)
    raises(ValueError, "Center must be None for symmetric windows", windows.exponential, 5, center=1.0)
    raises(ValueError, "expects float32 or float64 dtypes", windows.hann, 5, dtype=T.int64)
    raises(ValueError, "beta must be non-negative", windows.kaiser, 5, beta=-1)
    raises(TypeError, "Coefficients must be a list/tuple", windows.general_cosine, 5, a=0.5)
    close(windows.exponential(5, center=1.0, sym=False), np.exp(-np.abs(np.arange(5) - 1.0)), rtol=1e-6)
    close(windows.general_cosine(6, a=[0.3, 0.5, 0.2]),
          0.3 - 0.5 * np.cos(2 * np.pi * np.arange(6) / 5) + 0.2 * np.cos(4 * np.pi * np.arange(6) / 5), rtol=1e-5,
          atol=1e-6)
