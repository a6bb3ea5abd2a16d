"""Shared pieces of the tests ported from PyTorch's own test suite (tests/test_ported_*.py).

Each ported test takes the fixture `T` (tests/conftest.py): the library under test, chainrule's
`autograd` first and then PyTorch itself (marked `torch`, so it skips cleanly where PyTorch is not
installed). The
assertions are literal or NumPy-computed expectations, so the same test checks that chainrule
behaves like PyTorch and that the expectation is PyTorch's behaviour.
"""

import re

import numpy as np
import pytest


def values(t):
    """A tensor's values as a NumPy array (detached; a Python number becomes a 0-d array)."""
    if hasattr(t, "detach"):
        return np.asarray(t.detach().resolve_conj().resolve_neg().numpy())
    return np.asarray(t)


def same(t, expected, dtype=None):
    """`t` holds exactly `expected` (shape and values; NaN equals NaN), and has `dtype` if given."""
    expected = np.asarray(expected)
    got = values(t)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    np.testing.assert_array_equal(got, expected)
    if dtype is not None:
        assert str(t.dtype).split(".")[-1] == dtype, f"dtype {t.dtype} != {dtype}"


def close(t, expected, rtol=1e-6, atol=1e-6):
    expected = np.asarray(expected)
    got = values(t)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def dtype_name(t_or_dtype):
    """'float32' for a tensor or a dtype of either library."""
    d = getattr(t_or_dtype, "dtype", t_or_dtype)
    return str(d).split(".")[-1]


def raises(error, words, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` raises `error` whose message matches the regular expression `words`."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    if words:
        assert re.search(words, str(info.value)), f"{words!r} not in {info.value}"
    return info.value


# every dtype the ported tests sweep, and a small tensor of one of them with values that fit it (random
# integers, positive for uint8, True where positive for bool)
DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64",
          "complex128"]


def sample(T, shape, dtype, rng):
    a = rng.integers(-9, 10, shape)
    if dtype == "bool":
        return T.tensor(a > 0)
    if dtype.startswith("complex"):
        return T.tensor((a + 1j * rng.integers(-9, 10, shape)).astype(dtype))
    if dtype == "uint8":
        a = np.abs(a)
    return T.tensor(a.astype(dtype))


def xfail_on_chainrule(T, request, reason):
    """Mark the running test an expected (strict) failure where `T` is chainrule's `autograd`: a known
    difference from PyTorch, named by `reason`, that the test records rather than hides."""
    if T.__name__ == "autograd":
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def xfail_ours(reason):
    """Mark a ported test an expected (strict) failure on chainrule only, for a documented difference or a
    fix outside the porting task: it still runs, and must pass, on PyTorch."""
    return pytest.mark.parametrize("T", [
        pytest.param("autograd", marks=pytest.mark.xfail(strict=True, reason=reason)),
        pytest.param("torch", marks=pytest.mark.torch)], indirect=True)
