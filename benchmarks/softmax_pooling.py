"""The softmax family, the losses over class dim 1, max pooling and attention's softmax, against PyTorch on one
thread: forward and backward separately, for the shapes models use (segmentation's (N, C, H, W) logits over the
class dim 1, a softmax over dim 0 or a middle dim, large last-dim softmaxes, ResNet's max pooling, a GPT-sized
scaled_dot_product_attention). Process time, the best of several rounds, the two libraries interleaved in each
round.

    OPENBLAS_NUM_THREADS=1 python benchmarks/softmax_pooling.py [--rounds N] [--only NAME ...]

Also prints the largest absolute difference from PyTorch of each result and gradient, over the largest |torch|.
"""

import argparse
import os
import sys
import time

import numpy as np
from timing import optional  # (timing puts this checkout first on the path)

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


def _process_best(fn, rounds):
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


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
        g = lib.ones_like(y)
        start = time.process_time()
        y.backward(g)
        return time.process_time() - start
    return forward, backward


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
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    lines = [f"load averages {' '.join(f'{v:.2f}' for v in os.getloadavg())}; OPENBLAS_NUM_THREADS="
             f"{os.environ.get('OPENBLAS_NUM_THREADS')}; ms (process time, best of {rounds}), ratio ours/torch"]
    lines.append(f"{'':40s} {'fwd':>16s} {'bwd':>16s}   rel diff y / dx")
    for label, (call, shape, extra) in CASES.items():
        if only and not any(o in label for o in only):
            continue
        xn = rng.standard_normal(shape).astype(np.float32)
        target = None if extra is None else rng.integers(0, extra[1], extra[0])
        libs = [autograd] + ([torch] if torch is not None else [])
        steps = [_steps(lib, call, xn, target) for lib in libs]
        best = [[float("inf")] * 2 for _ in libs]
        for _ in range(rounds):  # interleaved: each round runs every library once
            for k, (forward, backward) in enumerate(steps):
                best[k][0] = min(best[k][0], _process_best(forward, 1))
                best[k][1] = min(best[k][1], backward())
        cells = []
        for j in range(2):
            ours = best[0][j] * 1e3
            cells.append(f"{ours:7.2f} ({ours / (best[1][j] * 1e3):4.2f}x)" if torch is not None else f"{ours:16.2f}")
        diffs = "" if torch is None else " / ".join(f"{d:.1e}" for d in _differences(torch, call, xn, target))
        lines.append(f"{label:40s} {' '.join(cells)}   {diffs}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", nargs="+", help="run only the cases whose label holds one of these")
    args = parser.parse_args(sys.argv[1:])
    print(report(args.rounds, args.only))
