"""What the files of session 12's audio probe (tests/test_programs_probe12_audio_*.py, one family of programs each)
share: the test waveform.

The programs (see tests/pytorch_programs.py) are written by hand as torchaudio's and the speech papers' authors write
them, run on chainrule and on PyTorch from the same weights and data, comparing values and gradients, and checked
against NumPy by hand."""

import numpy as np


def waveform(n=2, length=800, seed=0):
    """Chirps with noise: a little speech-like energy spread over the band."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 8000.0
    x = np.stack([np.sin(2 * np.pi * (200 + 300 * i + 1500 * t) * t) for i in range(n)])
    return (0.5 * x + 0.05 * rng.standard_normal((n, length))).astype(np.float32)
