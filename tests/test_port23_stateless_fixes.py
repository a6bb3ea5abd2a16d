"""Fixes found porting PyTorch's test_stateless.py: functional_call swaps a tensor in as PyTorch's swap_tensor
does (a registered name in its registry, any other through setattr), writes what forward assigned back into the
caller's dict, and refuses an empty name and a sequence holding something other than dicts in PyTorch's words.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`), against literals."""

import importlib
import re

import pytest

from tests import ported_nn
from tests.ported import raises, same

nn = ported_nn.nn  # the fixture


@pytest.fixture
def func(T):
    return importlib.import_module(T.__name__ + ".func")


def doubled_linear(T, nn):
    """Linear(2, 2) with weight [[1, 2], [3, 4]] held as twice its parametrization's original."""
    class Double(nn.Module):
        def forward(self, X):
            return 2 * X

        def right_inverse(self, W):
            return W / 2

    layer = nn.Linear(2, 2)
    with T.no_grad():
        layer.weight.copy_(T.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.bias.zero_()
    nn.utils.parametrize.register_parametrization(layer, "weight", Double())
    return layer


def test_a_parametrized_tensor_given_by_its_name_is_assigned_through_right_inverse(T, nn, func):
    """Before: the weight given was ignored (the output [[5, 11]] was the module's own weight's)."""
    layer = doubled_linear(T, nn)
    original = layer.parametrizations.weight.original
    out = func.functional_call(layer, {"weight": T.eye(2)}, T.tensor([[1.0, 2.0]]))
    same(out, [[1.0, 2.0]])
    # the module's weight is assigned back the same way: the same original, holding its values again
    assert layer.parametrizations.weight.original is original
    same(original, [[0.5, 1.0], [1.5, 2.0]])
    same(layer.weight, [[1.0, 2.0], [3.0, 4.0]])


def test_a_parametrization_without_right_inverse_refuses_the_assignment(T, nn, func):
    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).T

    layer = nn.Linear(2, 2)
    nn.utils.parametrize.register_parametrization(layer, "weight", Symmetric())
    raises(RuntimeError, "parametrization Symmetric does not implement right_inverse.", func.functional_call,
           layer, {"weight": T.eye(2)}, T.ones(1, 2))


def test_a_parameter_at_a_new_name_is_a_parameter_while_the_call_lasts(T, nn, func):
    class Lister(nn.Module):
        def forward(self, x):
            return [name for name, _ in self.named_parameters()]

    module = Lister()
    assert func.functional_call(module, {"scale": nn.Parameter(T.ones(1)), "shift": T.ones(1)}, T.ones(1)) == \
        ["scale"]
    assert not hasattr(module, "scale") and not hasattr(module, "shift")


def test_a_running_statistic_assigned_in_forward_comes_back_in_the_dict(T, nn, func):
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("seen", T.zeros(()))

        def forward(self, x):
            self.seen = self.seen + x.shape[0]
            return x

    module = Counter()
    state = {"seen": T.tensor(10.0)}
    func.functional_call(module, state, T.ones(3, 2))
    func.functional_call(module, state, T.ones(4, 2))
    same(state["seen"], 17.0)
    same(module.seen, 0.0)


def test_an_empty_name_is_refused(T, nn, func):
    module = nn.Sequential(nn.Linear(2, 2))
    for name in ("", "0."):
        raises(KeyError, "tensor name can.*t be empty string", func.functional_call, module,
               {name: T.zeros(2)}, T.ones(1, 2))
    assert "" not in vars(module) and "" not in vars(module[0])


def test_a_sequence_of_dicts_only_and_repeated_names_in_order(T, nn, func):
    module = nn.Linear(2, 2)
    raises(ValueError, "Expected all elements of parameter_and_buffer_dicts to be dictionaries",
           func.functional_call, module, [T.zeros(2, 2)], T.ones(1, 2))
    repeated = ({"weight": T.zeros(2, 2), "bias": T.zeros(2)}, {"weight": T.ones(2, 2), "bias": T.ones(2)})
    raises(ValueError, re.escape("['weight', 'bias'] appeared in multiple dictionaries"), func.functional_call,
           module, repeated, T.ones(1, 2))
