"""What the files of session 15's dense-prediction probe (tests/test_programs_probe15_dense_*.py, one family of
programs each) share: the float32 tolerances of a few optimizer steps, random images and masks, and a small
segmentation head.

The programs (see tests/pytorch_programs.py) are each run unchanged but for their imports on chainrule and on PyTorch
from the same weights and data in float32, comparing losses, outputs, gradients and parameters after a few optimizer
steps (float32 tolerances), and checked by hand where they run alone. The fixes they led to are tested in
tests/test_probe15_dense_fixes.py."""

import numpy as np

F32 = dict(rtol=2e-4, atol=2e-5)  # a few float32 optimizer steps through a convolutional network


def images(shape, seed=0, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def masks(shape, classes, seed=0, ignore=None, ignore_fraction=0.1):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, shape)
    if ignore is not None:
        target[rng.uniform(size=shape) < ignore_fraction] = ignore
    return target


def seg_head(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.GELU(), nn.Conv2d(8, 4, 1))
