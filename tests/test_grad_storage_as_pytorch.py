"""How ``.grad`` is stored, as PyTorch's AccumulateGrad and retain-grad hook store it: run on chainrule's autograd
and on PyTorch (the ``T`` fixture) against the same expectations.

- a leaf's first gradient in a create_graph pass is a recorded copy (``x.grad.grad_fn`` is CopyBackwards over the
  gradient's own graph), never the pass's own tensor;
- ``copy_``'s node lists the tensor written over first, then the source (next_functions);
- a non-leaf's retained ``.grad`` is a row-major clone, and a later pass adds to it out of place: a ``.grad``
  read after an earlier pass keeps its values (a leaf's is added to in place).
"""

import warnings

import numpy as np

from tests.ported import same, values


def test_create_graph_stores_a_recorded_copy(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch's warning of a reference cycle between x and x.grad)
        (x ** 3).sum().backward(create_graph=True)
    node = x.grad.grad_fn
    assert node.name() == "torch::autograd::CopyBackwards"
    (first, _), (second, _) = node.next_functions
    assert first is None and second.name() == "MulBackward0"
    same(x.grad, [3.0, 12.0])
    (second_derivative,) = T.autograd.grad(x.grad.sum(), x)
    same(second_derivative, [6.0, 12.0])  # d/dx of 3x²: the copy passes the graph on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (x ** 2).sum().backward(create_graph=True)
    assert x.grad.grad_fn.name() == "AddBackward0"  # a later gradient is added out of place, recorded
    same(x.grad, [5.0, 16.0])


def test_create_graph_copy_keeps_the_leaf_layout(T):
    w = T.ones(4, 3).t().requires_grad_()  # a transposed leaf: strides (1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (w * w * T.arange(12.0).reshape(3, 4)).sum().backward(create_graph=True)
    assert w.grad.stride() == (1, 3) and w.grad.requires_grad
    same(w.grad, 2 * np.arange(12.0).reshape(3, 4))


def test_copy_node_lists_the_written_tensor_first(T):
    source = T.tensor([1.0, 2.0], requires_grad=True) * 2
    written = T.zeros(2).copy_(source)
    node = written.grad_fn
    assert node.name() == "torch::autograd::CopyBackwards"
    (old, _), (new, _) = node.next_functions
    assert old is None and new.name() == "MulBackward0"
    base = T.tensor([5.0, 6.0], requires_grad=True)
    target = base * 1
    target.copy_(source)
    (old, _), (new, _) = target.grad_fn.next_functions
    assert old.name() == "MulBackward0" and new is source.grad_fn
    target.sum().backward()
    same(base.grad, [0.0, 0.0])  # written over: no share of the gradient, but its history still gets one


def test_retained_grad_is_added_out_of_place(T):
    x = T.ones(2, 3, requires_grad=True)
    y = x * 2
    y.retain_grad()
    loss = (y * y).sum()
    loss.backward(retain_graph=True)
    after_first, leaf_grad = y.grad, x.grad
    loss.backward()
    same(after_first, np.full((2, 3), 4.0))  # what it was: the second pass made a new tensor
    same(y.grad, np.full((2, 3), 8.0))
    assert y.grad is not after_first
    assert x.grad is leaf_grad  # a leaf's is added to in place
    same(x.grad, np.full((2, 3), 16.0))


def test_retained_grad_is_row_major(T):
    x = T.ones(2, 3, requires_grad=True)
    z = (x * 2).t()  # a transposed non-leaf
    z.retain_grad()
    (z * T.arange(6.0).reshape(3, 2)).sum().backward()
    assert z.grad.stride() == (2, 1) and z.grad.is_contiguous()
    same(z.grad, np.arange(6.0).reshape(3, 2))
    g = T.ones(2, 3)
    w = x * 3
    w.retain_grad()
    w.backward(g)
    assert w.grad.data_ptr() != g.data_ptr()  # a copy, never the tensor the caller holds
    g.add_(1)
    same(w.grad, np.ones((2, 3)))


def test_retained_grad_in_a_create_graph_pass_is_a_recorded_clone(T):
    x = T.ones(2, 3, requires_grad=True)
    w = x * 3
    w.retain_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (w * w).sum().backward(create_graph=True)
    assert w.grad.grad_fn.name() == "CloneBackward0" and w.grad.requires_grad
    same(w.grad, np.full((2, 3), 6.0))
    (second,) = T.autograd.grad(w.grad.sum(), x)
    same(second, values(T.full((2, 3), 6.0)))  # d/dx of 2w = 6x summed: 6


def test_a_later_gradient_is_added_in_place_as_a_write(T):
    """Without grad mode, a later gradient is added into .grad in place, and that is a write (PyTorch's +=): its
    version moves on, even where an earlier create_graph pass left .grad with a graph of its own."""
    x = T.ones(2, requires_grad=True)
    (x * 2).sum().backward()
    first, version = x.grad, x.grad._version
    (x * 2).sum().backward()
    assert x.grad is first and x.grad._version == version + 1
    same(first, [4.0, 4.0])
    y = T.ones(2, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (y * y).sum().backward(create_graph=True)
    with_graph = y.grad
    (y * y).sum().backward()
    assert y.grad is with_graph and with_graph.requires_grad
    same(with_graph, [4.0, 4.0])
