"""Focused tests of what the video programs (tests/test_programs_probe21_video_*.py) found, each run on chainrule and
on PyTorch (the ``T`` fixture): a 5-D ``grid_sample`` at points no input position stands for (a flow that diverged
to nan or inf), which gave nan where PyTorch's volume kernel gives the edge pixel or 0."""

import importlib
import math

import numpy as np
import pytest


def functional_of(T):
    return importlib.import_module("nn.functional" if T.__name__ == "autograd" else "torch.nn.functional")


def volume(T):
    return T.arange(24.0, dtype=T.float64).reshape(1, 1, 2, 3, 4).requires_grad_(True)


# (x, y, z) grid points: one coordinate nan, ±inf or far beyond an int's range, and one ordinary point
POINTS = [[math.nan, 0.0, 0.0], [0.0, math.inf, 0.0], [0.0, 0.0, -math.inf], [1e10, 0.0, 0.0], [0.5, -0.5, 0.0]]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_a_non_finite_point_of_a_volume_grid_reads_outside_with_zeros_padding(T, mode):
    F = functional_of(T)
    image = volume(T)
    grid = T.tensor([[[POINTS]]], dtype=T.float64, requires_grad=True)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=True)
    values = out.detach().numpy().ravel()
    np.testing.assert_array_equal(values[:4], 0.0)  # nan gave nan here
    # (0.5, -0.5, 0) is the voxel (x, y, z) = (2.25, 0.5, 0.5): 12 z + 4 y + x, blended, or rounded
    # to even: (2, 0, 0)
    assert values[4] == (10.25 if mode == "bilinear" else 2.0)
    out.sum().backward()
    assert np.isfinite(grid.grad.numpy()).all() and np.isfinite(image.grad.numpy()).all()
    np.testing.assert_array_equal(grid.grad.numpy()[0, 0, 0, :4], 0.0)


@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
def test_a_nan_point_of_a_volume_grid_reads_the_last_voxel_with_no_gradient(T, padding_mode):
    """PyTorch clamps by min(size − 1, max(x, 0)), which takes a nan to the last voxel along that axis (a reflected
    ±inf is a nan too); its backward clamps otherwise and reads nothing there, so the point's gradients are 0."""
    F = functional_of(T)
    image = volume(T)
    grid = T.tensor([[[[[math.nan, 0.0, -1.0], [0.0, -1.0, 0.5]]]]], dtype=T.float64, requires_grad=True)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    # x nan -> 3, y 0 -> 1, z -1 -> 0: voxel 4 + 3; and the ordinary point (1.5, 0, 0.75): 9 + 0 + 1.5
    np.testing.assert_allclose(out.detach().numpy().ravel(), [7.0, 10.5])
    out.sum().backward()
    np.testing.assert_array_equal(grid.grad.numpy()[0, 0, 0, 0], 0.0)
    assert grid.grad.numpy()[0, 0, 0, 1, 0] == pytest.approx(1.5)  # d/dx of x at align_corners: (4 − 1) / 2
    expected = np.zeros(24)
    expected[[1, 2, 13, 14]] = [0.125, 0.125, 0.375, 0.375]  # only the ordinary point's four voxels
    np.testing.assert_allclose(image.grad.numpy().ravel(), expected)


def test_border_padding_of_an_image_clamps_a_nan_to_the_last_pixel():
    """Images take the same clamp (PyTorch's vectorised CPU image kernel reads past the input instead; its CUDA
    kernel clamps): a nan coordinate under 'border' reads the last column, not nan."""
    import autograd
    F = functional_of(autograd)
    image = autograd.arange(12.0, dtype=autograd.float64).reshape(1, 1, 3, 4)
    grid = autograd.tensor([[[[math.nan, -1.0]]]], dtype=autograd.float64)
    out = F.grid_sample(image, grid, mode="nearest", padding_mode="border", align_corners=True)
    assert out.item() == 3.0
