"""autograd.utils.data as torch.utils.data: datasets, samplers, default_collate, DataLoader, random_split."""

import collections
import warnings

import numpy as np
import pytest

import autograd
from autograd import Generator, Tensor
from autograd.utils.data import (
    BatchSampler,
    ChainDataset,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    get_worker_info,
    random_split,
)

Point = collections.namedtuple("Point", "x y")


class Squares(Dataset):
    def __init__(self, n=5):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i >= self.n:
            raise IndexError(i)
        return i, float(i * i)


class Stream(IterableDataset):
    def __init__(self, n, sized=True):
        self.n, self.sized = n, sized

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        if not self.sized:
            raise TypeError("no length")
        return self.n


def structure(batch):
    """The nesting, types, shapes and dtypes of a batch, comparable across the two libraries."""
    if hasattr(batch, "shape") and hasattr(batch, "dtype"):
        return ("tensor", tuple(batch.shape), str(batch.dtype).replace("torch.", ""))
    if isinstance(batch, dict):
        return {k: structure(v) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return (type(batch).__name__, *[structure(v) for v in batch])
    if isinstance(batch, list | tuple):
        return (type(batch).__name__, [structure(v) for v in batch])
    return batch


def samples_for(library):
    """The same samples in every form default_collate knows, with tensors of ``library``."""
    lib = library
    return [
        {"image": lib.ones(2, 3) * i, "label": i, "weight": 0.5 * i, "name": f"s{i}", "flag": i % 2 == 0,
         "array": np.full((2,), i, dtype=np.float32), "scalar": np.float64(i), "point": Point(i, [i, i + 1.0])}
        for i in range(4)
    ]


def test_default_collate_keeps_structure_and_dtypes():
    batch = default_collate(samples_for(autograd))
    assert batch["image"].shape == (4, 2, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int64 and batch["label"].tolist() == [0, 1, 2, 3]
    assert batch["weight"].dtype == np.float64 and batch["weight"].tolist() == [0, 0.5, 1.0, 1.5]
    assert batch["name"] == ["s0", "s1", "s2", "s3"]
    assert batch["flag"].dtype == np.bool_ and batch["flag"].tolist() == [True, False, True, False]
    assert batch["array"].shape == (4, 2) and batch["array"].dtype == np.float32
    assert batch["scalar"].dtype == np.float64 and batch["scalar"].shape == (4,)
    assert isinstance(batch["point"], Point) and batch["point"].x.tolist() == [0, 1, 2, 3]
    assert isinstance(batch["point"].y, list) and batch["point"].y[1].tolist() == [1.0, 2.0, 3.0, 4.0]
    pairs = default_collate([(1, 2.0), (3, 4.0)])
    assert isinstance(pairs, list) and pairs[0].tolist() == [1, 3] and pairs[1].dtype == np.float64
    lists = default_collate([[1, 2], [3, 4]])
    assert isinstance(lists, list) and [t.tolist() for t in lists] == [[1, 3], [2, 4]]


@pytest.mark.torch
def test_default_collate_matches_pytorch():
    import torch
    from torch.utils.data import default_collate as torch_collate
    ours = structure(default_collate(samples_for(autograd)))
    theirs = structure(torch_collate(samples_for(torch)))
    assert ours == theirs
    for samples in ([(1, 2.0), (3, 4.0)], [[1, 2], [3, 4]], [True, False], [np.int32(1), np.int32(2)]):
        assert structure(default_collate(samples)) == structure(torch_collate(samples))


def test_default_collate_errors():
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        default_collate([autograd.zeros(2), autograd.zeros(3)])
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        default_collate([object(), object()])
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        default_collate([np.array(["a"]), np.array(["b"])])


def test_collated_tensors_keep_the_graph():
    x = autograd.ones(2, requires_grad=True)
    batch = default_collate([x, x * 2])
    batch.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_loader_batches_shapes_and_len():
    data = TensorDataset(autograd.arange(10).float().reshape(10, 1), autograd.arange(10))
    loader = DataLoader(data, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape for b in batches] == [(4, 1), (4, 1), (2, 1)]
    assert isinstance(batches[0], list) and batches[2][1].tolist() == [8, 9]
    assert len(DataLoader(data, batch_size=4, drop_last=True)) == 2
    single = list(DataLoader(data))
    assert len(single) == 10 and single[3][0].shape == (1, 1) and single[3][1].tolist() == [3]
    x, y = next(iter(DataLoader(Squares(), batch_size=3)))
    assert x.dtype == np.int64 and y.dtype == np.float64 and y.tolist() == [0.0, 1.0, 4.0]


@pytest.mark.torch
def test_loader_batches_match_pytorch():
    import torch
    import torch.utils.data as tud
    ours = DataLoader(Squares(7), batch_size=3, drop_last=False)
    theirs = tud.DataLoader(Squares(7), batch_size=3, drop_last=False)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert structure(a) == structure(b)
        assert [t.tolist() for t in a] == [t.tolist() for t in b]
    data = TensorDataset(autograd.zeros(5, 2), autograd.zeros(5, dtype=autograd.int64))
    torch_data = tud.TensorDataset(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64))
    assert structure(next(iter(DataLoader(data, batch_size=2)))) == structure(next(iter(tud.DataLoader(
        torch_data, batch_size=2))))
    assert [structure(b) for b in DataLoader(Squares(3), batch_size=None)] == \
        [structure(b) for b in tud.DataLoader(Squares(3), batch_size=None)]


def test_no_batching_with_batch_size_none():
    loader = DataLoader(Squares(4), batch_size=None)
    assert len(loader) == 4 and list(loader) == [[0, 0.0], [1, 1.0], [2, 4.0], [3, 9.0]]  # tuples become lists
    arrays = list(DataLoader([np.ones(2) * i for i in range(3)], batch_size=None))
    assert all(isinstance(a, Tensor) for a in arrays) and arrays[2].tolist() == [2.0, 2.0]


def test_shuffle_visits_every_sample_once_and_repeats_under_a_generator():
    data = Squares(20)

    def epoch(generator):
        return [int(i) for batch in DataLoader(data, batch_size=6, shuffle=True, generator=generator)
                for i in batch[0]]

    g = Generator().manual_seed(0)
    first, second = epoch(g), epoch(g)
    assert sorted(first) == list(range(20)) and first != second and first != list(range(20))
    assert epoch(Generator().manual_seed(0)) == first


def test_custom_collate_sampler_and_batch_sampler():
    summed = list(DataLoader(Squares(5), batch_size=2, collate_fn=lambda s: sum(x for x, _ in s)))
    assert summed == [1, 5, 4]
    order = list(DataLoader(Squares(5), sampler=[4, 0, 2], collate_fn=lambda s: s[0][0]))
    assert order == [4, 0, 2]
    batches = list(DataLoader(Squares(5), batch_sampler=[[0, 1], [4]]))
    assert [b[0].tolist() for b in batches] == [[0, 1], [4]]
    assert len(DataLoader(Squares(5), batch_sampler=BatchSampler(SequentialSampler(range(5)), 2, False))) == 3


def test_getitems_is_used_when_a_dataset_has_it():
    class Bulk(Squares):
        calls = 0

        def __getitems__(self, indices):
            Bulk.calls += 1
            return [self[i] for i in indices]

    batches = list(DataLoader(Bulk(5), batch_size=5))
    assert Bulk.calls == 1 and batches[0][1].tolist() == [0.0, 1.0, 4.0, 9.0, 16.0]


def test_iterable_datasets():
    assert [b.tolist() for b in DataLoader(Stream(7), batch_size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.tolist() for b in DataLoader(Stream(7), batch_size=3, drop_last=True)] == [[0, 1, 2], [3, 4, 5]]
    assert len(DataLoader(Stream(7), batch_size=3)) == 3 and len(DataLoader(Stream(7), batch_size=3,
                                                                            drop_last=True)) == 2
    assert list(DataLoader(Stream(3), batch_size=None)) == [0, 1, 2]
    with pytest.raises(TypeError):
        len(DataLoader(Stream(3, sized=False)))
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(Stream(3), shuffle=True)
    with pytest.raises(ValueError, match="expected unspecified sampler option"):
        DataLoader(Stream(3), sampler=[0])
    chained = Stream(2) + Stream(3)
    assert isinstance(chained, ChainDataset) and list(chained) == [0, 1, 0, 1, 2] and len(chained) == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size should be a positive integer value, but got batch_size=0"),
    ({"sampler": [0], "shuffle": True}, "sampler option is mutually exclusive with shuffle"),
    ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_size": None, "drop_last": True}, "batch_size=None option disables auto-batching"),
    ({"num_workers": -1}, "num_workers option should be non-negative"),
    ({"prefetch_factor": 2}, "prefetch_factor option could only be specified in multiprocessing"),
    ({"persistent_workers": True}, "persistent_workers option needs num_workers > 0"),
    ({"timeout": -1}, "timeout option should be non-negative"),
])
def test_loader_option_errors_as_pytorch(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(Squares(), **kwargs)


@pytest.mark.torch
@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"sampler": [0], "shuffle": True}, {"batch_sampler": [[0]], "batch_size": 2},
    {"batch_size": None, "drop_last": True}, {"num_workers": -1}, {"persistent_workers": True},
])
def test_loader_option_errors_match_pytorch(kwargs):
    import torch.utils.data as tud
    with pytest.raises(ValueError) as theirs:
        tud.DataLoader(Squares(), **kwargs)
    with pytest.raises(ValueError) as ours:
        DataLoader(Squares(), **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_worker_options_give_the_same_batches_and_call_worker_init_fn_once_per_worker():
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (nothing to warn of: the batches are PyTorch's)
        loader = DataLoader(Squares(6), batch_size=2, num_workers=2, pin_memory=True, persistent_workers=True,
                            prefetch_factor=2, worker_init_fn=calls.append, timeout=5)
        assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3], [4, 5]] and calls == [0, 1]
        assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3], [4, 5]] and calls == [0, 1]  # (persistent)
    assert get_worker_info() is None


def test_samplers():
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    g = Generator().manual_seed(0)
    permutation = list(RandomSampler(range(6), generator=g))
    assert sorted(permutation) == list(range(6))
    longer = list(RandomSampler(range(4), num_samples=10, generator=g))
    assert len(longer) == 10 and sorted(longer[:4]) == [0, 1, 2, 3] and sorted(longer[4:8]) == [0, 1, 2, 3]
    drawn = list(RandomSampler(range(3), replacement=True, num_samples=300, generator=g))
    assert len(drawn) == 300 and set(drawn) == {0, 1, 2}
    assert len(RandomSampler(range(3), replacement=True, num_samples=7)) == 7
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        RandomSampler(range(3), num_samples=0)
    with pytest.raises(TypeError, match="replacement should be a boolean"):
        RandomSampler(range(3), replacement=1)
    subset = list(SubsetRandomSampler([10, 20, 30], generator=g))
    assert sorted(subset) == [10, 20, 30]
    weighted = list(WeightedRandomSampler([0.0, 1.0, 3.0], 4000, generator=g))
    assert set(weighted) == {1, 2} and abs(weighted.count(2) / 4000 - 0.75) < 0.03
    unique = list(WeightedRandomSampler([1.0, 1.0, 1.0, 0.0], 3, replacement=False, generator=g))
    assert sorted(unique) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        WeightedRandomSampler([1.0], 0)
    assert list(BatchSampler(range(5), 2, False)) == [[0, 1], [2, 3], [4]]
    assert list(BatchSampler(range(5), 2, True)) == [[0, 1], [2, 3]] and len(BatchSampler(range(5), 2, True)) == 2
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        BatchSampler(range(5), 0, False)
    with pytest.raises(ValueError, match="drop_last should be a boolean value"):
        BatchSampler(range(5), 2, 1)


def test_samplers_repeat_under_manual_seed():
    autograd.manual_seed(3)
    first = list(RandomSampler(range(8))) + list(WeightedRandomSampler([1.0, 2.0], 5))
    autograd.manual_seed(3)
    assert list(RandomSampler(range(8))) + list(WeightedRandomSampler([1.0, 2.0], 5)) == first


@pytest.mark.parametrize("n, lengths", [
    (10, [0.5, 0.3, 0.2]), (10, [0.33, 0.33, 0.34]), (7, [0.5, 0.5]), (11, [0.1, 0.2, 0.7]), (5, [2, 3]),
    (3, [0.2, 0.2, 0.2, 0.2, 0.2]),
])
def test_random_split_lengths(n, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a zero-length split warns
        parts = random_split(range(n), lengths, generator=Generator().manual_seed(0))
    assert sorted(i for part in parts for i in part) == list(range(n))
    assert all(isinstance(p, Subset) for p in parts)


@pytest.mark.torch
@pytest.mark.parametrize("n, lengths", [
    (10, [0.5, 0.3, 0.2]), (10, [0.33, 0.33, 0.34]), (7, [0.5, 0.5]), (11, [0.1, 0.2, 0.7]), (5, [2, 3]),
    (3, [0.2, 0.2, 0.2, 0.2, 0.2]),
])
def test_random_split_lengths_match_pytorch(n, lengths):
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = [len(p) for p in random_split(range(n), lengths)]
        theirs = [len(p) for p in torch.utils.data.random_split(range(n), lengths)]
    assert ours == theirs


def test_random_split_errors_and_reproducibility():
    with pytest.raises(ValueError, match="Sum of input lengths does not equal the length of the input dataset"):
        random_split(range(10), [3, 3])
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(range(2), [0.9, 0.1])
    a = [list(p) for p in random_split(range(10), [5, 5], generator=Generator().manual_seed(1))]
    b = [list(p) for p in random_split(range(10), [5, 5], generator=Generator().manual_seed(1))]
    assert a == b


def test_subset_and_concat_datasets():
    data = TensorDataset(autograd.arange(6) * 10)
    subset = Subset(data, [5, 1])
    assert len(subset) == 2 and subset[0][0].item() == 50 and subset[-1][0].item() == 10
    assert subset.batch([1, 0])[0].tolist() == [10, 50]
    both = Squares(3) + Squares(2)
    assert isinstance(both, ConcatDataset) and len(both) == 5 and both.cumulative_sizes == [3, 5]
    assert both[3] == (0, 0.0) and both[-1] == (1, 1.0) and both[2] == (2, 4.0)
    with pytest.raises(ValueError, match="absolute value of index"):
        both[-6]
    with pytest.raises(AssertionError, match="IterableDataset"):
        ConcatDataset([Stream(2)])
    x, y = next(iter(DataLoader(both, batch_size=5)))
    assert x.tolist() == [0, 1, 2, 0, 1]


def test_the_fast_tensor_path_gives_what_default_collate_gives():
    data = TensorDataset(autograd.randn(7, 2), autograd.arange(7))
    fast = next(iter(DataLoader(data, batch_size=7)))
    slow = default_collate([data[i] for i in range(7)])
    assert isinstance(fast, list) and len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a.numpy(), b.numpy())


def test_autograd_data_is_the_same_package_with_its_transform():
    import autograd.data as data
    assert data.TensorDataset is TensorDataset and data.random_split is random_split
    assert issubclass(data.DataLoader, DataLoader)
    loader = data.DataLoader(TensorDataset(autograd.ones(4, 1), autograd.arange(4)), batch_size=2,
                             transform=lambda x: x * 3)
    x, y = next(iter(loader))
    assert x.tolist() == [[3.0], [3.0]] and y.tolist() == [0, 1]
    assert autograd.utils.data.DataLoader is DataLoader


def test_datasets_and_samplers_take_type_parameters_as_pytorchs():
    class Pairs(Dataset[tuple[Tensor, int]]):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return autograd.ones(1) * i, i

    class Evens(autograd.utils.data.Sampler[int]):
        def __iter__(self):
            return iter([0])

    assert next(iter(DataLoader(Pairs(), batch_size=2)))[1].tolist() == [0, 1]
    assert list(DataLoader(Pairs(), sampler=Evens(), batch_size=None))[0][1] == 0


def test_collate_with_a_collate_fn_map_extends_default_collate(T):
    import importlib

    collate_module = importlib.import_module(T.__name__ + ".utils.data._utils.collate")

    class Boxes:
        def __init__(self, n):
            self.n = n

    def collate_boxes(batch, *, collate_fn_map):
        return [b.n for b in batch]

    collate_map = {**collate_module.default_collate_fn_map, Boxes: collate_boxes}
    batch = collate_module.collate([{"b": Boxes(1), "x": np.float32(1)}, {"b": Boxes(3), "x": np.float32(2)}],
                                   collate_fn_map=collate_map)
    assert batch["b"] == [1, 3] and batch["x"].tolist() == [1.0, 2.0] and batch["x"].dtype == T.float32
    assert collate_module.collate_float_fn([0.5, 1.0]).dtype == T.float64
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors"):
        collate_module.collate([object()], collate_fn_map=collate_map)


def test_subset_reads_a_batch_through_the_datasets_getitems(T):
    import importlib

    data = importlib.import_module(T.__name__ + ".utils.data")

    class Batched(data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return ("one", i)

        def __getitems__(self, indices):
            return [("batch", i) for i in indices]

    subset = data.Subset(Batched(), [5, 3, 1])
    assert subset.__getitems__([0, 2]) == [("batch", 5), ("batch", 1)]
    assert data.Subset(range(10), [4, 6]).__getitems__([1, 0]) == [6, 4]
    batches = list(data.DataLoader(subset, batch_size=2, collate_fn=list))
    assert batches == [[("batch", 5), ("batch", 3)], [("batch", 1)]]
    with pytest.raises(AssertionError, match="ChainDataset only supports IterableDataset"):
        len(data.ChainDataset([range(2)]))
