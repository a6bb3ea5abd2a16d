"""What the files of session 27's meta-learning probe (tests/test_programs_probe27_meta_*.py, one kind of program
each) share: seeded arrays, and the tolerances at which the two libraries must agree.

The programs go beyond tests/test_programs_probe8_meta_*.py: each runs on chainrule and, where installed, on PyTorch,
comparing values and gradients (float64, to about 1e-9); without PyTorch each test still asserts invariants that can
fail (finite differences of a hypergradient, symmetric Hessians, vjp/jvp adjointness, per-example gradients averaging
to the batch gradient) or values."""

import numpy as np


def arr(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


TIGHT = {"rtol": 1e-8, "atol": 1e-10}
