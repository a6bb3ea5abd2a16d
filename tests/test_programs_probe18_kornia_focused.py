"""Focused tests of what the differentiable image-processing programs (tests/test_programs_probe18_kornia_*.py)
found: F.pad's reflect mode with a crop on one side (it mirrored the cropped image), reflect / replicate refusing
outputs without elements, average pooling refusing narrow integer images, autograd._assert_async, x[i] = v through
Tensor.unfold's overlapping windows (written through the narrower view, as PyTorch's); and strict xfails for an
in-place op on those windows and for torchvision v2's dtype.is_floating_point."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises

from .pytorch_programs import OURS, pytorch, run_both

nn, F = ported_nn.nn, ported_nn.F  # the fixtures (the library under test's nn and nn.functional)


# ----------------------------------------------------------------------------------------------
# Focused tests of what the programs found
# ----------------------------------------------------------------------------------------------


def test_reflect_pad_with_a_crop_on_one_side_mirrors_the_whole_input(T, F):
    """F.pad(mode='reflect') with a negative amount on one side of a dim and a positive one on the other mirrors
    about the whole input's edges (PyTorch's kernel: output j reads reflect(j - before)), so the padded side may
    read what the crop removed; chainrule cropped first and mirrored what remained (wrong values, and an
    IndexError where the pad outgrew the cropped size). The gradient sums where a pixel is read twice."""
    x = T.arange(1.0, 6.0, dtype=T.float64).reshape(1, 1, 5).requires_grad_(True)
    y = F.pad(x, (-2, 3), mode="reflect")
    np.testing.assert_array_equal(y.detach().numpy().ravel(), [3, 4, 5, 4, 3, 2])
    (y * T.arange(1.0, 7.0, dtype=T.float64)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy().ravel(), [0, 6, 6, 6, 3])
    np.testing.assert_array_equal(F.pad(x, (4, -3), mode="reflect").detach().numpy().ravel(), [5, 4, 3, 2, 1, 2])
    np.testing.assert_array_equal(F.pad(x, (-5, 2), mode="reflect").detach().numpy().ravel(), [4, 3])
    image = T.arange(30.0).reshape(1, 1, 5, 6)
    np.testing.assert_array_equal(F.pad(image, (0, 0, -2, 3), mode="reflect")[0, 0, :, 0].numpy(),
                                  [12, 18, 24, 18, 12, 6])


def test_reflect_and_replicate_pads_refuse_an_output_without_elements(T, F):
    """A crop that leaves no element in any padded dim is PyTorch's 'too small' RuntimeError for reflect and
    replicate (chainrule returned an empty tensor); a negative size beside a non-empty dim is refused too."""
    for mode in ("reflect", "replicate"):
        raises(RuntimeError, r"input \(W: 5\) is too small. Calculated output W: 0", F.pad, T.ones(1, 1, 5),
               (-5, 0), mode=mode)
        raises(RuntimeError, r"input \(H: 5, W: 6 ?\) is too small. Calculated output H: 0 W: 0", F.pad,
               T.ones(1, 1, 5, 6), (-6, 0, -5, 0), mode=mode)
        raises(RuntimeError, r"input \(D: 4 H: 5, W: 6\) is too small. Calculated output D: 0 H: 0 W: 0",
               F.pad, T.ones(1, 1, 4, 5, 6), (-6, 0, -5, 0, -4, 0), mode=mode)
        raises(RuntimeError, r"negative dimension -1|overflow", F.pad, T.ones(1, 1, 5, 6), (-7, 0, 0, 0), mode=mode)
        assert F.pad(T.ones(1, 1, 5, 6), (-6, 0, 0, 0), mode=mode).shape == (1, 1, 5, 0)
    raises(RuntimeError, r"Argument #6: Padding size should be less than the corresponding input dimension, "
           r"but got: padding \(0, 3\) at dimension 2", F.pad, T.ones(1, 1, 3, 4), (0, 0, 0, 3), mode="reflect")


def v2_to_float(m, image):
    """torchvision v2's to_dtype_image reads dtype.is_floating_point (v1 made a tensor to ask it)."""
    dtype, image = m.torch.float32, m.torch.as_tensor(image)
    if dtype.is_floating_point and not image.is_floating_point():
        return image.to(dtype).mul_(1.0 / 255)
    return image


def test_torchvision_v2_reads_dtype_is_floating_point():
    array = np.arange(6, dtype=np.uint8).reshape(1, 1, 2, 3)
    ours, _ = run_both(v2_to_float, array)
    np.testing.assert_allclose(ours, array / 255, rtol=1e-6)


@pytest.mark.parametrize("write", ["clamp_", "masked_fill_", "relu_"])
def test_an_in_place_op_on_overlapping_unfold_windows_returns_each_gradient_once(write):
    for T in (OURS.torch, getattr(pytorch(), "torch", None)):
        if T is None:
            continue
        a = (T.arange(1.0, 8.0, dtype=T.float64) - 3).requires_grad_(True)
        b = a.clone()
        windows = b.unfold(0, 3, 2)  # [0 1 2], [2 3 4], [4 5 6]: elements 2 and 4 show twice
        {"clamp_": lambda w: w.clamp_(0, 3), "masked_fill_": lambda w: w.masked_fill_(w > 3, 0.0),
         "relu_": lambda w: w.relu_()}[write](windows)
        (b * T.arange(1.0, 8.0, dtype=T.float64)).sum().backward()
        expected_grad = {"clamp_": [0, 0, 3, 4, 5, 6, 0], "masked_fill_": [1, 2, 3, 4, 5, 6, 0],
                         "relu_": [0, 0, 0, 4, 5, 6, 7]}[write]
        np.testing.assert_array_equal(a.grad.numpy(), expected_grad)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "bool"])
def test_average_pooling_refuses_narrow_integer_images(T, F, dtype):
    """PyTorch's average pooling has int64 among the integers: a uint8 (or int8, int16, int32, bool) image is its
    NotImplementedError, in 1-D, 2-D and 3-D and through lp_pool; chainrule averaged them."""
    names = {"uint8": "Byte", "int8": "Char", "int16": "Short", "int32": "Int", "bool": "Bool"}
    for shape, pool, kernel in (((1, 2, 6), F.avg_pool1d, "avg_pool2d"), ((1, 2, 6, 6), F.avg_pool2d, "avg_pool2d"),
                                ((1, 2, 4, 6, 6), F.avg_pool3d, "avg_pool3d_out_frame")):
        raises(NotImplementedError, f"\"{kernel}\" not implemented for '{names[dtype]}'", pool,
               T.ones(shape, dtype=getattr(T, dtype)), 2)
    if dtype != "bool":  # (lp_pool takes bool ** p first: an int64 tensor)
        raises(NotImplementedError, "not implemented for", F.lp_pool2d, T.ones(1, 2, 6, 6, dtype=getattr(T, dtype)),
               2, 2)
    np.testing.assert_array_equal(F.avg_pool2d(T.arange(16).reshape(1, 1, 4, 4) * 3, 2).numpy(),
                                  [[[[7, 13], [31, 37]]]])  # int64 averages, rounding towards zero


def patch_paste_through_unfold(m, array, patch_array):
    """PatchMatch-style editing: a learnable patch pasted into one window of the image's overlapping unfold
    view (Tensor.unfold is a view: the write reaches the image), then a loss on the image."""
    torch = m.torch
    source = torch.tensor(array).requires_grad_(True)
    patch = torch.tensor(patch_array).requires_grad_(True)
    image = source * 1.0
    windows = image.unfold(2, 3, 2).unfold(3, 3, 2)  # (B, C, 3, 3, 3, 3): neighbours share a row / column
    windows[:, :, 1, 1] = patch
    windows[:, :, 0, 2, 2, 2] = 0.0  # one pixel of a window, which the window below shows too
    loss = (image * torch.linspace(0.5, 1.5, image.shape[-1], dtype=image.dtype)).pow(2).sum()
    loss.backward()
    return image.detach(), source.grad, patch.grad


def test_a_patch_pasted_through_overlapping_unfold_windows():
    rng = np.random.default_rng(33)
    array, patch = rng.standard_normal((1, 2, 7, 7)), rng.standard_normal((2, 3, 3))
    ours, _ = run_both(patch_paste_through_unfold, array, patch, rtol=1e-12, atol=1e-12)
    image, source_grad, patch_grad = ours
    np.testing.assert_array_equal(image[0, :, 2:5, 2:5], patch)  # by hand: the pasted pixels, the zeroed one
    np.testing.assert_array_equal(image[0, :, 2, 6], 0.0)
    assert (source_grad[0, :, 2:5, 2:5] == 0).all() and (source_grad[0, :, 2, 6] == 0).all()
