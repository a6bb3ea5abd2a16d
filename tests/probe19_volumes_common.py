"""What the files of session 19's probe of 3-D volumetric programs (tests/test_programs_probe19_volumes_*.py, one
family of networks or tools each) share: synthetic volumes with their labels and a 1-D Gaussian kernel.

The programs are written as medical-imaging and video code writes them (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same weights, comparing values, gradients and short training trajectories, and
checked without PyTorch against known values."""

import numpy as np


def volumes(n=2, channels=1, side=8, classes=3, seed=0):
    """Synthetic volumes: blobs of a few classes in noise, and their integer labels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1)
    labels = np.zeros((n, side, side, side), dtype=np.int64)
    for b in range(n):
        for c in range(1, classes):
            centre = rng.uniform(2, side - 2, 3)
            radius = rng.uniform(1.5, 2.5)
            labels[b][np.linalg.norm(grid - centre, axis=-1) < radius] = c
    images = labels[:, None].astype(np.float64) + 0.3 * rng.standard_normal((n, channels, side, side, side))
    return images, labels


def gaussian_kernel_1d(m, sigma, truncated=3.0):
    torch = m.torch
    tail = int(max(float(sigma) * truncated, 0.5) + 0.5)
    x = torch.arange(-tail, tail + 1, dtype=torch.float64)
    k = torch.exp(-0.5 / (sigma * sigma) * x ** 2)
    return k / k.sum()
