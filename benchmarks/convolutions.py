"""Convolutions and the pooling after them, against PyTorch on one thread: forward, backward to the input and
backward to the weight, separately, for the shapes real models use (3x3, 1x1, 7x7 stride 2, depthwise, dilated,
'same', conv1d over sequences, transposed with stride 2 and output_padding, a small conv3d), and max/average/
adaptive average pooling. Process time, the best of several rounds, the two libraries interleaved in each round.

    OPENBLAS_NUM_THREADS=1 python benchmarks/convolutions.py [--rounds N] [--only NAME ...]

Also prints the largest absolute and relative difference from PyTorch of each result and gradient (float32).
"""

import numpy as np
from kernel_timing import backward_seconds, best_of_interleaved, header, main, ratio_cells, seconds, torch_on_one_thread

import autograd
import nn

F = nn.functional

# name: (function name, input shape, weight shape or None, keyword arguments)
CONVOLUTIONS = {
    "conv2d 3x3 c3->16 (32,3,32,32)": ("conv2d", (32, 3, 32, 32), (16, 3, 3, 3), dict(padding=1)),
    "conv2d 3x3 c16->32 (32,16,16,16)": ("conv2d", (32, 16, 16, 16), (32, 16, 3, 3), dict(padding=1)),
    "conv2d 3x3 c64->64 (8,64,32,32)": ("conv2d", (8, 64, 32, 32), (64, 64, 3, 3), dict(padding=1)),
    "conv2d 1x1 c64->128 (8,64,32,32)": ("conv2d", (8, 64, 32, 32), (128, 64, 1, 1), {}),
    "conv2d 7x7 s2 c3->64 (8,3,64,64)": ("conv2d", (8, 3, 64, 64), (64, 3, 7, 7), dict(stride=2, padding=3)),
    "conv2d 3x3 s2 c32->64 (16,32,32,32)": ("conv2d", (16, 32, 32, 32), (64, 32, 3, 3), dict(stride=2, padding=1)),
    "depthwise 3x3 c64 (16,64,32,32)": ("conv2d", (16, 64, 32, 32), (64, 1, 3, 3), dict(padding=1, groups=64)),
    "groups=4 3x3 c64 (16,64,16,16)": ("conv2d", (16, 64, 16, 16), (64, 16, 3, 3), dict(padding=1, groups=4)),
    "dilation=2 3x3 c32 (8,32,32,32)": ("conv2d", (8, 32, 32, 32), (32, 32, 3, 3), dict(padding=2, dilation=2)),
    "same 4x4 c16->16 (16,16,32,32)": ("conv2d", (16, 16, 32, 32), (16, 16, 4, 4), dict(padding="same")),
    "conv1d k3 c64 (16,64,1000)": ("conv1d", (16, 64, 1000), (64, 64, 3), dict(padding=1)),
    "conv1d k5 c64 (16,64,1000)": ("conv1d", (16, 64, 1000), (64, 64, 5), dict(padding=2)),
    "conv_transpose2d s2 op1 (16,32,16,16)": ("conv_transpose2d", (16, 32, 16, 16), (32, 16, 3, 3),
                                              dict(stride=2, padding=1, output_padding=1)),
    "conv3d 3x3x3 c8->16 (4,8,8,16,16)": ("conv3d", (4, 8, 8, 16, 16), (16, 8, 3, 3, 3), dict(padding=1)),
}

POOLINGS = {
    "max_pool2d 2 (32,64,32,32)": ("max_pool2d", (32, 64, 32, 32), dict(kernel_size=2)),
    "max_pool2d 3 s2 p1 (16,64,56,56)": ("max_pool2d", (16, 64, 56, 56), dict(kernel_size=3, stride=2, padding=1)),
    "avg_pool2d 2 (32,64,32,32)": ("avg_pool2d", (32, 64, 32, 32), dict(kernel_size=2)),
    "adaptive_avg_pool2d 1 (32,256,8,8)": ("adaptive_avg_pool2d", (32, 256, 8, 8), dict(output_size=1)),
    "adaptive_avg_pool2d 7 (8,64,28,28)": ("adaptive_avg_pool2d", (8, 64, 28, 28), dict(output_size=7)),
}


def _steps(lib, name, x, w, kwargs):
    """Three closures: the forward alone, the backward to the input alone, to the weight alone (each
    backward's forward is made beforehand, outside the timing)."""
    function = getattr(lib.nn.functional if lib is not autograd else F, name)
    if w is None:
        def call(a, b):
            return function(a, **kwargs)
    else:
        def call(a, b):
            return function(a, b, **kwargs)

    def forward():
        call(x, w)

    def backward_to(which):
        def run():
            a = x.detach().requires_grad_(which == "x")
            b = None if w is None else w.detach().requires_grad_(which == "w")
            y = call(a, b)
            return backward_seconds(y, lib.ones_like(y))
        return run
    return (lambda: seconds(forward)), backward_to("x"), (backward_to("w") if w is not None else None)


def _differences(torch, name, xn, wn, kwargs):
    """max |ours − torch| / max |torch| of y, dL/dx and dL/dw (dL/dy a fixed random array)."""
    results = []
    for lib, tensor in ((autograd, autograd.tensor), (torch, torch.tensor)):
        function = getattr(F if lib is autograd else torch.nn.functional, name)
        x = tensor(xn, requires_grad=True)
        w = None if wn is None else tensor(wn, requires_grad=True)
        y = function(x, **kwargs) if w is None else function(x, w, **kwargs)
        g = np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(np.float32)
        y.backward(tensor(g))
        results.append([a.detach().numpy() for a in (y, x.grad) + (() if w is None else (w.grad,))])
    return [float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(*results)]


def report(rounds=7, only=None):
    torch = torch_on_one_thread()
    rng = np.random.default_rng(0)
    lines = [header(rounds), f"{'':40s} {'fwd':>16s} {'bwd x':>16s} {'bwd w':>16s}   rel diff y / dx / dw"]
    cases = {**CONVOLUTIONS, **{k: (v[0], v[1], None, v[2]) for k, v in POOLINGS.items()}}
    for label, (name, xshape, wshape, kwargs) in cases.items():
        if only and not any(o in label for o in only):
            continue
        xn = rng.standard_normal(xshape).astype(np.float32)
        wn = None if wshape is None else (rng.standard_normal(wshape) / np.sqrt(np.prod(wshape[1:]))).astype(np.float32)
        libs = [(autograd, autograd.tensor)] + ([(torch, torch.tensor)] if torch is not None else [])
        timers = [_steps(lib, name, tensor(xn), None if wn is None else tensor(wn), kwargs) for lib, tensor in libs]
        cells = ratio_cells(best_of_interleaved(timers, rounds))
        diffs = "" if torch is None else " / ".join(f"{d:.1e}" for d in _differences(torch, name, xn, wn, kwargs))
        lines.append(f"{label:40s} {' '.join(cells)}   {diffs}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(report, __doc__)
