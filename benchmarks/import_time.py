"""(i) Import time: `import autograd, nn, optim` in a fresh interpreter, beside NumPy
alone (which it imports, a floor) and PyTorch. The fastest of interleaved rounds.

Python imports a module from its compiled bytecode (``__pycache__``) when there is one, as
after any install; NumPy and PyTorch are timed so. chainrule is too: one untimed import first
writes the checkout's ``__pycache__`` (even where PYTHONDONTWRITEBYTECODE is set, which would
otherwise have every round compile every module again). A row of its own times the first
import of a fresh checkout, which compiles chainrule's modules from source (a copy of them
without bytecode; NumPy's stays compiled)."""

import os
import shutil
import tempfile

from timing import ROOT, import_seconds, in_subprocess, optional, table

PACKAGES = "autograd, nn, optim"
COMPILING = "  the same, compiling them"


def run(rounds=7):
    in_subprocess(f"import {PACKAGES}\nprint(0)", PYTHONDONTWRITEBYTECODE=None)  # writes their bytecode
    with tempfile.TemporaryDirectory() as fresh:
        for package in PACKAGES.split(", "):
            shutil.copytree(os.path.join(ROOT, package), os.path.join(fresh, package),
                            ignore=shutil.ignore_patterns("__pycache__"))
        candidates = {
            f"import {PACKAGES}": lambda: import_seconds(PACKAGES),
            COMPILING: lambda: import_seconds(PACKAGES, [fresh], PYTHONDONTWRITEBYTECODE="1"),
            "import numpy": lambda: import_seconds("numpy"),
            "import torch": lambda: import_seconds("torch"),
        }
        if optional("torch") is None:
            del candidates["import torch"]
        seconds = {name: float("inf") for name in candidates}
        for _ in range(rounds):  # interleaved: a busy moment slows every candidate alike
            for name, timed in candidates.items():
                seconds[name] = min(seconds[name], timed())
    return seconds


def report():
    return table("(i) import time in a fresh interpreter, ms (fastest of 7 interleaved rounds)", run(),
                 reference=f"import {PACKAGES}")


if __name__ == "__main__":
    print(report())
