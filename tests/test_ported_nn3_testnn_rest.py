"""The end of PyTorch's TestNN in test/test_nn.py, TestFusionEval and TestConstantPadNd, where the
tests/test_ported_nn_*.py files do not reach: cross_entropy with probability targets over no classes (NaN, not a
division error), Unflatten's argument checks, LayerNorm's gradient with and without create_graph and with equal
features, ConvTranspose2d taking its padding as a list, FractionalMaxPool2d's ratio check, MaxPool1d's empty
output, unpickling a module without warnings, fuse_conv_bn_eval against the unfused pair, and constant_pad_nd's
values, layout and crops. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's; the
expectations are literals or NumPy."""

import pickle
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_with_probabilities_over_no_classes(T, nn, F, label_smoothing):
    x = T.rand(5, 0, requires_grad=True)
    loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)(x, T.rand(5, 0))
    assert np.isnan(values(loss))  # 0 / (0 / 0) predictions, as PyTorch's
    loss.backward()
    assert tuple(x.grad.shape) == (5, 0)
    same(F.cross_entropy(T.rand(5, 0), T.rand(5, 0), reduction="none"), np.zeros(5, np.float32))
    same(F.cross_entropy(T.rand(5, 0), T.rand(5, 0), reduction="sum"), 0.0)
    assert tuple(F.cross_entropy(T.rand(5, 0, 3), T.rand(5, 0, 3), reduction="none").shape) == (5, 3)


def test_flatten_and_unflatten_arguments(T, nn):
    assert tuple(nn.Flatten(start_dim=1, end_dim=-1)(T.randn(2, 1, 2, 3)).shape) == (2, 6)
    for sizes in ((2, 5, 5), [2, 5, 5]):
        x = T.randn(2, 50)
        same(nn.Unflatten(dim=1, unflattened_size=sizes)(x), values(x).reshape(2, 2, 5, 5))
    raises(TypeError, "unflattened_size must be tuple of ints, but found element of type float at pos 2",
           nn.Unflatten, dim=1, unflattened_size=(2, 5, 5.0))
    # named dims (a str dim with (name, size) pairs) are gone from PyTorch 2.13: every element must be an int
    for sizes, kind in (([["C", 2], ["W", 5], ["H", 5]], "list"), ([("C", 2), ("W", 5), ("H", 5)], "tuple"),
                        ((["C", 2], ["W", 5], ["H", 5]), "list"), (({"C": 2}, {"W": 5}, {"H": 5}), "dict")):
        raises(TypeError, f"unflattened_size must be tuple of ints, but found element of type {kind} at pos 0",
               nn.Unflatten, dim="features", unflattened_size=sizes)


def test_layer_norm_gradient_with_create_graph_and_equal_features(T, nn):
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal((4, 4, 16)).astype(np.float32), requires_grad=True)
    ln = nn.LayerNorm((16,), 1e-5, True)
    with T.no_grad():
        ln.weight = nn.Parameter(0.1 * T.ones_like(ln.weight))
    plain = T.autograd.grad(ln(x).sum(), x, create_graph=False)[0]
    graphed = T.autograd.grad(ln(x).sum(), x, create_graph=True)[0]
    assert graphed.requires_grad and not plain.requires_grad
    close(graphed, values(plain), rtol=1e-3, atol=1e-5)
    # the sum of a normalised row does not move with the row: its gradient is 0 (up to rounding)
    close(plain, np.zeros((4, 4, 16), np.float32), rtol=0, atol=1e-6)
    # equal features: the variance is 0, and the output 0 (not NaN), with a small eps
    x = T.tensor([[[2.0, 2.0], [14.0, 14.0]], [[2.0, 2.0], [14.0, 14.0]]])
    same(nn.LayerNorm(2, eps=1e-6, elementwise_affine=False)(x), np.zeros((2, 2, 2), np.float32))


def test_pooling_and_transposed_convolution_arguments(T, nn):
    x = T.randn(2, 8, 9, 9)
    for padding in ([3, 3], (3, 3)):
        assert tuple(nn.ConvTranspose2d(8, 16, kernel_size=3, padding=padding)(x).shape) == (2, 16, 5, 5)
    raises(ValueError, "fractional_max_pool2d requires output_ratio to either be a single Int or tuple of Ints.",
           nn.FractionalMaxPool2d(kernel_size=[2, 1], output_ratio=[0.5, 0.5, 0.6]), T.rand(2, 3, 10, 8))
    raises(RuntimeError, "Invalid computed output size: 0", nn.MaxPool1d(kernel_size=3, stride=255),
           T.as_tensor([[0.3204]]))


def test_unpickling_a_module_does_not_warn(T, nn):
    linear = nn.Linear(10, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copy = pickle.loads(pickle.dumps(linear))
    assert caught == []
    same(copy.weight, values(linear.weight))


@pytest.mark.parametrize("affine", [True, False])
def test_fuse_conv_bn_eval_matches_the_pair(T, nn, affine):
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal((5, 3, 5, 5)))
    conv = nn.Conv2d(3, 6, kernel_size=(3, 3), bias=True).double()
    bn = nn.BatchNorm2d(6, affine=affine).double()
    bn.running_mean = T.tensor(rng.standard_normal(6))
    bn.running_var = T.tensor(rng.random(6) + 0.5)
    if affine:
        with T.no_grad():
            bn.weight.copy_(T.tensor(rng.standard_normal(6)))
            bn.bias.copy_(T.tensor(rng.standard_normal(6)))
    conv.eval()
    bn.eval()
    expected = bn(conv(x))
    fused = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    assert isinstance(fused, nn.Conv2d) and fused is not conv
    close(fused(x), values(expected), rtol=1e-10, atol=1e-12)
    # the fused weight by hand: W γ / √(σ² + ε) per output channel
    gamma = values(bn.weight) if affine else np.ones(6)
    scale = gamma / np.sqrt(values(bn.running_var) + bn.eps)
    close(fused.weight, values(conv.weight) * scale[:, None, None, None], rtol=1e-12)


def test_constant_pad_nd(T):
    same(T.constant_pad_nd(T.tensor([[1, 2], [3, 4]]), [1, 2, 1, 0], 9),
         [[9, 9, 9, 9, 9], [9, 1, 2, 9, 9], [9, 3, 4, 9, 9]], dtype="int64")
    # negative amounts crop: one row and one column off each end, then padding adds them back as the value
    same(T.constant_pad_nd(T.arange(10).reshape(1, 10), (1, -1, 1, -1), -7), np.full((1, 10), -7))
    same(T.constant_pad_nd(T.arange(12).reshape(3, 4), (-1, 1, 0, 0), 0),
         np.pad(np.arange(12).reshape(3, 4)[:, 1:], ((0, 0), (0, 1))))
    # the layout is kept: row-major stays row-major, channels-last stays channels-last
    nchw = T.rand(1, 2, 5, 3)
    padded = T.constant_pad_nd(nchw, [1, 2], 0.5)
    assert padded.is_contiguous()
    nhwc = nchw.contiguous(memory_format=T.channels_last)
    padded_nhwc = T.constant_pad_nd(nhwc, [1, 2], 0.5)
    assert padded_nhwc.is_contiguous(memory_format=T.channels_last)
    same(padded_nhwc, values(padded))
    same(padded, np.pad(values(nchw), ((0, 0), (0, 0), (0, 0), (1, 2)), constant_values=0.5))
