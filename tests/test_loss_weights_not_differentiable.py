"""The loss arguments PyTorch's kernels have no derivative for (nll_loss's and cross_entropy's class weights with
class indices, binary_cross_entropy's weight, binary_cross_entropy_with_logits' weight and pos_weight,
multi_margin_loss's weight): given a tensor that requires grad with grad mode on, the call is refused in PyTorch's
words, where ours used to leave its gradient None (or compute one PyTorch has not). Under no_grad, or detached, the
weight is a constant and taken; the composites PyTorch differentiates (cross_entropy with class probabilities,
multilabel_soft_margin_loss) give its gradient. Each runs on ours, and on PyTorch where it is installed."""

import numpy as np
import pytest

import nn.functional

SCORES = [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]
PROBABILITIES = [[0.1, 0.2, 0.3], [0.5, 0.1, 0.9]]
LABELS = [0, 2]
MULTI_HOT = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]

REFUSED = {  # name: (call of (T, F, weight), kernel, argument)
    "nll_loss": (lambda T, F, w: F.nll_loss(T.tensor(SCORES), T.tensor(LABELS), weight=w), "nll_loss_forward",
                 "weight"),
    "cross_entropy": (lambda T, F, w: F.cross_entropy(T.tensor(SCORES), T.tensor(LABELS), weight=w),
                      "nll_loss_forward", "weight"),
    "cross_entropy smoothed": (lambda T, F, w: F.cross_entropy(T.tensor(SCORES), T.tensor(LABELS), weight=w,
                                                               label_smoothing=0.1), "nll_loss_forward", "weight"),
    "binary_cross_entropy": (lambda T, F, w: F.binary_cross_entropy(T.tensor(PROBABILITIES), T.tensor(MULTI_HOT),
                                                                    weight=w), "binary_cross_entropy", "weight"),
    "bce_with_logits weight": (lambda T, F, w: F.binary_cross_entropy_with_logits(
        T.tensor(SCORES), T.tensor(MULTI_HOT), weight=w), "binary_cross_entropy_with_logits", "weight"),
    "bce_with_logits pos_weight": (lambda T, F, w: F.binary_cross_entropy_with_logits(
        T.tensor(SCORES), T.tensor(MULTI_HOT), pos_weight=w), "binary_cross_entropy_with_logits", "pos_weight"),
    "multi_margin_loss": (lambda T, F, w: F.multi_margin_loss(T.tensor(SCORES), T.tensor(LABELS), weight=w),
                          "multi_margin_loss", "weight"),
}


def _functional(T):
    return nn.functional if T.__name__ == "autograd" else T.nn.functional


@pytest.mark.parametrize("name", REFUSED)
def test_a_weight_that_requires_grad_is_refused(T, name):
    call, kernel, argument = REFUSED[name]
    F = _functional(T)
    weight = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=f"The function '{kernel}' is not differentiable with respect to "
                                           f"argument '{argument}'. This input cannot have requires_grad True"):
        call(T, F, weight)
    with T.no_grad():
        quiet = call(T, F, weight)
    constant = call(T, F, weight.detach())
    assert not constant.requires_grad and float(quiet) == float(constant)


def test_what_pytorch_differentiates_gives_its_gradient(T):
    F = _functional(T)
    weight = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    F.cross_entropy(T.tensor(SCORES), T.tensor(MULTI_HOT), weight=weight).backward()
    np.testing.assert_allclose(weight.grad.numpy(), [1.2038, 0.2757, 0.9795], atol=1e-4)
    weight.grad = None
    F.multilabel_soft_margin_loss(T.tensor(SCORES), T.tensor(MULTI_HOT), weight=weight).backward()
    np.testing.assert_allclose(weight.grad.numpy(), [0.1677, 0.4067, 0.1236], atol=1e-4)
