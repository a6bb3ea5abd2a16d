"""Helpers of the tests ported from PyTorch's test/test_autograd.py (tests/test_ported_autograd_*.py)."""

import importlib

import numpy as np


def randn(T, *shape, seed=0, requires_grad=True):
    """A float64 tensor of standard normal values drawn by NumPy (the same values for both libraries)."""
    return T.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


def nn(T):
    """The library's torch.nn: chainrule's is the top-level package `nn`."""
    return importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")


def optim(T):
    """The library's torch.optim: chainrule's is the top-level package `optim`."""
    return importlib.import_module("optim" if T.__name__ == "autograd" else "torch.optim")
