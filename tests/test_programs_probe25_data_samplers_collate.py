# ruff: noqa: B007, B023, E501  (the programs are kept as their authors wrote them)
"""Data pipelines as PyTorch users write them with ``torch.utils.data`` (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same seeds, and checked without PyTorch against literals (PyTorch's, computed once)
and invariants that can fail. Class-balanced ``WeightedRandomSampler`` training with a generator; ``random_split`` by
fractions and by 0-d tensor lengths; shuffling with ``generator=`` across epochs and resumed from the generator's
state; a bucketing ``batch_sampler=`` with a ``pad_sequence`` collate and masks; an infinite sampler and a resumable
one (state_dict-like skip); ``DistributedSampler`` shards with ``set_epoch``; ``default_collate`` over dicts, named
tuples, NumPy arrays and scalars, strings, bools and nested lists, and its errors."""

import collections
import math

import numpy as np

from .probe25_data_common import batches, error_of, pytorch_words
from .pytorch_programs import run_both


def dtype_name(x):
    return str(x.dtype).split(".")[-1]


# --- samplers ---------------------------------------------------------------------------------------------------

def class_balanced_training(m):
    torch, D = m.torch, m.data
    torch.manual_seed(0)
    X = torch.randn(20, 2)
    y = (torch.arange(20) < 4).long()
    counts = torch.bincount(y)
    weights = (1.0 / counts.float())[y]
    sampler = D.WeightedRandomSampler(weights, num_samples=16, replacement=True)
    loader = D.DataLoader(D.TensorDataset(X, y), batch_size=8, sampler=sampler)
    model = m.nn.Linear(2, 2)
    opt = m.optim.SGD(model.parameters(), lr=0.1)
    seen, losses = [], []
    for epoch in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            loss = m.F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            seen.append(yb)
            losses.append(loss.detach())
    return torch.cat(seen), torch.stack(losses), model.weight.detach(), len(loader), len(sampler)


def test_class_balanced_weighted_sampler_training():
    (seen, losses, weight, n_batches, n_samples), _ = run_both(class_balanced_training)
    assert (n_batches, n_samples) == (2, 16)
    assert seen.tolist() == [1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0]
    assert 0.3 < seen.mean() < 0.7  # (4 positives of 20, drawn about half the time)
    assert np.isfinite(losses).all() and losses.shape == (4,)


def weighted_sampler_streams(m):
    torch, D = m.torch, m.data
    g = torch.Generator().manual_seed(3)
    with_replacement = D.WeightedRandomSampler([0.1, 0.5, 2.0, 1.0], 20, generator=g)
    without = D.WeightedRandomSampler(torch.tensor([0.1, 0.5, 2.0, 1.0, 3.0]), 4, replacement=False,
                                      generator=torch.Generator().manual_seed(3))
    integer_weights = D.WeightedRandomSampler(np.array([1, 2, 3]), 6, generator=torch.Generator().manual_seed(0))
    errors = [error_of(lambda: list(D.WeightedRandomSampler(w, 2))) for w in ([-1.0, 2.0], [math.inf, 1.0], [0.0, 0.0])]
    return list(with_replacement), list(with_replacement), list(without), list(integer_weights), errors, dtype_name(without.weights)


def test_weighted_random_sampler_streams_and_errors():
    (first, second, without, integer_weights, errors, dtype), _ = run_both(weighted_sampler_streams)
    assert first == [1, 2, 3, 2, 3, 2, 2, 2, 2, 3, 2, 2, 2, 2, 3, 1, 1, 2, 3, 1]
    assert first != second and set(first) <= {0, 1, 2, 3}
    assert without == [3, 0, 4, 1] and integer_weights == [2, 2, 1, 2, 2, 2]
    assert errors == ["RuntimeError: invalid multinomial distribution (encountering probability entry < 0)",
                      "RuntimeError: invalid multinomial distribution (encountering probability entry = infinity or NaN)",
                      "RuntimeError: invalid multinomial distribution (sum of probabilities <= 0)"]
    assert dtype == "float64"


def splits(m):
    torch, D = m.torch, m.data
    a, b, c = D.random_split(range(10), [0.5, 0.3, 0.2], generator=torch.Generator().manual_seed(42))
    d, e = D.random_split(range(11), [0.3, 0.7], generator=torch.Generator().manual_seed(1))
    f, h = D.random_split(D.TensorDataset(torch.arange(6) * 10), (torch.tensor(4), torch.tensor(2)),
                          generator=torch.Generator().manual_seed(0))
    return [list(s) for s in (a, b, c, d, e)], f.indices, h[1][0], pytorch_words(error_of(lambda: D.random_split(range(10), [3, 4])))


def test_random_split_by_fractions_and_tensor_lengths():
    (parts, indices, value, error), _ = run_both(splits)
    assert [len(p) for p in parts] == [5, 3, 2, 4, 7]  # (the remainder handed out from the first split)
    assert sorted(sum(parts[:3], [])) == list(range(10)) and sorted(parts[3] + parts[4]) == list(range(11))
    assert indices == [2, 5, 3, 0] and value == 40
    assert error == "ValueError: Sum of input lengths does not equal the length of the input dataset!"


def shuffled_epochs(m):
    torch, D = m.torch, m.data
    g = torch.Generator().manual_seed(7)
    loader = D.DataLoader(list(range(10)), batch_size=3, shuffle=True, generator=g)
    epochs = [torch.cat(batches(loader)) for _ in range(2)]
    state = g.get_state()
    third = torch.cat(batches(loader))
    g.set_state(state)
    again = torch.cat(batches(loader))
    return epochs, third, again, len(loader), len(D.DataLoader(list(range(10)), batch_size=3, drop_last=True))


def test_shuffle_with_generator_across_epochs_and_resumed():
    (epochs, third, again, n, n_dropped), _ = run_both(shuffled_epochs)
    assert epochs[0].tolist() == [1, 3, 5, 7, 9, 4, 6, 2, 8, 0]
    assert epochs[1].tolist() == [5, 1, 6, 0, 9, 7, 8, 4, 3, 2]
    assert (third == again).all() and sorted(third.tolist()) == list(range(10))
    assert (n, n_dropped) == (4, 3)


def bucketing(m):
    torch, D = m.torch, m.data
    pad_sequence = m.nn.utils.rnn.pad_sequence

    class BucketBatchSampler(D.Sampler):
        def __init__(self, lengths, batch_size):
            self.lengths, self.batch_size = lengths, batch_size

        def __iter__(self):
            order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i])
            buckets = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            for b in torch.randperm(len(buckets)).tolist():
                yield buckets[b]

        def __len__(self):
            return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def collate(batch):
        lengths = torch.tensor([len(x) for x in batch])
        padded = pad_sequence(batch, batch_first=True, padding_value=0)
        mask = torch.arange(padded.size(1))[None, :] < lengths[:, None]
        return padded, lengths, mask

    torch.manual_seed(0)
    lengths = [5, 2, 7, 3, 3, 1, 6, 4]
    data = [torch.arange(n) + 1 for n in lengths]
    loader = D.DataLoader(data, batch_sampler=BucketBatchSampler(lengths, 3), collate_fn=collate)
    return len(loader), batches(loader)


def test_bucketing_batch_sampler_with_padding_masks():
    (n, out), _ = run_both(bucketing)
    assert n == 3 and [b[1].tolist() for b in out] == [[6, 7], [3, 4, 5], [1, 2, 3]]
    for padded, lengths, mask in out:
        assert (mask.sum(1) == lengths).all() and mask.dtype == bool
        assert (padded[~mask] == 0).all() and (padded[mask] > 0).all()


def resumable_and_infinite(m):
    torch, D = m.torch, m.data

    class InfiniteSampler(D.Sampler):
        def __init__(self, n, seed):
            self.n, self.seed = n, seed

        def __iter__(self):
            g = torch.Generator()
            g.manual_seed(self.seed)
            while True:
                yield from torch.randperm(self.n, generator=g).tolist()

    class ResumableSampler(D.Sampler):
        def __init__(self, n, seed):
            self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

        def __iter__(self):
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            return iter(torch.randperm(self.n, generator=g).tolist()[self.skip:])

        def __len__(self):
            return self.n - self.skip

        def state_dict(self):
            return {"epoch": self.epoch, "skip": self.skip}

        def load_state_dict(self, state):
            self.epoch, self.skip = state["epoch"], state["skip"]

    it = iter(D.DataLoader(range(5), batch_size=3, sampler=InfiniteSampler(5, 0)))
    endless = [next(it) for _ in range(4)]
    full = ResumableSampler(9, 1)
    full.load_state_dict({"epoch": 2, "skip": 0})
    resumed = ResumableSampler(9, 1)
    resumed.load_state_dict({"epoch": 2, "skip": 4})
    loader = D.DataLoader(range(100, 109), batch_size=2, sampler=resumed)
    return endless, list(full), len(loader), batches(loader)


def test_infinite_and_resumable_samplers():
    (endless, full, n, out), _ = run_both(resumable_and_infinite)
    flat = [v for b in endless for v in b.tolist()]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert n == 3 and [v - 100 for b in out for v in b.tolist()] == full[4:]


def distributed_shards(m):
    torch, D = m.torch, m.data
    data = list(range(11))
    shards = []
    for rank in range(3):
        s = D.DistributedSampler(data, num_replicas=3, rank=rank, shuffle=True, seed=4)
        s.set_epoch(1)
        dropped = D.DistributedSampler(data, num_replicas=3, rank=rank, shuffle=False, drop_last=True)
        shards.append((list(s), list(dropped), len(dropped)))
    s = D.DistributedSampler(list(range(10)), num_replicas=2, rank=1, seed=3)
    loader = D.DataLoader(list(range(10)), sampler=s, batch_size=2)
    epochs = []
    for epoch in range(3):
        s.set_epoch(epoch)
        epochs.append(torch.cat(batches(loader)))
    return shards, epochs, error_of(lambda: D.DistributedSampler(data, num_replicas=3, rank=3))


def test_distributed_sampler_shards_with_set_epoch():
    (shards, epochs, error), _ = run_both(distributed_shards)
    padded = sum((s[0] for s in shards), [])
    assert shards[0][0] == [9, 8, 3, 1] and len(padded) == 12 and set(padded) == set(range(11))  # (one index repeated to even the shards)
    assert [s[1] for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]] and shards[0][2] == 3
    assert not (epochs[0] == epochs[1]).all()
    assert error == "ValueError: Invalid rank 3, rank should be in the interval [0, 2]"


# --- collation ----------------------------------------------------------------------------------------------------

def mixed_collate(m):
    torch, D = m.torch, m.data
    Pair = collections.namedtuple("Pair", ["x", "y"])
    samples = [{"img": np.ones((2, 2), dtype=np.float32) * i, "label": i, "w": 0.5 * i, "name": f"s{i}",
                "pair": Pair(torch.tensor([i, i]), np.int16(i)), "nested": [[i, i + 1], (1.0, True)],
                "flag": True, "u8": np.uint8(i)} for i in range(3)]
    batch = D.default_collate(samples)
    dtypes = {k: dtype_name(v) for k, v in batch.items() if hasattr(v, "dtype")}
    return (batch, dtypes, type(batch["pair"]).__name__, dtype_name(batch["pair"].y),
            [dtype_name(v) for v in batch["nested"][1]], D.default_collate([1, 2.5]), D.default_convert((np.arange(2), "s")))


def test_default_collate_over_mixed_samples():
    (batch, dtypes, pair_type, pair_dtype, nested_dtypes, promoted, converted), _ = run_both(mixed_collate)
    assert dtypes == {"img": "float32", "label": "int64", "w": "float64", "flag": "bool", "u8": "uint8"}
    assert batch["name"] == ["s0", "s1", "s2"] and batch["img"].shape == (3, 2, 2)
    assert pair_type == "Pair" and pair_dtype == "int16" and nested_dtypes == ["float64", "bool"]
    assert batch["nested"][0][1].tolist() == [1, 2, 3]
    assert promoted.dtype == np.float32 and isinstance(converted, list) and converted[1] == "s"


def collate_errors(m):
    torch, D = m.torch, m.data
    cases = [[object(), object()], [np.array(["a"]), np.array(["b"])], [[1, 2], [1]],
             [torch.zeros(2), torch.zeros(3)], [2 ** 70, 1]]
    return [error_of(lambda: D.default_collate(b)) for b in cases]


def test_default_collate_errors():
    errors, _ = run_both(collate_errors)
    assert errors[0].startswith("TypeError: default_collate: batch must contain tensors, numpy arrays, numbers")
    assert errors[2] == "RuntimeError: each element in list of batch should be of equal size"
    assert errors[3] == "RuntimeError: stack expects each tensor to be equal size, but got [2] at entry 0 and [3] at entry 1"
    assert errors[4] == "ValueError: Overflow when unpacking long long"
