"""What the files of session 15's model-compression probe (tests/test_programs_probe15_quant_*.py: straight-through
quantization, torch.ao and int8, pruning and distillation) share: ``classification_data`` and ``image_data``, the
seeded inputs and labels the programs train on, and ``mlp`` and ``cnn``, the small networks that the quantization and
the pruning programs both build."""

import numpy as np


def classification_data(n=64, features=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)).astype(np.float32) * 1.5
    labels = rng.integers(0, classes, n)
    x = centers[labels] + 0.7 * rng.standard_normal((n, features)).astype(np.float32)
    return x.astype(np.float32), labels


def image_data(n=16, channels=2, side=6, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.standard_normal((n, channels, side, side)).astype(np.float32) + labels[:, None, None, None] * 0.5
    return x.astype(np.float32), labels


def mlp(m, features=12, hidden=16, classes=4):
    nn = m.nn
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 3))
