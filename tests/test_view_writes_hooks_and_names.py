"""A recorded write through a view, as PyTorch's CopySlices:

- the hooks registered on the view (on the tensor, or on its node by ``register_prehook``/``register_hook``) before
  the write do not see the write's gradient: the write reaches the base's node without passing the view's; they
  still see the gradient of an op that read the view before the write, and a hook registered after the write sees
  the view's new gradient;
- the view's history after the write (or after a write to its base or to a sibling view) is PyTorch's regenerated
  one: ``grad_fn.name()`` is ``AsStridedBackward0``, but where the view's last step reads the memory as another dtype
  (``view_as_real``, ``view_as_complex``), which keeps its own node; the base's is ``torch::autograd::CopySlices``.

Each runs on ours, and on PyTorch where it is installed.
"""

import numpy as np
import pytest


def _start(T):
    x = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    return x, y, y[:2]


def test_a_tensor_hook_registered_before_the_write_does_not_run(T):
    x, y, v = _start(T)
    seen = []
    v.register_hook(lambda g: seen.append(g.clone()))
    v.mul_(3)
    y.sum().backward()
    assert seen == []
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0, 2.0])


@pytest.mark.parametrize("write, expected", [(lambda v: v.mul_(2), [4.0, 4.0, 2.0]),
                                             (lambda v: v.__setitem__(0, 7.0), [0.0, 2.0, 2.0])],
                         ids=["mul_", "setitem"])
def test_a_hook_returning_a_new_gradient_changes_nothing_after_a_write(T, write, expected):
    x, y, v = _start(T)
    v.register_hook(lambda g: g * 10)
    write(v)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_the_hook_still_sees_an_op_that_read_the_view_before_the_write(T):
    x, y, v = _start(T)
    seen = []
    v.register_hook(lambda g: seen.append(g.clone()))
    z = v * 5
    v.mul_(3)
    (y.sum() + z.sum()).backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), [5.0, 5.0])
    np.testing.assert_array_equal(x.grad.numpy(), [16.0, 16.0, 2.0])


def test_node_hooks_registered_before_the_write_do_not_run(T):
    x, y, v = _start(T)
    seen = []
    v.grad_fn.register_prehook(lambda grads: seen.append("pre"))
    v.grad_fn.register_hook(lambda grads_in, grads_out: seen.append("post"))
    v.mul_(3)
    y.sum().backward()
    assert seen == []
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0, 2.0])


def test_a_hook_registered_after_the_write_sees_the_new_gradient(T):
    x, y, v = _start(T)
    seen = []
    v.mul_(3)
    v.register_hook(lambda g: seen.append(g.clone()))
    v.sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0, 0.0])


def test_each_write_leaves_the_hooks_registered_before_it(T):
    x, y, v = _start(T)
    seen = []
    v.register_hook(lambda g: seen.append("first"))
    v.mul_(3)
    v.register_hook(lambda g: seen.append("second"))
    v.add_(1)
    v.sum().backward()
    assert seen == []
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0, 0.0])


def test_a_hook_on_the_base_still_runs(T):
    x, y, v = _start(T)
    seen = []
    y.register_hook(lambda g: seen.append(g.clone()))
    v.mul_(3)
    y.sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), [3.0, 3.0, 1.0])


def test_a_view_of_the_view_written_leaves_the_outer_views_hook_alone(T):
    x, y, v = _start(T)
    w = v[1:]
    seen = []
    w.register_hook(lambda g: seen.append(g.clone()))
    w.mul_(3)
    y.sum().backward()
    assert seen == []
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 6.0, 2.0])


REGENERATED = {
    "written through itself": lambda y: (y[:2], lambda v: v.mul_(3)),
    "its base written": lambda y: (y.view(3), lambda v: y.mul_(3)),
    "a sibling written": lambda y: (y[1:], lambda v: y[:2].mul_(3)),
    "setitem into it": lambda y: (y[:2], lambda v: v.__setitem__(1, 5.0)),
    "a diagonal": lambda y: (y.view(1, 3).diagonal(), lambda v: y.mul_(3)),
    "an unsqueeze written": lambda y: (y.unsqueeze(0), lambda v: v.mul_(3)),
}


@pytest.mark.parametrize("case", REGENERATED.values(), ids=REGENERATED.keys())
def test_a_regenerated_view_is_named_as_strided(T, case):
    x = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    v, write = case(y)
    write(v)
    assert v.grad_fn.name() == "AsStridedBackward0"
    assert y.grad_fn.name() in ("torch::autograd::CopySlices", "MulBackward0")
    (v * T.arange(1.0, v.numel() + 1).reshape(v.shape)).sum().backward()
    assert x.grad is not None


def test_the_base_written_through_a_view_is_copy_slices(T):
    x, y, v = _start(T)
    v.mul_(3)
    assert y.grad_fn.name() == "torch::autograd::CopySlices"


def test_a_view_that_reads_another_dtype_keeps_its_node(T):
    z = T.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = z * 2
    c = T.view_as_complex(y)
    y.mul_(2)
    assert c.grad_fn.name() == "ViewAsComplexBackward0"
    w = T.tensor([1 + 2j, 3 - 1j], requires_grad=True) * 2
    r, rows = T.view_as_real(w), T.view_as_real(w)[0]
    w.mul_(2)
    assert r.grad_fn.name() == "ViewAsRealBackward0"
    assert rows.grad_fn.name() == "AsStridedBackward0"
    np.testing.assert_array_equal(c.detach().numpy(), [4 + 8j, 12 + 16j])
