"""Focused tests of what the dense-prediction programs (tests/test_programs_probe15_dense.py) found, each run on
chainrule and on PyTorch (the ``T`` fixture)."""

import importlib

import numpy as np
import pytest


def functional(T):
    return importlib.import_module("nn.functional" if T.__name__ == "autograd" else "torch.nn.functional")


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_reflection_keeps_float32(T, mode, align_corners):
    # the reflection's slope ±1 was a float64 array, which promoted bilinear's float32 result to float64
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal((1, 2, 4, 5)).astype(np.float32))
    grid = T.tensor(np.array([[[[-1.4, 0.3], [1.25, 0.5]], [[1.1, -1.6], [0.0, 0.2]]]], dtype=np.float32),
                    requires_grad=True)
    out = functional(T).grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=align_corners)
    assert out.dtype == T.float32 and out.shape == (1, 2, 2, 2)
    out.sum().backward()
    assert grid.grad.dtype == T.float32
    if mode == "bilinear" and not align_corners:
        # x = 1.25 (the width) unnormalises to column ((1.25 + 1) * 5 - 1) / 2 = 5.125, reflected about 4.5 to 3.875;
        # y = 0.5 to row 2.5: the mean of rows 2, 3 at column 3.875
        expected = 0.5 * (0.125 * (x[0, :, 2, 3] + x[0, :, 3, 3]) + 0.875 * (x[0, :, 2, 4] + x[0, :, 3, 4]))
        np.testing.assert_allclose(out[0, :, 0, 1].detach().numpy(), expected.numpy(), rtol=1e-6)
