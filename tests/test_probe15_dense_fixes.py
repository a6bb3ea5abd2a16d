"""Focused tests of what the dense-prediction programs (tests/test_programs_probe15_dense_*.py) found, each run on
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


@pytest.mark.parametrize("mode,shape,antialias", [("linear", (1, 2, 4), False), ("bilinear", (1, 2, 3, 20), False),
                                                  ("trilinear", (1, 1, 3, 4, 5), False),
                                                  ("bilinear", (2, 1, 10, 3), True), ("bicubic", (1, 1, 3, 4), True)])
def test_interpolate_copies_a_dim_whose_size_a_scale_factor_keeps(T, mode, shape, antialias):
    # floor(3 · 1.1) = 3: PyTorch's kernels copy such a dim rather than resample it at 1 / 1.1 (it was resampled,
    # shifting every value; a random-scale augmentation near 1 on small maps meets it)
    F = functional(T)
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    y = F.interpolate(x, scale_factor=1.1, mode=mode, antialias=antialias)
    kept = [a for a in range(2, len(shape)) if y.shape[a] == shape[a]]
    assert kept  # (each case keeps a dim)
    resampled = F.interpolate(x, scale_factor=[1.0 if a + 2 in kept else 1.1 for a in range(len(shape) - 2)],
                              mode=mode, antialias=antialias)
    assert y.shape == resampled.shape
    np.testing.assert_allclose(y.detach().numpy(), resampled.detach().numpy(), rtol=1e-6, atol=1e-6)
    if len(kept) == len(shape) - 2 and not antialias:  # nothing resized: the values and gradient pass through
        y.backward(T.ones_like(y))
        np.testing.assert_allclose(x.grad.numpy(), np.ones(shape), rtol=1e-6)


def test_bicubic_still_resamples_a_kept_size(T):
    # PyTorch's bicubic forward kernel has no copy: with the size kept, output o reads at (o + 1/2) / 1.1 - 1/2
    # (0.8636 for o = 1: not the copy's 1)
    x = T.arange(4.0).reshape(1, 1, 1, 4)
    y = functional(T).interpolate(x, scale_factor=(1.0, 1.1), mode="bicubic")
    np.testing.assert_allclose(y.numpy().ravel(), [-0.0310621, 0.8087672, 1.7248309, 2.7533107], rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1), (1, 3, 1, 1, 1)])
def test_group_norm_refuses_one_value_per_group(T, shape):
    # one sample, as many groups as channels, spatial size 1: every value would be normalised to 0 (an ASPP
    # image-pooling branch with GroupNorm at batch size 1); F.group_norm / nn.GroupNorm refuse it, as PyTorch's
    N = importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")
    listed = str(list(shape))
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size "
                                         + listed.replace("[", r"\[").replace("]", r"\]")):
        N.GroupNorm(3, 3)(T.ones(*shape))
    # two samples pass (the check counts the batch), as do two channels a group, and the top-level group_norm
    assert N.GroupNorm(3, 3)(T.ones(2, *shape[1:])).abs().sum().item() == 0.0
    assert tuple(functional(T).group_norm(T.ones(1, 6, *shape[2:]), 3).shape) == (1, 6, *shape[2:])
    assert T.group_norm(T.ones(*shape), 3).abs().sum().item() == 0.0


@pytest.mark.parametrize("mode,size,align_corners", [("bilinear", (5, 7), False), ("bilinear", (13, 20), True),
                                                     ("bicubic", (5, 7), False), ("bicubic", (13, 20), True)])
def test_float16_interpolation_rounds_once(T, mode, size, align_corners):
    # PyTorch weighs float16 in float32 and rounds the result once; rounding the coordinates, weights, products
    # and sums to float16 at each step put values up to 0.017 off (2% of 0.7)
    F = functional(T)
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 9)).astype(np.float16)
    half = F.interpolate(T.tensor(x), size=size, mode=mode, align_corners=align_corners)
    assert half.dtype == T.float16
    wide = F.interpolate(T.tensor(x.astype(np.float32)), size=size, mode=mode, align_corners=align_corners)
    np.testing.assert_allclose(half.float().numpy(), wide.numpy(), rtol=0, atol=2.5e-3)


AVERAGE_POOLS = [lambda F, x: F.avg_pool2d(x, 3, 2, 1),
                 lambda F, x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                 lambda F, x: F.adaptive_avg_pool2d(x, (3, 5)), lambda F, x: F.adaptive_avg_pool2d(x, 1),
                 lambda F, x: F.adaptive_avg_pool1d(x.flatten(2), 7)]


@pytest.mark.parametrize("pool", AVERAGE_POOLS)
def test_float16_average_pooling_rounds_once(T, pool):
    # PyTorch's kernels sum float16 in float32 and round the mean once (each add and the 1/n rounded to float16
    # were a unit or two off): the float32 means, rounded to float16, are what they give
    F = functional(T)
    x = np.random.default_rng(1).standard_normal((2, 4, 8, 9)).astype(np.float16)
    half = pool(F, T.tensor(x))
    assert half.dtype == T.float16
    wide = pool(F, T.tensor(x.astype(np.float32))).numpy().astype(np.float16)
    np.testing.assert_array_equal(half.numpy(), wide)


def test_float16_cross_entropy_rounds_each_loss_once(T):
    # PyTorch's cross_entropy of float16 is log_softmax (in float32, rounded once) then nll_loss: each pixel's loss
    # is the float32 one rounded; the fused node computed max, exp, sum, log and difference in float16 (46 of 144
    # pixels a unit or more off)
    F = functional(T)
    x = (np.random.default_rng(0).standard_normal((2, 4, 8, 9)) * 3).astype(np.float16)
    target = T.tensor(np.random.default_rng(1).integers(0, 4, (2, 8, 9)))
    half = F.cross_entropy(T.tensor(x), target, reduction="none")
    assert half.dtype == T.float16
    wide = F.cross_entropy(T.tensor(x.astype(np.float32)), target, reduction="none")
    np.testing.assert_array_equal(half.numpy(), wide.numpy().astype(np.float16))
    mean = F.cross_entropy(T.tensor(x), target)
    assert mean.item() == pytest.approx(wide.numpy().astype(np.float16).astype(np.float32).mean(), rel=1e-3)


@pytest.mark.parametrize("shape,mode,scale,expected", [
    ((1, 1, 1, 5), "nearest", 2.1, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]),  # 2-d kernel: a doubled size reads o // 2
    ((1, 1, 1, 7), "nearest", 1.1, [0, 1, 2, 3, 4, 5, 6]),  # 2-d kernel: a kept size is copied
    ((1, 1, 5), "nearest", 2.1, [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]),  # 1-d kernel: floor(o / 2.1)
    ((1, 1, 7), "nearest", 1.1, [0, 0, 1, 2, 3, 4, 5]),
    ((1, 1, 1, 1, 7), "nearest", 1.1, [0, 0, 1, 2, 3, 4, 5]),  # 3-d kernel likewise
    ((1, 1, 1, 7), "nearest-exact", 1.1, [0, 1, 2, 3, 4, 5, 5]),  # floor((o + 1/2) / 1.1), size kept or not
    ((1, 1, 7), "nearest-exact", 1.14, [0, 1, 2, 3, 3, 4, 5]),
])
def test_nearest_indices_as_each_of_pytorchs_kernels(T, shape, mode, scale, expected):
    # a kept size was copied in every nearest mode and dimension, and a doubled one read at floor(o / scale); only
    # PyTorch's 2-d 'nearest' kernel has those two special cases
    x = T.arange(float(shape[-1])).reshape(shape)
    y = functional(T).interpolate(x, scale_factor=scale, mode=mode)
    assert y.reshape(-1)[:len(expected)].tolist() == expected
