"""What the files of session 18's optimizer probe (tests/test_programs_probe18_optimizers_*.py, one family of
optimizers each) share: the small network every optimizer trains, its batches, weights and parameters' values.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and data,
comparing losses, parameters and the optimizer's state: what probe6_optimizers (SAM, lonePatient's Lookahead) and
probe13_optim (PyTorch's own optimizers, their state dicts and schedulers) leave out. Every program's forward sums in
float32 (conv, matmul) and most updates take a norm, sum or dot, whose summation order differs between NumPy and
PyTorch: chainrule and PyTorch are compared to a tolerance that each test states with its reason (Shampoo in float64,
to 1e-10); a run resumed from a state dict is compared with the straight run bit for bit (Sophia-G, timm's
Lookahead). What the programs found and was fixed is tested in tests/test_probe18_optimizers_fixes.py."""

import numpy as np

from .pytorch_programs import pytorch, weights_of

TORCH = pytorch()


def net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))


def batches(m, n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n * size, 1, 6, 6)).astype(np.float32)
    y = ((X[:, 0, :3].mean((1, 2)) > 0).astype(np.int64) + (X[:, 0, 3:, :3].mean((1, 2)) > 0.1)).astype(np.int64)
    return [(m.torch.tensor(X[i * size:(i + 1) * size]), m.torch.tensor(y[i * size:(i + 1) * size]))
            for i in range(n)]


WEIGHTS = weights_of(net)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]
