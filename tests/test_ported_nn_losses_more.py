"""More losses, ported from PyTorch's test/test_nn.py: cross_entropy with one-hot probability targets
against class indices, spatial targets with ignore_index and label smoothing, AdaptiveLogSoftmaxWithLoss
(shapes, log_prob, predict, the errors), CTCLoss reductions, and the loss modules' state. Each test runs on
chainrule's `nn` and, where it is installed, on PyTorch's."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_one_hot_target(T, F, reduction):
    T.manual_seed(0)
    x = T.randn(5, 4, 3, dtype=T.float64)
    y = T.randint(0, 4, (5, 3))
    one_hot = F.one_hot(y, 4).permute(0, 2, 1).to(T.float64)
    w = T.tensor([0.5, 1.0, 2.0, 3.0], dtype=T.float64)
    # without weights, every reduction agrees
    close(F.cross_entropy(x, one_hot, reduction=reduction), values(F.cross_entropy(x, y, reduction=reduction)),
          rtol=1e-12)
    # with weights, 'mean' over probabilities divides by the count, over indices by the weights' sum
    if reduction != "mean":
        close(F.cross_entropy(x, one_hot, weight=w, reduction=reduction),
              values(F.cross_entropy(x, y, weight=w, reduction=reduction)), rtol=1e-12)
    else:
        total = values(F.cross_entropy(x, y, weight=w, reduction="sum"))
        close(F.cross_entropy(x, one_hot, weight=w), total / 15, rtol=1e-12)


def test_cross_entropy_spatial_ignore_index_and_label_smoothing(T, F):
    T.manual_seed(1)
    x = T.randn(2, 3, 4, dtype=T.float64)
    y = T.tensor([[0, 2, -100, 1], [2, -100, -100, 0]])
    lp = values(F.log_softmax(x, 1))
    keep = values(y) != -100
    yv = np.where(keep, values(y), 0)
    nll = -np.take_along_axis(lp, yv[:, None], 1)[:, 0]
    smooth = -lp.sum(1)
    per = 0.8 * nll + 0.2 / 3 * smooth
    close(F.cross_entropy(x, y, label_smoothing=0.2), per[keep].mean(), rtol=1e-12)
    close(F.cross_entropy(x, y, label_smoothing=0.2, reduction="none"), np.where(keep, per, 0), rtol=1e-12)
    raises(IndexError, "[Tt]arget 3 is out of bounds", F.cross_entropy, x, T.tensor([[0, 3, 0, 0], [0, 0, 0, 0]]))


def test_adaptive_log_softmax(T, nn):
    # args validation
    raises(ValueError, "cutoffs should be a sequence of unique, positive integers sorted in an increasing order",
           nn.AdaptiveLogSoftmaxWithLoss, 16, 20, [5, 15, 15], div_value=2.0)
    raises(ValueError, "cutoffs should be a sequence of unique, positive integers sorted in an increasing order",
           nn.AdaptiveLogSoftmaxWithLoss, 16, 20, [5, 15, 10], div_value=2.0)
    raises(ValueError, "cutoffs should be a sequence of unique, positive integers sorted in an increasing order",
           nn.AdaptiveLogSoftmaxWithLoss, 16, 20, [5, 10, 25], div_value=2.0)
    raises(ValueError, "cutoffs should be a sequence of unique, positive integers sorted in an increasing order",
           nn.AdaptiveLogSoftmaxWithLoss, 16, 20, [5, 10, 20], div_value=2.0)
    # not raise
    nn.AdaptiveLogSoftmaxWithLoss(16, 20, [5, 10, 19], div_value=2.0)

    # input shapes
    asfm = nn.AdaptiveLogSoftmaxWithLoss(16, 20, [5, 10, 15], div_value=2.0)
    raises(RuntimeError, r"Input and target should have the same size in the batch dimension", asfm, T.randn(2, 16),
           T.tensor([0, 1, 2]))
    raises(RuntimeError, r"Target values should be in \[0, 19\], but values in range \[0, 20\] were found.", asfm,
           T.randn(2, 16), T.tensor([0, 20]))

    # out and loss
    x = T.randn(4, 16)
    y = T.tensor([0, 17, 5, 12])
    out, loss = asfm(x, y)
    assert tuple(out.shape) == (4,) and tuple(loss.shape) == ()
    close(loss, -values(out).mean(), rtol=1e-6)

    # log_prob: a distribution over all 20 classes, consistent with out
    lp = asfm.log_prob(x)
    assert tuple(lp.shape) == (4, 20)
    close(np.exp(values(lp)).sum(1), np.ones(4), rtol=1e-5)
    close(out, values(lp)[np.arange(4), values(y)], rtol=1e-5, atol=1e-6)
    same(asfm.predict(x), values(lp).argmax(1))

    # unbatched
    out1, loss1 = asfm(x[0], y[0])
    assert tuple(out1.shape) == () and tuple(loss1.shape) == ()
    close(out1, values(out)[0], rtol=1e-5, atol=1e-6)

    # the head's size: shortlist + one entry per cluster
    assert tuple(asfm.head.weight.shape) == (5 + 3, 16)
    assert tuple(asfm.tail[0][0].weight.shape) == (8, 16) and tuple(asfm.tail[0][1].weight.shape) == (5, 8)
    assert tuple(asfm.tail[2][1].weight.shape) == (5, 2)


def test_adaptive_log_softmax_head_bias_and_grad(T, nn):
    asfm = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [4, 7], div_value=2.0, head_bias=True)
    assert asfm.head.bias is not None
    x = T.randn(3, 8, requires_grad=True)
    out, loss = asfm(x, T.tensor([1, 5, 9]))
    loss.backward()
    assert x.grad is not None and tuple(x.grad.shape) == (3, 8)
    assert all(p.grad is not None for p in asfm.head.parameters())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ctc_loss_reductions(T, F, reduction):
    T.manual_seed(2)
    log_probs = F.log_softmax(T.randn(6, 2, 4, dtype=T.float64), 2)
    targets = T.tensor([[1, 2, 2], [3, 1, 0]])
    in_len = T.tensor([6, 5])
    tg_len = T.tensor([3, 2])
    per = F.ctc_loss(log_probs, targets, in_len, tg_len, reduction="none")
    assert tuple(per.shape) == (2,)
    out = F.ctc_loss(log_probs, targets, in_len, tg_len, reduction=reduction)
    p = values(per)
    expected = {"none": p, "sum": p.sum(), "mean": (p / np.array([3, 2])).mean()}[reduction]
    close(out, expected, rtol=1e-12)
    # a one-frame, one-label check by hand: the only alignment is the label itself
    lp = F.log_softmax(T.tensor([[[0.1, 0.5, 0.2]]], dtype=T.float64), 2)
    close(F.ctc_loss(lp, T.tensor([[1]]), T.tensor([1]), T.tensor([1]), reduction="sum"), -values(lp)[0, 0, 1],
          rtol=1e-12)


def test_ctc_loss_impossible_alignment_and_zero_infinity(T, F):
    lp = F.log_softmax(T.randn(2, 1, 3, dtype=T.float64), 2)
    targets = T.tensor([[1, 1]])            # two equal labels need a blank between: 3 frames, only 2 given
    out = F.ctc_loss(lp, targets, T.tensor([2]), T.tensor([2]), reduction="sum")
    assert np.isinf(values(out))
    same(F.ctc_loss(lp, targets, T.tensor([2]), T.tensor([2]), reduction="sum", zero_infinity=True), 0.0)


def test_nll_loss_total_weight_is_zero(T, F):
    x = T.tensor([[0.5, 1.0, -1.0], [2.0, 0.0, 1.0]])
    y = T.tensor([0, 1])
    w = T.zeros(3)
    assert np.isnan(values(F.nll_loss(x, y, weight=w)))
    same(F.nll_loss(x, y, weight=w, reduction="sum"), 0.0)
    same(F.nll_loss(x, y, weight=w, reduction="none"), [-0.0, -0.0])


def test_pointwise_losses_take_integer_targets(T, F):
    close(F.smooth_l1_loss(T.tensor([1.0, 2.0]), T.tensor([1, 3])), 0.25)
    close(F.mse_loss(T.tensor([1.0, 2.0]), T.tensor([1, 3])), 0.5)
    close(F.hinge_embedding_loss(T.tensor([0.5, 2.0]), T.tensor([1, -1])), 0.25)
    close(F.soft_margin_loss(T.tensor([0.5, 2.0]), T.tensor([1, -1])),
          np.mean(np.log1p(np.exp([-0.5, 2.0]))), rtol=1e-6)
    raises(RuntimeError, "mean\\(\\): could not infer output dtype. Input dtype must be either a floating point or "
           "complex dtype", F.l1_loss, T.tensor([1, 2]), T.tensor([1, 3]))
    out = F.mse_loss(T.tensor([1.0, 2.0], dtype=T.float64), T.tensor([1.0, 3.0]))
    assert str(out.dtype).endswith("float64")
    assert F.l1_loss(T.tensor([1.0]), T.tensor([2.0], requires_grad=True)).requires_grad
