"""torch.utils as training code uses it (see tests/pytorch_programs.py), each program run on chainrule and on PyTorch
from the same weights and data, comparing values, gradients, drawn index orders and errors. Data
(``torch.utils.data``): class-balanced ``WeightedRandomSampler`` batches (with and without replacement, with a
generator), a ``SubsetRandomSampler`` train / validation split, ``RandomSampler`` with ``num_samples`` and
replacement under ``BatchSampler``, ``DistributedSampler`` over every rank and epoch, ``default_collate`` /
``default_convert`` of dicts, named tuples, NumPy values and strings through a DataLoader, and ``random_split``
fractions, ``ConcatDataset``, ``StackDataset`` and a ``Subset`` of a dataset that reads whole batches
(``__getitems__``); a detection loader whose ``collate`` has a ``collate_fn_map`` of its own."""

import collections
import functools
import importlib

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch, run_both

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
