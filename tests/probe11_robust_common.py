"""What the files of session 11's robustness probe (tests/test_programs_probe11_robust_*.py: adversarial attacks,
interpretability, uncertainty) share: the small CNN (and its float64 copy) with its images, and the MLP with its
tabular data.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and data
in float64, comparing values, gradients and parameters."""

import numpy as np

from .pytorch_programs import load


def small_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
                         nn.Tanh(), nn.Flatten(), nn.Linear(6 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))


def cnn64(m, weights):
    model = load(m, small_cnn(m), weights).double()
    return model


def images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.05, 0.95, (n, 1, 8, 8))
    y = rng.integers(0, 3, n)
    return X, y


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 3))


def tabular(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    w = rng.standard_normal((5, 4))
    y = (X @ w + 0.8 * rng.standard_normal((n, 4))).argmax(1)
    return X, y
