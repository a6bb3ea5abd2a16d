"""``func.functionalize``: the function's values, gradients and input changes, with outputs that never
alias the inputs (as PyTorch's)."""

import numpy as np
import pytest

import autograd
from autograd.func import functionalize, grad


def _mutating(x):
    y = x.view(-1)
    y.add_(1)  # changes x through its view
    z = x.t()
    w = x * 2
    w.mul_(3)  # an intermediate's change
    return y, {"t": z, "w": w}


@pytest.mark.parametrize("remove", ["mutations", "mutations_and_views"])
def test_same_values_input_changed_outputs_do_not_alias(remove):
    x = autograd.zeros(2, 2)
    y, rest = functionalize(_mutating, remove=remove)(x)
    np.testing.assert_array_equal(x.numpy(), np.ones((2, 2)))  # the input's change is kept, as PyTorch copies it back
    np.testing.assert_array_equal(y.numpy(), np.ones(4))
    np.testing.assert_array_equal(rest["w"].numpy(), 6 * np.ones((2, 2)))
    for output in (y, rest["t"]):
        assert not np.shares_memory(output.numpy(), x.numpy())
    y.add_(5)  # writing an output leaves the input alone
    np.testing.assert_array_equal(x.numpy(), np.ones((2, 2)))


def test_gradients_through_functionalize():
    def loss(a):
        b = a * 2
        b.mul_(3)
        return b.sum()

    x = autograd.tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(grad(functionalize(loss))(x).numpy(), 6 * np.ones((2, 2)))
    leaf = autograd.ones(3, requires_grad=True)
    out = functionalize(lambda t: t.view(3))(leaf)  # a copy of a view of the leaf: still in its graph
    (out * autograd.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [1, 2, 3])


def test_remove_is_checked():
    with pytest.raises(RuntimeError, match="received invalid argument for remove=views"):
        functionalize(_mutating, remove="views")


def test_against_torch():
    torch = pytest.importorskip("torch")
    for remove in ("mutations", "mutations_and_views"):
        ours, theirs = autograd.zeros(2, 2), torch.zeros(2, 2)
        y, rest = functionalize(_mutating, remove=remove)(ours)
        ty, trest = torch.func.functionalize(_mutating, remove=remove)(theirs)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        np.testing.assert_array_equal(y.numpy(), ty.numpy())
        np.testing.assert_array_equal(rest["t"].numpy(), trest["t"].numpy())
        np.testing.assert_array_equal(rest["w"].numpy(), trest["w"].numpy())
