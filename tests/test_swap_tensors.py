"""``torch.utils.swap_tensors``: two tensor objects exchange class, attributes, values and autograd state."""

import importlib

import numpy as np
import pytest


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def test_values_shapes_and_dtypes_change_hands(T):
    t1, t2 = T.arange(2), T.tensor([[1.5, 2.5]], dtype=T.float64)
    T.utils.swap_tensors(t1, t2)
    assert t1.dtype == T.float64 and t1.shape == (1, 2) and t1.tolist() == [[1.5, 2.5]]
    assert t2.dtype == T.int64 and t2.tolist() == [0, 1]


def test_class_attributes_and_requires_grad_change_hands(T):
    p = nn_of(T).Parameter(T.ones(2))
    p.tag = "param"
    q = T.zeros(3)
    T.utils.swap_tensors(p, q)
    assert type(p) is T.Tensor and type(q) is nn_of(T).Parameter
    assert q.requires_grad and not p.requires_grad and q.tag == "param" and not hasattr(p, "tag")
    q.sum().backward()  # the swapped-in leaf gathers its own gradient
    np.testing.assert_array_equal(q.grad.numpy(), [1.0, 1.0])


def test_a_holder_sees_the_new_values(T):
    weight = nn_of(T).Parameter(T.tensor([1.0, 2.0]))
    optimizer = T.optim.SGD([weight], lr=0.5) if T.__name__ == "torch" else importlib.import_module("optim").SGD(
        [weight], lr=0.5)
    T.utils.swap_tensors(weight, nn_of(T).Parameter(T.tensor([10.0, 20.0])))
    (weight * T.tensor([1.0, -1.0])).sum().backward()
    optimizer.step()
    np.testing.assert_allclose(optimizer.param_groups[0]["params"][0].detach().numpy(), [9.5, 20.5])


def test_refuses_what_is_not_a_tensor(T):
    with pytest.raises((TypeError, AttributeError)):
        T.utils.swap_tensors(T.ones(1), np.ones(1))
