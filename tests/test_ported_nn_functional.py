"""Padding, pixel shuffle, fold/unfold, interpolation, convolution and pooling, ported from PyTorch's
test/test_nn.py, test/nn/test_convolution.py and test/nn/test_pooling.py (CPU, no cudnn): values
against NumPy, gradients, and the shape errors with their messages. Each test runs on chainrule's `nn`
and, where it is installed, on PyTorch's."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F
on_chainrule = ported_nn.on_chainrule


# -- F.pad ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, np_mode", [("constant", "constant"), ("reflect", "reflect"),
                                           ("replicate", "edge"), ("circular", "wrap")])
def test_pad_modes_match_numpy(T, F, mode, np_mode):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    pad = (2, 1, 1, 3)                      # last dim (left, right), then the one before (top, bottom)
    out = F.pad(T.tensor(x), pad, mode=mode)
    close(out, np.pad(x, ((0, 0), (0, 0), (1, 3), (2, 1)), mode=np_mode), rtol=0, atol=0)
    close(F.pad(T.tensor(x[:, :, 0]), (2, 1), mode=mode), np.pad(x[:, :, 0], ((0, 0), (0, 0), (2, 1)),
                                                                  mode=np_mode), rtol=0, atol=0)
    # unbatched (C, H, W) for the 2-D modes
    close(F.pad(T.tensor(x[0]), pad, mode=mode), np.pad(x[0], ((0, 0), (1, 3), (2, 1)), mode=np_mode), rtol=0,
          atol=0)


def test_pad_constant_value_and_negative_padding(T, F):
    x = T.arange(1.0, 7.0).reshape(2, 3)
    same(F.pad(x, (1, 0), value=-1.0), [[-1.0, 1, 2, 3], [-1.0, 4, 5, 6]])
    same(F.pad(x, (0, 0, 1, 1)), [[0.0, 0, 0], [1, 2, 3], [4, 5, 6], [0, 0, 0]])
    same(F.pad(x, (-1, -1)), [[2.0], [5.0]])                 # negative padding crops
    same(F.pad(x, (-1, 2), value=9.0), [[2.0, 3, 9, 9], [5.0, 6, 9, 9]])
    same(F.pad(T.tensor([1, 2]), (1, 1), value=7), [7, 1, 2, 7], dtype="int64")


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_gradient(T, F, mode):
    x = T.arange(8.0, dtype=T.float64).reshape(1, 2, 4).requires_grad_()
    out = F.pad(x, (2, 1), mode=mode)
    w = np.arange(1.0, 15.0).reshape(1, 2, 7)
    (out * T.tensor(w)).sum().backward()
    # the gradient of each input element: the weights of every output position that copies it
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    idx = np.pad(np.arange(4), (2, 1), mode=np_mode)
    expected = np.zeros((1, 2, 4))
    for j, i in enumerate(idx):
        if mode == "constant" and (j < 2 or j >= 6):
            continue
        expected[..., i] += w[..., j]
    close(x.grad, expected, rtol=0, atol=0)


def test_pad_errors(T, F):
    raises(RuntimeError, r"Argument #4: Padding size should be less than the corresponding input dimension, but "
           r"got: padding \(2, 1\) at dimension 2 of input \[1, 1, 2\]", F.pad, T.randn(1, 1, 2), (2, 1),
           mode="reflect")
    raises(RuntimeError, "Padding value causes wrapping around more than once.", F.pad, T.randn(1, 1, 2), (3, 1),
           mode="circular")
    raises(RuntimeError, "Padding length must be divisible by 2", F.pad, T.randn(1, 1, 2), (1,))
    raises(RuntimeError, "Padding length should be less than or equal to two times the input dimension but got "
           "padding length 4 and input of dimension 1", F.pad, T.randn(2), (1, 1, 1, 1))
    raises(RuntimeError, "Padding length should be less than or equal to two times the input dimension but got "
           "padding length 2 and input of dimension 0", F.pad, T.tensor(0.0, requires_grad=True), (1, 1))
    raises(NotImplementedError, "Unrecognised padding mode garbage", F.pad, T.randn(1, 1, 2), (1, 1),
           mode="garbage")
    raises(RuntimeError, "Padding mode \"reflect\" doesn't take in value argument", F.pad, T.randn(1, 2), (1, 1),
           mode="reflect", value=1.0)
    raises(NotImplementedError, "Padding size 2 is not supported for 1D input tensor", F.pad, T.randn(3), (1, 1),
           mode="replicate")


def test_padding_modules(T, nn):
    x = T.arange(4.0).reshape(1, 1, 4)
    same(nn.ConstantPad1d((1, 2), 3.5)(x), [[[3.5, 0, 1, 2, 3, 3.5, 3.5]]])
    same(nn.ZeroPad1d(1)(x), [[[0.0, 0, 1, 2, 3, 0]]])
    same(nn.ReflectionPad1d(2)(x), [[[2.0, 1, 0, 1, 2, 3, 2, 1]]])
    same(nn.ReplicationPad1d((0, 2))(x), [[[0.0, 1, 2, 3, 3, 3]]])
    same(nn.CircularPad1d(1)(x), [[[3.0, 0, 1, 2, 3, 0]]])
    assert tuple(nn.ZeroPad2d((1, 1, 2, 0))(T.ones(1, 1, 2, 2)).shape) == (1, 1, 4, 4)
    assert repr(nn.ZeroPad2d(1)) == "ZeroPad2d((1, 1, 1, 1))"
    assert repr(nn.ConstantPad1d(2, 1.0)) == "ConstantPad1d(padding=(2, 2), value=1.0)"


# -- pixel_shuffle / unshuffle --------------------------------------------------------------------

def test_pixel_shuffle_unshuffle(T, F, nn):
    r = 2
    x = np.arange(2 * 8 * 3 * 2, dtype=np.float32).reshape(2, 8, 3, 2)
    expected = x.reshape(2, 2, r, r, 3, 2).transpose(0, 1, 4, 2, 5, 3).reshape(2, 2, 6, 4)
    out = F.pixel_shuffle(T.tensor(x), r)
    same(out, expected)
    same(nn.PixelShuffle(r)(T.tensor(x)), expected)
    same(F.pixel_unshuffle(out, r), x)
    same(nn.PixelUnshuffle(r)(out), x)
    same(F.pixel_shuffle(T.tensor(x[0]), r), expected[0])        # (C, H, W) works too
    y = T.tensor(x).requires_grad_()
    (F.pixel_shuffle(y, r) * T.tensor(expected)).sum().backward()
    same(y.grad, x)
    assert repr(nn.PixelShuffle(3)) == "PixelShuffle(upscale_factor=3)"


def test_pixel_shuffle_errors(T, F):
    raises(RuntimeError, r"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of "
           r"upscale_factor, but input.size\(-3\)=3 is not divisible by 4", F.pixel_shuffle, T.randn(1, 3, 2, 2), 2)
    raises(RuntimeError, r"pixel_shuffle expects input to have at least 3 dimensions, but got input with 2 "
           r"dimension\(s\)", F.pixel_shuffle, T.randn(4, 2), 2)
    raises(RuntimeError, r"pixel_unshuffle expects height to be divisible by downscale_factor, but "
           r"input.size\(-2\)=3 is not divisible by 2", F.pixel_unshuffle, T.randn(1, 1, 3, 4), 2)


# -- fold / unfold --------------------------------------------------------------------------------

def test_unfold_matches_numpy_and_fold_inverts_with_counts(T, F, nn):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    k, p, s, d = (2, 3), (1, 0), (2, 1), (1, 2)
    cols = F.unfold(T.tensor(x), k, dilation=d, padding=p, stride=s)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    oh = (4 + 2 - 1 * (2 - 1) - 1) // 2 + 1
    ow = (5 - 2 * (3 - 1) - 1) // 1 + 1
    expected = np.zeros((2, 3 * 6, oh * ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * 2:i * 2 + 2, j:j + 5:2]
            expected[:, :, i * ow + j] = patch.reshape(2, -1)
    close(cols, expected, rtol=0, atol=0)
    same(nn.Unfold(k, dilation=d, padding=p, stride=s)(T.tensor(x)), expected)
    # fold sums the blocks back: fold(unfold(x)) = x · (number of blocks covering each position)
    back = F.fold(cols, (4, 5), k, dilation=d, padding=p, stride=s)
    counts = F.fold(F.unfold(T.ones(1, 1, 4, 5, dtype=T.float64), k, dilation=d, padding=p, stride=s), (4, 5), k,
                    dilation=d, padding=p, stride=s)
    close(back, x * values(counts), rtol=1e-12)
    assert tuple(F.unfold(T.tensor(x[0]), k).shape) == (18, 9)       # unbatched
    assert tuple(nn.Fold((4, 5), k)(T.randn(18, 9)).shape) == (3, 4, 5)


def test_fold_invalid_arg(T, nn):
    fold = nn.Fold(output_size=(4, 5), kernel_size=(2, 3))
    raises(RuntimeError, r"be divisible by the product of kernel_size", fold, T.randn(1, 5, 9))
    raises(RuntimeError, r"match the calculated number of sliding blocks", fold, T.randn(1, 6, 10))
    raises(RuntimeError, r"match the calculated number of sliding blocks", fold, T.randn(1, 6, 5))
    raises(RuntimeError, r"Expected 2D or 3D \(batch", fold, T.randn(1, 6, 10, 2))


def test_unfold_invalid_arg(T, nn):
    unfold = nn.Unfold(kernel_size=(2, 3))
    raises(RuntimeError, r"Expected 3D or 4D \(batch mode\) tensor with possibly 0 batch size and other non-zero "
           r"dimensions for input, but got: \[1, 2, 2, 2, 2\]", unfold, T.randn(1, 2, 2, 2, 2))
    # chainrule: "unfold: the kernel (2, 3) (dilation (1, 1)) does not fit the padded input of size [1, 2, 2, 2]"
    raises(RuntimeError, r"its components must be at least one|does not fit the padded input", unfold,
           T.randn(1, 2, 2, 2))


def test_fold_unfold_window_argument_errors(T, F, request):
    raises(RuntimeError, "stride should be greater than zero, but got stride_height: 0 stride_width: 0", F.fold,
           T.randn(1, 12, 12), (4, 5), (2, 2), stride=0)
    raises(RuntimeError, "padding should be non-negative, but got pad_height: -1 pad_width: -1", F.unfold,
           T.randn(1, 2, 4, 4), (2, 3), padding=-1)
    raises(RuntimeError, "dilation should be greater than zero, but got dilation_height: 0 dilation_width: 0",
           F.unfold, T.randn(1, 2, 4, 4), (2, 3), dilation=0)
    raises(RuntimeError, "kernel size should be greater than zero, but got kernel_height: 0 kernel_width: 3",
           F.unfold, T.randn(1, 2, 4, 4), (0, 3))


# -- interpolate ----------------------------------------------------------------------------------

def test_upsampling_nearest(T, nn, F):
    m = nn.Upsample(size=4, mode="nearest")
    same(m(T.ones(1, 1, 2)), np.ones((1, 1, 4), np.float32))
    x = T.arange(1.0, 5.0).view(1, 1, 2, 2)
    same(F.interpolate(x, scale_factor=2, mode="nearest"), np.kron([[1.0, 2], [3, 4]], np.ones((2, 2)))[None, None])
    same(F.interpolate(T.arange(3.0).view(1, 1, 3), size=5, mode="nearest"), [[[0.0, 0, 1, 1, 2]]])
    same(F.interpolate(T.arange(3.0).view(1, 1, 3), size=5, mode="nearest-exact"), [[[0.0, 0, 1, 2, 2]]])
    same(F.interpolate(T.arange(4.0).view(1, 1, 4), size=3, mode="nearest"), [[[0.0, 1, 2]]])
    assert repr(nn.Upsample(scale_factor=2.0, mode="nearest")) == "Upsample(scale_factor=2.0, mode='nearest')"


def test_upsampling_linear_align_corners(T, F):
    x = T.tensor([[[0.0, 1.0, 4.0]]], dtype=T.float64)
    close(F.interpolate(x, size=5, mode="linear", align_corners=True), [[[0.0, 0.5, 1.0, 2.5, 4.0]]], rtol=1e-12)
    # align_corners=False: source = (dst + 0.5) / scale - 0.5, clamped at 0
    src = np.clip((np.arange(6) + 0.5) / 2 - 0.5, 0, None)
    expected = np.interp(src, [0, 1, 2], [0.0, 1.0, 4.0])
    close(F.interpolate(x, scale_factor=2, mode="linear", align_corners=False), [[expected]], rtol=1e-12)
    close(F.interpolate(x, scale_factor=2, mode="linear"), [[expected]], rtol=1e-12)


def test_upsampling_bilinear_matches_separable_linear(T, F):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 3, 4))
    for align in (False, True):
        out = F.interpolate(T.tensor(x), size=(5, 7), mode="bilinear", align_corners=align)
        rows = F.interpolate(T.tensor(x).permute(0, 1, 3, 2).reshape(1, 8, 3), size=5, mode="linear",
                             align_corners=align).reshape(1, 2, 4, 5).permute(0, 1, 3, 2)
        cols = F.interpolate(rows.reshape(1, 10, 4), size=7, mode="linear", align_corners=align).reshape(1, 2, 5, 7)
        close(out, values(cols), rtol=1e-10, atol=1e-12)
    close(F.interpolate(T.tensor(x), size=(3, 4), mode="bilinear", align_corners=False), x, rtol=1e-12)


def test_interpolate_area_is_adaptive_average_pooling(T, F):
    x = T.randn(2, 3, 6, 9, dtype=T.float64)
    close(F.interpolate(x, size=(4, 5), mode="area"), values(F.adaptive_avg_pool2d(x, (4, 5))), rtol=1e-12)


def test_interpolate_scale_factor_and_recompute(T, F):
    x = T.randn(1, 1, 5, dtype=T.float64)
    assert tuple(F.interpolate(x, scale_factor=1.5).shape) == (1, 1, 7)
    assert tuple(F.interpolate(x, scale_factor=0.5).shape) == (1, 1, 2)
    a = F.interpolate(x, scale_factor=1.5, mode="linear", recompute_scale_factor=True)
    b = F.interpolate(x, size=7, mode="linear")
    close(a, values(b), rtol=1e-12)


def test_interpolate_gradient(T, F):
    x = T.tensor([[[1.0, 2.0]]], dtype=T.float64, requires_grad=True)
    F.interpolate(x, size=4, mode="nearest").sum().backward()
    same(x.grad, [[[2.0, 2.0]]])
    x.grad = None
    F.interpolate(x, size=3, mode="linear", align_corners=True).sum().backward()
    close(x.grad, [[[1.5, 1.5]]], rtol=1e-12)


def test_interpolate_errors(T, F):
    raises(ValueError, "align_corners option can only be set with the interpolating modes: linear | bilinear | "
           "bicubic | trilinear", F.interpolate, T.randn(1, 1, 4), size=8, mode="nearest", align_corners=True)
    raises(ValueError, "only one of size or scale_factor should be defined", F.interpolate, T.randn(1, 1, 4),
           size=8, scale_factor=2.0)
    raises(ValueError, "either size or scale_factor should be defined", F.interpolate, T.randn(1, 1, 4))
    raises(NotImplementedError, r"Input Error: Only 3D, 4D and 5D input Tensors supported \(got 2D\)",
           F.interpolate, T.randn(1, 4), size=8)
    raises(NotImplementedError, "Got 3D input, but bilinear mode needs 4D input", F.interpolate, T.randn(1, 1, 4),
           size=8, mode="bilinear")
    raises(NotImplementedError, r"\(got garbage\)", F.interpolate, T.randn(1, 1, 4), size=8, mode="garbage")
    raises(ValueError, r"Input and output must have the same number of spatial dimensions, but got input with "
           r"spatial dimensions of \[4, 4\] and output size of \(8,\)", F.interpolate, T.randn(1, 1, 4, 4), size=(8,))
    raises(ValueError, "Input and scale_factor must have the same number of spatial dimensions",
           F.interpolate, T.randn(1, 1, 4, 4), scale_factor=(2.0, 2.0, 2.0))


# -- convolution ----------------------------------------------------------------------------------

def _conv_np(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """Direct 2-D cross-correlation, (N, C, H, W) with (O, C/groups, kh, kw)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                           j * stride:j * stride + dilation * (kw - 1) + 1:dilation]
                out[:, oc, i, j] = (patch * w[oc]).sum((1, 2, 3))
    return out + (0 if b is None else b[None, :, None, None])


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1),
                                                               (2, 1, 1, 2)])
def test_conv2d_matches_numpy(T, F, stride, padding, dilation, groups):
    rng = np.random.default_rng(stride + 3 * padding + 7 * dilation + groups)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 4 // groups, 3, 2))
    b = rng.standard_normal(6)
    out = F.conv2d(T.tensor(x), T.tensor(w), T.tensor(b), stride=stride, padding=padding, dilation=dilation,
                   groups=groups)
    close(out, _conv_np(x, w, b, stride, padding, dilation, groups), rtol=1e-10, atol=1e-12)


def test_conv1d_and_padding_same_valid(T, F, nn):
    x = np.arange(10.0).reshape(1, 1, 10)
    w = np.array([[[1.0, 0.0, -1.0, 2.0]]])
    full = np.array([x[0, 0, i:i + 4] @ w[0, 0] for i in range(7)])
    close(F.conv1d(T.tensor(x), T.tensor(w)), full[None, None], rtol=1e-12)
    same_out = F.conv1d(T.tensor(x), T.tensor(w), padding="same")
    xp = np.pad(x[0, 0], (1, 2))                 # an even kernel: the extra zero on the right
    close(same_out, [[[xp[i:i + 4] @ w[0, 0] for i in range(10)]]], rtol=1e-12)
    close(F.conv1d(T.tensor(x), T.tensor(w), padding="valid"), full[None, None], rtol=1e-12)
    conv = nn.Conv1d(1, 1, 4, padding="same", bias=False)
    assert conv.padding == "same"
    assert tuple(conv(T.ones(1, 1, 10)).shape) == (1, 1, 10)


@pytest.mark.parametrize("padding_mode, np_mode", [("reflect", "reflect"), ("replicate", "edge"),
                                                   ("circular", "wrap")])
def test_conv_padding_modes(T, nn, padding_mode, np_mode):
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode=padding_mode, dtype=T.float64)
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 5))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=np_mode)
    close(conv(T.tensor(x)), _conv_np(xp, values(conv.weight), values(conv.bias)), rtol=1e-10, atol=1e-12)
    assert "padding_mode=" + padding_mode in repr(conv)


def test_conv_transpose_matches_gradient_of_conv(T, F):
    rng = np.random.default_rng(2)
    w = T.tensor(rng.standard_normal((3, 2, 3, 3)))
    y = T.tensor(rng.standard_normal((1, 3, 4, 4)))
    x = T.zeros(1, 2, 8, 8, dtype=T.float64, requires_grad=True)
    F.conv2d(x, w, stride=2, padding=1).backward(y)
    # conv_transpose2d is the adjoint of conv2d: the gradient with respect to conv2d's input
    assert tuple(F.conv_transpose2d(y, w, stride=2, padding=1).shape) == (1, 2, 7, 7)
    out = F.conv_transpose2d(y, w, stride=2, padding=1, output_padding=1)
    assert tuple(out.shape) == (1, 2, 8, 8)
    close(out, values(x.grad), rtol=1e-10, atol=1e-12)


def test_conv_transpose_output_size(T, nn):
    m = nn.ConvTranspose1d(1, 1, 3, stride=2)
    assert tuple(m(T.randn(1, 1, 4)).shape) == (1, 1, 9)
    assert tuple(m(T.randn(1, 1, 4), output_size=[10]).shape) == (1, 1, 10)
    raises(ValueError, r"requested an output size of \[12\], but valid sizes range from", m, T.randn(1, 1, 4),
           output_size=[12])


def test_conv_modules_raise_error_on_incorrect_input_size(T, nn):
    for m, bad in ((nn.Conv1d(1, 1, 3), (1, 1, 3, 3)), (nn.Conv2d(1, 1, 3), (1, 1, 3, 3, 3)),
                   (nn.Conv2d(1, 1, 3), (3, 3)), (nn.Conv3d(1, 1, 3), (1, 1, 3)),
                   (nn.ConvTranspose1d(1, 1, 3), (1, 1, 3, 3)), (nn.ConvTranspose2d(1, 1, 3), (3, 3))):
        raises(RuntimeError, r"Expected \dD \(unbatched\) or \dD \(batched\) input to conv", m, T.randn(*bad))


def test_conv_shape_and_argument_errors(T, F, nn):
    raises(RuntimeError, r"Calculated padded input size per channel: \(4\). Kernel size: \(10\). Kernel size can't "
           r"be greater than actual input size", F.conv1d, T.randn(1, 1, 4), T.randn(1, 1, 10))
    raises(RuntimeError, "non-positive stride is not supported", F.conv1d, T.randn(1, 1, 4), T.randn(1, 1, 2),
           stride=0)
    raises(RuntimeError, "negative padding is not supported", F.conv1d, T.randn(1, 1, 4), T.randn(1, 1, 2),
           padding=-1)
    raises(RuntimeError, r"Given groups=1, weight of size \[4, 3, 3, 3\], expected input(\[1, 2, 5, 5\] to have| "
           r"with) 3 channels", F.conv2d, T.randn(1, 2, 5, 5), T.randn(4, 3, 3, 3))
    raises(ValueError, "padding='same' is not supported for strided convolutions", nn.Conv2d, 1, 1, 3, stride=2,
           padding="same")
    raises(RuntimeError, "padding='same' is not supported for strided convolutions", F.conv2d,
           T.randn(1, 1, 5, 5), T.randn(1, 1, 3, 3), stride=2, padding="same")
    raises(RuntimeError, "Invalid padding string: 'garbage'", F.conv2d, T.randn(1, 1, 5, 5), T.randn(1, 1, 3, 3),
           padding="garbage")
    raises(ValueError, "in_channels must be divisible by groups", nn.Conv2d, 3, 4, 3, groups=2)
    raises(ValueError, "out_channels must be divisible by groups", nn.Conv2d, 4, 3, 3, groups=2)
    raises(ValueError, "groups must be a positive integer", nn.Conv2d, 4, 4, 3, groups=0)
    raises(ValueError, "padding_mode must be one of .*, but got padding_mode='garbage'", nn.Conv2d, 4, 4, 3,
           padding_mode="garbage")
    raises(RuntimeError, "output padding must be smaller than either stride or dilation", F.conv_transpose1d,
           T.randn(1, 1, 4), T.randn(1, 1, 3), stride=2, output_padding=2)


def test_conv_bias_size_error(T, F, request):
    raises(RuntimeError, r"Given weight of size \[2, 1, 3, 3\], expected bias to be 1-dimensional with 2 elements, "
           r"but got bias of size \[3\] instead", F.conv2d, T.randn(1, 1, 5, 5), T.randn(2, 1, 3, 3), bias=T.randn(3))


def test_conv_repr(T, nn):
    assert repr(nn.Conv2d(2, 4, 3)) == "Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1))"
    assert repr(nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2, bias=False)) == \
        "Conv1d(2, 4, kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,), groups=2, bias=False)"
    assert repr(nn.ConvTranspose2d(2, 4, 3, output_padding=1, stride=2)) == \
        "ConvTranspose2d(2, 4, kernel_size=(3, 3), stride=(2, 2), output_padding=(1, 1))"


def test_conv_unbatched_and_gradient(T, nn):
    conv = nn.Conv2d(2, 3, 2, dtype=T.float64)
    x = T.randn(2, 4, 4, dtype=T.float64, requires_grad=True)
    out = conv(x)
    assert tuple(out.shape) == (3, 3, 3)
    close(out, values(conv(x[None]))[0], rtol=1e-12)
    out.sum().backward()
    close(conv.bias.grad, [9.0, 9.0, 9.0], rtol=1e-12)
    w = values(conv.weight)
    expected = np.zeros((2, 4, 4))
    for i in range(3):
        for j in range(3):
            expected[:, i:i + 2, j:j + 2] += w.sum(0)
    close(x.grad, expected, rtol=1e-12)


# -- pooling --------------------------------------------------------------------------------------

def test_max_pool2d_values_indices_and_ceil_mode(T, F, nn):
    x = np.array([[[[1.0, 5, 2, 0, 3], [4, 2, 8, 1, 1], [0, 9, 3, 7, 2], [6, 1, 2, 4, 5]]]])
    out, idx = F.max_pool2d(T.tensor(x), 2, return_indices=True)
    same(out, [[[[5.0, 8], [9, 7]]]])
    same(idx, [[[[1, 7], [11, 13]]]], dtype="int64")
    out = F.max_pool2d(T.tensor(x), 2, ceil_mode=True)
    same(out, [[[[5.0, 8, 3], [9, 7, 5]]]])
    out = F.max_pool2d(T.tensor(x), 3, stride=1, padding=1)
    assert tuple(out.shape) == (1, 1, 4, 5)
    same(out[0, 0, 0], [5.0, 8, 8, 8, 3])
    out = F.max_pool2d(T.tensor(x), 2, stride=1, dilation=2)
    same(out, [[[[3.0, 9, 3], [8, 4, 8]]]])
    # MaxUnpool puts each maximum back where it was
    pooled, indices = nn.MaxPool2d(2, return_indices=True)(T.tensor(x))
    un = nn.MaxUnpool2d(2)(pooled, indices, output_size=(4, 5))
    expected = np.zeros((1, 1, 4, 5))
    expected.ravel()[[1, 7, 11, 13]] = [5, 8, 9, 7]
    same(un, expected)


def test_max_pool_gradient_goes_to_the_maximum(T, F):
    x = T.tensor([[[1.0, 3.0, 2.0, 2.0, 0.0]]], requires_grad=True)
    F.max_pool1d(x, 2, stride=1).sum().backward()
    same(x.grad, [[[0.0, 2.0, 1.0, 1.0, 0.0]]])   # a tie (2, 2): PyTorch's kernel takes the first


def test_avg_pool_count_include_pad_and_divisor(T, F):
    x = T.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    same(F.avg_pool2d(x, 2, stride=1), [[[[3.0, 4], [6, 7]]]])
    close(F.avg_pool2d(x, 2, stride=2, padding=1), [[[[0.25, 1.25], [2.75, 7.0]]]])
    close(F.avg_pool2d(x, 2, stride=2, padding=1, count_include_pad=False), [[[[1.0, 2.5], [5.5, 7.0]]]])
    close(F.avg_pool2d(x, 2, stride=1, divisor_override=1), [[[[12.0, 16], [24, 28]]]])
    close(F.avg_pool2d(x, 2, ceil_mode=True), [[[[3.0, 4.5], [7.5, 9.0]]]])
    close(F.avg_pool1d(T.arange(5.0).reshape(1, 1, 5), 2), [[[0.5, 2.5]]])


def test_adaptive_pools(T, F):
    x = np.arange(2 * 7, dtype=np.float64).reshape(1, 2, 7)
    # adaptive bins: start = floor(i * L / out), end = ceil((i + 1) * L / out)
    bins = [(0, 3), (2, 5), (4, 7)]
    close(F.adaptive_avg_pool1d(T.tensor(x), 3), np.stack([x[..., a:b].mean(-1) for a, b in bins], -1), rtol=1e-12)
    out, idx = F.adaptive_max_pool1d(T.tensor(x), 3, return_indices=True)
    close(out, np.stack([x[..., a:b].max(-1) for a, b in bins], -1), rtol=0, atol=0)
    same(idx, [[[2, 4, 6], [2, 4, 6]]])
    y = T.randn(1, 3, 5, 6, dtype=T.float64)
    close(F.adaptive_avg_pool2d(y, (1, 1)), values(y.mean((2, 3), keepdim=True)), rtol=1e-12)
    assert tuple(F.adaptive_avg_pool2d(y, (None, 2)).shape) == (1, 3, 5, 2)
    assert tuple(F.adaptive_avg_pool2d(T.randn(1, 0, 4, 4), 2).shape) == (1, 0, 2, 2)


def test_lp_pool(T, F):
    x = np.array([[[1.0, -2.0, 3.0, 4.0]]])
    close(F.lp_pool1d(T.tensor(x), 2, 2), [[[np.sqrt(5.0), 5.0]]], rtol=1e-12)
    close(F.lp_pool1d(T.tensor(x), 1, 2), [[[-1.0, 7.0]]], rtol=1e-12)     # p = 1: the plain sum


def test_pool_errors(T, F):
    raises(RuntimeError, "pad should be at most half of effective kernel size, but got pad=2, kernel_size=2 and "
           "dilation=1", F.max_pool2d, T.randn(1, 1, 4, 4), 2, padding=2)
    raises(RuntimeError, "pad should be at most half of effective kernel size", F.avg_pool2d, T.randn(1, 1, 4, 4), 2,
           padding=2)
    raises(RuntimeError, r"[Gg]iven input size: \(1x1x1\). Calculated output size: \(1x0x0\). Output size is too "
           "small", F.max_pool2d, T.randn(1, 1, 1, 1), 2)
    raises(RuntimeError, "stride should not be zero", F.max_pool2d, T.randn(1, 1, 4, 4), 2, stride=0)
    raises(RuntimeError, "dilation should be greater than zero", F.max_pool2d, T.randn(1, 1, 4, 4), 2, dilation=0)
    raises(RuntimeError, "divisor must be not zero", F.avg_pool2d, T.randn(1, 1, 4, 4), 2, divisor_override=0)
    raises(RuntimeError, r"Found an invalid max index: 99 \(output volumes are of size 4x4\)", F.max_unpool2d,
           T.randn(1, 1, 2, 2), T.tensor([[[[0, 1], [2, 99]]]]), 2)
    raises(RuntimeError, "max_pool1d|2D or 3D", F.max_pool1d, T.randn(1, 1, 1, 4), 2)


def test_pool_repr(T, nn):
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool1d(3, 2)) == "AvgPool1d(kernel_size=(3,), stride=(2,), padding=(0,))"
    assert repr(nn.AdaptiveAvgPool2d((2, None))) == "AdaptiveAvgPool2d(output_size=(2, None))"


def test_upsampling_modules(T, nn, F):
    x = T.randn(1, 2, 3, 4, dtype=T.float64)
    close(nn.UpsamplingBilinear2d(scale_factor=2)(x),
          values(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)), rtol=1e-12)
    same(nn.UpsamplingNearest2d(size=(6, 8))(x), values(F.interpolate(x, size=(6, 8), mode="nearest")))
    out = nn.Upsample(scale_factor=(2, 1), mode="nearest")(x)
    assert tuple(out.shape) == (1, 2, 6, 4)
    same(out[:, :, ::2], values(x))
    assert repr(nn.UpsamplingBilinear2d(scale_factor=2)) == "UpsamplingBilinear2d(scale_factor=2.0, mode='bilinear')"
    # trilinear is linear along each of the three dims in turn
    v = T.randn(1, 1, 2, 3, 2, dtype=T.float64)
    tri = F.interpolate(v, size=(3, 4, 3), mode="trilinear", align_corners=True)
    step = F.interpolate(v.reshape(1, 2, 3, 2), size=(4, 3), mode="bilinear", align_corners=True)   # H, W first
    step = F.interpolate(step.reshape(1, 1, 2, 12).transpose(2, 3).reshape(1, 12, 2), size=3, mode="linear",
                         align_corners=True).reshape(1, 4, 3, 3).permute(0, 3, 1, 2)
    close(tri[0, 0], values(step)[0], rtol=1e-12)


def test_interpolate_size_given_as_tensors(T, F):
    assert tuple(F.interpolate(T.ones(1, 1, 2), size=T.tensor(4)).shape) == (1, 1, 4)
    assert tuple(F.interpolate(T.ones(1, 1, 2), size=T.tensor([4])).shape) == (1, 1, 4)
    assert tuple(F.interpolate(T.ones(1, 1, 2, 2), size=(T.tensor(4), 3)).shape) == (1, 1, 4, 3)
    x = T.ones(1, 1, 5, 6)
    assert tuple(F.interpolate(T.ones(1, 1, 2, 2), size=x.shape[-2:]).shape) == (1, 1, 5, 6)
