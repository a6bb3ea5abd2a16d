"""What the files of session 21's probe of continual, federated and private learning
(tests/test_programs_probe21_continual_*.py, one family of methods each) share: two tasks and the MLP trained on them
(with its weights), the federated model with its weights and client data, and a few fine-tuning steps.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and data,
and checked by hand where PyTorch is missing."""

import numpy as np

from .pytorch_programs import weights_of


def two_tasks(seed=0, n=64, d=6):
    """Two synthetic classification tasks on the same inputs' space with different labelling rules."""
    rng = np.random.default_rng(seed)
    XA = rng.standard_normal((n, d)).astype(np.float32)
    YA = (XA[:, 0] + 0.5 * XA[:, 1] > 0).astype(np.int64)
    XB = rng.standard_normal((n, d)).astype(np.float32) + 0.5
    YB = (XB[:, 2] - XB[:, 3] > 0).astype(np.int64)
    return XA, YA, XB, YB


def mlp(m, d=6, hidden=16, classes=2):
    nn = m.nn
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, classes))


MLP_WEIGHTS = weights_of(mlp)


def fed_model(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 2))


FED_WEIGHTS = weights_of(fed_model)


def client_data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 6)).astype(np.float32)
    Y = (X[:, 0] - X[:, 1] + 0.3 * X[:, 2] > 0).astype(np.int64)
    return X, Y


def finetune(m, model, x, y, steps, lr):
    opt = m.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        m.F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


MLP3_WEIGHTS = weights_of(lambda m: mlp(m, classes=3))
