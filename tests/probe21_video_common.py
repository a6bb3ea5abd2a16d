"""What the files of session 21's video probe (tests/test_programs_probe21_video_*.py, one kind of task each) share:
the synthetic clips most programs train on.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and
clips, comparing outputs, gradients and short training trajectories, and checked without PyTorch against values
worked out by hand."""

import numpy as np


def clips(n=2, channels=3, frames=4, side=8, seed=0):
    """Synthetic clips: a bright square drifting one pixel a frame over noise, channels-first (B, C, T, H, W)."""
    rng = np.random.default_rng(seed)
    video = 0.1 * rng.standard_normal((n, channels, frames, side, side))
    for b in range(n):
        y, x = rng.integers(0, side // 2, 2)
        for t in range(frames):
            video[b, :, t, y:y + 3, (x + t) % side:(x + t) % side + 3] += 1.0
    return video
