"""``nn.modules.utils``: PyTorch's private helpers that turn a layer's int-or-tuple arguments into
tuples, which third-party layers import (``from torch.nn.modules.utils import _pair``)."""

import collections.abc
import itertools


def _ntuple(n, name="parse"):
    """A function that keeps an iterable as a tuple and repeats anything else ``n`` times."""

    def parse(x):
        if isinstance(x, collections.abc.Iterable):
            return tuple(x)
        return tuple(itertools.repeat(x, n))

    parse.__name__ = name
    return parse


_single = _ntuple(1, "_single")
_pair = _ntuple(2, "_pair")
_triple = _ntuple(3, "_triple")
_quadruple = _ntuple(4, "_quadruple")


def _reverse_repeat_tuple(t, n):
    """t reversed, each element repeated ``n`` times: a layer's (padH, padW) as F.pad's (padW, padW, padH, padH)."""
    return tuple(x for x in reversed(t) for _ in range(n))
