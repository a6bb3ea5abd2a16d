"""torch.utils.data as users write it, run on chainrule's autograd.utils.data and on PyTorch: collation,
DataLoader options, samplers and datasets. Each program's result is compared with PyTorch's where it is
installed, and its expected value is asserted without it."""

import collections

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both

Point = collections.namedtuple("Point", "x y")


def described(value):
    """A batch as comparable plain values: a tensor becomes ("tensor", dtype name, nested list of values);
    containers keep their type's name."""
    if isinstance(value, np.generic | np.ndarray):
        return ("numpy", str(value.dtype), value.tolist())
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return ("tensor", str(value.dtype).replace("torch.", ""), value.tolist())
    if isinstance(value, dict):
        return (type(value).__name__, {k: described(v) for k, v in value.items()})
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__, [described(v) for v in value])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [described(v) for v in value])
    return value


def both(program, *args):
    """Run ``program`` on both libraries: its results (plain values, see ``described``) must be equal."""
    ours, theirs = run_both(program, *args, compare=False)
    if theirs is not None:
        assert ours == theirs, f"ours {ours!r}, PyTorch's {theirs!r}"
    return ours


def tensor_(dtype, values):
    return ("tensor", dtype, values)


# 1. default_collate, default_convert, batch_size=None

def test_collate_nested_dicts_of_tuples_arrays_numbers_strings():
    def program(m):
        samples = [{"pair": (m.torch.full((2,), float(i)), np.int32(i)),
                    "meta": {"id": i, "score": i / 2, "keep": i != 1, "name": f"n{i}"},
                    "array": np.arange(3, dtype=np.float32) + i, "point": Point(i, [i, 1.5])}
                   for i in range(3)]
        return described(m.data.default_collate(samples))

    ours = both(program)
    kind, fields = ours
    assert kind == "dict"
    assert fields["pair"] == ("list", [tensor_("float32", [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]),
                                       tensor_("int32", [0, 1, 2])])
    assert fields["meta"] == ("dict", {"id": tensor_("int64", [0, 1, 2]), "score": tensor_("float64", [0, .5, 1]),
                                       "keep": tensor_("bool", [True, False, True]),
                                       "name": ("list", ["n0", "n1", "n2"])})
    assert fields["array"] == tensor_("float32", [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    assert fields["point"] == ("Point", [tensor_("int64", [0, 1, 2]),
                                         ("list", [tensor_("int64", [0, 1, 2]), tensor_("float64", [1.5] * 3)])])


@pytest.mark.parametrize("samples, expected", [
    ([1, 2.5], tensor_("float32", [1.0, 2.5])),  # led by an int, typed from them all: not truncated to int64
    ([True, 1], tensor_("int64", [1, 1])),
    ([True, 2.5], tensor_("float32", [1.0, 2.5])),
    ([1.5, 2], tensor_("float64", [1.5, 2.0])),
    ([True, False], tensor_("bool", [True, False])),
    ([np.float32(1), np.float32(2)], tensor_("float32", [1.0, 2.0])),
    ([np.bool_(True), np.bool_(False)], tensor_("bool", [True, False])),
    ([np.array(1.0), np.array(2.0)], tensor_("float64", [1.0, 2.0])),
    ([np.arange(2, dtype=np.uint8)] * 2, tensor_("uint8", [[0, 1], [0, 1]])),
    ([b"a", b"b"], ("list", [b"a", b"b"])),
    ([np.str_("a"), np.str_("b")], ("list", [("numpy", "<U1", "a"), ("numpy", "<U1", "b")])),
])
def test_collate_numbers_and_scalars(samples, expected):
    ours = both(lambda m: described(m.data.default_collate(samples)))
    assert ours == expected


def test_collate_keeps_container_types():
    def program(m):
        ordered = m.data.default_collate([collections.OrderedDict(b=1, a=2)] * 2)
        counts = m.data.default_collate([collections.defaultdict(list, a=1)] * 2)
        return (type(ordered).__name__, list(ordered), type(counts).__name__, counts["missing"],
                type(m.data.default_collate([[1, 2]] * 2)).__name__,
                type(m.data.default_collate([(1, 2)] * 2)).__name__)

    ours = both(program)
    assert ours == ("OrderedDict", ["b", "a"], "defaultdict", [], "list", "list")


@pytest.mark.parametrize("samples, kind, match", [
    ([[1, 2], [3]], RuntimeError, "each element in list of batch should be of equal size"),
    ([(1, 2), (3,)], RuntimeError, "each element in list of batch should be of equal size"),
    ([np.arange(3), np.arange(2)], RuntimeError, "stack expects each tensor to be equal size"),
    ([None, None], TypeError, "default_collate: batch must contain tensors"),
    ([np.array(["a"])] * 2, TypeError, "default_collate: batch must contain tensors"),
])
def test_collate_errors(samples, kind, match):
    raises_alike(lambda m: m.data.default_collate(samples), match, kind=kind)
    raises_alike(lambda m: m.data.default_collate([m.torch.zeros(2), m.torch.zeros(3)]),
                 r"stack expects each tensor to be equal size, but got \[2\] at entry 0 and \[3\] at entry 1",
                 kind=RuntimeError)


def test_default_convert():
    def program(m):
        convert = m.data.default_convert
        return [described(convert(value)) for value in (
            np.arange(3.0), np.float32(2), np.int64(3), np.bool_(True), 3, "abc", np.array(["a"]).tolist(),
            (np.zeros(2, dtype=np.float32), 1, "s"), [np.arange(2), 1], {"a": (np.ones(1),), "b": "x"},
            Point(np.zeros(1, dtype=np.int16), 2))]

    ours = both(program)
    assert ours == [tensor_("float64", [0, 1, 2]), tensor_("float32", 2.0), tensor_("int64", 3),
                    tensor_("bool", True), 3, "abc", ("list", ["a"]),
                    ("list", [tensor_("float32", [0, 0]), 1, "s"]), ("list", [tensor_("int64", [0, 1]), 1]),
                    ("dict", {"a": ("list", [tensor_("float64", [1.0])]), "b": "x"}),
                    ("Point", [tensor_("int16", [0]), 2])]


def test_batch_size_none_converts_each_sample():
    def program(m):
        samples = [(np.full(2, i, dtype=np.float32), i) for i in range(3)]
        loader = m.data.DataLoader(samples, batch_size=None)
        tensors = m.data.DataLoader(m.data.TensorDataset(m.torch.arange(3)), batch_size=None)
        return len(loader), [described(s) for s in loader], [described(s) for s in tensors]

    ours = both(program)
    assert ours[0] == 3
    assert ours[1][2] == ("list", [tensor_("float32", [2.0, 2.0]), 2])
    assert ours[2] == [("list", [tensor_("int64", i)]) for i in range(3)]  # default_convert: a tuple -> list


# 2. DataLoader options

def batches(loader):
    return [batch.tolist() for batch in loader]


def stream(m, n, sized):
    """An IterableDataset of 0..n-1, with a length or without."""
    class Numbers(m.data.IterableDataset):
        def __iter__(self):
            return iter(range(n))

    if sized:
        Numbers.__len__ = lambda self: n
    return Numbers()


def test_batch_size_drop_last_and_len():
    def program(m):
        data = list(range(10))
        flags = (False, True)
        return ([batches(m.data.DataLoader(data, batch_size=b, drop_last=d)) for b in (3, 4) for d in flags],
                [len(m.data.DataLoader(data, batch_size=b, drop_last=d)) for b in (1, 3, 10, 11) for d in flags])

    ours = both(program)
    assert ours[0][0] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert ours[0][1] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert ours[0][3] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ours[1] == [10, 10, 4, 3, 1, 1, 1, 0]


def test_iterating_twice_and_the_iterator():
    def program(m):
        loader = m.data.DataLoader(list(range(5)), batch_size=2)
        it = iter(loader)
        return batches(loader), batches(loader), len(it), next(it).tolist(), batches(it)

    assert both(program) == ([[0, 1], [2, 3], [4]], [[0, 1], [2, 3], [4]], 3, [0, 1], [[2, 3], [4]])


def test_seeded_shuffle_is_a_repeatable_permutation():
    def program(m):
        def epochs(seed):
            loader = m.data.DataLoader(list(range(10)), batch_size=4, shuffle=True,
                                       generator=m.torch.Generator().manual_seed(seed))
            return [sum(batches(loader), []) for _ in range(2)]

        first, again = epochs(3), epochs(3)
        # the orders themselves differ from PyTorch's (another generator): only their properties are compared
        return (first == again, first[0] != first[1], [sorted(order) for order in first],
                [len(batch) for batch in m.data.DataLoader(list(range(10)), batch_size=4, shuffle=True)])

    assert both(program) == (True, True, [list(range(10))] * 2, [4, 4, 2])


@pytest.mark.parametrize("options, match", [
    ({"sampler": [0, 1], "shuffle": True}, "sampler option is mutually exclusive with shuffle"),
    ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "shuffle": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "sampler": [0]}, "batch_sampler option is mutually exclusive"),
    ({"batch_size": None, "drop_last": True}, "batch_size=None option disables auto-batching"),
    ({"batch_size": 0}, "batch_size should be a positive integer value"),
    ({"batch_size": 2.0}, "batch_size should be a positive integer value"),
    ({"batch_size": 2, "drop_last": 1}, "drop_last should be a boolean value"),
    ({"num_workers": -1}, "num_workers option should be non-negative"),
    ({"prefetch_factor": 2}, "prefetch_factor option could only be specified in multiprocessing"),
    ({"persistent_workers": True}, "persistent_workers option needs num_workers > 0"),
])
def test_exclusive_and_bad_options(options, match):
    raises_alike(lambda m: m.data.DataLoader(list(range(4)), **options), match, kind=ValueError)


def test_samplers_given_as_lists_and_the_loaders_attributes():
    def program(m):
        data = list(range(10))
        by_batches = m.data.DataLoader(data, batch_sampler=[[0, 1], [5, 2, 3]])
        by_sampler = m.data.DataLoader(data, sampler=[3, 1, 2], batch_size=2)
        plain = m.data.DataLoader(data)
        unbatched = m.data.DataLoader(data, batch_size=None)
        return (batches(by_batches), len(by_batches), batches(by_sampler), len(by_sampler),
                (plain.batch_size, plain.drop_last, type(plain.sampler).__name__, type(plain.batch_sampler).__name__,
                 plain.collate_fn.__name__),
                (unbatched.batch_size, type(unbatched.sampler).__name__, unbatched.batch_sampler,
                 unbatched.collate_fn.__name__))

    assert both(program) == ([[0, 1], [5, 2, 3]], 2, [[3, 1], [2]], 2,
                             (1, False, "SequentialSampler", "BatchSampler", "default_collate"),
                             (None, "SequentialSampler", None, "default_convert"))


@pytest.mark.parametrize("name", ["batch_size", "sampler", "batch_sampler", "drop_last", "dataset"])
def test_the_batching_attributes_are_fixed_once_made(name):
    def program(m):
        loader = m.data.DataLoader(list(range(4)), batch_size=2)
        loader.num_workers = 0  # the others stay settable
        setattr(loader, name, None)

    raises_alike(program, f"{name} attribute should not be set after DataLoader is initialized", kind=ValueError)


def test_iterable_dataset_batches_and_length():
    def program(m):
        return (batches(m.data.DataLoader(stream(m, 7, False), batch_size=3)),
                batches(m.data.DataLoader(stream(m, 7, False), batch_size=3, drop_last=True)),
                [int(x) for x in m.data.DataLoader(stream(m, 3, False), batch_size=None)],
                len(m.data.DataLoader(stream(m, 7, True), batch_size=3)),
                len(m.data.DataLoader(stream(m, 7, True), batch_size=3, drop_last=True)),
                len(m.data.DataLoader(stream(m, 7, True), batch_size=None)))

    assert both(program) == ([[0, 1, 2], [3, 4, 5], [6]], [[0, 1, 2], [3, 4, 5]], [0, 1, 2], 3, 2, 7)
    raises_alike(lambda m: len(m.data.DataLoader(stream(m, 7, False), batch_size=3)), "len", kind=TypeError)
    for option in ({"shuffle": True}, {"sampler": [0]}, {"batch_sampler": [[0]]}):
        raises_alike(lambda m, option=option: m.data.DataLoader(stream(m, 3, False), **option),
                     f"DataLoader with IterableDataset: expected unspecified {next(iter(option))} option",
                     kind=ValueError)


def test_worker_options_are_accepted():
    def program(m):
        loader = m.data.DataLoader(list(range(6)), batch_size=3, num_workers=0, worker_init_fn=lambda worker: None,
                                   pin_memory=False, timeout=0, persistent_workers=False)
        return batches(loader), m.data.get_worker_info()

    assert both(program) == ([[0, 1, 2], [3, 4, 5]], None)


# 3. Samplers

def seeded(m, seed=0):
    return m.torch.Generator().manual_seed(seed)


def test_sequential_random_and_subset_samplers():
    def program(m):
        data = list(range(10))
        longer = list(m.data.RandomSampler(data, num_samples=25, generator=seeded(m)))
        shorter = list(m.data.RandomSampler(data, num_samples=4, generator=seeded(m)))
        drawn = list(m.data.RandomSampler(data, replacement=True, num_samples=30, generator=seeded(m)))
        subset = m.data.SubsetRandomSampler([5, 7, 9], generator=seeded(m))
        return (list(m.data.SequentialSampler(data)), len(m.data.SequentialSampler(data)),
                sorted(m.data.RandomSampler(data, generator=seeded(m))), len(m.data.RandomSampler(data)),
                # beyond len(data): whole permutations, then part of one
                sorted(longer[:20]) == sorted(data * 2), len(longer), len(set(longer[20:])),
                len(set(shorter)), len(drawn), all(0 <= i < 10 for i in drawn), type(drawn[0]).__name__,
                sorted(subset), len(subset), type(next(iter(subset))).__name__)

    assert both(program) == (list(range(10)), 10, list(range(10)), 10, True, 25, 5, 4, 30, True, "int",
                             [5, 7, 9], 3, "int")


@pytest.mark.parametrize("options, kind, match", [
    ({"num_samples": 0}, ValueError, "num_samples should be a positive integer value, but got num_samples=0"),
    ({"num_samples": -1}, ValueError, "num_samples should be a positive integer value"),
    ({"num_samples": 2.0}, ValueError, "num_samples should be a positive integer value"),
    ({"replacement": 1}, TypeError, "replacement should be a boolean value, but got replacement=1"),
])
def test_random_sampler_errors(options, kind, match):
    raises_alike(lambda m: m.data.RandomSampler(list(range(3)), **options), match, kind=kind)
    raises_alike(lambda m: m.data.RandomSampler([]), "num_samples=0", kind=ValueError)


def test_weighted_random_sampler():
    def program(m):
        only_last = list(m.data.WeightedRandomSampler([0, 0, 1.0], 5, generator=seeded(m)))
        without = sorted(m.data.WeightedRandomSampler([1, 1, 1.0, 0.5], 4, replacement=False, generator=seeded(m)))
        from_tensor = set(m.data.WeightedRandomSampler(m.torch.tensor([0.0, 3.0]), 7))
        from_numpy = set(m.data.WeightedRandomSampler(np.array([2.0, 0.0]), 7))
        sampler = m.data.WeightedRandomSampler([1, 2], 7)
        loader = m.data.DataLoader(list(range(10)), sampler=m.data.WeightedRandomSampler([1.0] * 10, 7), batch_size=3)
        dtype = str(sampler.weights.dtype).replace("torch.", "")
        return only_last, without, from_tensor, from_numpy, len(sampler), dtype, [len(batch) for batch in loader]

    assert both(program) == ([2] * 5, [0, 1, 2, 3], {1}, {0}, 7, "float64", [3, 3, 1])


@pytest.mark.parametrize("weights, options, kind, match", [
    ([[1.0, 2.0]], {}, ValueError, r"weights should be a 1d sequence but given weights have shape \(1, 2\)"),
    ([1.0], {"num_samples": 0}, ValueError, "num_samples should be a positive integer value"),
    ([1.0], {"num_samples": True}, ValueError, "num_samples should be a positive integer value"),
    ([1.0], {"replacement": 1}, ValueError, "replacement should be a boolean value"),
    # the bad weights are found when drawing
    ([1.0, 1.0], {"num_samples": 3, "replacement": False, "draw": True}, RuntimeError,
     "cannot sample n_sample > prob_dist.size"),
    ([1.0, -1.0], {"draw": True}, RuntimeError, "probability|multinomial"),
    ([1.0, float("nan")], {"draw": True}, RuntimeError, "probability|multinomial"),
    ([1.0, float("inf")], {"draw": True}, RuntimeError, "probability|multinomial"),
    ([0.0, 0.0], {"draw": True}, RuntimeError, "sum"),
])
def test_weighted_random_sampler_errors(weights, options, kind, match):
    options = dict(options)
    draw = options.pop("draw", False)
    options.setdefault("num_samples", 3)

    def program(m):
        sampler = m.data.WeightedRandomSampler(weights, **options)
        if draw:
            list(sampler)

    raises_alike(program, match, kind=kind)


def test_batch_sampler():
    def program(m):
        kept, dropped = m.data.BatchSampler(range(10), 3, False), m.data.BatchSampler(range(10), 3, True)
        return (list(kept), list(kept), list(dropped), len(kept), len(dropped), (kept.batch_size, kept.drop_last),
                list(m.data.BatchSampler(m.data.SequentialSampler(range(4)), 2, False)))

    assert both(program) == ([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]], [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]],
                             [[0, 1, 2], [3, 4, 5], [6, 7, 8]], 4, 3, (3, False), [[0, 1], [2, 3]])
    for size, drop, match in ((0, False, "batch_size should be a positive integer value"),
                              (True, False, "batch_size should be a positive integer value"),
                              (2, 0, "drop_last should be a boolean value")):
        raises_alike(lambda m, size=size, drop=drop: m.data.BatchSampler(range(4), size, drop), match,
                     kind=ValueError)


def distributed(m):
    from importlib import import_module

    return import_module(m.data.__name__ + ".distributed").DistributedSampler


@pytest.mark.parametrize("n, replicas, drop_last, expected", [
    (10, 3, False, [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]),  # padded with the first indices
    (10, 3, True, [[0, 3, 6], [1, 4, 7], [2, 5, 8]]),  # the tail left out
    (12, 4, True, [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]),
    (2, 5, False, [[0], [1], [0], [1], [0]]),  # padding longer than the data set
    (3, 4, True, [[], [], [], []]),
])
def test_distributed_sampler_splits_in_order(n, replicas, drop_last, expected):
    def program(m):
        samplers = [distributed(m)(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
                    for rank in range(replicas)]
        return [list(s) for s in samplers], [len(s) for s in samplers], samplers[0].total_size

    assert both(program) == (expected, [len(e) for e in expected], replicas * len(expected[0]))


def test_distributed_sampler_shuffles_alike_on_every_rank_and_per_epoch():
    def program(m):
        def shares(epoch, seed=5):
            samplers = [distributed(m)(range(11), 3, rank, seed=seed) for rank in range(3)]
            for s in samplers:
                s.set_epoch(epoch)
            return [list(s) for s in samplers]

        first = shares(0)
        flat = sum(first, [])
        sampler = distributed(m)(range(10), 3, 1, drop_last=True)
        loader = m.data.DataLoader(list(range(10)), batch_size=2,
                                   sampler=distributed(m)(range(10), 3, 2, shuffle=False))
        return (sorted(set(flat)), len(flat), first == shares(0), first != shares(1),
                isinstance(sampler, m.data.Sampler),
                (sampler.num_samples, sampler.total_size, sampler.epoch, sampler.seed, sampler.shuffle),
                batches(loader))

    assert both(program) == (list(range(11)), 12, True, True, True, (3, 9, 0, 0, True), [[2, 5], [8, 1]])
    for rank in (2, -1):
        raises_alike(lambda m, rank=rank: distributed(m)(range(5), 2, rank),
                     rf"Invalid rank {rank}, rank should be in the interval \[0, 1\]", kind=ValueError)
    raises_alike(lambda m: distributed(m)(range(5)), "process group has not been initialized", kind=ValueError)


# 4. Datasets

def test_tensor_dataset():
    def program(m):
        ds = m.data.TensorDataset(m.torch.arange(4), m.torch.arange(8).reshape(4, 2))
        return (len(ds), described(ds[1]), described(ds[-1]), described(ds[1:3]), described(ds[[0, 2]]),
                type(ds.tensors).__name__, [described(b) for b in m.data.DataLoader(ds, batch_size=3)])

    ours = both(program)
    assert ours[:3] == (4, ("tuple", [tensor_("int64", 1), tensor_("int64", [2, 3])]),
                        ("tuple", [tensor_("int64", 3), tensor_("int64", [6, 7])]))
    assert ours[4] == ("tuple", [tensor_("int64", [0, 2]), tensor_("int64", [[0, 1], [4, 5]])])
    assert ours[5:] == ("tuple", [("list", [tensor_("int64", [0, 1, 2]), tensor_("int64", [[0, 1], [2, 3], [4, 5]])]),
                                  ("list", [tensor_("int64", [3]), tensor_("int64", [[6, 7]])])])
    raises_alike(lambda m: m.data.TensorDataset(m.torch.arange(4), m.torch.arange(3)),
                 "Size mismatch between tensors", kind=AssertionError)
    raises_alike(lambda m: m.data.TensorDataset(m.torch.tensor(3.0)), "0-d|dimension", kind=IndexError)


def test_tensor_dataset_batches_stay_in_the_graph():
    def program(m, subset):
        x = m.torch.arange(8.0).reshape(4, 2).requires_grad_()
        data = m.data.TensorDataset(x, m.torch.arange(4))
        if subset:
            data = m.data.Subset(data, [3, 2, 1])
        inputs, labels = next(iter(m.data.DataLoader(data, batch_size=2)))
        (inputs * inputs).sum().backward()
        return inputs.requires_grad, labels.requires_grad, x.grad.tolist(), inputs.tolist()

    assert both(program, False) == (True, False, [[0, 2], [4, 6], [0, 0], [0, 0]], [[0, 1], [2, 3]])
    assert both(program, True) == (True, False, [[0, 0], [0, 0], [8, 10], [12, 14]], [[6, 7], [4, 5]])


def test_concat_dataset():
    def program(m):
        joined = m.data.ConcatDataset([[1, 2, 3], [4], [], [5, 6]])
        added = m.data.TensorDataset(m.torch.arange(2)) + m.data.TensorDataset(m.torch.arange(3))
        return (len(joined), joined.cumulative_sizes, [joined[i] for i in (0, 3, 4, -1, -6)],
                joined[m.torch.tensor(3)], joined[np.int64(4)], type(added).__name__, len(added), int(added[2][0]),
                len(m.data.ConcatDataset(part for part in ([1], [2, 3]))),
                batches(m.data.DataLoader(m.data.ConcatDataset([[1, 2, 3], [4, 5]]), batch_size=2)))

    assert both(program) == (6, [3, 4, 4, 6], [1, 4, 5, 6, 1], 4, 5, "ConcatDataset", 5, 0, 3,
                             [[1, 2], [3, 4], [5]])
    raises_alike(lambda m: m.data.ConcatDataset([[1, 2], [3]])[-4],
                 "absolute value of index should not exceed dataset length", kind=ValueError)
    raises_alike(lambda m: m.data.ConcatDataset([[1, 2], [3]])[3], "out of range", kind=IndexError)
    raises_alike(lambda m: m.data.ConcatDataset([]), "datasets should not be an empty iterable",
                 kind=AssertionError)
    raises_alike(lambda m: m.data.ConcatDataset([stream(m, 2, True)]),
                 "ConcatDataset does not support IterableDataset", kind=AssertionError)


def test_subset():
    def program(m):
        listed = m.data.Subset([10, 11, 12, 13], [3, 1])
        by_tensor = m.data.Subset([10, 11, 12, 13], m.torch.tensor([3, 1]))
        by_array = m.data.Subset([10, 11, 12, 13], np.array([3, 1]))
        rows = m.data.Subset(m.data.TensorDataset(m.torch.arange(5) * 10), [4, 0, 2])
        pairs = m.data.Subset([(i, i * 1.5) for i in range(5)], [4, 0, 2])
        return (len(listed), listed[0], listed[-1], listed.indices, len(by_tensor), by_tensor[0],
                by_array[1], described(rows[[0, 2]]),
                [described(b) for b in m.data.DataLoader(rows, batch_size=2)],
                [described(b) for b in m.data.DataLoader(pairs, batch_size=2)])

    ours = both(program)
    assert ours[:8] == (2, 13, 11, [3, 1], 2, 13, 11, ("tuple", [tensor_("int64", [40, 20])]))
    assert ours[8] == [("list", [tensor_("int64", [40, 0])]), ("list", [tensor_("int64", [20])])]
    assert ours[9] == [("list", [tensor_("int64", [4, 0]), tensor_("float64", [6.0, 0.0])]),
                        ("list", [tensor_("int64", [2]), tensor_("float64", [3.0])])]


@pytest.mark.parametrize("n, lengths, expected", [
    (10, [3, 7], [3, 7]),
    (10, (5, 5), [5, 5]),
    (10, np.array([4, 6]), [4, 6]),
    (10, [0.33, 0.33, 0.34], [4, 3, 3]),  # floors, then the remainder one at a time from the first
    (11, [0.5, 0.5], [6, 5]),
    (4, [0.25, 0.75], [1, 3]),
    (10, [1.0], [10]),
    (10, [1, 0], [10, 0]),  # integers summing to 1 are fractions: all of it, and none
])
@pytest.mark.filterwarnings("ignore:Length of split at index 1 is 0")
def test_random_split_lengths(n, lengths, expected):
    def program(m):
        parts = m.data.random_split(range(n), lengths, generator=seeded(m))
        return [len(part) for part in parts], sorted(sum((list(part) for part in parts), [])), \
            type(parts[0]).__name__, type(parts[0].indices).__name__

    assert both(program) == (expected, list(range(n)), "Subset", "list")


def test_random_split_warns_of_empty_splits_and_refuses_bad_lengths():
    def program(m):
        with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
            return [len(part) for part in m.data.random_split(range(2), [0.1, 0.1, 0.8])]

    assert both(program) == [1, 0, 1]  # floors 0, 0, 1; the one left over goes to the first
    for lengths, match in (([3, 6], "Sum of input lengths does not equal the length of the input dataset!"),
                           ([0.5, 0.6], "Sum of input lengths does not equal"),
                           ([0.4, 0.5], "Sum of input lengths does not equal"),
                           ([1.5, -0.5], "Fraction at index 0 is not between 0 and 1")):
        raises_alike(lambda m, lengths=lengths: m.data.random_split(range(10), lengths), match, kind=ValueError)


def test_chain_dataset():
    def program(m):
        chained = m.data.ChainDataset([stream(m, 2, True), stream(m, 3, True)])
        added = stream(m, 1, True) + stream(m, 2, True)
        return (list(chained), len(chained), type(added).__name__, list(added),
                batches(m.data.DataLoader(chained, batch_size=2)))

    assert both(program) == ([0, 1, 0, 1, 2], 5, "ChainDataset", [0, 0, 1], [[0, 1], [0, 1], [2]])
    raises_alike(lambda m: list(m.data.ChainDataset([[1, 2]])), "ChainDataset only supports IterableDataset",
                 kind=AssertionError)


def test_stack_dataset():
    def program(m):
        pairs = m.data.StackDataset([1, 2, 3], ["a", "b", "c"])
        named = m.data.StackDataset(x=m.data.TensorDataset(m.torch.arange(3)), y=[1.0, 2.0, 3.0])
        return (len(pairs), described(pairs[1]), described(pairs.__getitems__([0, 2])), described(named[2]),
                [described(b) for b in m.data.DataLoader(named, batch_size=2)])

    ours = both(program)
    assert ours[:3] == (3, ("tuple", [2, "b"]), ("list", [("tuple", [1, "a"]), ("tuple", [3, "c"])]))
    assert ours[3] == ("dict", {"x": ("tuple", [tensor_("int64", 2)]), "y": 3.0})
    assert ours[4][1] == ("dict", {"x": ("list", [tensor_("int64", [2])]), "y": tensor_("float64", [3.0])})
    raises_alike(lambda m: m.data.StackDataset([1, 2], [1]), "Size mismatch between datasets", kind=ValueError)
    raises_alike(lambda m: m.data.StackDataset([1, 2], y=[1, 2]), "both types are given", kind=ValueError)
    raises_alike(lambda m: m.data.StackDataset(), "At least one dataset should be passed", kind=ValueError)
