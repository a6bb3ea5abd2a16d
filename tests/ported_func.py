"""Shared pieces of the tests ported from PyTorch's functorch suite (tests/test_ported_func_*.py)."""

import numpy as np


def t(T, a):
    """``a`` as a float64 tensor of the library ``T``."""
    return T.tensor(np.asarray(a, dtype=np.float64))


def randn(T, *shape, seed=0):
    return t(T, np.random.default_rng(seed).standard_normal(shape))
