"""More pooling and convolution, ported from PyTorch's test/nn/test_pooling.py and
test/nn/test_convolution.py (CPU, no cudnn): MaxUnpool's output_size range, ceil_mode's last-window rule,
empty batches, NaN and -inf in max pooling, unbatched indices, FractionalMaxPool with given samples,
3-D pooling, grouped and depthwise convolutions as separate ones, 'same' padding modules against the
functional form, transposed convolutions' output_size round trip, non-contiguous weights. Each test runs
on chainrule's `nn` and, where it is installed, on PyTorch's."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def test_MaxUnpool2d_output_size(T, nn):
    m = nn.MaxPool2d(3, stride=2, return_indices=True)
    mu = nn.MaxUnpool2d(3, stride=2)
    big_t = T.rand(1, 1, 6, 6)
    big_t[0][0][4][4] = 100
    output_big, indices_big = m(big_t)
    raises(RuntimeError, "", mu, output_big, indices_big)     # index 28 lies outside the default 5x5 output

    small_t = T.rand(1, 1, 5, 5)
    for i in range(0, 4, 2):
        for j in range(0, 4, 2):
            small_t[:, :, i, j] = 100
    output_small, indices_small = m(small_t)
    for h in range(3, 10):
        for w in range(3, 10):
            if 4 <= h <= 6 and 4 <= w <= 6:
                size = (h, w)
                if h == 6:
                    size = (1, 1) + size
                out = mu(output_small, indices_small, output_size=size)
                assert tuple(out.shape[-2:]) == (h, w)
            else:
                raises(ValueError, "", mu, output_small, indices_small, (h, w))


def test_max_unpool_values(T, F):
    x = T.tensor([[[1.0, 5.0, 2.0, 8.0, 3.0, 0.0]]])
    out, idx = F.max_pool1d(x, 2, return_indices=True)
    same(idx, [[[1, 3, 4]]])
    same(F.max_unpool1d(out, idx, 2), [[[0.0, 5.0, 0.0, 8.0, 3.0, 0.0]]])
    same(F.max_unpool1d(out, idx, 2, output_size=[7]), [[[0.0, 5.0, 0.0, 8.0, 3.0, 0.0, 0.0]]])


@pytest.mark.parametrize("size, kernel, stride, padding", [(5, 2, 2, 0), (4, 2, 2, 1), (5, 2, 3, 1), (3, 2, 2, 0),
                                                           (7, 3, 2, 1), (6, 4, 3, 2)])
def test_ceil_mode_output_size(T, F, size, kernel, stride, padding):
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:      # the last window may not start in the right padding
        out -= 1
    x = T.randn(1, 1, size)
    assert F.max_pool1d(x, kernel, stride, padding, ceil_mode=True).shape[-1] == out
    assert F.avg_pool1d(x, kernel, stride, padding, ceil_mode=True).shape[-1] == out
    floor = (size + 2 * padding - kernel) // stride + 1
    assert F.max_pool1d(x, kernel, stride, padding).shape[-1] == floor


def test_pooling_empty_batch(T, F, nn):
    x = T.randn(0, 3, 4, 4)
    for fn in (lambda x: F.max_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2), lambda x: F.adaptive_avg_pool2d(x, 3),
               lambda x: F.adaptive_max_pool2d(x, 3), lambda x: F.lp_pool2d(x, 2, 2)):
        assert tuple(fn(x).shape)[:2] == (0, 3)
    assert tuple(nn.MaxPool2d(2)(x).shape) == (0, 3, 2, 2)


def test_max_pool_nan_inf(T, F):
    x = T.full((1, 1, 4), float("-inf"))
    same(F.max_pool1d(x, 2), [[[-np.inf, -np.inf]]])
    y = T.tensor([[[1.0, float("nan"), 3.0, 2.0]]], requires_grad=True)
    out = F.max_pool1d(y, 2)
    assert np.isnan(values(out)[0, 0, 0]) and values(out)[0, 0, 1] == 3.0
    out.sum().backward()
    same(y.grad, [[[0.0, 1.0, 1.0, 0.0]]])        # the NaN is the maximum
    same(F.adaptive_max_pool1d(T.full((1, 1, 3), float("-inf")), 1), [[[-np.inf]]])


def test_maxpool_indices_no_batch_dim(T, F):
    x = T.tensor([[[1.0, 2.0], [4.0, 3.0]]])        # (C, H, W)
    out, idx = F.max_pool2d(x, 2, return_indices=True)
    same(out, [[[4.0]]])
    same(idx, [[[2]]])
    out, idx = F.adaptive_max_pool2d(x, 1, return_indices=True)
    same(idx, [[[2]]])


def test_fractional_max_pool_with_samples(T, F, nn):
    x = T.arange(16.0).reshape(1, 1, 4, 4)
    samples = T.tensor([[[0.5, 0.5]]])
    # alpha = (in - k) / (out - 1) = 2: windows start at int((i + u) alpha) - int(u alpha), the last at in - k
    out = F.fractional_max_pool2d(x, 2, output_size=2, _random_samples=samples)
    same(out, [[[[5.0, 7.0], [13.0, 15.0]]]])
    out, idx = nn.FractionalMaxPool2d(2, output_size=(2, 2), return_indices=True, _random_samples=samples)(x)
    same(idx, [[[[5, 7], [13, 15]]]])
    raises(ValueError, "FractionalMaxPool2d requires specifying either an output size, or a pooling ratio",
           nn.FractionalMaxPool2d, 2)
    raises(ValueError, "only one of output_size and output_ratio may be specified", nn.FractionalMaxPool2d, 2,
           output_size=2, output_ratio=0.5)


def test_pool3d_values(T, F):
    x = np.arange(2 * 4 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4, 4)
    blocks = x.reshape(1, 2, 2, 2, 2, 2, 2, 2).transpose(0, 1, 2, 4, 6, 3, 5, 7).reshape(1, 2, 2, 2, 2, 8)
    close(F.max_pool3d(T.tensor(x), 2), blocks.max(-1), rtol=0, atol=0)
    close(F.avg_pool3d(T.tensor(x), 2), blocks.mean(-1), rtol=1e-12)
    close(F.adaptive_avg_pool3d(T.tensor(x), 1), x.mean((2, 3, 4), keepdims=True), rtol=1e-12)


def test_adaptive_pooling_size_none(T, nn):
    x = T.randn(1, 2, 5, 7)
    assert tuple(nn.AdaptiveMaxPool2d((None, 3))(x).shape) == (1, 2, 5, 3)
    assert tuple(nn.AdaptiveAvgPool2d((4, None))(x).shape) == (1, 2, 4, 7)
    assert tuple(nn.AdaptiveAvgPool3d((None, 2, None))(T.randn(1, 1, 3, 4, 5)).shape) == (1, 1, 3, 2, 5)


# -- convolution ----------------------------------------------------------------------------------

def test_Conv2d_groups_nobias(T, nn):
    T.manual_seed(0)
    m = nn.Conv2d(4, 4, kernel_size=3, groups=2, bias=False, dtype=T.float64)
    i = T.randn(2, 4, 6, 6, dtype=T.float64, requires_grad=True)
    output = m(i)
    grad_output = T.randn(2, 4, 4, 4, dtype=T.float64)
    output.backward(grad_output)

    m1 = nn.Conv2d(2, 2, kernel_size=3, bias=False, dtype=T.float64)
    m2 = nn.Conv2d(2, 2, kernel_size=3, bias=False, dtype=T.float64)
    with T.no_grad():
        m1.weight.copy_(m.weight[:2])
        m2.weight.copy_(m.weight[2:])
    i1 = i.detach()[:, :2].contiguous().requires_grad_()
    i2 = i.detach()[:, 2:].contiguous().requires_grad_()
    output1 = m1(i1)
    output1.backward(grad_output[:, :2].contiguous())
    output2 = m2(i2)
    output2.backward(grad_output[:, 2:].contiguous())

    close(output, np.concatenate([values(output1), values(output2)], 1), rtol=1e-12)
    close(i.grad, np.concatenate([values(i1.grad), values(i2.grad)], 1), rtol=1e-12)
    close(m.weight.grad, np.concatenate([values(m1.weight.grad), values(m2.weight.grad)], 0), rtol=1e-12)


def test_Conv2d_depthwise_matches_per_channel(T, F):
    x = T.randn(1, 3, 5, 5, dtype=T.float64)
    w = T.randn(6, 1, 3, 3, dtype=T.float64)          # depth multiplier 2
    out = F.conv2d(x, w, groups=3, padding=1)
    for c in range(3):
        close(out[:, 2 * c:2 * c + 2], values(F.conv2d(x[:, c:c + 1], w[2 * c:2 * c + 2], padding=1)), rtol=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_conv_module_same_padding(T, nn, F, dim):
    T.manual_seed(dim)
    x = T.randn(1, 2, *([6] * dim), dtype=T.float64)
    Conv = getattr(nn, f"Conv{dim}d")
    conv = getattr(F, f"conv{dim}d")
    module = Conv(2, 3, kernel_size=[3, 4, 2][:dim], padding="same", dilation=2, dtype=T.float64)
    expect = conv(x, module.weight, module.bias, padding="same", dilation=2)
    close(module(x), values(expect), rtol=1e-12)
    assert tuple(module(x).shape[2:]) == (6,) * dim
    # 'same' with padding_mode='reflect' (an even kernel: the extra padding on the right)
    m = Conv(2, 3, kernel_size=2, padding="same", padding_mode="reflect", dtype=T.float64)
    assert tuple(m(x).shape[2:]) == (6,) * dim


def test_conv3d_matches_sum_of_conv2d(T, F):
    x = T.randn(1, 2, 4, 5, 5, dtype=T.float64)
    w = T.randn(3, 2, 2, 3, 3, dtype=T.float64)
    out = F.conv3d(x, w)
    for d in range(3):
        expected = sum(values(F.conv2d(x[:, :, d + k], w[:, :, k])) for k in range(2))
        close(out[:, :, d], expected, rtol=1e-12)


def test_ConvTranspose2d_output_size_downsample_upsample(T, nn):
    b, c, hid_c = 2, 3, 2
    for h in range(13, 16):
        for w in range(13, 16):
            for k in range(1, 4):
                for d in range(1, 3):
                    for s in range(1, 3):
                        for p in range(0, 2):
                            if (k - 1) * d + 1 > min(h, w) + 2 * p:
                                continue
                            conv = nn.Conv2d(c, hid_c, k, stride=s, padding=p, dilation=d)
                            t_conv = nn.ConvTranspose2d(hid_c, c, k, stride=s, padding=p, dilation=d)
                            i = T.randn(b, c, h, w)
                            out = t_conv(conv(i), output_size=i.shape)
                            assert tuple(out.shape[2:]) == (h, w)
        break


def test_conv_noncontig_weights(T, F):
    for dim in (1, 2, 3):
        for grouped in (False, True):
            nc = 3
            groups = 3 if grouped else 1
            w = T.randn([3] * dim, dtype=T.float64)
            w = w.expand([nc, int(nc / groups)] + list(w.shape))
            w = w.detach().requires_grad_()
            x = T.randn([1, nc] + ([5] * dim), dtype=T.float64, requires_grad=True)
            y = getattr(F, f"conv{dim}d")(x, w, groups=groups)
            y.sum().backward()
            y = getattr(F, f"conv_transpose{dim}d")(x, w, groups=groups)
            y.sum().backward()
            w2 = w.detach().contiguous()
            close(getattr(F, f"conv{dim}d")(x, w2, groups=groups),
                  values(getattr(F, f"conv{dim}d")(x, w, groups=groups)), rtol=1e-12)


def test_conv_empty_batch(T, nn, request):
    conv = nn.Conv2d(2, 3, 3)
    assert tuple(conv(T.randn(0, 2, 5, 5)).shape) == (0, 3, 3, 3)


def test_conv_argument_errors(T, nn):
    raises(RuntimeError, "non-positive groups is not supported|groups", lambda: nn.functional.conv2d(
        T.randn(1, 2, 5, 5), T.randn(2, 2, 3, 3), groups=0))
    raises(RuntimeError, "non-positive stride is not supported", lambda: nn.functional.conv2d(
        T.randn(1, 2, 5, 5), T.randn(2, 2, 3, 3), stride=(1, 0)))


def test_conv_mixed_dtype_error(T, F):
    raises(RuntimeError, "", F.conv2d, T.randn(1, 1, 3, 3), T.randn(1, 1, 2, 2, dtype=T.float64))


def test_adaptive_pooling_to_no_bins_is_empty_and_integers_are_refused(T, F):
    x = T.randn(2, 3, 5, 6)  # (PyTorch's backward of an empty output raises; ours gives zeros)
    assert tuple(F.adaptive_avg_pool2d(x, (0, 3)).shape) == (2, 3, 0, 3)
    assert tuple(F.adaptive_max_pool2d(x, (2, 0)).shape) == (2, 3, 2, 0)
    assert tuple(F.adaptive_avg_pool1d(x[0], 0).shape) == (3, 5, 0)
    with pytest.raises(RuntimeError, match="greater than or equal to 0"):
        F.adaptive_avg_pool2d(x, (-1, 2))
    for pool, kernel in ((F.adaptive_avg_pool2d, "adaptive_avg_pool2d"),
                         (F.adaptive_max_pool1d, "adaptive_max_pool2d")):
        integers = T.zeros(1, 1, 4, 4, dtype=T.uint8) if "2d" in pool.__name__ else T.zeros(1, 4, 4, dtype=T.int64)
        with pytest.raises(NotImplementedError, match=f'"{kernel}" not implemented'):
            pool(integers, 2)


def test_affine_grid_batch_mismatch(T, F):
    with pytest.raises(RuntimeError, match=r"first two dimensions of batch2 tensor to be: \[3, 3\] but got: \[2, 3\]"):
        F.affine_grid(T.randn(2, 2, 3), (3, 1, 4, 4), align_corners=False)
