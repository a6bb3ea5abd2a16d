"""What the kernel scripts (convolutions.py, softmax_pooling.py, activations_norms.py) share: each times the steps of
an op (its forward, its backward to one input or to all) on ours and on PyTorch on one thread, in process time, the
best of several rounds, the libraries interleaved in each round (so a burst of load on the machine falls on both),
and prints ours in ms with its ratio to PyTorch's."""

import argparse
import os
import sys
import time

from timing import optional  # (timing puts this checkout first on the path)


def torch_on_one_thread():
    """PyTorch set to one thread, or None where it is not installed."""
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(1)
    return torch


def seconds(step):
    """The process time of one call of ``step``."""
    start = time.process_time()
    step()
    return time.process_time() - start


def backward_seconds(y, grad):
    """The process time of ``y.backward(grad)`` alone (the forward made beforehand, outside the timing)."""
    start = time.process_time()
    y.backward(grad)
    return time.process_time() - start


def best_of_interleaved(timers, rounds):
    """best[k][j]: the least of ``rounds`` measurements of step j of library k (``timers[k][j]``, a callable that
    returns the seconds it measured; None for a step that library's op has not: inf). Each round runs every step of
    every library once, the libraries in turn first (whichever runs first in a round measures slower)."""
    best = [[float("inf")] * len(steps) for steps in timers]
    order = list(range(len(timers)))
    for round_ in range(rounds):
        for k in (order if round_ % 2 == 0 else order[::-1]):
            steps = timers[k]
            for j, step in enumerate(steps):
                if step is not None:
                    best[k][j] = min(best[k][j], step())
    return best


def header(rounds):
    """The first line of a report: the machine's load and what the figures are."""
    return (f"load averages {' '.join(f'{v:.2f}' for v in os.getloadavg())}; OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS')}; ms (process time, best of {rounds}), ratio ours/torch")


def ratio_cells(best):
    """Ours' ms for each step (best[0]), with the ratio to PyTorch's (best[1]) where it was measured; '-' for a step
    ours has not."""
    cells = []
    for j, ours in enumerate(best[0]):
        ours *= 1e3
        if ours == float("inf"):
            cells.append(f"{'-':>16s}")
        elif len(best) > 1:
            cells.append(f"{ours:7.2f} ({ours / (best[1][j] * 1e3):4.2f}x)")
        else:
            cells.append(f"{ours:16.2f}")
    return cells


def main(report, doc):
    """Run ``report(rounds, only)`` from the command line: ``--rounds N --only LABEL ...``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", nargs="+", help="run only the cases whose label holds one of these")
    args = parser.parse_args(sys.argv[1:])
    print(report(args.rounds, args.only))
