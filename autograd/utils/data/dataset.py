"""Datasets, as ``torch.utils.data``'s: ``Dataset``, ``IterableDataset``, ``TensorDataset``, ``StackDataset``,
``Subset``, ``ConcatDataset``, ``ChainDataset`` and ``random_split``.

A map-style dataset has ``__len__`` and ``__getitem__(i)``; an iterable one
has ``__iter__``. ``TensorDataset`` and ``Subset`` also have ``batch(indices)``,
which makes a whole batch with one fancy index per tensor; the DataLoader uses
it in place of collating sample by sample, with the same result.
"""

import bisect
import itertools
import math
import warnings
from typing import Generic, TypeVar

import numpy

from ...backend import xp
from ...factories import randperm
from ...graph import program_stacklevel
from ...tensor import Tensor, tensor_from
from .collate import default_collate

T_co = TypeVar("T_co", covariant=True)


class Dataset(Generic[T_co]):
    """Anything with ``__getitem__(i)`` returning one sample (and usually ``__len__``); typed code may
    write ``Dataset[tuple[Tensor, int]]``, as with PyTorch's."""

    def __getitem__(self, index):
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset[T_co]):
    """A stream of samples: subclasses implement ``__iter__``."""

    def __iter__(self):
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other):
        return ChainDataset([self, other])


class TensorDataset(Dataset):
    """Samples are rows: sample i is (t[i] for t in tensors)."""

    def __init__(self, *tensors):
        tensors = [t if isinstance(t, Tensor) else tensor_from(t) for t in tensors]
        # (no tensors is allowed, as PyTorch's: such a dataset's len() is then an IndexError)
        if any(t.ndim == 0 for t in tensors):  # (PyTorch's words: it reads each tensor's size(0))
            raise IndexError("Dimension specified as 0 but tensor has no dimensions")
        if len({len(t) for t in tensors}) > 1:
            # an AssertionError, as PyTorch's (which asserts it)
            raise AssertionError("Size mismatch between tensors: first dimensions "
                                 + ", ".join(str(len(t)) for t in tensors))
        self.tensors = tuple(tensors)

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def batch(self, indices):
        """Many samples at once, collated: a list with one tensor per field (no per-sample Python).
        A tensor that requires grad is indexed as an op, so that the batch stays in its graph, as the
        stacked samples would."""
        rows = _rows(indices, len(self))
        if rows is None:
            return default_collate([self[index] for index in indices])
        data_rows = xp.asarray(rows)
        return [t[rows] if t.requires_grad else Tensor._make(t._data[data_rows]) for t in self.tensors]


class StackDataset(Dataset):
    """Datasets of one length side by side: sample i is ``(a[i], b[i], ...)`` for
    ``StackDataset(a, b, ...)``, or ``{"image": images[i], "text": texts[i]}`` for
    ``StackDataset(image=images, text=texts)``. Where a dataset has ``__getitems__`` (a batch at once)
    it is used, as PyTorch's does."""

    def __init__(self, *args, **kwargs):
        if args and kwargs:
            raise ValueError("Supported either ``tuple``- (via ``args``) or``dict``- (via ``kwargs``) like "
                             "input/output, but both types are given.")
        if not args and not kwargs:
            raise ValueError("At least one dataset should be passed")
        self.datasets = args or kwargs
        parts = args or tuple(kwargs.values())
        self._length = len(parts[0])
        if any(len(dataset) != self._length for dataset in parts):
            raise ValueError("Size mismatch between datasets: lengths "
                             + ", ".join(str(len(dataset)) for dataset in parts))

    def __len__(self):
        return self._length

    def __getitem__(self, index):
        if isinstance(self.datasets, dict):
            return {key: dataset[index] for key, dataset in self.datasets.items()}
        return tuple(dataset[index] for dataset in self.datasets)

    def __getitems__(self, indices):
        keys = list(self.datasets) if isinstance(self.datasets, dict) else range(len(self.datasets))
        columns = {}
        for key in keys:
            dataset = self.datasets[key]
            if callable(getattr(dataset, "__getitems__", None)):
                column = dataset.__getitems__(indices)
                if len(column) != len(indices):
                    raise ValueError(f"Nested dataset's output size mismatch. Expected {len(indices)}, "
                                     f"got {len(column)}")
            else:
                column = [dataset[i] for i in indices]
            columns[key] = column
        if isinstance(self.datasets, dict):
            return [{key: columns[key][j] for key in keys} for j in range(len(indices))]
        return [tuple(columns[key][j] for key in keys) for j in range(len(indices))]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[_int(self.indices[index])]

    def __getitems__(self, indices):
        # as PyTorch's: a dataset that reads a batch at once (``__getitems__``) still does through a Subset
        if callable(getattr(self.dataset, "__getitems__", None)):
            return self.dataset.__getitems__([self.indices[i] for i in indices])
        return [self.dataset[_int(self.indices[i])] for i in indices]

    def batch(self, indices):
        rows = _rows(indices, len(self))
        if rows is None or not batches_itself(self.dataset):
            return default_collate(self.__getitems__(indices))
        return self.dataset.batch(numpy.asarray(self.indices)[rows])


def _rows(indices, length):
    """``indices`` as an int64 array of rows in [-length, length), or None where one is not such an integer (a
    float, out of range): the batch is then read sample by sample, so that its error is PyTorch's."""
    rows = numpy.asarray(indices)
    if rows.dtype.kind not in "iu" or (rows.size and not (-length <= rows.min() and rows.max() < length)):
        return None
    return rows.astype(numpy.int64)


def batches_itself(dataset):
    """Whether ``dataset.batch(indices)`` is its samples at ``indices``, collated: a dataset with a ``batch`` of
    its own (TensorDataset's, Subset's), unless a subclass reads its samples otherwise (an augmentation in its
    ``__getitem__``): the loader then reads it sample by sample, as PyTorch's."""
    owner = next((cls for cls in type(dataset).__mro__ if "batch" in vars(cls)), None)
    if owner is None:
        return False
    return all(getattr(type(dataset), name, None) is getattr(owner, name, None)
               for name in ("__getitem__", "__getitems__"))


def _int(index):
    return int(index) if isinstance(index, (numpy.integer, Tensor)) else index


class ConcatDataset(Dataset):
    """The samples of several map-style datasets one after another."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        for dataset in self.datasets:
            if isinstance(dataset, IterableDataset):
                raise AssertionError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        if index < 0:
            if -index > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            index = len(self) + index
        which = bisect.bisect_right(self.cumulative_sizes, index)
        offset = index - (self.cumulative_sizes[which - 1] if which > 0 else 0)
        return self.datasets[which][offset]


class ChainDataset(IterableDataset):
    """The samples of several iterable datasets one after another."""

    def __init__(self, datasets):
        self.datasets = datasets

    def __iter__(self):
        for dataset in self.datasets:
            if not isinstance(dataset, IterableDataset):
                raise AssertionError("ChainDataset only supports IterableDataset")
            yield from dataset

    def __len__(self):
        total = 0
        for dataset in self.datasets:
            if not isinstance(dataset, IterableDataset):
                raise AssertionError("ChainDataset only supports IterableDataset")
            total += len(dataset)
        return total


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping random subsets of the given lengths, or of fractions summing to 1.

    Fractions become floor(n · fraction) samples each; the remainder is handed out one at a
    time round-robin from the first subset, as PyTorch does.
    """
    total = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        counts = []
        for i, fraction in enumerate(lengths):
            if fraction < 0 or fraction > 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
            counts.append(int(math.floor(total * fraction)))
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
        for i, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an empty dataset.",
                              stacklevel=program_stacklevel())
        lengths = counts
    if sum(lengths) != total:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset! "
                         f"(lengths {list(lengths)} sum to {sum(lengths)}, the dataset has {total})")
    order = randperm(sum(lengths), generator=generator).tolist()
    subsets, start = [], 0
    for length in lengths:
        subsets.append(Subset(dataset, order[start:start + length]))
        start += length
    return subsets
