"""A param group's keys come in PyTorch's order: ``print(optimizer.state_dict())`` (the "what is a state_dict"
recipe) shows them so, and a program comparing ``list(group)`` or the printed text sees the same."""

import importlib

import pytest

ORDER = {
    "RMSprop": ["lr", "momentum", "alpha", "eps", "centered", "weight_decay", "capturable", "foreach", "maximize",
                "differentiable", "params"],
    "Adagrad": ["lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", "foreach", "maximize",
                "differentiable", "fused", "params"],
    "Adadelta": ["lr", "rho", "eps", "weight_decay", "maximize", "capturable", "foreach", "differentiable",
                 "params"],
    "Rprop": ["lr", "etas", "step_sizes", "foreach", "maximize", "differentiable", "capturable", "params"],
    "SGD": ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable",
            "fused", "params"],
}


@pytest.mark.parametrize("name", sorted(ORDER))
def test_state_dict_lists_a_groups_keys_in_pytorchs_order(T, name):
    optim = T.optim if T.__name__ == "torch" else importlib.import_module("optim")
    weight = T.zeros(2, requires_grad=True)
    optimizer = getattr(optim, name)([weight], lr=0.01)
    group = optimizer.state_dict()["param_groups"][0]
    assert list(group) == ORDER[name]
