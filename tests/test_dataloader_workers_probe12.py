"""DataLoader workers as PyTorch's: each has a deep copy of the dataset, as a forked worker process has (a
generator, a cache or a list the dataset holds is the worker's own, and the main process's dataset is left as
it was), but what a fork shares stays shared (tensors in shared memory, arrays on memory-mapped files); and
persistent workers make the batches sent to them ahead (prefetch_factor per worker) before a pass
left unfinished gives way to the next, so their random streams go on from there."""

import threading

import numpy as np
import pytest


def test_each_worker_draws_from_its_own_copy_of_the_datasets_numpy_generator(T):
    class Noisy(T.utils.data.Dataset):
        def __init__(self):
            self.rng = np.random.default_rng(0)
            self.seen = []

        def __len__(self):
            return 4

        def __getitem__(self, index):
            self.seen.append(index)
            return T.tensor([self.rng.random(), len(self.seen)])

    dataset = Noisy()
    batches = [b[0].tolist() for b in T.utils.data.DataLoader(dataset, num_workers=2)]
    first, second = np.random.default_rng(0).random(2)
    np.testing.assert_allclose(batches, [[first, 1], [first, 1], [second, 2], [second, 2]], rtol=1e-6)
    assert dataset.seen == [] and dataset.rng.random() == first


def test_a_dataset_holding_what_cannot_be_copied_shares_only_that(T):
    class Locked(T.utils.data.Dataset):
        def __init__(self):
            self.lock = threading.Lock()  # (deepcopy refuses a lock)
            self.seen = []

        def __len__(self):
            return 2

        def __getitem__(self, index):
            with self.lock:
                self.seen.append(index)
            return len(self.seen)

    dataset = Locked()
    assert [int(b) for b in T.utils.data.DataLoader(dataset, num_workers=2)] == [1, 1]
    assert dataset.seen == []


def test_persistent_workers_make_the_batches_sent_ahead_before_the_next_pass(T):
    class Draws(T.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, index):
            info = T.utils.data.get_worker_info()
            return T.tensor([index, info.id, T.randint(0, 1000, ()).item()])

    def passes(prefetch_factor, take):
        T.manual_seed(0)
        loader = T.utils.data.DataLoader(Draws(), num_workers=2, persistent_workers=True,
                                         prefetch_factor=prefetch_factor)
        seen = []
        for _ in range(2):
            for k, batch in enumerate(loader):
                seen.append(batch[0].tolist())
                if k + 1 == take:
                    break
        return seen

    seen = passes(2, 3)  # 3 batches taken, 3 + 2 * 2 = 7 sent: worker 0 made 0, 2, 4, 6; worker 1 made 1, 3, 5
    assert [row[:2] for row in seen] == [[0, 0], [1, 1], [2, 0], [0, 0], [1, 1], [2, 0]]
    whole = passes(None, 12)[:12]  # a pass taken to its end: worker w's draws in order
    worker0 = [row[2] for row in whole if row[1] == 0]
    worker1 = [row[2] for row in whole if row[1] == 1]
    assert [row[2] for row in seen] == [worker0[0], worker1[0], worker0[1], worker0[4], worker1[3], worker0[5]]
    seen = passes(1, 1)  # 1 taken, 1 + 1 * 2 = 3 sent
    assert [row[2] for row in seen] == [worker0[0], worker0[2]]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_shared_tensors_and_memory_maps_are_not_copied_into_the_workers(T, tmp_path, num_workers):
    path = tmp_path / "data.npy"
    np.save(path, np.arange(6.0))

    class Mapped(T.utils.data.Dataset):
        def __init__(self):
            self.data = np.load(path, mmap_mode="r")
            self.hits = T.zeros(3, dtype=T.int64).share_memory_()
            self.private = T.zeros(3, dtype=T.int64)

        def __len__(self):
            return 3

        def __getitem__(self, index):
            self.hits[index] += 1
            self.private[index] += 1
            return T.tensor([self.data is dataset.data, self.data[2 * index]])  # (self: the worker's copy)

    dataset = Mapped()
    batches = [b.tolist() for b in T.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)]
    assert batches == [[1, 0], [1, 2], [1, 4]]
    assert dataset.hits.tolist() == [1, 1, 1] and dataset.private.tolist() == [0, 0, 0]


def test_the_bulk_of_the_data_is_shared_with_the_workers_not_copied():
    """(chainrule's workers, played in this process: a copy of MNIST for every worker every pass would take
    longer than the pass)"""
    import autograd as T

    class Big(T.utils.data.Dataset):
        def __init__(self):
            self.images = T.zeros(300, 1000)  # 1.2 MB: shared
            self.labels = T.zeros(300, dtype=T.int64)  # small: copied

        def __len__(self):
            return 2

        def __getitem__(self, index):
            return T.tensor([self.images is dataset.images, self.labels is dataset.labels])

    dataset = Big()
    assert [b.tolist() for b in T.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)] == [[1, 0]] * 2


def test_persistent_workers_of_a_stream_make_the_batches_sent_ahead_before_the_next_pass(T):
    class Stream(T.utils.data.IterableDataset):
        def __iter__(self):
            info = T.utils.data.get_worker_info()
            for k in range(6):
                yield T.tensor([info.id, k, T.randint(0, 1000, ()).item()])

    def passes(take):
        T.manual_seed(0)
        loader = T.utils.data.DataLoader(Stream(), num_workers=2, persistent_workers=True)
        seen = []
        for _ in range(2):
            for k, batch in enumerate(loader):
                seen.append(batch[0].tolist())
                if k + 1 == take:
                    break
        return seen

    whole = passes(12)[:12]
    draws = {w: [row[2] for row in whole if row[0] == w] for w in (0, 1)}
    # 1 batch taken, 1 + 2 * 2 sent: worker 0 made 3 batches of its stream, worker 1 made 2
    assert passes(1) == [[0, 0, draws[0][0]], [0, 0, draws[0][3]]]
    assert passes(2) == [[0, 0, draws[0][0]], [1, 0, draws[1][0]], [0, 0, draws[0][3]], [1, 0, draws[1][3]]]
