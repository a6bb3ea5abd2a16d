"""``F.interpolate(..., antialias=True)``: bilinear, bicubic and lanczos resizing with PIL's widened
filter, against a direct evaluation of the rule (float64 loops), finite differences, and PyTorch."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
import nn

F = nn.functional


def _kernel(mode, d):
    d = abs(d)
    if mode == "bilinear":
        return max(1.0 - d, 0.0)
    if mode == "bicubic":  # Keys, a = -0.5
        a = -0.5
        if d <= 1:
            return ((a + 2) * d - (a + 3)) * d * d + 1
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a if d < 2 else 0.0
    if d == 0:
        return 1.0
    return math.sin(math.pi * d) / (math.pi * d) * math.sin(math.pi * d / 3) / (math.pi * d / 3) if d < 3 else 0.0


def _resized_by_the_rule(x, out_h, out_w, mode, align_corners=False):
    """The definition, one output at a time: weights k((i + ½ - c) / max(r, 1)) over the inputs within the
    support of the centre c = r (o + ½), normalised."""
    radius = {"bilinear": 1, "bicubic": 2, "lanczos": 3}[mode]

    def weights(size, out):
        ratio = ((size - 1) / (out - 1) if out > 1 else 0.0) if align_corners else size / out
        widening = max(ratio, 1.0)
        matrix = np.zeros((out, size))
        for o in range(out):
            centre = ratio * (o + 0.5)
            first = max(int(centre - radius * widening + 0.5), 0)
            last = min(int(centre + radius * widening + 0.5), size)
            row = [_kernel(mode, (i - centre + 0.5) / widening) for i in range(first, last)]
            total = sum(row)
            matrix[o, first:last] = [w / total for w in row] if total else row
        return matrix

    height, width = weights(x.shape[2], out_h), weights(x.shape[3], out_w)
    return np.einsum("oh,nchw,pw->ncop", height, x, width)


def test_a_literal_bilinear_shrink():
    x = autograd.arange(16.0).reshape(1, 1, 4, 4)
    y = F.interpolate(x, size=(3, 2), mode="bilinear", antialias=True)
    np.testing.assert_allclose(y.numpy()[0, 0], [[1.9143, 3.4857], [6.7143, 8.2857], [11.5143, 13.0857]], atol=1e-4)
    # without antialias the shrink reads 2 of the 4 columns: a different, aliased answer
    plain = F.interpolate(x, size=(3, 2), mode="bilinear")
    assert not np.allclose(plain.numpy(), y.numpy(), atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 12), st.integers(1, 12),
       st.sampled_from(["bilinear", "bicubic", "lanczos"]), st.booleans())
def test_values_follow_the_rule(height, width, out_h, out_w, mode, align_corners):
    align_corners = align_corners and mode != "lanczos"
    x = np.random.default_rng(height * 100 + width).standard_normal((2, 1, height, width))
    y = F.interpolate(autograd.tensor(x), size=(out_h, out_w), mode=mode, antialias=True,
                      align_corners=align_corners)
    np.testing.assert_allclose(y.numpy(), _resized_by_the_rule(x, out_h, out_w, mode, align_corners),
                               rtol=1e-12, atol=1e-12)
    assert y.dtype == autograd.float64


def test_float32_stays_float32_and_an_unchanged_size_is_the_input():
    x = autograd.randn(1, 2, 5, 7)
    assert F.interpolate(x, size=(3, 4), mode="bicubic", antialias=True).dtype == autograd.float32
    np.testing.assert_array_equal(F.interpolate(x, size=(5, 7), mode="lanczos", antialias=True).numpy(), x.numpy())


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos"])
def test_gradients_by_finite_differences(mode):
    x = autograd.tensor(np.random.default_rng(1).standard_normal((1, 2, 7, 5)), requires_grad=True)
    assert autograd.autograd.gradcheck(lambda t: F.interpolate(t, size=(3, 8), mode=mode, antialias=True), (x,))
    assert autograd.autograd.gradgradcheck(lambda t: F.interpolate(t, scale_factor=0.6, mode=mode, antialias=True),
                                           (x,))


def test_refusals():
    x = autograd.zeros(1, 1, 6, 6)
    with pytest.raises(ValueError, match="restricted to bilinear, bicubic, and lanczos"):
        F.interpolate(x, size=3, mode="nearest", antialias=True)
    with pytest.raises(ValueError, match="restricted to bilinear, bicubic, and lanczos"):
        F.interpolate(autograd.zeros(1, 1, 6), size=3, mode="linear", antialias=True)
    with pytest.raises(ValueError, match="Lanczos mode requires antialias=True"):
        F.interpolate(x, size=3, mode="lanczos")
    with pytest.raises(ValueError, match="Lanczos mode does not support align_corners=True"):
        F.interpolate(x, size=3, mode="lanczos", antialias=True, align_corners=True)
    image = autograd.arange(36).reshape(1, 1, 6, 6).to(autograd.uint8)  # (PyTorch's fixed-point kernels' integers)
    for mode, antialias, row in [("bilinear", False, [2, 4, 5, 7]), ("bilinear", True, [2, 4, 5, 7]),
                                 ("bicubic", False, [1, 3, 4, 6])]:
        np.testing.assert_array_equal(F.interpolate(image, size=4, mode=mode, antialias=antialias).numpy()[0, 0, 0],
                                      row)
    with pytest.raises(NotImplementedError, match="\"adaptive_avg_pool2d\" not implemented for 'Byte'"):
        F.interpolate(image, size=4, mode="area")
    np.testing.assert_array_equal(F.interpolate(image, size=3, mode="nearest").numpy()[0, 0, 0], [0, 2, 4])


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_against_torch(mode, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for shape, arguments in [((2, 3, 11, 13), dict(size=(4, 6))), ((1, 2, 5, 9), dict(scale_factor=0.5)),
                             ((1, 1, 6, 4), dict(size=(13, 9))), ((2, 1, 17, 8), dict(scale_factor=0.3)),
                             ((1, 2, 9, 9), dict(scale_factor=0.77, recompute_scale_factor=True))]:
        for align_corners in ([False] if mode == "lanczos" else [False, True]):
            x = rng.standard_normal(shape).astype(dtype)
            ours, theirs = autograd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            y = F.interpolate(ours, mode=mode, antialias=True, align_corners=align_corners, **arguments)
            expected = torch.nn.functional.interpolate(theirs, mode=mode, antialias=True, align_corners=align_corners,
                                                       **arguments)
            tolerance = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(y.detach().numpy(), expected.detach().numpy(), rtol=tolerance, atol=tolerance)
            g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
            y.backward(autograd.tensor(g))
            expected.backward(torch.tensor(g))
            np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=tolerance, atol=tolerance)


def test_one_output_column_pytorch_forward_differs_its_gradient_agrees():
    """PyTorch 2.13's antialiased forward gives every row the same value when the output is one column wide
    and the height changes (here 2.5 twice, where the second row is 6.5); its own backward uses the right
    weights. Ours gives the weighted means the rule defines, and the gradient PyTorch gives."""
    x = np.arange(10.0).reshape(1, 1, 5, 2)
    y = F.interpolate(autograd.tensor(x, requires_grad=True), size=(2, 1), mode="bilinear", antialias=True)
    np.testing.assert_allclose(y.detach().numpy(), _resized_by_the_rule(x, 2, 1, "bilinear"), rtol=1e-12)
    np.testing.assert_allclose(y.detach().numpy().ravel(), [2.5, 6.5])  # PyTorch's: [2.5, 2.5]
    torch = pytest.importorskip("torch")
    theirs = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.interpolate(theirs, size=(2, 1), mode="bilinear", antialias=True)
    ours = autograd.tensor(x, requires_grad=True)
    F.interpolate(ours, size=(2, 1), mode="bilinear", antialias=True).backward(autograd.tensor([[[[1.0], [2.0]]]]))
    expected.backward(torch.tensor([[[[1.0], [2.0]]]], dtype=torch.float64))
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
