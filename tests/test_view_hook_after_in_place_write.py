"""A hook registered on a view after an in-place write through it sees the gradient of the new value,
as PyTorch's, also when another hook was registered on the view before the write. (The view's
replayed node took the old node's hooks dict, so the later hook also ran on the old node, with the
gradient of the old value, last: Grad-CAM's tensor hook on an in-place ReLU's output got the ReLU's
mask applied once more.)"""

import numpy as np


def test_hook_after_a_write_through_a_view_sees_the_new_values_gradient(T):
    w = T.tensor(np.linspace(-1, 1, 4).reshape(2, 2), requires_grad=True)
    c = T.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=T.float64)
    v = (w * 1)[:].reshape(2, 2)
    v.register_hook(lambda g: None)
    v.relu_()
    seen = []
    v.register_hook(lambda g: seen.append(g.clone()))
    (v * c).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].numpy(), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(w.grad.numpy(), [[0.0, 0.0], [3.0, 4.0]])


def test_retain_grad_on_a_view_follows_the_write_without_its_earlier_hook(T):
    w = T.tensor([-1.0, 2.0, -3.0, 4.0], requires_grad=True)
    v = (w * 2)[1:]
    v.register_hook(lambda g: g * 10)  # before the write: it scales the gradient of the old value only
    v.mul_(3)
    v.retain_grad()
    v.sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [1.0, 1.0, 1.0])
