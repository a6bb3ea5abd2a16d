"""What the files of session 15's Bayesian deep-learning probe (tests/test_programs_probe15_bayes_*.py, one family of
methods each) share: the two-class data SWAG and the vmapped ensemble train on.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights, data and
seeds (PyTorch's generator is reproduced, so ``torch.manual_seed`` then ``randn_like`` / ``rand_like`` / ``normal_``
draw the same noise in both), comparing values, gradients and training trajectories."""

import numpy as np


def two_class_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = ((x[:, 0] * x[:, 1] + 0.3 * x[:, 2]) > 0).astype(np.int64)
    return x, y
