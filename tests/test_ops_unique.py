"""unique and unique_consecutive of a tensor that requires grad: their values are part of the graph with no
derivative, as PyTorch's (Unique2Backward0, ...): a backward pass through them raises, naming PyTorch's kernel,
where one that left them out would give the input no gradient without a word."""

import hypothesis.strategies as st
import numpy as np
import pytest

import autograd

from .test_ops import leaf

CASES = {  # (tests/test_ops.py checks that every primitive has a case: this one's check is the refusal below)
    "UniqueValues": (st.just([leaf([3.0, 1.0, 3.0])]), lambda x: autograd.unique(x)),
}


@pytest.mark.parametrize(("call", "kernel", "node"), [
    (lambda T, x: T.unique(x), "_unique2", "Unique2Backward0"),
    (lambda T, x: T.unique(x, return_inverse=True, return_counts=True)[0], "_unique2", "Unique2Backward0"),
    (lambda T, x: T.unique(x.reshape(2, 2), dim=0), "unique_dim", "UniqueDimBackward0"),
    (lambda T, x: T.unique_consecutive(x), "unique_consecutive", "UniqueConsecutiveBackward0"),
    (lambda T, x: T.unique_consecutive(x.reshape(2, 2), dim=1), "unique_consecutive", "UniqueConsecutiveBackward0"),
])
def test_unique_values_are_in_the_graph_without_a_derivative(T, call, kernel, node):
    x = T.tensor([3.0, 1.0, 3.0, 2.0], requires_grad=True)
    values = call(T, x)
    assert values.requires_grad and values.grad_fn.name() == node
    with pytest.raises(NotImplementedError, match=f"the derivative for '{kernel}' is not implemented"):
        values.sum().backward()
    inverse, counts = T.unique(x, return_inverse=True, return_counts=True)[1:]
    assert not inverse.requires_grad and not counts.requires_grad
    np.testing.assert_array_equal(T.unique(x.detach()).numpy(), [1.0, 2.0, 3.0])
