"""What the files of session 17's optimal-transport probe (tests/test_programs_probe17_ot_*.py, one family of methods
each) share: the two point clouds most programs transport, and NumPy's squared distances to check against.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same data, comparing
transport plans, costs and gradients, and checked against NumPy by hand where torch is missing."""

import numpy as np


def clouds(n=7, m=6, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((m, d)) + np.array([1.5] + [0.0] * (d - 1))
    a = rng.random(n) + 0.5
    b = rng.random(m) + 0.5
    return x, y, a / a.sum(), b / b.sum()


def sqdist_np(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
