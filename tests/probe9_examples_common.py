"""What the files of session 9's probe of pytorch/examples (tests/test_programs_probe9_examples_*.py, one example or
a few each) share: numbers read out of printed logs, and the comparison of parameters that leaves out those whose
gradient is zero in exact arithmetic.

Printed logs are compared by their text and, to a tolerance, their numbers. Some parameters get a gradient that is
zero in exact arithmetic (the key bias of attention: softmax does not see a score shifted alike for every key; a
convolution's bias before an instance norm, which subtracts the channel mean), so what both libraries compute for
them is rounding noise, which Adam then scales up to full-size steps. Those are checked to be negligible, and left
out of the comparison of parameters.

The programs (see tests/pytorch_programs.py) are scaled to tiny synthetic data and run on chainrule and on PyTorch
from the same weights, comparing losses, parameters and gradients."""

import re

import numpy as np

from .pytorch_programs import assert_same

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def numbers_parsed(value):
    """A program's result with each string split into its text and its numbers: printed losses are compared
    as numbers (to a tolerance), not digit for digit."""
    if isinstance(value, str):
        return NUMBER.sub("#", value), [float(x) for x in NUMBER.findall(value)]
    if isinstance(value, dict):
        return {k: numbers_parsed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [numbers_parsed(v) for v in value]
    return value


def without_key_biases(state, keys_of):
    """``state`` (a name -> array dict) less the key third of every attention's query-key-value bias
    (``in_proj_bias``, or a ``qkv`` Linear's), whose gradient is zero but for rounding (see the module
    docstring); ``keys_of`` collects those thirds."""
    kept = {}
    for name, value in state.items():
        if name.endswith(("in_proj_bias", "qkv.bias")) and value is not None:
            third = len(value) // 3
            keys_of[name] = value[third:2 * third]
            kept[name] = np.concatenate([value[:third], value[2 * third:]])
        else:
            kept[name] = value
    return kept


def assert_same_but_key_biases(ours, theirs, rtol, atol):
    """The parameters or gradients of two runs agree but for the key biases, whose gradients are negligible."""
    our_keys, their_keys = {}, {}
    assert_same(without_key_biases(ours, our_keys), without_key_biases(theirs, their_keys), rtol, atol)
    assert our_keys.keys() == their_keys.keys()


def assert_key_bias_gradients_vanish(grads):
    largest = max(float(np.abs(g).max()) for g in grads.values())
    key_grads = {}
    without_key_biases(grads, key_grads)
    assert key_grads, "no attention found"
    for name, g in key_grads.items():
        assert np.abs(g).max() < 1e-5 * largest, name
