"""Turning samples into batches, as ``torch.utils.data``'s ``default_collate`` and ``default_convert``.

``default_collate`` stacks a list of samples field by field, keeping their
structure: tensors are stacked along a new first dim; NumPy arrays and
NumPy scalars become tensors first; Python ints become an int64 tensor,
floats a float64 one, bools a bool one (a batch led by an int or bool but
holding floats is typed as ``tensor`` types it: [1, 2.5] gives float32);
strings stay as they come (a list, or the tuple that one field of the samples
makes); dicts, named tuples and lists are collated per key or position (a
tuple gives a list, as PyTorch's). ``collate`` with a ``collate_fn_map`` of one's own
extends this to other types, as PyTorch's. A mutable mapping or sequence
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


def collate(batch, *, collate_fn_map=None):
    """One batch from a list of samples, as PyTorch's ``collate``: the first sample's type picks a
    function of ``collate_fn_map`` (its own type, else the first key it is an instance of), called as
    ``fn(batch, collate_fn_map=collate_fn_map)``; mappings, named tuples and sequences are collated
    field by field through it. Training code extends ``default_collate_fn_map`` with its own types."""
    elem = batch[0]
    elem_type = type(elem)
    if collate_fn_map is not None:
        if elem_type in collate_fn_map:
            return collate_fn_map[elem_type](batch, collate_fn_map=collate_fn_map)
        for collate_type, collate_fn in collate_fn_map.items():
            if isinstance(elem, collate_type):
                return collate_fn(batch, collate_fn_map=collate_fn_map)
    if isinstance(elem, collections.abc.Mapping):
        fields = {key: collate([sample[key] for sample in batch], collate_fn_map=collate_fn_map) for key in elem}
        return _mapping_like(elem, fields)
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(*(collate(samples, collate_fn_map=collate_fn_map) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [collate(samples, collate_fn_map=collate_fn_map) for samples in zip(*batch)]
        return fields if isinstance(elem, tuple) else _sequence_like(elem, fields)  # (a tuple gives a list)
    raise TypeError(_ERROR.format(elem_type))


def collate_tensor_fn(batch, *, collate_fn_map=None):
    shapes = [tuple(sample.shape) for sample in batch]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shapes[0])} at "
                               f"entry 0 and {list(shape)} at entry {i}")
    return stack(list(batch), 0)


def collate_numpy_array_fn(batch, *, collate_fn_map=None):
    if batch[0].dtype.kind in "USO":
        raise TypeError(_ERROR.format(batch[0].dtype))
    return collate([as_tensor(sample) for sample in batch], collate_fn_map=collate_fn_map)


def collate_numpy_scalar_fn(batch, *, collate_fn_map=None):
    return as_tensor(numpy.array(batch))


def collate_float_fn(batch, *, collate_fn_map=None):
    return tensor(batch, dtype=numpy.float64)


def collate_int_fn(batch, *, collate_fn_map=None):
    return tensor(batch)  # bools too; the dtype is inferred from all of them, as PyTorch's


def collate_str_fn(batch, *, collate_fn_map=None):
    return batch


default_collate_fn_map = {
    Tensor: collate_tensor_fn,
    numpy.ndarray: collate_numpy_array_fn,
    (numpy.bool_, numpy.number, numpy.object_): collate_numpy_scalar_fn,
    float: collate_float_fn,
    int: collate_int_fn,
    str: collate_str_fn,
    bytes: collate_str_fn,
}


def default_collate(batch):
    """One batch from a list of samples (see the module's docstring)."""
    return collate(batch, collate_fn_map=default_collate_fn_map)


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
