"""Losses, ported from PyTorch's test/test_nn.py (TestNN and TestNNDeviceType on CPU): reductions,
class weights, ignore_index, label smoothing, probability targets, edge shapes, and the errors and
warnings with their messages. Expectations are NumPy-computed, so each test checks chainrule's `nn`
and, where it is installed, PyTorch's against the same numbers."""

import warnings

import numpy as np
import pytest

from autograd.errors import ShapeError
from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F
on_chainrule = ported_nn.on_chainrule


def log_softmax(x, axis=1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def reduce(loss, reduction, weight_sum=None):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / weight_sum if weight_sum is not None else loss.mean()


X = np.array([[0.2, -1.0, 0.5, 2.0], [1.5, 0.3, -0.7, 0.0], [-0.4, 0.9, 1.1, -2.0]])
Y = np.array([3, 0, 2])
W = np.array([0.5, 2.0, 1.0, 3.0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_and_cross_entropy_reductions_and_weights(T, nn, F, reduction, weighted):
    w = W if weighted else np.ones(4)
    lp = log_softmax(X)
    loss = -lp[np.arange(3), Y] * w[Y]
    expected = reduce(loss, reduction, w[Y].sum())
    kwargs = {"weight": T.tensor(W)} if weighted else {}
    close(F.cross_entropy(T.tensor(X), T.tensor(Y), reduction=reduction, **kwargs), expected, rtol=1e-12)
    close(F.nll_loss(T.tensor(lp), T.tensor(Y), reduction=reduction, **kwargs), expected, rtol=1e-12)
    close(nn.CrossEntropyLoss(reduction=reduction, **kwargs)(T.tensor(X), T.tensor(Y)), expected, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_ignore_index(T, F, reduction):
    y = np.array([3, -100, 2])
    keep = y != -100
    lp = log_softmax(X)
    loss = np.where(keep, -lp[np.arange(3), np.where(keep, y, 0)] * W[np.where(keep, y, 0)], 0.0)
    expected = reduce(loss, reduction, (W[y[keep]]).sum())
    close(F.cross_entropy(T.tensor(X), T.tensor(y), weight=T.tensor(W), reduction=reduction), expected,
          rtol=1e-12)
    y2 = np.array([3, 1, 1])
    keep = y2 != 1
    loss = np.where(keep, -lp[np.arange(3), y2], 0.0)
    close(F.cross_entropy(T.tensor(X), T.tensor(y2), ignore_index=1, reduction=reduction),
          reduce(loss, reduction, keep.sum()), rtol=1e-12)


def test_cross_entropy_all_ignored_is_nan_for_mean(T, F):
    x = T.tensor(X, requires_grad=True)
    y = T.tensor([-100, -100, -100])
    out = F.cross_entropy(x, y)
    assert np.isnan(values(out))
    same(F.cross_entropy(x, y, reduction="sum"), 0.0)
    F.cross_entropy(x, y, reduction="sum").backward()
    same(x.grad, np.zeros((3, 4)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_label_smoothing(T, F, reduction, weighted):
    eps = 0.15
    w = W if weighted else np.ones(4)
    lp = log_softmax(X)
    nll = -lp[np.arange(3), Y] * w[Y]
    smooth = -(lp * w).sum(1)
    if reduction == "mean":
        expected = (1 - eps) * nll.sum() / w[Y].sum() + eps / 4 * smooth.sum() / w[Y].sum()
    else:
        expected = reduce((1 - eps) * nll + eps / 4 * smooth, reduction)
    kwargs = {"weight": T.tensor(W)} if weighted else {}
    close(F.cross_entropy(T.tensor(X), T.tensor(Y), label_smoothing=eps, reduction=reduction, **kwargs), expected,
          rtol=1e-12)


def test_cross_entropy_label_smoothing_with_ignore_index(T, F):
    eps = 0.1
    y = np.array([3, 1, 2])
    lp = log_softmax(X)
    keep = y != 1
    per = (1 - eps) * -lp[np.arange(3), y] + eps / 4 * -lp.sum(1)
    close(F.cross_entropy(T.tensor(X), T.tensor(y), ignore_index=1, label_smoothing=eps), per[keep].mean(),
          rtol=1e-12)
    close(F.cross_entropy(T.tensor(X), T.tensor(y), ignore_index=1, label_smoothing=eps, reduction="none"),
          np.where(keep, per, 0.0), rtol=1e-12)


def test_cross_entropy_label_smoothing_errors(T, F):
    raises(RuntimeError, "label_smoothing must be between 0.0 and 1.0(. Got:|, got) 1.5", F.cross_entropy,
           T.tensor(X), T.tensor(Y), label_smoothing=1.5)
    if on_chainrule(T):  # PyTorch 2.13 takes a negative label_smoothing (its check is one-sided)
        raises(RuntimeError, "label_smoothing must be between 0.0 and 1.0, got -0.1", F.cross_entropy,
               T.tensor(X), T.tensor(Y), label_smoothing=-0.1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_probability_targets(T, F, reduction):
    p = np.abs(X[::-1]).copy()
    p = p / p.sum(1, keepdims=True)
    lp = log_softmax(X)
    loss = -(lp * p * W).sum(1)
    expected = reduce(loss, reduction)          # mean divides by the batch size, whatever the weights
    close(F.cross_entropy(T.tensor(X), T.tensor(p), weight=T.tensor(W), reduction=reduction), expected, rtol=1e-12)
    eps = 0.2
    ps = p * (1 - eps) + eps / 4
    close(F.cross_entropy(T.tensor(X), T.tensor(p), label_smoothing=eps, reduction=reduction),
          reduce(-(lp * ps).sum(1), reduction), rtol=1e-12)


def test_cross_entropy_probability_targets_shape_errors(T, F):
    raises(RuntimeError, "0D or 1D target tensor expected, multi-target not supported|a float target is read as "
           r"class probabilities and must have the input's shape \(3, 4\), got \(3, 5\)", F.cross_entropy,
           T.tensor(X), T.tensor(np.ones((3, 5)) / 5))
    raises(RuntimeError, "ignore_index is not supported for floating point target", F.cross_entropy,
           T.tensor(X), T.tensor(np.ones((3, 4)) / 4), ignore_index=1)


def test_cross_entropy_spatial_and_unbatched(T, F):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    y = rng.integers(0, 3, (2, 4, 5))
    lp = log_softmax(x)
    picked = np.take_along_axis(lp, y[:, None], 1)[:, 0]
    close(F.cross_entropy(T.tensor(x), T.tensor(y)), -picked.mean(), rtol=1e-12)
    close(F.cross_entropy(T.tensor(x), T.tensor(y), reduction="none"), -picked, rtol=1e-12)
    close(F.nll_loss(T.tensor(lp), T.tensor(y), reduction="sum"), -picked.sum(), rtol=1e-12)
    # one sample without a batch dimension: (C,) and a 0-d target
    close(F.cross_entropy(T.tensor(X[0]), T.tensor(3)), -log_softmax(X[0], 0)[3], rtol=1e-12)
    close(F.nll_loss(T.tensor(X[0]), T.tensor(2)), -X[0, 2], rtol=1e-12)


def test_cross_entropy_gradient(T, F):
    x = T.tensor(X, requires_grad=True)
    F.cross_entropy(x, T.tensor(Y), weight=T.tensor(W)).backward()
    p = np.exp(log_softmax(X))
    onehot = np.eye(4)[Y]
    expected = (p - onehot) * W[Y][:, None] / W[Y].sum()
    close(x.grad, expected, rtol=1e-10, atol=1e-12)


def test_nll_loss_mismatched_batch(T, F):
    x = T.randn((10, 3), requires_grad=True)
    t = T.zeros((3,), dtype=T.int64)
    # chainrule names the shapes: "input of shape (10, 3) needs a target of shape (10,), got (3,)"
    words = r"Expected input batch_size \(10\) to match target batch_size \(3\)|needs a target of shape \(10,\)"
    raises(ValueError, words, F.nll_loss, x, t)
    raises(ValueError, words, F.cross_entropy, x, t)


def test_nll_loss_out_of_bounds_ignore_index(T, F):
    x = T.randn(6, 3, requires_grad=True)
    t = T.tensor([0, 1, 255, 0, 1, 2])
    for reduction in ["mean", "none"]:
        F.nll_loss(x, t, ignore_index=255, reduction=reduction).sum().backward()
    out = F.nll_loss(x, t, ignore_index=255, reduction="none")
    assert values(out)[2] == 0


def test_nll_loss_target_out_of_bounds(T, F):
    x = T.randn(3, 4)
    raises(IndexError, "[Tt]arget 5 is out of bounds", F.nll_loss, x, T.tensor([0, 5, 1]))
    raises(IndexError, "[Tt]arget -1 is out of bounds", F.nll_loss, x, T.tensor([0, -1, 1]))


def test_nll_loss_invalid_target_dim(T, F):
    x = T.randn((10, 3))
    t = T.zeros((10, 2), dtype=T.int64)
    raises(RuntimeError, r"target tensor expected, multi-target not supported|needs a target of shape \(10,\), got "
           r"\(10, 2\)", F.nll_loss, x, t)


def test_nll_loss_invalid_weights(T, F):
    x = T.randn((10, 3))
    t = T.empty(10, dtype=T.int64).random_(0, 3)
    msg = "weight tensor should be defined either for all 3 classes or no classes|given for 3 classes; it needs one " \
        "entry per class"
    for weight in (T.randn(4), T.randn(1), T.randn(2)):
        raises(RuntimeError, msg, F.nll_loss, x, t, weight=weight)


def test_nll_loss_target_dtypes(T, F):
    x = T.tensor([[3.0, 2.0], [1.0, 0.0]])
    same(F.nll_loss(x, T.tensor([0, 1], dtype=T.uint8), reduction="none"), [-3.0, -0.0])   # Byte is taken
    raises(RuntimeError, "expected target dtype to be Long or Byte, but got Int", F.cross_entropy, x,
           T.tensor([0, 1], dtype=T.int32))
    raises(RuntimeError, "expected target dtype to be Long or Byte, but got Float|class indices must be integers",
           F.nll_loss, x, T.tensor([0.0, 1.0]))


def test_nll_loss_empty(T, F):
    x = T.randn(0, 3, requires_grad=True)
    t = T.zeros(0, dtype=T.int64)
    assert np.isnan(values(F.nll_loss(x, t)))
    same(F.nll_loss(x, t, reduction="sum"), 0.0)
    assert tuple(F.nll_loss(x, t, reduction="none").shape) == (0,)
    F.nll_loss(x, t, reduction="sum").backward()
    assert tuple(x.grad.shape) == (0, 3)


def test_invalid_reduction_strings(T, F):
    x = T.rand(2, 3)
    t = T.tensor([0, 2])
    for fn, args in ((F.nll_loss, (x, t)), (F.cross_entropy, (x, t)), (F.mse_loss, (x, x)), (F.l1_loss, (x, x)),
                     (F.smooth_l1_loss, (x, x)), (F.binary_cross_entropy, (x, x)),
                     (F.binary_cross_entropy_with_logits, (x, x)), (F.kl_div, (x, x))):
        raises(ValueError, "xyz is not a valid value for reduction|reduction must be 'mean', 'sum' or 'none', got "
               "'xyz'", fn, *args, reduction="xyz")


def test_legacy_size_average_and_reduce(T, F):
    x = T.tensor([[1.0, 2.0], [3.0, 5.0]])
    y = T.zeros(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close(F.mse_loss(x, y, size_average=False), 39.0)
        close(F.mse_loss(x, y, reduce=False), [[1.0, 4.0], [9.0, 25.0]])
        close(F.mse_loss(x, y, size_average=True), 9.75)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pointwise_losses(T, F, reduction):
    a = np.array([[0.3, -1.2, 2.5], [0.05, 1.0, -0.4]])
    b = np.array([[0.0, -0.2, 1.0], [0.5, 1.0, 1.6]])
    d = a - b
    ad = np.abs(d)
    close(F.l1_loss(T.tensor(a), T.tensor(b), reduction=reduction), reduce(ad, reduction), rtol=1e-12)
    close(F.mse_loss(T.tensor(a), T.tensor(b), reduction=reduction), reduce(d * d, reduction), rtol=1e-12)
    for beta in (1.0, 0.5, 0.0):
        sl1 = ad - 0.5 * beta if beta == 0 else np.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)
        close(F.smooth_l1_loss(T.tensor(a), T.tensor(b), beta=beta, reduction=reduction), reduce(sl1, reduction),
              rtol=1e-12)
    for delta in (1.0, 0.3):
        hub = np.where(ad < delta, 0.5 * d * d, delta * (ad - 0.5 * delta))
        close(F.huber_loss(T.tensor(a), T.tensor(b), delta=delta, reduction=reduction), reduce(hub, reduction),
              rtol=1e-12)
    close(F.soft_margin_loss(T.tensor(a), T.tensor(np.sign(b) + (b == 0)), reduction=reduction),
          reduce(np.log1p(np.exp(-(np.sign(b) + (b == 0)) * a)), reduction), rtol=1e-12)


def test_l1_loss_correct(T, nn):
    for _ in range(3):
        input = T.rand(2, 3, 5, 7)
        expected = np.abs(values(input)).mean()
        close(nn.L1Loss()(input, T.zeros_like(input)), expected, rtol=1e-6)
        close(nn.L1Loss()(T.zeros_like(input), input), expected, rtol=1e-6)


def test_smoothl1loss_negative_beta_not_supported(T, F):
    raises(RuntimeError, "smooth_l1_loss does not support negative values for beta.", F.smooth_l1_loss,
           T.randn(2, 3), T.randn(2, 3), beta=-1.0)


def test_huber_loss_invalid_delta(T, F):
    for delta in (-1.0, 0.0):
        raises(RuntimeError, "huber_loss does not support non-positive values for delta.", F.huber_loss,
               T.randn(2, 3), T.randn(2, 3), delta=delta)


def test_mse_loss_size_warning(T, F):
    i = T.randn((10, 1), requires_grad=True)
    t = T.randn((10,))
    if on_chainrule(T):  # README: mismatched shapes in losses raise where PyTorch warns and broadcasts
        raises(ShapeError, r"input of shape \(10, 1\) and target of shape \(10,\) differ", F.mse_loss, i, t)
        return
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        F.mse_loss(i, t)
    assert any("Using a target size" in str(x.message) and "that is different to the input size" in str(x.message)
               for x in w)


def test_pointwise_loss_broadcast(T, F):
    for fn in (F.l1_loss, F.mse_loss, F.smooth_l1_loss):
        input = T.randn(2, 1, requires_grad=True)
        for target in (T.randn(2, 10),):
            if on_chainrule(T):  # README: mismatched shapes in losses raise (PyTorch warns and broadcasts)
                raises(ShapeError, "differ", fn, input, target, reduction="none")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fn(input, target, reduction="none")
                expected = fn(input.expand(target.size()), target, reduction="none")
            close(out, values(expected))


def test_pointwise_loss_target_grad_none_reduction(T, F):
    i = T.randn(5, 10)
    t = T.randn(5, 10, requires_grad=True)
    assert F.mse_loss(i, t, reduction="none").size() == t.size()
    assert F.l1_loss(i, t, reduction="none").size() == t.size()
    F.mse_loss(i, t).backward()
    close(t.grad, 2 * (values(t) - values(i)) / 50, rtol=1e-5)


def test_bce_loss_always_nonnegative(T, F):
    target = T.ones(5)
    input = T.ones(5)
    assert float((F.binary_cross_entropy(input, target, reduction="none") < 0).sum()) == 0
    target = T.zeros(5)
    input = T.zeros(5)
    assert float((F.binary_cross_entropy(input, target, reduction="none") < 0).sum()) == 0


def test_bce_loss_clamps_log_at_minus_100(T, F):
    out = F.binary_cross_entropy(T.tensor([0.0, 1.0]), T.tensor([1.0, 0.0]), reduction="none")
    same(out, [100.0, 100.0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_and_bce_with_logits(T, F, reduction):
    z = np.array([[0.3, -1.2, 2.5], [0.05, 1.0, -0.4]])
    y = np.array([[0.0, 1.0, 0.25], [1.0, 0.0, 0.5]])
    w = np.array([0.5, 1.0, 2.0])
    pw = np.array([3.0, 1.0, 0.5])
    p = 1 / (1 + np.exp(-z))
    bce = -w * (y * np.log(p) + (1 - y) * np.log(1 - p))
    close(F.binary_cross_entropy(T.tensor(p), T.tensor(y), weight=T.tensor(w), reduction=reduction),
          reduce(bce, reduction), rtol=1e-10)
    close(F.binary_cross_entropy_with_logits(T.tensor(z), T.tensor(y), weight=T.tensor(w), reduction=reduction),
          reduce(bce, reduction), rtol=1e-10)
    with_pos = -w * (pw * y * np.log(p) + (1 - y) * np.log(1 - p))
    close(F.binary_cross_entropy_with_logits(T.tensor(z), T.tensor(y), weight=T.tensor(w),
                                             pos_weight=T.tensor(pw), reduction=reduction),
          reduce(with_pos, reduction), rtol=1e-10)


def test_bce_with_logits_stable_for_large_logits(T, F):
    z = T.tensor([1000.0, -1000.0, 0.0])
    y = T.tensor([0.0, 1.0, 1.0])
    close(F.binary_cross_entropy_with_logits(z, y, reduction="none"), [1000.0, 1000.0, np.log(2)])


def test_bce_with_logits_raises_if_target_and_input_are_different_size(T, nn):
    target = T.rand(5)
    input = T.rand(5, 1)
    raises(ValueError, r"Target size \(torch.Size\(\[5\]\)\) must be the same as input size "
           r"\(torch.Size\(\[5, 1\]\)\)|input of shape \(5, 1\) and target of shape \(5,\) differ",
           nn.BCEWithLogitsLoss(), input, target)
    target = T.rand(5, 1)
    input = T.rand(5)
    raises(ValueError, r"Target size \(torch.Size\(\[5, 1\]\)\) must be the same as input size|input of shape "
           r"\(5,\) and target of shape \(5, 1\) differ", nn.BCEWithLogitsLoss(), input, target)


def test_bce_with_logits_gives_same_result_as_sigmoid_and_bce_loss(T, nn):
    sigmoid = nn.Sigmoid()
    target = T.rand(64, 4)
    output = T.rand(64, 4) - 0.5
    close(nn.BCEWithLogitsLoss()(output, target), values(nn.BCELoss()(sigmoid(output), target)), rtol=1e-5)
    weight = T.rand(4)
    close(nn.BCEWithLogitsLoss(weight)(output, target), values(nn.BCELoss(weight)(sigmoid(output), target)),
          rtol=1e-5)
    target = T.zeros(4, 1, dtype=T.float)
    output = T.empty(4, 1, dtype=T.float).fill_(-100)
    close(nn.BCEWithLogitsLoss()(output, target), values(nn.BCELoss()(sigmoid(output), target)), rtol=1e-5)
    close(nn.BCEWithLogitsLoss(reduction="none")(output, target),
          values(nn.BCELoss(reduction="none")(sigmoid(output), target)), rtol=1e-5)
    weight = T.rand(1, dtype=T.float)
    close(nn.BCEWithLogitsLoss(weight)(output, target), values(nn.BCELoss(weight)(sigmoid(output), target)),
          rtol=1e-5)


def test_bce_with_logits_broadcasts_pos_weights(T, nn):
    target = T.rand(64, 4)
    output = T.rand(64, 4) - 0.5
    pos_weight = T.rand(4)
    out1 = nn.BCEWithLogitsLoss(pos_weight=pos_weight)(output, target)
    pos_weight1 = pos_weight.expand(1, 4)
    out2 = nn.BCEWithLogitsLoss(pos_weight=pos_weight1)(output, target)
    pos_weight2 = pos_weight.expand(64, 4)
    out3 = nn.BCEWithLogitsLoss(pos_weight=pos_weight2)(output, target)
    close(out1, values(out2), rtol=1e-6)
    close(out1, values(out3), rtol=1e-6)


def test_bce_with_logits_ones_in_pos_weights_are_the_same_as_none(T, nn):
    target = T.rand(64, 4)
    output = T.rand(64, 4) - 0.5
    pos_weight = T.ones(64, 4)
    close(nn.BCEWithLogitsLoss()(output, target), values(nn.BCEWithLogitsLoss(pos_weight=pos_weight)(output, target)))


def test_bce_loss_input_range(T, nn):
    bceloss = nn.BCELoss()
    target = T.rand(25, 25)
    output_valid = T.rand(25, 25)
    output_too_negative = output_valid - 1.0
    output_too_positive = output_valid + 1.0
    loss_valid = bceloss(output_valid, target)
    assert np.isfinite(values(loss_valid))
    raises(RuntimeError, "all elements of input should be between 0 and 1", bceloss, output_too_negative, target)
    raises(RuntimeError, "all elements of input should be between 0 and 1", bceloss, output_too_positive, target)


def test_bce_loss_size_mismatch(T, nn):
    bceloss = nn.BCELoss()
    a = T.rand(25)
    b = T.rand(25, 1)
    raises(ValueError, r"Using a target size \(torch.Size\(\[25, 1\]\)\) that is different to the input size "
           r"\(torch.Size\(\[25\]\)\) is deprecated. Please ensure they have the same size.|input of shape "
           r"\(25,\) and target of shape \(25, 1\) differ", bceloss, a, b)


def test_bce_weight_broadcast_and_grad(T, F):
    z = T.tensor([[0.3, -1.2], [2.0, 0.1]], requires_grad=True)
    y = T.tensor([[1.0, 0.0], [0.0, 1.0]])
    F.binary_cross_entropy_with_logits(z, y, reduction="sum").backward()
    p = 1 / (1 + np.exp(-values(z).astype(np.float64)))
    close(z.grad, p - values(y), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
def test_kl_div(T, F, reduction):
    lp = log_softmax(X)
    q = np.exp(log_softmax(X[::-1].copy()))
    pointwise = q * (np.log(q) - lp)
    expected = pointwise.sum() / 3 if reduction == "batchmean" else reduce(pointwise, reduction)
    close(F.kl_div(T.tensor(lp), T.tensor(q), reduction=reduction), expected, rtol=1e-12)
    close(F.kl_div(T.tensor(lp), T.tensor(np.log(q)), reduction=reduction, log_target=True), expected, rtol=1e-12)


def test_kl_div_zero_target_and_mean_warning(T, F, nn):
    out = F.kl_div(T.tensor([-1.0, -2.0]), T.tensor([0.0, 1.0]), reduction="none")
    same(out, [0.0, 2.0])                   # 0 * log 0 is 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        nn.KLDivLoss()(T.tensor([-1.0]), T.tensor([0.5]))
    assert any("reduction: 'mean' divides the total loss by both the batch size and the support size" in
               str(x.message) for x in w)


def test_KLDivLoss_batch_mean(T, nn):
    input_shape = (2, 5)
    log_prob1 = nn.functional.log_softmax(T.randn(input_shape), 1)
    prob2 = nn.functional.softmax(T.randn(input_shape), 1)
    loss = nn.KLDivLoss(reduction="batchmean")
    l = loss(log_prob1, prob2)
    loss_none_reduce = nn.KLDivLoss(reduction="sum")(log_prob1, prob2)
    close(l, values(loss_none_reduce) / input_shape[0], rtol=1e-6)


def test_cosine_embedding_loss(T, F):
    a = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]])
    b = np.array([[0.5, 1.0, 0.0], [1.0, 1.0, 1.0], [-2.0, -2.0, -1.0]])
    y = np.array([1, -1, -1])
    cos = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    for margin in (0.0, 0.3, -0.5):
        loss = np.where(y == 1, 1 - cos, np.maximum(0, cos - margin))
        for reduction in ("mean", "sum", "none"):
            close(F.cosine_embedding_loss(T.tensor(a), T.tensor(b), T.tensor(y), margin=margin,
                                          reduction=reduction), reduce(loss, reduction), rtol=1e-6)


def test_cosine_embedding_loss_error_on_diff_shapes(T, nn, request):
    input1 = T.empty((0, 0))
    input2 = T.empty((0,))
    target = T.empty((0,), dtype=T.int)
    raises(RuntimeError, r"1D target tensor expects 2D input tensors, but found inputs with sizes \[0, 0\] and "
           r"\[0\]", nn.CosineEmbeddingLoss(), input1, input2, target)


def test_cosine_embedding_loss_invalid_shape(T, F, request):
    input1 = T.randn(15, 10)
    input2 = T.randn(15, 10)
    target = T.randn(15, 1).sign()
    raises(RuntimeError, "0D or 1D target tensor expected, multi-target not supported", F.cosine_embedding_loss,
           input1, input2, target)
    raises(RuntimeError, r"1D target tensor expects 2D input tensors, but found inputs with sizes \[10\] and "
           r"\[10\]", F.cosine_embedding_loss, T.randn(10), T.randn(10), T.ones(10))
    raises(RuntimeError, r"0D target tensor expects 1D input tensors, but found inputs with sizes \[2, 5\] and "
           r"\[2, 5\]", F.cosine_embedding_loss, T.randn(2, 5), T.randn(2, 5), T.ones(()))


def test_margin_ranking_and_hinge_embedding(T, F):
    a = np.array([0.3, -1.0, 2.0, 0.5])
    b = np.array([0.1, 0.5, 2.5, 0.5])
    y = np.array([1.0, -1.0, 1.0, -1.0])
    for margin in (0.0, 0.4):
        mr = np.maximum(0, -y * (a - b) + margin)
        for reduction in ("mean", "sum", "none"):
            close(F.margin_ranking_loss(T.tensor(a), T.tensor(b), T.tensor(y), margin=margin, reduction=reduction),
                  reduce(mr, reduction), rtol=1e-12)
        he = np.where(y == 1, a, np.maximum(0, margin - a))
        close(F.hinge_embedding_loss(T.tensor(a), T.tensor(y), margin=margin, reduction="none"), he, rtol=1e-12)
        close(F.hinge_embedding_loss(T.tensor(a), T.tensor(y), margin=margin), he.mean(), rtol=1e-12)


def test_margin_ranking_loss_no_reduce(T, nn, request):
    i1 = T.randn(15).mul(10).requires_grad_()
    i2 = T.randn(15).mul(10).requires_grad_()
    target = T.randn(15).sign()
    out = nn.MarginRankingLoss(reduction="none")(i1, i2, target)
    close(out, np.maximum(0, -values(target) * (values(i1) - values(i2))), rtol=1e-6)
    raises(RuntimeError, "margin_ranking_loss : All input tensors should have same dimension but got sizes: "
           r"input1: (torch.)?Size\(\[15\]\), input2: (torch.)?Size\(\[15\]\), "
           r"target: (torch.)?Size\(\[15, 1\]\) ",
           nn.MarginRankingLoss(), i1, i2, target[:, None])


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_triplet_margin_loss(T, F, swap, p):
    rng = np.random.default_rng(3)
    a, pos, neg = (rng.standard_normal((4, 5)) for _ in range(3))
    eps = 1e-6

    def dist(u, v):
        return (np.abs(u - v + eps) ** p).sum(1) ** (1 / p)
    d_neg = dist(a, neg)
    if swap:
        d_neg = np.minimum(d_neg, dist(pos, neg))
    loss = np.maximum(0, dist(a, pos) - d_neg + 1.0)
    for reduction in ("mean", "sum", "none"):
        close(F.triplet_margin_loss(T.tensor(a), T.tensor(pos), T.tensor(neg), p=p, swap=swap, reduction=reduction),
              reduce(loss, reduction), rtol=1e-8)


def test_triplet_margin_with_distance_loss_default(T, F, nn):
    rng = np.random.default_rng(4)
    a, pos, neg = (T.tensor(rng.standard_normal((4, 5))) for _ in range(3))
    expected = F.triplet_margin_loss(a, pos, neg)
    close(F.triplet_margin_with_distance_loss(a, pos, neg), values(expected), rtol=1e-10)
    close(nn.TripletMarginWithDistanceLoss(distance_function=nn.PairwiseDistance())(a, pos, neg), values(expected),
          rtol=1e-10)
    raises(ValueError, "margin to be greater than 0, got -1.0 instead|margin must be greater than 0, got -1.0",
           F.triplet_margin_with_distance_loss, a, pos, neg, margin=-1.0)
    raises(ValueError, "TripletMarginWithDistanceLoss: expected margin to be greater than 0, got -1.0 instead",
           nn.TripletMarginWithDistanceLoss, margin=-1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_poisson_nll_loss_reduction_modes(T, F, reduction):
    x = np.array([0.5, 1.5, 2.5])
    t = np.array([1.0, 2.0, 3.0])
    close(F.poisson_nll_loss(T.tensor(x), T.tensor(t), reduction=reduction), reduce(np.exp(x) - t * x, reduction),
          rtol=1e-12)
    eps = 1e-8
    close(F.poisson_nll_loss(T.tensor(x), T.tensor(t), log_input=False, reduction=reduction),
          reduce(x - t * np.log(x + eps), reduction), rtol=1e-12)
    stirling = np.where(t > 1, t * np.log(t) - t + 0.5 * np.log(2 * np.pi * t), 0.0)
    close(F.poisson_nll_loss(T.tensor(x), T.tensor(t), full=True, reduction=reduction),
          reduce(np.exp(x) - t * x + stirling, reduction), rtol=1e-12)


def test_gaussian_nll_loss(T, F):
    x = np.array([[0.5, 1.0], [2.0, -1.0]])
    t = np.array([[0.0, 1.5], [2.5, 0.0]])
    var = np.array([[0.5, 2.0], [1.0, 1e-9]])
    v = np.maximum(var, 1e-6)
    loss = 0.5 * (np.log(v) + (x - t) ** 2 / v)
    close(F.gaussian_nll_loss(T.tensor(x), T.tensor(t), T.tensor(var), reduction="none"), loss, rtol=1e-12)
    close(F.gaussian_nll_loss(T.tensor(x), T.tensor(t), T.tensor(var), full=True),
          (loss + 0.5 * np.log(2 * np.pi)).mean(), rtol=1e-12)
    # a var with one fewer dimension (or a trailing 1) is broadcast: homoscedastic per sample
    close(F.gaussian_nll_loss(T.tensor(x), T.tensor(t), T.tensor(var[:, :1]), reduction="none"),
          0.5 * (np.log(var[:, :1]) + (x - t) ** 2 / var[:, :1]), rtol=1e-12)
    close(F.gaussian_nll_loss(T.tensor(x), T.tensor(t), T.tensor(var[:, 0]), reduction="sum"),
          (0.5 * (np.log(var[:, :1]) + (x - t) ** 2 / var[:, :1])).sum(), rtol=1e-12)


def test_gaussian_nll_loss_errors(T, F):
    x, t = T.randn(3, 2), T.randn(3, 2)
    raises(ValueError, "var is of incorrect size", F.gaussian_nll_loss, x, t, T.ones(3, 3))
    raises(ValueError, "var has negative entry/entries", F.gaussian_nll_loss, x, t, -T.ones(3, 2))
    raises(ValueError, "xyz is not valid", F.gaussian_nll_loss, x, t, T.ones(3, 2), reduction="xyz")


def test_multi_margin_and_multilabel(T, F):
    y = np.array([3, 0, 2])
    for p in (1, 2):
        for margin in (1.0, 0.5):
            per = np.maximum(0, margin - X[np.arange(3), y][:, None] + X) ** p
            per[np.arange(3), y] = 0
            close(F.multi_margin_loss(T.tensor(X), T.tensor(y), p=p, margin=margin, reduction="none"),
                  per.sum(1) / 4, rtol=1e-12)
            wper = per * W[y][:, None]
            close(F.multi_margin_loss(T.tensor(X), T.tensor(y), p=p, margin=margin, weight=T.tensor(W)),
                  (wper.sum(1) / 4).mean(), rtol=1e-12)
    raises(ValueError, "only p == 1 and p == 2 supported|only p = 1 and p = 2 are supported, got 3",
           F.multi_margin_loss, T.tensor(X), T.tensor(y), p=3)
    targets = np.array([[3, 0, -1, 1], [1, -1, 2, 2], [-1, 0, 0, 0]])
    expected = []
    for i in range(3):
        tgt = []
        for j in targets[i]:
            if j < 0:
                break
            tgt.append(j)
        others = [k for k in range(4) if k not in tgt]
        expected.append(sum(max(0, 1 - (X[i, j] - X[i, k])) for j in tgt for k in others) / 4)
    close(F.multilabel_margin_loss(T.tensor(X), T.tensor(targets), reduction="none"), expected, rtol=1e-12)
    ml = (np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]]))
    sig = 1 / (1 + np.exp(-X))
    soft = -(ml * np.log(sig) + (1 - ml) * np.log(1 - sig)).mean(1)
    close(F.multilabel_soft_margin_loss(T.tensor(X), T.tensor(ml)), soft.mean(), rtol=1e-10)


def test_losses_on_modules_match_functional(T, nn, F):
    x = T.tensor(X)
    y = T.tensor(Y)
    close(nn.NLLLoss(ignore_index=0)(F.log_softmax(x, 1), y), values(F.nll_loss(F.log_softmax(x, 1), y,
                                                                                ignore_index=0)))
    close(nn.CrossEntropyLoss(label_smoothing=0.2)(x, y), values(F.cross_entropy(x, y, label_smoothing=0.2)))
    close(nn.SmoothL1Loss(beta=0.5)(x, x * 2), values(F.smooth_l1_loss(x, x * 2, beta=0.5)))
    close(nn.HuberLoss(delta=0.5)(x, x * 2), values(F.huber_loss(x, x * 2, delta=0.5)))
    assert nn.CrossEntropyLoss().ignore_index == -100
    assert nn.CrossEntropyLoss().label_smoothing == 0.0
    assert nn.MSELoss().reduction == "mean"
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.SmoothL1Loss(beta=0.5)) == "SmoothL1Loss()"


def test_loss_weight_is_a_buffer(T, nn):
    m = nn.CrossEntropyLoss(weight=T.tensor([1.0, 2.0]))
    assert [name for name, _ in m.named_buffers()] == ["weight"]
    assert list(m.state_dict()) == ["weight"]
    m = nn.BCEWithLogitsLoss(pos_weight=T.tensor([2.0]))
    assert sorted(name for name, _ in m.named_buffers()) == ["pos_weight"]
    assert sorted(m.state_dict()) == ["pos_weight", "weight"] or sorted(m.state_dict()) == ["pos_weight"]
