"""DataLoader with num_workers > 0 gives PyTorch's batches: each worker's seeds (its default generator,
Python's random, NumPy's global stream), its own copy of the dataset, worker_init_fn and get_worker_info,
batch k made by worker k mod W, an IterableDataset's workers taking turns, persistent workers going on
from pass to pass, and a worker's exception raised as PyTorch raises it. Each program runs on chainrule and,
where it is installed, on PyTorch (fixture T), against the same literal expectations where they are fixed
by the seeds, and against each other where PyTorch is there."""

import math
import random

import numpy as np
import pytest

from tests.pytorch_programs import pytorch


def sharded_range(T, start, end):
    """PyTorch's documented IterableDataset, split among the workers in __iter__."""

    class Range(T.utils.data.IterableDataset):
        def __init__(self):
            super().__init__()
            self.start, self.end = start, end

        def __iter__(self):
            info = T.utils.data.get_worker_info()
            low, high = self.start, self.end
            if info is not None:
                per_worker = math.ceil((self.end - self.start) / info.num_workers)
                low = self.start + info.id * per_worker
                high = min(low + per_worker, self.end)
            return iter(range(low, high))

    return Range()


def test_an_iterable_datasets_workers_take_turns(T):
    dataset = sharded_range(T, 3, 17)
    loader = T.utils.data.DataLoader(dataset, batch_size=2, num_workers=3)
    assert [b.tolist() for b in loader] == [[3, 4], [8, 9], [13, 14], [5, 6], [10, 11], [15, 16], [7], [12]]
    assert [b.tolist() for b in T.utils.data.DataLoader(dataset, batch_size=2, num_workers=3, drop_last=True)] \
        == [[3, 4], [8, 9], [13, 14], [5, 6], [10, 11], [15, 16]]
    unbatched = T.utils.data.DataLoader(sharded_range(T, 0, 7), batch_size=None, num_workers=3)
    assert [int(x) for x in unbatched] == [0, 3, 6, 1, 4, 2, 5]


def test_worker_init_fn_shards_its_own_copy_of_the_dataset(T):
    """PyTorch's documented second way: worker_init_fn sets each worker's copy's bounds."""

    class Range(T.utils.data.IterableDataset):
        def __init__(self, start, end):
            super().__init__()
            self.start, self.end = start, end

        def __iter__(self):
            return iter(range(self.start, self.end))

    def worker_init_fn(worker_id):
        info = T.utils.data.get_worker_info()
        dataset = info.dataset
        per_worker = math.ceil((dataset.end - dataset.start) / info.num_workers)
        dataset.start = dataset.start + info.id * per_worker
        dataset.end = min(dataset.start + per_worker, dataset.end)

    dataset = Range(3, 7)
    assert [int(x) for x in T.utils.data.DataLoader(dataset, num_workers=2, worker_init_fn=worker_init_fn)] \
        == [3, 5, 4, 6]
    assert [int(x) for x in T.utils.data.DataLoader(dataset, num_workers=12, worker_init_fn=worker_init_fn)] \
        == [3, 4, 5, 6]
    assert (dataset.start, dataset.end) == (3, 7)  # the workers changed their copies only
    assert T.utils.data.get_worker_info() is None


def test_batch_k_is_made_by_worker_k_mod_w_with_its_seed(T):
    class WhoMadeIt(T.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, index):
            info = T.utils.data.get_worker_info()
            return T.tensor([index, info.id, info.num_workers, info.seed - T.initial_seed()])

    generator = T.Generator().manual_seed(5)
    loader = T.utils.data.DataLoader(WhoMadeIt(), batch_size=2, num_workers=2, generator=generator)
    assert [b.tolist() for b in loader] == [[[0, 0, 2, 0], [1, 0, 2, 0]], [[2, 1, 2, 0], [3, 1, 2, 0]],
                                            [[4, 0, 2, 0]]]

    class Seed(T.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return T.utils.data.get_worker_info().seed

    generator.manual_seed(5)
    seeds = [int(s) for s in T.utils.data.DataLoader(Seed(), num_workers=3, generator=generator)]
    base = seeds[0]
    assert seeds == [base, base + 1, base + 2]
    generator.manual_seed(5)
    assert base == T.empty((), dtype=T.int64).random_(generator=generator).item()  # the pass's first draw


def draws_per_worker(T, num_workers, persistent_workers, epochs=2):
    """What a dataset draws from the three random streams a worker has, batch by batch, epoch by epoch."""

    class Noisy(T.utils.data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, index):
            return T.tensor([float(index), T.rand(1).item(), random.random(), np.random.rand()])

    T.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    loader = T.utils.data.DataLoader(Noisy(), batch_size=2, shuffle=True, num_workers=num_workers,
                                     persistent_workers=persistent_workers)
    passes = [[batch.double().numpy().copy() for batch in loader] for _ in range(epochs)]
    return passes, T.rand(1).item(), random.random(), np.random.rand()  # the main process's streams after


@pytest.mark.parametrize("num_workers, persistent", [(2, False), (2, True), (3, False)])
def test_random_draws_in_workers_are_pytorchs(num_workers, persistent):
    import autograd

    ours = draws_per_worker(autograd, num_workers, persistent)
    theirs_main = draws_per_worker(autograd, 0, False)
    # the first pass's indices are the sampler's, the same with or without workers; what the dataset draws is
    # not (and without workers those draws move the main generator, which seeds the next pass's shuffle)
    assert [b[:, 0].tolist() for b in ours[0][0]] == [b[:, 0].tolist() for b in theirs_main[0][0]]
    assert not np.allclose(ours[0][0][0][:, 1:], theirs_main[0][0][0][:, 1:])
    if pytorch() is not None:
        import torch

        theirs = draws_per_worker(torch, num_workers, persistent)
        for mine, their_pass in zip(ours[0], theirs[0]):
            for a, b in zip(mine, their_pass):
                np.testing.assert_allclose(a, b, rtol=1e-6)
        np.testing.assert_allclose(ours[1:], theirs[1:], rtol=1e-6)


def test_persistent_workers_keep_their_streams_and_copies():
    import autograd

    class Counting(autograd.utils.data.Dataset):
        calls = 0

        def __len__(self):
            return 4

        def __getitem__(self, index):
            self.calls += 1  # (set on the worker's copy)
            return autograd.tensor([self.calls, autograd.utils.data.get_worker_info().id])

    dataset = Counting()
    loader = autograd.utils.data.DataLoader(dataset, num_workers=2, persistent_workers=True)
    first, second = [[b.tolist() for b in loader] for _ in range(2)]
    assert first == [[[1, 0]], [[1, 1]], [[2, 0]], [[2, 1]]]
    assert second == [[[3, 0]], [[3, 1]], [[4, 0]], [[4, 1]]]  # the same workers, with their copies
    fresh = autograd.utils.data.DataLoader(dataset, num_workers=2)
    assert [[b.tolist() for b in fresh] for _ in range(2)] == [first, first]  # new workers every pass
    assert dataset.calls == 0


def test_a_workers_exception_names_the_worker_and_the_pass_goes_on(T):
    class Faulty(T.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, index):
            if index == 3:
                raise KeyError("no such key")
            if index == 4:
                raise ValueError("bad value")
            return index

    batches = iter(T.utils.data.DataLoader(Faulty(), num_workers=2))
    assert [int(next(batches)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError) as caught:
        next(batches)
    message = caught.value.args[0]
    assert message.startswith("Caught KeyError in DataLoader worker process 1.\nOriginal Traceback")
    assert "no such key" in message and repr(message) == message
    with pytest.raises(ValueError, match="Caught ValueError in DataLoader worker process 0"):
        next(batches)
    assert int(next(batches)) == 5

    def failing_init(worker_id):
        raise RuntimeError("init fails")

    with pytest.raises(RuntimeError, match="Caught RuntimeError in DataLoader worker process 0") as caught:
        list(T.utils.data.DataLoader(Faulty(), num_workers=2, worker_init_fn=failing_init))
    assert "init fails" in str(caught.value)


class Picky(Exception):
    """An exception whose class takes two arguments (at module level: PyTorch's worker pickles its class)."""

    def __init__(self, code, detail):
        super().__init__(code, detail)


def test_an_exception_that_takes_other_arguments_comes_back_as_a_runtime_error(T):
    class Failing(T.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise Picky(7, "detail")

    with pytest.raises(RuntimeError, match="Caught Picky in DataLoader worker process 0"):
        next(iter(T.utils.data.DataLoader(Failing(), num_workers=1)))


def test_worker_info_is_frozen(T):
    class Info(T.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            info = T.utils.data.get_worker_info()
            try:
                info.id = 5
            except Exception as error:  # (dataclasses.FrozenInstanceError, an AttributeError)
                return type(error).__name__, isinstance(error, AttributeError), info.id
            return "not frozen"

    assert next(iter(T.utils.data.DataLoader(Info(), batch_size=None, num_workers=1))) == \
        ["FrozenInstanceError", True, 0]  # (the loader converts a sample tuple to a list)
