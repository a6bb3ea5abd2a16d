"""(a) Per-op overhead: 16x16 float32 ((a*b + c).relu()).sum(), then backward.

Reports microseconds per forward op (the op and its share of the backward),
beside NumPy's forward alone and PyTorch (one thread) when installed.
"""

import numpy as np
from timing import best_time, optional, table

import autograd

OPS = 4  # mul, add, relu, sum


def run():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(3)]
    a, b, c = (autograd.Tensor(x, requires_grad=True) for x in arrays)

    def ours():
        a.grad = b.grad = c.grad = None
        ((a * b + c).relu()).sum().backward()

    def numpy_forward():
        x, y, z = arrays
        np.maximum(x * y + z, 0).sum()

    candidates = {"chainrule (forward + backward)": ours, "NumPy (forward only)": numpy_forward}
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(1)
        ta, tb, tc = (torch.tensor(x, requires_grad=True) for x in arrays)

        def theirs():
            ta.grad = tb.grad = tc.grad = None
            ((ta * tb + tc).relu()).sum().backward()

        candidates["PyTorch, 1 thread (forward + backward)"] = theirs
    rows = {name: float("inf") for name in candidates}
    for _ in range(5):  # interleaved rounds: a noisy moment hits everyone alike
        for name, fn in candidates.items():
            rows[name] = min(rows[name], best_time(fn, repeat=3, budget=0.1) / OPS)
    return rows


def report():
    return table("(a) per-op overhead, 16x16 float32, microseconds per op (ratios: time / the reference's)",
                 run(), reference="chainrule (forward + backward)", unit="us", scale=1e6)


if __name__ == "__main__":
    print(report())
