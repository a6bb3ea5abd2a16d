"""``nn.modules.utils``: PyTorch's private helpers that turn a layer's int-or-tuple arguments into
tuples, which third-party layers import (``from torch.nn.modules.utils import _pair``), and
``consume_prefix_in_state_dict_if_present``, which loads a DataParallel checkpoint into the bare model."""

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


def _list_with_default(out_size, defaults):
    """An adaptive pool's output size with None entries filled from ``defaults`` (the input's trailing sizes)."""
    if isinstance(out_size, int):
        return out_size
    if len(defaults) <= len(out_size):
        raise ValueError(f"Input dimension should be at least {len(out_size) + 1}")
    return [d if v is None else v for v, d in zip(out_size, defaults[-len(out_size):])]


def consume_prefix_in_state_dict_if_present(state_dict, prefix):
    """Strip ``prefix`` from the keys of ``state_dict`` that have it, in place: a checkpoint saved from a
    wrapped model (DataParallel's ``module.``) loads into the bare one. Its ``_metadata`` keys, when it has
    them, lose the prefix too ('module' itself, the wrapped model's own entry, becomes '')."""
    for key in list(state_dict.keys()):
        if key.startswith(prefix):
            state_dict[key[len(prefix):]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in list(metadata.keys()):
            # '' is the wrapper's own entry: kept; 'module' is the wrapped model's, 'module.x' its children's
            if key and (key == prefix.replace(".", "") or key.startswith(prefix)):
                metadata[key[len(prefix):]] = metadata.pop(key)
