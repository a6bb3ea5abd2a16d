"""Datasets, samplers, collation and the DataLoader, ported from PyTorch's test/test_dataloader.py.

The single-process parts (``num_workers=0``): TestDatasetRandomSplit, TestTensorDataset,
TestStackDataset, TestConcatDataset, TestDataLoader's sequential / shuffled / sampler / batch-sampler /
iterable-dataset / collation / error tests, TestDictDataLoader, TestNamedTupleDataLoader and
TestStringDataLoader, plus the samplers' and DistributedSampler's own checks. Each test runs on
chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), through ``T.utils.data``.

Left out: the tests of worker processes themselves (chainrule's workers take turns in the main process:
tests/test_dataloader_workers.py checks their batches, seeds and errors against PyTorch's), pinned memory on
a GPU, DataPipes, and the test of ``_generate_state`` (a private helper of PyTorch's workers).
"""

import collections
import math
import tempfile
import typing
import warnings
from collections import Counter

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values


def data_module(T):
    return T.utils.data


def ours(T):
    return T.__name__ == "autograd"



def counting(T, n):
    class Counting(T.utils.data.Dataset):
        def __getitem__(self, i):
            return i

        def __len__(self):
            return n

    return Counting()


def counting_iterable(T, n):
    class CountingIterable(T.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(n))

        def __len__(self):
            return n

    return CountingIterable()


def setup(T):
    """TestDataLoader.setUp: 100 samples of shape (2, 3, 5) and labels 0..49 twice."""
    rng = np.random.default_rng(0)
    data = T.tensor(rng.standard_normal((100, 2, 3, 5)).astype(np.float32))
    labels = T.tensor(np.tile(rng.permutation(50), 2))
    return data, labels, T.utils.data.TensorDataset(data, labels)


# --- random_split (TestDatasetRandomSplit) ---

def test_random_split_lengths_must_equal_dataset_size(T):
    raises(ValueError, "", T.utils.data.random_split, [1, 2, 3, 4], [1, 2])


def test_random_split_splits_have_correct_size(T):
    random_split = T.utils.data.random_split
    splits = random_split([1, 2, 3, 4, 5, 6], [2, 4])
    assert [len(s) for s in splits] == [2, 4]
    splits = random_split([1, 2, 3, 4, 5, 6], [0.5, 0.5])
    assert [len(s) for s in splits] == [3, 3]
    assert len(random_split(range(3), [0.5, 0.5], generator=T.Generator().manual_seed(1))) == 2
    # the remainder of fractional splits goes round-robin from the first split
    splits = random_split(range(106), [0.1, 0.2, 0.3, 0.4], generator=T.Generator().manual_seed(1))
    assert [len(s) for s in splits] == [11, 22, 31, 42]


@pytest.mark.parametrize("data, lengths", [([5, 2, 3, 4, 1, 6], [2, 4]), ([5, 2, 3, 4, 1, 6], [0.33, 0.67]),
                                           ([1, 2, 3, 4], [0.25, 0.75])])
def test_random_split_splits_are_mutually_exclusive(T, data, lengths):
    splits = T.utils.data.random_split(data, lengths)
    assert sorted(list(splits[0]) + list(splits[1])) == sorted(data)


def test_random_split_indices_are_python_ints(T):
    keys = []

    class CustomDataset:
        def __init__(self, items):
            self.data = items

        def __getitem__(self, key):
            keys.append(type(key))
            return self.data[key]

        def __len__(self):
            return len(self.data)

    for lengths in ([5], [1.0]):
        for _ in T.utils.data.DataLoader(T.utils.data.random_split(CustomDataset([1, 2, 3, 4, 5]), lengths)[0]):
            pass
    assert keys == [int] * 10


def test_random_split_reproducibility(T):
    random_split = T.utils.data.random_split
    for lengths in ([60, 40], [0.5, 0.5], [0.33, 0.33, 0.34]):
        first = random_split(range(100), lengths, generator=T.Generator().manual_seed(42))
        second = random_split(range(100), lengths, generator=T.Generator().manual_seed(42))
        assert [list(s) for s in first] == [list(s) for s in second]
        assert sorted(sum((list(s) for s in first), [])) == list(range(100))


def test_random_split_reproducibility_literal(T):
    split = T.utils.data.random_split(range(10), [3, 7], generator=T.Generator().manual_seed(1))
    assert [list(x) for x in split] == [[5, 6, 1], [2, 0, 8, 9, 3, 7, 4]]


def test_random_split_incomplete_fractional_splits(T):
    raises(ValueError, "", T.utils.data.random_split, [1, 2, 3, 4], [0.1])  # the fractions do not sum to 1
    raises(ValueError, "", T.utils.data.random_split, [1, 2, 3, 4], [1.1])  # a fraction above 1


def test_random_split_uses_the_default_generator_only_without_its_own(T):
    state = T.get_rng_state()
    a = values(T.rand(10))
    T.set_rng_state(state)
    T.utils.data.random_split(range(10), [5, 5])
    assert not np.array_equal(values(T.rand(10)), a)

    state = T.get_rng_state()
    a = values(T.rand(10))
    T.set_rng_state(state)
    T.utils.data.random_split(range(10), [5, 5], generator=T.Generator().manual_seed(42))
    same(T.rand(10), a)


def assert_samples_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        same(g, values(e))


def test_slicing_of_subset_of_dataset(T):
    data = T.utils.data
    dataset = data.TensorDataset(T.tensor([1, 2, 3, 4, 5]))
    subset = data.Subset(dataset, [0, 1, 2, 3, 4])
    assert_samples_equal(subset[:], dataset[:])
    assert_samples_equal(subset[1:2], dataset[1:2])
    assert_samples_equal(subset[0:-1:2], dataset[0:-1:2])
    subset1, _ = data.random_split(dataset, [3, 2])
    assert_samples_equal(subset1[:], dataset[subset1.indices[:]])
    assert_samples_equal(subset1[0:2], dataset[subset1.indices[0:2]])
    assert_samples_equal(subset1[0:-1:2], dataset[subset1.indices[0:-1:2]])


def test_slicing_of_subset_of_subset(T):
    data = T.utils.data
    dataset = data.TensorDataset(T.tensor([1, 2, 3, 4, 5]))
    subset_of_subset = data.Subset(data.Subset(dataset, [0, 1, 2, 3, 4]), [0, 1, 2, 3, 4])
    assert_samples_equal(subset_of_subset[:], dataset[:])
    assert_samples_equal(subset_of_subset[0:2], dataset[0:2])
    assert_samples_equal(subset_of_subset[0:-1:2], dataset[0:-1:2])
    subset1, _ = data.random_split(dataset, [4, 1])
    inner, _ = data.random_split(subset1, [3, 1])
    idx = [subset1.indices[i] for i in inner.indices]
    assert_samples_equal(inner[:], dataset[idx.copy()])
    assert_samples_equal(inner[0:2], dataset[idx[0:2]])
    assert_samples_equal(inner[0:-1:2], dataset[idx[0:-1:2]])


# --- TensorDataset ---

def test_tensor_dataset_len_and_getitem(T):
    rng = np.random.default_rng(1)
    t = T.tensor(rng.standard_normal((15, 10, 2, 3)))
    labels = T.tensor(rng.standard_normal((15, 10)))
    source = T.utils.data.TensorDataset(t, labels)
    assert len(source) == 15
    for i in range(15):
        same(source[i][0], values(t)[i])
        same(source[i][1], values(labels)[i])
    one_d = T.utils.data.TensorDataset(T.arange(15.0), T.arange(15))
    for i in range(15):
        same(one_d[i][0], float(i))
        same(one_d[i][1], i)


def test_tensor_dataset_single_and_many_tensors(T):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(shape) for shape in [(5, 10, 2), (5, 10), (5, 10, 2, 5), (5, 3, 7)]]
    source = T.utils.data.TensorDataset(*[T.tensor(a) for a in arrays])
    assert len(source) == 5
    for i in range(5):
        assert len(source[i]) == 4
        for field, a in zip(source[i], arrays):
            same(field, a[i])
    single = T.utils.data.TensorDataset(T.tensor(arrays[1]))
    assert len(single) == 5 and len(single[0]) == 1


def test_tensor_dataset_size_mismatch(T):
    raises(AssertionError, "Size mismatch between tensors", T.utils.data.TensorDataset, T.zeros(3, 2), T.zeros(4))


# --- StackDataset ---

def test_stack_dataset_errors(T):
    data = T.utils.data
    raises(ValueError, "At least one dataset should be passed", data.StackDataset)
    raises(ValueError, "Supported either", data.StackDataset, data.TensorDataset(T.zeros(15, 10)),
           a=data.TensorDataset(T.zeros(10, 15)))
    raises(ValueError, "Size mismatch between datasets", data.StackDataset, data.TensorDataset(T.zeros(15, 10)),
           data.TensorDataset(T.zeros(10, 15)))
    raises(ValueError, "Size mismatch between datasets", data.StackDataset, a=data.TensorDataset(T.zeros(15, 10)),
           b=data.TensorDataset(T.zeros(10, 15)))


def test_stack_dataset_len_and_getitem(T):
    data = T.utils.data
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((15, 10)), rng.standard_normal((15, 5, 4))
    t, u = data.TensorDataset(T.tensor(a)), data.TensorDataset(T.tensor(b))
    assert len(data.StackDataset(t, u)) == 15 and len(data.StackDataset(t)) == 15
    assert len(data.StackDataset(a=t, b=u)) == 15 and len(data.StackDataset(a=t)) == 15
    source = data.StackDataset(t, u)
    named = data.StackDataset(a=t, b=u)
    for i in range(15):
        same(source[i][0][0], a[i])
        same(source[i][1][0], b[i])
        assert set(named[i]) == {"a", "b"}
        same(named[i]["a"][0], a[i])
        same(named[i]["b"][0], b[i])


def getitems_dataset(T, data, cut=False):
    class GetItemsDataset(T.utils.data.Dataset):
        def __getitem__(self, item):
            return data[item]

        def __getitems__(self, items):
            return data[items][:-1] if cut else data[items]

        def __len__(self):
            return 4

    return GetItemsDataset()


def test_stack_dataset_getitems(T):
    data = T.tensor([0.5, 1.5, 2.5, 3.5])
    t, labels = getitems_dataset(T, data), [1, 2, 3, 4]
    batch = T.utils.data.StackDataset(t, labels).__getitems__([0, 1, 2, 3])
    for i in range(4):
        same(batch[i][0], values(data)[i])
        assert batch[i][1] == labels[i]
    batch = T.utils.data.StackDataset(t=t, l=labels).__getitems__([0, 1, 2, 3])
    for i in range(4):
        same(batch[i]["t"], values(data)[i])
        assert batch[i]["l"] == labels[i]
    raises(IndexError, "", T.utils.data.StackDataset(t, labels).__getitems__, [0, 4])
    short = T.utils.data.StackDataset(getitems_dataset(T, data, cut=True), labels)
    raises(ValueError, "Nested dataset's output size mismatch. Expected 4, got 3", short.__getitems__, [0, 1, 2, 3])


# --- ConcatDataset and ChainDataset ---

def test_concat_dataset(T):
    ConcatDataset = T.utils.data.ConcatDataset
    result = ConcatDataset([[0], [1]])
    assert (len(result), result[0], result[1]) == (2, 0, 1)
    result = ConcatDataset([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    assert (len(result), result[0], result[5]) == (10, 0, 5)
    result = ConcatDataset([[0, 1, 2, 3, 4], [], [5, 6, 7, 8, 9]])
    assert (len(result), result[0], result[5], result[-1]) == (10, 0, 5, 9)
    raises(IndexError, "", lambda: result[11])
    raises(ValueError, "absolute value of index should not exceed dataset length", lambda: result[-11])


def test_add_datasets_concatenates(T):
    rng = np.random.default_rng(4)
    arrays = [rng.random((7, 3, 4)) for _ in range(3)]
    d1, d2, d3 = (T.utils.data.TensorDataset(T.tensor(a), T.tensor(a[:, 0, 0])) for a in arrays)
    result = d1 + d2 + d3
    assert len(result) == 21
    same(result[0][0], arrays[0][0])
    same(result[7][0], arrays[1][0])
    same(result[14][0], arrays[2][0])
    same(result[20][1], arrays[2][6, 0, 0])


def test_concat_dataset_refuses_iterable_datasets(T):
    d1 = T.utils.data.TensorDataset(T.zeros(7, 3), T.zeros(7))
    it1, it2 = counting_iterable(T, 5), counting_iterable(T, 10)
    for parts in ([d1, it2, it1], [it2], [it1, d1]):
        raises(AssertionError, "does not support IterableDataset", T.utils.data.ConcatDataset, parts)


def test_chain_iterable_style_dataset(T):
    data = T.utils.data
    dataset1, dataset2 = counting_iterable(T, 20), counting_iterable(T, 15)
    expected = list(range(20)) + list(range(15))
    for chained in (dataset1 + dataset2, data.ChainDataset([dataset1, dataset2])):
        fetched = list(data.DataLoader(chained))
        assert len(fetched) == len(expected)
        for e, d in zip(expected, fetched):
            assert isinstance(d, T.Tensor)
            same(d, [e])
        assert len(chained) == 35
    _, _, dataset = setup(T)
    raises(AssertionError, "ChainDataset only supports IterableDataset", lambda: list(iter(dataset1 + dataset)))
    raises(AssertionError, "ChainDataset only supports IterableDataset",
           lambda: list(iter(data.ChainDataset([dataset1, dataset]))))


# --- TestDataLoader ---

def check_sequential(loader, data, labels):
    batch_size = loader.batch_size
    count = 0
    if batch_size is None:
        for idx, (sample, target) in enumerate(loader):
            same(sample, values(data)[idx])
            same(target, values(labels)[idx])
            count += 1
        assert count == len(data)
        return
    for i, (sample, target) in enumerate(loader):
        idx = i * batch_size
        same(sample, values(data)[idx:idx + batch_size])
        same(target, values(labels)[idx:idx + batch_size])
        count += 1
    assert count - 1 == math.floor((len(data) - 1) / batch_size)


def check_shuffle(loader, data, labels):
    """Every sample comes once, with its label; batches are full but for the last."""
    rows = {values(row).tobytes(): i for i, row in enumerate(data)}
    seen = []
    batch_size = loader.batch_size
    for i, (samples, targets) in enumerate(loader):
        if batch_size is None:
            samples, targets = samples[None], targets[None]
        for sample, target in zip(samples, targets):
            index = rows[values(sample).tobytes()]
            same(target, values(labels)[index])
            seen.append(index)
        assert len(seen) == (i + 1) * (batch_size or 1)
    assert sorted(seen) == list(range(len(data)))


@pytest.mark.parametrize("batch_size", [None, 1, 2, 3])
def test_sequential(T, batch_size):
    data, labels, dataset = setup(T)
    check_sequential(T.utils.data.DataLoader(dataset, batch_size=batch_size), data, labels)


@pytest.mark.parametrize("batch_size", [None, 1, 2])
def test_shuffle(T, batch_size):
    data, labels, dataset = setup(T)
    check_shuffle(T.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True), data, labels)


def test_shuffle_reproducibility(T):
    _, _, dataset = setup(T)

    def epoch():
        loader = T.utils.data.DataLoader(dataset, shuffle=True, num_workers=0, generator=T.Generator().manual_seed(42))
        return [values(target).tolist() for _, target in loader]

    assert epoch() == epoch()


def test_pin_memory_is_accepted(T):
    """On a machine without an accelerator pin_memory=True changes nothing in the batches."""
    data, labels, dataset = setup(T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch says there is no accelerator to pin memory for
        loader = T.utils.data.DataLoader(dataset, batch_size=2, pin_memory=True)
        check_sequential(loader, data, labels)
    assert loader.pin_memory is True


def test_error_in_dataset_getitem_reaches_the_caller_every_batch(T):
    class ErrorDataset(T.utils.data.Dataset):
        def __len__(self):
            return 100

    loader = T.utils.data.DataLoader(ErrorDataset(), batch_size=2, shuffle=True)
    it, errors = iter(loader), 0
    while True:
        try:
            next(it)
        except NotImplementedError:
            errors += 1
        except StopIteration:
            break
    assert errors == math.ceil(100 / 2)


def test_error_in_iter_of_an_iterable_dataset(T):
    class ErrorIterableDataset(T.utils.data.IterableDataset):
        def __iter__(self):
            raise RuntimeError("Error in __iter__")

    raises(RuntimeError, "Error in __iter__", lambda: list(iter(T.utils.data.DataLoader(ErrorIterableDataset()))))


def test_typing(T):
    class SomeDatasetClass(T.utils.data.Dataset[typing.List[T.Tensor]]):  # noqa: UP006 (as PyTorch's test)
        pass

    def create_dataloader(is_train: bool) -> T.utils.data.DataLoader[typing.List[T.Tensor]]:  # noqa: UP006
        pass

    assert issubclass(SomeDatasetClass, T.utils.data.Dataset)


def test_invalid_assign_after_init(T):
    _, _, dataset = setup(T)
    loader = T.utils.data.DataLoader(dataset)
    for attr in ("batch_size", "sampler", "batch_sampler", "drop_last", "dataset"):
        raises(ValueError, f"{attr} attribute should not be set after DataLoader is initialized", setattr, loader,
               attr, {})


def bulk_loading(T, n, batch_size):
    class BulkLoadingDataset(T.utils.data.Dataset):
        def __getitem__(self, indices):
            assert isinstance(indices, (list, tuple))
            return T.as_tensor(indices)

        def __len__(self):
            return n

    class BulkLoadingSampler(T.utils.data.Sampler):
        def __init__(self, dataset):
            self.dataset = dataset

        def __iter__(self):
            for x in T.randperm(len(self.dataset)).split(batch_size):
                yield x.tolist()

        def __len__(self):
            return int(math.ceil(len(self.dataset) / float(batch_size)))

    dataset = BulkLoadingDataset()
    return dataset, BulkLoadingSampler(dataset)


def test_bulk_loading_nobatch(T):
    dataset, sampler = bulk_loading(T, 35, 4)
    loader = T.utils.data.DataLoader(dataset, num_workers=0, batch_size=None, sampler=sampler)
    assert not loader._auto_collation
    samples = list(loader)
    assert len(samples) == len(loader) == 9
    assert set(values(T.cat(samples, 0)).tolist()) == set(range(35))


def test_growing_dataset(T):
    dataset = [T.ones(4) for _ in range(4)]
    sequential = T.utils.data.DataLoader(dataset, shuffle=False)
    shuffled = T.utils.data.DataLoader(dataset, shuffle=True)
    dataset.append(T.ones(4))
    assert len(sequential) == 5 and len(shuffled) == 5


def test_two_iterators_interleaved(T):
    """test_multiple_dataloaders, in one process: two passes advance independently."""
    data, _, dataset = setup(T)
    first, second = iter(T.utils.data.DataLoader(dataset)), iter(T.utils.data.DataLoader(dataset, batch_size=2))
    got = [next(first)[0], next(first)[0], next(second)[0], next(second)[0], next(first)[0], next(second)[0]]
    d = values(data)
    for g, e in zip(got, [d[0:1], d[1:2], d[0:2], d[2:4], d[2:3], d[4:6]]):
        same(g, e)


def test_invalid_ctor_args_combinations(T):
    data = T.utils.data
    DataLoader = data.DataLoader
    _, _, dataset = setup(T)
    raises(ValueError, "num_workers option should be non-negative", DataLoader, dataset, num_workers=-1)
    raises(ValueError, "timeout option should be non-negative", DataLoader, dataset, timeout=-1)
    raises(ValueError, "batch_size=None option disables auto-batching and is mutually exclusive", DataLoader,
           dataset, batch_size=None, drop_last=True)
    raises(ValueError, r"multi-process loading \(num_workers > 0\), but got", DataLoader, dataset, num_workers=0,
           multiprocessing_context="spawn")
    raises(ValueError, "should specify a valid start method in", DataLoader, dataset, num_workers=1,
           multiprocessing_context="bad")
    raises(TypeError, "multiprocessing_context option should be a valid context ", DataLoader, dataset,
           num_workers=1, multiprocessing_context=object())

    sampler = data.SequentialSampler(dataset)
    batch_sampler = data.BatchSampler(sampler, 3, False)
    for kwargs in ({"batch_size": 11, "sampler": sampler, "shuffle": True},
                   {"batch_sampler": batch_sampler, "sampler": sampler, "shuffle": True},
                   {"batch_sampler": batch_sampler, "sampler": sampler, "shuffle": 3}):
        raises(ValueError, "sampler option is mutually exclusive with shuffle", DataLoader, dataset, **kwargs)
    for kwargs in ({"batch_size": 11}, {"shuffle": True}, {"drop_last": True}, {"drop_last": 3}):
        raises(ValueError, "batch_sampler option is mutually exclusive with", DataLoader, dataset,
               batch_sampler=batch_sampler, **kwargs)

    stream = counting_iterable(T, 20)
    for kwargs, name in (({"shuffle": True}, "shuffle"), ({"shuffle": 3}, "shuffle"),
                         ({"sampler": data.SequentialSampler(stream)}, "sampler"), ({"sampler": 3}, "sampler"),
                         ({"batch_sampler": data.BatchSampler(data.SequentialSampler(stream), 3, False)},
                          "batch_sampler"), ({"batch_sampler": 3}, "batch_sampler")):
        raises(ValueError, f"DataLoader with IterableDataset: expected unspecified {name}", DataLoader, stream,
               **kwargs)


@pytest.mark.parametrize("kind", [list, tuple])
def test_builtin_collection_conversion(T, kind):
    DataLoader = T.utils.data.DataLoader
    for dataset in (counting(T, 20), counting_iterable(T, 20)):
        fetched = kind(DataLoader(dataset, batch_size=None))
        assert fetched == kind(range(20))
        fetched = kind(DataLoader(dataset, batch_size=2))
        assert isinstance(fetched, kind) and len(fetched) == 10
        for i, batch in zip(range(0, 20, 2), fetched):
            same(batch, [i, i + 1], dtype="int64")


def test_iterable_style_dataset_single_process(T):
    DataLoader = T.utils.data.DataLoader
    dataset = counting_iterable(T, 20)
    loader = DataLoader(dataset, batch_size=None)
    fetched = list(loader)
    assert len(fetched) == 20
    for i, d in enumerate(fetched):
        assert type(d) is int and d == i  # without batching ints are not made tensors
    assert len(loader) == len(dataset)

    fetched = list(DataLoader(dataset, batch_size=7))
    assert [values(f).tolist() for f in fetched] == [list(range(7)), list(range(7, 14)), list(range(14, 20))]
    fetched = list(DataLoader(dataset, batch_size=7, drop_last=True))
    assert [values(f).tolist() for f in fetched] == [list(range(7)), list(range(7, 14))]


def test_iterabledataset_len(T):
    for batch_size, drop_last, expected in [(1, False, 10), (1, True, 10), (2, False, 5), (2, True, 5),
                                            (3, False, 4), (3, True, 3)]:
        loader = T.utils.data.DataLoader(counting_iterable(T, 10), batch_size=batch_size, drop_last=drop_last)
        assert len(loader) == expected
        assert len(list(loader)) == expected


def test_len(T):
    _, _, dataset = setup(T)
    for loader, expected in ((dataset, 100), (T.utils.data.DataLoader(dataset, batch_size=2), 50),
                             (T.utils.data.DataLoader(dataset, batch_size=3), 34)):
        assert len(loader) == expected
        assert sum(1 for _ in loader) == expected


def sample_stat(sampler):
    counts = Counter(sampler)
    return sum(v > 1 for v in counts.values()), min(counts), max(counts), sum(counts.values())


def test_random_sampler(T):
    RandomSampler = T.utils.data.RandomSampler
    _, _, dataset = setup(T)
    n = len(dataset)
    repeated, low, high, total = sample_stat(RandomSampler(dataset, replacement=True, num_samples=n + 1))
    assert repeated > 0 and low >= 0 and high < n and total == n + 1
    assert sample_stat(RandomSampler(dataset)) == (0, 0, n - 1, n)
    assert sample_stat(RandomSampler(dataset, num_samples=2 * n)) == (n, 0, n - 1, 2 * n)
    repeated, low, high, total = sample_stat(RandomSampler(dataset, num_samples=n - 1))
    assert repeated == 0 and low >= 0 and high < n and total == n - 1
    assert sample_stat(RandomSampler(dataset, num_samples=n + 1)) == (1, 0, n - 1, n + 1)
    raises(TypeError, "replacement should be a boolean value, but got replacement=0", RandomSampler, dataset,
           replacement=0)
    raises(ValueError, "num_samples should be a positive integer value, but got num_samples=0", RandomSampler,
           dataset, num_samples=0)


@pytest.mark.parametrize("replacement", [True, False])
def test_random_sampler_len(T, replacement):
    _, _, dataset = setup(T)
    num_samples = len(dataset) + 5
    sampler = T.utils.data.RandomSampler(dataset, replacement=replacement, num_samples=num_samples)
    assert len(sampler) == num_samples == sum(1 for _ in sampler)
    assert len(T.utils.data.DataLoader(dataset, batch_size=1, sampler=sampler)) == num_samples
    assert len(T.utils.data.DataLoader(dataset, batch_size=6, sampler=sampler)) == math.ceil(num_samples / 6)


def test_distributed_sampler_invalid_rank(T):
    from importlib import import_module

    DistributedSampler = import_module(f"{T.__name__}.utils.data.distributed").DistributedSampler
    dataset = T.tensor(range(10), dtype=T.int32)
    raises(ValueError, "Invalid rank", DistributedSampler, dataset, 3, 3)
    raises(ValueError, "Invalid rank", DistributedSampler, dataset, 3, -1)


def test_duplicating_data_with_drop_last(T):
    num_processes, num_batches = 4, 9
    data_set = T.tensor(range(num_batches), dtype=T.int32)
    scanned = T.tensor([], dtype=T.int32)
    for i in range(num_processes):
        sampler = T.utils.data.DistributedSampler(data_set, num_processes, i)
        loader = T.utils.data.DataLoader(data_set, batch_size=num_batches // num_processes, drop_last=True,
                                         sampler=sampler)
        for batch in loader:
            scanned = T.cat((scanned, batch), 0)
    assert scanned.size() == scanned.unique().size()


@pytest.mark.parametrize("drop_last, shares", [
    (False, [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]),  # padded by repeating the first indices
    (True, [[0, 3, 6], [1, 4, 7], [2, 5, 8]]),  # the tail left out
])
def test_distributed_sampler_without_shuffle(T, drop_last, shares):
    dataset = list(range(10))
    for rank, share in enumerate(shares):
        sampler = T.utils.data.DistributedSampler(dataset, num_replicas=3, rank=rank, shuffle=False,
                                                  drop_last=drop_last)
        assert list(sampler) == share and len(sampler) == len(share)


def test_distributed_sampler_shuffles_alike_on_every_rank(T):
    dataset = list(range(12))

    def shares(epoch, seed=0):
        samplers = [T.utils.data.DistributedSampler(dataset, num_replicas=3, rank=r, seed=seed) for r in range(3)]
        for s in samplers:
            s.set_epoch(epoch)
        return [list(s) for s in samplers]

    first = shares(0)
    assert sorted(sum(first, [])) == dataset  # disjoint, covering the dataset
    assert shares(0) == first
    assert shares(1) != first and sorted(sum(shares(1), [])) == dataset


WEIGHTS = [0.1, 0.9, 0.4, 0.7, 3.0, 0.6]


def samplers(T, dataset, generator):
    data = T.utils.data
    made = lambda: T.Generator().manual_seed(42) if generator else None  # noqa: E731
    return [lambda: data.RandomSampler(dataset, num_samples=5, replacement=True, generator=made()),
            lambda: data.RandomSampler(dataset, replacement=False, generator=made()),
            lambda: data.WeightedRandomSampler(WEIGHTS, num_samples=5, replacement=True, generator=made()),
            lambda: data.WeightedRandomSampler(WEIGHTS, num_samples=5, replacement=False, generator=made()),
            lambda: data.SubsetRandomSampler(range(10), generator=made())]


def test_sampler_reproducibility(T):
    _, _, dataset = setup(T)
    for make in samplers(T, dataset, generator=True):
        assert list(make()) == list(make())
    for make in samplers(T, dataset, generator=False):
        sampler = make()
        T.manual_seed(0)
        l1 = list(sampler) + list(sampler)
        T.manual_seed(0)
        l2 = list(sampler) + list(sampler)
        assert l1 == l2
        its, ls = (iter(sampler), iter(sampler)), ([], [])
        for idx in range(len(sampler)):
            for i in range(2):
                if idx == 0:
                    T.manual_seed(0)
                ls[i].append(next(its[i]))
        assert ls[0] == ls[1]


def test_weighted_random_sampler(T):
    WeightedRandomSampler = T.utils.data.WeightedRandomSampler
    drawn = list(WeightedRandomSampler([0.0, 1.0, 0.0, 2.0], 50, generator=T.Generator().manual_seed(0)))
    assert len(drawn) == 50 and set(drawn) <= {1, 3}  # a zero weight is never drawn
    without = list(WeightedRandomSampler(WEIGHTS, 6, replacement=False))
    assert sorted(without) == list(range(6))
    raises(ValueError, "num_samples should be a positive integer value, but got num_samples=0",
           WeightedRandomSampler, WEIGHTS, 0)
    raises(ValueError, "replacement should be a boolean value, but got replacement=0", WeightedRandomSampler,
           WEIGHTS, 3, replacement=0)
    raises(ValueError, r"weights should be a 1d sequence but given weights have shape \(2, 2\)",
           WeightedRandomSampler, [[1.0, 2.0], [3.0, 4.0]], 3)


def test_subset_random_sampler(T):
    indices = [3, 7, 11, 20, 21]
    sampler = T.utils.data.SubsetRandomSampler(indices)
    assert len(sampler) == 5
    first, second = list(sampler), list(sampler)
    assert sorted(first) == indices and sorted(second) == indices


def test_batch_sampler_batches_and_errors(T):
    data = T.utils.data
    sequential = data.SequentialSampler(range(10))
    assert list(data.BatchSampler(sequential, 3, False)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert list(data.BatchSampler(sequential, 3, True)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(data.BatchSampler(sequential, 3, False)) == 4 and len(data.BatchSampler(sequential, 3, True)) == 3
    assert list(data.BatchSampler(range(4), 2, False)) == [[0, 1], [2, 3]]  # any iterable is a sampler
    for size in (0, -1, 2.0, True):
        raises(ValueError, f"batch_size should be a positive integer value, but got batch_size={size}",
               data.BatchSampler, sequential, size, False)
    raises(ValueError, "drop_last should be a boolean value, but got drop_last=1", data.BatchSampler, sequential,
           2, 1)


def test_sampler_as_a_plain_iterable(T):
    data, _, dataset = setup(T)
    loader = T.utils.data.DataLoader(dataset, sampler=range(2, 12), batch_size=2)
    assert len(loader) == 5
    for i, (inputs, _) in enumerate(loader):
        assert len(inputs) == 2
        same(inputs, values(data)[i * 2 + 2:i * 2 + 4])


def test_batch_sampler_as_a_list_of_tuples(T):
    data, _, dataset = setup(T)
    batches = []  # [(0, 1), (2, 3, 4), (5, 6), (7, 8, 9), ...]
    for i in range(0, 20, 5):
        batches.append(tuple(range(i, i + 2)))
        batches.append(tuple(range(i + 2, i + 5)))
    loader = T.utils.data.DataLoader(dataset, batch_sampler=batches)
    assert len(loader) == 8
    for i, (inputs, _) in enumerate(loader):
        offset, size = i * 5 // 2, 2 if i % 2 == 0 else 3
        assert len(inputs) == size
        same(inputs, values(data)[offset:offset + size])


def test_numpy_samples_become_tensors(T):
    class NumpyDataset(T.utils.data.Dataset):
        def __getitem__(self, i):
            return np.ones((2, 3, 4)) * i

        def __len__(self):
            return 1000

    batch = next(iter(T.utils.data.DataLoader(NumpyDataset(), batch_size=12)))
    assert isinstance(batch, T.Tensor) and dtype_name(batch) == "float64"
    assert tuple(batch.size()) == (12, 2, 3, 4)
    same(batch, np.ones((12, 2, 3, 4)) * np.arange(12)[:, None, None, None])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8"])
def test_numpy_scalars(T, dtype):
    class ScalarDataset(T.utils.data.Dataset):
        def __getitem__(self, i):
            return getattr(np, dtype)()

        def __len__(self):
            return 4

    batch = next(iter(T.utils.data.DataLoader(ScalarDataset(), batch_size=2)))
    same(batch, np.zeros(2, dtype), dtype=dtype)


class CustomList(list):
    pass


class CustomDict(dict):
    pass


def test_default_convert_keeps_or_drops_the_type(T):
    default_convert = T.utils.data.default_convert
    converted = default_convert(CustomDict({"a": 1, "b": 2}))
    assert type(converted) is CustomDict and converted == {"a": 1, "b": 2}
    converted = default_convert(CustomList([1, 2, 3]))
    assert type(converted) is CustomList and converted == [1, 2, 3]
    assert default_convert(range(2)) == [0, 1]
    converted = default_convert({"x": np.arange(3), "y": (np.float32(2.5), "s")})
    same(converted["x"], [0, 1, 2], dtype="int64")
    assert isinstance(converted["y"], list) and converted["y"][1] == "s"
    same(converted["y"][0], np.float32(2.5), dtype="float32")


def test_default_collate_dtype(T):
    default_collate = T.utils.data.default_collate
    same(default_collate([1, 2, -1]), [1, 2, -1], dtype="int64")
    same(default_collate([1.1, 2.3, -0.9]), [1.1, 2.3, -0.9], dtype="float64")
    same(default_collate([True, False]), [True, False], dtype="bool")
    assert default_collate(["a", "b", "c"]) == ["a", "b", "c"]


def test_default_collate_mapping_and_sequence_keep_type(T):
    default_collate = T.utils.data.default_collate
    collated = default_collate([CustomDict({"a": 1, "b": 2}), CustomDict({"a": 3, "b": 4})])
    assert type(collated) is CustomDict and set(collated) == {"a", "b"}
    same(collated["a"], [1, 3])
    same(collated["b"], [2, 4])
    collated = default_collate([CustomList([1, 2, 3]), CustomList([4, 5, 6])])
    assert type(collated) is CustomList and len(collated) == 3
    for got, expected in zip(collated, [[1, 4], [2, 5], [3, 6]]):
        same(got, expected)
    collated = default_collate([range(2), range(2)])
    assert type(collated) is list
    same(collated[0], [0, 0])
    same(collated[1], [1, 1])


def test_default_collate_bad_numpy_types(T):
    default_collate = T.utils.data.default_collate
    strings = np.array(["a", "b", "c"])
    assert default_collate(strings) is strings  # a no-op
    for bad in (np.array([[["a", "b", "c"]]]), np.array([object(), object(), object()]),
                np.array([[[object(), object(), object()]]])):
        raises(TypeError, "", default_collate, bad)


def test_default_collate_numpy_memmap(T):
    with tempfile.TemporaryFile() as f:
        arr = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
        written = np.memmap(f, dtype=arr.dtype, mode="w+", shape=arr.shape)
        written[:] = arr[:]
        mapped = np.memmap(f, dtype=arr.dtype, mode="r", shape=arr.shape)
        collated = T.utils.data.default_collate(list(mapped))
        same(collated, arr)


def test_default_collate_bad_sequence_type(T):
    batch = [["X"], ["X", "X"]]
    raises(RuntimeError, "each element in list of batch should be of equal size", T.utils.data.default_collate,
           batch)
    raises(RuntimeError, "each element in list of batch should be of equal size", T.utils.data.default_collate,
           batch[::-1])


def test_default_collate_unequal_tensors(T):
    raises(RuntimeError, "stack expects each tensor to be equal size", T.utils.data.default_collate,
           [T.zeros(2), T.zeros(3)])


def test_default_collate_is_not_shared_in_the_main_process(T):
    assert T.utils.data.default_collate([T.zeros(1)]).is_shared() is False
    assert T.utils.data.default_collate([np.zeros(1)]).is_shared() is False
    assert T.utils.data.get_worker_info() is None


# --- TestDictDataLoader, TestNamedTupleDataLoader, TestStringDataLoader ---

def test_dict_dataset_sequential_batch(T):
    class DictDataset(T.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, ndx):
            return {"a_tensor": T.empty(4, 2).fill_(ndx), "another_dict": {"a_number": ndx}}

    loader = T.utils.data.DataLoader(DictDataset(), batch_size=2, shuffle=False)
    count = 0
    for i, sample in enumerate(loader):
        idx = i * 2
        assert set(sample) == {"a_tensor", "another_dict"} and set(sample["another_dict"]) == {"a_number"}
        same(sample["a_tensor"], np.stack([np.full((4, 2), idx), np.full((4, 2), idx + 1)]).astype(np.float32))
        same(sample["another_dict"]["a_number"], [idx, idx + 1], dtype="int64")
        count += 1
    assert count == 2


def test_dataloader_with_namedtuple(T):
    Batch = collections.namedtuple("Batch", ["data", "label", "random_tensor"])
    Data = collections.namedtuple("Data", ["positive", "negative"])

    class NamedTupleDataset(T.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, ndx):
            return Batch(data=Data(positive=ndx, negative=-ndx), label=str(ndx), random_tensor=T.ones(3) * ndx)

    for batch in T.utils.data.DataLoader(NamedTupleDataset(), batch_size=2):
        assert isinstance(batch, Batch) and isinstance(batch.data, Data)
        assert isinstance(batch.data.positive, T.Tensor) and batch.label in {("0", "1"), ("2", "3")}
        assert tuple(batch.random_tensor.shape) == (2, 3)
    for i, batch in enumerate(T.utils.data.DataLoader(NamedTupleDataset(), batch_size=None)):
        assert isinstance(batch, Batch) and isinstance(batch.data, Data)
        assert not isinstance(batch.data.positive, T.Tensor) and batch.data == (i, -i) and batch.label == str(i)


def test_string_dataset_keeps_strings(T):
    class StringDataset(T.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, ndx):
            return "12345"[ndx], ndx

    batches = list(T.utils.data.DataLoader(StringDataset(), batch_size=2))
    assert [s for s, _ in batches] == [("1", "2"), ("3", "4"), ("5",)]  # the field as the samples make it
    same(batches[2][1], [4], dtype="int64")


def test_custom_collate_fn_gets_the_list_of_samples(T):
    class SimpleCustomBatch:
        def __init__(self, samples):
            columns = list(zip(*samples))
            self.inp = T.stack(columns[0], 0)
            self.tgt = T.stack(columns[1], 0)

    inputs = T.arange(50, dtype=T.float32).view(10, 5)
    dataset = T.utils.data.TensorDataset(inputs, inputs * 2)
    for i, batch in enumerate(T.utils.data.DataLoader(dataset, batch_size=2, collate_fn=SimpleCustomBatch)):
        assert isinstance(batch, SimpleCustomBatch)
        expected = np.arange(50, dtype=np.float32).reshape(10, 5)[2 * i:2 * i + 2]
        same(batch.inp, expected)
        same(batch.tgt, expected * 2)
