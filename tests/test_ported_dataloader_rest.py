"""The rest of PyTorch's test/test_dataloader.py that tests/test_ported_dataloader.py leaves out: the tests with
worker processes (``num_workers`` of 1 or 2 here, PyTorch's 3 to 6 made smaller), the fractional round-robin
random_split, worker seeds, ``worker_init_fn`` (a function, or a method of the dataset), ``get_worker_info``,
IterableDatasets sharded per worker, the warnings for an IterableDataset longer than its length and for more
workers than CPUs, NumPy seeds of the workers (``_generate_state``), persistent workers, start methods, and
collate functions that make PackedSequences. Each test runs on chainrule's `autograd` and, where it is
installed, on PyTorch (fixture `T`), against the same literal expectations.

Left out: the tests of processes dying (segfaults, timeouts, proper exit when killed: chainrule's workers take
turns in the main process), pinned memory on a GPU, nested tensors, DataPipes, CPU affinity set in a worker
(here it would set the test process's), and ``default_collate`` putting a worker's batch in shared memory
(strict xfail below).
"""

import dataclasses
import functools
import math
import multiprocessing
import warnings

import numpy as np
import pytest

from tests.ported import same, values
from tests.test_ported_dataloader import counting_iterable, setup


def ours(T):
    return T.__name__ == "autograd"


# --- random_split (TestDatasetRandomSplit) ---

def test_random_split_fractions_share_the_remainder_round_robin(T):
    random_split = T.utils.data.random_split
    splits = random_split(range(106), [0.1, 0.2, 0.3, 0.4], generator=T.Generator().manual_seed(1))
    assert [len(s) for s in splits] == [11, 22, 31, 42]  # 10.6, 21.2, 31.8, 42.4: the 2 left go to the first two
    assert [list(s)[:4] for s in splits] == [[65, 60, 70, 51], [10, 74, 18, 59], [103, 14, 36, 21], [40, 22, 58, 93]]
    assert sorted(sum((list(s) for s in splits), [])) == list(range(106))
    assert [list(s) for s in random_split(range(3), [0.5, 0.5], generator=T.Generator().manual_seed(1))] \
        == [[1, 2], [0]]
    for data, fractions in (([5, 2, 3, 4, 1, 6], [0.33, 0.67]), ([1, 2, 3, 4], [0.25, 0.75])):
        splits = random_split(data, fractions)
        assert sorted(list(splits[0]) + list(splits[1])) == sorted(data)


# --- TestDataLoader with workers ---

def test_error_in_init(T):
    class ErrorIterableDataset(T.utils.data.IterableDataset):
        def __iter__(self):
            raise RuntimeError("Error in __iter__")

    def error_worker_init_fn(_):
        raise RuntimeError("Error in worker_init_fn")

    for num_workers in (0, 2):
        assert "Error in __iter__" in error_of_a_pass(T.utils.data.DataLoader(ErrorIterableDataset(),
                                                                              num_workers=num_workers))
    # in a worker the error is raised again naming the worker that raised it
    assert "Caught RuntimeError in DataLoader worker process 0" in error_of_a_pass(
        T.utils.data.DataLoader(ErrorIterableDataset(), num_workers=2))
    _, _, dataset = setup(T)
    assert "Error in worker_init_fn" in error_of_a_pass(
        T.utils.data.DataLoader(dataset, num_workers=2, worker_init_fn=error_worker_init_fn))


def error_of_a_pass(loader):
    """The message of the RuntimeError a pass raises. PyTorch's workers are shut down at once: left to the garbage
    collector with the traceback, they would be joined later, with a timeout, in another test."""
    passes = []
    try:
        with pytest.raises(RuntimeError) as info:
            passes.append(iter(loader))  # (without workers, an IterableDataset's __iter__ raises here)
            list(passes[0])
        return str(info.value)
    finally:
        for it in passes:
            if hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()


def check_sequential(loader, data, labels):
    batch_size = loader.batch_size
    count = 0
    for i, (sample, target) in enumerate(loader):
        same(sample, values(data)[i * batch_size:(i + 1) * batch_size])
        same(target, values(labels)[i * batch_size:(i + 1) * batch_size])
        count += 1
    assert count == math.ceil(len(data) / batch_size)


def check_shuffle(loader, data, labels):
    rows = {values(row).tobytes(): i for i, row in enumerate(data)}
    seen = []
    for samples, targets in loader:
        for sample, target in zip(samples, targets):
            index = rows[values(sample).tobytes()]
            same(target, values(labels)[index])
            seen.append(index)
    assert sorted(seen) == list(range(len(data)))


@pytest.mark.parametrize("prefetch_factor, persistent_workers", [(None, False), (3, False), (None, True)])
def test_sequential_and_shuffled_batches_with_workers(T, prefetch_factor, persistent_workers):
    """TestDataLoader's sequential and shuffled passes with workers; TestDataLoaderPersistentWorkers runs them with
    persistent workers (two passes here, the second by the workers of the first)."""
    data, labels, dataset = setup(T)
    options = {"num_workers": 2, "prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    sequential = T.utils.data.DataLoader(dataset, batch_size=2, **options)
    shuffled = T.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, **options)
    for _ in range(2 if persistent_workers else 1):
        check_sequential(sequential, data, labels)
        check_shuffle(shuffled, data, labels)


def test_shuffle_reproducibility_with_workers(T):
    def epoch(num_workers):
        loader = T.utils.data.DataLoader(list(range(10)), batch_size=3, shuffle=True, num_workers=num_workers,
                                         generator=T.Generator().manual_seed(42))
        return [b.tolist() for b in loader]

    # the pass draws its workers' base seed first, with or without workers, so the order is the same
    assert epoch(2) == epoch(2) == epoch(0) == [[6, 5, 4], [0, 8, 9], [2, 1, 3], [7]]


def seed_dataset(T, n):
    class SeedDataset(T.utils.data.Dataset):
        def __getitem__(self, idx):
            return T.initial_seed()

        def __len__(self):
            return n

    return SeedDataset()


def test_worker_seed(T):
    def seeds():
        loader = T.utils.data.DataLoader(seed_dataset(T, 4), batch_size=1, num_workers=2,
                                         generator=T.Generator().manual_seed(42))
        return [int(b) for b in loader]

    base = 6909045637428952499  # the first int64 the generator seeded with 42 draws
    assert seeds() == seeds() == [base, base + 1, base, base + 1]  # batch k: worker k mod 2
    assert len({int(b) for b in T.utils.data.DataLoader(seed_dataset(T, 2), num_workers=2)}) == 2


def test_worker_init_fn(T):
    def init_fn(worker_id):
        T.manual_seed(12345)

    loader = T.utils.data.DataLoader(seed_dataset(T, 4), batch_size=2, num_workers=2, worker_init_fn=init_fn)
    assert [b.tolist() for b in loader] == [[12345, 12345], [12345, 12345]]


@pytest.mark.parametrize("persistent_workers", [False, True])
def test_multi_epochs_reproducibility(T, persistent_workers):
    class MultiEpochDataset(T.utils.data.IterableDataset):
        def __iter__(self):
            info = T.utils.data.get_worker_info()
            for _ in range(20 // info.num_workers):
                yield info.id

    loader = T.utils.data.DataLoader(MultiEpochDataset(), batch_size=10, shuffle=False, num_workers=2,
                                     persistent_workers=persistent_workers)
    for _ in range(3):
        assert [b.tolist() for b in loader] == [[0] * 10, [1] * 10]


def test_get_worker_info(T):
    assert T.utils.data.get_worker_info() is None

    class WorkerInfoDataset(T.utils.data.Dataset):
        def __getitem__(self, idx):
            return T.tensor(self.value)

        def __len__(self):
            return 6

    seen = []

    def init_fn(worker_id):
        info = T.utils.data.get_worker_info()
        assert worker_id == info.id < info.num_workers == 2
        assert info.seed == T.initial_seed()
        assert isinstance(info.dataset, WorkerInfoDataset) and not hasattr(info.dataset, "value")
        with pytest.raises(dataclasses.FrozenInstanceError):  # (PyTorch 2.13's WorkerInfo: a frozen dataclass)
            info.id = 3999
        for key in ("id", "num_workers", "seed", "dataset"):
            assert f"{key}=" in repr(info)
        info.dataset.value = [worker_id, 10 * worker_id]
        seen.append(worker_id)

    dataset = WorkerInfoDataset()
    batches = list(T.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, worker_init_fn=init_fn))
    assert [b.tolist() for b in batches] == [[[0, 0], [0, 0]], [[1, 10], [1, 10]], [[0, 0], [0, 0]]]
    assert T.utils.data.get_worker_info() is None
    assert not hasattr(dataset, "value")  # each worker set its own copy's
    if ours(T):
        assert seen == [0, 1]  # (PyTorch's workers run init_fn in their own processes)


def test_method_of_the_dataset_as_worker_init_fn(T):
    """TestIndividualWorkerQueue: batch i is made by worker i mod W, whose copy of the dataset its
    ``worker_init_fn`` (a method of the dataset) set."""

    class WorkerQueueDataset(T.utils.data.Dataset):
        def __init__(self, data):
            self.data, self.worker_id = data, None

        def worker_init_fn(self, worker_id):
            self.worker_id = worker_id

        def __getitem__(self, item):
            return self.worker_id, self.data[item]

        def __len__(self):
            return len(self.data)

    dataset = WorkerQueueDataset(list(range(48)))
    for batch_size in (8, 16):
        for num_workers in (1, 2):
            loader = T.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, timeout=5,
                                             worker_init_fn=dataset.worker_init_fn)
            for i, (worker_ids, sample) in enumerate(loader):
                assert worker_ids.tolist() == [i % num_workers] * batch_size
                assert sample.tolist() == list(range(i * batch_size, (i + 1) * batch_size))
    assert dataset.worker_id is None

    def set_worker_id(dataset, worker_id):
        dataset.worker_id = worker_id

    # a functools.partial given the dataset works on each worker's copy too
    loader = T.utils.data.DataLoader(dataset, batch_size=8, num_workers=2,
                                     worker_init_fn=functools.partial(set_worker_id, dataset))
    assert [worker_ids.tolist() for worker_ids, _ in loader] == [[i % 2] * 8 for i in range(6)]
    assert dataset.worker_id is None


def worker_specific(T, sizes):
    class WorkerSpecificIterableDataset(T.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(sizes[T.utils.data.get_worker_info().id]))

        def __len__(self):
            return sum(sizes)

    return WorkerSpecificIterableDataset()


@pytest.mark.parametrize("prefetch_factor", [2, 3])
def test_iterable_style_dataset_with_workers(T, prefetch_factor):
    DataLoader = T.utils.data.DataLoader
    dataset = worker_specific(T, [4, 9])
    loader = DataLoader(dataset, num_workers=2, batch_size=None, prefetch_factor=prefetch_factor)
    fetched = list(loader)
    assert all(type(x) is int for x in fetched)  # without batching ints are not made tensors
    assert fetched == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8]  # the workers in turn, while each has samples
    assert len(loader) == len(dataset) == 13
    batched = DataLoader(dataset, num_workers=2, batch_size=3, prefetch_factor=prefetch_factor)
    assert [b.tolist() for b in batched] == [[0, 1, 2], [0, 1, 2], [3], [3, 4, 5], [6, 7, 8]]
    dropped = DataLoader(dataset, num_workers=2, batch_size=3, drop_last=True, prefetch_factor=prefetch_factor)
    assert [b.tolist() for b in dropped] == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_warning_after_an_iterable_dataset_gives_more_than_its_length(T):
    loader = T.utils.data.DataLoader(counting_iterable(T, 20), num_workers=2)  # each worker gives all 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        it = iter(loader)
        assert [int(next(it)) for _ in range(40)][:4] == [0, 0, 1, 1]  # no warning before len(loader) is read
    assert len(loader) == 20
    it = iter(loader)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(20):
            next(it)
    for fetched in (21, 22, 23):
        with pytest.warns(UserWarning, match=rf"was reported to be 20\(when accessing len\(dataloader\)\), but "
                                             rf"{fetched} samples have been fetched\. For multiprocessing "
                                             "data-loading, this"):
            next(it)


def test_chain_and_builtin_collections_with_one_worker(T):
    data = T.utils.data
    chained = data.ChainDataset([counting_iterable(T, 5), counting_iterable(T, 3)])
    assert [b.tolist() for b in data.DataLoader(chained, num_workers=1)] == [[i] for i in [0, 1, 2, 3, 4, 0, 1, 2]]
    for kind in (list, tuple):
        assert kind(data.DataLoader(counting_iterable(T, 6), batch_size=None, num_workers=1)) == kind(range(6))
        fetched = kind(data.DataLoader(counting_iterable(T, 6), batch_size=2, num_workers=1))
        assert isinstance(fetched, kind) and [b.tolist() for b in fetched] == [[0, 1], [2, 3], [4, 5]]


def test_sampler_and_batch_sampler_with_workers(T):
    data, _, dataset = setup(T)
    loader = T.utils.data.DataLoader(dataset, sampler=range(2, 12), batch_size=2, num_workers=2)
    assert len(loader) == 5
    for i, (inputs, _) in enumerate(loader):
        same(inputs, values(data)[i * 2 + 2:i * 2 + 4])
    batches = [tuple(range(i, i + 2)) if j == 0 else tuple(range(i + 2, i + 5)) for i in range(0, 20, 5)
               for j in (0, 1)]
    loader = T.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=2)
    assert len(loader) == 8
    for i, (inputs, _) in enumerate(loader):
        offset, size = i * 5 // 2, 2 if i % 2 == 0 else 3
        same(inputs, values(data)[offset:offset + size])


def test_bulk_loading_nobatch_with_workers(T):
    class BulkLoadingDataset(T.utils.data.Dataset):
        def __getitem__(self, indices):
            assert isinstance(indices, (list, tuple))
            return T.as_tensor(indices)

        def __len__(self):
            return 35

    class BulkLoadingSampler(T.utils.data.Sampler):
        def __iter__(self):
            yield from (x.tolist() for x in T.randperm(35).split(4))

        def __len__(self):
            return 9

    loader = T.utils.data.DataLoader(BulkLoadingDataset(), num_workers=2, batch_size=None,
                                     sampler=BulkLoadingSampler())
    assert not loader._auto_collation
    assert sorted(T.cat(list(loader), 0).tolist()) == list(range(35))


def test_error_workers(T):
    class ErrorDataset(T.utils.data.Dataset):
        def __len__(self):
            return 41

    it, errors = iter(T.utils.data.DataLoader(ErrorDataset(), batch_size=2, shuffle=True, num_workers=2)), 0
    while True:
        try:
            next(it)
        except NotImplementedError:
            errors += 1  # each batch's error, and the pass goes on
        except StopIteration:
            break
    assert errors == 21


def test_two_loaders_with_workers_interleaved(T):
    data, _, dataset = setup(T)
    first = iter(T.utils.data.DataLoader(dataset, num_workers=1))
    second = iter(T.utils.data.DataLoader(dataset, num_workers=2, multiprocessing_context="fork"))
    got = [next(first)[0], next(first)[0], next(second)[0], next(second)[0], next(first)[0], next(second)[0]]
    d = values(data)
    for g, e in zip(got, [d[0:1], d[1:2], d[0:1], d[1:2], d[2:3], d[2:3]]):
        same(g, e)


def test_multiprocessing_contexts(T):
    reference = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    # PyTorch's spawned workers would import this module again: only 'fork' where PyTorch runs
    methods = multiprocessing.get_all_start_methods() if ours(T) else ["fork"]
    for method in methods:
        for context in (method, multiprocessing.get_context(method)):
            loader = T.utils.data.DataLoader(list(range(11)), num_workers=2, batch_size=3,
                                             multiprocessing_context=context)
            assert [b.tolist() for b in loader] == reference


def test_dataset_not_reset_with_persistent_workers(T):
    class DummyDataset(T.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, idx):
            assert self.start == 0  # the workers' copies are those of the first pass
            return idx

    dataset = DummyDataset()
    loader = T.utils.data.DataLoader(dataset, num_workers=2, persistent_workers=True)
    dataset.start = 0
    for i in range(3):
        assert [int(x) for x in loader] == list(range(10))
        dataset.start = i + 1


def test_dict_dataset_with_a_persistent_worker(T):
    class DictDataset(T.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, ndx):
            return {"a_tensor": T.empty(4, 2).fill_(ndx), "another_dict": {"a_number": ndx}}

    loader = T.utils.data.DataLoader(DictDataset(), batch_size=2, num_workers=1, persistent_workers=True)
    for _ in range(2):
        for i, sample in enumerate(loader):
            same(sample["a_tensor"], np.repeat([2 * i, 2 * i + 1], 8).reshape(2, 4, 2).astype(np.float32))
            same(sample["another_dict"]["a_number"], [2 * i, 2 * i + 1], dtype="int64")


def test_conv_after_fork(T):
    nn = T.nn if not ours(T) else __import__("nn")

    class ConvDataset(T.utils.data.Dataset):
        def __init__(self):
            self.x = T.ones(1, 1, 2400)
            self[0]  # a convolution in the main process first

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return nn.functional.conv1d(self.x, T.ones(1, 1, 2))

    for x in T.utils.data.DataLoader(ConvDataset(), num_workers=1):
        same(x, np.full((1, 1, 1, 2399), 2.0, np.float32))


@pytest.mark.parametrize("batch_first", [False, True])
def test_collate_into_packed_sequence(T, batch_first):
    rnn = (T.nn if not ours(T) else __import__("nn")).utils.rnn

    def collate(batch):
        data = T.stack([sample[0] for sample in batch], 0 if batch_first else 1)
        steps = data.size(1 if batch_first else 0)
        lengths = T.randint(1, steps, size=(len(batch),), dtype=T.int64)
        return rnn.pack_padded_sequence(data, lengths, batch_first=batch_first, enforce_sorted=False)

    inputs = T.arange(50, dtype=T.float32).view(10, 5)
    T.manual_seed(0)
    packed = list(T.utils.data.DataLoader(T.utils.data.TensorDataset(inputs, inputs), batch_size=2,
                                          collate_fn=collate))
    assert all(isinstance(p, rnn.PackedSequence) for p in packed) and len(packed) == 5
    # the same packing either way: lengths [2, 1] drawn after seed 0, as PyTorch's
    assert [(p.data.tolist(), p.batch_sizes.tolist(), p.sorted_indices.tolist()) for p in packed[:2]] == \
        [([0.0, 5.0, 1.0], [2, 1], [0, 1]), ([10.0, 15.0, 11.0, 16.0, 12.0, 17.0, 13.0, 18.0], [2, 2, 2, 2], [0, 1])]


# --- warnings and the workers' NumPy seeds ---

def test_excessive_thread_creation_warning(T):
    _, _, dataset = setup(T)
    with pytest.warns(UserWarning, match=r"This DataLoader will create 1000 worker processes in total\. .*"
                                         r"excessive worker creation might get DataLoader running slow or even freeze"):
        T.utils.data.DataLoader(dataset, batch_size=2, num_workers=1000)


NUMPY_GEN_STATE_CASES = [
    ((4, 13434589827475259383), (2884386318, 1088094898, 3523808998, 3860348662)),
    ((1, 15014285634777110771), (1934848465, 763213760, 2959016433, 179751970)),
    ((10, 978296274032934101), (1759791917, 3550927336, 1225977135, 1036538043)),
    ((12, 11868770762134256968), (3974661794, 3331131333, 3630387033, 2885815368)),
    ((2, 2889492011444113593), (3721591783, 2595811276, 2212881745, 977682627)),
    ((0, 8979703111668486195), (4276723937, 2556068849, 2962827292, 233130238)),
]


def test_numpy_gen_state(T):
    generate_state = __import__(f"{T.__name__}.utils.data._utils.worker", fromlist=["_"])._generate_state
    for (worker_id, base_seed), expected in NUMPY_GEN_STATE_CASES:
        assert tuple(generate_state(base_seed, worker_id)) == expected
        # NumPy's SeedSequence hashes the same entropy to the same words
        entropy = [worker_id, base_seed & 0xFFFFFFFF, base_seed >> 32, 0]
        assert tuple(np.random.SeedSequence(entropy).generate_state(4).tolist()) == expected


def test_a_workers_batch_is_in_shared_memory(T, request):
    """test_default_collate_shared_tensor, through a real worker: PyTorch's default_collate stacks a worker's
    batch into shared memory (so that it crosses to the main process without a copy)."""
    if ours(T):
        request.applymarker(pytest.mark.xfail(strict=True, reason="chainrule's workers take turns in the main "
                                              "process: their batches are not moved to shared memory"))
    assert T.utils.data.default_collate([T.zeros(1)]).is_shared() is False
    batch = next(iter(T.utils.data.DataLoader(T.utils.data.TensorDataset(T.zeros(4)), batch_size=2, num_workers=1)))
    assert batch[0].is_shared() is True
