"""A view made under no_grad (or inference_mode) of a tensor that requires grad, as PyTorch's NO_GRAD_MODE view:

- it requires grad (through its base), is a leaf, and has no grad_fn; ``requires_grad_(False)`` leaves it so;
- the ops that use it are recorded (their results require grad), but no gradient edge leads to the view: a backward
  pass through it stores nothing in its ``.grad`` or its base's, runs none of its hooks, and ``autograd.grad`` of it
  gives None;
- an in-place write into it with grad mode on is refused; under no_grad it goes through;
- a view of an inference tensor made in inference_mode still requires no grad.

Each runs on ours, and on PyTorch where it is installed.
"""

import numpy as np
import pytest

VIEWS = {
    "slice": lambda x: x[1:3],
    "view": lambda x: x.view(2, 2),
    "transpose": lambda x: x.view(2, 2).t(),
    "unsqueeze": lambda x: x.unsqueeze(0),
    "expand": lambda x: x.unsqueeze(0).expand(3, 4),
    "select": lambda x: x[2],
    "view of a view": lambda x: x[1:][1:],
}


def _values(tensor):
    return None if tensor is None else tensor.detach().numpy()


@pytest.mark.parametrize("make", VIEWS.values(), ids=VIEWS.keys())
@pytest.mark.parametrize("computed", [False, True], ids=["of a leaf", "of a computed tensor"])
def test_it_requires_grad_and_records_ops_but_gets_no_gradient(T, make, computed):
    leaf = T.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    x = leaf * 1 if computed else leaf
    with T.no_grad():
        v = make(x)
    assert (v.requires_grad, v.is_leaf, v.grad_fn) == (True, True, None)
    hooked = []
    v.register_hook(hooked.append)
    y = (v * 3).sum() + leaf[0] * 5
    assert y.requires_grad
    y.backward()
    assert v.grad is None and hooked == []
    np.testing.assert_array_equal(_values(leaf.grad), [5.0, 0.0, 0.0, 0.0])  # only the share through leaf[0]


def test_a_loss_made_from_it_alone_backpropagates_to_nothing(T):
    w = T.ones(2, 3, requires_grad=True)
    with T.no_grad():
        w_t = w.t()
    loss = (w_t @ T.ones(2, 4)).sum()
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()  # (no "does not require grad" error)
    assert w.grad is None and w_t.grad is None


def test_autograd_grad_of_it_is_none(T):
    x = T.ones(3, requires_grad=True)
    with T.no_grad():
        v = x[:2]
    grads = T.autograd.grad((v * 2).sum() + x.sum(), [v, x], allow_unused=True)
    assert grads[0] is None
    np.testing.assert_array_equal(_values(grads[1]), [1.0, 1.0, 1.0])
    zeros = T.autograd.grad((v * 2).sum(), v, allow_unused=True, materialize_grads=True)
    np.testing.assert_array_equal(_values(zeros[0]), [0.0, 0.0])


def test_its_flag_follows_its_base(T):
    x = T.ones(3, requires_grad=True)
    with T.no_grad():
        v = x[:2]
        assert v.requires_grad
    assert v.requires_grad_(False).requires_grad
    assert v.clone().requires_grad and not v.detach().requires_grad
    assert "requires_grad=True" in repr(v)
    with T.no_grad():
        plain = T.ones(3)[:2]
        copied = x[[0, 1]]  # (advanced indexing copies: no view)
    assert not plain.requires_grad and not copied.requires_grad


def test_writes_into_it_are_refused_with_grad_mode_on_and_pass_under_no_grad(T):
    x = T.ones(3, requires_grad=True)
    with T.no_grad():
        v = x[:2]
    with pytest.raises(RuntimeError, match="A view was created in no_grad mode and is being modified inplace"):
        v.mul_(2)
    with T.no_grad():
        v.mul_(2)
    np.testing.assert_array_equal(_values(x), [2.0, 2.0, 1.0])


def test_in_inference_mode(T):
    x = T.ones(3, requires_grad=True)
    with T.inference_mode():
        v = x[:2]
        c = T.ones(3, requires_grad=True)
        inference_view = c.view(-1)
    assert v.requires_grad and not T.is_inference(v)
    assert not inference_view.requires_grad and T.is_inference(inference_view)
    y = (v * 2).sum()
    y.backward()
    assert x.grad is None


def test_asked_to_require_grad_it_becomes_a_leaf_of_its_own(T):
    x = T.ones(3, requires_grad=True)
    with T.no_grad():
        v = x[:2]
    v.requires_grad_(True)
    (v * 2).sum().backward()
    np.testing.assert_array_equal(_values(v.grad), [2.0, 2.0])
    assert x.grad is None
    with T.no_grad():
        w = x[:2]
    w.requires_grad = True
    assert T.autograd.grad((w * 3).sum(), w)[0].tolist() == [3.0, 3.0]
    with pytest.raises(RuntimeError, match="A view was created in no_grad mode"):  # (still that view)
        w.mul_(2)
