"""Pooling divergences from PyTorch 2.13 found by session 36's differential probe, each pinned on literals (and
compared with PyTorch where it is installed): adaptive average pooling keeps an inf or NaN inside the bins that hold
it, 3-d average pooling refuses a volume smaller than its kernel in PyTorch's words, and 1-d max unpooling names
its output's size as PyTorch's 2-d kernel does."""

import math

import numpy as np
import pytest

import autograd
import nn.functional as F

INF, NAN = math.inf, math.nan


def _torch():
    return pytest.importorskip("torch")


def test_an_inf_stays_in_its_adaptive_average_bins():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = INF
    y = F.adaptive_avg_pool2d(autograd.tensor(x), 2)
    np.testing.assert_array_equal(y.numpy(), [[[[INF, 0.0], [0.0, 0.0]]]])  # (a product gave NaN in the other three)


def test_a_nan_stays_in_its_adaptive_average_bins_1d():
    x = autograd.tensor([[[-0.5, -0.75, NAN, 1.25]]])
    y = F.adaptive_avg_pool1d(x, 3)  # bins [0, 2), [1, 3), [2, 4)
    np.testing.assert_array_equal(y.numpy(), [[[-0.625, NAN, NAN]]])


def test_plus_and_minus_inf_in_one_box_give_nan_there_only_3d():
    x = np.ones((1, 2, 2, 2))
    x[0, 0, 0], x[0, 1, 1] = INF, -INF  # (C, D, H, W): the row h = 0 of depth 0, the row h = 1 of depth 1
    y = F.adaptive_avg_pool3d(autograd.tensor(x), 1)  # one box holds both
    np.testing.assert_array_equal(y.numpy(), [[[[NAN]]]])
    y = F.adaptive_avg_pool3d(autograd.tensor(x), (1, 2, 1))
    np.testing.assert_array_equal(y.numpy(), [[[[INF], [-INF]]]])
    y = F.adaptive_avg_pool3d(autograd.tensor(x), (2, 2, 2))
    np.testing.assert_array_equal(y.numpy()[0], [[[INF, INF], [1, 1]], [[1, 1], [-INF, -INF]]])


def test_adaptive_average_of_non_finite_input_differentiates_as_the_finite_one():
    x = autograd.tensor(np.arange(42.0).reshape(1, 1, 7, 6), requires_grad=True)
    y = F.adaptive_avg_pool2d(x, (3, 4))
    y.backward(autograd.ones_like(y))
    finite = x.grad.numpy().copy()
    z = autograd.tensor(np.where(np.arange(42).reshape(1, 1, 7, 6) == 10, INF, np.arange(42.0).reshape(1, 1, 7, 6)),
                        requires_grad=True)
    w = F.adaptive_avg_pool2d(z, (3, 4))
    w.backward(autograd.ones_like(w))
    np.testing.assert_allclose(z.grad.numpy(), finite, rtol=1e-15)
    assert w.grad_fn.name() == "AdaptiveAvgPool2DBackward0"
    assert np.isinf(w.numpy()).sum() == 2 and not np.isnan(w.numpy()).any()  # (column 4 lies in bins 2 and 3)


@pytest.mark.parametrize("dims,out", [(1, 3), (1, 5), (2, (3, 4)), (2, 1), (2, (None, 2)), (2, (9, 11)),
                                      (3, (2, None, 3)), (3, 1)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adaptive_average_with_inf_and_nan_as_pytorch(dims, out, dtype):
    torch = _torch()
    rng = np.random.default_rng(dims)
    x = rng.standard_normal((2, 3) + (7, 6, 5)[:dims]).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 4, replace=False)] = [INF, -INF, NAN, INF]
    t = torch.tensor(x, requires_grad=True)
    o = autograd.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, f"adaptive_avg_pool{dims}d")(t, out)
    yo = getattr(F, f"adaptive_avg_pool{dims}d")(o, out)
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))
    yo.backward(autograd.tensor(g))
    np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,kernel,padding", [((1, 1, 1, 4, 4), (2, 2, 1), (1, 1, 0)),
                                                  ((2, 1, 5, 3, 2), 4, 2), ((1, 2, 3, 4, 1), (2, 2, 3), 0)])
def test_avg_pool3d_refuses_a_volume_smaller_than_its_kernel(shape, kernel, padding):
    x = autograd.ones(*shape)
    sizes = shape[-3:]
    k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
    words = (f"input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than kernel size "
             f"(kT: {k[0]} kH: {k[1]} kW: {k[2]})")
    with pytest.raises(RuntimeError) as ours:
        F.avg_pool3d(x, kernel, padding=padding, ceil_mode=True)
    assert str(ours.value) == words
    # (max pooling has no such rule: the padding makes the window fit)
    assert F.max_pool3d(autograd.ones(1, 1, 1, 4, 4), (2, 2, 1), padding=(1, 1, 0)).shape == (1, 1, 1, 3, 4)


@pytest.mark.parametrize("shape,kernel,padding", [((1, 1, 1, 4, 4), (2, 2, 1), (1, 1, 0)),
                                                  ((2, 1, 5, 3, 2), 4, 2), ((1, 2, 3, 4, 1), (2, 2, 3), 0)])
def test_avg_pool3d_smaller_than_its_kernel_as_pytorch(shape, kernel, padding):
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.avg_pool3d(torch.ones(*shape), kernel, padding=padding, ceil_mode=True)
    with pytest.raises(RuntimeError) as ours:
        F.avg_pool3d(autograd.ones(*shape), kernel, padding=padding, ceil_mode=True)
    assert str(ours.value) == str(theirs.value)


def test_avg_pool3d_still_pools_a_volume_as_long_as_its_kernel():
    y = F.avg_pool3d(autograd.arange(8.0).reshape(1, 1, 2, 2, 2), 2)
    np.testing.assert_array_equal(y.numpy(), [[[[[3.5]]]]])


def test_max_unpool1d_names_its_output_as_the_2d_kernel_of_width_one():
    values, indices = autograd.tensor([[[5.0, 6.0]]]), autograd.tensor([[[0, 7]]])
    words = "Found an invalid max index: 7 (output volumes are of size 4x1)"
    with pytest.raises(RuntimeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        F.max_unpool1d(values, indices, 2)
    np.testing.assert_array_equal(F.max_unpool1d(values, autograd.tensor([[[0, 3]]]), 2).numpy(), [[[5, 0, 0, 6]]])


def test_max_unpool1d_invalid_index_as_pytorch():
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.max_unpool1d(torch.tensor([[[5.0, 6.0]]]), torch.tensor([[[0, 7]]]), 2)
    with pytest.raises(RuntimeError) as ours:
        F.max_unpool1d(autograd.tensor([[[5.0, 6.0]]]), autograd.tensor([[[0, 7]]]), 2)
    assert str(ours.value) == str(theirs.value)


def test_fractional_max_pool_refuses_samples_that_require_grad_in_grad_mode():
    samples = autograd.full((1, 1, 2), 0.5, requires_grad=True)
    words = ("The function 'fractional_max_pool2d' is not differentiable with respect to argument 'random_samples'. "
             "This input cannot have requires_grad True.")
    with pytest.raises(RuntimeError) as ours:
        F.fractional_max_pool2d(autograd.ones(1, 1, 4, 4, 4, 4), 2, output_size=2, _random_samples=samples)
    assert str(ours.value) == words  # (before the kernel looks at the input's dims)
    with autograd.no_grad():
        y = F.fractional_max_pool2d(autograd.arange(16.0).reshape(1, 1, 4, 4), 2, output_size=2,
                                    _random_samples=samples)
    np.testing.assert_array_equal(y.numpy(), [[[[5.0, 7.0], [13.0, 15.0]]]])


@pytest.mark.parametrize("shape,axis", [((5, 3, 3), "width"), ((3, 5, 3), "time"), ((5, 5, 3), "width"),
                                        ((5, 3, 5), "height")])
def test_fractional_max_pool3d_checks_time_then_width_then_height(shape, axis):
    samples = autograd.full((1, 1, 3), 0.5)
    size = dict(zip(("time", "height", "width"), shape))[axis]
    with pytest.raises(RuntimeError, match=f"pool {axis} 2 too large relative to input {axis} {size}$"):
        F.fractional_max_pool3d(autograd.ones(1, 1, *shape), 2, output_size=3, _random_samples=samples)


@pytest.mark.parametrize("shape", [(5, 3, 3), (3, 5, 3), (5, 5, 3), (5, 3, 5), (3, 3, 3)])
def test_fractional_max_pool3d_sizes_refused_as_pytorch(shape):
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.fractional_max_pool3d(torch.ones(1, 1, *shape), 2, output_size=3,
                                                  _random_samples=torch.full((1, 1, 3), 0.5))
    with pytest.raises(RuntimeError) as ours:
        F.fractional_max_pool3d(autograd.ones(1, 1, *shape), 2, output_size=3,
                                _random_samples=autograd.full((1, 1, 3), 0.5))
    assert str(ours.value) == str(theirs.value)
    samples = torch.full((1, 1, 2), 0.5, requires_grad=True)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.fractional_max_pool2d(torch.ones(1, 1, 4, 4), 2, output_size=2, _random_samples=samples)
    with pytest.raises(RuntimeError) as ours:
        F.fractional_max_pool2d(autograd.ones(1, 1, 4, 4), 2, output_size=2,
                                _random_samples=autograd.full((1, 1, 2), 0.5, requires_grad=True))
    assert str(ours.value) == str(theirs.value)


def test_max_pool3d_indices_of_a_depth_window_wholly_in_the_padding():
    # depth 1 with padding 1 and dilation 2: every depth window reads d = -1 and d = 1, neither in the input
    x = autograd.tensor([[[[[0.5], [-1.0], [2.0], [3.0]]]]], requires_grad=True)
    values, indices = F.max_pool3d(x, 2, None, 1, 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(values.numpy().reshape(-1), [-INF, -INF, -INF])
    np.testing.assert_array_equal(indices.numpy().reshape(-1), [6, 6, 8])  # (past the volume, as PyTorch's)
    values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((1, 1, 1, 4, 1)))


def test_max_pool3d_indices_of_a_window_wholly_in_the_padding_as_pytorch():
    torch = _torch()  # (forward only: PyTorch's backward writes through those indices, outside the gradient)
    x = np.array([[[[[0.5], [-1.0], [2.0], [3.0]]]]])
    theirs = torch.nn.functional.max_pool3d(torch.tensor(x), 2, None, 1, 2, ceil_mode=True, return_indices=True)
    ours = F.max_pool3d(autograd.tensor(x), 2, None, 1, 2, ceil_mode=True, return_indices=True)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
