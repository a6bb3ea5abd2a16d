"""Pooling, ported from PyTorch's test/nn/test_pooling.py (CPU parts; tests/test_pooling.py and
tests/test_ported_nn_pooling_conv.py hold the rest): average pooling against sums of blocks, with divisors
and ceil_mode; output shapes; empty batches and the errors for other empty dims; adaptive pooling to no bins,
to one bin and of channels_last inputs; max pooling's corner cases, indices (and writing them in place),
NaN and -inf; MaxUnpool's defaults and index errors; fractional max pooling with given samples; LPPool's
p = inf. Each test runs on chainrule's `autograd` and `nn` and, where it is installed, on PyTorch's, against
literal or NumPy-computed expectations."""

import itertools
import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values, xfail_ours

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def tensor(T, a, **kwargs):
    return T.tensor(np.asarray(a), **kwargs)


def block_sums(x, kernel):
    """Sums over the non-overlapping blocks of `kernel` (stride = kernel, the ragged end dropped), in NumPy."""
    blocks = x[tuple(slice(0, s // k * k) for s, k in zip(x.shape, kernel))]
    shape = [n for s, k in zip(x.shape, kernel) for n in (s // k, k)]
    return blocks.reshape(shape).sum(axis=tuple(range(1, 2 * len(kernel), 2)))


# -- average pooling ------------------------------------------------------------------------------------------


def test_avg_pool2d_every_kernel_is_a_mean_of_blocks(T, F):
    x = np.random.default_rng(0).random((1, 5, 8))
    for i in range(1, 6):
        for j in range(1, 9):
            close(F.avg_pool2d(tensor(T, x), (i, j)), block_sums(x[0], (i, j))[None] / (i * j), rtol=1e-12)


def test_avg_pool2d_divisor_override_divides_the_block_sums(T, F):
    x = np.random.default_rng(1).random((1, 3, 3))
    for i, j in itertools.product(range(1, 4), range(1, 4)):
        for divisor in (1, 7, i * j):
            out = F.avg_pool2d(tensor(T, x), (i, j), divisor_override=divisor)
            close(out, block_sums(x[0], (i, j))[None] / divisor, rtol=1e-12)


@pytest.mark.parametrize("divisors", [False, True])
def test_avg_pool3d_every_kernel(T, F, divisors):
    x = np.random.default_rng(2).random((1, 4, 3, 5))
    for i, j, k in itertools.product(range(1, 5), range(1, 4), range(1, 6)):
        for divisor in ((1, 7, i * j) if divisors else (None,)):
            out = F.avg_pool3d(tensor(T, x), (i, j, k), divisor_override=divisor)
            close(out, block_sums(x[0], (i, j, k))[None] / (divisor or i * j * k), rtol=1e-12)


def test_avg_pool_ceil_mode_counting_the_padding_gives_no_nan(T, F):
    # gh-36977: with ceil_mode a last window may lie wholly in the right padding; it is dropped, not divided by 0
    x = np.arange(16.0).reshape(1, 4, 4) * 10 - 70
    out = F.avg_pool1d(tensor(T, x), ceil_mode=True, count_include_pad=True, kernel_size=1, stride=2)
    same(out, x[:, :, ::2])
    x2 = x.reshape(1, 1, 4, 4)
    out = F.avg_pool2d(tensor(T, x2), ceil_mode=True, count_include_pad=True, kernel_size=(1, 2), padding=(0, 1),
                       stride=2)
    padded = np.pad(x2, ((0, 0), (0, 0), (0, 0), (1, 1)))
    expected = (padded[..., ::2, 0:5:2] + padded[..., ::2, 1:6:2]) / 2  # windows at -1, 1, 3 of the padded row
    close(out, expected, rtol=1e-12)
    x3 = np.random.default_rng(3).standard_normal((1, 2, 4, 4, 4))
    out = F.avg_pool3d(tensor(T, x3), ceil_mode=True, count_include_pad=True, kernel_size=(1, 2, 3), stride=2)
    assert tuple(out.shape) == (1, 2, 2, 2, 2) and not np.isnan(values(out)).any()
    close(out[..., 0], x3[:, :, ::2, :, :3].reshape(1, 2, 2, 2, 2, 3).mean((4, 5)), rtol=1e-12)


def test_pooling_output_shapes(T, F):
    def check(expected, sizes, **kwargs):
        for kind, spatial in itertools.product(("max", "avg"), (1, 2, 3)):
            op = getattr(F, f"{kind}_pool{spatial}d")
            assert tuple(op(T.zeros(sizes[:spatial + 2]), **kwargs).shape) == expected[:spatial + 2]

    check((1, 1, 3, 3, 4), (1, 1, 5, 6, 7), kernel_size=1, stride=2, padding=0, ceil_mode=True)
    check((1, 1, 2, 3, 3), (1, 1, 3, 4, 5), kernel_size=2, stride=2, padding=1, ceil_mode=False)
    check((1, 1, 2, 3, 3), (1, 1, 3, 4, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True)
    # gh-45357
    assert tuple(F.max_pool2d(T.zeros(1, 1, 6, 7), 1, stride=(2, 2), padding=0, ceil_mode=True).shape) == (1, 1, 3, 4)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_zero_stride_and_too_small_outputs_are_refused(T, F, nn, kind):
    for spatial in (1, 2, 3):
        x = T.ones([1, 2] + spatial * [4])
        words = r"stride should not be zero|stride must be greater than zero"
        raises(RuntimeError, words, getattr(F, f"{kind}_pool{spatial}d"), x, kernel_size=2, stride=0)
        raises(RuntimeError, words, getattr(nn, f"{kind.title()}Pool{spatial}d")(kernel_size=2, stride=0), x)
        # only a correct floor division by the stride gives no outputs here
        x = T.ones([1, 1] + spatial * [4])
        if kind == "max":
            call = getattr(F, f"max_pool{spatial}d_with_indices"), (x, 3), dict(stride=2, padding=0, dilation=2)
        else:
            call = getattr(F, f"avg_pool{spatial}d"), (x, 6), dict(stride=2, padding=0)
        raises(RuntimeError, r"too small|smaller than", call[0], *call[1], **call[2])


# -- empty inputs ----------------------------------------------------------------------------------------------


def empty_batch_round_trip(T, module, shape):
    """_test_module_empty_input: an empty batch goes through, and backward gives an empty gradient."""
    x = T.ones(*shape, requires_grad=True)
    out = module(x)
    out.sum().backward()
    assert tuple(out.shape)[:1] == (0,) and tuple(x.grad.shape) == shape
    return out


def test_adaptive_avg_pooling_of_an_empty_batch(T, nn):
    for dtype in (T.float32, T.float64):
        for module, shape in ((nn.AdaptiveAvgPool1d(5), (0, 10)), (nn.AdaptiveAvgPool2d((5, 5)), (0, 10, 10)),
                              (nn.AdaptiveAvgPool3d((5, 5, 5)), (0, 10, 10, 10))):
            x = T.ones(*shape, dtype=dtype, requires_grad=True)
            out = module(x)
            out.sum().backward()
            assert out.dtype == dtype and tuple(x.grad.shape) == shape


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_max_and_adaptive_max_pooling_of_an_empty_batch(T, nn, spatial):
    sizes = (0, 4) + (10, 8, 7)[:spatial]
    for module in (getattr(nn, f"MaxPool{spatial}d")(3, stride=2), getattr(nn, f"AdaptiveMaxPool{spatial}d")(3)):
        empty_batch_round_trip(T, module, sizes)
    empty_channels = T.ones(1, 0, *sizes[2:])
    if spatial > 1:
        raises(RuntimeError, "Expected", getattr(nn, f"MaxPool{spatial}d")(3, stride=2), empty_channels)
    raises(RuntimeError, "Expected", getattr(nn, f"AdaptiveMaxPool{spatial}d")(3), empty_channels)


def test_avg_pool2d_of_an_empty_batch_and_of_empty_channels(T, nn):
    pool = nn.AvgPool2d(3, stride=2)
    assert tuple(empty_batch_round_trip(T, pool, (0, 4, 10, 12)).shape) == (0, 4, 4, 5)
    layout = T.randn(0, 4, 10, 12).contiguous(memory_format=T.channels_last)
    assert tuple(pool(layout).shape) == (0, 4, 4, 5)
    raises(RuntimeError, r"3D or 4D", pool, T.randn(4, 0, 10, 12))


def test_empty_non_batch_dims_are_refused_in_each_kernels_words(T, F):
    cases = [
        (F.max_pool1d, (2, 3, 0), r"^max_pool1d: Expected 2D or 3D \(batch mode\) tensor with optional 0 dim batch "
                                  r"size for input, but got:\[2, 3, 0\]"),
        (F.max_pool2d, (0, 5, 6), r"^Expected 3D or 4D \(batch mode\) tensor .*but got:\[0, 5, 6\]"),
        (F.avg_pool2d, (3, 0, 6), r"^Expected 3D or 4D \(batch mode\) tensor .*but got:\[3, 0, 6\]"),
        (F.avg_pool1d, (3, 0), r"^Expected 3D or 4D \(batch mode\) tensor .*but got:\[3, 1, 0\]"),
        (F.max_pool3d, (0, 4, 4, 4), r"^max_pool3d_with_indices_out_cpu_template\(\): Expected input's non-batch "
                                     r"dimensions to have positive length, but input has a shape of \[0, 4, 4, 4\]"),
        (F.avg_pool3d, (1, 2, 4, 0, 4), r"^avg_pool3d\(\): Expected input's non-batch dimensions to have positive"),
    ]
    for fn, shape, words in cases:
        raises(RuntimeError, words, fn, T.ones(*shape), 1)
    assert tuple(F.avg_pool1d(T.ones(0, 4, 6), 1).shape) == (0, 4, 6)


def test_adaptive_pooling_to_no_bins_refuses_its_backward(T, F):
    words = "Expected grad_output to have non-zero size for non-batch dimensions"
    x = T.ones(1, 6, 10, 9, requires_grad=True)
    for fn in (F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        out = fn(x, 0)
        assert values(out).size == 0
        raises(RuntimeError, words, out.sum().backward)
    x = T.ones(1, 6, requires_grad=True)
    for fn in (F.adaptive_avg_pool1d, F.adaptive_max_pool1d):
        raises(RuntimeError, words, fn(x, 0).sum().backward)
    raises(RuntimeError, r"^adaptive_max_pool2d_backward\(\): .* has sizes \[1, 4, 1, 0\] with dimension 3 being empty",
           F.adaptive_max_pool1d(T.ones(1, 4, 5, requires_grad=True), 0).sum().backward)
    out, indices = F.adaptive_max_pool3d(T.ones(2, 3, 4, 5, requires_grad=True), (2, 0, 2), return_indices=True)
    assert tuple(out.shape) == tuple(indices.shape) == (2, 2, 0, 2) and str(indices.dtype).endswith("int64")
    raises(RuntimeError, r"sizes \[2, 2, 0, 2\] with dimension 2 being empty", out.sum().backward)


@xfail_ours("a size too big for memory is NumPy's ValueError in chainrule's factories, not PyTorch's RuntimeError "
            "'Storage size calculation overflowed' (autograd.empty(2, 2, 1, 2**62) too)")
def test_adaptive_pooling_size_overflow(T, nn):
    raises(RuntimeError, "", nn.AdaptiveMaxPool1d(0x3FFFFFFFFFFFFFFF), T.empty([2, 2, 2]))


# -- adaptive pooling --------------------------------------------------------------------------------------------


def adaptive_bins_mean(x, out):
    """PyTorch's adaptive average over the last axis in NumPy: bin i is [floor(i n / out), ceil((i + 1) n / out))."""
    n = x.shape[-1]
    return np.stack([x[..., i * n // out:-(-(i + 1) * n // out)].mean(-1) for i in range(out)], -1)


@pytest.mark.parametrize("channels", [4, 8])
def test_adaptive_avg_pool2d_of_channels_last_inputs(T, nn, channels):
    rng = np.random.default_rng(4)
    x = T.tensor(rng.integers(1, 10, (2, channels, 8, 8)).astype(np.float32))
    x = x.contiguous(memory_format=T.channels_last)
    grad = T.tensor(rng.integers(1, 10, (2, channels, 7, 7)).astype(np.float32))
    if channels == 8:  # (non-contiguous: every other channel)
        x, grad = x[:, ::2], grad[:, ::2]
    x.requires_grad_()
    out = nn.AdaptiveAvgPool2d((7, 7))(x)
    out.backward(grad)
    a = values(x)
    close(out, adaptive_bins_mean(np.swapaxes(adaptive_bins_mean(a, 7), -1, -2), 7).swapaxes(-1, -2), rtol=1e-6)
    reference = x.detach().contiguous().requires_grad_()
    nn.AdaptiveAvgPool2d((7, 7))(reference).backward(grad.contiguous())
    same(x.grad, values(reference.grad))
    # each input position is in one bin or two of each axis (8 into 7 bins: each bin 2 wide, overlapping by one)
    assert np.all(values(x.grad) > 0)


def test_adaptive_avg_pool2d_keeps_channels_last(T, nn):
    x = T.ones(2, 4, 8, 8).contiguous(memory_format=T.channels_last)
    out = nn.AdaptiveAvgPool2d((7, 7))(x)
    assert out.is_contiguous(memory_format=T.channels_last) and tuple(out.stride()) == (196, 1, 28, 4)
    assert nn.AdaptiveAvgPool2d((1, 1))(x).is_contiguous(memory_format=T.channels_last)


def test_adaptive_avg_pool2d_of_strided_channels_last_input_keeps_its_layout(T, nn):
    x = T.ones(2, 8, 8, 8).contiguous(memory_format=T.channels_last)[:, ::2]
    assert nn.AdaptiveAvgPool2d((7, 7))(x).is_contiguous(memory_format=T.channels_last)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "non_contiguous"])
def test_adaptive_avg_pool2d_to_one_bin_is_the_mean(T, nn, layout):
    x = T.tensor(np.random.default_rng(5).integers(1, 10, (2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    if layout == "non_contiguous":
        x = x[::2, ::2, ::2, ::2]
    elif layout == "channels_last":
        x = x.to(memory_format=T.channels_last)
    out = nn.AdaptiveAvgPool2d((1, 1))(x)
    out.sum().backward()
    close(out, values(x).mean((-1, -2), keepdims=True), rtol=1e-6)
    c = out.size(1)
    if layout != "channels_last":
        assert out.is_contiguous() and tuple(out.stride()) == (c, 1, 1, 1)


def test_adaptive_avg_pool3d_to_one_bin_is_the_mean(T, nn):
    x = T.tensor(np.random.default_rng(6).standard_normal((2, 3, 6, 6, 6)).astype(np.float32), requires_grad=True)
    out = nn.AdaptiveAvgPool3d(1)(x)
    out.sum().backward()
    close(out, values(x).mean((-1, -2, -3), keepdims=True), rtol=1e-5)
    assert out.is_contiguous() and tuple(out.stride()) == (3, 1, 1, 1, 1)
    close(x.grad, np.full((2, 3, 6, 6, 6), 1 / 216), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_adaptive_pooling_of_integers_is_not_implemented(T, nn, dtype):
    for spatial, kind in itertools.product((2, 3), ("Max", "Avg")):
        module = getattr(nn, f"Adaptive{kind}Pool{spatial}d")((2,) * spatial)
        raises(RuntimeError, "not implemented", module, T.zeros((4,) * (spatial + 1), dtype=getattr(T, dtype)))


def test_adaptive_max_pooling_of_channels_last_and_strided_inputs(T, nn):
    rng = np.random.default_rng(7)
    for contiguous in (True, False):
        for shape, out_size in [((2, 4, 10, 10), (7, 7)), ((2, 4, 9, 14), (5, 8)), ((2, 1, 3, 3), (1, 1)),
                                ((2, 4, 6, 6, 6), (4, 4, 4)), ((2, 2, 3, 3, 3), (1, 1, 1))]:
            spatial = len(out_size)
            layout = T.channels_last if spatial == 2 else T.channels_last_3d
            x = T.tensor(rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64))  # (no ties)
            x = x.contiguous(memory_format=layout)
            grad = T.tensor(rng.integers(1, 10, shape[:2] + out_size).astype(np.float64))
            if not contiguous:
                x, grad = x[:, ::2], grad[:, ::2]
            x.requires_grad_()
            module = getattr(nn, f"AdaptiveMaxPool{spatial}d")(out_size, return_indices=True)
            out, indices = module(x)
            out.backward(grad)
            reference = x.detach().contiguous().requires_grad_()
            ref_out, ref_indices = module(reference)
            ref_out.backward(grad.contiguous())
            same(out, values(ref_out))
            same(indices, values(ref_indices))
            same(x.grad, values(reference.grad))
            if contiguous and spatial == 2:  # (PyTorch's 3-d kernel gives row-major results)
                assert out.is_contiguous(memory_format=layout) and indices.is_contiguous(memory_format=layout)
            flat = values(x).reshape(*x.shape[:2], -1)
            same(out, np.take_along_axis(flat, values(indices).reshape(*x.shape[:2], -1), 2).reshape(out.shape))


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_adaptive_pooling_of_uneven_bins(T, F, spatial):
    rng = np.random.default_rng(8)
    shape = (2, 3) + (7, 11, 5)[:spatial]
    out_size = (3, 4, 2)[:spatial]
    x = rng.standard_normal(shape)
    expected_mean, expected_max = x, x
    for axis in range(spatial):  # one axis at a time: bins are products of intervals
        expected_mean = np.moveaxis(adaptive_bins_mean(np.moveaxis(expected_mean, 2 + axis, -1), out_size[axis]),
                                    -1, 2 + axis)
        n, o = shape[2 + axis], out_size[axis]
        moved = np.moveaxis(expected_max, 2 + axis, -1)
        binned = np.stack([moved[..., i * n // o:-(-(i + 1) * n // o)].max(-1) for i in range(o)], -1)
        expected_max = np.moveaxis(binned, -1, 2 + axis)
    close(getattr(F, f"adaptive_avg_pool{spatial}d")(tensor(T, x), out_size), expected_mean, rtol=1e-12)
    same(getattr(F, f"adaptive_max_pool{spatial}d")(tensor(T, x), out_size), expected_max)
    if spatial > 1:  # None keeps that axis's size
        keep = (None,) + out_size[1:]
        assert tuple(getattr(F, f"adaptive_max_pool{spatial}d")(tensor(T, x), keep).shape) == shape[:3] + out_size[1:]


# -- max pooling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool1d_corner_cases(T, nn, dtype):
    # (kernel_size, stride, padding, dilation, return_indices, ceil_mode)
    def check(x, args, expected):
        same(nn.MaxPool1d(*args)(T.tensor(x, dtype=getattr(T, dtype))), expected, dtype=dtype)

    check([[1.0]], (1, None, 0, 1, False, False), [[1.0]])
    check([[1.0]], (2, None, 1, 2, False, False), [[-np.inf]])
    check([[1.0], [1.0]], (2, None, 1, 2, False, False), [[-np.inf], [-np.inf]])
    check([[1.0, 2.0]], (2, 1, 1, 2, False, False), [[2.0, 1.0]])
    check([[1.0, 2.0]], (2, 2, 1, 2, False, True), [[2.0, 2.0]])


def max_pool1d_by_hand(x, kernel, stride, padding, dilation, ceil_mode):
    size = x.shape[-1]
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(padding, padding + stride * 2 + kernel * dilation)],
                    constant_values=-np.inf)
    return np.stack([padded[..., i * stride:i * stride + dilation * (kernel - 1) + 1:dilation].max(-1)
                     for i in range(out)], -1)


def test_max_pool1d_with_and_without_indices(T, nn):
    rng = np.random.default_rng(9)
    for size, kernel, stride, dilation, ceil_mode in itertools.product(
            [(3, 9, 17), (2, 5, 30)], [1, 2, 4], [1, 3], [1, 2, 4], [True, False]):
        padding = int(rng.integers(0, kernel // 2 + 1))
        x = rng.standard_normal(size)
        args = (kernel, stride, padding, dilation)
        out = nn.MaxPool1d(*args, ceil_mode=ceil_mode)(tensor(T, x))
        with_indices, indices = nn.MaxPool1d(*args, ceil_mode=ceil_mode, return_indices=True)(tensor(T, x))
        expected = max_pool1d_by_hand(x, kernel, stride, padding, dilation, ceil_mode)
        same(out, expected)
        same(with_indices, expected)
        same(expected, np.take_along_axis(x, values(indices), -1))
    strided = tensor(T, rng.standard_normal((5, 151, 33)))[::2, ::3, ::2]
    for x in (strided, strided.transpose(1, 2)):
        same(nn.MaxPool1d(3, 2, 1, 2, ceil_mode=True)(x), max_pool1d_by_hand(values(x), 3, 2, 1, 2, True))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_of_integers_corner_case(T, nn, dtype, channels_last):
    x = T.tensor([[[[-1, -2], [-3, -4]]]], dtype=getattr(T, dtype))
    if channels_last:
        x = x.to(memory_format=T.channels_last)
    same(nn.MaxPool2d(2, 2, 1, 2, False, True)(x), [[[[-4, -4], [-4, -4]]]], dtype=dtype)


def layout_round_trip(T, module, x, grad):
    """The module's values, indices and input gradient, for x and for a contiguous copy of it."""
    results = []
    for inputs, grads in ((x, grad), (x.detach().contiguous(), grad.contiguous())):
        inputs = inputs.detach().requires_grad_()
        out, indices = module(inputs)
        out.backward(grads)
        results.append((values(out), values(indices), values(inputs.grad)))
    for ours, contiguous in zip(*results):
        same(ours, contiguous)
    return results[0]


@pytest.mark.parametrize("n, c, h, w, kernel, stride", [(2, 4, 8, 8, 7, 7), (2, 4, 7, 7, 3, 1), (2, 5, 11, 11, 3, 2)])
def test_max_pool2d_of_channels_last_inputs(T, nn, n, c, h, w, kernel, stride):
    rng = np.random.default_rng(10)
    x = tensor(T, rng.standard_normal((n, c, h, w))).contiguous(memory_format=T.channels_last)
    out_size = (h - kernel) // stride + 1
    grad = tensor(T, rng.standard_normal((n, c, out_size, out_size)))
    out, indices, _ = layout_round_trip(T, nn.MaxPool2d(kernel, stride, return_indices=True), x, grad)
    same(out, np.take_along_axis(values(x).reshape(n, c, -1), indices.reshape(n, c, -1), 2).reshape(out.shape))


@pytest.mark.parametrize("contiguous", [True, False])
def test_max_pool2d_with_dilation_of_channels_last_inputs(T, nn, contiguous):
    rng = np.random.default_rng(11)
    for n, c, h, w, kernel, stride, padding, dilation in [(2, 4, 10, 10, 2, 1, 1, 2), (2, 4, 9, 14, 2, 1, 1, 2),
                                                          (2, 4, 11, 11, 4, 2, 2, 2)]:
        x = tensor(T, rng.integers(1, 10, (n, c, h, w)).astype(np.float64)).contiguous(memory_format=T.channels_last)
        oh = (h + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        ow = (w + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        grad = tensor(T, rng.integers(1, 10, (n, c, oh, ow)).astype(np.float64))
        if not contiguous:
            x, grad = x[:, ::2], grad[:, ::2]
        layout_round_trip(T, nn.MaxPool2d(kernel, stride, padding, dilation, return_indices=True), x, grad)


@pytest.mark.parametrize("batch, size, kernel, stride", [
    (2, (8, 8, 8), (5, 6, 7), None), (0, (12, 13, 14), (5, 6, 7), None), (2, (7, 7, 7), 3, 1),
    (1, (9, 9, 9), (1, 2, 3), 2), (0, (4, 4, 4), 3, 2)])
def test_max_pool3d_of_channels_last_inputs(T, nn, batch, size, kernel, stride):
    rng = np.random.default_rng(12)
    x = tensor(T, rng.standard_normal((max(batch, 1), 3) + size)).contiguous(memory_format=T.channels_last_3d)
    if batch == 0:  # (0: unbatched)
        x = x.squeeze(0)
    module = nn.MaxPool3d(kernel, stride, return_indices=True)
    grad = tensor(T, rng.standard_normal(tuple(module(x)[0].shape)))
    if batch:
        out, indices = module(x)
        assert out.is_contiguous(memory_format=T.channels_last_3d)
        assert indices.is_contiguous(memory_format=T.channels_last_3d)
    out, indices, _ = layout_round_trip(T, module, x, grad)
    flat = values(x).reshape(*x.shape[:-3], -1)
    same(out, np.take_along_axis(flat, indices.reshape(*x.shape[:-3], -1), -1).reshape(out.shape))


@pytest.mark.parametrize("kernel, stride, padding, divisor, include", [
    (3, 3, 0, None, True), (3, 3, 1, None, False), (3, 2, 1, None, False), (3, 3, 0, 42, True), (7, 7, 0, None, True),
    (3, 1, 1, None, True)])
def test_avg_pool2d_of_channels_last_inputs(T, nn, kernel, stride, padding, divisor, include):
    rng = np.random.default_rng(13)
    x = tensor(T, rng.standard_normal((2, 4, 8, 8))).contiguous(memory_format=T.channels_last).requires_grad_()
    pool = nn.AvgPool2d(kernel, stride=stride, padding=padding, count_include_pad=include, divisor_override=divisor)
    out = pool(x)
    assert out.is_contiguous(memory_format=T.channels_last)
    grad = tensor(T, rng.standard_normal(tuple(out.shape)))
    out.backward(grad)
    reference = x.detach().contiguous().requires_grad_()
    ref_out = pool(reference)
    ref_out.backward(grad)
    close(out, values(ref_out), rtol=1e-12, atol=1e-12)
    close(x.grad, values(reference.grad), rtol=1e-12, atol=1e-12)
    if padding == 0 and divisor is None and stride == kernel:
        close(out, block_sums(values(x), (1, 1, kernel, kernel)) / kernel**2, rtol=1e-12)


def test_max_pool_indices_and_unpooling_keep_channels_last(T, nn):
    x = T.randn(2, 3, 9, 9).contiguous(memory_format=T.channels_last)
    out, indices = nn.MaxPool2d(3, stride=2, return_indices=True)(x)
    assert out.is_contiguous(memory_format=T.channels_last)
    assert indices.is_contiguous(memory_format=T.channels_last)
    assert nn.MaxUnpool2d(3, stride=2)(out, indices).is_contiguous(memory_format=T.channels_last)


def test_max_unpool2d_of_channels_last_inputs(T, nn):
    x = tensor(T, np.random.default_rng(14).standard_normal((2, 3, 9, 9))).contiguous(memory_format=T.channels_last)
    results = []
    for inputs in (x, x.contiguous()):
        out, indices = nn.MaxPool2d(3, stride=2, return_indices=True)(inputs)
        out.requires_grad_()
        unpooled = nn.MaxUnpool2d(3, stride=2)(out, indices)
        unpooled.backward(T.ones_like(unpooled) * 2)
        results.append((values(unpooled), values(out.grad)))
        # each maximum back at its place (windows overlap: one maximum may win two windows), zeros elsewhere
        flat = values(unpooled).reshape(2, 3, -1)
        same(np.take_along_axis(flat, values(indices).reshape(2, 3, -1), 2), values(out).reshape(2, 3, -1))
        same(out.grad, np.full((2, 3, 4, 4), 2.0))
    same(results[0][0], results[1][0])


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_max_pool_indices(T, nn, spatial, adaptive):
    module = getattr(nn, f"{'Adaptive' if adaptive else ''}MaxPool{spatial}d")(2, return_indices=True)
    x = T.arange(1.0, 4 ** (spatial + 1) + 1).view(2, 2, *[4] * spatial).requires_grad_()
    out, indices = module(x)
    if spatial == 1:
        same(indices, np.tile([1, 3], (2, 2, 1)))
        same(out, np.arange(2.0, 17.0, 2).reshape(2, 2, 2))
    elif spatial == 2:
        same(indices, np.tile([[5, 7], [13, 15]], (2, 2, 1, 1)))
        column = np.arange(6.0, 63.0, 8)
        same(out, np.stack([column, column + 2], 1).reshape(2, 2, 2, 2))
    else:  # each 2x2x2 block's last corner
        same(indices, np.array([21, 23, 29, 31, 53, 55, 61, 63]).reshape(1, 1, 2, 2, 2).repeat(2, 0).repeat(2, 1))
    assert indices.ndim == x.ndim and out.requires_grad and not indices.requires_grad
    out.backward(T.ones_like(out), retain_graph=True)
    expected = np.array([0.0, 1.0, 0.0, 1.0])  # the gradient goes to each block's last corner
    for _ in range(spatial - 1):
        expected = np.stack([np.zeros_like(expected), expected] * 2)
    same(x.grad, np.broadcast_to(expected, x.shape))
    # PyTorch's node saves the indices: backward after changing them is refused
    indices.add_(1)
    raises(RuntimeError, "", out.backward, T.ones_like(out))


def test_max_pool_of_a_single_minus_infinity(T, nn):
    for spatial, x in ((1, [[[-math.inf]]]), (2, [[[-math.inf]]]), (3, [[[[-math.inf]]]])):
        out, indices = getattr(nn, f"MaxPool{spatial}d")(kernel_size=1, return_indices=True)(T.tensor(x))
        same(out, x)
        same(indices, np.zeros(np.shape(x), dtype=np.int64))


def test_max_pool_indices_without_a_batch_dim_are_those_of_a_batch_of_one(T, nn):
    rng = np.random.default_rng(15)
    for module, shape in [(nn.MaxPool1d(3, return_indices=True), (3, 5)),
                          (nn.MaxPool2d(3, return_indices=True), (3, 5, 6)),
                          (nn.MaxPool3d(3, return_indices=True), (3, 5, 6, 7)),
                          (nn.AdaptiveMaxPool1d(3, return_indices=True), (3, 5)),
                          (nn.AdaptiveMaxPool2d(3, return_indices=True), (3, 5, 6)),
                          (nn.AdaptiveMaxPool3d(3, return_indices=True), (3, 5, 6, 7))]:
        x = tensor(T, rng.standard_normal(shape))
        _, unbatched = module(x)
        _, batched = module(x.unsqueeze(0))
        same(unbatched, values(batched)[0])


@pytest.mark.parametrize("adaptive", ["", "adaptive_"])
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_max_pool_of_all_nan_and_all_minus_infinity(T, F, adaptive, spatial):
    fn = getattr(F, f"{adaptive}max_pool{spatial}d")
    size = 1 if adaptive else 3
    for fill, winner in ((math.nan, -1), (-math.inf, 0)):  # NaN: the last NaN wins; -inf: the first position
        x = T.full([1, 1] + spatial * [3], fill, requires_grad=True)
        out = fn(x, size)
        out.backward(T.full(tuple(out.shape), 0.5))
        same(out, np.full([1, 1] + spatial * [1], fill))
        expected = np.zeros(3 ** spatial, dtype=np.float32)
        expected[winner] = 0.5
        same(x.grad, expected.reshape(x.shape))
        x.requires_grad_(False)
        same(fn(x, size), np.full([1, 1] + spatial * [1], fill))


def test_max_pool3d_gradient_reaches_every_position_of_a_long_axis(T, F):
    for dim in (2, 3, 4):
        shape = tuple(4 if i != dim else 40 for i in range(5))
        x = T.randn(shape, requires_grad=True)
        F.max_pool3d(x, kernel_size=(1, 1, 1)).sum().backward()
        same(x.grad, np.ones(shape, dtype=np.float32))


# -- max unpooling ----------------------------------------------------------------------------------------------


def test_max_unpool_stride_defaults_to_the_kernel(T, F):
    rng = np.random.default_rng(16)
    out, indices = F.max_pool1d(tensor(T, rng.standard_normal((1, 1, 4))), 2, stride=2, return_indices=True)
    same(F.max_unpool1d(out, indices, 2), values(F.max_unpool1d(out, indices, 2, stride=2)))
    x = tensor(T, [[[1.0, 5.0, 2.0, 8.0, 3.0]]], requires_grad=True)
    out, indices = F.max_pool1d(x, 2, stride=2, return_indices=True)
    by_shape = F.max_unpool1d(out, indices, 2, stride=2, output_size=x.shape)
    same(by_shape, [[[0.0, 5.0, 0.0, 8.0, 0.0]]])
    same(F.max_unpool1d(out, indices, 2, stride=2, output_size=x.size()), values(by_shape))
    same(F.max_unpool1d(out, indices, 2, stride=2, output_size=tuple(x.shape)), values(by_shape))
    for spatial, shape in ((2, (1, 1, 4, 4)), (3, (2, 2, 4, 4, 4))):
        x = tensor(T, rng.standard_normal(shape))
        out, indices = getattr(F, f"max_pool{spatial}d")(x, 2, stride=2, return_indices=True)
        unpool = getattr(F, f"max_unpool{spatial}d")
        unpooled = unpool(out, indices, 2)
        same(unpooled, values(unpool(out, indices, 2, stride=2)))
        same(values(unpooled).reshape(shape[:2] + (-1,)).max(-1), values(out).reshape(shape[:2] + (-1,)).max(-1))


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_max_unpool_gradients(T, F, spatial):
    rng = np.random.default_rng(17)
    x = tensor(T, rng.permutation(4 ** spatial).reshape((1, 1) + (4,) * spatial) * 0.5)
    out, indices = getattr(F, f"max_pool{spatial}d")(x, 2, stride=2, return_indices=True)
    out = out.detach().requires_grad_()

    def unpool(out):
        return getattr(F, f"max_unpool{spatial}d")(out, indices, 2)

    assert T.autograd.gradcheck(unpool, (out,))
    assert T.autograd.gradgradcheck(unpool, (out,))


def test_max_unpool3d_refuses_a_kernel_of_two_sizes(T, F):
    x = T.ones(1, 3, 1, 1, 1)
    raises(RuntimeError, "", F.max_unpool3d, x, T.zeros(x.shape, dtype=T.int64), [1, 1])


def test_max_unpooling_of_an_empty_batch(T, nn):
    for spatial in (1, 2, 3):
        pool = getattr(nn, f"MaxPool{spatial}d")(2, stride=2, return_indices=True)
        unpool = getattr(nn, f"MaxUnpool{spatial}d")(2, stride=2)
        x = T.randn(0, 10, *[10] * spatial, requires_grad=True)
        out, indices = pool(x)
        unpooled = unpool(out, indices)
        unpooled.sum().backward()
        same(x.grad, np.zeros(x.shape, dtype=np.float32))
        assert tuple(unpooled.shape) == tuple(x.shape)


@pytest.mark.parametrize("name, kernel, shape, index, fails", [
    ("MaxUnpool2d", (2, 2), (1, 3, 4, 5), -1, True),
    ("MaxUnpool2d", (2, 2), (1, 3, 4, 5), 2 * 2 * 4 * 5, True),
    ("MaxUnpool2d", (2, 2), (1, 3, 4, 5), 2 * 2 * 4 * 5 - 1, False),
    ("MaxUnpool2d", (2, 3), (2, 1, 4, 2), 2 * 3 * 4 * 2, True),
    ("MaxUnpool2d", (2, 3), (2, 1, 4, 2), 2 * 3 * 4 * 2 - 1, False),
    ("MaxUnpool3d", (2, 2, 2), (1, 3, 4, 5), -1, True),
    ("MaxUnpool3d", (2, 2, 2), (1, 3, 4, 5), 2 * 2 * 2 * 3 * 4 * 5, True),
    ("MaxUnpool3d", (2, 2, 2), (1, 3, 4, 5), 2 * 2 * 2 * 3 * 4 * 5 - 1, False),
    ("MaxUnpool3d", (2, 2, 2), (2, 3, 4, 1), 2 * 2 * 2 * 3 * 4 * 1, True),
    ("MaxUnpool3d", (2, 2, 2), (2, 3, 4, 1), 2 * 2 * 2 * 3 * 4 * 1 - 1, False)])
def test_max_unpool_index_errors(T, nn, name, kernel, shape, index, fails):
    unpool = getattr(nn, name)(kernel)
    x = T.rand(shape)
    indices = T.zeros(shape, dtype=T.int64)
    indices.flatten()[0] = index
    if fails:
        raises(RuntimeError, r"Found an invalid max index:", unpool, x, indices)
    else:
        out = unpool(x, indices)
        assert values(out).reshape(-1)[index] == values(x).reshape(-1)[0]


# -- fractional max pooling --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [2, 3])
def test_fractional_max_pool_gradients_and_size_errors(T, F, spatial):
    rng = np.random.default_rng(18)
    size, channels = (7, 2) if spatial == 2 else (5, 1)  # (a smaller volume: finite differences are slow)
    x = tensor(T, rng.standard_normal((1, channels) + (size,) * spatial), requires_grad=True)
    samples = tensor(T, rng.random((1, channels, spatial)))
    fn = getattr(F, f"fractional_max_pool{spatial}d")

    def pool(x):
        return fn(x, (2,) * spatial, output_size=(3,) * spatial, _random_samples=samples)

    out = pool(x)
    assert tuple(out.shape) == (1, channels) + (3,) * spatial
    # each output is the maximum of a 2-wide window of each axis, and the windows of an axis cover it
    assert values(out).max() == values(x).max()
    assert T.autograd.gradcheck(pool, (x,)) and T.autograd.gradgradcheck(pool, (x,))
    unbatched = x.detach()[0].requires_grad_()
    same(pool(unbatched), values(out)[0])
    assert T.autograd.gradcheck(pool, (unbatched,))
    big = tensor(T, rng.standard_normal((2,) + (7,) * spatial))
    kernel_words = "kernel_size must either"
    for kernel in [(), (1,)] + ([(1, 1)] if spatial == 3 else []):
        raises(RuntimeError, kernel_words, fn, big, kernel_size=kernel, output_size=(3,) * spatial,
               _random_samples=samples)
    axes = ("height", "width") if spatial == 2 else ("time", "height", "width")
    for a, axis in enumerate(axes):
        too_large = tuple(9 if i == a else 3 for i in range(spatial))
        raises(RuntimeError, f"too large relative to input {axis}", fn, big, (2,) * spatial, output_size=too_large,
               _random_samples=samples)
    for short in [(3,) * k for k in range(spatial)]:
        raises(RuntimeError, "output_size must either", fn, big, (2,) * spatial, output_size=short,
               _random_samples=samples)


@pytest.mark.parametrize("spatial", [2, 3])
def test_fractional_max_pool_of_empty_inputs_and_samples(T, nn, spatial):
    module = getattr(nn, f"FractionalMaxPool{spatial}d")
    mod = module(3, output_ratio=(0.5,) * spatial)
    out = empty_batch_round_trip(T, mod, (0, 4, 10, 8, 8)[:spatial + 2])
    assert tuple(out.shape) == (0, 4, 5, 4, 4)[:spatial + 2]
    raises(RuntimeError, "Expected input", mod, T.randn(1, 0, *(10, 8, 8)[:spatial]))
    kernel = [2, 2] if spatial == 2 else [3, 2, 2]
    zero_out = module(kernel, output_size=[0] + [1] * (spatial - 1))(T.rand(4, 5, 8, 8))
    assert tuple(zero_out.shape) == ((4, 5, 0, 1) if spatial == 2 else (4, 0, 1, 1))
    with_samples = module(kernel, output_size=[1] * spatial, _random_samples=T.rand(0, 4, spatial))
    assert tuple(with_samples(T.randn(0, 4, *[8] * spatial)).shape) == (0, 4) + (1,) * spatial
    raises(RuntimeError, "Expect _random_samples", with_samples, T.randn(1, 4, *[8] * spatial))


@pytest.mark.parametrize("spatial", [2, 3])
def test_fractional_max_pool_of_all_nan_and_all_minus_infinity(T, nn, spatial):
    pool = getattr(nn, f"FractionalMaxPool{spatial}d")(kernel_size=2, output_size=1)
    for fill in (math.nan, -math.inf):
        x = T.full([1, 1] + spatial * [3], fill, requires_grad=True)
        out = pool(x)
        out.backward(T.ones_like(out))
        same(out, np.full([1, 1] + spatial * [1], fill))
        assert values(x.grad).sum() == 1.0


# -- power-average pooling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_lp_pool_of_infinite_power_is_max_pooling_of_the_magnitudes(T, F, spatial):
    rng = np.random.default_rng(19)
    shape = (1, 2) + (4, 6, 5)[:spatial]
    x = tensor(T, rng.standard_normal(shape), requires_grad=True)
    lp = getattr(F, f"lp_pool{spatial}d")
    max_pool = getattr(F, f"max_pool{spatial}d")
    top = lp(x, math.inf, 2)
    same(top, values(max_pool(x.abs(), 2)))
    bottom = lp(x, -math.inf, 2, ceil_mode=True)
    same(bottom, -values(max_pool(-x.abs(), 2, ceil_mode=True)))
    (top.sum() + bottom.sum()).backward()
    a = values(x)
    assert np.count_nonzero(values(x.grad)) > 0
    # d|x|/dx = sign(x) at the winners: every gradient entry is a sum of ±1s
    same(np.abs(values(x.grad)) % 1, np.zeros(a.shape))


# -- float16 ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, shape, layout", [
    (lambda nn: nn.AdaptiveAvgPool2d((7, 7)), (3, 19, 8, 8), "channels_last"),
    (lambda nn: nn.AdaptiveMaxPool2d((7, 7), return_indices=True), (3, 19, 8, 8), "channels_last"),
    (lambda nn: nn.MaxPool2d(7, 1, return_indices=True), (4, 30, 8, 8), "contiguous_format"),
    (lambda nn: nn.MaxPool2d(8, 2, return_indices=True), (1, 19, 20, 10), "channels_last"),
    (lambda nn: nn.AvgPool2d(7, 1), (4, 30, 8, 8), "channels_last"),
    (lambda nn: nn.AvgPool2d(8, 2), (1, 19, 20, 10), "contiguous_format"),
    (lambda nn: nn.MaxPool3d(8, 2, return_indices=True), (1, 19, 10, 9, 14), "channels_last_3d"),
    (lambda nn: nn.MaxPool3d(3, 1, return_indices=True), (4, 10, 3, 8, 8), "contiguous_format")])
def test_float16_pooling_is_float32_pooling_rounded(T, nn, make, shape, layout):
    rng = np.random.default_rng(20)
    module = make(nn)
    memory_format = getattr(T, layout)
    # in each plane distinct integers, exact in float16 (< 2048): the same winners in both dtypes
    plane = int(np.prod(shape[2:]))
    x = T.tensor(rng.permuted(np.tile(np.arange(plane, dtype=np.float32), shape[:2] + (1,)), axis=-1).reshape(shape))
    x = x.to(memory_format=memory_format).requires_grad_()
    x16 = x.detach().to(T.float16).requires_grad_()
    assert x16.is_contiguous(memory_format=memory_format)
    results = []
    for inputs in (x, x16):
        out = module(inputs)
        out, indices = out if isinstance(out, tuple) else (out, None)
        out.sum().backward()
        results.append((out, indices))
    (out, indices), (out16, indices16) = results
    assert out16.dtype == x16.grad.dtype == T.float16
    assert out16.is_contiguous(memory_format=memory_format)
    if indices is None:  # means: rounded once, from float32 sums
        close(out16.float(), values(out), rtol=1e-3, atol=0)
        close(x16.grad.float(), values(x.grad), rtol=1e-3, atol=0)
    else:  # maxima: the same winners, the values rounded
        same(indices16, values(indices))
        same(out16, values(out).astype(np.float16))
        same(x16.grad, values(x.grad).astype(np.float16))


def test_clone_keeps_channels_last(T):
    x = T.arange(96.0).view(2, 3, 4, 4).contiguous(memory_format=T.channels_last)
    copy = x.clone()
    assert copy.is_contiguous(memory_format=T.channels_last) and tuple(copy.stride()) == (48, 1, 12, 3)
