"""Affine sampling and the general normalisation checks, ported from PyTorch's test/test_nn.py (TestNN's
test_affine_* and TestNNDeviceType's _test_*Norm_general on CPU): affine_grid against its formula in 2-d and 3-d,
grid_sample with border padding under rotations by 0, 45 and 90 degrees and random ones against a NumPy bilinear
sampler (scipy.ndimage.affine_transform's order-1 'nearest' mode in PyTorch's test), a 90-degree turn as np.rot90,
InstanceNorm normalising each channel, unchanged in eval mode, with momentum=1 running statistics, LayerNorm and
GroupNorm normalising to mean 0 and variance 1 and applying their affine maps, and their refusals of shapes that do
not fit. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0]])


def base_coordinates(size, align_corners):
    """affine_grid's normalised coordinates along one dim: -1 and 1 at the corner pixels' centres (align_corners)
    or at their outer edges."""
    if align_corners:
        return np.linspace(-1, 1, size) if size > 1 else np.zeros(1)
    return (2 * np.arange(size) + 1) / size - 1


def np_affine_grid(theta, size, align_corners):
    """grid[n, ..., :] = θ @ (x, y[, z], 1), x along the last dim."""
    axes = [base_coordinates(n, align_corners) for n in size[2:]][::-1]  # x, y(, z)
    mesh = np.meshgrid(*axes, indexing="xy") if len(axes) == 2 else \
        [m.transpose(2, 0, 1) for m in np.meshgrid(*axes, indexing="xy")]
    points = np.stack(list(mesh) + [np.ones_like(mesh[0])], -1)  # (..., dims + 1)
    return np.einsum("nij,...j->n...i", theta, points)


def np_bilinear_border(image, grid):
    """grid_sample(image, grid, 'bilinear', 'border', align_corners=True) of one (H, W) image by hand."""
    h, w = image.shape
    x = np.clip((grid[..., 0] + 1) / 2 * (w - 1), 0, w - 1)
    y = np.clip((grid[..., 1] + 1) / 2 * (h - 1), 0, h - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), w - 2), np.minimum(np.floor(y).astype(int), h - 2)
    fx, fy = x - x0, y - y0
    return ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1]) +
            fy * ((1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]))


@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_grid_is_theta_times_the_base_grid(T, F, align_corners):
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((2, 2, 3))
    for size in ((2, 1, 3, 5), (2, 3, 4, 1)):
        if align_corners and 1 in size[2:]:  # (a unit-size dim's one coordinate is 0 since PyTorch 1.3: it warns)
            with pytest.warns(UserWarning, match="affine_grid behavior has changed for unit-size grids"):
                grid = F.affine_grid(T.tensor(theta), list(size), align_corners=align_corners)
        else:
            grid = F.affine_grid(T.tensor(theta), list(size), align_corners=align_corners)
        close(grid, np_affine_grid(theta, size, align_corners), rtol=1e-12, atol=1e-12)
    theta = rng.standard_normal((1, 3, 4))
    size = (1, 1, 2, 3, 4)
    close(F.affine_grid(T.tensor(theta), list(size), align_corners=align_corners),
          np_affine_grid(theta, size, align_corners), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("turns", [0.0, 0.5, 0.25, 0.125, 0.3183])
@pytest.mark.parametrize("in_size, out_size", [((3, 5), (5, 3)), ((3, 3), (5, 5)), ((4, 4), (4, 3)), ((3, 4), (6, 6))])
def test_rotations_sample_as_numpy_does(T, F, turns, in_size, out_size):
    rng = np.random.default_rng(1)
    image = rng.random(in_size).round(3)
    image[0, 0], image[0, -1], image[-1, 0], image[-1, -1] = 2, 4, 6, 8
    theta = rotation(turns * 2 * math.pi)[None]
    grid = F.affine_grid(T.tensor(theta), [1, 1, *out_size], align_corners=True)
    out = F.grid_sample(T.tensor(image[None, None]), grid, padding_mode="border", align_corners=True)
    close(grid, np_affine_grid(theta, (1, 1, *out_size), True), rtol=1e-12, atol=1e-12)
    close(out, np_bilinear_border(image, values(grid)[0])[None, None], rtol=1e-10, atol=1e-12)


def test_rotations_by_0_and_90_degrees(T, F):
    # no rotation, 3×3 to 5×5 with the corners aligned: bilinear interpolation at half steps, separably
    image = np.random.default_rng(2).random((3, 3)).astype(np.float32)
    grid = F.affine_grid(T.tensor(rotation(0.0)[None].astype(np.float32)), [1, 1, 5, 5], align_corners=True)
    out = F.grid_sample(T.tensor(image[None, None]), grid, padding_mode="border", align_corners=True)
    half = np.array([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]], np.float32)
    close(out, (half @ image @ half.T)[None, None], rtol=1e-6, atol=1e-6)
    # a quarter turn of a square image is np.rot90
    for n in (2, 3, 4, 6):
        image = np.random.default_rng(n).random((n, n)).astype(np.float32)
        grid = F.affine_grid(T.tensor(rotation(math.pi / 2)[None].astype(np.float32)), [1, 1, n, n],
                             align_corners=True)
        out = F.grid_sample(T.tensor(image[None, None]), grid, padding_mode="border", align_corners=True)
        close(out, np.rot90(image)[None, None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_instance_norm_general(T, nn, spatial):
    rng = np.random.default_rng(spatial)
    b, c = 3, 4
    x_np = rng.random((b, c) + (5,) * spatial).astype(np.float32)
    norm = getattr(nn, f"InstanceNorm{spatial}d")
    x = T.tensor(x_np, requires_grad=True)
    m = norm(c, eps=0)
    out = m(x)
    per_channel = values(out).reshape(b * c, -1)
    close(per_channel.mean(1), np.zeros(b * c), rtol=0, atol=1e-5)
    close(per_channel.var(1), np.ones(b * c), rtol=0, atol=1e-4)
    grad_out = T.tensor(rng.standard_normal(x_np.shape).astype(np.float32))
    out.backward(grad_out)
    first = values(x.grad).copy()
    m.eval()  # without running statistics, eval mode changes nothing
    x.grad = None
    again = m(x)
    again.backward(grad_out)
    close(again, values(out), rtol=0, atol=0)
    close(x.grad, first, rtol=0, atol=0)
    # momentum=1: the running statistics are this batch's, the variance unbiased per sample and averaged
    m = norm(c, momentum=1, eps=0, track_running_stats=True)
    m(x)
    by_channel = x_np.transpose(1, 0, *range(2, x_np.ndim)).reshape(c, b, -1).astype(np.float64)
    close(m.running_mean, by_channel.reshape(c, -1).mean(1), rtol=1e-5)
    close(m.running_var, by_channel.var(2, ddof=1).mean(1), rtol=1e-5)
    # eval mode with those statistics: adding k standard deviations to channel k makes its mean k
    m.eval()
    shift = np.sqrt(values(m.running_var)) * np.arange(c, dtype=np.float32)
    shifted = m(T.tensor(x_np + shift.reshape((1, c) + (1,) * spatial)))
    close(values(shifted).transpose(1, 0, *range(2, x_np.ndim)).reshape(c, -1).mean(1), np.arange(c), rtol=0,
          atol=1e-4)


def test_layer_norm_and_group_norm_general(T, nn):
    rng = np.random.default_rng(3)
    for shape, normalized in (((3, 4, 5), [5]), ((2, 3, 4, 5), [4, 5]), ((5, 3, 3, 4, 3), [3, 3, 4, 3])):
        x = rng.uniform(0, 10, shape).astype(np.float32)
        ln = nn.LayerNorm(normalized, eps=0)
        rows = values(ln(T.tensor(x))).reshape(-1, int(np.prod(normalized)))
        close(rows.mean(1), np.zeros(len(rows)), rtol=0, atol=1e-5)
        close(rows.var(1), np.ones(len(rows)), rtol=0, atol=1e-4)
        with T.no_grad():
            ln.weight.fill_(1.5)
            ln.bias.fill_(0.25)
        close(ln(T.tensor(x)), rows.reshape(shape) * 1.5 + 0.25, rtol=1e-5, atol=1e-5)
    raises(RuntimeError, "Expected normalized_shape to be at least 1-dimensional", nn.LayerNorm(()), T.ones(()))
    for normalized, shape in (((2, 3), (3,)), ((2,), (1, 2, 3)), ((10,), (2, 3)), (10, (2, 3))):
        raises(RuntimeError, "Given normalized_shape=.*, expected input with shape \\[\\*, .*\\], but got input of "
               "size", nn.LayerNorm(normalized), T.ones(shape))
    for shape, groups in (((1, 2, 3, 4), 2), ((2, 3, 10), 3), ((3, 1, 1, 1, 2), 1), ((2, 6, 4, 2, 2), 3),
                          ((1, 256, 1, 1), 32)):
        x = rng.uniform(0, 10, shape).astype(np.float32)
        gn = nn.GroupNorm(groups, shape[1], eps=0)
        per_group = values(gn(T.tensor(x))).reshape(shape[0], groups, -1)
        close(per_group.mean(-1), np.zeros(per_group.shape[:2]), rtol=0, atol=1e-5)
        close(per_group.var(-1), np.ones(per_group.shape[:2]), rtol=0, atol=1e-4)
        scale = rng.uniform(0.2, 2, shape[1]).astype(np.float32)
        bias = rng.uniform(0.2, 2, shape[1]).astype(np.float32)
        with T.no_grad():
            gn.weight.copy_(T.tensor(scale))
            gn.bias.copy_(T.tensor(bias))
        broadcast = (1, shape[1]) + (1,) * (len(shape) - 2)
        close(gn(T.tensor(x)), per_group.reshape(shape) * scale.reshape(broadcast) + bias.reshape(broadcast),
              rtol=1e-5, atol=1e-5)
    for channels, groups in ((2, 3), (3, 2), (1, 10), (6, 4)):
        raises(ValueError, f"num_channels \\({channels}\\) must be divisible by num_groups \\({groups}\\)",
               nn.GroupNorm, groups, channels)
