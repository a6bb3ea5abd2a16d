"""Upsampling, ported from PyTorch's test/test_nn.py (TestNNDeviceType's test_upsampling* on CPU) where
tests/test_ported_nn_functional.py and tests/test_ported_resampling.py do not reach: nearest and nearest-exact
in 1-d, 2-d and 3-d against the OpenCV and scikit-image index rules, nearest-exact's rescaling, uint8 inputs,
bilinear / bicubic / trilinear (align_corners, antialias) keeping a constant image constant with the gradient
summing to the output's size, the size and scale_factor forms agreeing, the dtypes each mode refuses, and
antialiased and plain bicubic values against PIL's and OpenCV's literals. (The channels_last, CUDA and
64-bit-indexing cases have no counterpart here.) Each test runs on chainrule's `nn` and, where it is installed,
on PyTorch's."""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

SIZES = [(20, 11), (10, 15)]


def nearest_indices(isize, osize, exact):
    """Source index of each output position: OpenCV's INTER_NEAREST floor(o·s), or scikit-image's
    floor((o + ½)·s) for nearest-exact, with s = isize / osize computed in float32 as the kernels do."""
    scale = np.float32(isize / osize)
    offset = np.float32(0.5) if exact else np.float32(0.0)
    return np.minimum(((np.arange(osize, dtype=np.float32) + offset) * scale).astype(np.int64), isize - 1)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("isize, osize", SIZES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_nearest_matches_the_reference_index_rule(T, F, mode, isize, osize, dims):
    image = np.arange(isize ** dims, dtype=np.float32).reshape((1, 1) + (isize,) * dims)
    out = F.interpolate(T.tensor(image), size=(osize,) * dims, recompute_scale_factor=False, mode=mode)
    idx = nearest_indices(isize, osize, mode == "nearest-exact")
    same(out, image[(0, 0) + np.ix_(*([idx] * dims))][None, None])


def test_nearest_exact_rescaling_by_a_hair_keeps_or_doubles(T, F):
    x = T.arange(20, dtype=T.float32)[None, None]
    same(F.interpolate(x, scale_factor=1.00001, recompute_scale_factor=False, mode="nearest-exact"), values(x))
    same(F.interpolate(x, scale_factor=2.00001, recompute_scale_factor=False, mode="nearest-exact"),
         np.repeat(values(x), 2, axis=-1))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_of_ones_uint8_and_gradients(T, nn, F, mode):
    for dims in (1, 2, 3):
        shape = (1, 2) + (2,) * dims
        up = nn.Upsample(size=4, mode=mode)
        same(up(T.ones(shape, dtype=T.float64)), np.ones((1, 2) + (4,) * dims))
        same(up(T.ones(shape, dtype=T.uint8)), np.ones((1, 2) + (4,) * dims, np.uint8), dtype="uint8")
    # height and width apart: each input pixel is copied to a 2×2 block, so its gradient is the block's sum
    x = T.ones(1, 2, 2, 1, dtype=T.float64, requires_grad=True)
    y = F.interpolate(x, size=(4, 2), mode=mode)
    same(y, np.ones((1, 2, 4, 2)))
    g = np.arange(16.0).reshape(1, 2, 4, 2)
    y.backward(T.tensor(g))
    same(x.grad, g.reshape(1, 2, 2, 2, 2).sum(axis=(3, 4)).reshape(1, 2, 2, 1))
    # the size and the scale factor say the same thing
    x = T.randn(1, 2, 2, 2, dtype=T.float64)
    same(F.interpolate(x, 4, mode=mode), values(F.interpolate(x, scale_factor=2, mode=mode)))
    # downsampling 20 → 11 picks samples: the gradient is 1 where picked
    x = T.randn(1, 1, 20, dtype=T.float64, requires_grad=True)
    F.interpolate(x, 11, mode=mode).sum().backward()
    picked = np.zeros(20)
    np.add.at(picked, nearest_indices(20, 11, mode == "nearest-exact"), 1.0)
    same(x.grad, picked[None, None])


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("antialias", [True, False])
def test_bilinear_and_bicubic_keep_a_constant_image(T, F, mode, align_corners, antialias):
    for scale_factor in (0.5, 1.5, 2):
        x = T.ones(2, 3, 8, 8, dtype=T.float64, requires_grad=True)
        y = F.interpolate(x, scale_factor=scale_factor, mode=mode, align_corners=align_corners, antialias=antialias)
        n = int(math.floor(8 * scale_factor))
        close(y, np.ones((2, 3, n, n)), rtol=0, atol=1e-14)
        # the weights of each output pixel sum to 1, so the gradient of the sum spreads the output's size
        y.sum().backward()
        close(values(x.grad).sum(), 2 * 3 * n * n, rtol=1e-12)


@pytest.mark.parametrize("align_corners", [True, False])
def test_trilinear_keeps_a_constant_volume_and_size_equals_scale(T, nn, F, align_corners):
    for scale_factor in (0.5, 1.5, 2):
        n = int(math.floor(4 * scale_factor))
        x = T.ones(1, 2, 4, 4, 4, dtype=T.float64, requires_grad=True)
        y = nn.Upsample(scale_factor=scale_factor, mode="trilinear", align_corners=align_corners)(x)
        close(y, np.ones((1, 2, n, n, n)), rtol=0, atol=1e-14)
        y.sum().backward()
        close(values(x.grad).sum(), 2 * n ** 3, rtol=1e-12)
        z = T.tensor(np.sin(np.arange(128.0)).reshape(1, 2, 4, 4, 4))
        close(F.interpolate(z, (n, n, n), mode="trilinear", align_corners=align_corners),
              values(F.interpolate(z, scale_factor=scale_factor, mode="trilinear", align_corners=align_corners)),
              rtol=0, atol=1e-14)


INTEGERS = ["int8", "int16", "int32", "int64"]


@pytest.mark.parametrize("dtype", ["uint8"] + INTEGERS + ["float32", "float64"])
@pytest.mark.parametrize("mode, antialias", [("nearest", False), ("nearest-exact", False), ("bilinear", False),
                                             ("bilinear", True), ("bicubic", False), ("bicubic", True)])
def test_interpolate_dtypes_each_mode_takes(T, F, dtype, mode, antialias):
    x = T.ones(1, 3, 32, 32, dtype=getattr(T, dtype))
    if dtype in INTEGERS:  # (uint8 and floating only; the bilinear and bicubic uint8 loops are CPU ones)
        raises(RuntimeError, "not implemented for", F.interpolate, x, (12, 12), mode=mode, antialias=antialias)
    else:
        out = F.interpolate(x, (12, 12), mode=mode, antialias=antialias)
        assert str(out.dtype).endswith(dtype)
        close(out, np.ones((1, 3, 12, 12), dtype), rtol=0, atol=2e-6)  # (weights summing to 1 up to rounding)


def test_antialiased_downsampling_against_pil(T, F):
    x = T.arange(3 * 8 * 8, dtype=T.float32).reshape(1, 3, 8, 8)
    # PIL.Image.resize((2, 2)) of each channel, resample=LINEAR and BICUBIC
    bilinear = [17.035713, 20.25, 42.75, 45.964287, 81.03572, 84.25, 106.75, 109.96428, 145.0357, 148.25, 170.75,
                173.9643]
    bicubic = [15.1205635, 18.760439, 44.23956, 47.879436, 79.12056, 82.76044, 108.23956, 111.87944, 143.12057,
               146.76044, 172.23956, 175.87943]
    for mode, expected in (("bilinear", bilinear), ("bicubic", bicubic)):
        out = F.interpolate(x, size=(2, 2), mode=mode, align_corners=False, antialias=True)
        close(out, np.array(expected, np.float32).reshape(1, 3, 2, 2), rtol=1.3e-6, atol=1e-5)


def test_bicubic_upsampling_against_opencv(T, F):
    out = F.interpolate(T.arange(8.0).view(1, 2, 2, 2), scale_factor=2, mode="bicubic", align_corners=False)
    first = np.array([[-0.31641, 0.01562, 0.56250, 0.89453], [0.34766, 0.67969, 1.22656, 1.55859],
                      [1.44141, 1.77344, 2.32031, 2.65234], [2.10547, 2.43750, 2.98438, 3.31641]], np.float32)
    close(out, np.stack([first, first + 4])[None], rtol=0, atol=1e-5)


def test_uint8_bilinear_rounds_the_float_result(T, F):
    image = (np.arange(3 * 8 * 8) * 3 % 256).astype(np.uint8).reshape(1, 3, 8, 8)
    for align_corners in (True, False):
        as_float = F.interpolate(T.tensor(image.astype(np.float32)), size=(5, 7), mode="bilinear",
                                 align_corners=align_corners)
        as_uint8 = F.interpolate(T.tensor(image), size=(5, 7), mode="bilinear", align_corners=align_corners)
        assert str(as_uint8.dtype).endswith("uint8")
        assert np.abs(values(as_uint8).astype(np.float32) - np.round(values(as_float))).max() <= 1
