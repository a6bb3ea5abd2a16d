# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""torch.utils as training code uses it (see tests/pytorch_programs.py), each program run on chainrule and on
PyTorch from the same weights and data, comparing values, gradients, drawn index orders and errors.

Activation checkpointing (``torch.utils.checkpoint``): an MLP with dropout trained through checkpointed
blocks (both ``use_reentrant`` variants, ``preserve_rng_state`` on and off), ``checkpoint_sequential`` in
1..n segments over a BatchNorm network (the rerun updates the running statistics a second time, as
PyTorch's does), keyword arguments and dict / string outputs, nested checkpoints, a WGAN-GP gradient penalty
through checkpointed critic blocks (``autograd.grad(create_graph=True)``), ``determinism_check`` (the
``CheckpointError`` and ``'none'``), selective checkpointing (``create_selective_checkpoint_contexts``
with a list of ops and with a policy function), forward hooks inside a checkpoint (the non-reentrant rerun
stops early, ``set_checkpoint_early_stop``), an argument written in place before backward (refused), and
forces by ``autograd.grad`` inside a checkpointed function (a force-matching loss).

Data (``torch.utils.data``): class-balanced ``WeightedRandomSampler`` batches (with and without
replacement, with a generator), a ``SubsetRandomSampler`` train / validation split, ``RandomSampler``
with ``num_samples`` and replacement under ``BatchSampler``, ``DistributedSampler`` over every rank and
epoch, ``default_collate`` / ``default_convert`` of dicts, named tuples, NumPy values and strings through
a DataLoader, and ``random_split`` fractions, ``ConcatDataset``, ``StackDataset`` and a ``Subset`` of a
dataset that reads whole batches (``__getitems__``).

Trees, hooks and nn.utils: ``torch.utils._pytree`` over an optimizer-state-like structure and a registered
class; forward hooks and their ``RemovableHandle``; ``clip_grad_norm_`` (every norm type, ``foreach``)
and ``clip_grad_value_`` in a training loop; left-padded ``pad_sequence`` and packed sequences through a
GRU; a MAML inner step by ``functional_call`` on a model with tied weights; and a detection loader whose
``collate`` has a ``collate_fn_map`` of its own."""

import collections
import functools
import importlib

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch, run_both, same_dropout_masks


def checkpoint_module(m):
    return importlib.import_module(m.torch.__name__ + ".utils.checkpoint")


def randn(m, shape, seed):
    return m.torch.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def set_weights(m, model, seed=0):
    with m.torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(0.5 * randn(m, tuple(p.shape), seed + i))
    return model


# ----------------------------------------------------------------------------------------------
# Activation checkpointing
# ----------------------------------------------------------------------------------------------


def checkpointed_mlp(m, use_reentrant, preserve_rng_state=True, checkpointed=True):
    torch, nn, F = m.torch, m.nn, m.F
    cp = checkpoint_module(m)

    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc1, self.fc2, self.drop = nn.Linear(width, 2 * width), nn.Linear(2 * width, width), nn.Dropout(0.25)

        def forward(self, x):
            return x + self.fc2(self.drop(F.gelu(self.fc1(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(5, 8)
            self.blocks = nn.ModuleList(Block(8) for _ in range(3))
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            h = self.inp(x)
            for block in self.blocks:
                if checkpointed:
                    h = cp.checkpoint(block, h, use_reentrant=use_reentrant, preserve_rng_state=preserve_rng_state)
                else:
                    h = block(h)
            return self.out(h)

    net = set_weights(m, Net())
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = randn(m, (16, 5), 100), torch.tensor(np.arange(16) % 3)
    torch.manual_seed(0)
    losses = []
    for step in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, net.blocks[0].fc1.weight, net.out.bias


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpointed_mlp_with_dropout_trains_as_the_plain_one(use_reentrant):
    ours, _ = run_both(checkpointed_mlp, use_reentrant, compare=same_dropout_masks(), rtol=1e-4, atol=1e-5)
    plain = checkpointed_mlp(OURS, use_reentrant, checkpointed=False)
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-5)  # the rerun drew the first run's dropout masks
    for a, b in zip(ours[1:], plain[1:]):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoint_without_preserved_rng_state_redraws_the_masks(use_reentrant):
    # the rerun draws fresh masks from where the stream stands, in both libraries: gradients of other masks
    ours, _ = run_both(checkpointed_mlp, use_reentrant, False, compare=same_dropout_masks(), rtol=1e-4, atol=1e-5)
    kept = checkpointed_mlp(OURS, use_reentrant, True)
    assert ours[0][0] == pytest.approx(kept[0][0])  # the first loss is the forward's: the same
    assert ours[0][1] != pytest.approx(kept[0][1])


def sequential_segments(m, segments, use_reentrant):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    net = set_weights(m, nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(),
                                       nn.Linear(6, 2)))
    x = randn(m, (7, 4), 3).requires_grad_()
    out = cp.checkpoint_sequential(net, segments, x, use_reentrant=use_reentrant)
    out.pow(2).mean().backward()
    bn = net[1]
    return out, x.grad, net[0].weight.grad, net[5].bias.grad, bn.running_mean, bn.running_var, bn.num_batches_tracked


@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize("segments", [1, 2, 3, 6])
def test_checkpoint_sequential_segments(segments, use_reentrant):
    ours, _ = run_both(sequential_segments, segments, use_reentrant, rtol=1e-5, atol=1e-6)
    # a segment holding the BatchNorm is rerun in backward, updating its running statistics once more
    assert int(ours[6]) == (1 if segments == 1 else 2)


def kwargs_and_non_tensor_outputs(m):
    torch = m.torch
    cp = checkpoint_module(m)

    def attention_scores(q, k, mask=None, temperature=1.0):
        scores = q @ k.transpose(-1, -2) / temperature
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return {"probs": scores.softmax(-1), "note": "masked" if mask is not None else "full", "n": scores.shape[-1]}

    q, k = randn(m, (2, 3, 4), 1).requires_grad_(), randn(m, (2, 5, 4), 2).requires_grad_()
    mask = torch.tensor(np.tril(np.ones((3, 5), dtype=bool)))
    out = cp.checkpoint(attention_scores, q, k, mask=mask, temperature=2.0, use_reentrant=False)
    (out["probs"] * torch.arange(5.0)).sum().backward()
    return out["probs"], out["note"], out["n"], q.grad, k.grad


def test_checkpoint_with_keyword_arguments_and_dict_output():
    ours, _ = run_both(kwargs_and_non_tensor_outputs)
    assert ours[1] == "masked" and ours[2] == 5


def test_keyword_arguments_need_the_non_reentrant_variant():
    for m in filter(None, (OURS, pytorch())):
        with pytest.raises(ValueError, match="Unexpected keyword arguments: mask"):
            checkpoint_module(m).checkpoint(lambda x, mask: x, randn(m, (2,), 0).requires_grad_(), mask=None,
                                            use_reentrant=True)


def nested_checkpoints_and_gradient_penalty(m, use_reentrant_inner):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)

    class Critic(nn.Module):  # WGAN-GP's critic, its blocks checkpointed (the inner one twice over)
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 1)

        def inner(self, h):
            return torch.tanh(self.b(h))

        def outer(self, x):
            h = torch.nn.functional.softplus(self.a(x))
            return cp.checkpoint(self.inner, h, use_reentrant=use_reentrant_inner) + h

        def forward(self, x):
            return self.c(cp.checkpoint(self.outer, x, use_reentrant=False))

    critic = set_weights(m, Critic())
    real, fake = randn(m, (6, 3), 10), randn(m, (6, 3), 11)
    alpha = torch.tensor(np.linspace(0, 1, 6, dtype=np.float32)).unsqueeze(1)
    interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = critic(interp)
    grad, = torch.autograd.grad(score.sum(), interp, create_graph=True)
    penalty = ((grad.norm(2, dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + 10 * penalty
    loss.backward()
    return score, grad, penalty, critic.a.weight.grad, critic.b.weight.grad, critic.c.bias.grad


def test_gradient_penalty_through_nested_checkpoints():
    ours, _ = run_both(nested_checkpoints_and_gradient_penalty, False, rtol=1e-4, atol=1e-6)
    assert float(ours[2]) > 0


def determinism(m, check):
    cp = checkpoint_module(m)
    calls = []

    def crop_then_exp(x):  # a function that (wrongly) computes something else the second time
        calls.append(1)
        return x[:3 if len(calls) == 1 else 2].exp().sum()

    x = randn(m, (4,), 0).requires_grad_()
    cp.checkpoint(crop_then_exp, x, use_reentrant=False, determinism_check=check).backward()
    return x.grad


def test_determinism_check_raises_checkpoint_error():
    for m in filter(None, (OURS, pytorch())):
        cp = checkpoint_module(m)
        assert issubclass(cp.CheckpointError, RuntimeError)
        differs = r"(?s)different metadata than during the forward pass.\ntensor at position 0:\nsaved metadata: .*3"
        with pytest.raises(cp.CheckpointError, match=differs + r".*\nrecomputed metadata: .*2"):
            determinism(m, "default")
        with pytest.raises(ValueError, match="determinism_check should be one of"):
            determinism(m, "strict")


def selective_checkpointing(m, by_list):
    torch = m.torch
    cp = checkpoint_module(m)
    save = [torch.ops.aten.mm.default, torch.ops.aten.addmm.default]

    def policy(ctx, op, *args, **kwargs):
        return cp.CheckpointPolicy.MUST_SAVE if op in save else cp.CheckpointPolicy.PREFER_RECOMPUTE

    context_fn = functools.partial(cp.create_selective_checkpoint_contexts, save if by_list else policy)
    w1, w2 = randn(m, (4, 6), 1).requires_grad_(), randn(m, (6, 2), 2).requires_grad_()
    x = randn(m, (5, 4), 3)

    def mlp(x):
        return torch.sigmoid(torch.mm(torch.relu(torch.mm(x, w1)), w2))

    out = cp.checkpoint(mlp, x, use_reentrant=False, context_fn=context_fn)
    out.sum().backward()
    return out, w1.grad, w2.grad


@pytest.mark.parametrize("by_list", [True, False])
def test_selective_checkpointing(by_list):
    run_both(selective_checkpointing, by_list)


def test_selective_checkpointing_refuses_what_is_not_an_op():
    for m in filter(None, (OURS, pytorch())):
        cp = checkpoint_module(m)
        with pytest.raises(ValueError, match="Expected op in `op_list` to be an OpOverload"):
            cp.create_selective_checkpoint_contexts(["mm"])
        with pytest.raises(TypeError, match="policy_fn_or_list must be either a function or a list of ops"):
            cp.create_selective_checkpoint_contexts(3)


# ----------------------------------------------------------------------------------------------
# Samplers and loaders
# ----------------------------------------------------------------------------------------------


def imbalanced_dataset(m, n=30):
    labels = np.array([0] * 20 + [1] * 7 + [2] * 3)[:n]
    features = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    return m.data.TensorDataset(m.torch.from_numpy(features), m.torch.from_numpy(labels)), labels


def class_balanced_batches(m, replacement, with_generator):
    torch, data = m.torch, m.data
    dataset, labels = imbalanced_dataset(m)
    class_counts = np.bincount(labels)
    sample_weights = torch.from_numpy(1.0 / class_counts[labels])
    generator = torch.Generator().manual_seed(17) if with_generator else None
    torch.manual_seed(3)
    sampler = data.WeightedRandomSampler(sample_weights, num_samples=24 if replacement else 12,
                                         replacement=replacement, generator=generator)
    loader = data.DataLoader(dataset, batch_size=5, sampler=sampler)
    epochs = [[y for _, y in loader] for epoch in range(2)]
    return epochs, len(loader), list(sampler)


@pytest.mark.parametrize("with_generator", [True, False])
@pytest.mark.parametrize("replacement", [True, False])
def test_weighted_random_sampler_balances_classes(replacement, with_generator):
    ours, _ = run_both(class_balanced_batches, replacement, with_generator)
    drawn = ours[2]
    assert len(drawn) == (24 if replacement else 12)
    if not replacement:
        assert len(set(drawn)) == len(drawn)


def train_validation_split(m):
    torch, data = m.torch, m.data
    dataset, _ = imbalanced_dataset(m)
    indices = list(range(len(dataset)))
    np.random.default_rng(5).shuffle(indices)
    split = 8
    generator = torch.Generator().manual_seed(1)
    train_sampler = data.SubsetRandomSampler(indices[split:], generator=generator)
    valid_sampler = data.SequentialSampler(indices[:split])
    train_loader = data.DataLoader(dataset, batch_size=6, sampler=train_sampler)
    valid_loader = data.DataLoader(data.Subset(dataset, indices[:split]), batch_size=3, sampler=valid_sampler)
    return ([y for _, y in train_loader], [y for _, y in train_loader], [x for x, _ in valid_loader],
            len(train_sampler), len(valid_loader))


def test_subset_random_sampler_split():
    ours, _ = run_both(train_validation_split)
    assert sorted(np.concatenate(ours[0]).tolist()) == sorted(np.concatenate(ours[1]).tolist())


def oversampling_random_sampler(m, replacement, num_samples, drop_last):
    torch, data = m.torch, m.data
    torch.manual_seed(11)
    sampler = data.RandomSampler(range(10), replacement=replacement, num_samples=num_samples)
    batches = data.BatchSampler(sampler, batch_size=4, drop_last=drop_last)
    return [list(batches) for epoch in range(2)], len(batches), len(sampler)


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("replacement,num_samples", [(False, None), (False, 23), (False, 7), (True, 40), (True, 5)])
def test_random_sampler_num_samples_under_batch_sampler(replacement, num_samples, drop_last):
    ours, _ = run_both(oversampling_random_sampler, replacement, num_samples, drop_last)
    n = num_samples or 10
    assert ours[1] == (n // 4 if drop_last else -(-n // 4)) and ours[2] == n


def distributed_epochs(m, shuffle, drop_last):
    data = m.data
    dataset = data.TensorDataset(m.torch.arange(23.0))
    seen = []
    for rank in range(4):
        sampler = data.DistributedSampler(dataset, num_replicas=4, rank=rank, shuffle=shuffle, seed=9,
                                          drop_last=drop_last)
        loader = data.DataLoader(dataset, batch_size=3, sampler=sampler)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            seen.append([x for (x,) in loader])
        seen.append((len(sampler), sampler.num_samples, sampler.total_size))
    return seen


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_distributed_sampler_ranks_and_epochs(shuffle, drop_last):
    ours, _ = run_both(distributed_epochs, shuffle, drop_last)
    epoch0 = np.concatenate([np.concatenate(ours[4 * rank]) for rank in range(4)])
    if drop_last:  # every rank 5 distinct samples, 20 of the 23 in all
        assert len(epoch0) == 20 and len(set(epoch0.tolist())) == 20
    else:  # padded to 24 by repeating the first index
        assert len(epoch0) == 24 and set(epoch0.tolist()) == set(range(23))


Sample = collections.namedtuple("Sample", "image label meta")


def collated_records(m, batch_size):
    data = m.data

    class Records(data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            rng = np.random.default_rng(i)
            return {"sample": Sample(rng.standard_normal((2, 2)).astype(np.float32), int(i % 2),
                                     {"name": f"rec{i}", "scale": float(i) / 2, "flag": bool(i % 3)}),
                    "tokens": [np.int64(i), np.int64(i + 1)], "weight": np.float64(i) / 4}

    loader = data.DataLoader(Records(), batch_size=batch_size)
    out = []
    for batch in loader:
        sample = batch["sample"]
        out.append((type(sample).__name__, sample.image, sample.label, sample.meta["name"], sample.meta["scale"],
                    sample.meta["flag"], batch["tokens"], batch["weight"],
                    str(sample.label.dtype).replace("torch.", "") if batch_size else type(sample.label).__name__,
                    str(batch["weight"].dtype).replace("torch.", "")))
    return out


@pytest.mark.parametrize("batch_size", [2, None])
def test_default_collate_and_convert_of_nested_records(batch_size):
    ours, _ = run_both(collated_records, batch_size)
    assert ours[0][0] == "Sample"
    if batch_size:
        assert ours[0][3] == ["rec0", "rec1"] and ours[0][8] == "int64" and ours[0][9] == "float64"
    else:  # default_convert: NumPy arrays and scalars become tensors, Python numbers and strings stay
        assert ours[0][3] == "rec0" and ours[0][8] == "int"


def dataset_composition(m):
    torch, data = m.torch, m.data

    class Shards(data.Dataset):  # reads a batch at once, as a memory-mapped or remote store does
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return 10

        def __getitem__(self, i):
            raise RuntimeError("read whole batches through __getitems__")

        def __getitems__(self, indices):
            return [{"x": torch.tensor([self.base + i], dtype=torch.float32), "i": i} for i in indices]

    generator = torch.Generator().manual_seed(4)
    train, valid, test = data.random_split(Shards(100), [0.6, 0.25, 0.15], generator=generator)
    loader = data.DataLoader(train, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2))
    batches = [(b["x"], b["i"]) for b in loader]
    concat = data.ConcatDataset([data.TensorDataset(torch.arange(4)), data.TensorDataset(torch.arange(3) + 10)])
    stacked = data.StackDataset(ids=concat, squares=data.TensorDataset(torch.arange(7) ** 2))
    stacked_batches = list(data.DataLoader(stacked, batch_size=3))
    return (batches, [len(train), len(valid), len(test)], valid.indices, test.indices, concat[-3], concat[4],
            concat.cumulative_sizes, stacked_batches, len(stacked))


def test_random_split_subsets_of_a_batch_reading_dataset():
    ours, _ = run_both(dataset_composition)
    assert ours[1] == [7, 2, 1]  # floor(10 · fraction) = 6, 2, 1; the one left over goes to the first


def test_concat_and_chain_refuse_the_other_kind():
    for m in filter(None, (OURS, pytorch())):
        data = m.data

        class Stream(data.IterableDataset):
            def __iter__(self):
                return iter(range(3))

        with pytest.raises(AssertionError, match="ConcatDataset does not support IterableDataset"):
            data.ConcatDataset([Stream()])
        with pytest.raises(AssertionError, match="ChainDataset only supports IterableDataset"):
            len(data.ChainDataset([range(3), range(4)]))
        assert list(data.ChainDataset([Stream(), Stream()])) == [0, 1, 2, 0, 1, 2]
        with pytest.raises(ValueError, match="Sum of input lengths does not equal the length of the input dataset"):
            data.random_split(range(10), [3, 8])


def extended_collate(m):
    torch, data = m.torch, m.data
    collate_module = importlib.import_module(m.data.__name__ + "._utils.collate")

    class Boxes:  # a detection target: a variable number of boxes per image, kept as a list
        def __init__(self, xyxy):
            self.xyxy = xyxy

    def collate_boxes(batch, *, collate_fn_map=None):
        return [torch.as_tensor(b.xyxy) for b in batch]

    def collate_float_as_float32(batch, *, collate_fn_map=None):
        return torch.tensor(batch, dtype=torch.float32)

    collate_map = {**collate_module.default_collate_fn_map, Boxes: collate_boxes, float: collate_float_as_float32}

    class Detection(data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            rng = np.random.default_rng(i)
            return {"image": rng.standard_normal((1, 3, 3)).astype(np.float32),
                    "boxes": Boxes(rng.uniform(0, 3, (i + 1, 4)).astype(np.float32)), "scale": 0.5 * i,
                    "id": (i, f"img{i}")}

    loader = data.DataLoader(Detection(), batch_size=2,
                             collate_fn=functools.partial(collate_module.collate, collate_fn_map=collate_map))
    return [(b["image"], b["boxes"], b["scale"], str(b["scale"].dtype).replace("torch.", ""), b["id"])
            for b in loader]


def test_collate_with_a_collate_fn_map_of_ones_own():
    ours, _ = run_both(extended_collate)
    assert [len(b[1]) for b in ours] == [2, 2] and ours[0][3] == "float32"


# ----------------------------------------------------------------------------------------------
# Trees, hooks and nn.utils
# ----------------------------------------------------------------------------------------------


Stats = collections.namedtuple("Stats", "mean var count")


def pytree_state(m):
    torch = m.torch
    pytree = importlib.import_module(m.torch.__name__ + ".utils._pytree")

    class Moments:  # a container of the program's own, registered as a node
        def __init__(self, first, second, step):
            self.first, self.second, self.step = first, second, step

    pytree.register_pytree_node(
        Moments, lambda s: ([s.first, s.second], s.step), lambda children, step: Moments(*children, step),
        flatten_with_keys_fn=lambda s: ([(pytree.GetAttrKey(name), getattr(s, name)) for name in ("first", "second")],
                                        s.step))
    state = {
        "layers": [Moments(randn(m, (2,), i), randn(m, (2,), i + 10).abs(), i) for i in range(2)],
        "stats": Stats(torch.zeros(3), torch.ones(3), 4),
        "order": collections.OrderedDict([("z", torch.tensor(1.0)), ("a", torch.tensor(2.0))]),
        "counts": collections.defaultdict(int, {"seen": 7}),
        "note": None,
    }
    leaves, spec = pytree.tree_flatten(state)
    scaled = pytree.tree_map(lambda v: v * 2 if isinstance(v, torch.Tensor) else v, state)
    only_tensors = pytree.tree_map_only(torch.Tensor, lambda t: t.sum(), state)
    rebuilt = pytree.tree_unflatten([v + 1 if isinstance(v, torch.Tensor) else v for v in leaves], spec)
    paths = [pytree.keystr(path) for path, _ in pytree.tree_flatten_with_path(state)[0]]
    return (len(leaves), spec.num_leaves, scaled["layers"][1].second, scaled["layers"][1].step, scaled["stats"].count,
            only_tensors["stats"].var, list(rebuilt["order"]), rebuilt["order"]["a"], type(rebuilt["counts"]).__name__,
            rebuilt["counts"].default_factory is int, rebuilt["layers"][0].first, paths)


def test_pytree_over_optimizer_like_state():
    ours, _ = run_both(pytree_state)  # leaves: 4 moments, 3 stats, 2 ordered, 1 count, and None (a leaf)
    assert ours[0] == 11 and ours[-1][:2] == ["['layers'][0].first", "['layers'][0].second"]


def feature_extractor_hooks(m):
    torch, nn = m.torch, m.nn
    net = set_weights(m, nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)))
    features, calls = {}, []

    def save(name):
        def hook(module, inputs, output):
            features[name] = output.detach()
            calls.append(name)
        return hook

    handles = [net[i].register_forward_hook(save(f"layer{i}")) for i in (0, 3)]
    first = net[3].register_forward_hook(lambda module, inputs, output: calls.append("prepended"), prepend=True)
    x = randn(m, (2, 1, 4, 4), 0)
    net(x)
    for handle in handles:
        handle.remove()
    handles[0].remove()  # a second remove does nothing
    net(x)
    with first:
        net(x)
    net(x)
    grads = []
    h = net[0].weight.register_hook(lambda g: grads.append(g.clone()) or g * 0.5)
    net(x).sum().backward()
    h.remove()
    return calls, features["layer0"], features["layer3"], grads[0], net[0].weight.grad


def test_forward_hooks_and_removable_handles():
    ours, _ = run_both(feature_extractor_hooks)
    assert ours[0] == ["layer0", "prepended", "layer3", "prepended", "prepended"]


def clipped_training(m, norm_type, foreach):
    torch, nn, F = m.torch, m.nn, m.F
    net = set_weights(m, nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), seed=3)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = randn(m, (12, 4), 1) * 4, randn(m, (12, 2), 2)
    norms = []
    for step in range(4):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        norms.append(nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.5, norm_type=norm_type, foreach=foreach))
        nn.utils.clip_grad_value_(net[0].parameters(), clip_value=0.05, foreach=foreach)
        opt.step()
    vector = nn.utils.parameters_to_vector(net.parameters())
    nn.utils.vector_to_parameters(vector * 0.5, net.parameters())
    return norms, vector, net[2].bias, net[0].weight.grad


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("norm_type", [2.0, 1, float("inf"), 3.0])
def test_clip_grad_norm_in_a_training_loop(norm_type, foreach):
    run_both(clipped_training, norm_type, foreach, rtol=1e-4, atol=1e-6)


def padded_sequences_through_gru(m, padding_side):
    torch, nn = m.torch, m.nn
    rnn_utils = nn.utils.rnn
    seqs = [randn(m, (n, 3), n).requires_grad_() for n in (4, 1, 6, 3)]
    padded = rnn_utils.pad_sequence(seqs, batch_first=True, padding_value=0.0, padding_side=padding_side)
    lengths = torch.tensor([len(s) for s in seqs])
    gru = set_weights(m, nn.GRU(3, 5, batch_first=True))
    if padding_side == "left":  # a left-padded batch (as for decoder-only models) read by a plain GRU
        out, h = gru(padded)
        last = out[:, -1]
    else:
        packed = rnn_utils.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        out_packed, h = gru(packed)
        out, out_lengths = rnn_utils.pad_packed_sequence(out_packed, batch_first=True, total_length=7)
        last = h[0]
        unpacked = rnn_utils.unpack_sequence(out_packed)
        unpadded = rnn_utils.unpad_sequence(out, out_lengths, batch_first=True)
        assert all(np.allclose(a.detach().numpy(), b.detach().numpy()) for a, b in zip(unpacked, unpadded))
    (last.pow(2).sum() + out.sum()).backward()
    return padded, out, last, seqs[1].grad, seqs[2].grad, gru.weight_hh_l0.grad


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_sequences_through_a_gru(padding_side):
    ours, _ = run_both(padded_sequences_through_gru, padding_side, rtol=1e-4, atol=1e-6)
    assert ours[0].shape == (4, 6, 3)


def maml_step_with_tied_weights(m):
    torch, nn, F = m.torch, m.nn, m.F

    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(6, 4)
            self.proj = nn.Linear(4, 4)
            self.head = nn.Linear(4, 6, bias=False)
            self.head.weight = self.embed.weight  # weight tying

        def forward(self, tokens):
            return self.head(torch.tanh(self.proj(self.embed(tokens))))

    model = set_weights(m, TiedLM())
    params = dict(model.named_parameters())
    support, target = torch.tensor([0, 2, 4, 1]), torch.tensor([2, 4, 1, 3])
    loss = F.cross_entropy(torch.func.functional_call(model, params, (support,)), target)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    fast = {name: p - 0.4 * g for (name, p), g in zip(params.items(), grads)}
    query_loss = F.cross_entropy(torch.func.functional_call(model, fast, (target,)), support)
    query_loss.backward()
    untied = torch.func.functional_call(model, {"head.weight": torch.zeros(6, 4)}, (support,), tie_weights=False)
    return sorted(params), loss, query_loss, model.embed.weight.grad, model.proj.bias.grad, untied


def test_maml_inner_step_by_functional_call_with_tied_weights():
    ours, _ = run_both(maml_step_with_tied_weights, rtol=1e-4, atol=1e-6)
    assert "head.weight" not in ours[0]  # named_parameters lists a tied weight once


def test_functional_call_strict_and_conflicting_tied_values():
    for m in filter(None, (OURS, pytorch())):
        linear = m.nn.Linear(2, 2)
        with pytest.raises(RuntimeError, match="Missing key"):
            m.torch.func.functional_call(linear, {"weight": m.torch.zeros(2, 2)}, (m.torch.zeros(1, 2),), strict=True)
        tied = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Linear(2, 2))
        tied[1].weight = tied[0].weight
        with pytest.raises(ValueError, match="0.weight.*1.weight|1.weight.*0.weight"):
            m.torch.func.functional_call(tied, {"0.weight": m.torch.zeros(2, 2), "1.weight": m.torch.ones(2, 2)},
                                         (m.torch.zeros(1, 2),))


def hooked_checkpoint(m, use_reentrant, early_stop):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    block = set_weights(m, nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    events = []
    block[0].register_forward_pre_hook(lambda module, inputs: events.append("fc1 in"))
    block[2].register_forward_hook(lambda module, inputs, output: events.append(("fc2 out", tuple(output.shape))))
    block.register_forward_hook(lambda module, inputs, output: events.append("block out"))
    x = randn(m, (5, 3), 0).requires_grad_()
    with cp.set_checkpoint_early_stop(early_stop):
        out = cp.checkpoint(block, x, use_reentrant=use_reentrant)
        events.append("backward")
        out.pow(2).sum().backward()
    return events, x.grad, block[0].weight.grad


@pytest.mark.parametrize("use_reentrant,early_stop", [(False, True), (False, False), (True, True)])
def test_forward_hooks_inside_a_checkpoint(use_reentrant, early_stop):
    ours, _ = run_both(hooked_checkpoint, use_reentrant, early_stop)
    rerun = ours[0][ours[0].index("backward") + 1:]
    # the non-reentrant rerun stops once fc2 has saved its input: fc2's and the block's hooks stay quiet
    assert rerun == (["fc1 in"] if early_stop and not use_reentrant else ["fc1 in", ("fc2 out", (5, 2)), "block out"])


def test_checkpoint_sequential_refuses_unknown_keywords():
    for m in filter(None, (OURS, pytorch())):
        net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Linear(2, 2))
        with pytest.raises(ValueError, match="Unexpected keyword arguments: foo"):
            checkpoint_module(m).checkpoint_sequential(net, 1, randn(m, (1, 2), 0), use_reentrant=False, foo=1)


def test_pack_padded_sequence_wants_one_dimensional_lengths():
    for m in filter(None, (OURS, pytorch())):
        padded = randn(m, (3, 4, 2), 0)
        with pytest.raises(RuntimeError, match="'lengths' argument should be a 1D CPU int64 tensor, but got 2D"):
            m.nn.utils.rnn.pack_padded_sequence(padded, m.torch.tensor([[4, 2, 1]]), batch_first=True)
        packed = m.nn.utils.rnn.pack_padded_sequence(padded, m.torch.tensor([4, 2, 1]), batch_first=True)
        assert packed.batch_sizes.tolist() == [3, 2, 1, 1]


def test_torch_utils_submodules_read_as_attributes():
    for m in filter(None, (OURS, pytorch())):  # (code reads torch.utils.dlpack.to_dlpack after a plain import torch)
        for name in ("data", "hooks", "checkpoint", "dlpack"):
            assert hasattr(m.torch.utils, name), name
        assert callable(m.torch.utils.dlpack.from_dlpack)


def input_written_after_checkpoint(m, use_reentrant):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    block = set_weights(m, nn.Sequential(nn.Linear(3, 3), nn.Tanh()))
    x = randn(m, (4, 3), 0).requires_grad_()
    h = x * 1.0
    out = cp.checkpoint(block, h, use_reentrant=use_reentrant)
    h.mul_(2)  # a residual stream updated in place after the block read it
    out.sum().backward()
    return x.grad


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_an_argument_written_in_place_after_the_checkpoint_is_refused(use_reentrant):
    # the rerun would read the doubled values: gradients of another input, silently (chainrule did)
    for m in filter(None, (OURS, pytorch())):
        with pytest.raises(RuntimeError, match="modified by an inplace operation.*is at version 1; expected version 0"):
            input_written_after_checkpoint(m, use_reentrant)


def input_gradient_inside_checkpoint(m):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    energy = set_weights(m, nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)))

    def force_field(positions):  # forces as minus the energy gradient, computed inside the checkpointed block
        with torch.enable_grad():
            positions = positions.requires_grad_() if not positions.requires_grad else positions
            e = energy(positions).sum()
            force, = torch.autograd.grad(e, positions, create_graph=True)
        return -force

    x = randn(m, (5, 2), 1).requires_grad_()
    forces = cp.checkpoint(force_field, x, use_reentrant=False)
    loss = (forces - randn(m, (5, 2), 2)).pow(2).mean()
    loss.backward()
    return forces, loss, x.grad, energy[0].weight.grad, energy[2].weight.grad


def test_autograd_grad_inside_a_checkpointed_function():
    run_both(input_gradient_inside_checkpoint, rtol=1e-4, atol=1e-6)
