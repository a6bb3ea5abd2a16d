"""(d) Backward through very deep graphs:

- a Value chain y = y * 1.0 + 0.0 of 10^6 nodes: seconds, seconds per node at growing
  depths (flat when the time grows linearly: no recursion, no quadratic bookkeeping),
  and the peak resident memory of a fresh process that builds it and runs backward;
- a Tensor chain of 10^5 multiplications x = x * 1.00001 (4 elements): backward seconds,
  beside PyTorch's.
"""

import time

import numpy as np
from timing import optional, peak_rss, table

import autograd
from autograd import Value

VALUE_DEPTHS = (5_000, 50_000, 500_000)  # two nodes per step: 10^6 nodes at the deepest
TENSOR_DEPTH = 100_000


def value_chain(depth):
    """Seconds of backward through ``depth`` steps of y = y * 1.0 + 0.0, and the node count."""
    x = Value(0.5)
    y = x
    for _ in range(depth):
        y = y * 1.0 + 0.0
    start = time.perf_counter()
    y.backward()
    return time.perf_counter() - start, 2 * depth


def tensor_chain(library, depth):
    """Seconds of backward through ``depth`` multiplications x = x * 1.00001, then a sum."""
    x = library.ones(4, requires_grad=True)
    y = x
    for _ in range(depth):
        y = y * 1.00001
    loss = y.sum()
    start = time.perf_counter()
    loss.backward()
    seconds = time.perf_counter() - start
    np.testing.assert_allclose(x.grad.numpy(), float(np.float32(1.00001)) ** depth, rtol=1e-3)  # float32 steps
    return seconds


def report():
    rows = [value_chain(depth) for depth in VALUE_DEPTHS]
    per_node = [seconds / nodes * 1e6 for seconds, nodes in rows]
    seconds, nodes = rows[-1]
    lines = [table(f"(d) Value chain of {nodes:,} nodes, backward, s", {"Value.backward": seconds},
                   reference="Value.backward", unit="s", scale=1),
             "    " + "  ".join(f"{n:>9,} nodes: {p:5.2f} us/node" for (_, n), p in zip(rows, per_node)),
             f"    per-node time deepest/shallowest = {per_node[-1] / per_node[0]:4.2f} (1.0 is linear growth)"]
    memory = {"build + backward": peak_rss(f"import deep_chain\ndeep_chain.value_chain({VALUE_DEPTHS[-1]})"),
              "import autograd only": peak_rss("import autograd")}
    lines.append(table(f"(d) Value chain of {nodes:,} nodes, peak resident memory of a fresh process, MB", memory,
                       reference="build + backward", unit="MB", scale=1e-6))
    libraries = {"chainrule": autograd}
    torch = optional("torch")
    if torch is not None:
        libraries["PyTorch"] = torch
    times = {name: min(tensor_chain(library, TENSOR_DEPTH) for _ in range(3)) for name, library in libraries.items()}
    lines.append(table(f"(d) Tensor chain of {TENSOR_DEPTH:,} multiplications x = x * 1.00001, backward, s", times,
                       reference="chainrule", unit="s", scale=1))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
