"""Hardswish's kernels written into one array and its slope picked by bits (autograd/ops/hardswish.py): the values of
the former rule, x · clip(x + 3, 0, 6) / 6 and nested ``where``, bit for bit over float16, float32 and float64, large
and 0-d, contiguous or not, with ±0, ±3, ±inf and NaN among them."""

import numpy as np
import pytest

import autograd
import nn.functional as F


def _wide(array):
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _former_values(x):
    wide = x.astype(np.float32) if x.dtype == np.float16 else x
    with np.errstate(invalid="ignore"):
        return (wide * np.clip(wide + 3, 0, 6) / 6).astype(x.dtype)


def _former_slope(x):
    wide = x.astype(np.float32) if x.dtype == np.float16 else x
    return np.where(wide <= -3, 0.0, np.where(wide < 3, wide / 3 + 0.5, 1.0)).astype(wide.dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(), (9,), (300, 200)])
def test_hardswish_and_its_gradient_keep_the_former_values(dtype, shape):
    rng = np.random.default_rng(17)
    x = (rng.standard_normal(shape[::-1]) * 4).astype(dtype)
    if x.size > 1:
        x.reshape(-1)[:8] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 3.0, -3.0, 2.9990234]
    x = x.T  # (a transposed, non-contiguous input where it has two dims)
    g = rng.standard_normal(x.shape).astype(dtype)
    tensor = autograd.tensor(x, requires_grad=True)
    y = F.hardswish(tensor)
    assert y.detach().numpy().tobytes() == np.ascontiguousarray(_former_values(x)).tobytes()
    (grad,) = autograd.grad(y, tensor, autograd.tensor(g))
    wide_g = g.astype(np.float32) if dtype == "float16" else g
    expected = (wide_g * _former_slope(x)).astype(dtype)
    assert grad.numpy().tobytes() == np.ascontiguousarray(expected).tobytes()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("size", [1, 20000])
def test_logsigmoid_gradient_keeps_the_former_values(dtype, size):
    """LogSigmoidGrad's choice between 1 - q and q picked by bits: the former ``where``'s values bit for bit."""
    rng = np.random.default_rng(19)
    x = (rng.standard_normal(size) * 6).astype(dtype)
    if size > 8:
        x[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, -100.0]
    g = rng.standard_normal(size).astype(dtype)
    tensor = autograd.tensor(x, requires_grad=True)
    (grad,) = autograd.grad(F.logsigmoid(tensor), tensor, autograd.tensor(g))
    b = _wide(np.exp(-np.abs(_wide(x))).astype(dtype))
    q = b / (1 + b)
    assert grad.numpy().tobytes() == (np.where(x < 0, 1 - q, q) * _wide(g)).astype(dtype).tobytes()
