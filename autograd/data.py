"""Data loading: ``Dataset``, ``TensorDataset``, ``DataLoader``, ``random_split``.

The loader is how the lecture's three regimes of gradient descent are run:
    DataLoader(data, batch_size=len(data))            vanilla (full-batch)
    DataLoader(data, batch_size=1, shuffle=True)      stochastic
    DataLoader(data, batch_size=32, shuffle=True)     mini-batch
Shuffling draws from the global generator, so ``manual_seed`` repeats epochs.
"""

import math

import numpy

from .random import generator
from .tensor import Tensor


class Dataset:
    """Anything with ``__len__`` and ``__getitem__(i)`` returning one sample."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are rows: sample i is (t[i] for t in tensors)."""

    def __init__(self, *tensors):
        tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError("Size mismatch between tensors: first dimensions "
                             + ", ".join(str(len(t)) for t in tensors))
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def batch(self, indices):
        """Many samples at once, by one fancy index per tensor (no per-sample Python)."""
        return tuple(Tensor(t._data[indices]) for t in self.tensors)


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, numpy.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def batch(self, indices):
        return _batch(self.dataset, self.indices[indices])


def random_split(dataset, lengths):
    """Split into non-overlapping random subsets of the given lengths (or fractions summing to 1)."""
    total = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1 and total != 1:  # fractions, as PyTorch reads them
        counts = [int(math.floor(total * fraction)) for fraction in lengths]
        for i in range(total - sum(counts)):  # hand out the remainder round-robin, as PyTorch does
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != total:
        raise ValueError(f"Sum of input lengths ({sum(lengths)}) does not equal the length of the "
                         f"input dataset ({total})")
    order = generator().permutation(total)
    subsets, start = [], 0
    for length in lengths:
        subsets.append(Subset(dataset, order[start:start + length]))
        start += length
    return subsets


def default_collate(samples):
    """Stack a list of samples (tuples of tensors or numbers) into one batch per field."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(default_collate([s[i] for s in samples]) for i in range(len(first)))
    return Tensor(numpy.stack([s._data if isinstance(s, Tensor) else numpy.asarray(s) for s in samples]))


def _batch(dataset, indices):
    if hasattr(dataset, "batch"):
        return dataset.batch(indices)
    return default_collate([dataset[int(i)] for i in indices])


class DataLoader:
    """Batches of a dataset, in order or shuffled anew every epoch.

    transform: called on each batch's first field (the inputs) as it is made:
    the place for data augmentation (autograd.transforms) and normalisation.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, collate_fn=None, transform=None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.collate_fn, self.transform = collate_fn, transform

    def __len__(self):
        count = len(self.dataset) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self):
        size = len(self.dataset)
        order = generator().permutation(size) if self.shuffle else numpy.arange(size)
        stop = size - size % self.batch_size if self.drop_last else size
        for start in range(0, stop, self.batch_size):
            indices = order[start:start + self.batch_size]
            if self.collate_fn is None:
                batch = _batch(self.dataset, indices)
            else:
                batch = self.collate_fn([self.dataset[int(i)] for i in indices])
            if self.transform is not None:
                batch = (self.transform(batch[0]), *batch[1:]) if isinstance(batch, tuple) else self.transform(batch)
            yield batch
