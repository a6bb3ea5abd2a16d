"""What the files of session 14's time-series probe (tests/test_programs_probe14_timeseries_*.py, one kind of program
each) share: the multivariate series most programs forecast, and a model's parameters and gradients as arrays.

The programs (see tests/pytorch_programs.py) go beyond those of test_programs_probe11_tabular_*.py; each runs on
chainrule and on PyTorch from the same weights and data, comparing losses, gradients and weights."""

import numpy as np


def multiseries(length=64, channels=3, seed=140):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    phase = rng.uniform(0, 2 * np.pi, channels)
    return (2 + 0.03 * t + np.sin(2 * np.pi * t / 8 + phase) + 0.1 * rng.standard_normal((length, channels)))


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
