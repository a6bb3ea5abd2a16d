"""``nn.CrossMapLRN2d``: Lua Torch's ``SpatialCrossMapLRN`` as PyTorch ported it, for (N, C, H, W) input.

    y[n, c] = x[n, c] · (k + α/size · Σ_{c' ∈ W(c)} x[n, c']²)^(−β)

This is local response normalisation across channels (``nn.LocalResponseNorm``), but with the
window W(c) that PyTorch's port computes, which is not always LocalResponseNorm's. PyTorch sums
the squares with a running window: with P = ⌊(size − 1)/2⌋ + 1, channel 0's window is channels
0 .. P − 1; each next channel c adds channel c + P − 1 (while there is one) and drops channel
c − P, but only from c = P + 1 on (Lua's loop, 1-based, dropped from c = P on). So channel 0,
never dropped, stays in every window, and channel P's window holds one channel more:

    size 3, C = 5:   W(0) = {0, 1}   W(1) = {0, 1, 2}   W(2) = {0, 1, 2, 3}   W(3) = {0, 2, 3, 4}   W(4) = {0, 3, 4}

On channels c < P, and on every channel when C ≤ P, this is LocalResponseNorm's window; from
c = P on, in general not. The window is built here by that same running rule (as a C × C 0/1
matrix), so the outputs are PyTorch's.

The gradient is the exact derivative of that function (the module is composed of differentiable
ops). PyTorch's own backward for this module is a hand-written one that is not the derivative of
its forward (``torch.autograd.gradcheck`` fails on it, and with size = 1 it raises), so gradients
here differ from PyTorch's: here they are right.
"""

import numpy

import autograd

from .module import Module


def window_matrix(channels, size):
    """M with M[c, c'] = 1 where channel c' is in channel c's window (PyTorch's running rule)."""
    pre_pad = int((size - 1) / 2 + 1)
    counts = numpy.zeros((channels, channels))
    counts[0, :min(pre_pad, channels)] = 1
    for c in range(1, channels):
        counts[c] = counts[c - 1]
        if c < channels - pre_pad + 1:
            counts[c, c + pre_pad - 1] += 1
        if c > pre_pad:
            counts[c, c - pre_pad] -= 1
    return counts


def cross_map_lrn2d(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """y = x · (k + α/size · M (x²))^(−β), M the window matrix over channels (see the module's docstring)."""
    if input.ndim != 4:
        raise ValueError(f"CrossMapLRN2d: Expected input to be 4D, got {input.ndim}D instead.")
    if not input.is_floating_point():
        raise RuntimeError(f"CrossMapLRN2d: expected a floating-point input, but got {input.dtype}")
    windows = autograd.tensor(window_matrix(input.shape[1], size), dtype=input.dtype, device=input.device)
    sums = autograd.einsum("dc,nchw->ndhw", windows, input * input)
    return input * (sums * (alpha / size) + k) ** (-beta)


class CrossMapLRN2d(Module):
    """Local response normalisation across the channels of (N, C, H, W) input, with PyTorch's
    window for this module (see ``nn.cross_map_lrn``'s docstring; ``nn.LocalResponseNorm`` is the
    one to choose for new code)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return cross_map_lrn2d(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
