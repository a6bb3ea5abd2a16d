"""WithoutDerivative: a result PyTorch records with no derivative (bincount of weights that require grad).

The result requires grad, so a loss built on it is refused at backward in PyTorch's words instead of
silently leaving the weights' share of the gradient out."""

import numpy as np
import pytest


def bincount_of_weights(T):
    weights = T.tensor([0.5, 1.5, 2.0, 4.0], dtype=T.float64, requires_grad=True)
    return weights, T.bincount(T.tensor([0, 2, 2, 1]), weights=weights, minlength=4)


CASES = {"WithoutDerivative": bincount_of_weights}


def test_the_counts_are_right_and_backward_refuses(T):
    weights, counts = CASES["WithoutDerivative"](T)
    np.testing.assert_array_equal(counts.detach().numpy(), [0.5, 4.0, 3.5, 0.0])
    assert counts.requires_grad and counts.dtype == T.float64
    with pytest.raises(RuntimeError, match="derivative for aten::bincount is not implemented"):
        (counts * 2).sum().backward()
    with T.no_grad():  # nothing recorded without grad mode
        assert not T.bincount(T.tensor([1]), weights=weights[:1]).requires_grad
