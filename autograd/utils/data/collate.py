"""Turning samples into batches, as ``torch.utils.data``'s ``default_collate`` and ``default_convert``.

``default_collate`` stacks a list of samples field by field, keeping their
structure: tensors are stacked along a new first dim; NumPy arrays and
NumPy scalars become tensors first; Python ints become an int64 tensor,
floats a float64 one, bools a bool one (a batch led by an int or bool but
holding floats is typed as ``tensor`` types it: [1, 2.5] gives float32);
strings stay as they come (a list, or the tuple that one field of the samples
makes); dicts, named tuples and lists are collated per key or position (a
tuple gives a list, as PyTorch's). A mutable mapping or sequence
comes back as a copy of the first sample with the fields replaced, so that
its type and extra state (a defaultdict's factory) survive.
"""

import collections.abc
import copy

import numpy

from ...factories import as_tensor, tensor
from ...ops.joins import stack
from ...tensor import Tensor

_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def default_collate(batch):
    """One batch from a list of samples (see the module's docstring)."""
    elem = batch[0]
    elem_type = type(elem)
    if isinstance(elem, Tensor):
        shapes = [tuple(sample.shape) for sample in batch]
        for i, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shapes[0])} at "
                                   f"entry 0 and {list(shape)} at entry {i}")
        return stack(list(batch), 0)
    if isinstance(elem, numpy.ndarray | numpy.generic) and not isinstance(elem, numpy.str_ | numpy.bytes_):
        if elem.dtype.kind in "USO":
            raise TypeError(_ERROR.format(elem.dtype))
        if isinstance(elem, numpy.ndarray) and elem.ndim > 0:
            return default_collate([as_tensor(sample) for sample in batch])
        return as_tensor(numpy.array(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype=numpy.float64)
    if isinstance(elem, int):  # bool too; the dtype is inferred from all of them, as PyTorch's
        return tensor(batch)
    if isinstance(elem, str | bytes):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        return _mapping_like(elem, {key: default_collate([sample[key] for sample in batch]) for key in elem})
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(samples) for samples in zip(*batch)]  # (strings stay a tuple, as PyTorch's)
        return fields if isinstance(elem, tuple) else _sequence_like(elem, fields)
    raise TypeError(_ERROR.format(elem_type))


def default_convert(data):
    """NumPy arrays in ``data`` (however nested) made tensors; everything else kept: what a loader
    with ``batch_size=None`` gives for each sample."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, numpy.ndarray) and data.dtype.kind not in "USO":
        return as_tensor(data)
    if isinstance(data, numpy.generic) and data.dtype.kind not in "USO":
        return as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        return _mapping_like(data, {key: default_convert(value) for key, value in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(value) for value in data))
    if isinstance(data, tuple):
        return [default_convert(value) for value in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, str | bytes):
        return _sequence_like(data, [default_convert(value) for value in data])
    return data


def _mapping_like(original, values):
    """``values`` (a dict of the same keys) in the type of ``original``: a mutable mapping is copied and
    updated, so that what its constructor would lose (a defaultdict's factory) survives; a plain dict
    where the type cannot be made so."""
    try:
        if isinstance(original, collections.abc.MutableMapping):
            clone = copy.copy(original)
            clone.update(values)
            return clone
        return type(original)(values)
    except TypeError:
        return values


def _sequence_like(original, values):
    """``values`` (a list of the same length) in the type of ``original``, as ``_mapping_like``; a plain list
    where the type cannot be made so (a range)."""
    try:
        if isinstance(original, collections.abc.MutableSequence):
            clone = copy.copy(original)
            for i, value in enumerate(values):
                clone[i] = value
            return clone
        return type(original)(values)
    except TypeError:
        return values
