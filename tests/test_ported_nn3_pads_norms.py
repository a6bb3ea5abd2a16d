"""Padding and normalisation, ported from PyTorch's test/test_nn.py (TestNNDeviceType on CPU) where the
tests/test_ported_nn_*.py and tests/test_ported_normalization.py files do not reach: circular padding's wrap and
crop errors, reflection padding wider than its dimension, F.pad never returning a view, the replication pads on
an empty batch and their rank errors, replication padding's gradient gathered into the edges and corners,
Bilinear, the Transformer layers and a convolution with a strided weight on an empty batch, InstanceNorm's channel
checks and its one-spatial-element refusal, GroupNorm's refusal and its empty batch, GroupNorm and LayerNorm against
their formulas, and rms_norm in float16. Each test runs on chainrule's `nn` and, where it is installed, on
PyTorch's; the expectations are literals or NumPy."""

import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_pad_errors_and_no_views(T, F, dtype):
    d = getattr(T, dtype)
    x = T.randn(1, 1, 4, dtype=d)
    for amounts in ((5, 4), (3, 6)):
        raises(RuntimeError, "Padding value causes wrapping around more than once", F.pad, x, amounts,
               mode="circular")
    for amounts, shape in (((-3, -2), (1, 1, 4)), ((0, 0, -3, -2), (1, 1, 4, 4)), ((-3, -2, 0, 0), (1, 1, 4, 4))):
        raises(RuntimeError, "Negative padding value is resulting in an empty dimension", F.pad,
               T.randn(shape, dtype=d), amounts, mode="circular")
    assert tuple(F.pad(x, (4, 4), mode="circular").shape) == (1, 1, 12)
    assert tuple(F.pad(x, (-2, -2), mode="circular").shape) == (1, 1, 0)
    raises(RuntimeError, "Argument #6: Padding size should be less than the corresponding input dimension, but got: "
           "padding \\(3, 0\\) at dimension 2 of input \\[1, 1, 2, 3\\]", F.pad, T.randn(1, 1, 2, 3, dtype=d),
           (1, 1, 3, 0), mode="reflect")
    raises(RuntimeError, "Argument #4: Padding size should be less than the corresponding input dimension",
           F.pad, T.randn(1, 1, 2, dtype=d), (2, 1), mode="reflect")
    # no padding, or a crop: still a new tensor, never a view that writes through to the input
    image = np.random.default_rng(0).random((1, 3, 4, 4)).astype(dtype)
    inputs = T.tensor(image)
    for mode in ("constant", "reflect", "replicate", "circular"):
        for amounts in ((0, 0, 0, 0), (0, 0, -1, -1)):
            out = F.pad(inputs, amounts, mode=mode)
            out.fill_(4)
        same(inputs, image)
        same(F.pad(inputs, (0, 0, -1, -1), mode=mode), image[:, :, 1:-1])


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_replication_pad_of_an_empty_batch_and_its_rank_errors(T, nn, dtype):
    d = getattr(T, dtype)
    for pad, shape in ((nn.ReplicationPad1d(3), (0, 3, 10)), (nn.ReplicationPad2d(3), (0, 3, 10, 10)),
                       (nn.ReplicationPad3d(3), (0, 3, 10, 10, 10))):
        assert tuple(pad(T.randn(shape, dtype=d)).shape) == (0, 3) + (16,) * (len(shape) - 2)
    for pad, shape, ranks in ((nn.ReplicationPad1d(2), (3, 0, 10), "2D or 3D"),
                              (nn.ReplicationPad2d((2, 2, 2, 2)), (43, 0, 10, 10), "3D or 4D"),
                              (nn.ReplicationPad3d((2,) * 6), (3, 0, 10, 10, 10), "4D or 5D")):
        raises(RuntimeError, f"Expected {ranks} \\(batch mode\\) tensor with possibly 0 batch size and other non-zero "
               f"dimensions for input, but got: \\[{', '.join(map(str, shape))}\\]", pad, T.randn(shape, dtype=d))


def test_replication_pad_gathers_the_gradient_into_edges_and_corners(T, nn):
    rng = np.random.default_rng(0)
    left, right, top, bottom = 3, 4, 5, 6
    x_np = rng.standard_normal((2, 3, 4, 4))
    x = T.tensor(x_np, requires_grad=True)
    out = nn.ReplicationPad2d((left, right, top, bottom))(x)
    same(out, np.pad(x_np, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="edge"))
    g = rng.standard_normal(tuple(out.shape))
    out.backward(T.tensor(g))
    # each output position reads the input at its index clamped into the image: the gradient sums by that index
    rows = np.clip(np.arange(-top, 4 + bottom), 0, 3)
    cols = np.clip(np.arange(-left, 4 + right), 0, 3)
    expected = np.zeros_like(x_np)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            expected[:, :, r, c] += g[:, :, i, j]
    close(x.grad, expected, rtol=1e-12, atol=1e-12)
    close(values(x.grad)[:, :, 0, 0], g[:, :, :top + 1, :left + 1].sum((-2, -1)), rtol=1e-12)
    # 3-d: the centre's gradient is the centre of the incoming one
    x = T.tensor(rng.standard_normal((1, 2, 3, 3, 3)), requires_grad=True)
    out = nn.ReplicationPad3d((3, 4, 5, 6, 7, 8))(x)
    assert tuple(out.shape) == (1, 2, 18, 14, 10)
    g = rng.standard_normal(tuple(out.shape))
    out.backward(T.tensor(g))
    same(x.grad[:, :, 1, 1, 1], g[:, :, 8, 6, 4])


def test_layers_of_an_empty_batch(T, nn, F):
    bilinear = nn.Bilinear(20, 30, 40)
    a, b = T.randn(0, 10, 20, requires_grad=True), T.randn(0, 10, 30, requires_grad=True)
    out = bilinear(a, b)
    out.sum().backward()
    assert tuple(out.shape) == (0, 10, 40)
    same(a.grad, np.zeros((0, 10, 20), np.float32))
    same(bilinear.weight.grad, np.zeros((40, 20, 30), np.float32))
    for training in (True, False):
        for batch_first, shape in ((True, (0, 10, 16)), (False, (10, 0, 16))):
            layer = nn.TransformerEncoderLayer(d_model=16, nhead=4, batch_first=batch_first, dtype=T.float64)
            layer.train(training)
            x = T.rand(*shape, dtype=T.float64, requires_grad=True)
            y = layer(x)
            y.sum().backward()
            assert tuple(y.shape) == shape and tuple(x.grad.shape) == shape
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=16, nhead=4, dtype=T.float64), num_layers=2,
                                    enable_nested_tensor=False)
    assert tuple(encoder(T.rand(10, 0, 16, dtype=T.float64)).shape) == (10, 0, 16)
    decoder = nn.TransformerDecoderLayer(d_model=16, nhead=4, batch_first=True, dtype=T.float64)
    assert tuple(decoder(T.rand(0, 20, 16, dtype=T.float64), T.rand(0, 10, 16, dtype=T.float64)).shape) == (0, 20, 16)
    transformer = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                                 batch_first=True, dtype=T.float64)
    assert tuple(transformer(T.rand(0, 10, 16, dtype=T.float64), T.rand(0, 20, 16, dtype=T.float64)).shape) == \
        (0, 20, 16)
    # a convolution with a strided (every other input channel) weight, as with a contiguous copy
    weight = T.rand(4, 8, 3, 3)[:, ::2]
    out = F.conv2d(T.randn(0, 4, 20, 20), weight, T.rand(4))
    assert tuple(out.shape) == (0, 4, 18, 18)
    assert tuple(nn.Conv3d(4, 4, 3)(T.randn(0, 4, 6, 6, 6)).shape) == (0, 4, 4, 4, 4)


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("batched", [True, False])
def test_instance_norm_checks_its_channels(T, nn, spatial, batched):
    size = ([3] if batched else []) + [2] * (spatial + 1)  # two channels where four are declared
    dim = 1 if batched else 0
    norm = getattr(nn, f"InstanceNorm{spatial}d")
    raises(ValueError, f"expected input's size at dim={dim} to match num_features \\(4\\), but got: 2",
           norm(4, affine=True), T.randn(size))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = norm(4, affine=False)(T.randn(size))
    assert any(f"input's size at dim={dim} does not match num_features" in str(w.message) and
               "which is not used because affine=False" in str(w.message) for w in caught)
    assert tuple(out.shape) == tuple(size)


def test_instance_and_group_norm_refuse_one_value(T, nn):
    raises(ValueError, "Expected more than 1 spatial element when training, got input size torch.Size\\(\\[1, 10, "
           "1\\]\\)", nn.InstanceNorm1d(10), T.rand(10)[None, :, None])
    for spatial in (1, 2, 3):
        norm = getattr(nn, f"InstanceNorm{spatial}d")(3, track_running_stats=True)
        x = T.randn(10, 3, *[1] * spatial)
        raises(ValueError, "Expected more than 1 spatial element when training", norm, x)
        norm.eval()  # the running statistics (0 and 1) normalise a single element: x / √(1 + ε)
        close(norm(x), values(x) / np.sqrt(1 + 1e-5), rtol=1e-6)
    raises(ValueError, "Expected more than 1 value per channel when training", nn.GroupNorm(10, 10),
           T.rand(10)[None, :, None])
    gn = nn.GroupNorm(2, 4)
    x = T.randn(0, 4, 2, 2, requires_grad=True)
    y = gn(x)
    y.sum().backward()
    assert tuple(y.shape) == (0, 4, 2, 2)
    same(gn.weight.grad, [0.0, 0.0, 0.0, 0.0])
    same(gn.bias.grad, [0.0, 0.0, 0.0, 0.0])


def test_group_norm_and_layer_norm_against_their_formulas(T, nn):
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 6, 5, 3)).astype(np.float32)
    gn = nn.GroupNorm(2, 8)
    with T.no_grad():
        gn.weight.copy_(T.tensor(rng.random(8).astype(np.float32)))
        gn.bias.copy_(T.tensor(rng.random(8).astype(np.float32)))
    groups = x.reshape(2, 2, -1).astype(np.float64)
    normalized = ((groups - groups.mean(-1, keepdims=True)) / np.sqrt(groups.var(-1, keepdims=True) + 1e-5))
    expected = normalized.reshape(2, 8, -1) * values(gn.weight)[:, None] + values(gn.bias)[:, None]
    close(gn(T.tensor(x)), expected.reshape(x.shape), rtol=0, atol=1e-5)
    shape = [6, 5, 3]
    ln = nn.LayerNorm(shape)
    flat = x.reshape(-1, 90).astype(np.float64)
    expected = (flat - flat.mean(-1, keepdims=True)) / np.sqrt(flat.var(-1, keepdims=True) + 1e-5)
    close(ln(T.tensor(x)), expected.reshape(x.shape), rtol=0, atol=1e-5)


def test_rms_norm_in_float16(T, F):
    rng = np.random.default_rng(0)
    x, w = rng.random((1, 2, 3)).astype(np.float16), rng.random((1, 2, 3)).astype(np.float16)
    out = F.rms_norm(T.tensor(x), (1, 2, 3), T.tensor(w), 0.5)
    assert str(out.dtype).endswith("float16")
    # computed in float32 and rounded once
    x32 = x.astype(np.float32)
    expected = (x32 / np.sqrt((x32 ** 2).mean() + np.float32(0.5)) * w.astype(np.float32)).astype(np.float16)
    close(out.float(), expected.astype(np.float32), rtol=1e-3, atol=1e-3)
    # eps=None: the dtype's machine epsilon
    v = np.array([[1.0, 2.0, 3.0]], np.float32)
    close(F.rms_norm(T.tensor(v), (3,)), v / np.sqrt((v ** 2).mean() + np.finfo(np.float32).eps), rtol=1e-6)
