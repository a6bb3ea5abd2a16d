"""Focused tests of what the image-processing programs (tests/test_programs_probe12_imageops_*.py) found:
``F.interpolate``'s empty sizes, ``grid_sample``'s border clamp of infinite points, quotients by numbers and
selections written in place, embedding tables updated before a retained backward, ConvTranspose's ``output_size``
range."""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises

from .pytorch_programs import OURS

nn, F = ported_nn.nn, ported_nn.F  # the fixtures (the library under test's nn and nn.functional)


# ----------------------------------------------------------------------------------------------
# Focused tests of the fixes the programs above led to
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
def test_interpolate_refuses_an_empty_output(T, F, mode):
    """A size of 0 or a scale factor that floors a size to 0 is PyTorch's RuntimeError (chainrule divided by
    zero, or gave an empty tensor for a negative scale factor)."""
    x = T.ones(2, 3, 4, 5)
    raises(RuntimeError, r"Input and output sizes should be greater than 0, but got input \(H: 4, W: 5\) output "
           r"\(H: 0, W: 3\)", F.interpolate, x, size=(0, 3), mode=mode)
    raises(RuntimeError, r"output \(H: 0, W: 0\)", F.interpolate, x, scale_factor=0.1, mode=mode)
    raises(RuntimeError, r"output \(H: -4, W: -5\)", F.interpolate, x, scale_factor=-1.0, mode=mode)
    raises(RuntimeError, r"input \(H: 0, W: 5\) output \(H: 0, W: 10\)", F.interpolate, T.ones(1, 1, 0, 5),
           scale_factor=2.0, mode=mode)
    raises(RuntimeError, r"input \(D: 2, H: 3, W: 4\) output \(D: 0, H: 0, W: 1\)", F.interpolate,
           T.ones(1, 1, 2, 3, 4), scale_factor=0.3, mode="trilinear")
    raises(NotImplementedError, "linear mode needs 3D input", F.interpolate, x, scale_factor=0.1, mode="linear")
    assert F.interpolate(T.ones(1, 1, 3), size=1, mode="linear").shape == (1, 1, 1)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grid_sample_border_clamps_an_infinite_point_to_the_edge(T, F, mode):
    """'border' padding clamps a grid point at ±inf to the edge pixel, and its gradient in the grid is 0 there (as
    at any clamped point); chainrule gave nan (the clamp's slope 0 times the infinite coordinate)."""
    image = T.arange(12.0, dtype=T.float64).reshape(1, 1, 3, 4).requires_grad_(True)
    grid = T.tensor([[[[math.inf, 0.0], [-math.inf, 0.0], [0.0, math.inf], [0.25, -0.5]]]], dtype=T.float64,
                    requires_grad=True)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)
    # x at +inf reads the last column, -inf the first; y at +inf the last row; (0.25, -0.5) is the pixel
    # (x, y) = (1.875, 0.5), 4 y + x bilinearly, (2, 0) nearest (y's half rounds to even)
    expected = [7.0, 4.0, 9.5, 3.875] if mode == "bilinear" else [7.0, 4.0, 10.0, 2.0]
    np.testing.assert_allclose(out.detach().numpy().ravel(), expected)
    out.sum().backward()
    assert np.isfinite(grid.grad.numpy()).all() and np.isfinite(image.grad.numpy()).all()
    assert grid.grad[0, 0, 0, 0].item() == 0 and grid.grad[0, 0, 2, 1].item() == 0
    if mode == "bilinear":
        assert grid.grad[0, 0, 0, 1].item() == pytest.approx(4.0)  # d/dy at x = 3: (11 − 3) / 2


@pytest.mark.parametrize("write", ["new[:, 0] = 2 * (new[:, 0] / 3 - 0.5)", "new[:, 0] = new[:, 0].div(3.0)",
                                   "new[:, 0] = 3 / new[:, 0]", "new[:, 0] = new[:, 0] % 1.0",
                                   "new[:, 0] = torch.fmod(new[:, 0], 1.0)"])
def test_a_quotient_by_a_number_may_be_written_in_place(T, write):
    """x / c, c / x, x % c and fmod(x, c) for a Python number c keep nothing x's in-place writes would change (PyTorch's
    nodes keep the number, or 1/x), so VoxelMorph's new_locs[:, i] = 2 * (new_locs[:, i] / (n − 1) − 0.5) trains;
    chainrule refused its backward ("modified by an inplace operation")."""
    torch = T
    x = torch.tensor([[0.5, 1.5], [2.5, 4.0]], dtype=torch.float64, requires_grad=True)
    new = x * 1.0
    exec(write)
    new.sum().backward()
    column = {"/ 3": 2 / 3, "div": 1 / 3, "3 /": None, "%": 1.0, "fmod": 1.0}
    slope = next(v for k, v in column.items() if k in write)
    expected = -3 / np.array([0.5, 2.5]) ** 2 if slope is None else [slope, slope]
    np.testing.assert_allclose(x.grad.numpy()[:, 0], expected, rtol=1e-15)
    np.testing.assert_allclose(x.grad.numpy()[:, 1], [1.0, 1.0])


def test_a_number_over_a_tensor_rounds_as_pytorch(T):
    """c / x is PyTorch's x.reciprocal() * c (Tensor.__rtruediv__): rounded twice, differentiated as a product
    (MulBackward0), with the reciprocal's derivative -g · (y · y); 3 / 1.7 in float32 is an ulp from the quotient
    rounded once."""
    x = T.tensor([1.7, 0.3, 7.0], requires_grad=True)
    y = 3 / x
    assert y.grad_fn.name() == "MulBackward0"
    reciprocal = np.float32(1) / np.float32([1.7, 0.3, 7.0])
    np.testing.assert_array_equal(y.detach().numpy(), reciprocal * np.float32(3))
    y.backward(T.ones(3))
    np.testing.assert_array_equal(x.grad.numpy(), -np.float32(3) * (reciprocal * reciprocal))
    z = x.detach().requires_grad_(True) / 3
    assert z.grad_fn.name() == "DivBackward0" and len(z.grad_fn.next_functions) == 2
    np.testing.assert_array_equal(z.detach().numpy(), np.float32([1.7, 0.3, 7.0]) / np.float32(3))
    r = x.detach().requires_grad_(True) % 2.0
    assert r.grad_fn.name() == "RemainderBackward0" and len(r.grad_fn.next_functions) == 1


@pytest.mark.parametrize("write", ["new[:, 0] = new[:, 0].max(-1, keepdim=True)[0].expand(-1, 3)",
                                   "new[:, 0] = new[:, 0].sort(-1, descending=True)[0]",
                                   "new[:, 0] = new[:, 0].topk(3, -1)[0]",
                                   "new[:, 0] = F.pad(new[:, 0, 1:], (1, 0), value=7.0)"])
def test_selections_and_padding_may_be_written_in_place(T, F, write):
    """max over a dim, sort, topk and constant padding need only the indices or the padding for backward (PyTorch's
    nodes keep those, not the input), so their input may be written in place afterwards; chainrule kept the input
    and refused the backward."""
    torch = T
    x = torch.tensor([[[0.5, 2.0, 1.0], [3.0, 0.1, 0.2]], [[1.5, 0.3, 0.9], [0.4, 0.6, 0.8]]], dtype=torch.float64,
                     requires_grad=True)
    new = x * 1.0
    exec(write)
    (new * torch.arange(12.0, dtype=torch.float64).view(2, 2, 3)).sum().backward()
    weights = np.arange(12.0).reshape(2, 2, 3)
    expected = weights.copy()
    if "max" in write:
        expected[:, 0] = 0
        expected[0, 0, 1], expected[1, 0, 0] = weights[0, 0].sum(), weights[1, 0].sum()
    elif "pad" in write:
        expected[:, 0, 0] = 0  # the padded position
        expected[:, 0, 1:] = weights[:, 0, 1:]
    else:  # sorted descending: position k of the output came from the k-th largest
        order = np.argsort(-x.detach().numpy()[:, 0], axis=-1)
        expected[:, 0] = 0
        for b in range(2):
            expected[b, 0, order[b]] = weights[b, 0]
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_an_embedding_table_may_change_in_place_before_backward(T, nn):
    """F.embedding's backward needs the indices and the table's shape only (PyTorch's node keeps those): the table may
    be updated in place (an optimizer step) before a retained graph's second backward."""
    T.manual_seed(0)
    emb = nn.Embedding(5, 3, padding_idx=0).double()
    idx = T.tensor([[0, 1, 2], [2, 3, 0]])
    loss = (emb(idx) * T.arange(18.0, dtype=T.float64).view(2, 3, 3)).sum()
    loss.backward(retain_graph=True)
    first = emb.weight.grad.clone()
    with T.no_grad():
        emb.weight.mul_(0.5)
    emb.weight.grad = None
    loss.backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy(), first.numpy())
    expected = np.zeros((5, 3))
    for (b, k), row in np.ndenumerate(idx.numpy()):
        if row:
            expected[row] += np.arange(18.0).reshape(2, 3, 3)[b, k]
    np.testing.assert_array_equal(first.numpy(), expected)


def test_denormalising_in_place_through_a_constant_tensor():
    """img[:, c] = img[:, c] * std[c] + mean[c] on an image that needs a gradient (an adversarial example shown in
    pixel space): PyTorch's MulBackward0 keeps std[c] only."""
    torch = OURS.torch
    x = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (2, 3, 4, 4)), requires_grad=True)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)
    img = x * 1.0
    for c in range(3):
        img[:, c] = img[:, c] * std[c] + mean[c]
    img.clamp(0, 1).sum().backward()
    inside = (x.detach().numpy() * std.numpy()[:, None, None] + mean.numpy()[:, None, None])
    inside = (inside > 0) & (inside < 1)
    np.testing.assert_allclose(x.grad.numpy(), inside * std.numpy()[:, None, None])


def test_conv_transpose_output_size_ranges_over_the_stride(T, nn):
    """forward(input, output_size) reaches the sizes from the smallest to smallest + stride − 1, as PyTorch's
    _output_padding: with stride 1 only the smallest, whatever the dilation (chainrule allowed up to the dilation)."""
    T.manual_seed(0)
    up = nn.ConvTranspose2d(2, 3, 3, stride=1, dilation=2)
    x = T.ones(1, 2, 5, 6)
    assert tuple(up(x, output_size=[9, 10]).shape) == (1, 3, 9, 10)
    raises(ValueError, r"requested an output size of \[10, 11\], but valid sizes range from", up, x,
           output_size=[10, 11])
    strided = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dilation=3)
    assert tuple(strided(x, output_size=(14, 15)).shape) == (1, 3, 14, 15)  # from (13, 15) to (14, 16)
    raises(ValueError, "valid sizes range from", strided, x, output_size=(15, 15))
