# ruff: noqa: E501, F841  (the programs are kept as their authors write them)
"""What the files of session 25's image-synthesis probe (tests/test_programs_probe25_synthesis_*.py, one kind of
program each) share: ``close`` (NumPy's allclose in float64 at the probe's tolerances), and the Gram-matrix and
total-variation program (Gram matrices by ``mm`` and ``bmm``) that the style tests and the runs without PyTorch both
take.

The programs (see tests/pytorch_programs.py) are written as the PyTorch tutorials, pytorch/examples,
CycleGAN/pix2pix, Lucid/Lucent and the super-resolution papers' code write them, each run on chainrule and on PyTorch
from the same seeds, comparing values and gradients, and checked against NumPy by hand, literals or invariants where
PyTorch is not installed."""

import numpy as np


def gram_bmm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    def gram(y):
        (b, ch, h, w) = y.size()
        features = y.view(b, ch, w * h)
        features_t = features.transpose(1, 2)
        return features.bmm(features_t) / (ch * h * w)
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    g = gram(x)
    t = torch.randn(2, 4, 4)
    loss = F.mse_loss(g, t.expand_as(g))
    loss.backward()
    def tv(img, weight):
        b, c, h, w = img.size()
        tv_h = torch.pow(img[:, :, 1:, :] - img[:, :, :-1, :], 2).sum()
        tv_w = torch.pow(img[:, :, :, 1:] - img[:, :, :, :-1], 2).sum()
        return weight * (tv_h + tv_w) / (b * c * h * w)
    y = torch.randn(1, 3, 8, 8, requires_grad=True)
    l2 = tv(y, 2.0) + (torch.abs(y[:, :, :, :-1] - y[:, :, :, 1:]).mean() + torch.abs(y[:, :, :-1, :] - y[:, :, 1:, :]).mean())
    l2.backward()
    return dict(g=g, gx=x.grad, l2=l2, gy=y.grad, dt=g.dtype == torch.float32, x=x, t=t, y=y)


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)
