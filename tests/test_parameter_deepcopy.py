"""copy.deepcopy of a Parameter, as PyTorch's Parameter.__deepcopy__: a new parameter of the same class with the
values cloned and the same requires_grad, without its .grad or attributes set on it (RL code makes target
networks by deepcopy of a trained network); a lazy module's uninitialised parameter copies as one."""

import copy
import importlib

import numpy as np


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def test_deepcopy_of_a_parameter_drops_its_grad_and_attributes(T):
    nn = nn_of(T)
    p = nn.Parameter(T.tensor([1.0, 2.0]))
    (p * p).sum().backward()
    p.note = "set by the user"
    q = copy.deepcopy(p)
    assert type(q) is nn.Parameter and q.requires_grad and q.grad is None
    assert not hasattr(q, "note")
    np.testing.assert_array_equal(q.detach().numpy(), [1.0, 2.0])
    with T.no_grad():
        q.add_(1.0)
    np.testing.assert_array_equal(p.detach().numpy(), [1.0, 2.0])  # its own memory


def test_deepcopy_of_a_trained_module_keeps_ties_and_flags_without_grads(T):
    nn = nn_of(T)
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 3))
    net[1].bias.requires_grad_(False)
    net(T.ones(1, 3)).sum().backward()
    target = copy.deepcopy(net)
    assert all(p.grad is None for p in target.parameters())
    assert [p.requires_grad for p in target.parameters()] == [True, True, True, False]
    shared = nn.Parameter(T.ones(2))
    copied = copy.deepcopy([shared, shared])
    assert copied[0] is copied[1] and copied[0] is not shared


def test_deepcopy_of_an_uninitialized_parameter(T):
    nn = nn_of(T)
    layer = nn.LazyLinear(4)
    twin = copy.deepcopy(layer)
    assert isinstance(twin.weight, nn.UninitializedParameter) and twin.weight.requires_grad
    assert twin(T.ones(2, 3)).shape == (2, 4) and twin.weight.shape == (4, 3)
