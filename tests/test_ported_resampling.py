"""Resampling, ported from PyTorch's test/test_nn.py (TestNN and TestNNDeviceType, CPU): ``F.grid_sample`` (bilinear,
nearest and bicubic; zeros, border and reflection padding; both align_corners; images and volumes; gradients with
respect to the input and the grid), ``F.affine_grid`` (2-D and 3-D, its errors and warnings) and the upsampling tests
that tests/test_ported_nn_functional.py leaves out (nearest and nearest-exact against OpenCV's and scikit-image's
index rules, bilinear and bicubic with and without antialiasing, trilinear, channels-last layouts kept by the output
and the gradient, PyTorch's literal tables, the dtype and size errors). Each test runs on chainrule's `nn` and, where
it is installed, on PyTorch's; values are checked against NumPy references or PyTorch's literals either way.
(Not ported: CUDA parity, the 64-bit-index and multi-gigabyte buffer tests, bfloat16, and uint8 fixed-point
bilinear/bicubic, a strict xfail here.)"""

import itertools
import math
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")


def _gradcheck(T, fn, inputs, **kwargs):
    assert T.autograd.gradcheck(fn, inputs, **kwargs)


def _gradgradcheck(T, fn, inputs, **kwargs):
    assert T.autograd.gradgradcheck(fn, inputs, **kwargs)


# -- a NumPy grid_sample: one point at a time, PyTorch's documented rules -------------------------------------------

def _unnormalize(g, size, align_corners):
    return (g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2


def _reflect(x, twice_low, twice_high):
    if twice_low == twice_high:
        return 0.0
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    x = abs(x - low)
    extra = math.fmod(x, span)
    return extra + low if math.floor(x / span) % 2 == 0 else span - extra + low


def _padded(x, size, padding_mode, align_corners):
    if padding_mode == "reflection":
        x = _reflect(x, 0, 2 * (size - 1)) if align_corners else _reflect(x, -1, 2 * size - 1)
    if padding_mode != "zeros":
        x = min(max(x, 0), size - 1)
    return x


def _cubic_weights(t, a=-0.75):
    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _read(image, index):
    """image (C, *sizes) at an integer index; zeros outside."""
    if all(0 <= i < s for i, s in zip(index, image.shape[1:])):
        return image[(slice(None),) + tuple(index)]
    return np.zeros(image.shape[0])


def np_grid_sample(input, grid, mode, padding_mode, align_corners):
    n, c, *sizes = input.shape
    d = len(sizes)
    out = np.zeros((n, c) + grid.shape[1:-1])
    for b in range(n):
        for position in np.ndindex(*grid.shape[1:-1]):
            point = grid[(b,) + position]
            coords = [_unnormalize(point[d - 1 - a], sizes[a], align_corners) for a in range(d)]  # x is the width
            if mode == "bicubic":
                floors = [math.floor(x) for x in coords]
                weights = [_cubic_weights(x - f) for x, f in zip(coords, floors)]
                total = np.zeros(c)
                for i, j in itertools.product(range(4), repeat=2):
                    index = [int(_padded(f - 1 + k, s, padding_mode, align_corners))
                             for f, k, s in zip(floors, (i, j), sizes)]
                    total += weights[0][i] * weights[1][j] * _read(input[b], index)
            else:
                coords = [_padded(x, s, padding_mode, align_corners) for x, s in zip(coords, sizes)]
                if mode == "nearest":
                    total = _read(input[b], [int(np.rint(x)) for x in coords])
                else:
                    floors = [math.floor(x) for x in coords]
                    total = np.zeros(c)
                    for corner in itertools.product((0, 1), repeat=d):
                        weight = np.prod([x - f if k else f + 1 - x for x, f, k in zip(coords, floors, corner)])
                        total += weight * _read(input[b], [f + k for f, k in zip(floors, corner)])
            out[(b, slice(None)) + position] = total
    return out


# -- grid_sample ----------------------------------------------------------------------------------------------------

def test_grid_sample_error_checking(T, F):
    input, grid = T.empty(1, 1, 2, 2), T.empty(1, 1, 1, 2)
    F.grid_sample(input, grid, align_corners=False)  # no error
    raises(ValueError, "but got: 'garbage'", F.grid_sample, input, grid, mode="garbage", align_corners=False)
    raises(ValueError, "but got: 'garbage'", F.grid_sample, input, grid, padding_mode="garbage", align_corners=False)
    raises(RuntimeError, r"expected grid to have size 1 in last dimension, but got grid with sizes \[1, 1, 1, 2\]",
           F.grid_sample, input[0], grid, align_corners=False)
    raises(RuntimeError, "expected grid to have size 2 in last dimension", F.grid_sample, input,
           T.empty(1, 1, 1, 1, 3), align_corners=False)
    raises(RuntimeError, r"expected grid and input to have same batch size, but got input with sizes \[1, 1, 2, 2\] "
           r"and grid with sizes \[2, 1, 1, 2\]", F.grid_sample, input, T.empty(2, 1, 1, 2), align_corners=False)
    raises(RuntimeError, "expected grid to have size 2 in last dimension", F.grid_sample, input,
           T.empty(1, 1, 1, 3), align_corners=False)
    raises(RuntimeError, r"expected input to have non-empty spatial dimensions, but input has sizes \[1, 1, 0, 2\] "
           "with dimension 2 being empty", F.grid_sample, T.empty(1, 1, 0, 2), grid, align_corners=False)
    raises(RuntimeError, "bicubic interpolation only supports 4D input", F.grid_sample, T.empty(1, 1, 2, 2, 2),
           T.empty(1, 1, 1, 1, 3), mode="bicubic", align_corners=False)
    # the dims are checked after the batch and the grid's last size: a 4-d input reads a 4-d grid
    raises(RuntimeError, r"expected 4D input and grid with same number of dimensions, but got input with sizes "
           r"\[1, 1, 2, 2\] and grid with sizes \[1, 1, 1, 1, 2\]", F.grid_sample, input, T.empty(1, 1, 1, 1, 2),
           align_corners=False)
    raises(RuntimeError, "expected 5D input and grid with same number of dimensions", F.grid_sample,
           T.empty(1, 1, 2, 2, 2), T.empty(1, 1, 1, 3), align_corners=False)


def test_grid_sample_dtypes(T, F):
    grid = T.zeros(1, 1, 1, 2)
    raises(RuntimeError, "expected scalar type Float but found Double", F.grid_sample, T.zeros(1, 1, 2, 2),
           grid.double(), align_corners=False)
    raises(RuntimeError, "expected scalar type Double but found Float", F.grid_sample,
           T.zeros(1, 1, 2, 2, dtype=T.float64), grid, align_corners=False)
    raises(NotImplementedError, "\"grid_sampler_2d_cpu_kernel_impl\" not implemented for 'Long'", F.grid_sample,
           T.zeros(1, 1, 2, 2, dtype=T.int64), grid.long(), mode="nearest", align_corners=False)
    raises(NotImplementedError, "\"grid_sampler_2d_cpu_kernel_impl\" not implemented for 'Bool'", F.grid_sample,
           T.zeros(1, 1, 2, 2, dtype=T.bool), grid, align_corners=False)
    raises(NotImplementedError, "\"grid_sampler3d_cpu\" not implemented for 'ComplexFloat'", F.grid_sample,
           T.zeros(1, 1, 2, 2, 2, dtype=T.complex64), T.zeros(1, 1, 1, 1, 3, dtype=T.complex64),
           align_corners=False)
    out = F.grid_sample(T.arange(4.0).view(1, 1, 2, 2).half(), T.zeros(1, 1, 1, 2).half(), align_corners=True)
    same(out, [[[[1.5]]]], dtype="float16")


# PyTorch's table: input arange(1, 11) as 1×1×2×5, ten points (some outside, some at the edges), float32
_POINTS = [[[-0.9, -4.1], [0, 0.2000], [1, -1], [-0.333, 1e-6], [0.5, 1.0]],
           [[-1.0, -0.5], [0, 0.3333], [1, -1], [-0.200, 1e-6], [1.5, 0.5]]]
_EXPECTED = {
    ("bilinear", "zeros", True): [[0.0000, 6.0000000000, 5.0000, 4.8340, 9.0000],
                                  [2.2500, 6.3332500450, 5.0000, 5.1000, 0.0000]],
    ("bilinear", "zeros", False): [[0.0000, 6.5000000000, 1.2500, 4.6675000191, 4.6250],
                                   [0.5000, 7.1665000916, 1.2500, 5.0000000000, 0.0000]],
    ("bilinear", "border", True): [[1.2000, 6.0000000000, 5.0000, 4.8340, 9.0000],
                                   [2.2500, 6.3332500450, 5.0000, 5.1000, 8.7500]],
    ("bilinear", "border", False): [[1.0000, 6.5000000000, 5.0000, 4.6675000191, 9.2500],
                                    [1.0000, 7.1665000916, 5.0000, 5.0000000000, 10.0000]],
    ("bilinear", "reflection", True): [[3.4500, 6.0000000000, 5.0000, 4.8340, 9.0000],
                                       [2.2500, 6.3332500450, 5.0000, 5.1000, 7.7500]],
    ("bilinear", "reflection", False): [[3.0000004768, 6.5000000000, 5.0000, 4.6675000191, 9.2500],
                                        [1.0000000000, 7.1665000916, 5.0000, 5.0000000000, 9.2500]],
    ("nearest", "zeros", True): [[0., 8., 5., 7., 9.], [1., 8., 5., 8., 0.]],
    ("nearest", "zeros", False): [[0., 8., 5., 7., 0.], [1., 8., 5., 8., 0.]],
    ("nearest", "border", True): [[1., 8., 5., 7., 9.], [1., 8., 5., 8., 10.]],
    ("nearest", "border", False): [[1., 8., 5., 7., 9.], [1., 8., 5., 8., 10.]],
    ("nearest", "reflection", True): [[1., 8., 5., 7., 9.], [1., 8., 5., 8., 9.]],
    ("nearest", "reflection", False): [[1., 8., 5., 7., 9.], [1., 8., 5., 8., 9.]],
    ("bicubic", "zeros", True): [[-0.10424726, 7.1400003, 5.0000, 5.7842274, 9.0000],
                                 [2.4492188, 7.4814040, 5.0000, 6.0277520, 0.0000]],
    ("bicubic", "zeros", False): [[0.00000, 7.6287503, 1.0625, 5.5977230, 5.3270264],
                                  [0.40625, 8.0288770, 1.0625, 5.9375067, -0.3515625]],
    ("bicubic", "border", True): [[1.1520010, 6.0599990, 5.0000, 4.870930, 9.0000000],
                                  [2.1328125, 6.4258375, 5.0000, 5.076003, 8.8671875]],
    ("bicubic", "border", False): [[0.894531, 6.6050020, 4.625, 4.7138715, 9.800781],
                                   [0.906250, 7.2822485, 4.625, 5.0000052, 10.00000]],
    ("bicubic", "reflection", True): [[3.1822524, 6.239998, 5.0000, 4.8709273, 9.00000],
                                      [1.7812500, 6.703594, 5.0000, 5.0760007, 8.21875]],
    ("bicubic", "reflection", False): [[2.7993753, 6.6050020, 4.25, 4.7138715, 10.269531],
                                       [0.8125000, 7.2822485, 4.25, 5.0000052, 9.332031]],
}

# and the gradient with respect to the grid of sum(grid_sample(arange(5) expanded to 5×5, 8 points at the edges))
_EDGE_POINTS = [[[1.0, 1.0], [1.0, -1.0], [0.8, 0.8], [0.8, -0.8]],
                [[-1.0, -1.0], [-1.0, 1.0], [-0.8, -0.8], [-0.8, 0.8]]]
_ZERO_GRID_GRAD = [[[-0., -0.], [-0., 0.], [-0., -0.], [-0., 0.]], [[0., 0.], [0., 0.], [0., 0.], [0., 0.]]]
_EXPECTED_GRID_GRAD = {
    ("bilinear", "zeros", True): [[[-8., -8.], [-8., 0.], [2., 0.], [2., 0.]],
                                  [[2., 0.], [2., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "zeros", False): [[[-5., -5.], [-5., 5.], [-10., -10.], [-10., 10.]],
                                   [[0., 0.], [0., 0.], [0., 0.], [0., 0.]]],
    ("bilinear", "border", True): [[[-0., -0.], [-0., 0.], [2., 0.], [2., 0.]],
                                   [[0., 0.], [0., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "border", False): _ZERO_GRID_GRAD,
    ("bilinear", "reflection", True): [[[-0., -0.], [-0., 0.], [2., 0.], [2., 0.]],
                                       [[0., 0.], [0., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "reflection", False): _ZERO_GRID_GRAD,
    ("bicubic", "zeros", True): [[[-4.5, -6.], [-4.5, 6.], [2.725679, 0.740878], [2.725679, -0.740878]],
                                 [[1.5, 0.], [1.5, 0.], [1.927921, -0.05688], [1.927921, 0.05688]]],
    ("bicubic", "zeros", False): [[[-5.859375, -5.888672], [-5.859375, 5.888672], [-5.6250, -7.5000],
                                   [-5.6250, 7.5000]],
                                  [[-0.234375, -0.263672], [-0.234375, 0.263672], [1.8750, 0.], [1.8750, 0.]]],
    ("bicubic", "border", True): [[[1.5, 0.], [1.5, 0.], [1.74, 0.], [1.74, 0.]],
                                  [[1.5, 0.], [1.5, 0.], [1.74, 0.], [1.74, 0.]]],
    ("bicubic", "border", False): [[[-0.46875, 0.], [-0.46875, 0.], [1.8750, 0.], [1.8750, 0.]],
                                   [[-0.46875, 0.], [-0.46875, 0.], [1.8750, 0.], [1.8750, 0.]]],
    ("bicubic", "reflection", True): [[[0., 0.], [0., 0.], [1.92, 0.], [1.92, 0.]],
                                      [[0., 0.], [0., 0.], [1.92, 0.], [1.92, 0.]]],
    ("bicubic", "reflection", False): [[[0., 0.], [0., 0.], [1.875, 0.], [1.875, 0.]],
                                       [[0., 0.], [0., 0.], [1.875, 0.], [1.875, 0.]]],
}


@pytest.mark.parametrize("mode, padding_mode, align_corners", list(itertools.product(MODES, PADDINGS, (True, False))))
def test_grid_sample_known_values_and_grid_gradients(T, F, mode, padding_mode, align_corners):
    input = T.arange(1.0, 11).view(1, 1, 2, 5)
    grid = T.tensor(_POINTS).view(1, 2, 5, 2)
    out = F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    expected = np.array(_EXPECTED[mode, padding_mode, align_corners]).reshape(1, 1, 2, 5)
    close(out, expected, rtol=0, atol=1e-5)
    assert str(out.dtype).endswith("float32")
    # the same table from the NumPy reference, in float64
    reference = np_grid_sample(np.arange(1.0, 11).reshape(1, 1, 2, 5), np.array(_POINTS, np.float32)[None],
                               mode, padding_mode, align_corners)
    np.testing.assert_allclose(reference, expected, rtol=0, atol=1e-5)

    input = T.arange(0.0, 5).expand((1, 1, 5, 5))
    grid = T.tensor(_EDGE_POINTS).view(1, 2, 4, 2).requires_grad_()
    expected = _ZERO_GRID_GRAD if mode == "nearest" else _EXPECTED_GRID_GRAD[mode, padding_mode, align_corners]
    for input_requires_grad in (False, True):  # (PyTorch's backward kernels branch on it)
        input = input.detach().requires_grad_(input_requires_grad)
        F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners).sum().backward()
        close(grid.grad, np.array(expected).reshape(1, 2, 4, 2), rtol=0, atol=1e-5)
        grid.grad = None


@pytest.mark.parametrize("mode, padding_mode, align_corners", list(itertools.product(MODES, PADDINGS, (True, False))))
def test_grid_sample_matches_numpy_in_any_grid_layout(T, F, mode, padding_mode, align_corners):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 3, 4))
    points = rng.uniform(-1.4, 1.4, (2, 4, 5, 2))  # some outside the image
    expected = np_grid_sample(x, points, mode, padding_mode, align_corners)
    # the grid made contiguous in another order of its dims, then permuted to (N, H, W, 2)
    for order in [(0, 1, 2, 3), (0, 3, 1, 2), (3, 0, 1, 2), (0, 2, 1, 3)]:
        back = np.argsort(order)
        grid = T.tensor(np.ascontiguousarray(points.transpose(order))).permute(*back.tolist())
        input = T.tensor(np.ascontiguousarray(x.transpose(1, 0, 2, 3))).transpose(0, 1)  # (C, N) stored
        out = F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_grid_sample_shapes_and_empty_tensors(T, F, mode):
    for n, c, ih, iw, h, w in [(2, 3, 1, 1, 3, 4),  # a 1×1 input
                               (2, 3, 4, 5, 0, 4),  # an empty grid
                               (2, 0, 4, 5, 3, 4),  # no channels
                               (0, 3, 4, 5, 3, 4)]:  # no batch
        input = T.randn(n, c, ih, iw, dtype=T.float64, requires_grad=True)
        grid = T.randn(n, h, w, 2, dtype=T.float64, requires_grad=True)
        out = F.grid_sample(input, grid, mode=mode, padding_mode="border", align_corners=False)
        assert tuple(out.shape) == (n, c, h, w)
        out.backward(T.ones(n, c, h, w, dtype=T.float64))
        assert tuple(input.grad.shape) == (n, c, ih, iw) and tuple(grid.grad.shape) == (n, h, w, 2)
        if ih == 1 and mode != "bicubic":  # a 1×1 border-padded input is read everywhere, the grid has no slope
            same(out, np.broadcast_to(values(input)[:, :, :1, :1], (n, c, h, w)))
            same(grid.grad, np.zeros((n, h, w, 2)))


@pytest.mark.parametrize("mode, padding_mode, align_corners", list(itertools.product(MODES, PADDINGS, (True, False))))
def test_grid_sample_gradcheck(T, F, mode, padding_mode, align_corners):
    rng = np.random.default_rng(11)
    input = T.tensor(rng.standard_normal((1, 2, 3, 3)), requires_grad=True)
    grid = T.tensor(rng.uniform(-1.3, 1.3, (1, 3, 2, 2)), requires_grad=True)

    def sample(input, grid):
        return F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    _gradcheck(T, sample, (input, grid))
    _gradcheck(T, lambda grid: sample(input.detach(), grid), (grid,))  # (the input not requiring grad)


@pytest.mark.parametrize("mode, padding_mode, align_corners",
                         list(itertools.product(("bilinear", "nearest"), PADDINGS, (True, False))))
def test_grid_sample_3d_matches_numpy_and_gradcheck(T, F, mode, padding_mode, align_corners):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 2, 2, 3))
    points = rng.uniform(-1.3, 1.3, (2, 1, 2, 2, 3))
    input = T.tensor(np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4)), requires_grad=True)
    grid = T.tensor(np.ascontiguousarray(points.transpose(1, 0, 2, 3, 4)), requires_grad=True)

    def sample(input, grid):
        return F.grid_sample(input.transpose(0, 1), grid.transpose(0, 1), mode=mode, padding_mode=padding_mode,
                             align_corners=align_corners)

    close(sample(input, grid), np_grid_sample(x, points, mode, padding_mode, align_corners), rtol=1e-12, atol=1e-12)
    _gradcheck(T, sample, (input, grid))
    _gradcheck(T, lambda grid: sample(input.detach(), grid), (grid,))
    for n, c, size, out in [(2, 0, (3, 4, 5), (3, 2, 4)), (0, 2, (3, 4, 5), (3, 2, 4)), (2, 2, (3, 4, 5), (3, 0, 4))]:
        o = F.grid_sample(T.randn(n, c, *size, dtype=T.float64), T.randn(n, *out, 3, dtype=T.float64), mode=mode,
                          padding_mode=padding_mode, align_corners=align_corners)
        assert tuple(o.shape) == (n, c) + out


@pytest.mark.parametrize("padding_mode, align_corners", list(itertools.product(PADDINGS, (True, False))))
def test_grid_sample_nearest_rounds_alike_along_every_axis(T, F, padding_mode, align_corners):
    size, other = 10, 9
    steps = T.arange(0, size - 1 + 0.1, 0.1, dtype=T.float32)  # x.0 and x.5 positions, as nearly as float32 says
    points = 2 * steps / (size - 1) - 1 if align_corners else (steps * 2 + 1) / size - 1
    count = points.shape[0]
    fixed = T.full((count,), 0.5, dtype=T.float32)
    line = T.tensor(np.random.default_rng(0).random(size, dtype=np.float32))

    def sample(input, grid):
        return F.grid_sample(input, grid, mode="nearest", padding_mode=padding_mode, align_corners=align_corners)

    image = line.reshape(1, size).repeat(1, 1, other, 1)
    grid_x = T.stack((points, fixed), 1).reshape(1, 1, count, 2)
    along_x = sample(image, grid_x)[0, 0, 0]
    along_y = sample(image.transpose(3, 2), grid_x[..., [1, 0]])[0, 0, 0]
    volume = line.reshape(1, size).repeat(1, 1, other, other, 1)
    grid_3d = T.stack((points, fixed, fixed), 1).reshape(1, 1, 1, count, 3)
    same(along_y, values(along_x))
    same(sample(volume, grid_3d)[0, 0, 0, 0], values(along_x))
    same(sample(volume.transpose(4, 3), grid_3d[..., [1, 0, 2]])[0, 0, 0, 0], values(along_x))
    same(sample(volume.transpose(4, 2), grid_3d[..., [1, 2, 0]])[0, 0, 0, 0], values(along_x))
    # and each reads the pixel NumPy's reference reads in float32 (np.rint: halves to even, as C's nearbyint)
    expected = np_grid_sample(values(image).astype(np.float64), values(grid_x), "nearest", padding_mode, align_corners)
    same(along_x, expected[0, 0, 0].astype(np.float32))


# -- affine_grid ----------------------------------------------------------------------------------------------------

def test_affine_grid_known_values(T, F):
    theta = T.arange(1.0, 7, dtype=T.float64).view(1, 2, 3)
    same(F.affine_grid(theta, (1, 1, 2, 2), align_corners=True),
         np.array([[[0., -3.], [2., 5.]], [[4., 7.], [6., 15.]]]).reshape(1, 2, 2, 2))
    same(F.affine_grid(theta, (1, 1, 2, 2), align_corners=False),
         np.array([[[1.5, 1.5], [2.5, 5.5]], [[3.5, 6.5], [4.5, 10.5]]]).reshape(1, 2, 2, 2))
    theta = T.arange(1.0, 13, dtype=T.float64).view(1, 3, 4)
    same(F.affine_grid(theta, (1, 1, 2, 2, 2), align_corners=True),
         np.array([[[[-2., -10., -18.], [0., 0., 0.]], [[2., 2., 2.], [4., 12., 20.]]],
                   [[[4., 4., 4.], [6., 14., 22.]], [[8., 16., 24.], [10., 26., 42.]]]]).reshape(1, 2, 2, 2, 3))
    same(F.affine_grid(theta, (1, 1, 2, 2, 2), align_corners=False),
         np.array([[[[1., -1., -3.], [2., 4., 6.]], [[3., 5., 7.], [4., 10., 16.]]],
                   [[[4., 6., 8.], [5., 11., 17.]], [[6., 12., 18.], [7., 17., 27.]]]]).reshape(1, 2, 2, 2, 3))


def _np_affine_grid(theta, size, align_corners):
    axes = []
    for n in size[2:]:
        steps = np.linspace(-1, 1, n) if n > 1 else np.zeros(n)
        axes.append(steps if align_corners else steps * (n - 1) / n)
    grids = np.meshgrid(*axes, indexing="ij")
    base = np.stack(list(grids[::-1]) + [np.ones(size[2:])], -1)  # (x, y[, z], 1)
    return np.einsum("...k,njk->n...j", base, theta)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(3, 2, 4, 5), (2, 1, 1, 3), (2, 2, 3, 1, 4)])
def test_affine_grid_matches_numpy_and_gradcheck(T, F, size, align_corners):
    theta = T.tensor(np.random.default_rng(3).standard_normal((size[0], len(size) - 2, len(size) - 1)),
                     requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a unit size with align_corners=True warns)
        close(F.affine_grid(theta, size, align_corners=align_corners),
              _np_affine_grid(values(theta), size, align_corners), rtol=1e-12, atol=1e-12)
        _gradcheck(T, lambda t: F.affine_grid(t, size, align_corners=align_corners), (theta,), check_forward_ad=True)


@pytest.mark.parametrize("nd", [2, 3])
def test_affine_grid_backward_is_the_same_for_a_channels_last_gradient(T, F, nd):
    theta = T.rand(6, nd, nd + 1, requires_grad=True)
    size = [6, 3, 4, 5] if nd == 2 else [6, 3, 4, 5, 5]
    grid = F.affine_grid(theta, size, align_corners=False)
    gradient = T.rand(tuple(grid.shape))
    layout = T.channels_last if nd == 2 else T.channels_last_3d
    grid.backward(gradient.contiguous(memory_format=layout), retain_graph=True)
    channels_last = theta.grad.clone()
    theta.grad = None
    grid.backward(gradient)
    close(theta.grad, values(channels_last), rtol=1e-6, atol=1e-6)
    # d(sum g·grid)/dθ[n, j, k] = Σ over positions g[..., j] · base[..., k], in NumPy
    base = _np_affine_grid(np.eye(nd + 1)[None], size, False)  # (the base coordinates: x, y[, z], 1)
    expected = np.einsum("npj,pk->njk", values(gradient).astype(np.float64).reshape(6, -1, nd),
                         base.reshape(-1, nd + 1))
    close(theta.grad, expected, rtol=1e-4, atol=1e-4)


def _warning_messages(record):
    return " ".join(str(w.message) for w in record)


def test_affine_grid_error_checking(T, F):
    theta = T.empty(1, 2, 3, dtype=T.float64)
    size = (1, 1, 2, 2)
    F.affine_grid(theta, size, align_corners=False)  # no error
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        F.affine_grid(theta, (1, 1, 2, 1), align_corners=False)
        assert "See the documentation of affine_grid for details." not in _warning_messages(record)
        F.affine_grid(theta, (1, 1, 2, 1), align_corners=True)  # a unit size has no span between corners
        assert "See the documentation of affine_grid for details." in _warning_messages(record)
    raises(ValueError, "Expected theta to have floating point type", F.affine_grid, theta.int(), size,
           align_corners=False)
    for bad in (theta[0], theta.unsqueeze(0), theta.repeat(1, 2, 1), theta.repeat(1, 1, 2)):
        raises(ValueError, "Expected a batch of 2D affine matrices of shape Nx2x3", F.affine_grid, bad, size,
               align_corners=False)

    theta = T.empty(1, 3, 4, dtype=T.float64)
    size = (1, 1, 2, 2, 2)
    F.affine_grid(theta, size, align_corners=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        F.affine_grid(theta, (1, 1, 3, 2, 1), align_corners=False)
        assert "See the documentation of affine_grid for details." not in _warning_messages(record)
        F.affine_grid(theta, (1, 1, 3, 2, 1), align_corners=True)
        assert "See the documentation of affine_grid for details." in _warning_messages(record)
    for bad in (theta[0], theta.unsqueeze(0), theta.repeat(1, 2, 1), theta.repeat(1, 1, 2)):
        raises(ValueError, "Expected a batch of 3D affine matrices of shape Nx3x4", F.affine_grid, bad, size,
               align_corners=False)
    raises(NotImplementedError, "affine_grid only supports 4D and 5D sizes", F.affine_grid, theta, (1, 2, 2),
           align_corners=False)
    raises(NotImplementedError, "affine_grid only supports 4D and 5D sizes", F.affine_grid, theta,
           (1, 1, 2, 2, 2, 2), align_corners=False)


def test_affine_grid_then_grid_sample_reads_the_identity_back(T, F):
    image = T.arange(27.0, 0, -1, dtype=T.float64).view(1, 1, 3, 3, 3).requires_grad_()
    theta = T.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]], dtype=T.float64)
    grid = F.affine_grid(theta, (1, 1, 3, 3, 3), align_corners=False)
    grid[:, 1, 1, 1, 0] = float("inf")  # (PyTorch's issue 24823: a point at infinity reads nothing)
    out = F.grid_sample(image, grid, padding_mode="zeros", align_corners=False)
    expected = np.arange(27.0, 0, -1).reshape(1, 1, 3, 3, 3)
    expected[0, 0, 1, 1, 1] = 0
    same(out, expected)
    out.backward(T.ones_like(out))
    same(image.grad, (expected != 0).astype(np.float64))


# -- interpolate: NumPy's one-dim rules -----------------------------------------------------------------------------

def _np_source_ratio(n, m, align_corners, scale=None):
    if align_corners:
        return (n - 1) / (m - 1) if m > 1 else 0.0
    return 1.0 / scale if scale is not None else n / m


def np_linear_matrix(n, m, align_corners, scale=None):
    """The (m, n) matrix of 1-d linear interpolation from n samples to m."""
    r = _np_source_ratio(n, m, align_corners, scale)
    matrix = np.zeros((m, n))
    for o in range(m):
        s = o * r if align_corners else max(r * (o + 0.5) - 0.5, 0.0)
        low = min(int(math.floor(s)), n - 1)
        high = min(low + 1, n - 1)
        matrix[o, low] += 1 - (s - low)
        matrix[o, high] += s - low
    return matrix


def np_cubic_matrix(n, m, align_corners, scale=None):
    """The (m, n) matrix of 1-d bicubic interpolation (Keys, a = -0.75; indices clamped to the input)."""
    r = _np_source_ratio(n, m, align_corners, scale)
    matrix = np.zeros((m, n))
    for o in range(m):
        s = o * r if align_corners else r * (o + 0.5) - 0.5
        f = math.floor(s)
        for k, w in enumerate(_cubic_weights(s - f)):
            matrix[o, min(max(f - 1 + k, 0), n - 1)] += w
    return matrix


def np_resize(x, matrices):
    """x (N, C, *spatial) resized along each spatial dim by its matrix."""
    for axis, matrix in enumerate(matrices, start=2):
        x = np.moveaxis(np.tensordot(matrix, x, axes=([1], [axis])), 0, axis)
    return x


def _layout(T, dims, channels_last):
    if not channels_last:
        return T.contiguous_format
    return T.channels_last if dims == 4 else T.channels_last_3d


# -- nearest and nearest-exact --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_upsampling_nearest_1d_values_uint8_and_gradients(T, nn, F, mode):
    m = nn.Upsample(size=4, mode=mode)
    same(m(T.ones(1, 1, 2, dtype=T.float64)), np.ones((1, 1, 4)), dtype="float64")
    same(m(T.ones(1, 1, 2, dtype=T.uint8)), np.ones((1, 1, 4), np.uint8), dtype="uint8")
    x = T.randn(1, 1, 2, dtype=T.float64, requires_grad=True)
    _gradcheck(T, lambda x: F.interpolate(x, 4, mode=mode), (x,), check_forward_ad=True)
    _gradgradcheck(T, lambda x: F.interpolate(x, 4, mode=mode), (x,))
    x = T.randn(1, 1, 20, dtype=T.float64, requires_grad=True)
    _gradcheck(T, lambda x: F.interpolate(x, 11, mode=mode), (x,), check_forward_ad=True)
    _gradgradcheck(T, lambda x: F.interpolate(x, 4, mode=mode), (x,))
    # each input's gradient: how many outputs copied it
    F.interpolate(x, 11, mode=mode).sum().backward()
    offset = 0.5 if mode == "nearest-exact" else 0.0
    copied = np.bincount(np.floor((np.arange(11) + offset) * (20 / 11)).astype(int), minlength=20)
    same(x.grad, copied.reshape(1, 1, 20).astype(np.float64))


def _np_nearest_index(isize, osize, exact):
    scale = isize / osize  # OpenCV's INTER_NEAREST (o · scale) and scikit-image's ((o + ½) · scale), truncated
    return np.array([int(((o + 0.5) if exact else o) * scale) for o in range(osize)])


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("dims, channels_last", [(1, False), (2, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("isize, osize", [(20, 11), (10, 15)])
def test_upsampling_nearest_matches_opencv_and_scikit_image(T, F, mode, dims, channels_last, isize, osize):
    x = np.arange(float(isize ** dims), dtype=np.float32).reshape((1, 1) + (isize,) * dims)
    input = T.tensor(x).contiguous(memory_format=_layout(T, dims + 2, channels_last)) if dims > 1 else T.tensor(x)
    out = F.interpolate(input, size=(osize,) * dims, recompute_scale_factor=False, mode=mode)
    index = _np_nearest_index(isize, osize, mode == "nearest-exact")
    same(out, x[(Ellipsis,) + np.ix_(*[index] * dims)], dtype="float32")
    if channels_last:
        assert out.is_contiguous(memory_format=_layout(T, dims + 2, True))


def test_upsampling_nearest_exact_1d_rescale(T, F):
    x = T.arange(20.0).view(1, 1, 20)
    same(F.interpolate(x, scale_factor=1.00001, recompute_scale_factor=False, mode="nearest-exact"), values(x))
    same(F.interpolate(x, scale_factor=2.00001, recompute_scale_factor=False, mode="nearest-exact"),
         np.repeat(np.arange(20.0, dtype=np.float32), 2).reshape(1, 1, 40))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_nearest_2d_keeps_the_layout(T, F, mode, channels_last):
    layout = _layout(T, 4, channels_last)
    out = F.interpolate(T.ones(1, 2, 2, 2, dtype=T.float64).contiguous(memory_format=layout), size=4, mode=mode)
    same(out, np.ones((1, 2, 4, 4)))
    assert out.is_contiguous(memory_format=layout)
    same(F.interpolate(T.ones(1, 2, 2, 2, dtype=T.uint8).contiguous(memory_format=layout), size=4, mode=mode),
         np.ones((1, 2, 4, 4), np.uint8), dtype="uint8")
    # height and width apart; the gradient laid out as the input, whatever the incoming gradient's layout
    x = T.ones(1, 2, 2, 1, dtype=T.float64).contiguous(memory_format=layout).requires_grad_()
    out = F.interpolate(x, size=(4, 2), mode=mode)
    same(out, np.ones((1, 2, 4, 2)))
    assert out.is_contiguous(memory_format=layout)
    out.backward(T.arange(16.0, dtype=T.float64).view(1, 2, 4, 2))
    assert x.grad.is_contiguous(memory_format=layout)
    same(x.grad, np.arange(16.0).reshape(1, 2, 2, 2, 2).sum((3, 4))[..., None])  # rows (0, 1) and (2, 3) add up
    _gradcheck(T, lambda x: F.interpolate(x, size=(4, 2), mode=mode), (x,), check_forward_ad=True)
    _gradgradcheck(T, lambda x: F.interpolate(x, size=(4, 2), mode=mode), (x,))
    x = T.randn(1, 2, 2, 2, dtype=T.float64).contiguous(memory_format=layout)
    same(F.interpolate(x, 4, mode=mode), values(F.interpolate(x, scale_factor=2, mode=mode)))
    same(F.interpolate(x, 4, mode=mode), np.repeat(np.repeat(values(x), 2, 2), 2, 3))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_nearest_3d_keeps_the_layout(T, nn, F, mode, channels_last):
    layout = _layout(T, 5, channels_last)
    m = nn.Upsample(size=4, mode=mode)
    x = T.ones(1, 2, 2, 2, 2, dtype=T.float64).contiguous(memory_format=layout).requires_grad_()
    out = m(x)
    same(out, np.ones((1, 2, 4, 4, 4)))
    same(m(T.ones(1, 2, 2, 2, 2, dtype=T.uint8).contiguous(memory_format=layout)), np.ones((1, 2, 4, 4, 4), np.uint8))
    assert out.is_contiguous(memory_format=layout)
    out.backward(T.ones_like(out))
    assert x.grad.is_contiguous(memory_format=layout)
    same(x.grad, np.full((1, 2, 2, 2, 2), 8.0))
    x = T.randn(1, 2, 2, 2, 2, dtype=T.float64).contiguous(memory_format=layout).requires_grad_()
    _gradcheck(T, lambda x: F.interpolate(x, 4, mode=mode), (x,), check_forward_ad=True)
    _gradgradcheck(T, lambda x: F.interpolate(x, 4, mode=mode), (x,))


# -- bilinear and bicubic -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_bilinear_and_bicubic(T, F, antialias, align_corners, mode, channels_last):
    layout = _layout(T, 4, channels_last)
    kwargs = dict(mode=mode, align_corners=align_corners, antialias=antialias)
    for scale_factor in (0.5, 1.5, 2):
        x = T.ones(2, 3, 8, 8, dtype=T.float64).contiguous(memory_format=layout).requires_grad_()
        out_size = int(math.floor(8 * scale_factor))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = F.interpolate(x, scale_factor=scale_factor, **kwargs)
        close(out, np.ones((2, 3, out_size, out_size)), rtol=0, atol=1e-12)  # the weights of each output sum to 1
        assert out.is_contiguous(memory_format=layout)
        out.backward(T.randn_like(out))
        assert x.grad.is_contiguous(memory_format=layout)
    x = T.randn(1, 2, 4, 4, dtype=T.float64).contiguous(memory_format=layout).requires_grad_()
    _gradcheck(T, lambda x: F.interpolate(x, 6, **kwargs), (x,), check_forward_ad=True)
    _gradgradcheck(T, lambda x: F.interpolate(x, 3, **kwargs), (x[:, :1],))
    if not antialias:  # against NumPy's separable rule
        matrix = (np_linear_matrix if mode == "bilinear" else np_cubic_matrix)(4, 7, align_corners)
        close(F.interpolate(x, 7, **kwargs), np_resize(values(x), [matrix, matrix]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64"])
def test_upsampling_2d_dtypes(T, F, request, mode, antialias, dtype):
    if antialias and "nearest" in mode:
        pytest.skip("nearest has no antialiasing")
    x = T.ones(1, 3, 32, 32, dtype=getattr(T, dtype))
    if dtype.startswith("float") or dtype == "uint8":
        out = F.interpolate(x, (12, 12), mode=mode, antialias=antialias)
        close(out, np.ones((1, 3, 12, 12), dtype), rtol=0, atol=1e-6)
        assert str(out.dtype).endswith(dtype)
    else:
        raises(RuntimeError, "not implemented for", F.interpolate, x, (12, 12), mode=mode, antialias=antialias)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_antialiased_matches_pil(T, F, channels_last):
    x = T.arange(3 * 8 * 8, dtype=T.float32).reshape(1, 3, 8, 8).expand(5, 3, 8, 8)
    x = x.contiguous(memory_format=_layout(T, 4, channels_last))
    # PIL.Image.resize((2, 2), LINEAR) and BICUBIC of each channel, PyTorch's literals
    bilinear = [17.035713, 20.25, 42.75, 45.964287, 81.03572, 84.25, 106.75, 109.96428, 145.0357, 148.25, 170.75,
                173.9643]
    bicubic = [15.1205635, 18.760439, 44.23956, 47.879436, 79.12056, 82.76044, 108.23956, 111.87944, 143.12057,
               146.76044, 172.23956, 175.87943]
    for mode, expected in (("bilinear", bilinear), ("bicubic", bicubic)):
        out = F.interpolate(x, size=(2, 2), mode=mode, align_corners=False, antialias=True)
        close(out, np.broadcast_to(np.array(expected, np.float32).reshape(1, 3, 2, 2), (5, 3, 2, 2)),
              rtol=1.3e-6, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [True, False])
def test_upsampling_uint8_is_the_rounded_float_resize(T, F, request, channels_last, mode, antialias):
    low, high = (30, 220) if mode == "bicubic" else (0, 256)
    image = np.random.default_rng(0).integers(low, high, (1, 3, 40, 40)).astype(np.uint8)
    x = T.tensor(image).contiguous(memory_format=_layout(T, 4, channels_last))
    for size in (16, 60):
        as_float = F.interpolate(x.float(), size=(size, size), mode=mode, antialias=antialias).round().clip(0, 255)
        out = F.interpolate(x, size=(size, size), mode=mode, antialias=antialias)
        assert out.dtype == T.uint8 and out.is_contiguous(memory_format=_layout(T, 4, channels_last))
        assert np.abs(values(as_float) - values(out).astype(np.float32)).max() <= (1 if mode == "bilinear" else 15)



@pytest.mark.parametrize("cut", [False, "sliced", "restrided"])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [True, False])
def test_upsampling_a_cut_channels_last_image_stays_channels_last(T, F, cut, mode, antialias):
    # the float half of PyTorch's test_upsamplingBiMode2d_consistency: the output keeps the input's suggested layout
    image = np.random.default_rng(1).integers(0, 256, (2, 3, 24, 24)).astype(np.float32)
    x = T.tensor(image).contiguous(memory_format=T.channels_last)
    x = {False: x, "sliced": x[:, :, 2:-2, 2:-2], "restrided": x[:, :, ::2, ::2]}[cut]
    for size in (8, 30):
        out = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)
        assert out.is_contiguous(memory_format=T.channels_last)
        if not antialias:
            rule = np_linear_matrix if mode == "bilinear" else np_cubic_matrix
            rows, columns = (rule(n, size, False) for n in x.shape[2:])
            close(out, np_resize(values(x).astype(np.float64), [rows, columns]), rtol=1e-5, atol=1e-3)

def test_upsampling_bicubic_matches_opencv(T, F):
    x = T.arange(8.0).view(1, 2, 2, 2)
    expected = [[[[-0.31641, 0.01562, 0.56250, 0.89453], [0.34766, 0.67969, 1.22656, 1.55859],
                  [1.44141, 1.77344, 2.32031, 2.65234], [2.10547, 2.43750, 2.98438, 3.31641]],
                 [[3.68359, 4.01562, 4.56250, 4.89453], [4.34766, 4.67969, 5.22656, 5.55859],
                  [5.44141, 5.77344, 6.32031, 6.65234], [6.10547, 6.43750, 6.98438, 7.31641]]]]
    close(F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False), expected, rtol=0, atol=1e-5)
    cubic = np_cubic_matrix(2, 4, False)
    close(F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False),
          np_resize(np.arange(8.0).reshape(1, 2, 2, 2), [cubic, cubic]), rtol=0, atol=1e-6)


def test_upsampling_bicubic_without_recomputing_the_scale_factor(T, F):
    x = T.arange(8.0, dtype=T.float64).view(1, 2, 2, 2)
    expected = [[[[-0.32725, -0.08843, 0.37933, 0.79744], [0.15039, 0.38921, 0.85697, 1.27508],
                  [1.08591, 1.32473, 1.79249, 2.21060], [1.92213, 2.16095, 2.62871, 3.04682]],
                 [[3.67275, 3.91157, 4.37933, 4.79744], [4.15039, 4.38921, 4.85697, 5.27508],
                  [5.08591, 5.32473, 5.79249, 6.21060], [5.92213, 6.16095, 6.62871, 7.04682]]]]
    out = F.interpolate(x, scale_factor=2.3, mode="bicubic", align_corners=False, recompute_scale_factor=False)
    close(out, expected, rtol=0, atol=1e-4)  # (OpenCV's: the source steps by 1/2.3, not by 2/4)
    cubic = np_cubic_matrix(2, 4, False, scale=2.3)
    close(out, np_resize(values(x), [cubic, cubic]), rtol=1e-12, atol=1e-12)
    for align_corners in (True, False):
        for scale_factor in (0.6, 1.6, 2.3):
            out_size = int(math.floor(2 * scale_factor))
            out = F.interpolate(T.ones(2, 2, 2, 2), scale_factor=scale_factor, mode="bicubic",
                                align_corners=align_corners)
            close(out, np.ones((2, 2, out_size, out_size)), rtol=0, atol=1e-5)
            x = T.randn(2, 2, 2, 2, dtype=T.float64, requires_grad=True)
            _gradcheck(T, lambda x, size=out_size, align=align_corners: F.interpolate(
                x, size, mode="bicubic", align_corners=align), (x,))


# -- linear and trilinear -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("recompute_scale_factor", [True, False])
def test_upsampling_linear_1d(T, nn, F, align_corners, recompute_scale_factor):
    kwargs = dict(mode="linear", align_corners=align_corners, recompute_scale_factor=recompute_scale_factor)
    for scale_factor in (0.5, 1.5, 2):
        m = nn.Upsample(scale_factor=scale_factor, **kwargs)
        out_size = int(math.floor(2 * scale_factor))
        same(m(T.ones(1, 1, 2)), np.ones((1, 1, out_size), np.float32))
        x = T.tensor([[[0.3, -1.2]]], dtype=T.float64, requires_grad=True)
        out = F.interpolate(x, scale_factor=scale_factor, **kwargs)
        scale = None if recompute_scale_factor or align_corners else scale_factor
        matrix = np_linear_matrix(2, out_size, align_corners, scale)
        close(out, np_resize(values(x), [matrix]), rtol=1e-12, atol=1e-12)
        weights = np.arange(1.0, out_size + 1)
        out.backward(T.tensor(weights.reshape(1, 1, -1)))
        close(x.grad, (weights @ matrix).reshape(1, 1, 2), rtol=1e-12, atol=1e-12)
        _gradcheck(T, lambda x, factor=scale_factor: F.interpolate(x, scale_factor=factor, **kwargs), (x,))
        _gradcheck(T, lambda x, size=out_size: F.interpolate(x, size, mode="linear", align_corners=align_corners), (x,))


@pytest.mark.parametrize("mode, dims", [("linear", 1), ("bilinear", 2), ("trilinear", 3)])
def test_upsampling_is_spatially_invariant(T, nn, F, mode, dims):
    m = nn.Upsample(scale_factor=3, mode=mode, align_corners=False)
    x = T.zeros((1, 1) + (9,) * dims)
    x[(Ellipsis,) + (slice(0, 4),) * dims] = T.randn((1, 1) + (4,) * dims)
    whole, part = m(x), m(x[(Ellipsis,) + (slice(0, 5),) * dims])
    close(whole[(Ellipsis,) + (slice(0, 15),) * dims], values(part), rtol=1e-6, atol=1e-6)


def test_upsampling_small_scale(T, nn):
    m = nn.Upsample(scale_factor=0.5, mode="bilinear")
    same(m(T.arange(1, 5, dtype=T.float32).reshape(1, 1, 2, 2)), [[[[2.5]]]])  # (the centre of 2×2: their mean)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_trilinear_3d(T, nn, F, align_corners, channels_last):
    layout = _layout(T, 5, channels_last)
    kwargs = dict(mode="trilinear", align_corners=align_corners)
    for scale_factor in (0.5, 1.5, 2):
        m = nn.Upsample(scale_factor=scale_factor, **kwargs)
        x = T.ones(1, 2, 4, 4, 4, dtype=T.float64).contiguous(memory_format=layout).requires_grad_()
        out_size = int(math.floor(4 * scale_factor))
        out = m(x)
        close(out, np.ones((1, 2) + (out_size,) * 3), rtol=0, atol=1e-12)
        assert out.is_contiguous(memory_format=layout)
        gradient = T.randn_like(out).contiguous(memory_format=layout)
        out.backward(gradient, retain_graph=True)
        assert x.grad.is_contiguous(memory_format=layout)
        first = x.grad.clone()
        x.grad = None
        out.backward(gradient.contiguous())  # a row-major gradient: the same values, the input's layout still
        close(x.grad, values(first), rtol=1e-12, atol=1e-12)
        assert x.grad.is_contiguous(memory_format=layout)
        x = T.randn(1, 2, 4, 4, 4, dtype=T.float64)
        scale = None if align_corners else scale_factor
        matrix = np_linear_matrix(4, out_size, align_corners, scale)
        by_scale = F.interpolate(x, scale_factor=scale_factor, **kwargs)
        close(by_scale, values(F.interpolate(x, (out_size,) * 3, **kwargs)), rtol=1e-12, atol=1e-12)
        close(by_scale, np_resize(values(x), [matrix] * 3), rtol=1e-12, atol=1e-12)
    x = T.randn(1, 1, 2, 2, 3, dtype=T.float64, requires_grad=True)
    _gradcheck(T, lambda x: F.interpolate(x, 3, **kwargs), (x,))
    _gradgradcheck(T, lambda x: F.interpolate(x, 3, **kwargs), (x,))


# -- interpolate: scale factors, sizes and errors -------------------------------------------------------------------

@pytest.mark.parametrize("scale_factor", [0.5, 1.5, 2])
@pytest.mark.parametrize("mode, dims", [("nearest", 1), ("nearest", 2), ("nearest", 3), ("area", 1), ("area", 2),
                                        ("area", 3), ("linear", 1), ("bilinear", 2), ("bicubic", 2),
                                        ("trilinear", 3)])
def test_interpolate_ones_sizes_and_gradients(T, nn, F, scale_factor, mode, dims):
    kwargs = dict(mode=mode) if mode in ("nearest", "area") else dict(mode=mode, align_corners=False)
    x = T.ones([1, 1] + [2] * dims, dtype=T.float64, requires_grad=True)
    out_size = int(math.floor(2 * scale_factor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = nn.Upsample(scale_factor=scale_factor, **kwargs)(x)
    close(out, np.ones([1, 1] + [out_size] * dims), rtol=0, atol=1e-12)
    close(F.interpolate(x, (out_size,) * dims, **kwargs), values(F.interpolate(x, scale_factor=scale_factor, **kwargs)),
          rtol=1e-12, atol=1e-12)
    _gradcheck(T, lambda x: F.interpolate(x, out_size, **kwargs), (x,))
    _gradgradcheck(T, lambda x: F.interpolate(x, out_size, **kwargs), (x,))
    for size in (float(out_size), T.tensor(out_size, dtype=T.float32)):
        raises(TypeError, "expected size to be one of int or", F.interpolate, x, size=(size,) * dims, **kwargs)


def test_interpolate_sizes_and_scale_factors_refused(T, F):
    x = T.ones(1, 1, 16, 16)
    raises(RuntimeError, "value cannot be converted to type int64_t without overflow", F.interpolate, x,
           scale_factor=-1e20, mode="bilinear")
    raises(RuntimeError, "value cannot be converted to type int64_t without overflow", F.interpolate, x,
           scale_factor=1e20, mode="bilinear")
    raises(RuntimeError, "value cannot be converted to type int64_t without overflow", F.interpolate, x,
           scale_factor=float("nan"))
    raises(ValueError, "recompute_scale_factor is not meaningful with an explicit size", F.interpolate, x, size=3,
           recompute_scale_factor=True)
    # a size n·f is truncated toward 0 (-0.3 · 4 = -1.2: -1), and 1-d kernels say "and output"
    raises(RuntimeError, r"but got input \(W: 4\) and output \(W: -1\)", F.interpolate, T.ones(1, 1, 4),
           scale_factor=-0.3, mode="linear")
    raises(RuntimeError, r"but got input \(W: 4\) and output \(W: 0\)", F.interpolate, T.ones(1, 1, 4),
           scale_factor=-0.1, mode="nearest")
    raises(RuntimeError, r"but got input \(H: 4, W: 4\) output \(H: 0, W: 0\)", F.interpolate, T.ones(1, 1, 4, 4),
           size=0, mode="bicubic")
    raises(TypeError, r"but got size with types \[<class 'float'>\]", F.interpolate, T.ones(1, 1, 4), size=(3.5,))
    raises(TypeError, "", F.interpolate, T.ones(1, 1, 4), size=(True,))
    # integer tensors and NumPy integers are sizes
    same(F.interpolate(T.ones(1, 1, 4), size=(T.tensor(3),)), np.ones((1, 1, 3), np.float32))
    same(F.interpolate(T.ones(1, 1, 4), size=np.int64(3)), np.ones((1, 1, 3), np.float32))


def test_grid_sample_far_outside_points(T, F):
    # PyTorch's issues 35202 and 24823 (its CUDA test; the CPU kernels share the rules): points ~1e7 pixels away read
    # zeros with no gradient, or the edge pixel under border padding
    image = T.arange(12.0).view(1, 1, 3, 4).requires_grad_()
    points = T.tensor([[-10059144.0, 67680944.0], [67680944.0, 67680944.0]]).view(1, 1, 2, 2)
    out = F.grid_sample(image, points, align_corners=False)
    same(out, [[[[0.0, 0.0]]]])
    out.backward(T.ones_like(out))
    same(image.grad, np.zeros((1, 1, 3, 4), np.float32))
    same(F.grid_sample(image, points, padding_mode="border", align_corners=False), [[[[8.0, 11.0]]]])
    theta = T.tensor([[[-1.0e20, 0.0, 0.0], [0.0, -1.0e20, 0.0]]])
    blank = T.zeros(1, 1, 4, 4, requires_grad=True)
    out = F.grid_sample(blank, F.affine_grid(theta, (1, 1, 4, 4), align_corners=False), align_corners=False)
    same(out, np.zeros((1, 1, 4, 4), np.float32))
    out.backward(T.ones_like(out))
    same(blank.grad, np.zeros((1, 1, 4, 4), np.float32))
