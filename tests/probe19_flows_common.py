"""What the files of session 19's probe of normalizing flows (tests/test_programs_probe19_flows_*.py, one family of
flows each) share: the two-dimensional data sets several flows are fitted to.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and the
same seeded draws, comparing log-densities, samples, gradients and short training trajectories, and checked by hand
(NumPy, change of variables by the Jacobian) where PyTorch is missing."""

import numpy as np


def zuko_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    x[:, 1] = np.sin(2 * x[:, 0]) + 0.3 * x[:, 1]
    x[:, 2] = x[:, 0] * x[:, 1] + 0.2 * x[:, 2]
    return 1.5 * x


def moons_like(n, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    top = rng.random(n) < 0.5
    x = np.where(top, np.cos(t), 1 - np.cos(t))
    y = np.where(top, np.sin(t), 0.5 - np.sin(t))
    return (np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)
