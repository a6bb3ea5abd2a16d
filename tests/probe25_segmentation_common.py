# ruff: noqa: E731  (the programs are kept as their authors write them)
"""What the files of session 25's segmentation probe (tests/test_programs_probe25_segmentation_*.py, one part of a
segmentation pipeline each) share: ``D`` (a tensor's dtype's name) and ``kind`` (the same for results and errors),
and NumPy's softmax and cross-entropy to check against.

The programs (see tests/pytorch_programs.py) are written as people write them after milesial's U-Net, torchvision's
DeepLabV3/FCN heads, PSPNet, SegNet, nnU-Net, Lovasz-softmax's reference code and mmsegmentation's metrics, each run
on chainrule and on PyTorch from the same seeds, comparing values, gradients, dtypes (masks of int64, uint8 and
bool), errors and memory sharing, and checked against NumPy by hand or invariants where PyTorch is not installed."""

import numpy as np

D = lambda t: str(t.dtype).replace("torch.", "")


def kind(error):
    """An error's family, in which both libraries agree (chainrule's ShapeError and DtypeError are RuntimeErrors
    that are also ValueError/TypeError, where PyTorch raises a plain RuntimeError)."""
    for family in (NotImplementedError, IndexError, RuntimeError, ValueError, TypeError):
        if isinstance(error, family) and not (family is IndexError and isinstance(error, RuntimeError)):
            return family.__name__
    return type(error).__name__


def softmax(z, axis):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def numpy_cross_entropy(logits, target, weight=None, ignore=-100):
    """Per-pixel -w_y log softmax(z)_y over (N, C, H, W), mean weighted by w_y over the pixels not ignored."""
    logp = np.log(softmax(logits.astype(np.float64), 1))
    valid = target != ignore
    t = np.where(valid, target, 0)
    picked = np.take_along_axis(logp, t[:, None], 1)[:, 0]
    w = np.ones(logits.shape[1]) if weight is None else np.asarray(weight, np.float64)
    wy = w[t] * valid
    return -(picked * wy).sum() / wy.sum(), -picked * valid
