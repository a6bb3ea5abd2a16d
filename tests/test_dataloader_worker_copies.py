"""Each DataLoader worker has a deep copy of the dataset, as a forked worker process has: a generator, a cache
or a list the dataset holds is the worker's own, and the main process's dataset is left as it was."""

import threading

import numpy as np


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
