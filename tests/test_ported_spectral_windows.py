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

from tests.ported import close, dtype_name, raises, values, xfail_ours

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


@xfail_ours("chainrule has no autograd.signal.windows namespace (torch.signal.windows: cosine, exponential, "
            "gaussian, general_cosine, general_hamming, hann, hamming, blackman, bartlett, kaiser, nuttall)")
def test_signal_windows_namespace(T):
    windows = T.signal.windows
    close(windows.hann(8, sym=True), np.hanning(8), rtol=1e-6, atol=1e-7)
    close(windows.hann(8, sym=False), np.hanning(9)[:-1], rtol=1e-6, atol=1e-7)
    close(windows.kaiser(9, beta=4.0), np.kaiser(9, 4.0), rtol=1e-6, atol=1e-7)
    n = np.arange(10)
    close(windows.gaussian(10, std=2.0), np.exp(-((n - 4.5) / 2.0) ** 2 / 2), rtol=1e-6, atol=1e-7)
    close(windows.cosine(10), np.sin(np.pi * (n + 0.5) / 10), rtol=1e-6, atol=1e-7)
