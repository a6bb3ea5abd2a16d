"""The pooling fixes found porting PyTorch's test/nn/test_pooling.py, each against literals (and PyTorch where it is
installed): max pooling's indices are saved by its node, NaN windows of adaptive max pooling pick the last NaN,
lp_pool of p = ±inf, adaptive pooling to no bins refuses its backward, empty non-batch dims and fractional max
pooling's sizes and samples are refused in PyTorch's words, integer max pooling with padding warns of nothing,
max_pool1d without indices checks its arguments in its own words."""

import math
import warnings

import pytest

from tests import ported_nn
from tests.ported import raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

NAN = math.nan


@pytest.mark.parametrize("call", [
    lambda F, x: F.max_pool2d(x.view(1, 2, 2, 4), 2, return_indices=True),
    lambda F, x: F.max_pool1d(x.view(2, 8), 2, return_indices=True),  # (unbatched: the indices are a view)
    lambda F, x: F.max_pool3d(x.view(1, 1, 2, 2, 4), 2, return_indices=True),
    lambda F, x: F.adaptive_max_pool2d(x.view(1, 2, 2, 4), (1, 2), return_indices=True),
    lambda F, x: F.adaptive_max_pool3d(x.view(1, 2, 2, 4), 1, return_indices=True),
    lambda F, x: F.fractional_max_pool2d(x.view(1, 2, 2, 4), 2, output_size=(1, 2), return_indices=True,
                                         _random_samples=x.new_full((1, 2, 2), 0.5).detach()),
])
def test_writing_max_pooling_indices_in_place_refuses_the_backward(T, F, call):
    x = T.arange(16.0).requires_grad_()
    out, indices = call(F, x)
    out.sum().backward(retain_graph=True)
    assert values(x.grad).sum() == values(out).size
    indices.clone().add_(1)  # a copy may change
    out.sum().backward(retain_graph=True)
    indices.mul_(1)
    raises(RuntimeError, "modified by an inplace operation", out.sum().backward)


def test_adaptive_max_pooling_picks_the_last_nan(T, F):
    x = T.tensor([[[NAN, 1.0, NAN, 2.0, NAN, 0.0]]], requires_grad=True)
    out, indices = F.adaptive_max_pool1d(x, 1, return_indices=True)
    same(indices, [[[4]]])
    same(F.adaptive_max_pool1d(x, 2, return_indices=True)[1], [[[2, 4]]])
    out.sum().backward()
    same(x.grad, [[[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]])
    same(F.adaptive_max_pool2d(x.view(1, 1, 2, 3), 1, return_indices=True)[1], [[[[4]]]])
    same(F.adaptive_max_pool3d(x.view(1, 1, 2, 3, 1), 1, return_indices=True)[1], [[[[[4]]]]])
    same(F.max_pool1d(x, 6, return_indices=True)[1], [[[4]]])  # (as max pooling's)
    same(F.adaptive_max_pool1d(T.tensor([[[1.0, 3.0, 3.0, 2.0]]]), 1, return_indices=True)[1], [[[1]]])


def test_lp_pool_of_infinite_powers(T, F, nn):
    x = T.tensor([[[-3.0, 1.0, 0.5, -0.25, 2.0]]], requires_grad=True)
    top = F.lp_pool1d(x, math.inf, 2)
    same(top, [[[3.0, 0.5]]])
    bottom = F.lp_pool1d(x, -math.inf, 2, ceil_mode=True)
    same(bottom, [[[1.0, 0.25, 2.0]]])
    (top.sum() + bottom.sum()).backward()
    same(x.grad, [[[-1.0, 1.0, 1.0, -1.0, 1.0]]])
    same(F.lp_pool2d(x.view(1, 1, 1, 5), math.inf, (1, 2), stride=(1, 3)), [[[[3.0, 2.0]]]])
    same(F.lp_pool3d(x.view(1, 1, 1, 1, 5), math.inf, (1, 1, 5)), [[[[[3.0]]]]])
    same(nn.LPPool2d(math.inf, 1)(x.view(1, 1, 5)), [[[3.0, 1.0, 0.5, 0.25, 2.0]]])


@pytest.mark.parametrize("fn, shape, output_size, words", [
    ("adaptive_avg_pool1d", (4, 5), 0, r"^adaptive_avg_pool2d_backward\(\): .*sizes \[4, 1, 0\] with dimension 2 "),
    ("adaptive_avg_pool2d", (3, 4, 5), (0, 2), r"^adaptive_avg_pool2d_backward\(\): .*sizes \[3, 0, 2\] with dim"),
    ("adaptive_max_pool2d", (1, 6, 4, 5), 0, r"^adaptive_max_pool2d_backward\(\): .*sizes \[1, 6, 0, 0\] with dim"),
    ("adaptive_avg_pool3d", (2, 3, 4, 5, 6), (2, 0, 2), r"^adaptive_avg_pool3d_backward\(\): .*\[2, 3, 2, 0, 2\] "),
    ("adaptive_max_pool3d", (1, 6, 4, 5), 0, r"^adaptive_max_pool3d_backward\(\): .*sizes \[1, 0, 0, 0\] with dim"),
])
def test_adaptive_pooling_to_no_bins(T, F, fn, shape, output_size, words, nn):
    x = T.ones(*shape, requires_grad=True)
    out = getattr(F, fn)(x, output_size)
    assert values(out).size == 0 and out.requires_grad and out.dtype == x.dtype
    raises(RuntimeError, words + ".*being empty$", out.sum().backward)
    with T.no_grad():
        assert values(getattr(F, fn)(x, output_size)).size == 0


def test_empty_non_batch_dims_of_avg_pooling_are_refused(T, F, nn):
    raises(RuntimeError, r"^Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, "
                         r"but got:\[16, 0, 20, 32\]$", nn.AvgPool2d(3, stride=2), T.ones(16, 0, 20, 32))
    raises(RuntimeError, r"but got:\[4, 0, 1, 6\]$", F.avg_pool1d, T.ones(4, 0, 6), 1)
    raises(RuntimeError, r"^avg_pool3d\(\): Expected input's non-batch dimensions to have positive length, but input "
                         r"has a shape of \[2, 0, 4, 4, 4\] and non-batch dimension 0 has length zero!$",
           F.avg_pool3d, T.ones(2, 0, 4, 4, 4), 1)
    raises(RuntimeError, r"^max_pool3d_with_indices_out_cpu_template\(\): .*\[2, 3, 4, 0, 4\]",
           F.max_pool3d, T.ones(2, 3, 4, 0, 4), 1)
    raises(RuntimeError, r"^Expected 3D or 4D .*but got:\[2, 3, 0, 6\]$", F.max_pool2d, T.ones(2, 3, 0, 6), 1)
    assert tuple(F.avg_pool3d(T.ones(0, 3, 4, 4, 4), 2).shape) == (0, 3, 2, 2, 2)


def test_fractional_max_pool_argument_errors(T, F):
    x = T.ones(2, 3, 7, 7)
    raises(RuntimeError, r"^fractional_max_pool2d: kernel_size must either be a single Int or tuple of Ints$",
           F.fractional_max_pool2d, x, (2,), output_size=3)
    raises(RuntimeError, r"^fractional_max_pool3d: output_size must either be a single Int or tuple of three Ints$",
           F.fractional_max_pool3d, x.unsqueeze(2).expand(2, 3, 7, 7, 7), 2, output_size=(3, 3))
    raises(RuntimeError, r"^fractional_max_pool2d\(\): pool width 2 too large relative to input width 7$",
           F.fractional_max_pool2d, x, 2, output_size=(3, 7))
    raises(RuntimeError, r"^fractional_max_pool3d_out\(\): pool time 2 too large relative to input time 7$",
           F.fractional_max_pool3d, T.ones(2, 7, 7, 7), 2, output_size=(7, 3, 3))
    # the 3-d kernel wants output + pool - 1 below the input size, the 2-d one at most the input size
    raises(RuntimeError, r"pool height 2 too large relative to input height 4$",
           F.fractional_max_pool3d, T.ones(1, 1, 5, 4, 5), 2, output_size=3)
    assert tuple(F.fractional_max_pool3d(T.ones(1, 1, 5, 4, 5), 2, output_size=(3, 2, 3)).shape) == (1, 1, 3, 2, 3)
    assert tuple(F.fractional_max_pool2d(T.ones(1, 1, 4, 4), 2, output_size=3).shape) == (1, 1, 3, 3)
    for samples, words in [((1, 3, 2), r"^Expect _random_samples.size\(0\) no less then input batch size\.$"),
                           ((2, 3), r"^Expect _random_samples to have 3 dimensions, got 2$"),
                           ((2, 4, 2), r"^Expect _random_samples.size\(1\) equals to input channel size\.$"),
                           ((2, 3, 3), r"^Expect _random_samples.size\(2\) equals to 2; got 3\.$")]:
        raises(RuntimeError, words, F.fractional_max_pool2d, x, 2, output_size=3, _random_samples=T.rand(*samples))
    raises(RuntimeError, r"^fractional_max_pool2d\(\): Expected input to have non-zero size for non-batch dimensions, "
                         r"but got\[2, 0, 8\] with dimension 1 being empty\.$",
           F.fractional_max_pool2d, T.ones(2, 0, 8), 2, output_size=1)
    assert tuple(F.fractional_max_pool2d(T.ones(0, 10, 8), 2, output_size=1).shape) == (0, 1, 1)  # (C = 0 unbatched)


def test_max_pooling_of_integers_with_padding_warns_of_nothing(T, F):
    x = T.tensor([[[[-1, -2], [-3, -4]]]], dtype=T.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, indices = F.max_pool2d(x, 2, 2, 1, 2, True, return_indices=True)
    same(out, [[[[-4, -4], [-4, -4]]]], dtype="int32")
    same(indices, [[[[3, 3], [3, 3]]]])
    same(F.max_pool1d(T.tensor([[5, 7, 6]]), 2, 1, 1, return_indices=True)[0], [[5, 7, 7, 6]])


def test_max_pool1d_without_indices_checks_its_arguments_in_its_own_words(T, F):
    x = T.ones(1, 1, 5)
    for kwargs, words in [
            (dict(kernel_size=0), r"kernel_size must be greater than zero, but got 0$"),
            (dict(kernel_size=3, stride=0), r"stride must be greater than zero, but got 0$"),
            (dict(kernel_size=3, padding=-1), r"padding must be non-negative, but got -1$"),
            (dict(kernel_size=3, padding=2), r"padding should be at most half of kernel size, but got padding=2 and "
                                             r"kernel_size=3$"),
            (dict(kernel_size=3, dilation=0), r"dilation must be greater than zero"),
            (dict(kernel_size=3, dilation=3), r"Invalid computed output size: 0$")]:
        raises(RuntimeError, r"^max_pool1d\(\) " + words, F.max_pool1d, x, **kwargs)
    # with indices it is the 2-d kernel, which sees a height of 1
    raises(RuntimeError, r"^Given input size: \(1x1x5\)\. Calculated output size: \(1x1x0\)\. Output size is too small",
           F.max_pool1d, x, 7, return_indices=True)
    raises(RuntimeError, r"^Given input size: \(1x1x5\)\. Calculated output size: \(1x1x0\)", F.avg_pool1d, x, 7)
    same(F.max_pool1d(x, 2, padding=1, dilation=2), [[[1.0, 1.0, 1.0]]])
