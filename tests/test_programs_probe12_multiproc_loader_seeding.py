# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs that use processes and DataLoader workers, as their authors write them in PyTorch (see
tests/pytorch_programs.py), run on chainrule and on PyTorch from the same seeds and compared. DataLoader workers
(played in the main process here, with PyTorch's seeds): random augmentations drawn in ``__getitem__`` from
``torch.rand``, ``np.random`` and ``random`` with 2 to 4 workers, shuffled, two epochs, and with a loader generator;
a dataset holding its own ``np.random.default_rng``/``RandomState`` (or torch Generator) and a cache (each worker has
its own copy: PyTorch's workers repeat each other's draws, and the main process's cache stays empty); PyTorch's
reproducibility recipe (``seed_worker`` seeding NumPy and ``random`` from ``torch.initial_seed()``, ``generator=``),
timm's ``_worker_init`` and Detectron2's ``worker_init_reset_seed`` (``torch.manual_seed`` inside the worker); a
training loop with dropout whose main generator must stay in step with PyTorch's through the loader's draws;
per-index seeding, unbatched and by ``__getitems__``."""

import random

import numpy as np
import pytest

from .probe12_multiproc_common import images
from .pytorch_programs import OURS, run_both, same_dropout_masks

# (PyTorch's warning that this machine has fewer cores than the loaders' workers)
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


# ----------------------------------------------------------------------------------------------
# DataLoader workers
# ----------------------------------------------------------------------------------------------


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
