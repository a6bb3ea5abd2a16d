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
from tests.ported import close, raises, same, values, xfail_on_chainrule

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
    ("bilinear", "zeros", True): [[[-8., -8.], [-8., 0.], [2., 0.], [2., 0.]], [[2., 0.], [2., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "zeros", False): [[[-5., -5.], [-5., 5.], [-10., -10.], [-10., 10.]],
                                   [[0., 0.], [0., 0.], [0., 0.], [0., 0.]]],
    ("bilinear", "border", True): [[[-0., -0.], [-0., 0.], [2., 0.], [2., 0.]], [[0., 0.], [0., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "border", False): _ZERO_GRID_GRAD,
    ("bilinear", "reflection", True): [[[-0., -0.], [-0., 0.], [2., 0.], [2., 0.]],
                                       [[0., 0.], [0., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "reflection", False): _ZERO_GRID_GRAD,
    ("bicubic", "zeros", True): [[[-4.5, -6.], [-4.5, 6.], [2.725679, 0.740878], [2.725679, -0.740878]],
                                 [[1.5, 0.], [1.5, 0.], [1.927921, -0.05688], [1.927921, 0.05688]]],
    ("bicubic", "zeros", False): [[[-5.859375, -5.888672], [-5.859375, 5.888672], [-5.6250, -7.5000], [-5.6250, 7.5000]],
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
    input = T.tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    grid = T.tensor(rng.uniform(-1.3, 1.3, (2, 3, 2, 2)), requires_grad=True)

    def sample(input, grid):
        return F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    _gradcheck(T, sample, (input, grid))
    _gradcheck(T, lambda grid: sample(input.detach(), grid), (grid,))  # (the input not requiring grad)


@pytest.mark.parametrize("mode, padding_mode, align_corners",
                         list(itertools.product(("bilinear", "nearest"), PADDINGS, (True, False))))
def test_grid_sample_3d_matches_numpy_and_gradcheck(T, F, mode, padding_mode, align_corners):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 2, 3, 3))
    points = rng.uniform(-1.3, 1.3, (2, 2, 2, 3, 3))
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
