"""nn.CrossMapLRN2d: PyTorch's forward (its window across channels, which is LocalResponseNorm's
only on the first channels), with the exact gradient of that forward."""

import numpy as np
import pytest

import autograd
import nn
from autograd import gradcheck
from nn.cross_map_lrn import window_matrix


def by_hand(x, size, alpha, beta, k, windows):
    """y[n, c] = x[n, c] (k + α/size Σ_{c' in W(c)} x[n, c']²)^(-β), W(c) listed."""
    y = np.empty_like(x)
    for c, window in enumerate(windows):
        y[:, c] = x[:, c] * (k + alpha / size * (x[:, window] ** 2).sum(axis=1)) ** -beta
    return y


def test_the_window_is_pytorchs_running_rule():
    """size 3 (P = 2) over 5 channels: channel 0 is never dropped, and channel 2's window is 4 wide."""
    expected = [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 2, 3, 4], [0, 3, 4]]
    assert [list(np.flatnonzero(row)) for row in window_matrix(5, 3)] == expected
    assert [list(np.flatnonzero(row)) for row in window_matrix(2, 5)] == [[0, 1], [0, 1]]  # C <= P: all
    assert [list(np.flatnonzero(row)) for row in window_matrix(3, 1)] == [[0], [0, 1], [0, 2]]


def test_values_by_hand():
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 2))
    y = nn.CrossMapLRN2d(3, alpha=0.5, beta=0.75, k=2.0)(autograd.tensor(x))
    windows = [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 2, 3, 4], [0, 3, 4]]
    np.testing.assert_allclose(y.numpy(), by_hand(x, 3, 0.5, 0.75, 2.0, windows), rtol=1e-13)
    assert y.dtype == autograd.float64


def test_first_channels_agree_with_local_response_norm():
    x = autograd.tensor(np.random.default_rng(1).standard_normal((1, 6, 2, 2)))
    for size in (2, 3, 5):
        ours, lrn = nn.CrossMapLRN2d(size, 0.3, 0.6, 1.5)(x), nn.LocalResponseNorm(size, 0.3, 0.6, 1.5)(x)
        first = int((size - 1) / 2 + 1)
        np.testing.assert_allclose(ours.numpy()[:, :first], lrn.numpy()[:, :first], rtol=1e-13)


@pytest.mark.parametrize("size, channels", [(1, 3), (2, 4), (3, 5), (4, 3), (5, 6)])
def test_gradcheck(size, channels):
    x = autograd.tensor(np.random.default_rng(size).standard_normal((2, channels, 2, 3)), requires_grad=True)
    assert gradcheck(lambda t: nn.CrossMapLRN2d(size, alpha=0.7, beta=0.75, k=1.0)(t), (x,))


def test_errors_and_repr():
    with pytest.raises(ValueError, match="CrossMapLRN2d: Expected input to be 4D, got 3D instead."):
        nn.CrossMapLRN2d(3)(autograd.ones(2, 3, 4))
    with pytest.raises(RuntimeError, match="floating-point"):
        nn.CrossMapLRN2d(3)(autograd.ones(1, 2, 2, 2, dtype=autograd.int64))
    assert repr(nn.CrossMapLRN2d(3)) == "CrossMapLRN2d(3, alpha=0.0001, beta=0.75, k=1)"
    assert list(nn.CrossMapLRN2d(3).parameters()) == []


@pytest.mark.torch
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_against_torch(size, dtype):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(size).standard_normal((2, 7, 3, 4)).astype(dtype)
    theirs = torch.nn.CrossMapLRN2d(size, alpha=0.5, beta=0.75, k=2.0)(torch.tensor(x))
    ours = nn.CrossMapLRN2d(size, alpha=0.5, beta=0.75, k=2.0)(autograd.tensor(x))
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=tolerance, atol=tolerance)
    assert repr(nn.CrossMapLRN2d(size)) == repr(torch.nn.CrossMapLRN2d(size))
