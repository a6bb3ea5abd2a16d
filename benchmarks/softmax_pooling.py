"""The softmax family, the losses over class dim 1, max pooling and attention's softmax, against PyTorch on one
thread: forward and backward separately, for the shapes models use (segmentation's (N, C, H, W) logits over the
class dim 1, a softmax over dim 0 or a middle dim, large last-dim softmaxes, ResNet's max pooling, a GPT-sized
scaled_dot_product_attention). Process time, the best of several rounds, the two libraries interleaved in each
round.

    OPENBLAS_NUM_THREADS=1 python benchmarks/softmax_pooling.py [--rounds N] [--only NAME ...]

Also prints the largest absolute difference from PyTorch of each result and gradient, over the largest |torch|.
"""

import numpy as np
from kernel_timing import backward_seconds, best_of_interleaved, header, main, ratio_cells, seconds, torch_on_one_thread

import autograd
import nn


def _softmax(dim, log=False):
    def call(F, x, extra):
        return (F.log_softmax if log else F.softmax)(x, dim)
    return call


def _loss(name):
    def call(F, x, target):
        return getattr(F, name)(x, target)
    return call


def _pool(name, **kwargs):
    def call(F, x, extra):
        y = getattr(F, name)(x, **kwargs)
        return y[0] if isinstance(y, tuple) else y
    return call


def _attention(F, x, extra):
    q, k, v = x.unbind(0)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# name: (call(F, x, extra), input shape, extra: a target's (shape, classes) or None)
CASES = {
    "softmax dim 1 (32,10,64,64)": (_softmax(1), (32, 10, 64, 64), None),
    "log_softmax dim 1 (32,10,64,64)": (_softmax(1, log=True), (32, 10, 64, 64), None),
    "softmax dim 0 (512,1000)": (_softmax(0), (512, 1000), None),
    "log_softmax dim 0 (512,1000)": (_softmax(0, log=True), (512, 1000), None),
    "softmax dim 2 (16,4,64,64)": (_softmax(2), (16, 4, 64, 64), None),
    "softmax dim -1 (4096,1000)": (_softmax(-1), (4096, 1000), None),
    "log_softmax dim -1 (4096,1000)": (_softmax(-1, log=True), (4096, 1000), None),
    "softmax dim -1 (16,4,64,64)": (_softmax(-1), (16, 4, 64, 64), None),
    "cross_entropy (32,10,64,64)": (_loss("cross_entropy"), (32, 10, 64, 64), ((32, 64, 64), 10)),
    "nll_loss (32,10,64,64)": (_loss("nll_loss"), (32, 10, 64, 64), ((32, 64, 64), 10)),
    "max_pool2d 3 s2 (32,64,56,56)": (_pool("max_pool2d", kernel_size=3, stride=2), (32, 64, 56, 56), None),
    "max_pool2d 3 s2 p1 idx (32,64,56,56)": (_pool("max_pool2d", kernel_size=3, stride=2, padding=1,
                                                    return_indices=True), (32, 64, 56, 56), None),
    "max_pool2d 2 s2 (32,64,56,56)": (_pool("max_pool2d", kernel_size=2, stride=2), (32, 64, 56, 56), None),
    "max_pool2d 2 s2 idx (32,64,56,56)": (_pool("max_pool2d", kernel_size=2, stride=2, return_indices=True),
                                          (32, 64, 56, 56), None),
    "max_pool1d 3 s2 (32,64,1000)": (_pool("max_pool1d", kernel_size=3, stride=2), (32, 64, 1000), None),
    "adaptive_max_pool2d 7 (32,64,28,28)": (_pool("adaptive_max_pool2d", output_size=7), (32, 64, 28, 28), None),
    "sdpa causal (3,8,12,256,64)": (_attention, (3, 8, 12, 256, 64), None),
}


def _steps(lib, call, xn, extra):
    """Two closures: the forward alone, and the backward alone (its forward made beforehand, outside the
    timing), returning its seconds."""
    F = nn.functional if lib is autograd else lib.nn.functional
    x = lib.tensor(xn)
    other = None if extra is None else lib.tensor(extra)

    def forward():
        call(F, x, other)

    def backward():
        a = x.detach().requires_grad_(True)
        y = call(F, a, other)
        return backward_seconds(y, lib.ones_like(y))
    return (lambda: seconds(forward)), backward


def _differences(torch, call, xn, extra):
    """max |ours − torch| / max |torch| of y and dL/dx (dL/dy a fixed random array)."""
    results = []
    for lib in (autograd, torch):
        F = nn.functional if lib is autograd else lib.nn.functional
        x = lib.tensor(xn, requires_grad=True)
        y = call(F, x, None if extra is None else lib.tensor(extra))
        g = np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(xn.dtype)
        y.backward(lib.tensor(g))
        results.append([a.detach().numpy() for a in (y, x.grad)])
    return [float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(*results)]


def report(rounds=7, only=None):
    torch = torch_on_one_thread()
    rng = np.random.default_rng(0)
    lines = [header(rounds), f"{'':40s} {'fwd':>16s} {'bwd':>16s}   rel diff y / dx"]
    for label, (call, shape, extra) in CASES.items():
        if only and not any(o in label for o in only):
            continue
        xn = rng.standard_normal(shape).astype(np.float32)
        target = None if extra is None else rng.integers(0, extra[1], extra[0])
        libs = [autograd] + ([torch] if torch is not None else [])
        cells = ratio_cells(best_of_interleaved([_steps(lib, call, xn, target) for lib in libs], rounds))
        diffs = "" if torch is None else " / ".join(f"{d:.1e}" for d in _differences(torch, call, xn, target))
        lines.append(f"{label:40s} {' '.join(cells)}   {diffs}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(report, __doc__)
