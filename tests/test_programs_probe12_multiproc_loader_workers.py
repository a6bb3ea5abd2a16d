# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs that use processes and DataLoader workers, as their authors write them in PyTorch (see
tests/pytorch_programs.py), run on chainrule and on PyTorch from the same seeds and compared. DataLoader workers
(played in the main process here, with PyTorch's seeds): an IterableDataset of shards split by ``get_worker_info()``
in ``__iter__`` and by ``worker_init_fn``; ``persistent_workers`` across epochs (the workers keep their copies: an
attribute set on the main dataset between epochs does not reach them); a padding ``collate_fn`` run in the workers;
``KeyError``/``ValueError`` raised in a worker; training for a fixed number of steps per epoch with persistent
workers (a map-style dataset and a stream: the batches sent ahead of the ``break`` are made by the workers before the
next epoch); and a cache in shared-memory tensors filled by the workers beside data in a memory-mapped file."""

import itertools
import math

import numpy as np
import pytest

from .probe12_multiproc_common import images
from .pytorch_programs import run_both

# (PyTorch's warning that this machine has fewer cores than the loaders' workers)
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def sharded_stream(m, how, num_workers):
    """A stream of 'files' (arrays of samples), each worker reading its own files, with noise drawn per sample."""
    torch = m.torch
    files = [np.arange(10 * k, 10 * k + 3 + k % 3, dtype=np.float32) for k in range(7)]

    class ShardStream(m.data.IterableDataset):
        def __init__(self, files):
            super().__init__()
            self.files = files

        def __iter__(self):
            files = self.files
            if how == "iter":
                worker_info = m.data.get_worker_info()
                if worker_info is not None:
                    files = itertools.islice(files, worker_info.id, None, worker_info.num_workers)
            for f in files:
                for x in f:
                    yield torch.tensor(x) + 0.01 * torch.randn(()), int(x) % 3

    def worker_init_fn(worker_id):
        worker_info = m.data.get_worker_info()
        dataset = worker_info.dataset  # the dataset copy in this worker process
        per_worker = int(math.ceil(len(dataset.files) / float(worker_info.num_workers)))
        dataset.files = dataset.files[worker_id * per_worker:(worker_id + 1) * per_worker]

    torch.manual_seed(3)
    loader = m.data.DataLoader(ShardStream(files), batch_size=4, num_workers=num_workers,
                               worker_init_fn=worker_init_fn if how == "init" else None)
    return [batch for epoch in range(2) for batch in loader]


@pytest.mark.parametrize("how, num_workers", [("iter", 2), ("iter", 3), ("init", 2), ("init", 4)])
def test_an_iterable_dataset_sharded_among_workers(how, num_workers):
    ours, _ = run_both(sharded_stream, how, num_workers, rtol=1e-6, atol=1e-6)
    values = np.concatenate([xb for xb, yb in ours[:len(ours) // 2]])
    expected = np.concatenate([np.arange(10 * k, 10 * k + 3 + k % 3) for k in range(7)])
    np.testing.assert_allclose(np.sort(values), np.sort(expected), atol=0.1)  # every sample once per epoch


def epoch_aware(m, persistent_workers):
    """Setting dataset.epoch in the main process between epochs: persistent workers keep their own copies (the
    PyTorch pitfall), fresh workers copy the dataset anew each epoch."""
    torch = m.torch

    class EpochAware(m.data.Dataset):
        def __init__(self):
            self.epoch = 0
            self.calls = 0

        def __len__(self):
            return 5

        def __getitem__(self, idx):
            self.calls += 1
            return torch.tensor([idx, self.epoch, self.calls]) + torch.rand(3)

    torch.manual_seed(0)
    dataset = EpochAware()
    loader = m.data.DataLoader(dataset, batch_size=2, shuffle=True, num_workers=2,
                               persistent_workers=persistent_workers)
    out = []
    for epoch in range(3):
        dataset.epoch = epoch
        out.append(torch.cat([b for b in loader]))
    return out, dataset.calls, torch.rand(2)


@pytest.mark.parametrize("persistent", [True, False])
def test_persistent_workers_across_epochs(persistent):
    ours, _ = run_both(epoch_aware, persistent, rtol=1e-6, atol=1e-6)
    epochs = ours[0]
    assert ours[1] == 0
    seen_epochs = [np.floor(e[:, 1]).tolist() for e in epochs]
    if persistent:
        assert seen_epochs == [[0] * 5] * 3
        assert np.floor(epochs[2][:, 2]).max() == 9  # worker 0 made 3 samples per epoch, 9 by the third
    else:
        assert seen_epochs == [[0] * 5, [1] * 5, [2] * 5]


def padded_batches(m, num_workers):
    """Variable-length sequences (length drawn in __getitem__) padded by a collate_fn that runs in the worker."""
    torch, nn = m.torch, m.nn

    class Sequences(m.data.Dataset):
        def __len__(self):
            return 9

        def __getitem__(self, idx):
            length = int(torch.randint(1, 6, ()))
            return torch.randn(length, 2), idx

    def collate_fn(batch):
        seqs, idxs = zip(*batch)
        lengths = torch.tensor([len(s) for s in seqs])
        padded = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        info = m.data.get_worker_info()
        return padded, lengths, torch.tensor(idxs), -1 if info is None else info.id

    torch.manual_seed(0)
    loader = m.data.DataLoader(Sequences(), batch_size=3, shuffle=True, num_workers=num_workers,
                               collate_fn=collate_fn)
    gru = nn.GRU(2, 3, batch_first=True)
    out = []
    for padded, lengths, idxs, worker in loader:
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        _, h = gru(packed)
        out.append((padded, lengths, idxs, worker, h))
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_padding_collate_fn_runs_in_the_workers(num_workers):
    ours, _ = run_both(padded_batches, num_workers, rtol=1e-5, atol=1e-6)
    assert [b[3] for b in ours] == ([-1, -1, -1] if num_workers == 0 else [0, 1, 0])
    assert sorted(np.concatenate([b[2] for b in ours]).tolist()) == list(range(9))


def failing_worker(m):
    torch = m.torch
    labels = {0: "cat", 1: "dog", 2: "cat", 4: "bird"}

    class Labelled(m.data.Dataset):
        classes = {"cat": 0, "dog": 1, "bird": 2}

        def __len__(self):
            return 6

        def __getitem__(self, idx):
            if idx == 5:
                raise ValueError(f"image {idx} is corrupt")
            return torch.tensor(float(idx)), self.classes[labels[idx]]

    it = iter(m.data.DataLoader(Labelled(), batch_size=2, num_workers=2))
    out = []
    while True:
        try:
            xb, yb = next(it)
            out.append((xb, yb))
        except StopIteration:
            break
        except (KeyError, ValueError) as e:
            message = str(e) if isinstance(e, ValueError) else e.args[0]
            lines = message.splitlines()
            out.append((type(e).__name__, lines[0], lines[1], lines[-1]))
    return out


def test_errors_raised_in_a_worker():
    ours, _ = run_both(failing_worker)
    assert ours[1] == ("KeyError", "Caught KeyError in DataLoader worker process 1.",
                       "Original Traceback (most recent call last):", "KeyError: 3")
    assert ours[2] == ("ValueError", "Caught ValueError in DataLoader worker process 0.",
                       "Original Traceback (most recent call last):", "ValueError: image 5 is corrupt")


def steps_per_epoch(m, persistent_workers, prefetch_factor):
    """A training loop that stops each epoch after a fixed number of steps (``if i == steps: break``), with
    random augmentation in persistent workers: PyTorch's workers made the batches sent ahead of the break,
    so the next epoch's augmentations go on from there."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = images(n=30)

    class Augmented(m.data.Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, idx):
            img = torch.from_numpy(X[idx])
            if torch.rand(1).item() < 0.5:
                img = img.flip(-1)
            return img + 0.05 * torch.randn_like(img), int(y[idx])

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loader = m.data.DataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=2,
                               persistent_workers=persistent_workers, prefetch_factor=prefetch_factor)
    losses = []
    for epoch in range(3):
        for i, (xb, yb) in enumerate(loader):
            if i == 2:
                break
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, model[1].weight


@pytest.mark.parametrize("persistent, prefetch_factor", [(True, None), (True, 3), (False, None)])
def test_steps_per_epoch_with_persistent_workers(persistent, prefetch_factor):
    ours, _ = run_both(steps_per_epoch, persistent, prefetch_factor, rtol=1e-5, atol=1e-6)
    assert len(ours[0]) == 6


def shared_cache(m, persistent_workers):
    """A dataset that caches its expensive samples in shared-memory tensors, so that every worker (and the main
    process, and the next epoch's workers) sees what any worker has filled in; and data held in a memory map."""
    torch = m.torch
    data = np.lib.format.open_memmap(shared_cache.path, mode="w+", dtype=np.float32, shape=(8, 3))
    data[:] = np.arange(24, dtype=np.float32).reshape(8, 3)
    data.flush()

    class Cached(m.data.Dataset):
        def __init__(self):
            self.data = np.load(shared_cache.path, mmap_mode="r")
            self.cache = torch.zeros(8, 3).share_memory_()
            self.filled = torch.zeros(8, dtype=torch.bool).share_memory_()
            self.misses = torch.zeros(1, dtype=torch.int64).share_memory_()

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            if not self.filled[idx]:
                self.misses += 1
                self.cache[idx] = torch.from_numpy(np.array(self.data[idx])) * 2 + torch.rand(3)
                self.filled[idx] = True
            return self.cache[idx].clone()

    torch.manual_seed(0)
    dataset = Cached()
    loader = m.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2,
                               persistent_workers=persistent_workers)
    epochs = [torch.cat(list(loader)) for _ in range(2)]
    return epochs, dataset.misses.item(), dataset.filled.all().item(), dataset.cache


@pytest.mark.parametrize("persistent", [False, True])
def test_a_shared_memory_cache_filled_by_workers(persistent, tmp_path):
    shared_cache.path = str(tmp_path / "data.npy")
    ours, _ = run_both(shared_cache, persistent, rtol=1e-6)
    assert ours[1:3] == (8, True)  # each sample computed once, by one worker or another, seen by all
    np.testing.assert_array_equal(np.sort(ours[0][1], axis=0), np.sort(ours[3], axis=0))


def stream_steps_per_epoch(m, prefetch_factor):
    """An IterableDataset of noisy samples, sharded by get_worker_info, read by persistent workers for a fixed
    number of steps per epoch: the batches sent ahead are made (and dropped) before the next epoch."""
    torch = m.torch

    class NoisyStream(m.data.IterableDataset):
        def __iter__(self):
            info = m.data.get_worker_info()
            for i in range(info.id, 40, info.num_workers):
                yield torch.tensor(float(i)) + torch.rand(()), i % 2

    torch.manual_seed(0)
    loader = m.data.DataLoader(NoisyStream(), batch_size=3, num_workers=3, persistent_workers=True,
                               prefetch_factor=prefetch_factor)
    out = []
    for epoch in range(3):
        for step, (x, y) in enumerate(loader):
            out.append(x)
            if step == 1 + epoch:
                break
    return out


@pytest.mark.parametrize("prefetch_factor", [None, 1])
def test_a_stream_read_for_some_steps_per_epoch_by_persistent_workers(prefetch_factor):
    ours, _ = run_both(stream_steps_per_epoch, prefetch_factor, rtol=1e-6)
    assert len(ours) == 2 + 3 + 4
    np.testing.assert_array_equal(np.floor(ours[0]), [0, 3, 6])
