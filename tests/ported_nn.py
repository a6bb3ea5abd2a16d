"""Fixtures of the nn tests ported from PyTorch's test/test_nn.py and test/nn/ (tests/test_ported_nn_*.py).

`nn` is the `nn` package of the library under test (`T`, tests/conftest.py): chainrule's `nn` beside its
`autograd`, or `torch.nn`; `F` is its `functional`. A test module imports them next to its imports of
tests.ported (pytest finds fixtures by name in the test module's namespace).
"""

import importlib

import pytest


@pytest.fixture
def nn(T):
    if T.__name__ == "autograd":
        yield importlib.import_module("nn")
        return
    # these tests' tensors are tiny: on a busy two-core machine PyTorch's thread pool makes a gradgradcheck of
    # a small convolution 25 times slower than one thread does (the answers are the same)
    threads = T.get_num_threads()
    T.set_num_threads(1)
    try:
        yield T.nn
    finally:
        T.set_num_threads(threads)


@pytest.fixture
def F(nn):
    return nn.functional


def on_chainrule(T):
    return T.__name__ == "autograd"
