"""More of PyTorch's test/test_nn.py (TestNNDeviceType on CPU) not ported elsewhere: softmax and log_softmax with
a dtype argument (empty and wide shapes, double backward), log_softmax of shifted inputs, float16 activations
against float32, grid_sample with non-finite or far-away coordinates and on strided views, gumbel_softmax
(one-hot draws, the straight-through gradient), recurrent layers' retained graphs and an old LSTM's state,
ctc_loss without a batch dimension and with empty targets, batch norm in eval mode, without affine parameters,
with a cumulative average (momentum=None) and its statistics updates, cross_entropy's label smoothing with class
weights and ignore_index, and softplus with a low threshold. Each test runs on chainrule's `nn` and, where it is
installed, on PyTorch's; the expectations are literals or NumPy."""

import itertools

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

REDUCTIONS = ("none", "mean", "sum")


def np_softmax(x, dim):
    if x.size == 0:
        return x
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("size", [(0, 10), (10, 0), (31, 20), (33, 2049)])
def test_softmax_with_a_dtype_and_its_double_backward(T, F, fn, size):
    rng = np.random.default_rng(1)
    x_np, g_np = rng.random(size).astype(np.float32), rng.random(size)
    for dim in (0, 1):
        x = T.tensor(x_np, requires_grad=True)
        out = getattr(F, fn)(x, dtype=T.float64, dim=dim)
        assert str(out.dtype).endswith("float64")
        p = np_softmax(x_np.astype(np.float64), dim)
        close(out, p if fn == "softmax" else np.log(p), rtol=1e-12, atol=1e-12)
        grad, = T.autograd.grad(out, x, grad_outputs=T.tensor(g_np), create_graph=True)
        assert str(grad.dtype).endswith("float32")  # (cast back to the input's dtype)
        if fn == "softmax":  # p ⊙ (g - Σ p g)
            expected = p * (g_np - (p * g_np).sum(axis=dim, keepdims=True))
        else:  # g - p Σ g
            expected = g_np - p * g_np.sum(axis=dim, keepdims=True)
        close(grad, expected.astype(np.float32), rtol=1e-5, atol=1e-6)
        grad.sum().backward()
        assert tuple(x.grad.shape) == size


def test_log_softmax_of_shifted_inputs(T, F):
    # big numbers exactly representable in float32, a constant offset from small ones: the same log_softmax
    small = np.random.default_rng(0).integers(0, 100, (16, 4)).astype(np.float32)
    out = F.log_softmax(T.tensor(small), -1)
    same(F.log_softmax(T.tensor(small + np.float32(1e7)), -1), values(out))
    close(out, np.log(np_softmax(small.astype(np.float64), -1)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["LogSigmoid", "Hardsigmoid", "Hardshrink", "Softshrink", "Hardswish", "Softplus",
                                  "SiLU", "Hardtanh", "Mish", "ELU", "PReLU", "GLU", "GELU", "LeakyReLU",
                                  "Threshold", "Softmax"])
def test_float16_activations_against_float32(T, nn, name):
    module = nn.Threshold(0.1, 20) if name == "Threshold" else nn.Softmax(1) if name == "Softmax" else \
        getattr(nn, name)()
    rng = np.random.default_rng(37)
    x_np = rng.standard_normal((1, 3, 4, 6)).astype(np.float16)
    x = T.tensor(x_np, requires_grad=True)
    out = module.to(T.float16)(x)
    g = T.tensor(rng.standard_normal(tuple(out.shape)).astype(np.float16))
    out.backward(g)
    x32 = T.tensor(x_np.astype(np.float32), requires_grad=True)
    out32 = module.float()(x32)
    out32.backward(g.float())
    assert str(out.dtype).endswith("float16") and str(x.grad.dtype).endswith("float16")
    close(out.float(), values(out32).astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3)
    close(x.grad.float(), values(x32.grad).astype(np.float16).astype(np.float32), rtol=4e-3, atol=4e-3)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_grid_sample_with_an_infinite_coordinate(T, F, dtype):
    d = getattr(T, dtype)
    image = T.arange(27, 0, -1, dtype=d).view(1, 1, 3, 3, 3).requires_grad_()
    identity = T.tensor([[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]], dtype=d)
    grid = F.affine_grid(identity, (1, 1, 3, 3, 3), align_corners=False)
    grid[:, 1, 1, 1, 0] = float("inf")
    out = F.grid_sample(image, grid, padding_mode="zeros", align_corners=False)
    expected = np.arange(27, 0, -1, dtype=np.float64).reshape(1, 1, 3, 3, 3)
    expected[0, 0, 1, 1, 1] = 0  # the infinite point samples nothing
    close(out.double(), expected, rtol=0, atol=0.005 if dtype == "float16" else 1e-5)
    out.backward(T.ones_like(out))
    close(image.grad.double(), (expected != 0).astype(np.float64), rtol=0, atol=0.005)


def test_grid_sample_far_away_nan_and_inf_coordinates(T, F):
    # a huge affine map and far-away points sample zeros, with zero gradients
    image = T.zeros(1, 1, 4, 4, requires_grad=True)
    grid = F.affine_grid(T.tensor([[[-1.0e20, 0.0, 0.0], [0.0, -1.0e20, 0.0]]]), (1, 1, 4, 4), align_corners=False)
    out = F.grid_sample(image, grid, align_corners=False)
    out.backward(T.ones_like(out))
    same(out, np.zeros((1, 1, 4, 4), np.float32))
    same(image.grad, np.zeros((1, 1, 4, 4), np.float32))
    image = T.rand(1, 1, 12, 16, requires_grad=True)
    far = T.tensor([[-10059144.0, 67680944.0], [67680944.0, 67680944.0]]).unsqueeze(0).unsqueeze(0)
    out = F.grid_sample(image, far, align_corners=False)
    out.backward(T.ones_like(out))
    same(out, [[[[0.0, 0.0]]]])
    assert values(image.grad).sum() == 0
    # NaN and inf, nearest: zeros in every padding mode
    for dtype in (T.float32, T.float64):
        grid = T.tensor([[[[float("nan"), 0], [0, float("inf")]]]], dtype=dtype)
        for padding_mode in ("reflection", "border", "zeros"):
            out = F.grid_sample(T.zeros(1, 1, 3, 3, dtype=dtype), grid, mode="nearest", padding_mode=padding_mode,
                                align_corners=False)
            same(out, np.zeros((1, 1, 1, 2)))
    # the corners of a volume, align_corners=False: each point is ⅛ of the corner voxel (the rest padding)
    out = F.grid_sample(T.ones(1, 1, 2, 5, 4), T.full((1, 2, 2, 2, 3), 1.0), align_corners=False)
    same(out, np.full((1, 1, 2, 2, 2), 0.125, np.float32))


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_of_a_strided_view_as_of_a_copy(T, F, mode, padding_mode, align_corners):
    rng = np.random.default_rng(3)
    big = T.tensor(rng.random((1, 1, 6, 40)))
    view = big[..., 3::8].detach().requires_grad_()  # every 8th column: a view with a stride of 8
    copy = T.tensor(np.ascontiguousarray(values(big)[..., 3::8]), requires_grad=True)
    coords = T.tensor(rng.random((1, 4, 4, 2)) * 2.4 - 1.2)
    a = F.grid_sample(copy, coords, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    b = F.grid_sample(view, coords, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    a.sum().backward()
    b.sum().backward()
    same(b, values(a))
    same(view.grad, values(copy.grad))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gumbel_softmax_draws_and_straight_through_gradient(T, F, dtype):
    d = getattr(T, dtype)
    T.manual_seed(0)
    for shape, dim, draws in (([5], 0, 1), ([5], -1, 1), ([5, 4], 1, 5), ([5, 4, 3], 1, 15), ([5, 4, 3], -1, 20)):
        y = F.gumbel_softmax(T.randn(shape, dtype=d), hard=True, dim=dim)
        assert tuple(y.shape) == tuple(shape) and values(y).min() >= 0
        assert values(y).sum() == draws and set(np.unique(values(y))) <= {0.0, 1.0}
    # hard and soft draws from the same stream: the same gradient (hard is y_hard - y_soft.detach() + y_soft)
    soft_logits = T.zeros(10, 10, dtype=d, requires_grad=True)
    hard_logits = T.zeros(10, 10, dtype=d, requires_grad=True)
    state = T.random.get_rng_state()
    F.gumbel_softmax(soft_logits, hard=False).sum().backward()
    T.random.set_rng_state(state)
    F.gumbel_softmax(hard_logits, hard=True).sum().backward()
    close(hard_logits.grad, values(soft_logits.grad), rtol=0, atol=2 * np.finfo(dtype).eps)
    # the sum of a softmax is 1 whatever the logits: the gradient of the sum is 0
    close(soft_logits.grad, np.zeros((10, 10)), rtol=0, atol=1e-6)
    # the frequencies follow the softmax: 300 draws of softmax([0.2, 0.8, 0.1]), a 99% test on each count
    logits = T.tensor([[0.2, 0.8, 0.1]], dtype=d)
    counts = sum(values(F.gumbel_softmax(logits, hard=True)) for _ in range(300))
    probs = np_softmax(np.array([[0.2, 0.8, 0.1]]), -1)
    assert counts.sum() == 300
    assert (np.abs(counts - 300 * probs) / np.sqrt(300 * probs * (1 - probs))).max() < 2.58


def test_recurrent_layers_backward_again_on_a_retained_graph(T, nn):
    T.manual_seed(0)
    for rnn in (nn.LSTM(10, 20, num_layers=2), nn.GRU(10, 20, num_layers=2), nn.RNN(10, 20, num_layers=2)):
        rnn = rnn.double()
        x = T.randn(5, 6, 10, dtype=T.float64, requires_grad=True)
        output = rnn(x)[0]
        output.sum().backward(retain_graph=True)
        first = [values(x.grad).copy()] + [values(p.grad).copy() for p in rnn.parameters()]
        for _ in range(2):
            rnn.zero_grad()
            x.grad.zero_()
            output.sum().backward(retain_graph=True)
            for before, now in zip(first, [x.grad] + [p.grad for p in rnn.parameters()]):
                same(now, before)


def test_lstm_state_from_before_proj_size(T, nn):
    # an LSTM pickled by PyTorch 1.7 has no proj_size: __setstate__ supplies 0
    T.manual_seed(0)
    lstm = nn.LSTM(2, 3)
    x = T.randn(4, 5, 2)
    expected = lstm(x)[0]
    state = dict(lstm.__dict__)
    del state["proj_size"]
    loaded = nn.LSTM(2, 3)
    loaded.__setstate__(state)
    assert loaded.proj_size == 0
    same(loaded(x)[0], values(expected))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("module_form", [True, False])
def test_ctc_loss_without_a_batch_dimension(T, nn, F, reduction, module_form):
    T.manual_seed(0)
    log_probs = T.randn(40, 1, 3).log_softmax(2).detach()
    targets = T.randint(1, 2, (1, 12), dtype=T.int32)
    if module_form:
        ctc = nn.CTCLoss(reduction=reduction, zero_infinity=True)
    else:
        def ctc(*args):
            return F.ctc_loss(*args, reduction=reduction, zero_infinity=True)
    padded, flat, unbatched = (log_probs.clone().requires_grad_() for _ in range(3))
    losses = [ctc(padded, targets, [40], [12]), ctc(flat, targets.squeeze(0), [40], [12]),
              ctc(unbatched.squeeze(1), targets.squeeze(0), T.tensor(40), T.tensor(12))]
    for loss in losses:
        loss.backward()
    assert tuple(losses[0].shape) == tuple(losses[1].shape) == ((1,) if reduction == "none" else ())
    assert tuple(losses[2].shape) == ()
    close(losses[1], values(losses[0]), rtol=0, atol=1e-4)
    close(losses[2], values(losses[0]).reshape(()), rtol=0, atol=1e-4)
    close(flat.grad, values(padded.grad), rtol=0, atol=1e-4)
    close(unbatched.grad, values(padded.grad), rtol=0, atol=1e-4)
    # one label (class 1) twelve times over forty frames: a finite positive loss, 'mean' divided by 12
    total = values(losses[0]).sum()
    assert np.isfinite(total) and total > 0
    if reduction == "mean":
        close(ctc(log_probs, targets, [40], [12]) * 12, values(F.ctc_loss(log_probs, targets, [40], [12],
                                                                          reduction="sum")), rtol=1e-6)


def test_ctc_loss_of_empty_targets_is_minus_the_blank_path(T, F):
    T.manual_seed(0)
    log_probs = T.randn(50, 3, 15, dtype=T.float64).log_softmax(2)
    blank_path = -values(log_probs).sum(0)[:, 0]  # the only alignment of an empty target: blank every frame
    loss = F.ctc_loss(log_probs, T.zeros(0, dtype=T.long), [50, 50, 50], [0, 0, 0], reduction="none")
    assert (values(loss) >= 0).all()
    close(loss, blank_path, rtol=1e-12)
    loss = F.ctc_loss(log_probs, T.randint(1, 15, (9,)), [50, 50, 50], [0, 9, 0], reduction="none")
    assert (values(loss) >= 0).all()
    close(loss[[0, 2]], blank_path[[0, 2]], rtol=1e-12)


def test_batch_norm_eval_affine_and_without_running_stats(T, nn):
    rng = np.random.default_rng(0)
    # eval mode: the running statistics (0 and 1), twice the same output and gradient
    bn = nn.BatchNorm1d(3)
    bn.eval()
    for ndim in (2, 3):
        x_np, g_np = rng.random((3,) * ndim).astype(np.float32), rng.random((3,) * ndim).astype(np.float32)
        x = T.tensor(x_np, requires_grad=True)
        out = bn(x)
        out.backward(T.tensor(g_np))
        scale = np.float32(1 / np.sqrt(1 + 1e-5))
        close(out, x_np * scale, rtol=1e-6)
        close(x.grad, g_np * scale, rtol=1e-6)
    # track_running_stats=False: batch statistics in train and eval mode alike
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    assert bn.running_mean is None and bn.running_var is None
    x_np, g_np = rng.random((4, 3)).astype(np.float32), rng.random((4, 3)).astype(np.float32)
    outs, grads = [], []
    for train in (True, False):
        bn.train(train)
        x = T.tensor(x_np, requires_grad=True)
        out = bn(x)
        out.backward(T.tensor(g_np))
        outs.append(values(out))
        grads.append(values(x.grad))
    same(outs[1], outs[0])
    same(grads[1], grads[0])
    close(outs[0], (x_np - x_np.mean(0)) / np.sqrt(x_np.var(0) + 1e-5), rtol=1e-5, atol=1e-6)
    # affine with weight 1 and bias 0 is no affine at all
    plain, affine = nn.BatchNorm1d(3, affine=False), nn.BatchNorm1d(3, affine=True)
    for ndim in (2, 3):
        x_np = rng.random((3,) * ndim).astype(np.float32)
        results = []
        for module in (affine, plain):
            x = T.tensor(x_np, requires_grad=True)
            out = module(x)
            out.backward(T.ones_like(x))
            results.append((values(out), values(x.grad)))
        same(results[0][0], results[1][0])
        same(results[0][1], results[1][1])


def test_batch_norm_cumulative_average_and_statistics_updates(T, nn):
    rng = np.random.default_rng(1)
    first, second = rng.random((4, 3)).astype(np.float32), rng.random((4, 3)).astype(np.float32)
    bn = nn.BatchNorm1d(3, momentum=None)  # a simple average of every batch's statistics
    out1 = bn(T.tensor(first))
    mean1, var1 = values(bn.running_mean).copy(), values(bn.running_var).copy()
    close(mean1, first.mean(0), rtol=1e-6)
    close(var1, first.var(0, ddof=1), rtol=1e-5)  # (the running variance is unbiased)
    bn.reset_running_stats()
    same(bn.running_mean, [0.0, 0.0, 0.0])
    same(bn.running_var, [1.0, 1.0, 1.0])
    assert int(values(bn.num_batches_tracked)) == 0
    out2 = bn(T.tensor(second))
    mean2, var2 = values(bn.running_mean).copy(), values(bn.running_var).copy()
    bn.reset_running_stats()
    same(bn(T.tensor(first)), values(out1))
    same(bn(T.tensor(second)), values(out2))
    close(bn.running_mean, (mean1 + mean2) / 2, rtol=1e-6)
    close(bn.running_var, (var1 + var2) / 2, rtol=1e-6)
    # a training pass moves the statistics and counts the batch; an eval pass does neither
    bn = nn.BatchNorm1d(3)
    bn(T.tensor(first))
    close(bn.running_mean, 0.1 * first.mean(0), rtol=1e-6)
    assert int(values(bn.num_batches_tracked)) == 1
    bn.eval()
    mean = values(bn.running_mean).copy()
    bn(T.tensor(second))
    same(bn.running_mean, mean)
    assert int(values(bn.num_batches_tracked)) == 1


def np_smoothed_cross_entropy(x, labels, smoothing, weight, ignore_index, reduction):
    """PyTorch's label-smoothed cross entropy by hand: (1 - ε) w_y (-log p_y) + ε/C Σ_c w_c (-log p_c) per row,
    ignored rows 0; 'mean' divides by the total weight w_y of the rows kept."""
    logp = np.log(np_softmax(x, 1))
    classes = x.shape[1]
    w = np.ones(classes) if weight is None else weight
    keep = labels != ignore_index
    safe = np.where(keep, labels, 0)
    nll = -w[safe] * logp[np.arange(len(labels)), safe]
    smooth = -(w * logp).sum(1) / classes
    per = np.where(keep, (1 - smoothing) * nll + smoothing * smooth, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / w[safe][keep].sum()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_label_smoothing_with_weight_and_ignore_index(T, nn, reduction, weighted):
    weight = np.array([0.3, 0.6], np.float32) if weighted else None
    first = np.array([[0.3, 0.4], [1, 2]], np.float32)
    second = np.array([[0.3, 0.6], [1, 2]], np.float32)  # differs in the ignored row only
    for smoothing, (ignore_index, label) in itertools.product((0.05, 0.15), ((-100, -100), (-2, -2), (2, 2))):
        loss = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing, ignore_index=ignore_index,
                                   weight=None if weight is None else T.tensor(weight))
        labels = np.array([label, 1])
        out = loss(T.tensor(first), T.tensor(labels))
        close(loss(T.tensor(second), T.tensor(labels)), values(out), rtol=0, atol=0)
        close(out, np_smoothed_cross_entropy(first.astype(np.float64), labels, smoothing, weight, ignore_index,
                                             reduction), rtol=1e-6, atol=1e-7)
        if reduction != "none":  # the ignored row is not counted in the mean's denominator either
            close(loss(T.tensor(second[1:]), T.tensor(labels[1:])), values(out), rtol=1e-6, atol=0)


def test_softplus_with_a_low_threshold(T, nn):
    # threshold=1 and β=1: above x = 1 softplus is x itself, below it log(1 + eˣ)
    x = T.tensor([0.9, 1.5], dtype=T.float64, requires_grad=True)
    y = nn.Softplus(threshold=1).double()(x)
    y.sum().backward()
    close(y, [np.log1p(np.exp(0.9)), 1.5], rtol=1e-14)
    close(x.grad, [1 / (1 + np.exp(-0.9)), 1.0], rtol=1e-14)
    assert T.autograd.gradcheck(nn.Softplus(threshold=1).double(), (T.tensor(0.9, dtype=T.float64,
                                                                             requires_grad=True),))
