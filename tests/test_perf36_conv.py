"""The fast paths of session 36's convolution work: depthwise convolutions by cache-sized blocks of channels (no
im2col of the whole input): values and gradients against a direct NumPy formula, the GEMM path (bit for bit) and
PyTorch where installed, derivatives of the second order by finite differences; and the transposed convolutions'
refusal of a weight of the wrong rank. (Max pooling's blocks: test_perf36_conv_pooling.py.)"""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.ops import depthwise_convolution


def randn(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def depthwise_reference(x, w, stride, padding, dilation):
    """y[n, c, i, j] = Σ_{p,q} w[c, 0, p, q] · x_pad[n, c, i·s + p·d, j·s + q·d], by its definition."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    oh = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros(x.shape[:2] + (oh, ow), dtype=np.result_type(x, w))
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
            y[:, :, i, j] = (window * w[:, 0]).sum((2, 3))
    return y


DEPTHWISE = [  # (input shape, kernel, stride, padding, dilation)
    ((2, 4, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 5, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 3, 10, 11), (2, 3), (1, 2), (1, 0), (2, 1)),
    ((1, 6, 6, 6), (5, 5), (1, 1), (2, 2), (1, 1)),
    ((2, 2, 5, 5), (1, 1), (1, 1), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", DEPTHWISE)
def test_depthwise_values_and_gradients_match_the_definition(shape, kernel, stride, padding, dilation):
    channels = shape[1]
    xn, wn, bn = randn(*shape), randn(channels, 1, *kernel, seed=1), randn(channels, seed=2)
    x, w, b = (autograd.tensor(a, requires_grad=True) for a in (xn, wn, bn))
    y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=channels)
    expected = depthwise_reference(xn, wn, stride, padding, dilation) + bn[:, None, None]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    g = randn(*y.shape, seed=3)
    y.backward(autograd.tensor(g))
    # the gradients: those of the same convolution written with groups=1 and a block-diagonal weight, computed
    # by im2col and a GEMM (the path depthwise convolutions took before)
    x2, w2 = (autograd.tensor(a, requires_grad=True) for a in (xn, wn))
    dense_w = np.zeros((channels, channels) + tuple(kernel))
    dense_w[np.arange(channels), np.arange(channels)] = wn[:, 0]  # the same convolution, groups=1 (a GEMM)
    w_dense = autograd.tensor(dense_w, requires_grad=True)
    y2 = F.conv2d(x2, w_dense, None, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y2.numpy(), expected - bn[:, None, None], rtol=1e-12, atol=1e-12)
    y2.backward(autograd.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-12, atol=1e-12)
    dense_grad = w_dense.grad.numpy()[np.arange(channels), np.arange(channels)]
    np.testing.assert_allclose(w.grad.numpy()[:, 0], dense_grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), g.sum((0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", DEPTHWISE[:3])
def test_depthwise_first_and_second_derivatives_by_finite_differences(shape, kernel, stride, padding, dilation):
    shape = (2, shape[1], 5, 6)
    x = autograd.tensor(randn(*shape), requires_grad=True)
    w = autograd.tensor(randn(shape[1], 1, *kernel, seed=1), requires_grad=True)

    def fn(x, w):
        return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=shape[1])

    assert autograd.gradcheck(fn, (x, w))
    assert autograd.gradgradcheck(fn, (x, w))


def test_depthwise_transposed_convolution_is_the_adjoint_of_the_convolution():
    """<conv_transpose2d(g, w), a> = <g, conv2d(a, w)> for the depthwise kernels (spread and correlate)."""
    channels, stride, padding, dilation = 3, (2, 1), (1, 2), (1, 2)
    w = autograd.tensor(randn(channels, 1, 3, 2, seed=1))
    g = autograd.tensor(randn(2, channels, 4, 5, seed=2))
    z = F.conv_transpose2d(g, w, stride=stride, padding=padding, dilation=dilation, groups=channels,
                           output_padding=(1, 0))
    a = autograd.tensor(randn(*z.shape, seed=3))
    y = F.conv2d(a, w, stride=stride, padding=padding, dilation=dilation, groups=channels)
    assert y.shape == g.shape
    np.testing.assert_allclose(float((z * a).sum().numpy()), float((g * y).sum().numpy()), rtol=1e-12)


def test_depthwise_integers_are_exact_and_an_empty_batch_gives_an_empty_result():
    x = np.random.default_rng(0).integers(-5, 5, (2, 3, 6, 6))
    w = np.random.default_rng(1).integers(-3, 3, (3, 1, 3, 3))
    y = F.conv2d(autograd.tensor(x), autograd.tensor(w), padding=1, groups=3)
    assert y.dtype == autograd.int64
    np.testing.assert_array_equal(y.numpy(), depthwise_reference(x, w, (1, 1), (1, 1), (1, 1)))
    empty = F.conv2d(autograd.zeros(0, 3, 6, 6), autograd.ones(3, 1, 3, 3), padding=1, groups=3)
    assert empty.shape == (0, 3, 6, 6)


def test_depthwise_float16_rounds_the_float32_result_once():
    xn, wn = randn(2, 4, 6, 6, dtype=np.float16), randn(4, 1, 3, 3, seed=1, dtype=np.float16)
    x, w = autograd.tensor(xn, requires_grad=True), autograd.tensor(wn, requires_grad=True)
    y = F.conv2d(x, w, padding=1, groups=4)
    assert y.dtype == autograd.float16
    expected = depthwise_reference(xn.astype(np.float32), wn.astype(np.float32), (1, 1), (1, 1), (1, 1))
    np.testing.assert_array_equal(y.numpy(), expected.astype(np.float16))
    y.sum().backward()
    assert x.grad.dtype == autograd.float16 and w.grad.dtype == autograd.float16
    np.testing.assert_allclose(w.grad.numpy().astype(np.float64),
                               depthwise_weight_sums(xn.astype(np.float64), (1, 1)), rtol=1e-2, atol=1e-2)


def depthwise_weight_sums(x, padding):
    """dL/dw of sum(conv2d(x, w, padding, groups=C)) for a 3 x 3 kernel: Σ_{n,i,j} x_pad[n, c, i + p, j + q]."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh, ow = padded.shape[2] - 2, padded.shape[3] - 2
    return np.stack([[padded[:, :, p:p + oh, q:q + ow].sum((0, 2, 3)) for q in range(3)] for p in range(3)],
                    -1).transpose(1, 2, 0)[:, None]


def test_channel_blocks_cover_every_channel_once():
    for channels, channel_bytes in [(64, 65536), (5, 1), (7, 1 << 20), (1, 0), (0, 8)]:
        blocks = depthwise_convolution.channel_blocks(channels, channel_bytes)
        covered = [c for block in blocks for c in range(channels)[block]]
        assert covered == list(range(channels))


@pytest.mark.parametrize("groups_spec", ["depthwise", "transposed"])
def test_depthwise_against_torch_with_channels_last_and_batch_innermost_inputs(groups_spec):
    torch = pytest.importorskip("torch")
    channels = 6
    xn, bn = randn(3, channels, 9, 8, dtype=np.float32), randn(channels, seed=2, dtype=np.float32)
    wn = randn(channels, 1, 3, 3, seed=1, dtype=np.float32)
    layouts = [np.ascontiguousarray(xn), np.ascontiguousarray(xn.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
               np.ascontiguousarray(xn.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)]
    for stored in layouts:
        results = []
        for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
            x = lib.from_numpy(np.array(stored)).requires_grad_()  # (np.array keeps the layout)
            w, b = lib.tensor(wn, requires_grad=True), lib.tensor(bn, requires_grad=True)
            if groups_spec == "depthwise":
                y = functional.conv2d(x, w, b, stride=(2, 1), padding=1, groups=channels)
            else:
                y = functional.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=channels)
            y.backward(lib.tensor(randn(*y.shape, seed=3, dtype=np.float32)))
            results.append([a.detach().numpy() for a in (y, x.grad, w.grad, b.grad)])
        for ours, theirs in zip(*results):
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_depthwise_second_derivatives_match_torch():
    torch = pytest.importorskip("torch")
    xn, wn = randn(2, 3, 6, 5), randn(3, 1, 3, 3, seed=1)
    results = []
    for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
        x, w = lib.tensor(xn, requires_grad=True), lib.tensor(wn, requires_grad=True)
        y = functional.conv2d(x, w, padding=1, stride=2, groups=3)
        gx, gw = lib.autograd.grad((y * y).sum(), (x, w), create_graph=True)
        (gx.square().sum() + (gw * gw).sum()).backward()
        results.append([a.detach().numpy() for a in (gx, gw, x.grad, w.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,weight_shape,spatial", [("conv_transpose2d", (6, 2, 3), 2),
                                                       ("conv_transpose1d", (6, 2, 3, 3), 1)])
def test_transposed_convolution_refuses_a_weight_of_the_wrong_rank(name, weight_shape, spatial):
    x = autograd.ones(2, 6, *(4,) * spatial)
    with pytest.raises(RuntimeError, match=rf"{name}: expected a weight of {spatial + 2} dimensions .*"
                                           rf"got weight of size \[{', '.join(map(str, weight_shape))}\]"):
        getattr(F, name)(x, autograd.ones(*weight_shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int64])
@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", DEPTHWISE)
def test_depthwise_blocks_give_the_gemm_paths_values_bit_for_bit(shape, kernel, stride, padding, dilation, dtype,
                                                                monkeypatch):
    """The blocks gather the same columns and multiply them with the same products as one im2col of the whole
    input, so values and gradients are those of the GEMM path exactly (a block of one channel: many blocks)."""
    from autograd.ops import convolution

    monkeypatch.setattr(depthwise_convolution, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(7)
    xn = (rng.standard_normal(shape) * 4).astype(dtype)
    wn = (rng.standard_normal((shape[1], 1) + kernel) * 4).astype(dtype)
    results = []
    for path in (convolution.one_channel_per_group, lambda *args: False):
        monkeypatch.setattr(convolution, "one_channel_per_group", path)
        grad = dtype != np.int64
        x, w = autograd.tensor(xn, requires_grad=grad), autograd.tensor(wn, requires_grad=grad)
        y = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=shape[1])
        arrays = [y.numpy()]
        if grad:
            y.backward(autograd.tensor((np.random.default_rng(8).standard_normal(y.shape) * 4).astype(dtype)))
            arrays += [x.grad.numpy(), w.grad.numpy()]
        results.append(arrays)
    for ours, gemm in zip(*results):
        np.testing.assert_array_equal(ours, gemm)
