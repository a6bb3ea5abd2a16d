"""(d) Backward through very deep graphs: a 10^6-node Value chain and a 10^5-node
Tensor chain. Reports seconds, and seconds per node at growing depths, which stay
flat when the time grows linearly (no recursion, no quadratic bookkeeping)."""

import time

import numpy as np

import autograd
from autograd import Value


def value_chain(depth):
    x = Value(0.5)
    y = x
    for _ in range(depth):
        y = y * 1.0 + 0.0  # two nodes per step
    start = time.perf_counter()
    y.backward()
    return time.perf_counter() - start, 2 * depth


def tensor_chain(depth):
    x = autograd.Tensor(np.ones(4, dtype=np.float32), requires_grad=True)
    y = x
    for _ in range(depth):
        y = y * 1.0
    loss = y.sum()
    start = time.perf_counter()
    loss.backward()
    return time.perf_counter() - start, depth + 1


def report():
    lines = ["(d) backward through deep chains"]
    for name, chain, depths in (("Value", value_chain, (5_000, 50_000, 500_000)),
                                ("Tensor", tensor_chain, (1_000, 10_000, 100_000))):
        rows = [chain(depth) for depth in depths]
        per_node = [seconds / nodes * 1e6 for seconds, nodes in rows]
        seconds, nodes = rows[-1]
        growth = "  ".join(f"{n:>9,} nodes: {p:5.2f} us/node" for (_, n), p in zip(rows, per_node))
        lines.append(f"    {name:6s} {nodes:>9,} nodes backward in {seconds:6.2f} s;  {growth}")
        lines.append(f"           per-node time deepest/shallowest = {per_node[-1] / per_node[0]:4.2f} "
                     "(1.0 is linear growth)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
