"""What the files of session 16's interpretability probe (tests/test_programs_probe16_explain_*.py, one family of
methods each) share: the small CNN and MLP most methods explain, and their image and tabular inputs.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and data
(float64 unless said), comparing attributions, values and gradients, and checked by hand (completeness, conservation,
agreement between formulations, NumPy)."""

import numpy as np


def cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(10, 4))


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (n, 3, 8, 8))


def tabular(n=5, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 6))
