"""Pooling, channel dropout and resizing against PyTorch (float64, 1e-10: values, indices, gradients),
over kernel sizes, strides, padding, dilation, ceil_mode, count_include_pad, divisor_override, adaptive
output sizes, align_corners; errors naming the shapes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from tests.test_ops_convolution import pool_inputs
from tests.torch_reference import same_as_torch

torch_only = pytest.mark.torch


def distinct(*shape, seed=0):
    """Values without ties (a max-pooling gradient is then unambiguous)."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 2.0


MAX_POOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1)),
    dict(kernel_size=3, stride=1, padding=1, dilation=2, ceil_mode=True),
    dict(kernel_size=2, stride=3, ceil_mode=True),
]


@torch_only
@pytest.mark.parametrize("options", MAX_POOL)
def test_max_pool2d_values_indices_and_gradients_match_torch(options):
    import torch

    ours, theirs = same_as_torch(lambda x: F.max_pool2d(x, return_indices=True, **options),
                                 lambda x: torch.nn.functional.max_pool2d(x, return_indices=True, **options),
                                 [distinct(2, 3, 9, 8)])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
    assert ours[1].dtype == autograd.int64


@torch_only
@given(drawn=pool_inputs())
def test_max_pool2d_matches_torch_on_drawn_settings(drawn):
    import torch

    [x], options = drawn
    ours, theirs = same_as_torch(lambda x: F.max_pool2d(x, return_indices=True, **options),
                                 lambda x: torch.nn.functional.max_pool2d(x, return_indices=True, **options),
                                 [x.numpy()])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())


@torch_only
def test_max_pool_ties_nan_and_infinity_follow_torch():
    import torch

    x = np.zeros((1, 2, 6, 6))
    x[0, 0, 0, :3] = np.nan
    x[0, 0, 4:, 4:] = 1.0  # a tie: the first in scan order wins
    x[0, 1] = -np.inf
    for options in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
        values, indices = F.max_pool2d(autograd.Tensor(x), return_indices=True, **options)
        t_values, t_indices = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **options)
        np.testing.assert_array_equal(values.numpy(), t_values.numpy())
        np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())


@torch_only
@pytest.mark.parametrize("options", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_max_pool_gradient_of_infinity_and_nan_reaches_only_the_maxima(options):
    """dL/dy = ±∞ or NaN goes to each window's maximum and nowhere else (not ∞ · 0 = NaN), as PyTorch's scatter."""
    import torch

    x = distinct(2, 3, 6, 6)
    g = np.ones((2, 3, 3, 3))
    g[0, 0, 0, 0], g[0, 1, 1, 2], g[1, 2, 2, 1] = np.inf, -np.inf, np.nan
    ours, theirs = autograd.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    F.max_pool2d(ours, **options).backward(autograd.Tensor(g))
    torch.nn.functional.max_pool2d(theirs, **options).backward(torch.tensor(g))
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())


@torch_only
def test_max_pool1d_and_modules_match_torch():
    import torch

    options = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    ours, theirs = same_as_torch(lambda x: F.max_pool1d(x, return_indices=True, **options),
                                 lambda x: torch.nn.functional.max_pool1d(x, return_indices=True, **options),
                                 [distinct(2, 3, 10)])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
    same_as_torch(nn.MaxPool2d(2), torch.nn.MaxPool2d(2), [distinct(2, 3, 7, 6)])
    same_as_torch(nn.MaxPool1d(2, 1), torch.nn.MaxPool1d(2, 1), [distinct(3, 7)])  # unbatched
    same_as_torch(nn.MaxPool2d(3, 1, 1), torch.nn.MaxPool2d(3, 1, 1), [distinct(3, 5, 5)])


AVG_POOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(3, 1), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=2, stride=1, padding=1, divisor_override=3),
]


@torch_only
@pytest.mark.parametrize("options", AVG_POOL)
def test_avg_pool2d_matches_torch(options):
    import torch

    same_as_torch(lambda x: F.avg_pool2d(x, **options), lambda x: torch.nn.functional.avg_pool2d(x, **options),
                  [distinct(2, 3, 8, 7)])


@torch_only
@given(drawn=pool_inputs(dilation=False), include=st.booleans())
def test_avg_pool2d_matches_torch_on_drawn_settings(drawn, include):
    import torch

    [x], options = drawn
    options["count_include_pad"] = include
    same_as_torch(lambda x: F.avg_pool2d(x, **options), lambda x: torch.nn.functional.avg_pool2d(x, **options),
                  [x.numpy()])


@torch_only
def test_avg_pool1d_and_modules_match_torch():
    import torch

    options = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    same_as_torch(lambda x: F.avg_pool1d(x, **options), lambda x: torch.nn.functional.avg_pool1d(x, **options),
                  [distinct(2, 3, 10)])
    same_as_torch(nn.AvgPool2d(3, 2, 1, divisor_override=2), torch.nn.AvgPool2d(3, 2, 1, divisor_override=2),
                  [distinct(1, 2, 7, 7)])
    same_as_torch(nn.AvgPool1d(2), torch.nn.AvgPool1d(2), [distinct(2, 5)])


ADAPTIVE = [(1, 1), (3, 2), (4, 5), 3, (None, 2), (7, 6), (8, 9)]


@torch_only
@pytest.mark.parametrize("size", ADAPTIVE)
def test_adaptive_pools_match_torch(size):
    import torch

    x = distinct(2, 3, 7, 6)
    same_as_torch(lambda x: F.adaptive_avg_pool2d(x, size), lambda x: torch.nn.functional.adaptive_avg_pool2d(x, size),
                  [x])
    ours, theirs = same_as_torch(lambda x: F.adaptive_max_pool2d(x, size, return_indices=True),
                                 lambda x: torch.nn.functional.adaptive_max_pool2d(x, size, return_indices=True), [x])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
    same_as_torch(nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), [x[0]])  # unbatched
    same_as_torch(nn.AdaptiveMaxPool2d(size), torch.nn.AdaptiveMaxPool2d(size), [x])


@torch_only
@pytest.mark.parametrize("size", [1, 3, 4, 10])
def test_adaptive_pools_1d_match_torch(size):
    import torch

    x = distinct(2, 3, 7)
    same_as_torch(nn.AdaptiveAvgPool1d(size), torch.nn.AdaptiveAvgPool1d(size), [x])
    ours, theirs = same_as_torch(nn.AdaptiveMaxPool1d(size, return_indices=True),
                                 torch.nn.AdaptiveMaxPool1d(size, return_indices=True), [x])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())


RESIZE = [
    dict(scale_factor=2, mode="nearest"),
    dict(scale_factor=1.7, mode="nearest"),
    dict(size=(5, 11), mode="nearest"),
    dict(size=(3, 2), mode="nearest"),
    dict(scale_factor=2, mode="bilinear", align_corners=False),
    dict(scale_factor=2, mode="bilinear", align_corners=True),
    dict(size=(9, 4), mode="bilinear", align_corners=False),
    dict(size=(9, 4), mode="bilinear", align_corners=True),
    dict(scale_factor=(0.5, 1.5), mode="bilinear"),
    dict(size=(1, 1), mode="bilinear", align_corners=True),
]


@torch_only
@pytest.mark.parametrize("options", RESIZE)
def test_interpolate_matches_torch(options):
    import torch

    same_as_torch(lambda x: F.interpolate(x, **options), lambda x: torch.nn.functional.interpolate(x, **options),
                  [distinct(2, 3, 5, 6)])
    same_as_torch(nn.Upsample(**options), torch.nn.Upsample(**options), [distinct(1, 2, 4, 7)])


@torch_only
@pytest.mark.parametrize("options", [dict(scale_factor=2), dict(size=7), dict(scale_factor=3, mode="linear"),
                                     dict(size=4, mode="linear", align_corners=True)])
def test_interpolate_1d_matches_torch(options):
    import torch

    same_as_torch(lambda x: F.interpolate(x, **options), lambda x: torch.nn.functional.interpolate(x, **options),
                  [distinct(2, 3, 5)])


def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    autograd.manual_seed(0)
    x = autograd.Tensor(np.ones((8, 16, 3, 3)), requires_grad=True)
    layer = nn.Dropout2d(0.25)
    y = layer(x).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert set(np.unique(per_channel)) <= {0.0, 1 / 0.75}
    assert (per_channel.min(-1) == per_channel.max(-1)).all()  # each channel all kept or all dropped
    assert 0.1 < (per_channel[..., 0] == 0).mean() < 0.4
    layer(x).sum().backward()
    assert set(np.unique(x.grad.numpy())) <= {0.0, 1 / 0.75}
    layer.eval()
    assert layer(x) is x
    y1 = nn.Dropout1d(0.5)(autograd.Tensor(np.ones((4, 6, 10)))).numpy()
    assert (y1.min(-1) == y1.max(-1)).all()
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout2d(1.5)


def test_pool_module_defaults_and_repr():
    assert nn.MaxPool2d(3).stride == 3 and nn.AvgPool2d(2).stride == 2
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d(output_size=(1, 1))"


def test_max_pool_without_grad_still_returns_indices():
    x = autograd.Tensor(distinct(1, 1, 4, 4))
    with autograd.no_grad():
        values, indices = F.max_pool2d(x, 2, return_indices=True)
    flat = x.numpy().reshape(-1)
    np.testing.assert_array_equal(flat[indices.numpy().reshape(-1)], values.numpy().reshape(-1))


@torch_only
def test_errors_match_torch_types_and_name_the_shapes():
    import torch

    def tensor(module, *shape):
        return autograd.Tensor(distinct(*shape)) if module is F else torch.tensor(distinct(*shape))

    cases = [
        (lambda m: m.max_pool2d(tensor(m, 1, 1, 5, 5), 3, padding=2), "pad should be at most half"),
        (lambda m: m.max_pool2d(tensor(m, 1, 1, 2, 2), 3), "Output size is too small"),
        (lambda m: m.avg_pool2d(tensor(m, 1, 1, 5, 5), 3, padding=2), "pad should be at most half"),
        (lambda m: m.max_pool2d(tensor(m, 5, 5), 2), "Expected 3D (unbatched) or 4D (batched) input"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError) as theirs:
            call(torch.nn.functional)
        with pytest.raises(type(theirs.value)) as ours:
            call(F)
        assert message in str(ours.value)
    with pytest.raises(ValueError, match="either size or scale_factor should be defined"):
        F.interpolate(autograd.Tensor(distinct(1, 1, 2, 2)))
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(autograd.Tensor(distinct(1, 1, 2, 2)), scale_factor=2, align_corners=True)


def _pool_then_relu_in_place(torch, nn):
    """The spatial transformer tutorial's localisation net writes max pooling's output in place
    (nn.MaxPool2d then nn.ReLU(True)): PyTorch's max pooling keeps its input, not its output."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((2, 2, 4, 6)), requires_grad=True)
    conv = x * 2
    pooled = nn.Sequential(nn.MaxPool2d(2, stride=2), nn.ReLU(True))(conv)
    shifted = nn.functional.max_pool1d(conv.view(2, 2, 24), 3)
    shifted.add_(1.0)
    (pooled.pow(2).sum() + shifted.pow(3).sum()).backward()
    return pooled.detach().numpy(), x.grad.numpy()


def test_max_pool_output_may_be_changed_in_place():
    pooled, grad = _pool_then_relu_in_place(autograd, nn)
    assert (pooled >= 0).all() and np.count_nonzero(grad) > 0
    torch = pytest.importorskip("torch")
    their_pooled, their_grad = _pool_then_relu_in_place(torch, torch.nn)
    np.testing.assert_allclose(pooled, their_pooled, rtol=1e-12)
    np.testing.assert_allclose(grad, their_grad, rtol=1e-12)
