"""Gradients and second derivatives of nn layers and functions, ported from the gradcheck / gradgradcheck
tests of PyTorch's test/test_nn.py (TestNN and TestNNDeviceType on CPU): recurrent layers, in-place
activations on views, normalisation, convolution, pooling, padding, interpolation, grid_sample and the
losses, all in float64 with finite differences. Each test runs on chainrule's `autograd` and `nn` and,
where it is installed, on PyTorch's."""

import pytest

from tests import ported_nn
from tests.ported import same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def check(T, fn, *inputs, second=True):
    assert T.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
    if second:
        assert T.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def leaf(T, *shape, seed=0):
    T.manual_seed(seed)
    return T.randn(*shape, dtype=T.float64, requires_grad=True)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_rnn_grad_and_gradgrad(T, nn, kind):
    T.manual_seed(0)
    rnn = getattr(nn, kind)(3, 2, dtype=T.float64)
    x = leaf(T, 3, 1, 3)
    h = leaf(T, 1, 1, 2, seed=1)
    if kind == "LSTM":
        c = leaf(T, 1, 1, 2, seed=2)
        check(T, lambda x, h, c: rnn(x, (h, c))[0], x, h, c)
    else:
        check(T, lambda x, h: rnn(x, h)[0], x, h)


@pytest.mark.parametrize("name", ["elu", "relu", "leaky_relu", "celu", "selu", "rrelu"])
def test_inplace_activation_on_view(T, F, name):
    v = T.tensor([1.0, -1.0, 1.0, -1.0], dtype=T.float64, requires_grad=True)
    fn = getattr(F, name)

    def func(root):
        x = root.clone()
        view = x.narrow(0, 1, 2)
        res = fn(view, inplace=True) if name != "rrelu" else fn(view, training=False, inplace=True)
        assert res is view
        return x
    check(T, func, v, second=name not in ("relu", "leaky_relu", "rrelu"))
    out = func(v)
    assert out[0].item() == 1.0 and out[3].item() == -1.0          # outside the view: untouched


def test_relu_inplace_on_view_values(T, F):
    v = T.tensor([1.0, -1.0, 1.0, -1.0], requires_grad=True)
    x = v.clone()
    F.relu(x.narrow(0, 1, 2), inplace=True)
    same(x, [1.0, 0.0, 1.0, -1.0])
    x.sum().backward()
    same(v.grad, [1.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("name", ["hardsigmoid", "hardswish", "silu", "mish", "gelu", "softplus", "logsigmoid",
                                  "softsign", "tanhshrink"])
def test_activation_gradients(T, F, name):
    x = T.tensor([-4.0, -1.0, -0.3, 0.4, 2.6, 4.0], dtype=T.float64, requires_grad=True)
    check(T, getattr(F, name), x, second=name != "hardsigmoid")     # PyTorch has no hardsigmoid double backward


def test_batch_norm_grad(T, F):
    x = leaf(T, 4, 3, 2)
    w = leaf(T, 3, seed=1)
    b = leaf(T, 3, seed=2)
    check(T, lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), x, w, b)
    rm, rv = T.zeros(3, dtype=T.float64), T.ones(3, dtype=T.float64)
    check(T, lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), x, w, b)


def test_layer_and_group_norm_grad(T, F):
    x = leaf(T, 1, 4, 3)
    w = leaf(T, 3, seed=1)
    b = leaf(T, 3, seed=2)
    check(T, lambda x, w, b: F.layer_norm(x, (3,), w, b), x, w, b)
    gw = leaf(T, 4, seed=3)
    gb = leaf(T, 4, seed=4)
    check(T, lambda x, w, b: F.group_norm(x, 2, w, b), x, gw, gb)
    check(T, lambda x: F.instance_norm(x), x)


def test_conv_grad_and_double_backward(T, F):
    x = leaf(T, 1, 2, 3, 3)
    w = leaf(T, 2, 1, 2, 2, seed=1)
    b = leaf(T, 2, seed=2)
    check(T, lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2), x, w, b)
    wt = leaf(T, 2, 1, 2, 2, seed=3)
    check(T, lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=1), x, wt)
    x1 = leaf(T, 1, 1, 5)
    w1 = leaf(T, 1, 1, 3, seed=4)
    check(T, lambda x, w: F.conv1d(x, w, padding="same", dilation=2), x1, w1)


def test_pool_grads(T, F):
    T.manual_seed(0)
    x = T.randperm(36).to(T.float64).reshape(1, 1, 6, 6).requires_grad_()   # distinct values: no ties
    check(T, lambda x: F.max_pool2d(x, 3, stride=2, padding=1), x)
    check(T, lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False), x)
    check(T, lambda x: F.adaptive_avg_pool2d(x, (4, 3)), x)
    check(T, lambda x: F.adaptive_max_pool2d(x, (2, 3)), x)
    check(T, lambda x: F.lp_pool2d(x, 2, 2), leaf(T, 1, 1, 4, 4))


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_grad(T, F, mode):
    x = leaf(T, 1, 2, 4, 3)
    check(T, lambda x: F.pad(x, (1, 2, 2, 1), mode=mode), x)


@pytest.mark.parametrize("mode, align", [("nearest", None), ("bilinear", False), ("bilinear", True),
                                         ("bicubic", False), ("area", None)])
def test_interpolate_grad(T, F, mode, align):
    x = leaf(T, 1, 1, 3, 4)
    check(T, lambda x: F.interpolate(x, size=(5, 3), mode=mode, align_corners=align), x)


def test_grid_sample_grad(T, F):
    x = leaf(T, 1, 2, 3, 4)
    T.manual_seed(5)
    grid = (T.rand(1, 2, 3, 2, dtype=T.float64) * 1.6 - 0.8).requires_grad_()
    check(T, lambda x, g: F.grid_sample(x, g, align_corners=False), x, grid, second=False)
    check(T, lambda x: F.grid_sample(x, grid.detach(), mode="bilinear", padding_mode="border", align_corners=True),
          x)


def test_loss_grads_and_gradgrads(T, F):
    x = leaf(T, 2, 3)
    y = T.tensor([0, 2])
    w = T.tensor([0.5, 1.0, 2.0], dtype=T.float64)
    check(T, lambda x: F.cross_entropy(x, y, weight=w, label_smoothing=0.1), x)
    p = T.softmax(T.randn(2, 3, dtype=T.float64), 1)
    check(T, lambda x: F.cross_entropy(x, p), x)
    t = T.rand(2, 3, dtype=T.float64)
    check(T, lambda x: F.binary_cross_entropy_with_logits(x, t, pos_weight=T.full((3,), 2.0, dtype=T.float64)), x)
    check(T, lambda x: F.binary_cross_entropy(T.sigmoid(x), t), x)
    check(T, lambda x: F.kl_div(F.log_softmax(x, 1), p, reduction="batchmean"), x)
    check(T, lambda x: F.smooth_l1_loss(x, t, beta=0.5), x)
    check(T, lambda x: F.huber_loss(x, t, delta=0.7), x)
    check(T, lambda x: F.poisson_nll_loss(x, t), x)
    check(T, lambda x: F.gaussian_nll_loss(x, t, x.exp()), x)
    check(T, lambda x: F.multilabel_soft_margin_loss(x, (t > 0.5).to(T.float64)), x)
    check(T, lambda x: F.triplet_margin_loss(x, x.flip(0), x.roll(1, 0)), x)


def test_multihead_attention_grad(T, nn, F):
    T.manual_seed(0)
    m = nn.MultiheadAttention(4, 2, dtype=T.float64)
    q = leaf(T, 3, 1, 4)
    mask = T.tensor([[False, True, False], [False, False, True], [True, False, False]])
    check(T, lambda q: m(q, q, q, attn_mask=mask)[0], q)
    qh, kh, vh = leaf(T, 1, 2, 3, 2), leaf(T, 1, 2, 4, 2, seed=1), leaf(T, 1, 2, 4, 2, seed=2)
    # PyTorch's CPU kernel has no double backward here
    check(T, lambda q, k, v: F.scaled_dot_product_attention(q, k, v), qh, kh, vh, second=False)


def test_embedding_and_bilinear_grad(T, F):
    w = leaf(T, 5, 3)
    idx = T.tensor([[0, 2], [4, 2]])
    check(T, lambda w: F.embedding(idx, w), w)
    x1, x2, bw = leaf(T, 2, 3), leaf(T, 2, 2, seed=1), leaf(T, 4, 3, 2, seed=2)
    check(T, lambda a, b, w: F.bilinear(a, b, w), x1, x2, bw)


def test_pixel_shuffle_fold_unfold_grad(T, F):
    x = leaf(T, 1, 4, 2, 2)
    check(T, lambda x: F.pixel_shuffle(x, 2), x, second=False)
    check(T, lambda x: F.unfold(x, (2, 2), padding=1, stride=(1, 2)), x, second=False)
    cols = leaf(T, 1, 4, 6)
    check(T, lambda c: F.fold(c, (3, 4), (2, 2)), cols)


def test_gradcheck_agrees_on_values(T, F):
    x = T.tensor([[0.5, -1.0]], dtype=T.float64, requires_grad=True)
    (g,) = T.autograd.grad(F.softplus(x).sum(), x, create_graph=True)
    (gg,) = T.autograd.grad(g.sum(), x)
    sig = 1 / (1 + __import__("numpy").exp(-values(x)))
    same(g.detach(), sig)
    assert abs(values(gg) - sig * (1 - sig)).max() < 1e-15
