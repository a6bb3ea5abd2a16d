# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Programs that use processes and DataLoader workers, as their authors write them in PyTorch (see
tests/pytorch_programs.py), run on chainrule and on PyTorch from the same seeds and compared.

DataLoader workers (played in the main process here, with PyTorch's seeds): random augmentations drawn
in ``__getitem__`` from ``torch.rand``, ``np.random`` and ``random`` with 2 to 4 workers, shuffled, two
epochs; a dataset holding its own ``np.random.default_rng``/``RandomState`` and a cache (each worker has
its own copy: PyTorch's workers repeat each other's draws, and the main process's cache stays empty);
PyTorch's reproducibility recipe (``seed_worker`` seeding NumPy and ``random`` from ``torch.initial_seed()``,
``generator=``), timm's ``_worker_init`` and Detectron2's ``worker_init_reset_seed`` (``torch.manual_seed``
inside the worker); an IterableDataset of shards split by ``get_worker_info()`` in ``__iter__`` and by
``worker_init_fn``; ``persistent_workers`` across epochs (the workers keep their copies: an attribute set
on the main dataset between epochs does not reach them); a padding ``collate_fn`` run in the workers;
``KeyError``/``ValueError`` raised in a worker; a training loop with dropout whose main generator must
stay in step with PyTorch's through the loader's draws; training for a fixed number of steps per epoch with
persistent workers (a map-style dataset and a stream: the batches sent ahead of the ``break`` are made by
the workers before the next epoch); and a cache in shared-memory tensors filled by the workers beside data
in a memory-mapped file.

Processes (autograd.multiprocessing): pytorch/examples' mnist_hogwild shrunk (fork and spawn, the model and
the dataset sent to the children); A3C with a SharedAdam whose state is ``share_memory_()``'d and a shared
global model that workers update through ``ensure_shared_grads``; a producer and a consumer of tensors,
dicts of tensors and Parameters through ``mp.Queue``; ``Pool.map`` over tensors; ``spawn`` with an error in
one rank; and ``Event``/``Value``/``Array`` with a tensor on the Array's
memory (``torch.frombuffer``).
Processes run one after another, so the numbers are deterministic and compared with PyTorch's. The
functions children run are at module level, so that a spawned child can import them."""

import itertools
import math
import random
import sys

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch, run_both, same_dropout_masks

# (PyTorch's warning that this machine has fewer cores than the loaders' workers)
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

# ----------------------------------------------------------------------------------------------
# DataLoader workers
# ----------------------------------------------------------------------------------------------


def images(n=12, side=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, side, side)).astype(np.float32), rng.integers(0, 3, n)


def augmented_epochs(m, num_workers, generator_seed=None, epochs=2):
    """A dataset whose __getitem__ crops, flips and jitters at random from the three streams a worker has."""
    torch = m.torch
    X, y = images()

    class Augmented(m.data.Dataset):
        def __init__(self, X, y):
            self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)

        def __len__(self):
            return len(self.X)

        def __getitem__(self, idx):
            img = self.X[idx]
            top, left = torch.randint(0, 3, (2,)).tolist()  # random crop 4x4
            img = img[:, top:top + 4, left:left + 4]
            if torch.rand(1) < 0.5:
                img = torch.flip(img, dims=[2])
            img = img * (1 + 0.1 * np.random.randn())  # brightness
            img = img + random.gauss(0, 0.05)
            return img, self.y[idx]

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    generator = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
    loader = m.data.DataLoader(Augmented(X, y), batch_size=4, shuffle=True, num_workers=num_workers,
                               generator=generator)
    out = []
    for epoch in range(epochs):
        for xb, yb in loader:
            out.append((xb.clone(), yb.clone()))
    return out, torch.rand(3), np.random.rand(), random.random()


@pytest.mark.parametrize("num_workers", [2, 3, 4])
def test_random_augmentations_in_workers(num_workers):
    ours, theirs = run_both(augmented_epochs, num_workers, rtol=1e-6, atol=1e-7)
    assert len(ours[0]) == 6
    # each batch's samples differ from the no-worker draws (the workers draw from their own streams)
    without = augmented_epochs(OURS, 0)[0]
    assert not np.allclose(ours[0][0][0], without[0][0].numpy())


def test_random_augmentations_with_a_loader_generator():
    ours, _ = run_both(augmented_epochs, 2, 1234, rtol=1e-6, atol=1e-7)
    again, _ = run_both(augmented_epochs, 2, 1234, compare=False)
    for a, b in zip(ours[0], again[0]):
        np.testing.assert_array_equal(a[0], b[0])


def dataset_with_its_own_rng(m, num_workers, persistent_workers=False):
    """A dataset that keeps a NumPy generator and a cache: each worker has its own copy of both (in PyTorch's
    forked workers, so the workers repeat each other's draws, and the main process's cache stays empty)."""
    torch = m.torch

    class Noisy(m.data.Dataset):
        def __init__(self):
            self.rng = np.random.default_rng(0)
            self.legacy = np.random.RandomState(1)
            self.cache = {}

        def __len__(self):
            return 6

        def __getitem__(self, idx):
            if idx not in self.cache:
                self.cache[idx] = float(idx)
            return torch.tensor([self.cache[idx], self.rng.random(), self.legacy.rand(), len(self.cache)])

    dataset = Noisy()
    loader = m.data.DataLoader(dataset, batch_size=2, num_workers=num_workers,
                               persistent_workers=persistent_workers)
    epochs = [torch.cat(list(loader)) for _ in range(2)]
    return epochs, len(dataset.cache), dataset.rng.random()


@pytest.mark.parametrize("num_workers, persistent", [(2, False), (3, True)])
def test_a_datasets_own_generator_and_cache_are_copied_into_each_worker(num_workers, persistent):
    ours, _ = run_both(dataset_with_its_own_rng, num_workers, persistent)
    first, second = ours[0]
    # worker 0 makes batches 0 and 2 with its own copy of the rng: its first draws are worker 1's first draws
    np.testing.assert_array_equal(first[:2, 1:3], first[2:4, 1:3])
    assert ours[1] == 0
    assert ours[2] == np.random.default_rng(0).random()
    if persistent:
        assert not np.array_equal(first[:, 1:], second[:, 1:])
    else:
        np.testing.assert_array_equal(first, second)


def test_a_datasets_own_torch_generator_is_copied_into_each_worker():
    def program(m):
        torch = m.torch

        class Noisy(m.data.Dataset):
            def __init__(self):
                self.g = torch.Generator().manual_seed(0)
                self.offset = torch.randn(2, generator=self.g)  # (the generator has drawn before the workers)

            def __len__(self):
                return 4

            def __getitem__(self, idx):
                return torch.rand(2, generator=self.g) + self.offset

        return list(m.data.DataLoader(Noisy(), batch_size=1, num_workers=2))

    run_both(program)


def reproducible_loader(m, worker_init):
    torch = m.torch

    class Draws(m.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, idx):
            return torch.tensor([idx, np.random.randint(0, 1000), random.randint(0, 1000), torch.randint(0, 1000, ())])

    def seed_worker(worker_id):
        worker_seed = torch.initial_seed() % 2**32
        np.random.seed(worker_seed)
        random.seed(worker_seed)

    def timm_worker_init(worker_id, worker_seeding="all"):
        worker_info = m.data.get_worker_info()
        assert worker_info.id == worker_id
        if worker_seeding == "all":
            np.random.seed(worker_info.seed % (2 ** 32 - 1))

    def detectron2_worker_init_reset_seed(worker_id):
        initial_seed = torch.initial_seed() % 2**31
        seed = initial_seed + worker_id
        np.random.seed(seed)
        torch.manual_seed(seed)
        random.seed(seed)

    init = {"pytorch": seed_worker, "timm": timm_worker_init, "detectron2": detectron2_worker_init_reset_seed}
    g = torch.Generator()
    g.manual_seed(0)
    loader = m.data.DataLoader(Draws(), batch_size=2, shuffle=True, num_workers=3,
                               worker_init_fn=init[worker_init], generator=g)
    return [batch for epoch in range(2) for batch in loader]


@pytest.mark.parametrize("worker_init", ["pytorch", "timm", "detectron2"])
def test_worker_init_fn_seeding_recipes(worker_init):
    ours, _ = run_both(reproducible_loader, worker_init)
    again = reproducible_loader(OURS, worker_init)
    for a, b in zip(ours, again):
        np.testing.assert_array_equal(a, b.numpy())
    # (no seeding in the loop: the workers' streams come from the loader's generator alone)
    assert sorted(np.concatenate(ours[:4])[:, 0].tolist()) == list(range(8))


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


def training_with_dropout(m, num_workers, epochs=2):
    """A training loop whose model draws dropout masks from the main generator between batches, while the
    loader draws its base seed and shuffles from the same generator every epoch."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = images(n=20)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    class Jitter(m.data.Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, idx):
            return torch.from_numpy(X[idx]) + 0.1 * torch.randn(1, 6, 6), int(y[idx])

    loader = m.data.DataLoader(Jitter(), batch_size=6, shuffle=True, num_workers=num_workers)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for epoch in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, [p.detach().clone() for p in model.parameters()], torch.rand(2)


@pytest.mark.skipif(not same_dropout_masks(), reason="PyTorch's dropout masks are not chainrule's here")
@pytest.mark.parametrize("num_workers", [0, 2, 3])
def test_training_loop_with_dropout_and_workers(num_workers):
    ours, _ = run_both(training_with_dropout, num_workers, rtol=1e-4, atol=1e-5)
    assert len(ours[0]) == 8 and ours[0][-1] < ours[0][0]


def per_index_seeding(m):
    """Deterministic per-sample augmentation (torch.manual_seed(seed + idx) in __getitem__), a map-style dataset
    read without auto-batching and one with __getitems__, in workers."""
    torch = m.torch

    class PerIndex(m.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, idx):
            torch.manual_seed(100 + idx)
            return torch.rand(2) + idx

    class Batched(m.data.Dataset):
        def __len__(self):
            return 7

        def __getitems__(self, indices):
            return [(torch.tensor(i), torch.rand(())) for i in indices]

    torch.manual_seed(0)
    unbatched = list(m.data.DataLoader(PerIndex(), batch_size=None, shuffle=True, num_workers=2))
    batched = list(m.data.DataLoader(Batched(), batch_size=3, num_workers=2))
    sampler = m.data.WeightedRandomSampler([0.1, 0.5, 1.0, 2.0, 0.2], num_samples=8, replacement=True)
    weighted = list(m.data.DataLoader(PerIndex(), batch_size=2, sampler=sampler, num_workers=3))
    return unbatched, batched, weighted, torch.rand(2)


def test_per_index_seeding_unbatched_and_getitems_in_workers():
    ours, _ = run_both(per_index_seeding)
    for sample in ours[0]:
        idx = int(sample[0])
        expected = OURS.torch.manual_seed(100 + idx) and OURS.torch.rand(2).numpy() + idx
        np.testing.assert_allclose(sample, expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Processes: autograd.multiprocessing as torch.multiprocessing
# ----------------------------------------------------------------------------------------------

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fork, and shared memory by file descriptors")


def modules(name):
    """The modules a child process's program is written against: chainrule's, or PyTorch's."""
    return OURS if name == "autograd" else pytorch()


def multiprocessing_of(m):
    if m is OURS:
        import autograd.multiprocessing as mp
    else:
        import torch.multiprocessing as mp
    return mp


def hogwild_net_class(m):
    """pytorch/examples' mnist_hogwild Net, shrunk to 10x10 images and 3 classes."""
    nn, F = m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.conv2 = nn.Conv2d(4, 8, kernel_size=3)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 8)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    return Net


HogwildNet = hogwild_net_class(OURS)  # (at module level: a spawned child unpickles the model by its class's name)
HogwildNet.__qualname__ = "HogwildNet"


def hogwild_train(rank, name, model, dataset, seed, epochs):
    """mnist_hogwild's train(): its own loader and optimizer on the shared model."""
    m = modules(name)
    torch, F = m.torch, m.F
    torch.manual_seed(seed + rank)
    train_loader = m.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=0)
    optimizer = m.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    for epoch in range(1, epochs + 1):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()


def hogwild(name, method, num_processes=2):
    m = modules(name)
    torch, F = m.torch, m.F
    mp = multiprocessing_of(m)
    torch.manual_seed(1)
    model = HogwildNet() if m is OURS else hogwild_net_class(m)()
    model.share_memory()  # gradients are allocated lazily, so they are not shared here
    X, y = images(n=24, side=10)
    dataset = m.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    context = mp.get_context(method)
    for rank in range(num_processes):  # (one after another, for numbers that repeat)
        p = context.Process(target=hogwild_train, args=(rank, name, model, dataset, 1, 2))
        p.start()
        p.join()
        assert p.exitcode == 0
    model.eval()
    with torch.no_grad():
        output = model(dataset.tensors[0])
        test_loss = F.nll_loss(output, dataset.tensors[1], reduction="sum").item()
        correct = output.max(1)[1].eq(dataset.tensors[1]).sum().item()
    return [p.detach().clone() for p in model.parameters()], test_loss, correct


@posix_only
@pytest.mark.skipif(not same_dropout_masks(), reason="PyTorch's dropout masks are not chainrule's here")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_mnist_hogwild(method):
    ours = hogwild("autograd", method)
    # the same training in this process on an unshared model: what the children must have left in the parent's
    OURS.torch.manual_seed(1)
    model = HogwildNet()
    X, y = images(n=24, side=10)
    dataset = OURS.data.TensorDataset(OURS.torch.from_numpy(X), OURS.torch.from_numpy(y))
    for rank in range(2):
        hogwild_train(rank, "autograd", model, dataset, 1, 2)
    for got, expected in zip(ours[0], model.parameters()):
        np.testing.assert_allclose(got.numpy(), expected.detach().numpy(), rtol=1e-6, atol=1e-7)
    if pytorch() is not None:
        theirs = hogwild("torch", "fork")  # (a spawned PyTorch child takes seconds to import torch)
        for got, expected in zip(ours[0], theirs[0]):
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
        assert ours[1:] == pytest.approx(theirs[1:], rel=1e-4)


class ChainEnv:
    """A toy environment for A3C: walk a chain of 5 cells, reward 1 at the right end (the state: a one-hot of
    the cell, with NumPy noise from the worker's own seed)."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.length = 5

    def observation(self):
        obs = np.zeros(self.length, dtype=np.float32)
        obs[self.position] = 1
        return obs + 0.01 * self.rng.randn(self.length).astype(np.float32)

    def reset(self):
        self.position, self.t = 0, 0
        return self.observation()

    def step(self, action):
        self.position = max(0, min(self.length - 1, self.position + (1 if action == 1 else -1)))
        self.t += 1
        done = self.position == self.length - 1 or self.t >= 12
        return self.observation(), float(self.position == self.length - 1), done


def a3c_classes(m):
    """ikostrikov/pytorch-a3c's ActorCritic (an MLP here) and SharedAdam (its state in shared memory); the
    SharedAdam steps by its own code (custom_step) or by Adam's."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ActorCritic(nn.Module):
        def __init__(self, num_inputs, num_actions):
            super(ActorCritic, self).__init__()
            self.fc = nn.Linear(num_inputs, 16)
            self.critic_linear = nn.Linear(16, 1)
            self.actor_linear = nn.Linear(16, num_actions)

        def forward(self, inputs):
            x = torch.tanh(self.fc(inputs))
            return self.critic_linear(x), self.actor_linear(x)

    class SharedAdam(optim.Adam):
        """Implements Adam algorithm with shared states."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, custom_step=True):
            super(SharedAdam, self).__init__(params, lr, betas, eps, weight_decay)
            self.custom_step = custom_step
            for group in self.param_groups:
                for p in group['params']:
                    state = self.state[p]
                    state['step'] = torch.zeros(()) if custom_step else torch.tensor(0.0)
                    state['exp_avg'] = p.data.new().resize_as_(p.data).zero_()
                    state['exp_avg_sq'] = p.data.new().resize_as_(p.data).zero_()

        def share_memory(self):
            for group in self.param_groups:
                for p in group['params']:
                    state = self.state[p]
                    state['step'].share_memory_()
                    state['exp_avg'].share_memory_()
                    state['exp_avg_sq'].share_memory_()

        def step(self, closure=None):
            if not self.custom_step:
                return super(SharedAdam, self).step(closure)
            loss = None
            if closure is not None:
                loss = closure()
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    state = self.state[p]
                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    beta1, beta2 = group['betas']
                    state['step'] += 1
                    if group['weight_decay'] != 0:
                        grad = grad.add(p.data, alpha=group['weight_decay'])
                    # Decay the first and second moment running average coefficient
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denom = exp_avg_sq.sqrt().add_(group['eps'])
                    bias_correction1 = 1 - beta1 ** state['step'].item()
                    bias_correction2 = 1 - beta2 ** state['step'].item()
                    step_size = group['lr'] * math.sqrt(bias_correction2) / bias_correction1
                    p.data.addcdiv_(exp_avg, denom, value=-step_size)
            return loss

    return ActorCritic, SharedAdam


ActorCritic, SharedAdam = a3c_classes(OURS)  # (module level: a spawned child unpickles them by name)
ActorCritic.__qualname__, SharedAdam.__qualname__ = "ActorCritic", "SharedAdam"


def ensure_shared_grads(model, shared_model):
    for param, shared_param in zip(model.parameters(), shared_model.parameters()):
        if shared_param.grad is not None:
            return
        shared_param._grad = param.grad


def a3c_train(rank, name, shared_model, counter, lock, optimizer, seed=1, episodes=3, num_steps=6):
    """ikostrikov/pytorch-a3c's train(): a local model synchronised with the shared one, n-step returns with
    GAE, and the local gradients handed to the shared model for the shared optimizer's step."""
    m = modules(name)
    torch, F = m.torch, m.F
    torch.manual_seed(seed + rank)
    env = ChainEnv(seed + rank)
    model = type(shared_model)(5, 2)
    model.train()
    state = torch.from_numpy(env.reset())
    done = True
    gamma, gae_lambda, entropy_coef, value_loss_coef, max_grad_norm = 0.99, 1.0, 0.01, 0.5, 50
    for episode in range(episodes):
        model.load_state_dict(shared_model.state_dict())  # Sync with the shared model
        values, log_probs, rewards, entropies = [], [], [], []
        for step in range(num_steps):
            value, logit = model(state.unsqueeze(0))
            prob = F.softmax(logit, dim=-1)
            log_prob = F.log_softmax(logit, dim=-1)
            entropy = -(log_prob * prob).sum(1, keepdim=True)
            entropies.append(entropy)
            action = prob.multinomial(num_samples=1).detach()
            log_prob = log_prob.gather(1, action)
            state, reward, done = env.step(action.numpy()[0, 0])
            with lock:
                counter.value += 1
            if done:
                state = env.reset()
            state = torch.from_numpy(state)
            values.append(value)
            log_probs.append(log_prob)
            rewards.append(reward)
            if done:
                break
        R = torch.zeros(1, 1)
        if not done:
            value, _ = model(state.unsqueeze(0))
            R = value.detach()
        values.append(R)
        policy_loss = 0
        value_loss = 0
        gae = torch.zeros(1, 1)
        for i in reversed(range(len(rewards))):
            R = gamma * R + rewards[i]
            advantage = R - values[i]
            value_loss = value_loss + 0.5 * advantage.pow(2)
            # Generalized Advantage Estimation
            delta_t = rewards[i] + gamma * values[i + 1] - values[i]
            gae = gae * gamma * gae_lambda + delta_t
            policy_loss = policy_loss - log_probs[i] * gae.detach() - entropy_coef * entropies[i]
        optimizer.zero_grad()
        (policy_loss + value_loss_coef * value_loss).backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        ensure_shared_grads(model, shared_model)
        optimizer.step()


def a3c(name, method, custom_step, num_processes=2):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    torch.manual_seed(1)
    classes = (ActorCritic, SharedAdam) if m is OURS else a3c_classes(m)
    shared_model = classes[0](5, 2)
    shared_model.share_memory()
    optimizer = classes[1](shared_model.parameters(), lr=0.01, custom_step=custom_step)
    optimizer.share_memory()
    context = mp.get_context(method)
    counter = context.Value('i', 0)
    lock = context.Lock()
    for rank in range(num_processes):
        p = context.Process(target=a3c_train, args=(rank, name, shared_model, counter, lock, optimizer))
        p.start()
        p.join()
        assert p.exitcode == 0
    state = [optimizer.state[p] for p in shared_model.parameters()]
    return ([p.detach().clone() for p in shared_model.parameters()], counter.value,
            [s['step'].item() for s in state], [s['exp_avg'].clone() for s in state],
            [s['exp_avg_sq'].clone() for s in state], [s['exp_avg'].is_shared() for s in state])


@posix_only  # (not spawn: a spawned worker gets the optimizer pickled, which keeps its defaults, state and groups only,
# as PyTorch's, so SharedAdam's own custom_step is not there, in either library: test_ported_optim_rest)
@pytest.mark.parametrize("method, custom_step", [("fork", True), ("fork", False)])
def test_a3c_with_a_shared_adam(method, custom_step):
    ours = a3c("autograd", method, custom_step)
    assert ours[2] == [6.0] * 6  # 2 workers x 3 episodes, counted in the shared step tensors
    assert ours[5] == [True] * 6
    assert all(np.abs(s).sum() > 0 for s in ours[3])
    if pytorch() is not None:
        theirs = a3c("torch", "fork", custom_step)
        assert ours[1:3] == theirs[1:3]
        for a, b in zip(ours[0] + ours[3] + ours[4], theirs[0] + theirs[3] + theirs[4]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def producer(name, queue, results, done, seed):
    """Puts batches (a dict of tensors), a Parameter and a tensor with views made before it was sent on the
    queue; once the consumer is done, reports what the consumer wrote into them."""
    m = modules(name)
    torch = m.torch
    torch.manual_seed(seed)
    for i in range(3):
        queue.put({"x": torch.randn(4, 3), "y": torch.randint(0, 3, (4,)), "mask": torch.rand(4) > 0.5})
    weight = m.nn.Parameter(torch.randn(3, 3))
    table = torch.arange(12.0).reshape(3, 4)
    rows, columns = table[1:], table.t()
    queue.put((weight, table, rows, columns))
    queue.put(None)
    done.wait()  # (alive until the consumer has taken every tensor: a descriptor is sent by its holder)
    results.put((weight.detach().numpy().tolist(), table.numpy().tolist(), rows.numpy().tolist(),
                 columns.numpy().tolist(), weight.is_shared(), rows.is_shared()))


def producer_consumer(name, method):
    m = modules(name)
    torch, F = m.torch, m.F
    mp = multiprocessing_of(m)
    context = mp.get_context(method)
    queue, results, done = context.Queue(), context.Queue(), context.Event()
    p = context.Process(target=producer, args=(name, queue, results, done, 7))
    p.start()
    batches = []
    while True:
        item = queue.get(timeout=60)
        if item is None:
            break
        batches.append(item)
    weight, table, rows, columns = batches.pop()
    received = [(type(weight).__name__, weight.requires_grad, weight.is_shared(), table.is_shared(),
                 rows.shape, columns.stride())]
    for batch in batches:
        logits = batch["x"] @ weight
        loss = F.cross_entropy(logits[batch["mask"]], batch["y"][batch["mask"]]) if batch["mask"].any() \
            else logits.sum() * 0
        loss.backward()
    with torch.no_grad():
        weight -= 0.5 * weight.grad
    rows[0].fill_(-1)  # writes the producer's table[1]
    columns[3, 2] = 100.0  # its table[2, 3]
    done.set()
    report = results.get(timeout=60)
    p.join()
    assert p.exitcode == 0
    return batches, received, weight.detach().clone(), weight.grad, report


@posix_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_producer_consumer_through_a_queue(method):
    ours = producer_consumer("autograd", method)
    assert ours[1] == [("Parameter", True, True, True, (2, 4), (1, 4))]
    weight, table, rows, columns, weight_shared, rows_shared = ours[4]
    np.testing.assert_allclose(weight, ours[2], rtol=1e-6)  # the consumer's step, in the producer's memory
    assert table == [[0, 1, 2, 3], [-1, -1, -1, -1], [8, 9, 10, 100]]
    assert rows == table[1:] and columns == np.array(table).T.tolist()
    assert weight_shared and rows_shared
    if pytorch() is not None:
        theirs = producer_consumer("torch", "fork")
        for a, b in zip(ours[0], theirs[0]):
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
        assert ours[1] == [(n, g, s, t, tuple(r), c) for n, g, s, t, r, c in theirs[1]]
        np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-5)
        np.testing.assert_allclose(ours[3], theirs[3], rtol=1e-5)
        assert ours[4][1:] == theirs[4][1:]


def standardized_norm(x, scale):
    """What each pool worker computes: a tensor back, and a number."""
    z = (x - x.mean(0)) / x.std(0)
    return z * scale, float(x.norm())


def pool_map(name, method):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    torch.manual_seed(0)
    inputs = [torch.randn(5, 3) for _ in range(4)]
    with mp.get_context(method).Pool(2) as pool:
        results = pool.starmap(standardized_norm, [(x, k + 1) for k, x in enumerate(inputs)])
        sizes = pool.map(len, inputs)
        asynchronous = pool.apply_async(standardized_norm, (inputs[0], -1.0)).get(timeout=60)
    return results, sizes, asynchronous, [x.is_shared() for x in inputs]


@posix_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_maps_a_function_over_tensors(method):
    ours = pool_map("autograd", method)
    assert ours[1] == [5, 5, 5, 5] and ours[3] == [True] * 4
    OURS.torch.manual_seed(0)
    for (z, norm), x in zip(ours[0], [OURS.torch.randn(5, 3) for _ in range(4)]):
        assert norm == pytest.approx(float(np.linalg.norm(x.numpy())), rel=1e-6)
    if pytorch() is not None:
        theirs = pool_map("torch", "fork")
        for a, b in zip(ours[0] + [ours[2]], theirs[0] + [theirs[2]]):
            np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), rtol=1e-5, atol=1e-6)
            assert a[1] == pytest.approx(b[1], rel=1e-6)
        assert ours[3] == theirs[3]


def run_rank(rank, name, world_size, table, fail_rank):
    """A DDP-style worker: its row of a shared table, and a missing shard in one rank."""
    m = modules(name)
    torch = m.torch
    torch.manual_seed(rank)
    table[rank] = torch.randn(3) + rank
    shards = {r: f"shard-{r}" for r in range(world_size) if r != fail_rank}
    print(f"rank {rank} of {world_size} reads {shards[rank]}")


def spawn_with_a_failing_rank(name, start_method):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    table = torch.zeros(3, 3).share_memory_()
    try:
        if start_method == "spawn":
            mp.spawn(run_rank, args=(name, 3, table, 1), nprocs=3, join=True)
        else:
            context = mp.start_processes(run_rank, args=(name, 3, table, 1), nprocs=3, join=False,
                                         start_method=start_method)
            while not context.join():
                pass
    except mp.ProcessRaisedException as e:
        lines = str(e).splitlines()
        failure = (type(e).__name__, e.error_index, lines[:4], lines[-1], type(e).__mro__[1].__name__)
    else:
        failure = None
    # rank 1 wrote its row before it failed; the others may have been stopped before writing theirs
    table_ok = torch.equal(table[2], torch.zeros(3)) or torch.allclose(table[2], (torch.manual_seed(2) and
                                                                                  torch.randn(3)) + 2)
    torch.manual_seed(1)
    return failure, table[1].clone(), torch.randn(3) + 1, table_ok


@posix_only
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_spawn_with_an_error_in_one_rank(start_method):
    ours = spawn_with_a_failing_rank("autograd", start_method)
    header = ["", "", "-- Process 1 terminated with the following error:", "Traceback (most recent call last):"]
    assert ours[0] == ("ProcessRaisedException", 1, header, "KeyError: 1", "ProcessException")
    np.testing.assert_array_equal(ours[1], ours[2])
    assert ours[3]
    if pytorch() is not None:
        theirs = spawn_with_a_failing_rank("torch", "fork")
        assert ours[0] == theirs[0]
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


def accumulate(rank, name, go, done, total, shared):
    """Waits for its turn, then updates an Array through a tensor on its memory and a Value under its lock."""
    m = modules(name)
    torch = m.torch
    view = torch.frombuffer(shared.get_obj(), dtype=torch.float64)
    go.wait()
    with shared.get_lock():
        view[rank::2] = view[rank::2] * 2 + rank
    with total.get_lock():
        total.value += float(view.sum())
    done.set()


def events_values_arrays(name, method):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    context = mp.get_context(method)
    shared = context.Array('d', 6)
    total = context.Value('d', 0.0)
    view = torch.frombuffer(shared.get_obj(), dtype=torch.float64)
    view.copy_(torch.linspace(0, 1, 6, dtype=torch.float64))
    go = [context.Event() for _ in range(2)]
    done = [context.Event() for _ in range(2)]
    processes = [context.Process(target=accumulate, args=(rank, name, go[rank], done[rank], total, shared))
                 for rank in range(2)]
    for p in processes:
        p.start()
    for rank in range(2):  # one after the other
        go[rank].set()
        assert done[rank].wait(timeout=60)
    for p in processes:
        p.join()
    return view.clone(), total.value, list(shared), [p.exitcode for p in processes]


@posix_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_event_value_and_array_coordination(method):
    ours = events_values_arrays("autograd", method)
    start = np.linspace(0, 1, 6)
    after0 = start.copy()
    after0[0::2] = after0[0::2] * 2
    after1 = after0.copy()
    after1[1::2] = after1[1::2] * 2 + 1
    np.testing.assert_allclose(ours[0], after1)
    assert ours[1] == pytest.approx(after0.sum() + after1.sum())
    assert ours[2] == pytest.approx(after1.tolist()) and ours[3] == [0, 0]
    if pytorch() is not None:
        theirs = events_values_arrays("torch", "fork")
        np.testing.assert_allclose(ours[0], theirs[0])
        assert ours[1:] == theirs[1:]


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

