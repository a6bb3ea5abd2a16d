"""torch.logit's gradient is PyTorch's dL/dy / (x (1 - x)): infinite at 0 and 1 (the composite ln(x / (1 - x)) gave
NaN there), NaN outside [0, 1], and with eps 0 outside [eps, 1 - eps] (its bounds included); its node is
LogitBackward0; a float16 logit rounds as PyTorch's."""

import math

import pytest


def test_logit_gradient_at_and_beyond_the_ends(T):
    x = T.tensor([0.0, 1.0, 0.5, 0.2, 1.5], requires_grad=True)
    y = T.logit(x)
    assert y.grad_fn.name() == "LogitBackward0"
    (grad,) = T.autograd.grad(y.sum(), x)
    assert grad[:4].tolist() == [math.inf, math.inf, 4.0, pytest.approx(6.25)]
    assert math.isnan(grad[4].item())


def test_logit_gradient_with_eps(T):
    x = T.tensor([0.0, 0.1, 0.5, 0.9, 0.95, 1.2], dtype=T.float64, requires_grad=True)
    y = x.logit(eps=0.1)
    assert y[0].item() == pytest.approx(math.log(1 / 9)) and y[-1].item() == pytest.approx(math.log(9))
    (grad,) = T.autograd.grad(y.sum(), x)
    assert grad.tolist() == [0.0, pytest.approx(1 / 0.09), 4.0, pytest.approx(1 / 0.09), 0.0, 0.0]


def test_logit_of_float16_as_pytorch_rounds_it(T):
    x = T.tensor([0.3, 0.7, 0.01], dtype=T.float16)
    ratio = x / (1 - x)  # PyTorch's kernel: the ratio in float16, its log in float32, rounded to float16
    assert T.logit(x).dtype == T.float16 and T.logit(x).tolist() == ratio.float().log().half().tolist()
