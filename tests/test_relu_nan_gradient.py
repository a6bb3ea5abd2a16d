"""ReLU's backward selects as PyTorch's (where(y <= 0, 0, g)): at a NaN input the incoming gradient passes as it
is, so a NaN the loss does not use leaves a gradient of 0 there (sign(NaN) made it NaN, and an optimizer step then
spread NaN over the weights); and 0 where relu was off, even under an infinite gradient."""

import math


def test_relu_of_nan_passes_the_gradient(T):
    x = T.tensor([math.nan, 1.0, -1.0, 0.0], requires_grad=True)
    (unused_nan,) = T.autograd.grad(T.relu(x)[1:].sum(), x)
    assert unused_nan.tolist() == [0.0, 1.0, 0.0, 0.0]
    (used_nan,) = T.autograd.grad(T.relu(x).sum(), x)
    assert used_nan.tolist() == [1.0, 1.0, 0.0, 0.0]
    # an infinite gradient where relu was off still gives 0 there (sqrt's slope at 0)
    (through_sqrt,) = T.autograd.grad(T.relu(x * 1).sqrt()[1:].sum(), x)
    assert through_sqrt[1:].tolist() == [0.5, 0.0, 0.0]


def test_a_masked_nan_leaves_the_weights_finite(T):
    scale = T.tensor([2.0, 1.0, 0.5], requires_grad=True)
    features = T.tensor([[1.0, 2.0, 4.0], [-1.0, 3.0, 2.0]])
    hidden = T.relu(T.log(features * scale))  # log of -2: NaN, masked out below
    valid = T.tensor([[True, True, True], [False, True, True]])
    (grad,) = T.autograd.grad(hidden[valid].sum(), scale)
    assert grad.tolist() == [0.5, 2.0, 2.0]  # 1/scale summed over the valid entries where relu is on
