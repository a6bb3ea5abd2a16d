"""What the files of session 12's probe of processes and DataLoader workers
(tests/test_programs_probe12_multiproc_*.py: loader seeding, loader workers, Hogwild and A3C, processes) share:
``images`` (small seeded images and labels), ``posix_only`` (fork, and shared memory by file descriptors),
``modules`` (the modules a child process's program is written against, by name) and ``multiprocessing_of``
(autograd.multiprocessing or torch.multiprocessing)."""

import sys

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch


def images(n=12, side=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, side, side)).astype(np.float32), rng.integers(0, 3, n)


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fork, and shared memory by file descriptors")


def modules(name):
    """The modules a child process's program is written against: chainrule's, or PyTorch's."""
    return OURS if name == "autograd" else pytorch()


def multiprocessing_of(m):
    if m is OURS:
        import autograd.multiprocessing as mp
    else:
        import torch.multiprocessing as mp
    return mp
