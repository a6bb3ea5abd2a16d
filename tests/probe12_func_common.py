"""What the files of session 12's torch.func probe (tests/test_programs_probe12_func_*.py, one kind of program each)
share: ``_same`` (run on both libraries, ours returned) and the small MLP most programs transform, with its weights.

The programs are each run on chainrule and on PyTorch from the same weights and data (float64 where rounding would be
amplified), comparing values and gradients, and checked by hand where PyTorch is missing."""

import numpy as np

from tests.pytorch_programs import load, run_both, weights_of


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def _mlp(m, sizes=(3, 8, 2), act="Tanh"):
    nn = m.nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(getattr(nn, act)())
    return nn.Sequential(*layers).double()


def _model(m, weights, sizes=(3, 8, 2), act="Tanh"):
    return load(m, _mlp(m, sizes, act), weights)


def _weights(sizes=(3, 8, 2), act="Tanh", seed=0):
    return {k: v.astype(np.float64) for k, v in weights_of(lambda m: _mlp(m, sizes, act), seed).items()}
