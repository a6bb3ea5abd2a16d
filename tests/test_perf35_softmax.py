"""The shift of softmax, log_softmax and logsumexp taken by fmax's reduction (``reductions._shift``): the same
values, bit for bit, as with maximum's, which it replaced, over slices holding NaN, ±inf and ±0 (maximum's shift
is NaN where fmax's is a number; a maximum of 0 is taken by maximum again), in float16, float32 and float64,
over every dim and a transposed input; and PyTorch's values where it is installed."""

import numpy as np
import pytest

import autograd
from autograd.ops import reductions


def _maximums_shift(x, axes):
    """The previous rule: each slice's maximum, NaN where it holds one."""
    if x.size == 0:
        return np.zeros_like(x.sum(axis=axes, keepdims=True))
    return np.maximum.reduce(x, axes, None, None, True)


def _identical(a, b):
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True) and np.array_equal(
        np.signbit(a) & ~np.isnan(a), np.signbit(b) & ~np.isnan(b))


def _inputs(dtype, seed):
    rng = np.random.default_rng(seed)
    for shape in ((64, 64), (37, 5), (8, 3, 1), (2, 300)):
        x = (rng.standard_normal(shape) * 30).astype(dtype)
        yield x
        special = x.copy().reshape(-1)
        for value in (np.nan, np.inf, -np.inf, 0.0, -0.0, -200.0):
            special[rng.integers(0, special.size, max(1, special.size // 13))] = value
        yield special.reshape(shape)
        zeros = np.where(rng.random(shape) < 0.5, -0.0, 0.0).astype(dtype)  # maxima of ±0, the rest far below
        zeros.reshape(-1)[::3] = -6e4
        yield zeros
    yield np.ascontiguousarray((rng.standard_normal((64, 64)) * 5).astype(dtype).T).T


FUNCTIONS = {
    "softmax": lambda t, dim: t.softmax(dim),
    "log_softmax": lambda t, dim: t.log_softmax(dim),
    "logsumexp": lambda t, dim: t.logsumexp(dim),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_values_are_those_of_maximums_shift_bit_for_bit(name, dtype, monkeypatch):
    function = FUNCTIONS[name]
    for x in _inputs(dtype, 0):
        for dim in range(-x.ndim, x.ndim):
            ours = function(autograd.tensor(x), dim).numpy()
            with monkeypatch.context() as patch:
                patch.setattr(reductions, "_shift", _maximums_shift)
                previous = function(autograd.tensor(x), dim).numpy()
            assert _identical(ours, previous), (name, x.shape, dim)


def test_softmax_of_a_float32_row_is_the_direct_formula():
    x = np.random.default_rng(1).standard_normal((16, 4, 64, 64)).astype(np.float32)
    shifted = x - np.maximum.reduce(x, 3, None, None, True)
    expected = np.exp(shifted)
    expected /= np.add.reduce(expected, 3, None, None, True)
    assert _identical(autograd.tensor(x).softmax(-1).numpy(), expected)
    log_expected = shifted - np.log(np.add.reduce(np.exp(shifted), 3, None, None, True))
    assert _identical(autograd.tensor(x).log_softmax(-1).numpy(), log_expected)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_values_match_pytorch(name):
    torch = pytest.importorskip("torch")
    function = FUNCTIONS[name]
    for x in _inputs(np.float64, 2):
        for dim in range(-x.ndim, x.ndim):
            ours = function(autograd.tensor(x), dim).numpy()
            theirs = function(torch.tensor(x), dim).numpy()
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)  # (x - m - ln Σ near 0: a unit)
