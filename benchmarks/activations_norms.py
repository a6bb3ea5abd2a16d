"""The activations and normalisations of transformers and CNNs, against PyTorch on one thread: forward, and backward
to every input (x, and the weight and bias where there are), separately, float32 at the shapes real models use.
Process time, the best of several rounds, the two libraries interleaved in each round.

    OPENBLAS_NUM_THREADS=1 python benchmarks/activations_norms.py [--rounds N] [--only NAME ...]

Also prints the fraction of the result's and of dL/dx's elements equal bit for bit to PyTorch's (dL/dy a fixed
random array), and the largest relative difference of each.
"""

import numpy as np
from kernel_timing import backward_seconds, best_of_interleaved, header, main, ratio_cells, seconds, torch_on_one_thread

import autograd
import nn

F = nn.functional

WIDE = (16, 64, 512)
IMAGES = (32, 64, 16, 16)

# label: (input shape, parameter shapes, call(functional, x, *parameters))
CASES = {
    "gelu (16,64,512)": (WIDE, (), lambda f, x: f.gelu(x)),
    "gelu tanh (16,64,512)": (WIDE, (), lambda f, x: f.gelu(x, approximate="tanh")),
    "silu (16,64,512)": (WIDE, (), lambda f, x: f.silu(x)),
    "mish (16,64,512)": (WIDE, (), lambda f, x: f.mish(x)),
    "elu (16,64,512)": (WIDE, (), lambda f, x: f.elu(x)),
    "hardswish (16,64,512)": (WIDE, (), lambda f, x: f.hardswish(x)),
    "softplus (16,64,512)": (WIDE, (), lambda f, x: f.softplus(x)),
    "prelu 1 (16,64,512)": (WIDE, ((1,),), lambda f, x, w: f.prelu(x, w)),
    # (slopes about 1, on both sides of it: the selection's path, not maximum's or minimum's: ops.activations.Prelu)
    "prelu 64 (32,64,16,16)": (IMAGES, ((64,),), lambda f, x, w: f.prelu(x, w)),
    "layer_norm (16,64,128)": ((16, 64, 128), ((128,), (128,)), lambda f, x, w, b: f.layer_norm(x, (128,), w, b)),
    "rms_norm (16,64,128)": ((16, 64, 128), ((128,),), lambda f, x, w: f.rms_norm(x, (128,), w)),
    "group_norm 8 (32,64,16,16)": (IMAGES, ((64,), (64,)), lambda f, x, w, b: f.group_norm(x, 8, w, b)),
    "batch_norm train (32,64,16,16)": (IMAGES, ((64,), (64,)),
                                       lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True)),
    "instance_norm (32,64,16,16)": (IMAGES, (), lambda f, x: f.instance_norm(x)),
}


def _arrays(rng, shape, parameter_shapes):
    x = rng.standard_normal(shape).astype(np.float32)
    parameters = [(1 + 0.1 * rng.standard_normal(s)).astype(np.float32) for s in parameter_shapes]
    return x, parameters


def _steps(lib, tensor, call, x, parameters, g):
    """The forward alone, and the backward to every input alone (its forward made beforehand, outside the timing)."""
    functional = F if lib is autograd else lib.nn.functional

    def forward():
        call(functional, tensor(x), *(tensor(p) for p in parameters))

    def backward():
        inputs = [tensor(a, requires_grad=True) for a in (x, *parameters)]
        y = call(functional, *inputs)
        return backward_seconds(y, tensor(g))
    return (lambda: seconds(forward)), backward


def _values(lib, tensor, call, x, parameters, g):
    functional = F if lib is autograd else lib.nn.functional
    inputs = [tensor(a, requires_grad=True) for a in (x, *parameters)]
    y = call(functional, *inputs)
    y.backward(tensor(g))
    return y.detach().numpy(), inputs[0].grad.numpy()


def _agreement(ours, theirs):
    equal = np.mean(ours.view(np.uint32) == theirs.view(np.uint32))
    return equal, float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def report(rounds=7, only=None):
    torch = torch_on_one_thread()
    rng = np.random.default_rng(0)
    lines = [header(rounds), f"{'':32s} {'fwd':>16s} {'bwd':>16s}   equal bits y, dx (largest rel diff)"]
    for label, (shape, parameter_shapes, call) in CASES.items():
        if only and not any(o in label for o in only):
            continue
        x, parameters = _arrays(rng, shape, parameter_shapes)
        g = rng.standard_normal(shape).astype(np.float32)
        libs = [(autograd, autograd.tensor)] + ([(torch, torch.tensor)] if torch is not None else [])
        timers = [_steps(lib, tensor, call, x, parameters, g) for lib, tensor in libs]
        cells = ratio_cells(best_of_interleaved(timers, rounds))
        agreement = ""
        if torch is not None:
            pairs = zip(*(_values(lib, tensor, call, x, parameters, g) for lib, tensor in libs), strict=True)
            agreement = ", ".join(f"{equal:6.1%} ({diff:.0e})" for equal, diff in (_agreement(a, b) for a, b in pairs))
        lines.append(f"{label:32s} {' '.join(cells)}   {agreement}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(report, __doc__)
