"""A view of a leaf made while the leaf required no grad, after the leaf is asked to (PyTorch: a view with no
grad_fn requires grad through its base):

- it requires grad, is a leaf and has no grad_fn; the ops that use it are recorded, but a backward pass through it
  stores nothing (its hooks do not run; neither its .grad nor its base's is written);
- ``requires_grad_(False)`` on it changes nothing while the base requires grad; the base's ``requires_grad_(False)``
  makes it require none again; its own ``requires_grad_(True)`` makes it a leaf of its own, whose .grad a pass fills;
- a write into it with grad mode on is a write into a view of a leaf that requires grad, refused; under no_grad it
  goes through, into the base.

Each runs on ours, and on PyTorch where it is installed.
"""

import numpy as np
import pytest

VIEWS = {
    "slice": lambda a: a[:1],
    "transpose": lambda a: a.t(),
    "view": lambda a: a.view(6),
    "view of a view": lambda a: a[:1][:, 1:],
}


@pytest.mark.parametrize("make", VIEWS.values(), ids=VIEWS.keys())
def test_it_requires_grad_through_its_base_and_gets_no_gradient(T, make):
    a = T.ones(2, 3)
    b = make(a)
    assert not b.requires_grad
    a.requires_grad_()
    assert (b.requires_grad, b.is_leaf, b.grad_fn) == (True, True, None)
    seen = []
    b.register_hook(seen.append)
    y = (b * 2).sum()
    assert y.requires_grad and y.grad_fn is not None
    y.backward()
    assert (seen, b.grad, a.grad) == ([], None, None)


def test_the_base_asked_again_decides_its_flag(T):
    a = T.ones(2, 3)
    b = a[:1]
    a.requires_grad = True
    b.requires_grad_(False)
    assert b.requires_grad
    a.requires_grad_(False)
    assert not b.requires_grad
    b.add_(1)  # (nothing requires grad: a plain write into the base)
    np.testing.assert_array_equal(a.numpy(), [[2, 2, 2], [1, 1, 1]])


def test_asked_itself_it_is_a_leaf_of_its_own(T):
    a = T.ones(2, 3)
    b = a[:1]
    a.requires_grad_()
    b.requires_grad_()
    (b * 2).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [[2, 2, 2]])
    assert a.grad is None


def test_asked_before_its_base_it_stays_its_own(T):
    a = T.ones(2, 3)
    b = a[:1]
    b.requires_grad_()
    assert not a.requires_grad
    a.requires_grad_()
    (b * 3).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [[3, 3, 3]])
    assert a.grad is None


def test_a_write_into_it_is_refused_with_grad_mode_on(T):
    a = T.ones(2, 3)
    b = a[:1]
    a.requires_grad_()
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used in an "
                                           "in-place operation"):
        b.add_(5)
    with T.no_grad():
        b.add_(5)
    np.testing.assert_array_equal(a.detach().numpy(), [[6, 6, 6], [1, 1, 1]])


def test_views_made_after_are_differentiable_as_usual(T):
    a = T.ones(2, 3)
    b = a[:1]
    a.requires_grad_()
    c = a[1:]
    (c * 2 + b * 3).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [[0, 0, 0], [2, 2, 2]])
    assert c.grad_fn is not None and b.grad_fn is None
