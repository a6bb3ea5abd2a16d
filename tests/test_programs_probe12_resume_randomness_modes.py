# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Training-infrastructure programs where exactness matters, run as tests/probe12_resume_common.py says. Randomness
and modes: BatchNorm statistics across ``train()``/``eval()``; ``fork_rng`` and ``initial_seed``; a PyTorch
checkpoint's RNG state resumed on chainrule; what Dropout draws in each mode; the global generator a DataLoader draws
from and ``DistributedSampler.set_epoch``; PyTorch's reproducibility recipe (``seed_worker``, workers, persistent
workers)."""

import io
import random

import numpy as np
import pytest

from .probe12_resume_common import SAME_MASKS
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# BatchNorm's statistics across train()/eval(), cumulative averages, Dropout in eval()
# ----------------------------------------------------------------------------------------------


def bn_modes(m):
    torch, nn = m.torch, m.nn
    Xn = np.random.default_rng(5).standard_normal((5, 8, 3)).astype(np.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3, momentum=None), nn.Dropout(0.5), nn.BatchNorm1d(3, momentum=0.3,
                                                                                            affine=False))
    outs = []
    for i in range(3):
        model.train()
        outs.append(model(torch.from_numpy(Xn[i])))
    model.eval()
    evals = [model(torch.from_numpy(Xn[3])), model(torch.from_numpy(Xn[3]))]
    stats_after_eval = [b.clone() for b in model[0].buffers()]
    model.train()
    model[0].eval()  # a frozen BatchNorm inside a training model
    outs.append(model(torch.from_numpy(Xn[4])))
    model[0].reset_running_stats()
    return {"outs": outs, "evals": evals, "stats_after_eval": stats_after_eval,
            "second": [model[2].running_mean, model[2].running_var, model[2].num_batches_tracked],
            "reset": [b for b in model[0].buffers()], "training": [mod.training for mod in model]}


def test_batchnorm_statistics_across_train_and_eval():
    ours, _ = run_both(bn_modes, compare=SAME_MASKS)
    Xn = np.random.default_rng(5).standard_normal((5, 8, 3))
    # momentum=None: a cumulative average of the three batches' means and unbiased variances
    np.testing.assert_allclose(ours["stats_after_eval"][0], Xn[:3].mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(ours["stats_after_eval"][1], Xn[:3].var(1, ddof=1).mean(0), rtol=1e-5)
    assert ours["stats_after_eval"][2] == 3
    np.testing.assert_array_equal(ours["evals"][0], ours["evals"][1])  # eval(): Dropout off, stats fixed
    assert ours["training"] == [False, True, True]


# ----------------------------------------------------------------------------------------------
# fork_rng, initial_seed, generators
# ----------------------------------------------------------------------------------------------


def rng_idioms(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(42)
    seed = torch.initial_seed()
    a = torch.rand(3)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        inside = torch.randn(2)
        inner_seed = torch.initial_seed()
    b = torch.rand(3)  # continues as if the block had drawn nothing
    after_seed = torch.initial_seed()  # fork_rng restored the state; the initial seed stays 7 (PyTorch's)
    torch.manual_seed(42)
    a2, b2 = torch.rand(3), torch.rand(3)
    with torch.random.fork_rng(enabled=False):
        torch.rand(1)  # advances the global generator
    c = torch.rand(2)
    g = torch.Generator().manual_seed(123)
    g_seed = g.initial_seed()
    state = g.get_state()
    x1 = torch.randn(4, generator=g)
    g.set_state(state)
    x2 = torch.randn(4, generator=g)
    perm = torch.randperm(6, generator=g)
    state_dtype = str(torch.get_rng_state().dtype).split(".")[-1]
    same = torch.equal(torch.get_rng_state(), torch.random.get_rng_state())
    dropout = nn.Dropout(0.5)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        d1 = dropout(torch.ones(8))
    torch.manual_seed(3)
    d2 = dropout(torch.ones(8))
    return {"seed": seed, "a": a, "inside": inside, "inner_seed": inner_seed, "b": b, "after_seed": after_seed,
            "a2": a2, "b2": b2, "c": c, "g_seed": g_seed, "x1": x1, "x2": x2, "perm": perm,
            "state_dtype": state_dtype, "same": same, "d1": d1, "d2": d2}


def test_fork_rng_and_initial_seed():
    ours, _ = run_both(rng_idioms, compare=SAME_MASKS, rtol=0, atol=0)
    assert ours["seed"] == 42 and ours["g_seed"] == 123
    np.testing.assert_array_equal(ours["b"], ours["b2"])
    np.testing.assert_array_equal(ours["x1"], ours["x2"])
    np.testing.assert_array_equal(ours["d1"], ours["d2"])
    assert ours["state_dtype"] == "uint8" and ours["same"]


def test_a_pytorch_checkpoints_rng_state_resumes_on_chainrule():
    torch = pytest.importorskip("torch")
    autograd = OURS.torch
    torch.manual_seed(5)
    torch.rand(700)  # past one regeneration of the twister
    torch.randn(3)  # an odd number of normals: one is kept for the next draw
    buf = io.BytesIO()
    torch.save({"rng": torch.get_rng_state()}, buf)
    expected = torch.cat([torch.randn(1, dtype=torch.float64), torch.rand(5, dtype=torch.float64)]).numpy()
    buf.seek(0)
    ckpt = autograd.load(buf, weights_only=True)  # chainrule reads the files torch.save writes
    autograd.set_rng_state(ckpt["rng"])
    got = autograd.cat([autograd.randn(1, dtype=autograd.float64), autograd.rand(5, dtype=autograd.float64)])
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(autograd.get_rng_state().numpy(), torch.get_rng_state().numpy())


# ----------------------------------------------------------------------------------------------
# What Dropout draws from the global generator, in each mode (an exact resume depends on it)
# ----------------------------------------------------------------------------------------------


def dropout_draws(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    x = torch.ones(2, 3, 4, 4)
    markers = []

    def mark():
        markers.append(torch.rand(1))

    F.dropout(x, p=0.0, training=True)
    mark()
    F.dropout(x, p=1.0, training=True)
    mark()
    F.dropout(x, p=0.5, training=False)
    mark()
    net = nn.Sequential(nn.Dropout(0.3), nn.Dropout2d(0.3), nn.AlphaDropout(0.2), nn.Dropout1d(0.1))
    net.eval()
    net[:2](x)  # eval(): nothing drawn
    net[2:](x[:, :, 0])
    mark()
    net.train()
    out = net[1](x)
    mark()
    out2 = net[2](x)
    mark()
    out3 = F.dropout1d(x[:, :, 0], p=0.4, training=True)
    mark()
    return {"markers": markers, "out": out, "out2": out2, "out3": out3}


def test_what_dropout_draws_in_each_mode():
    ours, _ = run_both(dropout_draws, compare=SAME_MASKS)
    OURS.torch.manual_seed(0)
    first = OURS.torch.rand(3).numpy()
    # p = 0, p = 1 and training=False draw nothing: the first three markers are the first three numbers
    np.testing.assert_array_equal(np.concatenate(ours["markers"][:3]), first)


# ----------------------------------------------------------------------------------------------
# A DataLoader without a generator draws from the global one at each epoch; DistributedSampler.set_epoch
# ----------------------------------------------------------------------------------------------


def global_generator_loader(m, epochs=3):
    torch, data = m.torch, m.data
    torch.manual_seed(11)
    dataset = data.TensorDataset(torch.arange(10.0))
    loader = data.DataLoader(dataset, batch_size=4, shuffle=True)
    orders, noise = [], []
    for epoch in range(epochs):
        order = []
        for (xb,) in loader:
            order += xb.tolist()
            noise.append(torch.randn(2))  # shares the global generator with the loader
        orders.append(order)
    sampler = data.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=5, drop_last=False)
    shards = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    resumed = data.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=5)
    resumed.set_epoch(2)
    return {"orders": orders, "noise": noise, "shards": shards, "resumed_shard": list(resumed),
            "after": torch.rand(2)}


def test_dataloader_draws_from_the_global_generator_and_set_epoch():
    ours, _ = run_both(global_generator_loader, rtol=0, atol=0)
    assert ours["resumed_shard"] == ours["shards"][2]
    assert all(sorted(o) == list(range(10)) for o in ours["orders"])


# ----------------------------------------------------------------------------------------------
# PyTorch's reproducibility recipe: seed_everything, seed_worker from torch.initial_seed(), a seeded Generator
# ----------------------------------------------------------------------------------------------


class NoisyDataset:
    """Draws from NumPy's, Python's and torch's generators in each item, as augmentation pipelines do."""

    def __init__(self, torch, n=12):
        self.torch, self.n = torch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.torch.tensor([float(i), float(np.random.rand()), random.random()]),
                self.torch.rand(2), self.torch.initial_seed() % 2**32)


def reproducible_loader(m, num_workers, persistent=False, epochs=3):
    torch, data = m.torch, m.data

    def seed_everything(seed):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)

    def seed_worker(worker_id):
        worker_seed = torch.initial_seed() % 2**32
        np.random.seed(worker_seed)
        random.seed(worker_seed)

    seed_everything(0)
    g = torch.Generator()
    g.manual_seed(0)
    loader = data.DataLoader(NoisyDataset(torch), batch_size=3, shuffle=True, num_workers=num_workers,
                             worker_init_fn=seed_worker, generator=g, persistent_workers=persistent)
    batches = []
    for epoch in range(epochs):
        for item, noise, seed in loader:
            batches.append((item, noise, seed))
    torch.use_deterministic_algorithms(False)
    return {"batches": batches, "after": torch.rand(2)}


@pytest.mark.parametrize("num_workers,persistent", [(0, False), (2, False), (2, True)])
def test_pytorchs_reproducibility_recipe(num_workers, persistent):
    ours, theirs = run_both(reproducible_loader, num_workers, persistent)
    items = np.concatenate([b[0][:, 0] for b in ours["batches"][:4]])
    assert sorted(items.tolist()) == list(range(12))
