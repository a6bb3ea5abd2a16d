"""Resampling divergences from PyTorch 2.13 found by session 36's differential probe (interpolate, Upsample, pad,
fold/unfold, pixel and channel shuffles, grid_sample, affine_grid), each pinned on literals and compared with
PyTorch where it is installed: unfold's too-small error in PyTorch's words, reflection padding's amounts checked
before the output's size, a circular pad that crops a dim to nothing refused (PyTorch returns uninitialised
memory). Where PyTorch's own gradient disagrees with its forward (interpolation to the input's own size with a
scale factor, reflection padding to an empty dim), ours is the forward's derivative, checked by finite differences."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.autograd import gradcheck


def _torch():
    return pytest.importorskip("torch")


UNFOLD_CASES = [((2, 2, 2, 6), (2, 3), (2, 1), (0, 0), (2, 1)), ((2, 2, 1, 3), (3, 2), (2, 1), (0, 1), (2, 2)),
                ((2, 2, 3), (3, 2), (1, 1), (0, 0), (2, 2)), ((1, 1, 6, 1), (1, 2), (2, 2), (1, 0), (1, 2))]


def test_unfold_refuses_a_window_larger_than_the_padded_input_in_pytorchs_words():
    with pytest.raises(RuntimeError) as ours:
        F.unfold(autograd.ones(2, 2, 2, 6), (2, 3), (2, 1), 0, (2, 1))
    assert str(ours.value) == ("Given input with spatial size (2, 6), kernel_size=(2, 3), dilation=(2, 1), "
                               "padding=(0, 0), calculated shape of the array of sliding blocks as (0, 4), but its "
                               "components must be at least one.")


@pytest.mark.parametrize("shape,kernel,dilation,padding,stride", UNFOLD_CASES)
def test_unfold_too_small_as_pytorch(shape, kernel, dilation, padding, stride):
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.unfold(torch.ones(*shape), kernel, dilation, padding, stride)
    with pytest.raises(RuntimeError) as ours:
        F.unfold(autograd.ones(*shape), kernel, dilation, padding, stride)
    assert str(ours.value) == str(theirs.value)


def test_reflection_padding_checks_its_amounts_before_the_output_size():
    with pytest.raises(RuntimeError) as ours:  # (dim 1 would also come out of size -1)
        F.pad(autograd.ones(2, 2, 2, 5), [2, 0, -1, -2, -1, 3], mode="reflect")
    assert str(ours.value) == ("Argument #8: Padding size should be less than the corresponding input dimension, "
                               "but got: padding (-1, 3) at dimension 1 of input [2, 2, 2, 5]")
    np.testing.assert_array_equal(F.pad(autograd.arange(4.0).reshape(1, 1, 4), [-1, 2], mode="reflect").numpy(),
                                  [[[1, 2, 3, 2, 1]]])


def test_reflection_padding_amounts_as_pytorch():
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.pad(torch.ones(2, 2, 2, 5), [2, 0, -1, -2, -1, 3], mode="reflect")
    with pytest.raises(RuntimeError) as ours:
        F.pad(autograd.ones(2, 2, 2, 5), [2, 0, -1, -2, -1, 3], mode="reflect")
    assert str(ours.value) == str(theirs.value)


def test_reflection_padding_to_an_empty_dim_has_a_zero_gradient():
    x = autograd.randn(1, 1, 4, 6, 3, dtype=autograd.float64, requires_grad=True)
    y = F.pad(x, [-1, -2, 2, 0, 3, 0], mode="reflect")  # the last dim: 3 - 1 - 2 = 0
    assert y.shape == (1, 1, 7, 8, 0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((1, 1, 4, 6, 3)))  # (PyTorch's: uninitialised memory)


@pytest.mark.parametrize("shape,pad", [((1, 1), [1, -1]), ((1, 2), [-2, 2]), ((2, 3, 2), [2, -2]),
                                       ((1, 1, 1), [-2, 1]), ((2, 2, 1, 5), [1, 1, -2, 1])])
def test_circular_padding_refuses_to_wrap_around_a_dim_cropped_to_nothing(shape, pad):
    with pytest.raises(RuntimeError, match="crops it to nothing, then has nothing to wrap around"):
        F.pad(autograd.ones(*shape), pad, mode="circular")
    np.testing.assert_array_equal(F.pad(autograd.tensor([[0.0, 1.0, 2.0]]), [1, -1], mode="circular").numpy(),
                                  [[1, 0, 1]])  # (a crop that leaves something wraps around what is left)


@pytest.mark.parametrize("mode,antialias", [("bicubic", False), ("bicubic", True), ("bilinear", True),
                                            ("bilinear", False), ("nearest", False)])
@pytest.mark.parametrize("shape,scale", [((1, 1, 2, 3), 1.3), ((1, 2, 3, 3), 1.2)])
def test_interpolating_to_the_same_size_with_a_scale_differentiates_its_forward(mode, antialias, shape, scale):
    x = autograd.randn(*shape, dtype=autograd.float64, requires_grad=True)

    def f(x):
        return F.interpolate(x, scale_factor=scale, mode=mode, antialias=antialias)

    assert f(x).shape == shape  # (⌊2 · 1.3⌋ = 2, ⌊3 · 1.3⌋ = 3: the scale still places the samples)
    assert gradcheck(f, (x,))


@pytest.mark.parametrize("mode,antialias", [("bicubic", False), ("bicubic", True), ("bilinear", True)])
def test_interpolating_to_the_same_size_with_a_scale_forward_as_pytorch(mode, antialias):
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((1, 1, 2, 3))
    theirs = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=1.3, mode=mode, antialias=antialias)
    ours = F.interpolate(autograd.tensor(x), scale_factor=1.3, mode=mode, antialias=antialias)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,pad", [((3,), (-2, -2)), ((3,), (1, -5)), ((3,), (-4, 1)),
                                       ((1, 1, 5, 1), (1, -2, -2, 2)), ((2, 2, 3, 1, 2), (-1, 3, -2, -1, 2, -1))])
def test_constant_padding_refuses_a_crop_past_the_whole_dim(shape, pad):
    # PyTorch's crops each dim before it pads: (-4, 1) of 3 is refused though 3 - 4 + 1 = 0
    with pytest.raises(RuntimeError, match=r"^narrow\(\): length must be non-negative. \(The padding"):
        F.pad(autograd.ones(*shape), pad, value=1.5)
    assert F.pad(autograd.ones(3), (-3, 1), value=2.0).tolist() == [2.0]  # (a crop of the whole dim, then a pad)


@pytest.mark.parametrize("shape,pad", [((3,), (-2, -2)), ((3,), (-4, 1)), ((1, 1, 5, 1), (1, -2, -2, 2)),
                                       ((3,), (-3, 1))])
def test_constant_padding_crops_as_pytorch(shape, pad):
    torch = _torch()
    try:
        theirs = torch.nn.functional.pad(torch.ones(*shape), pad, value=2.0)
    except RuntimeError as error:
        with pytest.raises(RuntimeError) as ours:
            F.pad(autograd.ones(*shape), pad, value=2.0)
        assert str(ours.value).startswith(str(error))
    else:
        np.testing.assert_array_equal(F.pad(autograd.ones(*shape), pad, value=2.0).numpy(), theirs.numpy())


def test_circular_padding_that_wraps_what_a_crop_left_differentiates_its_forward():
    x = autograd.randn(2, 2, 3, dtype=autograd.float64, requires_grad=True)
    y = F.pad(x, [-2, 2], mode="circular")  # x[..., 2:] wrapped to three columns
    np.testing.assert_array_equal(y.detach().numpy(), np.repeat(x.detach().numpy()[..., 2:], 3, axis=-1))
    assert gradcheck(lambda x: F.pad(x, [-2, 2], mode="circular"), (x,))  # (PyTorch's backward fails this one)


def test_antialiased_interpolation_keeps_an_inf_among_the_outputs_that_read_it():
    x = np.zeros((1, 1, 6, 8))
    x[0, 0, 2, 3] = np.inf
    y = F.interpolate(autograd.tensor(x), size=(4, 5), mode="bilinear", antialias=True).numpy()
    assert np.isposinf(y[0, 0, 1:3, 1:3]).all()  # (the products made every output NaN)
    y[0, 0, 1:3, 1:3] = 0
    np.testing.assert_array_equal(y, np.zeros((1, 1, 4, 5)))


def test_antialiased_interpolation_of_non_finite_input_differentiates_as_the_finite_one():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 6, 8))
    g = rng.standard_normal((1, 2, 3, 5))
    grads = []
    for value in (1.0, np.nan):
        x[0, 1, 4, 1] = value
        t = autograd.tensor(x, requires_grad=True)
        F.interpolate(t, size=(3, 5), mode="bicubic", antialias=True).backward(autograd.tensor(g))
        grads.append(t.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-14)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(4, 5), (3, 8), (6, 3), (12, 16), (2, 2)])
def test_antialiased_interpolation_of_inf_and_nan_as_pytorch(mode, size):
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 8))
    x[0, 0, 2, 3], x[0, 1, 4, 1], x[0, 0, 5, 7] = np.inf, np.nan, -np.inf
    theirs = torch.nn.functional.interpolate(torch.tensor(x), size=size, mode=mode, antialias=True)
    ours = F.interpolate(autograd.tensor(x), size=size, mode=mode, antialias=True)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


def test_pixel_unshuffle_of_an_empty_batch_has_the_unshuffled_shape():
    # PyTorch 2.13 returns a copy of the input for any empty input, (0, 2, 4, 4) here; pixel_shuffle of the result
    # takes it back, in both libraries
    y = F.pixel_unshuffle(autograd.zeros(0, 2, 4, 4), 2)
    assert y.shape == (0, 8, 2, 2)
    assert F.pixel_shuffle(y, 2).shape == (0, 2, 4, 4)
