"""(i) Import time: `import autograd, nn, optim` in a fresh interpreter, beside NumPy
alone (which it imports, a floor) and PyTorch. The fastest of interleaved rounds."""

from timing import import_seconds, optional, table

CANDIDATES = {"import autograd, nn, optim": "autograd, nn, optim", "import numpy": "numpy", "import torch": "torch"}


def run(rounds=7):
    candidates = dict(CANDIDATES)
    if optional("torch") is None:
        del candidates["import torch"]
    seconds = {name: float("inf") for name in candidates}
    for _ in range(rounds):  # interleaved: a busy moment slows every candidate alike
        for name, modules in candidates.items():
            seconds[name] = min(seconds[name], import_seconds(modules))
    return seconds


def report():
    return table("(i) import time in a fresh interpreter, ms (fastest of 7 interleaved rounds)", run(),
                 reference="import autograd, nn, optim")


if __name__ == "__main__":
    print(report())
