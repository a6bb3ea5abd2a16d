"""What the files of session 19's compression probe (tests/test_programs_probe19_compression_*.py, one kind of
compression each) share: ``prune_of``, which imports ``torch.nn.utils.prune`` as the programs do (PyTorch does not
import it with torch.nn).

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same seed, weights and
data, comparing masks, values, gradients, state-dict keys and trajectories."""

import importlib


def prune_of(m):
    """``import torch.nn.utils.prune as prune`` (PyTorch does not import it with torch.nn)."""
    return importlib.import_module(m.nn.__name__ + ".utils.prune")
