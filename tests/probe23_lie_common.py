"""What the files of session 23's robotics and Lie-group probe (tests/test_programs_probe23_lie_*.py, one kind of
program each) share: the orthonormality check and NumPy's hat map and Rodrigues formula that the tests check
rotations against.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same seeds (compared
with PyTorch where installed), and checked without PyTorch against NumPy and invariants."""

import numpy as np


def orthonormal(R, tol=1e-9):
    R = np.asarray(R, dtype=np.float64)
    eye = np.broadcast_to(np.eye(3), R.shape)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), eye, atol=tol)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=tol)


def hat_np(w):
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def rodrigues_np(w):
    th = np.linalg.norm(w)
    K = hat_np(w / th)
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
