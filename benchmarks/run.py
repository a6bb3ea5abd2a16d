"""`make bench`: every benchmark, ratios measured in one process.

These machines are shared and noisy, so each benchmark reports ratios taken
side by side in one run (against hand-written NumPy, and PyTorch and micrograd
when they are installed: pip install 'chainrule[reference]'), never absolute targets.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import deep_chain  # noqa: E402
import lenet_step  # noqa: E402
import mlp_step  # noqa: E402
import optimizer_step  # noqa: E402
import per_op  # noqa: E402
import recurrent  # noqa: E402
import value_engine  # noqa: E402
from timing import optional  # noqa: E402


def main():
    torch = optional("torch")
    threads = torch.get_num_threads() if torch is not None else None
    print(per_op.report())  # PyTorch with one thread, as Python runs our ops on one
    if torch is not None:
        torch.set_num_threads(threads)  # the MLP step: PyTorch's threads, NumPy's BLAS threads
    print(mlp_step.report())
    print(lenet_step.report())  # sets PyTorch to two threads, as the brief's CPU comparison
    print(optimizer_step.report())
    print(value_engine.report())
    print(deep_chain.report())
    print(recurrent.report())  # sets PyTorch to one thread for its runs, then back


if __name__ == "__main__":
    main()
