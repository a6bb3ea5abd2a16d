"""Hardswish's kernels written into one array and its slope picked by bits (autograd/ops/hardswish.py): the values of
the former rule, x · clip(x + 3, 0, 6) / 6 and nested ``where``, bit for bit over float16, float32 and float64, large
and 0-d, contiguous or not, with ±0, ±3, ±inf and NaN among them."""

import numpy as np
import pytest

import autograd
import nn.functional as F


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
