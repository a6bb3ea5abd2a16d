"""What the files of session 12's classical machine-learning probe (tests/test_programs_probe12_classic_*.py, one
kind of method each) share: the tolerance (TOL) and the classification and clustered (blobs) data sets.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch in float64 from the same data
and initial values, comparing values, hyperparameters and gradients (to about 1e-9 unless said), and checked against
NumPy by hand where the formula is short (so that they still assert something without PyTorch)."""

import numpy as np

TOL = dict(rtol=1e-9, atol=1e-10)


def classification_data(n=60, d=3, classes=3, seed=2):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 1.5
    labels = rng.integers(0, classes, n)
    X = centers[labels] + rng.standard_normal((n, d))
    return X, labels


def blobs(n=90, seed=3):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [4.0, 4.0], [-4.0, 3.0]])
    labels = rng.integers(0, 3, n)
    return centers[labels] + 0.7 * rng.standard_normal((n, 2)), labels
