"""Shared pieces of the fx tests ported from PyTorch's test/test_fx.py and test/fx/ (tests/test_ported_fx_*.py): the
``fx`` fixture (the fx package of the library under test, `T`), and the small modules most of them trace."""

import importlib

import pytest


@pytest.fixture
def fx(T):
    return importlib.import_module(T.__name__ + ".fx")


def ops(graph):
    return [node.op for node in graph.nodes]


def names(graph):
    return [node.name for node in graph.nodes]


def simple(T, nn):
    """test_fx.py's SimpleTest: relu(x + 3.0)."""
    class SimpleTest(nn.Module):
        def forward(self, x):
            return T.relu(x + 3.0)
    return SimpleTest()


def linear_relu(T, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            T.manual_seed(0)
            self.linear = nn.Linear(4, 3)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.linear(x))
    return M()
