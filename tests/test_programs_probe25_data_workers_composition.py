# ruff: noqa: B023, E501  (the programs are kept as their authors wrote them)
"""Data pipelines as PyTorch users write them with ``torch.utils.data`` (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same seeds, and checked without PyTorch against literals (PyTorch's, computed once)
and invariants that can fail. An ``IterableDataset`` sharded by ``get_worker_info()`` (the docs' two ways: in
``__iter__`` and by ``worker_init_fn`` editing the worker's copy) with ``num_workers`` 2 and 3; NumPy and ``random``
seeded in workers (PyTorch's default seeds, and a ``worker_init_fn``); persistent workers with ``prefetch_factor``,
``pin_memory`` and ``timeout``; ``ConcatDataset``/``ChainDataset``/``StackDataset``/``Subset``; a stratified K-fold
loop; curriculum sampling; a streaming dataset from a generator; PyTorch's errors for bad arguments; a transformed
dataset shuffled with workers."""

import itertools
import math
import random

import numpy as np
import pytest

from .probe25_data_common import batches, error_of, pytorch_words
from .pytorch_programs import run_both

# --- workers ------------------------------------------------------------------------------------------------------

def sharded_streams(m):
    torch, D = m.torch, m.data

    class RangeStream(D.IterableDataset):
        def __init__(self, start, end):
            self.start, self.end = start, end

        def __iter__(self):
            info = D.get_worker_info()
            if info is None:
                lo, hi = self.start, self.end
            else:
                per = int(math.ceil((self.end - self.start) / float(info.num_workers)))
                lo = self.start + info.id * per
                hi = min(lo + per, self.end)
            return iter(range(lo, hi))

    class PlainRange(D.IterableDataset):
        def __init__(self, start, end):
            self.start, self.end = start, end

        def __iter__(self):
            return iter(range(self.start, self.end))

    def split_in_worker(worker_id):
        info = D.get_worker_info()
        ds = info.dataset
        start, end = ds.start, ds.end
        per = int(math.ceil((end - start) / float(info.num_workers)))
        ds.start = start + worker_id * per
        ds.end = min(ds.start + per, end)

    class Strided(D.IterableDataset):
        def __iter__(self):
            info = D.get_worker_info()
            it = iter(range(10))
            if info is not None:
                it = itertools.islice(it, info.id, None, info.num_workers)
            for x in it:
                yield torch.tensor([x, x * x])

    ds = RangeStream(3, 10)
    return (batches(D.DataLoader(ds, num_workers=2)), batches(D.DataLoader(ds, num_workers=3, batch_size=2)),
            batches(D.DataLoader(PlainRange(3, 7), num_workers=2, worker_init_fn=split_in_worker)),
            batches(D.DataLoader(Strided(), batch_size=3, num_workers=2)), D.get_worker_info())


def test_iterable_dataset_sharded_by_worker_info():
    (two, three, split, strided, info), _ = run_both(sharded_streams)
    assert [b.item() for b in two] == [3, 7, 4, 8, 5, 9, 6]
    assert [b.tolist() for b in three] == [[3, 4], [6, 7], [9], [5], [8]]
    assert [b.item() for b in split] == [3, 5, 4, 6]
    assert [b[:, 0].tolist() for b in strided] == [[0, 2, 4], [1, 3, 5], [6, 8], [7, 9]]
    assert info is None


def worker_seeds(m):
    torch, D = m.torch, m.data

    class RandomDataset(D.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            info = D.get_worker_info()
            return (np.random.randint(0, 10 ** 6), random.randint(0, 10 ** 6), torch.initial_seed() - info.seed,
                    info.id, torch.rand(1).item())

    def seed_numpy(worker_id):
        np.random.seed((D.get_worker_info().seed + worker_id) % 2 ** 32)

    torch.manual_seed(123)
    default = batches(D.DataLoader(RandomDataset(), batch_size=2, num_workers=3))
    seeded = batches(D.DataLoader(RandomDataset(), batch_size=2, num_workers=2, worker_init_fn=seed_numpy,
                                  generator=torch.Generator().manual_seed(9)))
    return default, seeded


def test_worker_seeds_numpy_random_and_torch():
    (default, seeded), _ = run_both(worker_seeds)
    assert [b[3].tolist() for b in default] == [[0, 0], [1, 1], [2, 2]]  # batch k made by worker k mod 3
    assert all((b[2] == 0).all() for b in default)  # each worker's torch seed is its info.seed
    numpy_draws = [tuple(b[0].tolist()) for b in default]
    assert len(set(numpy_draws)) == 3  # (each worker's NumPy seeded apart, by PyTorch's default seeding)
    assert [b[3].tolist() for b in seeded] == [[0, 0], [1, 1], [0, 0]]


def persistent_prefetch(m):
    torch, D = m.torch, m.data

    class Noise(D.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.randn(2)

    torch.manual_seed(0)
    loader = D.DataLoader(Noise(), batch_size=2, num_workers=2, persistent_workers=True, prefetch_factor=3,
                          pin_memory=True, timeout=5)
    return [torch.stack(batches(loader)) for _ in range(2)]


def test_persistent_workers_with_prefetch():
    (first, second), _ = run_both(persistent_prefetch)
    assert first.shape == second.shape == (3, 2, 2)
    assert not np.allclose(first, second)  # (the workers' streams go on from one pass to the next)


# --- datasets -----------------------------------------------------------------------------------------------------

def composed_datasets(m):
    torch, D = m.torch, m.data
    t = D.TensorDataset(torch.arange(4.), torch.arange(4) * 10)
    c = D.ConcatDataset([t, D.TensorDataset(torch.arange(3.) + 100, torch.arange(3))])

    class Stream(D.IterableDataset):
        def __init__(self, r):
            self.r = r

        def __iter__(self):
            return iter(self.r)

    chain = D.ChainDataset([Stream(range(2)), Stream(range(5, 7))])
    stacked = D.StackDataset(a=torch.arange(3), b=[f"x{i}" for i in range(3)])
    sub = D.Subset(c, [6, 0, 4])
    errors = [pytorch_words(error_of(f)) for f in (lambda: c[7], lambda: D.StackDataset(torch.arange(3), torch.arange(4)),
                                    lambda: D.TensorDataset(torch.tensor(1.0)), lambda: len(D.TensorDataset()))]
    return (len(c), c.cumulative_sizes, c[5], c[-1], list(chain), list(Stream(range(2)) + Stream(range(3, 4))),
            stacked[1], sub[0], batches(D.DataLoader(stacked, batch_size=2)), batches(D.DataLoader(c + t, batch_size=5)),
            errors)


def test_concat_chain_stack_subset_datasets():
    (n, sizes, fifth, last, chain, added, stacked, sub, stacked_batches, concat_batches, errors), _ = run_both(composed_datasets)
    assert n == 7 and sizes == [4, 7] and fifth[0] == 101 and last[0] == 102
    assert chain == [0, 1, 5, 6] and added == [0, 1, 3] and stacked["b"] == "x1" and sub[0] == 102
    assert stacked_batches[0]["b"] == ["x0", "x1"] and [len(b[0]) for b in concat_batches] == [5, 5, 1]
    assert errors[0] == "IndexError: list index out of range"
    assert errors[1] == "ValueError: Size mismatch between datasets"
    assert errors[2:] == ["IndexError: Dimension specified as 0 but tensor has no dimensions",
                          "IndexError: tuple index out of range"]


def stratified_kfold(m):
    torch, D = m.torch, m.data
    torch.manual_seed(0)
    X, y = torch.randn(12, 3), torch.tensor([0, 1] * 6)
    ds = D.TensorDataset(X, y)
    by_class = [(y == c).nonzero().flatten().tolist() for c in (0, 1)]
    folds = []
    for fold in range(3):
        val = by_class[0][fold::3] + by_class[1][fold::3]
        train = [i for i in range(12) if i not in val]
        train_loader = D.DataLoader(D.Subset(ds, train), batch_size=4,
                                    sampler=D.SubsetRandomSampler(list(range(len(train)))))
        val_loader = D.DataLoader(D.Subset(ds, val), batch_size=8)
        folds.append((val, torch.cat([yb for _, yb in train_loader]), [xb.sum() for xb, _ in val_loader]))
    return folds


def test_stratified_kfold_loop():
    folds, _ = run_both(stratified_kfold)
    assert sorted(sum((f[0] for f in folds), [])) == list(range(12))  # each sample validated once
    for val, train_labels, _ in folds:
        assert len(val) == 4 and sorted(train_labels.tolist()) == [0] * 4 + [1] * 4  # stratified
    assert folds[0][1].tolist() == [1, 0, 0, 0, 1, 0, 1, 1]


def curriculum(m):
    torch, D = m.torch, m.data
    torch.manual_seed(0)
    difficulty = torch.rand(20)
    order = torch.argsort(difficulty)
    epochs = []
    for epoch in range(3):
        n = int(min(1.0, 0.4 + 0.3 * epoch) * 20)
        sampler = D.SubsetRandomSampler(order[:n].tolist())
        epochs.append(torch.cat([b[0] for b in D.DataLoader(D.TensorDataset(difficulty), batch_size=8, sampler=sampler)]))
    return difficulty, epochs


def test_curriculum_sampling_grows_from_easy_examples():
    (difficulty, epochs), _ = run_both(curriculum)
    assert [len(e) for e in epochs] == [8, 14, 20]
    easiest = np.sort(difficulty)
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), easiest[:len(e)])
    assert not (np.diff(epochs[2]) >= 0).all()  # (shuffled within the curriculum)


def streaming(m):
    torch, D = m.torch, m.data

    class Stream(D.IterableDataset):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            for i in range(self.n):
                yield {"x": torch.randn(2, generator=g), "i": i}

    loader = D.DataLoader(Stream(5), batch_size=2)
    return batches(loader), batches(D.DataLoader(Stream(2), batch_size=None)), error_of(lambda: len(loader))


def test_streaming_dataset_from_a_generator():
    (batched, single, error), _ = run_both(streaming)
    assert [b["i"].tolist() for b in batched] == [[0, 1], [2, 3], [4]]
    np.testing.assert_allclose(batched[0]["x"][0], [1.5410, -0.2934], atol=1e-4)
    assert single[1]["i"] == 1 and single[1]["x"].shape == (2,)
    assert error.startswith("TypeError")


def loader_errors(m):
    torch, D = m.torch, m.data
    bs = D.BatchSampler(D.SequentialSampler(range(5)), 2, False)
    kwargs = [dict(num_workers=-1), dict(timeout=-1), dict(prefetch_factor=2), dict(persistent_workers=True),
              dict(batch_size=0), dict(batch_size=None, drop_last=True), dict(batch_sampler=bs, batch_size=2),
              dict(shuffle=True, sampler=D.SequentialSampler(range(4)))]
    return ([error_of(lambda: D.DataLoader(range(4), **kw)) for kw in kwargs]
            + [error_of(f) for f in (lambda: D.BatchSampler(range(4), 2, 1), lambda: D.RandomSampler(range(4), replacement=1),
                                     lambda: D.WeightedRandomSampler([[1.0]], 2), lambda: torch.randperm(6.0))])


def test_loader_and_sampler_argument_errors():
    errors, _ = run_both(loader_errors)
    assert errors == [
        "ValueError: num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.",
        "ValueError: timeout option should be non-negative",
        "ValueError: prefetch_factor option could only be specified in multiprocessing.let num_workers > 0 to enable "
        "multiprocessing, otherwise set prefetch_factor to None.",
        "ValueError: persistent_workers option needs num_workers > 0",
        "ValueError: batch_size should be a positive integer value, but got batch_size=0",
        "ValueError: batch_size=None option disables auto-batching and is mutually exclusive with drop_last",
        "ValueError: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last",
        "ValueError: sampler option is mutually exclusive with shuffle",
        "ValueError: drop_last should be a boolean value, but got drop_last=1",
        "TypeError: replacement should be a boolean value, but got replacement=1",
        "ValueError: weights should be a 1d sequence but given weights have shape (1, 1)",
        "TypeError: randperm(): argument 'n' (position 1) must be int, not float"]


@pytest.mark.parametrize("workers", [0, 2])
def test_transform_dataset_shuffled_with_workers(workers):
    def program(m):
        torch, D = m.torch, m.data

        class Augmented(D.Dataset):
            def __init__(self):
                torch.manual_seed(0)
                self.x = torch.randn(6, 3, 4, 4)

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                x = self.x[i]
                if torch.rand(1) < 0.5:
                    x = torch.flip(x, dims=[2])
                x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-6)
                return x.float(), torch.tensor(i % 2)

        torch.manual_seed(1)
        return batches(D.DataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=workers))

    out, _ = run_both(program, rtol=1e-4, atol=1e-5)
    assert [b[0].shape for b in out] == [(4, 3, 4, 4), (2, 3, 4, 4)]
    np.testing.assert_allclose(out[0][0].mean(axis=(2, 3)), 0, atol=1e-5)  # per-channel normalised


def augmenting_tensor_dataset(m):
    torch, D = m.torch, m.data

    class NoisyTensorDataset(D.TensorDataset):
        """A TensorDataset with Gaussian noise added in __getitem__ (a common augmentation of tabular data)."""

        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x + 0.1 * torch.randn_like(x), y

    torch.manual_seed(0)
    ds = NoisyTensorDataset(torch.zeros(6, 2), torch.arange(6))
    train, val = D.random_split(ds, [4, 2], generator=torch.Generator().manual_seed(0))
    return batches(D.DataLoader(train, batch_size=2, shuffle=True)), batches(D.DataLoader(val, batch_size=2))


def test_tensor_dataset_subclass_augments_in_getitem():
    (train, val), _ = run_both(augmenting_tensor_dataset)
    xs = np.concatenate([b[0] for b in train + val])
    assert xs.shape == (6, 2) and (xs != 0).all() and np.abs(xs).max() < 0.5  # every sample went through __getitem__
    assert sorted(int(v) for b in train + val for v in b[1]) == list(range(6))


def iterable_workers_edges(m):
    torch, D = m.torch, m.data

    class Strided(D.IterableDataset):
        def __iter__(self):
            info = D.get_worker_info()
            return iter(range(info.id, 9, info.num_workers)) if info else iter(range(9))

    class Unsharded(D.IterableDataset):  # the docs' warning: each worker yields the whole stream
        def __iter__(self):
            return iter(range(3))

    class Noisy(D.IterableDataset):
        def __iter__(self):
            for _ in range(3):
                yield torch.rand(1).item(), np.random.rand(), random.random()

    torch.manual_seed(7)
    return (batches(D.DataLoader(Strided(), batch_size=2, num_workers=2, drop_last=True)),
            batches(D.DataLoader(Unsharded(), batch_size=2, num_workers=2)),
            batches(D.DataLoader(Noisy(), batch_size=2, num_workers=2)))


def test_iterable_dataset_workers_drop_last_duplicates_and_seeds():
    (dropped, duplicated, noisy), _ = run_both(iterable_workers_edges)
    assert [b.tolist() for b in dropped] == [[0, 2], [1, 3], [4, 6], [5, 7]]  # each worker drops its own tail
    assert [b.tolist() for b in duplicated] == [[0, 1], [0, 1], [2], [2]]
    assert len(noisy) == 4 and noisy[0][0][0] != noisy[1][0][0]  # the two workers draw apart
